"""``pycam_fast.compat.pytorch_grad_cam.metrics`` against grad-cam 1.5.7's ``pytorch_grad_cam.metrics``: every module
path and public name, the same numbers (scores, perturbed batches, imputations with the same seeded noise), clear
errors for bad inputs, and no hook left on the model."""

import copy
import importlib
import warnings

import numpy as np
import pytest
import torch
from conftest import SmallCNN, random_batch_norm
from torch import nn

pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("cv2")

from pytorch_grad_cam import GradCAM as TheirGradCAM
from pytorch_grad_cam.metrics import arcc as t_arcc
from pytorch_grad_cam.metrics import cam_mult_image as t_mult
from pytorch_grad_cam.metrics import perturbation_confidence as t_pc
from pytorch_grad_cam.metrics import road as t_road
from pytorch_grad_cam.utils import model_targets as t_targets

from pycam_fast.compat.pytorch_grad_cam import GradCAM as OurGradCAM
from pycam_fast.compat.pytorch_grad_cam.metrics import arcc as o_arcc
from pycam_fast.compat.pytorch_grad_cam.metrics import cam_mult_image as o_mult
from pycam_fast.compat.pytorch_grad_cam.metrics import perturbation_confidence as o_pc
from pycam_fast.compat.pytorch_grad_cam.metrics import road as o_road
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as o_targets

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
MODULES = ["cam_mult_image", "perturbation_confidence", "road", "arcc"]
SHAPE = (3, 29, 37)


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


def _data(batch: int, seed: int = 0, levels: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Inputs and smooth CAMs in [0, 1] (``levels``: quantised, so that percentiles fall on ties)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *SHAPE, generator=gen)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    rng = np.random.default_rng(seed)
    cams = []
    for _ in range(batch):
        cy, cx, width = rng.uniform(0, SHAPE[1]), rng.uniform(0, SHAPE[2]), rng.uniform(20, 120)
        cam = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / width) + 0.05 * rng.random(yy.shape)
        cams.append(cam / cam.max())
    cams = np.float32(cams)
    return x, (np.round(cams * levels) / levels).astype(np.float32) if levels else cams


def _targets(kind: str, batch: int) -> tuple[list, list]:
    classes = [(3 * i + 1) % 10 for i in range(batch)]
    name = {"logit": "ClassifierOutputTarget", "softmax": "ClassifierOutputSoftmaxTarget"}[kind]
    return [getattr(t_targets, name)(c) for c in classes], [getattr(o_targets, name)(c) for c in classes]


