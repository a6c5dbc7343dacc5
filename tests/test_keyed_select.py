"""``args['mc_dropout'] = 'keyed'`` in the strategies: the selection of a seed under any batching and world size.

The invariance tests use :class:`DyadicNet`, whose weights and inputs are multiples of 1/8 small enough that every
matmul is exact in float32 (and dropout's 1/(1 − 0.5) = 2 is exact too): its logits are bit-identical whatever the
batch size or the kernel's summation order, so whole selections can be compared, ties included. Models with ordinary
weights are compared with a tolerance (a Linear's rounding may change with the batch size, ~1e-7).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from rank_fixtures import spawn_ranks
from strategy_fixtures import NUM_CLASSES, NUM_FEATURES, STRATEGIES, FailingNet, FeatureNet, make_pool, module_flags
from torch import nn

import entropy_al
from entropy_al.active_learning_strategies import ScoreStreamingStrategy

POOL = 90
BUDGET = 12
BASE_ARGS = {"device": "cpu", "n_drop": 4, "batch_size": 8, "mc_dropout": "keyed", "mc_seed": 1234}


def dyadic(t: torch.Tensor) -> torch.Tensor:
    return (t * 8).round().clamp(-16, 16) / 8


class DyadicNet(nn.Module):
    """Dropout → Linear → ReLU → Dropout → Linear on exactly representable values: batching-independent logits."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(NUM_FEATURES - 1, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, NUM_CLASSES)
        )
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(dyadic(parameter * 4))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(dyadic(features[:, 1:]))


def dyadic_pool(num_samples: int = POOL, seed: int = 5) -> torch.Tensor:
    return make_pool(num_samples, seed=seed)


def strategy(cls=entropy_al.EntropySamplingDropout, model: nn.Module | None = None, pool=None, **args: Any):
    pool = dyadic_pool() if pool is None else pool
    return cls(None, pool, model or DyadicNet(), NUM_CLASSES, {**BASE_ARGS, **args})


def keyed_leftovers(model: nn.Module) -> list[str]:
    """Modules that still carry an instance ``forward`` (keyed_mc_dropout's patch) after a call."""
    return [name for name, module in model.named_modules() if "forward" in module.__dict__]


class DistilStyleBALD(ScoreStreamingStrategy):
    """DISTIL's extension point: ``acquire_scores`` runs predict_prob_dropout_split on each stream buffer."""

    def acquire_scores(self, unlabeled_buffer):
        probs = self.predict_prob_dropout_split(unlabeled_buffer, 4)
        mean = probs.mean(0)
        entropy = -(mean * torch.log(mean)).sum(1)
        return entropy + (probs * torch.log(probs)).sum(2).mean(0)


# ------------------------------------------------------------------------------------------------------------------
# Invariance of the selection


@pytest.mark.parametrize("cls", list(STRATEGIES.values()), ids=lambda cls: cls.__name__)
def test_selection_does_not_depend_on_batching_buffering_or_stacking(cls):
    expected = strategy(cls).select(BUDGET)
    variants = [
        {"batch_size": 2},
        {"batch_size": 13},
        {"batch_size": POOL},
        {"stream_buffer_size": 7, "batch_size": 3},
        {"mc_memory_budget": 0},
        {"mc_memory_budget": 1 << 30, "batch_size": 30},  # every pass of a batch stacked in one forward
        {"mc_memory_budget": 6000, "batch_size": 30},  # a few passes per forward, the rest split
        {"batch_sampler": [list(range(i, min(POOL, i + 11))) for i in range(0, POOL, 11)][::-1]},
    ]
    if cls is not entropy_al.EntropySamplingDropout:  # the scores differ, not the machinery: a few variants
        variants = variants[2:6]
    else:
        variants.append({"batch_size": 1})
    for overrides in variants:
        assert strategy(cls, **overrides).select(BUDGET) == expected, overrides


def test_head_only_mc_is_invariant_too():
    def head_strategy(**args):
        model = DyadicNet()
        trunk = nn.Sequential(nn.Identity())  # the pool's columns pass through; the whole body is the head

        class Split(nn.Module):
            def __init__(self):
                super().__init__()
                self.trunk, self.head = trunk, model

            def forward(self, x):
                return self.head(self.trunk(x))

        split = Split()
        return strategy(model=split, mc_head=(split.trunk, split.head), **args)

    expected = head_strategy().select(BUDGET)
    for overrides in ({"batch_size": 1}, {"batch_size": 50, "mc_memory_budget": 1 << 30}, {"stream_buffer_size": 9}):
        assert head_strategy(**overrides).select(BUDGET) == expected, overrides


def test_distil_style_acquire_scores_is_keyed_by_pool_index():
    """An overridden acquire_scores on select's stream buffers gets pool indices and one seed per select call."""
    expected = strategy(DistilStyleBALD, stream_buffer_size=POOL).select(BUDGET)
    for buffer_size in (7, 30):
        assert strategy(DistilStyleBALD, stream_buffer_size=buffer_size).select(BUDGET) == expected, buffer_size


