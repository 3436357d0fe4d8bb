"""explain() / PredictionExplanation: parity with TorchCAM 0.5.0 (fields, maps, saved files), errors, model state."""

import json

import numpy as np
import pytest
import torch
from conftest import SmallCNN
from PIL import Image

TE = pytest.importorskip("torchcam.explain")
T = pytest.importorskip("torchcam.methods")

from pycam_fast.compat.torchcam import explain as PE  # noqa: E402
from pycam_fast.compat.torchcam import methods as P  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest)


def _model():
    torch.manual_seed(4)
    return SmallCNN(num_classes=5).double().eval()


MODEL = _model()
NAMES = ["a", "b", "c", "d", "e"]


def _image(w=23, h=17):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("GradCAM", {"target_layer": "features"}),
        ("LayerCAM", {"target_layer": ["features.1", "features.5"]}),
        ("GradCAMpp", {"target_layer": "features.3", "expected": "other"}),
        ("ScoreCAM", {"target_layer": "features.5", "method_kwargs": {"batch_size": 4}, "expected": "same"}),
    ],
)
def test_explain_parity_and_save(method, kwargs, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 17, 23, dtype=torch.float64)
    kwargs = dict(kwargs)
    expected = kwargs.pop("expected", None)
    predicted = int(MODEL(x).argmax())
    expected_idx = {None: None, "same": predicted, "other": (predicted + 2) % 5}[expected]
    common = {"expected_class_idx": expected_idx, "class_names": NAMES, **kwargs}
    ours = PE.explain(MODEL, x, method=getattr(P, method), **common)
    theirs = TE.explain(MODEL, x, method=getattr(T, method), **common)
    for field in (
        "predicted_class_idx",
        "expected_class_idx",
        "method",
        "target_layers",
        "model",
        "input_shape",
        "class_names",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-12, rtol=0)
    assert sorted(ours.cams) == sorted(theirs.cams)
    for cls, maps in ours.cams.items():
        assert len(maps) == len(theirs.cams[cls])
        for a, b in zip(maps, theirs.cams[cls], strict=True):
            assert a.dtype == b.dtype == torch.float32 and a.device.type == "cpu"
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert set(ours.versions) >= {"python", "torch", "torchcam"} and ours.versions["torchcam"] == "0.5.0"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in MODEL.modules())

    image = _image()
    dir_ours, dir_theirs = ours.save(tmp_path / "ours", image, alpha=0.4), theirs.save(tmp_path / "theirs", image, 0.4)
    files = sorted(p.name for p in dir_ours.iterdir())
    assert files == sorted(p.name for p in dir_theirs.iterdir())
    manifest_ours = json.loads((dir_ours / "manifest.json").read_text())
    manifest_theirs = json.loads((dir_theirs / "manifest.json").read_text())
    assert manifest_ours.pop("versions")["torchcam"] == manifest_theirs.pop("versions")["torchcam"]
    assert manifest_ours == manifest_theirs
    for name in files:
        if name.endswith(".npy"):
            np.testing.assert_allclose(np.load(dir_ours / name), np.load(dir_theirs / name), atol=1e-6, rtol=0)
        elif name.endswith(".png"):
            a, b = (np.asarray(Image.open(d / name), dtype=np.int16) for d in (dir_ours, dir_theirs))
            assert a.shape == b.shape and np.abs(a - b).max() <= 1


def test_explain_automatic_layer_float32():
    model = _model().float()
    x = torch.randn(1, 3, 19, 13)
    ours, theirs = PE.explain(model, x), TE.explain(model, x)
    assert ours.target_layers == theirs.target_layers == ("features",)
    torch.testing.assert_close(
        ours.cams[ours.predicted_class_idx][0], theirs.cams[theirs.predicted_class_idx][0], atol=1e-5, rtol=0
    )


def test_save_refuses_existing_directory_and_bad_image(tmp_path):
    result = PE.explain(MODEL, torch.randn(1, 3, 9, 9, dtype=torch.float64))
    with pytest.raises(FileExistsError, match="already exists"):
        result.save(tmp_path, _image())
    with pytest.raises(TypeError, match="PIL image"):
        result.save(tmp_path / "new", np.zeros((3, 3)))
    assert not (tmp_path / "new").exists()
    assert isinstance(result, PE.PredictionExplanation) and result.expected_class_idx is None
    with pytest.raises(AttributeError):
        result.method = "x"  # frozen


def test_explain_errors_and_state():
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    for p in MODEL.parameters():
        p.grad = torch.ones_like(p)
    try:
        PE.explain(MODEL, x, target_layer="features.5")
        assert all(torch.equal(p.grad, torch.ones_like(p)) for p in MODEL.parameters())
    finally:
        for p in MODEL.parameters():
            p.grad = None
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        PE.explain(MODEL, x)
    with pytest.raises(ValueError, match="shape"):
        PE.explain(MODEL, x.repeat(2, 1, 1, 1))
    with pytest.raises(ValueError, match="floating-point"):
        PE.explain(MODEL, x.long())
    with pytest.raises(TypeError, match="extractor class"):
        PE.explain(MODEL, x, method=torch.nn.Linear)
    with pytest.raises(ValueError, match="directly"):
        PE.explain(MODEL, x, method_kwargs={"target_layer": "features.5"})
    with pytest.raises(ValueError, match="outside"):
        PE.explain(MODEL, x, expected_class_idx=5)
    with pytest.raises(ValueError, match="length"):
        PE.explain(MODEL, x, class_names=["a"])
    MODEL.train()
    try:
        with pytest.raises(ValueError, match="evaluation mode"):
            PE.explain(MODEL, x)
    finally:
        MODEL.eval()
    assert all(not m._forward_hooks for m in MODEL.modules())
