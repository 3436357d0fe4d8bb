"""Image helpers with pytorch-grad-cam's names and outputs (NumPy / OpenCV, for display only)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "create_labels_legend",
    "deprocess_image",
    "preprocess_image",
    "scale_accross_batch_and_channels",
    "scale_cam_image",
    "scale_maps",
    "show_cam_on_image",
    "show_factorization_on_image",
]

#: pytorch-grad-cam's normalisation epsilon: ``(x - min) / (1e-7 + max(x - min))``.
_EPS = 1e-7


def preprocess_image(
    img: np.ndarray, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)
) -> Tensor:
    """``(H, W, C)`` image (uint8 0-255 or float in [0, 1]) -> normalised ``(1, C, H, W)`` float32 tensor.

    Like torchvision's ``ToTensor`` + ``Normalize``: uint8 images are divided by 255, float ones kept as they are.

    Raises:
        ValueError: not an ``(H, W)`` or ``(H, W, C)`` array.

    """
    array = np.asarray(img)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"`img` must be an (H, W, C) array, got shape {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    tensor = tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor.float()
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return ((tensor - mean_t) / std_t).unsqueeze(0)


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """Standardise, scale to 0.1 std around 0.5, clip to [0, 1] and convert to uint8 (for gradient images)."""
    img = img - np.mean(img)
    img = img / (np.std(img) + 1e-5)
    img = np.clip(img * 0.1 + 0.5, 0, 1)
    return np.uint8(img * 255)


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int | None = None,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Overlay a CAM as an OpenCV heatmap: ``image_weight * img + (1 - image_weight) * heatmap``, rescaled to max 1.

    Args:
        img: ``(H, W, 3)`` float image in [0, 1] (RGB if ``use_rgb``, else BGR).
        mask: ``(H, W)`` map in [0, 1].
        use_rgb: return RGB instead of OpenCV's BGR.
        colormap: OpenCV colormap (default ``cv2.COLORMAP_JET``).
        image_weight: weight of the image, in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 overlay.

    Raises:
        ValueError: an image with values above 1, or ``image_weight`` outside [0, 1].

    """
    import cv2

    if np.max(img) > 1:
        raise ValueError("`img` must be a float32 image in [0, 1] (divide a uint8 image by 255)")
    if not 0 <= image_weight <= 1:
        raise ValueError(f"`image_weight` must be in [0, 1], got {image_weight}")
    heatmap = cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET if colormap is None else colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    cam = (1 - image_weight) * (np.float32(heatmap) / 255) + image_weight * img
    return np.uint8(255 * (cam / np.max(cam)))


