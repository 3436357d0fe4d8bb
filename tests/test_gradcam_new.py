"""Issue 13 pieces of the pytorch-grad-cam 1.5.7 drop-in, against the installed grad-cam: BaseCAM extension points,
AblationCAM's ablation layers / channel ratio / reshape transform, the eigen_smooth sign, FullGrad,
GuidedBackpropReLUModel, RandomCAM, KPCA_CAM, ShapleyCAM and SegEigenCAM."""

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
import torchvision
from conftest import SmallCNN, conv_bn
from torch import nn

pgc = pytest.importorskip("pytorch_grad_cam")
tta = pytest.importorskip("ttach")
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402
from pytorch_grad_cam.utils import reshape_transforms as pgc_reshape  # noqa: E402

from pycam_fast.compat import pytorch_grad_cam as ours  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as our_targets  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.utils import reshape_transforms as our_reshape  # noqa: E402

TOL = 1e-5

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore")]


def _quiet(fn):
    """Run ``fn`` with stdout swallowed (grad-cam prints warnings and tqdm bars)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _parity(theirs, mine, tol=TOL):
    assert isinstance(mine, np.ndarray) and mine.dtype == np.float32 and mine.shape == theirs.shape
    np.testing.assert_allclose(mine, theirs, atol=tol, rtol=0)


class BNNet(nn.Module):
    """Conv / batch-norm net with non-trivial running statistics (FullGrad's batch-norm biases), an in-place ReLU
    after a target layer and a smooth tail (non-zero Hessian-vector products)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(3, 6),
            nn.ReLU(),
            *conv_bn(6, 8, 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 10, 3, padding=1, bias=False),
            nn.Tanh(),
        )
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _randomize_bn(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _models():
    torch.manual_seed(0)
    cnn = SmallCNN().eval()
    bn = _randomize_bn(BNNet())
    resnet = _randomize_bn(torchvision.models.resnet18(num_classes=6))
    return {"cnn": (cnn, [cnn.features[4]]), "bn": (bn, [bn.features[3]]), "resnet18": (resnet, [resnet.layer4[-1]])}


MODELS = _models()


# -- BaseCAM extension points --------------------------------------------------------------------------------------
def _weights_mean(self, input_tensor, target_layer, targets, activations, grads):
    assert isinstance(grads, np.ndarray) and isinstance(activations, np.ndarray)
    return np.mean(grads, axis=(2, 3)) * np.sign(activations.mean(axis=(2, 3)) + 0.5)


def _pair(body: dict, **init_kwargs):
    """The same subclass body on grad-cam's BaseCAM and ours; ``init_kwargs``: a constructor ``(model,
    target_layers)`` passing them to the base class."""

    def subclass(name, base):
        def init(self, model, target_layers):
            base.__init__(self, model, target_layers, **init_kwargs)

        return type(name, (base,), {**body, "__init__": init} if init_kwargs else dict(body))

    return subclass("Theirs", pgc.base_cam.BaseCAM), subclass("Mine", ours.BaseCAM)


@pytest.mark.parametrize("model_name", ["cnn", "resnet18"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("eigen_smooth", [False, True])
def test_get_cam_weights_subclass(model_name, batch, eigen_smooth):
    model, layers = MODELS[model_name]
    theirs_cls, mine_cls = _pair({"get_cam_weights": _weights_mean})
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 35, 41)
    targets = None if batch == 1 else [0, 2, 4][:batch]
    hooks_before = _hook_count(model)
    with theirs_cls(model, layers) as cam_t, mine_cls(model, layers) as cam_m:
        want = cam_t(x, targets and [pgc_targets.ClassifierOutputTarget(c) for c in targets], eigen_smooth=eigen_smooth)
        got = cam_m(x, targets and [our_targets.ClassifierOutputTarget(c) for c in targets], eigen_smooth=eigen_smooth)
        assert cam_m.last_path == "generic"
    _parity(want, got)
    assert _hook_count(model) == hooks_before  # released on exit


def test_get_cam_weights_subclass_records_tail_only_on_the_copy():
    """A plain subclass gets its activations and gradients from one tail-only forward of the optimised copy."""
    model, layers = MODELS["resnet18"]
    theirs_cls, mine_cls = _pair({"get_cam_weights": _weights_mean})
    torch.manual_seed(5)
    x = torch.randn(2, 3, 33, 29)
    hooks_before = _hook_count(model)
    cam = mine_cls(model, layers)
    got = cam(x, None)
    assert (cam.last_path, cam.last_model, cam.fallback_reason) == ("generic", "copy", None)
    _parity(theirs_cls(model, layers)(x, None), got)
    model.train()
    try:
        cam(x, None)
        assert cam.last_model == "model" and "training mode" in cam.fallback_reason  # as the built-in methods
    finally:
        model.eval()
    cam.release()
    assert _hook_count(model) == hooks_before


@pytest.mark.parametrize("method", ["GradCAM", "LayerCAM", "EigenCAM", "subclass"])
def test_target_output_modified_in_place_gives_grad_cams_numbers(method):
    """grad-cam's hooks hold the output tensor itself, so a following ReLU(inplace=True) changes what they record:
    the tail-only forward notices the modification and the call is redone (and the next ones run) with hooks."""
    model, _ = MODELS["cnn"]
    layers = [model.features[2]]  # followed by ReLU(inplace=True)
    if method == "subclass":
        theirs_cls, mine_cls = _pair({"get_cam_weights": _weights_mean})
    else:
        theirs_cls, mine_cls = getattr(pgc, method), getattr(ours, method)
    torch.manual_seed(6)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 21, 17)
        cam = mine_cls(model, layers)
        got = cam(x, None)
        assert "in place" in cam._tail_only_unavailable()
        _parity(_quiet(lambda x=x: theirs_cls(model, layers)(x, None)), got)


def test_get_cam_weights_subclass_aug_smooth():
    model, layers = MODELS["bn"]
    theirs_cls, mine_cls = _pair({"get_cam_weights": _weights_mean})
    torch.manual_seed(2)
    x = torch.randn(2, 3, 19, 23)
    _parity(theirs_cls(model, layers)(x, None, aug_smooth=True), mine_cls(model, layers)(x, None, aug_smooth=True))


def test_subclass_of_a_builtin_method_and_two_layers():
    model, _ = MODELS["cnn"]
    layers = [model.features[2], model.features[4]]

    def weights(self, input_tensor, target_layer, targets, activations, grads):
        return np.abs(grads).max(axis=(2, 3))

    theirs_cls = type("T", (pgc.GradCAM,), {"get_cam_weights": weights})
    mine_cls = type("M", (ours.GradCAM,), {"get_cam_weights": weights})
    torch.manual_seed(3)
    x = torch.randn(2, 3, 23, 19)
    _parity(theirs_cls(model, layers)(x, None), mine_cls(model, layers)(x, None))


def test_get_cam_image_and_aggregate_overrides():
    model, layers = MODELS["bn"]

    def cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        return np.abs(grads * activations).max(axis=1)

    def aggregate(self, cams):
        return np.max(np.concatenate(cams, axis=1), axis=1)

    body = {"get_cam_image": cam_image, "aggregate_multi_layers": aggregate}
    theirs_cls, mine_cls = _pair(body)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 17, 21)
    targets = [pgc_targets.ClassifierOutputSoftmaxTarget(1)] * 2
    mine_targets = [our_targets.ClassifierOutputSoftmaxTarget(1)] * 2
    _parity(theirs_cls(model, layers)(x, targets), mine_cls(model, layers)(x, mine_targets))


