"""The reference ops (the oracle) against independent float64 formulas: loops, plain torch and F.interpolate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SmallCNN
from PIL import Image
from tolerances import BF16, F16, F32, F64, TOL

from pycam_fast import methods
from pycam_fast.ops import reference
from pycam_fast.utils import overlay_mask

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _gradcampp_loops(g: np.ndarray, a: np.ndarray, eps: float = 1e-8, g2=None, g3=None, g1=None) -> np.ndarray:
    """Grad-CAM++ weights pixel by pixel: alpha = g2 / (2 g2 + sum(A) g3 + eps) where g2 > 0, w = sum alpha relu(g1)."""
    g1 = g if g1 is None else g1
    g2 = g**2 if g2 is None else g2
    g3 = g**3 if g3 is None else g3
    n_, c_ = g.shape[:2]
    out = np.zeros((n_, c_))
    for n in range(n_):
        for c in range(c_):
            total_a = a[n, c].sum()
            for idx in np.ndindex(*g.shape[2:]):
                d2, d3 = g2[(n, c, *idx)], g3[(n, c, *idx)]
                alpha = d2 / (2 * d2 + total_a * d3 + eps) if d2 > 0 else 0.0
                out[n, c] += alpha * max(g1[(n, c, *idx)], 0.0)
    return out


@pytest.mark.parametrize("shape", [(1, 3, 7, 13), (2, 5, 3, 4, 2), (3, 1, 1, 1), (2, 3, 9)])
def test_gradient_weights_documented_formulas(shape) -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(shape, generator=gen, dtype=F64)
    g[g.abs() < 0.3] = 0  # exercise the g == 0 rule
    a = torch.rand(shape, generator=gen, dtype=F64) * 3
    got = reference.gradcampp_weights(g, a)
    np.testing.assert_allclose(got.numpy(), _gradcampp_loops(g.numpy(), a.numpy()), rtol=1e-12, atol=1e-14)
    dims = tuple(range(2, g.ndim))
    torch.testing.assert_close(reference.gradcampp_weights_torchcam(g), (g**2 * g.relu()).sum(dims))
    torch.testing.assert_close(reference.gradcam_weights(g), g.mean(dims))
    torch.testing.assert_close(reference.xgradcam_weights(g, a), (g * a).sum(dims) / (a.sum(dims) + 1e-8))


def test_gradcampp_from_moments_documented_formula() -> None:
    gen = torch.Generator().manual_seed(6)
    g = torch.randn(2, 4, 3, 5, generator=gen, dtype=F64)
    d2, d3 = (g * g * 0.9).clamp_min(0), g**3 * 1.1
    d2[0, 0, 0] = 0
    a = torch.rand(2, 4, 3, 5, generator=gen, dtype=F64)
    got = reference.gradcampp_from_moments(g, d2, d3, a, 1e-8)
    expected = _gradcampp_loops(g.numpy(), a.numpy(), g1=g.numpy(), g2=d2.numpy(), g3=d3.numpy())
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_smoothgradcampp_end_to_end() -> None:
    """Smooth Grad-CAM++ by hand: the same noise draws, autograd per sample, averaged moments, loops."""
    torch.manual_seed(1)
    model = SmallCNN().double().eval()
    x = torch.rand(2, 3, 9, 9, dtype=F64)
    num_samples, std, class_idx = 3, 0.4, [4, 1]

    with methods.SmoothGradCAMpp(model, "features.4", num_samples=num_samples, std=std) as extractor:
        model(x)
        torch.manual_seed(5)
        got = extractor(class_idx, normalized=False)[0]

    feats = {}
    handle = model.features[4].register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    model(x)
    clean = feats["a"].detach()
    torch.manual_seed(5)
    moments = [0, 0, 0]
    for _ in range(num_samples):
        noisy = x + torch.distributions.Normal(0.0, std).sample(x.shape).double()
        out = model(noisy)
        (grad,) = torch.autograd.grad(out[[0, 1], class_idx].sum(), feats["a"])
        for p in range(3):
            moments[p] = moments[p] + grad ** (p + 1)
    handle.remove()
    d1, d2, d3 = (m.numpy() / num_samples for m in moments)
    w = _gradcampp_loops(d1, clean.numpy(), g1=d1, g2=d2, g3=d3)
    expected = np.maximum((w[:, :, None, None] * clean.numpy()).sum(1), 0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((2, 7, 7), (224, 224)),
        ((3, 3, 5), (13, 29)),
        ((1, 1, 1), (5, 4)),
        ((2, 2, 3, 4), (5, 7, 9)),
        ((2, 9), (31,)),
        ((2, 7, 7), (3, 4)),
        ((2, 7, 7), (7, 3)),
    ],
)
@pytest.mark.parametrize("dtype", [F64, F32, F16, BF16])
def test_upsample_matches_interpolate(shape, size, dtype) -> None:
    """Equal to F.interpolate up to an ulp or so (the order of ATen's vectorised blend differs on some CPUs)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=F64).to(dtype)
    expected = F.interpolate(x.unsqueeze(1), size=size, mode=_MODES[len(size)], align_corners=False).squeeze(1)
    got = reference.upsample(x, size)
    assert got.dtype == dtype and got.shape == (shape[0], *size)
    atol = {F64: 1e-12, F32: 1e-6}.get(dtype, TOL[dtype]["atol"])
    torch.testing.assert_close(got, expected, atol=atol, rtol=0 if dtype in (F32, F64) else TOL[dtype]["rtol"])


def test_resize_taps_identity_and_clamping() -> None:
    i0, i1, l0, l1 = reference.resize_taps(5, 5, torch.device("cpu"))
    assert torch.equal(i0, torch.arange(5)) and torch.equal(i1, i0) and (l0 == 1).all() and (l1 == 0).all()
    i0, i1, l0, l1 = reference.resize_taps(3, 7, torch.device("cpu"), F64)
    assert int(i0.min()) == 0 and int(i1.max()) == 2 and torch.allclose(l0 + l1, torch.ones(7, dtype=F64))
    src = ((torch.arange(7, dtype=F64) + 0.5) * 3 / 7 - 0.5).clamp_min(0)
    torch.testing.assert_close(i0 + l1, src)  # l1 = src - i0, also past the last index (i1 clamps)


@pytest.mark.parametrize(
    ("c", "spatial", "out"), [(3, (7, 13), None), (3, (7, 13), (9, 5)), (4, (2, 3, 4), (5, 7, 9)), (3, (5,), (11,))]
)
def test_cam_step_documented_formula(c, spatial, out) -> None:
    """nansum_c(w * A) -> F.interpolate -> ReLU -> (x - min) / (max - min + eps), per sample."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(2, c, *spatial, generator=gen, dtype=F64)
    w = torch.randn(2, a.shape[1], generator=gen, dtype=F64)
    a[0, 0].view(-1)[0] = float("nan")
    cam = torch.nansum(w[(...,) + (None,) * (a.ndim - 2)] * a, dim=1)
    if out is not None:
        cam = F.interpolate(cam.unsqueeze(1), size=out, mode=_MODES[len(out)], align_corners=False).squeeze(1)
    raw = cam
    cam = cam.relu()
    flat = cam.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    view = (-1,) + (1,) * (cam.ndim - 1)
    expected = (cam - lo.view(view)) / ((hi - lo).view(view) + 1e-8)
    torch.testing.assert_close(reference.cam_step(w, a, output_size=out), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        reference.cam_step(w, a, relu=False, output_size=out, normalize=False), raw, atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("dtype", [F16, BF16, F32, F64])
def test_constant_maps_give_zero(dtype) -> None:
    act = torch.full((2, 4, 7, 7), 3.3, dtype=dtype)
    for size in (None, (224, 224), (13, 5)):
        cam = reference.cam_step(torch.rand(2, 4, dtype=dtype), act, output_size=size)
        assert torch.equal(cam, torch.zeros_like(cam))
    masked = reference.masked_inputs(act, torch.rand(2, 3, 20, 20, dtype=dtype), 0, 8)
    assert torch.equal(masked, torch.zeros_like(masked))


def test_outputs_are_contiguous() -> None:
    """The reference is the fake implementation too: its layouts are what the kernels promise."""
    a = torch.randn(2, 5, 7, 7).contiguous(memory_format=torch.channels_last)
    for out in (None, (7, 7), (13, 9)):
        assert reference.cam_step(torch.randn(5, 2).t(), a, output_size=out).is_contiguous()
    x = torch.randn(2, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    assert reference.masked_inputs(a, x, 0, 4).is_contiguous()
    assert reference.masked_inputs(a, x, 0, 4, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    a3, x3 = torch.randn(1, 2, 2, 3, 4), torch.randn(1, 3, 4, 5, 6)
    assert reference.masked_inputs(a3, x3, 0, 2, channels_last=True).is_contiguous(memory_format=torch.channels_last_3d)
    images = torch.rand(2, 5, 4, 3).permute(0, 3, 1, 2)
    assert reference.overlay(images, torch.rand(2, 2, 2), torch.zeros(3, 65536, dtype=torch.uint8)).is_contiguous()


def test_masked_inputs_by_hand() -> None:
    gen = torch.Generator().manual_seed(3)
    act = torch.randn(2, 3, 4, 5, generator=gen, dtype=F64)
    x = torch.rand(2, 2, 9, 7, generator=gen, dtype=F64)
    noise = torch.randn(4, 9, 7, generator=gen, dtype=F64)
    got = reference.masked_inputs(act, x, 1, 5, noise, 0.3, None, True)
    assert got.is_contiguous(memory_format=torch.channels_last) and got.shape == (4, 2, 9, 7)
    for j in range(1, 5):
        n, c = divmod(j, 3)
        m = act[n, c]
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        up = F.interpolate(m[None, None], size=(9, 7), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(got[j - 1], 0.3 * (up + noise[j - 1]) * x[n], atol=1e-12, rtol=0)
    shared = reference.masked_inputs(act, x[:1], 0, 6, out_dtype=F32)
    assert shared.dtype == F32
    torch.testing.assert_close(shared[4], (reference.masked_inputs(act, x[:1], 4, 5)[0]).float())


def test_overlay_mask_matches_torchcam() -> None:
    torchcam_utils = pytest.importorskip("torchcam.utils")
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.random((7, 9)).astype(np.float32), mode="F")
    for alpha in (0.7, 0.3):
        ours = np.asarray(overlay_mask(img, mask, alpha=alpha))
        theirs = np.asarray(torchcam_utils.overlay_mask(img, mask, alpha=alpha))
        assert ours.shape == (37, 53, 3)
        np.testing.assert_array_equal(ours, theirs)
    gray = img.convert("L")
    np.testing.assert_array_equal(
        np.asarray(overlay_mask(gray, mask, "viridis")), np.asarray(torchcam_utils.overlay_mask(gray, mask, "viridis"))
    )
    with pytest.raises(TypeError, match=r"PIL\.Image"):
        overlay_mask(np.zeros((3, 3)), mask)
    with pytest.raises(ValueError, match="alpha"):
        overlay_mask(img, mask, alpha=1)
