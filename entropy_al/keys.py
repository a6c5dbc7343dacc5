"""The key codec of the streaming top-k: one int64 key per (score, pool index), whose order is the selection order.

High 32 bits: the score's order-preserving float32 bits (NaN lowest); low 32 bits: the inverted pool index, so that
of two equal scores the lower index has the larger key. Keys are unique, so any correct top-k of them is the same
set in the same order on every backend. The compiled kernels (csrc/) build the same keys.

Scores that float32 would round (float64, 32- and 64-bit integers) get exact keys instead: pairs of int64 tensors
(:func:`wide_ordered_bits`, pool index), ranked by a stable lexicographic sort (:mod:`entropy_al.selection.topk`).
"""

from __future__ import annotations

import torch

__all__ = [
    "MAX_POOL_INDEX",
    "decode_keys",
    "decode_wide_bits",
    "encode_indexed_keys",
    "encode_keys",
    "wide_ordered_bits",
]

# Pool indices are stored in 32 bits of a 64-bit key.
MAX_POOL_INDEX = (1 << 32) - 1
_LOW_MASK = (1 << 32) - 1


def _ordered_bits(scores: torch.Tensor) -> torch.Tensor:
    """Maps float32 scores to int64 in [0, 2^32) with the same order; NaN → 0, below every number."""
    s = scores.to(torch.float32)
    s = torch.where(s == 0, torch.zeros_like(s), s)  # -0.0 and +0.0 tie, as in torch.sort
    bits = s.view(torch.int32).to(torch.int64) & _LOW_MASK
    negative = bits >= (1 << 31)
    u = torch.where(negative, _LOW_MASK - bits, bits + (1 << 31))
    return torch.where(torch.isnan(s), torch.zeros_like(u), u)


def encode_indexed_keys(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Keys of ``scores`` (``[B]``) for the pool indices ``indices`` (int64 ``[B]``, on the same device)."""
    return (_ordered_bits(scores) - (1 << 31)) * (1 << 32) + (_LOW_MASK - indices)


def encode_keys(scores: torch.Tensor, offset: int) -> torch.Tensor:
    """Keys of ``scores`` (``[B]``) for the consecutive pool indices ``offset … offset + B − 1``."""
    index = torch.arange(offset, offset + scores.numel(), device=scores.device, dtype=torch.int64)
    return encode_indexed_keys(scores, index)


def decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`encode_keys`: (float32 scores, int64 pool indices)."""
    high = torch.div(keys, 1 << 32, rounding_mode="floor")
    index = _LOW_MASK - (keys - high * (1 << 32))
    u = high + (1 << 31)
    bits = torch.where(u >= (1 << 31), u - (1 << 31), _LOW_MASK - u)
    bits = torch.where(bits >= (1 << 31), bits - (1 << 32), bits)  # to the int32 range before the cast
    scores = bits.to(torch.int32).view(torch.float32)
    return scores, index


# 64-bit scores (float64, and integers, which float32 would round) keep an exact key: a pair of int64 tensors,
# (order-preserving score bits, pool index), ordered lexicographically by (bits descending, index ascending).
_INT64_MIN = -(1 << 63)
_MAGNITUDE = (1 << 63) - 1


def wide_ordered_bits(scores: torch.Tensor) -> torch.Tensor:
    """int64 with the order of ``scores``: integers as they are; floats through float64, ``-0.0`` tied with ``+0.0``,
    NaN → ``-2**63``, below every number."""
    if not scores.is_floating_point():
        return scores.to(torch.int64)
    s = scores.to(torch.float64)
    s = torch.where(s == 0, torch.zeros_like(s), s)
    bits = s.view(torch.int64)
    key = torch.where(bits < 0, bits ^ _MAGNITUDE, bits)  # negative floats: larger magnitude, smaller key
    return torch.where(torch.isnan(s), torch.full_like(key, _INT64_MIN), key)


def decode_wide_bits(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`wide_ordered_bits`: int64 scores for ``dtype`` int64, else float64 (NaN for ``-2**63``)."""
    if dtype == torch.int64:
        return bits
    raw = torch.where(bits < 0, bits ^ _MAGNITUDE, bits)
    scores = raw.view(torch.float64)
    return torch.where(bits == _INT64_MIN, torch.full_like(scores, float("nan")), scores)
