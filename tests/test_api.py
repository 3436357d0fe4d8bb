"""Front-end behaviour: hooks, state restoration, errors, output_size, dtypes, backends."""

import gc
import logging

import pytest
import torch
from conftest import SmallCNN
from torch import nn

import pycam_fast
from pycam_fast import methods
from pycam_fast.ops.reference import channel_sum, minmax_normalize, upsample
from pycam_fast.targets import ClassIndexError

GRADIENT = [methods.GradCAM, methods.GradCAMpp, methods.XGradCAM, methods.LayerCAM]
ALL = [methods.CAM, *GRADIENT, methods.SmoothGradCAMpp, methods.ScoreCAM, methods.SSCAM, methods.ISCAM]
SMALL_KW = {cls: {"num_samples": 2} for cls in (methods.SSCAM, methods.ISCAM, methods.SmoothGradCAMpp)}


def _make(cls, model, layer="features.4", **kw):
    return cls(model, layer, input_shape=(3, 16, 16), **{**SMALL_KW.get(cls, {}), **kw})


def _cams(extractor, model, x, **call):
    scores = model(x)
    return extractor(class_idx=call.pop("class_idx", 1), scores=scores, **call)


@pytest.mark.parametrize("cls", ALL)
def test_output_size_is_resize_then_relu_then_normalise(cls, small_cnn):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    with _make(cls, small_cnn) as extractor:
        scores = small_cnn(x)
        torch.manual_seed(1)
        term = extractor.cam_terms(1, scores, retain_graph=True)[0]
        low_res = channel_sum(term.weights, term.maps)
        torch.manual_seed(1)
        big = extractor(1, scores, output_size=(13, 29))[0]
    assert big.shape == (2, 13, 29)
    expected = upsample(low_res, (13, 29))
    if cls is not methods.CAM:
        expected = expected.relu()
    torch.testing.assert_close(big, minmax_normalize(expected), atol=1e-5, rtol=0)
    assert float(big.amin()) == 0.0 and abs(float(big.amax()) - 1.0) < 1e-3  # eps=1e-8 vs a small range


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_float_dtype(cls, dtype, small_cnn):
    if dtype == torch.float16 and cls in (methods.ScoreCAM, methods.SSCAM, methods.ISCAM, methods.SmoothGradCAMpp):
        pytest.skip("float16 conv forwards are not implemented on every CPU build")
    model = small_cnn.to(dtype)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16, dtype=dtype)
    with _make(cls, model) as extractor:
        torch.manual_seed(1)
        cam = _cams(extractor, model, x, class_idx=[1, 2])[0]
    assert cam.dtype == dtype and cam.shape == (2, 8, 8)
    assert torch.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1


def test_backend_report_and_errors(small_cnn):
    report = pycam_fast.backends()
    assert report["torch"]["available"] and report["torch"]["reason"] is None
    for name, entry in report.items():
        assert entry["available"] or entry["reason"], name
    with pytest.raises(ValueError, match=r"unknown backend 'fast'.*auto.*torch"):
        methods.GradCAM(small_cnn, "features.4", backend="fast")
    missing = [n for n, e in report.items() if not e["available"] or not {"cpu", "*"} & set(e["devices"])]
    with _make(methods.GradCAM, small_cnn, backend=missing[0]) as extractor:
        with pytest.raises(ValueError, match=rf"backend '{missing[0]}'.*available for cpu: \[.*'torch'"):
            _cams(extractor, small_cnn, torch.rand(1, 3, 16, 16))


def test_auto_fallback_is_logged_once(small_cnn, caplog):
    from pycam_fast import _log
    from pycam_fast.ops import dispatch as registry

    _log._LOGGED.clear()
    registry.register_backend(
        "ghost", lambda: (_ for _ in ()).throw(registry.BackendUnavailable("not built")), ("cpu",), "test backend"
    )
    old = registry.AUTO_PREFERENCE["cpu"]
    registry.AUTO_PREFERENCE["cpu"] = ("ghost", *old)
    try:
        with caplog.at_level(logging.INFO, logger="pycam_fast"), _make(methods.GradCAM, small_cnn) as extractor:
            for _ in range(3):
                _cams(extractor, small_cnn, torch.rand(1, 3, 16, 16))
        messages = [r.message for r in caplog.records if "ghost" in r.message]
        assert len(messages) == 1 and "not built" in messages[0]
    finally:
        registry.AUTO_PREFERENCE["cpu"] = old
        del registry._REGISTRY["ghost"]
        registry._AUTO_CACHE.clear()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() touches deprecated torch aliases
