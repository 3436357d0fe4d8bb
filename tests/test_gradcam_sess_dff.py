"""The compat ``SESS`` and Deep Feature Factorization vs pytorch-grad-cam 1.5.7's (float32 NumPy outputs).

SESS must give grad-cam's maps. DFF's NMF runs scikit-learn's algorithm from scikit-learn's start (grad-cam:
``NMF(init="random", random_state=0)``), so the factors, concepts and heatmaps must be grad-cam's to the rounding
that 200 iterations accumulate (:data:`NMF_TOL`); everything after the factorisation (concepts, heatmaps, classifier
outputs, the drawn image) must equal grad-cam's to :data:`TOL` when both get the same factors.
"""

import importlib
import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from conftest import SmallCNN, random_batch_norm

pgc = pytest.importorskip("pytorch_grad_cam")
sklearn_nmf = pytest.importorskip("sklearn.decomposition").NMF
from PIL import Image  # noqa: E402
from pytorch_grad_cam import sess as pgc_sess  # noqa: E402
from pytorch_grad_cam.feature_factorization import deep_feature_factorization as pgc_dff  # noqa: E402
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402

from pycam_fast.compat import pytorch_grad_cam as ours  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam import sess as our_sess  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.feature_factorization import deep_feature_factorization as our_dff  # noqa: E402
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as our_targets  # noqa: E402

TOL = 1e-5
#: max |ours - scikit-learn's| / max |scikit-learn's| of NMF factors (float32 BLAS rounding over <= 200 iterations;
#: measured <= 1e-5 on ResNet activations)
NMF_TOL = 1e-4
#: the same on heatmaps min-max normalised per concept: a concept of small range magnifies it (measured 1.1e-4 for
#: K=16, stopped at 200 iterations unconverged)
HEATMAP_TOL = 5e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def _small(seed: int = 3) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(num_classes=10).eval()


def _input(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())


def _close(got: np.ndarray, want: np.ndarray, flips: float = 0.0) -> None:
    """Equal within TOL; ``flips``: the fraction of pixels allowed to differ (a threshold crossed by rounding)."""
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
    assert np.isfinite(got).all()
    if flips:
        assert np.mean(np.abs(got - want) > TOL) <= flips
        return
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


# -- module paths, names, signatures ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "suffix", [".sess", ".feature_factorization", ".feature_factorization.deep_feature_factorization"]
)
def test_every_import_path_and_public_name(suffix):
    theirs = importlib.import_module("pytorch_grad_cam" + suffix)
    mine = importlib.import_module("pycam_fast.compat.pytorch_grad_cam" + suffix)
    public = [
        n for n, v in vars(theirs).items() if not n.startswith("_") and getattr(v, "__module__", "") == theirs.__name__
    ]
    assert all(hasattr(mine, name) for name in public), public
    assert set(getattr(mine, "__all__", public)) >= set(public)


def test_top_level_names_are_the_module_objects():
    from pycam_fast.compat.pytorch_grad_cam import SESS, DeepFeatureFactorization, run_dff_on_image
    from pycam_fast.compat.pytorch_grad_cam import feature_factorization as package
    from pycam_fast.compat.pytorch_grad_cam.sess import sliding_window, window_starts  # noqa: F401

    assert SESS is our_sess.SESS and DeepFeatureFactorization is package.DeepFeatureFactorization
    assert run_dff_on_image is package.run_dff_on_image and package.dff is our_dff.dff
    assert {"SESS", "DeepFeatureFactorization", "run_dff_on_image"} <= set(ours.__all__)


def _signature(fn) -> list[tuple]:
    rows = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    return [(n, k, d.__name__ if isinstance(d, type) else d) for n, k, d in rows]  # classes compare by name


@pytest.mark.parametrize(
    "mine,theirs",
    [
        (ours.SESS.__init__, pgc.SESS.__init__),
        (ours.SESS.forward, pgc.SESS.forward),
        (our_sess.sliding_window, pgc_sess.sliding_window),
        (our_sess.window_starts, pgc_sess.window_starts),
        (our_dff.dff, pgc_dff.dff),
        (ours.DeepFeatureFactorization.__init__, pgc.DeepFeatureFactorization.__init__),
        (ours.DeepFeatureFactorization.__call__, pgc.DeepFeatureFactorization.__call__),
    ],
)
def test_signatures(mine, theirs):
    assert _signature(mine) == _signature(theirs)


