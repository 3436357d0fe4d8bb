"""HiResCAM, GradCAMElementWise, EigenCAM, EigenGradCAM, FEM and GradCAM's gradient filters vs float64 formulas."""

import numpy as np
import pytest
import torch
from conftest import SmallCNN

from pycam_fast import methods
from pycam_fast.methods.eigencam import principal_projection
from pycam_fast.methods.fem import fem_weights

BACKENDS = ["torch", "cpp"]
TOL = {torch.float64: 1e-9, torch.float32: 2e-5}


pytestmark = pytest.mark.usefixtures("one_thread")


def _forward(model, layer, x, class_idx):
    """Float64 activations, gradients of the summed class scores, and the scores."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(a=o))
    try:
        scores = model(x.double())
        index = torch.as_tensor(class_idx).expand(x.shape[0]).view(-1, 1)
        (g,) = torch.autograd.grad(scores.gather(1, index).sum(), store["a"])
    finally:
        handle.remove()
    return store["a"].detach(), g


def _minmax(cam):
    flat = cam.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / (flat.max(1, keepdim=True).values + 1e-8)).view_as(cam)


def _numpy_projection(features, sign):
    """Per-image NumPy SVD (the definition), with the ``max`` sign correction."""
    out = []
    for feat in features.numpy():
        mat = np.nan_to_num(feat.reshape(feat.shape[0], -1).T)
        mat = mat - mat.mean(0)
        proj = mat @ np.linalg.svd(mat, full_matrices=True)[2][0]
        if sign == "max" and abs(proj.min()) > abs(proj.max()):
            proj = -proj
        out.append(proj.reshape(feat.shape[1:]))
    return torch.from_numpy(np.stack(out))


def _expected(name, a, g, **kw):
    if name == "HiResCAM":
        cam = (g * a).sum(1)
    elif name == "GradCAMElementWise":
        cam = (g * a).relu().sum(1)
    elif name == "EigenCAM":
        cam = _numpy_projection(a, "max")
    elif name == "EigenGradCAM":
        cam = _numpy_projection(g * a, "max")
    elif name == "FEM":
        k = kw.get("k", 2.0)
        flat = a.flatten(2)
        thr = flat.mean(-1, keepdim=True) + k * flat.std(-1, correction=0, keepdim=True)
        cam = ((flat > thr).double().mean(-1)[..., None, None] * a).sum(1)
    else:  # GradCAM with a gradient filter
        filt = kw["gradient_filter"]
        g = g.relu() if filt == "deconv" else g * (g > 0) * (a > 0)
        cam = (g.flatten(2).mean(-1)[..., None, None] * a).sum(1)
    return cam.relu()


def _ours(name, model, layer, x, class_idx, dtype, backend, normalized, **kw):
    model = model.to(dtype)
    with getattr(methods, name)(model, layer, backend=backend, **kw) as cam:
        scores = model(x.to(dtype))
        return cam(class_idx, scores, normalized=normalized)[0]


CASES = [
    ("HiResCAM", {}),
    ("GradCAMElementWise", {}),
    ("EigenCAM", {}),
    ("EigenGradCAM", {}),
    ("FEM", {}),
    ("FEM", {"k": 0.5}),
    ("GradCAM", {"gradient_filter": "guided"}),
    ("GradCAM", {"gradient_filter": "deconv"}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("name", "kw"), CASES)
def test_against_formula(name, kw, batch, dtype, backend):
    torch.manual_seed(batch)
    model = SmallCNN().eval()
    x = torch.randn(batch, 3, 23, 17)
    class_idx = [3, 1, 7][:batch]
    a, g = _forward(model.double(), model.features[4], x, class_idx)
    raw = _expected(name, a, g, **kw)
    assert raw.amax() > 0  # a real map
    for normalized, expected in ((False, raw), (True, _minmax(raw))):
        got = _ours(name, model, "features.4", x, class_idx, dtype, backend, normalized, **kw)
        assert got.shape == (batch, 12, 9) and got.dtype == dtype
        scale = 1.0 if normalized else float(expected.abs().max())
        torch.testing.assert_close(got.double(), expected, atol=TOL[dtype] * scale, rtol=0)


def test_filters_differ_from_plain_gradcam():
    torch.manual_seed(0)
    model = SmallCNN().double().eval()
    x = torch.randn(2, 3, 19, 21, dtype=torch.float64)
    maps = {
        f: _ours("GradCAM", model, "features.3", x, 2, torch.float64, "torch", False, gradient_filter=f)
        for f in (None, "guided", "deconv")
    }
    assert not torch.allclose(maps[None], maps["deconv"])
    assert not torch.allclose(maps["guided"], maps[None])


@pytest.mark.parametrize("shape", [(4, 7, 5, 3), (3, 20, 3, 2)])  # P > C and P <= C (the two Gram matrices)
def test_projection_matches_numpy_sign_and_batched(shape):
    torch.manual_seed(0)
    feats = torch.randn(*shape, dtype=torch.float64).relu()
    feats[0, 1, 0, 0] = float("nan")
    for sign in ("max", "numpy"):
        got = principal_projection(feats, sign)
        ref = _numpy_projection(feats, sign)
        if sign == "numpy":  # NumPy's own sign, as pytorch-grad-cam's get_2d_projection
            torch.testing.assert_close(got, ref.to(got.dtype), atol=1e-10, rtol=0)
        else:
            torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
            assert (got.flatten(1).amax(1) >= got.flatten(1).amin(1).abs()).all()
    # "none" is defined up to sign
    none = principal_projection(feats, "none")
    torch.testing.assert_close(none.abs(), _numpy_projection(feats, "none").abs(), atol=1e-10, rtol=0)
    single = principal_projection(feats[2:3], "max")
    torch.testing.assert_close(single, principal_projection(feats, "max")[2:3])
    low = principal_projection(feats.float(), "max")
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), principal_projection(feats, "max"), atol=1e-5, rtol=0)


def test_fem_weights_constant_channel_and_3d():
    a = torch.zeros(2, 3, 4, 5, 6)
    a[:, 1, 0, 0, 0] = 10.0
    w = fem_weights(a)
    assert w.shape == (2, 3)
    assert w[:, 0].eq(0).all() and torch.allclose(w[:, 1], torch.full((2,), 1 / 120))


@pytest.mark.parametrize("name", ["EigenCAM", "FEM"])
def test_class_agnostic_methods_need_no_class(name):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    with getattr(methods, name)(model, "features.4") as cam:
        with torch.no_grad():
            model(x)
        plain = cam()[0]
        assert torch.equal(plain, cam(3)[0])
        assert plain.shape == (2, 8, 8) and plain.amax() > 0.99


def test_state_and_hooks_restored():
    torch.manual_seed(0)
    model = SmallCNN().train()
    x = torch.randn(2, 3, 16, 16)
    for name in ("HiResCAM", "GradCAMElementWise", "EigenGradCAM"):
        with getattr(methods, name)(model, "features.4") as cam:
            scores = model(x)
            cam(1, scores)
            assert getattr(cam, "_maps", None) is None  # nothing kept across calls
        assert all(p.grad is None for p in model.parameters())
        assert all(not m._forward_hooks for m in model.modules())
    assert model.training


def test_errors():
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="gradient_filter"):
        methods.GradCAM(model, "features.4", gradient_filter="relu")
    with pytest.raises(ValueError, match="sign"):
        methods.EigenCAM(model, "features.4", sign="positive")
    with pytest.raises(ValueError, match="`k`"):
        methods.FEM(model, "features.4", k=float("nan"))
    with pytest.raises(ValueError, match="sign"):
        principal_projection(torch.zeros(1, 2, 3, 3), "up")
    with methods.HiResCAM(model, "features.4") as cam:
        with torch.no_grad():
            scores = model(torch.zeros(1, 3, 8, 8))
        with pytest.raises(RuntimeError, match="needs gradients"):
            cam(0, scores)
