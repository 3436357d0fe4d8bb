"""``Explainer``: an engine that owns the forward pass and computes CAMs at inference memory and speed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from .. import ops
from .._log import log_once
from ..forward.ablation import Evaluator, ablation_scores, replaced_output_evaluator
from ..forward.chunking import default_budget, forward_bytes_per_sample
from ..forward.explained import CLOSED_FORM, ExplainedForward, ForwardResult
from ..forward.private_copy import FastModel, check_precision, foreign_hooks, forward_context
from ..forward.scoring import ScorePlan, masked_scores
from ..forward.tail import split_tail
from ..layers import resolve_target_names
from ..methods import get_method, method_names
from ..methods.noise import gaussian_noise
from ..methods.options import check_output_size, resolve_options
from ..methods.spec import GradMoments, LayerInputs, MethodSpec
from ..model_state import model_eval
from ..targets import OutputTarget, class_indices, resolve_targets, select_scores

__all__ = ["METHODS", "Explainer", "shares_forward"]

#: the registered methods' names, lower-case (``Explainer(method=...)`` is case-insensitive)
METHODS = tuple(name.lower() for name in method_names())


def shares_forward(spec: MethodSpec) -> bool:
    """Whether a method's inputs come from the one explained forward (a multi-method call computes them once).

    Gradient methods without noise and activation methods do; smooth gradient methods (noisy forwards), the
    Score-CAM family (masked forwards) and Ablation-CAM (ablated forwards) need forwards of their own.
    """
    return (spec.kind == "gradient" and not spec.smooth) or spec.kind == "activation"


class Explainer:
    """CAM engine: runs the model itself and returns ``(N, *output_size)`` maps.

    Gradient methods record an autograd graph for the tail after the target layer only (inference memory), or use
    the closed form ``W[c] / (h * w)`` when the tail is ``global average pool -> flatten -> Linear``. Score-CAM family
    methods forward masked inputs through a private optimised copy (conv-bn folded, optional channels-last and
    bf16/fp16 autocast) in chunks sized from ``memory_budget``; AblationCAM evaluates the tail only. With
    ``channels_last=True`` the explained forward also runs on a private fp32 copy (conv-bn folded, channels-last;
    faster on CPU, one extra copy of the parameters). Private copies follow the model's parameters (rebuilt when
    they change, see :mod:`pycam_fast.forward.private_copy`) and run no hooks: a model with hooks of its own runs
    itself (logged once). The user's model is never modified (no hooks left, modes, flags and grad state restored on
    every exit).

    Several methods: ``Explainer(model, methods=["gradcam", "gradcampp", "layercam"])`` returns a dict
    ``{method key: (N, *output_size) maps}`` per call. Gradient methods (Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM,
    HiRes-CAM, Grad-CAM element-wise, ...) and activation methods (CAM, Eigen-CAM, FEM) share ONE explained forward
    (its tail-only gradients or the closed form), see :func:`shares_forward`; the others (smooth, Score-CAM family,
    Ablation-CAM) run their own forwards as they would alone. Each map equals the one-method Explainer's.

    Args:
        model: the classifier to explain (``(N, *input_shape) -> (N, K)``).
        method: a registered method's name (:func:`pycam_fast.methods.method_names`, case-insensitive), or a list of
            them (as ``methods``).
        target_layer: a module or its dotted name, or ``None`` (automatic, from the first batch's shape).
        backend: backend of the CAM ops (``"auto"``, ``"torch"``, ``"cpp"``...).
        output_size: ``"input"`` (the input's spatial size), ``None`` (the feature map's) or a size tuple.
        batch_size: masked/ablated copies per forward (default: from ``memory_budget``).
        memory_budget: bytes for the masked forwards (default: 1 GiB on CPU, half the free memory on CUDA).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast of the forwards (the explained one and the masked
            ones); activations, gradients and scores are taken in fp32 and the CAM math runs in fp32.
        channels_last: private channels-last copies (faster convolutions on CPU; 4-D inputs).
        compile: ``torch.compile`` the private copy of the masked forwards (Score-CAM family) for one static chunk
            size, padding the last chunk (CPU: Inductor with weight freezing; CUDA: CUDA graphs). Pays a compile
            once per Explainer: for long runs.
        progress: show a tqdm bar over the masked / ablated forwards (if tqdm is installed).
        methods: several methods' names (instead of ``method``): calls return a dict of maps keyed by the lower-case
            method names (``self.methods``), in the given order.
        method_kwargs: the method's options (its ``spec.options``), e.g. ``eps`` (Grad-CAM++, XGrad-CAM),
            ``num_samples``/``std`` (SmoothGradCAMpp, SSCAM, ISCAM), ``top_k`` (Score-CAM family: Faster Score-CAM
            approximation), ``ablation_value`` (AblationCAM), ``gradient_filter`` (Grad-CAM), ``sign``, ``k``. With
            several methods, each option goes to every method that takes it.

    Raises:
        ValueError: an unknown or repeated method, no method, backend, precision or output size, or a bad option
            value.
        TypeError: an option the method (with several: none of the methods) takes.

    """

    def __init__(
        self,
        model: nn.Module,
        method: str | Sequence[str] | None = None,
        target_layer: nn.Module | str | None = None,
        *,
        methods: Sequence[str] | None = None,
        backend: str = "auto",
        output_size: str | Sequence[int] | None = "input",
        batch_size: int | None = None,
        memory_budget: int | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        progress: bool = False,
        **method_kwargs: Any,
    ) -> None:
        names, self.multi = _method_names(method, methods)
        self.specs: tuple[MethodSpec, ...] = tuple(_spec(name) for name in names)
        keys = [spec.key for spec in self.specs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"`methods` names {repeated} more than once")
        self.spec, self.method, self.methods = self.specs[0], keys[0], tuple(keys)
        if self.multi:
            taken = set().union(*(spec.options for spec in self.specs))
            unknown = sorted(set(method_kwargs) - taken)
            if unknown:
                raise TypeError(f"none of the methods {list(self.methods)} takes {unknown}; they take {sorted(taken)}")
            self.method_options: dict[str, dict[str, Any]] = {
                spec.key: resolve_options(spec, {k: v for k, v in method_kwargs.items() if k in spec.options})
                for spec in self.specs
            }
        else:
            self.method_options = {self.method: resolve_options(self.spec, method_kwargs)}
        self.options = self.method_options[self.method]
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive int or None, got {batch_size!r}")
        if memory_budget is not None and (not isinstance(memory_budget, int) or memory_budget < 1):
            raise ValueError(f"`memory_budget` must be a positive number of bytes or None, got {memory_budget!r}")
        check_precision(precision)
        self.model, self.backend = model, ops.validate_backend_name(backend)
        self.output_size = output_size if output_size == "input" else check_output_size(output_size)
        self.batch_size, self.memory_budget = batch_size, memory_budget
        self.precision, self.channels_last, self.progress = precision, channels_last, progress
        self.compile = bool(compile)
        self._target_spec = target_layer
        self._target_name: str | None = None
        self._forward: ExplainedForward | None = None
        self._fast: FastModel | None = None
        self._ablation_tail: Any = None
        self.logits: Tensor | None = None
        #: the explained class of each sample in the last call (``None`` with ``targets``)
        self.explained_classes: list[int] | None = None

    # -- setup -----------------------------------------------------------------------------------------------------
    def _setup(self, inputs: Tensor) -> ExplainedForward:
        if self._forward is None:
            modules = dict(self.model.named_modules())
            (self._target_name,) = resolve_target_names(self.model, self._target_spec, tuple(inputs.shape[1:]), modules)
            self._forward = ExplainedForward(self.model, [self._target_name], self.precision)
        return self._forward

    @property
    def target_name(self) -> str | None:
        """Dotted name of the target layer (resolved on the first call)."""
        return self._target_name

    @property
    def closed_form(self) -> bool:
        """Whether the tail is ``pool -> flatten -> Linear`` (gradients in closed form); known after the first call."""
        return self._forward is not None and self._forward.linear_heads(on_copy=False)[0] is not None

    def _on_copy(self, inputs: Tensor) -> bool:
        """Whether the explained forward runs on the private channels-last copy (``channels_last=True``)."""
        if not self.channels_last:
            return False
        reason = self._forward.copy_unavailable(inputs)  # type: ignore[union-attr]
        if reason is not None:
            log_once(f"pycam_fast Explainer: the explained forward runs the model itself: {reason}")
        return reason is None

    # -- call ------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Tensor,
        class_idx: int | list[int] | Tensor | None = None,
        targets: OutputTarget | list[OutputTarget] | None = None,
    ) -> Tensor | dict[str, Tensor]:
        """Explain a batch.

        Args:
            inputs: ``(N, *input_shape)`` batch.
            class_idx: ``None`` (the predicted class), one int, N ints or an ``(N,)`` tensor.
            targets: instead of ``class_idx``, one callable (or N) mapping a sample's output to a scalar.

        Returns:
            ``(N, *output_size)`` maps in [0, 1] (base CAM: min-max normalised without ReLU); with several methods, a
            dict ``{method key: maps}`` in the order of ``self.methods``.

        Raises:
            TypeError: ``inputs`` is not a tensor.
            ValueError: both ``class_idx`` and ``targets``, or bad class indices.

        """
        if not isinstance(inputs, Tensor) or inputs.ndim < 3:
            raise TypeError("`inputs` must be a (N, C, *spatial) tensor batch")
        if class_idx is not None and targets is not None:
            raise ValueError("pass at most one of `class_idx` and `targets`")
        self._setup(inputs)
        classes = None if class_idx is None else class_indices(class_idx, inputs.shape[0])
        fns = None if targets is None else resolve_targets(targets, inputs.shape[0])
        with model_eval(self.model):
            layers = self._all_layer_inputs(inputs.detach(), classes, fns)
        size = tuple(inputs.shape[2:]) if self.output_size == "input" else self.output_size
        cams = {}
        for spec in self.specs:
            terms = spec.terms(layers[spec.key])
            with torch.no_grad():
                cams[spec.key] = ops.cam_step(
                    terms.weights.to(terms.maps.dtype),
                    terms.maps,
                    relu=spec.relu,
                    output_size=size,
                    normalize=True,
                    backend=self.backend,
                )
        return cams if self.multi else cams[self.method]

    def map(self, batches: Iterable[Any]) -> Iterator[tuple[Tensor | dict[str, Tensor], Tensor]]:
        """Stream batches (tensors or ``(x, y, ...)`` tuples, e.g. a DataLoader): yields ``(cams, logits)``."""
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            cams = self(inputs)
            yield cams, self.logits  # type: ignore[misc]

    def _all_layer_inputs(self, inputs: Tensor, classes: list[int] | None, fns: Any) -> dict[str, LayerInputs]:
        """Every method's :class:`LayerInputs`: one shared forward for the methods that can share it, then the others.

        Sets ``self.logits`` and ``self.explained_classes``.
        """
        shared = [spec for spec in self.specs if shares_forward(spec)]
        layers: dict[str, LayerInputs] = {}
        if shared:
            on_copy = self._on_copy(inputs)
            gradients = any(spec.kind == "gradient" for spec in shared)
            fwd = self._forward.run(inputs, class_idx=classes, targets=fns, gradients=gradients, on_copy=on_copy)  # type: ignore[union-attr]
            self.logits, self.explained_classes = fwd.outputs, fwd.class_idx
            classes = fwd.class_idx  # the others explain the same classes (no second argmax)
            for spec in shared:
                layer: dict[str, Any] = {"activations": fwd.activations[0], "class_idx": fwd.class_idx}
                if spec.kind == "gradient":
                    layer["grads"] = fwd.grads[0]  # type: ignore[index]
                elif spec.needs_classifier:
                    layer["classifier"] = self._classifier(spec, on_copy, fns)
                layers[spec.key] = LayerInputs(options=self.method_options[spec.key], backend=self.backend, **layer)
        for spec in self.specs:
            if spec.key not in layers:
                layers[spec.key] = self._layer_inputs(inputs, classes, fns, spec)
        return layers

    def _layer_inputs(self, inputs: Tensor, classes: list[int] | None, fns: Any, spec: MethodSpec) -> LayerInputs:
        """The forward(s) the method's kind needs, and what its formula takes."""
        forward, kind, on_copy = self._forward, spec.kind, self._on_copy(inputs)
        options = self.method_options[spec.key]
        closed = forward.closed_form(on_copy, fns)  # type: ignore[union-attr]
        # a smooth method's gradients come from its noisy forwards unless they are the (input-independent) closed form
        gradients = kind == "gradient" and (closed or not spec.smooth)
        fwd = forward.run(inputs, class_idx=classes, targets=fns, gradients=gradients, on_copy=on_copy)  # type: ignore[union-attr]
        self.logits, self.explained_classes = fwd.outputs, fwd.class_idx
        acts = fwd.activations[0]
        layer = {"activations": acts, "options": options, "backend": self.backend, "class_idx": fwd.class_idx}
        if kind == "gradient" and spec.smooth:
            layer["moments"] = self._moments(inputs, fwd, fns, on_copy, options)
        elif kind == "gradient":
            layer["grads"] = fwd.grads[0]  # type: ignore[index]
        elif spec.needs_classifier:
            layer["classifier"] = self._classifier(spec, on_copy, fns)
        elif kind == "score":
            layer["scores"] = self._masked_scores(inputs, acts, fwd.class_idx, fns, spec)
        elif kind == "ablation":
            layer["scores"] = self._ablated_scores(inputs, acts, fwd.class_idx, fns, spec)
            layer["base_scores"] = select_scores(self.logits, fwd.class_idx, fns)
        return LayerInputs(**layer)

    # -- what each kind needs --------------------------------------------------------------------------------------
    def _moments(
        self, inputs: Tensor, fwd: ForwardResult, fns: Any, on_copy: bool, options: Mapping[str, Any]
    ) -> GradMoments:
        """Gradient moments over ``num_samples`` noisy copies of the inputs (TorchCAM's draws)."""
        if fwd.path == CLOSED_FORM:  # the closed form does not depend on the input: every sample has the same g
            g = fwd.grads[0]  # type: ignore[index]
            return GradMoments(g, g * g, g * g * g, g)
        num, std = options["num_samples"], options["std"]
        sums = [torch.zeros_like(fwd.activations[0]) for _ in range(3)]
        g = sums[0]
        for _ in range(num):
            noisy = inputs + gaussian_noise(inputs.size(), std).to(inputs.device, inputs.dtype)
            run = self._forward.run(noisy, class_idx=fwd.class_idx, targets=fns, gradients=True, on_copy=on_copy)  # type: ignore[union-attr]
            g = run.grads[0]  # type: ignore[index]
            for power, acc in enumerate(sums, start=1):
                acc.add_(g.pow(power))
        return GradMoments(*(s / num for s in sums), last=g)

    def _classifier(self, spec: MethodSpec, on_copy: bool, fns: Any) -> Tensor:
        head = self._forward.linear_heads(on_copy)[0]  # type: ignore[union-attr]
        if head is None or fns is not None:
            raise ValueError(
                f"method {spec.name!r} needs a tail 'global average pool -> flatten -> Linear' after the target "
                "layer and class indices (not targets): pick the last conv block as `target_layer`"
            )
        return head.weight.detach()

    def _masked_model(self) -> Any:
        """The model of the masked forwards: the private copy, or the model itself when it has hooks of its own."""
        hooked = foreign_hooks(self.model)
        if hooked:
            log_once(f"pycam_fast Explainer: masked forwards run the model itself (it has hooks on {hooked})")
            device, dtype = _device(self.model), check_precision(self.precision)

            def forward(x: Tensor) -> Any:
                with forward_context(device, dtype, inference=True):
                    return self.model(x)

            return forward
        if self._fast is None:
            self._fast = FastModel(self.model, self.precision, self.channels_last, compile=self.compile)
        return self._fast

    def _chunk(self, model: Any, inputs: Tensor, default: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if not isinstance(model, FastModel):
            return default
        budget = self.memory_budget or default_budget(inputs.device)
        per_sample = forward_bytes_per_sample(model.module, inputs[:1], model.context)
        return max(1, min(budget // per_sample, 1024))

    def _masked_scores(self, inputs: Tensor, acts: Tensor, classes: Any, fns: Any, spec: MethodSpec) -> Tensor:
        model, options = self._masked_model(), self.method_options[spec.key]
        passes = spec.passes(acts, inputs, options)  # type: ignore[misc]
        plan = ScorePlan(
            passes=passes,
            chunk=self._chunk(model, inputs, 32),
            top_k=options.get("top_k"),
            channels_last=self.channels_last,
            backend=self.backend,
        )
        with _progress_bar(acts.shape[0] * acts.shape[1] * len(passes), self.progress, spec.key) as bar:
            plan.progress = bar
            return masked_scores(model, acts, inputs, classes, fns, plan)

    def _ablated_scores(self, inputs: Tensor, acts: Tensor, classes: Any, fns: Any, spec: MethodSpec) -> Tensor:
        if self._ablation_tail is None:
            split = split_tail(self.model, self._target_name)  # type: ignore[arg-type]
            if split.tail is None:
                log_once(f"Explainer AblationCAM: full forwards instead of the tail only: {split.reason}")
            self._ablation_tail = split.tail or False
        tail = self._ablation_tail
        evaluate: Evaluator
        if tail:
            evaluate = lambda rows, _samples: tail(rows)  # noqa: E731
        else:
            evaluate = replaced_output_evaluator(self.model, self.model.get_submodule(self._target_name), inputs)  # type: ignore[arg-type]
        values = spec.ablation_values(acts, self.method_options[spec.key])  # type: ignore[misc]
        with torch.inference_mode(), _progress_bar(acts.shape[0] * acts.shape[1], self.progress, spec.key) as bar:
            return ablation_scores(evaluate, acts, values, classes, fns, self.batch_size or 256, bar)

    def __repr__(self) -> str:
        what = f"methods={[spec.name for spec in self.specs]!r}" if self.multi else f"method={self.spec.name!r}"
        return f"Explainer({what}, target_layer={self._target_name or self._target_spec!r})"


def _method_names(method: str | Sequence[str] | None, methods: Sequence[str] | None) -> tuple[list[Any], bool]:
    """The method names and whether the call returns a dict (several methods, or a list was given)."""
    if method is not None and methods is not None:
        raise ValueError("pass either `method` or `methods`, not both")
    given = methods if methods is not None else method
    if given is None:
        raise ValueError(f"pass a `method` (or a list of `methods`): one of {list(METHODS)} (case-insensitive)")
    if isinstance(given, str):
        return [given], False
    names = list(given)
    if not names:
        raise ValueError(f"`methods` is empty; pass some of {list(METHODS)} (case-insensitive)")
    return names, True


def _spec(name: Any) -> MethodSpec:
    try:
        return get_method(name)
    except ValueError as exc:
        raise ValueError(f"unknown `method` {name!r}; pass one of {list(METHODS)} (case-insensitive)") from exc


def _device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return nullcontext()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        log_once("pycam_fast: progress=True needs tqdm (pip install tqdm); running without a progress bar")
        return nullcontext()
    return tqdm(total=total, desc=desc, unit="fwd")
