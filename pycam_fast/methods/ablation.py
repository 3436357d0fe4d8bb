"""Ablation-CAM (Desai & Ramaswamy, WACV 2020) with pytorch-grad-cam 1.5.7's definition, on the model tail only.

``w_k = (y - y_k) / y`` where ``y`` is the explained score and ``y_k`` the score with channel ``k`` of the target
layer's output set to the ablation value; ``L = ReLU(sum_k w_k A_k)``. The ablated activations go through the part
of the network after the target layer only (:func:`pycam_fast.forward.tail.split_tail`), batched over samples and
channels; when the tail cannot be split (a skip connection crosses the target layer, or the model is not
traceable), whole forwards run with the target layer's output replaced, and the reason is logged once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._log import log_once
from ..forward.ablation import Evaluator, ablation_scores, replaced_output_evaluator
from ..forward.tail import split_tail
from ..targets import ClassIdx, OutputTarget, select_scores
from .extractor import BatchedExtractor
from .spec import LayerInputs, define_method, weighted_activations

__all__ = ["ABLATION_OFFSET", "ABLATIONCAM", "AblationCAM", "ablation_values"]

#: pytorch-grad-cam's offset below the minimum activation when the activations are not ReLU-like.
ABLATION_OFFSET = 1e7


def ablation_values(activations: Tensor, options: Mapping[str, Any]) -> Tensor:
    """The value each ablated channel is set to, from the ``ablation_value`` option.

    ``"auto"`` follows pytorch-grad-cam 1.5.7 per sample: 0 when the sample's minimum activation is exactly 0 (ReLU
    outputs), else ``min - 1e7``. (pytorch-grad-cam applies this inside a loop that writes each ablated channel into
    the tensor it takes the minimum of, so in a chunk of ``b`` channels the ``j``-th one gets ``min - (j + 1) * 1e7``;
    pass a callable returning ``(N, C)`` values to reproduce that.) ``"zero"``, a number, or a callable
    ``A (N, C, *S) -> (N,) | (N, C)`` values.

    Args:
        activations: ``(N, C, *S)``.
        options: the method's options.

    Returns:
        ``(N, C)`` values in the activations' dtype.

    Raises:
        ValueError: a callable returning another shape.

    """
    rule = options["ablation_value"]
    num_n, num_ch = activations.shape[:2]
    if callable(rule):
        values = torch.as_tensor(rule(activations), dtype=activations.dtype, device=activations.device)
        if values.shape not in ((num_n,), (num_n, num_ch)):
            raise ValueError(f"`ablation_value` callable must return (N,) or (N, C) values, got {tuple(values.shape)}")
    elif rule == "auto":
        low = activations.flatten(1).amin(1)
        values = torch.where(low == 0, torch.zeros_like(low), low - ABLATION_OFFSET)
    else:
        values = torch.full((num_n,), 0.0 if rule == "zero" else float(rule), dtype=activations.dtype)
    values = values.to(activations.device)
    return values if values.ndim == 2 else values[:, None].expand(num_n, num_ch)


@weighted_activations
def _terms(layer: LayerInputs) -> Tensor:
    base = layer.base_scores.to(layer.scores.dtype)[:, None]  # type: ignore[union-attr]
    return ((base - layer.scores) / base).to(layer.activations.dtype)


ABLATIONCAM = define_method(
    "AblationCAM",
    "ablation",
    _terms,
    "w_k = (y - y_k) / y with channel k ablated; L = ReLU(sum_k w_k A_k)",
    options={"ablation_value": "auto"},
    ablation_values=ablation_values,
)


class AblationCAM(BatchedExtractor):
    r"""Ablation-CAM, pytorch-grad-cam's definition, on the model tail only.

    Usage is TorchCAM's: ``out = model(x); cams = extractor(class_idx, out)`` (``scores`` optional: without it the
    unablated score is recomputed by the same tail). :meth:`ablation_weights` returns the raw ``(N, C)`` weights.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those (one map each), or ``None`` (automatic).
        batch_size: ablated copies per tail evaluation (they mix samples; results do not depend on it).
        input_shape: one sample's input shape, used by the automatic layer resolution.
        ablation_value: ``"auto"`` (0 for ReLU-like activations, else ``min - 1e7``, per sample), ``"zero"``, a
            number, or a callable ``A (N, C, *S) -> (N,) | (N, C)`` values.
        kwargs: ``enable_hooks``, ``backend``.

    Raises:
        ValueError: ``batch_size < 1``, a bad ``ablation_value``, or ``reshape_transform`` (not supported).

    """

    spec = ABLATIONCAM
    positional_arguments = ("batch_size", "input_shape", "ablation_value")
    supports_reshape_transform = False

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._tails = {}
        for name in self.target_names:
            split = split_tail(model, name)
            if split.tail is None:
                log_once(f"AblationCAM on '{name}': full forwards instead of the tail only: {split.reason}")
            self._tails[name] = split.tail

    @property
    def uses_tail(self) -> dict[str, bool]:
        """Per target layer, whether ablated activations run through the tail only."""
        return {name: tail is not None for name, tail in self._tails.items()}

    def _evaluator(self, name: str) -> Evaluator:
        tail = self._tails[name]
        if tail is not None:
            return lambda rows, _samples: tail(rows)
        if self._input is None:
            raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
        return replaced_output_evaluator(self.model, self.submodule_dict[name], self._input)

    def ablation_weights(
        self,
        class_idx: ClassIdx | None = None,
        scores: Any = None,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
    ) -> list[Tensor]:
        """Raw weights ``(y - y_k) / y``: one ``(N, C)`` tensor per target layer (same checks as ``__call__``)."""
        self._precheck(class_idx, scores, targets)
        return [term.weights for term in self.cam_terms(class_idx, scores, targets=targets)]

    def _channel_scores(
        self, activations: list[Tensor], class_idx: ClassIdx | None, scores: Any, targets: Any, options: dict[str, Any]
    ) -> list[tuple[Tensor | None, Tensor | None]]:
        results: list[tuple[Tensor | None, Tensor | None]] = []
        with self.scoring_forwards(targets, activations[0].shape[0], needs_input=False) as fns:
            for name, act in zip(self.target_names, activations, strict=True):
                evaluate = self._evaluator(name)
                samples = torch.arange(act.shape[0], device=act.device)
                base = select_scores(scores if scores is not None else evaluate(act, samples), class_idx, fns)
                values = ablation_values(act, options)
                ablated = ablation_scores(evaluate, act, values, class_idx, fns, self.bs)
                results.append((ablated, base.to(act.device)))
        return results
