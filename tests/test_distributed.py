"""select() across torch.distributed ranks: spawned gloo groups on the CPU against the single-process selection.

Starting a process costs seconds here (importing torch), so one spawn per world size runs every case in order on
the same process group (``_CASES``) and writes each rank's outcomes to a file; the tests then compare them with the
selection this (non-distributed) process makes. Every wait is bounded: the process group's timeout inside the ranks
and a deadline on joining them, so a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from rank_fixtures import spawn_ranks
from strategy_fixtures import NUM_CLASSES, STRATEGIES, FailingNet, make_pool, pool_ids
from torch import nn

from entropy_al.active_learning_strategies import ScoreStreamingStrategy
from entropy_al.selection import collective_device, distributed_group, shard_bounds

# Inside the ranks: a collective waits at most this long for a peer (then raises).
PG_TIMEOUT_S = 20
# The test waits at most this long for all ranks of one spawn to exit.
JOIN_TIMEOUT_S = 60
NO_DROPOUT = ".*has no dropout module"
NAN = float("nan")


class PassNet(nn.Module):
    """A deterministic model whose logits differ pass by pass (so BALD is not 0), whatever the batching.

    A sample's ``k``-th pass gives ``base(x) + k · drift(x)``, with ``k`` counted per pool index (feature 0) in row
    order (a forward that stacks several passes of a batch holds pass ``p + j`` in copy ``j``), so a shard sees
    exactly the logits the whole pool would. ``special`` rows replace a sample's logits.
    """

    def __init__(self, special: dict[int, list[float]] | None = None):
        super().__init__()
        torch.manual_seed(3)
        self.base = nn.Linear(5, NUM_CLASSES)
        self.drift = nn.Linear(5, NUM_CLASSES)
        self.special = dict(special or {})
        self.passes: Counter[int] = Counter()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        ids = pool_ids(features).tolist()
        k = torch.empty(len(ids), dtype=features.dtype)
        for row, index in enumerate(ids):
            k[row] = self.passes[index]
            self.passes[index] += 1
        x = features[:, 1:]
        logits = (self.base(x) + 0.5 * k[:, None] * self.drift(x)) * 2.0
        for row, index in enumerate(ids):
            if index in self.special:
                logits[row] = torch.tensor(self.special[index], dtype=logits.dtype)
        return logits


class ColumnScores(ScoreStreamingStrategy):
    """DISTIL's extension point (the non-fused path): the score of a sample is its feature 1, rounded (ties)."""

    def acquire_scores(self, unlabeled_buffer: Any) -> torch.Tensor:
        items = torch.stack([unlabeled_buffer[i] for i in range(len(unlabeled_buffer))])
        return (items[:, 1] * 2).round()


class ExitingNet(nn.Module):
    """Ends its process on the first forward, as a killed or crashed rank would (no exception to catch)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        os._exit(3)


def _mc(score: str, num_samples: int, model: nn.Module | None = None, **args: Any) -> ScoreStreamingStrategy:
    args = {"device": "cpu", "n_drop": 3, **args}
    return STRATEGIES[score](None, make_pool(num_samples, seed=5), model or PassNet(), NUM_CLASSES, args)


TIES = {3: [0.0] * 4, 12: [0.0] * 4, 20: [0.0] * 4}  # uniform: the top score, tied, on different ranks
BROKEN = {9: [NAN, 0.0, 0.0, 0.0], 16: [float("inf"), 0.0, 0.0, 0.0], 22: [-float("inf")] * 4}

# name → (rank → (strategy, budget)). Run in this order on one process group; rank-independent unless noted.
_CASES: dict[str, Callable[[int], tuple[ScoreStreamingStrategy, Any]]] = {
    "entropy_ties": lambda rank: (_mc("entropy", 23, PassNet(TIES)), 7),
    "bald": lambda rank: (_mc("bald", 23), 7),
    "margin": lambda rank: (_mc("margin", 23, PassNet(TIES)), 7),
    "least_confidence": lambda rank: (_mc("least_confidence", 23), 7),
    "batched_buffered": lambda rank: (_mc("entropy", 23, batch_size=4, stream_buffer_size=5), 9),
    "reproduce_distil": lambda rank: (_mc("entropy", 23, reproduce_distil=True, batch_size=2), 6),
    "budget_over_pool": lambda rank: (_mc("entropy", 5), 50),
    "pool_of_two": lambda rank: (_mc("margin", 2), 2),  # 3 ranks: one shard is empty
    "shards_below_budget": lambda rank: (_mc("bald", 10), 8),
    "empty_pool": lambda rank: (_mc("entropy", 0), 3),
    "budget_zero": lambda rank: (_mc("entropy", 10), 0),
    "acquire_scores": lambda rank: (
        ColumnScores(None, make_pool(17, seed=1), PassNet(), NUM_CLASSES, {"device": "cpu", "stream_buffer_size": 4}),
        6,
    ),
    "nan_raise": lambda rank: (_mc("entropy", 23, PassNet(BROKEN)), 4),
    "nan_omit": lambda rank: (_mc("entropy", 23, PassNet(BROKEN), nan_policy="omit"), 22),
    "model_raises_on_rank_1": lambda rank: (
        _mc("entropy", 23, FailingNet(PassNet(), fail_at=2) if rank == 1 else PassNet()),
        5,
    ),
    "after_a_failure": lambda rank: (_mc("least_confidence", 23, PassNet(TIES)), 7),
    "bad_budget_on_rank_1": lambda rank: (_mc("entropy", 23), -1 if rank == 1 else 5),
    "pools_differ": lambda rank: (_mc("entropy", 20 + rank), 5),
    "distributed_false": lambda rank: (_mc("entropy", 23, distributed=False), 7),
    "batch_sampler": lambda rank: (_mc("entropy", 23, batch_sampler=[list(range(23))]), 7),
    # Not in the shared spawn: it leaves the group broken.
    "killed_rank_1": lambda rank: (_mc("entropy", 23, ExitingNet() if rank == 1 else PassNet()), 5),
}
SHARED_SPAWN = [name for name in _CASES if name != "killed_rank_1"]
# Cases whose expected outcome is the single-process one (its selection, or its error and warnings).
SAME_AS_SINGLE = [
    name
    for name in SHARED_SPAWN
    if name not in {"model_raises_on_rank_1", "bad_budget_on_rank_1", "pools_differ", "batch_sampler"}
]


def _outcome(run: Callable[[], list[int]]) -> dict[str, Any]:
    """A selection's result, error and RuntimeWarnings, as JSON."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", NO_DROPOUT)
        try:
            result: dict[str, Any] = {"selected": run()}
        except Exception as exc:
            result = {"error": type(exc).__name__, "message": str(exc)}
    # With the file each warning points at: the caller of select(), here as in a single-process selection.
    result["warnings"] = [
        [Path(w.filename).name, str(w.message)] for w in caught if issubclass(w.category, RuntimeWarning)
    ]
    return result


