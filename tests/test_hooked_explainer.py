"""HookedExplainer: LeGrad, RefineCAM and FinerCAM behind the Explainer's call, against their classes used directly."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import SmallCNN

from pycam_fast import methods
from pycam_fast.engine.hooked import HookedExplainer, attention_blocks, hooked_method

pytestmark = pytest.mark.usefixtures("one_thread")


def _vit():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    return vit


def _cnn():
    torch.manual_seed(1)
    return SmallCNN(num_classes=6).eval()


def _direct(cls, model, layer, x, classes, **kwargs):
    """The TorchCAM-style call, fused, resized bilinearly to the input and min-max normalised per sample."""
    with cls(model, layer, **kwargs) as extractor:
        scores = model(x)
        cam = extractor.fuse_cams(extractor(classes, scores)).detach()
    cam = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.flatten(1).min(1).values[:, None, None]
    high = cam.flatten(1).max(1).values[:, None, None]
    return (cam - low) / (high - low + 1e-7)


def _check(got, want):
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_finercam_and_refinecam_match_their_classes(batch):
    model = _cnn()
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 19, 23)
    classes = model(x).argmax(1).tolist()
    finer = HookedExplainer(model, "finercam", "features.4", gamma=0.4)
    _check(finer(x), _direct(methods.FinerCAM, model, "features.4", x, classes, input_shape=(3, 19, 23), gamma=0.4))
    assert finer.logits.shape == (batch, 6)
    refine = HookedExplainer(model, "RefineCAM", ["features.2", "features.4"])
    want = _direct(methods.RefineCAM, model, ["features.2", "features.4"], x, [2] * batch, input_shape=(3, 19, 23))
    _check(refine(x, class_idx=2), want)
    assert not any(m._forward_hooks for m in model.modules())


def test_legrad_defaults_to_every_attention_block():
    model = _vit()
    blocks = attention_blocks(model)
    assert blocks == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    got = HookedExplainer(model, "legrad")(x, class_idx=[1, 3])
    _check(got, _direct(methods.LeGrad, model, blocks, x, [1, 3]))
    assert got.min() == 0 and got.amax(dim=(1, 2)).min() > 0.99  # normalised, not constant


def test_bad_arguments():
    assert hooked_method("LEGRAD") == "LeGrad" and hooked_method("gradcam") is None
    with pytest.raises(ValueError, match="hook-based"):
        HookedExplainer(_cnn(), "gradcam")
    with pytest.raises(ValueError, match="two or more"):
        HookedExplainer(_cnn(), "refinecam", "features.4")
    with pytest.raises(ValueError, match="self_attention"):
        HookedExplainer(_cnn(), "legrad")
    with pytest.raises(ValueError, match="one layer"):
        HookedExplainer(_cnn(), "finercam", ["features.2", "features.4"])
