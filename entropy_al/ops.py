"""The public ops: MC-dropout scores and the streaming top-k merge, on whichever backend is active.

Each function converts what the op schemas cannot check by name (non-tensors, numpy and bool "ints", a score that is
not a string), then calls the compiled op (``torch.ops.entropy_al.*``), which checks its arguments itself, or the
pure-PyTorch fallback after the same checks, with the same messages, here.
"""

from __future__ import annotations

import math
import numbers
import operator

import torch

from . import reference
from ._extension import EXTENSION_LOADED, backend
from .keys import MAX_POOL_INDEX
from .scores import check_score

__all__ = [
    "mc_scores",
    "topk_update",
    "mc_topk_update",
    "check_index",
    "check_logits",
    "check_score",
    "check_acquisition",
    "acquisition_numbers",
]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INT64_MAX = (1 << 63) - 1


def check_logits(op: str, logits: torch.Tensor) -> None:
    """The fallback's checks of ``logits`` (the compiled kernels make the same, with the same messages)."""
    if logits.dim() != 3:
        raise ValueError(f"{op}: expected `logits` of shape [K, N, C] (3 dims), got shape {list(logits.shape)}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: expected `logits` of dtype float32, float16, bfloat16 or float64, got {logits.dtype}")
    if logits.shape[0] < 1:
        raise ValueError(f"{op}: expected `logits` with K = size(0) >= 1 MC passes, got K = {logits.shape[0]}")
    if logits.shape[2] < 1:
        raise ValueError(f"{op}: expected `logits` with C = size(2) >= 1 classes, got C = {logits.shape[2]}")


def is_bool(value: object) -> bool:
    """A Python, numpy or 0-d tensor bool: all have ``__index__``, and all are almost surely a mistake for a count."""
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def check_index(op: str, name: str, value: object) -> int:
    """``value`` as a Python int in ``[0, 2**63)`` (the kernels' int64): Python and numpy integers (anything with
    ``__index__``), not bools."""
    try:
        number = None if is_bool(value) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 0:
        raise ValueError(f"{op}: expected `{name}` to be an int >= 0, got {value!r}")
    if number > INT64_MAX:
        raise ValueError(f"{op}: expected `{name}` to be an int >= 0 and below 2**63 (an int64), got {value!r}")
    return number


def _check_logits_type(op: str, logits: object) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{op}: expected `logits` to be a torch.Tensor, got {type(logits).__name__}")


def _check_state_type(op: str, state: object, device: torch.device) -> None:
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"{op}: expected `state` to be a 1-D int64 tensor of keys, got {state}")
    # A state on another device than the scores would be dispatched by its device: checked before dispatch.
    if state.device != device:
        raise ValueError(f"{op}: expected `state` on {device} like the scores, got {state.device}")


def _check_topk_state(op: str, state: torch.Tensor, offset: int, count: int) -> None:
    """The fallback's checks of the top-k state (the compiled kernels make the same, with the same messages)."""
    if state.dim() != 1 or state.dtype != torch.int64:
        raise TypeError(
            f"{op}: expected `state` to be a 1-D int64 tensor of keys, got {state.dtype} tensor of shape "
            f"{list(state.shape)}"
        )
    if offset + count - 1 > MAX_POOL_INDEX:
        raise ValueError(f"{op}: pool indices must be below 2**32, got a block ending at index {offset + count - 1}")


def acquisition_numbers(op: str, coldness: float, seed: int) -> tuple[float, int]:
    """``(coldness, seed)`` as the schema's float and signed 64-bit int: what the schema cannot check itself."""
    if isinstance(coldness, bool) or not isinstance(coldness, numbers.Real):
        raise ValueError(f"{op}: expected `coldness` to be a finite float > 0, got {coldness!r}")
    if isinstance(seed, (bool, torch.Tensor)) or not isinstance(seed, numbers.Integral):
        seed = None
    if seed is None or not -(1 << 63) <= int(seed) < (1 << 64):
        raise ValueError(f"{op}: expected `acquisition_seed` to be an int in [-2**63, 2**64), got {seed!r}")
    seed = int(seed)
    return float(coldness), seed - (1 << 64) if seed >= (1 << 63) else seed


def check_acquisition(op: str, acquisition: str, coldness: float, score: str | None = None) -> None:
    """The fallback's checks of the acquisition arguments (the compiled kernels make the same, same messages)."""
    if not isinstance(acquisition, str) or acquisition not in reference.ACQUISITIONS:
        raise ValueError(f"{op}: expected `acquisition` to be one of 'top', 'power', 'softmax', got {acquisition!r}")
    # A chained comparison, not math.isfinite, which torch.compile cannot trace (NaN fails both comparisons).
    if not 0 < coldness < math.inf:
        raise ValueError(f"{op}: expected `coldness` to be a finite float > 0, got {coldness!r}")
    if acquisition == "power" and score in ("margin", "least_confidence"):
        raise ValueError(
            f"{op}: acquisition 'power' needs scores >= 0, but score '{score}' is <= 0; use acquisition 'softmax'"
        )


