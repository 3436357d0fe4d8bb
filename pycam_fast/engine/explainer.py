"""``Explainer``: an engine that owns the forward pass and computes CAMs at inference memory and speed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..hooks import model_eval, resolve_target_names
from ..methods.ablation import (
    ablation_scores,
    ablation_values,
    ablation_weights,
    check_ablation_value,
    replaced_output_evaluator,
)
from ..methods.activation import iscam_passes, sscam_passes
from ..methods.core import _gaussian
from ..methods.gradient import _check_sampling
from ..reference import DEFAULT_EPS
from ..registry import get_ops, validate_backend_name
from ..targets import OutputTarget, check_class_range, resolve_targets, select_scores
from .fast_model import FastModel, check_precision
from .gradients import tail_forward
from .memory import default_budget, forward_bytes_per_sample
from .scoring import ScorePlan, score_weights
from .tail import LinearHead, linear_head, linear_head_grads, log_once, split_tail

__all__ = ["METHODS", "Explainer"]

_GRADIENT = {"gradcam", "gradcampp", "xgradcam", "layercam", "smoothgradcampp"}
_SCORE = {"scorecam", "sscam", "iscam"}
METHODS = (*sorted(_GRADIENT), "cam", *sorted(_SCORE), "ablationcam")
_KWARGS = {
    "gradcam": set(),
    "gradcampp": {"eps"},
    "xgradcam": {"eps"},
    "layercam": set(),
    "smoothgradcampp": {"num_samples", "std", "eps"},
    "cam": set(),
    "scorecam": {"top_k"},
    "sscam": {"num_samples", "std", "top_k"},
    "iscam": {"num_samples", "top_k"},
    "ablationcam": {"ablation_value"},
}
_DEFAULT_SAMPLES = {"smoothgradcampp": (4, 0.3), "sscam": (35, 2.0), "iscam": (10, 0.0)}


def _grad_weights(method: str, ops: Any, grads: Tensor, acts: Tensor, eps: float) -> Tensor:
    """Weights of a gradient method from the backend ops (the methods' own formulas)."""
    if method == "gradcam":
        return ops.gradcam_weights(grads)
    if method == "gradcampp":
        return ops.gradcampp_weights(grads, acts, eps)
    if method == "xgradcam":
        return ops.xgradcam_weights(grads, acts, eps)
    return torch.relu(grads)  # layercam: element-wise weights, as methods.LayerCAM


class Explainer:
    """CAM engine: runs the model itself and returns ``(N, *output_size)`` maps.

    Gradient methods record an autograd graph for the tail after the target layer only (inference memory), or use
    the closed form ``W[c] / (h * w)`` when the tail is ``global average pool -> flatten -> Linear``. Score-CAM family
    methods forward masked inputs through a private optimised copy (conv-bn folded, optional channels-last and
    bf16/fp16 autocast) in chunks sized from ``memory_budget``; AblationCAM evaluates the tail only. With
    ``channels_last=True`` the explained forward also runs on a private fp32 copy (conv-bn folded, channels-last;
    faster on CPU, one extra copy of the parameters). Private copies are taken at the first call: build a new
    Explainer after changing the model's weights. The user's model is never modified (no
    hooks left, modes, flags and grad state restored on every exit).

    Args:
        model: the classifier to explain (``(N, *input_shape) -> (N, K)``).
        method: one of :data:`METHODS` (case-insensitive).
        target_layer: a module or its dotted name, or ``None`` (automatic, from the first batch's shape).
        backend: backend of the CAM ops (``"auto"``, ``"torch"``, ``"cpp"``...).
        output_size: ``"input"`` (the input's spatial size), ``None`` (the feature map's) or a size tuple.
        batch_size: masked/ablated copies per forward (default: from ``memory_budget``).
        memory_budget: bytes for the masked forwards (default: 1 GiB on CPU, half the free memory on CUDA).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast of the masked forwards (Score-CAM family).
        channels_last: channels-last private copies (faster convolutions on CPU; 4-D inputs).
        progress: show a tqdm bar over the masked forwards (if tqdm is installed).
        method_kwargs: ``eps`` (Grad-CAM++, XGrad-CAM), ``num_samples``/``std`` (SmoothGradCAMpp, SSCAM, ISCAM),
            ``top_k`` (Score-CAM family: Faster Score-CAM approximation), ``ablation_value`` (AblationCAM).

    Raises:
        ValueError: an unknown method, backend, precision or output size, or a bad option value.
        TypeError: an option the method does not take.

    """

    def __init__(
        self,
        model: nn.Module,
        method: str,
        target_layer: nn.Module | str | None = None,
        *,
        backend: str = "auto",
        output_size: str | Sequence[int] | None = "input",
        batch_size: int | None = None,
        memory_budget: int | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        progress: bool = False,
        **method_kwargs: Any,
    ) -> None:
        self.method = _check_method(method)
        unknown = set(method_kwargs) - _KWARGS[self.method]
        if unknown:
            raise TypeError(f"{method!r} does not take {sorted(unknown)}; it takes {sorted(_KWARGS[self.method])}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive int or None, got {batch_size!r}")
        if memory_budget is not None and (not isinstance(memory_budget, int) or memory_budget < 1):
            raise ValueError(f"`memory_budget` must be a positive number of bytes or None, got {memory_budget!r}")
        check_precision(precision)
        self.model, self.backend = model, validate_backend_name(backend)
        self.output_size = _check_output_spec(output_size)
        self.batch_size, self.memory_budget = batch_size, memory_budget
        self.precision, self.channels_last, self.progress = precision, channels_last, progress
        self.options = dict(method_kwargs)
        self.eps = float(self.options.get("eps", DEFAULT_EPS))
        samples, std = _DEFAULT_SAMPLES.get(self.method, (1, 0.0))
        self.num_samples = self.options.get("num_samples", samples)
        self.std = self.options.get("std", std)
        _check_sampling(self.num_samples, self.std)
        self.top_k = self.options.get("top_k")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"`top_k` must be a positive int or None, got {self.top_k!r}")
        self.ablation_value = check_ablation_value(self.options.get("ablation_value", "auto"))
        self._target_spec = target_layer
        self._target_name: str | None = None
        self._tail: Any = None
        self._head: LinearHead | None = None
        self._fast: FastModel | None = None
        self._fwd: tuple[FastModel, nn.Module] | None = None
        self.logits: Tensor | None = None

    # -- setup -----------------------------------------------------------------------------------------------------
    def _target(self, inputs: Tensor) -> nn.Module:
        modules = dict(self.model.named_modules())
        if self._target_name is None:
            (self._target_name,) = resolve_target_names(self.model, self._target_spec, tuple(inputs.shape[1:]), modules)
            split = split_tail(self.model, self._target_name)
            self._tail = split.tail
            if split.tail is None and self.method == "ablationcam":
                log_once(f"Explainer AblationCAM: full forwards instead of the tail only: {split.reason}")
            self._head = linear_head(split.tail)
        return modules[self._target_name]

    @property
    def target_name(self) -> str | None:
        """Dotted name of the target layer (resolved on the first call)."""
        return self._target_name

    @property
    def closed_form(self) -> bool:
        """Whether the tail is linear, so gradients use the closed form (known after the first call)."""
        return self._head is not None

    def _ops(self, tensor: Tensor) -> Any:
        return get_ops(self.backend, tensor.device)

    # -- call ------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Tensor,
        class_idx: int | list[int] | Tensor | None = None,
        targets: OutputTarget | list[OutputTarget] | None = None,
    ) -> Tensor:
        """Explain a batch.

        Args:
            inputs: ``(N, *input_shape)`` batch.
            class_idx: ``None`` (the predicted class), one int, N ints or an ``(N,)`` tensor.
            targets: instead of ``class_idx``, one callable (or N) mapping a sample's output to a scalar.

        Returns:
            ``(N, *output_size)`` maps in [0, 1] (base CAM: min-max normalised without ReLU).

        Raises:
            TypeError: ``inputs`` is not a tensor.
            ValueError: both ``class_idx`` and ``targets``, or bad class indices.

        """
        if not isinstance(inputs, Tensor) or inputs.ndim < 3:
            raise TypeError("`inputs` must be a (N, C, *spatial) tensor batch")
        if class_idx is not None and targets is not None:
            raise ValueError("pass at most one of `class_idx` and `targets`")
        target = self._target(inputs)
        with model_eval(self.model):
            acts, weights = self._explain(target, inputs, class_idx, targets)
        with torch.no_grad():
            return self._ops(acts).cam_step(
                weights.to(acts.dtype),
                acts,
                relu=self.method != "cam",
                output_size=self._size(inputs),
                normalize=True,
                eps=DEFAULT_EPS,
            )

    def map(self, batches: Iterable[Any]) -> Iterator[tuple[Tensor, Tensor]]:
        """Stream batches (tensors or ``(x, y, ...)`` tuples, e.g. a DataLoader): yields ``(cams, logits)``."""
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            cams = self(inputs)
            yield cams, self.logits  # type: ignore[misc]

    def _size(self, inputs: Tensor) -> tuple[int, ...] | None:
        if self.output_size == "input":
            return tuple(inputs.shape[2:])
        return self.output_size  # type: ignore[return-value]

    def _explain(self, target: nn.Module, inputs: Tensor, class_idx: Any, targets: Any) -> tuple[Tensor, Tensor]:
        record = self.method in _GRADIENT and (self._head is None or targets is not None)
        fwd = self._forward(inputs, record=record and self.method != "smoothgradcampp")
        self.logits = fwd.output.detach() if isinstance(fwd.output, Tensor) else fwd.output
        acts = fwd.activation.detach()
        cls = _class_list(class_idx, self.logits) if targets is None else None
        fns = resolve_targets(targets, inputs.shape[0]) if targets is not None else None
        if cls is not None and isinstance(self.logits, Tensor):
            check_class_range(cls, self.logits.shape[1])
        if self.method in _GRADIENT:
            return acts, self._gradient_weights(inputs, fwd, acts, cls, fns, record)
        if self.method == "cam":
            return acts, self._cam_weights(cls, fns, acts)
        if self.method in _SCORE:
            return acts, self._score_weights(inputs, acts, cls, fns)
        return acts, self._ablation_weights(target, inputs, acts, cls, fns)

    # -- methods ---------------------------------------------------------------------------------------------------
    def _grads(self, fwd: Any, acts: Tensor, cls: list[int] | None, fns: Any, record: bool) -> Tensor:
        if not record:
            return linear_head_grads(self._head, torch.as_tensor(cls), acts)  # type: ignore[arg-type]
        with torch.enable_grad():  # the score selection joins the tail's graph even under the caller's no_grad
            return fwd.grads(select_scores(fwd.output, cls, fns)).detach()

    def _gradient_weights(self, inputs: Tensor, fwd: Any, acts: Tensor, cls: Any, fns: Any, record: bool) -> Tensor:
        ops = self._ops(acts)
        if self.method != "smoothgradcampp":
            return _grad_weights(self.method, ops, self._grads(fwd, acts, cls, fns, record), acts, self.eps)
        moments = [torch.zeros_like(acts) for _ in range(3)]
        for _ in range(self.num_samples):
            if record:
                noise = _gaussian(inputs.size(), self.std).to(inputs.device, inputs.dtype)
                fwd = self._forward(inputs + noise, record=True)
            grads = self._grads(fwd, acts, cls, fns, record)
            for power, acc in enumerate(moments, start=1):
                acc.add_(grads.pow(power))
        s1, s2, s3 = (m / self.num_samples for m in moments)
        return ops.gradcampp_weights(s1, acts, self.eps, grads_sq=s2, grads_cube=s3)

    def _cam_weights(self, cls: list[int] | None, fns: Any, acts: Tensor) -> Tensor:
        if self._head is None or fns is not None:
            raise ValueError(
                "method 'cam' needs a tail 'global average pool -> flatten -> Linear' after the target layer and "
                "class indices (not targets): pick the last conv block as `target_layer`"
            )
        return self._head.weight.detach()[torch.as_tensor(cls)].to(acts.device)

    def _forward(self, inputs: Tensor, record: bool) -> Any:
        """The explained forward (tail-only graph when ``record``).

        With ``channels_last`` it runs on a private fp32 copy (BN folded, channels-last): faster on CPU, at the cost
        of one copy of the parameters; otherwise on the user's model itself (peak memory of an inference forward).
        """
        if not self.channels_last:
            return tail_forward(self.model, self.model.get_submodule(self._target_name), inputs, record=record)
        if self._fwd is None:
            fast = FastModel(self.model, "fp32", channels_last=True, keep=(self._target_name,))
            self._fwd = (fast, fast.module.get_submodule(self._target_name))  # type: ignore[arg-type]
        fast, target = self._fwd
        if inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return tail_forward(fast.module, target, inputs, record=record)

    def _fast_model(self) -> FastModel:
        if self._fast is None:
            self._fast = FastModel(self.model, self.precision, self.channels_last)
        return self._fast

    def _chunk(self, fast: FastModel, inputs: Tensor) -> int:
        if self.batch_size is not None:
            return self.batch_size
        budget = self.memory_budget or default_budget(inputs.device)
        per_sample = forward_bytes_per_sample(fast.module, inputs[:1], fast.context)
        return max(1, min(budget // per_sample, 1024))

    def _score_weights(self, inputs: Tensor, acts: Tensor, cls: Any, fns: Any) -> Tensor:
        fast = self._fast_model()
        passes: list[dict[str, Any]] = [{}]
        if self.method == "iscam":
            passes = iscam_passes(self.num_samples)
        elif self.method == "sscam":
            passes = sscam_passes(acts, inputs, self.num_samples, self.std)
        plan = ScorePlan(
            passes=passes,
            chunk=self._chunk(fast, inputs),
            top_k=self.top_k,
            channels_last=fast.channels_last,
        )
        total = acts.shape[0] * acts.shape[1] * len(passes)
        with _progress_bar(total, self.progress, self.method) as bar:
            plan.progress = bar
            return score_weights(fast, self._ops(acts), acts, inputs.detach(), cls, fns, plan)

    def _ablation_weights(self, target: nn.Module, inputs: Tensor, acts: Tensor, cls: Any, fns: Any) -> Tensor:
        if self._tail is not None:
            tail = self._tail

            def evaluate(rows: Tensor, _samples: Tensor) -> Any:
                with torch.inference_mode():
                    return tail(rows)
        else:
            full = replaced_output_evaluator(self.model, target, inputs.detach())

            def evaluate(rows: Tensor, samples: Tensor) -> Any:
                with torch.inference_mode():
                    return full(rows, samples)

        base = select_scores(self.logits, cls, fns)
        chunk = self.batch_size or 256
        with _progress_bar(acts.shape[0] * acts.shape[1], self.progress, self.method) as bar:
            ablated = ablation_scores(evaluate, acts, ablation_values(acts, self.ablation_value), cls, fns, chunk, bar)
        return ablation_weights(base, ablated)

    def __repr__(self) -> str:
        return f"Explainer(method={self.method!r}, target_layer={self._target_name or self._target_spec!r})"


def _check_method(method: Any) -> str:
    name = method.lower() if isinstance(method, str) else None
    if name not in METHODS:
        raise ValueError(f"unknown `method` {method!r}; pass one of {list(METHODS)} (case-insensitive)")
    return name


def _check_output_spec(output_size: Any) -> str | tuple[int, ...] | None:
    if output_size is None or output_size == "input":
        return output_size
    try:
        size = tuple(int(s) for s in output_size)
    except (TypeError, ValueError):
        size = ()
    if not size or any(s <= 0 for s in size):
        raise ValueError(f"`output_size` must be 'input', None or a tuple of positive ints, got {output_size!r}")
    return size


def _class_list(class_idx: Any, logits: Any) -> list[int]:
    """Per-sample class indices; ``None`` picks the predicted class."""
    num = logits.shape[0]
    if class_idx is None:
        return logits.argmax(1).tolist()
    if isinstance(class_idx, Tensor):
        class_idx = class_idx.reshape(-1).tolist()
    if isinstance(class_idx, int) and not isinstance(class_idx, bool):
        class_idx = [class_idx] * num
    if (
        not isinstance(class_idx, list)
        or len(class_idx) != num
        or any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in class_idx)
    ):
        raise ValueError(f"`class_idx` must be None, a non-negative int, or {num} of them (list or tensor)")
    return class_idx


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        log_once("pycam_fast: progress=True needs tqdm (pip install tqdm); running without a progress bar")
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="fwd")
