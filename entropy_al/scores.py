"""The score registry: every MC-dropout score the ops compute, with the facts the layers above need.

One entry per score; the ops check ``score`` against it, the reference dispatches on it, the strategies name
their score from it and the tests parametrize over it. The kernels (csrc/mc_scores.h) hold the math.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCORES", "ScoreInfo", "SCORE_INFO", "check_score", "scores_for_classes"]


@dataclass(frozen=True)
class ScoreInfo:
    """What is known about one score.

    Attributes:
        name: the ``score`` argument of the ops.
        formula: what it computes from p̄, the mean over passes of softmax(logits); higher is more uncertain.
        min_classes: the fewest classes it is defined for.
        stochastic_only: whether it is 0 for a deterministic model (every pass the same), as BALD is.
    """

    name: str
    formula: str
    min_classes: int = 1
    stochastic_only: bool = False


SCORE_INFO: dict[str, ScoreInfo] = {
    info.name: info
    for info in (
        ScoreInfo("entropy", "H(p̄) = −Σ_c p̄_c log p̄_c"),
        ScoreInfo("bald", "H(p̄) − mean_k H(p_k)", stochastic_only=True),
        ScoreInfo("margin", "p̄₍₂₎ − p̄₍₁₎", min_classes=2),
        ScoreInfo("least_confidence", "−max_c p̄_c"),
    )
}
SCORES: tuple[str, ...] = tuple(SCORE_INFO)


def check_score(op: str, score: object, num_classes: int | None = None) -> str:
    """``score`` if it names a registered score defined for ``num_classes`` classes, else a ``ValueError``."""
    if not isinstance(score, str) or score not in SCORE_INFO:
        names = ", ".join(repr(name) for name in SCORES)
        raise ValueError(f"{op}: expected `score` to be one of {names}, got {score!r}")
    minimum = SCORE_INFO[score].min_classes
    if num_classes is not None and num_classes < minimum:
        raise ValueError(f"{op}: score {score!r} needs C >= {minimum} classes, got C = {num_classes}")
    return score


def scores_for_classes(num_classes: int) -> list[str]:
    """The scores defined for ``num_classes`` classes."""
    return [name for name, info in SCORE_INFO.items() if num_classes >= info.min_classes]