def mc_scores(logits: torch.Tensor, score: str = "entropy") -> torch.Tensor:
    """Scores each sample of an MC-dropout logit stack.

    Args:
        logits: ``[K, N, C]`` logits of K stochastic passes over N samples with C classes; float32, float16,
            bfloat16 or float64; any strides; CPU or CUDA. ``-inf`` is a valid logit (probability 0); NaN or
            ``+inf`` anywhere in a sample make its score NaN.
        score: ``"entropy"`` H(p̄), ``"bald"`` H(p̄) − mean_k H(p_k), ``"margin"`` p̄₍₂₎ − p̄₍₁₎ (C ≥ 2) or
            ``"least_confidence"`` −max p̄, where p̄ is the mean over passes of softmax(logits); higher means
            more uncertain. Natural log, 0·log 0 = 0.

    Returns:
        float32 ``[N]`` on the device of ``logits``.
    """
    # What the op's schema cannot tell by name is checked on every backend; the rest by the kernels, or here for the
    # fallback with the kernels' messages.
    _check_logits_type("mc_scores", logits)
    if backend(logits.device) == "torch" or not isinstance(score, str):
        check_logits("mc_scores", logits)
        check_score("mc_scores", score, logits.shape[2])
    if backend(logits.device) == "torch":
        return reference.mc_scores_reference(logits, score, compute_dtype=torch.float32)
    return torch.ops.entropy_al.mc_scores.default(logits, score)


def topk_update(
    scores: torch.Tensor,
    state: torch.Tensor,
    offset: int,
    k: int,
    acquisition: str = "top",
    coldness: float = 1.0,
    acquisition_seed: int = 0,
) -> torch.Tensor:
    """Merges a block of scores into a running top-k and returns the new state.

    Args:
        scores: ``[B]`` floating scores of the pool samples ``offset … offset + B − 1``.
        state: ``[m]`` int64 keys (see :mod:`entropy_al.keys`), descending, on the device of
            ``scores``; start from an empty tensor.
        offset: pool index of ``scores[0]``.
        k: how many of the best samples to keep.
        acquisition: ``"top"`` ranks the scores. ``"power"`` ranks ``coldness · log s + G`` (s ≤ 0 below every
            positive score) and ``"softmax"`` ``coldness · s + G``, G standard Gumbel noise keyed on
            (``acquisition_seed``, pool index): the kept keys are then a sample without replacement in which each
            next pick has probability ∝ s^coldness or ∝ exp(coldness · s), whatever the blocks.
        coldness: β, a finite float > 0.
        acquisition_seed: any int in ``[-2**63, 2**64)``; only its 64 bits matter.

    Returns:
        ``[min(k, m + B)]`` int64 keys, descending: (perturbed) score descending, ties to the lower index, NaN
        last.
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"topk_update: expected `scores` to be a 1-D floating tensor, got {scores}")
    _check_state_type("topk_update", state, scores.device)
    k, offset = check_index("topk_update", "k", k), check_index("topk_update", "offset", offset)
    coldness, seed = acquisition_numbers("topk_update", coldness, acquisition_seed)
    if backend(scores.device) == "torch":
        if scores.dim() != 1 or not scores.is_floating_point():
            raise TypeError(
                f"topk_update: expected `scores` to be a 1-D floating tensor, got {scores.dtype} tensor of shape "
                f"{list(scores.shape)}"
            )
        _check_topk_state("topk_update", state, offset, scores.numel())
        check_acquisition("topk_update", acquisition, coldness)
        return reference.topk_update_reference(scores, state, offset, k, acquisition, coldness, seed)
    return torch.ops.entropy_al.topk_update.default(scores, state, offset, k, acquisition, coldness, seed)


def mc_topk_update(
    logits: torch.Tensor,
    state: torch.Tensor,
    offset: int,
    k: int,
    score: str = "entropy",
    acquisition: str = "top",
    coldness: float = 1.0,
    acquisition_seed: int = 0,
) -> torch.Tensor:
    """Scores a ``[K, B, C]`` logit block (as :func:`mc_scores`) and merges it into a running top-k in one call.

    Same ``state``, ``offset``, ``k``, acquisition arguments and result as :func:`topk_update`; the block's scores
    never leave the op. ``"power"`` needs scores >= 0: not margin or least_confidence (use ``"softmax"``).
    """
    _check_logits_type("mc_topk_update", logits)
    _check_state_type("mc_topk_update", state, logits.device)
    k, offset = check_index("mc_topk_update", "k", k), check_index("mc_topk_update", "offset", offset)
    coldness, seed = acquisition_numbers("mc_topk_update", coldness, acquisition_seed)
    if backend(logits.device) == "torch" or not isinstance(score, str):
        check_logits("mc_topk_update", logits)
        check_score("mc_topk_update", score, logits.shape[2])
    if backend(logits.device) == "torch":
        _check_topk_state("mc_topk_update", state, offset, logits.shape[1])
        check_acquisition("mc_topk_update", acquisition, coldness, score)
        scores = reference.mc_scores_reference(logits, score, compute_dtype=torch.float32)
        return reference.topk_update_reference(scores, state, offset, k, acquisition, coldness, seed)
    return torch.ops.entropy_al.mc_topk_update.default(logits, state, offset, k, score, acquisition, coldness, seed)


if EXTENSION_LOADED:

    @torch.library.register_fake("entropy_al::mc_scores")
    def _mc_scores_fake(logits, score):
        torch._check(logits.dim() == 3, lambda: "mc_scores: expected `logits` of shape [K, N, C]")
        return logits.new_empty(logits.shape[1], dtype=torch.float32)

    def _merged_size(state, count, k):
        return torch.sym_min(k, state.shape[0] + count)

    @torch.library.register_fake("entropy_al::topk_update")
    def _topk_update_fake(scores, state, offset, k, acquisition="top", coldness=1.0, acquisition_seed=0):
        return state.new_empty(_merged_size(state, scores.shape[0], k))

    @torch.library.register_fake("entropy_al::mc_topk_update")
    def _mc_topk_update_fake(logits, state, offset, k, score, acquisition="top", coldness=1.0, acquisition_seed=0):
        return state.new_empty(_merged_size(state, logits.shape[1], k))