def test_run_dff_on_image_signature_differs_only_by_the_fixed_default():
    got, want = _signature(ours.run_dff_on_image), _signature(pgc.run_dff_on_image)
    assert [r[:2] for r in got] == [r[:2] for r in want]
    assert dict((n, d) for n, _, d in got)["reshape_transform"] is None  # grad-cam's default is a typing object


# -- SESS ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "length,step,window", [(23, 23, 23), (41, 7, 23), (30, 5, 15), (17, 100, 9), (64, 16, 16), (9, 3, 12)]
)
def test_window_helpers_parity(length, step, window):
    assert our_sess.window_starts(length, step, window) == pgc_sess.window_starts(length, step, window)
    got = our_sess.sliding_window(length, length + 5, step, window)
    assert got == pgc_sess.sliding_window(length, length + 5, step, window)


SESS_CASES = [
    # (base method, batch, (H, W), SESS kwargs, forward kwargs)
    ("GradCAM", 1, (23, 31), {}, {}),
    ("GradCAM", 3, (29, 19), {"num_scales": 3, "step_size": 7, "batch_size": 5}, {}),
    ("GradCAM", 2, (25, 27), {"num_scales": 4, "pre_filter_ratio": 0.4, "theta": 0.2, "smooth": False}, {}),
    ("GradCAM", 2, (22, 26), {"num_scales": 3}, {"eigen_smooth": True}),
    ("GradCAMPlusPlus", 2, (21, 21), {"pool": "max", "window_size": 15, "scales": [15, 22, 30], "step_size": 5}, {}),
    ("ScoreCAM", 1, (24, 30), {"num_scales": 3, "use_softmax_scores": False}, {}),
    ("LayerCAM", 2, (27, 23), {"num_scales": 5, "scale_step_ratio": 0.5, "batch_size": 128}, {"targets": [2, 7]}),
]


@pytest.mark.parametrize("base,batch,size,kwargs,call", SESS_CASES)
def test_sess_parity_small_cnn(base, batch, size, kwargs, call):
    model = _small()
    x = _input(batch, size, seed=sum(size) + batch)
    layers = [model.features[4]]
    their_call, our_call = dict(call), dict(call)
    if "targets" in call:
        their_call["targets"] = [pgc_targets.ClassifierOutputTarget(c) for c in call["targets"]]
        our_call["targets"] = [our_targets.ClassifierOutputTarget(c) for c in call["targets"]]
    theirs = pgc.SESS(model, layers, base_method=getattr(pgc, base), **kwargs)
    want = theirs(x, **their_call)
    theirs.base_cam.activations_and_grads.release()
    assert _no_hooks(model)
    cam = ours.SESS(model, layers, base_method=getattr(ours, base), **kwargs)
    got = cam(x, **our_call)
    assert got.std(axis=(1, 2)).min() > 0.05  # non-trivial maps
    # with theta > 0, a window value within rounding of theta enters grad-cam's mean and not ours (or the reverse)
    _close(got, want, flips=0.005 if kwargs.get("theta") else 0.0)
    cam.release()  # the base method's hooks live as long as the CAM (as in grad-cam), release() removes them
    assert _no_hooks(model)


def test_sess_parity_resnet_two_layers():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = _input(2, (37, 33), seed=5)
    layers = [model.layer3[-1], model.layer4[-1]]
    theirs = pgc.SESS(model, layers, num_scales=3)
    want = theirs(x)
    theirs.base_cam.activations_and_grads.release()
    with ours.SESS(model, layers, num_scales=3) as cam:
        _close(cam(x), want)
    assert _no_hooks(model)


def test_paste_matrices_are_opencvs():
    cv2 = pytest.importorskip("cv2")
    for src in (5, 23, 30, 47, 71, 83, 140):
        for dst in (4, 17, 23, 27, 31, 64):
            want = cv2.resize(np.eye(src, dtype=np.float32), (src, dst), interpolation=cv2.INTER_LINEAR)
            assert np.array_equal(our_sess._interpolation_matrix(src, dst, torch.device("cpu")).numpy(), want)


