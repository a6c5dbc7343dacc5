"""BatchBALDDropout.select across spawned gloo ranks: the single-process selection on every rank, errors on all."""

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from rank_fixtures import spawn_ranks
from test_batch_bald import InjectNet, pool, strategy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = {
    "default": ({"n_drop": 5, "mc_seed": 4, "candidates": 12, "batch_size": 8}, 4),
    "whole_pool": ({"n_drop": 5, "mc_seed": 4, "candidates": None}, 3),
    "drawn_seed": ({"n_drop": 5}, 3),
    "bad_budget_on_rank_1": ({"n_drop": 5}, None),
}


def _rank_main(rank: int, world: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=20))
    torch.manual_seed(rank)  # a drawn seed differs per rank: rank 0's must win
    outcomes = {}
    for name, (args, budget) in CASES.items():
        budget = budget if budget is not None else (3 if rank == 0 else -1)
        try:
            outcomes[name] = {"picks": strategy(InjectNet(), pool(50), **args).select(budget)}
        except Exception as exc:
            outcomes[name] = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcomes))
    os._exit(0)


def test_ranks_select_as_one_process(tmp_path):
    hung, outcomes = spawn_ranks(_rank_main, 2, tmp_path, (), 120)
    assert not hung
    for name in ("default", "whole_pool"):
        args, budget = CASES[name]
        want = strategy(InjectNet(), pool(50), distributed=False, **args).select(budget)
        assert [rank[name] for rank in outcomes] == [{"picks": want}] * 2
    assert outcomes[0]["drawn_seed"] == outcomes[1]["drawn_seed"]
    assert "budget" in outcomes[1]["bad_budget_on_rank_1"]["error"]
    assert "rank 1" in outcomes[0]["bad_budget_on_rank_1"]["error"]
