"""The compiled CUDA kernels (backend ``cuda``) against the pure-torch reference on CUDA tensors.

Every GPU test is marked ``cuda`` and skipped without a device or without a CUDA build of ``pycam_fast._C``; the
registration test runs on any CUDA build.
"""

from __future__ import annotations

import pytest
import torch

from pycam_fast import _compiled as ops
from pycam_fast import reference as ref
from pycam_fast.utils import _table

_BUILT = ops.extension_error() is None
_CUDA_BUILD = _BUILT and bool(ops.build_info().get("cuda"))
needs_gpu = pytest.mark.skipif(
    not (_CUDA_BUILD and torch.cuda.is_available()),
    reason="needs a CUDA device and pycam_fast._C built with CUDA"
    + ("" if _BUILT else f" (extension missing: {ops.extension_error()})"),
)
pytestmark = pytest.mark.cuda

CASES = [
    ((7, 7), None),
    ((7, 7), (13, 29)),
    ((3, 5), (224, 224)),
    ((1, 1), (5, 6)),
    ((2, 3, 4), (5, 7, 9)),
    ((5,), (11,)),
]
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float64: {"atol": 1e-10, "rtol": 1e-10},
    torch.float16: {"atol": 4e-3, "rtol": 4e-3},
    torch.bfloat16: {"atol": 3e-2, "rtol": 3e-2},
}
WEIGHT_OPS = ["gradcam_weights", "xgradcam_weights", "gradcampp_weights", "gradcampp_weights_torchcam"]
_NEEDS_ACTS = {"xgradcam_weights", "gradcampp_weights"}


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).cuda()


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    assert actual.is_cuda and actual.shape == expected.shape
    tol = TOL[dtype]
    torch.testing.assert_close(
        actual.double().cpu(), expected.double().cpu(), atol=tol["atol"] * scale, rtol=tol["rtol"], equal_nan=True
    )


def test_cuda_kernels_registered_when_built_with_cuda() -> None:
    if not _CUDA_BUILD:
        pytest.skip("pycam_fast._C was built without CUDA")
    for name in (
        "cam_step",
        "gradcam_weights",
        "xgradcam_weights",
        "gradcampp_weights",
        "gradcampp_weights_torchcam",
        "masked_inputs",
        "overlay",
    ):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pycam_fast::{name}", "CUDA")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pycam_fast::{name}", "CPU")
    # CPU tensors never reach the CUDA kernels: the dispatcher picks the CPU one.
    out = torch.ops.pycam_fast.cam_step(torch.randn(1, 3), torch.randn(1, 3, 4, 4), True, [8, 8], True, 1e-8)
    assert out.device.type == "cpu"


@needs_gpu
def test_mixed_devices_raise_clear_error() -> None:
    a = _randn(2, 5, 7, 7)
    with pytest.raises(RuntimeError, match="pycam_fast"):
        torch.ops.pycam_fast.cam_step(torch.randn(2, 5), a)
    with pytest.raises(RuntimeError, match="pycam_fast"):
        torch.ops.pycam_fast.xgradcam_weights(a, a.cpu())
    with pytest.raises(RuntimeError, match="pycam_fast"):
        torch.ops.pycam_fast.masked_inputs(a, torch.randn(2, 3, 9, 9), 0, 4)
    images, table = torch.rand(2, 3, 9, 9, device="cuda"), _blend_table()
    with pytest.raises(RuntimeError, match="cams is on cpu"):
        torch.ops.pycam_fast.overlay(images, torch.rand(2, 3, 3), table.cuda())
    with pytest.raises(RuntimeError, match="table is on cpu"):
        torch.ops.pycam_fast.overlay(images, torch.rand(2, 3, 3, device="cuda"), table)


