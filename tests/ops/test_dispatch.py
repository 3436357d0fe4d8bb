"""The dispatcher and the op contract: backend resolution, the auto table, fallbacks (logged once, with the reason),
autograd routing, the schemas of both op namespaces, fake implementations (opcheck) and torch.compile."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from tolerances import F32, F64, assert_close, interpreting, rand, randn, require

from pycam_fast import _log, ops
from pycam_fast.ops import compiled, dispatch
from pycam_fast.ops import reference as ref
from pycam_fast.ops import triton as triton_backend
from pycam_fast.ops.schemas import CPU_ONLY_OPS, OP_NAMES, SCHEMAS
from pycam_fast.utils import _table

_TRITON_OPS = [op for op in OP_NAMES if op != "overlay" and op not in CPU_ONLY_OPS]


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Forget logged messages and cached auto choices for one test (restored afterwards)."""
    monkeypatch.setattr(_log, "_LOGGED", set())
    monkeypatch.setattr(dispatch, "_AUTO_CACHE", {})


def _blend_table() -> torch.Tensor:
    return _table("blend", "jet", 0.5, "cpu")


def _samples() -> dict[str, tuple]:
    """Positional (schema-order) arguments of every op, tiny and CPU."""
    a, g = rand(2, 3, 3, 5, seed=1), randn(2, 3, 3, 5, seed=2)
    x = randn(1, 3, 7, 9, seed=3)
    return {
        "cam_step": (randn(2, 3, seed=4), a, True, [7, 9], True, 1e-8),
        "gradcam_weights": (g,),
        "xgradcam_weights": (g, a, 1e-8),
        "gradcampp_weights": (g, a, 1e-8),
        "gradcampp_weights_torchcam": (g,),
        "masked_inputs": (a, x, 1, 5, randn(4, 7, 9, seed=5), 0.5, torch.float16, True, 1e-8),
        "overlay": (rand(2, 3, 13, 11, seed=6), rand(2, 3, 5, seed=7), _blend_table()),
        "nmf": (rand(2, 7, 5, seed=8), rand(2, 7, 3, seed=9), rand(2, 3, 5, seed=10), 20, 1e-4),
    }


# ------------------------------------------------------------------------------------------ backends, resolve


def test_backends_report() -> None:
    info = ops.backends()
    assert {"torch", "cpp", "cuda", "triton"} <= set(info)
    assert info["torch"] == {**info["torch"], "available": True, "devices": ["*"], "reason": None}
    for name, entry in info.items():
        assert isinstance(entry["description"], str) and entry["description"], name
        assert entry["available"] == (entry["reason"] is None), name
    if not torch.cuda.is_available():
        assert not info["cuda"]["available"] and info["cuda"]["reason"]


def test_compiled_build_info() -> None:
    require("cpp", "cpu")
    info = compiled.build_info()
    assert info["available"] and info["torch_version"] == torch.__version__
    assert {"cuda", "cuda_arch_list", "compiler", "ops"} <= set(info)
    assert compiled.extension_error() is None


def test_resolve_explicit_and_auto() -> None:
    require("cpp", "cpu")
    assert ops.resolve("torch", "cpu") == "torch"
    assert ops.resolve("cpp", torch.device("cpu")) == "cpp"
    for op in OP_NAMES:  # no measured CPU entries: the static preference
        assert ops.resolve("auto", "cpu", op) == dispatch.AUTO_PREFERENCE["cpu"][0] == "cpp"
    assert ops.validate_backend_name("auto") == "auto"


@pytest.mark.parametrize(
    ("backend", "device", "match"),
    [
        ("nope", "cpu", r"unknown backend 'nope'.*auto, torch"),
        (3, "cpu", "unknown backend 3"),
        ("cuda", "cpu", r"does not run on cpu tensors; available for cpu: \[.*'torch'"),
        ("cpp", "cuda", "does not run on cuda tensors"),
    ],
)
def test_resolve_rejects(backend, device, match) -> None:
    with pytest.raises(ValueError, match=match):
        ops.resolve(backend, device)


