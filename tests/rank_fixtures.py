"""Spawning gloo ranks for the distributed tests (not a test module)."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def spawn_ranks(
    target: Callable[..., None], world: int, out_dir: Path, extra: tuple[Any, ...] = (), timeout_s: float = 60.0
) -> tuple[list[int], list[dict[str, Any]]]:
    """Runs ``target(rank, world, init_method, out_dir, *extra)`` in ``world`` spawned processes, each writing its
    outcomes to ``out_dir/rank{rank}.json``; kills the ranks still running after ``timeout_s``.

    Returns:
        The hung ranks, and each rank's outcomes (``{}`` for a rank that wrote none).
    """
    context = multiprocessing.get_context("spawn")
    init_method = (out_dir / "store").as_uri()
    processes = [
        context.Process(target=target, args=(rank, world, init_method, str(out_dir), *extra), daemon=True)
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for rank in hung:
        processes[rank].kill()
        processes[rank].join()
    outcomes = []
    for rank in range(world):
        path = out_dir / f"rank{rank}.json"
        outcomes.append(json.loads(path.read_text()) if path.exists() else {})
    return hung, outcomes
