"""ClassificationMetric and DeletionInsertionMetric: parity with TorchCAM 0.5.0's, batching, errors, model state."""

from functools import partial

import pytest
import torch
from conftest import SmallCNN

TM = pytest.importorskip("torchcam.metrics")
T = pytest.importorskip("torchcam.methods")

from pycam_fast.compat.torchcam import methods as P  # noqa: E402
from pycam_fast.compat.torchcam import metrics as PM  # noqa: E402

TOL = 1e-9  # float64 sums of a few scores


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest)


def _model(classes=6):
    torch.manual_seed(2)
    return SmallCNN(num_classes=classes).double().eval()


MODEL = _model()
SOFTMAX = partial(torch.softmax, dim=-1)


class FixedCAMs:
    """A TorchCAM-protocol extractor returning given maps (NaN samples included) for any class."""

    def __init__(self, model, cams):
        self.model, self.cams = model, cams

    def __call__(self, class_idx=None, scores=None, normalized=True, *, targets=None, **kwargs):
        return [self.cams]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        from contextlib import nullcontext

        return nullcontext()


def _summaries(make_metric, updates, extractor_lib=T):
    """Same extractor class (TorchCAM's, or ours) fed to both metrics; returns (ours, theirs) summaries."""
    out = []
    for mlib in (PM, TM):
        extractor = extractor_lib.GradCAM(MODEL, "features.3") if extractor_lib is not None else None
        metric = make_metric(mlib, extractor)
        for args, kwargs in updates:
            metric.update(*args, **kwargs)
        out.append((metric.summary(), metric.total, metric.nan_count))
        if extractor is not None:
            extractor.remove_hooks()
    return out


def _close(a, b, tol=TOL):
    (sa, ta, na), (sb, tb, nb) = a, b
    assert ta == tb and na == nb and sa.keys() == sb.keys()
    for key in sa:
        assert abs(sa[key] - sb[key]) <= tol, (key, sa[key], sb[key])


def _batch(n, shape=(3, 13, 11), seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, *shape, dtype=torch.float64)


UPDATES = [
    ((_batch(1),), {}),
    ((_batch(3, seed=1),), {"class_idx": 2}),
    ((_batch(2, seed=2),), {"class_idx": [1, 5]}),
    ((_batch(2, seed=3),), {"targets": lambda o: o[3] - o[0]}),
    ((_batch(2, seed=4),), {"targets": [lambda o: o[1], lambda o: o.max()]}),
]


@pytest.mark.parametrize("logits_fn", [None, SOFTMAX])
def test_classification_parity(logits_fn):
    ours, theirs = _summaries(lambda lib, ex: lib.ClassificationMetric(ex, logits_fn), UPDATES)
    _close(ours, theirs)


def test_classification_parity_with_our_extractor():
    ours = _summaries(lambda lib, ex: PM.ClassificationMetric(ex, SOFTMAX), UPDATES[:3], extractor_lib=P)[0]
    theirs = _summaries(lambda lib, ex: TM.ClassificationMetric(ex, SOFTMAX), UPDATES[:3])[1]
    _close(ours, theirs, tol=1e-6)


@pytest.mark.parametrize(
    ("steps", "baseline", "batch_size"),
    [
        (20, None, None),
        (7, "const", 1),
        (3, "tensor", 5),
        (1, "per_sample", None),
        (500, "callable", 64),
    ],
)
@pytest.mark.parametrize("logits_fn", [None, SOFTMAX])
def test_deletion_insertion_parity(steps, baseline, batch_size, logits_fn):
    torch.manual_seed(9)
    base = {
        None: None,
        "const": torch.tensor(0.25, dtype=torch.float64),
        "tensor": torch.randn(3, 13, 11, dtype=torch.float64),
        "per_sample": None,
        "callable": lambda x: x.flip(-1) * 0.5,
    }[baseline]
    updates = UPDATES if baseline != "per_sample" else UPDATES[1:2]
    if baseline == "per_sample":
        base = torch.randn(3, 3, 13, 11, dtype=torch.float64)

    def make(lib, ex):
        size = batch_size if lib is PM or batch_size is not None else 7  # ours: None = memory budget
        return lib.DeletionInsertionMetric(ex, logits_fn, steps=steps, baseline=base, batch_size=size)

    ours, theirs = _summaries(make, updates)
    _close(ours, theirs)


