"""Ablation-CAM (Desai & Ramaswamy, WACV 2020) with pytorch-grad-cam 1.5.7's definition, on the model tail only.

``w_k = (y - y_k) / y`` where ``y`` is the explained score and ``y_k`` the score with channel ``k`` of the target
layer's output set to the ablation value; ``L = ReLU(sum_k w_k A_k)``. The ablated activations go through the part
of the network after the target layer only (a torch.fx split, see :mod:`pycam_fast.engine.tail`), batched over
samples and channels. When the tail cannot be split (a skip connection crosses the target layer, or the model is
not traceable), whole forwards run with the target layer's output replaced, and the reason is logged once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.memory import run_chunked
from ..engine.tail import log_once, split_tail
from ..hooks import LayerSpec
from ..targets import ClassIdx, OutputTarget, resolve_targets, select_scores
from .core import _CAM

__all__ = [
    "ABLATION_OFFSET",
    "AblationCAM",
    "AblationValue",
    "ablation_scores",
    "ablation_values",
    "ablation_weights",
    "check_ablation_value",
    "replaced_output_evaluator",
]

#: pytorch-grad-cam's offset below the minimum activation when the activations are not ReLU-like.
ABLATION_OFFSET = 1e7

#: ``"auto"`` (pytorch-grad-cam's rule), ``"zero"``, a number, or ``f(A (N, C, *S)) -> (N,) or (N, C)`` values.
AblationValue = str | float | Callable[[Tensor], Tensor]

#: ``evaluate(rows (M, C, *S), samples (M,)) -> model output (M, K)`` for ablated target activations.
Evaluator = Callable[[Tensor, Tensor], Any]


def check_ablation_value(rule: Any) -> AblationValue:
    """Validate an ablation value rule.

    Raises:
        ValueError: an unknown rule.

    """
    if rule in ("auto", "zero") or callable(rule):
        return rule
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        return float(rule)
    raise ValueError(
        f"`ablation_value` must be 'auto', 'zero', a number or a callable A -> (N,) / (N, C) values; got {rule!r}"
    )


def ablation_values(activations: Tensor, rule: AblationValue = "auto") -> Tensor:
    """The value each ablated channel is set to.

    ``"auto"`` follows pytorch-grad-cam 1.5.7 per sample: 0 when the sample's minimum activation is exactly 0 (ReLU
    outputs), else ``min - 1e7``. (pytorch-grad-cam applies this inside a loop that writes each ablated channel into
    the tensor it takes the minimum of, so in a chunk of ``b`` channels the ``j``-th one gets ``min - (j + 1) * 1e7``;
    pass a callable returning ``(N, C)`` values to reproduce that.)

    Args:
        activations: ``(N, C, *S)``.
        rule: see :data:`AblationValue`.

    Returns:
        ``(N, C)`` values in the activations' dtype.

    """
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


def ablated_rows(activations: Tensor, values: Tensor, pairs: Tensor) -> Tensor:
    """``(M, C, *S)`` copies of the samples of the flattened ``pairs`` with their channel set to its value."""
    num_ch = activations.shape[1]
    samples, chans = pairs // num_ch, pairs % num_ch
    rows = activations[samples].clone()
    fill = values[samples, chans].view(-1, *([1] * (activations.ndim - 2)))
    rows[torch.arange(pairs.numel(), device=pairs.device), chans] = fill.expand_as(rows[:, 0])
    return rows


def ablation_scores(
    evaluate: Evaluator,
    activations: Tensor,
    values: Tensor,
    class_idx: ClassIdx | None,
    targets: list[OutputTarget] | None,
    chunk: int,
    progress: Any = None,
) -> Tensor:
    """Explained scores with each channel ablated, batched over (sample, channel) pairs.

    Args:
        evaluate: maps ablated activations and their sample indices to model outputs.
        activations: ``(N, C, *S)`` target layer output.
        values: ``(N, C)`` ablation values.
        class_idx: explained class (one int or N ints), or ``None`` with ``targets``.
        targets: N callables, or ``None``.
        chunk: ablated copies per evaluation (retried smaller on out-of-memory).
        progress: optional bar with ``update(n)``.

    Returns:
        ``(N, C)`` scores in fp32 (fp64 for fp64 activations).

    """
    num_n, num_ch = activations.shape[:2]
    acc_dtype = torch.float64 if activations.dtype == torch.float64 else torch.float32
    scores = torch.empty(num_n * num_ch, dtype=acc_dtype, device=activations.device)

    def _run(start: int, stop: int) -> None:
        pairs = torch.arange(start, stop, device=activations.device)
        samples = pairs // num_ch
        out = evaluate(ablated_rows(activations, values, pairs), samples)
        scores[start:stop] = select_scores(out, class_idx, targets, samples).to(acc_dtype)

    run_chunked(_run, num_n * num_ch, chunk, progress)
    return scores.view(num_n, num_ch)


def ablation_weights(base: Tensor, ablated: Tensor) -> Tensor:
    """``w = (y - y_k) / y``: ``(N,)`` base scores and ``(N, C)`` ablated scores -> ``(N, C)`` weights."""
    base = base.to(ablated.dtype)[:, None]
    return (base - ablated) / base


def replaced_output_evaluator(model: nn.Module, module: nn.Module, inputs: Tensor) -> Evaluator:
    """Fallback evaluator: whole forwards of ``inputs[samples]`` with ``module``'s output replaced by the rows.

    Args:
        model: the model (a hook is added to ``module`` for each call and removed after it).
        module: the target layer.
        inputs: ``(N, *input_shape)`` inputs of the explained forward.

    """

    def _full(rows: Tensor, samples: Tensor) -> Any:
        handle = module.register_forward_hook(lambda _m, _i, _o: rows)
        try:
            return model(inputs[samples.to(inputs.device)])
        finally:
            handle.remove()

    return _full


class AblationCAM(_CAM):
    r"""Ablation-CAM, pytorch-grad-cam's definition, on the model tail only.

    Usage is TorchCAM's: ``out = model(x); cams = extractor(class_idx, out)`` (``scores`` optional: without it the
    unablated score is recomputed by the same tail). ``ablation_weights`` returns the raw ``(N, C)`` weights.

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

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        input_shape: tuple[int, ...] = (3, 224, 224),
        ablation_value: AblationValue = "auto",
        **kwargs: Any,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        if kwargs.get("reshape_transform") is not None:
            raise ValueError("AblationCAM does not support `reshape_transform`: pick a layer with (N, C, *S) output")
        self.ablation_value = check_ablation_value(ablation_value)
        super().__init__(model, target_layer, input_shape, **kwargs)
        self.bs = batch_size
        self._relu = True
        self._targets_supported = True
        self._input: Tensor | None = None
        self.hook_handles.append(model.register_forward_pre_hook(self._store_input))
        self._tails = {}
        for name in self.target_names:
            split = split_tail(model, name)
            if split.tail is None:
                log_once(f"AblationCAM on '{name}': full forwards instead of the tail only: {split.reason}")
            self._tails[name] = split.tail

    def _store_input(self, _module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if self._hooks_enabled and inputs and isinstance(inputs[0], Tensor):
            self._input = inputs[0].detach()

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
        return self._get_weights(class_idx, scores, targets=targets)

    @torch.no_grad()
    def _get_weights(
        self,
        class_idx: ClassIdx | None,
        scores: Any = None,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        **_: Any,
    ) -> list[Tensor]:
        activations: list[Tensor] = self.hook_a  # type: ignore[assignment]
        target_fns = resolve_targets(targets, activations[0].shape[0]) if targets is not None else None
        weights = []
        with self._hooks_off(), self._eval_mode():
            for name, act in zip(self.target_names, activations, strict=True):
                evaluate = self._evaluator(name)
                samples = torch.arange(act.shape[0], device=act.device)
                base_out = scores if scores is not None else evaluate(act, samples)
                base = select_scores(base_out, class_idx, target_fns)
                values = ablation_values(act, self.ablation_value)
                ablated = ablation_scores(evaluate, act, values, class_idx, target_fns, self.bs)
                weights.append(ablation_weights(base.to(act.device), ablated).to(act.dtype))
        return weights

    def _extra_repr(self) -> str:
        return f"target_layer={self.target_names}, batch_size={self.bs}, ablation_value={self.ablation_value!r}"
