"""Batched ablation forwards: the explained scores with one channel of the target layer replaced, per channel.

The ablated copies of several samples and channels share an evaluation (chunked, retried smaller on out-of-memory),
so the chunk size does not change the result. An evaluator maps ablated target activations to model outputs: the
model tail after the target layer (:func:`~.tail.split_tail`), or whole forwards with the layer's output replaced
(:func:`replaced_output_evaluator`) when the tail cannot be isolated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..targets import ClassIdx, OutputTarget, select_scores
from .chunking import run_chunked

__all__ = ["Evaluator", "ablated_rows", "ablation_scores", "replaced_output_evaluator"]

#: ``evaluate(rows (M, C, *S), samples (M,)) -> model output (M, K)`` for ablated target activations.
Evaluator = Callable[[Tensor, Tensor], Any]


def ablated_rows(activations: Tensor, values: Tensor, pairs: Tensor) -> Tensor:
    """``(M, C, *S)`` copies of the samples of the flattened ``pairs`` with their channel set to its value.

    Args:
        activations: ``(N, C, *S)``.
        values: ``(N, C)`` value of each ablated channel.
        pairs: ``(M,)`` flattened (sample, channel) indices ``n * C + c``.

    """
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
