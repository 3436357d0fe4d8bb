"""The drop-in CAMs' fast path: private model copy, tail-only and closed-form gradients, fallbacks, no side effects."""

import numpy as np
import pytest
import torch
import torchvision
from conftest import SmallCNN, conv_bn
from torch import nn

from pycam_fast.compat import pytorch_grad_cam as ours
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as our_targets

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402

TOL = 1e-5
BENCHMARKED = ["GradCAM", "GradCAMPlusPlus", "LayerCAM"]
COPY_METHODS = [*BENCHMARKED, "XGradCAM", "HiResCAM", "GradCAMElementWise"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


RESNET = _resnet()


class TinySeg(nn.Module):
    """Fully convolutional net with batchnorm and an (N, K, H, W) output (even H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(3, 8), nn.ReLU(), *conv_bn(8, 12, 2), nn.ReLU())
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        return nn.functional.interpolate(self.head(self.body(x)), scale_factor=2, mode="bilinear")


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial batchnorm statistics and affine parameters (folding then really changes the arithmetic)."""
    gen = torch.Generator().manual_seed(123)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    return model


def _run(lib, name, model, layers, x, targets=None, **kwargs):
    """(maps, cam) of one call; the CAM is released on return."""
    call_kw = {k: kwargs.pop(k) for k in ("aug_smooth", "eigen_smooth") if k in kwargs}
    with getattr(lib, name)(model, layers, **kwargs) as cam:
        maps = cam(x, targets, **call_kw)
    return maps, cam


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(a, b, atol=tol, rtol=0)


# -- numbers -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", COPY_METHODS)
def test_closed_form_on_copy_matches_exact_and_gradcam(name, batch):
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 64, 56)
    layers = [RESNET.layer4[-1]]
    for targets in (None, [our_targets.ClassifierOutputTarget(c) for c in (7, 2, 9)[:batch]]):
        mine, cam = _run(ours, name, RESNET, layers, x, targets)
        assert (cam.last_path, cam.last_model, cam.fallback_reason) == ("closed_form", "copy", None)
        assert cam.outputs.shape == (batch, 10) and not cam.outputs.requires_grad
        exact, cam_exact = _run(ours, name, RESNET, layers, x, targets, fast=False)
        assert cam_exact.last_path == "exact"
        pgc_t = None if targets is None else [pgc_targets.ClassifierOutputTarget(t.category) for t in targets]
        theirs, _ = _run(pgc, name, RESNET, layers, x, pgc_t)
        assert mine.dtype == np.float32 and mine.shape == theirs.shape and mine.max() > 0.99
        _close(mine, exact)
        _close(mine, theirs)
        torch.testing.assert_close(cam.outputs, RESNET(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", BENCHMARKED)
def test_tail_autograd_on_copy_two_layers_and_softmax(name, batch):
    torch.manual_seed(10 + batch)
    x = torch.randn(batch, 3, 64, 56)
    cases = [  # (layers, our targets, their targets)
        ([RESNET.layer4[-1], RESNET.layer3[-1]], None, None),
        (
            [RESNET.layer4[-1]],
            [our_targets.ClassifierOutputSoftmaxTarget(c) for c in (3, 0, 5)[:batch]],
            [pgc_targets.ClassifierOutputSoftmaxTarget(c) for c in (3, 0, 5)[:batch]],
        ),
        (
            [RESNET.layer4[-1], RESNET.layer3[-1]],
            [our_targets.ClassifierOutputTarget(c) for c in (1, 4, 8)[:batch]],
            [pgc_targets.ClassifierOutputTarget(c) for c in (1, 4, 8)[:batch]],
        ),
    ]
    for layers, targets, pgc_t in cases:
        mine, cam = _run(ours, name, RESNET, layers, x, targets)
        assert (cam.last_path, cam.last_model) == ("tail_autograd", "copy")
        exact, _ = _run(ours, name, RESNET, layers, x, targets, fast=False)
        theirs, _ = _run(pgc, name, RESNET, layers, x, pgc_t)
        _close(mine, exact)
        _close(mine, theirs)


def test_closed_form_equals_autograd_on_the_same_copy():
    """The closed form and tail autograd on the very same private copy (only the gradients' origin differs)."""
    torch.manual_seed(20)
    x = torch.randn(3, 3, 64, 64)
    classes = (2, 6, 9)
    with ours.HiResCAM(RESNET, [RESNET.layer4[-1]]) as cam:  # HiRes-CAM keeps the gradients element-wise
        closed = cam(x, [our_targets.ClassifierOutputTarget(c) for c in classes])
        assert cam.last_path == "closed_form"
        autograd = cam(x, [lambda out, c=c: out[c] for c in classes])  # same score, not recognised as linear
        assert cam.last_path == "tail_autograd" and cam.last_model == "copy"
    np.testing.assert_allclose(closed, autograd, atol=1e-6, rtol=0)
    wrong, _ = _run(ours, "HiResCAM", RESNET, [RESNET.layer4[-1]], x, [our_targets.ClassifierOutputTarget(0)] * 3)
    assert np.abs(wrong - closed).max() > 0.1  # the comparison can tell classes apart


def test_gradcam_package_targets_take_the_closed_form():
    torch.manual_seed(21)
    x = torch.randn(2, 3, 64, 64)
    targets = [pgc_targets.ClassifierOutputTarget(3), pgc_targets.ClassifierOutputTarget(5)]
    mine, cam = _run(ours, "GradCAM", RESNET, [RESNET.layer4[-1]], x, targets)
    assert cam.last_path == "closed_form"
    _close(mine, _run(pgc, "GradCAM", RESNET, [RESNET.layer4[-1]], x, targets)[0])


@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "LayerCAM", "HiResCAM"])
def test_segmentation_target_on_copy(name):
    torch.manual_seed(22)
    model = _randomise_bn(TinySeg()).eval()
    x = torch.randn(3, 3, 22, 28)
    masks = [(torch.rand(22, 28) > 0.5).numpy().astype(np.float32) for _ in range(3)]
    layers = [model.body[5], model.body[2]]
    runs = []
    for lib, lib_targets in ((ours, our_targets), (pgc, pgc_targets)):
        targets = [lib_targets.SemanticSegmentationTarget(c, m) for c, m in zip((0, 2, 3), masks, strict=True)]
        runs.append(_run(lib, name, model, layers, x, targets))
    (mine, cam), (theirs, _) = runs
    assert (cam.last_path, cam.last_model) == ("tail_autograd", "copy")
    _close(mine, theirs)


