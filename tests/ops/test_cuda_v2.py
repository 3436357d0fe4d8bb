"""The v2 ("bandwidth") CUDA kernels behind ``PYCAM_FAST_CUDA_KERNELS=v2`` / ``pycam_fast._C.set_cuda_kernels``.

CPU part (always runs): the switch exists, defaults to v1, follows the environment at every call, and the setter wins;
the host-side launch plans and fast divider of ``csrc/ops/cuda/v2_plan.h`` pass their C++ checks
(``test_v2_plan.cpp``, built with the system C++ compiler). GPU part (``pytest.mark.cuda``, skipped without a GPU):
every v2 kernel against the float64 reference and against v1 on odd shapes, all dtypes, batch 1 and > 1, NaN and
constant maps, shapes outside the v2 envelope (handed back to v1), and a profiler check that v2 kernels really ran.
The whole of tests/ops also runs under ``PYCAM_FAST_CUDA_KERNELS=v2`` in benchmarks/gpu_session.sh.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import tolerances
import torch
from tolerances import BF16, F16, F32, F64, assert_close, call, magnitude, oracle, rand, randn, require

from pycam_fast.ops import reference as ref

_C = pytest.importorskip("pycam_fast._C", reason="pycam_fast._C is not built")
ENV = "PYCAM_FAST_CUDA_KERNELS"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No environment variable, no override; restored afterwards."""
    monkeypatch.delenv(ENV, raising=False)
    _C.set_cuda_kernels(None)
    yield
    _C.set_cuda_kernels(None)


@pytest.fixture
def v2() -> Iterator[None]:
    """The CUDA ops run the v2 kernels for the duration of a test."""
    require("cuda", "cuda")
    _C.set_cuda_kernels("v2")
    yield
    _C.set_cuda_kernels(None)


def _with(kernels: str, fn, *args, **kwargs) -> torch.Tensor:
    _C.set_cuda_kernels(kernels)
    try:
        return fn(*args, **kwargs)
    finally:
        _C.set_cuda_kernels("v2")


# --------------------------------------------------------------------------------------------------- CPU: the switch


def test_switch_defaults_to_v1(clean_switch) -> None:
    assert _C.cuda_kernels() == "v1"


def test_switch_follows_env_and_setter(clean_switch, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "v2")
    assert _C.cuda_kernels() == "v2"  # read at call time, not at import
    monkeypatch.setenv(ENV, "v1")
    assert _C.cuda_kernels() == "v1"
    monkeypatch.setenv(ENV, "v2")
    _C.set_cuda_kernels("v1")
    assert _C.cuda_kernels() == "v1"  # the setter wins over the environment
    _C.set_cuda_kernels(None)
    assert _C.cuda_kernels() == "v2"
    monkeypatch.delenv(ENV)
    _C.set_cuda_kernels("v2")
    assert _C.cuda_kernels() == "v2"


