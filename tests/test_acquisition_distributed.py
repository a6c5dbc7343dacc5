"""Stochastic acquisition across torch.distributed ranks: every rank returns the single-process sample.

Each rank perturbs its shard's scores by global pool index under rank 0's acquisition seed, so the merged keys are
those of one process: the sample does not depend on the number of ranks. Spawned gloo groups, every wait bounded
(the process group's timeout inside the ranks, a deadline on joining them).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from keyed_select_fixtures import BUDGET, DistilStyleBALD, keyed_strategy
from rank_fixtures import spawn_ranks

import entropy_al

PG_TIMEOUT_S = 20
JOIN_TIMEOUT_S = 90

# name → (strategy class, args); every rank calls torch.manual_seed(100 + rank) first, so a seed left to draw differs
# between ranks and rank 0's must win.
_CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "power_entropy": (entropy_al.PowerEntropySamplingDropout, {"acquisition_seed": 21, "batch_size": 5}),
    "softmax_bald_drawn_seed": (entropy_al.BALDDropout, {"acquisition": "softmax", "coldness": 3.0}),
    "power_acquire_scores": (DistilStyleBALD, {"acquisition": "power", "acquisition_seed": 4, "stream_buffer_size": 7}),
    "top": (entropy_al.BALDDropout, {"acquisition": "top"}),
}


def _select(name: str, rank: int) -> list[int]:
    cls, args = _CASES[name]
    strategy = keyed_strategy(cls, **args)  # its model seeds torch's generator: seed it after
    torch.manual_seed(100 + rank)
    return strategy.select(BUDGET)


def _rank_main(rank: int, world: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=PG_TIMEOUT_S)
    )
    outcomes: dict[str, Any] = {}
    for name in _CASES:
        try:
            outcomes[name] = _select(name, rank)
        except Exception as exc:
            outcomes[name] = f"{type(exc).__name__}: {exc}"
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(outcomes))
    os._exit(0)  # skip the group's teardown: the outcomes are on disk


@pytest.fixture(scope="module", params=[2, 3], ids=lambda world: f"world{world}")
def ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    world = request.param
    hung, outcomes = spawn_ranks(_rank_main, world, tmp_path_factory.mktemp(f"world{world}"), (), JOIN_TIMEOUT_S)
    assert not hung, f"ranks {hung} of {world} still running after {JOIN_TIMEOUT_S} s; done: {outcomes}"
    return outcomes


@pytest.mark.parametrize("name", list(_CASES))
def test_every_rank_returns_the_single_process_sample_of_rank_0s_seed(ranks, name):
    expected = _select(name, 0)  # this process has no process group: the single-process selection
    assert len(expected) == BUDGET
    for rank, outcomes in enumerate(ranks):
        assert outcomes.get(name) == expected, f"rank {rank} of {len(ranks)}"


def test_the_cases_sample():
    """The stochastic cases differ from their top-k, and a drawn seed differs from rank to rank: else the
    comparison above could not tell a rank's own seed, or no perturbation at all, from rank 0's."""
    assert _select("power_entropy", 0) != keyed_strategy(entropy_al.EntropySamplingDropout).select(BUDGET)
    assert _select("softmax_bald_drawn_seed", 0) != _select("top", 0)
    assert _select("softmax_bald_drawn_seed", 0) != _select("softmax_bald_drawn_seed", 1)
    assert _select("power_acquire_scores", 0) != keyed_strategy(DistilStyleBALD, stream_buffer_size=7).select(BUDGET)