def test_unavailable_backend_raises_with_reason(monkeypatch, fresh_dispatch) -> None:
    def loader():
        raise ops.BackendUnavailable("the frobnicator is missing")

    monkeypatch.setitem(dispatch._REGISTRY, "broken", dispatch._Backend("broken", loader, ("cpu",), "test backend"))
    assert ops.backends()["broken"] == {
        "available": False, "devices": ["cpu"], "description": "test backend", "reason": "the frobnicator is missing",
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"'broken' is unavailable: the frobnicator is missing; available for cpu"):
        ops.gradcam_weights(torch.ones(1, 2, 3, 3), backend="broken")


def test_cuda_backend_unavailable_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="'cuda' is unavailable"):
        ops.resolve("cuda", "cuda")


def test_auto_logs_an_unavailable_preferred_backend_once(monkeypatch, fresh_dispatch, caplog) -> None:
    def loader():
        raise ops.BackendUnavailable("no frobnicator here")

    monkeypatch.setitem(dispatch._REGISTRY, "broken", dispatch._Backend("broken", loader, ("cpu",), "test backend"))
    monkeypatch.setitem(dispatch.AUTO_PREFERENCE, "cpu", ("broken", "torch"))
    with caplog.at_level(logging.INFO, logger="pycam_fast"):
        g = randn(2, 3, 4, 5, seed=8)
        for _ in range(2):
            torch.testing.assert_close(ops.gradcam_weights(g), ref.gradcam_weights(g), rtol=0, atol=0)
        ops.cam_step(torch.ones(2, 3), g)
    assert ops.resolve("auto", "cpu", "gradcam_weights") == "torch"
    logged = [r for r in caplog.records if "'broken' unavailable" in r.getMessage()]
    assert len(logged) == 1 and "no frobnicator here" in logged[0].getMessage()


def test_auto_table_is_read_and_used(monkeypatch, fresh_dispatch) -> None:
    table = dispatch.auto_table()
    assert isinstance(table["measured_on"], str) and table["measured_on"]
    known = set(ops.backends())
    for device, entries in table["ops"].items():
        assert device in ("cpu", "cuda"), device
        for op, backend in entries.items():
            assert op in OP_NAMES and backend in known, (device, op, backend)
    # the measured choice wins over the static preference, per op
    require("triton", "cpu")
    monkeypatch.setattr(dispatch, "_TABLE", {"cpu": {"gradcam_weights": "triton", "overlay": "torch"}})
    assert ops.resolve("auto", "cpu", "gradcam_weights") == "triton"
    assert ops.resolve("auto", "cpu", "overlay") == "torch"
    assert ops.resolve("auto", "cpu", "cam_step") == "cpp"
    # an unusable measured entry (triton has no overlay kernel) falls through to the preference
    monkeypatch.setattr(dispatch, "_AUTO_CACHE", {})
    monkeypatch.setattr(dispatch, "_TABLE", {"cpu": {"overlay": "triton"}})
    assert ops.resolve("auto", "cpu", "overlay") == "cpp"


# ---------------------------------------------------------------------------------------------------- fallbacks


def _fallbacks(caplog, op: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if f"{op} on the" in r.getMessage() and "torch reference" in r.getMessage()]


@pytest.mark.parametrize("backend", ["triton", "auto"])
def test_triton_float64_runs_on_reference_logged_once(backend, monkeypatch, fresh_dispatch, caplog) -> None:
    require("triton", "cpu")
    if backend == "auto":
        monkeypatch.setattr(dispatch, "_TABLE", {"cpu": {"cam_step": "triton"}})
    a, w = randn(2, 3, 3, 5, seed=9, dtype=F64), randn(2, 3, seed=10, dtype=F64)
    with caplog.at_level(logging.INFO, logger="pycam_fast"):
        for _ in range(2):
            out = ops.cam_step(w, a, output_size=(7, 9), backend=backend)
            torch.testing.assert_close(out, ref.cam_step(w, a, output_size=(7, 9)), rtol=0, atol=0)
    logged = _fallbacks(caplog, "cam_step")
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "'triton'" in logged[0].getMessage() and "torch.float64" in logged[0].getMessage()
    assert logged[0].levelno == (logging.WARNING if backend == "triton" else logging.INFO)


