"""TorchCAM 0.5 against the ``pycam_fast.methods`` drop-in: same model, input and call (``cam(classes, logits)``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _suite import BATCH, SCORE_SIZE, Workload

tc = pytest.importorskip("torchcam.methods", reason="the TorchCAM comparison needs torchcam==0.5.0")

import pycam_fast.methods as ours  # noqa: E402

IMPLS = [
    pytest.param(tc, "TorchCAM", "peer", id="torchcam"),
    pytest.param(ours, "pycam_fast", "pycam_fast", id="pycam_fast"),
]


def _explain(module: Any, name: str, work: Workload, **kwargs: Any) -> Callable[[], object]:
    """One call as a TorchCAM user writes it: forward, then the CAM of the top class (hooks set up once)."""
    extractor = getattr(module, name)(work.model, "layer4", **kwargs)

    def call() -> object:
        out = work.model(work.inputs)
        return extractor(out.argmax(1).tolist(), out)

    call.extractor = extractor  # type: ignore[attr-defined]
    return call


@pytest.mark.parametrize("method", ["GradCAM", "GradCAMpp", "LayerCAM"])
@pytest.mark.parametrize(("module", "impl", "role"), IMPLS)
def test_gradient_methods(bench: Any, resnet18: Any, method: str, module: Any, impl: str, role: str) -> None:
    call = _explain(module, method, resnet18(BATCH))
    try:
        bench(f"{method}, batch {BATCH} (TorchCAM API)", impl, role, call)
    finally:
        call.extractor.remove_hooks()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("module", "impl", "role"), IMPLS)
def test_scorecam(bench: Any, resnet18: Any, module: Any, impl: str, role: str) -> None:
    call = _explain(module, "ScoreCAM", resnet18(1, SCORE_SIZE), batch_size=32)
    try:
        bench(f"ScoreCAM, 1 image at {SCORE_SIZE} px (TorchCAM API)", impl, role, call, SCORE_SIZE)
    finally:
        call.extractor.remove_hooks()  # type: ignore[attr-defined]
