"""The extractor base class: hooks on the target layers, call checks, and the CAM step through a backend."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from types import TracebackType
from typing import Any, Self

import torch
from torch import Tensor, nn

from ..hooks import LayerSpec, model_eval, resolve_target_names
from ..reference import DEFAULT_EPS, upsample
from ..registry import BackendUnavailable, get_ops, validate_backend_name
from ..targets import ClassIdx, OutputTarget, resolve_targets

__all__ = ["_CAM"]


class _CAM:
    """Class activation map extractor: hooks the target layers and turns their activations into maps.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those (one map each), or ``None`` (automatic).
        input_shape: one sample's input shape, used by the automatic layer resolution.
        enable_hooks: whether hooks record from the start.
        reshape_transform: applied to hooked activations and gradients (e.g. ViT tokens -> ``(N, C, H, W)``).
        backend: ``"auto"`` or a backend of :func:`pycam_fast.registry` for the CAM math.

    Raises:
        TypeError: a non-callable ``reshape_transform`` or a bad ``target_layer`` type.
        ValueError: a bad ``target_layer``, ``reshape_transform`` without ``target_layer``, or an unknown backend.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        input_shape: tuple[int, ...] = (3, 224, 224),
        enable_hooks: bool = True,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        backend: str = "auto",
    ) -> None:
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("`reshape_transform` must be callable, e.g. a function (N, T, D) -> (N, C, H, W)")
        if reshape_transform is not None and target_layer is None:
            raise ValueError("`target_layer` must be specified when using `reshape_transform`")
        self.backend = validate_backend_name(backend)
        self.submodule_dict = dict(model.named_modules())
        self.target_names = resolve_target_names(model, target_layer, input_shape, self.submodule_dict)
        self.model = model
        self._reshape_transform = reshape_transform
        self.reset_hooks()
        self.hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        for idx, name in enumerate(self.target_names):
            self.hook_handles.append(self.submodule_dict[name].register_forward_hook(partial(self._hook_a, idx=idx)))
        self._hooks_enabled = enable_hooks
        # Class traits, set by the subclasses
        self._relu = False
        self._score_used = False
        self._targets_supported = False

    # -- hooks -----------------------------------------------------------------------------------------------------
    def _hook_a(self, _module: nn.Module, _inputs: tuple[Any, ...], output: Any, idx: int = 0) -> None:
        if not self._hooks_enabled:
            return
        if self._reshape_transform is not None:
            output = self._reshape_transform(output)
        if isinstance(output, Tensor):
            self.hook_a[idx] = output.detach()
            self._bad_outputs.pop(idx, None)
        else:
            self.hook_a[idx] = None
            self._bad_outputs[idx] = type(output).__name__

    def enable_hooks(self) -> None:
        """Enable hooks."""
        self._hooks_enabled = True

    def disable_hooks(self) -> None:
        """Disable hooks."""
        self._hooks_enabled = False

    @contextmanager
    def _hooks_off(self) -> Iterator[None]:
        previous = self._hooks_enabled
        self._hooks_enabled = False
        try:
            yield
        finally:
            self._hooks_enabled = previous

    def _eval_mode(self) -> AbstractContextManager[None]:
        return model_eval(self.model)

    def reset_hooks(self) -> None:
        """Clear stored activations and gradients."""
        self.hook_a: list[Tensor | None] = [None] * len(self.target_names)
        self.hook_g: list[Tensor | None] = [None] * len(self.target_names)
        self._bad_outputs: dict[int, str] = {}

    def supply(self, activations: list[Tensor], grads: list[Tensor] | None = None) -> None:
        """Record the target layers' outputs of a forward run elsewhere (e.g. on a private optimised model copy).

        The next weight computation reads them instead of what the hooks recorded; :meth:`reset_hooks` clears them.

        Args:
            activations: one ``(N, C, *S)`` output per target layer (after ``reshape_transform``, if any).
            grads: gradients of the explained scores with respect to ``activations`` (gradient methods only).

        Raises:
            ValueError: not one activation per target layer, or ``grads`` for a gradient-free method.

        """
        if len(activations) != len(self.target_names):
            raise ValueError(f"expected {len(self.target_names)} activations (one per layer), got {len(activations)}")
        if grads is not None:
            raise ValueError(f"{self.__class__.__name__} is gradient-free: supply activations only")
        self.hook_a = list(activations)
        self._bad_outputs = {}

    def remove_hooks(self) -> None:
        """Remove every hook from the model (idempotent)."""
        for handle in self.hook_handles:
            handle.remove()
        self.hook_handles.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.remove_hooks()
        finally:
            self.reset_hooks()

    # -- checks ----------------------------------------------------------------------------------------------------
    def _check_activations(self) -> list[Tensor]:
        for idx, type_name in self._bad_outputs.items():
            raise TypeError(
                f"target layer '{self.target_names[idx]}' returned a {type_name}, not a tensor: choose a layer that "
                "outputs a tensor or pass `reshape_transform` to turn its output into one"
            )
        if any(not isinstance(act, Tensor) for act in self.hook_a):
            raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
        activations: list[Tensor] = self.hook_a  # type: ignore[assignment]
        for name, act in zip(self.target_names, activations, strict=True):
            if act.ndim not in (3, 4, 5):
                raise ValueError(
                    f"target layer '{name}' output has shape {tuple(act.shape)}; CAMs need (N, C, *spatial) with 1 to "
                    "3 spatial dims: choose a convolutional layer or pass `reshape_transform`"
                )
        return activations

    def _precheck(
        self,
        class_idx: ClassIdx | None,
        scores: Any = None,
        targets: OutputTarget | list[OutputTarget] | None = None,
    ) -> None:
        if (class_idx is None) == (targets is None):
            raise ValueError("provide exactly one of class_idx or targets")
        if targets is not None and not self._targets_supported:
            raise ValueError(f"{self.__class__.__name__} does not support arbitrary output targets")
        batch = self._check_activations()[0].shape[0]
        if isinstance(class_idx, list) and len(class_idx) != batch:
            raise ValueError("expected batch size and length of `class_idx` to be the same.")
        if targets is not None:
            resolve_targets(targets, batch)
        elif not _valid_class_idx(class_idx):
            raise ValueError(
                "Incorrect `class_idx` argument value: pass a non-negative int or a list of non-negative ints "
                f"(got {class_idx!r})"
            )
        if self._score_used and scores is None:
            raise ValueError("model output scores is required to be passed to compute CAMs")
        if self._score_used and targets is None and not isinstance(scores, Tensor):
            raise TypeError("model output scores must be a tensor when using class_idx")
        if self._score_used and isinstance(scores, Tensor) and (scores.ndim == 0 or scores.shape[0] != batch):
            raise ValueError(
                f"`scores` has shape {tuple(scores.shape)} but the hooked batch has {batch} samples: pass the output "
                "of the forward that produced the hooked activations"
            )

    # -- call ------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        class_idx: ClassIdx | None = None,
        scores: Any = None,
        normalized: bool = True,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        output_size: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> list[Tensor]:
        """Compute one CAM per target layer.

        Args:
            class_idx: the class to explain: one int for the batch or a list of N ints.
            scores: the model output ``(N, K)`` of the hooked forward (gradient methods).
            normalized: min-max normalise each map to [0, 1].
            targets: instead of ``class_idx``, one callable (or N) mapping a sample's output to a scalar.
            output_size: optional spatial size (e.g. ``(224, 224)``): maps are resized to it (bilinear/trilinear,
                ``align_corners=False``) before ReLU and normalisation.
            kwargs: passed to the weight computation (``retain_graph``, ``eps``).

        Returns:
            one ``(N, *spatial)`` map per target layer, on the activations' device and dtype.

        """
        self._precheck(class_idx, scores, targets)
        return self.compute_cams(class_idx, scores, normalized, targets=targets, output_size=output_size, **kwargs)

    def compute_cams(
        self,
        class_idx: ClassIdx | None = None,
        scores: Any = None,
        normalized: bool = True,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        output_size: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> list[Tensor]:
        """Compute the CAMs without the argument checks of ``__call__`` (same arguments and result)."""
        if targets is not None:
            kwargs["targets"] = targets
        weights = self._get_weights(class_idx, scores, **kwargs)
        activations = self._cam_activations()
        with torch.no_grad():
            return [
                self._ops(act).cam_step(
                    weight.to(act.dtype),
                    act,
                    relu=self._relu,
                    output_size=_check_output_size(output_size, act.ndim - 2),
                    normalize=normalized,
                    eps=DEFAULT_EPS,
                )
                for weight, act in zip(weights, activations, strict=True)
            ]

    def _cam_activations(self) -> list[Tensor]:
        """Activations that the weights multiply (the hooked ones unless a method says otherwise)."""
        return self.hook_a  # type: ignore[return-value]

    def _ops(self, tensor: Tensor) -> Any:
        """The backend ops for ``tensor``'s device."""
        try:
            return get_ops(self.backend, tensor.device)
        except BackendUnavailable as exc:  # pragma: no cover - get_ops raises ValueError with the reason
            raise ValueError(str(exc)) from exc

    @abstractmethod
    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **kwargs: Any) -> list[Tensor]:
        """Per-layer weights: ``(N, C)``, ``(1, C)`` or ``(N, C, *S)``."""

    # -- fusion ----------------------------------------------------------------------------------------------------
    @classmethod
    def fuse_cams(cls, cams: list[Tensor], target_shape: tuple[int, ...] | None = None) -> Tensor:
        """Fuse the maps of several layers: resize to the largest (or ``target_shape``) and take the max.

        Args:
            cams: ``(N, *S_i)`` maps of one input, one per layer.
            target_shape: spatial shape of the result (default: the largest of each dim).

        Returns:
            ``(N, *target_shape)`` fused map (a single map is returned unchanged).

        Raises:
            TypeError: ``cams`` is not a list of tensors.
            ValueError: ``cams`` is empty.

        """
        if not isinstance(cams, list) or any(not isinstance(cam, Tensor) for cam in cams):
            raise TypeError("invalid argument type for `cams`: expected a list of tensors")
        if not cams:
            raise ValueError("argument `cams` cannot be an empty list")
        if len(cams) == 1:
            return cams[0]
        shape = target_shape if isinstance(target_shape, tuple) else tuple(map(max, *(c.shape[1:] for c in cams)))
        fused = None
        for cam in cls._scale_cams(cams):
            resized = upsample(cam, shape)
            fused = resized if fused is None else torch.maximum(fused, resized)
        return fused

    @staticmethod
    def _scale_cams(cams: list[Tensor]) -> list[Tensor]:
        return cams

    def _extra_repr(self) -> str:
        return f"target_layer={self.target_names}"

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._extra_repr()})"


def _valid_class_idx(class_idx: Any) -> bool:
    def _ok(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    return _ok(class_idx) or (isinstance(class_idx, list) and all(_ok(v) for v in class_idx))


def _check_output_size(output_size: Sequence[int] | None, spatial_dims: int) -> tuple[int, ...] | None:
    if output_size is None:
        return None
    try:
        size = tuple(int(s) for s in output_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != spatial_dims or any(s <= 0 for s in size) or size != tuple(output_size):
        raise ValueError(
            f"`output_size` must be {spatial_dims} positive ints matching the map's spatial dims, e.g. "
            f"{(224,) * spatial_dims}; got {output_size!r}"
        )
    return size


def _gaussian(shape: torch.Size, std: float) -> Tensor:
    """Gaussian noise drawn from the default CPU generator, the same draws as TorchCAM's for the same seed."""
    return torch.distributions.Normal(0.0, std).sample(shape)
