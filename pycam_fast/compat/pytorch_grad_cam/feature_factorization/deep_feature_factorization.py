"""``pytorch_grad_cam.feature_factorization.deep_feature_factorization``: Deep Feature Factorization on the device.

DFF (https://arxiv.org/abs/1806.10206) factorises a layer's activations ``(N, C, h, w)``, shifted per channel to be
non-negative, as ``V (C, N*h*w) ~ W (C, K) @ H (K, N*h*w)``: the columns of ``W`` (shifted back) are the concept
embeddings, the rows of ``H`` the concepts' heatmaps. As in pytorch-grad-cam 1.5.7, one factorisation covers the
whole batch (the concepts are shared by the images).

pytorch-grad-cam runs scikit-learn's ``NMF(init="random", random_state=0)`` on the host. :func:`nmf` here runs the
same algorithm from the same start: scikit-learn's random init (NumPy's ``RandomState(0)`` normal draws, scaled by
``sqrt(mean(V) / K)``), then cyclic coordinate descent with its update order and stopping rule (``tol=1e-4``, at most
200 iterations) in one compiled op (:func:`pycam_fast.ops.nmf`: the whole loop in C++ on the CPU, for CUDA
activations too, on host copies of the small matrix), so the concepts and heatmaps are grad-cam's up to float
rounding (the BLAS products round differently) and the iteration counts match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .... import ops
from ....forward.explained import ExplainedForward
from .._wrapper import HoldsHooks
from ..activations_and_gradients import ActivationsAndGradients
from ..base_cam import _layer_names
from ..utils.image import create_labels_legend, scale_maps, show_factorization_on_image

__all__ = ["DeepFeatureFactorization", "dff", "nmf", "run_dff_on_image"]

#: scikit-learn's NMF defaults, which pytorch-grad-cam uses
NMF_TOL = 1e-4
NMF_MAX_ITER = 200


def _check_components(value: Any, name: str = "n_components") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def _random_start(v: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """scikit-learn's ``init="random", random_state=0`` start ``(B, m, k)``, ``(B, k, n)`` for ``v`` ``(B, m, n)``.

    ``|N(0, 1)| * sqrt(mean(v) / k)`` in ``v``'s dtype: NumPy's ``RandomState(0)`` draws ``h`` first, then ``w``,
    and the mean is NumPy's (its summation order), so the start is scikit-learn's bit for bit.
    """
    host = v.detach().cpu().numpy()
    _, m, n = host.shape
    draws = np.random.RandomState(0)
    h = draws.standard_normal(size=(k, n)).astype(host.dtype, copy=False)
    w = draws.standard_normal(size=(m, k)).astype(host.dtype, copy=False)
    scale = np.stack([np.sqrt(matrix.mean() / k) for matrix in host])[:, None, None]
    return (torch.from_numpy(np.abs(scale * w)).to(v.device), torch.from_numpy(np.abs(scale * h)).to(v.device))


def nmf(v: Tensor, n_components: int, max_iter: int = NMF_MAX_ITER, tol: float = NMF_TOL) -> tuple[Tensor, Tensor]:
    """scikit-learn's ``NMF(n_components, init="random", random_state=0)`` factors of ``v ~ w @ h``, batched.

    Each matrix gets scikit-learn's start for its shape and mean; :func:`pycam_fast.ops.nmf` then runs its
    coordinate descent (Frobenius loss) until the relative violation is at most ``tol`` or ``max_iter`` iterations.

    Args:
        v: ``(m, n)`` or ``(B, m, n)`` non-negative matrices (float64 is solved in float64, the rest in float32).
        n_components: the rank ``K``.
        max_iter: iteration limit.
        tol: relative violation that stops the iterations.

    Returns:
        ``w`` ``(..., m, K)`` and ``h`` ``(..., K, n)``, non-negative.

    Raises:
        ValueError: a negative or non-finite ``v``, not 2-D / 3-D, or a bad ``n_components`` / ``max_iter``.

    """
    k = _check_components(n_components)
    _check_components(max_iter, "max_iter")
    if not isinstance(v, Tensor) or v.ndim not in (2, 3):
        raise ValueError(f"`v` must be an (m, n) or (B, m, n) tensor, got {getattr(v, 'shape', type(v).__name__)}")
    single = v.ndim == 2
    v = (v[None] if single else v).to(torch.promote_types(v.dtype, torch.float32))
    if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
        raise ValueError("`v` must be finite and non-negative")
    w, h = _random_start(v, k)
    w, h, _ = ops.nmf(v, w, h, max_iter=max_iter, tol=tol)
    return (w[0], h[0]) if single else (w, h)


def _factorize(activations: Tensor, n_components: int) -> tuple[Tensor, Tensor]:
    """Concepts ``(C, K)`` and heatmaps ``(N, K, h, w)`` of ``(N, C, h, w)`` activations, on their device."""
    if activations.ndim != 4:
        raise ValueError(f"`activations` must be (N, C, H, W), got shape {tuple(activations.shape)}")
    batch, channels, height, width = activations.shape
    acts = activations.detach().to(torch.promote_types(activations.dtype, torch.float32))
    flat = torch.nan_to_num(acts.transpose(0, 1).reshape(channels, -1), nan=0.0)
    offset = flat.amin(dim=1, keepdim=True)
    w, h = nmf(flat - offset, n_components)
    return w + offset, h.view(-1, batch, height, width).transpose(0, 1)


def dff(activations: np.ndarray, n_components: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Deep Feature Factorization of ``(N, C, H, W)`` activations (array or tensor).

    Args:
        activations: the layer's activations (NaNs count as 0; the input is not modified).
        n_components: the number of concepts ``K``.

    Returns:
        the concepts ``(C, K)`` (the factor ``W`` plus each channel's minimum) and the heatmaps ``(N, K, H, W)``
        (the factor ``H``): float64 arrays for float64 activations, else float32.

    Raises:
        ValueError: not 4-D, or a bad ``n_components``.

    """
    k = _check_components(n_components)
    tensor = activations if isinstance(activations, Tensor) else torch.from_numpy(np.asarray(activations))
    concepts, explanations = _factorize(tensor, k)
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32  # scikit-learn's float32 or float64
    return concepts.to(dtype).cpu().numpy(), explanations.to(dtype).cpu().numpy()


