"""TorchCAM 0.5.0's ``torchcam.metrics``: Average Drop / Increase in Confidence and Deletion / Insertion AUCs.

Same constructors, ``update``/``summary``/``reset``, state attributes and numbers as TorchCAM 0.5.0. What differs
is how the perturbed inputs are scored (:class:`pycam_fast.forward.perturbation.PerturbationScorer`): every
perturbation step of every sample of a batch is built on the device without Python loops and forwarded in chunks as
large as the memory budget allows, on a hook-free, batchnorm-folded private copy of the model, under
``torch.inference_mode``. ``DeletionInsertionMetric(batch_size=...)`` still caps the rows per forward when given; its
default ``None`` lets the memory budget decide (``memory_budget=`` bytes, keyword-only, on both metrics).

Works with any extractor that has TorchCAM's interface (``model``, ``__call__``, ``fuse_cams``, ``_hooks_off``):
this package's, :mod:`pycam_fast.methods`' and TorchCAM's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...forward.perturbation import PerturbationScorer, class_selector, curve_counts
from ...model_state import model_eval
from ...targets import OutputTarget, resolve_targets, target_scores

__all__ = ["ClassificationMetric", "DeletionInsertionMetric"]


class _CAMExtractor(Protocol):
    model: nn.Module

    def __call__(self, class_idx: Any = None, scores: Any = None, normalized: bool = True, **kwargs: Any) -> Any: ...

    def fuse_cams(self, cams: list[Tensor]) -> Tensor: ...

    def _hooks_off(self) -> Any: ...


def _classes(scores: Tensor, class_idx: int | list[int] | None) -> tuple[int | list[int], list[int]]:
    """The extractor's ``class_idx`` and one class per sample (the top prediction when ``None``)."""
    batch, num_classes = scores.shape
    if class_idx is None:
        rows = scores.argmax(dim=-1).tolist()
        return rows, rows
    if isinstance(class_idx, int) and not isinstance(class_idx, bool):
        if not 0 <= class_idx < num_classes:
            raise ValueError("class_idx is out of range")
        return class_idx, [class_idx] * batch
    if not isinstance(class_idx, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in class_idx):
        raise TypeError("class_idx must be an integer, a list of integers, or None")
    if len(class_idx) != batch:
        raise ValueError("per-sample class_idx must match the batch size")
    if any(not 0 <= i < num_classes for i in class_idx):
        raise ValueError("class_idx is out of range")
    return class_idx, list(class_idx)


def _resize(cam: Tensor, spatial: tuple[int, ...]) -> Tensor:
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(spatial))
    if mode is None:
        raise ValueError("only 1D, 2D, and 3D spatial inputs are supported")
    return F.interpolate(cam.unsqueeze(1), spatial, mode=mode, align_corners=False).squeeze(1)


