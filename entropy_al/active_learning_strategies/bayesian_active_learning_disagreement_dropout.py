"""``BALDDropout``: MC-dropout BALD (Bayesian active learning by disagreement), drop-in for DISTIL's class."""

from __future__ import annotations

from typing import ClassVar

from .score_streaming_strategy import ScoreStreamingStrategy

__all__ = ["BALDDropout"]


class BALDDropout(ScoreStreamingStrategy):
    """Selects the pool samples with the highest mutual information between the label and the model's weights.

    With p_k the softmax of MC pass k and p̄ their mean, the score is H(p̄) − mean_k H(p_k) (Houlsby et al.,
    2011; natural log, 0·log 0 = 0).

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`.Strategy`.
        args: see :class:`.Strategy`; this class also reads ``n_drop``
            (int, default 10): MC passes per sample, and ``stream_buffer_size`` (int, default 10000).
    """

    mc_score: ClassVar[str | None] = "bald"
