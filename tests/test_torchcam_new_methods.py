"""LeGrad, RefineCAM and FinerCAM: float64 parity with TorchCAM 0.5.0, errors, and the model's state on exit."""

import pytest
import torch
import torchvision
from conftest import SmallCNN
from torch import nn

T = pytest.importorskip("torchcam.methods")

from pycam_fast import methods  # noqa: E402
from pycam_fast.compat.torchcam import methods as P  # noqa: E402

TOL = 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest)


def _vit(classes=7):
    torch.manual_seed(0)
    return (
        torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=classes
        )
        .double()
        .eval()
    )


def _cnn():
    torch.manual_seed(1)
    return SmallCNN(num_classes=9).double().eval()


VIT, CNN = _vit(), _cnn()
RESNET = torchvision.models.resnet18(num_classes=6).double().eval()


def _same(ours, theirs, tol=TOL):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
        torch.testing.assert_close(a, b, atol=tol, rtol=0)


def _both(build, call, model, x):
    """Run the same extractor of both libraries on the same forward of ``model``."""
    out = []
    for lib in (P, T):
        with build(lib) as extractor:
            scores = model(x)
            out.append(call(extractor, scores))
    return out


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- LeGrad ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layers", [["encoder.layers.encoder_layer_1"], "both", "module"])
@pytest.mark.parametrize("normalized", [True, False])
def test_legrad_parity(batch, layers, normalized):
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
    if layers == "both":
        layers = list(VIT.encoder.layers)
    elif layers == "module":
        layers = VIT.encoder.layers[0]
    idx = 5 if batch == 1 else [0, 6, 2][:batch]
    ours, theirs = _both(lambda lib: lib.LeGrad(VIT, layers), lambda e, s: e(idx, s, normalized=normalized), VIT, x)
    assert ours[0].shape == (batch, 4, 4)
    _same(ours, theirs)
    assert _no_hooks(VIT)


def test_legrad_custom_projection_and_grid():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)

    def project(tokens):  # the [CLS] token through the head
        return VIT.heads(VIT.encoder.ln(tokens[:, 0]))

    ours, theirs = _both(
        lambda lib: lib.LeGrad(VIT, list(VIT.encoder.layers), score_projection=project, grid_shape=(2, 8)),
        lambda e, s: e([1, 3], s),
        VIT,
        x,
    )
    assert ours[0].shape == (2, 2, 8)
    _same(ours, theirs)


def test_legrad_keeps_model_output_and_returns_requested_weights():
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = VIT(x)
    with P.LeGrad(VIT, list(VIT.encoder.layers)):
        out = VIT(x)
        torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
        attention = VIT.encoder.layers[0].self_attention
        tokens = torch.randn(2, 17, 16, dtype=torch.float64)
        _, averaged = attention(tokens, tokens, tokens)  # need_weights=True, averaged by default
        assert averaged.shape == (2, 17, 17)
        _, none = attention(tokens, tokens, tokens, need_weights=False)
        assert none is None
        _, per_head = attention(tokens, tokens, tokens, None, True, None, False)  # positional flags
        assert per_head.shape == (2, 2, 17, 17)
    assert _no_hooks(VIT)
    assert all(p.grad is None for p in VIT.parameters())


