"""Captum 0.9 classes of pycam_fast.compat.captum against captum.attr itself (float64, every option and target form)."""

import warnings

import pytest
import torch
from conftest import SmallCNN
from torch import nn

captum_attr = pytest.importorskip("captum.attr")

from pycam_fast.compat import captum as pc  # noqa: E402
from pycam_fast.forward.guided import modified_relu_backward, relu_with_rule, rule_input_gradients  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Setting backward hooks"),
]
TOL = 1e-6  # relative to the largest magnitude of Captum's result


class Add(nn.Module):
    """A layer with two inputs (``attribute_to_layer_input`` then gives a tuple)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class TwoInput(nn.Module):
    """Two image inputs, optional scale and a multi-dim output mode (for tuple targets)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.b = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU())
        self.add = Add()
        self.mix = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 12)

    def forward(self, x, y, scale=1.0, mode="flat"):
        h = self.relu(self.mix(self.add(self.a(x), self.b(y) * scale)))
        out = self.fc(h.mean((2, 3)))
        return out.view(-1, 3, 4) if mode == "3d" else out


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN().double().eval()


@pytest.fixture(scope="module")
def two():
    torch.manual_seed(1)
    return TwoInput().double().eval()


def _x(batch, seed=0, shape=(3, 9, 13)):
    torch.manual_seed(seed)
    return torch.randn(batch, *shape, dtype=torch.float64)


def _assert_same(mine, theirs):
    if isinstance(theirs, (tuple, list)):
        assert type(mine) is type(theirs) and len(mine) == len(theirs)
        for m, t in zip(mine, theirs, strict=True):
            _assert_same(m, t)
        return
    theirs = theirs.detach()
    assert isinstance(mine, torch.Tensor) and mine.shape == theirs.shape and mine.dtype == theirs.dtype
    scale = float(theirs.abs().max()) if theirs.numel() else 0.0
    assert theirs.numel() == 0 or scale > 0
    torch.testing.assert_close(mine, theirs, atol=TOL * scale, rtol=0)


def _targets(batch):
    return [4, [5, 0, 9][:batch], torch.tensor([1, 8, 4][:batch]), torch.tensor(7), (3,), [(2,), (6,), (1,)][:batch]]


# -- LayerGradCam --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [{}, {"relu_attributions": True}, {"attr_dim_summation": False}, {"attribute_to_layer_input": True}],
    ids=["default", "relu", "per_channel", "layer_input"],
)
@pytest.mark.parametrize("batch", [1, 3])
def test_layer_gradcam_cnn(cnn, batch, options):
    x = _x(batch)
    for layer in (cnn.features[2], cnn.features[4]):
        for target in _targets(batch):
            theirs = captum_attr.LayerGradCam(cnn, layer).attribute(x, target, **options)
            _assert_same(pc.LayerGradCam(cnn, layer).attribute(x, target, **options), theirs)


@pytest.mark.parametrize("batch", [1, 2])
def test_layer_gradcam_two_inputs(two, batch):
    x, y = _x(batch, 1, (3, 7, 11)), _x(batch, 2, (2, 7, 11))
    cases = [
        (two.mix, 3, None, {}),
        (two.mix, [1, 5][:batch], 0.5, {"attr_dim_summation": False}),
        (two.add, (2, 3), (2.0, "3d"), {}),  # tuple target into a (N, 3, 4) output, two extra args
        (two.add, [(0, 1), (2, 2)][:batch], (1.0, "3d"), {"attribute_to_layer_input": True}),  # tuple result
        (two.b[0], torch.tensor([11, 0][:batch]), 1.5, {"relu_attributions": True}),
    ]
    for layer, target, extra, options in cases:
        theirs = captum_attr.LayerGradCam(two, layer).attribute((x, y), target, extra, **options)
        mine = pc.LayerGradCam(two, layer).attribute((x, y), target, extra, **options)
        _assert_same(mine, theirs)


def test_layer_gradcam_scalar_output_function(cnn):
    """target=None with one scalar per sample; a plain function as forward_func; grad_kwargs passed on."""
    x = _x(3, 4)

    def forward(inp):
        out = cnn(inp)
        return out[:, 2] - out[:, 5] ** 2

    theirs = captum_attr.LayerGradCam(forward, cnn.features[4]).attribute(x, grad_kwargs={"retain_graph": False})
    mine = pc.LayerGradCam(forward, cnn.features[4]).attribute(x, grad_kwargs={"retain_graph": False})
    assert mine.shape == (3, 1, 5, 7)
    _assert_same(mine, theirs)


