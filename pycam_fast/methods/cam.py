"""CAM ("Learning Deep Features for Discriminative Localization", Zhou et al. 2016)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .._log import logger
from ..layers import LayerSpec, module_name
from ..targets import check_class_range
from .extractor import CAMExtractor
from .spec import LayerInputs, define_method, weighted_activations

__all__ = ["CAM", "CAM_SPEC"]


@weighted_activations
def _terms(layer: LayerInputs) -> Tensor:
    classifier, class_idx = layer.classifier, layer.class_idx
    check_class_range(class_idx, classifier.shape[0])  # type: ignore[union-attr]
    rows = classifier[class_idx].detach()  # type: ignore[index]
    return (rows.unsqueeze(0) if isinstance(class_idx, int) else rows).to(layer.activations.device)


CAM_SPEC = define_method(
    "CAM",
    "activation",
    _terms,
    "w_k = W[c, k] of the linear classifier after global pooling; L = sum_k w_k A_k (no ReLU)",
    relu=False,
    needs_classifier=True,
)


class CAM(CAMExtractor):
    r"""CAM: ``L = sum_k w_k^c A_k`` with ``w^c`` the row of the final fully connected layer for class ``c`` (no ReLU).

    Args:
        model: the model to explain (global pooling then one Linear or 1x1-conv classifier).
        target_layer: a module or its name, or ``None`` (automatic); a single layer.
        fc_layer: the classifier layer or its name, or ``None`` (the model's only ``nn.Linear``).
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``.

    Raises:
        ValueError: several target layers, or no / several Linear layers for the automatic ``fc_layer``.
        TypeError: ``fc_layer`` of another type.

    """

    spec = CAM_SPEC

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        fc_layer: nn.Module | str | None = None,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        if isinstance(target_layer, list) and len(target_layer) > 1:
            raise ValueError("base CAM does not support multiple target layers: pass a single `target_layer`")
        super().__init__(model, target_layer, input_shape, **kwargs)
        weight = self.submodule_dict[self._resolve_fc(model, fc_layer)].weight.data
        # a 1x1 conv classifier has (K, C, 1, 1) weights
        self._fc_weights = weight.view(*weight.shape[:2]) if weight.ndim > 2 else weight

    def _resolve_fc(self, model: nn.Module, fc_layer: nn.Module | str | None) -> str:
        if isinstance(fc_layer, str):
            if fc_layer not in self.submodule_dict:
                raise ValueError(f"unknown `fc_layer` name {fc_layer!r}; see `model.named_modules()`")
            return fc_layer
        if isinstance(fc_layer, nn.Module):
            return module_name(fc_layer, self.submodule_dict)
        if fc_layer is None:
            linear = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
            if not linear:
                raise ValueError("unable to resolve `fc_layer` automatically, please specify its value.")
            if len(linear) > 1:
                raise ValueError(
                    f"This CAM method does not support multiple fully connected layers ({linear}): pass `fc_layer`."
                )
            logger.warning(f"no value was provided for `fc_layer`, thus set to '{linear[0]}'.")
            return linear[0]
        raise TypeError(f"invalid argument type for `fc_layer`: expected a module or a name, got {type(fc_layer)}")

    def _classifier_weights(self) -> Tensor:
        return self._fc_weights
