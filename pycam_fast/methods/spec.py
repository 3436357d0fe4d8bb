"""A CAM method, defined once: what it needs from the forward pass, its formula, its options and their defaults.

Every front-end (the TorchCAM-style classes of this package, the drop-in layers in :mod:`pycam_fast.compat`, the
:class:`~pycam_fast.Explainer`, the CLI) gets a layer's :class:`LayerInputs` its own way (hooks, tail-only forwards,
closed-form gradients, batched masked forwards) and turns them into the map's :class:`CamTerms` with the method's
``terms`` function; the map is then ``ops.cam_step(terms.weights, terms.maps)``: ``nansum_c(weights * maps)``,
resized, ReLU'd (``relu``) and normalised.

Kinds (what the front-end must provide in :class:`LayerInputs`):

- ``"gradient"``: ``grads`` (``dY/dA`` at the target layer); with ``smooth``, ``moments`` over noisy inputs instead.
- ``"activation"``: the activations only (``classifier`` too when ``needs_classifier``).
- ``"score"``: ``scores``, the explained score of each channel's masked input (Score-CAM family), from the
  ``passes`` the method describes.
- ``"ablation"``: ``scores`` with each channel ablated to ``ablation_values`` and the unablated ``base_scores``.

Adding a method: one module in this package that defines and registers its :class:`MethodSpec` with
:func:`define_method` and defines its TorchCAM-style class, plus one import line in ``methods/__init__.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = [
    "KINDS",
    "CamTerms",
    "GradMoments",
    "LayerInputs",
    "MethodSpec",
    "define_method",
    "get_method",
    "method_names",
    "register_method",
    "weighted_activations",
]

KINDS = ("gradient", "activation", "score", "ablation")


@dataclass(frozen=True)
class CamTerms:
    """The two factors of a layer's map: ``cam = nansum_c(weights * maps)``.

    Attributes:
        weights: ``(N, C)``, ``(1, C)`` or element-wise ``(N, C', *S)``.
        maps: ``(N, C', *S)``: the activations, or per-channel maps a method computed (element-wise, eigen).

    """

    weights: Tensor
    maps: Tensor


@dataclass(frozen=True)
class GradMoments:
    """Gradient moments over noisy copies of the input (Smooth Grad-CAM++).

    Attributes:
        mean: ``(N, C, *S)`` mean of ``g``.
        mean_sq: mean of ``g^2``.
        mean_cube: mean of ``g^3``.
        last: ``g`` of the last noisy sample (TorchCAM 0.5.0 uses it).
        last_activations: the target activations of the last noisy forward, when the front-end has them.

    """

    mean: Tensor
    mean_sq: Tensor
    mean_cube: Tensor
    last: Tensor
    last_activations: Tensor | None = None


@dataclass(frozen=True)
class LayerInputs:
    """What a front-end computed for one target layer.

    Attributes:
        activations: ``(N, C, *S)`` target layer output (of the clean input).
        options: the method's options (defaults overridden by the user's values).
        backend: backend of the ops.
        grads: ``(N, C, *S)`` gradients of the explained scores (gradient methods).
        moments: gradient moments (smooth gradient methods).
        class_idx: the explained class (an int or N ints) for class-based calls, else ``None``.
        classifier: ``(K, C)`` weights of the linear classifier (methods that ``needs_classifier``).
        scores: ``(N, C)`` per-channel scores (Score-CAM family: of the masked inputs, averaged over the passes,
            ``-inf`` for channels not evaluated; Ablation-CAM: with the channel ablated).
        base_scores: ``(N,)`` unperturbed explained scores (Ablation-CAM).

    """

    activations: Tensor
    options: Mapping[str, Any] = field(default_factory=dict)
    backend: str = "auto"
    grads: Tensor | None = None
    moments: GradMoments | None = None
    class_idx: int | list[int] | None = None
    classifier: Tensor | None = None
    scores: Tensor | None = None
    base_scores: Tensor | None = None


def weighted_activations(weights: Callable[[LayerInputs], Tensor]) -> Callable[[LayerInputs], CamTerms]:
    """The ``terms`` of a method whose map weights the layer's activations: ``CamTerms(weights(layer), activations)``.

    Args:
        weights: ``LayerInputs -> (N, C)`` (or ``(1, C)``) channel weights.

    Returns:
        the terms function (a decorator: it keeps ``weights``' name and docstring).

    """

    @functools.wraps(weights)
    def terms(layer: LayerInputs) -> CamTerms:
        return CamTerms(weights(layer), layer.activations)

    return terms


@dataclass(frozen=True)
class MethodSpec:
    """The definition of a CAM method.

    Attributes:
        name: the method's class name (``"GradCAMpp"``); the registry and ``Explainer(method=...)`` use it
            case-insensitively.
        kind: one of :data:`KINDS`.
        terms: ``LayerInputs -> CamTerms``: the method's formula.
        summary: the formula in one line (docs, CLI help).
        options: the method's options and their defaults (validated by :mod:`.options`).
        relu: ReLU after the channel sum (every method but base CAM).
        smooth: gradient methods: moments over ``num_samples`` noisy copies (std ``std``) of the input.
        needs_classifier: the formula needs the linear classifier's weights (base CAM).
        class_agnostic: the map does not depend on the explained class (no ``class_idx``/``scores`` needed).
        passes: Score-CAM family: ``(activations, inputs, options) -> one dict per pass`` with optional ``noise``
            (indexable by flattened pair) and ``scale`` for the masked inputs.
        ablation_values: Ablation-CAM: ``(activations, options) -> (N, C)`` value of each ablated channel.

    """

    name: str
    kind: str
    terms: Callable[[LayerInputs], CamTerms]
    summary: str
    options: Mapping[str, Any] = field(default_factory=dict)
    relu: bool = True
    smooth: bool = False
    needs_classifier: bool = False
    class_agnostic: bool = False
    passes: Callable[[Tensor, Tensor, Mapping[str, Any]], list[dict[str, Any]]] | None = None
    ablation_values: Callable[[Tensor, Mapping[str, Any]], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "score") != (self.passes is not None):
            raise ValueError("score methods (and only they) describe their `passes`")
        if (self.kind == "ablation") != (self.ablation_values is not None):
            raise ValueError("ablation methods (and only they) describe their `ablation_values`")

    @property
    def key(self) -> str:
        """The registry key: the lower-case name."""
        return self.name.lower()


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Make ``spec`` available by name to every front-end (``Explainer``, the CLI).

    Raises:
        ValueError: another method is registered under the same name.

    """
    if _REGISTRY.get(spec.key, spec) is not spec:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    _REGISTRY[spec.key] = spec
    return spec


def define_method(
    name: str, kind: str, terms: Callable[[LayerInputs], CamTerms], summary: str, **fields: Any
) -> MethodSpec:
    """Build a :class:`MethodSpec` and register it (:func:`register_method`): one call per method module.

    Args:
        name: the method's class name.
        kind: one of :data:`KINDS`.
        terms: ``LayerInputs -> CamTerms``: the formula.
        summary: the formula in one line.
        fields: the other :class:`MethodSpec` fields (``options``, ``relu``, ``class_agnostic``, ``passes``...).

    Returns:
        the registered spec.

    Raises:
        ValueError: an invalid spec, or another method registered under the same name.

    """
    return register_method(MethodSpec(name, kind, terms, summary, **fields))


def method_names() -> tuple[str, ...]:
    """The registered methods' names (``"GradCAM"``, ``"ScoreCAM"``, ...), in registration order."""
    return tuple(spec.name for spec in _REGISTRY.values())


def get_method(name: Any) -> MethodSpec:
    """The registered method called ``name`` (case-insensitive).

    Raises:
        ValueError: an unknown name, listing the registered ones.

    """
    spec = _REGISTRY.get(name.lower()) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown method {name!r}; choose one of {list(method_names())} (case-insensitive)")
    return spec
