"""``pytorch_grad_cam.sess``: :class:`SESS` (Saliency Enhancing with Scaling and Sliding), batched on the device.

SESS explains an image through fixed-size windows slid over several rescaled copies of it: each window gets a CAM
from a base method, weighted by the window's (softmax) target score relative to the best window's, pasted back into
the image's coordinates and fused (a spatial mean of the values above ``theta``, or a maximum), then optionally
blurred (11x11 Gaussian, sigma 5) and min-max normalised per image.

pytorch-grad-cam 1.5.7 scores the windows of one image at a time, runs the base method on them, and pastes / resizes
/ fuses every window CAM with NumPy and OpenCV one by one. Here the windows of every scale (and of several images,
when ``batch_size`` holds them) go through the base method together, ``batch_size`` windows per forward; when nothing
is pre-filtered, the scores come from the outputs of those same forwards (no second pass). Pasting a window back and
resizing it to the image is one ``(H, w) @ cam @ (w, W)`` product with ``cv2.resize``'s INTER_LINEAR weights, and the
fusion, blur and normalisation run in torch on the device: the host only sorts each image's scores (NumPy's
``argsort``, so ties and the pre-filter pick the same windows).

Differences: the model's training flags are restored after a call (pytorch-grad-cam's base method leaves the model in
eval mode); with ``theta > 0``, a window value within float rounding of ``theta`` may enter one library's mean and not
the other's (a few pixels of a map; ``theta=0`` compares exact zeros, which both produce alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...model_state import model_eval
from ...targets import OutputTarget
from ._wrapper import HoldsHooks
from .base_cam import BaseCAM
from .cams import GradCAM
from .utils.image import scale_maps
from .utils.model_targets import ClassifierOutputTarget

__all__ = ["SESS", "sliding_window", "window_starts"]

#: pytorch-grad-cam's final blur: ``cv2.GaussianBlur(cam, (11, 11), 5.0)`` (reflect-101 borders)
_BLUR_SIZE, _BLUR_SIGMA = 11, 5.0
_POOLS = ("mean", "max")


def window_starts(length: int, step_size: int, window_size: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` pixels.

    Windows start every ``step_size`` pixels; the first one reaching the end is moved back to end exactly there
    (``max(length - window_size, 0)``) and is the last one.
    """
    candidates = range(0, length, step_size)
    starts = [s for s in candidates if s + window_size < length]
    if len(starts) < len(candidates):
        starts.append(max(length - window_size, 0))
    return starts


def sliding_window(height: int, width: int, step_size: int, window_size: int) -> list[tuple[int, int]]:
    """Top-left corners ``(x, y)`` of the windows covering a ``height x width`` image, row by row."""
    columns = window_starts(width, step_size, window_size)
    return [(x, y) for y in window_starts(height, step_size, window_size) for x in columns]


def _short_side_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """The output size of torchvision's ``resize(img, scale)``: the shorter side becomes ``scale``, same ratio."""
    if width <= height:
        return int(scale * height / width), scale
    return scale, int(scale * width / height)


def _resize_short_side(x: Tensor, scale: int) -> Tensor:
    """``torchvision.transforms.functional.resize(x, scale)`` for float tensors (bilinear, antialiased)."""
    size = _short_side_size(x.shape[-2], x.shape[-1], scale)
    if size == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _interpolation_matrix(src: int, dst: int, device: torch.device) -> Tensor:
    """``(dst, src)`` matrix of ``cv2.resize``'s INTER_LINEAR along one axis: OpenCV's float32 weights exactly.

    OpenCV's own weights (source positions in float64, fractions rounded to float32; not torch's float32 positions)
    matter here: a window pasted on a zero canvas has output pixels whose weight on the window is tiny (1e-16) or
    exactly zero, and the ``> theta`` mask of the mean fusion tells those apart.
    """
    position = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    left = np.floor(position).astype(np.int64)
    frac = (position - left).astype(np.float32)
    frac[left < 0] = 0.0
    frac[left >= src - 1] = 0.0
    left = np.clip(left, 0, src - 1)
    matrix = np.zeros((dst, src), dtype=np.float32)
    rows = np.arange(dst)
    np.add.at(matrix, (rows, left), np.float32(1.0) - frac)
    np.add.at(matrix, (rows, np.minimum(left + 1, src - 1)), frac)
    return torch.from_numpy(matrix).to(device)


