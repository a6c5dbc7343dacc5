"""Keyed MC dropout for a whole model: every dropout of a forward draws its mask from (seed, pool index, pass).

Usage (one forward per pass, or several passes stacked along dim 0 of one forward)::

    with keyed_mc_dropout(model, seed=0) as keyed:
        for k in range(n_drop):
            with keyed.batch(sample_ids, k):     # int64 [B] pool indices of the rows, pass number(s)
                logits = model(x)

A sample's masks, hence its logits, then depend on (seed, its pool index, the pass) only: not on the batch size,
the other samples of the batch, their order, stacking, the device or the dtype.

What is keyed:
- Modules ``nn.Dropout``, ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout`` (and subclasses
  that keep their ``forward``): their ``forward`` is replaced by an instance attribute for the duration of the
  ``with`` block, then removed, also on exceptions (their class ``forward`` is untouched). Their ``training``
  flag is honored as usual: a dropout module in eval mode stays the identity.
- Functional calls (``functional=True``, the default), while a ``keyed.batch(...)`` block is open:
  ``F.dropout``, ``F.dropout1d/2d/3d``, ``F.alpha_dropout``, ``F.feature_alpha_dropout`` and ``torch.dropout``,
  ``torch.feature_dropout``, ``torch.alpha_dropout``, ``torch.feature_alpha_dropout`` (and their in-place
  variants), through a ``TorchFunctionMode``; their ``training`` argument is honored (``F.dropout(x, p,
  training=self.training)`` in a module left in eval mode does nothing, as without keying).
- Each dropout call of a forward that runs in training mode (module or functional) is a *site*: sites are
  numbered in call order from 0 (or ``first_site``) in every ``batch`` block, and site ``i`` uses the seed
  :func:`site_seed` ``(seed, i)``, so two dropout layers (or one module called twice) get independent masks. A
  forward whose sequence of dropout calls depends on the batch's data would break the invariance. Element positions: row-major within the sample (channels for the
  channel dropouts).

What is refused with :class:`UnkeyableDropoutError` (never a silent fallback to torch's generator):
- an input whose dim 0 is not the batch's rows (``[T, B, H]`` sequence-first layouts), or an unbatched input
  to ``Dropout1d`` (2-D) / ``Dropout3d`` (4-D);
- dropout inside a torch function, where the mode cannot reach it (it only sees top-level calls):
  ``F.scaled_dot_product_attention`` with ``dropout_p > 0``, attention dropout of ``nn.MultiheadAttention``
  (``F.multi_head_attention_forward`` in training with ``dropout > 0``: set ``self_attn.dropout = 0`` in
  Transformer layers, whose other dropouts are modules and are keyed), the inter-layer dropout of
  ``nn.LSTM/GRU/RNN`` (``num_layers > 1``), ``torch.native_dropout``. These checks need ``functional=True``.
A patched module called outside a ``batch`` block raises ``RuntimeError``.

Not seen at all: masks made by hand (``torch.rand`` / ``torch.bernoulli``), TorchScript modules, dropout in C++
extensions; functional dropout outside a ``batch`` block or with ``functional=False``. A ``[T, B, H]`` input with
``T == B`` cannot be told from ``[B, T, H]``: use ``batch_first=True`` models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode, handle_torch_function, has_torch_function_unary

from .dropout_calls import (
    FUNCTIONAL,
    KEYED_MODULES,
    MODULE_KINDS,
    UnkeyableDropoutError,
    apply_kind,
    check_layout,
    site_seed,
    unkeyable_dropout,
)

__all__ = ["keyed_mc_dropout", "KeyedMCDropout", "UnkeyableDropoutError", "site_seed", "KEYED_MODULES"]


def _keyed_call(
    keyed: KeyedMCDropout, where: str, kind: str, x: torch.Tensor, p: float, training: bool, inplace: bool
) -> torch.Tensor:
    """A patched module's dropout. Under the functional mode the call goes through the mode once (which pops itself
    while its handler runs), so the keyed ops inside do not pay the mode on every tensor access."""
    if has_torch_function_unary(x):
        return handle_torch_function(_keyed_call, (x,), keyed, where, kind, x, p, training, inplace)
    return keyed._dropout(where, kind, x, p, training, inplace)


class _Batch:
    """The ids of the rows of the forwards in one ``batch`` block, and its site counter."""

    def __init__(self, sample_ids: torch.Tensor, pass_ids: torch.Tensor, first_site: int):
        self.rows = sample_ids.shape[0]
        self.site = first_site
        self._ids = {sample_ids.device: (sample_ids, pass_ids)}
        self._source = (sample_ids, pass_ids)

    def next_site(self) -> int:
        self.site += 1
        return self.site - 1

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._ids:  # the ids are copied once per device and batch
            self._ids[device] = tuple(ids.to(device, non_blocking=True) for ids in self._source)
        return self._ids[device]


class _FunctionalDropoutMode(TorchFunctionMode):
    """Routes functional dropout calls to the keyed ops while a ``batch`` block is open."""

    def __init__(self, keyed: KeyedMCDropout):
        super().__init__()
        self.keyed = keyed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        entry = FUNCTIONAL.get(func)
        if entry is not None:
            kind, bind, where = entry
            return self.keyed._dropout(where, kind, *bind(*args, **kwargs))
        reason = unkeyable_dropout(func, args, kwargs)
        if reason is not None:
            raise UnkeyableDropoutError(
                f"keyed_mc_dropout: {reason} cannot be keyed (it draws from torch's generator inside the call); "
                "set that dropout to 0, or run this model without keyed MC dropout"
            )
        return func(*args, **kwargs)


class KeyedMCDropout:
    """The handle of an active :func:`keyed_mc_dropout`: open :meth:`batch` around every forward.

    Attributes:
        seed: the run's seed.
        functional: whether functional dropout calls are keyed too.
        modules: qualified names of the modules whose forward was replaced (``""`` is the model itself).
    """

    def __init__(self, seed: int, functional: bool):
        self.seed = seed
        self.functional = functional
        self.modules: list[str] = []
        self._batch: _Batch | None = None

    @contextlib.contextmanager
    def batch(self, sample_ids: torch.Tensor, pass_ids: torch.Tensor | int, first_site: int = 0) -> Iterator[None]:
        """Keys the dropout of the forwards run inside the block by these rows' ids.

        Args:
            sample_ids: int64 ``[R]``: the pool index of the sample of each row of the forward's input.
            pass_ids: the MC pass of each row: one int for all rows, or int64 ``[R]`` (stacked passes: rows
                ``j·B … (j+1)·B − 1`` hold pass ``p + j``). Only the low 32 bits are used.
            first_site: number of the block's first dropout call. A forward split over several blocks (a trunk
                run once, then a head per pass) gives each part its own range (e.g. 0 and ``1 << 20``) so that
                their dropouts never share a site seed.

        The ids may live on any device; they are copied to each input's device once per block.
        """
        if not isinstance(sample_ids, torch.Tensor) or sample_ids.dtype != torch.int64 or sample_ids.dim() != 1:
            got = (
                f"{sample_ids.dtype} tensor of shape {list(sample_ids.shape)}"
                if isinstance(sample_ids, torch.Tensor)
                else type(sample_ids).__name__
            )
            raise TypeError(f"keyed_mc_dropout.batch: expected `sample_ids` to be a 1-D int64 tensor, got {got}")
        if isinstance(pass_ids, int) and not isinstance(pass_ids, bool):
            if not -(1 << 63) <= pass_ids < (1 << 63):
                raise ValueError(
                    f"keyed_mc_dropout.batch: expected `pass_ids` to be an int in [-2**63, 2**63), got {pass_ids}"
                )
            pass_ids = torch.full_like(sample_ids, pass_ids)
        elif not isinstance(pass_ids, torch.Tensor) or pass_ids.dtype != torch.int64 or pass_ids.dim() != 1:
            got = (
                f"{pass_ids.dtype} tensor of shape {list(pass_ids.shape)}"
                if isinstance(pass_ids, torch.Tensor)
                else type(pass_ids).__name__
            )
            raise TypeError(
                f"keyed_mc_dropout.batch: expected `pass_ids` to be an int or a 1-D int64 tensor, got {got}"
            )
        if isinstance(first_site, bool) or not isinstance(first_site, int) or first_site < 0:
            raise ValueError(f"keyed_mc_dropout.batch: expected `first_site` to be an int >= 0, got {first_site!r}")
        if pass_ids.shape != sample_ids.shape or pass_ids.device != sample_ids.device:
            raise ValueError(
                f"keyed_mc_dropout.batch: expected `pass_ids` of shape {list(sample_ids.shape)} on "
                f"{sample_ids.device} like `sample_ids`, got shape {list(pass_ids.shape)} on {pass_ids.device}"
            )
        previous = self._batch
        self._batch = _Batch(sample_ids, pass_ids, first_site)
        try:
            with _FunctionalDropoutMode(self) if self.functional else contextlib.nullcontext():
                yield
        finally:
            self._batch = previous

    def _dropout(self, where: str, kind: str, x: torch.Tensor, p: float, training: bool, inplace: bool):
        if not training:
            return x
        batch = self._batch
        if batch is None:
            raise RuntimeError(
                f"keyed_mc_dropout: {where} ran outside `keyed.batch(sample_ids, pass_ids)`: keyed dropout needs "
                "the pool indices and passes of the rows of every forward"
            )
        check_layout(where, kind, x, batch.rows)
        ids, passes = batch.on(x.device)
        out = apply_kind(kind, x, p, site_seed(self.seed, batch.next_site()), ids, passes)
        return x.copy_(out) if inplace else out

    def _module_forward(self, name: str, module: nn.Module, kind: str) -> Callable:
        where = f"module '{name}' ({type(module).__name__})"
        alpha = kind in ("alpha_dropout", "feature_alpha_dropout")  # their forward ignores `inplace`

        def forward(input: torch.Tensor) -> torch.Tensor:
            return _keyed_call(self, where, kind, input, module.p, module.training, module.inplace and not alpha)

        forward._entropy_al_keyed = True  # marks our replacement (nesting check, restore)
        return forward


@contextlib.contextmanager
def keyed_mc_dropout(model: nn.Module, seed: int, *, functional: bool = True) -> Iterator[KeyedMCDropout]:
    """Makes ``model``'s dropout keyed by (seed, pool index, pass) for the block; restores it on exit.

    Args:
        model: the network; its train/eval flags are not touched (set the MC mode around this block).
        seed: any int in ``[-2**63, 2**64)``: the run's seed.
        functional: also key functional dropout calls (``F.dropout`` & co.) made inside ``batch`` blocks.

    Yields:
        A :class:`KeyedMCDropout`: wrap each forward in ``keyed.batch(sample_ids, pass_ids)``.

    Raises:
        RuntimeError: keyed MC dropout is already active on a module of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"keyed_mc_dropout: expected `model` to be an nn.Module, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(1 << 63) <= seed < (1 << 64):
        raise ValueError(f"keyed_mc_dropout: expected `seed` to be an int in [-2**63, 2**64), got {seed!r}")
    keyed = KeyedMCDropout(seed, functional)
    patched: list[tuple[nn.Module, Callable]] = []
    try:
        for name, module in model.named_modules():
            kind = MODULE_KINDS.get(getattr(type(module), "forward", None))
            if kind is None:
                continue
            current = module.__dict__.get("forward")
            if getattr(current, "_entropy_al_keyed", False):
                raise RuntimeError(f"keyed_mc_dropout: already active on module '{name}'")
            if current is not None:
                continue  # someone else's instance forward: left alone (its functional dropout is still keyed)
            forward = keyed._module_forward(name, module, kind)
            module.forward = forward
            patched.append((module, forward))
            keyed.modules.append(name)
        yield keyed
    finally:
        for module, forward in reversed(patched):
            if module.__dict__.get("forward") is forward:
                del module.__dict__["forward"]