def _rank_main(rank: int, world: int, init_method: str, out_dir: str, names: list[str]) -> None:
    """One rank: joins the gloo group, runs the named cases in order, writes ``rank<r>.json`` after each."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=PG_TIMEOUT_S)
    )
    outcomes: dict[str, Any] = {}
    path = Path(out_dir) / f"rank{rank}.json"
    for name in names:
        started = time.monotonic()
        strategy, budget = _CASES[name](rank)
        outcomes[name] = _outcome(lambda strategy=strategy, budget=budget: strategy.select(budget))
        outcomes[name]["seconds"] = time.monotonic() - started
        path.write_text(json.dumps(outcomes))
    # Skip the group's teardown, which can block or abort once a peer has died; the outcomes are on disk.
    os._exit(0)


def _spawn(world: int, out_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    """Runs ``names`` on a fresh ``world``-rank gloo group; returns each rank's outcomes (killing hung ranks)."""
    hung, outcomes = spawn_ranks(_rank_main, world, out_dir, (names,), JOIN_TIMEOUT_S)
    assert not hung, f"ranks {hung} of {world} still running after {JOIN_TIMEOUT_S} s; done: {outcomes}"
    return outcomes


@pytest.fixture(scope="module", params=[2, 3], ids=lambda world: f"world{world}")
def ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every rank's outcomes of every case, from one spawned gloo group of ``world`` processes."""
    return _spawn(request.param, tmp_path_factory.mktemp(f"world{request.param}"), SHARED_SPAWN)


def _single(name: str) -> dict[str, Any]:
    """The outcome of case ``name`` in this process, which has no process group: the single-process selection."""
    strategy, budget = _CASES[name](0)
    return _outcome(lambda: strategy.select(budget))


def _without_time(outcome: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in outcome.items() if key != "seconds"}


# ------------------------------------------------------------------------------------------------------------------
# Across ranks: the single-process selection, on every rank


@pytest.mark.parametrize("name", SAME_AS_SINGLE)
def test_every_rank_returns_the_single_process_selection(ranks, name):
    expected = _single(name)
    assert "selected" in expected or name.startswith("nan_raise"), expected
    for rank, outcomes in enumerate(ranks):
        assert name in outcomes, f"rank {rank} never finished {name!r}"
        assert _without_time(outcomes[name]) == expected, f"rank {rank} of {len(ranks)}"


def test_ties_across_ranks_go_to_the_lower_pool_index(ranks):
    # Shards (2 ranks) [0, 11) [11, 23), (3 ranks) [0, 7) [7, 15) [15, 23): the three ties sit on different ranks.
    assert all(outcomes["entropy_ties"]["selected"][:3] == [3, 12, 20] for outcomes in ranks)


