"""Signed, unnormalised Grad-CAM maps equal to Captum 0.9's LayerGradCam."""

import pytest
import torch
import torchvision
from conftest import SmallCNN

captum_attr = pytest.importorskip("captum.attr")

from pycam_fast.compat.captum import layer_gradcam  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


pytestmark = pytest.mark.usefixtures("one_thread")


def _models():
    torch.manual_seed(0)
    return {
        "small_cnn": (SmallCNN().eval(), lambda m: m.features[4]),
        "resnet18": (torchvision.models.resnet18(num_classes=10).eval(), lambda m: m.layer3),
    }


MODELS = _models()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_matches_captum(model_name, batch, dtype, relu):
    model, layer_fn = MODELS[model_name]
    model = model.to(dtype)
    layer = layer_fn(model)
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 37, 29, dtype=dtype)
    for target in (2, [5, 0, 9][:batch], torch.tensor([1, 8, 4][:batch])):
        theirs = captum_attr.LayerGradCam(model, layer).attribute(x, target, relu_attributions=relu).detach()
        mine = layer_gradcam(model, layer, x, target, relu_attributions=relu)
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
        scale = float(theirs.abs().max())
        assert scale > 0
        torch.testing.assert_close(mine, theirs, atol=TOL[dtype] * scale, rtol=0)
        if not relu:  # signed maps: the ReLU option only clamps them
            clamped = layer_gradcam(model, layer, x, target, relu_attributions=True)
            torch.testing.assert_close(clamped, mine.clamp_min(0), atol=0, rtol=0)


def test_negative_values_kept():
    torch.manual_seed(3)
    model = SmallCNN().double().eval()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    mine = layer_gradcam(model, model.features[4], x, [0, 1, 2])
    theirs = captum_attr.LayerGradCam(model, model.features[4]).attribute(x, [0, 1, 2]).detach()
    assert (theirs < 0).any()
    torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=0)


def test_state_untouched():
    torch.manual_seed(0)
    model = SmallCNN().train()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        out = layer_gradcam(model, model.features[4], x, 1)
    assert out.shape == (2, 1, 6, 6) and not out.requires_grad
    assert model.training  # Captum does not switch modes either
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert not x.requires_grad


def test_errors():
    model = SmallCNN().eval()
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="one class per sample"):
        layer_gradcam(model, model.features[4], x, [1, 2, 3])
    with pytest.raises(TypeError, match="target"):
        layer_gradcam(model, model.features[4], x, (1, 2))
    with pytest.raises(ValueError, match="class_idx"):
        layer_gradcam(model, model.features[4], x, 10)