def scale_maps(maps: Tensor, target_size: Sequence[int] | None = None) -> Tensor:
    """Torch form of :func:`scale_cam_image` on the maps' device: ``(B, *S)`` -> ``(B, *target)``.

    Each map becomes ``(x - min) / (1e-7 + max(x - min))``, then (2-D) is resized bilinearly with
    ``align_corners=False`` (what ``cv2.resize`` INTER_LINEAR computes) or (3-D) trilinearly.

    Args:
        maps: ``(B, H, W)`` or ``(B, D, H, W)`` floating-point maps.
        target_size: ``(W, H)`` / ``(W, H, D)``, OpenCV's order (reversed spatial dims), or ``None``.

    Returns:
        the normalised (and resized) maps, float32.

    """
    maps = maps.float()
    flat = maps.flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    shifted = flat - low
    scaled = (shifted / (_EPS + shifted.amax(dim=1, keepdim=True))).view_as(maps)
    if target_size is None:
        return scaled
    size = tuple(int(t) for t in target_size)[::-1]
    if tuple(scaled.shape[1:]) == size:
        return scaled
    mode = "bilinear" if scaled.ndim == 3 else "trilinear"
    return F.interpolate(scaled.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


def scale_cam_image(cam: Any, target_size: Sequence[int] | None = None) -> np.ndarray:
    """Min-max normalise each map of ``cam`` (``(x - min) / (1e-7 + max)``), then resize to ``target_size``.

    Args:
        cam: ``(B, H, W)`` (or ``(B, D, H, W)``) array or tensor.
        target_size: ``(W, H)`` (OpenCV's order) for 2-D maps, ``(W, H, D)`` for 3-D ones, or ``None``.

    Returns:
        ``(B, *size)`` float32 array. 2-D maps are resized bilinearly in torch (``cv2.resize``'s INTER_LINEAR
        values); 3-D ones with ``scipy.ndimage.zoom`` (cubic spline) when SciPy is installed, like pytorch-grad-cam.

    """
    maps = torch.as_tensor(np.asarray(cam.detach().cpu() if isinstance(cam, Tensor) else cam, dtype=np.float32))
    if maps.ndim == 4 and target_size is not None:
        try:
            from scipy.ndimage import zoom
        except ImportError:  # pragma: no cover - SciPy ships with pytorch-grad-cam's dependencies
            return scale_maps(maps, target_size).numpy()
        normalised = scale_maps(maps).numpy()
        factors = [t / s for s, t in zip(normalised.shape[1:], tuple(target_size)[::-1], strict=True)]
        return np.float32([zoom(m, factors) for m in normalised])
    return scale_maps(maps, target_size).numpy()


def scale_accross_batch_and_channels(tensor: Any, target_size: Sequence[int]) -> np.ndarray:
    """:func:`scale_cam_image` on every ``(sample, channel)`` map of ``(N, C, H, W)``: ``(N, C, H', W')`` float32.

    ``target_size`` is ``(W', H')`` (OpenCV's order).
    """
    array = np.asarray(tensor.detach().cpu() if isinstance(tensor, Tensor) else tensor)
    batch, channels = array.shape[:2]
    scaled = scale_cam_image(array.reshape(batch * channels, *array.shape[2:]), target_size)
    return scaled.reshape(batch, channels, target_size[1], target_size[0])


def create_labels_legend(concept_scores: np.ndarray, labels: Mapping[int, str], top_k: int = 2) -> list[str]:
    """One legend string per concept: its ``top_k`` categories as ``"label:score"`` lines, best first.

    Args:
        concept_scores: ``(concepts, categories)`` scores.
        labels: category -> label (only its first 3 comma-separated names are kept).
        top_k: categories per concept.

    """
    scores = np.asarray(concept_scores)
    order = np.argsort(scores, axis=1)[:, ::-1][:, :top_k]
    legends = []
    for concept, categories in enumerate(order):
        lines = [f"{','.join(labels[c].split(',')[:3])}:{scores[concept, c]:.2f}" for c in categories]
        legends.append("\n".join(lines))
    return legends


def show_factorization_on_image(
    img: np.ndarray,
    explanations: np.ndarray,
    colors: list[np.ndarray] | None = None,
    image_weight: float = 0.5,
    concept_labels: list[str] | None = None,
) -> np.ndarray:
    """Colour each concept's heatmap over the image; where concepts overlap, the strongest wins.

    Each concept gets one colour (``gist_rainbow`` by default) whose HSV value is set to the heatmap's intensity on
    the pixels where it is the strongest concept (``explanations`` is modified there, as pytorch-grad-cam does).

    Args:
        img: ``(H, W, 3)`` float RGB image in [0, 1].
        explanations: ``(K, H, W)`` concept heatmaps in [0, 1].
        colors: ``K`` RGB(A) colours in [0, 1].
        image_weight: weight of the image in the blend.
        concept_labels: ``K`` legend strings; when given, a legend image is appended on the right.

    Returns:
        ``(H, W, 3)`` uint8 image (``(H, 2W, 3)`` with a legend).

    """
    import cv2

    n_components = explanations.shape[0]
    if colors is None:
        from matplotlib import colormaps

        cmap = colormaps["gist_rainbow"]
        colors = [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / n_components)]
    winner = explanations.argmax(axis=0)
    layers = []
    for i in range(n_components):
        explanation = explanations[i]
        explanation[winner != i] = 0
        rgb = np.empty((img.shape[0], img.shape[1], 3), dtype=np.uint8)
        rgb[:] = np.uint8(np.asarray(colors[i][:3]) * 255)
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hsv[:, :, 2] = np.uint8(255 * explanation)
        layers.append(np.float32(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)) / 255)
    blended = img * image_weight + np.sum(np.float32(layers), axis=0) * (1 - image_weight)
    result = np.uint8(blended * 255)
    if concept_labels is not None:
        result = np.hstack((result, _legend_image(result.shape, colors, concept_labels)))
    return result


def _legend_image(shape: tuple[int, ...], colors: list[np.ndarray], concept_labels: list[str]) -> np.ndarray:
    """A ``shape``-sized RGB legend (one coloured line per concept label), drawn with Matplotlib."""
    import cv2
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    n_components = len(concept_labels)
    px = 1 / plt.rcParams["figure.dpi"]
    fig = plt.figure(figsize=(shape[1] * px, shape[0] * px))
    try:
        plt.rcParams["legend.fontsize"] = int(14 * shape[0] / 256 / max(1, n_components / 6))
        width = 5 * shape[0] / 256
        lines = [Line2D([0], [0], color=colors[i], lw=width) for i in range(n_components)]
        plt.legend(lines, concept_labels, mode="expand", fancybox=True, shadow=True)
        with warnings.catch_warnings():  # a legend filling the figure leaves no margins to fit
            warnings.simplefilter("ignore", UserWarning)
            plt.tight_layout(pad=0, w_pad=0, h_pad=0)
        plt.axis("off")
        fig.canvas.draw()
        data = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)
    return cv2.resize(data, (shape[1], shape[0]))
