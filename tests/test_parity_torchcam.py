"""Parity with TorchCAM 0.5.0: compat classes (all nine, quirks included) and the documented methods."""

import pytest
import torch
import torchvision
from conftest import SmallCNN, random_batch_norm

torchcam_methods = pytest.importorskip("torchcam.methods")

from pycam_fast import methods  # noqa: E402
from pycam_fast.compat import torchcam as compat  # noqa: E402

TOL = 1e-6  # float64, normalised maps
GRADIENT = ["GradCAM", "GradCAMpp", "SmoothGradCAMpp", "XGradCAM", "LayerCAM"]
SCORE = ["ScoreCAM", "SSCAM", "ISCAM"]
ALL = ["CAM", *GRADIENT, *SCORE]
# Methods whose documented formula is also what TorchCAM computes
SAME_MATH = ["CAM", "GradCAM", "XGradCAM", "LayerCAM", *SCORE]

FAST_KW = {"SSCAM": {"num_samples": 3}, "ISCAM": {"num_samples": 3}, "SmoothGradCAMpp": {"num_samples": 3}}


def _run(lib, name, model, x, layer, call_kw, seed=7, both_norms=False, **kw):
    """Build the extractor, forward, and compute the CAMs with a fixed RNG state for the noisy methods.

    With ``both_norms``, one forward serves two calls (``retain_graph=True`` then normalised): raw + normalised maps.
    """
    extractor = getattr(lib, name)(model, layer, input_shape=tuple(x.shape[1:]), **{**FAST_KW.get(name, {}), **kw})
    try:
        scores = model(x)
        torch.manual_seed(seed)
        if not both_norms:
            return extractor(scores=scores, **call_kw)
        raw = extractor(scores=scores, normalized=False, retain_graph=True, **call_kw)
        torch.manual_seed(seed)
        return raw + extractor(scores=scores, normalized=True, **call_kw)
    finally:
        extractor.remove_hooks()


def _assert_same(ours, theirs, tol=TOL):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=tol, rtol=0)


def _models():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10).double().eval()
    shufflenet = torchvision.models.shufflenet_v2_x0_5(num_classes=10).double().eval()
    return {
        "resnet18": (resnet, ["layer4", "layer3"], (3, 96, 96)),
        "shufflenet_v2": (shufflenet, ["conv5", "stage3"], (3, 96, 96)),
    }


MODELS = _models()


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("name", ["CAM", *GRADIENT])
@pytest.mark.parametrize("batch", [1, 3])
def test_gradient_and_cam_parity(arch, name, batch):
    model, layers, shape = MODELS[arch]
    torch.manual_seed(batch)
    x = torch.rand(batch, *shape, dtype=torch.float64)
    layer = layers[0] if name == "CAM" else layers
    call = {"class_idx": 3 if batch == 1 else [1, 4, 9]}
    both = name != "CAM"
    theirs = _run(torchcam_methods, name, model, x, layer, call, both_norms=both)
    _assert_same(_run(compat, name, model, x, layer, call, both_norms=both), theirs)
    if name in SAME_MATH:
        _assert_same(_run(methods, name, model, x, layer, call, both_norms=both), theirs)


@pytest.mark.parametrize("name", SCORE)
@pytest.mark.parametrize("batch", [1, 3])
def test_score_family_parity(name, batch):
    torch.manual_seed(1)
    model = SmallCNN().double().eval()
    x = torch.rand(batch, 3, 13, 11, dtype=torch.float64)
    class_idx = 2 if batch == 1 else [0, 5, 2]
    call = {"class_idx": class_idx}
    theirs = _run(torchcam_methods, name, model, x, ["features.4", "features.1"], call, batch_size=7)
    for lib in (compat, methods):
        ours = _run(lib, name, model, x, ["features.4", "features.1"], call, batch_size=7)
        _assert_same(ours, theirs)


@pytest.mark.parametrize("name", [*GRADIENT, *SCORE])
def test_targets_parity(name):
    torch.manual_seed(2)
    model = SmallCNN().double().eval()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    targets = [lambda out: out[3] - out[1], lambda out: out.softmax(-1)[7]]
    call = {"targets": targets}
    theirs = _run(torchcam_methods, name, model, x, "features.4", call, **({"batch_size": 5} if name in SCORE else {}))
    ours = _run(compat, name, model, x, "features.4", call, **({"batch_size": 5} if name in SCORE else {}))
    _assert_same(ours, theirs)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dims", [1, 3])
def test_1d_and_3d_models(name, dims):
    if dims == 1 and name in SCORE:
        pytest.skip("TorchCAM 0.5.0 itself fails on 1-D Score-CAM (nearest with align_corners); see test_api")
    torch.manual_seed(3)
    model = SmallCNN(dims=dims).double().eval()
    shape = {1: (3, 17), 3: (3, 4, 9, 7)}[dims]
    x = torch.rand(2, *shape, dtype=torch.float64)
    kw = {"batch_size": 16} if name in SCORE else {}
    call = {"class_idx": [1, 6]}
    theirs = _run(torchcam_methods, name, model, x, "features.4", call, **kw)
    _assert_same(_run(compat, name, model, x, "features.4", call, **kw), theirs)


def test_fuse_cams_parity():
    torch.manual_seed(4)
    cams = [torch.rand(2, 3, 4, dtype=torch.float64), torch.rand(2, 7, 9, dtype=torch.float64)]
    for lib_cls, ref_cls in ((compat.LayerCAM, torchcam_methods.LayerCAM), (compat.GradCAM, torchcam_methods.GradCAM)):
        torch.testing.assert_close(lib_cls.fuse_cams(cams), ref_cls.fuse_cams(cams), atol=TOL, rtol=0)
        torch.testing.assert_close(lib_cls.fuse_cams(cams, (5, 6)), ref_cls.fuse_cams(cams, (5, 6)), atol=TOL, rtol=0)


def test_auto_layer_resolution_matches():
    torch.manual_seed(5)
    model = torchvision.models.resnet18(num_classes=10).eval()
    ours = methods.GradCAM(model, input_shape=(3, 64, 64))
    theirs = torchcam_methods.GradCAM(model, input_shape=(3, 64, 64))
    assert ours.target_names == theirs.target_names == ["layer4"]
    ours.remove_hooks()
    theirs.remove_hooks()


@pytest.mark.parametrize("foreign_hook", [False, True])
def test_score_family_runs_the_masked_forwards_on_the_private_copy(foreign_hook):
    """float32 ResNet with BN statistics: the BN-folded channels-last copy scores like the model (the maps stay
    TorchCAM's to float32 rounding); a model with a hook of its own runs itself (the copy runs no hooks)."""
    torch.manual_seed(3)
    model = random_batch_norm(torchvision.models.resnet18(num_classes=10), 0.5).eval()
    calls = []
    if foreign_hook:
        model.layer1.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(1, 3, 48, 40)
    theirs = _run(torchcam_methods, "ScoreCAM", model, x, "layer4", {"class_idx": 4}, batch_size=128)
    extractor = compat.ScoreCAM(model, "layer4", batch_size=128)
    try:
        calls.clear()
        ours = extractor(4, model(x))
    finally:
        extractor.remove_hooks()
    _assert_same(ours, theirs, tol=1e-5)
    assert (extractor._scorer._copy is None) == foreign_hook
    assert len(calls) == (1 + 4 if foreign_hook else 0)  # the explained forward + 512 masked inputs in 4 chunks
