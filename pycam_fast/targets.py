"""Output targets: which scalar of the model output a CAM explains (class indices or callables)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ClassIndexError",
    "OutputTarget",
    "check_class_range",
    "class_indices",
    "resolve_targets",
    "select_scores",
]

#: A callable taking one sample's model output and returning a scalar tensor.
OutputTarget = Callable[[Any], Tensor]

ClassIdx = int | list[int]


class ClassIndexError(IndexError, ValueError):
    """A class index outside the model's classes (an ``IndexError``, as TorchCAM raises, and a ``ValueError``)."""


def resolve_targets(targets: OutputTarget | list[OutputTarget], batch_size: int) -> list[OutputTarget]:
    """One callable per sample.

    Raises:
        TypeError: not a callable or a list of callables.
        ValueError: a list whose length is not the batch size.

    """
    if callable(targets):
        return [targets] * batch_size
    if not isinstance(targets, list) or any(not callable(target) for target in targets):
        raise TypeError("targets must be a callable or a list of callables")
    if len(targets) != batch_size:
        raise ValueError(
            f"per-sample targets must match the batch size: got {len(targets)} targets for a batch of {batch_size}"
        )
    return targets


def _per_sample(output: Any) -> list[Any] | tuple[Any, ...]:
    if isinstance(output, Tensor):
        if output.ndim == 0:
            raise ValueError("model output must have a batch dimension")
        return output.unbind(0)
    if isinstance(output, list):
        return output
    raise TypeError("model output must be a tensor or a per-sample list")


def target_scores(output: Any, targets: list[OutputTarget]) -> Tensor:
    """Evaluate one target per sample of ``output``.

    Args:
        output: model output, a ``(N, ...)`` tensor or a list of N per-sample outputs.
        targets: N callables.

    Returns:
        ``(N,)`` scores.

    Raises:
        TypeError: a target that returns something else than a tensor.
        ValueError: a target that returns a non-scalar tensor.

    """
    values = [target(sample) for target, sample in zip(targets, _per_sample(output), strict=True)]
    if any(not isinstance(value, Tensor) for value in values):
        raise TypeError("each target must return a tensor")
    if any(value.numel() != 1 for value in values):
        raise ValueError("each target must return a scalar tensor")
    return torch.stack([value.reshape(()) for value in values])


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def class_indices(class_idx: Any, batch: int) -> list[int]:
    """One class per sample, from one int for every sample, N ints (list or tuple), or an integer tensor (1 or N).

    Args:
        class_idx: the classes to explain.
        batch: the number of samples N.

    Returns:
        N non-negative class indices.

    Raises:
        TypeError: not an int, ints or an integer tensor.
        ValueError: a negative index, or not one class per sample.

    """
    if isinstance(class_idx, Tensor) and not class_idx.is_floating_point() and not class_idx.is_complex():
        class_idx = class_idx.reshape(-1).tolist()
        class_idx = class_idx[0] if len(class_idx) == 1 else class_idx
    if _is_index(class_idx):
        class_idx = [class_idx] * batch
    if not isinstance(class_idx, (list, tuple)) or not all(_is_index(c) for c in class_idx):
        raise TypeError(
            "`class_idx` must be a non-negative int, one per sample (list or tuple of ints) or an integer tensor; "
            f"got {type(class_idx).__name__}"
        )
    if any(c < 0 for c in class_idx):
        raise ValueError(f"`class_idx` must be non-negative, got {list(class_idx)}")
    if len(class_idx) != batch:
        raise ValueError(f"`class_idx` needs one class per sample: got {len(class_idx)} for a batch of {batch}")
    return list(class_idx)


def check_class_range(class_idx: ClassIdx | None, num_classes: int) -> None:
    """Raise :class:`ClassIndexError` if a class index is ``>= num_classes``."""
    if class_idx is None:
        return
    largest = class_idx if isinstance(class_idx, int) else max(class_idx, default=0)
    if largest >= num_classes:
        raise ClassIndexError(
            f"class_idx {largest} is out of range for a model with {num_classes} classes; "
            f"pass class indices in [0, {num_classes - 1}]"
        )


def select_scores(
    output: Any,
    class_idx: ClassIdx | None,
    targets: list[OutputTarget] | None,
    sample_indices: Tensor | None = None,
) -> Tensor:
    """Scores of the explained output for each row of ``output``.

    Args:
        output: model output ``(M, K)`` (or per-sample list when ``targets`` are used).
        class_idx: one class for all rows, or one per original sample.
        targets: one callable per original sample.
        sample_indices: ``(M,)`` original sample of each row (default ``arange(M)``), for masked batches that
            mix samples.

    Returns:
        ``(M,)`` scores.

    """
    if targets is not None:
        rows = range(len(_per_sample(output))) if sample_indices is None else sample_indices.tolist()
        return target_scores(output, [targets[i] for i in rows])
    check_class_range(class_idx, output.shape[1])
    if isinstance(class_idx, int):
        return output[:, class_idx]
    index = torch.as_tensor(class_idx, device=output.device)
    if sample_indices is not None:
        index = index[sample_indices.to(output.device)]
    return output.gather(1, index.view(-1, 1)).squeeze(1)