@pytest.mark.parametrize("cls", [methods.GradCAM, methods.ScoreCAM, methods.SmoothGradCAMpp])
def test_no_leak_over_1000_calls(cls, small_cnn):
    x = torch.rand(1, 3, 8, 8)
    kw = {"batch_size": 64} if cls is methods.ScoreCAM else {}
    with _make(cls, small_cnn, **kw) as extractor:
        n_handles = len(extractor.hook_handles)
        hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in small_cnn.modules())

        def _live():
            gc.collect()
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

        for _ in range(5):
            _cams(extractor, small_cnn, x)
        live = _live()
        for _ in range(1000 if cls is methods.GradCAM else 100):
            _cams(extractor, small_cnn, x)
        assert len(extractor.hook_handles) == n_handles
        assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in small_cnn.modules()) == hooks_before
        assert _live() <= live
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in small_cnn.modules())


def test_hooks_lifecycle(small_cnn):
    extractor = methods.GradCAM(small_cnn, ["features.4", "features.2"])
    assert extractor.target_names == ["features.4", "features.2"]
    assert len(extractor.hook_handles) == 4  # 2 per target layer
    extractor.disable_hooks()
    small_cnn(torch.rand(1, 3, 8, 8))
    assert extractor.hook_a == [None, None]
    extractor.enable_hooks()
    small_cnn(torch.rand(1, 3, 8, 8))
    assert all(a is not None for a in extractor.hook_a)
    extractor.reset_hooks()
    assert extractor.hook_a == [None, None] and extractor.hook_g == [None, None]
    extractor.remove_hooks()
    extractor.remove_hooks()  # idempotent
    assert extractor.hook_handles == []
    assert all(not m._forward_hooks for m in small_cnn.modules())


def test_parameter_grads_untouched(small_cnn):
    with methods.GradCAM(small_cnn, "features.4") as extractor:
        _cams(extractor, small_cnn, torch.rand(2, 3, 8, 8))
    assert all(p.grad is None for p in small_cnn.parameters())


def test_state_restored_after_exception(small_cnn):
    small_cnn.train()
    small_cnn.features[1].eval()
    modes = [m.training for m in small_cnn.modules()]

    def failing_target(out):
        raise RuntimeError("boom")

    extractor = methods.ScoreCAM(small_cnn, "features.4")
    small_cnn(torch.rand(2, 3, 8, 8))
    grad_mode = torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match="boom"):
        extractor(targets=failing_target)
    assert [m.training for m in small_cnn.modules()] == modes
    assert extractor._hooks_enabled and torch.is_grad_enabled() == grad_mode
    extractor.remove_hooks()

    smooth = methods.SmoothGradCAMpp(small_cnn, "features.4", num_samples=2)
    small_cnn(torch.rand(2, 3, 8, 8))
    clean = smooth.hook_a[0]
    with torch.no_grad(), pytest.raises(RuntimeError, match="boom"):
        smooth(targets=failing_target)
    assert smooth.hook_a[0] is clean and not smooth._own_forward and torch.is_grad_enabled() == grad_mode
    smooth.remove_hooks()


def test_context_manager_removes_hooks_on_error(small_cnn):
    with pytest.raises(ZeroDivisionError), methods.LayerCAM(small_cnn, "features.4") as extractor:
        small_cnn(torch.rand(1, 3, 8, 8))
        _ = 1 / 0
    assert extractor.hook_handles == [] and extractor.hook_a == [None]
    assert all(not m._forward_hooks for m in small_cnn.modules())