def test_small_pools_and_large_budgets(ranks):
    expected = _single("budget_over_pool")["selected"]
    assert sorted(expected) == list(range(5))
    assert all(outcomes["budget_over_pool"]["selected"] == expected for outcomes in ranks)
    assert sorted(ranks[0]["pool_of_two"]["selected"]) == [0, 1]
    assert all(outcomes["empty_pool"]["selected"] == [] == outcomes["budget_zero"]["selected"] for outcomes in ranks)


def test_nan_raise_names_the_global_first_index_on_every_rank(ranks):
    for outcomes in ranks:
        assert outcomes["nan_raise"]["error"] == "ValueError"
        assert "for 3 pool samples, the first at pool index 9;" in outcomes["nan_raise"]["message"]


def test_nan_omit_ranks_broken_samples_last_and_warns_once(ranks):
    for outcomes in ranks:
        assert outcomes["nan_omit"]["selected"][-2:] == [9, 16]
        [(filename, message)] = outcomes["nan_omit"]["warnings"]
        assert filename == Path(__file__).name and "for 3 pool samples (the first at pool index 9)" in message


def test_a_rank_whose_model_raises_fails_every_rank(ranks):
    world = len(ranks)
    start, stop = shard_bounds(23, 1, world)
    for rank, outcomes in enumerate(ranks):
        outcome = outcomes["model_raises_on_rank_1"]
        assert outcome["error"] == "RuntimeError", (rank, outcome)
        if rank == 1:  # its own exception, as it was raised
            assert outcome["message"] == "boom: the model failed halfway through the pool"
        else:
            assert outcome["message"].startswith(
                f"EntropySamplingDropout.select: rank 1 of {world} failed while scoring its shard [{start}, {stop}) "
                f"of the pool, so no rank returns a selection (this is rank {rank}); rank 1's error: RuntimeError: "
                "boom: the model failed halfway through the pool"
            ), outcome["message"]
        # No rank waited for the process group's timeout.
        assert outcome["seconds"] < PG_TIMEOUT_S / 2
    # The group is still usable afterwards.
    assert all("selected" in outcomes["after_a_failure"] for outcomes in ranks)


def test_a_bad_argument_on_one_rank_fails_every_rank(ranks):
    for rank, outcomes in enumerate(ranks):
        outcome = outcomes["bad_budget_on_rank_1"]
        if rank == 1:
            assert outcome["error"] == "ValueError" and "`budget`" in outcome["message"]
        else:
            assert outcome["error"] == "RuntimeError"
            assert "rank 1 of" in outcome["message"] and "checking the pool and budget" in outcome["message"]
            assert "`budget`" in outcome["message"]


def test_ranks_with_different_pools_all_raise(ranks):
    sizes = [20 + rank for rank in range(len(ranks))]
    for outcomes in ranks:
        assert outcomes["pools_differ"]["error"] == "ValueError"
        assert f"got pool sizes {sizes} and budgets {[5] * len(ranks)}" in outcomes["pools_differ"]["message"]


def test_a_batch_sampler_cannot_be_sharded(ranks):
    for outcomes in ranks:
        assert outcomes["batch_sampler"]["error"] == "ValueError"
        assert "args['batch_sampler'] orders the whole pool" in outcomes["batch_sampler"]["message"]


# ------------------------------------------------------------------------------------------------------------------
# A rank that dies: nothing to catch, the process group reports it


def test_a_killed_rank_makes_the_others_raise_not_hang(tmp_path):
    outcomes = _spawn(2, tmp_path, ["entropy_ties", "killed_rank_1"])
    assert outcomes[1].keys() == {"entropy_ties"}  # rank 1 ended inside the second case
    # gloo reports the closed connection at once (a RuntimeError); any backend would raise by the group's timeout.
    survivor = outcomes[0]["killed_rank_1"]
    assert "error" in survivor, survivor
    assert survivor["seconds"] < PG_TIMEOUT_S + 5


# ------------------------------------------------------------------------------------------------------------------
# Without a process group (this process)


def test_distributed_true_needs_a_process_group():
    assert not dist.is_initialized()
    s = _mc("entropy", 5, distributed=True)
    with pytest.raises(RuntimeError, match=r"args\['distributed'\] = True but torch.distributed has no default"):
        s.select(2)


def test_distributed_key_is_checked():
    with pytest.raises(TypeError, match=r"args\['distributed'\] to be True, False or None, got str 'yes'"):
        _mc("entropy", 5, distributed="yes")


def test_process_group_of_one_selects_alone(tmp_path):
    # backend=None: a group with one backend per device type, which reports its backend as "undefined".
    dist.init_process_group(None, init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        assert collective_device("where", dist.group.WORLD) == torch.device("cpu")
        assert distributed_group("where", True) is None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", NO_DROPOUT)
            assert _mc("entropy", 23, PassNet(TIES)).select(7) == _single("entropy_ties")["selected"]
    finally:
        dist.destroy_process_group()
