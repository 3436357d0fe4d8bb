"""The pytorch-grad-cam 1.5.7 calling convention on top of :mod:`pycam_fast.methods` extractors.

``cam(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)`` runs one forward (with gradients only
for gradient methods), computes each layer's map with the extractor's weights, and reproduces
pytorch-grad-cam's output pipeline on the device:

per layer ``sum_c(w * A)`` (or the first-principal-component projection of ``w * A`` with ``eigen_smooth``) ->
ReLU -> per-image ``(x - min) / (1e-7 + max)`` -> bilinear resize to the input (``align_corners=False``, what
``cv2.resize`` INTER_LINEAR computes); layers are then stacked, ReLU'd, averaged and min-max normalised again.
The only host copy is the final ``numpy()`` (and, with ``eigen_smooth`` / Eigen methods, one batched copy for
NumPy's singular-vector sign: the component is centred and factorised exactly as pytorch-grad-cam does, since its
sign flips with last-bit differences; for the same reason ``eigen_smooth`` runs the channel-weight methods through
the generic pipeline below with NumPy weights). Gradients are taken with ``torch.autograd.grad`` w.r.t. the
hooked outputs only: parameter ``.grad`` is untouched and only the tail after the target layers is back-propagated.

Extension points (pytorch-grad-cam's): a subclass overriding ``get_cam_weights``, ``get_cam_image``,
``compute_cam_per_layer`` or ``aggregate_multi_layers``, or built with ``compute_input_gradient=True`` /
``detach=False``, runs the generic pipeline (``cam.last_path == "generic"``): the target layers are hooked for the
call only, the targets are back-propagated once to the hooked outputs (to the input with
``compute_input_gradient``, or when a later in-place op modified a hooked output), and the overridden steps run
with pytorch-grad-cam's argument types (NumPy arrays when ``detach``); the rest runs in torch on the device.

Fast path (:mod:`pycam_fast.forward.explained`; on by default, ``fast=False`` or ``cam.fast = False`` switches it
off): the layers before the first target layer run without recording, and the gradients of a ``global average pool
-> flatten -> Linear`` tail with ``targets=None`` / ``ClassifierOutputTarget`` come in closed form (no backward;
other targets and tails back-propagate through the tail only). For a model in eval mode with a 4-D input, the
forward runs on a private conv-batchnorm-folded, channels-last copy of the model (maps within ~5e-6 of the exact
path's; eigen projections and FEM keep the model's own arithmetic). ``cam.last_path``, ``cam.last_model`` and
``cam.fallback_reason`` say how the last call ran. A ``reshape_transform``, an untraceable model or a target layer
called twice take the exact path.

Deliberate differences: the model's training flags are restored after each call (pytorch-grad-cam leaves the
model in eval mode); ``targets`` must hold one target per sample (pytorch-grad-cam silently explains only the first
``len(targets)`` samples); 3-D inputs are resized trilinearly (pytorch-grad-cam uses ``scipy.ndimage.zoom``, whose
values differ); a target layer called several times in one forward uses its LAST call's output (the generic
pipeline, like pytorch-grad-cam, uses the first); parameter ``.grad`` is never written (pytorch-grad-cam zeroes and
fills it); :attr:`BaseCAM.activations_and_grads` keeps its recordings on the model's device, and only during a call;
``forward`` returns the maps as a tensor on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn

from ... import ops
from ...forward.explained import ExplainedForward, ForwardResult, default_classes
from ...methods.extractor import CAMExtractor
from ...methods.spec import CamTerms
from ...model_state import model_eval
from ...ops.reference import minmax_normalize
from ...targets import OutputTarget
from .activations_and_gradients import ActivationsAndGradients
from .utils.image import scale_maps
from .utils.model_targets import ClassifierOutputTarget
from .utils.svd_on_activations import numpy_sign_projection

__all__ = ["EPS", "EXACT", "GENERIC", "BaseCAM"]

#: ``cam.last_path`` of a call that ran pytorch-grad-cam's generic pipeline (``get_cam_weights`` & co., see
#: :class:`BaseCAM`)
GENERIC = "generic"

#: the package whose classes define the built-in behaviour (overrides from elsewhere are the user's)
_PACKAGE = __name__.rpartition(".")[0]

#: pytorch-grad-cam's extension points: a subclass defining one of them outside this package runs the generic path
_EXTENSION_POINTS = ("get_cam_weights", "get_cam_image", "compute_cam_per_layer", "aggregate_multi_layers")

_IN_PLACE_REASON = (
    "a target layer's output is modified in place after the layer (e.g. by ReLU(inplace=True)), which "
    "pytorch-grad-cam's hooks record"
)

#: ``cam.last_path`` of a call that ran the full forward with the extractor's hooks
EXACT = "exact"

#: pytorch-grad-cam's normalisation epsilon: ``(x - min) / (1e-7 + max(x - min))``.
EPS = 1e-7

#: ttach's default test-time augmentations in pytorch-grad-cam (Compose product order): (hflip, factor).
_TTA: tuple[tuple[bool, float], ...] = tuple((flip, f) for flip in (False, True) for f in (0.9, 1.0, 1.1))


class BaseCAM:
    """pytorch-grad-cam ``BaseCAM`` API: ``Method(model, target_layers, reshape_transform=None)``.

    Built-in subclasses set :attr:`extractor_cls` (a :mod:`pycam_fast.methods` class) and, if needed, extra keyword
    arguments for its weights. pytorch-grad-cam's extension points work as in 1.5.7: a subclass that overrides
    ``get_cam_weights(input_tensor, target_layer, targets, activations, grads) -> (N, C) weights`` (the documented way
    to add a method; ``activations`` / ``grads`` are NumPy arrays when ``detach``), ``get_cam_image``,
    ``compute_cam_per_layer`` or ``aggregate_multi_layers`` runs the generic pipeline (:data:`GENERIC`): hooks
    record the target layers (:attr:`activations_and_grads`, an :class:`ActivationsAndGradients`), one backward
    (``torch.autograd.grad``: parameter ``.grad`` untouched; ``input_tensor.grad`` set with
    ``compute_input_gradient``; the graph kept with ``detach=False``), then the overridden steps, with the weighted
    sum, ReLU, normalisation, resize and layer mean in torch on the device.

    Args:
        model: the model to explain (its training flags are restored after each call).
        target_layers: a non-empty list of submodules of ``model``.
        reshape_transform: applied to the hooked activations and gradients (e.g.
            :func:`~pycam_fast.compat.pytorch_grad_cam.utils.reshape_transforms.vit_reshape_transform`).
        compute_input_gradient: make the input require grad, so ``input_tensor.grad`` is set (generic path).
        uses_gradients: whether to back-propagate the targets (default: the class's :attr:`uses_gradients`).
        tta_transforms: a ``ttach.Compose`` of augmentations for ``aug_smooth`` (default: horizontal flip x
            brightness 0.9 / 1 / 1.1, pytorch-grad-cam's).
        detach: record detached activations / gradients (``False`` keeps the graph: second-order methods).
        fast: allow the fast path (private optimised model copy, closed-form gradients; see
            :mod:`pycam_fast.forward.explained`);
            also settable later as ``cam.fast``.

    Raises:
        TypeError: ``target_layers`` is not a list of modules, or a non-callable ``reshape_transform``.
        ValueError: a layer that is not part of ``model``.

    """

    extractor_cls: ClassVar[type[CAMExtractor]]
    #: whether the method back-propagates (forward with gradients) or not (forward under ``no_grad``)
    uses_gradients: ClassVar[bool] = True
    #: whether ``eigen_smooth`` replaces the channel sum (EigenCAM, EigenGradCAM and FEM ignore it)
    supports_eigen_smooth: ClassVar[bool] = True
    #: keyword arguments of the extractor's weight computation (e.g. pytorch-grad-cam's epsilons)
    weight_kwargs: ClassVar[dict[str, Any]] = {}
    #: whether the method may run on the private model copy (it only reads target activations and gradients)
    supports_fast_path: ClassVar[bool] = True
    #: whether the optimised model copy may run the forward (False where the map amplifies fp32 rounding
    #: differences); an instance attribute overrides it
    optimized_copy: bool = True
    #: whether an empty ``target_layers`` is accepted (FullGrad picks its own layers)
    _allows_no_layers: ClassVar[bool] = False
    #: built-in classes that always run the generic pipeline (methods without an extractor)
    _generic: ClassVar[bool] = False
    #: built-in classes whose ``eigen_smooth`` runs the generic pipeline with NumPy weights: the principal
    #: component's sign is discontinuous, so the weights must be pytorch-grad-cam's to the last bit
    _eigen_generic: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        compute_input_gradient: bool = False,
        uses_gradients: bool | None = None,
        tta_transforms: Any = None,
        detach: bool = True,
        *,
        fast: bool = True,
        **extractor_kwargs: Any,
    ) -> None:
        if not isinstance(target_layers, (list, tuple)) or (not target_layers and not self._allows_no_layers):
            raise TypeError("`target_layers` must be a non-empty list of modules, e.g. [model.layer4[-1]]")
        if any(not isinstance(layer, nn.Module) for layer in target_layers):
            raise TypeError("`target_layers` must contain nn.Module objects (submodules of `model`), not names")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"`reshape_transform` must be callable or None, got {type(reshape_transform).__name__}")
        self.model = model
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.compute_input_gradient = bool(compute_input_gradient)
        if uses_gradients is not None:
            self.uses_gradients = bool(uses_gradients)
        self.tta_transforms = tta_transforms
        self.detach = bool(detach)
        self.outputs: Any = None
        param = next(iter(model.parameters()), None)
        #: the model's device (pytorch-grad-cam's attribute)
        self.device = param.device if param is not None else torch.device("cpu")
        extractor_cls = getattr(type(self), "extractor_cls", None)
        self._extractor = (
            None
            if extractor_cls is None or not self.target_layers
            else extractor_cls(
                model, self.target_layers, enable_hooks=False, reshape_transform=reshape_transform, **extractor_kwargs
            )
        )
        self._hooks = ActivationsAndGradients(model, [], reshape_transform, self.detach)
        # the extractor's own method, not the CAM's: no reference cycle, so a dropped CAM frees its hooks at once
        self._hooks.on_release = self._extractor.remove_hooks if self._extractor is not None else None
        self.fast = fast
        #: how the last forward ran: ``"exact"``, ``"closed_form"``, ``"tail_autograd"`` or ``"no_grad"``
        self.last_path: str | None = None
        #: which network ran the last forward: ``"copy"`` (the optimised private copy) or ``"model"``
        self.last_model: str | None = None
        #: why the last forward did not run on the optimised copy (``None`` when it did)
        self.fallback_reason: str | None = None
        names = self._extractor.target_names if self._extractor is not None else _layer_names(model, self.target_layers)
        self._fast_forward = ExplainedForward(model, names) if self.supports_fast_path and names else None

    # -- call ------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        input_tensor: Tensor,
        targets: Sequence[OutputTarget] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Compute the CAMs of a batch.

        Args:
            input_tensor: ``(N, C, H, W)`` batch (moved to the model's device).
            targets: one callable per sample mapping that sample's output to a scalar (e.g.
                ``ClassifierOutputTarget(281)``), or ``None`` for each sample's highest-scoring class.
            aug_smooth: average over horizontal flips x brightness factors (0.9, 1, 1.1), as pytorch-grad-cam.
            eigen_smooth: use the first principal component of ``w * A`` instead of the channel sum.

        Returns:
            ``(N, H, W)`` float32 maps in [0, 1].

        Raises:
            TypeError: ``input_tensor`` is not a tensor, or ``targets`` is not a list of callables.
            ValueError: a bad input rank, ``len(targets) != N``, or ``targets=None`` with a non-classifier output.

        """
        x = self._check_input(input_tensor)
        target_fns = self._check_targets(targets, x.shape[0])
        if aug_smooth:
            cams = self._augmentation_smoothing(x, target_fns, eigen_smooth)
        else:
            cams = self.forward(x, target_fns, eigen_smooth)
        return cams.detach().float().cpu().numpy()

    def forward(self, x: Tensor, targets: list[OutputTarget] | None, eigen_smooth: bool = False) -> Tensor:
        """One forward and the aggregated maps ``(N, H, W)`` on the device (no host copy)."""
        if self._uses_generic_path(eigen_smooth):
            return self._generic_forward(x, targets, eigen_smooth)
        maps = self._feature_maps(x, targets, eigen_smooth)
        with torch.no_grad():
            return self._resize_and_aggregate(maps, tuple(x.shape[2:]))

    def _per_layer_maps(self, input_tensor: Tensor, targets: Sequence[OutputTarget] | None) -> list[np.ndarray] | None:
        """Each target layer's ``(N, H, W)`` maps as a CAM of that layer alone gives them, from ONE forward.

        ``None`` where the call would take the generic pipeline (its aggregation is the user's business). Used by
        :class:`~.refine_cam.RefineCAM`, whose per-layer CAMs then share one forward.
        """
        if self._uses_generic_path(False):
            return None
        x = self._check_input(input_tensor)
        maps = self._feature_maps(x, self._check_targets(targets, x.shape[0]), False)
        with torch.no_grad():
            return [self._resize_and_aggregate([m], tuple(x.shape[2:])).float().cpu().numpy() for m in maps]

    def _feature_maps(self, x: Tensor, targets: list[OutputTarget] | None, eigen_smooth: bool) -> list[Tensor]:
        """Per-layer normalised maps ``(N, h_l, w_l)`` at feature resolution, from one forward."""
        exact_reason = self._tail_only_unavailable()
        copy_reason = exact_reason or self._copy_unavailable(x, eigen_smooth)
        grad_cam_records = exact_reason is not None and self._in_place_outputs
        with (
            model_eval(self.model),
            self._recording(hooks=exact_reason is not None and not grad_cam_records),
            self._hooks.recording(self.target_layers if grad_cam_records else []),
        ):
            if grad_cam_records:
                self._record_with_hooks(x, targets)
                gradient_kind = self._extractor.spec.kind == "gradient"
                self._extractor.supply(list(self._hooks.activations), self._hooks.gradients if gradient_kind else None)
                outputs = self.outputs
                class_idx = default_classes(outputs, self._needs_classes) if targets is None else None
                self.last_path, self.last_model = EXACT, "model"
            elif exact_reason is None:
                # one logit per sample is a class-based call: its gradients may come in closed form
                closed = self.uses_gradients and self._fast_forward.closed_form(copy_reason is None, None)  # type: ignore[union-attr]
                fast = self._tail_only(x, targets, _class_targets(targets) if closed else None, copy_reason)
                if fast is None:
                    return self._feature_maps(x, targets, eigen_smooth)
                self._extractor.supply(fast.activations, fast.grads)
                outputs, class_idx, self.last_path = fast.outputs, fast.class_idx, fast.path
                targets = None if fast.class_idx is not None else targets
                return self._layer_maps(class_idx, outputs, targets, eigen_smooth)
            else:
                self.outputs = outputs = self._model_forward(x)
                class_idx = default_classes(outputs, self._needs_classes) if targets is None else None
                self.last_path, self.last_model = EXACT, "model"
            self.fallback_reason = copy_reason
            return self._layer_maps(class_idx, outputs, targets, eigen_smooth)

    def _resize_and_aggregate(self, maps: list[Tensor], size: tuple[int, ...]) -> Tensor:
        """Per-layer ``(N, h_l, w_l)`` maps -> resized to ``size``, aggregated: ``(N, *size)``.

        The resize (bilinear/trilinear, ``align_corners=False``) is the backend's fused CAM step over one unit-weight
        channel; with a single layer it also does the final min-max normalisation (the layer mean and ReLU of
        :meth:`aggregate_multi_layers` leave one non-negative map unchanged), so one pass writes the output.
        """
        unit, backend = maps[0].new_ones(1, 1), self._extractor.backend
        resized = [
            ops.cam_step(
                unit, m.unsqueeze(1), relu=False, output_size=size, normalize=len(maps) == 1, eps=EPS, backend=backend
            )
            for m in maps
        ]
        return resized[0] if len(maps) == 1 else self._aggregate_maps(resized)

    def _tail_only_unavailable(self) -> str | None:
        """Why this call takes the exact path (``None``: a tail-only forward, see :mod:`._fast`)."""
        if not self.fast:
            return "the fast path is switched off (fast=False)"
        if self._fast_forward is None:
            return f"{type(self).__name__} runs the user's model itself"
        if self.reshape_transform is not None:
            return "a reshape_transform is set"
        if self._in_place_outputs:
            return _IN_PLACE_REASON
        return self._fast_forward.unavailable()

    #: set once a target layer's output was seen modified in place after the layer (the calls then use hooks)
    _in_place_outputs: bool = False

    @property
    def _needs_classes(self) -> bool:
        """Whether a call without targets explains each sample's top class.

        False for gradient-free class-agnostic methods, which then also run on models whose output is not an
        ``(N, K)`` classifier output.
        """
        extractor = self._extractor
        return self.uses_gradients or (extractor is not None and not extractor.spec.class_agnostic)

    def _refuse_in_place(self, modified: bool) -> bool:
        """Whether a tail-only forward must be redone with hooks (remembered for the next calls).

        pytorch-grad-cam's hooks record a target's output tensor itself, so an in-place op after the layer (e.g.
        ``ReLU(inplace=True)``) changes what they hold; the tail-only forward keeps the layer's own output.
        """
        self._in_place_outputs = self._in_place_outputs or modified
        return modified

    def _copy_unavailable(self, x: Tensor, eigen_smooth: bool) -> str | None:
        """Why a tail-only call runs the user's model rather than the optimised copy (``None``: the copy)."""
        if not self.optimized_copy:
            return (
                f"optimized_copy is False for this {type(self).__name__} (the default where the map amplifies fp32 "
                "rounding differences: Eigen methods, FEM)"
            )
        if eigen_smooth and self.supports_eigen_smooth:
            return "eigen_smooth amplifies rounding differences"
        return self._fast_forward.copy_unavailable(x)  # type: ignore[union-attr]

    def reset_fast_copy(self) -> None:
        """Drop the private model copy (after changing the weights through ``.data``, which is not detected)."""
        if self._fast_forward is not None:
            self._fast_forward.reset()

    def _model_forward(self, x: Tensor) -> Any:
        if not self.uses_gradients:
            with torch.no_grad():
                return self.model(x)
        with torch.enable_grad():
            # a leaf that requires grad keeps the hooked outputs differentiable even with frozen parameters;
            # autograd.grad w.r.t. the hooked outputs still only walks the tail
            return self.model(x.detach().requires_grad_(True))

    def _layer_maps(
        self, class_idx: list[int] | None, outputs: Any, targets: list[OutputTarget] | None, eigen_smooth: bool
    ) -> list[Tensor]:
        """Per-layer normalised maps ``(N, h_l, w_l)`` at feature resolution."""
        with torch.enable_grad():  # the target scores must be differentiable even under a caller's no_grad()
            terms = self._extractor.cam_terms(class_idx, outputs, targets=targets, **self.weight_kwargs)
        with torch.no_grad():
            return [self._layer_map(term, eigen_smooth) for term in terms]

    def _layer_map(self, term: CamTerms, eigen_smooth: bool) -> Tensor:
        weights, maps, backend = term.weights.to(term.maps.dtype), term.maps, self._extractor.backend
        if eigen_smooth and self.supports_eigen_smooth:
            weighted = weights[(...,) + (None,) * (maps.ndim - weights.ndim)] * maps
            weights, maps = weights.new_ones(1, 1), numpy_sign_projection(weighted).unsqueeze(1)
        return ops.cam_step(weights, maps, relu=True, normalize=True, eps=EPS, backend=backend)

    @staticmethod
    def _aggregate_maps(cams: list[Tensor]) -> Tensor:
        """Stack ``(N, H, W)`` maps, ReLU, mean over layers, min-max normalise: ``(N, H, W)``."""
        if len(cams) == 1 and cams[0].is_floating_point():
            # one layer: the mean of one map is the map, and the per-layer maps are already >= 0 (ReLU'd, then
            # resized with non-negative weights), so only the final normalisation changes the values (same numbers)
            return minmax_normalize(torch.relu(cams[0]), EPS)
        stacked = torch.relu(torch.stack(cams, dim=1))
        return minmax_normalize(stacked.mean(dim=1), EPS)

    def _augmentation_smoothing(self, x: Tensor, targets: list[OutputTarget] | None, eigen_smooth: bool) -> Tensor:
        if self.tta_transforms is not None:  # a ttach.Compose: augment, explain, de-augment each map
            maps = []
            for transform in self.tta_transforms:
                cam = self.forward(transform.augment_image(x), targets, eigen_smooth)
                maps.append(transform.deaugment_mask(cam.unsqueeze(1).float())[:, 0])
            return torch.stack(maps).mean(dim=0)
        total = None
        for flip, factor in _TTA:
            augmented = x * factor if factor != 1.0 else x
            augmented = augmented.flip(-1) if flip else augmented
            cam = self.forward(augmented, targets, eigen_smooth)
            cam = cam.flip(-1) if flip else cam
            total = cam if total is None else total + cam
        return total / len(_TTA)

    # -- pytorch-grad-cam's generic pipeline (extension points) ----------------------------------------------------
    @classmethod
    def _user_overrides(cls, name: str) -> bool:
        """Whether ``name`` is defined by a class outside this package (a user's subclass)."""
        for klass in cls.__mro__:
            if name in vars(klass):
                return not klass.__module__.startswith(_PACKAGE)
        return False

    def _uses_generic_path(self, eigen_smooth: bool = False) -> bool:
        """Whether this call runs the generic pipeline rather than the extractor's."""
        return (
            self._generic
            or (eigen_smooth and self._eigen_generic)
            or self._extractor is None
            or self.compute_input_gradient
            or not self.detach
            or any(self._user_overrides(name) for name in _EXTENSION_POINTS)
        )

    def get_cam_weights(
        self,
        input_tensor: Tensor,
        target_layer: nn.Module,
        targets: list[OutputTarget],
        activations: Any,
        grads: Any,
    ) -> Any:
        """The per-channel weights ``(N, C)`` of one layer (pytorch-grad-cam's extension point).

        Args:
            input_tensor: the explained batch.
            target_layer: the layer.
            targets: one target per sample.
            activations: ``(N, C, *S)`` activations (NumPy when ``detach``, else the graph-connected tensor).
            grads: their gradients (same type), or ``None`` for gradient-free methods.

        Returns:
            ``(N, C)`` weights (array or tensor).

        Raises:
            NotImplementedError: always here; a subclass implements it.

        """
        raise NotImplementedError("get_cam_weights must be implemented by a subclass")

    def _cam_image(
        self,
        input_tensor: Tensor,
        target_layer: nn.Module,
        targets: list[OutputTarget],
        activations: Any,
        grads: Any,
        eigen_smooth: bool,
    ) -> Tensor:
        """:meth:`get_cam_image` in torch: ``(N, *S)`` map on the device (before ReLU)."""
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        acts = _device_tensor(activations, self.device)
        if acts.ndim not in (4, 5):
            raise ValueError(f"Invalid activation shape {tuple(acts.shape)}: (N, C, H, W) or (N, C, D, H, W) expected")
        weights = _device_tensor(weights, acts.device)  # NumPy-style promotion (float64 weights: float64 maps)
        return weighted_map(weights, acts, eigen_smooth)

    def get_cam_image(
        self,
        input_tensor: Tensor,
        target_layer: nn.Module,
        targets: list[OutputTarget],
        activations: Any,
        grads: Any,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """One layer's raw map ``(N, *S)`` as a float32 array: ``sum_c(w * A)`` or its first principal component."""
        cam = self._cam_image(input_tensor, target_layer, targets, activations, grads, eigen_smooth)
        return cam.detach().float().cpu().numpy()

    def get_target_width_height(self, input_tensor: Tensor) -> tuple[int, ...]:
        """The output size in OpenCV's order: ``(W, H)`` or ``(W, H, D)`` (``(D, W, H)`` dims reversed)."""
        if input_tensor.ndim not in (4, 5):
            raise ValueError("Invalid input_tensor shape. Only 2D or 3D images are supported.")
        return tuple(int(s) for s in input_tensor.shape[2:])[::-1]

    #: methods whose own ``_cam_image`` works on the device tensors, whatever ``detach`` says
    _device_records: bool = False

    def _recorded(self) -> tuple[list[Any], list[Any]]:
        """The recorded activations and gradients, as the extension points receive them (NumPy when ``detach``)."""
        acts, grads = list(self._hooks.activations), list(self._hooks.gradients)
        if self.detach and not self._device_records:
            return [a.cpu().numpy() for a in acts], [g.cpu().numpy() for g in grads]
        return acts, grads

    def _cam_per_layer(self, input_tensor: Tensor, targets: list[OutputTarget], eigen_smooth: bool) -> list[Tensor]:
        """Per-layer ``(N, 1, *size)`` maps on the device: ReLU, min-max normalised, resized to the input."""
        acts, grads = self._recorded()
        size = self.get_target_width_height(input_tensor)
        user_image = self._user_overrides("get_cam_image")
        maps = []
        for i, layer in enumerate(self.target_layers):
            act = acts[i] if i < len(acts) else None
            grad = grads[i] if i < len(grads) else None
            if user_image:
                cam = _device_tensor(self.get_cam_image(input_tensor, layer, targets, act, grad, eigen_smooth), None)
            else:
                cam = self._cam_image(input_tensor, layer, targets, act, grad, eigen_smooth)
            cam = _device_tensor(cam, self.device)
            maps.append(scale_maps(torch.relu(cam.detach().float()), size).unsqueeze(1))
        return maps

    def compute_cam_per_layer(
        self, input_tensor: Tensor, targets: list[OutputTarget], eigen_smooth: bool
    ) -> list[np.ndarray]:
        """Per-layer ``(N, 1, H, W)`` float32 maps (ReLU, normalised, resized), pytorch-grad-cam's extension point."""
        return [m.cpu().numpy() for m in self._cam_per_layer(input_tensor, targets, eigen_smooth)]

    @staticmethod
    def _aggregate(maps: list[Tensor]) -> Tensor:
        """``(N, 1, *S)`` per-layer maps -> ReLU, mean over layers, min-max normalised: ``(N, *S)``."""
        stacked = torch.relu(torch.cat(maps, dim=1))
        return scale_maps(stacked.mean(dim=1))

    def aggregate_multi_layers(self, cam_per_target_layer: list[Any]) -> np.ndarray:
        """pytorch-grad-cam's layer aggregation: ``(N, 1, *S)`` maps -> ``(N, *S)`` float32 array."""
        return self._aggregate([_device_tensor(m, self.device) for m in cam_per_target_layer]).cpu().numpy()

    def _backward(self, loss: Tensor, leaf: Tensor | None) -> None:
        """Back-propagate ``loss`` to the hooked outputs (and ``leaf``): the hooks record the gradients."""
        keep_leaf_grad = leaf is not None and leaf.requires_grad
        wrt = [out for out in self._hooks.raw_outputs if out.requires_grad]
        if self._hooks.outputs_modified_in_place():  # their hooks fire only for a backward past the layers
            wrt, leaf = [], leaf if leaf is not None else self._generic_input
        if leaf is not None and leaf.requires_grad:
            wrt.append(leaf)
        if not wrt:
            raise RuntimeError(
                f"{type(self).__name__} needs gradients, but no target layer output requires grad (a forward under "
                "torch.inference_mode(), or frozen layers with an input that does not require grad)"
            )
        got = torch.autograd.grad(loss, wrt, retain_graph=True, create_graph=not self.detach, allow_unused=True)
        if keep_leaf_grad:
            leaf.grad = got[-1] if got[-1] is not None else torch.zeros_like(leaf)  # type: ignore[union-attr]

    _generic_input: Tensor | None = None

    def _generic_forward(self, x: Tensor, targets: list[OutputTarget] | None, eigen_smooth: bool) -> Tensor:
        """pytorch-grad-cam's ``BaseCAM.forward`` with the extension points: ``(N, *size)`` maps on the device."""
        self.last_path, self.last_model, self.fallback_reason = GENERIC, "model", None
        tail_only = self._generic_records_unavailable() is None
        copy_reason = self._copy_unavailable(x, eigen_smooth) if tail_only else None  # before model_eval: train mode
        with model_eval(self.model), self._hooks.recording([] if tail_only else self.target_layers):
            inp = x.detach().requires_grad_(True) if self.compute_input_gradient else x
            if tail_only:
                fast = self._record_tail_only(x, targets, copy_reason)
                if fast is None:
                    return self._generic_forward(x, targets, eigen_smooth)
                targets = self._default_targets(fast.outputs) if targets is None else targets
            else:
                targets = self._record_with_hooks(inp, targets)
            with torch.enable_grad() if not self.detach else torch.no_grad():
                if self._user_overrides("compute_cam_per_layer"):
                    maps: list[Any] = self.compute_cam_per_layer(inp, targets, eigen_smooth)
                else:
                    maps = self._cam_per_layer(inp, targets, eigen_smooth)
                if self._user_overrides("aggregate_multi_layers"):
                    host = [m.detach().cpu().numpy() if isinstance(m, Tensor) else m for m in maps]
                    result = _device_tensor(self.aggregate_multi_layers(host), self.device)
                else:
                    result = self._aggregate([_device_tensor(m, self.device) for m in maps])
        return result.detach()

    def _record_with_hooks(self, inp: Tensor, targets: list[OutputTarget] | None) -> list[OutputTarget] | None:
        """pytorch-grad-cam's recording: the user's model with hooks, one backward of the summed targets."""
        with torch.enable_grad() if self.uses_gradients else torch.no_grad():
            if self.uses_gradients and not inp.requires_grad:
                # keep the hooked outputs differentiable even with frozen parameters
                inp = inp.detach().requires_grad_(True)
            self._generic_input = inp
            self.outputs = outputs = self._hooks(inp)
            if targets is None:
                targets = self._default_targets(outputs)
            if self.uses_gradients:
                loss = sum(target(output) for target, output in zip(targets, outputs, strict=False))
                self._backward(loss, inp if self.compute_input_gradient else None)  # type: ignore[arg-type]
            self._generic_input = None
        return targets

    def _generic_records_unavailable(self) -> str | None:
        """Why a generic call records with hooks on the user's model rather than tail-only (``None``: tail-only).

        The extension points only read the target layers' activations and the gradients of the summed targets;
        a tail-only forward (:mod:`pycam_fast.forward.explained`) gives the same values without recording the
        layers before the first target (and on the optimised copy when allowed). Input gradients and kept graphs
        (``compute_input_gradient``, ``detach=False``) need the full recording.
        """
        if self.compute_input_gradient:
            return "compute_input_gradient needs the input's gradient"
        if not self.detach:
            return "detach=False keeps the recorded graph"
        return self._tail_only_unavailable()

    def _record_tail_only(
        self, x: Tensor, targets: list[OutputTarget] | None, copy_reason: str | None
    ) -> ForwardResult | None:
        """Fill :attr:`activations_and_grads` from one tail-only forward (returned).

        ``None``: a target's output turned out to be modified in place; the caller records with hooks instead.
        """
        classes = _class_targets(targets) if self.uses_gradients else None
        fast = self._tail_only(x, targets, classes, copy_reason)
        if fast is not None:
            self._hooks.activations = list(fast.activations)
            self._hooks.gradients = list(fast.grads or [])
        return fast

    def _default_targets(self, outputs: Any) -> list[OutputTarget] | None:
        """pytorch-grad-cam's targets for ``targets=None``: each sample's top class (``None`` where not needed)."""
        classes = default_classes(outputs, self._needs_classes)
        return None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]

    def _tail_only(
        self, x: Tensor, targets: list[OutputTarget] | None, classes: list[int] | None, copy_reason: str | None
    ) -> ForwardResult | None:
        """One tail-only forward, on the optimised copy unless ``copy_reason`` (sets :attr:`outputs` and the report).

        ``classes`` (one per sample) replace ``targets`` when given. ``None``: a target layer's output turned out to
        be modified in place, and the call must be redone with hooks (remembered for the next calls).
        """
        forward = self._fast_forward
        assert forward is not None  # callers checked _tail_only_unavailable()
        fast = forward.run(
            x,
            class_idx=classes,
            targets=None if classes is not None else targets,
            gradients=self.uses_gradients,
            on_copy=copy_reason is None,
            keep_graph=not self.detach,
            need_classes=self._needs_classes,
        )
        if self._refuse_in_place(fast.modified_in_place):
            return None
        self.outputs = fast.outputs
        self.last_model, self.fallback_reason = ("copy" if fast.on_copy else "model"), copy_reason
        return fast

    # -- checks and state ------------------------------------------------------------------------------------------
    def _check_input(self, input_tensor: Tensor) -> Tensor:
        if not isinstance(input_tensor, Tensor):
            raise TypeError(f"`input_tensor` must be a torch.Tensor (N, C, H, W), got {type(input_tensor).__name__}")
        if input_tensor.ndim not in (4, 5):
            raise ValueError(
                f"`input_tensor` must be a batch (N, C, H, W) or (N, C, D, H, W); got shape {tuple(input_tensor.shape)}"
                " (add the batch dim with .unsqueeze(0))"
            )
        param = next(iter(self.model.parameters()), None)
        return input_tensor if param is None else input_tensor.to(param.device)

    @staticmethod
    def _check_targets(targets: Sequence[OutputTarget] | None, batch: int) -> list[OutputTarget] | None:
        if targets is None:
            return None
        if not isinstance(targets, (list, tuple)) or any(not callable(t) for t in targets):
            raise TypeError("`targets` must be a list of callables, e.g. [ClassifierOutputTarget(281)], or None")
        if len(targets) != batch:
            raise ValueError(
                f"`targets` needs one target per sample: got {len(targets)} for a batch of {batch} "
                "(e.g. [ClassifierOutputTarget(c)] * batch)"
            )
        return list(targets)

    @contextmanager
    def _recording(self, hooks: bool = True) -> Iterator[None]:
        """Extractor state for one forward: hooks recording if ``hooks``; everything recorded is cleared on exit."""
        if hooks:
            self._extractor.enable_hooks()
        try:
            yield
        finally:
            self._extractor.disable_hooks()
            self._extractor.reset_hooks()

    @property
    def activations_and_grads(self) -> ActivationsAndGradients:
        """pytorch-grad-cam's hook holder (``.release()`` removes every hook of this CAM from the model).

        The generic path records into it during a call (its lists are cleared when the call returns).
        """
        return self._hooks

    def _remove_extractor_hooks(self) -> None:
        if self._extractor is not None:
            self._extractor.remove_hooks()

    def release(self) -> None:
        """Remove the hooks from the model (idempotent)."""
        self._hooks.release()
        self._remove_extractor_hooks()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        hooks = getattr(self, "_hooks", None)
        if hooks is not None:
            hooks.release()
        extractor = getattr(self, "_extractor", None)
        if extractor is not None:
            extractor.remove_hooks()


#: modules whose ``ClassifierOutputTarget`` is ``output[category]`` (this package's and pytorch-grad-cam's)
class RecordsMapCAM(BaseCAM):
    """A built-in method whose layer map is a function of the layer's recorded tensors alone, on the device.

    It always runs the generic pipeline; a subclass implements :meth:`_records_map` instead of weights.
    """

    _generic = True
    _device_records = True

    def _records_map(self, activations: Tensor, grads: Tensor | None, eigen_smooth: bool) -> Tensor:
        """``(N, *S)`` map (before ReLU) from ``(N, C, *S)`` activations and gradients (``None``: gradient-free)."""
        raise NotImplementedError

    def _cam_image(
        self,
        input_tensor: Tensor,
        target_layer: nn.Module,
        targets: list[OutputTarget],
        activations: Any,
        grads: Any,
        eigen_smooth: bool,
    ) -> Tensor:
        return self._records_map(activations, grads, eigen_smooth)


_CLASSIFIER_TARGET_MODULES = (
    "pycam_fast.compat.pytorch_grad_cam.utils.model_targets",
    "pytorch_grad_cam.utils.model_targets",
)


def weighted_map(weights: Tensor, activations: Tensor, eigen_smooth: bool) -> Tensor:
    """``sum_c w_c A_c`` (or, with ``eigen_smooth``, the principal component of ``w * A``, NumPy's sign): ``(N, *S)``.

    Args:
        weights: ``(N, C)`` (or broadcastable) weights.
        activations: ``(N, C, *S)``.
        eigen_smooth: project on the first principal component instead of summing the channels.

    """
    weighted = weights[(...,) + (None,) * (activations.ndim - weights.ndim)] * activations
    return numpy_sign_projection(weighted) if eigen_smooth else weighted.sum(dim=1)


def _layer_names(model: nn.Module, layers: Sequence[nn.Module]) -> list[str] | None:
    """The dotted names of ``layers`` in ``model`` (``None`` if one is not a distinct submodule of it)."""
    names = {id(module): name for name, module in model.named_modules()}
    found = [names.get(id(layer)) for layer in layers]
    if any(name is None for name in found) or len(set(found)) != len(found):
        return None
    return found  # type: ignore[return-value]


def _device_tensor(value: Any, device: torch.device | None) -> Tensor:
    """An array or tensor as a tensor (on ``device`` when given)."""
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    return tensor if device is None else tensor.to(device)


def _class_targets(targets: list[OutputTarget] | None) -> list[int] | None:
    """The categories when every target is a plain ``ClassifierOutputTarget`` (one logit), else ``None``.

    Explaining one logit per sample is a class-based call, whose gradients can come in closed form.
    """
    if targets is None:
        return None
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
