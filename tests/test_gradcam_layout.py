"""pytorch-grad-cam 1.5.7's package tree in ``pycam_fast.compat.pytorch_grad_cam``: every module path and public name,
and the parity of the utilities (layer finders, projections, image helpers, targets, hook holder, ablation layers)."""

import importlib
import pkgutil
import warnings

import numpy as np
import pytest
import torch
from conftest import SmallCNN
from torch import nn

pgc = pytest.importorskip("pytorch_grad_cam")

OURS = "pycam_fast.compat.pytorch_grad_cam"


def _public_names(module) -> list[str]:
    """A module's public API: what it defines itself; for a package ``__init__``, everything it exposes."""
    is_package = hasattr(module, "__path__")
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or name in {"annotations"}:
            continue
        if is_package:
            if getattr(value, "__module__", "") in {"typing", "typing_extensions"}:
                continue
            if type(value).__name__ == "module":
                continue  # submodules are checked as module paths; numpy, torch, ... are not API
            names.append(name)
        elif getattr(value, "__module__", None) == module.__name__:
            names.append(name)
    return sorted(names)


def _peer_modules() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ["pytorch_grad_cam"] + [info.name for info in pkgutil.walk_packages(pgc.__path__, "pytorch_grad_cam.")]


PEER_MODULES = _peer_modules()


def _suffix(peer_module: str) -> str:
    return peer_module[len("pytorch_grad_cam") :]


def test_peer_tree_is_the_expected_one():
    # guards the test itself: the installed peer really is grad-cam 1.5.7's tree
    assert len(PEER_MODULES) == 39
    assert "pytorch_grad_cam.fullgrad_cam" in PEER_MODULES
    assert "pytorch_grad_cam.utils.svd_on_activations" in PEER_MODULES


@pytest.mark.parametrize("peer_module", PEER_MODULES)
def test_every_module_path_and_public_name_exists(peer_module):
    suffix = _suffix(peer_module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = importlib.import_module(peer_module)
    mine = importlib.import_module(OURS + suffix)
    missing = [n for n in _public_names(theirs) if not hasattr(mine, n)]
    assert not missing, f"{OURS + suffix} lacks {missing}"


def test_readme_first_import_line_and_per_module_paths():
    from pycam_fast.compat.pytorch_grad_cam import (  # noqa: F401 (pytorch-grad-cam README's first import line)
        AblationCAM,
        EigenCAM,
        FullGrad,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        ScoreCAM,
        XGradCAM,
    )
    from pycam_fast.compat.pytorch_grad_cam.ablation_layer import AblationLayerVit
    from pycam_fast.compat.pytorch_grad_cam.fullgrad_cam import FullGrad as FullGrad2
    from pycam_fast.compat.pytorch_grad_cam.grad_cam import GradCAM as GradCAM2
    from pycam_fast.compat.pytorch_grad_cam.utils.image import scale_accross_batch_and_channels  # noqa: F401
    from pycam_fast.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, FinerWeightedTarget  # noqa: F401

    assert GradCAM2 is GradCAM and FullGrad2 is FullGrad
    assert issubclass(AblationLayerVit, nn.Module)


# -- utilities: parity ---------------------------------------------------------------------------------------------
def _tree():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)), nn.ReLU(), nn.Linear(2, 2)
    )


def test_find_layers_parity():
    from pytorch_grad_cam.utils import find_layers as theirs

    from pycam_fast.compat.pytorch_grad_cam.utils import find_layers as mine

    model = _tree()
    for types in ([nn.ReLU], [nn.Conv2d, nn.BatchNorm2d], [nn.Sequential]):
        assert mine.find_layer_types_recursive(model, types) == theirs.find_layer_types_recursive(model, types)
    pred = lambda m: isinstance(m, nn.Conv2d)  # noqa: E731
    assert mine.find_layer_predicate_recursive(model, pred) == theirs.find_layer_predicate_recursive(model, pred)
    new = nn.Identity()
    assert mine.replace_layer_recursive(model, model[1][1], new) and model[1][1] is new
    assert not mine.replace_layer_recursive(model, nn.Tanh(), new)
    mine.replace_all_layer_type_recursive(model, nn.ReLU, nn.GELU())
    assert (
        not mine.find_layer_types_recursive(model, [nn.ReLU])
        and len(mine.find_layer_types_recursive(model, [nn.GELU])) == 2
    )


@pytest.mark.parametrize("shape", [(1, 5, 3, 7), (3, 9, 4, 6), (2, 6, 2, 3, 5)])
@pytest.mark.parametrize("relu", [False, True])
def test_svd_projections_parity(shape, relu):
    from pytorch_grad_cam.utils import svd_on_activations as theirs

    from pycam_fast.compat.pytorch_grad_cam.utils import svd_on_activations as mine

    rng = np.random.default_rng(sum(shape))
    acts = rng.standard_normal(shape).astype(np.float32)
    acts = np.maximum(acts, 0) if relu else acts
    acts[0, 0, 0, 0] = np.nan
    for name in ("get_2d_projection", "get_2d_projection_with_sign_correction"):
        got, want = getattr(mine, name)(acts), getattr(theirs, name)(acts)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    if len(shape) == 4:  # kernel PCA (scikit-learn) is 2-D only in pytorch-grad-cam's use
        for kernel, gamma in (("sigmoid", None), ("rbf", 0.5), ("poly", None), ("cosine", None)):
            got, want = (
                mine.get_2d_projection_kernel(acts, kernel, gamma),
                theirs.get_2d_projection_kernel(acts, kernel, gamma),
            )
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    from pycam_fast.compat.pytorch_grad_cam import utils

    assert utils.get_2d_projection is mine.get_2d_projection