def _reflect101(index: int, length: int) -> int:
    """OpenCV's BORDER_REFLECT_101 position of ``index`` on an axis of ``length``."""
    if length == 1:
        return 0
    while not 0 <= index < length:
        index = -index if index < 0 else 2 * length - 2 - index
    return index


def _gaussian_blur(maps: Tensor) -> Tensor:
    """``cv2.GaussianBlur(m, (11, 11), 5.0, 0)`` of every ``(N, H, W)`` map (separable, reflect-101 borders)."""
    radius = _BLUR_SIZE // 2
    taps = np.exp(-((np.arange(_BLUR_SIZE) - radius) ** 2) / (2 * _BLUR_SIGMA**2))
    kernel = torch.as_tensor(np.float32(taps / taps.sum()), device=maps.device)
    rows = [_reflect101(i, maps.shape[1]) for i in range(-radius, maps.shape[1] + radius)]
    cols = [_reflect101(i, maps.shape[2]) for i in range(-radius, maps.shape[2] + radius)]
    padded = maps[:, rows][:, :, cols].unsqueeze(1).float()
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))[:, 0]


@dataclass(frozen=True)
class _Plan:
    """Where the windows of one input size come from.

    Attributes:
        window: the window size.
        sizes: ``(h, w)`` of each rescaled copy.
        windows: ``(scale index, x1, y1)`` of each window, in pytorch-grad-cam's order (scales, then rows).

    """

    window: int
    sizes: list[tuple[int, int]]
    windows: list[tuple[int, int, int]]


def _check_positive_int(name: str, value: Any, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if optional else ''}, got {value!r}")