def test_deletion_insertion_nan_and_chunk_independence():
    x = _batch(3, shape=(3, 6, 5), seed=5)
    cams = torch.rand(3, 3, 5, dtype=torch.float64)
    cams[1, 0, 0] = float("nan")
    results = []
    for metric in (
        TM.DeletionInsertionMetric(FixedCAMs(MODEL, cams), steps=4),
        PM.DeletionInsertionMetric(FixedCAMs(MODEL, cams), steps=4),
        PM.DeletionInsertionMetric(FixedCAMs(MODEL, cams), steps=4, batch_size=1),
        PM.DeletionInsertionMetric(FixedCAMs(MODEL, cams), steps=4, memory_budget=1),
        PM.ClassificationMetric(FixedCAMs(MODEL, cams)),
        TM.ClassificationMetric(FixedCAMs(MODEL, cams)),
    ):
        metric.update(x)
        assert metric.nan_count == 1 and metric.total == 2
        results.append(metric.summary())
    for r in results[1:4]:
        assert r == pytest.approx(results[0], abs=TOL)
    assert results[4] == pytest.approx(results[5], abs=TOL)
    all_nan = PM.ClassificationMetric(FixedCAMs(MODEL, torch.full((3, 3, 5), float("nan"), dtype=torch.float64)))
    all_nan.update(x)
    assert all_nan.nan_count == 3 and all_nan.total == 0


def test_float32_scores_and_reset():
    model = _model().float()
    x = torch.randn(4, 3, 17, 9)
    with P.GradCAM(model, "features.5") as ex_ours, T.GradCAM(model, "features.5") as ex_theirs:
        ours, theirs = (
            PM.DeletionInsertionMetric(ex_ours, SOFTMAX, steps=5),
            TM.DeletionInsertionMetric(ex_theirs, SOFTMAX, steps=5),
        )
        ours.update(x)
        theirs.update(x)
        assert ours.summary() == pytest.approx(theirs.summary(), abs=1e-4)
        ours.reset()
        assert (ours.total, ours.nan_count, ours.deletion, ours.insertion) == (0, 0, 0.0, 0.0)
        with pytest.raises(AssertionError, match="update the metric"):
            ours.summary()


def test_errors_and_model_state():
    model = _model()
    model.train()
    model.features[0].eval()
    with P.GradCAM(model, "features.3") as ex:
        for metric in (PM.ClassificationMetric(ex), PM.DeletionInsertionMetric(ex, steps=3)):
            with pytest.raises(AssertionError, match="update the metric"):
                metric.summary()
            with pytest.raises(ValueError, match="not both"):
                metric.update(_batch(2), class_idx=1, targets=lambda o: o[0])
            with pytest.raises(ValueError, match="out of range"):
                metric.update(_batch(2), class_idx=6)
            with pytest.raises(ValueError, match="match the batch size"):
                metric.update(_batch(2), class_idx=[1])
            with pytest.raises(TypeError, match="class_idx must be"):
                metric.update(_batch(2), class_idx="1")
            metric.update(_batch(2))
            assert model.training and not model.features[0].training and model.features[1].training
        with pytest.raises(ValueError, match="broadcastable"):
            PM.DeletionInsertionMetric(ex, baseline=torch.zeros(2, 2)).update(_batch(2))
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(TypeError, match="steps"):
        PM.DeletionInsertionMetric(None, steps=2.0)
    with pytest.raises(ValueError, match="steps"):
        PM.DeletionInsertionMetric(None, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        PM.DeletionInsertionMetric(None, batch_size=0)
    with pytest.raises(TypeError, match="baseline"):
        PM.DeletionInsertionMetric(None, baseline=3)


def test_model_with_foreign_hooks_is_forwarded_itself():
    model = _model()
    calls = []
    handle = model.fc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        x = _batch(2, seed=7)
        cams = torch.rand(2, 4, 3, dtype=torch.float64)
        ours = PM.DeletionInsertionMetric(FixedCAMs(model, cams), steps=3)
        theirs = TM.DeletionInsertionMetric(FixedCAMs(model, cams), steps=3)
        ours.update(x)
        rows_ours = sum(calls)
        theirs.update(x)
        assert ours.summary() == pytest.approx(theirs.summary(), abs=TOL)
        assert rows_ours == 2 + 2 * 2 * 2 + 1  # explained forward, interior steps, one shared all-baseline row
    finally:
        handle.remove()
