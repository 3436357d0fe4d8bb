"""The pytorch-grad-cam 1.5.7 calling convention on top of :mod:`pycam_fast.methods` extractors.

``cam(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)`` runs one forward (with gradients only
for gradient methods), computes each layer's map with the extractor's weights, and reproduces
pytorch-grad-cam's output pipeline on the device:

per layer ``sum_c(w * A)`` (or the first-principal-component projection of ``w * A`` with ``eigen_smooth``) ->
ReLU -> per-image ``(x - min) / (1e-7 + max)`` -> bilinear resize to the input (``align_corners=False``, what
``cv2.resize`` INTER_LINEAR computes); layers are then stacked, ReLU'd, averaged and min-max normalised again.
The only host copy is the final ``numpy()`` (and, with ``eigen_smooth`` / Eigen methods, one batched copy for
NumPy's singular-vector sign). Gradients are taken with ``torch.autograd.grad`` w.r.t. the hooked outputs only:
parameter ``.grad`` is untouched and only the tail after the target layers is back-propagated.

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
values differ); a target layer called several times in one forward uses its LAST call's output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn

from ... import ops
from ...forward.explained import ExplainedForward, argmax_classes
from ...methods.eigencam import principal_projection
from ...methods.extractor import CAMExtractor
from ...methods.spec import CamTerms
from ...model_state import model_eval
from ...ops.reference import minmax_normalize
from ...targets import OutputTarget

__all__ = ["EPS", "EXACT", "BaseCAM"]

#: ``cam.last_path`` of a call that ran the full forward with the extractor's hooks
EXACT = "exact"

#: pytorch-grad-cam's normalisation epsilon: ``(x - min) / (1e-7 + max(x - min))``.
EPS = 1e-7

#: ttach's default test-time augmentations in pytorch-grad-cam (Compose product order): (hflip, factor).
_TTA: tuple[tuple[bool, float], ...] = tuple((flip, f) for flip in (False, True) for f in (0.9, 1.0, 1.1))


class BaseCAM:
    """pytorch-grad-cam ``BaseCAM`` API: ``Method(model, target_layers, reshape_transform=None)``.

    Subclasses set :attr:`extractor_cls` (a :mod:`pycam_fast.methods` class) and, if needed, extra keyword
    arguments for its weights.

    Args:
        model: the model to explain (its training flags are restored after each call).
        target_layers: a non-empty list of submodules of ``model``.
        reshape_transform: applied to the hooked activations and gradients (e.g.
            :func:`~pycam_fast.compat.pytorch_grad_cam.utils.reshape_transforms.vit_reshape_transform`).
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

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        *,
        fast: bool = True,
        **extractor_kwargs: Any,
    ) -> None:
        if not isinstance(target_layers, (list, tuple)) or not target_layers:
            raise TypeError("`target_layers` must be a non-empty list of modules, e.g. [model.layer4[-1]]")
        if any(not isinstance(layer, nn.Module) for layer in target_layers):
            raise TypeError("`target_layers` must contain nn.Module objects (submodules of `model`), not names")
        self.model = model
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.outputs: Any = None
        self._extractor = self.extractor_cls(
            model, self.target_layers, enable_hooks=False, reshape_transform=reshape_transform, **extractor_kwargs
        )
        self.fast = fast
        #: how the last forward ran: ``"exact"``, ``"closed_form"``, ``"tail_autograd"`` or ``"no_grad"``
        self.last_path: str | None = None
        #: which network ran the last forward: ``"copy"`` (the optimised private copy) or ``"model"``
        self.last_model: str | None = None
        #: why the last forward did not run on the optimised copy (``None`` when it did)
        self.fallback_reason: str | None = None
        self._fast_forward = ExplainedForward(model, self._extractor.target_names) if self.supports_fast_path else None

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
        exact_reason = self._tail_only_unavailable()
        copy_reason = exact_reason or self._copy_unavailable(x, eigen_smooth)
        with model_eval(self.model), self._recording(hooks=exact_reason is not None):
            if exact_reason is None:
                on_copy = copy_reason is None
                # one logit per sample is a class-based call: its gradients may come in closed form
                closed = self.uses_gradients and self._fast_forward.closed_form(on_copy, None)  # type: ignore[union-attr]
                classes = _class_targets(targets) if closed else None
                fast = self._fast_forward.run(  # type: ignore[union-attr]
                    x,
                    class_idx=classes,
                    targets=None if classes is not None else targets,
                    gradients=self.uses_gradients,
                    on_copy=on_copy,
                )
                self._extractor.supply(fast.activations, fast.grads)
                self.outputs = outputs = fast.outputs
                class_idx, self.last_path = fast.class_idx, fast.path
                targets = None if fast.class_idx is not None else targets
                self.last_model = "copy" if fast.on_copy else "model"
            else:
                self.outputs = outputs = self._model_forward(x)
                class_idx = argmax_classes(outputs) if targets is None else None
                self.last_path, self.last_model = EXACT, "model"
            self.fallback_reason = copy_reason
            maps = self._layer_maps(class_idx, outputs, targets, eigen_smooth)
        with torch.no_grad():
            return self._resize_and_aggregate(maps, tuple(x.shape[2:]))

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
        return resized[0] if len(maps) == 1 else self.aggregate_multi_layers(resized)

    def _tail_only_unavailable(self) -> str | None:
        """Why this call takes the exact path (``None``: a tail-only forward, see :mod:`._fast`)."""
        if not self.fast:
            return "the fast path is switched off (fast=False)"
        if self._fast_forward is None:
            return f"{type(self).__name__} runs the user's model itself"
        if self.reshape_transform is not None:
            return "a reshape_transform is set"
        return self._fast_forward.unavailable()

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
            weights, maps = weights.new_ones(1, 1), principal_projection(weighted, sign="numpy").unsqueeze(1)
        return ops.cam_step(weights, maps, relu=True, normalize=True, eps=EPS, backend=backend)

    @staticmethod
    def aggregate_multi_layers(cams: list[Tensor]) -> Tensor:
        """Stack ``(N, H, W)`` maps, ReLU, mean over layers, min-max normalise: ``(N, H, W)``."""
        if len(cams) == 1 and cams[0].is_floating_point():
            # one layer: the mean of one map is the map, and the per-layer maps are already >= 0 (ReLU'd, then
            # resized with non-negative weights), so only the final normalisation changes the values (same numbers)
            return minmax_normalize(torch.relu(cams[0]), EPS)
        stacked = torch.relu(torch.stack(cams, dim=1))
        return minmax_normalize(stacked.mean(dim=1), EPS)

    def _augmentation_smoothing(self, x: Tensor, targets: list[OutputTarget] | None, eigen_smooth: bool) -> Tensor:
        total = None
        for flip, factor in _TTA:
            augmented = x * factor if factor != 1.0 else x
            augmented = augmented.flip(-1) if flip else augmented
            cam = self.forward(augmented, targets, eigen_smooth)
            cam = cam.flip(-1) if flip else cam
            total = cam if total is None else total + cam
        return total / len(_TTA)

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
    def activations_and_grads(self) -> Self:
        """pytorch-grad-cam's hook holder; here the CAM itself (``.release()`` removes the hooks)."""
        return self

    def release(self) -> None:
        """Remove the hooks from the model (idempotent)."""
        self._extractor.remove_hooks()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        extractor = getattr(self, "_extractor", None)
        if extractor is not None:
            extractor.remove_hooks()


#: modules whose ``ClassifierOutputTarget`` is ``output[category]`` (this package's and pytorch-grad-cam's)
_CLASSIFIER_TARGET_MODULES = (
    "pycam_fast.compat.pytorch_grad_cam.utils.model_targets",
    "pytorch_grad_cam.utils.model_targets",
)


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
