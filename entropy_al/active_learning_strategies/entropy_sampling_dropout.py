"""``EntropySamplingDropout``: MC-dropout entropy sampling, drop-in for DISTIL's class of the same name."""

from __future__ import annotations

from typing import ClassVar

from .score_streaming_strategy import ScoreStreamingStrategy

__all__ = ["EntropySamplingDropout"]


class EntropySamplingDropout(ScoreStreamingStrategy):
    """Selects the pool samples with the highest predictive entropy.

    With p̄ the mean over ``n_drop`` MC-dropout passes of softmax(logits), the score is
    H(p̄) = −Σ_c p̄_c log p̄_c (natural log, 0·log 0 = 0, so a probability that underflows to 0 contributes
    nothing, where DISTIL's score becomes NaN and is selected first).

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`.Strategy`.
        args: see :class:`.Strategy`; this class also reads ``n_drop``
            (int, default 10): MC passes per sample, and ``stream_buffer_size`` (int, default 10000).
    """

    mc_score: ClassVar[str | None] = "entropy"
