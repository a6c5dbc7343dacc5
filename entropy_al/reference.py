"""Pure-PyTorch implementation of every op: the test oracle and the fallback backend.

The functions here compute exactly what the compiled kernels compute, with plain torch ops, chunked over the
sample dimension so that peak memory stays bounded for any pool size. Tests call them in float64; the fallback
backend calls them in float32.
"""

from __future__ import annotations

import torch

__all__ = [
    "SCORES",
    "mc_scores_reference",
    "encode_keys",
    "decode_keys",
    "topk_update_reference",
    "MAX_POOL_INDEX",
]

SCORES = ("entropy", "bald", "margin", "least_confidence")

# Elements of one chunk of the [K, n, C] stack: bounds the temporaries of the reference to a few tens of MB.
_CHUNK_ELEMENTS = 1 << 22

# Pool indices are stored in 32 bits of a 64-bit key (see encode_keys).
MAX_POOL_INDEX = (1 << 32) - 1
_LOW_MASK = (1 << 32) - 1


def _scores_of_chunk(z: torch.Tensor, score: str) -> torch.Tensor:
    """Scores of one [K, n, C] chunk already in the compute dtype; returns [n]."""
    # NaN or +inf anywhere in a sample makes its score NaN; a row of only -inf has no softmax and gives NaN too.
    bad = (~(z < float("inf"))).any(dim=2).any(dim=0)
    log_p = torch.log_softmax(z, dim=2)
    p = log_p.exp()
    p_mean = p.mean(dim=0)
    if score == "entropy" or score == "bald":
        out = -torch.xlogy(p_mean, p_mean).sum(dim=1)
        if score == "bald":
            # 0 * log 0 = 0: a class whose probability underflowed contributes nothing.
            p_log_p = torch.where(p > 0, p * log_p, torch.zeros_like(p))
            out = out + p_log_p.sum(dim=2).mean(dim=0)
    elif score == "margin":
        top2 = p_mean.topk(2, dim=1).values
        out = top2[:, 1] - top2[:, 0]
    else:  # least_confidence
        out = -p_mean.max(dim=1).values
    return torch.where(bad, torch.full_like(out, float("nan")), out)


def mc_scores_reference(
    logits: torch.Tensor, score: str = "entropy", compute_dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """MC-dropout scores of a ``[K, N, C]`` logit stack with torch ops; returns ``[N]`` in ``compute_dtype``.

    Arguments are assumed valid (``entropy_al.ops.mc_scores`` checks them). p̄ is the mean over K of
    softmax(logits[k]); the scores are those of SPEC §1 with 0·log 0 = 0.
    """
    K, N, C = logits.shape
    out = torch.empty(N, dtype=compute_dtype, device=logits.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, K * C))
    for start in range(0, N, chunk):
        z = logits[:, start : start + chunk].to(compute_dtype)
        out[start : start + chunk] = _scores_of_chunk(z, score)
    return out


def _ordered_bits(scores: torch.Tensor) -> torch.Tensor:
    """Maps float32 scores to int64 in [0, 2^32) with the same order; NaN → 0, below every number."""
    s = scores.to(torch.float32)
    s = torch.where(s == 0, torch.zeros_like(s), s)  # -0.0 and +0.0 tie, as in torch.sort
    bits = s.view(torch.int32).to(torch.int64) & _LOW_MASK
    negative = bits >= (1 << 31)
    u = torch.where(negative, _LOW_MASK - bits, bits + (1 << 31))
    return torch.where(torch.isnan(s), torch.zeros_like(u), u)


def encode_keys(scores: torch.Tensor, offset: int) -> torch.Tensor:
    """One int64 key per score whose descending order is the selection order.

    High 32 bits: the score's order-preserving bits (NaN lowest); low 32 bits: the inverted pool index, so that
    of two equal scores the lower index has the larger key. Keys are unique, so any correct top-k of them is the
    same set in the same order on every backend.
    """
    index = torch.arange(offset, offset + scores.numel(), device=scores.device, dtype=torch.int64)
    return (_ordered_bits(scores) - (1 << 31)) * (1 << 32) + (_LOW_MASK - index)


def decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`encode_keys`: (float32 scores, int64 pool indices)."""
    high = torch.div(keys, 1 << 32, rounding_mode="floor")
    index = _LOW_MASK - (keys - high * (1 << 32))
    u = high + (1 << 31)
    bits = torch.where(u >= (1 << 31), u - (1 << 31), _LOW_MASK - u)
    bits = torch.where(bits >= (1 << 31), bits - (1 << 32), bits)  # to the int32 range before the cast
    scores = bits.to(torch.int32).view(torch.float32)
    return scores, index


def topk_update_reference(scores: torch.Tensor, state: torch.Tensor, offset: int, k: int) -> torch.Tensor:
    """Merges a block of scores (pool indices ``offset…``) into ``state`` (keys, descending); keeps the best k."""
    merged = torch.cat([state, encode_keys(scores, offset)])
    keep = min(k, merged.numel())
    return merged.topk(keep, sorted=True).values
