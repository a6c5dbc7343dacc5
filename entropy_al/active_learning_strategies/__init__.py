"""DISTIL-compatible active-learning strategies on entropy_al's fused MC-dropout scoring.

Module paths mirror DISTIL's (``distil.active_learning_strategies.<module>``), so that replacing ``distil`` with
``entropy_al`` in the import lines is the whole migration.
"""

from .batch_bald import BatchBALDDropout
from .bayesian_active_learning_disagreement_dropout import BALDDropout
from .entropy_sampling_dropout import EntropySamplingDropout
from .least_confidence_sampling_dropout import LeastConfidenceSamplingDropout
from .margin_sampling_dropout import MarginSamplingDropout
from .power_bald_dropout import PowerBALDDropout
from .power_entropy_sampling_dropout import PowerEntropySamplingDropout
from .score_streaming_strategy import ScoreStreamingStrategy
from .strategy import Strategy

__all__ = [
    "Strategy",
    "ScoreStreamingStrategy",
    "EntropySamplingDropout",
    "BALDDropout",
    "MarginSamplingDropout",
    "LeastConfidenceSamplingDropout",
    "BatchBALDDropout",
    "PowerEntropySamplingDropout",
    "PowerBALDDropout",
]
