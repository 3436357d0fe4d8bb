"""Score-CAM family scores: batched masked forwards over (sample, channel) pairs.

Every pair ``(n, c)`` masks input ``n`` with the normalised, upsampled channel ``A[n, c]`` (the backend op
``masked_inputs``) and scores the explained output; the scores are averaged over the passes (noise draws or
integration steps); the methods turn them into weights. Pairs from several samples share a chunk, so the chunk size
does not change the result. Two savings are exact: a constant channel gives an all-zero mask, hence a zero input
whose output is computed once for the whole batch (noise-free passes only); and, with ``top_k``, channels outside
each sample's ``top_k`` largest spatial standard deviations are not forwarded and get weight 0 (Faster Score-CAM, an
approximation that is opt-in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import ops
from ..targets import ClassIdx, OutputTarget, select_scores
from .chunking import run_chunked

__all__ = ["ScorePlan", "constant_channels", "masked_scores", "top_k_channels"]


def constant_channels(activations: Tensor) -> Tensor:
    """``(N, C)`` bool: channels of ``(N, C, *S)`` whose values are all equal (all-zero masks)."""
    flat = activations.flatten(2)
    return flat.amax(-1) == flat.amin(-1)


def top_k_channels(activations: Tensor, k: int) -> Tensor:
    """``(N, C)`` bool: each sample's ``k`` channels with the largest spatial standard deviation."""
    keep = torch.zeros(activations.shape[:2], dtype=torch.bool, device=activations.device)
    if k >= activations.shape[1]:
        return keep.fill_(True)
    std = activations.flatten(2).float().std(-1, correction=0)
    return keep.scatter_(1, std.topk(k, dim=1).indices, True)


@dataclass
class ScorePlan:
    """How to run the masked forwards of a Score-CAM family method.

    Attributes:
        passes: one dict per pass with optional ``noise`` (indexable by pair indices) and ``scale``.
        chunk: masked inputs per forward.
        dedup_constant: forward the all-zero masked input once (exact; ignored for passes with noise).
        top_k: only forward each sample's ``top_k`` highest-std channels (approximation), ``None`` for all.
        input_dtype: dtype of the masked inputs (default: the input's).
        channels_last: build channels-last masked inputs.
        progress: optional bar with ``update(n)``.
        backend: backend of the ``masked_inputs`` op.

    """

    passes: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    chunk: int = 32
    dedup_constant: bool = True
    top_k: int | None = None
    input_dtype: torch.dtype | None = None
    channels_last: bool = False
    progress: Any = None
    backend: str = "auto"


def _masked_batch(act: Tensor, inputs: Tensor, pairs: Tensor, extra: dict[str, Any], plan: ScorePlan) -> Tensor:
    """Masked inputs of the flattened ``pairs`` (sorted), one ``masked_inputs`` call per contiguous run."""
    num_ch = act.shape[1]
    kwargs = {
        "scale": extra.get("scale", 1.0),
        "out_dtype": plan.input_dtype,
        "channels_last": plan.channels_last,
        "backend": plan.backend,
    }
    noise = extra.get("noise")
    first, count = int(pairs[0]), pairs.numel()
    if int(pairs[-1]) - first + 1 == count:  # one contiguous range: the op's own slicing
        rows = None if noise is None else noise[first : first + count]
        return ops.masked_inputs(act, inputs, first, first + count, noise=rows, **kwargs)
    samples = pairs // num_ch
    parts = []
    for n in torch.unique_consecutive(samples).tolist():
        sel = pairs[samples == n]
        rows = None if noise is None else noise[sel]
        base = inputs[n : n + 1] if inputs.shape[0] > 1 else inputs
        parts.append(ops.masked_inputs(act[n : n + 1, sel % num_ch], base, 0, sel.numel(), noise=rows, **kwargs))
    return torch.cat(parts)


