"""Every import path of TorchCAM 0.5.0's public API exists under ``pycam_fast.compat.torchcam``."""

import importlib
import subprocess
import sys

import pytest
import torchvision

torchcam = pytest.importorskip("torchcam")

PREFIX = "pycam_fast.compat.torchcam"
MODULES = [
    "",
    ".methods",
    ".methods.activation",
    ".methods.gradient",
    ".methods.core",
    ".methods._utils",
    ".metrics",
    ".utils",
    ".explain",
]
PUBLIC = {
    ".methods": [
        "CAM",
        "ScoreCAM",
        "SSCAM",
        "ISCAM",
        "GradCAM",
        "GradCAMpp",
        "SmoothGradCAMpp",
        "XGradCAM",
        "LayerCAM",
        "LeGrad",
        "RefineCAM",
        "FinerCAM",
        "OutputTarget",
    ],
    ".methods.activation": ["CAM", "ISCAM", "SSCAM", "ScoreCAM"],
    ".methods.gradient": [
        "FinerCAM",
        "GradCAM",
        "GradCAMpp",
        "LayerCAM",
        "LeGrad",
        "RefineCAM",
        "SmoothGradCAMpp",
        "XGradCAM",
    ],
    ".methods.core": ["OutputTarget", "_CAM"],
    ".methods._utils": ["locate_candidate_layer"],
    ".metrics": ["ClassificationMetric", "DeletionInsertionMetric"],
    ".utils": ["overlay_mask"],
    ".explain": ["explain", "PredictionExplanation"],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest)


@pytest.mark.parametrize("path", MODULES)
def test_module_exists_and_matches_torchcam_all(path):
    ours = importlib.import_module(PREFIX + path)
    theirs = importlib.import_module("torchcam" + path)
    for name in getattr(theirs, "__all__", ()):
        if name == "version":  # torchcam lists the function it imports as `version`; its API is `__version__`
            continue
        assert hasattr(ours, name), f"{PREFIX}{path} lacks {name}"


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_contract_names(path):
    module = importlib.import_module(PREFIX + path)
    for name in PUBLIC[path]:
        assert getattr(module, name) is not None


def test_from_imports_and_identities():
    from pycam_fast.compat.torchcam import methods
    from pycam_fast.compat.torchcam.methods import gradient
    from pycam_fast.compat.torchcam.methods.activation import ScoreCAM
    from pycam_fast.compat.torchcam.methods.core import _CAM, OutputTarget
    from pycam_fast.compat.torchcam.metrics import ClassificationMetric

    assert methods.ScoreCAM is ScoreCAM and methods.OutputTarget is OutputTarget
    assert gradient.GradCAMpp is methods.GradCAMpp and issubclass(gradient.GradCAMpp, _CAM)
    assert issubclass(methods.LeGrad, _CAM)
    assert callable(ClassificationMetric)


def test_package_attributes_and_legacy_names():
    tc = importlib.import_module(PREFIX)
    assert tc.__version__ == torchcam.__version__ == "0.5.0"
    for sub in ("methods", "metrics", "utils", "explain"):
        assert getattr(tc, sub).__name__ == f"{PREFIX}.{sub}"
    # names importable from the package itself, as in the single-module layout
    from pycam_fast.compat.torchcam import CAM, GradCAMpp, OutputTarget, SmoothGradCAMpp  # noqa: F401

    assert tc.GradCAMpp is tc.methods.GradCAMpp
    with pytest.raises(AttributeError):
        _ = tc.NotAMethod


def test_submodules_are_lazy():
    code = (
        "import sys, pycam_fast.compat.torchcam as tc\n"
        "assert not any(m in sys.modules for m in ('pycam_fast.compat.torchcam.metrics', "
        "'pycam_fast.compat.torchcam.explain')), sorted(m for m in sys.modules if 'torchcam' in m)\n"
        "tc.metrics\n"
        "assert 'pycam_fast.compat.torchcam.metrics' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(("shape", "expected"), [((3, 33, 47), "layer4"), ((3, 20, 20), "layer3")])
def test_locate_candidate_layer_matches(shape, expected):
    from torchcam.methods._utils import locate_candidate_layer as theirs

    from pycam_fast.compat.torchcam.methods._utils import locate_candidate_layer

    model = torchvision.models.resnet18(num_classes=4).eval()
    model.layer2.train()
    assert locate_candidate_layer(model, shape) == theirs(model, shape) == expected
    assert model.layer2.training and not model.layer1.training


def test_overlay_mask_same_pixels():
    import numpy as np
    from PIL import Image
    from torchcam.utils import overlay_mask as theirs

    from pycam_fast.compat.torchcam.utils import overlay_mask

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (13, 29, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.random((5, 7)).astype(np.float32))
    assert np.array_equal(np.asarray(overlay_mask(img, mask, alpha=0.3)), np.asarray(theirs(img, mask, alpha=0.3)))


def test_new_methods_in_pycam_fast_methods():
    import pycam_fast.methods as pm

    for name in ("LeGrad", "RefineCAM", "FinerCAM"):
        assert name in pm.__all__ and getattr(pm, name).__module__ == f"pycam_fast.methods.{name.lower()}"
    assert "legrad" not in [n.lower() for n in pm.method_names()]  # hook-based only: not in the Explainer registry
