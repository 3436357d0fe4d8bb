"""Eigen-Grad-CAM (pytorch-grad-cam's definition): Eigen-CAM of the gradient-weighted activations."""

from __future__ import annotations

from .eigencam import define_projection_method
from .extractor import CAMExtractor

__all__ = ["EIGENGRADCAM", "EigenGradCAM"]


EIGENGRADCAM = define_projection_method(
    "EigenGradCAM",
    "gradient",
    lambda layer: layer.grads * layer.activations,  # type: ignore[operator]
    "L = ReLU(projection of the centred g * A on its first principal component)",
)


class EigenGradCAM(CAMExtractor):
    r"""Eigen-Grad-CAM: ``L = ReLU(first principal component projection of g * A)``.

    Takes ``sign`` (see :func:`~.eigencam.principal_projection`) besides :class:`~.extractor.CAMExtractor`'s
    arguments.
    """

    spec = EIGENGRADCAM