def test_sess_hooks_go_with_the_object_and_the_mode_is_restored():
    model = _small().train()
    cam = ours.SESS(model, [model.features[4]], num_scales=2)
    maps = cam(_input(1, (20, 20), seed=1))
    assert model.training and maps.shape == (1, 20, 20)  # the windows ran in eval mode, the flags are back
    del cam
    assert _no_hooks(model)


def test_sess_with_a_foreign_base_method():
    # a base method that is not this package's BaseCAM is called as pytorch-grad-cam calls it
    model = _small(4)
    x = _input(2, (26, 22), seed=9)
    kwargs = {"num_scales": 4, "step_size": 9}
    theirs = pgc.SESS(model, [model.features[4]], **kwargs)
    want = theirs(x)
    theirs.base_cam.activations_and_grads.release()
    cam = ours.SESS(model, [model.features[4]], base_method=pgc.GradCAM, **kwargs)
    _close(cam(x), want)
    cam.release()
    assert _no_hooks(model)


def test_sess_public_steps_parity():
    model = _small(5)
    x = _input(1, (25, 19), seed=2)
    theirs = pgc.SESS(model, [model.features[4]], num_scales=4)
    cam = ours.SESS(model, [model.features[4]], num_scales=4)
    assert cam.get_scales(19) == theirs.get_scales(19)
    want_patches, want_coords = theirs.collect_patches(x, 19, 7)
    got_patches, got_coords = cam.collect_patches(x, 19, 7)
    assert got_coords == want_coords and len(got_patches) == len(want_patches)
    for got, want in zip(got_patches, want_patches, strict=True):
        assert got.shape == want.shape and torch.allclose(got, want, atol=TOL)
    target = theirs.get_target(x)
    assert cam.get_target(x).category == target.category
    _close(
        cam.get_scores(got_patches, our_targets.ClassifierOutputTarget(int(target.category))),
        theirs.get_scores(want_patches, target),
    )
    piece = np.random.default_rng(0).random((19, 19), dtype=np.float32)
    for coords in want_coords[::3]:
        _close(cam.paste_cam(piece, coords, (25, 19)), theirs.paste_cam(piece, coords, (25, 19)))
    _close(cam.forward_single_image(x, None), theirs.forward_single_image(x, None))
    theirs.base_cam.activations_and_grads.release()
    cam.release()
    assert _no_hooks(model)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"pool": "sum"}, "pool"),
        ({"pre_filter_ratio": 1.0}, "pre_filter_ratio"),
        ({"pre_filter_ratio": -0.1}, "pre_filter_ratio"),
        ({"num_scales": 0}, "num_scales"),
        ({"batch_size": 0}, "batch_size"),
        ({"window_size": -3}, "window_size"),
        ({"step_size": 0}, "step_size"),
        ({"scales": []}, "scales"),
        ({"scales": [20, 0]}, "scales"),
    ],
)
def test_sess_bad_options(kwargs, argument):
    model = _small()
    with pytest.raises(ValueError, match=f"`{argument}`"):
        ours.SESS(model, [model.features[4]], **kwargs)
    assert _no_hooks(model)


def test_sess_bad_inputs():
    model = _small()
    cam = ours.SESS(model, [model.features[4]], num_scales=2)
    x = _input(2, (20, 20), seed=0)
    with pytest.raises(TypeError, match="`input_tensor`"):
        cam(x.numpy())
    with pytest.raises(ValueError, match="`input_tensor`"):
        cam(x[0])
    with pytest.raises(ValueError, match="`targets`"):
        cam(x, [our_targets.ClassifierOutputTarget(1)])
    with pytest.raises(TypeError, match="`targets`"):
        cam(x, [1, 2])
    with pytest.raises(ValueError, match="`scales`"):
        ours.SESS(model, [model.features[4]], scales=[20, 12])(x)
    with pytest.raises(TypeError, match="`target_layers`"):
        ours.SESS(model, model.features[4])
    cam.release()
    assert _no_hooks(model)