def test_triton_overlay_has_no_kernel(fresh_dispatch, caplog) -> None:
    require("triton", "cpu")
    args = _samples()["overlay"]
    with caplog.at_level(logging.INFO, logger="pycam_fast"):
        assert torch.equal(ops.overlay(*args, backend="triton"), ref.overlay(*args))
    (record,) = _fallbacks(caplog, "overlay")
    assert "no kernel for this op" in record.getMessage()


@pytest.mark.parametrize(
    ("backend", "op", "args", "reason"),
    [
        ("cpp", "gradcam_weights", (torch.ones(2, 3, 4, 4, dtype=torch.int32),), "dtype torch.int32"),
        ("cpp", "gradcam_weights", (torch.ones(2, 3, 4, 4, 4, 4),), "a 6-D tensor"),
        ("cpp", "xgradcam_weights", (torch.ones(2, 3, 4, 4), torch.ones(2, 3, 4, 5)), "different shapes"),
        ("cpp", "overlay", (torch.rand(1, 3, 4, 4).to(torch.float8_e5m2), torch.rand(1, 2, 2), None), "float8"),
        ("triton", "gradcam_weights", (torch.ones(0, 3, 4, 4),), "an empty tensor"),
        ("triton", "cam_step", (torch.ones(2, 4), torch.ones(2, 3, 4, 4)), "do not broadcast"),
    ],
)
def test_unsupported_inputs_run_on_reference(backend, op, args, reason, fresh_dispatch, caplog) -> None:
    require(backend, "cpu")
    args = tuple(_blend_table() if a is None else a for a in args)
    with caplog.at_level(logging.INFO, logger="pycam_fast"):
        try:
            out = getattr(ops, op)(*args, backend=backend)
        except RuntimeError:
            out = None  # the reference itself rejects inputs that make no sense (e.g. non-broadcasting weights)
    if out is not None:
        expected = getattr(ref, op)(*args)
        torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    (record,) = _fallbacks(caplog, op)
    assert reason in record.getMessage() and record.levelno == logging.WARNING


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_autograd_inputs_run_on_reference(backend, fresh_dispatch, caplog) -> None:
    require(backend, "cpu")
    g = randn(2, 5, 7, 7, seed=11).requires_grad_()
    a = rand(2, 5, 7, 7, seed=12).requires_grad_()
    with caplog.at_level(logging.INFO, logger="pycam_fast"):
        ops.gradcam_weights(g, backend=backend).sum().backward()
        cam = ops.cam_step(torch.ones(2, 5), a, output_size=(9, 11), normalize=False, backend=backend)
    torch.testing.assert_close(g.grad, torch.full_like(g, 1 / 49))
    cam.sum().backward()
    assert a.grad is not None and a.grad.shape == a.shape and torch.isfinite(a.grad).all()
    assert all("the inputs need autograd" in r.getMessage() for r in _fallbacks(caplog, "gradcam_weights"))
    assert len(_fallbacks(caplog, "gradcam_weights")) == 1
    # without grad mode the kernel runs (no fallback) and gives the same values
    with torch.no_grad():
        fast = ops.gradcam_weights(g, backend=backend)
    assert len(_fallbacks(caplog, "gradcam_weights")) == 1
    assert_close(fast, ref.gradcam_weights(g.detach().double()), F32)


# ----------------------------------------------------------------------------------------- the op contract


@pytest.mark.parametrize("op", OP_NAMES)
def test_cpp_schemas_equal_the_python_ones(op) -> None:
    require("cpp", "cpu")
    declared = torch._C.parse_schema(f"pycam_fast::{SCHEMAS[op]}")
    assert str(getattr(torch.ops.pycam_fast, op).default._schema) == str(declared)
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pycam_fast::{op}", "CPU")
    if compiled.build_info()["cuda"]:
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(f"pycam_fast::{op}", "CUDA")
        assert has_cuda == (op not in CPU_ONLY_OPS)


@pytest.mark.parametrize("op", _TRITON_OPS)
def test_triton_schemas_equal_the_python_ones(op) -> None:
    if not ops.backends()["triton"]["available"]:
        pytest.skip(f"triton unavailable: {ops.backends()['triton']['reason']}")
    declared = torch._C.parse_schema(f"{triton_backend.NAMESPACE}::{SCHEMAS[op]}")
    assert str(getattr(torch.ops.pycam_fast_triton, op).default._schema) == str(declared)
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pycam_fast_triton::{op}", "CUDA")


