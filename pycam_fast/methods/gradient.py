"""Gradient-based methods: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM, Layer-CAM.

Gradients come from ``torch.autograd.grad`` with respect to the hooked layer outputs only: parameter ``.grad`` is
never touched and only the model tail after the target layers is back-propagated.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..hooks import LayerSpec
from ..reference import DEFAULT_EPS
from ..targets import ClassIdx, OutputTarget, resolve_targets, select_scores
from .core import _CAM, _gaussian

__all__ = ["GradCAM", "GradCAMpp", "LayerCAM", "SmoothGradCAMpp", "XGradCAM"]


class _GradCAM(_CAM):
    """Base of the gradient methods: a second forward hook keeps the graph-attached layer outputs.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend`` (see :class:`_CAM`).

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, input_shape, **kwargs)
        self._relu = True
        self._score_used = True
        self._targets_supported = True
        for idx, name in enumerate(self.target_names):
            # A separate hook keeps the un-detached output (robust to in-place ops after the layer)
            self.hook_handles.append(self.submodule_dict[name].register_forward_hook(partial(self._hook_g, idx=idx)))

    def reset_hooks(self) -> None:
        """Clear stored activations, gradients and graph references."""
        super().reset_hooks()
        self._hook_outputs: list[Tensor | None] = [None] * len(self.target_names)
        self._grads_supplied = False

    def supply(self, activations: list[Tensor], grads: list[Tensor] | None = None) -> None:
        """Record the outputs and gradients of a forward/backward run elsewhere: the next weights use them.

        Args:
            activations: one ``(N, C, *S)`` output per target layer (after ``reshape_transform``, if any).
            grads: the explained scores' gradients with respect to ``activations``, same shapes.

        Raises:
            ValueError: missing ``grads``, or not one activation and one gradient per target layer.

        """
        if grads is None or len(grads) != len(activations):
            raise ValueError(f"{self.__class__.__name__} needs one gradient per activation")
        super().supply(activations)
        self.hook_g = list(grads)
        self._grads_supplied = True

    def _hook_g(self, _module: nn.Module, _inputs: tuple[Any, ...], output: Any, idx: int = 0) -> None:
        if self._hooks_enabled:
            self._hook_outputs[idx] = output if isinstance(output, Tensor) else None

    def _backprop(
        self,
        scores: Any,
        class_idx: ClassIdx | None,
        retain_graph: bool = False,
        targets: OutputTarget | list[OutputTarget] | None = None,
    ) -> None:
        """Store in ``hook_g`` the gradients of the explained scores with respect to each hooked output.

        Raises:
            RuntimeError: the forward ran without gradients, or a score is not connected to a target layer.

        """
        outputs = self._hook_outputs
        if any(out is None or not out.requires_grad for out in outputs) or not _requires_grad(scores):
            raise RuntimeError(
                f"{self.__class__.__name__} needs gradients, but the hooked forward ran without them (under "
                "torch.no_grad() or torch.inference_mode(), or with an input and parameters that do not require "
                "grad): run `scores = model(x)` with gradients enabled before calling the extractor"
            )
        target_fns = resolve_targets(targets, outputs[0].shape[0]) if targets is not None else None
        loss = select_scores(scores, class_idx, target_fns).sum()
        try:
            grads = torch.autograd.grad(loss, outputs, retain_graph=retain_graph)
        except RuntimeError as exc:
            raise RuntimeError(
                "target score is not connected to every target layer: pick layers the explained output depends "
                f"on ({exc})"
            ) from exc
        finally:
            if not retain_graph:
                # The graph is freed by autograd: drop our references so the activations can be released too
                self._hook_outputs = [None] * len(self.target_names)
        for idx, grad in enumerate(grads):
            grad = self._reshape_transform(grad) if self._reshape_transform is not None else grad
            self.hook_g[idx] = grad.detach()

    def _grads(self, class_idx: ClassIdx | None, scores: Any, **kwargs: Any) -> list[Tensor]:
        if self._grads_supplied:
            return self.hook_g  # type: ignore[return-value]
        self._backprop(scores, class_idx, **kwargs)
        return self.hook_g  # type: ignore[return-value]


