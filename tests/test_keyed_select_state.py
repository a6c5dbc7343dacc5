"""``args['mc_dropout'] = 'keyed'`` in the strategies: the model given back as it was, bad values, and two gloo ranks
selecting what one process selects."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from keyed_select_fixtures import (
    BUDGET,
    DistilStyleBALD,
    DyadicNet,
    dyadic_pool,
    keyed_leftovers,
    keyed_strategy,
)
from rank_fixtures import spawn_ranks
from strategy_fixtures import NUM_CLASSES, NUM_FEATURES, FailingNet, module_flags
from torch import nn

import entropy_al
from entropy_al.active_learning_strategies import ScoreStreamingStrategy

# ------------------------------------------------------------------------------------------------------------------
# The model is given back as it was


def test_modules_are_restored_after_select_and_the_mc_methods():
    model = DyadicNet()
    model.train(False)
    flags = module_flags(model)
    s = keyed_strategy(model=model)
    s.select(BUDGET)
    s.predict_prob_dropout(dyadic_pool(), 2)
    s.predict_prob_dropout_split(dyadic_pool(), 2)
    s.n_drop = 2
    s.acquire_scores(dyadic_pool())
    assert keyed_leftovers(model) == [] and module_flags(model) == flags
    assert all(type(m).forward is nn.Dropout.forward for m in model.modules() if isinstance(m, nn.Dropout))


def test_modules_are_restored_after_the_model_raises():
    inner = DyadicNet()
    model = FailingNet(inner, fail_at=3)
    flags = module_flags(model)
    s = keyed_strategy(model=model, batch_size=10, mc_memory_budget=0)
    with pytest.raises(RuntimeError, match="boom"):
        s.select(BUDGET)
    assert keyed_leftovers(model) == [] and module_flags(model) == flags
    # And the next call runs keyed again, with the same masks as a fresh model.
    model.fail_at = -1
    assert s.select(BUDGET) == keyed_strategy(batch_size=10).select(BUDGET)


class SequenceFirst(nn.Module):
    """Dropout on a ``[features, batch]`` view: samples not in dim 0, which keyed dropout cannot key."""

    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.3)
        self.linear = nn.Linear(NUM_FEATURES - 1, NUM_CLASSES)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features[:, 1:].t()).t())


def test_an_unkeyable_layout_is_a_clear_error_and_changes_nothing():
    model = SequenceFirst()
    s = keyed_strategy(model=model, batch_size=8)
    for call in (lambda: s.select(3), lambda: s.predict_prob_dropout_split(dyadic_pool(), 2)):
        with pytest.raises(entropy_al.UnkeyableDropoutError, match=r"mc_dropout.*dim 0 is not the 8 rows"):
            call()
        assert keyed_leftovers(model) == [] and model.training
    s.args["mc_dropout"] = "torch"
    assert len(s.select(3)) == 3


# ------------------------------------------------------------------------------------------------------------------
# Bad values


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({"mc_dropout": "Keyed"}, ValueError, r"args\['mc_dropout'\] to be one of 'torch', 'keyed', got 'Keyed'"),
        ({"mc_dropout": None}, ValueError, r"args\['mc_dropout'\]"),
        ({"mc_seed": 1.0}, TypeError, r"args\['mc_seed'\] to be an int, got float"),
        ({"mc_seed": True}, TypeError, r"args\['mc_seed'\] to be an int, got bool"),
        ({"mc_seed": "7"}, TypeError, r"args\['mc_seed'\] to be an int, got str"),
        ({"mc_seed": 1 << 64}, ValueError, r"args\['mc_seed'\] to be an int in \[-2\*\*63, 2\*\*64\)"),
        ({"mc_seed": -(1 << 63) - 1}, ValueError, r"args\['mc_seed'\]"),
        ({"reproduce_distil": True, "mc_mode": "train"}, ValueError, r"reproduce_distil.*mc_dropout'\] = 'keyed'"),
    ],
)
def test_bad_values_are_refused_naming_the_key(args, error, match):
    with pytest.raises(error, match=match):
        keyed_strategy(**args)
    s = keyed_strategy()  # also when set after construction, at the next call
    s.args.update(args)
    with pytest.raises(error, match=match):
        s.select(3)


def test_torch_dropout_with_reproduce_distil_and_numpy_seeds_are_fine():
    np = pytest.importorskip("numpy")
    assert len(keyed_strategy(mc_dropout="torch", reproduce_distil=True, mc_seed=None).select(3)) == 3
    assert len(keyed_strategy(mc_seed=np.int64(7)).select(3)) == 3


# ------------------------------------------------------------------------------------------------------------------
# Two gloo ranks against this process

_RANK_CASES = {
    "explicit_seed": ({}, None),
    "drawn_seed": ({"mc_seed": None}, "per-rank"),  # rank r seeds torch with 11 + r: rank 0's draw must win
    "buffered": ({"stream_buffer_size": 5, "batch_size": 3}, None),
    "distil_style": ({"stream_buffer_size": 6}, "distil"),
}


def _rank_case(name: str, rank: int) -> ScoreStreamingStrategy:
    args, kind = _RANK_CASES[name]
    built = keyed_strategy(DistilStyleBALD if kind == "distil" else entropy_al.EntropySamplingDropout, **args)
    torch.manual_seed(11 + rank)  # after building: DyadicNet seeds torch itself
    return built


def _rank_main(rank: int, world: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=20))  # fmt: skip
    outcomes: dict[str, Any] = {}
    for name in _RANK_CASES:
        try:
            outcomes[name] = _rank_case(name, rank).select(BUDGET)
        except Exception as exc:  # reported, not hidden: the test compares outcomes
            outcomes[name] = f"{type(exc).__name__}: {exc}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcomes))
    import os

    os._exit(0)


def test_two_gloo_ranks_select_what_one_process_selects(tmp_path):
    hung, outcomes = spawn_ranks(_rank_main, 2, tmp_path)
    assert not hung, f"ranks {hung} still running"
    for name in _RANK_CASES:
        expected = _rank_case(name, 0).select(BUDGET)  # this process: no group, rank 0's torch seed
        assert all(outcome[name] == expected for outcome in outcomes), (name, expected, outcomes)
    assert outcomes[0]["explicit_seed"] == outcomes[0]["buffered"]  # the same seed under other batching