def test_layer_gradcam_fast_path_fp32(monkeypatch):
    """An eval model with class targets takes the engine's explained forward; fp32 still matches Captum."""
    torch.manual_seed(5)
    model = SmallCNN().eval()
    x = torch.randn(4, 3, 15, 11)
    calls = []
    original = pc.ExplainedForward.run
    monkeypatch.setattr(pc.ExplainedForward, "run", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    for target in (3, [1, 2, 3, 4]):
        mine = pc.LayerGradCam(model, model.features[4]).attribute(x, target)
        theirs = captum_attr.LayerGradCam(model, model.features[4]).attribute(x, target).detach()
        assert mine.dtype == torch.float32 and not mine.requires_grad
        torch.testing.assert_close(mine, theirs, atol=1e-5 * float(theirs.abs().max()), rtol=0)
    assert len(calls) == 2
    model.train()  # training mode: the general path (Captum does not switch modes either)
    mine = pc.LayerGradCam(model, model.features[4]).attribute(x, 3)
    theirs = captum_attr.LayerGradCam(model, model.features[4]).attribute(x, 3).detach()
    torch.testing.assert_close(mine, theirs, atol=1e-5 * float(theirs.abs().max()), rtol=0)
    assert len(calls) == 2


# -- LayerGradientXActivation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("multiply", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_gradient_x_activation(cnn, two, batch, multiply):
    x = _x(batch, 6)
    for to_input in (False, True):
        for target in _targets(batch)[:3]:
            theirs = captum_attr.LayerGradientXActivation(cnn, cnn.features[2], multiply_by_inputs=multiply).attribute(
                x, target, attribute_to_layer_input=to_input
            )
            ours = pc.LayerGradientXActivation(cnn, cnn.features[2], multiply_by_inputs=multiply)
            assert ours.multiplies_by_inputs is multiply
            _assert_same(ours.attribute(x, target, attribute_to_layer_input=to_input), theirs)
    layers = [cnn.features[0], cnn.features[4]]  # a list of layers: a list of results
    theirs = captum_attr.LayerGradientXActivation(cnn, layers, multiply_by_inputs=multiply).attribute(x, 1)
    _assert_same(pc.LayerGradientXActivation(cnn, layers, multiply_by_inputs=multiply).attribute(x, 1), theirs)
    xy = (_x(batch, 7, (3, 6, 5)), _x(batch, 8, (2, 6, 5)))
    for to_input in (False, True):
        theirs = captum_attr.LayerGradientXActivation(two, two.add, multiply_by_inputs=multiply).attribute(
            xy, (1, 2), (0.7, "3d"), attribute_to_layer_input=to_input
        )
        mine = pc.LayerGradientXActivation(two, two.add, multiply_by_inputs=multiply).attribute(
            xy, (1, 2), (0.7, "3d"), attribute_to_layer_input=to_input
        )
        _assert_same(mine, theirs)


# -- GuidedBackprop / Deconvolution / GuidedGradCam ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["GuidedBackprop", "Deconvolution"])
@pytest.mark.parametrize("batch", [1, 3])
def test_modified_relu_methods(cnn, two, name, batch):
    x = _x(batch, 9)
    for target in _targets(batch):
        _assert_same(getattr(pc, name)(cnn).attribute(x, target), getattr(captum_attr, name)(cnn).attribute(x, target))
    xy = (_x(batch, 10, (3, 5, 6)), _x(batch, 11, (2, 5, 6)))
    for target, extra in ((2, None), ([(0, 3), (2, 1), (1, 1)][:batch], (0.3, "3d"))):
        theirs = getattr(captum_attr, name)(two).attribute(xy, target, extra)
        _assert_same(getattr(pc, name)(two).attribute(xy, target, extra), theirs)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in cnn.modules())


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "area"])
@pytest.mark.parametrize("batch", [1, 2])
def test_guided_gradcam(cnn, two, batch, mode):
    x = _x(batch, 12)
    for to_input in (False, True):
        theirs = captum_attr.GuidedGradCam(cnn, cnn.features[4]).attribute(
            x, [3, 8][:batch], interpolate_mode=mode, attribute_to_layer_input=to_input
        )
        mine = pc.GuidedGradCam(cnn, cnn.features[4]).attribute(
            x, [3, 8][:batch], interpolate_mode=mode, attribute_to_layer_input=to_input
        )
        _assert_same(mine, theirs)
    xy = (_x(batch, 13, (3, 8, 6)), _x(batch, 14, (2, 8, 6)))
    theirs = captum_attr.GuidedGradCam(two, two.mix).attribute(xy, 5, 1.2, interpolate_mode=mode)
    _assert_same(pc.GuidedGradCam(two, two.mix).attribute(xy, 5, 1.2, interpolate_mode=mode), theirs)


