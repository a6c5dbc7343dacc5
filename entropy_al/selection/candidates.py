"""The candidate set of BatchBALD: the best ``m`` pool samples by a score, with their log-probabilities.

The ranking is the library's streaming top-k (``entropy_al.ops.topk_update``: score descending, ties to the lower
pool index, NaN last). Beside its int64 keys the keeper holds one ``[K, C]`` row of log-probabilities per kept
sample in a store of ``m`` slots: a block's survivors take the slots of the samples they evict, so an update
writes O(block · K · C) and never copies the store, memory is O(m · K · C), and nothing waits on the device.
"""

from __future__ import annotations

import torch

from .. import ops, reference

__all__ = ["CandidateKeeper"]


class CandidateKeeper:
    """Keeps the ``m`` best samples of a pool seen in blocks, with their log-probabilities.

    Args:
        m: how many samples to keep (``>= 0``).
        device: where the state and the store live; blocks passed in must be on it.
        dtype: the floating dtype the log-probabilities are stored in.
    """

    def __init__(self, m: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        self.m = ops.check_index("CandidateKeeper", "m", m)
        self.device = torch.device(device if device is not None else "cpu")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"CandidateKeeper: expected `dtype` to be a floating torch dtype, got {dtype!r}")
        self.dtype = dtype
        self.keys = torch.empty(0, dtype=torch.int64, device=self.device)  # descending, as topk_update keeps them
        self.slots = torch.empty(0, dtype=torch.int64, device=self.device)  # store row of each key
        self.store: torch.Tensor | None = None  # [capacity + 1, K, C]; the last row takes discarded writes
        self.seen = 0

    def update(self, scores: torch.Tensor, log_probs: torch.Tensor, offset: int) -> None:
        """Merges pool samples ``offset … offset + B − 1``: their ``[B]`` scores and ``[B, K, C]`` log-probs."""
        if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 3 or not log_probs.is_floating_point():
            got = (
                f"{log_probs.dtype} of shape {list(log_probs.shape)}"
                if isinstance(log_probs, torch.Tensor)
                else log_probs
            )
            raise ValueError(f"CandidateKeeper.update: expected `log_probs` of shape [B, K, C], floating, got {got}")
        if isinstance(scores, torch.Tensor) and scores.shape != log_probs.shape[:1]:
            raise ValueError(
                f"CandidateKeeper.update: expected `scores` of shape [{log_probs.shape[0]}] like `log_probs`, got "
                f"{list(scores.shape)}"
            )
        if log_probs.device != self.device:
            raise ValueError(f"CandidateKeeper.update: expected `log_probs` on {self.device}, got {log_probs.device}")
        if self.store is not None and log_probs.shape[1:] != self.store.shape[1:]:
            raise ValueError(
                f"CandidateKeeper.update: expected `log_probs` of shape [B, {', '.join(map(str, self.store.shape[1:]))}]"
                f" like the earlier blocks, got {list(log_probs.shape)}"
            )
        keys = ops.topk_update(scores, self.keys, offset, self.m)
        self._store_survivors(keys, log_probs, offset)
        self.seen += log_probs.shape[0]

    def update_logits(self, logits: torch.Tensor, offset: int, score: str = "bald") -> None:
        """Scores a ``[K, B, C]`` logit block with ``score`` (as :func:`entropy_al.mc_scores`) and merges it with
        its log-softmax."""
        ops.check_logits("CandidateKeeper.update_logits", logits)
        scores = ops.mc_scores(logits, score)
        log_probs = torch.log_softmax(
            logits, 2, dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32
        )
        self.update(scores, log_probs.transpose(0, 1), offset)

    def _store_survivors(self, keys: torch.Tensor, log_probs: torch.Tensor, offset: int) -> None:
        block, kept = log_probs.shape[0], keys.numel()
        if block == 0 or kept == 0:
            self.keys = keys
            return
        self._reserve(kept, log_probs.shape[1:])
        index = reference.decode_keys(keys)[1]
        from_block = (index >= offset) & (index < offset + block)
        # A kept old sample keeps its slot: its place among the old keys (descending) gives it.
        old = self.keys.numel()
        if old:
            place = old - 1 - torch.searchsorted(self.keys.flip(0), keys)
            old_slots = self.slots[place.clamp(0, old - 1)]
        else:
            old_slots = torch.zeros_like(keys)
        # The slots 0 … kept−1 not held by a kept old sample, lowest first, go to the block's survivors in order.
        held = torch.zeros(kept + 1, dtype=torch.int8, device=self.device)
        held[torch.where(from_block, kept, old_slots)] = 1
        free = torch.sort(held[:kept], stable=True).indices
        rank = torch.cumsum(from_block, 0) - 1
        slots = torch.where(from_block, free[rank.clamp(0, kept - 1)], old_slots)
        # Scatter the block's rows into their slots; the rows that did not survive land on the discard row.
        discard = self.store.shape[0] - 1
        destination = torch.full((block + 1,), discard, dtype=torch.int64, device=self.device)
        destination[torch.where(from_block, index - offset, block)] = torch.where(from_block, slots, discard)
        self.store.index_copy_(0, destination[:block], log_probs.to(self.dtype))
        self.keys, self.slots = keys, slots

    def _reserve(self, kept: int, row_shape: torch.Size) -> None:
        if self.store is not None and self.store.shape[0] - 1 >= kept:
            return
        capacity = kept if self.store is None else min(self.m, max(kept, 2 * (self.store.shape[0] - 1)))
        store = torch.empty((capacity + 1, *row_shape), dtype=self.dtype, device=self.device)
        if self.store is not None:
            store[: self.store.shape[0] - 1] = self.store[:-1]
        self.store = store

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int64 ``[n]`` pool indices, ``[n, K, C]`` log-probabilities) of the best ``n = min(m, seen)`` samples,
        best first."""
        index = reference.decode_keys(self.keys)[1]
        if self.store is None:
            return index, torch.empty(0, 0, 0, dtype=self.dtype, device=self.device)
        return index, self.store[self.slots]

    @property
    def scores(self) -> torch.Tensor:
        """float32 scores of the kept samples, best first (the last is a bound on every score left out)."""
        return reference.decode_keys(self.keys)[0]
