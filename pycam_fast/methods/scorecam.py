"""Score-CAM ("Score-CAM: Score-Weighted Visual Explanations", Wang et al. 2020), and the family's extractor base.

Each channel's activation, min-max normalised and upsampled to the input size, masks the stored input;
``w_k = softmax_k(Y^c(M_k * X))`` over the channels (TorchCAM subtracts the score of the unmasked input first, which
cancels in the softmax, so it is not computed), ``L = ReLU(sum_k w_k A_k)``. The masked forwards are batched over
samples and channels (:func:`pycam_fast.forward.scoring.masked_scores`; constant channels give the all-zero input,
forwarded once; the opt-in ``top_k`` keeps each sample's ``top_k`` highest-variance channels, Faster Score-CAM).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..forward.perturbation import PerturbationScorer
from ..forward.scoring import ScorePlan, masked_scores
from ..targets import ClassIdx
from .extractor import BatchedExtractor
from .spec import LayerInputs, define_method, weighted_activations

__all__ = ["SCORECAM", "MaskedForwardExtractor", "ScoreCAM", "score_terms"]


@weighted_activations
def score_terms(layer: LayerInputs) -> Tensor:
    """The Score-CAM family's weights: the softmax over channels of their (averaged) masked scores."""
    return torch.softmax(layer.scores, dim=-1).to(layer.activations.dtype)  # type: ignore[arg-type]


SCORECAM = define_method(
    "ScoreCAM",
    "score",
    score_terms,
    "w_k = softmax_k(Y(minmax(U(A_k)) * x)); L = ReLU(sum_k w_k A_k)",
    options={"top_k": None},
    passes=lambda _act, _inputs, _options: [{}],
)


class MaskedForwardExtractor(BatchedExtractor):
    """The Score-CAM family's extractor: the stored input masked by each channel, ``batch_size`` per forward.

    Arguments as :class:`~.extractor.BatchedExtractor`.
    """

    def _channel_scores(
        self, activations: list[Tensor], class_idx: ClassIdx | None, scores: Any, targets: Any, options: dict[str, Any]
    ) -> list[tuple[Tensor | None, Tensor | None]]:
        results: list[tuple[Tensor | None, Tensor | None]] = []
        with self.scoring_forwards(targets, activations[0].shape[0]) as fns:
            network = self._masked_network()
            for act in activations:
                plan = ScorePlan(
                    passes=self.spec.passes(act, self._input, options),  # type: ignore[misc]
                    chunk=self.bs,
                    top_k=options["top_k"],
                    backend=self.backend,
                )
                results.append((masked_scores(network, act, self._input, class_idx, fns, plan), None))
        return results

    def _masked_network(self) -> Callable[[Tensor], Any]:
        """The network of the masked forwards: the private optimised copy, or the model where it has hooks of its own.

        The copy (BN folded, channels-last, kept in step with the model's parameters) computes the model's scores to
        float rounding, 1.2x-1.4x faster on CPU; see :class:`~pycam_fast.forward.perturbation.PerturbationScorer`.
        """
        if self._scorer is None or self._scorer.model is not self.model:
            self._scorer = PerturbationScorer(self.model)
        return self._scorer.forward_for(self._input)

    #: the masked forwards' scorer (it holds the private copy), made on first use
    _scorer: PerturbationScorer | None = None

    def _repr_fields(self) -> dict[str, Any]:
        return {"batch_size": self.bs, **_set_options(self.options)}


def _set_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


class ScoreCAM(MaskedForwardExtractor):
    r"""Score-CAM: ``w_k = softmax_k(Y^c(M_k * X))`` with ``M_k`` the normalised, upsampled ``A_k``.

    Arguments as :class:`MaskedForwardExtractor` (plus the opt-in ``top_k``).
    """

    spec = SCORECAM