def test_reference_signatures_follow_the_schemas() -> None:
    import inspect

    for op in OP_NAMES:
        params = list(inspect.signature(getattr(ref, op)).parameters)
        schema = torch._C.parse_schema(f"x::{SCHEMAS[op]}")
        assert params == [arg.name for arg in schema.arguments], op


def test_cpu_tensors_reach_the_cpu_kernel() -> None:
    require("cpp", "cpu")
    out = torch.ops.pycam_fast.cam_step(torch.randn(1, 3), torch.randn(1, 3, 4, 4), True, [8, 8], True, 1e-8)
    assert out.device.type == "cpu" and out.shape == (1, 8, 8)


def test_kernel_bad_arguments_raise_clear_errors() -> None:
    require("cpp", "cpu")
    a = torch.randn(2, 5, 7, 7)
    pf = torch.ops.pycam_fast
    with pytest.raises(RuntimeError, match="pycam_fast::cam_step"):
        pf.cam_step(torch.randn(2, 4), a)
    with pytest.raises(RuntimeError, match="share a dtype"):
        pf.cam_step(torch.randn(2, 5, dtype=torch.float64), a)
    with pytest.raises(RuntimeError, match="start"):
        pf.masked_inputs(a, torch.randn(2, 3, 9, 9), 4, 11)
    with pytest.raises(RuntimeError, match="must match grads"):
        pf.xgradcam_weights(a, torch.randn(2, 5, 7, 6))


@pytest.mark.cuda
def test_kernel_mixed_devices_raise() -> None:
    require("cuda", "cuda")
    a = torch.randn(2, 5, 7, 7, device="cuda")
    pf = torch.ops.pycam_fast
    with pytest.raises(RuntimeError, match="pycam_fast"):
        pf.cam_step(torch.randn(2, 5), a)
    with pytest.raises(RuntimeError, match="pycam_fast"):
        pf.xgradcam_weights(a, a.cpu())
    with pytest.raises(RuntimeError, match="pycam_fast"):
        pf.masked_inputs(a, torch.randn(2, 3, 9, 9), 0, 4)


def _opcheck_cases() -> list[tuple[str, tuple]]:
    samples = _samples()
    a = samples["cam_step"][1]
    cases = list(samples.items())
    cases += [
        ("cam_step", (torch.randn(1, 3), torch.randn(2, 3, 2, 3, 4), False, None, False, 1e-8)),
        ("masked_inputs", (a, torch.randn(2, 3, 4, 4), 0, 6, None, 1.0, None, False, 1e-8)),
        ("overlay", (torch.randint(0, 256, (2, 13, 11, 3), dtype=torch.uint8).permute(0, 3, 1, 2),
                     torch.rand(2, 3, 5, dtype=torch.float64), _table("blend", "viridis", 0.3, "cpu"))),
    ]  # fmt: skip
    return cases


_CASES = _opcheck_cases()


@pytest.mark.parametrize("index", range(len(_CASES)), ids=[f"{op}-{i}" for i, (op, _) in enumerate(_CASES)])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_opcheck_compiled(index, device) -> None:
    require("cpp" if device == "cpu" else "cuda", device)
    op, args = _CASES[index]
    if device == "cuda" and op in CPU_ONLY_OPS:
        pytest.skip(f"{op} has no CUDA kernel (the cuda backend solves host copies)")
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(getattr(torch.ops.pycam_fast, op).default, args)


@pytest.mark.parametrize("op", _TRITON_OPS)
def test_opcheck_triton(op) -> None:
    require("triton", "cuda" if torch.cuda.is_available() and not interpreting() else "cpu")
    device = "cpu" if interpreting() else "cuda"
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in _samples()[op])
    # aot_dispatch_dynamic retraces with symbolic shapes: the interpreter's launches are too slow for it
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(getattr(torch.ops.pycam_fast_triton, op).default, args, test_utils=utils)


