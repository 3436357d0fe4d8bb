"""The TorchCAM-style extractor: hooks on the target layers, then a method's map through the backend ops.

:class:`CAMExtractor` is the public base of every class in :mod:`pycam_fast.methods` (``_CAM`` is its TorchCAM name).
A subclass sets ``spec`` (its :class:`~.spec.MethodSpec`) and, where TorchCAM's constructor takes options
positionally, ``positional_arguments`` (the constructor with that explicit signature is generated, the defaults
coming from the spec); everything else comes from the spec's kind. The extension API the drop-in layers use:

- :meth:`CAMExtractor.activations` / :meth:`CAMExtractor.gradients`: what the hooks recorded (checked);
- :meth:`CAMExtractor.supply`: activations and gradients computed elsewhere (a tail-only forward on a private copy);
- :meth:`CAMExtractor.layer_inputs` / :meth:`CAMExtractor.cam_terms`: a method's inputs and terms per layer;
- :func:`~.noise.gaussian_noise`: TorchCAM-compatible noise draws.

TorchCAM subclasses that override ``_get_weights(class_idx, scores, **kwargs) -> list[Tensor]`` keep working: their
weights multiply the hooked activations.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from .. import ops
from ..layers import LayerSpec, resolve_target_names
from ..model_state import model_eval
from ..targets import ClassIdx, OutputTarget, class_indices, resolve_targets, select_scores
from .noise import gaussian_noise
from .options import OPTION_ANNOTATIONS, check_option, check_output_size, positive_int, resolve_options
from .spec import CamTerms, GradMoments, LayerInputs, MethodSpec

__all__ = ["BatchedExtractor", "CAMExtractor", "_CAM"]


class CAMExtractor:
    """Class activation map extractor: hooks the target layers and turns what they record into maps.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those (one map each), or ``None`` (automatic).
        input_shape: one sample's input shape, used by the automatic layer resolution.
        enable_hooks: whether hooks record from the start.
        reshape_transform: applied to hooked activations and gradients (e.g. ViT tokens -> ``(N, C, H, W)``).
        backend: ``"auto"`` or a backend of :func:`pycam_fast.backends` for the CAM math.
        options: the method's options (see its ``spec.options``), e.g. ``num_samples=8``.

    Raises:
        TypeError: a non-callable ``reshape_transform``, a bad ``target_layer`` type or an unknown option.
        ValueError: a bad ``target_layer`` or option value, ``reshape_transform`` without ``target_layer``, or an
            unknown backend.

    """

    spec: ClassVar[MethodSpec]
    #: TorchCAM's positional arguments after ``target_layer``: a subclass that sets them gets a constructor with that
    #: explicit signature (an option of ``spec`` takes its default there; another name comes from the base class)
    positional_arguments: ClassVar[tuple[str, ...]] = ()
    #: whether the method accepts a ``reshape_transform``
    supports_reshape_transform: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "positional_arguments" in cls.__dict__:
            cls.__init__ = _positional_init(cls)  # type: ignore[method-assign]

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        input_shape: tuple[int, ...] = (3, 224, 224),
        enable_hooks: bool = True,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        backend: str = "auto",
        **options: Any,
    ) -> None:
        if reshape_transform is not None and not self.supports_reshape_transform:
            raise ValueError(
                f"{self.spec.name} does not support `reshape_transform`: pick a layer with (N, C, *S) output"
            )
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("`reshape_transform` must be callable, e.g. a function (N, T, D) -> (N, C, H, W)")
        if reshape_transform is not None and target_layer is None:
            raise ValueError("`target_layer` must be specified when using `reshape_transform`")
        for name, value in resolve_options(self.spec, options).items():
            setattr(self, name, value)
        self.backend = ops.validate_backend_name(backend)
        self.submodule_dict = dict(model.named_modules())
        self.target_names = resolve_target_names(model, target_layer, input_shape, self.submodule_dict)
        self.model = model
        self._reshape_transform = reshape_transform
        self._own_forward = False
        self._input: Tensor | None = None
        self.reset_hooks()
        self.hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        for idx, name in enumerate(self.target_names):
            self.hook_handles.append(self.submodule_dict[name].register_forward_hook(partial(self._hook_a, idx=idx)))
        if self.spec.kind == "gradient":
            for idx, name in enumerate(self.target_names):
                # a separate hook keeps the un-detached output (robust to in-place ops after the layer)
                hook = partial(self._hook_g, idx=idx)
                self.hook_handles.append(self.submodule_dict[name].register_forward_hook(hook))
        if self.spec.smooth or self.spec.kind in ("score", "ablation"):
            self.hook_handles.append(model.register_forward_pre_hook(self._store_input))
        self._hooks_enabled = enable_hooks

    @property
    def options(self) -> dict[str, Any]:
        """The method's options as the instance holds them (attributes, e.g. ``extractor.num_samples``)."""
        return {name: getattr(self, name) for name in self.spec.options}

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

    def _hook_g(self, _module: nn.Module, _inputs: tuple[Any, ...], output: Any, idx: int = 0) -> None:
        if self._hooks_enabled:
            self._hook_outputs[idx] = output if isinstance(output, Tensor) else None

    def _store_input(self, _module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if self._hooks_enabled and not self._own_forward and inputs and isinstance(inputs[0], Tensor):
            self._input = inputs[0].detach().clone()

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

    @contextmanager
    def own_forwards(self, eval_mode: bool = False) -> Iterator[None]:
        """Forwards of the extractor itself (noisy, masked, ablated copies) keep the stored input; optionally eval mode.

        Args:
            eval_mode: put every submodule in eval mode (restored on exit).

        """
        previous = self._own_forward
        self._own_forward = True
        try:
            with model_eval(self.model) if eval_mode else nullcontext():
                yield
        finally:
            self._own_forward = previous

    @contextmanager
    def scoring_forwards(
        self, targets: Any, batch: int, needs_input: bool = True
    ) -> Iterator[list[OutputTarget] | None]:
        """Context of the extractor's own scoring forwards (masked or ablated inputs): no grad, hooks off, eval mode.

        Args:
            targets: the call's ``targets`` (``None`` for class indices).
            batch: the batch size the targets must cover.
            needs_input: the forwards need the stored input (Score-CAM family).

        Yields:
            one target callable per sample, or ``None`` for class-index scores.

        Raises:
            AssertionError: ``needs_input`` and no input was forwarded through the hooked model (TorchCAM's error).

        """
        if needs_input and self._input is None:
            raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
        fns = resolve_targets(targets, batch) if targets is not None else None
        with torch.no_grad(), self._hooks_off(), self.own_forwards(eval_mode=True):
            yield fns

    def reset_hooks(self) -> None:
        """Clear stored activations, gradients and graph references."""
        self.hook_a: list[Tensor | None] = [None] * len(self.target_names)
        self.hook_g: list[Tensor | None] = [None] * len(self.target_names)
        self._bad_outputs: dict[int, str] = {}
        self._hook_outputs: list[Tensor | None] = [None] * len(self.target_names)
        self._grads_supplied = False

    def supply(self, activations: list[Tensor], grads: list[Tensor] | None = None) -> None:
        """Record the target layers' outputs (and gradients) of a forward run elsewhere, e.g. on a private copy.

        The next map uses them instead of what the hooks recorded; :meth:`reset_hooks` clears them.

        Args:
            activations: one ``(N, C, *S)`` output per target layer (after ``reshape_transform``, if any).
            grads: the explained scores' gradients with respect to ``activations`` (gradient methods only).

        Raises:
            ValueError: not one activation (and gradient) per target layer, or gradients for a gradient-free
                method / none for a gradient method.

        """
        if len(activations) != len(self.target_names):
            raise ValueError(f"expected {len(self.target_names)} activations (one per layer), got {len(activations)}")
        if (grads is not None) != (self.spec.kind == "gradient"):
            need = "one gradient per activation" if self.spec.kind == "gradient" else "activations only"
            raise ValueError(f"{type(self).__name__} needs {need}")
        if grads is not None and len(grads) != len(activations):
            raise ValueError(f"{type(self).__name__} needs one gradient per activation")
        self.hook_a = list(activations)
        self._bad_outputs = {}
        if grads is not None:
            self.hook_g = list(grads)
            self._grads_supplied = True

    def remove_hooks(self) -> None:
        """Remove every hook from the model (idempotent)."""
        for handle in self.hook_handles:
            handle.remove()
        self.hook_handles.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.remove_hooks()
        finally:
            self.reset_hooks()

    # -- what the hooks recorded -----------------------------------------------------------------------------------
    def activations(self) -> list[Tensor]:
        """The recorded ``(N, C, *S)`` activations, one per target layer.

        Raises:
            TypeError: a target layer returned something else than a tensor.
            AssertionError: nothing was recorded yet (TorchCAM's error).
            ValueError: an activation without 1-3 spatial dims.

        """
        for idx, type_name in self._bad_outputs.items():
            raise TypeError(
                f"target layer '{self.target_names[idx]}' returned a {type_name}, not a tensor: choose a layer that "
                "outputs a tensor or pass `reshape_transform` to turn its output into one"
            )
        if any(not isinstance(act, Tensor) for act in self.hook_a):
            raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
        for name, act in zip(self.target_names, self.hook_a, strict=True):
            if act.ndim not in (3, 4, 5):  # type: ignore[union-attr]
                raise ValueError(
                    f"target layer '{name}' output has shape {tuple(act.shape)}; CAMs need (N, C, *spatial) with 1 "  # type: ignore[union-attr]
                    "to 3 spatial dims: choose a convolutional layer or pass `reshape_transform`"
                )
        return list(self.hook_a)  # type: ignore[arg-type]

    def gradients(
        self,
        class_idx: ClassIdx | None,
        scores: Any,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        retain_graph: bool = False,
    ) -> list[Tensor]:
        """The explained scores' gradients with respect to each target layer's output (supplied, or back-propagated).

        Only the model tail after the target layers is back-propagated (``torch.autograd.grad`` with respect to the
        hooked outputs); parameter ``.grad`` is never touched.

        Raises:
            RuntimeError: the forward ran without gradients, or a score is not connected to a target layer.

        """
        if not self._grads_supplied:
            self._backprop(scores, class_idx, targets, retain_graph)
        return list(self.hook_g)  # type: ignore[arg-type]

    def _backprop(self, scores: Any, class_idx: ClassIdx | None, targets: Any, retain_graph: bool) -> None:
        outputs = self._hook_outputs
        if any(out is None or not out.requires_grad for out in outputs) or not _requires_grad(scores):
            raise RuntimeError(
                f"{type(self).__name__} needs gradients, but the hooked forward ran without them (under "
                "torch.no_grad() or torch.inference_mode(), or with an input and parameters that do not require "
                "grad): run `scores = model(x)` with gradients enabled before calling the extractor"
            )
        target_fns = resolve_targets(targets, outputs[0].shape[0]) if targets is not None else None  # type: ignore[union-attr]
        loss = select_scores(scores, class_idx, target_fns).sum()
        try:
            grads = torch.autograd.grad(loss, outputs, retain_graph=retain_graph)  # type: ignore[arg-type]
        except RuntimeError as exc:
            raise RuntimeError(
                "target score is not connected to every target layer: pick layers the explained output depends "
                f"on ({exc})"
            ) from exc
        finally:
            if not retain_graph:  # the graph is freed by autograd: drop our references so the activations can go
                self._hook_outputs = [None] * len(self.target_names)
        transform = self._reshape_transform
        self.hook_g = [(transform(g) if transform is not None else g).detach() for g in grads]

    def _noisy_moments(self, class_idx: ClassIdx | None, targets: Any, options: dict[str, Any]) -> list[GradMoments]:
        """Gradient moments over ``num_samples`` noisy copies ``x + N(0, std^2)`` of the stored input, per layer."""
        if self._input is None:
            raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
        num, clean = options["num_samples"], list(self.hook_a)
        sums: list[list[Tensor]] | None = None
        try:
            with self.own_forwards(), torch.enable_grad():
                for _ in range(num):
                    noise = gaussian_noise(self._input.size(), options["std"]).to(self._input.device, self._input.dtype)
                    out = self.model((self._input + noise).requires_grad_(True))
                    self._backprop(out, class_idx, targets, retain_graph=False)
                    if sums is None:
                        sums = [[torch.zeros_like(g) for _ in range(3)] for g in self.hook_g]  # type: ignore[union-attr]
                    for acc, g in zip(sums, self.hook_g, strict=True):
                        g2 = g.pow(2)  # type: ignore[union-attr]
                        acc[0].add_(g)
                        acc[1].add_(g2)
                        acc[2].add_(g2 * g)
            last_acts, last_grads = list(self.hook_a), list(self.hook_g)
        finally:
            self.hook_a = clean  # the map uses the clean activations: undo what the noisy forwards recorded
        return [
            GradMoments(s1 / num, s2 / num, s3 / num, g, a)  # type: ignore[arg-type]
            for (s1, s2, s3), g, a in zip(sums, last_grads, last_acts, strict=True)  # type: ignore[arg-type]
        ]

    def _classifier_weights(self) -> Tensor | None:
        """``(K, C)`` weights of the linear classifier, for methods that need them (base CAM)."""
        return None

    def _channel_scores(
        self, activations: list[Tensor], class_idx: ClassIdx | None, scores: Any, targets: Any, options: dict[str, Any]
    ) -> list[tuple[Tensor | None, Tensor | None]]:
        """Per layer ``(per-channel scores, base scores)`` of the perturbation methods (Score-CAM, Ablation-CAM)."""
        return [(None, None)] * len(activations)

    # -- checks ----------------------------------------------------------------------------------------------------
    def _precheck(
        self, class_idx: ClassIdx | None, scores: Any = None, targets: OutputTarget | list[OutputTarget] | None = None
    ) -> None:
        batch = self.activations()[0].shape[0]
        if self.spec.class_agnostic:
            return
        if (class_idx is None) == (targets is None):
            raise ValueError("provide exactly one of class_idx or targets")
        if targets is not None and self.spec.kind == "activation":
            raise ValueError(f"{type(self).__name__} does not support arbitrary output targets")
        if isinstance(class_idx, list) and len(class_idx) != batch:
            raise ValueError("expected batch size and length of `class_idx` to be the same.")
        if targets is not None:
            resolve_targets(targets, batch)
        elif not _valid_class_idx(class_idx, batch):
            raise ValueError(
                "Incorrect `class_idx` argument value: pass a non-negative int or a list of non-negative ints "
                f"(got {class_idx!r})"
            )
        if not self._uses_scores:
            return
        if scores is None:
            raise ValueError("model output scores is required to be passed to compute CAMs")
        if targets is None and not isinstance(scores, Tensor):
            raise TypeError("model output scores must be a tensor when using class_idx")
        if isinstance(scores, Tensor) and (scores.ndim == 0 or scores.shape[0] != batch):
            raise ValueError(
                f"`scores` has shape {tuple(scores.shape)} but the hooked batch has {batch} samples: pass the output "
                "of the forward that produced the hooked activations"
            )

    @property
    def _uses_scores(self) -> bool:
        """Whether a call needs the model output ``scores`` (gradient methods that back-propagate it)."""
        return self.spec.kind == "gradient" and not self.spec.smooth

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
            kwargs: ``retain_graph`` (gradient methods) and method options for this call (e.g. ``eps``).

        Returns:
            one ``(N, *spatial)`` map per target layer, on the activations' device and dtype.

        """
        self._precheck(class_idx, scores, targets)
        return self.compute_cams(class_idx, scores, normalized, targets=targets, output_size=output_size, **kwargs)

    def compute_cams(
        self, class_idx: ClassIdx | None = None, scores: Any = None, normalized: bool = True, **kwargs: Any
    ) -> list[Tensor]:
        """Compute the CAMs without the argument checks of ``__call__`` (same arguments and result)."""
        output_size = kwargs.pop("output_size", None)
        terms = self.cam_terms(class_idx, scores, **kwargs)
        with torch.no_grad():
            return [
                ops.cam_step(
                    term.weights.to(term.maps.dtype),
                    term.maps,
                    relu=self.spec.relu,
                    output_size=check_output_size(output_size, term.maps.ndim - 2),
                    normalize=normalized,
                    backend=self.backend,
                )
                for term in terms
            ]

    def cam_terms(
        self,
        class_idx: ClassIdx | None,
        scores: Any = None,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        **kwargs: Any,
    ) -> list[CamTerms]:
        """Each layer's map terms ``(weights, maps)``: ``cam = nansum_c(weights * maps)``.

        Args:
            class_idx: the class to explain (an int or N ints), or ``None`` with ``targets``.
            scores: the model output of the hooked forward (gradient methods that back-propagate it).
            targets: one callable (or N) mapping a sample's output to a scalar.
            kwargs: ``retain_graph`` and method options for this call.

        """
        if type(self)._get_weights is not CAMExtractor._get_weights:  # a TorchCAM-style subclass's weights
            weights = self._get_weights(class_idx, scores, targets=targets, **kwargs)
            return [CamTerms(w, a) for w, a in zip(weights, self.activations(), strict=True)]
        return [self.spec.terms(layer) for layer in self.layer_inputs(class_idx, scores, targets=targets, **kwargs)]

    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **kwargs: Any) -> list[Tensor]:
        """TorchCAM's extension point: per-layer weights of the hooked activations (default: the method's)."""
        return [term.weights for term in self.cam_terms(class_idx, scores, **kwargs)]

    def layer_inputs(
        self,
        class_idx: ClassIdx | None,
        scores: Any = None,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        retain_graph: bool = False,
        **call_options: Any,
    ) -> list[LayerInputs]:
        """What the method's formula needs, per target layer (gradients, moments or channel scores as its kind asks).

        Raises:
            TypeError: a keyword that is neither ``retain_graph`` nor one of the method's options.

        """
        unknown = sorted(set(call_options) - set(self.spec.options))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}")
        options = {**self.options, **{k: check_option(k, v) for k, v in call_options.items()}}
        acts = self.activations()
        grads: list[Tensor | None] = [None] * len(acts)
        moments: list[GradMoments | None] = [None] * len(acts)
        if self.spec.kind == "gradient" and self.spec.smooth:
            moments = self._noisy_moments(class_idx, targets, options)  # type: ignore[assignment]
        elif self.spec.kind == "gradient":
            grads = self.gradients(class_idx, scores, targets=targets, retain_graph=retain_graph)  # type: ignore[assignment]
        channel = self._channel_scores(acts, class_idx, scores, targets, options)
        classifier = self._classifier_weights()
        return [
            LayerInputs(a, options, self.backend, g, m, class_idx, classifier, s, b)
            for a, g, m, (s, b) in zip(acts, grads, moments, channel, strict=True)
        ]

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
        check_cams(cams, "invalid argument type for `cams`: expected a list of tensors")
        if len(cams) == 1:
            return cams[0]
        shape = target_shape if isinstance(target_shape, tuple) else tuple(map(max, *(c.shape[1:] for c in cams)))
        fused = None
        for cam in cls._scale_cams(cams):
            resized = ops.reference.upsample(cam, shape)
            fused = resized if fused is None else torch.maximum(fused, resized)
        return fused  # type: ignore[return-value]

    @staticmethod
    def _scale_cams(cams: list[Tensor]) -> list[Tensor]:
        return cams

    def __repr__(self) -> str:
        extra = "".join(f", {name}={value!r}" for name, value in self._repr_fields().items())
        return f"{type(self).__name__}(target_layer={self.target_names}{extra})"

    def _repr_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k != "eps"}


class BatchedExtractor(CAMExtractor):
    """An extractor that runs its own forwards (masked or ablated copies), ``batch_size`` copies per forward.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those (one map each), or ``None`` (automatic).
        batch_size: number of copies per forward (they mix samples; results do not depend on it).
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend`` and the method's options.

    Raises:
        ValueError: ``batch_size < 1``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        positive_int("batch_size", batch_size)
        super().__init__(model, target_layer, input_shape, **kwargs)
        self.bs = batch_size

    def _repr_fields(self) -> dict[str, Any]:
        return {"batch_size": self.bs, **super()._repr_fields()}


