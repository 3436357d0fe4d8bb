"""grad-cam 1.5.7's ``pytorch_grad_cam.metrics.perturbation_confidence``: the confidence change of perturbed inputs.

Same classes, signatures and numbers as grad-cam. What differs is how they are computed: the perturbed copies of a
batch (for every percentile of an average at once) are built on the input's device in torch, and together with the
unperturbed batch they are forwarded in as few large chunks as the memory budget allows, on the private inference
copy of the model (:class:`pycam_fast.forward.perturbation.PerturbationScorer`), under ``torch.inference_mode``.
Targets of :mod:`..utils.model_targets`' classifier types are evaluated on whole batches; any other callable is
called on each output row, as grad-cam does. A perturbation of an unknown type is applied per sample on the CPU,
as grad-cam does, and only its forwards are batched. A model in training mode is run itself, in grad-cam's batches
(its batch statistics depend on them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ....forward.perturbation import PerturbationScorer
from ..utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

__all__ = [
    "AveragerAcrossThresholds",
    "PerturbationConfidenceMetric",
    "RemoveLeastRelevantFirst",
    "RemoveMostRelevantFirst",
]

#: grad-cam's default percentiles of the averages
_PERCENTILES = [10, 20, 30, 40, 50, 60, 70, 80, 90]

#: ``(outputs, categories) -> (M,)`` scores of a known target type, on whole batches
_BATCHED_TARGETS: dict[type, Callable[[Tensor, Tensor], Tensor]] = {
    ClassifierOutputTarget: lambda out, cat: out.gather(1, cat.view(-1, 1)).squeeze(1),
    ClassifierOutputSoftmaxTarget: lambda out, cat: torch.softmax(out, dim=-1).gather(1, cat.view(-1, 1)).squeeze(1),
}


def _check_call(input_tensor: Any, cams: Any, targets: Any) -> None:
    """Clear errors for the inputs grad-cam would fail on obscurely.

    Raises:
        TypeError: ``input_tensor`` not a tensor, ``cams`` not a numpy array, ``targets`` not a list of callables.
        ValueError: ``cams`` not ``(N, *spatial)`` of ``input_tensor``.

    """
    if not isinstance(input_tensor, Tensor) or input_tensor.ndim < 3:
        raise TypeError("`input_tensor` must be a (N, C, *spatial) tensor")
    if not isinstance(cams, np.ndarray):
        raise TypeError(f"`cams` must be a numpy array (N, *spatial), got {type(cams).__name__}")
    spatial = tuple(input_tensor.shape[2:])
    if cams.ndim != input_tensor.ndim - 1 or cams.shape[0] < input_tensor.shape[0] or cams.shape[1:] != spatial:
        raise ValueError(
            f"`cams` must have shape (N, *spatial) = {(input_tensor.shape[0], *spatial)} for an input of shape "
            f"{tuple(input_tensor.shape)}, got {cams.shape}"
        )
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or not all(map(callable, targets)):
        raise TypeError("`targets` must be a list of callables, one per sample (e.g. ClassifierOutputTarget(c))")


def _selector(
    targets: Sequence[Callable[[Any], Tensor]], n: int, total: int
) -> tuple[Callable[[Any, Tensor], Tensor], dict[str, Tensor]]:
    """A selector for :class:`PerturbationScorer` (row ``r`` is explained by ``targets[r % n]``) and its results.

    The selector writes each row's target value into ``store["values"]`` (``(total, *target_shape)``: targets may
    return non-scalars, as grad-cam allows) and returns placeholder scores.
    """
    kinds = {type(t) for t in targets}
    batched = _BATCHED_TARGETS.get(kinds.pop()) if len(kinds) == 1 else None
    store: dict[str, Tensor] = {}

    def select(output: Any, rows: Tensor) -> Tensor:
        samples = rows % n
        if batched is not None and isinstance(output, Tensor) and output.ndim == 2:
            cats = torch.tensor([t.category for t in targets], device=output.device)[samples.to(output.device)]
            values = batched(output, cats)
        else:
            values = torch.stack([targets[s](out) for s, out in zip(samples.tolist(), output, strict=True)])
        if "values" not in store:
            store["values"] = values.new_empty((total, *values.shape[1:]))
        store["values"][rows.to(values.device)] = values
        return values.new_zeros(rows.numel(), dtype=torch.float32)

    return select, store


def _scorer(owner: Any, model: nn.Module) -> PerturbationScorer:
    """The scorer kept on ``owner`` for ``model`` (its private model copy is reused across calls)."""
    scorer = owner.__dict__.get("_pycam_scorer")
    if scorer is None or scorer.model is not model:
        scorer = PerturbationScorer(model)
        owner.__dict__["_pycam_scorer"] = scorer
    return scorer


def _target_values(
    owner: Any, model: nn.Module, rows: Tensor, targets: Sequence[Callable[[Any], Tensor]], group: int
) -> np.ndarray:
    """``(R, *target_shape)`` float32 values of ``targets[r % group]`` on the model output of each row ``rows[r]``."""
    select, store = _selector(targets, group, rows.shape[0])
    if model.training:  # batch statistics / dropout: grad-cam's own batches, on the model itself
        with torch.no_grad():
            for start in range(0, rows.shape[0], group):
                stop = min(start + group, rows.shape[0])
                select(model(rows[start:stop]), torch.arange(start, stop))
    else:
        ones = torch.ones((1, 1, *rows.shape[2:]), dtype=rows.dtype, device=rows.device)
        _scorer(owner, model).masked(rows, ones.expand(rows.shape[0], *ones.shape[1:]), select)
    return np.float32(store["values"].detach().cpu().numpy())


def confidence_changes(
    owner: Any,
    input_tensor: Tensor,
    perturbed: Tensor,
    targets: Sequence[Callable[[Any], Tensor]],
    model: nn.Module,
    return_diff: bool,
) -> np.ndarray:
    """Target values after each perturbation (minus those of the input when ``return_diff``), batched.

    Args:
        owner: the metric object that keeps the scorer.
        input_tensor: ``(N, C, *S)`` inputs.
        perturbed: ``(P, N, C, *S)`` perturbed copies (``P`` perturbations of the batch).
        targets: one callable per sample (the first ``M = min(N, len(targets))`` samples are scored, as grad-cam's
            ``zip`` does).
        model: the model.
        return_diff: subtract the target values of the unperturbed inputs.

    Returns:
        ``(P, M, *target_shape)`` float32.

    """
    m = min(input_tensor.shape[0], len(targets))
    after = perturbed[:, :m]
    if not return_diff:
        values = _target_values(owner, model, after.flatten(0, 1), targets[:m], m)
        return values.reshape(after.shape[0], m, *values.shape[1:])
    if model.training:  # grad-cam forwards the inputs again before each perturbed batch (batch statistics updates)
        rows = torch.stack([input_tensor[:m].expand_as(after), after], 1)
        values = _target_values(owner, model, rows.flatten(0, 2), targets[:m], m)
        values = values.reshape(after.shape[0], 2, m, *values.shape[1:])
        return values[:, 1] - values[:, 0]
    values = _target_values(owner, model, torch.cat([input_tensor[:m], after.flatten(0, 1)]), targets[:m], m)
    values = values.reshape(-1, m, *values.shape[1:])
    return values[1:] - values[0]


class PerturbationConfidenceMetric:
    """The target scores after a perturbation of the inputs guided by the CAMs (minus those before, by default).

    Args:
        perturbation: ``(input (C, *S) CPU tensor, cam (*S) CPU tensor) -> perturbed (C, *S)``; this package's
            perturbations are applied to the whole batch on its device.

    """

    def __init__(self, perturbation: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.perturbation = perturbation

    def _batched(self, input_tensor: Tensor, cams: np.ndarray) -> Tensor | None:
        """``(N, C, *S)`` perturbed batch when the perturbation has a batched form, else ``None``."""
        batch = batched_perturbations([self.perturbation], input_tensor, cams)
        return None if batch is None else batch[0]

    def perturbed(self, input_tensor: Tensor, cams: np.ndarray) -> Tensor:
        """The ``(N, C, *S)`` perturbed batch on the input's device (per sample on the CPU for foreign types)."""
        batch = self._batched(input_tensor, cams)
        if batch is not None:
            return batch
        rows = [
            self.perturbation(input_tensor[i].cpu(), torch.from_numpy(cams[i])).to(input_tensor.device)
            for i in range(input_tensor.shape[0])
        ]
        return torch.stack(rows)

    def __call__(
        self,
        input_tensor: Tensor,
        cams: np.ndarray,
        targets: list[Callable[[Any], Tensor]],
        model: nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, Tensor]:
        """Target scores of the perturbed batch.

        Args:
            input_tensor: ``(N, C, H, W)`` inputs.
            cams: ``(N, H, W)`` numpy CAMs.
            targets: one callable per sample, applied to its model output row.
            model: the model.
            return_visualization: also return the ``(N, C, H, W)`` perturbed batch.
            return_diff: subtract the scores of the unperturbed inputs.

        Returns:
            ``(N,)`` float32 scores (``(N, *shape)`` for targets returning non-scalars), and the perturbed batch when
            ``return_visualization``.

        """
        _check_call(input_tensor, cams, targets)
        perturbed = self.perturbed(input_tensor, cams)
        result = confidence_changes(self, input_tensor, perturbed.unsqueeze(0), targets, model, return_diff)[0]
        return (result, perturbed) if return_visualization else result


