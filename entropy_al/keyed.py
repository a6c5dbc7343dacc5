"""Keyed dropout: masks that are a pure function of (seed, sample, pass, element), on whichever backend is active.

``keyed_dropout`` is the op; ``keyed_feature_dropout`` (whole channels, as ``nn.Dropout1d/2d/3d``) and
``keyed_alpha_dropout`` (``nn.AlphaDropout`` / ``nn.FeatureAlphaDropout``) are built on it. The same ids give the
same mask whatever the batch they sit in, its order, its size, the device or the dtype. See
:mod:`entropy_al.keyed_mc` for running a whole model with it.
"""

from __future__ import annotations

import math
import numbers

import torch

from . import reference
from ._extension import EXTENSION_LOADED, backend

__all__ = ["keyed_dropout", "keyed_feature_dropout", "keyed_alpha_dropout", "check_keyed_dropout"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_MAX_ELEMENTS_PER_SAMPLE = 1 << 34  # Philox counters hold the element group e // 4 in 32 bits
# nn.AlphaDropout's constant (SELU's alpha * scale), as ATen's _dropout_impl uses it.
_ALPHA = 1.7580993408473766


def _check_ids(x: torch.Tensor, ids: object, name: str) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64:
        got = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise TypeError(f"keyed_dropout: expected `{name}` to be an int64 tensor, got {got}")
    if ids.dim() != 1 or ids.shape[0] != x.shape[0]:
        raise ValueError(
            f"keyed_dropout: expected `{name}` of shape [B] = [{x.shape[0]}], one id per row of `x`, "
            f"got shape {list(ids.shape)}"
        )
    if ids.device != x.device:
        raise ValueError(f"keyed_dropout: expected `{name}` on {x.device} like `x`, got {ids.device}")


def _check_python_arguments(x: object, p: object, seed: object) -> None:
    """What the op's schema cannot check by name: a tensor ``x``, a real ``p`` (not a bool), a 64-bit ``seed``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"keyed_dropout: expected `x` to be a torch.Tensor, got {type(x).__name__}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real):  # numbers.Real: Python and numpy floats and ints
        raise TypeError(f"keyed_dropout: expected `p` to be a float in [0, 1], got {type(p).__name__} {p!r}")
    if _as_int(seed) is None or not -(1 << 63) <= _as_int(seed) < (1 << 64):
        raise ValueError(f"keyed_dropout: expected `seed` to be an int in [-2**63, 2**64), got {seed!r}")


def check_keyed_dropout(x: torch.Tensor, p: float, seed: int, sample_ids: torch.Tensor, pass_ids: torch.Tensor) -> None:
    """Every check of ``keyed_dropout``: the compiled kernels make the value checks themselves (same messages, in
    csrc/keyed_dropout.h); the fallback and the ops composed here make them with this."""
    _check_python_arguments(x, p, seed)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"keyed_dropout: expected `x` of dtype float32, float16, bfloat16 or float64, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"keyed_dropout: expected `x` of shape [B, ...] (samples first), got shape {list(x.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"keyed_dropout: expected `p` in [0, 1], got {p}")
    _check_ids(x, sample_ids, "sample_ids")
    _check_ids(x, pass_ids, "pass_ids")
    per_sample = math.prod(x.shape[1:])
    if per_sample > _MAX_ELEMENTS_PER_SAMPLE:
        raise ValueError(f"keyed_dropout: expected at most 2**34 elements per sample, got {per_sample}")


def _as_int(value: object) -> int | None:
    """A Python or numpy integer (not a bool, not a tensor) as a Python int; ``None`` for anything else."""
    if isinstance(value, (bool, torch.Tensor)) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _signed64(seed: int) -> int:
    """The int64 with the same 64 bits (the schema's `int`)."""
    seed = int(seed)
    return seed - (1 << 64) if seed >= (1 << 63) else seed


def _full_ids(x: torch.Tensor, ids: torch.Tensor | int, name: str = "pass_ids") -> torch.Tensor:
    number = _as_int(ids)
    if number is None:
        return ids
    if not -(1 << 63) <= number < (1 << 63):
        raise ValueError(
            f"keyed_dropout: expected `{name}` to be an int64 tensor or an int in [-2**63, 2**63), got {ids}"
        )
    return torch.full((x.shape[0],), number, dtype=torch.int64, device=x.device)


def keyed_dropout(
    x: torch.Tensor, p: float, seed: int, sample_ids: torch.Tensor, pass_ids: torch.Tensor | int
) -> torch.Tensor:
    """Dropout whose mask is a pure function of (seed, sample id, pass id, element position).

    Same distribution as ``nn.Dropout`` in train mode: each element is kept with probability ``1 - p`` and kept
    elements are multiplied by ``1 / (1 - p)`` (computed as nn.Dropout does: float32 operands, float64 for float64
    ``x``), dropped ones by 0 (so NaN/inf inputs give NaN, as in nn.Dropout). ``p = 0`` returns a copy of ``x``,
    ``p = 1`` returns ``x * 0``. float16/bfloat16 compute in float32 and round once.

    Element ``e`` of row ``b`` (its row-major position in ``x[b]``, whatever ``x``'s strides) is kept iff
    ``uniform >= p``, with ``uniform = (word >> 8) / 2**24`` and ``word`` the 32-bit output ``e % 4`` of
    Philox4x32-10 under key ``seed`` (two 32-bit halves) and counter
    ``(e // 4, pass_ids[b] mod 2**32, sample_ids[b] low 32 bits, sample_ids[b] high 32 bits)``. So the mask of a
    row depends on its ids only: not on the batch size, the row's position, the device or the dtype.

    Differentiable: the gradient is ``grad * mask / (1 - p)`` (the op applied to ``grad``).

    Args:
        x: ``[B, ...]`` float32, float16, bfloat16 or float64, samples first; any trailing shape and strides;
            CPU or CUDA.
        p: drop probability in ``[0, 1]``.
        seed: any int in ``[-2**63, 2**64)``; only its 64 bits matter.
        sample_ids: int64 ``[B]`` on ``x``'s device: the global id (pool index) of each row's sample.
        pass_ids: int64 ``[B]`` on ``x``'s device (or one int for every row): the MC pass of each row; only the
            low 32 bits are used.

    Returns:
        A new contiguous tensor shaped and typed like ``x``.
    """
    pass_ids = _full_ids(x, pass_ids) if isinstance(x, torch.Tensor) else pass_ids
    _check_python_arguments(x, p, seed)
    # Ids on another device than x would be dispatched by their device, not x's: checked before dispatch too.
    mixed = any(isinstance(ids, torch.Tensor) and ids.device != x.device for ids in (sample_ids, pass_ids))
    typed = all(isinstance(ids, torch.Tensor) for ids in (sample_ids, pass_ids))
    if backend(x.device) == "torch" or mixed or not typed:
        check_keyed_dropout(x, p, seed, sample_ids, pass_ids)
    seed = _signed64(seed)
    if backend(x.device) == "torch":
        return reference.keyed_dropout_reference(x, float(p), seed, sample_ids, pass_ids)
    return torch.ops.entropy_al.keyed_dropout.default(x, float(p), seed, sample_ids, pass_ids)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _channel_shape(x: torch.Tensor, op: str) -> list[int]:
    if x.dim() < 2:
        raise ValueError(
            f"{op}: expected `x` of shape [B, C, ...] (samples, channels first), got shape {list(x.shape)}"
        )
    return [x.shape[0], x.shape[1]] + [1] * (x.dim() - 2)


def keyed_feature_dropout(
    x: torch.Tensor, p: float, seed: int, sample_ids: torch.Tensor, pass_ids: torch.Tensor | int
) -> torch.Tensor:
    """Channel dropout (``nn.Dropout1d/2d/3d``) keyed like :func:`keyed_dropout`: channel ``c`` of row ``b`` is
    kept iff element ``c`` of ``keyed_dropout`` of a ``[B, C]`` tensor with the same arguments is; the whole
    feature map ``x[b, c]`` is then multiplied by the same factor. ``x``: ``[B, C, *spatial]``."""
    pass_ids = _full_ids(x, pass_ids) if isinstance(x, torch.Tensor) else pass_ids
    check_keyed_dropout(x, p, seed, sample_ids, pass_ids)
    shape = _channel_shape(x, "keyed_feature_dropout")
    ones = torch.ones(shape[:2], dtype=_compute_dtype(x.dtype), device=x.device)
    factor = keyed_dropout(ones, p, seed, sample_ids, pass_ids)
    return (x * factor.view(shape)).to(x.dtype)


def keyed_alpha_dropout(
    x: torch.Tensor,
    p: float,
    seed: int,
    sample_ids: torch.Tensor,
    pass_ids: torch.Tensor | int,
    feature: bool = False,
) -> torch.Tensor:
    """``nn.AlphaDropout`` (``feature=True``: ``nn.FeatureAlphaDropout``, whole channels of ``[B, C, ...]``)
    with the keep decisions of :func:`keyed_dropout` (:func:`keyed_feature_dropout`), then ATen's arithmetic in
    ``x``'s dtype, step by step: dropped elements become ``-alpha * a + alpha * a * p`` and kept ones
    ``x * a + alpha * a * p``, ``a = 1 / sqrt((alpha^2 p + 1)(1 - p))``. ``p = 1`` gives ``x * 0`` as ATen does."""
    pass_ids = _full_ids(x, pass_ids) if isinstance(x, torch.Tensor) else pass_ids
    check_keyed_dropout(x, p, seed, sample_ids, pass_ids)
    shape = _channel_shape(x, "keyed_alpha_dropout") if feature else list(x.shape)
    if p == 0:  # as ATen: adding b = 0 would turn -0.0 into +0.0
        return x.clone(memory_format=torch.contiguous_format)
    if p == 1:
        return x * torch.zeros((), dtype=x.dtype, device=x.device)
    ones = torch.ones(shape[:2] if feature else shape, dtype=torch.float32, device=x.device)
    noise = (keyed_dropout(ones, p, seed, sample_ids, pass_ids) != 0).to(x.dtype).view(shape)
    a = 1.0 / math.sqrt((_ALPHA * _ALPHA * p + 1) * (1 - p))
    b = noise.add(-1).mul_(_ALPHA * a).add_(_ALPHA * a * p)
    noise.mul_(a)
    return (x * noise).add_(b)


if EXTENSION_LOADED:

    @torch.library.register_fake("entropy_al::keyed_dropout")
    def _keyed_dropout_fake(x, p, seed, sample_ids, pass_ids):
        torch._check(x.dim() >= 1, lambda: "keyed_dropout: expected `x` of shape [B, ...] (samples first)")
        torch._check(
            sample_ids.shape[0] == x.shape[0] and pass_ids.shape[0] == x.shape[0],
            lambda: "keyed_dropout: expected `sample_ids` and `pass_ids` of shape [B], one id per row of `x`",
        )
        return x.new_empty(x.shape)  # contiguous, as the kernels allocate

    def _keyed_dropout_setup_context(ctx, inputs, output):
        _, ctx.p, ctx.seed, sample_ids, pass_ids = inputs
        ctx.save_for_backward(sample_ids, pass_ids)

    def _keyed_dropout_backward(ctx, grad):
        # The op is linear in x with a mask that depends on the ids only: its gradient is the op itself.
        sample_ids, pass_ids = ctx.saved_tensors
        grad_x = torch.ops.entropy_al.keyed_dropout.default(grad, ctx.p, ctx.seed, sample_ids, pass_ids)
        return grad_x, None, None, None, None

    torch.library.register_autograd(
        "entropy_al::keyed_dropout", _keyed_dropout_backward, setup_context=_keyed_dropout_setup_context
    )
