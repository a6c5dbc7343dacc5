"""The settings of one public call, resolved once from the strategy's ``args`` and attributes into a frozen object.

Every public method resolves its :class:`CallSettings` once (:func:`resolve_settings`, which validates ``args``)
and passes it down; nothing below reads ``args`` again. The keyed-dropout seed of a call is drawn in one place,
:func:`call_seed`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ._validation import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MC_DROPOUT,
    check_amp_dtype,
    check_args,
    check_device,
    check_int,
    check_mc_head,
    distributed_flag,
)

__all__ = ["CallSettings", "call_seed", "resolve_settings"]


@dataclass(frozen=True)
class CallSettings:
    """What one public method call runs with.

    Attributes:
        where: the public method (``"EntropySamplingDropout.select"``), for messages.
        batch_size: samples per model forward.
        device: where the model runs and the scores live.
        mc_mode: ``"dropout"`` (only dropout modules stochastic) or ``"train"`` (DISTIL's whole-model train).
        reproduce_distil: follow DISTIL's pass-major loop and random-number use exactly.
        nan_policy: ``"raise"`` or ``"omit"`` for samples whose logits are NaN or ``+inf``.
        progress: show a tqdm bar over the samples.
        memory_budget: ``args['mc_memory_budget']`` in bytes, or ``None`` for the device's default; 0 runs one pass
            per forward.
        mc_head: ``args['mc_head']``: ``None``, a ``(trunk, head)`` pair of modules, or the name of the module of
            an ``nn.Sequential`` model after which dropout begins.
        amp_dtype: ``torch.bfloat16`` or ``torch.float16`` (``args['amp_dtype']``), or ``None``: no autocast.
        num_workers: DataLoader workers for datasets fetched item by item.
        batch_sampler: ``args['batch_sampler']``: an iterable of index lists giving the batches, or ``None``.
        mc_dropout: ``"torch"`` or ``"keyed"`` (``args['mc_dropout']``).
        mc_seed: ``args['mc_seed']`` as a signed 64-bit int (same bits), or ``None`` where it is to be drawn.
        distributed: ``args['distributed']`` (``None``, ``True`` or ``False``).
    """

    where: str
    batch_size: int
    device: torch.device
    mc_mode: str
    reproduce_distil: bool
    nan_policy: str
    progress: bool
    memory_budget: int | None
    mc_head: Any
    amp_dtype: torch.dtype | None
    num_workers: int
    batch_sampler: Any
    mc_dropout: str
    mc_seed: int | None
    distributed: bool | None


def resolve_settings(where: str, args: Mapping[str, Any], device: Any) -> CallSettings:
    """Validates the strategy's (possibly user-edited) ``args`` and ``device`` once and resolves the call's settings."""
    checked = check_args(where, args)
    reproduce = checked.get("reproduce_distil", False)
    budget = checked.get("mc_memory_budget")
    seed = checked.get("mc_seed")
    if seed is not None:
        seed = operator.index(seed)
        seed = seed - (1 << 64) if seed >= (1 << 63) else seed
    return CallSettings(
        where=where,
        batch_size=check_int(where, "args['batch_size']", checked.get("batch_size", DEFAULT_BATCH_SIZE), 1),
        device=check_device(where, "the strategy's device", device),
        mc_mode=checked.get("mc_mode", "train" if reproduce else "dropout"),
        reproduce_distil=reproduce,
        nan_policy=checked.get("nan_policy", "raise"),
        progress=checked.get("progress", False),
        memory_budget=None if budget is None else operator.index(budget),
        mc_head=check_mc_head(where, checked.get("mc_head")),
        amp_dtype=check_amp_dtype(where, checked.get("amp_dtype")),
        num_workers=operator.index(checked.get("num_workers", 0)),
        batch_sampler=checked.get("batch_sampler"),
        mc_dropout=checked.get("mc_dropout", DEFAULT_MC_DROPOUT),
        mc_seed=seed,
        distributed=distributed_flag(where, checked),
    )


def call_seed(settings: CallSettings) -> int | None:
    """The keyed-dropout seed of one call: ``args['mc_seed']``, else one int64 draw in ``[0, 2**63)`` from torch's
    global CPU generator (so ``torch.manual_seed`` decides it); ``None`` with torch's own dropout (nothing drawn)."""
    if settings.mc_dropout != "keyed":
        return None
    if settings.mc_seed is not None:
        return settings.mc_seed
    return int(torch.empty((), dtype=torch.int64).random_())
