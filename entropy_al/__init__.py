"""entropy_al: fast MC-dropout uncertainty sampling for active learning.

The compiled kernels load first (or the pure-PyTorch fallback takes over, see ``backend()``), then the API.
"""

from ._extension import backend, backend_info
from .active_learning_strategies import (
    BALDDropout,
    BatchBALDDropout,
    EntropySamplingDropout,
    LeastConfidenceSamplingDropout,
    MarginSamplingDropout,
    PowerBALDDropout,
    PowerEntropySamplingDropout,
    ScoreStreamingStrategy,
    Strategy,
)
from .keyed import keyed_alpha_dropout, keyed_dropout, keyed_feature_dropout
from .keyed_mc import KeyedMCDropout, UnkeyableDropoutError, keyed_mc_dropout
from .ops import mc_scores, mc_topk_update, topk_update
from .topk import StreamingTopK

__version__ = "0.1.0"

__all__ = [
    "backend",
    "backend_info",
    "mc_scores",
    "mc_topk_update",
    "topk_update",
    "keyed_dropout",
    "keyed_feature_dropout",
    "keyed_alpha_dropout",
    "keyed_mc_dropout",
    "KeyedMCDropout",
    "UnkeyableDropoutError",
    "StreamingTopK",
    "Strategy",
    "ScoreStreamingStrategy",
    "EntropySamplingDropout",
    "BALDDropout",
    "MarginSamplingDropout",
    "LeastConfidenceSamplingDropout",
    "BatchBALDDropout",
    "PowerEntropySamplingDropout",
    "PowerBALDDropout",
    "__version__",
]
