"""Activation-based methods: CAM and the Score-CAM family (Score-CAM, SS-CAM, IS-CAM)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.scoring import ScorePlan, score_weights
from ..hooks import LayerSpec, module_name
from ..targets import ClassIdx, OutputTarget, check_class_range, resolve_targets
from .core import _CAM, _gaussian
from .gradient import _check_sampling

__all__ = ["CAM", "ISCAM", "SSCAM", "ScoreCAM"]

logger = logging.getLogger("pycam_fast")


class CAM(_CAM):
    r"""CAM ("Learning Deep Features for Discriminative Localization", Zhou et al. 2016).

    ``L = sum_k w_k^c A_k`` with ``w^c`` the row of the final fully connected layer for class ``c`` (no ReLU).

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
        fc_name = self._resolve_fc(model, fc_layer)
        weight = self.submodule_dict[fc_name].weight.data
        # A 1x1 conv classifier has (K, C, 1, 1) weights
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

    @torch.no_grad()
    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **_: Any) -> list[Tensor]:
        check_class_range(class_idx, self._fc_weights.shape[0])
        if isinstance(class_idx, int):
            return [self._fc_weights[class_idx].unsqueeze(0)]
        return [self._fc_weights[class_idx]]


class ScoreCAM(_CAM):
    r"""Score-CAM ("Score-CAM: Score-Weighted Visual Explanations", Wang et al. 2020).

    Each channel's activation, min-max normalised and upsampled to the input size, masks the stored input;
    ``w_k = softmax_k(Y^c(M_k * X))`` over the channels (the baseline score of TorchCAM's definition cancels in the
    softmax, so it is not computed), ``L = ReLU(sum_k w_k A_k)``. Masked inputs are built by the backend op
    ``masked_inputs`` and forwarded in chunks of ``batch_size`` mixing samples (results do not depend on it);
    channels whose activation is constant give the all-zero input, forwarded once for the batch (exact).

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        batch_size: number of masked inputs per forward.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``.

    Raises:
        ValueError: ``batch_size < 1``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        super().__init__(model, target_layer, input_shape, **kwargs)
        self.bs = batch_size
        self._relu = True
        self._targets_supported = True
        self._input: Tensor | None = None
        self.hook_handles.append(model.register_forward_pre_hook(self._store_input))

    def _store_input(self, _module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if self._hooks_enabled and inputs and isinstance(inputs[0], Tensor):
            self._input = inputs[0].detach().clone()

    # One "pass" over all masked inputs per sample (noise draw / integration step); Score-CAM has one.
    def _passes(self, activation: Tensor) -> list[dict[str, Any]]:
        return [{}]

    @torch.no_grad()
    def _get_weights(
        self,
        class_idx: ClassIdx | None,
        scores: Any = None,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        **_: Any,
    ) -> list[Tensor]:
        if self._input is None:
            raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
        activations: list[Tensor] = self.hook_a  # type: ignore[assignment]
        target_fns = resolve_targets(targets, activations[0].shape[0]) if targets is not None else None
        with self._hooks_off(), self._eval_mode():
            return [self._layer_weights(act, class_idx, target_fns) for act in activations]

    def _layer_weights(self, act: Tensor, class_idx: ClassIdx | None, targets: list[OutputTarget] | None) -> Tensor:
        """``(N, C)`` softmax weights of one layer (constant channels share one forward of the all-zero input)."""
        plan = ScorePlan(passes=self._passes(act), chunk=self.bs, dedup_constant=True)
        return score_weights(self.model, self._ops(act), act, self._input, class_idx, targets, plan)

    def _extra_repr(self) -> str:
        return f"target_layer={self.target_names}, batch_size={self.bs}"


class SSCAM(ScoreCAM):
    r"""SS-CAM ("SS-CAM: Smoothed Score-CAM", Wang et al. 2020).

    Like Score-CAM with ``num_samples`` noisy masks ``U(norm(A_k)) + N(0, std^2)`` (noise at input resolution,
    drawn from the default CPU generator as TorchCAM does); scores are averaged over the samples before the softmax.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        batch_size: number of masked inputs per forward.
        num_samples: number of noise draws.
        std: standard deviation of the mask noise.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        num_samples: int = 35,
        std: float = 2.0,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        _check_sampling(num_samples, std)
        super().__init__(model, target_layer, batch_size, input_shape, **kwargs)
        self.num_samples = num_samples
        self.std = std

    def _passes(self, activation: Tensor) -> list[dict[str, Any]]:
        return sscam_passes(activation, self._input, self.num_samples, self.std)

    def _extra_repr(self) -> str:
        return f"target_layer={self.target_names}, batch_size={self.bs}, num_samples={self.num_samples}, std={self.std}"


def sscam_passes(activation: Tensor, inputs: Tensor, num_samples: int, std: float) -> list[dict[str, Any]]:
    """SS-CAM's passes: one lazily drawn ``(N * C, *S_in)`` mask-noise tensor each (TorchCAM's draw order).

    Args:
        activation: ``(N, C, *S)`` target-layer activations.
        inputs: ``(N, Cin, *S_in)`` stored input.
        num_samples: number of noise draws.
        std: standard deviation of the noise.

    Returns:
        ``num_samples`` pass descriptions ``{"noise": ...}``.

    """
    shape = (activation.shape[0] * activation.shape[1], *inputs.shape[2:])
    return [{"noise": _NoiseDraw(shape, std, activation.device)} for _ in range(num_samples)]


def iscam_passes(num_samples: int) -> list[dict[str, Any]]:
    """IS-CAM's passes: input scales ``c_i = sum_{j <= i} j / N``, accumulated in Python floats as TorchCAM does."""
    coeff, passes = 0.0, []
    for step in range(num_samples):
        coeff += (step + 1) / num_samples
        passes.append({"scale": coeff})
    return passes


class _NoiseDraw:
    """One pass's noise, drawn on first use so passes draw in the same order as TorchCAM (one full draw each)."""

    def __init__(self, shape: tuple[int, ...], std: float, device: torch.device) -> None:
        self._shape, self._std, self._device = shape, std, device
        self._noise: Tensor | None = None

    def __getitem__(self, index: slice) -> Tensor:
        if self._noise is None:
            self._noise = _gaussian(torch.Size(self._shape), self._std).to(self._device)
        return self._noise[index]


class ISCAM(ScoreCAM):
    r"""IS-CAM ("IS-CAM: Integrated Score-CAM", Naidu et al. 2020).

    Like Score-CAM with the masked input scaled by the cumulative coefficients ``c_i = sum_{j<=i} j / N``
    (0.1, 0.3, 0.6, ... for ``N = 10``); scores are averaged over the ``num_samples`` steps before the softmax.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        batch_size: number of masked inputs per forward.
        num_samples: number of integration steps.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        num_samples: int = 10,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        _check_sampling(num_samples, 0.0)
        super().__init__(model, target_layer, batch_size, input_shape, **kwargs)
        self.num_samples = num_samples

    def _passes(self, activation: Tensor) -> list[dict[str, Any]]:
        return iscam_passes(self.num_samples)

    def _extra_repr(self) -> str:
        return f"target_layer={self.target_names}, batch_size={self.bs}, num_samples={self.num_samples}"
