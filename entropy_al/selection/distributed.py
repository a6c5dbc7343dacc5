"""A selection across the ranks of a torch.distributed process group: shard, score locally, gather, merge.

Every rank runs the same protocol, with the same pool, budget and ``args``:

1. Handshake: one ``all_gather`` of ``[failed, pool size, budget, keyed seed]`` per rank. Ranks that disagree on the
   pool size or the budget all raise a ``ValueError``; a budget of 0 or an empty pool gives ``[]`` on every rank.
   With ``args['mc_dropout'] = 'keyed'`` every rank uses rank 0's seed (``args['mc_seed']``, or its draw), and keys
   its shard's masks by global pool index: the selection is the single-process one for that seed.
2. Rank ``r`` of ``W`` scores the contiguous shard ``[⌊N·r/W⌋, ⌊N·(r+1)/W⌋)`` of the ``N``-sample pool with its own
   streaming top-k (shard sizes differ by at most one; with ``N < W`` some are empty). Its keys carry pool indices.
3. One ``all_gather`` of a fixed-size int64 row per rank: a header ``[failed, first broken pool index, broken count,
   number of keys]``, then the rank's at most ``k = min(budget, N)`` keys, padded. ``W·(k + 4)·8`` bytes reach
   every rank, whatever the pool size.
4. Every rank reads the same rows and merges them the same way: the NaN policy with the global first broken index
   and count, then a top-k over the concatenated keys. A key is the score's order-preserving bits over the
   inverted pool index (:mod:`entropy_al.keys`): keys are unique, their descending order is the
   selection order (score descending, ties to the lower pool index, NaN last), and the union of the ranks' top-k
   holds the global top-k. So every rank returns the single-process selection of the same scores.

Failures: an exception on a rank between two collectives (the model or the dataset raises, a bad argument) is
caught there, and the rank still joins the next collective with ``failed`` set. All ranks then exchange the messages
(``all_gather_object``, on this rare path only: they are strings of any length) and raise: the failing rank its own
exception, the others a ``RuntimeError`` naming that rank and its message. Broken logits are not such an exception:
each rank reports its first broken index and count in its header and every rank applies the NaN policy to the
pool's, so ``'raise'`` raises the single-process ``ValueError`` on every rank. What cannot be caught (a killed
process, a rank that never calls ``select``, a hung kernel) leaves the other ranks blocked in a collective until the
process group's timeout (``init_process_group(timeout=...)``; torch's defaults are 30 min for gloo and 10 min for
NCCL), which then raises there. gloo usually reports a dead peer's closed connection at once, and torchrun's agent
stops every worker when one exits.

Collective tensors live where the backend needs them: on the CPU when the group's backend takes CPU tensors (gloo,
mpi, ucc, or a ``"cpu:gloo,cuda:nccl"`` group), else (NCCL) on the current CUDA device: call
``torch.cuda.set_device(local_rank)`` first, as any NCCL program must.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..keys import decode_keys
from .bad_rows import apply_nan_policy

__all__ = ["ShardScorer", "collective_device", "distributed_group", "select_across_ranks", "shard_bounds"]

# Header of a rank's gathered row: failed (0/1), first broken pool index (-1: none), broken count, number of keys.
_HEADER = 4
# Fills a row after its keys; never read, since the header says how many keys there are.
_PAD = torch.iinfo(torch.int64).min


def distributed_group(where: str, flag: bool | None) -> dist.ProcessGroup | None:
    """The process group a selection splits the pool across, or ``None`` to select in this process alone.

    ``flag`` ``None``: the default group when one of more than one process is initialized. ``True``: the default
    group, which must be initialized. ``False``: never. A group of one process is never used: the single-process
    path gives the same selection without collectives.
    """
    if flag is False:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        if flag:
            raise RuntimeError(
                f"{where}: args['distributed'] = True but torch.distributed has no default process group; call "
                "torch.distributed.init_process_group() on every rank first (torchrun sets up its rendezvous), or "
                "drop the key to select in this process alone"
            )
        return None
    group = dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def collective_device(where: str, group: dist.ProcessGroup) -> torch.device:
    """Where the tensors of ``group``'s collectives must live: the CPU if its backend takes CPU tensors, else CUDA.

    Decided from the group alone, so that every rank picks the same device and thus the same backend.
    """
    backend = str(dist.get_backend(group))
    devices = dist.Backend.backend_capability.get(backend)
    if devices is None:
        # A group made with per-device backends reports "undefined"; its config reads "cpu:gloo,cuda:nccl".
        config = dist.get_backend_config(group)
        devices = [part.split(":")[0] for part in config.split(",") if ":" in part]
        backend = f"{backend} ({config})"
    if "cpu" in devices:
        return torch.device("cpu")
    if "cuda" in devices and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    raise RuntimeError(
        f"{where}: the process group's backend {backend} takes neither CPU tensors nor CUDA tensors on a visible "
        "GPU; use gloo (CPU) or NCCL (CUDA), or set args['distributed'] = False"
    )


def shard_bounds(num_samples: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous shard; the shards of ranks ``0 … world − 1`` tile the pool."""
    return num_samples * rank // world, num_samples * (rank + 1) // world


#: ``score_shard(k, start, stop, seed, show_progress)``: scores pool samples ``start … stop − 1`` into a top-``k``
#: and returns ``(keys, summary)`` as :meth:`entropy_al.selection.TopKCollector.partial` does.
ShardScorer = Callable[[int, int, int, "int | None", bool], tuple[torch.Tensor, torch.Tensor]]