# -- DFF: the factorisation ------------------------------------------------------------------------------------------
def _activations(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    store = []
    handle = layer.register_forward_hook(lambda m, i, o: store.append(o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return store[0]


def _sklearn_nmf(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    model = sklearn_nmf(n_components=k, init="random", random_state=0)
    return model.fit_transform(v), model.components_


def _factors_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=NMF_TOL * np.abs(want).max(), rtol=0)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return random_batch_norm(torchvision.models.resnet18(num_classes=10)).eval()


def _shifted_matrix(acts: torch.Tensor) -> torch.Tensor:
    flat = acts.transpose(0, 1).reshape(acts.shape[1], -1)
    return flat - flat.amin(dim=1, keepdim=True)


@pytest.mark.parametrize(
    "layer,batch,size,k", [("layer4", 1, (96, 80), 5), ("layer3", 2, (45, 61), 3), ("layer4", 3, (64, 64), 8)]
)
def test_nmf_equals_sklearn(resnet, layer, batch, size, k):
    v = _shifted_matrix(_activations(resnet, getattr(resnet, layer), _input(batch, size, seed=k)))
    w, h = our_dff.nmf(v, k)
    assert w.shape == (v.shape[0], k) and h.shape == (k, v.shape[1]) and w.dtype == torch.float32
    want_w, want_h = _sklearn_nmf(v.numpy(), k)
    _factors_close(w.numpy(), want_w)
    _factors_close(h.numpy(), want_h)
    w2, h2 = our_dff.nmf(v, k)
    assert torch.equal(w, w2) and torch.equal(h, h2)  # deterministic


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nmf_batched_matrices(dtype):
    gen = torch.Generator().manual_seed(7)
    v = (torch.rand(3, 21, 13, generator=gen, dtype=dtype) ** 2) * torch.tensor([1.0, 5.0, 0.1], dtype=dtype).view(
        3, 1, 1
    )
    w, h = our_dff.nmf(v, 4)
    assert w.shape == (3, 21, 4) and h.shape == (3, 4, 13) and w.dtype == dtype
    for i in range(3):  # each matrix gets scikit-learn's start for its own mean
        want_w, want_h = _sklearn_nmf(v[i].numpy(), 4)
        _factors_close(w[i].numpy(), want_w)
        _factors_close(h[i].numpy(), want_h)


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"v": -torch.ones(4, 3)}, "non-negative"),
        ({"v": torch.full((4, 3), float("nan"))}, "finite"),
        ({"v": torch.ones(4)}, "`v`"),
        ({"n_components": 0}, "`n_components`"),
        ({"max_iter": 0}, "`max_iter`"),
    ],
)
def test_nmf_bad_arguments(bad, message):
    kwargs = {"v": torch.rand(4, 3), "n_components": 2, **bad}
    with pytest.raises(ValueError, match=message):
        our_dff.nmf(**kwargs)


def test_dff_function_equals_gradcam_and_keeps_the_input(resnet):
    acts = _activations(resnet, resnet.layer4, _input(2, (70, 50), seed=1)).numpy()
    acts[0, 3, 0, 0] = np.nan
    before = acts.copy()
    concepts, explanations = ours.feature_factorization.dff(acts, n_components=4)
    assert np.array_equal(acts, before, equal_nan=True)  # grad-cam zeroes the NaNs in the caller's array
    want_concepts, want_explanations = pgc_dff.dff(acts.copy(), n_components=4)
    _factors_close(concepts, want_concepts)
    _factors_close(explanations, want_explanations)
    c64, _ = ours.feature_factorization.dff(np.nan_to_num(acts).astype(np.float64), 4)
    assert c64.dtype == np.float64


@pytest.mark.parametrize("batch,size,k", [(1, (64, 48), 5), (3, (40, 40), 16)])
def test_dff_end_to_end_equals_gradcam(resnet, batch, size, k):
    """No shared factors: our NMF from scikit-learn's start gives grad-cam's concepts, heatmaps and head outputs."""
    x = _input(batch, size, seed=k)
    want = pgc.DeepFeatureFactorization(resnet, resnet.layer4, computation_on_concepts=resnet.fc)(x, k)
    got = ours.DeepFeatureFactorization(resnet, resnet.layer4, computation_on_concepts=resnet.fc)(x, k)
    _factors_close(got[0], want[0])
    for mine, theirs in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(mine, theirs, atol=HEATMAP_TOL, rtol=0)
    _factors_close(got[2], want[2])
    assert _no_hooks(resnet)


# -- DFF: everything after the factorisation, fed the same factors -----------------------------------------------------
class _FixedNMF:
    """Stands in for scikit-learn's NMF in grad-cam's module: returns the factors of :data:`_FACTORS`."""

    def __init__(self, n_components, **kwargs):
        self.n_components = n_components

    def fit_transform(self, matrix):
        w, h = _FACTORS[(matrix.shape, self.n_components)]
        self.components_ = h
        return w