def test_compute_cam_per_layer_override_and_gradient_free_subclass():
    model, layers = MODELS["cnn"]

    def per_layer(self, input_tensor, targets, eigen_smooth):
        acts = self.activations_and_grads.activations[0]
        acts = acts.cpu().numpy() if isinstance(acts, torch.Tensor) else acts
        return [np.float32(acts.mean(axis=1, keepdims=True).repeat(2, axis=2).repeat(2, axis=3))]

    body = {"compute_cam_per_layer": per_layer}
    theirs_cls, mine_cls = _pair(body)
    torch.manual_seed(5)
    x = torch.randn(2, 3, 12, 14)  # features[4] is 6 x 7: the repeated map has the input's size
    _parity(theirs_cls(model, layers)(x, None), mine_cls(model, layers)(x, None))

    def no_grads(self, input_tensor, target_layer, targets, activations, grads):
        assert grads is None
        return activations.mean(axis=(2, 3))

    theirs_cls, mine_cls = _pair({"get_cam_weights": no_grads}, uses_gradients=False)
    _parity(theirs_cls(model, layers)(x, None), mine_cls(model, layers)(x, None))


def test_tta_transforms_compute_input_gradient_and_detach():
    model, layers = MODELS["bn"]
    torch.manual_seed(6)
    x = torch.randn(2, 3, 21, 18)
    transforms = tta.Compose([tta.HorizontalFlip(), tta.VerticalFlip()])
    with pgc.GradCAM(model, layers) as cam_t, ours.GradCAM(model, layers) as cam_m:
        cam_t.tta_transforms = transforms
        cam_m.tta_transforms = transforms
        _parity(cam_t(x, None, aug_smooth=True), cam_m(x, None, aug_smooth=True))

    seen = {}

    def input_weights(self, input_tensor, target_layer, targets, activations, grads):
        seen[type(self).__name__] = input_tensor.grad.detach().clone()
        return grads.mean(axis=(2, 3))

    theirs_cls, mine_cls = _pair({"get_cam_weights": input_weights}, compute_input_gradient=True)
    want = theirs_cls(model, layers)(x, None)
    model.zero_grad(set_to_none=True)
    _parity(want, mine_cls(model, layers)(x, None))
    torch.testing.assert_close(seen["Mine"], seen["Theirs"], atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # parameter .grad untouched by ours
    model.zero_grad(set_to_none=True)

    def graph_weights(self, input_tensor, target_layer, targets, activations, grads):
        assert isinstance(grads, torch.Tensor) and grads.requires_grad  # detach=False keeps the graph
        return grads.mean(dim=(2, 3)).detach().cpu().numpy()

    theirs_graph, mine_graph = _pair({"get_cam_weights": graph_weights}, compute_input_gradient=True, detach=False)
    _parity(theirs_graph(model, layers)(x, None), mine_graph(model, layers)(x, None))
    model.zero_grad(set_to_none=True)


def test_generic_path_releases_hooks_and_reports_errors():
    model, layers = MODELS["cnn"]
    mine_cls = type("Mine", (ours.BaseCAM,), {"get_cam_weights": _weights_mean})
    hooks_before = _hook_count(model)
    cam = mine_cls(model, layers)
    x = torch.randn(1, 3, 9, 11)
    for _ in range(3):
        cam(x, None)
        assert _hook_count(model) == hooks_before  # the generic path hooks the layers during a call only
    bad = type("Bad", (ours.BaseCAM,), {"get_cam_weights": lambda *a: (_ for _ in ()).throw(KeyError("boom"))})
    with pytest.raises(KeyError, match="boom"):
        bad(model, layers)(x, None)
    assert _hook_count(model) == hooks_before and not cam.activations_and_grads.activations
    with pytest.raises(NotImplementedError, match="get_cam_weights"):
        ours.BaseCAM(model, layers)(x, None)
    cam.activations_and_grads.release()
    with pytest.raises(ValueError, match="one target per sample"):
        cam(x, [our_targets.ClassifierOutputTarget(0)] * 2)
    # CAMs dropped without release() free their hooks at once (no reference cycle), whatever the class
    for name in ("GradCAM", "FullGrad", "ShapleyCAM", "KPCA_CAM"):
        for _ in range(3):
            getattr(ours, name)(model, layers)(x, None)
            assert _hook_count(model) == hooks_before, name


# -- AblationCAM -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("layer_kind", ["ours", "theirs"])
def test_ablationcam_layers_and_ratio(ratio, layer_kind):
    from pytorch_grad_cam.ablation_layer import AblationLayer as TheirLayer

    model, _ = MODELS["cnn"]
    layer = model.features[5] if ratio == 0.5 else model.features[4]  # a ReLU output (ablates to 0) and a conv's
    torch.manual_seed(int(ratio * 8))
    x = torch.randn(2, 3, 15, 13)
    want = _quiet(
        lambda: pgc.AblationCAM(
            model, [layer], ablation_layer=TheirLayer(), batch_size=5, ratio_channels_to_ablate=ratio
        )(x, None)
    )
    ablation = ours.AblationLayer() if layer_kind == "ours" else TheirLayer()
    got = ours.AblationCAM(model, [layer], ablation_layer=ablation, batch_size=7, ratio_channels_to_ablate=ratio)(
        x, None
    )
    _parity(want, got)
    assert model.features[4] is layer or model.features[5] is layer  # the layer is put back


def _tiny_vit():
    torch.manual_seed(2)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=16, num_classes=5
    ).eval()


