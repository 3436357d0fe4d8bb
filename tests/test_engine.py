"""Explainer engine: tail-only / closed-form gradients, fast Score-CAM family, chunking, model left untouched."""

from __future__ import annotations

import pytest
import torch
from conftest import SmallCNN
from torch import Tensor, nn

from pycam_fast.engine.explainer import Explainer
from pycam_fast.forward.chunking import run_chunked
from pycam_fast.forward.scoring import ScorePlan, masked_scores
from pycam_fast.forward.tail import linear_head, linear_head_grads, split_tail
from pycam_fast.methods import ISCAM, SSCAM, GradCAM, GradCAMpp, LayerCAM, ScoreCAM, SmoothGradCAMpp, XGradCAM
from pycam_fast.methods.ablation import AblationCAM
from pycam_fast.ops.reference import masked_inputs

DROP_IN = {"gradcam": GradCAM, "gradcampp": GradCAMpp, "xgradcam": XGradCAM, "layercam": LayerCAM}


def _model(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN().eval().to(dtype)


def _drop_in(cls: type, model: nn.Module, layer: str, x: Tensor, cls_idx: list[int], **kwargs) -> Tensor:
    with cls(model, layer, input_shape=tuple(x.shape[1:]), **kwargs) as cam:
        with torch.enable_grad():
            out = model(x)
        return cam(cls_idx, out, output_size=tuple(x.shape[2:]))[0]


def test_linear_head_closed_form_matches_autograd() -> None:
    model = _model(torch.float64)
    split = split_tail(model, "features")
    head = linear_head(split.tail)
    assert head is not None and linear_head(split_tail(model, "features.2").tail) is None
    acts = torch.randn(3, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    cls = torch.tensor([1, 9, 4])
    (grad,) = torch.autograd.grad(split.tail(acts).gather(1, cls[:, None]).sum(), acts)
    torch.testing.assert_close(linear_head_grads(head, cls, acts.detach()), grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layer", ["features", "features.3"])  # closed form / tail-only autograd
@pytest.mark.parametrize("method", sorted(DROP_IN))
def test_gradient_methods_match_drop_in(method: str, layer: str, batch: int, dtype: torch.dtype) -> None:
    model = _model(dtype)
    x = torch.randn(batch, 3, 13, 19, dtype=dtype)
    explainer = Explainer(model, method, layer)
    cams = explainer(x)
    assert explainer.closed_form == (layer == "features")
    ref = _drop_in(DROP_IN[method], model, layer, x, explainer.logits.argmax(1).tolist())
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(cams, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("layer", ["features", "features.3"])
def test_smoothgradcampp_matches_drop_in(layer: str) -> None:
    model = _model()
    x = torch.randn(2, 3, 11, 9)
    torch.manual_seed(5)
    cams = Explainer(model, "SmoothGradCAMpp", layer, num_samples=3, std=0.5)(x, class_idx=[2, 6])
    torch.manual_seed(5)
    ref = _drop_in(SmoothGradCAMpp, model, layer, x, [2, 6], num_samples=3, std=0.5)
    torch.testing.assert_close(cams, ref, rtol=1e-5, atol=1e-5)


def test_targets_and_class_idx_forms() -> None:
    model = _model()
    x = torch.randn(2, 3, 12, 12)
    explainer = Explainer(model, "gradcam", "features", output_size=None)
    by_list = explainer(x, class_idx=[3, 3])
    torch.testing.assert_close(explainer(x, class_idx=3), by_list)
    torch.testing.assert_close(explainer(x, class_idx=torch.tensor([3, 3])), by_list)
    torch.testing.assert_close(explainer(x, targets=lambda o: o[3]), by_list, rtol=1e-5, atol=1e-6)
    assert by_list.shape == (2, 6, 6)
    with pytest.raises(ValueError, match="class_idx"):
        explainer(x, class_idx=[1])
    with pytest.raises(IndexError):
        explainer(x, class_idx=10)


def test_model_left_untouched() -> None:
    model = _model().train()
    model.features[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(2, 3, 10, 10)
    for method in ("gradcam", "layercam", "scorecam", "ablationcam"):
        with torch.no_grad():
            Explainer(model, method, "features.2", batch_size=8)(x)
        assert torch.is_grad_enabled() and model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        assert next(model.parameters()).is_contiguous()


def test_map_streams_batches() -> None:
    model = _model()
    batches = [(torch.randn(2, 3, 8, 8), torch.tensor([0, 1])), torch.randn(3, 3, 8, 8)]
    explainer = Explainer(model, "gradcam", "features")
    results = list(explainer.map(batches))
    assert [c.shape for c, _ in results] == [(2, 8, 8), (3, 8, 8)]
    torch.testing.assert_close(results[1][1], model(batches[1]).detach())


def _constant_channel_model() -> nn.Module:
    model = _model(seed=1)
    with torch.no_grad():  # channels 0..5 of the target become constant 0 after the ReLU
        model.features[4].weight[:6] = 0
        model.features[4].bias[:6] = -1
    return model


@pytest.mark.parametrize("method", ["scorecam", "iscam"])
def test_score_family_matches_drop_in(method: str) -> None:
    model = _constant_channel_model()
    x = torch.randn(2, 3, 9, 13)
    kwargs = {"num_samples": 3} if method == "iscam" else {}
    cams = Explainer(model, method, "features", batch_size=5, **kwargs)(x, class_idx=[1, 4])
    cls = ScoreCAM if method == "scorecam" else ISCAM
    with cls(model, "features", batch_size=7, input_shape=(3, 9, 13), **kwargs) as cam:
        model(x)
        ref = cam([1, 4], output_size=(9, 13))[0]
    torch.testing.assert_close(cams, ref, rtol=1e-4, atol=1e-5)


def test_sscam_matches_drop_in() -> None:
    model = _model()
    x = torch.randn(1, 3, 8, 8)
    torch.manual_seed(3)
    cams = Explainer(model, "sscam", "features", num_samples=2, std=1.0)(x, class_idx=2)
    with SSCAM(model, "features", num_samples=2, std=1.0, input_shape=(3, 8, 8)) as cam:
        model(x)
        torch.manual_seed(3)
        ref = cam(2, output_size=(8, 8))[0]
    torch.testing.assert_close(cams, ref, rtol=1e-4, atol=1e-5)


def _weights(model: nn.Module, act: Tensor, x: Tensor, **plan: object) -> Tensor:
    with torch.no_grad():
        return torch.softmax(masked_scores(model, act, x, [1, 2, 0], None, ScorePlan(backend="torch", **plan)), -1)


def test_dedup_and_chunking_are_exact() -> None:
    model = _constant_channel_model()
    x = torch.randn(3, 3, 10, 10)
    act = model.features(x).detach()
    assert (act.flatten(2).amax(-1) == 0).sum() >= 18
    plain = _weights(model, act, x, chunk=64, dedup_constant=False)
    for chunk in (1, 5, 48):
        torch.testing.assert_close(_weights(model, act, x, chunk=chunk), plain, rtol=1e-5, atol=1e-7)
    passes = [{"scale": 0.5}, {"scale": 1.5}]
    torch.testing.assert_close(
        _weights(model, act, x, chunk=4, passes=passes),
        _weights(model, act, x, chunk=64, passes=[dict(p) for p in passes], dedup_constant=False),
        rtol=1e-5,
        atol=1e-7,
    )


def test_top_k() -> None:
    model = _model()
    x = torch.randn(3, 3, 10, 10)
    act = model.features(x).detach()
    exact = _weights(model, act, x)
    torch.testing.assert_close(_weights(model, act, x, top_k=16), exact)
    approx = _weights(model, act, x, top_k=4)
    assert ((approx > 0).sum(1) <= 4).all()
    torch.testing.assert_close(approx.sum(1), torch.ones(3))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_within_tolerance(precision: str) -> None:
    """Documented tolerance: normalised maps within 0.05 of fp32 (weights use fp32 scores)."""
    model = _model()
    x = torch.randn(2, 3, 12, 12)
    exact = Explainer(model, "scorecam", "features")(x, class_idx=[0, 5])
    fast = Explainer(model, "scorecam", "features", precision=precision, channels_last=True)(x, class_idx=[0, 5])
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().max() < 0.05


def test_compiled_masked_forwards_pad_the_last_chunk() -> None:
    """``compile=True``: same maps, one graph for every chunk (the last chunk and the zero input are padded)."""
    from torch._dynamo.utils import counters

    model = _constant_channel_model()
    x = torch.randn(2, 3, 9, 13)
    exact = Explainer(model, "scorecam", "features", batch_size=7)(x, class_idx=[1, 4])
    torch._dynamo.reset()
    counters.clear()
    explainer = Explainer(model, "scorecam", "features", batch_size=7, compile=True)
    fast = explainer(x, class_idx=[1, 4])
    torch.testing.assert_close(fast, exact, rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
    assert fast.shape == (2, 9, 13) and explainer._fast._batch == 7


def test_oom_retry_halves_chunks() -> None:
    done, sizes = [], []

    def fn(start: int, stop: int) -> None:
        sizes.append(stop - start)
        if stop - start > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        done.extend(range(start, stop))

    assert run_chunked(fn, 10, 16) == 2
    assert done == list(range(10)) and sizes[:4] == [10, 8, 4, 2]
    with pytest.raises(RuntimeError, match="boom"):
        run_chunked(lambda a, b: (_ for _ in ()).throw(RuntimeError("boom")), 3, 2)


def test_masked_inputs_used_by_engine_is_the_reference_op() -> None:
    act, x = torch.rand(1, 2, 3, 3), torch.rand(1, 3, 6, 6)
    assert masked_inputs(act, x, 0, 2).shape == (2, 3, 6, 6)


def test_ablationcam_engine_matches_class() -> None:
    model = _model()
    x = torch.randn(2, 3, 10, 10)
    cams = Explainer(model, "ablationcam", "features", batch_size=6)(x, class_idx=[3, 8])
    with AblationCAM(model, "features", input_shape=(3, 10, 10)) as cam:
        out = model(x)
        ref = cam([3, 8], out, output_size=(10, 10))[0]
    torch.testing.assert_close(cams, ref, rtol=1e-5, atol=1e-5)


def test_cam_method_uses_fc_weights() -> None:
    model = _model()
    x = torch.randn(2, 3, 10, 10)
    from pycam_fast.methods import CAM

    cams = Explainer(model, "CAM", "features")(x, class_idx=1)
    with CAM(model, "features", fc_layer="fc", input_shape=(3, 10, 10)) as cam:
        model(x)
        torch.testing.assert_close(cams, cam(1, output_size=(10, 10))[0])
    with pytest.raises(ValueError, match="tail"):
        Explainer(model, "cam", "features.2")(x)


def test_bad_arguments() -> None:
    model = _model()
    with pytest.raises(ValueError, match="method"):
        Explainer(model, "gradcam++")
    with pytest.raises(TypeError, match="top_k"):
        Explainer(model, "gradcam", top_k=3)
    with pytest.raises(ValueError, match="precision"):
        Explainer(model, "scorecam", precision="int8")
    with pytest.raises(ValueError, match="output_size"):
        Explainer(model, "scorecam", output_size="big")
    with pytest.raises(ValueError, match="top_k"):
        Explainer(model, "scorecam", top_k=0)


def test_tail_forward_several_targets_matches_full_autograd() -> None:
    from pycam_fast.forward.tail_forward import tail_forward

    model = _model(torch.float64)
    x = torch.randn(3, 3, 12, 10, dtype=torch.float64)
    layers = [model.features[4], model.features[1]]  # any order; features.3 is an in-place ReLU after features.2
    outs = {}
    handles = [m.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o)) for k, m in enumerate(layers)]
    try:
        score = model(x.requires_grad_())[:, 4].sum()
        ref = torch.autograd.grad(score, [outs[0], outs[1]])
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():  # the caller's grad mode does not matter and is restored
        fwd = tail_forward(model, layers, x.detach(), record=True)
        assert not torch.is_grad_enabled()
    grads = fwd.all_grads(fwd.output[:, 4])
    for grad, expected, act, out in zip(grads, ref, fwd.activations, (outs[0], outs[1]), strict=True):
        torch.testing.assert_close(grad, expected)
        torch.testing.assert_close(act, out.detach())
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="record"):
        tail_forward(model, layers, x.detach(), record=False).all_grads(fwd.output[:, 4])


def test_fast_model_keeps_target_convs_and_drops_hooks() -> None:
    from pycam_fast.forward.private_copy import FastModel, _module_hooks, parameter_versions

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)).eval()
    owner = {"calls": 0}
    handle = model[0].register_forward_hook(lambda *_: owner.__setitem__("calls", owner["calls"] + 1))
    try:
        fast = FastModel(model, keep=("2",))
        assert isinstance(fast.module[1], nn.Identity) and isinstance(fast.module[3], nn.BatchNorm2d)
        assert _module_hooks(fast.module) == [] and len(_module_hooks(model)) == 1
        x = torch.randn(2, 3, 9, 9)
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
    finally:
        handle.remove()
    before = parameter_versions(model)
    assert parameter_versions(model) == before
    with torch.no_grad():
        model[2].weight.add_(1.0)
    assert parameter_versions(model) != before


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_private_copy_follows_weight_updates(method: str) -> None:
    """One staleness rule for every private copy: an in-place update of the weights retakes the copy."""
    model = _model()
    x = torch.randn(3, 3, 13, 11)
    explainer = Explainer(model, method, "features.2", channels_last=True)
    before = explainer(x, class_idx=[1, 2, 3])
    with torch.no_grad():
        model.features[2].weight.mul_(-1.0)  # moves the version counter, as an optimiser step does
    after = explainer(x, class_idx=[1, 2, 3])
    fresh = Explainer(model, method, "features.2", channels_last=True)(x, class_idx=[1, 2, 3])
    torch.testing.assert_close(after, fresh, atol=1e-5, rtol=1e-5)
    assert (after - before).abs().max() > 0.1


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "layercam", "hirescam"])
def test_gradient_methods_reduced_precision(method: str, precision: str) -> None:
    """Autocast on the explained forward, CAM math in fp32: maps within 0.05 of fp32 (the documented tolerance)."""
    model = _model()
    x = torch.randn(3, 3, 13, 11)
    exact = Explainer(model, method, "features.2")(x, class_idx=[0, 5, 7])
    fast = Explainer(model, method, "features.2", precision=precision)(x, class_idx=[0, 5, 7])
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().max() < 0.05
    assert (fast - exact).abs().max() > 0  # the forward did run in reduced precision
