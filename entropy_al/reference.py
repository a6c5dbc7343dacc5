"""Pure-PyTorch implementation of every op: the test oracle and the fallback backend.

The functions here compute exactly what the compiled kernels compute, with plain torch ops, chunked over the
sample dimension so that peak memory stays bounded for any pool size. Tests call them in float64; the fallback
backend calls them in float32.
"""

from __future__ import annotations

import math
import struct

import torch

from .keys import MAX_POOL_INDEX, decode_keys, encode_keys
from .scores import SCORES

__all__ = [
    "SCORES",
    "mc_scores_reference",
    "encode_keys",
    "decode_keys",
    "topk_update_reference",
    "MAX_POOL_INDEX",
    "philox4x32_10_reference",
    "keyed_dropout_reference",
    "ACQUISITIONS",
    "deterministic_log",
    "acquisition_noise_reference",
    "perturb_scores_reference",
]

# Elements of one chunk of the [K, n, C] stack: bounds the temporaries of the reference to a few tens of MB.
_CHUNK_ELEMENTS = 1 << 22

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
    softmax(logits[k]); the scores are those of :mod:`entropy_al.scores`, with 0·log 0 = 0.
    """
    K, N, C = logits.shape
    out = torch.empty(N, dtype=compute_dtype, device=logits.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, K * C))
    for start in range(0, N, chunk):
        z = logits[:, start : start + chunk]
        if z.dtype == torch.float64 and compute_dtype != torch.float64:
            # As the kernels do: shift by the row max in float64 first, so near-tied huge logits keep their gap.
            z = z - z.amax(dim=2, keepdim=True)
        z = z.to(compute_dtype)
        out[start : start + chunk] = _scores_of_chunk(z, score)
    return out


def topk_update_reference(
    scores: torch.Tensor,
    state: torch.Tensor,
    offset: int,
    k: int,
    acquisition: str = "top",
    coldness: float = 1.0,
    acquisition_seed: int = 0,
) -> torch.Tensor:
    """Merges a block of scores (pool indices ``offset…``) into ``state`` (keys, descending); keeps the best k
    of the scores, perturbed by :func:`perturb_scores_reference` unless ``acquisition`` is ``"top"``."""
    ranked = perturb_scores_reference(scores, offset, acquisition, coldness, acquisition_seed)
    merged = torch.cat([state, encode_keys(ranked, offset)])
    keep = min(k, merged.numel())
    return merged.topk(keep, sorted=True).values


# ---- keyed dropout (as csrc/keyed_dropout_math.h) ------------------------------------------------------------------
# Philox4x32-10 on int64 tensors holding 32-bit words: every product is split so that nothing exceeds 2^50.

_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_UNIFORM_BITS = 24
# Groups (Philox calls) per chunk of the reference: bounds its int64 temporaries to a few tens of MB.
_PHILOX_CHUNK = 1 << 19


def _mul_hi_lo(multiplier: int, word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``multiplier * word`` (both < 2^32) without overflowing int64."""
    low_part = multiplier * (word & 0xFFFF)  # < 2^48
    sum_ = (low_part >> 16) + multiplier * (word >> 16)  # product = sum_ * 2^16 + (low_part & 0xFFFF)
    return sum_ >> 16, ((sum_ & 0xFFFF) << 16) | (low_part & 0xFFFF)