def test_target_conv_before_batchnorm_is_not_folded():
    """A target conv followed by a batchnorm: the copy must keep the conv's own output (folding would change it)."""
    torch.manual_seed(23)
    model = _randomise_bn(
        nn.Sequential(
            *conv_bn(3, 8),
            nn.ReLU(),
            *conv_bn(8, 16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 5),
        )
    ).eval()
    x = torch.randn(3, 3, 17, 19)
    for index in (3, 4):  # the conv (its pair is kept) and its batchnorm (an identity after folding: same output)
        mine, cam = _run(ours, "GradCAMPlusPlus", model, [model[index]], x)
        assert cam.last_model == "copy"
        _close(mine, _run(pgc, "GradCAMPlusPlus", model, [model[index]], x, None)[0])
        folded = cam._fast_forward.held_copy
        assert isinstance(folded[4], nn.BatchNorm2d if index == 3 else nn.Identity)
        assert isinstance(folded[1], nn.Identity)  # the other pair is folded


@pytest.mark.parametrize("name", ["EigenCAM", "EigenGradCAM", "FEM"])
def test_sensitive_maps_keep_the_model_arithmetic(name):
    torch.manual_seed(24)
    x = torch.randn(3, 3, 41, 47)
    layers = [RESNET.layer4[-1], RESNET.layer3[-1]]
    mine, cam = _run(ours, name, RESNET, layers, x)
    assert cam.last_model == "model" and "optimized_copy" in cam.fallback_reason
    assert cam.last_path == ("no_grad" if name != "EigenGradCAM" else "tail_autograd")
    exact, _ = _run(ours, name, RESNET, layers, x, fast=False)
    np.testing.assert_array_equal(mine, exact)
    with getattr(ours, name)(RESNET, layers) as cam:
        cam.optimized_copy = True  # opt-in
        _close(cam(x), exact, tol=1e-4)
        assert cam.last_model == "copy"