def _pipeline(namespace: str, table: torch.Tensor | None):
    lib = getattr(torch.ops, namespace)

    def fn(g, a, x, images):
        w = lib.gradcampp_weights(g, a, 1e-8)
        cam = lib.cam_step(w, a, True, [7, 9], True, 1e-8)
        masked = lib.masked_inputs(a, x, 1, 5, None, 1.0, None, True, 1e-8)
        out = (cam * 2, lib.gradcam_weights(g) + 1, masked)
        return (*out, lib.overlay(images, cam, table)) if table is not None else out

    return fn


@pytest.mark.parametrize(("backend", "namespace"), [("cpp", "pycam_fast"), ("triton", "pycam_fast_triton")])
def test_torch_compile_fullgraph(backend, namespace) -> None:
    """Dynamo + AOT autograd through the custom ops: the fake (reference) implementations and the schemas."""
    device = "cpu" if backend == "cpp" or interpreting() else "cuda"
    require(backend, device)
    table = _blend_table().to(device) if backend == "cpp" else None
    fn = _pipeline(namespace, table)
    args = [
        randn(2, 3, 3, 5, seed=13),
        rand(2, 3, 3, 5, seed=14),
        randn(1, 3, 7, 9, seed=15),
        rand(2, 3, 7, 9, seed=16),
    ]
    args = [t.to(device) for t in args]
    torch._dynamo.reset()
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
    for got, expected in zip(out, fn(*args), strict=True):
        torch.testing.assert_close(got, expected)
        assert got.stride() == expected.stride()


@pytest.mark.slow
def test_torch_compile_inductor() -> None:
    require("cpp", "cpu")
    fn = _pipeline("pycam_fast", _blend_table())
    args = [
        randn(2, 3, 3, 5, seed=17),
        rand(2, 3, 3, 5, seed=18),
        randn(1, 3, 7, 9, seed=19),
        rand(2, 3, 7, 9, seed=20),
    ]
    torch._dynamo.reset()
    for got, expected in zip(torch.compile(fn, fullgraph=True)(*args), fn(*args), strict=True):
        torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------------------------- Triton loader


def test_triton_kernels_are_interpreted_on_cpu() -> None:
    require("triton", "cpu")
    from pycam_fast.kernels import cam_step as launchers
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(launchers._cam_sum_kernel, InterpretedFunction)
    assert triton_backend.interpreting() and "cpu" in ops.backends()["triton"]["devices"]


def test_triton_unavailable_without_triton(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
    with pytest.raises(ops.BackendUnavailable, match="triton is not installed"):
        triton_backend._load()


def test_triton_unavailable_without_cuda_outside_interpreter(monkeypatch) -> None:
    try:
        with monkeypatch.context() as m:
            m.setenv("TRITON_INTERPRET", "0")
            m.setattr(torch.cuda, "is_available", lambda: False)
            with pytest.raises(ops.BackendUnavailable, match="no CUDA device"):
                triton_backend._load()
            triton_backend.register()
            info = ops.backends()["triton"]
            assert info["devices"] == ["cuda"]
            assert not info["available"] and "no CUDA device" in info["reason"]
            with pytest.raises(ValueError, match="'triton' does not run on cpu"):
                ops.resolve("triton", "cpu")
    finally:
        triton_backend.register()


def test_import_without_triton_subprocess() -> None:
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import pycam_fast, pycam_fast.ops as ops, torch\n"
        "info = ops.backends()['triton']\n"
        "assert not info['available'] and 'triton is not installed' in info['reason'], info\n"
        "assert ops.resolve('auto', 'cpu', 'cam_step') in ('cpp', 'torch')\n"
        "with __import__('pytest').raises(ValueError, match=\"backend 'triton'\"):\n"
        "    ops.cam_step(torch.ones(1, 2), torch.ones(1, 2, 3, 3), backend='triton')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_build_info_lists_every_op() -> None:
    require("cpp", "cpu")
    assert tuple(compiled.build_info()["ops"]) == OP_NAMES


def test_an_extension_built_from_older_sources_serves_the_ops_it_has(monkeypatch) -> None:
    """An op the loaded ``_C`` does not define is left out of the compiled backends (the reference runs it)."""
    require("cpp", "cpu")
    monkeypatch.setattr(compiled, "OP_NAMES", (*OP_NAMES, "op_of_newer_sources"))
    assert compiled._defined_ops() == OP_NAMES