def select_across_ranks(
    where: str,
    group: dist.ProcessGroup,
    score_shard: ShardScorer,
    pool_size: int,
    budget: int,
    seed: int | None,
    nan_policy: str,
    failure: Exception | None = None,
) -> list[int]:
    """The selection of the ``budget`` best samples of a ``pool_size`` pool split across ``group``'s ranks.

    Every rank calls it with its own ``score_shard``, its ``seed`` (rank 0's is used by all; ``None``: no seed)
    and ``failure``, the exception this rank met while preparing the arguments (shared with every rank, which all
    raise). Returns the same list on every rank.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    device = collective_device(where, group)

    # 1. Handshake: all ranks agree on the pool size and the budget before the shards are cut and rows sized.
    error = failure
    mine = [1, 0, 0, 0] if failure is not None else [0, pool_size, budget, 0 if seed is None else seed]
    table = _all_gather_rows(torch.tensor(mine, dtype=torch.int64, device=device), group, world).tolist()
    _raise_if_failed(where, group, rank, [row[0] for row in table], error, lambda r: "checking the pool and budget")
    if len({row[1] for row in table}) > 1 or len({row[2] for row in table}) > 1:
        raise ValueError(
            f"{where}: every rank must call select() with the same pool and budget; got pool sizes "
            f"{[row[1] for row in table]} and budgets {[row[2] for row in table]} on ranks 0 … {world - 1}"
        )
    if budget == 0 or pool_size == 0:
        return []
    k = min(budget, pool_size)

    # 2. This rank's shard, into its own streaming top-k. 3. Every rank's candidates to every rank.
    start, stop = shard_bounds(pool_size, rank, world)
    try:
        keys, summary = score_shard(k, start, stop, None if seed is None else table[0][3], rank == 0)
        row = torch.cat(
            [
                torch.zeros(1, dtype=torch.int64, device=device),
                summary.to(device),
                torch.tensor([keys.numel()], dtype=torch.int64, device=device),
                keys.to(device),
                torch.full((k - keys.numel(),), _PAD, dtype=torch.int64, device=device),
            ]
        )
        error = None
    except Exception as exc:
        error = exc
        row = torch.full((_HEADER + k,), _PAD, dtype=torch.int64, device=device)
        row[:_HEADER] = torch.tensor([1, -1, 0, 0], dtype=torch.int64)
    table_t = _all_gather_rows(row, group, world)
    header = table_t[:, :_HEADER].tolist()  # the one host synchronization before the result's
    _raise_if_failed(where, group, rank, [h[0] for h in header], error, lambda r: _shard_work(pool_size, r, world))

    # 4. The same merge on every rank, hence the same result and the same errors.
    first = min((h[1] for h in header if h[1] >= 0), default=-1)
    _apply_nan_policy(where, nan_policy, first, sum(h[2] for h in header))
    candidates = torch.cat([table_t[r, _HEADER : _HEADER + h[3]] for r, h in enumerate(header)])
    # The ranks kept min(k, shard size) keys each, at least k in all.
    merged = candidates.topk(k, sorted=True).values
    return decode_keys(merged)[1].tolist()


def _apply_nan_policy(where: str, policy: str, first: int, count: int) -> None:
    """:func:`apply_nan_policy` for the whole pool, its warning pointing at the caller of ``select``.

    It warns from its caller's caller, here ``select`` itself: re-warned from the user's line instead, the warning
    reads as in a single-process selection and "once per location" filters treat it the same.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_nan_policy(where, policy, first, count, "they are ranked last")
    for warning in caught:
        # 1: here, 2: select_across_ranks, 3: ScoreStreamingStrategy.select, 4: its caller.
        warnings.warn(warning.message, stacklevel=4)


def _shard_work(num_samples: int, rank: int, world: int) -> str:
    start, stop = shard_bounds(num_samples, rank, world)
    return f"scoring its shard [{start}, {stop}) of the pool"


def _all_gather_rows(row: torch.Tensor, group: dist.ProcessGroup, world: int) -> torch.Tensor:
    """``[world, len(row)]``: every rank's ``row`` (same length and device on every rank), in rank order."""
    rows = [torch.empty_like(row) for _ in range(world)]
    dist.all_gather(rows, row, group=group)
    return torch.stack(rows)


def _raise_if_failed(
    where: str,
    group: dist.ProcessGroup,
    rank: int,
    failed: list[int],
    error: Exception | None,
    doing: Callable[[int], str],
) -> None:
    """After a collective that told every rank which ranks failed: nothing if none did, else raises on every rank.

    ``error`` is this rank's own exception (``None`` if it did not fail); it is re-raised as it is on that rank.
    ``doing(r)`` says what rank ``r`` was doing, for the others' message.
    """
    failing = [r for r, flag in enumerate(failed) if flag]
    if not failing:
        return
    messages: list[Any] = [None] * len(failed)
    dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}", group=group)
    if error is not None:
        raise error
    also = ""
    if len(failing) > 1:
        also = f" (rank{'s' if len(failing) > 2 else ''} {', '.join(map(str, failing[1:]))} failed too)"
    raise RuntimeError(
        f"{where}: rank {failing[0]} of {len(failed)} failed while {doing(failing[0])}{also}, so no rank returns a "
        f"selection (this is rank {rank}); rank {failing[0]}'s error: {messages[failing[0]]}"
    )