def test_eigen_smooth_runs_the_model():
    torch.manual_seed(25)
    x = torch.randn(3, 3, 40, 36)
    targets = [our_targets.ClassifierOutputTarget(c) for c in (1, 4, 9)]
    layers = [RESNET.layer4[-1], RESNET.layer3[-1]]
    with ours.LayerCAM(RESNET, layers) as cam:
        mine = cam(x, targets, eigen_smooth=True)
        assert cam.last_model == "model" and "eigen_smooth" in cam.fallback_reason
        cam(x, targets)
        assert cam.last_model == "copy"
    np.testing.assert_array_equal(
        mine, _run(ours, "LayerCAM", RESNET, layers, x, targets, fast=False, eigen_smooth=True)[0]
    )


def test_aug_smooth_on_copy():
    torch.manual_seed(26)
    x = torch.randn(1, 3, 40, 44)
    mine, cam = _run(ours, "GradCAM", RESNET, [RESNET.layer4[-1]], x, aug_smooth=True)
    assert cam.last_model == "copy"
    _close(mine, _run(pgc, "GradCAM", RESNET, [RESNET.layer4[-1]], x, None, aug_smooth=True)[0])


# -- fallbacks -----------------------------------------------------------------------------------------------------
def test_training_mode_runs_the_model_itself():
    torch.manual_seed(27)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10)).train()
    model.layer2.eval()  # mixed flags must be restored as they were
    flags = [m.training for m in model.modules()]
    x = torch.randn(2, 3, 48, 48)
    with ours.GradCAM(model, [model.layer4[-1]]) as cam:
        mine = cam(x)
        assert (cam.last_path, cam.last_model) == ("closed_form", "model")
        assert "training mode" in cam.fallback_reason and cam._fast_forward.held_copy is None  # no copy taken
    assert [m.training for m in model.modules()] == flags
    exact, _ = _run(ours, "GradCAM", model, [model.layer4[-1]], x, fast=False)
    np.testing.assert_allclose(mine, exact, atol=1e-6, rtol=0)
    model.eval()
    _close(mine, _run(pgc, "GradCAM", model, [model.layer4[-1]], x, None)[0])


def test_exact_path_cases():
    torch.manual_seed(28)
    x = torch.randn(2, 3, 32, 32)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    class Untraceable(SmallCNN):
        def forward(self, x):
            if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace it
                return super().forward(x)
            return x

    twice = Twice().eval()
    untraceable = Untraceable().eval()
    with ours.GradCAM(twice, [twice.conv]) as cam:  # (grad-cam differs here: it mixes both calls' tensors)
        cam(x)
        assert cam.last_path == "exact" and "called 2 times" in cam.fallback_reason
    cases = [  # (model, layers, kwargs, reason fragment)
        (untraceable, [untraceable.features[4]], {}, "not traceable"),
        (RESNET, [RESNET.layer4[-1].conv1], {}, "skip connection"),
        (RESNET, [RESNET.layer4[-1]], {"fast": False}, "fast=False"),
        (RESNET, [RESNET.layer4[-1]], {"reshape_transform": lambda t: t}, "reshape_transform"),
    ]
    for model, layers, kwargs, fragment in cases:
        with ours.GradCAM(model, layers, **kwargs) as cam:
            mine = cam(x)
            assert cam.last_path == "exact" and fragment in cam.fallback_reason, (fragment, cam.fallback_reason)
        theirs, _ = _run(pgc, "GradCAM", model, layers, x, None, **{k: v for k, v in kwargs.items() if k != "fast"})
        assert mine.shape == (2, 32, 32)
        _close(mine, theirs)
    small = SmallCNN().eval()
    for name in ("ScoreCAM", "AblationCAM"):
        with getattr(ours, name)(small, [small.features[4]]) as cam:
            cam.batch_size = 32
            cam(torch.randn(1, 3, 12, 12))
            assert cam.last_path == "exact" and "runs the user's model" in cam.fallback_reason