def masked_scores(
    model: Callable[[Tensor], Any],
    act: Tensor,
    inputs: Tensor,
    class_idx: ClassIdx | None,
    targets: list[OutputTarget] | None,
    plan: ScorePlan,
) -> Tensor:
    """Each channel's masked-input score of one layer, averaged over the passes.

    Args:
        model: maps a batch of masked inputs ``(M, Cin, *S_in)`` to outputs ``(M, K)``.
        act: ``(N, C, *S)`` target layer activations.
        inputs: ``(N, Cin, *S_in)`` inputs of the explained forward.
        class_idx: explained class (one int or N ints), or ``None`` with ``targets``.
        targets: N callables, or ``None``.
        plan: chunking and savings.

    Returns:
        ``(N, C)`` scores in fp32 (fp64 for fp64 activations); ``-inf`` for channels outside ``top_k``.

    """
    num_n, num_ch = act.shape[:2]
    acc_dtype = torch.float64 if act.dtype == torch.float64 else torch.float32
    keep = top_k_channels(act, plan.top_k) if plan.top_k is not None else None
    const = constant_channels(act) if plan.dedup_constant else None
    total = torch.zeros(num_n * num_ch, dtype=acc_dtype, device=act.device)
    for extra in plan.passes:
        todo = torch.ones(num_n * num_ch, dtype=torch.bool, device=act.device)
        if keep is not None:
            todo &= keep.flatten()
        zero_pairs = todo.new_zeros(0, dtype=torch.long)
        if const is not None and extra.get("noise") is None:
            zero_pairs = (todo & const.flatten()).nonzero().squeeze(1)
            todo &= ~const.flatten()
        pairs = todo.nonzero().squeeze(1)
        # The all-zero input of the constant channels rides along as the last item of the last chunk: no separate
        # batch-1 forward (and no extra padded forward for a compiled model).
        ride = zero_pairs.numel() > 0
        zero_out: list[Any] = []

        def _run(
            start: int,
            stop: int,
            pairs: Tensor = pairs,
            extra: dict[str, Any] = extra,
            ride: bool = ride,
            zero_out: list[Any] = zero_out,
        ) -> None:
            chunk_pairs = pairs[start:stop]
            with_zero = ride and stop > pairs.numel()
            batch = _masked_batch(act, inputs, chunk_pairs, extra, plan) if chunk_pairs.numel() else None
            if with_zero:
                like = batch if batch is not None else inputs.to(plan.input_dtype or inputs.dtype)
                zero = like.new_zeros((1, *like.shape[1:]))
                batch = zero if batch is None else torch.cat([batch, zero])
            out = model(batch)
            if with_zero:
                zero_out.append(out[-1:])
                out = out[:-1]
            if chunk_pairs.numel():
                scores = select_scores(out, class_idx, targets, chunk_pairs // num_ch)
                total[chunk_pairs] += scores.to(acc_dtype)

        plan.chunk = run_chunked(_run, pairs.numel() + int(ride), plan.chunk, plan.progress)
        if ride:
            total[zero_pairs] += _zero_input_scores(zero_out[-1], zero_pairs // num_ch, class_idx, targets, acc_dtype)
        extra.pop("noise", None)  # a pass's noise is not needed any more: free it
    scores = total / len(plan.passes)
    if keep is not None:
        scores = scores.masked_fill(~keep.flatten(), float("-inf"))
    return scores.view(num_n, num_ch)


def _zero_input_scores(
    out: Any, samples: Tensor, class_idx: ClassIdx | None, targets: list[OutputTarget] | None, acc_dtype: torch.dtype
) -> Tensor:
    """Scores of the all-zero masked input for the pairs of ``samples``, from its output ``out`` (one row)."""
    rows = out.expand(samples.numel(), *out.shape[1:]) if isinstance(out, Tensor) else [out[0]] * samples.numel()
    return select_scores(rows, class_idx, targets, samples).to(acc_dtype)