class DeepFeatureFactorization(HoldsHooks):
    """pytorch-grad-cam's ``DeepFeatureFactorization``: concepts and their heatmaps from one layer's activations.

    ``dff = DeepFeatureFactorization(model, target_layer, reshape_transform=None, computation_on_concepts=None)``;
    ``dff(input_tensor, n_components=16)`` runs the model, factorises ``target_layer``'s activations on their
    device (:func:`nmf`) and returns the concepts ``(C, K)``, a list of ``N`` per-image ``(K, H, W)`` heatmaps
    (min-max normalised per concept, resized to the input) and, with ``computation_on_concepts``, its output on the
    ``(K, C)`` concept embeddings (e.g. the model's classifier head). The layer is hooked only during a call, and
    the model's training flags are left as they are (as in pytorch-grad-cam).

    Args:
        model: the model.
        target_layer: one submodule of ``model`` (its first call in the forward is used).
        reshape_transform: applied to the layer's output (e.g. ViT tokens to ``(N, C, h, w)``).
        computation_on_concepts: a callable on the ``(K, C)`` float32 concept tensor, or ``None`` (the tensor is on
            the activations' device; pytorch-grad-cam passes a CPU tensor).

    Raises:
        TypeError: ``target_layer`` is not a module, or a non-callable ``reshape_transform`` /
            ``computation_on_concepts``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        computation_on_concepts: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not isinstance(target_layer, nn.Module):
            raise TypeError(f"`target_layer` must be one nn.Module (not a list), got {type(target_layer).__name__}")
        callables = {"reshape_transform": reshape_transform, "computation_on_concepts": computation_on_concepts}
        for name, value in callables.items():
            if value is not None and not callable(value):
                raise TypeError(f"`{name}` must be callable or None, got {type(value).__name__}")
        self.model = model
        self.target_layer = target_layer
        self.computation_on_concepts = computation_on_concepts
        self.activations_and_grads = ActivationsAndGradients(model, [], reshape_transform)
        names = _layer_names(model, [target_layer])
        self._fast_forward = ExplainedForward(model, names) if names else None

    def __call__(self, input_tensor: Tensor, n_components: int = 16) -> tuple[Any, ...]:
        """Factorise the activations of a batch.

        Args:
            input_tensor: ``(N, C, H, W)`` batch.
            n_components: the number of concepts ``K``.

        Returns:
            ``(concepts, explanations)`` or, with ``computation_on_concepts``, ``(concepts, explanations,
            concept_outputs)``: ``(C, K)`` float32 array, list of ``N`` ``(K, H, W)`` float32 arrays, ``(K, ...)``
            array.

        Raises:
            TypeError: ``input_tensor`` is not a tensor.
            ValueError: not a 4-D batch, a bad ``n_components``, or activations that are not ``(N, C, h, w)``.
            RuntimeError: the forward did not call ``target_layer``.

        """
        if not isinstance(input_tensor, Tensor):
            raise TypeError(f"`input_tensor` must be a torch.Tensor (N, C, H, W), got {type(input_tensor).__name__}")
        if input_tensor.ndim != 4:
            raise ValueError(f"`input_tensor` must be an (N, C, H, W) batch, got shape {tuple(input_tensor.shape)}")
        k = _check_components(n_components)
        concepts, explanations = _factorize(self._activations(input_tensor), k)
        height, width = input_tensor.shape[-2:]
        maps = scale_maps(explanations.flatten(0, 1), (width, height)).view(*explanations.shape[:2], height, width)
        result = (concepts.float().cpu().numpy(), list(maps.cpu().numpy()))
        if self.computation_on_concepts is None:
            return result
        with torch.no_grad():
            outputs = self.computation_on_concepts(concepts.float().T.contiguous())
        return (*result, outputs.detach().cpu().numpy())

    #: run the layers on the optimised private copy where possible (building it costs about a dozen forwards of a
    #: small batch, so one-off factorisations such as :func:`run_dff_on_image` switch it off)
    optimized_copy: bool = True
    #: set once the layer's output was seen modified in place after it (the hooks see that; the copy does not)
    _in_place_output: bool = False

    def _activations(self, x: Tensor) -> Tensor:
        activations = self._copy_activations(x)
        return self._hooked_activations(x) if activations is None else activations

    def _copy_activations(self, x: Tensor) -> Tensor | None:
        """The layer's activations from a forward of the optimised private copy, or ``None`` where it cannot run.

        The copy (BN folded, channels-last) computes the same activations to float rounding, faster; it runs only
        where the model would compute the same thing: eval mode, no foreign hooks, an isolable layer whose output is
        not modified in place afterwards.
        """
        forward = self._fast_forward
        if (
            not self.optimized_copy
            or self._in_place_output
            or forward is None
            or forward.unavailable() is not None
            or forward.copy_unavailable(x) is not None
        ):
            return None
        with torch.no_grad():
            result = forward.run(x, gradients=False, on_copy=True, need_classes=False)
        if result.modified_in_place:  # remembered: later calls go straight to the hooks
            self._in_place_output = True
            return None
        transform = self.activations_and_grads.reshape_transform
        return result.activations[0] if transform is None else transform(result.activations[0])

    def _hooked_activations(self, x: Tensor) -> Tensor:
        recorder = self.activations_and_grads
        with recorder.recording([self.target_layer]), torch.no_grad():
            recorder(x)
            if not recorder.activations:
                raise RuntimeError("`target_layer` was not called in the model's forward")
            return recorder.activations[0]

    # hooks only exist during a call; release() also drops what the recorder holds
    _holders = ("activations_and_grads",)


def _id2label(model: nn.Module) -> Mapping[int, str]:
    labels = getattr(getattr(model, "config", None), "id2label", None)
    if not isinstance(labels, Mapping):
        raise AttributeError(
            "`model` must have `model.config.id2label` (a category -> label mapping, as Hugging Face models have)"
        )
    return labels


def run_dff_on_image(
    model: nn.Module,
    target_layer: nn.Module,
    classifier: Callable[[Tensor], Tensor],
    img_pil: Any,
    img_tensor: Tensor,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    n_components: int = 5,
    top_k: int = 2,
) -> np.ndarray:
    """DFF of one image, drawn next to it: ``[image | concepts over the image | legend]``.

    Each concept's legend lists the ``top_k`` categories of ``softmax(classifier(concept))``, labelled by
    ``model.config.id2label``. (pytorch-grad-cam's default ``reshape_transform`` is a typing object that fails when
    called; ``None`` here.)

    Args:
        model: the model, with ``config.id2label``.
        target_layer: the factorised layer.
        classifier: maps ``(K, C)`` concept embeddings to ``(K, categories)`` scores.
        img_pil: the ``H x W`` RGB image (PIL image or uint8 array).
        img_tensor: its ``(C, H, W)`` model input.
        reshape_transform: see :class:`DeepFeatureFactorization`.
        n_components: the number of concepts.
        top_k: categories listed per concept.

    Returns:
        ``(H, 3W, 3)`` uint8 image.

    Raises:
        AttributeError: ``model`` has no ``config.id2label``.
        ValueError: ``img_tensor`` is not ``(C, H, W)``, or its size is not the image's.

    """
    labels = _id2label(model)
    image = np.array(img_pil)
    if not isinstance(img_tensor, Tensor) or img_tensor.ndim != 3:
        raise ValueError(f"`img_tensor` must be one (C, H, W) image tensor, got {getattr(img_tensor, 'shape', None)}")
    if image.shape[:2] != tuple(img_tensor.shape[-2:]):
        raise ValueError(f"`img_pil` is {image.shape[:2]} but `img_tensor` is {tuple(img_tensor.shape[-2:])} (H, W)")
    with DeepFeatureFactorization(model, target_layer, reshape_transform, classifier) as factorization:
        factorization.optimized_copy = False  # one call: building the copy would cost more than it saves
        _, explanations, concept_outputs = factorization(img_tensor[None], n_components)
    scores = torch.softmax(torch.from_numpy(concept_outputs), dim=-1).numpy()
    legend = create_labels_legend(scores, labels=labels, top_k=top_k)
    drawn = show_factorization_on_image(image / 255, explanations[0], image_weight=0.3, concept_labels=legend)
    return np.hstack((image, drawn))