_FACTORS: dict = {}


@pytest.fixture
def same_factors(monkeypatch):
    """Both libraries get the same seeded factors ``W (C, K)``, ``H (K, N*h*w)`` for any activations."""

    def factors(shape, k):
        if (shape, k) not in _FACTORS:
            rng = np.random.default_rng(shape[0] * 31 + shape[1] + k)
            _FACTORS[(shape, k)] = (
                rng.random((shape[0], k), dtype=np.float32),
                rng.random((k, shape[1]), dtype=np.float32) ** 2,
            )
        return _FACTORS[(shape, k)]

    def our_nmf(v, n_components, **kwargs):
        w, h = factors(tuple(v.shape), n_components)
        return torch.from_numpy(w).to(v.device), torch.from_numpy(h).to(v.device)

    class Recorder(_FixedNMF):
        def fit_transform(self, matrix):
            factors(matrix.shape, self.n_components)
            return super().fit_transform(matrix)

    monkeypatch.setattr(pgc_dff, "NMF", Recorder)
    monkeypatch.setattr(our_dff, "nmf", our_nmf)
    yield
    _FACTORS.clear()


@pytest.mark.parametrize(
    "batch,size,k,classifier", [(1, (29, 23), 3, True), (3, (20, 33), 5, True), (2, (31, 31), 16, False)]
)
def test_dff_pipeline_parity_given_the_same_factors(same_factors, batch, size, k, classifier):
    model = _small(batch)
    x = _input(batch, size, seed=k)
    head = model.fc if classifier else None
    want = pgc.DeepFeatureFactorization(model, model.features[4], computation_on_concepts=head)(x, k)
    assert _no_hooks(model)
    got = ours.DeepFeatureFactorization(model, model.features[4], computation_on_concepts=head)(x, k)
    assert _no_hooks(model)
    assert len(got) == len(want) == (3 if classifier else 2)
    _close(got[0], want[0])
    assert isinstance(got[1], list) and len(got[1]) == len(want[1]) == batch
    for mine, theirs in zip(got[1], want[1], strict=True):
        _close(mine, theirs)
    if classifier:
        _close(got[2], want[2])


def test_dff_reshape_transform_and_train_mode_left_alone(same_factors):
    model = _small(2).train()
    x = _input(2, (18, 22), seed=3)
    transform = lambda t: t.flip(-1) * 2.0  # noqa: E731
    want = pgc.DeepFeatureFactorization(model, model.features[4], transform)(x, 2)
    got = ours.DeepFeatureFactorization(model, model.features[4], transform)(x, 2)
    assert model.training  # neither library switches the mode
    _close(got[0], want[0])
    _close(np.stack(got[1]), np.stack(want[1]))


def test_run_dff_on_image_parity_given_the_same_factors(same_factors, monkeypatch):
    import matplotlib
    from matplotlib import cm

    # grad-cam 1.5.7 calls matplotlib.cm.get_cmap, which Matplotlib >= 3.9 no longer has
    monkeypatch.setattr(cm, "get_cmap", matplotlib.colormaps.get_cmap, raising=False)
    model = _small(6)
    model.config = SimpleNamespace(id2label={i: f"class {i}, alias {i}, third, fourth" for i in range(10)})
    rgb = np.random.default_rng(4).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    img_pil = Image.fromarray(rgb)
    img_tensor = torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0).float()
    kwargs = {"reshape_transform": None, "n_components": 4, "top_k": 3}  # grad-cam fails without reshape_transform
    want = pgc.run_dff_on_image(model, model.features[4], model.fc, img_pil, img_tensor, **kwargs)
    got = ours.run_dff_on_image(model, model.features[4], model.fc, img_pil, img_tensor, **kwargs)
    assert got.dtype == np.uint8 and got.shape == want.shape == (40, 36 * 3, 3)
    np.testing.assert_array_equal(got[:, :72], want[:, :72])  # the image and the concepts drawn over it
    legend = np.abs(got[:, 72:].astype(int) - want[:, 72:].astype(int))
    assert legend.mean() < 1.0  # Matplotlib's legend, same labels and colours
    assert _no_hooks(model)


