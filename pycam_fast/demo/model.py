"""The small CNN shipped with pycam_fast so that the demo shows meaningful CAMs offline.

Architecture (input ``(N, 3, 64, 64)``): three conv blocks, the last one at 16x16, then global average pooling
and one linear layer, i.e. the classic CAM architecture: the class score is a linear function of the spatial mean
of ``features.block3``'s output, so CAMs of that layer localise the object. The shipped weights were trained with
an extra loss term keeping the true class's CAM on the object mask (see :mod:`pycam_fast.demo.train`), so that the
maps' peaks sit on the object rather than on its outline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .shapes import NUM_CLASSES

__all__ = [
    "DEMO_FC_LAYER",
    "DEMO_TARGET_LAYER",
    "DEMO_WEIGHTS",
    "DemoCNN",
    "load_demo_model",
]

DEMO_TARGET_LAYER = "features.block3"
DEMO_FC_LAYER = "classifier"
DEMO_WEIGHTS = Path(__file__).with_name("demo_cnn.pt")


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    """3x3 conv (same padding) -> BatchNorm -> ReLU."""
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class DemoCNN(nn.Module):
    """Conv blocks -> ``(N, 64, 16, 16)`` feature map -> global average pool -> linear.

    ``features.block1``: stride-2 conv, 64 -> 32 px. ``features.block2``: conv + 2x2 max-pool, 32 -> 16 px.
    ``features.block3``: three convs at 16x16 (receptive field 33 px), the CAM target layer.

    Args:
        num_classes: number of output classes.
        widths: output channels of the first four convs (the fifth keeps the fourth's).

    """

    def __init__(self, num_classes: int = NUM_CLASSES, widths: tuple[int, int, int, int] = (16, 32, 48, 64)) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.features = nn.Sequential()
        self.features.add_module("block1", nn.Sequential(*_conv_bn_relu(3, w1, stride=2)))
        self.features.add_module("block2", nn.Sequential(*_conv_bn_relu(w1, w2), nn.MaxPool2d(2)))
        block3 = [*_conv_bn_relu(w2, w3), *_conv_bn_relu(w3, w4), *_conv_bn_relu(w4, w4)]
        self.features.add_module("block3", nn.Sequential(*block3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits.

        Args:
            x: ``(N, 3, 64, 64)`` images in ``[0, 1]`` (other sizes work; the CAM layer is ``H/4 x W/4``).

        Returns:
            ``(N, num_classes)`` logits.

        """
        return self.classifier(self.pool(self.features(x)).flatten(1))


def load_demo_model(weights: str | Path | None = None, device: str | torch.device = "cpu") -> DemoCNN:
    """Load the demo CNN with the shipped weights (no download), in eval mode.

    Args:
        weights: path of a ``state_dict``; default: ``demo_cnn.pt`` shipped next to this module.
        device: where to put the model.

    Returns:
        the :class:`DemoCNN`, in eval mode, parameters requiring grad (gradient-based CAMs need them).

    Raises:
        FileNotFoundError: if the weights file is missing.

    """
    path = Path(weights) if weights is not None else DEMO_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"demo weights not found at {path}; run `python -m pycam_fast.demo.train`")
    model = DemoCNN()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()