def test_guided_gradcam_input_without_spatial_dims():
    """An input the map cannot be resized to gets an empty tensor and a warning, as in Captum."""

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4 + 5, 6)

        def forward(self, x, v):
            return self.fc(torch.cat([self.relu(self.conv(x)).mean((2, 3)), v], 1))

    torch.manual_seed(2)
    model = Mixed().double()
    inputs = (_x(2, 15, (3, 6, 6)), torch.randn(2, 5, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.GuidedGradCam(model, model.conv).attribute(inputs, 1)
    with pytest.warns(UserWarning, match="empty tensor"):
        mine = pc.GuidedGradCam(model, model.conv).attribute(inputs, 1)
    _assert_same(mine, theirs)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic", "area"])
def test_interpolate(mode):
    attr = _x(2, 16, (3, 4, 5))
    for size in ((9, 7), (3, 2), 6):
        theirs = captum_attr.LayerAttribution.interpolate(attr, size, mode)
        _assert_same(pc.LayerAttribution.interpolate(attr, size, mode), theirs)
        _assert_same(pc.LayerGradCam.interpolate(attr, size, interpolate_mode=mode), theirs)


# -- the guided-backprop piece ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_rules(dtype):
    torch.manual_seed(17)
    x = torch.randn(3, 7, 13, dtype=dtype, requires_grad=True)
    g = torch.randn(3, 7, 13, dtype=dtype)
    for rule, expected in (("guided", g * (g > 0) * (x > 0)), ("deconv", g * (g > 0))):
        out = relu_with_rule(x, rule)
        torch.testing.assert_close(out, x.clamp_min(0), atol=0, rtol=0)
        (grad,) = torch.autograd.grad(out, x, g)
        torch.testing.assert_close(grad, expected.detach(), atol=0, rtol=0)
    with pytest.raises(ValueError, match="`rule`"):
        relu_with_rule(x, "backward")


def test_modified_relu_backward_restores_model(cnn):
    cnn.train()
    try:
        x = _x(2, 18)
        inplace = [m.inplace for m in cnn.modules() if isinstance(m, nn.ReLU)]
        with pytest.raises(RuntimeError, match="boom"), modified_relu_backward(cnn, "deconv") as relus:
            assert len(relus) == 3 and all(m._forward_hooks for m in relus)
            raise RuntimeError("boom")
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in cnn.modules())
        with pytest.raises(ValueError, match="selected output has shape"):
            pc.GuidedBackprop(cnn).attribute(x)  # (N, K) output without target
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in cnn.modules())
        assert [m.inplace for m in cnn.modules() if isinstance(m, nn.ReLU)] == inplace
        assert cnn.training and all(p.grad is None for p in cnn.parameters())
        grads = rule_input_gradients(cnn, (x,), lambda out: out[:, 1])
        assert grads[0].shape == x.shape and not x.requires_grad
    finally:
        cnn.eval()


# -- state and errors -------------------------------------------------------------------------------------------------
def test_state_untouched(cnn):
    x = _x(2, 19)
    with torch.no_grad():
        out = pc.LayerGradCam(cnn, cnn.features[2]).attribute(x, 1, attribute_to_layer_input=True)
    assert out.shape == (2, 1, 9, 13) and not out.requires_grad and not x.requires_grad
    assert all(p.grad is None for p in cnn.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in cnn.modules())


def test_errors(cnn, two):
    x = _x(2, 20)
    gc = pc.LayerGradCam(cnn, cnn.features[4])
    with pytest.raises(ValueError, match="`target` list has 3 entries"):
        gc.attribute(x, [1, 2, 3])
    with pytest.raises(TypeError, match="`target`"):
        gc.attribute(x, 1.5)
    with pytest.raises(ValueError, match="pass `target`"):
        gc.attribute(x)
    with pytest.raises(ValueError, match="`target`"):
        gc.attribute(x, (1, 2, 3))
    with pytest.raises(ValueError, match="tensor `target`"):
        gc.attribute(x, torch.tensor([[1, 2]]))
    with pytest.raises(TypeError, match="`inputs`"):
        gc.attribute([x])
    with pytest.raises(TypeError, match="`layer`"):
        pc.LayerGradCam(cnn, "features.4")
    with pytest.raises(TypeError, match="`forward_func`"):
        pc.LayerGradCam(None, cnn.features[4])
    with pytest.raises(ValueError, match="did not run the given `layer`"):
        pc.LayerGradCam(cnn, two.mix).attribute(x, 1)
    with pytest.raises(TypeError, match="`model`"):
        pc.GuidedBackprop(lambda v: v)
    with pytest.raises(TypeError, match="`layer_attribution`"):
        pc.LayerAttribution.interpolate([1.0], (3, 3))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in cnn.modules())
