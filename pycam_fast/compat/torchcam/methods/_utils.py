"""TorchCAM 0.5.0's ``torchcam.methods._utils``: automatic target-layer resolution."""

from __future__ import annotations

from ....layers import locate_candidate_layer
from ....model_state import model_eval as _model_eval

__all__ = ["_model_eval", "locate_candidate_layer"]