def _both(theirs, ours, args_theirs, args_ours, seed: int = 7, **kwargs):
    """Both results from the same torch seed (ROAD's noise comes from torch's global generator)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        expected = theirs(*args_theirs, **kwargs)
        torch.manual_seed(seed)
        got = ours(*args_ours, **kwargs)
    return expected, got


def _assert_same(expected, got) -> None:
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected)
        for e, g in zip(expected, got, strict=True):
            _assert_same(e, g)
        return
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype
        torch.testing.assert_close(got, expected, atol=TOL, rtol=0, equal_nan=True)
        return
    expected, got = np.asarray(expected), np.asarray(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.dtype)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0, equal_nan=True)


# -- layout --------------------------------------------------------------------------------------------------------
def _public(module) -> list[str]:
    return sorted(
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
    )


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_at_every_module_path(name):
    theirs = importlib.import_module(f"pytorch_grad_cam.metrics.{name}")
    ours = importlib.import_module(f"pycam_fast.compat.pytorch_grad_cam.metrics.{name}")
    assert _public(theirs), "the peer module defines public names"
    for public in _public(theirs):
        assert hasattr(ours, public), f"metrics.{name} lacks {public}"
        if isinstance(getattr(theirs, public), type):
            assert isinstance(getattr(ours, public), type)
    importlib.import_module("pycam_fast.compat.pytorch_grad_cam.metrics")


def test_module_constants_and_static_helpers():
    assert o_road.neighbors_weights == t_road.neighbors_weights
    indices = np.arange(0, 29 * 37, 5)
    for offset in [(1, 1), (-1, 0), (0, -1)]:
        e_valid, e_idx = t_road.NoisyLinearImputer.add_offset_to_indices(indices.copy(), offset, (29, 37))
        g_valid, g_idx = o_road.NoisyLinearImputer.add_offset_to_indices(indices.copy(), offset, (29, 37))
        np.testing.assert_array_equal(g_valid, e_valid)
        np.testing.assert_array_equal(g_idx[g_valid], e_idx[e_valid])


# -- cam_mult_image ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("kind", ["logit", "softmax"])
def test_cam_mult_parity(model, cls, batch, kind):
    x, cams = _data(batch, seed=batch)
    t_t, o_t = _targets(kind, batch)
    expected, got = _both(getattr(t_mult, cls)(), getattr(o_mult, cls)(), (x, cams, t_t, model), (x, cams, o_t, model))
    _assert_same(expected, got)


@pytest.mark.parametrize("return_diff", [True, False])
def test_cam_mult_options_parity(model, return_diff):
    x, cams = _data(3, seed=11)
    t_t, o_t = _targets("softmax", 3)
    metric_t, metric_o = t_mult.CamMultImageConfidenceChange(), o_mult.CamMultImageConfidenceChange()
    kwargs = {"return_visualization": True, "return_diff": return_diff}
    _assert_same(*_both(metric_t, metric_o, (x, cams, t_t, model), (x, cams, o_t, model), **kwargs))


# -- perturbation_confidence: generic pieces ------------------------------------------------------------------------
def test_foreign_perturbation_and_foreign_target(model):
    x, cams = _data(3, seed=5)

    def perturb(tensor, cam):
        return tensor * (cam > 0.4) - 0.5 * cam

    def target(row):
        return 2 * row[2] - row[5]

    expected, got = _both(
        t_pc.PerturbationConfidenceMetric(perturb),
        o_pc.PerturbationConfidenceMetric(perturb),
        (x, cams, [target] * 3, model),
        (x, cams, [target] * 3, model),
        return_visualization=True,
    )
    _assert_same(expected, got)


def test_non_scalar_target_keeps_grad_cams_shape(model):
    x, cams = _data(2, seed=6)

    def target(row):
        return row[1:2]  # (1,) per sample: grad-cam's result is (N, 1)

    expected, got = _both(
        t_mult.CamMultImageConfidenceChange(),
        o_mult.CamMultImageConfidenceChange(),
        *[(x, cams, [target] * 2, model)] * 2,
    )
    assert np.asarray(expected).shape == (2, 1)
    _assert_same(expected, got)


def test_remove_relevant_first_with_a_custom_imputer():
    x, cams = _data(1, seed=9, levels=5)

    def imputer(tensor, mask):
        return tensor * mask

    for cls in ["RemoveMostRelevantFirst", "RemoveLeastRelevantFirst"]:
        for pct in [30, 50, "auto"]:
            expected = getattr(t_pc, cls)(pct, imputer)(x[0], torch.from_numpy(cams[0]))
            got = getattr(o_pc, cls)(pct, imputer)(x[0], torch.from_numpy(cams[0]))
            _assert_same(expected, got)


def test_averager_with_foreign_metrics(model):
    x, cams = _data(2, seed=3)
    t_t, o_t = _targets("logit", 2)

    class Theirs(t_mult.DropInConfidence):
        def __init__(self, _percentile):
            super().__init__()

    class Ours(o_mult.DropInConfidence):
        def __init__(self, _percentile):
            super().__init__()

    expected = t_pc.AveragerAcrossThresholds(Theirs, [10, 60])(x, cams, t_t, model)
    got = o_pc.AveragerAcrossThresholds(Ours, [10, 60])(x, cams, o_t, model)
    _assert_same(expected, got)


# -- road ----------------------------------------------------------------------------------------------------------
def _road_parity(model, cls: str, percentile, x, cams, kind: str, **kwargs) -> None:
    t_t, o_t = _targets(kind, x.shape[0])
    theirs, ours = getattr(t_road, cls)(percentile), getattr(o_road, cls)(percentile)
    expected, got = _both(
        theirs, ours, (x, cams, t_t, model), (x, cams, o_t, model), return_visualization=True, **kwargs
    )
    _assert_same(expected, got)


@pytest.mark.parametrize("cls", ["ROADMostRelevantFirst", "ROADLeastRelevantFirst"])
@pytest.mark.parametrize(
    ("batch", "percentile", "kind"), [(1, 10, "logit"), (3, 55, "softmax"), (2, 90, "logit"), (2, "auto", "softmax")]
)
def test_road_parity_with_seeded_noise(model, cls, batch, percentile, kind):
    _road_parity(model, cls, percentile, *_data(batch, seed=batch + 20), kind)


@pytest.mark.parametrize("percentile", [20, 50, 75])
def test_road_ties_at_the_threshold_and_no_diff(model, percentile):
    x, cams = _data(2, seed=4, levels=4)  # few distinct values: the percentiles fall on ties
    for cls in ["ROADMostRelevantFirst", "ROADLeastRelevantFirst"]:
        _road_parity(model, cls, percentile, x, cams, "logit", return_diff=False)


@pytest.mark.parametrize("noise", [0.0, 0.05])
@pytest.mark.parametrize("channels", [1, 3])
def test_noisy_linear_imputer_parity(noise, channels):
    gen = torch.Generator().manual_seed(channels)
    img = torch.randn(channels, 23, 31, generator=gen)
    mask = (torch.rand(23, 31, generator=gen) > 0.7).float()
    expected, got = _both(t_road.NoisyLinearImputer(noise), o_road.NoisyLinearImputer(noise), (img, mask), (img, mask))
    _assert_same(expected, got)
    a_t, b_t = t_road.NoisyLinearImputer.setup_sparse_system(mask.numpy(), img.numpy(), t_road.neighbors_weights)
    a_o, b_o = o_road.NoisyLinearImputer.setup_sparse_system(mask.numpy(), img.numpy(), o_road.neighbors_weights)
    np.testing.assert_allclose(a_o.toarray(), a_t.toarray(), atol=1e-15)
    np.testing.assert_allclose(b_o, b_t, atol=1e-12)


def test_imputation_without_known_pixels_matches_and_spares_the_others(model):
    x, cams = _data(4, seed=8)
    cams[[1, 3]] = 0.5  # constant CAMs: every pixel is imputed, a singular system (grad-cam: NaN)
    t_t, o_t = _targets("logit", 4)
    expected, got = _both(
        t_road.ROADMostRelevantFirst(40),
        o_road.ROADMostRelevantFirst(40),
        (x, cams, t_t, model),
        (x, cams, o_t, model),
        return_visualization=True,
    )
    _assert_same(expected, got)
    assert np.isfinite(got[0][[0, 2]]).all()


@pytest.mark.parametrize("batch", [1, 3])
def test_road_averages_and_combined_parity(model, batch):
    x, cams = _data(batch, seed=30 + batch)
    t_t, o_t = _targets("softmax", batch)
    args = ((x, cams, t_t, model), (x, cams, o_t, model))
    _assert_same(
        *_both(t_road.ROADMostRelevantFirstAverage([15, 50]), o_road.ROADMostRelevantFirstAverage([15, 50]), *args)
    )
    _assert_same(
        *_both(t_road.ROADLeastRelevantFirstAverage([35, 80]), o_road.ROADLeastRelevantFirstAverage([35, 80]), *args)
    )
    _assert_same(*_both(t_road.ROADCombined(), o_road.ROADCombined(), *args))


# -- arcc ----------------------------------------------------------------------------------------------------------
def test_complexity_and_pearson_parity():
    _, cams = _data(3, seed=2)
    other = np.flip(cams, axis=2).copy()
    _assert_same(t_arcc.Complexity()(cams), o_arcc.Complexity()(cams))
    _assert_same(t_arcc.batch_pearson_coherency(cams, other), o_arcc.batch_pearson_coherency(cams, other))


@pytest.mark.parametrize("batch", [1, 2])
def test_coherency_and_arcc_parity(model, batch):
    x, _ = _data(batch, seed=40 + batch)
    t_t, o_t = _targets("logit", batch)
    their_cam = TheirGradCAM(model, target_layers=[model.features[4]])
    our_cam = OurGradCAM(model, target_layers=[model.features[4]])
    cams_t, cams_o = their_cam(input_tensor=x, targets=t_t), our_cam(input_tensor=x, targets=o_t)
    _assert_same(cams_t, cams_o)
    args = ((x, cams_t, t_t, model), (x, cams_t, o_t, model))
    _assert_same(
        *_both(lambda *a: t_arcc.Coherency()(*a, their_cam), lambda *a: o_arcc.Coherency()(*a, our_cam), *args)
    )
    _assert_same(*_both(t_arcc.ARCC(their_cam, [30, 70]), o_arcc.ARCC(our_cam, [30, 70]), *args))


# -- model states ---------------------------------------------------------------------------------------------------
def _bn_model() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    return random_batch_norm(net, 0.5)


@pytest.mark.parametrize("mode", ["eval", "train", "hooked"])
def test_model_states_parity(mode):
    """BN-folded private copy (eval), the model itself in grad-cam's batches (train), a model with a user hook."""
    x, cams = _data(3, seed=50)
    t_t, o_t = _targets("softmax", 3)
    t_t, o_t = (
        [t_targets.ClassifierOutputSoftmaxTarget(i % 5) for i in range(3)],
        [o_targets.ClassifierOutputSoftmaxTarget(i % 5) for i in range(3)],
    )
    theirs_model = _bn_model().train(mode == "train")
    ours_model = copy.deepcopy(theirs_model)
    if mode == "hooked":
        for net in (theirs_model, ours_model):
            net[2].register_forward_hook(lambda _m, _i, out: out * 0.5)
    expected, got = _both(
        t_road.ROADCombined([25, 60]),
        o_road.ROADCombined([25, 60]),
        (x, cams, t_t, theirs_model),
        (x, cams, o_t, ours_model),
    )
    _assert_same(expected, got)
    for a, b in zip(theirs_model.state_dict().values(), ours_model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a)  # the same batch statistics updates in training mode