#: TorchCAM's name of the extractor base class
_CAM = CAMExtractor


def _positional_init(cls: type[CAMExtractor]) -> Callable[..., None]:
    """``cls``'s constructor with the explicit signature ``(model, target_layer, *cls.positional_arguments, **kwargs)``.

    It binds its arguments to that signature and passes them all by keyword to the ``__init__`` ``cls`` defines or
    inherits.
    """
    base_init = cls.__init__
    inherited = inspect.signature(super(cls, cls).__init__).parameters
    params = [inherited["self"], inherited["model"], inherited["target_layer"]]
    for name in cls.positional_arguments:
        if name not in cls.spec.options:
            params.append(inherited[name])
            continue
        kind, default = inspect.Parameter.POSITIONAL_OR_KEYWORD, cls.spec.options[name]
        params.append(inspect.Parameter(name, kind, default=default, annotation=OPTION_ANNOTATIONS[name]))
    params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD, annotation="Any"))
    signature = inspect.Signature(params, return_annotation="None")

    def init(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        extra = given.pop("kwargs")
        base_init(**given, **extra)

    init.__signature__ = signature  # type: ignore[attr-defined]
    init.__module__ = cls.__module__
    init.__name__, init.__qualname__, init.__doc__ = "__init__", f"{cls.__qualname__}.__init__", base_init.__doc__
    return init


def check_cams(cams: Any, type_error: str) -> None:
    """Check that ``cams`` (per-layer maps to fuse) is a non-empty list of tensors.

    Raises:
        TypeError: not a list of tensors (message ``type_error``).
        ValueError: an empty list.

    """
    if not isinstance(cams, list) or any(not isinstance(cam, Tensor) for cam in cams):
        raise TypeError(type_error)
    if not cams:
        raise ValueError("argument `cams` cannot be an empty list")


def _valid_class_idx(class_idx: Any, batch: int) -> bool:
    """TorchCAM's accepted forms: a non-negative int, or a list of them (one per sample)."""
    if not isinstance(class_idx, (int, list)):
        return False
    try:
        class_indices(class_idx, batch)
    except (TypeError, ValueError):
        return False
    return True


def _requires_grad(scores: Any) -> bool:
    if isinstance(scores, Tensor):
        return scores.requires_grad
    return True  # per-sample outputs for callable targets: autograd reports what is disconnected
