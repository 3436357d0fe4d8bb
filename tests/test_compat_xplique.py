"""Xplique-style GradCAM front-end against independent float64 computations of Xplique's documented formulas."""

import pytest
import torch
import torch.nn.functional as F
from conftest import SmallCNN
from torch import nn

from pycam_fast.compat.xplique import GradCAM

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(num_classes=6).double().eval()


def _formula(model, layer, x, weights, variant):
    """alpha_k = mean_ij f(dY/dA^k_ij), L = ReLU(sum_k alpha_k A^k), bilinear to the input size; Y = sum(y * t)."""
    store = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        with torch.enable_grad():
            out = model(x.detach().requires_grad_(True))
    finally:
        handle.remove()
    act = store["a"]
    (grad,) = torch.autograd.grad((out * weights).sum(), act)
    if variant == "guided":
        grad = grad * (grad > 0) * (act > 0)
    elif variant == "deconv":
        grad = grad * (grad > 0)
    alpha = grad.mean(dim=(2, 3))
    cam = torch.relu((alpha[:, :, None, None] * act).sum(1))
    return F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()


def _check(mine, expected):
    assert mine.shape == expected.shape and mine.dtype == expected.dtype and not mine.requires_grad
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(mine, expected, atol=1e-9 * scale, rtol=0)


@pytest.mark.parametrize("variant", ["guided", "deconv", "backward"])
@pytest.mark.parametrize("batch", [1, 5])
def test_formula(cnn, batch, variant):
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 13, 7, dtype=torch.float64)
    with torch.no_grad():
        classes = cnn(x).argmax(1)  # the top class: a map that is not all zero after the ReLU
    onehot = F.one_hot(classes, 6).double()
    expected = _formula(cnn, cnn.features[4], x, onehot, variant)
    for targets in (onehot, classes, classes.tolist(), onehot.numpy()):
        method = GradCAM(cnn, batch_size=2, conv_layer="features.4", variant=variant)
        _check(method.explain(x, targets), expected)
    weights = torch.rand(batch, 6, dtype=torch.float64)  # not one-hot: Y = sum_c y_c t_c
    _check(
        GradCAM(cnn, conv_layer=cnn.features[4], variant=variant).explain(x, weights),
        _formula(cnn, cnn.features[4], x, weights, variant),
    )


def test_variants_differ(cnn):
    torch.manual_seed(7)
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    maps = {
        v: GradCAM(cnn, conv_layer="features.4", variant=v).explain(x, [0, 1, 2, 3])
        for v in ("guided", "deconv", "backward")
    }
    assert not torch.allclose(maps["guided"], maps["backward"])
    assert not torch.allclose(maps["deconv"], maps["backward"])


def test_layer_choice(cnn):
    torch.manual_seed(8)
    x = torch.randn(3, 3, 9, 11, dtype=torch.float64)
    onehot = F.one_hot(torch.tensor([5, 0, 2]), 6).double()
    expected = _formula(cnn, cnn.features, x, onehot, "guided")
    names = [name for name, _ in cnn.named_modules() if name]
    for layer in (None, "features", cnn.features, names.index("features"), names.index("features") - len(names)):
        _check(GradCAM(cnn, conv_layer=layer).explain(x, onehot), expected)


def test_float32_and_modes(cnn):
    model = SmallCNN(num_classes=6)
    model.load_state_dict({k: v.float() for k, v in cnn.state_dict().items()})
    model.train()
    torch.manual_seed(9)
    x = torch.randn(3, 3, 12, 8)
    mine = GradCAM(model, conv_layer="features.4").explain(x, [1, 2, 3])
    assert model.training  # eval during explain, restored after
    expected = _formula(cnn, cnn.features[4], x.double(), F.one_hot(torch.tensor([1, 2, 3]), 6).double(), "guided")
    assert mine.dtype == torch.float32
    torch.testing.assert_close(mine.double(), expected, atol=1e-5 * float(expected.abs().max()), rtol=0)
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_errors(cnn):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="`variant`"):
        GradCAM(cnn, variant="gradient")
    with pytest.raises(ValueError, match="`batch_size`"):
        GradCAM(cnn, batch_size=0)
    with pytest.raises(ValueError, match="`conv_layer`"):
        GradCAM(cnn, conv_layer="features.9")
    with pytest.raises(TypeError, match="`conv_layer`"):
        GradCAM(cnn, conv_layer=2.5)
    with pytest.raises(ValueError, match="`output_layer`"):
        GradCAM(cnn, output_layer="features.9")
    with pytest.raises(ValueError, match="`output_layer` index"):
        GradCAM(cnn, output_layer=99)
    with pytest.raises(ValueError, match="`output_layer`"):
        GradCAM(cnn, output_layer=nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="`output_layer`"):
        GradCAM(cnn, output_layer=1.5)
    with pytest.raises(TypeError, match="`model`"):
        GradCAM(lambda v: v)
    method = GradCAM(cnn, conv_layer="features.4")
    with pytest.raises(ValueError, match="`targets`"):
        method.explain(x, [1, 2, 3])
    with pytest.raises(ValueError, match="`targets`"):
        method.explain(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="`targets`"):
        method.explain(x, torch.rand(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="class_idx"):
        method.explain(x, [1, 6])
    with pytest.raises(TypeError, match="`inputs`"):
        method.explain(x.long(), [1, 2])
    with pytest.raises(ValueError, match="`inputs`"):
        method.explain(x[0, 0], [1, 2])


class SoftmaxNet(nn.Module):
    """A classifier that ends with a softmax, whose logits come from ``fc``, and a module run twice (``act``)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.act = nn.Identity()

    def forward(self, x):
        return torch.softmax(self.act(self.act(self.base(x))), dim=1)


def test_output_layer_selects_the_scores(cnn):
    """Xplique's ``output_layer``: ``y`` is that layer's output (here the logits before the final softmax)."""
    model = SoftmaxNet(cnn).eval()
    torch.manual_seed(10)
    x = torch.randn(3, 3, 11, 9, dtype=torch.float64)
    onehot = F.one_hot(torch.tensor([1, 4, 0]), 6).double()
    on_logits = _formula(cnn, cnn.features[4], x, onehot, "backward")
    for layer in ("base.fc", cnn.fc, [n for n, _ in model.named_modules() if n].index("base.fc")):
        mine = GradCAM(model, layer, conv_layer="base.features.4", variant="backward").explain(x, onehot)
        _check(mine, on_logits)
    on_probs = GradCAM(model, conv_layer="base.features.4", variant="backward").explain(x, onehot)
    assert not torch.allclose(on_probs, on_logits)  # the default y is the model's (softmax) output
    with pytest.raises(ValueError, match="`output_layer` 'act' ran 2 times"):
        GradCAM(model, "act", conv_layer="base.features.4").explain(x, onehot)
    assert not any(m._forward_hooks for m in model.modules())
