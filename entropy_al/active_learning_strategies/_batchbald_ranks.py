"""BatchBALD's ``select`` across the ranks of a torch.distributed process group.

Every rank streams its contiguous shard of the pool into its own candidate keeper (the best ``m`` of the shard by
BALD, with their log-probabilities), the ranks exchange their candidates (``all_gather_object``: at most
``m · n_drop · C`` floats per rank, never the pool), and every rank merges them the same way (score descending, ties
to the lower pool index, NaN last: the union of the shards' best ``m`` holds the pool's best ``m``) and runs the
same greedy selection with rank 0's seed. The masks are keyed by (seed, pass, element), so every rank returns the
single-process selection. An exception on a rank is raised on every rank (the others' message names it).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..keys import decode_keys, encode_indexed_keys
from ..selection import apply_nan_policy, shard_bounds

__all__ = ["gather_candidates"]


def _exchange(where: str, group: Any, payload: Any, failure: Exception | None, doing: str) -> list[Any]:
    """Every rank's ``(failure message, payload)``; raises on every rank if one failed."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    message = None if failure is None else f"{type(failure).__name__}: {failure}"
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (message, payload), group=group)
    failing = [r for r, (text, _) in enumerate(gathered) if text is not None]
    if failure is not None:
        raise failure
    if failing:
        raise RuntimeError(
            f"{where}: rank {failing[0]} of {world} failed while {doing}, so no rank returns a selection (this is "
            f"rank {rank}); rank {failing[0]}'s error: {gathered[failing[0]][0]}"
        )
    return [payload for _, payload in gathered]


def gather_candidates(
    where: str,
    group: Any,
    keep: Callable[..., Any],
    choose: Callable[..., list[int]],
    settings: Any,
    plan: Any,
    m: int,
    num_samples: int,
    k: int,
    seed: int | None,
    failure: Exception | None,
) -> list[int]:
    """The distributed ``select``: handshake (pool size, budget, rank 0's seed), shards, exchange, merge, choose."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    shapes = _exchange(where, group, (num_samples, k, seed), failure, "preparing its selection")
    if len({(n, b) for n, b, _ in shapes}) > 1:
        raise ValueError(
            f"{where}: the ranks disagree on (pool size, budget): {[(n, b) for n, b, _ in shapes]}; every rank must "
            "call select with the same pool and budget"
        )
    if k == 0 or num_samples == 0:
        return []
    seed = shapes[0][2]
    if seed is not None:
        plan = dataclasses.replace(plan, mc_seed=seed)
    start, stop = shard_bounds(num_samples, rank, world)
    payload, failure = None, None
    try:
        keeper, first, count = keep(settings, plan, m, start, stop, rank == 0)
        indices, log_probs = keeper.result()
        payload = (first, count, keeper.scores.cpu(), indices.cpu(), log_probs.cpu())
    except Exception as exc:
        failure = exc
    parts = _exchange(where, group, payload, failure, f"scoring its shard [{start}, {stop}) of the pool")
    firsts = [first for first, *_ in parts if first >= 0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_nan_policy(
            where,
            settings.nan_policy,
            min(firsts) if firsts else -1,
            sum(part[1] for part in parts),
            "they are never selected while others are",
        )
    for warning in caught:  # from the user's line, as in a single-process selection
        warnings.warn(warning.message, stacklevel=4)
    keys = encode_indexed_keys(torch.cat([part[2] for part in parts]), torch.cat([part[3] for part in parts]))
    order = torch.sort(keys, descending=True).indices[:m]
    indices = decode_keys(keys[order])[1]
    rows = [part[4] for part in parts if part[4].numel()]
    log_probs = torch.cat(rows)[order].to(settings.device) if rows else torch.empty(0, 0, 0)
    return choose(settings, indices.to(settings.device), log_probs, k, seed)
