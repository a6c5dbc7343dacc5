"""The settings of one public call, resolved once from the strategy's ``args`` and attributes into a frozen object.

Every public method resolves its :class:`CallSettings` once (:func:`resolve_settings`, which validates ``args``)
and passes it down; nothing below reads ``args`` again. The keyed-dropout seed of a call is drawn in one place,
:func:`call_seed`, and the acquisition seed of a ``select`` in another, :func:`with_acquisition_seed`.
"""

from __future__ import annotations

import dataclasses
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
    check_checkpoint_args,
    check_device,
    check_int,
    check_mc_head,
    distributed_flag,
)

__all__ = ["CallSettings", "call_seed", "resolve_settings", "with_acquisition_seed"]


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
        checkpoint: ``args['checkpoint']`` as a str path, or ``None``: ``select`` saves no state.
        checkpoint_every: ``args['checkpoint_every']``: seconds between saves (0: after every streaming step).
        acquisition: ``args['acquisition']``: ``"top"`` (the best ``budget``), ``"power"`` or ``"softmax"`` (a
            sample, each next pick ∝ score^coldness or ∝ exp(coldness · score)).
        coldness: ``args['coldness']`` (β) as a float.
        acquisition_seed: the sample's seed as a signed 64-bit int (same bits): ``args['acquisition_seed']``, or
            the draw of :func:`with_acquisition_seed`; ``None`` before that draw, and always with ``"top"``.
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
    checkpoint: str | None
    checkpoint_every: float
    acquisition: str = "top"
    coldness: float = 1.0
    acquisition_seed: int | None = None


def resolve_settings(where: str, args: Mapping[str, Any], device: Any) -> CallSettings:
    """Validates the strategy's (possibly user-edited) ``args`` and ``device`` once and resolves the call's settings."""
    checked = check_args(where, args)
    reproduce = checked.get("reproduce_distil", False)
    budget = checked.get("mc_memory_budget")
    checkpoint, checkpoint_every = check_checkpoint_args(where, checked)
    acquisition = checked.get("acquisition", "top")
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
        mc_seed=_signed_seed(checked.get("mc_seed")),
        distributed=distributed_flag(where, checked),
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        acquisition=acquisition,
        coldness=float(checked.get("coldness", 1.0)),
        acquisition_seed=None if acquisition == "top" else _signed_seed(checked.get("acquisition_seed")),
    )


def _signed_seed(seed: Any) -> int | None:
    """A seed in ``[-2**63, 2**64)`` as the signed 64-bit int with the same bits (``None`` stays ``None``)."""
    if seed is None:
        return None
    seed = operator.index(seed)
    return seed - (1 << 64) if seed >= (1 << 63) else seed


def call_seed(settings: CallSettings) -> int | None:
    """The keyed-dropout seed of one call: ``args['mc_seed']``, else one int64 draw in ``[0, 2**63)`` from torch's
    global CPU generator (so ``torch.manual_seed`` decides it); ``None`` with torch's own dropout (nothing drawn)."""
    if settings.mc_dropout != "keyed":
        return None
    if settings.mc_seed is not None:
        return settings.mc_seed
    return int(torch.empty((), dtype=torch.int64).random_())


def with_acquisition_seed(settings: CallSettings) -> CallSettings:
    """``settings`` with the acquisition seed of one ``select``: ``args['acquisition_seed']``, else one int64 draw in
    ``[0, 2**63)`` from torch's global CPU generator (so ``torch.manual_seed`` decides it). Nothing is drawn with
    ``"top"``, which needs no seed: the default acquisition leaves the generator as it was."""
    if settings.acquisition == "top" or settings.acquisition_seed is not None:
        return settings
    return dataclasses.replace(settings, acquisition_seed=int(torch.empty((), dtype=torch.int64).random_()))