def _thresholded(masks: np.ndarray, percentile: Any) -> np.ndarray:
    """Binary masks ``(N, *S)``: 1 where ``mask < percentile-th percentile`` of its sample (0/255 Otsu for auto)."""
    if percentile == "auto":
        import cv2

        return np.stack(
            [cv2.threshold(np.uint8(m * 255), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1] for m in masks]
        )
    flat = masks.reshape(masks.shape[0], -1)
    thresholds = np.percentile(flat, percentile, axis=1).astype(masks.dtype)
    return np.float32(flat < thresholds[:, None]).reshape(masks.shape)


class RemoveMostRelevantFirst:
    """Impute the pixels whose CAM value is at or above its ``percentile``-th percentile (``"auto"``: Otsu).

    Args:
        percentile: 0-100, or ``"auto"``.
        imputer: ``(input (C, H, W), binary mask (H, W), 0 = impute) -> imputed (C, H, W)``.

    """

    def __init__(self, percentile: float | str, imputer: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.percentile = percentile
        self.imputer = imputer

    def _relevance(self, cams: np.ndarray) -> np.ndarray:
        return cams

    def binary_masks(self, cams: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` masks of the kept pixels (1, or 255 for ``"auto"``) for ``(N, H, W)`` CAMs."""
        return _thresholded(self._relevance(cams), self.percentile)

    def __call__(self, input_tensor: Tensor, mask: Tensor) -> Tensor:
        """``(C, H, W)`` input and ``(H, W)`` CAM -> the imputed ``(C, H, W)`` input."""
        binary = torch.from_numpy(self.binary_masks(mask.detach().cpu().numpy()[None])[0]).to(mask.device)
        return self.imputer(input_tensor, binary)


class RemoveLeastRelevantFirst(RemoveMostRelevantFirst):
    """Impute the pixels whose ``1 - CAM`` is at or above its ``percentile``-th percentile (the least relevant)."""

    def _relevance(self, cams: np.ndarray) -> np.ndarray:
        return 1 - cams


def _imputed(perturbations: list[Any]) -> bool:
    """Whether every perturbation is a Remove*RelevantFirst of this package with its own noisy linear imputer."""
    from .road import NoisyLinearImputer

    return all(
        type(p) in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst) and type(p.imputer) is NoisyLinearImputer
        for p in perturbations
    )


def batched_perturbations(perturbations: list[Any], input_tensor: Tensor, cams: np.ndarray) -> Tensor | None:
    """``(P, N, C, H, W)`` perturbed copies for ``P`` perturbations, or ``None`` unless all have a batched form.

    Every imputation of every perturbation is one system of a single batched solve (noise drawn in grad-cam's
    order: perturbation by perturbation, sample by sample).
    """
    if not perturbations or not _imputed(perturbations):
        return None
    from .road import impute

    n, count = input_tensor.shape[0], len(perturbations)
    masks = np.concatenate([p.binary_masks(cams[:n]) for p in perturbations])
    noise = [float(p.imputer.noise) for p in perturbations for _ in range(n)]
    rows = input_tensor.repeat(count, *([1] * (input_tensor.ndim - 1)))
    return impute(rows, torch.from_numpy(masks), noise).view(count, *input_tensor.shape)


def _plain_metric(metric: Any) -> bool:
    """A :class:`PerturbationConfidenceMetric` whose call is the base one (no post-processing of the scores)."""
    plain = PerturbationConfidenceMetric.__call__
    return isinstance(metric, PerturbationConfidenceMetric) and type(metric).__call__ is plain


def averaged_scores(
    owner: Any,
    averagers: list[AveragerAcrossThresholds],
    input_tensor: Tensor,
    cams: np.ndarray,
    targets: list[Callable[[Any], Tensor]],
    model: nn.Module,
) -> list[np.ndarray]:
    """Each averager's result; all their perturbations in one batched imputation and one chunked forward."""
    _check_call(input_tensor, cams, targets)
    metrics = [[a.imputer(p) for p in a.percentiles] for a in averagers]
    flat = [m for group in metrics for m in group]
    perturbed = None
    if flat and all(_plain_metric(m) for m in flat):
        perturbed = batched_perturbations([m.perturbation for m in flat], input_tensor, cams)
    if perturbed is None:  # foreign metrics: grad-cam's loop
        scores = [[m(input_tensor, cams, targets, model) for m in group] for group in metrics]
    else:
        changes = confidence_changes(owner, input_tensor, perturbed, targets, model, True)
        sizes = np.cumsum([0] + [len(group) for group in metrics])
        scores = [list(changes[a:b]) for a, b in itertools.pairwise(sizes)]
    return [np.mean(np.float32(s), axis=0) for s in scores]


class AveragerAcrossThresholds:
    """The mean over percentiles of ``imputer(percentile)(input_tensor, cams, targets, model)``.

    Args:
        imputer: ``percentile -> metric`` (a metric class such as ``ROADMostRelevantFirst``).
        percentiles: the percentiles.

    """

    def __init__(self, imputer: Callable[[Any], Any], percentiles: list[float] = _PERCENTILES) -> None:
        self.imputer = imputer
        self.percentiles = percentiles

    def __call__(
        self, input_tensor: Tensor, cams: np.ndarray, targets: list[Callable[[Any], Tensor]], model: nn.Module
    ) -> np.ndarray:
        """``(N,)`` float32 mean score change over the percentiles (see :class:`PerturbationConfidenceMetric`)."""
        return averaged_scores(self, [self], input_tensor, cams, targets, model)[0]