@pytest.mark.parametrize("batch", [1, 2])
def test_ablationcam_vit_reshape_transform(batch):
    from pytorch_grad_cam.ablation_layer import AblationLayerVit as TheirLayer

    vit = _tiny_vit()
    layers = [vit.encoder.layers[-1].ln_1]
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32)

    def run(lib, layer, reshape):
        transform = lambda t: reshape.vit_reshape_transform(t, 4, 4)  # noqa: E731
        return _quiet(lambda: lib.AblationCAM(vit, layers, transform, ablation_layer=layer, batch_size=6)(x, None))

    want = run(pgc, TheirLayer(), pgc_reshape)
    _parity(want, run(ours, ours.AblationLayerVit(), our_reshape))
    # GradCAM and a subclass through the ViT transform too (generic and extractor paths)
    transform = lambda t: our_reshape.vit_reshape_transform(t, 4, 4)  # noqa: E731
    their_transform = lambda t: pgc_reshape.vit_reshape_transform(t, 4, 4)  # noqa: E731
    _parity(pgc.GradCAM(vit, layers, their_transform)(x, None), ours.GradCAM(vit, layers, transform)(x, None))


def test_ablationcam_default_path_eigen_smooth():
    model, layers = MODELS["bn"]
    torch.manual_seed(9)
    x = torch.randn(2, 3, 13, 15)
    for eigen in (False, True):
        want = _quiet(lambda: pgc.AblationCAM(model, layers, batch_size=4)(x, None, eigen_smooth=eigen))  # noqa: B023
        _parity(want, ours.AblationCAM(model, layers, batch_size=4)(x, None, eigen_smooth=eigen))


