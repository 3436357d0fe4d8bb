"""Explainer(methods=[...]): several methods from one explained forward equal separate one-method runs."""

import pytest
import torch
from conftest import SmallCNN
from torch import nn

from pycam_fast import Explainer
from pycam_fast.engine.explainer import shares_forward
from pycam_fast.forward import explained
from pycam_fast.methods import get_method

pytestmark = pytest.mark.usefixtures("one_thread")

GRADIENT = ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcamelementwise"]


class NonLinearHead(nn.Module):
    """A head that is not pool -> flatten -> Linear: gradients come from tail autograd, not the closed form."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = SmallCNN().features
        self.fc1 = nn.Linear(16, 7)
        self.fc2 = nn.Linear(7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(self.body(x).amax(dim=(2, 3)))))


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return (SmallCNN() if kind == "closed" else NonLinearHead()).eval()


@pytest.mark.parametrize("kind", ["closed", "autograd"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 13), (3, 3, 17, 11)])
@pytest.mark.parametrize("output_size", ["input", None])
def test_multi_equals_separate(kind: str, shape: tuple[int, ...], output_size: str | None) -> None:
    model = _model(kind)
    x = torch.randn(*shape)
    methods = [*GRADIENT, "cam"] if kind == "closed" else GRADIENT
    layer = "features.5" if kind == "closed" else "body.5"
    multi = Explainer(model, methods=methods, target_layer=layer, output_size=output_size)
    maps = multi(x)
    assert list(maps) == methods
    for name in methods:
        single = Explainer(model, name, layer, output_size=output_size)
        expected = single(x)
        assert maps[name].shape == expected.shape
        torch.testing.assert_close(maps[name], expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(multi.logits, single.logits, rtol=0, atol=0)
    assert multi.explained_classes == model(x).argmax(1).tolist()


def test_one_forward_for_shared_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    run = explained.ExplainedForward.run

    def counting(self, *args, **kwargs):
        calls.append(kwargs["gradients"])
        return run(self, *args, **kwargs)

    monkeypatch.setattr(explained.ExplainedForward, "run", counting)
    model = _model("autograd")
    Explainer(model, methods=GRADIENT, target_layer="body.5")(torch.randn(2, 3, 9, 9))
    assert calls == [True]


def test_class_idx_and_options_routed() -> None:
    model = _model("closed")
    x = torch.randn(2, 3, 15, 15)
    multi = Explainer(model, methods=["gradcampp", "xgradcam", "gradcam"], eps=1e-3, gradient_filter="deconv")
    maps = multi(x, class_idx=[3, 5])
    routed = [("gradcampp", {"eps": 1e-3}), ("xgradcam", {"eps": 1e-3}), ("gradcam", {"gradient_filter": "deconv"})]
    for name, kwargs in routed:
        expected = Explainer(model, name, **kwargs)(x, class_idx=[3, 5])
        torch.testing.assert_close(maps[name], expected, rtol=0, atol=1e-6)
    assert multi.explained_classes == [3, 5]


def test_separate_kinds_run_alone() -> None:
    """Score-CAM in a list runs its own masked forwards; the map equals the one-method run."""
    model = _model("closed")
    x = torch.randn(2, 3, 8, 10)
    assert not shares_forward(get_method("scorecam")) and shares_forward(get_method("gradcam"))
    maps = Explainer(model, methods=["gradcam", "scorecam"], batch_size=16)(x)
    torch.testing.assert_close(maps["scorecam"], Explainer(model, "scorecam", batch_size=16)(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(maps["gradcam"], Explainer(model, "gradcam")(x), rtol=0, atol=1e-6)


def test_single_method_api_unchanged() -> None:
    model = _model("closed")
    x = torch.randn(2, 3, 9, 9)
    out = Explainer(model, "GradCAM")(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 9, 9)
    one = Explainer(model, methods=["gradcam"])(x)
    assert isinstance(one, dict) and torch.equal(one["gradcam"], out)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": ["gradcam", "GradCAM"]}, ValueError, "more than once"),
        ({"methods": []}, ValueError, "empty"),
        ({"methods": ["gradcam", "nope"]}, ValueError, "unknown `method`"),
        ({"methods": ["gradcam", "layercam"], "eps": 1.0}, TypeError, "none of the methods"),
        ({"method": "gradcam", "methods": ["layercam"]}, ValueError, "either"),
        ({}, ValueError, "pass a `method`"),
    ],
)
def test_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Explainer(_model("closed"), **kwargs)
