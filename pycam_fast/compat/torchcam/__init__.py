"""TorchCAM 0.5.0's public API (``torchcam``), its numbers quirks included: replace the import prefix.

``torchcam.X`` -> ``pycam_fast.compat.torchcam.X`` for every public path of TorchCAM 0.5.0:

- :mod:`.methods` (and its submodules ``activation``, ``gradient``, ``core``, ``_utils``): the extractors;
- :mod:`.metrics`: ``ClassificationMetric``, ``DeletionInsertionMetric`` (batched perturbation forwards);
- :mod:`.utils`: ``overlay_mask``;
- :mod:`.explain`: ``explain`` and ``PredictionExplanation``.

The submodules are imported lazily on first access, as TorchCAM does. The extractor classes are also importable
from this package itself (``from pycam_fast.compat.torchcam import GradCAM``), as before it became a package.

Differences from :mod:`pycam_fast.methods` (the documented formulas):

- ``GradCAMpp``: TorchCAM's alpha division is lost, so its weights are ``sum_S(g^2 * relu(g))``.
- ``SmoothGradCAMpp``: the alpha denominator uses ``sum_S(mean(g^3) * A)``; the ``relu(g)`` of the weights and the
  activations of the map are those of the LAST noisy sample, which also stay hooked: a second call on the same
  forward takes them as its clean activations.
- ``RefineCAM``: its default ``base_method`` is the ``GradCAMpp`` above (TorchCAM's).

Everything else (CAM, Grad-CAM, XGrad-CAM, Layer-CAM, Score-CAM, SS-CAM, IS-CAM, LeGrad, FinerCAM, same noise
draws for the same seed) already matches and is shared.
"""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import Any

#: the TorchCAM release whose public API (and numbers) this package reproduces
__version__ = "0.5.0"

_SUBMODULES = frozenset({"explain", "methods", "metrics", "utils"})
#: the extractor names importable from the package itself (kept from the single-module layout)
_METHOD_NAMES = (
    "CAM",
    "ISCAM",
    "SSCAM",
    "FinerCAM",
    "GradCAM",
    "GradCAMpp",
    "LayerCAM",
    "LeGrad",
    "OutputTarget",
    "RefineCAM",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
)

__all__ = ["explain", "methods", "metrics", "utils", *_METHOD_NAMES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = _import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _METHOD_NAMES:
        value = getattr(_import_module(f"{__name__}.methods"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
