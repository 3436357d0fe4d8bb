"""``pytorch_grad_cam.score_cam``: :class:`ScoreCAM`."""

from .cams import ScoreCAM

__all__ = ["ScoreCAM"]
