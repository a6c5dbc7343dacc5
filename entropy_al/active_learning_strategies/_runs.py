"""What the strategies' public methods share: preparing a call, building its MC plan, and deterministic forwards.

Each public method resolves its settings once (:func:`prepare_call`), builds at most one :class:`MCPlan`
(:func:`mc_plan`) and hands it to the MC engine (:func:`entropy_al.mc.mc_logit_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..mc import MCPlan, autocast_for, default_memory_budget, eval_forwards, resolve_split
from ._settings import CallSettings, call_seed, resolve_settings
from ._validation import check_int

__all__ = ["PoolSlice", "eval_outputs", "mc_plan", "prepare_call"]


class PoolSlice(Subset):
    """A stream buffer of the pool that ``select`` hands to an overridden ``acquire_scores``: the pool samples
    ``pool_start …`` of one selection, with that selection's keyed-dropout seed, so that MC methods run on it key
    their masks by pool index and by the selection's seed, whatever ``stream_buffer_size``."""

    def __init__(self, pool: Dataset, indices: list[int], pool_start: int, mc_seed: int | None):
        super().__init__(pool, indices)
        self.pool_start = pool_start
        self.mc_seed = mc_seed


def prepare_call(where: str, args: Mapping[str, Any], device: Any, model: Any) -> tuple[CallSettings, nn.Module]:
    """Resolves a call's settings and checks the model and its device; returns the settings and the model, moved."""
    settings = resolve_settings(where, args, device)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{where}: expected the model (`net`, or update_model's `clf`) to be a torch.nn.Module, got "
            f"{type(model).__name__}"
        )
    _check_device_usable(where, settings.device)
    return settings, model.to(settings.device)


def mc_plan(
    model: nn.Module,
    settings: CallSettings,
    nclasses: int,
    n_drop: Any,
    buffer_size: int,
    dataset: Dataset | None = None,
    seed: int | None = None,
) -> MCPlan:
    """The MC plan of one call. The keyed seed: ``seed`` if given (``select`` draws one per call), else that of a
    :class:`PoolSlice` ``dataset`` (whose pool start also keys its samples), else this call's own (drawn now)."""
    where = settings.where
    autocast_for(where, settings.amp_dtype, settings.device)  # an unsupported dtype fails before any forward
    id_base = 0
    if seed is None and settings.mc_dropout == "keyed":
        if isinstance(dataset, PoolSlice) and dataset.mc_seed is not None:
            seed, id_base = dataset.mc_seed, dataset.pool_start
        else:
            seed = call_seed(settings)
    budget = settings.memory_budget
    return MCPlan(
        n_drop=check_int(where, "`n_drop`", n_drop, 1),
        batch_size=settings.batch_size,
        buffer_size=max(1, buffer_size),
        nclasses=nclasses,
        device=settings.device,
        where=where,
        memory_budget=default_memory_budget(settings.device) if budget is None else budget,
        split=resolve_split(model, settings.mc_head, where),
        amp_dtype=settings.amp_dtype,
        num_workers=settings.num_workers,
        batch_sampler=settings.batch_sampler,
        mc_mode=settings.mc_mode,
        reproduce_distil=settings.reproduce_distil,
        mc_seed=seed,
        id_base=id_base,
        progress=settings.progress,
    )


def eval_outputs(
    model: nn.Module, settings: CallSettings, dataset: Dataset, drop_labels: bool = False, **model_kwargs: Any
) -> Iterator[tuple[int, int, Any, Any]]:
    """:func:`entropy_al.mc.eval_forwards` with a call's settings (``drop_labels``: mapping batches are passed
    without their ``"labels"`` key)."""
    return eval_forwards(
        model,
        dataset,
        settings.batch_size,
        settings.device,
        settings.where,
        settings.num_workers,
        drop_labels=drop_labels,
        **model_kwargs,
    )


def _check_device_usable(where: str, device: torch.device) -> None:
    """A clear error for a device this process cannot compute on, before the model is moved there."""
    if device.type == "meta":
        raise ValueError(f"{where}: the strategy's device (args['device']) is {device}, which holds no data")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ValueError(
                f"{where}: the strategy's device (args['device']) is {device}, but this process sees "
                f"{count} CUDA device{'s' if count != 1 else ''}"
                f"{' (this torch was built without CUDA)' if not torch.backends.cuda.is_built() else ''}"
            )