def _requires_grad(scores: Any) -> bool:
    if isinstance(scores, Tensor):
        return scores.requires_grad
    return True  # per-sample outputs for callable targets: autograd reports what is disconnected


GRADIENT_FILTERS = (None, "guided", "deconv")


def filter_gradients(grads: Tensor, activations: Tensor, gradient_filter: str | None) -> Tensor:
    """Xplique's positive-gradient variants, applied to the target layer's gradients.

    Args:
        grads: ``(N, C, *S)`` gradients ``g``.
        activations: ``(N, C, *S)`` activations ``A``.
        gradient_filter: ``None`` (``g``), ``"guided"`` (Guided-ReLU: ``g * [g > 0] * [A > 0]``) or ``"deconv"``
            (Deconv-ReLU: ``relu(g)``).

    Returns:
        the filtered ``(N, C, *S)`` gradients.

    """
    if gradient_filter == "deconv":
        return torch.relu(grads)
    if gradient_filter == "guided":
        return torch.where((grads > 0) & (activations > 0), grads, torch.zeros_like(grads))
    return grads


class GradCAM(_GradCAM):
    r"""Grad-CAM ("Grad-CAM: Visual Explanations from Deep Networks", Selvaraju et al. 2017).

    ``w_k = mean_{i,j} dY/dA_k(i, j)``, ``L = ReLU(sum_k w_k A_k)``. ``gradient_filter`` selects Xplique's
    positive-gradient weights (see :func:`filter_gradients`): ``"guided"`` or ``"deconv"``.

    Raises:
        ValueError: an unknown ``gradient_filter``.

    """

    def __init__(self, *args: Any, gradient_filter: str | None = None, **kwargs: Any) -> None:
        if gradient_filter not in GRADIENT_FILTERS:
            raise ValueError(f"`gradient_filter` must be one of {GRADIENT_FILTERS}, got {gradient_filter!r}")
        super().__init__(*args, **kwargs)
        self.gradient_filter = gradient_filter

    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **kwargs: Any) -> list[Tensor]:
        grads = self._grads(class_idx, scores, **kwargs)
        if self.gradient_filter is not None:
            grads = [filter_gradients(g, a, self.gradient_filter) for g, a in zip(grads, self.hook_a, strict=True)]
        return [self._ops(g).gradcam_weights(g) for g in grads]


class GradCAMpp(_GradCAM):
    r"""Grad-CAM++ ("Grad-CAM++: Improved Visual Explanations", Chattopadhyay et al. 2018), as documented.

    ``alpha = g^2 / (2 g^2 + sum_{a,b} A_k(a, b) g^3 + eps)`` where ``g != 0`` (else 0),
    ``w_k = sum_{i,j} alpha_k(i, j) ReLU(g_k(i, j))``, ``L = ReLU(sum_k w_k A_k)``.
    """

    def _get_weights(
        self, class_idx: ClassIdx | None, scores: Any = None, eps: float = DEFAULT_EPS, **kwargs: Any
    ) -> list[Tensor]:
        grads = self._grads(class_idx, scores, **kwargs)
        return [self._ops(g).gradcampp_weights(g, a, eps) for g, a in zip(grads, self.hook_a, strict=True)]


class XGradCAM(_GradCAM):
    r"""XGrad-CAM ("Axiom-based Grad-CAM", Fu et al. 2020).

    ``w_k = sum_{i,j} g_k(i, j) A_k(i, j) / (sum_{i,j} A_k(i, j) + eps)``, ``L = ReLU(sum_k w_k A_k)``.
    """

    def _get_weights(
        self, class_idx: ClassIdx | None, scores: Any = None, eps: float = DEFAULT_EPS, **kwargs: Any
    ) -> list[Tensor]:
        grads = self._grads(class_idx, scores, **kwargs)
        return [self._ops(g).xgradcam_weights(g, a, eps) for g, a in zip(grads, self.hook_a, strict=True)]