class SESS(HoldsHooks):
    """pytorch-grad-cam's ``SESS(model, target_layers, reshape_transform=None, base_method=GradCAM, ...)``.

    Args:
        model: the model to explain.
        target_layers: passed to ``base_method``.
        reshape_transform: passed to ``base_method``.
        base_method: the CAM class run on the windows (a :class:`~.base_cam.BaseCAM` of this package runs them on
            the device; any other class is called as ``base_method(model, target_layers, reshape_transform,
            **kwargs)(windows, targets, eigen_smooth=...)``).
        scales: the sizes the shorter side is resized to (default: ``num_scales`` sizes from the window size in
            steps of ``round(scale_step_ratio * window)``).
        num_scales: number of default scales.
        scale_step_ratio: default scale step, relative to the window size.
        window_size: the square window's size (default: the shorter side of the input).
        step_size: the window stride (default: the window size).
        pre_filter_ratio: fraction of the lowest-scoring windows left out, in [0, 1).
        theta: with ``pool="mean"``, only values above it enter the mean.
        pool: ``"mean"`` (spatial weighted average) or ``"max"``.
        smooth: blur the fused map (11x11 Gaussian, sigma 5).
        use_softmax_scores: score windows by the target applied to the softmax of the output (else to the raw
            output, clipped at 0).
        batch_size: windows per forward (windows of several images and scales share a forward here).
        kwargs: further keyword arguments of ``base_method``.

    Raises:
        ValueError: an invalid ``pool``, ``pre_filter_ratio``, ``num_scales``, ``batch_size``, ``window_size``,
            ``step_size`` or ``scales``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        base_method: type = GradCAM,
        scales: list[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: int | None = None,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        if pool not in _POOLS:
            raise ValueError(f"`pool` must be 'mean' or 'max', got {pool!r}")
        if not 0.0 <= pre_filter_ratio < 1.0:
            raise ValueError(f"`pre_filter_ratio` must be in [0, 1), got {pre_filter_ratio!r}")
        _check_positive_int("num_scales", num_scales, optional=False)
        _check_positive_int("batch_size", batch_size, optional=False)
        _check_positive_int("window_size", window_size)
        _check_positive_int("step_size", step_size)
        if scales is not None:
            if not isinstance(scales, (list, tuple)) or not scales:
                raise ValueError(f"`scales` must be a non-empty list of positive integers or None, got {scales!r}")
            for scale in scales:
                _check_positive_int("scales", scale, optional=False)
        self.base_cam = base_method(model, target_layers, reshape_transform, **kwargs)
        self.model = model
        self.device = getattr(self.base_cam, "device", None) or _model_device(model)
        self.scales = scales
        self.num_scales = num_scales
        self.scale_step_ratio = scale_step_ratio
        self.window_size = window_size
        self.step_size = step_size
        self.pre_filter_ratio = pre_filter_ratio
        self.theta = theta
        self.pool = pool
        self.smooth = smooth
        self.use_softmax_scores = use_softmax_scores
        self.batch_size = batch_size

    # -- public API (pytorch-grad-cam's) ---------------------------------------------------------------------------
    def forward(
        self, input_tensor: Tensor, targets: Sequence[OutputTarget] | None = None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """The SESS maps of a batch.

        Args:
            input_tensor: ``(N, C, H, W)`` batch.
            targets: one callable per image (applied to the ``(windows, K)`` window outputs), or ``None`` for each
                image's highest-scoring class.
            eigen_smooth: passed to the base method.

        Returns:
            ``(N, H, W)`` float32 maps, min-max normalised per image.

        Raises:
            TypeError: ``input_tensor`` is not a tensor, or ``targets`` is not a list of callables.
            ValueError: not a 4-D batch, ``len(targets) != N``, or a scale below the window size.

        """
        x, target_list = self._checked(input_tensor, targets)
        return scale_maps(self._enhanced(x, target_list, eigen_smooth)).cpu().numpy()

    def forward_single_image(
        self, input_tensor: Tensor, target: OutputTarget | None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """The fused (and blurred) ``(H, W)`` float32 map of a ``(1, C, H, W)`` image, before the normalisation."""
        x, target_list = self._checked(input_tensor, None if target is None else [target])
        return self._enhanced(x[:1], target_list[:1], eigen_smooth)[0].cpu().numpy()

    def get_scales(self, window_size: int) -> list[int]:
        """The shorter-side sizes of the rescaled copies."""
        if self.scales is not None:
            return list(self.scales)
        step = round(window_size * self.scale_step_ratio)
        return [window_size + i * step for i in range(self.num_scales)]

    def collect_patches(
        self, input_tensor: Tensor, window_size: int, step_size: int
    ) -> tuple[list[Tensor], list[tuple[int, int, int, int]]]:
        """The windows of every scale: ``(1, C, w, w)`` tensors and their ``(x1, y1, scaled_width, scaled_height)``."""
        plan = self._plan(*input_tensor.shape[-2:], window_size, step_size)
        patches = self._patches(input_tensor, plan)
        coordinates = [(x1, y1, plan.sizes[s][1], plan.sizes[s][0]) for s, x1, y1 in plan.windows]
        return [patches[:, i] for i in range(patches.shape[1])], coordinates

    def get_target(self, input_tensor: Tensor) -> ClassifierOutputTarget:
        """The highest-scoring category of the (first) image, as a ``ClassifierOutputTarget``."""
        return self._default_targets(input_tensor.to(self.device))[0]

    def get_scores(self, patches: Sequence[Tensor], target: OutputTarget) -> np.ndarray:
        """The target's score of every window (clipped at 0), float32 ``(len(patches),)``."""
        outputs = self._window_outputs(torch.cat(list(patches)).to(self.device))
        return self._scores(outputs, target).cpu().numpy()

    def paste_cam(
        self, cam: np.ndarray, coordinates: tuple[int, int, int, int], target_size: tuple[int, int]
    ) -> np.ndarray:
        """A window's CAM put back into its rescaled copy and resized to the image: ``(height, width)`` float32.

        ``coordinates`` is ``(x1, y1, scaled_width, scaled_height)``, ``target_size`` ``(height, width)``; the
        resize is ``cv2.resize``'s INTER_LINEAR.
        """
        x1, y1, scaled_width, scaled_height = coordinates
        cam_t = torch.as_tensor(np.asarray(cam, dtype=np.float32))
        rows = _interpolation_matrix(scaled_height, target_size[0], cam_t.device)[:, y1 : y1 + cam_t.shape[0]]
        cols = _interpolation_matrix(scaled_width, target_size[1], cam_t.device)[:, x1 : x1 + cam_t.shape[1]]
        return (rows @ cam_t @ cols.T).numpy()

    _holders = ("base_cam",)

    # -- the batched pipeline --------------------------------------------------------------------------------------
    def _checked(self, input_tensor: Any, targets: Any) -> tuple[Tensor, list[OutputTarget]]:
        if not isinstance(input_tensor, Tensor):
            raise TypeError(f"`input_tensor` must be a torch.Tensor (N, C, H, W), got {type(input_tensor).__name__}")
        if input_tensor.ndim != 4:
            raise ValueError(f"`input_tensor` must be an (N, C, H, W) batch, got shape {tuple(input_tensor.shape)}")
        x = input_tensor.detach().to(self.device)
        if targets is None:
            return x, self._default_targets(x)
        if not isinstance(targets, (list, tuple)) or any(not callable(t) for t in targets):
            raise TypeError("`targets` must be a list of callables, e.g. [ClassifierOutputTarget(281)], or None")
        if len(targets) != x.shape[0]:
            raise ValueError(f"`targets` needs one target per image: got {len(targets)} for {x.shape[0]} images")
        return x, list(targets)

    def _default_targets(self, x: Tensor) -> list[OutputTarget]:
        with torch.no_grad(), model_eval(self.model):
            outputs = self.model(x)
        return [ClassifierOutputTarget(int(c)) for c in outputs.argmax(dim=-1).tolist()]

    def _plan(self, height: int, width: int, window_size: int, step_size: int) -> _Plan:
        sizes, windows = [], []
        for scale in self.get_scales(window_size):
            if scale < window_size:
                raise ValueError(f"`scales` must all be at least the window size {window_size}, got {scale}")
            sizes.append(_short_side_size(height, width, scale))
            windows += [(len(sizes) - 1, x1, y1) for x1, y1 in sliding_window(*sizes[-1], step_size, window_size)]
        return _Plan(window_size, sizes, windows)

    def _patches(self, x: Tensor, plan: _Plan) -> Tensor:
        """``(N, P, C, w, w)``: every window of every rescaled copy."""
        scaled = [_resize_short_side(x, scale) for scale in self.get_scales(plan.window)]
        w = plan.window
        return torch.stack([scaled[s][:, :, y1 : y1 + w, x1 : x1 + w] for s, x1, y1 in plan.windows], dim=1)

    def _enhanced(self, x: Tensor, targets: list[OutputTarget], eigen_smooth: bool) -> Tensor:
        """The fused (and blurred) ``(N, H, W)`` maps, before the final normalisation.

        Images share forwards in groups of ``batch_size // windows per image`` (at least one), so the windows held
        at once stay near ``batch_size`` images' worth, or one image's.
        """
        height, width = x.shape[-2:]
        window = self.window_size if self.window_size is not None else min(height, width)
        plan = self._plan(height, width, window, self.step_size if self.step_size is not None else window)
        group = max(1, self.batch_size // len(plan.windows))
        parts = [
            self._enhanced_group(x[i : i + group], targets[i : i + group], plan, eigen_smooth)
            for i in range(0, x.shape[0], group)
        ]
        return torch.cat(parts)

    def _enhanced_group(self, x: Tensor, targets: list[OutputTarget], plan: _Plan, eigen_smooth: bool) -> Tensor:
        n, _, height, width = x.shape
        windows = self._patches(x, plan).flatten(0, 1)  # (N * P, C, w, w), image-major
        count = len(plan.windows)
        per_window = [t for t in targets for _ in range(count)]
        cams, outputs = None, None
        if self.pre_filter_ratio == 0.0 and self._reuses_outputs():
            cams, outputs = self._window_cams(windows, per_window, eigen_smooth, keep_outputs=True)
        if outputs is None:
            outputs = self._window_outputs(windows)
        kept, weights = self._selection(outputs.view(n, count, -1), targets)
        if cams is None or len(kept) < len(windows):
            chosen = torch.as_tensor(kept, device=x.device)
            cams, _ = self._window_cams(windows[chosen], [per_window[i] for i in kept], eigen_smooth)
        else:
            cams = cams[torch.as_tensor(kept, device=cams.device)]
        fused = self._fuse(cams * weights.to(cams.device).view(-1, 1, 1), kept, count, plan, (n, height, width))
        return _gaussian_blur(fused) if self.smooth else fused

    def _reuses_outputs(self) -> bool:
        """Whether the base method's forwards record the window outputs (this package's ``BaseCAM.forward``)."""
        return isinstance(self.base_cam, BaseCAM) and type(self.base_cam).forward is BaseCAM.forward

    def _window_cams(
        self, windows: Tensor, targets: list[OutputTarget], eigen_smooth: bool, keep_outputs: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``(Q, w, w)`` base-method maps of the windows (and their ``(Q, K)`` outputs), ``batch_size`` per call."""
        maps, outputs = [], []
        for start in range(0, len(windows), self.batch_size):
            chunk, chunk_targets = windows[start : start + self.batch_size], targets[start : start + self.batch_size]
            if isinstance(self.base_cam, BaseCAM):
                maps.append(self.base_cam.forward(chunk, chunk_targets, eigen_smooth).float())
            else:
                cam = self.base_cam(chunk, chunk_targets, eigen_smooth=eigen_smooth)
                maps.append(torch.as_tensor(np.asarray(cam, dtype=np.float32), device=windows.device))
            if keep_outputs:
                out = getattr(self.base_cam, "outputs", None)
                keep_outputs = isinstance(out, Tensor) and out.ndim == 2 and out.shape[0] == len(chunk)
                outputs.append(out.detach() if keep_outputs else None)
        return torch.cat(maps), torch.cat(outputs) if keep_outputs else None

    def _window_outputs(self, windows: Tensor) -> Tensor:
        """``(Q, K)`` model outputs of the windows (no gradients, eval mode), ``batch_size`` per forward."""
        with torch.no_grad(), model_eval(self.model):
            chunks = [self.model(windows[s : s + self.batch_size]) for s in range(0, len(windows), self.batch_size)]
        return torch.cat(chunks)

    def _scores(self, outputs: Tensor, target: OutputTarget) -> Tensor:
        """``(P,)`` float32 window scores of one image: the target on the (softmax) outputs, clipped at 0."""
        with torch.no_grad():
            values = torch.softmax(outputs, dim=-1) if self.use_softmax_scores else outputs
            scores = torch.as_tensor(target(values), device=outputs.device)
        return scores.float().reshape(-1).clamp(min=0)

    def _selection(self, outputs: Tensor, targets: list[OutputTarget]) -> tuple[list[int], Tensor]:
        """The kept windows (flat indices, best last per image) and their weights ``score / best score``."""
        kept, weights = [], []
        count = outputs.shape[1]
        for i, target in enumerate(targets):
            scores = self._scores(outputs[i], target).cpu().numpy()
            order = np.argsort(scores)[int(count * self.pre_filter_ratio) :]  # NumPy's order: ties as upstream
            best = scores[order[-1]]
            weights.append(scores[order] / best if best > 0 else np.ones(len(order), np.float32))
            kept += (order + i * count).tolist()
        return kept, torch.as_tensor(np.concatenate(weights))

    def _fuse(self, cams: Tensor, kept: list[int], count: int, plan: _Plan, shape: tuple[int, int, int]) -> Tensor:
        """Paste the weighted window maps ``(Q, w, w)`` back, resized to the image, and fuse them: ``(N, H, W)``."""
        _, height, width = shape
        device, w = cams.device, plan.window
        rows = [_interpolation_matrix(h, height, device) for h, _ in plan.sizes]
        cols = [_interpolation_matrix(wd, width, device) for _, wd in plan.sizes]
        total = cams.new_zeros(shape)
        counts = cams.new_zeros(shape)
        images = torch.as_tensor([k // count for k in kept], device=device)
        for start in range(0, len(kept), self.batch_size):
            spots = [plan.windows[k % count] for k in kept[start : start + self.batch_size]]
            left = torch.stack([rows[s][:, y1 : y1 + w] for s, _, y1 in spots])  # (B, H, w)
            right = torch.stack([cols[s][:, x1 : x1 + w] for s, x1, _ in spots])  # (B, W, w)
            pasted = left @ cams[start : start + len(spots)] @ right.transpose(1, 2)
            index = images[start : start + len(spots)]
            if self.pool == "max":
                total.scatter_reduce_(0, index.view(-1, 1, 1).expand_as(pasted), pasted, "amax")
            else:
                above = pasted > self.theta
                total.index_add_(0, index, torch.where(above, pasted, 0.0))
                counts.index_add_(0, index, above.float())
        if self.pool == "max":
            return total
        return torch.where(counts > 0, total / counts.clamp(min=1), 0.0)


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")
