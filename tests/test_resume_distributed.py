"""Resumable selection across torch.distributed ranks: two spawned gloo ranks, one interrupted, resume together.

Each rank checkpoints its own shard in ``<path>.rank<r>``. Rank 1's model raises inside its shard ``[23, 47)``; rank 0
finishes its shard, then fails with rank 1's error. Resumed together, rank 0 runs nothing and rank 1 starts at its
last completed step, and both return the uninterrupted single-process selection (keyed dropout, the seed rank 0 drew).
Every wait is bounded (the process group's timeout, a deadline on joining the ranks).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rank_fixtures import spawn_ranks
from test_resume import POOL, Interruptible, select, uninterrupted

PG_TIMEOUT_S = 20
JOIN_TIMEOUT_S = 60
WORLD = 2
FAIL_AT = 35  # in rank 1's shard [23, 47): its steps 23-32 completed, so it resumes at 33


def _error(call: Any) -> str | None:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _rank_main(rank: int, world: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=PG_TIMEOUT_S)
    )
    folder = Path(out_dir) / "checkpoints"
    folder.mkdir(exist_ok=True)
    path = folder / "select.ckpt"
    outcome: dict[str, Any] = {}
    try:
        torch.manual_seed(0)  # as uninterrupted(): the keyed seed is drawn on every rank, rank 0's used by all
        interrupted = Interruptible(FAIL_AT if rank == 1 else None)
        outcome["interrupted"] = _error(lambda: select(interrupted, path))
        dist.barrier()
        outcome["files"] = sorted(os.listdir(folder))
        outcome["alone"] = _error(lambda: select(Interruptible(), path, distributed=False))
        model = Interruptible()
        torch.manual_seed(12345)  # another draw: the ranks must run with the saved seed
        outcome["selected"] = select(model, path)
        outcome["seen"] = sorted(model.seen)
        dist.barrier()
        outcome["left"] = sorted(os.listdir(folder))
    except Exception as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(outcome))
    # Skip the group's teardown, which can block once a peer has died; the outcome is on disk.
    os._exit(0)


def test_two_ranks_one_interrupted_resume_together(tmp_path):
    hung, outcomes = spawn_ranks(_rank_main, WORLD, tmp_path, timeout_s=JOIN_TIMEOUT_S)
    assert not hung, f"ranks {hung} still running after {JOIN_TIMEOUT_S} s; done: {outcomes}"
    for outcome in outcomes:
        assert "error" not in outcome, outcome
    assert "interrupted at pool index 35" in outcomes[1]["interrupted"]
    assert "rank 1 of 2 failed" in outcomes[0]["interrupted"]
    for outcome in outcomes:
        # Each rank's shard in its own file, and a process alone cannot resume them.
        assert outcome["files"] == ["select.ckpt.rank0", "select.ckpt.rank1"]
        assert "same world size" in outcome["alone"]
        assert outcome["left"] == []
    expected = uninterrupted()
    assert [outcome["selected"] for outcome in outcomes] == [expected, expected]
    assert outcomes[0]["seen"] == []  # rank 0 had finished its shard [0, 23)
    assert outcomes[1]["seen"] == list(range(33, POOL))
