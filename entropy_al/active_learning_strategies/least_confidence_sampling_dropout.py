"""``LeastConfidenceSamplingDropout``: MC-dropout least-confidence sampling, drop-in for DISTIL's class."""

from __future__ import annotations

from typing import ClassVar

from .score_streaming_strategy import ScoreStreamingStrategy

__all__ = ["LeastConfidenceSamplingDropout"]


class LeastConfidenceSamplingDropout(ScoreStreamingStrategy):
    """Selects the pool samples with the highest negated confidence of the most probable class.

    With p̄ the mean over ``n_drop`` MC-dropout passes of softmax(logits), the score is −max_c p̄_c: the least
    confident prediction is selected first.

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`.Strategy`.
        args: see :class:`.Strategy`; this class also reads ``n_drop``
            (int, default 10): MC passes per sample, and ``stream_buffer_size`` (int, default 10000).
    """

    mc_score: ClassVar[str | None] = "least_confidence"