# -- eigen_smooth sign ---------------------------------------------------------------------------------------------
SIGN_METHODS = ["GradCAMElementWise", "LayerCAM", "GradCAM", "GradCAMPlusPlus", "XGradCAM", "EigenGradCAM", "EigenCAM"]


@pytest.mark.parametrize("name", SIGN_METHODS)
def test_eigen_smooth_sign_matches_on_60_random_cases(name):
    """With ``eigen_smooth`` the principal component's sign is NumPy's: random small nets, layers and inputs."""
    bad = []
    for case in range(60):
        torch.manual_seed(case)
        model = SmallCNN().eval()
        batch = 1 + case % 3
        x = torch.randn(batch, 3, 9 + case % 7, 11 + case % 5)
        layers = [[model.features[2]], [model.features[4]], [model.features[3]]][case % 3]
        want = getattr(pgc, name)(model, layers)(x, None, eigen_smooth=True)
        got = getattr(ours, name)(model, layers)(x, None, eigen_smooth=True)
        if not np.allclose(got, want, atol=TOL, rtol=0):
            bad.append((case, float(np.abs(got - want).max())))
    assert not bad, f"{name}: {len(bad)} of 60 maps differ: {bad[:5]}"


# -- FullGrad, guided backprop -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["cnn", "bn", "resnet18"])
@pytest.mark.parametrize("batch", [1, 3])
def test_fullgrad_parity(model_name, batch):
    model, _ = MODELS[model_name]
    torch.manual_seed(10 + batch)
    x = torch.randn(batch, 3, 37, 45)
    targets = None if batch == 1 else [1, 0, 3]
    for eigen in (False, True):
        their_targets = targets and [pgc_targets.ClassifierOutputTarget(c) for c in targets]
        mine_targets = targets and [our_targets.ClassifierOutputTarget(c) for c in targets]
        want = _quiet(lambda: pgc.FullGrad(model, [])(x, their_targets, eigen_smooth=eigen))  # noqa: B023
        model.zero_grad(set_to_none=True)
        got = ours.FullGrad(model, [])(x, mine_targets, eigen_smooth=eigen)
        assert got.max() > 0.99
        _parity(want, got)
    assert all(p.grad is None for p in model.parameters())
    if model_name == "bn":
        assert len(ours.FullGrad(model, [model.features[0]]).target_layers) == 4  # conv, bn, conv, bn