@needs_gpu
@pytest.mark.parametrize("c", [1, 3, 17, 512])
@pytest.mark.parametrize(("spatial", "out"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_cam_step(c, spatial, out, dtype, batch) -> None:
    a = _randn(batch, c, *spatial, seed=1, dtype=dtype)
    a[0, 0].view(-1)[0] = float("nan")  # nansum
    for w in (
        _randn(batch, c, seed=2, dtype=dtype),
        _randn(1, c, seed=3, dtype=dtype),
        _randn(batch, c, *spatial, seed=4, dtype=dtype),
    ):
        for kwargs in ({}, {"relu": False}, {"normalize": False}):
            expected = ref.cam_step(w, a, output_size=out, **kwargs)
            if kwargs.get("normalize", True) and a[0, 0].numel() == 1:
                expected = torch.zeros_like(expected)  # constant map: exact 0 (see test_compiled_ops)
            actual = ops.cam_step(w, a, output_size=out, **kwargs)
            assert not torch.isnan(actual).any()
            scale = 1.0 if kwargs.get("normalize", True) else max(1.0, float(expected.abs().max()))
            _close(actual, expected, dtype, scale)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cam_step_low_precision(dtype) -> None:
    a, w = _randn(2, 17, 7, 7, seed=5, dtype=dtype), _randn(2, 17, seed=6, dtype=dtype)
    actual = ops.cam_step(w, a, output_size=(13, 29))
    assert actual.dtype == dtype
    _close(actual, ref.cam_step(w.double(), a.double(), output_size=(13, 29)), dtype)


@needs_gpu
def test_cam_step_layouts_and_constant() -> None:
    a = _randn(3, 17, 7, 7, seed=7).contiguous(memory_format=torch.channels_last)
    w = _randn(17, 3, seed=8).t()
    _close(ops.cam_step(w, a, output_size=(13, 29)), ref.cam_step(w, a, output_size=(13, 29)), torch.float32)
    const = torch.full((2, 5, 7, 7), 0.3, device="cuda")
    cam = ops.cam_step(torch.ones(2, 5, device="cuda"), const, output_size=(224, 224))
    assert torch.equal(cam, torch.zeros_like(cam))


@needs_gpu
@pytest.mark.parametrize("name", WEIGHT_OPS)
@pytest.mark.parametrize("c", [1, 3, 17, 512])
@pytest.mark.parametrize("spatial", [(1, 1), (3, 5), (7, 7), (2, 3, 4), (56, 56)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_weights(name, c, spatial, dtype) -> None:
    g = _randn(2, c, *spatial, seed=20, dtype=dtype)
    a = _randn(2, c, *spatial, seed=21, dtype=dtype).abs()
    fn, oracle = getattr(ops, name), getattr(ref, name)
    actual = fn(g, a) if name in _NEEDS_ACTS else fn(g)
    exp = oracle(g.double(), a.double()) if name in _NEEDS_ACTS else oracle(g.double())
    assert actual.dtype == dtype
    _close(actual, exp, dtype, scale=max(1.0, float(exp.abs().max())))


@needs_gpu
@pytest.mark.parametrize(
    ("feat", "size"), [((7, 7), (13, 29)), ((3, 5), (224, 224)), ((2, 3, 4), (5, 7, 9)), ((5,), (11,))]
)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("out_dtype", [None, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_masked_inputs(feat, size, shared, out_dtype, channels_last) -> None:
    n, c = 2, 5
    a, x = _randn(n, c, *feat, seed=30), _randn(1 if shared else n, 3, *size, seed=31)
    a[0, 1] = 2.0  # constant channel
    noise = _randn(8, *size, seed=32) * 0.1
    for kwargs in ({}, {"noise": noise, "scale": 0.5}):
        actual = ops.masked_inputs(a, x, 1, 9, out_dtype=out_dtype, channels_last=channels_last, **kwargs)
        expected = ref.masked_inputs(a.double(), x.double(), 1, 9, **{k: v for k, v in kwargs.items()})
        dtype = out_dtype or torch.float32
        assert actual.dtype == dtype
        if channels_last and len(size) in (2, 3):
            fmt = torch.channels_last if len(size) == 2 else torch.channels_last_3d
            assert actual.is_contiguous(memory_format=fmt)
        _close(actual, expected, dtype, scale=max(1.0, float(expected.abs().max())))


@needs_gpu
def test_opcheck_cuda() -> None:
    a, w, x = _randn(2, 5, 7, 7), _randn(2, 5), _randn(2, 3, 13, 11)
    pf = torch.ops.pycam_fast
    torch.library.opcheck(pf.cam_step.default, (w, a, True, [13, 29], True, 1e-8))
    torch.library.opcheck(pf.gradcampp_weights.default, (a, a.abs(), 1e-8))
    torch.library.opcheck(pf.masked_inputs.default, (a, x, 2, 8, None, 0.5, torch.float16, True, 1e-8))
    torch.library.opcheck(pf.overlay.default, (_randn(2, 3, 13, 11).sigmoid(), _randn(2, 3, 5), _blend_table().cuda()))


def _blend_table(colormap: str = "jet", alpha: float = 0.5) -> torch.Tensor:
    return _table("blend", colormap, alpha, "cpu")


@needs_gpu
@pytest.mark.parametrize(("size", "cam_size"), [((224, 224), (7, 7)), ((31, 17), (3, 5)), ((7, 13), (1, 1))])
@pytest.mark.parametrize("image_dtype", [torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cam_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_overlay_equals_cpu_reference(size, cam_size, image_dtype, cam_dtype) -> None:
    # The CUDA kernel uses the CPU's arithmetic (explicit roundings, no FMA contraction): bitwise equal.
    g = torch.Generator().manual_seed(40)
    images = torch.rand(3, 3, *size, generator=g, dtype=torch.float64) * 1.2 - 0.1
    if image_dtype == torch.uint8:
        images = (images.clamp(0, 1) * 255).round()
    images = images.to(image_dtype)
    images[0, 1, 0, 0] = 0 if image_dtype == torch.uint8 else float("nan")
    cams = (torch.rand(3, *cam_size, generator=g, dtype=torch.float64) * 1.4 - 0.2).to(cam_dtype)
    cams[1, 0, 0] = float("nan")
    grid = torch.randint(0, 256, (3, *cam_size), generator=g).to(cam_dtype) / 255  # LUT-index boundary values
    table = _blend_table("viridis", 0.3)
    for maps in (cams, grid):
        expected = ref.overlay(images, maps, table)
        actual = ops.overlay(images.cuda(), maps.cuda(), table.cuda())
        assert actual.is_cuda and actual.dtype == torch.uint8
        assert torch.equal(actual.cpu(), expected)


@needs_gpu
def test_overlay_noncontiguous() -> None:
    table = _blend_table().cuda()
    base = torch.rand(2, 40, 60, 3, generator=torch.Generator().manual_seed(41)).cuda()
    cams = torch.rand(2, 3, 5, device="cuda").transpose(1, 2)
    for images in (base.permute(0, 3, 1, 2), base.permute(0, 3, 1, 2)[:, :, ::2, 1::3]):
        expected = ref.overlay(images.cpu(), cams.cpu(), table.cpu())
        assert torch.equal(ops.overlay(images, cams, table).cpu(), expected)
