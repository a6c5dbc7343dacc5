"""``MarginSamplingDropout``: MC-dropout margin sampling, drop-in for DISTIL's class of the same name."""

from __future__ import annotations

from typing import ClassVar

from .score_streaming_strategy import ScoreStreamingStrategy

__all__ = ["MarginSamplingDropout"]


class MarginSamplingDropout(ScoreStreamingStrategy):
    """Selects the pool samples with the highest negated margin between the two most probable classes.

    With p̄ the mean over ``n_drop`` MC-dropout passes of softmax(logits), the score is p̄₍₂₎ − p̄₍₁₎ (second
    largest minus largest probability): the smallest margin is selected first. Needs ``nclasses >= 2``.

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`.Strategy`.
        args: see :class:`.Strategy`; this class also reads ``n_drop``
            (int, default 10): MC passes per sample, and ``stream_buffer_size`` (int, default 10000).
    """

    mc_score: ClassVar[str | None] = "margin"