class _Metric:
    """What both metrics share: the explained forward, the CAM and the selection of the explained scores."""

    def __init__(
        self, cam_extractor: _CAMExtractor, logits_fn: Callable[[Any], Any] | None, batch_size: int | None, budget: Any
    ) -> None:
        self.cam_extractor = cam_extractor
        self.logits_fn = logits_fn
        self._scorer = PerturbationScorer(cam_extractor.model, batch_size, budget)

    def _explain(self, inputs: Tensor, class_idx: Any, targets: Any) -> dict[str, Any] | None:
        """Forward, CAM, and the samples whose CAM is finite; ``None`` when none is (counted in ``nan_count``)."""
        if targets is not None and class_idx is not None:
            raise ValueError("provide either class_idx or targets, not both")
        output = self.cam_extractor.model(inputs)
        scores = output if self.logits_fn is None else self.logits_fn(output)
        fns = resolve_targets(targets, inputs.shape[0]) if targets is not None else None
        if fns is not None:
            cam = self.cam_extractor.fuse_cams(self.cam_extractor(scores=scores, targets=fns))
            rows = None
        else:
            extractor_idx, rows = _classes(scores, class_idx)
            cam = self.cam_extractor.fuse_cams(self.cam_extractor(extractor_idx, scores))
        discard = torch.isnan(cam).reshape(inputs.shape[0], -1).any(dim=-1)
        self.nan_count += int(discard.sum().item())
        if bool(discard.all()):
            return None
        keep = (~discard).nonzero().flatten().tolist()
        selected = target_scores(scores, fns) if fns is not None else _gather(scores, rows)  # type: ignore[arg-type]
        return {
            "keep": keep,
            "mask": ~discard,
            "cam": _resize(cam[~discard], tuple(inputs.shape[2:])),
            "inputs": inputs[~discard],
            "scores": selected[~discard].detach(),
            "rows": None if rows is None else [rows[i] for i in keep],
            "targets": None if fns is None else [fns[i] for i in keep],
        }

    #: ``(attribute summed over the samples, its key in summary())`` of each value the metric reports
    _SUMS: tuple[tuple[str, str], ...] = ()

    def summary(self) -> dict[str, float]:
        """Each reported value averaged over the samples with a finite CAM (see the class for the keys).

        Raises:
            AssertionError: no sample was added yet.

        """
        if self.total == 0:
            raise AssertionError("you need to update the metric before getting the summary")
        return {key: getattr(self, attr) / self.total for attr, key in self._SUMS}

    def update(
        self,
        input_tensor: Tensor,
        class_idx: int | list[int] | None = None,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
    ) -> None:
        """Add a batch ``(N, C, *S)``: its maps, then the metric's perturbed forwards (batched).

        Args:
            input_tensor: the preprocessed batch.
            class_idx: the explained class (one int, N ints, or ``None``: each sample's top prediction).
            targets: instead of ``class_idx``, one callable (or N) mapping a sample's output to a scalar.

        Raises:
            ValueError: both ``class_idx`` and ``targets``, bad class indices, or (deletion/insertion) a baseline of
                the wrong shape.

        """
        with model_eval(self.cam_extractor.model):
            state = self._explain(input_tensor, class_idx, targets)
            if state is None:
                return
            values = self._batch_values(input_tensor, state)
        for (attr, _), value in zip(self._SUMS, values, strict=True):
            setattr(self, attr, getattr(self, attr) + value.sum().item())
        self.total += state["cam"].shape[0]

    def _batch_values(self, input_tensor: Tensor, state: dict[str, Any]) -> tuple[Tensor, ...]:
        """One ``(n,)`` tensor per entry of ``_SUMS`` for the kept samples of ``state``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every sample."""
        for attr, _ in self._SUMS:
            setattr(self, attr, 0.0)
        self.total = 0
        self.nan_count = 0

    def _selector(self, state: dict[str, Any]) -> Any:
        return class_selector(state["rows"], state["targets"], self.logits_fn)


def _gather(scores: Tensor, rows: list[int]) -> Tensor:
    return scores.gather(1, torch.tensor(rows, device=scores.device).unsqueeze(1)).squeeze(1)


