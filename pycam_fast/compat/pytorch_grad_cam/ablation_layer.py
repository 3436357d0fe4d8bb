"""pytorch-grad-cam's ablation layers: stand-ins for a target layer that replay its recorded output with channels cut.

:class:`~.ablation_cam.AblationCAM` swaps the target layer for one of these while it scores ablated copies. The
protocol (pytorch-grad-cam 1.5.7's, so its own layers and user subclasses work too):

- ``activations_to_be_ablated(activations, ratio) -> indices``: which channels of one image to ablate (all of them
  for ``ratio == 1``; otherwise the channels most and least inside an Eigen-CAM mask), also kept in ``self.indices``;
- ``set_next_batch(input_batch_index, activations, num_channels_to_ablate)``: the next chunk is that many copies of
  the image's recorded layer output;
- calling the layer returns those copies, copy ``i`` with channel ``self.indices[i]`` ablated: set to 0 when the
  output's minimum is 0 (ReLU-like), else to ``min - 1e7`` (the minimum is re-read after each copy, as in
  pytorch-grad-cam, so successive copies get ``min - 1e7``, ``min - 2e7``, ... in float arithmetic).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .utils.svd_on_activations import get_2d_projection

__all__ = ["AblationLayer", "AblationLayerFasterRCNN", "AblationLayerVit"]

#: how far below the minimum a non-ReLU channel is pushed
_ABLATION_VALUE = 1e7


def _ablate_rows(output: Tensor, indices: Any) -> Tensor:
    """Copy ``i`` of ``output`` (``(n, C, ...)``) gets channel ``indices[i]`` ablated, in place."""
    for i in range(output.shape[0]):
        low = torch.min(output)
        output[i, int(indices[i])] = 0 if low == 0 else low - _ABLATION_VALUE
    return output


class AblationLayer(nn.Module):
    """Replays the recorded output of a ``(N, C, H, W)`` layer with one channel ablated per copy."""

    def __init__(self) -> None:
        super().__init__()
        self.indices: np.ndarray = np.zeros(0, dtype=np.int32)
        self.activations: Any = None

    def objectiveness_mask_from_svd(self, activations: np.ndarray, threshold: float = 0.01) -> np.ndarray:
        """Binary ``(H, W)`` mask of one image's ``(C, H, W)`` activations: scaled ``|Eigen-CAM|`` > threshold."""
        projection = np.abs(get_2d_projection(np.asarray(activations)[None])[0])
        projection = projection - projection.min()
        return projection / projection.max() > threshold

    def activations_to_be_ablated(self, activations: np.ndarray, ratio_channels_to_ablate: float = 1.0) -> np.ndarray:
        """Channel indices to ablate for one image's ``(C, H, W)`` activations (stored in ``self.indices``).

        ``ratio == 1``: every channel. Otherwise each channel is scored by the share of its (min-shifted ``|A|``)
        mass inside :meth:`objectiveness_mask_from_svd`'s mask, and the ``int(C * ratio)`` highest- then lowest-
        scoring channels are returned.
        """
        activations = np.asarray(activations)
        if ratio_channels_to_ablate == 1.0:
            self.indices = np.arange(activations.shape[0], dtype=np.int32)
            return self.indices
        mask = self.objectiveness_mask_from_svd(activations)
        scores = []
        for channel in activations:
            magnitude = np.abs(channel)
            magnitude = magnitude - magnitude.min()
            magnitude = magnitude / np.max(magnitude)
            scores.append((mask * magnitude).sum() / magnitude.sum())
        order = list(np.argsort(np.float32(scores)))
        keep = int(len(order) * ratio_channels_to_ablate)
        self.indices = np.int32(order[::-1][:keep] + order[:keep])
        return self.indices

    def set_next_batch(self, input_batch_index: int, activations: Any, num_channels_to_ablate: int) -> None:
        """The next chunk: ``num_channels_to_ablate`` copies of image ``input_batch_index``'s recorded output."""
        one = activations[input_batch_index].clone().unsqueeze(0)
        self.activations = one.repeat(num_channels_to_ablate, *([1] * (one.ndim - 1)))

    def forward(self, x: Any = None) -> Any:
        """The chunk's copies, copy ``i`` with channel ``self.indices[i]`` ablated (``x`` is ignored)."""
        return _ablate_rows(self.activations, self.indices)


class AblationLayerVit(AblationLayer):
    """Ablation layer for transformer blocks: tokens ``(N, T, D)``, the channels are the last dim."""

    def forward(self, x: Any = None) -> Any:
        """The chunk's copies, copy ``i`` with feature ``self.indices[i]`` of every token ablated."""
        output = self.activations.transpose(1, self.activations.ndim - 1)
        return _ablate_rows(output, self.indices).transpose(output.ndim - 1, 1)


class AblationLayerFasterRCNN(AblationLayer):
    """Ablation layer for a torchvision FPN backbone (``OrderedDict`` of 5 levels of 256 channels).

    Channel ``k`` is channel ``k % 256`` of level ``k // 256`` (``"0"``-``"3"``, then ``"pool"``); ablated channels
    are set to -1000.
    """

    _LEVELS = ("0", "1", "2", "3", "pool")

    def set_next_batch(self, input_batch_index: int, activations: Any, num_channels_to_ablate: int) -> None:
        """``num_channels_to_ablate`` copies of each level of image ``input_batch_index``."""
        self.activations = OrderedDict(
            (key, value[input_batch_index].clone().unsqueeze(0).repeat(num_channels_to_ablate, 1, 1, 1))
            for key, value in activations.items()
        )

    def forward(self, x: Any = None) -> Any:
        """The feature dict, copy ``i`` with its channel ``self.indices[i]`` set to -1000."""
        result = self.activations
        for i in range(result["pool"].shape[0]):
            level, channel = divmod(int(self.indices[i]), 256)
            result[self._LEVELS[level]][i, channel] = -1000
        return result
