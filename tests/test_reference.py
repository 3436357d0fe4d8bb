"""Independent float64 checks of the documented formulas and of the reference ops."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SmallCNN
from PIL import Image

from pycam_fast import methods, reference
from pycam_fast.utils import overlay_mask


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


@pytest.mark.parametrize("shape", [(1, 3, 7, 13), (2, 5, 3, 4, 2), (3, 1, 1, 1)])
def test_gradcampp_weights_documented_formula(shape):
    torch.manual_seed(0)
    g = torch.randn(shape, dtype=torch.float64)
    g[g.abs() < 0.3] = 0  # exercise the g == 0 rule
    a = torch.rand(shape, dtype=torch.float64) * 3
    got = reference.gradcampp_weights(g, a)
    np.testing.assert_allclose(got.numpy(), _gradcampp_loops(g.numpy(), a.numpy()), rtol=1e-12, atol=1e-14)
    torchcam_quirk = (g**2 * g.relu()).flatten(2).sum(-1)
    torch.testing.assert_close(reference.gradcampp_weights_torchcam(g), torchcam_quirk)


def test_smoothgradcampp_documented_formula():
    """Recompute Smooth Grad-CAM++ by hand: same noise draws, autograd per sample, averaged moments, loops."""
    torch.manual_seed(1)
    model = SmallCNN().double().eval()
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64)
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
    ],
)
def test_upsample_matches_interpolate(shape, size):
    torch.manual_seed(2)
    x = torch.randn(shape, dtype=torch.float64)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    expected = F.interpolate(x.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)
    torch.testing.assert_close(reference.upsample(x, size), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(reference.upsample(x.float(), size), expected.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_constant_maps_give_zero(dtype):
    act = torch.full((2, 4, 7, 7), 3.3, dtype=dtype)
    for size in (None, (224, 224), (13, 5)):
        cam = reference.cam_step(torch.rand(2, 4, dtype=dtype), act, output_size=size)
        assert torch.equal(cam, torch.zeros_like(cam))
    masked = reference.masked_inputs(act, torch.rand(2, 3, 20, 20, dtype=dtype), 0, 8)
    assert torch.equal(masked, torch.zeros_like(masked))


def test_masked_inputs_by_hand():
    torch.manual_seed(3)
    act = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    x = torch.rand(2, 2, 9, 7, dtype=torch.float64)
    noise = torch.randn(4, 9, 7, dtype=torch.float64)
    got = reference.masked_inputs(act, x, 1, 5, noise=noise, scale=0.3, channels_last=True)
    assert got.is_contiguous(memory_format=torch.channels_last)
    for j in range(1, 5):
        n, c = divmod(j, 3)
        m = act[n, c]
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        up = F.interpolate(m[None, None], size=(9, 7), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(got[j - 1], 0.3 * (up + noise[j - 1]) * x[n], atol=1e-12, rtol=0)


def test_overlay_mask_matches_torchcam():
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
