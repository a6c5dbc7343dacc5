"""Selection: the best ``k`` pool samples by score, streamed block by block, in one process or across ranks.

- :class:`StreamingTopK`: the device-side running top-k over (score, pool index) keys (:mod:`entropy_al.keys`).
- :class:`TopKCollector`: feeds MC logit blocks or score blocks into a ``StreamingTopK``, batching small blocks,
  and tracks broken model output (:class:`BadRowTracker`); :func:`apply_nan_policy` acts on what it found.
- :func:`select_across_ranks`: the same selection with the pool split across a torch.distributed group, given a
  callable that scores one shard. Nothing here knows about strategies or models.
- :class:`CandidateKeeper` and :func:`batchbald_select`: BatchBALD on a streamed candidate set (the best samples by
  BALD with their log-probabilities), then the greedy joint-entropy selection over the candidates.
"""

from .bad_rows import BadRowTracker, apply_nan_policy
from .batchbald import batchbald_select
from .candidates import CandidateKeeper
from .collector import TopKCollector
from .distributed import ShardScorer, collective_device, distributed_group, select_across_ranks, shard_bounds
from .topk import StreamingTopK

__all__ = [
    "BadRowTracker",
    "CandidateKeeper",
    "ShardScorer",
    "StreamingTopK",
    "TopKCollector",
    "apply_nan_policy",
    "batchbald_select",
    "collective_device",
    "distributed_group",
    "select_across_ranks",
    "shard_bounds",
]