@pytest.mark.parametrize("model_name", ["cnn", "bn", "resnet18"])
def test_guided_backprop_parity(model_name):
    model, _ = MODELS[model_name]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    flags = [m.inplace for m in relus]
    torch.manual_seed(11)
    x = torch.randn(1, 3, 29, 33)
    mine = ours.GuidedBackpropReLUModel(model)
    for category in (None, 2):
        # grad-cam swaps the model's ReLUs for one shared nn.ReLU(): give it a copy
        want = pgc.GuidedBackpropReLUModel(copy.deepcopy(model))(x.clone(), category)
        got = mine(x, category)
        assert got.shape == (29, 33, 3) and got.dtype == np.float32 and np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, atol=TOL * np.abs(want).max(), rtol=0)
    assert [m for m in model.modules() if isinstance(m, nn.ReLU)] == relus
    assert [m.inplace for m in relus] == flags
    with pytest.raises(TypeError, match="input_img"):
        mine(x.numpy())


@pytest.mark.parametrize("model_name", ["bn", "resnet18"])
def test_guided_backprop_batch_parity(model_name):
    """Batch > 1: only the first image is explained (its gradient alone is computed); the default category is the
    arg-max of the whole batch's output, which must lie in the first image."""
    model, _ = MODELS[model_name]
    torch.manual_seed(15)
    x = torch.randn(5, 3, 27, 31)
    with torch.no_grad():
        top = model(x).max(dim=1).values
    x = x[top.argsort(descending=True)]  # the batch's highest score in the first image
    mine = ours.GuidedBackpropReLUModel(model)
    for category in (None, 1):
        want = pgc.GuidedBackpropReLUModel(copy.deepcopy(model))(x.clone(), category)
        got = mine(x, category)
        np.testing.assert_allclose(got, want, atol=TOL * np.abs(want).max(), rtol=0)
    with pytest.raises(ValueError, match="target_category"):
        mine(x.flip(0))  # the highest score is now in the last image: grad-cam fails with an IndexError
    np.testing.assert_allclose(mine(x.flip(0), 1), mine(x[-1:], 1), atol=1e-6, rtol=0)