@pytest.mark.parametrize(
    "shape,size", [((2, 5, 7), (13, 11)), ((3, 9, 6), (4, 3)), ((1, 8, 8), None), ((2, 3, 4, 5), (7, 6, 5))]
)
def test_scale_cam_image_parity(shape, size):
    from pytorch_grad_cam.utils import image as theirs

    from pycam_fast.compat.pytorch_grad_cam.utils import image as mine

    cam = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    got, want = mine.scale_cam_image(cam, size), theirs.scale_cam_image(cam, size)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    batch = np.random.default_rng(1).standard_normal((2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(
        mine.scale_accross_batch_and_channels(batch, (9, 7)),
        theirs.scale_accross_batch_and_channels(batch, (9, 7)),
        atol=1e-5,
        rtol=0,
    )


def test_factorization_display_helpers_parity():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from pytorch_grad_cam.utils import image as theirs

    from pycam_fast.compat.pytorch_grad_cam.utils import image as mine

    rng = np.random.default_rng(3)
    scores, labels = rng.random((3, 6)), {i: f"class{i},alt,third,fourth" for i in range(6)}
    assert mine.create_labels_legend(scores, labels, 3) == theirs.create_labels_legend(scores, labels, 3)
    img, maps = rng.random((18, 22, 3)).astype(np.float32), rng.random((3, 18, 22)).astype(np.float32)
    colors = [np.array(colormaps["gist_rainbow"](i)) for i in np.arange(0, 1, 1 / 3)]
    plain = mine.show_factorization_on_image(img, maps.copy())  # default colours (pytorch-grad-cam's fail on mpl>=3.9)
    np.testing.assert_array_equal(plain, theirs.show_factorization_on_image(img, maps.copy(), colors))
    legend = mine.show_factorization_on_image(img, maps.copy(), colors, 0.3, ["a", "b", "c"])
    assert legend.shape == (18, 44, 3) and legend.dtype == np.uint8


@pytest.mark.parametrize("batched", [False, True])
def test_new_targets_parity(batched):
    from pytorch_grad_cam.utils import model_targets as theirs

    from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as mine

    torch.manual_seed(int(batched))
    out = torch.randn(4, 9) if batched else torch.randn(9)
    for name, args in (("ClassifierOutputReST", (3,)), ("FinerWeightedTarget", (2, [5, 0, 7], 0.6))):
        got, want = getattr(mine, name)(*args)(out), getattr(theirs, name)(*args)(out)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("detach", [True, False])
def test_activations_and_gradients_standalone(detach):
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients as Theirs

    from pycam_fast.compat.pytorch_grad_cam import ActivationsAndGradients as Mine

    torch.manual_seed(0)
    model = SmallCNN().eval()
    layers = [model.features[0], model.features[4]]
    x = torch.randn(2, 3, 9, 13)
    recorded = []
    for cls in (Theirs, Mine):
        holder = cls(model, layers, None, detach)
        out = holder(x)
        out[:, 3].sum().backward()
        recorded.append(([a.detach().cpu() for a in holder.activations], [g.detach().cpu() for g in holder.gradients]))
        holder.release()
        assert not holder.handles
    model.zero_grad()
    (acts_t, grads_t), (acts_m, grads_m) = recorded
    assert len(acts_m) == len(grads_m) == 2
    for a, b in zip(acts_t + grads_t, acts_m + grads_m, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert all(not layer._forward_hooks for layer in layers)


def test_ablation_layer_channel_choice_parity():
    from pytorch_grad_cam.ablation_layer import AblationLayer as Theirs

    from pycam_fast.compat.pytorch_grad_cam import AblationLayer as Mine

    acts = np.maximum(np.random.default_rng(7).standard_normal((11, 5, 6)), 0).astype(np.float32)
    for ratio in (1.0, 0.5, 0.3):
        np.testing.assert_array_equal(
            Mine().activations_to_be_ablated(acts, ratio), Theirs().activations_to_be_ablated(acts, ratio)
        )
    recorded = torch.randn(2, 4, 3, 3)
    for low in (False, True):
        src = recorded.clamp_min(0) if low else recorded
        results = []
        for cls in (Theirs, Mine):
            layer = cls()
            layer.indices = np.int32([2, 0, 3])
            layer.set_next_batch(1, src, 3)
            results.append(layer(None).clone())
        torch.testing.assert_close(results[1], results[0], atol=0, rtol=0)


def test_ablation_layer_vit_and_fasterrcnn_parity():
    from collections import OrderedDict

    from pytorch_grad_cam.ablation_layer import AblationLayerFasterRCNN as TheirsRCNN
    from pytorch_grad_cam.ablation_layer import AblationLayerVit as TheirsVit

    from pycam_fast.compat.pytorch_grad_cam import AblationLayerFasterRCNN, AblationLayerVit

    torch.manual_seed(5)
    tokens = torch.randn(2, 17, 6)
    results = []
    for cls in (TheirsVit, AblationLayerVit):
        layer = cls()
        layer.indices = np.int32([4, 1])
        layer.set_next_batch(0, tokens, 2)
        results.append(layer(None).clone())
    torch.testing.assert_close(results[1], results[0], atol=0, rtol=0)

    levels = OrderedDict((key, torch.randn(2, 256, 3 + i, 2 + i)) for i, key in enumerate(["0", "1", "2", "3", "pool"]))
    results = []
    for cls in (TheirsRCNN, AblationLayerFasterRCNN):
        layer = cls()
        layer.indices = np.int32([3, 300, 1279])
        layer.set_next_batch(1, levels, 3)
        results.append({k: v.clone() for k, v in layer(None).items()})
    for key in levels:
        torch.testing.assert_close(results[1][key], results[0][key], atol=0, rtol=0)
