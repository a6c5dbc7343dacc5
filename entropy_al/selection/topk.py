"""Streaming block top-k: the best k (score, pool index) pairs of a pool scored block by block.

The state is one int64 key per kept sample (:mod:`entropy_al.keys`: order-preserving score bits over the inverted
pool index), kept on the device and sorted descending. Memory is O(k + block); ``update`` never synchronizes with the host.
Scores that float32 would round (float64, integers) switch the state to exact 64-bit keys (see :class:`StreamingTopK`).
"""

from __future__ import annotations

import torch

from .. import ops
from ..keys import decode_keys, decode_wide_bits, encode_indexed_keys, wide_ordered_bits

__all__ = ["StreamingTopK"]


class StreamingTopK:
    """Keeps the best ``k`` samples of a pool seen in blocks, in the selection order.

    Order: score descending, ties to the lower pool index, NaN below every number (a NaN is kept only when fewer
    than ``k`` numbers were seen). The result equals ``torch.sort(all_scores, descending=True, stable=True)``
    (NaN mapped below ``-inf``) truncated to ``k``, whatever the blocks and their order.

    With ``acquisition`` ``"power"`` or ``"softmax"`` the kept samples are instead a sample without replacement
    (each next pick ∝ s^coldness or ∝ exp(coldness · s)) in the sampling order, the same for a given
    ``acquisition_seed`` whatever the blocks; ``values`` are then the perturbed scores (see ``ops.topk_update``).

    Scores may be any real dtype. float16, bfloat16 and float32 scores use the compiled ops' int64 keys; float64 or
    integer scores (for ``"top"``) switch the state to exact 64-bit keys, merged by a stable sort on the device:
    integer blocks are ranked as int64, and once any floating block meets a float64 or integer one, all scores are
    ranked as float64 (exact for float32 and float64; integers beyond 2**53 may then tie). ``values`` then have that
    dtype. The perturbed acquisitions always rank float32 scores.

    Args:
        k: how many samples to keep (``>= 0``).
        device: where the state lives; scores and logits passed in must be on it.
        acquisition: ``"top"`` (default), ``"power"`` or ``"softmax"``.
        coldness: β, a finite float > 0.
        acquisition_seed: any int in ``[-2**63, 2**64)``.
    """

    def __init__(
        self,
        k: int,
        device: torch.device | str | None = None,
        acquisition: str = "top",
        coldness: float = 1.0,
        acquisition_seed: int = 0,
    ):
        self.k = ops.check_index("StreamingTopK", "k", k)
        self.coldness, self.acquisition_seed = ops.acquisition_numbers("StreamingTopK", coldness, acquisition_seed)
        ops.check_acquisition("StreamingTopK", acquisition, self.coldness)
        self.acquisition = acquisition
        try:
            self.device = torch.device(device if device is not None else "cpu")
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(
                f"StreamingTopK: expected `device` to be a torch device such as 'cpu' or 'cuda', got {device!r}"
            ) from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"StreamingTopK: expected `device` to be a device this process can use, got {device!r}, but "
                + (
                    "this torch was built without CUDA"
                    if not torch.backends.cuda.is_built()
                    else "no CUDA device is visible"
                )
            )
        self.state = torch.empty(0, dtype=torch.int64, device=self.device)
        self.seen = 0
        # Exact 64-bit state (None until a float64 or integer block arrives): the dtype scores are ranked in, and
        # the kept (order-preserving bits, pool index) pairs, by bits descending, then index ascending.
        self.wide_dtype: torch.dtype | None = None
        self._wide_bits = self._wide_index = self.state

    def update(self, scores: torch.Tensor, offset: int) -> None:
        """Merges ``scores`` (``[B]``) of the pool samples ``offset … offset + B − 1``."""
        if isinstance(scores, torch.Tensor) and self._ranks_wide(scores):
            offset = ops.check_index("StreamingTopK.update", "offset", offset)
            indices = torch.arange(offset, offset + scores.numel(), dtype=torch.int64, device=scores.device)
            self._update_wide(scores, indices)
            return
        if isinstance(scores, torch.Tensor) and _is_integer(scores):  # a perturbed acquisition: float32 scores
            scores = scores.to(torch.float32)
        self.state = ops.topk_update(scores, self.state, offset, self.k, *self._acquisition_args)
        self.seen += scores.numel()

    def update_logits(self, logits: torch.Tensor, offset: int, score: str = "entropy") -> None:
        """Scores a ``[K, B, C]`` logit block with ``score`` and merges it, in one fused op."""
        if self.wide_dtype is not None:
            self.update(ops.mc_scores(logits, score), offset)
            return
        self.state = ops.mc_topk_update(logits, self.state, offset, self.k, score, *self._acquisition_args)
        self.seen += logits.shape[1]

    def _ranks_wide(self, scores: torch.Tensor) -> bool:
        if self.acquisition != "top":
            return False
        return self.wide_dtype is not None or scores.dtype == torch.float64 or _is_integer(scores)

    def _update_wide(self, scores: torch.Tensor, indices: torch.Tensor) -> None:
        where = "StreamingTopK.update"
        if scores.dim() != 1 or scores.is_complex() or scores.dtype == torch.bool:
            raise TypeError(
                f"{where}: expected `scores` to be a 1-D real tensor, got {scores.dtype} tensor of shape "
                f"{list(scores.shape)}"
            )
        if scores.device != self.device:
            raise ValueError(f"{where}: expected `scores` on {self.device}, got {scores.device}")
        dtype = torch.int64 if _is_integer(scores) and self.wide_dtype != torch.float64 else torch.float64
        bits, index = self._wide_bits, self._wide_index
        if self.wide_dtype is None:
            # Promote what the float32-key state holds; integer blocks only join an empty one as int64.
            kept_scores, index = decode_keys(self.state)
            dtype = dtype if self.state.numel() == 0 else torch.float64
            bits = wide_ordered_bits(kept_scores.to(dtype))
        elif self.wide_dtype != dtype:  # an int64 state meets a float block: rank everything as float64
            bits = wide_ordered_bits(bits.to(torch.float64))
        bits = torch.cat([bits, wide_ordered_bits(scores.to(dtype))])
        index = torch.cat([index, indices])
        by_index = torch.sort(index).indices  # unique pool indices: the stable sort below then breaks ties by index
        bits, index = bits[by_index], index[by_index]
        order = torch.sort(bits, descending=True, stable=True).indices[: self.k]
        self._wide_bits, self._wide_index, self.wide_dtype = bits[order], index[order], dtype
        self.seen += scores.numel()

    @property
    def _acquisition_args(self) -> tuple[str, float, int]:
        return self.acquisition, self.coldness, self.acquisition_seed

    def update_indexed(self, scores: torch.Tensor, indices: torch.Tensor) -> None:
        """Merges ``scores`` (``[B]``) of the pool samples ``indices`` (int64 ``[B]``, any order, on the device)."""
        if self.acquisition == "top" and self._ranks_wide(scores):
            self._update_wide(scores, indices.to(torch.int64))
            return
        # Perturbed by pool index exactly as the fused ops would: the keys merge with theirs, whatever the order.
        ranked = ops.perturb_indexed_scores(scores, indices, *self._acquisition_args)
        merged = torch.cat([self.state, encode_indexed_keys(ranked, indices)])
        self.state = merged.topk(min(self.k, merged.numel()), sorted=True).values
        self.seen += indices.numel()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, int64 pool indices) of the best ``min(k, seen)`` samples, best first. The scores are float32, or
        :attr:`wide_dtype` (float64 or int64) once 64-bit scores were merged."""
        if self.wide_dtype is not None:
            return decode_wide_bits(self._wide_bits, self.wide_dtype), self._wide_index
        return decode_keys(self.state)

    def keys(self) -> torch.Tensor:
        """The kept samples as float32-score int64 keys (:mod:`entropy_al.keys`), descending, for merging top-k states
        of disjoint pool ranges. 64-bit scores are rounded to float32 here: their exact order holds within a state."""
        if self.wide_dtype is None:
            return self.state
        scores, indices = self.result()
        keys = encode_indexed_keys(scores.to(torch.float32), indices)
        return torch.sort(keys, descending=True, stable=True).values

    @property
    def values(self) -> torch.Tensor:
        return self.result()[0]

    @property
    def indices(self) -> torch.Tensor:
        return self.result()[1]


def _is_integer(scores: torch.Tensor) -> bool:
    """Integer scores (not bool, which stays an error): ranked exactly as int64."""
    return not scores.is_floating_point() and not scores.is_complex() and scores.dtype != torch.bool