class ClassificationMetric(_Metric):
    r"""Average Drop and Increase in Confidence ("Grad-CAM++", Chattopadhyay et al. 2018).

    ``drop = mean_i max(0, Y_i - O_i) / (Y_i + 1e-7)`` and ``increase = mean_i [Y_i < O_i]`` where ``Y_i`` is the
    explained score of input ``x_i`` and ``O_i`` that of ``resize(cam_i) * x_i``.

    Args:
        cam_extractor: the extractor whose maps are evaluated (its ``model`` is explained).
        logits_fn: applied to the model output before the scores are selected (e.g. ``partial(torch.softmax,
            dim=-1)``).
        memory_budget: bytes of working memory of the masked forward (keyword-only; default as
            :func:`~pycam_fast.forward.chunking.default_budget`).

    """

    _SUMS = (("drop", "avg_drop"), ("increase", "conf_increase"))

    def __init__(
        self,
        cam_extractor: _CAMExtractor,
        logits_fn: Callable[[Any], Any] | None = None,
        *,
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(cam_extractor, logits_fn, None, memory_budget)
        self.reset()

    def _batch_values(self, input_tensor: Tensor, state: dict[str, Any]) -> tuple[Tensor, ...]:
        """Per-sample drop and increase, from one batched forward of the masked inputs."""
        with self.cam_extractor._hooks_off():
            masked = self._scorer.masked(state["inputs"], state["cam"].unsqueeze(1), self._selector(state))
        base = state["scores"]
        masked = masked.to(base.dtype)
        return torch.relu(base - masked).div(base + 1e-7), base < masked


class DeletionInsertionMetric(_Metric):
    r"""Deletion and insertion AUCs ("RISE", Petsiuk et al. 2018).

    Positions are ranked by decreasing CAM value (stable); at each of ``ceil``-spaced steps the top positions are
    replaced by the baseline (deletion) or are the only ones taken from the input (insertion), for every channel;
    the AUCs integrate the explained score against the perturbed fraction (``torch.trapezoid``).

    Args:
        cam_extractor: the extractor whose maps are evaluated.
        logits_fn: applied to the model output before the scores are selected.
        steps: number of perturbation intervals (at most).
        baseline: a tensor broadcastable to the input, a callable ``input -> baseline``, or ``None`` (zeros).
        batch_size: rows per forward; ``None`` (default): as many as ``memory_budget`` allows.
        memory_budget: bytes of working memory of one forward.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: ``steps`` or ``batch_size`` not positive.

    """

    _SUMS = (("deletion", "deletion_auc"), ("insertion", "insertion_auc"))

    def __init__(
        self,
        cam_extractor: _CAMExtractor,
        logits_fn: Callable[[Any], Any] | None = None,
        *,
        steps: int = 20,
        baseline: Tensor | Callable[[Tensor], Tensor] | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
    ) -> None:
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise TypeError("steps must be an integer")
        if steps <= 0:
            raise ValueError("steps must be positive")
        if batch_size is not None:
            if not isinstance(batch_size, int) or isinstance(batch_size, bool):
                raise TypeError("batch_size must be an integer")
            if batch_size <= 0:
                raise ValueError("batch_size must be positive")
        if baseline is not None and not isinstance(baseline, Tensor) and not callable(baseline):
            raise TypeError("baseline must be a tensor, a callable, or None")
        super().__init__(cam_extractor, logits_fn, batch_size, memory_budget)
        self.steps = steps
        self.baseline = baseline
        self.batch_size = batch_size
        self.reset()

    def _get_baseline(self, inputs: Tensor) -> Tensor:
        if self.baseline is None:
            return torch.zeros_like(inputs)
        baseline = self.baseline if isinstance(self.baseline, Tensor) else self.baseline(inputs)
        if not isinstance(baseline, Tensor):
            raise TypeError("baseline callable must return a tensor")
        try:
            return torch.broadcast_to(baseline.to(inputs), inputs.shape)
        except RuntimeError as exc:
            raise ValueError("baseline must be broadcastable to the input shape") from exc

    def _batch_values(self, input_tensor: Tensor, state: dict[str, Any]) -> tuple[Tensor, ...]:
        """Per-sample deletion and insertion AUCs, every step of both curves in a few large forwards."""
        with torch.no_grad():
            baseline = self._get_baseline(input_tensor)[state["mask"]]
        order = torch.argsort(state["cam"].flatten(1), dim=1, descending=True, stable=True)
        ranks = torch.argsort(order, dim=1)
        counts = curve_counts(ranks.shape[1], self.steps)
        with self.cam_extractor._hooks_off():
            deletion, insertion = self._scorer.deletion_insertion(
                state["inputs"], baseline, ranks, counts, self._selector(state), state["scores"]
            )
        fractions = torch.tensor(counts, device=deletion.device, dtype=torch.float32).div_(ranks.shape[1])
        return torch.trapezoid(deletion, fractions, dim=1), torch.trapezoid(insertion, fractions, dim=1)