def test_switch_rejects_bad_values(clean_switch, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("v3", "", "fast"):
        with pytest.raises(ValueError, match="v1"):
            _C.set_cuda_kernels(bad)
    assert _C.cuda_kernels() == "v1"
    monkeypatch.setenv(ENV, "v9")
    with pytest.raises(ValueError, match=ENV):
        _C.cuda_kernels()


def test_cpu_ops_ignore_the_switch(clean_switch) -> None:
    """The switch only selects CUDA kernels: CPU tensors give the same cpp results under v2."""
    a, w = randn(2, 5, 3, 4, seed=1), randn(2, 5, seed=2)
    before = call("cam_step", "cpp", w, a, output_size=(7, 9))
    _C.set_cuda_kernels("v2")
    assert torch.equal(call("cam_step", "cpp", w, a, output_size=(7, 9)), before)


def test_host_plan_cpp(tmp_path: Path) -> None:
    """csrc/ops/cuda/v2_plan.h (fast divider, switch parser, launch plans) checked by a plain C++ program."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    exe = tmp_path / "test_v2_plan"
    src = Path(__file__).with_name("test_v2_plan.cpp")
    build = subprocess.run(
        [cxx, "-std=c++17", "-O2", "-I", str(ROOT / "csrc"), str(src), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr


# ------------------------------------------------------------------------------------------------ GPU: cam_step

# (N, C, feature size, output size): 7x7 -> 224 (fused candidates), odd up/down-sampling, 3-D, 1-D, identity with
# |S| > 256 (several sweeps in kernel 1), 1x1 (constant), and 50x50 -> 200x200 (10^4 candidates: outside the v2
# envelope, handed to v1)
CAM_CASES = [
    (1, 2048, (7, 7), (224, 224)),
    (3, 37, (7, 7), (224, 224)),
    (2, 17, (3, 5), (13, 29)),
    (1, 9, (9, 13), (4, 5)),
    (2, 5, (2, 3, 4), (5, 7, 9)),
    (3, 3, (5,), (11,)),
    (2, 300, (23, 17), None),
    (2, 3, (1, 1), (5, 6)),
    (2, 3, (50, 50), (200, 200)),
]
FLAGS = [{}, {"relu": False}, {"normalize": False}, {"relu": False, "normalize": False}]


def _cam_check(w: torch.Tensor, a: torch.Tensor, out, dtype: torch.dtype, **flags) -> None:
    actual = call("cam_step", "cuda", w, a, output_size=out, **flags)
    expected = oracle(ref.cam_step, w, a, output_size=out, **flags)
    normalized = flags.get("normalize", True)
    assert actual.dtype == dtype and actual.is_contiguous() and actual.device.type == "cuda"
    assert_close(actual, expected, dtype, scale=1.0 if normalized else magnitude(expected))
    v1 = _with("v1", call, "cam_step", "cuda", w, a, output_size=out, **flags)
    assert_close(actual, v1, dtype, scale=1.0 if normalized else magnitude(expected))


@pytest.mark.cuda
@pytest.mark.parametrize(("n", "c", "spatial", "out"), CAM_CASES)
@pytest.mark.parametrize("dtype", [F32, F64, F16, BF16])
def test_cam_step_v2(v2, n, c, spatial, out, dtype) -> None:
    a = randn(n, c, *spatial, seed=1, dtype=dtype, device="cuda")
    w = randn(n, c, seed=2, dtype=dtype, device="cuda") / max(1.0, c**0.5)
    for flags in FLAGS:
        _cam_check(w, a, out, dtype, **flags)


@pytest.mark.cuda
@pytest.mark.parametrize("spatial", [(7, 5), (2, 3, 4), (9,)])
def test_cam_step_v2_weight_forms(v2, spatial) -> None:
    """(1, C) weights broadcast over the batch; (N, C, *S) weights are element-wise (LayerCAM)."""
    a = randn(3, 17, *spatial, seed=7, device="cuda")
    out = tuple(2 * s + 1 for s in spatial)
    for w in (randn(1, 17, seed=8, device="cuda"), randn(3, 17, *spatial, seed=9, device="cuda")):
        for flags in (FLAGS[0], FLAGS[3]):
            _cam_check(w, a, out, F32, **flags)


@pytest.mark.cuda
@pytest.mark.parametrize("out", [None, (13, 29), (224, 224)])
@pytest.mark.parametrize("dtype", [F32, F16, F64])
def test_cam_step_v2_constant_maps_are_exactly_zero(v2, out, dtype) -> None:
    a = torch.full((2, 5, 7, 7), 0.3, dtype=dtype, device="cuda")
    for fill in (0.0, 1.0, -1.0):
        w = torch.full((2, 5), fill, dtype=dtype, device="cuda")
        for relu in (True, False):
            cam = call("cam_step", "cuda", w, a, output_size=out, relu=relu)
            assert torch.equal(cam, torch.zeros_like(cam)), (fill, relu)


@pytest.mark.cuda
def test_cam_step_v2_nan_activations_are_skipped(v2) -> None:
    a = randn(2, 17, 7, 7, seed=19, device="cuda")
    a[0, 3, 2, 2] = float("nan")
    a[1, :, 0, 0] = float("nan")
    w = randn(2, 17, seed=20, device="cuda")
    for flags in (FLAGS[0], FLAGS[3]):
        actual = call("cam_step", "cuda", w, a, output_size=(13, 29), **flags)
        assert not torch.isnan(actual).any()
        _cam_check(w, a, (13, 29), F32, **flags)


@pytest.mark.cuda
@pytest.mark.parametrize(("spatial", "out"), [((7, 7), (224, 224)), ((9, 13), (4, 5)), ((4, 6, 5), (2, 9, 3))])
def test_cam_step_v2_minmax_spans_unit_range(v2, spatial, out) -> None:
    a, w = randn(3, 5, *spatial, seed=17, dtype=F64, device="cuda"), randn(3, 5, seed=18, dtype=F64, device="cuda")
    for relu in (True, False):
        flat = call("cam_step", "cuda", w, a, output_size=out, relu=relu).flatten(1).cpu()
        assert torch.equal(flat.amin(1), torch.zeros(3, dtype=F64))
        top = flat.amax(1)
        assert bool((((top - 1).abs() < 1e-6) | (top == 0)).all()), top


@pytest.mark.cuda
def test_cam_step_v2_realistic_fp16_channels_last(v2) -> None:
    """ResNet-50 layer4 sizes (batch 64 in the benchmark; 4 here), fp16, channels-last input, 224x224."""
    a = randn(4, 2048, 7, 7, seed=23, dtype=F16, device="cuda").contiguous(memory_format=torch.channels_last)
    w = randn(4, 2048, seed=24, dtype=F16, device="cuda") / 45
    _cam_check(w, a, (224, 224), F16)


# --------------------------------------------------------------------------------------------- GPU: grad weights

WEIGHT_OPS = ["gradcam_weights", "xgradcam_weights", "gradcampp_weights", "gradcampp_weights_torchcam"]
_TWO = {"xgradcam_weights", "gradcampp_weights"}
# (N, C, *S): 1x1, odd, 3-D, 1-D, batch 1 with many channels, layer4-sized, a row too long for shared memory (v1)
WEIGHT_CASES = [
    (2, 1, 1, 1),
    (3, 4, 7, 13),
    (2, 5, 2, 3, 4),
    (3, 4, 5),
    (1, 512, 3, 5),
    (8, 2048, 7, 7),
    (2, 3, 100, 100),
]


def _weight_inputs(shape, dtype, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """grads (every 4th zero: Grad-CAM++'s alpha = 0 branch) and post-ReLU activations, optionally views that start
    ``offset`` elements into their storage (unaligned for the 16-byte vector loads)."""
    numel = torch.Size(shape).numel()
    g = randn(numel + offset, seed=3, dtype=dtype, device="cuda")[offset:].view(shape)
    g.view(-1)[::4] = 0
    a = (rand(numel + offset, seed=4, dtype=dtype, device="cuda") * 3)[offset:].view(shape)
    return g, a


@pytest.mark.cuda
@pytest.mark.parametrize("op", WEIGHT_OPS)
@pytest.mark.parametrize("shape", WEIGHT_CASES)
@pytest.mark.parametrize("dtype", [F32, F64, F16, BF16])
@pytest.mark.parametrize("offset", [0, 1])
def test_weights_v2(v2, op, shape, dtype, offset) -> None:
    g, a = _weight_inputs(shape, dtype, offset)
    args = (g, a) if op in _TWO else (g,)
    actual = call(op, "cuda", *args)
    expected = oracle(getattr(ref, op), *args)
    assert actual.dtype == dtype and actual.shape == g.shape[:2] and actual.device.type == "cuda"
    assert_close(actual, expected, dtype, scale=magnitude(expected))
    # same lane order and shuffle reductions as v1: equal to the last bit
    assert torch.equal(actual, _with("v1", call, op, "cuda", *args))


@pytest.mark.cuda
@pytest.mark.parametrize("op", WEIGHT_OPS)
def test_weights_v2_nan(v2, op) -> None:
    g, a = _weight_inputs((2, 5, 7, 7), F32)
    g[0, 1, 3, 3] = float("nan")
    a[1, 2, 0, 0] = float("nan")
    args = (g, a) if op in _TWO else (g,)
    actual = call(op, "cuda", *args)
    assert_close(actual, oracle(getattr(ref, op), *args), F32, scale=magnitude(actual))


# ----------------------------------------------------------------------------------------- GPU: masked inputs

# the shapes of test_masked_inputs.py, layer4 -> 224x224 and a 128x128 feature map (64 KB of shared memory: v1)
MASK_CASES = [
    *tolerances.MASKED_INPUT_CASES,
    (2, 16, (7, 7), 3, (224, 224), False),
    (1, 2, (128, 128), 1, (130, 131), True),
]


@pytest.mark.cuda
@pytest.mark.parametrize(("n", "c", "feat", "cin", "size", "shared"), MASK_CASES)
@pytest.mark.parametrize("dtype", [F32, F64, F16, BF16])
def test_masked_inputs_v2(v2, n, c, feat, cin, size, shared, dtype) -> None:
    a = randn(n, c, *feat, seed=30, dtype=dtype, device="cuda")
    a[0, 1] = 2.0  # a constant channel (pair 1, inside [start, stop)): mask exactly 0
    x = randn(1 if shared else n, cin, *size, seed=31, dtype=dtype, device="cuda")
    start, stop = 1 if n * c > 2 else 0, n * c - (1 if n * c > 2 else 0)
    noise = randn(stop - start, *size, seed=32, dtype=dtype, device="cuda") * 0.1
    for kwargs in ({}, {"noise": noise, "scale": 3.0, "channels_last": True}, {"out_dtype": F32}, {"scale": 0.25}):
        actual = call("masked_inputs", "cuda", a, x, start, stop, **kwargs)
        expected = oracle(ref.masked_inputs, a, x, start, stop, **kwargs)
        out_dtype = kwargs.get("out_dtype", dtype)
        assert actual.dtype == out_dtype
        assert actual.stride() == ref.masked_inputs(a, x, start, stop, **kwargs).stride()
        assert_close(actual, expected, out_dtype, scale=magnitude(expected))
        # same taps, blend order and (lo, denom) as v1: equal to the last bit
        assert torch.equal(actual, _with("v1", call, "masked_inputs", "cuda", a, x, start, stop, **kwargs))


# ------------------------------------------------------------------------------------ GPU: the switch dispatches


@pytest.mark.cuda
@pytest.mark.parametrize("how", ["env", "setter"])
def test_v2_kernels_really_run(clean_switch, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The profiler sees the *_v2_kernel launches under v2 and none under the default."""
    require("cuda", "cuda")
    a, w = randn(2, 64, 7, 7, seed=1, device="cuda"), randn(2, 64, seed=2, device="cuda")
    x = randn(2, 3, 32, 32, seed=3, device="cuda")

    def kernels() -> set[str]:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call("cam_step", "cuda", w, a, output_size=(32, 32))
            call("gradcampp_weights", "cuda", a, a.relu())
            call("masked_inputs", "cuda", a, x, 0, 8)
            torch.cuda.synchronize()
        return {e.key for e in prof.key_averages()}

    before = kernels()
    if not any("channel_partial_kernel" in k for k in before):  # v1's cam_step kernel 1
        pytest.skip(f"the profiler records no CUDA kernels here (CUPTI unavailable?): {sorted(before)[:5]}")
    assert not any("v2_kernel" in k for k in before)
    if how == "env":
        monkeypatch.setenv(ENV, "v2")
    else:
        _C.set_cuda_kernels("v2")
    names = kernels()
    for kernel in ("cam_partial_v2_kernel", "cam_write_v2_kernel", "weights_v2_kernel", "masked_inputs_v2_kernel"):
        assert any(kernel in k for k in names), (kernel, sorted(names))