# -- errors and hooks -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "argument", "error"),
    [
        (lambda x, cams, t: (x, torch.from_numpy(cams), t), "cams", TypeError),
        (lambda x, cams, t: (x, cams[:, :-1], t), "cams", ValueError),
        (lambda x, cams, t: (x, cams[:1], t), "cams", ValueError),
        (lambda x, cams, t: (x, cams, None), "targets", TypeError),
        (lambda x, cams, t: (x, cams, [1, 2]), "targets", TypeError),
        (lambda x, cams, t: (x.numpy(), cams, t), "input_tensor", TypeError),
    ],
)
@pytest.mark.parametrize("cls", [o_mult.DropInConfidence, o_road.ROADMostRelevantFirst, o_road.ROADCombined])
def test_bad_inputs_name_the_argument(model, make, argument, error, cls):
    x, cams = _data(2, seed=1)
    _, o_t = _targets("logit", 2)
    with pytest.raises(error, match=f"`{argument}`"):
        cls()(*make(x, cams, o_t), model)


def _hook_count(net: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in net.modules()
    )


def test_no_hook_left_on_the_model(model):
    x, cams = _data(2, seed=12)
    _, o_t = _targets("softmax", 2)
    before = _hook_count(model)
    o_mult.IncreaseInConfidence()(x, cams, o_t, model)
    o_road.ROADLeastRelevantFirstAverage([40])(x, cams, o_t, model)
    o_arcc.ARCC(OurGradCAM(model, target_layers=[model.features[0]]), [50])(x, cams, o_t, model)
    assert _hook_count(model) == before