def test_legrad_errors():
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least one explicit target block"):
        P.LeGrad(VIT, [])
    with pytest.raises(TypeError, match="prefix_tokens"):
        P.LeGrad(VIT, VIT.encoder.layers[0], prefix_tokens=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        P.LeGrad(VIT, VIT.encoder.layers[0], prefix_tokens=-1)
    with pytest.raises(TypeError, match="grid_shape"):
        P.LeGrad(VIT, VIT.encoder.layers[0], grid_shape=[4, 4])
    with pytest.raises(TypeError, match="self_attention"):
        P.LeGrad(VIT, "encoder.ln")
    assert _no_hooks(VIT)
    with pytest.raises(ValueError, match="score_projection"):
        P.LeGrad(CNN, "features.0")
    with P.LeGrad(VIT, VIT.encoder.layers[1]) as extractor:
        with pytest.raises(AssertionError, match="forwarded"):
            extractor(0)
        with torch.no_grad(), pytest.raises(RuntimeError, match="gradient tracking"):
            VIT(x)
        scores = VIT(x)
        with pytest.raises(ValueError, match="does not support arbitrary output targets"):
            extractor(targets=lambda o: o[0])
        with pytest.raises(ValueError, match="exactly one"):
            extractor()
        with pytest.raises(ValueError, match="Incorrect `class_idx`"):
            extractor(-1)
        with pytest.raises(ValueError, match="length of `class_idx`"):
            extractor([0, 1], scores)
        extractor(0, scores)
        with pytest.raises(RuntimeError):  # graph freed by the first call
            extractor(0, scores)
    with P.LeGrad(VIT, VIT.encoder.layers[1], prefix_tokens=0) as extractor:
        VIT(x)
        with pytest.raises(ValueError, match="square patch grid"):
            extractor(0)
    assert _no_hooks(VIT)


# -- RefineCAM ---------------------------------------------------------------------------------------------------------
REFINE_CASES = [
    (CNN, ["features.1", "features.3", "features.5"], (3, 13, 7)),
    (RESNET, ["layer2", "layer4"], (3, 37, 45)),
]


@pytest.mark.parametrize(
    ("case", "base", "batch"),
    [(0, base, batch) for base in (None, "LayerCAM", "XGradCAM", "GradCAM") for batch in (1, 2)]
    + [(1, None, 2), (1, "LayerCAM", 1)],
)
def test_refinecam_parity(case, base, batch):
    model, layers, shape = REFINE_CASES[case]
    torch.manual_seed(batch)
    x = torch.randn(batch, *shape, dtype=torch.float64)
    idx = 4 if batch == 1 else [1, 5]

    def build(lib):
        kw = {} if base is None else {"base_method": getattr(lib, base)}
        return lib.RefineCAM(model, layers, input_shape=shape, **kw)

    def call(extractor, scores):
        return extractor(idx, scores, retain_graph=True) + extractor(idx, scores, normalized=False)

    ours, theirs = _both(build, call, model, x)
    _same(ours, theirs)
    assert _no_hooks(model)


def test_refinecam_targets_and_target_shape():
    x = torch.randn(2, 3, 15, 11, dtype=torch.float64)
    targets = [lambda o: o[2] - o[0], lambda o: o.max()]
    ours, theirs = _both(
        lambda lib: lib.RefineCAM(CNN, ["features.1", "features.5"], base_method=lib.LayerCAM),
        lambda e, s: e(scores=s, targets=targets, target_shape=(9, 4)),
        CNN,
        x,
    )
    assert ours[0].shape == (2, 9, 4)
    _same(ours, theirs)
    fused = [torch.rand(2, 3, 5, dtype=torch.float64), torch.rand(2, 6, 2, dtype=torch.float64)]
    _same([P.RefineCAM.fuse_cams(fused)], [T.RefineCAM.fuse_cams(fused)])


def test_refinecam_defaults_and_errors():
    with pytest.raises(ValueError, match="two target layers"):
        P.RefineCAM(CNN, ["features.1"])
    with pytest.raises(TypeError, match="CAM extractor class"):
        P.RefineCAM(CNN, ["features.1", "features.3"], base_method=nn.Linear)
    assert _no_hooks(CNN)
    with (
        P.RefineCAM(CNN, ["features.1", "features.3"]) as compat,
        methods.RefineCAM(CNN, ["features.1", "features.3"]) as documented,
    ):
        assert type(compat.base_cam) is P.GradCAMpp and type(documented.base_cam) is methods.GradCAMpp
        assert len(compat.hook_handles) == 4 and "RefineCAM(base_method=GradCAMpp" in repr(compat)
    assert _no_hooks(CNN)


# -- FinerCAM ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["GradCAM", "GradCAMpp", "LayerCAM"])
@pytest.mark.parametrize(
    ("batch", "comparison"), [(1, None), (3, None), (3, 2), (3, [0, 7]), (2, [[3, 4], [0, 8]]), (1, [[2]])]
)
def test_finercam_parity(base, batch, comparison):
    torch.manual_seed(batch + 10)
    x = torch.randn(batch, 3, 11, 17, dtype=torch.float64)
    idx = 5 if batch != 2 else [5, 1]
    ours, theirs = _both(
        lambda lib: lib.FinerCAM(CNN, ["features.3", "features.5"], base_method=getattr(lib, base), gamma=0.8),
        lambda e, s: e(idx, s, comparison_idx=comparison, retain_graph=True) + e(idx, s, normalized=False),
        CNN,
        x,
    )
    _same(ours, theirs)


@pytest.mark.parametrize("num_references", [1, 4, 50])
def test_finercam_references_resnet(num_references):
    x = torch.randn(2, 3, 33, 29, dtype=torch.float64)
    ours, theirs = _both(
        lambda lib: lib.FinerCAM(RESNET, "layer4", num_references=num_references, gamma=1),
        lambda e, s: e([0, 3], s),
        RESNET,
        x,
    )
    _same(ours, theirs)


def test_finercam_errors():
    with pytest.raises(TypeError, match="base_method"):
        P.FinerCAM(CNN, "features.5", base_method=P.ScoreCAM)
    with pytest.raises(ValueError, match="gamma"):
        P.FinerCAM(CNN, "features.5", gamma=-1.0)
    with pytest.raises(TypeError, match="gamma"):
        P.FinerCAM(CNN, "features.5", gamma=True)
    with pytest.raises(ValueError, match="num_references"):
        P.FinerCAM(CNN, "features.5", num_references=0)
    assert _no_hooks(CNN)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    with P.FinerCAM(CNN, "features.5") as extractor:
        scores = CNN(x)
        with pytest.raises(ValueError, match="arbitrary output targets"):
            extractor(0, scores, targets=lambda o: o[0])
        with pytest.raises(ValueError, match="scores is required"):
            extractor(0)
        with pytest.raises(ValueError, match="target class"):
            extractor(1, scores, comparison_idx=[1, 2], retain_graph=True)
        with pytest.raises(ValueError, match="duplicates"):
            extractor(1, scores, comparison_idx=[2, 2], retain_graph=True)
        with pytest.raises(ValueError, match="out-of-range"):
            extractor(9, scores, retain_graph=True)
        assert extractor(1, scores)[0].shape == (2, 5, 5)
    assert _no_hooks(CNN)
