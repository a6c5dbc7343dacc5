"""Feeds a stream of MC logit blocks (or score blocks) into the device-side streaming top-k.

Logit blocks go to the fused score + merge op as they are, except that consecutive small blocks (DISTIL's default
batch size is 1) are concatenated first: the per-call cost of a merge is O(budget), so merging every tiny batch
would cost O(pool · budget). Pending logits are bounded by the stream buffer and by ``_MAX_PENDING_ELEMENTS``.
"""

from __future__ import annotations

import torch

from ..ops import mc_scores
from .bad_rows import BadRowTracker
from .topk import StreamingTopK

__all__ = ["TopKCollector"]

# 4 MiB of float32 logits: big enough that a merge is amortized, small next to any model's activations.
_MAX_PENDING_ELEMENTS = 1 << 20


class TopKCollector:
    """Keeps the best ``k`` pool samples seen so far, and which samples had broken model output.

    Args:
        k: budget (``>= 1``).
        score: ``"entropy"``, ``"bald"``, ``"margin"`` or ``"least_confidence"`` (see :func:`entropy_al.mc_scores`).
        max_pending_samples: at most this many samples' logits wait before a merge (the stream buffer size).
        acquisition, coldness, acquisition_seed: see :class:`StreamingTopK` (``"top"``: the best ``k``; ``"power"``
            or ``"softmax"``: a sample of ``k``, the same for a given seed whatever the blocks).
    """

    def __init__(
        self,
        k: int,
        score: str | None,
        max_pending_samples: int,
        acquisition: str = "top",
        coldness: float = 1.0,
        acquisition_seed: int = 0,
    ):
        self.k = k
        self.score = score
        self.max_pending_samples = max_pending_samples
        self.acquisition, self.coldness, self.acquisition_seed = acquisition, coldness, acquisition_seed
        self.tracker = BadRowTracker()
        self._topk: StreamingTopK | None = None
        self._pending: list[torch.Tensor] = []
        self._pending_offset = 0
        self._pending_samples = 0

    def _state(self, device: torch.device) -> StreamingTopK:
        if self._topk is None:
            # Created from the first block's device, so "cuda" and "cuda:0" never disagree.
            self._topk = StreamingTopK(self.k, device, self.acquisition, self.coldness, self.acquisition_seed)
        return self._topk

    def add_logits(self, offset: int | torch.Tensor, logits: torch.Tensor) -> None:
        """Adds the ``[K, B, C]`` logits of pool samples ``offset … offset + B − 1``, or of the pool indices
        ``offset`` (an int64 ``[B]`` tensor: a user batch sampler's batch, merged at once)."""
        if isinstance(offset, torch.Tensor):
            self._add_indexed_logits(offset, logits)
            return
        if self._pending and offset != self._pending_offset + self._pending_samples:
            self.flush()
        if not self._pending:
            self._pending_offset = offset
        self._pending.append(logits)
        self._pending_samples += logits.shape[1]
        per_sample = logits.shape[0] * logits.shape[2]
        limit = max(1, min(self.max_pending_samples, _MAX_PENDING_ELEMENTS // max(1, per_sample)))
        if self._pending_samples >= limit:
            self.flush()

    def flush(self) -> None:
        """Scores and merges the pending logits."""
        if not self._pending:
            return
        logits = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending, dim=1)
        self._pending, self._pending_samples = [], 0
        self.tracker.update_logits(logits, self._pending_offset)
        assert self.score is not None, "add_logits needs a score"
        self._state(logits.device).update_logits(logits, self._pending_offset, self.score)

    def _add_indexed_logits(self, indices: torch.Tensor, logits: torch.Tensor) -> None:
        # The fused op numbers a block's samples from an offset; these are scored, then keyed with their indices.
        self.flush()
        assert self.score is not None, "add_logits needs a score"
        indices = indices.to(logits.device)
        self.tracker.update_logits(logits, indices)
        self._state(logits.device).update_indexed(mc_scores(logits, self.score), indices)

    def add_scores(self, offset: int, scores: torch.Tensor) -> None:
        """Merges ready-made ``[B]`` scores of pool samples ``offset … offset + B − 1`` (NaN ranks last)."""
        self.flush()
        if self._topk is not None:
            scores = scores.to(self._topk.device)
        self.tracker.update_scores(scores, offset)
        self._state(scores.device).update(scores, offset)

    def snapshot(self) -> tuple[torch.Tensor, BadRowTracker]:
        """The kept keys (descending) and a copy of the broken-output tracker after merging what is pending, without
        a host synchronization or a copy: later updates replace the state's tensors instead of writing to them."""
        self.flush()
        keys = self._topk.state if self._topk is not None else torch.empty(0, dtype=torch.int64)
        return keys, self.tracker.snapshot()

    def restore(self, keys: torch.Tensor, tracker: BadRowTracker, seen: int) -> None:
        """Continues from a saved state: the int64 ``keys`` (descending, on the device the blocks will come from)
        and ``tracker`` of ``seen`` pool samples. Only on a fresh collector."""
        assert self._topk is None and not self._pending, "restore() needs a fresh collector"
        self._topk = StreamingTopK(self.k, keys.device)
        self._topk.state, self._topk.seen = keys, seen
        self.tracker = tracker

    def partial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept keys and the broken-output summary, without a host synchronization.

        Returns:
            ``(keys, summary)``: the int64 keys of the best ``min(k, seen)`` samples, descending (see
            :mod:`entropy_al.keys`; they carry pool indices, so a top-k over the concatenated keys
            of collectors fed disjoint pool ranges is the top-k of their union), and int64 ``[first broken pool
            index (-1 if none), broken count]``. On the CPU when nothing was added.
        """
        self.flush()
        if self._topk is None:
            keys = torch.empty(0, dtype=torch.int64)
            return keys, self.tracker.summary(keys.device)
        return self._topk.keys(), self.tracker.summary(self._topk.device)

    def result(self) -> tuple[list[int], int, int]:
        """Selected pool indices (best first), first broken pool index (-1 if none) and broken count.

        This is the only host synchronization of a selection.
        """
        self.flush()
        if self._topk is None:
            return [], -1, 0
        _, indices = self._topk.result()
        values = torch.cat([indices, self.tracker.summary(indices.device)]).tolist()
        return values[:-2], values[-2], values[-1]
