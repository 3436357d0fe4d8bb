"""Parity with pytorch-grad-cam (grad-cam 1.5.7): every compat method, targets, utils, state and errors."""

import numpy as np
import pytest
import torch
import torchvision
from conftest import SmallCNN, random_batch_norm
from torch import nn

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils import image as pgc_image  # noqa: E402
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402
from pytorch_grad_cam.utils import reshape_transforms as pgc_reshape  # noqa: E402

from pycam_fast.compat import pytorch_grad_cam as ours  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.utils import image as our_image  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as our_targets  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.utils import reshape_transforms as our_reshape  # noqa: E402

TOL = 1e-5
GRADIENT = ["GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "EigenGradCAM"]
GRADIENT_FREE = ["EigenCAM", "FEM"]
EIGEN_SMOOTH = ["GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _models():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    return {
        "resnet18": (resnet, lambda m: [m.layer4[-1], m.layer3[-1]]),
        "mobilenet_v3": (mobilenet, lambda m: [m.features[-1], m.features[8]]),
    }


MODELS = _models()


class TinySeg(nn.Module):
    """Fully convolutional net with an (N, K, H, W) output."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
        self.head = nn.Conv2d(12, num_classes, 1)

    def forward(self, x):
        return nn.functional.interpolate(self.head(self.body(x)), x.shape[2:], mode="bilinear")


def _both(name, model, layers, x, targets=None, batch_size=5, **call_kw):
    """(grad-cam maps, our maps) for the same call; ``targets`` is a function of the targets module."""
    results = []
    for lib, tmod in ((pgc, pgc_targets), (ours, our_targets)):
        with getattr(lib, name)(model, layers) as cam:
            if name in ("ScoreCAM", "AblationCAM"):
                cam.batch_size = batch_size
            results.append(cam(x, targets(tmod) if targets else None, **call_kw))
    return results


def _assert_parity(theirs, mine, tol=TOL):
    assert isinstance(mine, np.ndarray) and mine.dtype == np.float32 and mine.shape == theirs.shape
    np.testing.assert_allclose(mine, theirs, atol=tol, rtol=0)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", GRADIENT + GRADIENT_FREE)
def test_methods_two_layers_batch3(name, model_name):
    model, layers = MODELS[model_name]
    torch.manual_seed(1)
    x = torch.randn(3, 3, 41, 47)
    theirs, mine = _both(name, model, layers(model), x)
    assert mine.max() > 0.99  # a real map, not all zeros
    _assert_parity(theirs, mine)


@pytest.mark.parametrize("name", GRADIENT + GRADIENT_FREE)
def test_methods_class_target_batch1(name):
    model, layers = MODELS["resnet18"]
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 48)
    _assert_parity(*_both(name, model, layers(model)[:1], x, lambda t: [t.ClassifierOutputTarget(7)]))


@pytest.mark.parametrize("name", EIGEN_SMOOTH)
def test_eigen_smooth(name):
    model, layers = MODELS["resnet18"]
    torch.manual_seed(3)
    x = torch.randn(3, 3, 40, 36)
    targets = lambda t: [t.ClassifierOutputTarget(c) for c in (1, 4, 9)]  # noqa: E731
    _assert_parity(*_both(name, model, layers(model), x, targets, eigen_smooth=True))


@pytest.mark.parametrize("name", ["GradCAM", "EigenCAM"])
def test_aug_smooth(name):
    model, layers = MODELS["resnet18"]
    torch.manual_seed(4)
    x = torch.randn(1, 3, 40, 44)
    _assert_parity(*_both(name, model, layers(model)[:1], x, aug_smooth=True))


@pytest.mark.parametrize("name", ["GradCAM", "HiResCAM", "GradCAMPlusPlus", "LayerCAM", "EigenGradCAM"])
def test_segmentation_target(name):
    torch.manual_seed(5)
    model = TinySeg().eval()
    x = torch.randn(3, 3, 21, 27)
    masks = [(torch.rand(21, 27) > 0.5).numpy().astype(np.float32) for _ in range(3)]
    targets = lambda t: [t.SemanticSegmentationTarget(c, m) for c, m in zip((0, 2, 3), masks, strict=True)]  # noqa: E731
    _assert_parity(*_both(name, model, [model.body[3], model.body[1]], x, targets))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("with_targets", [False, True])
def test_scorecam(batch, with_targets):
    torch.manual_seed(6)
    model = SmallCNN().eval()
    x = torch.randn(batch, 3, 23, 19)
    targets = (lambda t: [t.ClassifierOutputTarget(c) for c in (2, 5, 7)[:batch]]) if with_targets else None
    theirs, mine = _both("ScoreCAM", model, [model.features[4], model.features[2]], x, targets)
    _assert_parity(theirs, mine)


@pytest.mark.parametrize("layer", [5, 4])  # a ReLU output (ablated to 0) and a conv output (to min - 1e7)
@pytest.mark.parametrize("batch", [1, 3])
def test_ablationcam_small(layer, batch):
    torch.manual_seed(15)
    model = SmallCNN().eval()
    x = torch.randn(batch, 3, 23, 19)
    for targets in (None, lambda t: [t.ClassifierOutputTarget(c) for c in (2, 5, 7)[:batch]]):
        _assert_parity(*_both("AblationCAM", model, [model.features[layer]], x, targets))


def test_ablationcam_resnet_tail():
    model, _ = MODELS["resnet18"]
    torch.manual_seed(16)
    x = torch.randn(1, 3, 64, 64)
    theirs, mine = _both("AblationCAM", model, [model.layer4[-1]], x, batch_size=128)
    assert mine.max() > 0.99
    _assert_parity(theirs, mine)
    with ours.AblationCAM(model, [model.layer4[-1]]) as cam:
        assert cam._extractor.uses_tail == {"layer4.1": True} and cam.batch_size == 32
    # issue 13: these now run pytorch-grad-cam's exact procedure (parity in tests/test_gradcam_new.py)
    with pytest.raises(ValueError, match="ratio_channels_to_ablate"):
        ours.AblationCAM(model, [model.layer4[-1]], ratio_channels_to_ablate=1.5)
    ours.AblationCAM(model, [model.layer4[-1]], ratio_channels_to_ablate=0.5).release()
    ours.AblationCAM(model, [model.layer4[-1]], reshape_transform=lambda t: t).release()


def test_float64_model():
    torch.manual_seed(7)
    model = SmallCNN().double().eval()
    x = torch.randn(3, 3, 25, 17, dtype=torch.float64)
    for name in ("GradCAMPlusPlus", "XGradCAM", "EigenCAM"):
        _assert_parity(*_both(name, model, [model.features[4]], x))


def test_other_classifier_targets():
    torch.manual_seed(8)
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 20, 20)
    targets = lambda t: [t.ClassifierOutputSoftmaxTarget(c) for c in (3, 0, 3)]  # noqa: E731
    _assert_parity(*_both("GradCAM", model, [model.features[4]], x, targets))


@pytest.mark.parametrize("target_name", ["BinaryClassifierOutputTarget", "RawScoresOutputTarget"])
def test_single_logit_targets(target_name):
    torch.manual_seed(9)
    model = SmallCNN(num_classes=1).eval()
    x = torch.randn(3, 3, 20, 20)
    if target_name == "BinaryClassifierOutputTarget":
        targets = lambda t: [t.BinaryClassifierOutputTarget(c) for c in (0, 1, 1)]  # noqa: E731
    else:
        targets = lambda t: [t.RawScoresOutputTarget()] * 3  # noqa: E731
    _assert_parity(*_both("GradCAM", model, [model.features[4]], x, targets))


def test_target_values_match():
    torch.manual_seed(10)
    one, batch = torch.randn(10), torch.randn(4, 10)
    mask = (np.random.default_rng(0).random((5, 6)) > 0.5).astype(np.float32)
    seg = torch.randn(3, 5, 6)
    for name, args in [
        ("ClassifierOutputTarget", (3,)),
        ("ClassifierOutputSoftmaxTarget", (3,)),
        ("BinaryClassifierOutputTarget", (0,)),
        ("SoftmaxOutputTarget", ()),
        ("RawScoresOutputTarget", ()),
    ]:
        for out in (one, batch):
            torch.testing.assert_close(getattr(our_targets, name)(*args)(out), getattr(pgc_targets, name)(*args)(out))
    torch.testing.assert_close(
        our_targets.SemanticSegmentationTarget(1, mask)(seg), pgc_targets.SemanticSegmentationTarget(1, mask)(seg)
    )
    detections = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.8]),
    }
    boxes = np.array([[1.0, 1, 10, 10], [5, 5, 19, 21], [30, 30, 40, 40]])
    for labels in ([1, 2, 1], [2, 2, 2]):
        torch.testing.assert_close(
            our_targets.FasterRCNNBoxScoreTarget(labels, boxes)(detections),
            pgc_targets.FasterRCNNBoxScoreTarget(labels, boxes)(detections),
        )
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
    assert our_targets.FasterRCNNBoxScoreTarget([1], boxes)(empty).item() == 0


def test_image_utils_match():
    rng = np.random.default_rng(0)
    img = rng.random((13, 17, 3)).astype(np.float32)
    mask = rng.random((13, 17)).astype(np.float32)
    for kw in ({}, {"use_rgb": True, "image_weight": 0.3}):
        np.testing.assert_array_equal(
            our_image.show_cam_on_image(img, mask, **kw), pgc_image.show_cam_on_image(img, mask, **kw)
        )
    for arr in (img, (img * 255).astype(np.uint8)):
        kw = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
        torch.testing.assert_close(our_image.preprocess_image(arr, **kw), pgc_image.preprocess_image(arr, **kw))
    grad = rng.standard_normal((9, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(our_image.deprocess_image(grad), pgc_image.deprocess_image(grad))
    with pytest.raises(ValueError, match="img"):
        our_image.show_cam_on_image(img * 255, mask)
    with pytest.raises(ValueError, match="image_weight"):
        our_image.show_cam_on_image(img, mask, image_weight=1.5)


def test_reshape_transforms_match():
    torch.manual_seed(11)
    vit, swin = torch.randn(2, 1 + 14 * 14, 8), torch.randn(2, 49, 8)
    torch.testing.assert_close(our_reshape.vit_reshape_transform(vit), pgc_reshape.vit_reshape_transform(vit))
    torch.testing.assert_close(our_reshape.swinT_reshape_transform(swin), pgc_reshape.swinT_reshape_transform(swin))
    fpn = {"0": torch.randn(1, 4, 8, 8), "pool": torch.randn(1, 4, 2, 2)}
    torch.testing.assert_close(
        our_reshape.fasterrcnn_reshape_transform(fpn), pgc_reshape.fasterrcnn_reshape_transform(fpn)
    )
    with pytest.raises(ValueError, match="height"):
        our_reshape.vit_reshape_transform(torch.randn(2, 50, 8))


class _TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.block = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16), nn.GELU())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        out = self.block(tokens)
        return self.head(out[:, 0] + out[:, 1:].mean(1))


def test_vit_reshape_parity():
    torch.manual_seed(12)
    model = _TinyViT().eval()
    x = torch.randn(2, 3, 24, 24)
    reshape = lambda t: our_reshape.vit_reshape_transform(t, 6, 6)  # noqa: E731
    for name in ("GradCAM", "EigenCAM"):
        with getattr(pgc, name)(model, [model.block], reshape_transform=reshape) as cam:
            theirs = cam(x, None)
        with getattr(ours, name)(model, [model.block], reshape_transform=reshape) as cam:
            mine = cam(x)
        _assert_parity(theirs, mine)


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("name", ["GradCAM", "ScoreCAM", "EigenCAM"])
def test_state_restored(name):
    torch.manual_seed(13)
    model = SmallCNN().train()
    model.fc.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(2, 3, 16, 16)
    with getattr(ours, name)(model, [model.features[4]]) as cam:
        cam(x)
        assert cam.outputs.shape == (2, 10)
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert not x.requires_grad and torch.is_grad_enabled()
        assert all(a is None for a in cam._extractor.hook_a)  # nothing kept between calls
        with pytest.raises(ValueError, match="targets"):
            cam(x, [our_targets.ClassifierOutputTarget(1)])  # a failing call restores the state too
        assert model.training
    assert _hook_count(model) == 0


def test_frozen_model_and_no_grad_context():
    torch.manual_seed(14)
    model = SmallCNN().eval().requires_grad_(False)
    x = torch.randn(2, 3, 16, 16)
    with pgc.GradCAM(model, [model.features[4]]) as cam:
        pass
    with ours.GradCAM(model, [model.features[4]]) as cam, torch.no_grad():
        maps = cam(x)
    assert maps.shape == (2, 16, 16) and maps.max() > 0.99


def test_errors():
    model = SmallCNN().eval()
    with pytest.raises(TypeError, match="target_layers"):
        ours.GradCAM(model, model.features[4])
    with pytest.raises(TypeError, match=r"nn\.Module"):
        ours.GradCAM(model, ["features.4"])
    with pytest.raises(ValueError, match="submodule"):
        ours.GradCAM(model, [nn.Conv2d(1, 1, 1)])
    with ours.GradCAM(model, [model.features[4]]) as cam:
        with pytest.raises(TypeError, match="input_tensor"):
            cam(np.zeros((1, 3, 8, 8)))
        with pytest.raises(ValueError, match="unsqueeze"):
            cam(torch.zeros(3, 8, 8))
        with pytest.raises(TypeError, match="callables"):
            cam(torch.zeros(1, 3, 8, 8), [3])
    seg = TinySeg().eval()
    with ours.GradCAM(seg, [seg.body[2]]) as cam, pytest.raises(ValueError, match="SemanticSegmentationTarget"):
        cam(torch.zeros(1, 3, 8, 8))
    with ours.ScoreCAM(model, [model.features[4]]) as cam:
        assert cam.batch_size == 16
        with pytest.raises(ValueError, match="batch_size"):
            cam.batch_size = 0


def test_scorecam_masked_forwards_on_the_private_copy_keep_gradcams_maps():
    """float32 ResNet with BN statistics: the masked forwards run on the BN-folded channels-last copy."""
    torch.manual_seed(4)
    model = random_batch_norm(torchvision.models.resnet18(num_classes=10), 0.5).eval()
    x = torch.rand(2, 3, 40, 48)
    targets = [pgc_targets.ClassifierOutputTarget(3), pgc_targets.ClassifierOutputTarget(7)]
    theirs = pgc.ScoreCAM(model, [model.layer4])
    theirs.batch_size = 256
    want = theirs(x, targets)
    cam = ours.ScoreCAM(model, [model.layer4])
    cam.batch_size = 256
    got = cam(x, [our_targets.ClassifierOutputTarget(3), our_targets.ClassifierOutputTarget(7)])
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert cam._extractor._scorer._copy is not None


@pytest.mark.parametrize("name", ["EigenCAM", "FEM", "KPCA_CAM"])
@pytest.mark.parametrize("in_place", [False, True])
def test_class_agnostic_methods_on_a_segmentation_output_without_targets(name, in_place):
    """grad-cam's gradient-free class-agnostic methods explain a (N, K, H, W) output with targets=None (its unused
    argmax does not fail); the class-based ones keep the clear error asking for targets."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=in_place), nn.Conv2d(8, 4, 1)
    ).eval()
    layer = model[1]  # with ReLU(inplace=True) after it, grad-cam's hooks see its modified output
    x = torch.rand(2, 3, 13, 11)
    want = getattr(pgc, name)(model, [layer])(x, None)
    np.testing.assert_allclose(getattr(ours, name)(model, [layer])(x, None), want, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="needs an \\(N, K\\) output"):
        ours.ScoreCAM(model, [layer])(x, None)
