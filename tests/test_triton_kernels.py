"""Triton backend (kernels/) against the pure-torch reference.

On CPU the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` before the kernel modules are
first imported: run the suite with ``TRITON_INTERPRET=1`` in the environment. As a fallback this module sets it
itself (only without CUDA: on a GPU the kernels should compile for real) before importing the kernels; the CPU
kernel tests are skipped, with the reason, when another module imported the kernels before that.

Shapes are tiny on purpose: the interpreter costs ~1-25 ms per program and per nested ``@triton.jit`` call.
Results are compared with the reference evaluated in float64 on the same (rounded) inputs: the reference's own
fp16/bf16 rounding (and its NaN for constant fp16 maps, where ``eps=1e-8`` underflows to 0) is not what the
fp32-accumulating kernels should reproduce.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

triton = pytest.importorskip("triton")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from pycam_fast import _auto_table  # noqa: E402
from pycam_fast import kernels as triton_kernels  # noqa: E402
from pycam_fast import reference as ref  # noqa: E402
from pycam_fast.registry import BackendUnavailable, backends, get_ops  # noqa: E402

triton_kernels.register()  # re-read TRITON_INTERPRET in case pycam_fast was imported before it was set

from pycam_fast.kernels import backend as tb  # noqa: E402
from pycam_fast.kernels import cam_step as cs  # noqa: E402
from pycam_fast.kernels import grad_weights as gw  # noqa: E402
from pycam_fast.kernels import masked_inputs as mi  # noqa: E402
from pycam_fast.kernels import ops  # noqa: E402

INTERPRETED = isinstance(cs._cam_sum_kernel, InterpretedFunction)
interp = pytest.mark.skipif(
    not INTERPRETED,
    reason="CPU kernel tests need TRITON_INTERPRET=1 set before the kernels are imported (add it to the test env)",
)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
TOL = {F32: {"rtol": 1e-5, "atol": 1e-5}, F16: {"rtol": 2e-3, "atol": 2e-3}, BF16: {"rtol": 1.6e-2, "atol": 1.6e-2}}


def _check(out: torch.Tensor, fn, *args, **kwargs) -> None:
    """Compare ``out`` with ``fn`` (a reference op) evaluated in float64 on the same inputs, in ``out``'s dtype.

    float64 keeps the oracle's own rounding out of the comparison; it matters where min-max normalisation divides
    by a range of ~0 (an upsampled 1x1 map: the float32 reference returns ulp noise scaled to [0, 1]).
    """
    expected_dtype = fn(*args, **kwargs).dtype
    assert out.dtype == expected_dtype

    def up(x):
        return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    expected = fn(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})
    assert out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected.to(out.dtype).float(), equal_nan=True, **TOL[out.dtype])


def _weights(kind: str, acts: torch.Tensor, dtype: torch.dtype = F32) -> torch.Tensor:
    n, c = acts.shape[:2]
    shape = {"nc": (n, c), "1c": (1, c), "full": tuple(acts.shape)}[kind]
    return torch.randn(shape, dtype=dtype)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- cam_step ---------------------------------------------------------------------------------------------------

CAM_CASES = [
    ((1, 1, 1, 1), None, "nc"),
    ((1, 3, 1, 1), (3, 5), "nc"),
    ((2, 3, 3, 5), (7, 9), "nc"),
    ((1, 17, 7, 7), (10, 13), "1c"),
    ((2, 17, 3, 5), None, "full"),
    ((2, 3, 7, 7), (5, 4), "full"),  # downsampling
    ((2, 3, 2, 3, 4), (3, 5, 7), "nc"),  # 3-D
    ((2, 3, 5), (9,), "full"),  # 1-D
]


@interp
@pytest.mark.parametrize(("shape", "size", "kind"), CAM_CASES)
@pytest.mark.parametrize(("relu", "normalize"), [(True, True), (False, False)])
def test_cam_step(shape, size, kind, relu, normalize):
    acts = torch.randn(shape)
    w = _weights(kind, acts)
    out = cs.cam_step(w, acts, relu=relu, output_size=size, normalize=normalize)
    _check(out, ref.cam_step, w, acts, relu=relu, output_size=size, normalize=normalize)


@interp
@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize(("shape", "size", "kind"), [CAM_CASES[2], CAM_CASES[4]])
def test_cam_step_low_precision(dtype, shape, size, kind):
    acts = torch.randn(shape, dtype=dtype)
    w = _weights(kind, acts, dtype)
    _check(cs.cam_step(w, acts, output_size=size), ref.cam_step, w, acts, output_size=size)


@interp
def test_cam_step_mixed_dtypes():
    acts = torch.randn(2, 3, 3, 5, dtype=F16)
    w = torch.randn(2, 3)  # float32 weights, fp16 activations -> float32 map
    out = cs.cam_step(w, acts, output_size=(7, 9))
    assert out.dtype == F32
    _check(out, ref.cam_step, w, acts, output_size=(7, 9))


@interp
@pytest.mark.parametrize("split", [2, 3])
@pytest.mark.parametrize("size", [None, (7, 9)])
def test_cam_step_channel_split(split, size):
    acts = torch.randn(2, 17, 3, 5)
    w = torch.randn(2, 17)
    _check(cs.cam_step(w, acts, output_size=size, split=split), ref.cam_step, w, acts, output_size=size)


@interp
@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("size", [None, (7, 9)])
def test_cam_step_constant_map_is_zero(dtype, size):
    acts = torch.full((2, 3, 3, 5), 0.5, dtype=dtype)
    w = torch.ones(2, 3, dtype=dtype)
    out = cs.cam_step(w, acts, output_size=size)
    assert not out.isnan().any()
    assert (out == 0).all()


@interp
def test_cam_step_non_contiguous():
    base = torch.randn(2, 6, 5, 3)
    acts = base[:, ::2].transpose(2, 3)  # sliced channels, transposed spatial dims
    w = torch.randn(3, 2).t()
    _check(cs.cam_step(w, acts, output_size=(7, 9)), ref.cam_step, w, acts, output_size=(7, 9))
    cl = torch.randn(2, 17, 3, 5).contiguous(memory_format=torch.channels_last)
    w_full = torch.randn(2, 17, 5, 3).transpose(2, 3)
    _check(cs.cam_step(w_full, cl), ref.cam_step, w_full, cl)


@interp
def test_cam_step_nan_activations_are_skipped():
    acts = torch.randn(2, 3, 3, 5)
    acts[0, 1, 1, 2] = float("nan")
    acts[1, :, 0, 0] = float("nan")  # every channel NaN at one pixel: nansum gives 0 there
    w = torch.randn(2, 3)
    out = cs.cam_step(w, acts, output_size=(7, 9))
    assert not out.isnan().any()
    _check(out, ref.cam_step, w, acts, output_size=(7, 9))


@interp
def test_cam_step_delegates_float64():
    acts = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    w = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(cs.cam_step(w, acts), ref.cam_step(w, acts), rtol=0, atol=0)


# --- channel weights --------------------------------------------------------------------------------------------

GRAD_SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (1, 17, 7, 7), (2, 3, 2, 3, 4), (2, 3, 5)]
GRAD_FNS = {
    "gradcam": (gw.gradcam_weights, ref.gradcam_weights, 1),
    "xgradcam": (gw.xgradcam_weights, ref.xgradcam_weights, 2),
    "gradcampp": (gw.gradcampp_weights, ref.gradcampp_weights, 2),
    "gradcampp_torchcam": (gw.gradcampp_weights_torchcam, ref.gradcampp_weights_torchcam, 1),
}


def _grad_args(shape, n_args, dtype=F32):
    grads = torch.randn(shape, dtype=dtype)
    grads.view(-1)[::4] = 0  # Grad-CAM++'s alpha = 0 branch
    acts = torch.rand(shape, dtype=dtype)  # post-ReLU activations are >= 0
    return (grads, acts)[:n_args]


@interp
@pytest.mark.parametrize("shape", GRAD_SHAPES)
@pytest.mark.parametrize("name", list(GRAD_FNS))
def test_grad_weights(name, shape):
    fn, ref_fn, n_args = GRAD_FNS[name]
    args = _grad_args(shape, n_args)
    _check(fn(*args), ref_fn, *args)


@interp
@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("name", list(GRAD_FNS))
def test_grad_weights_low_precision(name, dtype):
    fn, ref_fn, n_args = GRAD_FNS[name]
    args = _grad_args((2, 17, 3, 5), n_args, dtype)
    _check(fn(*args), ref_fn, *args)


@interp
@pytest.mark.parametrize("name", list(GRAD_FNS))
def test_grad_weights_non_contiguous(name):
    fn, ref_fn, n_args = GRAD_FNS[name]
    grads = torch.randn(2, 6, 3, 5).contiguous(memory_format=torch.channels_last)
    acts = torch.rand(2, 12, 5, 3)[:, ::2].transpose(2, 3)
    args = (grads, acts)[:n_args]
    _check(fn(*args), ref_fn, *args)


@interp
def test_grad_weights_nan_activations_propagate():
    grads, acts = _grad_args((1, 3, 3, 5), 2)
    acts[0, 1, 0, 0] = float("nan")
    out = gw.xgradcam_weights(grads, acts)
    assert out[0, 1].isnan() and not out[0, [0, 2]].isnan().any()
    _check(out, ref.xgradcam_weights, grads, acts)


@interp
def test_gradcampp_moments_delegate_to_reference():
    grads, acts = _grad_args((2, 3, 3, 5), 2)
    sq, cube = grads * grads * 1.5, grads**3 * 0.5
    out = gw.gradcampp_weights(grads, acts, grads_sq=sq, grads_cube=cube)
    torch.testing.assert_close(out, ref.gradcampp_weights(grads, acts, grads_sq=sq, grads_cube=cube), rtol=0, atol=0)


# --- masked inputs ----------------------------------------------------------------------------------------------

MI_CASES = [
    # activations, inputs, start, stop, noise, scale, channels_last
    ((2, 3, 3, 5), (1, 3, 7, 9), 1, 5, True, 0.5, False),
    ((2, 3, 3, 5), (2, 2, 7, 9), 0, 6, False, 1.0, True),
    ((1, 17, 7, 7), (1, 3, 10, 13), 3, 20, False, 1.0, False),
    ((1, 1, 1, 1), (1, 3, 3, 5), 0, 1, False, 2.0, False),
    ((2, 3, 7, 7), (2, 3, 5, 4), 2, 6, False, 1.0, False),  # downsampling
    ((2, 3, 4, 4), (2, 3, 4, 4), 0, 6, True, 1.0, False),  # same size: no resize
    ((1, 4, 2, 3, 4), (1, 2, 5, 4, 7), 0, 4, True, 1.0, True),  # 3-D
    ((2, 3, 5), (2, 3, 9), 2, 5, False, 1.0, False),  # 1-D
]


def _mi_args(acts_shape, in_shape, start, stop, with_noise, dtype=F32):
    acts = torch.randn(acts_shape, dtype=dtype)
    inputs = torch.randn(in_shape, dtype=dtype)
    noise = torch.randn(stop - start, *in_shape[2:], dtype=dtype) * 0.1 if with_noise else None
    return acts, inputs, noise


@interp
@pytest.mark.parametrize(("acts_shape", "in_shape", "start", "stop", "with_noise", "scale", "cl"), MI_CASES)
def test_masked_inputs(acts_shape, in_shape, start, stop, with_noise, scale, cl):
    acts, inputs, noise = _mi_args(acts_shape, in_shape, start, stop, with_noise)
    kw = {"noise": noise, "scale": scale, "channels_last": cl}
    out = mi.masked_inputs(acts, inputs, start, stop, **kw)
    _check(out, ref.masked_inputs, acts, inputs, start, stop, **kw)
    assert out.stride() == ref.masked_inputs(acts, inputs, start, stop, **kw).stride()


@interp
@pytest.mark.parametrize(("dtype", "out_dtype"), [(F16, None), (BF16, None), (F32, F16), (F32, BF16), (F16, F32)])
def test_masked_inputs_dtypes(dtype, out_dtype):
    acts, inputs, noise = _mi_args((2, 3, 3, 5), (1, 3, 7, 9), 1, 5, True, dtype)
    out = mi.masked_inputs(acts, inputs, 1, 5, noise=noise, out_dtype=out_dtype)
    assert out.dtype == (out_dtype or dtype)
    _check(out, ref.masked_inputs, acts, inputs, 1, 5, noise=noise, out_dtype=out_dtype)


@interp
def test_masked_inputs_non_contiguous():
    acts = torch.randn(2, 6, 5, 3)[:, ::2].transpose(2, 3)
    inputs = torch.randn(2, 3, 7, 9).contiguous(memory_format=torch.channels_last)
    noise = torch.randn(9, 7, 5).transpose(0, 2)  # (5, 7, 9), non-contiguous
    out = mi.masked_inputs(acts, inputs, 1, 6, noise=noise, scale=0.3)
    _check(out, ref.masked_inputs, acts, inputs, 1, 6, noise=noise, scale=0.3)


@interp
def test_masked_inputs_constant_and_nan_channels():
    acts = torch.randn(1, 3, 3, 5)
    acts[0, 0] = 2.0  # constant: mask 0, never NaN
    acts[0, 2, 1, 1] = float("nan")  # NaN: the reference's min/max propagate it to the whole map
    inputs = torch.randn(1, 3, 7, 9)
    out = mi.masked_inputs(acts, inputs, 0, 3)
    assert (out[0] == 0).all()
    assert not out[1].isnan().any() and out[2].isnan().all()
    _check(out, ref.masked_inputs, acts, inputs, 0, 3)


@interp
def test_masked_inputs_nearest_delegates():
    acts, inputs, _ = _mi_args((2, 3, 3, 5), (1, 3, 7, 9), 0, 6, False)
    out = mi.masked_inputs(acts, inputs, 0, 6, mode="nearest")
    torch.testing.assert_close(out, ref.masked_inputs(acts, inputs, 0, 6, mode="nearest"), rtol=0, atol=0)


# --- backend object, registration -------------------------------------------------------------------------------


def _op_samples() -> dict[str, tuple[tuple, dict]]:
    acts = torch.rand(2, 3, 3, 5)
    grads = torch.randn(2, 3, 3, 5)
    w = torch.randn(2, 3)
    inputs = torch.randn(1, 3, 7, 9)
    return {
        "cam_step": ((w, acts), {"output_size": (7, 9)}),
        "gradcam_weights": ((grads,), {}),
        "xgradcam_weights": ((grads, acts), {}),
        "gradcampp_weights": ((grads, acts), {}),
        "gradcampp_weights_torchcam": ((grads,), {}),
        "masked_inputs": ((acts, inputs, 1, 5), {"noise": torch.randn(4, 7, 9), "scale": 0.5}),
    }


@interp
def test_backend_on_cpu_matches_reference():
    info = backends()["triton"]
    assert info["available"], info["reason"]
    assert "cpu" in info["devices"]
    impl = get_ops("triton", "cpu")
    assert impl is tb
    for name, (args, kwargs) in _op_samples().items():
        _check(getattr(impl, name)(*args, **kwargs), getattr(ref, name), *args, **kwargs)


def test_backend_keeps_autograd_on_reference():
    acts = torch.rand(2, 3, 3, 5, requires_grad=True)
    w = torch.randn(2, 3)
    tb.cam_step(w, acts, output_size=(7, 9)).sum().backward()  # the kernels have no backward: reference path
    assert acts.grad is not None and acts.grad.shape == acts.shape


def test_unavailable_without_triton(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    with pytest.raises(BackendUnavailable, match="triton is not installed"):
        triton_kernels._load()


def test_unavailable_without_cuda_outside_interpreter(monkeypatch):
    try:
        with monkeypatch.context() as m:
            m.setenv("TRITON_INTERPRET", "0")
            m.setattr(torch.cuda, "is_available", lambda: False)
            with pytest.raises(BackendUnavailable, match="no CUDA device"):
                triton_kernels._load()
            triton_kernels.register()
            info = backends()["triton"]
            assert info["devices"] == ["cuda"]
            assert not info["available"] and "no CUDA device" in info["reason"]
    finally:
        triton_kernels.register()


def test_import_without_triton_subprocess():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import pycam_fast\n"
        "info = pycam_fast.backends()['triton']\n"
        "assert not info['available'] and 'triton is not installed' in info['reason'], info\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_auto_table_is_measured_or_empty():
    known = set(backends())
    for device, table in _auto_table.AUTO_TABLE.items():
        for op_name, backend in table.items():
            assert hasattr(ref, op_name) and backend in known, (device, op_name, backend)
            assert _auto_table.preferred_backend(op_name, device) == backend
    if not _auto_table.AUTO_TABLE:
        assert _auto_table.MEASURED_ON is None
        assert _auto_table.preferred_backend("cam_step", "cuda") is None


# --- custom ops: opcheck and torch.compile (CPU: the reference default implementation) --------------------------


def _custom_op_samples() -> list[tuple[object, tuple]]:
    acts = torch.rand(2, 3, 3, 5)
    grads = torch.randn(2, 3, 3, 5)
    inputs = torch.randn(1, 3, 7, 9)
    return [
        (ops.cam_step, (torch.randn(2, 3), acts, True, [7, 9], True, 1e-8)),
        (ops.cam_step, (torch.randn(2, 3, 3, 5), acts, False, None, False, 1e-8)),
        (ops.gradcam_weights, (grads,)),
        (ops.xgradcam_weights, (grads, acts, 1e-8)),
        (ops.gradcampp_weights, (grads, acts, 1e-8, None, None)),
        (ops.gradcampp_weights, (grads, acts, 1e-8, grads * grads, grads**3)),
        (ops.gradcampp_weights_torchcam, (grads,)),
        (ops.masked_inputs, (acts, inputs, 1, 5, torch.randn(4, 7, 9), 0.5, torch.float16, True, None, 1e-8)),
        (ops.masked_inputs, (acts, inputs, 0, 6, None, 1.0, None, False, "nearest", 1e-8)),
    ]


@pytest.mark.parametrize("index", range(9))
def test_opcheck(index):
    op, args = _custom_op_samples()[index]
    torch.library.opcheck(op, args)


def _compiled_fn(w, acts, grads, inputs):
    cam = ops.cam_step(w, acts, True, [7, 9], True, 1e-8)
    weights = ops.gradcam_weights(grads)
    masked = ops.masked_inputs(acts, inputs, 1, 5, None, 1.0, None, True, None, 1e-8)
    return cam * 2, weights + 1, masked


def _compile_check(backend: str, fn=_compiled_fn) -> None:
    args = (torch.randn(2, 3), torch.rand(2, 3, 3, 5), torch.randn(2, 3, 3, 5), torch.randn(1, 3, 7, 9))
    torch._dynamo.reset()
    out = torch.compile(fn, fullgraph=True, backend=backend)(*args)
    for got, expected in zip(out, fn(*args), strict=True):
        torch.testing.assert_close(got, expected)
        assert got.stride() == expected.stride()


def test_torch_compile_cpu():
    _compile_check("aot_eager")  # dynamo + AOT autograd: the fake kernels and the schema (~7 s)


def _ops_only_fn(w, acts, grads, inputs):
    cam = ops.cam_step(w, acts, True, [7, 9], True, 1e-8)
    return cam, ops.gradcam_weights(grads), ops.masked_inputs(acts, inputs, 1, 5, None, 1.0, None, True, None, 1e-8)


@pytest.mark.slow
def test_torch_compile_cpu_inductor():
    # Only custom ops, so Inductor has no C++ kernel of its own to build (~15 s on 2 cores instead of ~60 s).
    _compile_check("inductor", _ops_only_fn)


# --- CUDA: the kernels compiled for real ------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(INTERPRETED, reason="TRITON_INTERPRET=1: the kernels were built for the interpreter")
def test_cuda_kernels():
    dev = "cuda"
    impl = get_ops("triton", dev)
    for name, (args, kwargs) in _op_samples().items():
        args = tuple(a.to(dev) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        _check(
            getattr(impl, name)(*args, **kwargs).cpu(),
            getattr(ref, name),
            *(_cpu(a) for a in args),
            **{k: _cpu(v) for k, v in kwargs.items()},
        )
    # Realistic sizes: ResNet-50 layer4 CAM upsampled to 224x224, channel split on, fp16, channels-last.
    acts = torch.randn(2, 2048, 7, 7, device=dev, dtype=F16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, 2048, device=dev, dtype=F16)
    _check(
        cs.cam_step(w, acts, output_size=(224, 224)).cpu(), ref.cam_step, w.cpu(), acts.cpu(), output_size=(224, 224)
    )
    for fn, ref_fn, n_args in GRAD_FNS.values():
        args = tuple(a.to(dev) for a in _grad_args((4, 512, 14, 14), n_args))
        _check(fn(*args).cpu(), ref_fn, *(a.cpu() for a in args))
    acts, inputs, noise = _mi_args((1, 512, 7, 7), (1, 3, 224, 224), 100, 164, True)
    got = mi.masked_inputs(acts.to(dev), inputs.to(dev), 100, 164, noise=noise.to(dev), out_dtype=F16)
    _check(got.cpu(), ref.masked_inputs, acts, inputs, 100, 164, noise=noise, out_dtype=F16)
    # torch.compile through the custom ops, with the Triton kernels registered for CUDA.
    args = (torch.randn(2, 3, device=dev), torch.rand(2, 3, 3, 5, device=dev), torch.randn(2, 3, 3, 5, device=dev))
    args = (*args, torch.randn(1, 3, 7, 9, device=dev))
    torch._dynamo.reset()
    out = torch.compile(_compiled_fn, fullgraph=True)(*args)
    for got, expected in zip(out, _compiled_fn(*(a.cpu() for a in args)), strict=False):
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)


def _cpu(x):
    return x.cpu() if isinstance(x, torch.Tensor) else x