# ------------------------------------------------------------------------------------------------------------------
# Seeds


def test_same_seed_same_selection_different_seed_different_masks():
    assert strategy().select(BUDGET) == strategy().select(BUDGET)
    probs = {seed: strategy(mc_seed=seed).predict_prob_dropout_split(dyadic_pool(), 4) for seed in (1, 2)}
    assert not torch.equal(probs[1], probs[2])
    assert torch.equal(probs[1], strategy(mc_seed=1).predict_prob_dropout_split(dyadic_pool(), 4))


def test_the_default_seed_comes_from_torch_manual_seed():
    def run(seed: int) -> torch.Tensor:
        built = strategy(mc_seed=None)
        torch.manual_seed(seed)  # after building: DyadicNet seeds torch itself
        return built.predict_prob_dropout_split(dyadic_pool(), 4)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    # Drawn once per call: two calls in a row draw different seeds.
    s = strategy(mc_seed=None)
    torch.manual_seed(3)
    assert not torch.equal(
        s.predict_prob_dropout_split(dyadic_pool(), 4), s.predict_prob_dropout_split(dyadic_pool(), 4)
    )


def test_an_explicit_seed_ignores_the_global_generator():
    torch.manual_seed(0)
    first = strategy().predict_prob_dropout_split(dyadic_pool(), 4)
    torch.manual_seed(99)
    assert torch.equal(strategy().predict_prob_dropout_split(dyadic_pool(), 4), first)


def test_seeds_that_differ_by_two_to_the_64_are_one_seed():
    a = strategy(mc_seed=(1 << 64) - 5).predict_prob_dropout_split(dyadic_pool(30), 2)
    assert torch.equal(a, strategy(mc_seed=-5).predict_prob_dropout_split(dyadic_pool(30), 2))


# ------------------------------------------------------------------------------------------------------------------
# The other MC methods


def test_mc_methods_agree_across_batch_sizes():
    pool = make_pool(70, seed=2)  # FeatureNet: ordinary float weights, hence a tolerance
    small = strategy(model=FeatureNet(0.5), pool=pool, batch_size=3)
    large = strategy(model=FeatureNet(0.5), pool=pool, batch_size=70, mc_memory_budget=1 << 30)
    split = small.predict_prob_dropout_split(pool, 5)
    torch.testing.assert_close(split, large.predict_prob_dropout_split(pool, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(small.predict_prob_dropout(pool, 5), split.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(large.predict_prob_dropout(pool, 5), split.mean(0), atol=1e-6, rtol=0)
    small.n_drop = large.n_drop = 5
    torch.testing.assert_close(small.acquire_scores(pool), large.acquire_scores(pool), atol=1e-5, rtol=0)
    # Passes really differ (dropout is on), and keyed masks are not torch's.
    assert (split[0] - split[1]).abs().max() > 1e-3
    torch.manual_seed(0)
    torch_probs = strategy(model=FeatureNet(0.5), pool=pool, mc_dropout="torch").predict_prob_dropout_split(pool, 5)
    assert not torch.allclose(torch_probs, split)


def test_select_scores_are_acquire_scores_of_the_pool():
    s = strategy(batch_size=7)
    s.n_drop = 4
    scores = s.acquire_scores(dyadic_pool())
    expected = torch.sort(scores, descending=True, stable=True).indices[:BUDGET].tolist()
    assert s.select(BUDGET) == expected


# ------------------------------------------------------------------------------------------------------------------
# The model is given back as it was


def test_modules_are_restored_after_select_and_the_mc_methods():
    model = DyadicNet()
    model.train(False)
    flags = module_flags(model)
    s = strategy(model=model)
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
    s = strategy(model=model, batch_size=10, mc_memory_budget=0)
    with pytest.raises(RuntimeError, match="boom"):
        s.select(BUDGET)
    assert keyed_leftovers(model) == [] and module_flags(model) == flags
    # And the next call runs keyed again, with the same masks as a fresh model.
    model.fail_at = -1
    assert s.select(BUDGET) == strategy(batch_size=10).select(BUDGET)


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
    s = strategy(model=model, batch_size=8)
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
        strategy(**args)
    s = strategy()  # also when set after construction, at the next call
    s.args.update(args)
    with pytest.raises(error, match=match):
        s.select(3)


def test_torch_dropout_with_reproduce_distil_and_numpy_seeds_are_fine():
    np = pytest.importorskip("numpy")
    assert len(strategy(mc_dropout="torch", reproduce_distil=True, mc_seed=None).select(3)) == 3
    assert len(strategy(mc_seed=np.int64(7)).select(3)) == 3


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
    built = strategy(DistilStyleBALD if kind == "distil" else entropy_al.EntropySamplingDropout, **args)
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
