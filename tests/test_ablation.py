"""AblationCAM (tail-only) against pytorch-grad-cam's weights and a whole-forward reference."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import SmallCNN
from torch import Tensor, nn

from pycam_fast.methods.ablation import AblationCAM, ablation_values

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


class SkipNet(nn.Module):
    """A skip connection crosses the target layer ``body.1``: no tail split possible."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))
        self.fc = nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        return self.fc((self.body(s) + s).mean((2, 3)))


def _pgc_weights(model: nn.Module, layer: str, x: Tensor, classes: list[int], batch_size: int) -> Tensor:
    module = dict(model.named_modules())[layer]
    acts = {}
    handle = module.register_forward_hook(lambda _m, _i, o: acts.setdefault("a", o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    cam = pgc.AblationCAM(model, [module], batch_size=batch_size)
    targets = [ClassifierOutputTarget(c) for c in classes]
    weights = cam.get_cam_weights(x, module, targets, acts["a"].numpy(), None)
    return torch.from_numpy(weights)


def _ours(model: nn.Module, layer: str, x: Tensor, classes: list[int], **kwargs) -> Tensor:
    with AblationCAM(model, layer, input_shape=tuple(x.shape[1:]), **kwargs) as cam:
        out = model(x)
        return cam.ablation_weights(classes, out)[0]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layer", ["features", "features.4"])  # ReLU output (value 0) / conv output (min - 1e7)
def test_matches_pytorch_grad_cam(layer: str, batch: int) -> None:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(batch, 3, 13, 17)
    classes = [3, 7, 1][:batch]
    # pgc with batch_size=1 ablates one channel per forward: no cascade of its in-place minimum
    ref = _pgc_weights(model, layer, x, classes, batch_size=1)
    ours = _ours(model, layer, x, classes, batch_size=5)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_callable_rule_reproduces_pgc_cascade() -> None:
    torch.manual_seed(1)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 11, 11)
    chunk = 4

    def cascade(acts: Tensor) -> Tensor:
        low = acts.flatten(1).amin(1, keepdim=True)
        pos = torch.arange(acts.shape[1]) % chunk + 1
        return low - pos * 1e7

    ref = _pgc_weights(model, "features.4", x, [2, 5], batch_size=chunk)
    ours = _ours(model, "features.4", x, [2, 5], ablation_value=cascade)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def _full_forward_reference(model: nn.Module, layer: str, x: Tensor, cls: int) -> Tensor:
    """One whole forward per (sample, channel) with the channel zeroed by a hook."""
    module = dict(model.named_modules())[layer]
    with torch.no_grad():
        y = model(x)[:, cls]
        acts = {}
        h = module.register_forward_hook(lambda _m, _i, o: acts.setdefault("a", o))
        model(x)
        h.remove()
        num_ch = acts["a"].shape[1]
        values = ablation_values(acts["a"], {"ablation_value": "auto"})
        weights = torch.empty(x.shape[0], num_ch, dtype=x.dtype)
        for n in range(x.shape[0]):
            for c in range(num_ch):

                def _ablate(_m, _i, o, n=n, c=c):
                    o = o.clone()
                    o[:, c] = values[n, c]
                    return o

                h = module.register_forward_hook(_ablate)
                y_k = model(x[n : n + 1])[0, cls]
                h.remove()
                weights[n, c] = (y[n] - y_k) / y[n]
    return weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_skip_connection_falls_back(dtype: torch.dtype, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(2)
    model = SkipNet().eval().to(dtype)
    x = torch.randn(2, 3, 9, 7, dtype=dtype)
    with caplog.at_level(logging.WARNING, logger="pycam_fast"):
        cam = AblationCAM(model, "body.1", batch_size=4, input_shape=(3, 9, 7))
    assert cam.uses_tail == {"body.1": False}
    out = model(x)
    ours = cam.ablation_weights(1, out)[0]
    cam.remove_hooks()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ours, _full_forward_reference(model, "body.1", x, 1), rtol=tol, atol=tol)


def test_tail_equals_full_forward_and_chunk_independent() -> None:
    torch.manual_seed(3)
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 10, 12)
    ref = _full_forward_reference(model, "features.2", x, 4)
    for bs in (1, 7, 100):
        with AblationCAM(model, "features.2", batch_size=bs, input_shape=(3, 10, 12)) as cam:
            assert cam.uses_tail == {"features.2": True}
            model(x)
            torch.testing.assert_close(cam.ablation_weights(4)[0], ref, rtol=1e-4, atol=1e-5)


def test_call_api_and_hooks_released() -> None:
    torch.manual_seed(4)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 12, 12)
    with AblationCAM(model, "features", input_shape=(3, 12, 12)) as cam:
        out = model(x)
        (maps,) = cam([1, 2], out)
        (maps_no_scores,) = cam([1, 2])
        (maps_targets,) = cam(targets=[lambda o: o[1], lambda o: o[2]], scores=out)
        (sized,) = cam(1, out, output_size=(12, 12))
    assert maps.shape == (2, 6, 6) and sized.shape == (2, 12, 12)
    assert maps.min() >= 0 and maps.max() <= 1
    torch.testing.assert_close(maps, maps_no_scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps, maps_targets)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_bad_arguments() -> None:
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="batch_size"):
        AblationCAM(model, "features", batch_size=0)
    with pytest.raises(ValueError, match="ablation_value"):
        AblationCAM(model, "features", ablation_value="min")
    with pytest.raises(ValueError, match="reshape_transform"):
        AblationCAM(model, "features", reshape_transform=lambda t: t)
    with pytest.raises(ValueError, match="N, C"):
        ablation_values(torch.zeros(2, 3, 4, 4), {"ablation_value": lambda a: torch.zeros(5)})