def test_dff_bad_arguments():
    model = _small()
    with pytest.raises(TypeError, match="`target_layer`"):
        ours.DeepFeatureFactorization(model, [model.features[4]])
    with pytest.raises(TypeError, match="`computation_on_concepts`"):
        ours.DeepFeatureFactorization(model, model.features[4], computation_on_concepts=3)
    factorization = ours.DeepFeatureFactorization(model, model.features[4])
    with pytest.raises(ValueError, match="`input_tensor`"):
        factorization(torch.rand(3, 20, 20))
    with pytest.raises(ValueError, match="`n_components`"):
        factorization(torch.rand(1, 3, 20, 20), n_components=0)
    with pytest.raises(RuntimeError, match="`target_layer`"):
        ours.DeepFeatureFactorization(model, torch.nn.Conv2d(3, 3, 1))(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match="`activations`"):
        our_dff.dff(np.ones((3, 4, 5), np.float32))
    image = Image.fromarray(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(AttributeError, match="`model`"):
        ours.run_dff_on_image(model, model.features[4], model.fc, image, torch.rand(3, 20, 20))
    model.config = SimpleNamespace(id2label={i: str(i) for i in range(10)})
    with pytest.raises(ValueError, match="`img_tensor`"):
        ours.run_dff_on_image(model, model.features[4], model.fc, image, torch.rand(3, 24, 20))
    assert _no_hooks(model)


def test_dff_runs_the_copy_only_where_the_model_computes_the_same():
    x = _input(2, (24, 20), seed=2)
    model = _small(4)
    fast = ours.DeepFeatureFactorization(model, model.features[4])
    _factors_close(fast(x, 3)[0], pgc.DeepFeatureFactorization(model, model.features[4])(x, 3)[0])
    assert fast._fast_forward.held_copy is not None  # eval mode, no hooks: the optimised copy ran
    flipped = ours.DeepFeatureFactorization(model, model.features[4], lambda t: t.flip(-1)[..., 1:])
    want = pgc.DeepFeatureFactorization(model, model.features[4], lambda t: t.flip(-1)[..., 1:])(x, 3)
    got = flipped(x, 3)  # the copy's activations go through the reshape_transform too
    _factors_close(got[0], want[0])
    np.testing.assert_allclose(np.stack(got[1]), np.stack(want[1]), atol=HEATMAP_TOL, rtol=0)
    assert flipped._fast_forward.held_copy is not None
    # features[2]'s output is modified by the ReLU(inplace=True) after it: grad-cam's hooks see the modified tensor
    in_place = ours.DeepFeatureFactorization(model, model.features[2])
    want = pgc.DeepFeatureFactorization(model, model.features[2])(x, 3)
    for got, expected in zip(in_place(x, 3), want, strict=True):
        _factors_close(np.asarray(got), np.asarray(expected))
    assert in_place._in_place_output  # the next calls skip the copy's forward
    _factors_close(in_place(x, 3)[0], want[0])
    model.train()  # the copy is always in eval mode: the user's model runs
    training = ours.DeepFeatureFactorization(model, model.features[4])
    _factors_close(training(x, 3)[0], pgc.DeepFeatureFactorization(model, model.features[4])(x, 3)[0])
    assert training._fast_forward.held_copy is None and model.training
    assert _no_hooks(model)


@pytest.mark.parametrize("batch", [1, 3])
def test_dff_vit_reshape_transform_equals_gradcam(batch):
    """Token activations through the ViT transform (grad-cam applies it to the hooked output; ours too)."""
    from pytorch_grad_cam.utils import reshape_transforms as pgc_reshape

    from pycam_fast.compat.pytorch_grad_cam.utils import reshape_transforms as our_reshape

    torch.manual_seed(2)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=16, num_classes=5
    ).eval()
    layer = vit.encoder.layers[-1].ln_1
    x = _input(batch, (32, 32), seed=batch)
    want = pgc.DeepFeatureFactorization(vit, layer, lambda t: pgc_reshape.vit_reshape_transform(t, 4, 4))(x, 3)
    got = ours.DeepFeatureFactorization(vit, layer, lambda t: our_reshape.vit_reshape_transform(t, 4, 4))(x, 3)
    _factors_close(got[0], want[0])
    for mine, theirs in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(mine, theirs, atol=HEATMAP_TOL, rtol=0)
    assert _no_hooks(vit)
