"""Selection: the best ``k`` pool samples by score, streamed block by block, in one process or across ranks.

- :class:`StreamingTopK`: the device-side running top-k over (score, pool index) keys (:mod:`entropy_al.keys`).
- :class:`TopKCollector`: feeds MC logit blocks or score blocks into a ``StreamingTopK``, batching small blocks,
  and tracks broken model output (:class:`BadRowTracker`); :func:`apply_nan_policy` acts on what it found.
- :func:`select_across_ranks`: the same selection with the pool split across a torch.distributed group, given a
  callable that scores one shard. Nothing here knows about strategies or models.
- :class:`CandidateKeeper` and :func:`batchbald_select`: BatchBALD on a streamed candidate set (the best samples by
  BALD with their log-probabilities), then the greedy joint-entropy selection over the candidates.
- :class:`SelectionCheckpoint`: a streaming selection's state saved to a file and restored from it (resumable
  selection), checked against a fingerprint of the selection.
"""

from .bad_rows import BadRowTracker, apply_nan_policy
from .batchbald import batchbald_select
from .candidates import CandidateKeeper
from .checkpoint import SelectionCheckpoint, rank_checkpoint_path
from .collector import TopKCollector
from .distributed import ShardScorer, collective_device, distributed_group, select_across_ranks, shard_bounds
from .topk import StreamingTopK

__all__ = [
    "BadRowTracker",
    "CandidateKeeper",
    "SelectionCheckpoint",
    "ShardScorer",
    "StreamingTopK",
    "TopKCollector",
    "apply_nan_policy",
    "batchbald_select",
    "collective_device",
    "distributed_group",
    "rank_checkpoint_path",
    "select_across_ranks",
    "shard_bounds",
]
