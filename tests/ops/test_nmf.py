"""The NMF op (cyclic coordinate descent) on the compiled backends vs its torch reference and scikit-learn.

NMF is iterative: the oracle is the reference in the SAME dtype from the same start (a float64 oracle would take
another path through 200 iterations), and rounding differences of the BLAS products grow over the iterations, so
the tolerance is relative to the factors' magnitude and looser than the table's single-op one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import BF16, COMPILED_TARGETS, F16, F32, F64, rand, require

from pycam_fast import ops
from pycam_fast.ops import compiled
from pycam_fast.ops import reference as ref

pytestmark = pytest.mark.parametrize(("backend", "device"), COMPILED_TARGETS)

#: max |difference| / max |factor| after up to 200 iterations (measured: <= 1e-5 in float32 on DFF matrices)
ITER_TOL = {F32: 1e-4, F64: 1e-10}
# (B, m, n, k): odd sizes, batch 1 and > 1, rank 1 (w^T is a view of w there), k > min(m, n)
CASES = [(1, 7, 13, 3), (3, 21, 5, 4), (2, 9, 4, 1), (1, 5, 6, 8), (2, 64, 36, 5)]


def _problem(b, m, n, k, dtype, device, seed=0):
    """A non-negative ``v`` of rank about ``k`` plus noise, and a positive start."""
    v = rand(b, m, k, seed=seed) @ rand(b, k, n, seed=seed + 1) + 0.1 * rand(b, m, n, seed=seed + 2)
    w0, h0 = rand(b, m, k, seed=seed + 3), rand(b, k, n, seed=seed + 4)
    return (t.to(dtype).to(device) for t in (v, w0, h0))


def _assert_factors_close(actual, expected, dtype):
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got.cpu(), want.cpu(), atol=ITER_TOL[dtype] * scale, rtol=0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_matches_reference(backend, device, case, dtype) -> None:
    require(backend, device, dtype)
    v, w0, h0 = _problem(*case, dtype, device)
    before = (w0.clone(), h0.clone())
    w, h, iterations = ops.nmf(v, w0, h0, backend=backend)
    rw, rh, r_iterations = ref.nmf(v, w0, h0)
    assert torch.equal(w0, before[0]) and torch.equal(h0, before[1])  # the start is not modified
    assert w.device == v.device and w.is_contiguous() and h.is_contiguous()
    assert iterations.dtype == torch.int64 and iterations.shape == (case[0],)
    assert torch.equal(iterations.cpu(), r_iterations.cpu())
    assert bool((w >= 0).all() and (h >= 0).all())
    _assert_factors_close((w, h), (rw, rh), dtype)
    # the solve improves on the start by a margin that a no-op or a wrong update cannot reach
    assert float(torch.linalg.matrix_norm(v - w @ h).max()) < 0.5 * float(torch.linalg.matrix_norm(v - w0 @ h0).min())


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_half_inputs_are_solved_in_float32(backend, device, dtype) -> None:
    require(backend, device)
    v, w0, h0 = _problem(2, 11, 7, 3, dtype, device, seed=5)
    w, h, _ = ops.nmf(v, w0, h0, backend=backend)
    assert w.dtype == h.dtype == F32
    _assert_factors_close((w, h), ref.nmf(v.float(), w0.float(), h0.float())[:2], F32)


def test_stopping_rule(backend, device) -> None:
    require(backend, device)
    v, w0, h0 = _problem(2, 10, 8, 3, F64, device, seed=9)
    _, _, one = ops.nmf(v, w0, h0, max_iter=1, backend=backend)
    _, _, every = ops.nmf(v, w0, h0, max_iter=37, tol=0.0, backend=backend)
    _, _, loose = ops.nmf(v, w0, h0, tol=0.5, backend=backend)
    assert one.tolist() == [1, 1] and every.tolist() == [37, 37]
    assert 1 < int(loose.max()) < 37
    # a zero start is stationary (every projected gradient is 0): stop after the first iteration, still zero
    w, h, iterations = ops.nmf(v, torch.zeros_like(w0), torch.zeros_like(h0), backend=backend)
    assert iterations.tolist() == [1, 1] and not w.any() and not h.any()


def test_bad_shapes_raise(backend, device) -> None:
    require(backend, device)
    v, w0, h0 = _problem(2, 6, 5, 3, F32, device)
    with pytest.raises(RuntimeError, match="pycam_fast::nmf: w must be"):
        ops.nmf(v, w0[:, :5], h0, backend=backend)
    with pytest.raises(RuntimeError, match="pycam_fast::nmf: v, w and h must be"):
        ops.nmf(v[0], w0[0], h0[0], backend=backend)
    with pytest.raises(RuntimeError, match="max_iter must be >= 1"):
        ops.nmf(v, w0, h0, max_iter=0, backend=backend)


def test_equals_sklearn_from_the_same_start(backend, device) -> None:
    """From the same start, the factors and iteration count are scikit-learn's ``NMF(solver="cd")`` ones."""
    require(backend, device)
    decomposition = pytest.importorskip("sklearn.decomposition")
    v, w0, h0 = _problem(1, 40, 23, 4, F32, "cpu", seed=11)
    model = decomposition.NMF(n_components=4, init="custom", max_iter=200)
    want_w = model.fit_transform(v[0].numpy(), W=w0[0].numpy().copy(), H=h0[0].numpy().copy())
    w, h, iterations = ops.nmf(v.to(device), w0.to(device), h0.to(device), backend=backend)
    assert int(iterations[0]) == model.n_iter_
    _assert_factors_close((w[0], h[0]), (torch.from_numpy(want_w), torch.from_numpy(model.components_)), F32)
    error = float(torch.linalg.matrix_norm(v[0] - w[0].cpu() @ h[0].cpu()))
    assert np.isclose(error, model.reconstruction_err_, rtol=1e-4)


def test_host_solve_of_device_tensors_equals_the_kernel(backend, device) -> None:
    """The ``cuda`` backend's NMF: the CPU kernel on host copies, the factors back on the tensors' device."""
    require(backend, device)
    v, w0, h0 = _problem(2, 9, 11, 3, F32, device, seed=13)
    got = compiled._nmf_on_host(v, w0, h0, 50, 1e-4)
    want = torch.ops.pycam_fast.nmf(v.cpu(), w0.cpu(), h0.cpu(), 50, 1e-4)
    for mine, expected in zip(got, want, strict=True):
        assert mine.device == v.device and torch.equal(mine.cpu(), expected)
