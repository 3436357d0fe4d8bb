"""Batched perturbation forwards of the faithfulness metrics (masked inputs, deletion/insertion curves).

Every perturbed input of a batch (all samples, all steps, both curves) is one row of a flat job list; the rows are
built on the device with one ``torch.where`` per chunk and forwarded in chunks as large as the memory budget allows
(:mod:`.chunking`; at most :data:`CPU_MAX_ROWS` rows on the CPU, where larger batches are slower), on the private
inference copy of the model (:class:`~.private_copy.FastModel`: no hooks, conv-batchnorm folded, channels-last for
fp32 images) unless the model carries hooks of its own, under ``torch.inference_mode``. The chunk size does not
change the result. Scores come back in fp32 (or the model's wider dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._log import log_once
from ..targets import OutputTarget, select_scores
from .chunking import default_budget, forward_bytes_per_sample, run_chunked
from .private_copy import FastModel, foreign_hooks

__all__ = ["CPU_MAX_ROWS", "PerturbationScorer", "class_selector", "curve_counts"]

#: Rows per forward on the CPU: larger batches run slower there (ResNet-18 at 96x96, one thread: 11.2 ms/row at
#: 64 rows, 12.5 at 128, 13.6 at 256); accelerators take as many rows as the memory budget allows (at most 1024).
CPU_MAX_ROWS = 64

#: ``(output, sample_indices) -> (M,)`` explained scores of the rows of a perturbed batch
Selector = Callable[[Any, Tensor], Tensor]


def curve_counts(positions: int, steps: int) -> list[int]:
    """Perturbed positions at each point of a curve: ``0, s, 2s, ..., positions`` with ``s = ceil(positions/steps)``."""
    step = (positions + steps - 1) // steps
    return [*range(0, positions, step), positions]


def class_selector(
    class_idx: list[int] | None, targets: list[OutputTarget] | None, logits_fn: Callable[[Any], Any] | None
) -> Selector:
    """Selector of the explained score of each row (``class_idx[sample]`` or ``targets[sample](row)``)."""

    def select(output: Any, samples: Tensor) -> Tensor:
        output = output if logits_fn is None else logits_fn(output)
        return select_scores(output, class_idx, targets, samples)

    return select


class PerturbationScorer:
    """Scores of perturbed copies of a batch, in large chunked inference forwards.

    Args:
        model: the model (copied privately on first use; the copy follows its parameters).
        batch_size: rows per forward; ``None``: as many as ``memory_budget`` allows (at most :data:`CPU_MAX_ROWS`
            on the CPU, 1024 on accelerators).
        memory_budget: bytes of working memory for one forward (default: 1 GiB on CPU, half the free GPU memory).

    """

    def __init__(self, model: nn.Module, batch_size: int | None = None, memory_budget: int | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self._copy: FastModel | None = None
        self._sample_bytes: dict[tuple[Any, ...], int] = {}

    def forward_for(self, sample: Tensor) -> Callable[[Tensor], Any]:
        """The forward of the perturbed batches: the private copy (channels-last for fp32 images) or the model."""
        hooked = foreign_hooks(self.model)
        if hooked:
            log_once(f"pycam_fast metrics: perturbed forwards run the model itself (it has hooks on {hooked})")

            def forward(x: Tensor) -> Any:
                with torch.inference_mode():
                    return self.model(x)

            return forward
        channels_last = sample.ndim == 4 and sample.dtype == torch.float32
        if self._copy is None or self._copy.channels_last != channels_last:
            self._copy = FastModel(self.model, channels_last=channels_last)
        return self._copy

    def _chunk(self, forward: Any, sample: Tensor) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if not isinstance(forward, FastModel):
            return 32
        budget = self.memory_budget or default_budget(sample.device)
        key = (tuple(sample.shape[1:]), sample.dtype, sample.device, forward.channels_last)
        if key not in self._sample_bytes:
            self._sample_bytes[key] = forward_bytes_per_sample(forward.module, sample[:1], forward.context)
        per_sample = self._sample_bytes[key]
        cap = CPU_MAX_ROWS if sample.device.type == "cpu" else 1024
        return max(1, min(budget // per_sample, cap))

    def _scores(self, rows: int, make: Callable[[int, int], tuple[Tensor, Tensor]], select: Selector) -> Tensor:
        """``(rows,)`` scores; ``make(start, stop)`` returns the perturbed inputs and their sample indices."""
        first, _ = make(0, 1)
        forward = self.forward_for(first)
        chunk = self._chunk(forward, first)
        out: Tensor | None = None

        def run(start: int, stop: int) -> None:
            nonlocal out
            inputs, samples = make(start, stop)
            with torch.inference_mode():
                scores = select(forward(inputs), samples).detach()
            if scores.dtype in (torch.float16, torch.bfloat16):
                scores = scores.float()
            if out is None:
                out = scores.new_empty(rows)
            out[start:stop] = scores

        run_chunked(run, rows, chunk)
        return out  # type: ignore[return-value]

    def masked(self, inputs: Tensor, masks: Tensor, select: Selector) -> Tensor:
        """``(N,)`` explained scores of ``masks * inputs`` (``masks`` ``(N, 1, *S)`` broadcast over channels)."""

        def make(start: int, stop: int) -> tuple[Tensor, Tensor]:
            return masks[start:stop] * inputs[start:stop], torch.arange(start, stop, device=inputs.device)

        return self._scores(inputs.shape[0], make, select)

    def deletion_insertion(
        self, inputs: Tensor, baseline: Tensor, ranks: Tensor, counts: list[int], select: Selector, base: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Deletion and insertion curves of a batch.

        At point ``j`` the ``counts[j]`` highest-ranked positions (shared by the channels) are replaced by the
        baseline (deletion) or are the only ones restored from the input (insertion).

        Args:
            inputs: ``(N, C, *S)`` inputs.
            baseline: ``(N, C, *S)`` baseline.
            ranks: ``(N, prod(S))`` rank of each position (0: most relevant).
            counts: ``L >= 2`` increasing counts from 0 to ``prod(S)``.
            select: the explained score of each row.
            base: ``(N,)`` scores of the unperturbed inputs (the deletion curve's first and insertion's last point).

        Returns:
            ``(N, L)`` deletion and insertion curves (``base``'s dtype).

        """
        n, points = inputs.shape[0], len(counts)
        device = inputs.device
        flat_x, flat_b = inputs.flatten(2), baseline.flatten(2)
        interior = points - 2
        # the all-baseline input (deletion's last point, insertion's first) is forwarded once when every sample
        # shares the baseline, else it is one row per sample ahead of the (sample, interior point, curve) rows
        shared = n > 1 and bool((baseline == baseline[:1]).all())
        full = torch.arange(0 if shared else n, device=device)
        samples = torch.cat([full, torch.arange(n, device=device).repeat_interleave(2 * interior)])
        steps = torch.arange(1, points - 1, device=device).repeat_interleave(2).repeat(n)
        point = torch.cat([torch.full_like(full, points - 1), steps])
        curves = torch.tensor([False, True], device=device).repeat(n * interior)
        insertion = torch.cat([torch.zeros_like(full, dtype=torch.bool), curves])
        count_of = torch.tensor(counts, device=device)

        def make(start: int, stop: int) -> tuple[Tensor, Tensor]:
            s = samples[start:stop]
            restored = ranks[s] < count_of[point[start:stop]].unsqueeze(1)
            keep = restored == insertion[start:stop].unsqueeze(1)
            rows = torch.where(keep.unsqueeze(1), flat_x[s], flat_b[s])
            return rows.reshape(-1, *inputs.shape[1:]), s

        scores = self._scores(samples.numel(), make, select) if samples.numel() else base.new_empty(0)
        if shared:
            with torch.inference_mode():
                out = self.forward_for(baseline[:1])(baseline[:1])
            if isinstance(out, Tensor):
                full_scores = select(out.expand(n, *out.shape[1:]), torch.arange(n, device=device))
            else:
                full_scores = self.masked(baseline, torch.ones_like(baseline[:, :1]), select)
            full_scores = full_scores.to(scores.dtype)
        else:
            full_scores = scores[:n]
        rest = scores[full.numel() :].view(n, interior, 2)
        deletion, ins = base.new_empty((n, points)), base.new_empty((n, points))
        deletion[:, 0], ins[:, -1] = base, base
        deletion[:, -1], ins[:, 0] = full_scores, full_scores
        deletion[:, 1:-1], ins[:, 1:-1] = rest[..., 0], rest[..., 1]
        return deletion, ins
