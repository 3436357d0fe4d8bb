"""Offline demo: synthetic shapes, a small pre-trained CNN and localisation metrics for CAMs.

Example:
    >>> from pycam_fast.demo import load_demo_model, make_batch, DEMO_TARGET_LAYER
    >>> model = load_demo_model()
    >>> images, labels, masks = make_batch(8, seed=0)

``python -m pycam_fast.demo.train`` retrains the shipped weights; ``python -m pycam_fast.demo.report`` prints the
localisation table of every CAM method.

"""

from .localization import (
    POINTING_TOLERANCE,
    LocalizationScores,
    energy_in_mask,
    evaluate_maps,
    evaluate_method,
    native_cam,
    pointing_game,
)
from .model import DEMO_FC_LAYER, DEMO_TARGET_LAYER, DEMO_WEIGHTS, DemoCNN, load_demo_model
from .shapes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES, ShapeBatch, generate, make_batch, make_image, masks_to_boxes

__all__ = [
    "CLASS_NAMES",
    "POINTING_TOLERANCE",
    "DEMO_FC_LAYER",
    "DEMO_TARGET_LAYER",
    "DEMO_WEIGHTS",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "DemoCNN",
    "LocalizationScores",
    "ShapeBatch",
    "energy_in_mask",
    "evaluate_maps",
    "evaluate_method",
    "generate",
    "load_demo_model",
    "make_batch",
    "make_image",
    "masks_to_boxes",
    "native_cam",
    "pointing_game",
]