def philox4x32_10_reference(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: int, k1: int
) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of broadcastable int64 counter words (values in [0, 2^32)) under the key (k0, k1); returns
    the four output words as int64 tensors, exactly as ``philox4x32_10`` in csrc/keyed_dropout_math.h."""
    for _ in range(10):
        hi0, lo0 = _mul_hi_lo(_PHILOX_M0, c0)
        hi1, lo1 = _mul_hi_lo(_PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _PHILOX_W0) & _LOW_MASK
        k1 = (k1 + _PHILOX_W1) & _LOW_MASK
    return c0, c1, c2, c3


def _round_to_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _keep_mask(
    first_group: int, groups: int, seed: int, sample_ids: torch.Tensor, pass_ids: torch.Tensor, p: float
) -> torch.Tensor:
    """Keep flags ``[B, 4 * groups]`` of the elements 4 * first_group ... of every row."""
    device = sample_ids.device
    c0 = torch.arange(first_group, first_group + groups, dtype=torch.int64, device=device)
    c1 = (pass_ids & _LOW_MASK).unsqueeze(1)
    c2 = (sample_ids & _LOW_MASK).unsqueeze(1)
    c3 = ((sample_ids >> 32) & _LOW_MASK).unsqueeze(1)
    words = philox4x32_10_reference(c0, c1, c2, c3, seed & _LOW_MASK, (seed >> 32) & _LOW_MASK)
    threshold = math.ceil(p * (1 << _UNIFORM_BITS))  # p * 2^24 is exact: keep iff uniform >= p exactly
    keep = torch.stack([(w >> (32 - _UNIFORM_BITS)) >= threshold for w in words], dim=2)  # [B, groups, 4]
    return keep.reshape(keep.shape[0], 4 * groups)


def keyed_dropout_reference(
    x: torch.Tensor, p: float, seed: int, sample_ids: torch.Tensor, pass_ids: torch.Tensor
) -> torch.Tensor:
    """keyed_dropout with torch ops: the fallback and the oracle (bit-identical to the kernels).

    Arguments are assumed valid (``entropy_al.keyed_dropout`` checks them). Element e of row b (row-major position
    in ``x[b]``) is kept iff the Philox4x32-10 word ``e % 4`` of key ``seed`` and counter
    ``(e // 4, pass_ids[b] mod 2^32, sample_ids[b] mod 2^32, sample_ids[b] >> 32 mod 2^32)``, shifted right by 8,
    is at least ``ceil(p * 2^24)``; kept elements are multiplied by ``1 / (1 - p)`` (float32 operands, float64
    for float64 ``x``), dropped ones by 0; one rounding to ``x.dtype``. Returns a contiguous tensor.
    """
    if p == 0:
        return x.clone(memory_format=torch.contiguous_format)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    if p == 1:
        scale = math.inf  # never used: nothing is kept
    elif compute == torch.float64:
        scale = 1.0 / (1.0 - p)
    else:  # 1.0f / float(1 - p): the float64 quotient of float32 operands, rounded once, is the float32 quotient
        scale = _round_to_float32(1.0 / _round_to_float32(1.0 - p))
    batch, per_sample = x.shape[0], math.prod(x.shape[1:])
    rows = x.reshape(batch, per_sample)
    factor_kept = torch.tensor(scale, dtype=compute, device=x.device)
    factor_dropped = torch.zeros((), dtype=compute, device=x.device)
    chunk = max(1, _PHILOX_CHUNK // max(1, batch)) * 4  # elements per row and chunk, whole groups
    seed &= (1 << 64) - 1
    pieces = []
    for start in range(0, per_sample, chunk):
        stop = min(start + chunk, per_sample)
        keep = _keep_mask(start // 4, (stop - start + 3) // 4, seed, sample_ids, pass_ids, p)[:, : stop - start]
        factor = torch.where(keep, factor_kept, factor_dropped)
        pieces.append((rows[:, start:stop].to(compute) * factor).to(x.dtype))
    if not pieces:  # no elements
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return torch.cat(pieces, dim=1).reshape(x.shape)


# ---- stochastic acquisition (csrc/acquisition_math.h) -----------------------------------------------------------
# float64 torch ops, each rounded once like the kernels' add_rn/mul_rn/div_rn, in the same order: the same bits.

ACQUISITIONS = ("top", "power", "softmax")
_ACQUISITION_KEY_TAG = 0x53544F43
_ACQUISITION_COUNTER_TAGS = (0x61637175, 0x69726521)
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD
_MANTISSA_MASK = (1 << 52) - 1
_LN2 = 0.6931471805599453
_ATANH_SERIES = tuple(1.0 / n for n in range(11, 1, -2))  # 1/11 ... 1/3, after the leading 1/13


def deterministic_log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of normal finite float64 ``x > 0``, bit for bit as ``deterministic_log`` in the kernels."""
    # bits - bits(sqrt(1/2)) + 0x3ff * 2^52 stays positive for x >= 2^-1021: no overflow, a plain shift.
    shifted = x.view(torch.int64) + ((0x3FF << 52) - _SQRT_HALF_BITS)
    exponent = (shifted >> 52) - 0x3FF
    m = ((shifted & _MANTISSA_MASK) + _SQRT_HALF_BITS).view(torch.float64)
    f = m - 1.0
    t = f / (f + 2.0)
    t2 = t * t
    p = torch.full_like(t, 1.0 / 13)
    for coefficient in _ATANH_SERIES:
        p = p * t2 + coefficient
    log_m = (t + (t * t2) * p) * 2.0
    return exponent.to(torch.float64) * _LN2 + log_m


def acquisition_noise_reference(indices: torch.Tensor, seed: int) -> torch.Tensor:
    """float64 Gumbel noise ``-log(-log u)`` of int64 pool indices ``>= 0`` under ``seed`` (any int; its 64 bits):
    ``u = (2m + 1) 2^-53`` with m 52 bits of the Philox4x32-10 words of counter ``(i // 2 low, i // 2 high, tags)``
    under key ``(seed low, seed high ^ tag)``; words 0, 1 for even i, 2, 3 for odd i."""
    seed &= (1 << 64) - 1
    pair = indices >> 1
    tag0, tag1 = (torch.full_like(pair, tag) for tag in _ACQUISITION_COUNTER_TAGS)
    key0, key1 = seed & _LOW_MASK, ((seed >> 32) & _LOW_MASK) ^ _ACQUISITION_KEY_TAG
    w0, w1, w2, w3 = philox4x32_10_reference(pair & _LOW_MASK, pair >> 32, tag0, tag1, key0, key1)
    odd = (indices & 1) == 1
    hi, lo = torch.where(odd, w2, w0), torch.where(odd, w3, w1)
    u = (((hi & 0xFFFFF) << 33) | (lo << 1) | 1).to(torch.float64) * 2.0**-53
    return -deterministic_log(-deterministic_log(u))


def perturb_scores_reference(
    scores: torch.Tensor, offset: int, acquisition: str, coldness: float, seed: int
) -> torch.Tensor:
    """The float32 scores the top-k ranks: the scores themselves for ``"top"``; ``coldness * log s + G`` for
    ``"power"`` (s <= 0 → -inf, +inf stays), ``coldness * s + G`` for ``"softmax"``; NaN stays NaN."""
    scores = scores.to(torch.float32)
    if acquisition == "top":
        return scores
    s = scores.to(torch.float64)
    index = torch.arange(offset, offset + s.numel(), dtype=torch.int64, device=s.device)
    noise = acquisition_noise_reference(index, seed)
    if acquisition == "power":
        positive_finite = (s > 0) & (s < math.inf)
        log_s = deterministic_log(torch.where(positive_finite, s, torch.ones_like(s)))
        outside = torch.where(s > 0, s, torch.full_like(s, -math.inf))
        key_score = torch.where(positive_finite, coldness * log_s + noise, outside)
    else:
        key_score = coldness * s + noise
    return torch.where(torch.isnan(scores), scores, key_score.to(torch.float32))