def _imputation_problem(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 21, 27, generator=gen)
    masks = (torch.rand(batch, 21, 27, generator=gen) > torch.linspace(0.2, 0.95, batch).view(-1, 1, 1)).float()
    masks[0, :, :] = 1.0  # an image without unknowns
    masks[0, 4, 5] = 0.0  # ... but one isolated unknown pixel (bandwidth 0)
    masks[-1, 3:8, 2:20] = 0.3  # neither known nor imputed (grad-cam reads masks as binary)
    return images, masks


def test_banded_solution_equals_superlu_and_a_dense_solve(monkeypatch):
    """Per-image banded Cholesky, SuperLU and a dense solve of the same systems agree."""
    images, masks = _imputation_problem(5, seed=3)
    rows, cols, vals, rhs, _ = o_road._assemble(images, masks, o_road.neighbors_weights)
    dense = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (rhs.shape[0],) * 2).to_dense()
    expected = torch.linalg.solve(dense, rhs).numpy()
    np.testing.assert_allclose(o_road._banded_solution(images, masks), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(o_road._solve(rows, cols, vals, rhs, definite=True), expected, rtol=0, atol=1e-10)
    monkeypatch.setattr(o_road, "BANDED_MAX_BANDWIDTH", 0)  # the bandwidth of the other images is above it
    assert o_road._banded_solution(images, masks) is None
    np.testing.assert_allclose(o_road._group_solution(images, masks, "definite"), expected, rtol=0, atol=1e-10)


def test_cholesky_solve_declines_an_indefinite_band():
    band = np.array([[0.0, 2.0], [1.0, 1.0]])  # upper band storage of [[1, 2], [2, 1]]: eigenvalues 3 and -1
    assert o_road._cholesky_solve(band, np.ones((2, 3))) is None
    spd = np.array([[0.0, -1.0], [2.0, 2.0]])  # [[2, -1], [-1, 2]]
    np.testing.assert_allclose(o_road._cholesky_solve(spd, np.ones((2, 1))), np.ones((2, 1)))
