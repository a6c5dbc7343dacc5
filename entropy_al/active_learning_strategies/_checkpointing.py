"""What a resumable ``select`` saves besides its streaming state: the fingerprint of the selection and its seeds.

:class:`entropy_al.selection.SelectionCheckpoint` saves and restores the state; this module decides what must
match for a saved state to be resumed (:func:`selection_fingerprint`) and which seeds a selection runs with
(:func:`selection_seeds`: a resumed selection's saved ones, else given or drawn now).
"""

from __future__ import annotations

from typing import Any

from ..selection import SelectionCheckpoint, rank_checkpoint_path
from ._settings import CallSettings, call_seed, with_acquisition_seed

__all__ = ["open_checkpoint", "selection_fingerprint", "selection_seeds"]


def selection_fingerprint(
    strategy: Any, settings: CallSettings, pool_size: int, budget: int, world: int
) -> dict[str, str | int]:
    """What determines a selection's state, besides its seeds and pool range: ``{name: str or int}``.

    Settings that only change how fast the state is computed (batch and buffer sizes, device, stacking, head-only
    MC, workers, progress) are left out, as is the NaN policy, which acts on the finished state.
    """
    cls = type(strategy)
    fused = strategy._scores_are_fused()
    return {
        "world size": world,
        "strategy": f"{cls.__module__}.{cls.__qualname__}",
        "score": strategy.mc_score if fused else "acquire_scores",
        "pool size": pool_size,
        "budget": budget,
        "nclasses": strategy.target_classes,
        "n_drop": str(getattr(strategy, "n_drop", None)),
        "mc_dropout": settings.mc_dropout,
        "mc_mode": settings.mc_mode,
        "reproduce_distil": str(settings.reproduce_distil),
        "amp_dtype": str(settings.amp_dtype),
        "acquisition": settings.acquisition,
        "coldness": repr(settings.coldness),
    }


def requested_seeds(settings: CallSettings) -> dict[str, int | None]:
    """The seeds ``args`` gives (``None``: to be drawn), which a resumed selection's saved seeds must equal."""
    requested: dict[str, int | None] = {"mc_seed": settings.mc_seed} if settings.mc_dropout == "keyed" else {}
    if settings.acquisition != "top":
        requested["acquisition_seed"] = settings.acquisition_seed
    return requested


def selection_seeds(settings: CallSettings, saved: dict[str, int]) -> dict[str, int]:
    """The seeds a selection runs with: the saved ones of a resumed selection, else ``args``' or drawn now."""
    seeds: dict[str, int] = {}
    if settings.mc_dropout == "keyed":
        drawn = saved["mc_seed"] if "mc_seed" in saved else call_seed(settings)
        assert drawn is not None  # keyed dropout always has a seed
        seeds["mc_seed"] = drawn
    if settings.acquisition != "top":  # drawn after the keyed-dropout seed, as without a checkpoint
        saved_seed = saved.get("acquisition_seed")
        seeds["acquisition_seed"] = (
            saved_seed if saved_seed is not None else with_acquisition_seed(settings).acquisition_seed
        )
    return seeds


def open_checkpoint(
    strategy: Any,
    settings: CallSettings,
    pool_size: int,
    budget: int,
    shard: tuple[int, int],
    rank: int = 0,
    world: int = 1,
) -> tuple[SelectionCheckpoint | None, dict[str, int]]:
    """The checkpoint of a selection of the pool samples ``shard`` (``None`` without ``args['checkpoint']``), loaded
    and checked against this selection, and the seeds the selection runs with."""
    if settings.checkpoint is None:
        return None, selection_seeds(settings, {})
    checkpoint = SelectionCheckpoint(
        settings.where,
        rank_checkpoint_path(settings.where, settings.checkpoint, rank, world),
        settings.checkpoint_every,
        selection_fingerprint(strategy, settings, pool_size, budget, world),
        *shard,
    )
    checkpoint.seeds = selection_seeds(settings, checkpoint.load(requested_seeds(settings)))
    return checkpoint, checkpoint.seeds
