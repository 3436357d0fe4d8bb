"""Parity of the compat ``FinerCAM`` and ``RefineCAM`` with pytorch-grad-cam 1.5.7's (float32 NumPy outputs)."""

import inspect

import numpy as np
import pytest
import torch
import torchvision
from conftest import SmallCNN

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402

from pycam_fast.compat import pytorch_grad_cam as ours  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as our_targets  # noqa: E402

TOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def _small(num_classes: int = 10) -> SmallCNN:
    torch.manual_seed(num_classes)
    return SmallCNN(num_classes=num_classes).eval()


def _resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=7).eval()


def _input(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def _check(got: np.ndarray, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == want.shape
    assert np.isfinite(got).all() and float(got.max()) > 0.5  # non-trivial maps
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_module_paths_and_signatures():
    from pycam_fast.compat.pytorch_grad_cam.finer_cam import FinerCAM
    from pycam_fast.compat.pytorch_grad_cam.refine_cam import RefineCAM

    assert FinerCAM is ours.FinerCAM and RefineCAM is ours.RefineCAM
    for name in ("FinerCAM", "RefineCAM"):
        mine, theirs = getattr(ours, name), getattr(pgc, name)
        for method in ("__init__", "forward"):
            got = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(mine, method)).parameters.values()]
            want = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(theirs, method)).parameters.values()]
            # defaults naming a class compare by name (ours are the compat classes)
            norm = lambda rows: [(n, k, d.__name__ if isinstance(d, type) else d) for n, k, d in rows]  # noqa: E731
            assert norm(got) == norm(want), (name, method)


FINER_CASES = [
    # (base method, forward kwargs)
    ("GradCAM", {}),
    ("GradCAM", {"alpha": 0.6, "comparison_categories": [2, 1]}),
    ("GradCAM", {"comparison_categories": [1, 4, 50], "target_idx": 3}),  # 50 >= K is dropped
    ("GradCAMPlusPlus", {"alpha": 0.3}),
    ("LayerCAM", {"target_idx": 5}),
    ("HiResCAM", {"eigen_smooth": True}),
]


@pytest.mark.parametrize("batch,size", [(1, (23, 17)), (3, (19, 26))])
@pytest.mark.parametrize("base,kwargs", FINER_CASES)
def test_finercam_parity_small_cnn(batch, size, base, kwargs):
    model = _small()
    x = _input(batch, size, seed=batch + len(kwargs))
    layers = [model.features[0], model.features[4]]  # features[2]: its output is modified in place by a ReLU
    theirs = pgc.FinerCAM(model, layers, base_method=getattr(pgc, base))
    want = theirs(x, **kwargs)
    theirs.base_cam.activations_and_grads.release()
    with ours.FinerCAM(model, layers, base_method=getattr(ours, base)) as cam:
        got = cam(x, **kwargs)
    assert _no_hooks(model)
    _check(got, want)


@pytest.mark.parametrize("batch", [1, 2])
def test_finercam_parity_resnet18_and_positional_call(batch):
    model = _resnet()
    x = _input(batch, (40, 36), seed=7)
    theirs = pgc.FinerCAM(model, [model.layer3[-1], model.layer4[-1]])
    want = theirs(x, None, False, 0.8, [1, 3])
    theirs.base_cam.activations_and_grads.release()
    cam = ours.FinerCAM(model, [model.layer3[-1], model.layer4[-1]])
    _check(cam(x, None, False, 0.8, [1, 3]), want)


def test_finercam_explicit_targets_and_few_classes():
    # two classes: the default comparison is capped to position 1; explicit targets are explained as given
    model = _small(num_classes=2)
    x = _input(2, (21, 15), seed=3)
    layers = [model.features[4]]
    theirs = pgc.FinerCAM(model, layers)
    want_auto = theirs(x)
    want_given = theirs(x, [pgc_targets.FinerWeightedTarget(1, [0], 0.5), pgc_targets.ClassifierOutputTarget(0)])
    theirs.base_cam.activations_and_grads.release()
    cam = ours.FinerCAM(model, layers)
    _check(cam(x), want_auto)
    got_given = cam(x, [our_targets.FinerWeightedTarget(1, [0], 0.5), our_targets.ClassifierOutputTarget(0)])
    _check(got_given, want_given)
    assert cam.uses_gradients is True and cam.compute_input_gradient is False


REFINE_CASES = [
    ("GradCAMPlusPlus", {}, {}),
    ("GradCAM", {}, {"targets": "class"}),
    ("LayerCAM", {}, {"eigen_smooth": True}),  # pytorch-grad-cam passes it on as aug_smooth
    ("GradCAMPlusPlus", {"fast": False}, {}),  # keyword arguments reach the base method (ours only: 1.5.7's
    # built-in classes take none)
]


@pytest.mark.parametrize("batch,size", [(1, (25, 18)), (3, (17, 22))])
@pytest.mark.parametrize("base,our_kwargs,call_kwargs", REFINE_CASES)
def test_refinecam_parity_small_cnn(batch, size, base, our_kwargs, call_kwargs):
    model = _small()
    x = _input(batch, size, seed=11 * batch + len(call_kwargs))
    layers = [model.features[0], model.features[1], model.features[4]]

    def kwargs(targets_module):
        out = dict(call_kwargs)
        if out.get("targets") == "class":
            out["targets"] = [targets_module.ClassifierOutputTarget(c) for c in range(1, batch + 1)]
        return out

    theirs = pgc.RefineCAM(model, layers, base_method=getattr(pgc, base))
    want = theirs(x, **kwargs(pgc_targets))
    for base_cam in theirs.base_cam_per_layer:
        base_cam.activations_and_grads.release()
    cam = ours.RefineCAM(model, layers, base_method=getattr(ours, base), **our_kwargs)
    assert len(cam.base_cam_per_layer) == 3
    assert all(c.fast is our_kwargs.get("fast", True) for c in cam.base_cam_per_layer)
    _check(cam(x, **kwargs(our_targets)), want)


@pytest.mark.parametrize("batch", [1, 2])
def test_refinecam_parity_resnet18(batch):
    model = _resnet()
    x = _input(batch, (48, 40), seed=5)
    layers = [model.layer2[-1], model.layer3[-1], model.layer4[-1]]
    theirs = pgc.RefineCAM(model, layers)
    want = theirs(x)
    for base_cam in theirs.base_cam_per_layer:
        base_cam.activations_and_grads.release()
    cam = ours.RefineCAM(model, layers)
    _check(cam(x), want)
    # one forward of the optimised copy gives the three layers' maps; the per-layer CAMs do not run
    assert cam._joint.last_model == "copy"
    assert all(c.last_path is None for c in cam.base_cam_per_layer)
