"""The drop-in CAMs' fast forward: tail-only or closed-form gradients, on a private optimised model copy.

A drop-in CAM call takes one of three routes (``cam.last_path`` / ``cam.last_model`` say which, and
``cam.fallback_reason`` why the optimised copy was not used):

1. **optimised copy** (``last_model == "copy"``): a private copy of the model
   (:class:`~pycam_fast.engine.fast_model.FastModel`: eval mode, frozen parameters, conv-batchnorm pairs folded
   except target convs, channels-last, no hooks) runs the forward. Requires a 4-D input, every module in eval mode
   and no hooks on the model other than CAM libraries' own recording hooks (the copy would not run them), and a
   method whose map is a stable function of the activations and gradients (see Accuracy).
2. **the model itself, tail only** (``last_model == "model"``): the user's model runs the forward without recording
   up to the first target layer (:func:`~pycam_fast.engine.gradients.tail_forward`); same arithmetic as the exact
   path. With hooks on the model (other than CAM libraries' own), the gradients always come from tail autograd.
3. **exact** (``last_path == "exact"``): the full forward with gradients and the extractor's hooks, used with a
   ``reshape_transform``, a model that torch.fx cannot trace, or a target layer called more than once or whose tail
   reads a tensor computed before it (a skip connection crossing the layer): see :meth:`FastForward.unavailable`.

Gradients on routes 1 and 2 come in **closed form** (no autograd at all) when every target layer's tail is
``global average pool -> flatten -> Linear`` and every target is linear in one logit (``targets=None`` or
``ClassifierOutputTarget(c)``): ``dY_c / dA_k(i, j) = W[c, k] / (h * w)``; otherwise by **tail-only autograd**
(softmax or segmentation targets, a non-linear head, several layers).

The copy is taken at the first call that uses it and rebuilt whenever the model's parameters or buffers change as
seen by :func:`~pycam_fast.engine.fast_model.parameter_versions` (optimiser steps, ``load_state_dict``, in-place
updates under ``no_grad``, ``.to()``); changes made through ``.data`` are not seen: call :meth:`FastForward.reset`
(``cam.reset_fast_copy()``) or build a new CAM. It costs one extra copy of the parameters.

Accuracy: folding and channels-last convolutions reorder the fp32 arithmetic (~1e-6 relative on the activations).
Weighted-sum maps (Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM, HiRes-CAM, element-wise) then move by a few 1e-6
(median ~2e-6 against grad-cam on random-init ResNet-18/50 and MobileNet-V3 at 33-99 px inputs; all the parity tests
pass at 1e-5), occasionally more where the map is nearly flat (up to 5.7e-5 for XGrad-CAM on tiny inputs): the same
size as grad-cam's own variation between 1 and 2 threads (6.1e-5) or on a channels-last model (5.8e-5) for those
inputs. Maps that amplify them more stay on route 2: principal-component projections (``eigen_smooth=True``,
EigenCAM, EigenGradCAM: ill-conditioned when the top singular values are close; on the copy, parity-test cases with
2x2 feature maps moved by 1.3e-5 and EigenCAM maps by up to 2.5e-5 in a random sweep) and FEM's threshold (a
position at ``mean + k std`` can flip).
``cam.optimized_copy = False`` keeps any method on route 2 (within ~3e-6 of grad-cam, tail-only and closed-form
gradients still apply); ``cam.optimized_copy = True`` opts the sensitive ones in; ``fast=False`` takes route 3.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...engine.fast_model import FastModel, module_hooks, parameter_versions
from ...engine.gradients import tail_forward
from ...engine.tail import LinearHead, linear_head, linear_head_grads, split_tail
from ...targets import OutputTarget, check_class_range, select_scores

__all__ = ["CLOSED_FORM", "EXACT", "NO_GRAD", "TAIL_AUTOGRAD", "FastForward", "FastResult", "argmax_classes"]

#: how a call computed its activations and gradients (``cam.last_path``)
EXACT, CLOSED_FORM, TAIL_AUTOGRAD, NO_GRAD = "exact", "closed_form", "tail_autograd", "no_grad"

#: packages whose recording hooks on a model are not part of its computation (left out of the private copy)
_OBSERVER_PACKAGES = ("pycam_fast.", "pytorch_grad_cam.", "torchcam.")


@dataclass
class FastResult:
    """One tail-only forward (on the copy or the model itself).

    Attributes:
        outputs: ``(N, K)`` model output (no autograd graph).
        activations: one contiguous ``(N, C, *S)`` output per target layer.
        grads: the explained scores' gradients, same shapes (``None`` for gradient-free methods).
        class_idx: each sample's top class when ``targets`` was ``None``, else ``None``.
        path: :data:`CLOSED_FORM`, :data:`TAIL_AUTOGRAD` or :data:`NO_GRAD`.
        on_copy: whether the optimised copy ran (else the user's model).

    """

    outputs: Any
    activations: list[Tensor]
    grads: list[Tensor] | None
    class_idx: list[int] | None
    path: str
    on_copy: bool


@dataclass
class _Network:
    """A network the tail-only forward runs: its target modules, linear heads and the state it was set up for."""

    module: nn.Module
    targets: list[nn.Module]
    heads: list[LinearHead | None]
    key: tuple[Any, ...]
    channels_last: bool = False


class FastForward:
    """The tail-only forwards of one CAM object: the checks, the private copy and the closed-form heads.

    Args:
        model: the user's model (never modified).
        target_names: dotted names of the target layers in ``model``.

    """

    def __init__(self, model: nn.Module, target_names: list[str]) -> None:
        self.model = model
        self.target_names = list(target_names)
        self._own: tuple[tuple[int, ...], _Network | str] | None = None  # (structure key, network or reason)
        self._copy: _Network | None = None

    def reset(self) -> None:
        """Drop the private copy and the cached analysis of the model (the next call redoes both)."""
        self._own = self._copy = None

    def unavailable(self, reshape_transform: Any) -> str | None:
        """Why a call must take the exact path (``None`` when the tail-only forward applies).

        Args:
            reshape_transform: the CAM's ``reshape_transform``.

        """
        if reshape_transform is not None:
            return "a reshape_transform is set"
        own = self._own_network()
        return own if isinstance(own, str) else None

    def _own_network(self) -> _Network | str:
        """The user's model set up for tail-only forwards, or why it cannot be (cached per module tree)."""
        key = _structure_key(self.model)
        if self._own is None or self._own[0] != key:
            self._own = (key, _setup(self.model, self.target_names, key))
        return self._own[1]

    def copy_unavailable(self, inputs: Tensor) -> str | None:
        """Why a call cannot use the optimised copy (``None`` when it can).

        Args:
            inputs: the batch.

        """
        if inputs.ndim != 4:
            return "the input is not a 4-D (N, C, H, W) batch"
        if any(module.training for module in self.model.modules()):
            return "the model (or a submodule) is in training mode"
        foreign = _foreign_hooks(self.model)
        if foreign:
            return f"the model has hooks (on {foreign}) that a private copy would not run"
        return None

    def _network(self, on_copy: bool) -> _Network:
        if not on_copy:
            own = self._own_network()
            if isinstance(own, str):
                raise RuntimeError(f"no tail-only forward: {own}")
            return own
        key = parameter_versions(self.model)
        if self._copy is None or self._copy.key != key:
            self._copy = None  # free the stale copy first
            fast = FastModel(self.model, channels_last=True, keep=self.target_names, strip_hooks=True)
            copy = _setup(fast.module, self.target_names, key, channels_last=True)
            if isinstance(copy, str):  # pragma: no cover - the copy has the model's structure
                raise RuntimeError(f"the private copy does not split: {copy}")
            self._copy = copy
        return self._copy

    def run(self, inputs: Tensor, targets: list[OutputTarget] | None, gradients: bool, on_copy: bool) -> FastResult:
        """Forward ``inputs`` tail-only; with ``gradients``, the explained scores' gradients too.

        Call it in eval mode (the copy is always in eval mode) once :meth:`unavailable` (and, for ``on_copy``,
        :meth:`copy_unavailable`) returned ``None``.

        Args:
            inputs: ``(N, C, *S)`` batch on the model's device.
            targets: one callable per sample, or ``None`` for each sample's top class.
            gradients: compute the gradients (gradient methods).
            on_copy: run the optimised copy rather than the user's model.

        Returns:
            the outputs, the contiguous activations and gradients of every target layer, and the path taken.

        Raises:
            ValueError: ``targets=None`` with a non-classifier output.
            RuntimeError: an explained score that does not depend on a target layer.

        """
        net = self._network(on_copy)
        classes = None if targets is None else _class_targets(targets)
        closed = (
            gradients
            and all(head is not None for head in net.heads)
            and (targets is None or bool(classes))
            and (on_copy or not _foreign_hooks(self.model))  # a hook could change what the traced head computes
        )
        inputs = inputs.detach()
        if net.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        fwd = tail_forward(net.module, net.targets, inputs, record=gradients and not closed)
        outputs = fwd.output
        class_idx = argmax_classes(outputs) if targets is None else None
        acts = [act.contiguous() for act in fwd.activations]
        if not gradients:
            return FastResult(outputs, acts, None, class_idx, NO_GRAD, on_copy)
        if closed:
            cls: list[int] = class_idx if classes is None else classes  # type: ignore[assignment]
            check_class_range(cls, outputs.shape[1])
            index = torch.as_tensor(cls)
            grads = [
                linear_head_grads(head, index, act).contiguous()  # type: ignore[arg-type]
                for head, act in zip(net.heads, acts, strict=True)
            ]
            return FastResult(outputs, acts, grads, class_idx, CLOSED_FORM, on_copy)
        with torch.enable_grad():  # the score selection joins the tail's graph even under a caller's no_grad()
            scores = select_scores(outputs, class_idx, targets)
        grads = [grad.contiguous() for grad in fwd.all_grads(scores)]
        outputs = outputs.detach() if isinstance(outputs, Tensor) else outputs
        return FastResult(outputs, acts, grads, class_idx, TAIL_AUTOGRAD, on_copy)


def _setup(module: nn.Module, names: list[str], key: tuple[Any, ...], channels_last: bool = False) -> _Network | str:
    """``module`` set up for tail-only forwards at the layers ``names``, or why the tail cannot be isolated."""
    heads = []
    for name in names:
        split = split_tail(module, name, hooks=False)
        if split.tail is None:
            return split.reason or "the tail after a target layer cannot be isolated"
        heads.append(linear_head(split.tail))
    return _Network(module, [module.get_submodule(name) for name in names], heads, key, channels_last)


def _structure_key(model: nn.Module) -> tuple[int, ...]:
    """Identity of the module tree and its parameters: changes when a module or a parameter is replaced."""
    return tuple(id(m) for m in model.modules()) + tuple(id(p) for p in model.parameters())


def argmax_classes(outputs: Any) -> list[int]:
    """Each sample's top class of an ``(N, K)`` output.

    Raises:
        ValueError: the output is not an ``(N, K)`` tensor.

    """
    if not isinstance(outputs, Tensor) or outputs.ndim != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(
            f"targets=None explains each sample's top class of an (N, K) output, but the model returned {shape}: "
            "pass `targets`, e.g. [SemanticSegmentationTarget(c, mask)] * N"
        )
    return outputs.argmax(dim=-1).tolist()


def _class_targets(targets: list[OutputTarget]) -> list[int] | None:
    """The categories when every target is a plain ``ClassifierOutputTarget`` (one logit), else ``None``."""
    categories = []
    for target in targets:
        kind = type(target)
        if kind.__name__ != "ClassifierOutputTarget" or kind.__module__ not in _CLASSIFIER_TARGET_MODULES:
            return None
        category = getattr(target, "category", None)
        if not isinstance(category, int) or isinstance(category, bool):
            return None
        categories.append(category)
    return categories


#: modules whose ``ClassifierOutputTarget`` is ``output[category]`` (this package's and pytorch-grad-cam's)
_CLASSIFIER_TARGET_MODULES = (
    "pycam_fast.compat.pytorch_grad_cam.utils.model_targets",
    "pytorch_grad_cam.utils.model_targets",
)


def _foreign_hooks(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` with hooks other than CAM libraries' recording hooks."""
    return sorted({name or "<model>" for name, hook in module_hooks(model) if not _is_cam_observer(hook)})


def _is_cam_observer(hook: Any) -> bool:
    """Whether ``hook`` is a CAM library's recording hook (a method of one of its objects, possibly partial)."""
    func = hook.func if isinstance(hook, functools.partial) else hook
    owner = getattr(func, "__self__", None)
    return owner is not None and type(owner).__module__.startswith(_OBSERVER_PACKAGES)