def test_retain_graph_allows_two_calls(small_cnn):
    with methods.GradCAM(small_cnn, "features.4") as extractor:
        scores = small_cnn(torch.rand(2, 3, 8, 8))
        a = extractor(1, scores, retain_graph=True)[0]
        b = extractor(1, scores)[0]
        torch.testing.assert_close(a, b)
        with pytest.raises(RuntimeError, match="needs gradients"):
            extractor(1, scores)


def test_targets_callables(small_cnn):
    x = torch.rand(2, 3, 8, 8)
    with methods.GradCAM(small_cnn, "features.4") as extractor:
        by_idx = extractor(class_idx=[3, 5], scores=small_cnn(x))[0]
        by_fn = extractor(targets=[lambda o: o[3], lambda o: o[5]], scores=small_cnn(x))[0]
    torch.testing.assert_close(by_idx, by_fn)


def test_multi_layer_and_fuse(small_cnn):
    with methods.LayerCAM(small_cnn, ["features.4", "features.1"]) as extractor:
        cams = _cams(extractor, small_cnn, torch.rand(2, 3, 8, 8))
    assert [c.shape for c in cams] == [(2, 4, 4), (2, 8, 8)]
    fused = extractor.fuse_cams(cams)
    assert fused.shape == (2, 8, 8)
    expected = torch.maximum(upsample(torch.tanh(2 * cams[0]), (8, 8)), torch.tanh(2 * cams[1]))
    torch.testing.assert_close(fused, expected)
    assert extractor.fuse_cams(cams[:1]) is cams[0]


def test_score_cam_1d_model():
    torch.manual_seed(0)
    model = SmallCNN(dims=1).eval()
    x = torch.rand(2, 3, 17)
    with methods.ScoreCAM(model, "features.4", batch_size=5) as extractor:
        cam = _cams(extractor, model, x, class_idx=[1, 2])[0]
    assert cam.shape == (2, 9) and torch.isfinite(cam).all()


def test_chunk_size_does_not_change_score_cam(small_cnn):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    model = small_cnn.double()
    results = []
    for bs in (1, 7, 64):
        with methods.ISCAM(model, "features.4", batch_size=bs, num_samples=2) as extractor:
            results.append(_cams(extractor, model, x, class_idx=[1, 2])[0])
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], atol=1e-12, rtol=0)


# -- errors --------------------------------------------------------------------------------------------------------
def test_errors_of_the_call(small_cnn):
    x = torch.rand(2, 3, 8, 8)
    with methods.GradCAM(small_cnn, "features.4") as extractor:
        with pytest.raises(AssertionError, match="forwarded"):
            extractor(1, None)
        scores = small_cnn(x)
        with pytest.raises(ValueError, match="exactly one of class_idx or targets"):
            extractor(scores=scores)
        with pytest.raises(ValueError, match="exactly one of class_idx or targets"):
            extractor(1, scores, targets=lambda o: o[0])
        with pytest.raises(ValueError, match="same"):
            extractor([1, 2, 3], scores)
        with pytest.raises(ValueError, match="Incorrect `class_idx`"):
            extractor(-1, scores)
        with pytest.raises(ValueError, match="Incorrect `class_idx`"):
            extractor(1.5, scores)
        with pytest.raises(ValueError, match="scores is required"):
            extractor(1)
        with pytest.raises(TypeError, match="callable or a list of callables"):
            extractor(targets=[1, 2], scores=scores)
        with pytest.raises(ValueError, match="per-sample targets must match the batch size"):
            extractor(targets=[lambda o: o[0]] * 3, scores=scores)
        with pytest.raises(IndexError, match=r"class_idx 10 is out of range .* 10 classes"):
            extractor(10, scores, retain_graph=True)
        with pytest.raises(ValueError, match=r"out of range"):
            extractor([0, 12], scores, retain_graph=True)
        with pytest.raises(ValueError, match=r"`scores` has shape \(1, 10\) but the hooked batch has 2"):
            extractor(1, scores[:1])
        with pytest.raises(ValueError, match=r"`output_size` must be 2 positive ints"):
            extractor(1, scores, output_size=(10,))


def test_class_index_error_is_index_and_value_error():
    assert issubclass(ClassIndexError, IndexError) and issubclass(ClassIndexError, ValueError)


