"""Every method end to end: the compiled backends give the maps of the pure-torch reference."""

import pytest
import torch
from conftest import SmallCNN

import pycam_fast
from pycam_fast import methods
from pycam_fast.compat import torchcam as compat

CLASSES = [
    methods.CAM,
    methods.GradCAM,
    methods.GradCAMpp,
    compat.GradCAMpp,
    methods.SmoothGradCAMpp,
    methods.XGradCAM,
    methods.LayerCAM,
    methods.ScoreCAM,
    methods.SSCAM,
    methods.ISCAM,
]
KW = {methods.SSCAM: {"num_samples": 2}, methods.ISCAM: {"num_samples": 2}, methods.SmoothGradCAMpp: {"num_samples": 2}}
CPU_BACKENDS = [
    n for n, e in pycam_fast.backends().items() if n != "torch" and e["available"] and "cpu" in e["devices"]
]


def _maps(cls, model, x, backend, output_size, class_idx):
    layers = "features.4" if cls is methods.CAM else ["features.4", "features.2"]
    kw = {**KW.get(cls, {}), **({"batch_size": 7} if issubclass(cls, methods.ScoreCAM) else {})}
    with cls(model, layers, backend=backend, **kw) as extractor:
        scores = model(x)
        torch.manual_seed(3)
        return extractor(class_idx, scores, output_size=output_size)


@pytest.mark.skipif(not CPU_BACKENDS, reason="no compiled backend runs on CPU in this install")
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__.split('.')[-1]}.{c.__name__}")
@pytest.mark.parametrize(
    ("dims", "batch", "dtype", "output_size"),
    [
        (2, 1, torch.float32, None),
        (2, 3, torch.float64, (13, 29)),
        (3, 2, torch.float32, (3, 7, 5)),
    ],
)
def test_backend_matches_torch(backend, cls, dims, batch, dtype, output_size):
    torch.manual_seed(0)
    model = SmallCNN(dims=dims).to(dtype).eval()
    shape = {2: (3, 9, 11), 3: (3, 4, 6, 5)}[dims]
    x = torch.rand(batch, *shape, dtype=dtype)
    class_idx = 2 if batch == 1 else list(range(batch))
    expected = _maps(cls, model, x, "torch", output_size, class_idx)
    got = _maps(cls, model, x, backend, output_size, class_idx)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, atol=tol, rtol=0)