# -- RandomCAM, KPCA_CAM, ShapleyCAM, SegEigenCAM --------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["cnn", "bn"])
@pytest.mark.parametrize("batch", [1, 3])
def test_random_kpca_shapley_segeigen_parity(model_name, batch):
    model, layers = MODELS[model_name]
    torch.manual_seed(12 + batch)
    x = torch.randn(batch, 3, 23, 27)  # <= 200 positions at the target layers: scikit-learn's dense eigensolver
    cases = [
        ("RandomCAM", {}, None),
        ("KPCA_CAM", {}, None),
        ("KPCA_CAM", {"kernel": "rbf", "gamma": 0.05}, None),
        ("SegEigenCAM", {}, "class"),
        ("ShapleyCAM", {}, None),
        ("ShapleyCAM", {}, "rest"),
    ]
    for name, kwargs, target in cases:
        for eigen in (False, True):
            tgt = {None: None, "class": "ClassifierOutputTarget", "rest": "ClassifierOutputReST"}[target]
            np.random.seed(21)
            their_cam = getattr(pgc, name)(model, layers, **kwargs)
            their_targets = tgt and [getattr(pgc_targets, tgt)(1)] * batch
            want = _quiet(lambda: their_cam(x, their_targets, eigen_smooth=eigen))  # noqa: B023
            np.random.seed(21)
            got = getattr(ours, name)(model, layers, **kwargs)(
                x, tgt and [getattr(our_targets, tgt)(1)] * batch, eigen_smooth=eigen
            )
            assert got.max() > 0.99, (name, kwargs, target, eigen)
            _parity(want, got, tol=1e-4 if name == "KPCA_CAM" else TOL)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("target", [None, "ClassifierOutputReST"])
def test_shapleycam_tail_only_on_the_copy(target):
    """ShapleyCAM's g and H A come from a tail-only forward of the optimised copy (create_graph through the tail),
    also where the head is linear and frozen (H A = 0)."""
    model, layers = MODELS["resnet18"]
    torch.manual_seed(14)
    x = torch.randn(3, 3, 45, 39)
    theirs = target and [getattr(pgc_targets, target)(c) for c in (0, 3, 5)]
    mine_targets = target and [getattr(our_targets, target)(c) for c in (0, 3, 5)]
    cam = ours.ShapleyCAM(model, layers)
    got = cam(x, mine_targets)
    assert (cam.last_path, cam.last_model) == ("generic", "copy")
    _parity(_quiet(lambda: pgc.ShapleyCAM(model, layers)(x, theirs)), got)
    model.zero_grad(set_to_none=True)


def test_bad_arguments_name_the_argument():
    model, layers = MODELS["cnn"]
    with pytest.raises(ValueError, match="kernel"):
        ours.KPCA_CAM(model, layers, kernel="laplacian")
    with pytest.raises(ValueError, match="gamma"):
        ours.KPCA_CAM(model, layers, gamma=-1.0)
    with pytest.raises(ValueError, match="ratio_channels_to_ablate"):
        ours.AblationCAM(model, layers, ratio_channels_to_ablate=0)
    with pytest.raises(TypeError, match="target_layers"):
        ours.RandomCAM(model, [])
    with pytest.raises(TypeError, match="reshape_transform"):
        ours.SegEigenCAM(model, layers, reshape_transform=3)
    with pytest.raises(ValueError, match="input_tensor"):
        ours.FullGrad(model, [])(torch.randn(3, 8, 8))


def test_shapleycam_rest_differs_from_gradcam():
    """The Hessian-vector term is live with a smooth target (else ShapleyCAM would equal Grad-CAM)."""
    model, layers = MODELS["bn"]
    torch.manual_seed(13)
    x = torch.randn(2, 3, 19, 17)
    targets = [our_targets.ClassifierOutputReST(2)] * 2
    shapley = ours.ShapleyCAM(model, layers)(x, targets)
    gradcam = ours.GradCAM(model, layers)(x, targets)
    assert np.abs(shapley - gradcam).max() > 1e-3
    model.zero_grad(set_to_none=True)