def test_foreign_hooks_run_on_the_model_but_cam_observers_do_not_count():
    torch.manual_seed(29)
    x = torch.randn(2, 3, 48, 48)
    model = _resnet()
    seen = []
    handle = model.layer3.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with ours.GradCAM(model, [model.layer4[-1]]) as cam:
            cam(x)
            assert cam.last_model == "model" and "hooks" in cam.fallback_reason and "layer3" in cam.fallback_reason
            assert len(seen) == 1  # the user's hook ran, as on the exact path
    finally:
        handle.remove()
    with (
        pgc.GradCAM(model, [model.layer4[-1]]),
        ours.LayerCAM(model, [model.layer4[-1]]) as other,
        ours.GradCAM(model, [model.layer4[-1]]) as cam,
    ):  # other CAM objects' recording hooks
        other(x)
        cam(x)
        assert cam.last_model == "copy"
        assert all(not m._forward_hooks for m in cam._fast_forward.held_copy.modules())


# -- no side effects -----------------------------------------------------------------------------------------------
def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": _hook_count(model),
        "contiguous": [p.is_contiguous() for p in model.parameters()],
        "modules": [type(m) for m in model.modules()],
        "ids": [id(p) for p in model.parameters()],
    }


def _assert_unchanged(model, before):
    after = _snapshot(model)
    for key in ("requires_grad", "training", "hooks", "contiguous", "modules", "ids"):
        assert after[key] == before[key], key
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), name
    assert all(p.grad is None for p in model.parameters())


def test_model_not_mutated_and_no_hook_leak():
    model = _randomise_bn(_resnet())
    model.fc.requires_grad_(False)
    model.eval()
    before = _snapshot(model)
    x = torch.randn(2, 3, 48, 48)
    softmax = [our_targets.ClassifierOutputSoftmaxTarget(1)] * 2
    for name in [*COPY_METHODS, "EigenCAM", "EigenGradCAM", "FEM"]:
        with getattr(ours, name)(model, [model.layer4[-1], model.layer3[-1]]) as cam:
            hooks_with_cam = _hook_count(model)
            for targets in (None, softmax, None):
                with torch.no_grad():  # a caller's no_grad must not break the gradient methods
                    cam(x, targets)
                assert _hook_count(model) == hooks_with_cam  # repeated calls add no hooks
            assert torch.is_grad_enabled()
            copy = cam._fast_forward.held_copy
            if copy is not None:
                assert _hook_count(copy) == 0
                assert not any(p.requires_grad for p in copy.parameters())
        _assert_unchanged(model, before)


def test_copy_is_reused_and_rebuilt_when_the_weights_change():
    model = _resnet()
    x = torch.randn(2, 3, 48, 48)
    targets = [our_targets.ClassifierOutputTarget(3)] * 2
    with ours.GradCAM(model, [model.layer4[-1]]) as cam:
        first = cam(x, targets)
        copy = cam._fast_forward.held_copy
        assert copy is not None
        cam(x, targets)
        assert cam._fast_forward.held_copy is copy  # reused
        with torch.no_grad():
            model.fc.weight.mul_(-1.0)  # an in-place update: the version counter moves
            model.layer4[-1].bn2.running_mean.add_(0.3)
        second = cam(x, targets)
        assert cam._fast_forward.held_copy is not copy
        exact = _run(ours, "GradCAM", model, [model.layer4[-1]], x, targets, fast=False)[0]
        _close(second, exact)
        assert np.abs(second - first).max() > 0.1
        model.load_state_dict(_resnet().state_dict())  # back to the original weights
        _close(cam(x, targets), first)
        model.fc.weight.data.mul_(-1.0)  # .data bypasses the version counter: not detected...
        _close(cam(x, targets), first)
        cam.reset_fast_copy()  # ...until the copy is dropped
        third = cam(x, targets)
        assert np.abs(third - first).max() > 0.1
        _close(third, _run(ours, "GradCAM", model, [model.layer4[-1]], x, targets, fast=False)[0])


def test_volumetric_input_runs_the_model_tail_only():
    torch.manual_seed(30)
    model = SmallCNN(dims=3).eval()
    x = torch.randn(2, 3, 6, 8, 10)
    with ours.GradCAMPlusPlus(model, [model.features[4]]) as cam:
        mine = cam(x)
        assert (cam.last_path, cam.last_model) == ("tail_autograd", "model") and "4-D" in cam.fallback_reason
    exact, _ = _run(ours, "GradCAMPlusPlus", model, [model.features[4]], x, fast=False)
    assert mine.shape == (2, 6, 8, 10) and mine.max() > 0.99
    np.testing.assert_allclose(mine, exact, atol=1e-6, rtol=0)
