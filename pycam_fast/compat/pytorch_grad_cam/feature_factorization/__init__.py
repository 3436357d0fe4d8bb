"""``pytorch_grad_cam.feature_factorization``: Deep Feature Factorization (see :mod:`.deep_feature_factorization`)."""

from .deep_feature_factorization import DeepFeatureFactorization, dff, nmf, run_dff_on_image

__all__ = ["DeepFeatureFactorization", "dff", "nmf", "run_dff_on_image"]
