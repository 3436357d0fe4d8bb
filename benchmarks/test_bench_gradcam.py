"""pytorch-grad-cam 1.5.7 against ``pycam_fast.compat.pytorch_grad_cam``: same model, input, ``cam(x, None)``."""

from __future__ import annotations

from typing import Any

import pytest
from _suite import BATCH

pgc = pytest.importorskip("pytorch_grad_cam", reason="the pytorch-grad-cam comparison needs grad-cam==1.5.7")

from pycam_fast.compat import pytorch_grad_cam as ours  # noqa: E402

IMPLS = [
    pytest.param(pgc, "pytorch-grad-cam", "peer", id="pytorch_grad_cam"),
    pytest.param(ours, "pycam_fast", "pycam_fast", id="pycam_fast"),
]


@pytest.mark.parametrize("method", ["GradCAM", "HiResCAM", "EigenCAM"])
@pytest.mark.parametrize(("module", "impl", "role"), IMPLS)
def test_methods(bench: Any, resnet18: Any, method: str, module: Any, impl: str, role: str) -> None:
    work = resnet18(BATCH)
    with getattr(module, method)(work.model, [work.model.layer4]) as cam:
        bench(f"{method}, batch {BATCH} (pytorch-grad-cam API)", impl, role, lambda: cam(work.inputs, None))
