"""Streaming block top-k: the best k (score, pool index) pairs of a pool scored block by block.

The state is one int64 key per kept sample (:mod:`entropy_al.keys`: order-preserving score bits over the inverted
pool index), kept on the device and sorted descending. Memory is O(k + block); ``update`` never synchronizes with the host.
"""

from __future__ import annotations

import torch

from .. import ops
from ..keys import decode_keys, encode_indexed_keys

__all__ = ["StreamingTopK"]


class StreamingTopK:
    """Keeps the best ``k`` samples of a pool seen in blocks, in the selection order.

    Order: score descending, ties to the lower pool index, NaN below every number (a NaN is kept only when fewer
    than ``k`` numbers were seen). The result equals ``torch.sort(all_scores, descending=True, stable=True)``
    (NaN mapped below ``-inf``) truncated to ``k``, whatever the blocks and their order.

    With ``acquisition`` ``"power"`` or ``"softmax"`` the kept samples are instead a sample without replacement
    (each next pick ∝ s^coldness or ∝ exp(coldness · s)) in the sampling order, the same for a given
    ``acquisition_seed`` whatever the blocks; ``values`` are then the perturbed scores (see ``ops.topk_update``).

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

    def update(self, scores: torch.Tensor, offset: int) -> None:
        """Merges ``scores`` (``[B]``) of the pool samples ``offset … offset + B − 1``."""
        self.state = ops.topk_update(scores, self.state, offset, self.k, *self._acquisition_args)
        self.seen += scores.numel()

    def update_logits(self, logits: torch.Tensor, offset: int, score: str = "entropy") -> None:
        """Scores a ``[K, B, C]`` logit block with ``score`` and merges it, in one fused op."""
        self.state = ops.mc_topk_update(logits, self.state, offset, self.k, score, *self._acquisition_args)
        self.seen += logits.shape[1]

    @property
    def _acquisition_args(self) -> tuple[str, float, int]:
        return self.acquisition, self.coldness, self.acquisition_seed

    def update_indexed(self, scores: torch.Tensor, indices: torch.Tensor) -> None:
        """Merges ``scores`` (``[B]``) of the pool samples ``indices`` (int64 ``[B]``, any order, on the device)."""
        if self.acquisition != "top":
            raise NotImplementedError("StreamingTopK.update_indexed: only acquisition 'top' is supported")
        merged = torch.cat([self.state, encode_indexed_keys(scores, indices)])
        self.state = merged.topk(min(self.k, merged.numel()), sorted=True).values
        self.seen += indices.numel()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 scores, int64 pool indices) of the best ``min(k, seen)`` samples, best first."""
        return decode_keys(self.state)

    @property
    def values(self) -> torch.Tensor:
        return self.result()[0]

    @property
    def indices(self) -> torch.Tensor:
        return self.result()[1]