@pytest.mark.parametrize("cls", [methods.CAM, methods.ScoreCAM, methods.SmoothGradCAMpp])
def test_class_out_of_range_without_scores(cls, small_cnn):
    with _make(cls, small_cnn) as extractor:
        small_cnn(torch.rand(1, 3, 8, 8))
        with pytest.raises(IndexError, match="out of range"):
            extractor(class_idx=11)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("cls", GRADIENT)
def test_gradient_method_without_grad_forward(context, cls, small_cnn):
    with cls(small_cnn, "features.4") as extractor:
        with context():
            scores = small_cnn(torch.rand(1, 3, 8, 8))
        with pytest.raises(RuntimeError, match=r"needs gradients.*torch.no_grad\(\) or torch.inference_mode\(\)"):
            extractor(0, scores)


def test_disconnected_layer(small_cnn):
    model = nn.Sequential()
    model.add_module("net", small_cnn)
    model.add_module("side", nn.Conv2d(3, 4, 3))

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.side = small_cnn, nn.Conv2d(3, 4, 3)

        def forward(self, x):
            self.side(x)
            return self.net(x)

    two = Two()
    with methods.GradCAM(two, "side") as extractor:
        scores = two(torch.rand(1, 3, 8, 8))
        with pytest.raises(RuntimeError, match="not connected to every target layer"):
            extractor(0, scores)


def test_non_tensor_layer_output():
    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x), x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = TupleOut()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.block(x)[0].mean((2, 3)))

    net = Net()
    with methods.GradCAM(net, "block") as extractor:
        scores = net(torch.rand(1, 3, 8, 8))
        with pytest.raises(TypeError, match=r"'block' returned a tuple, not a tensor.*reshape_transform"):
            extractor(0, scores)
    with methods.GradCAM(net, "block", reshape_transform=lambda out: out[0] if isinstance(out, tuple) else out) as ex:
        scores = net(torch.rand(1, 3, 8, 8))
        assert ex.hook_a[0].shape == (1, 4, 6, 6)


def test_constructor_errors(small_cnn):
    with pytest.raises(TypeError, match="invalid argument type for `target_layer`"):
        methods.GradCAM(small_cnn, 3)
    with pytest.raises(TypeError, match="invalid argument type for `target_layer`"):
        methods.GradCAM(small_cnn, [3])
    with pytest.raises(ValueError, match="unable to locate module inside the specified model"):
        methods.GradCAM(small_cnn, nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match=r"unknown `target_layer` names: \['features.44'\].*closest matches"):
        methods.GradCAM(small_cnn, "features.44")
    with pytest.raises(TypeError, match="`reshape_transform` must be callable"):
        methods.GradCAM(small_cnn, "features.4", reshape_transform=3)
    with pytest.raises(ValueError, match="`target_layer` must be specified"):
        methods.GradCAM(small_cnn, reshape_transform=lambda t: t)
    with pytest.raises(ValueError, match="base CAM does not support multiple target layers"):
        methods.CAM(small_cnn, ["features.4", "features.2"])
    with pytest.raises(ValueError, match="multiple fully connected layers"):
        methods.CAM(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2)), "0")
    with pytest.raises(ValueError, match="unable to resolve `fc_layer`"):
        methods.CAM(nn.Sequential(nn.Conv2d(3, 4, 3)), "0")
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        methods.ScoreCAM(small_cnn, "features.4", batch_size=0)
    with pytest.raises(ValueError, match="`num_samples` must be a positive int"):
        methods.SSCAM(small_cnn, "features.4", num_samples=0)
    with pytest.raises(ValueError, match="unable to resolve `target_layer` automatically"):
        methods.GradCAM(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), input_shape=(3,))
    assert all(not m._forward_hooks for m in small_cnn.modules())


def test_auto_layer_restores_training_mode(small_cnn, caplog):
    small_cnn.train()
    with caplog.at_level(logging.WARNING), methods.GradCAM(small_cnn, input_shape=(3, 16, 16)) as extractor:
        assert extractor.target_names == ["features"]
    assert "thus set to 'features'" in caplog.text
    assert all(m.training for m in small_cnn.modules())
