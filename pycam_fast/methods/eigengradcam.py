"""Eigen-Grad-CAM (pytorch-grad-cam's definition): Eigen-CAM of the gradient-weighted activations."""

from __future__ import annotations

from .eigencam import projection_terms
from .extractor import CAMExtractor
from .spec import CamTerms, LayerInputs, MethodSpec, register_method

__all__ = ["EIGENGRADCAM", "EigenGradCAM"]


def _terms(layer: LayerInputs) -> CamTerms:
    return projection_terms(layer.grads * layer.activations, layer.options["sign"])  # type: ignore[operator]


EIGENGRADCAM = register_method(
    MethodSpec(
        name="EigenGradCAM",
        kind="gradient",
        terms=_terms,
        summary="L = ReLU(projection of the centred g * A on its first principal component)",
        options={"sign": "max"},
    )
)


class EigenGradCAM(CAMExtractor):
    r"""Eigen-Grad-CAM: ``L = ReLU(first principal component projection of g * A)``.

    Takes ``sign`` (see :func:`~.eigencam.principal_projection`) besides :class:`~.extractor.CAMExtractor`'s
    arguments.
    """

    spec = EIGENGRADCAM