class LayerCAM(_GradCAM):
    r"""Layer-CAM ("LayerCAM: Exploring Hierarchical Class Activation Maps", Jiang et al. 2021).

    ``L = ReLU(sum_k ReLU(g_k) * A_k)`` (element-wise weights); ``fuse_cams`` scales each map by ``tanh(2 L)``.
    """

    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **kwargs: Any) -> list[Tensor]:
        return [torch.relu(g) for g in self._grads(class_idx, scores, **kwargs)]

    @staticmethod
    def _scale_cams(cams: list[Tensor], gamma: float = 2.0) -> list[Tensor]:
        return [torch.tanh(gamma * cam) for cam in cams]


class SmoothGradCAMpp(_GradCAM):
    r"""Smooth Grad-CAM++ (Omeiza et al. 2019), as documented.

    The derivatives are averaged over ``num_samples`` noisy copies of the stored input (``x + N(0, std^2)``):
    ``D1 = mean(g)``, ``D2 = mean(g^2)``, ``D3 = mean(g^3)``; ``alpha = D2 / (2 D2 + sum_{a,b} A_k(a, b) D3 + eps)``
    (0 where ``D2 == 0``), ``w_k = sum alpha ReLU(D1)``, and the map uses the clean input's activations ``A``.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        num_samples: number of noisy samples.
        std: standard deviation of the input noise.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``.

    Raises:
        ValueError: ``num_samples < 1`` or ``std < 0``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        num_samples: int = 4,
        std: float = 0.3,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        _check_sampling(num_samples, std)
        super().__init__(model, target_layer, input_shape, **kwargs)
        self._score_used = False
        self.num_samples = num_samples
        self.std = std
        self._ihook_enabled = True
        self._input: Tensor | None = None
        self.hook_handles.append(model.register_forward_pre_hook(self._store_input))

    def _store_input(self, _module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if self._ihook_enabled and inputs and isinstance(inputs[0], Tensor):
            self._input = inputs[0].detach().clone()

    def _get_weights(
        self, class_idx: ClassIdx | None, scores: Any = None, eps: float = DEFAULT_EPS, **kwargs: Any
    ) -> list[Tensor]:
        previous = self._ihook_enabled
        self._ihook_enabled = False
        try:
            with torch.enable_grad():
                return self._smooth_weights(class_idx, eps, **kwargs)
        finally:
            self._ihook_enabled = previous

    def _noisy_moments(self, class_idx: ClassIdx | None, **kwargs: Any) -> list[list[Tensor]]:
        """Run the noisy forwards/backwards; returns per layer ``[sum g, sum g^2, sum g^3, last g]``."""
        if self._input is None:
            raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
        moments: list[list[Tensor]] | None = None
        for _ in range(self.num_samples):
            noise = _gaussian(self._input.size(), self.std).to(self._input.device, self._input.dtype)
            out = self.model((self._input + noise).requires_grad_(True))
            self._backprop(out, class_idx, **kwargs)
            grads: list[Tensor] = self.hook_g  # type: ignore[assignment]
            if moments is None:
                moments = [[torch.zeros_like(g) for _ in range(3)] + [g] for g in grads]
            for acc, g in zip(moments, grads, strict=True):
                g2 = g.pow(2)
                acc[0].add_(g)
                acc[1].add_(g2)
                acc[2].add_(g2 * g)
                acc[3] = g
        return moments  # type: ignore[return-value]

    def _smooth_weights(self, class_idx: ClassIdx | None, eps: float, **kwargs: Any) -> list[Tensor]:
        clean = list(self.hook_a)
        try:
            moments = self._noisy_moments(class_idx, **kwargs)
        finally:
            # The map uses the clean activations: undo what the noisy forwards recorded
            self.hook_a = clean
        n = self.num_samples
        return [
            self._ops(a).gradcampp_weights(s1 / n, a, eps, grads_sq=s2 / n, grads_cube=s3 / n)
            for (s1, s2, s3, _), a in zip(moments, clean, strict=True)
        ]

    def _extra_repr(self) -> str:
        return f"target_layer={self.target_names}, num_samples={self.num_samples}, std={self.std}"


def _check_sampling(num_samples: int, std: float) -> None:
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}")
    if not isinstance(std, (int, float)) or std < 0:
        raise ValueError(f"`std` must be a non-negative float, got {std!r}")
