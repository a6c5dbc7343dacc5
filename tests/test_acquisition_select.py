"""Stochastic acquisition in select(): args['acquisition'], ['coldness'], ['acquisition_seed'] on every path.

Keyed dropout on :class:`DyadicNet` makes the scores bit-identical whatever the batching, so whole selections (a
sample for a given seed) can be compared across batch sizes, buffers, memory budgets, batch samplers, a DISTIL-style
``acquire_scores`` and ranks. The distribution of the sample itself is tested at the op level
(tests/test_acquisition_distribution.py).
"""

from __future__ import annotations

import random

import pytest
import torch
from keyed_select_fixtures import BUDGET, POOL, DistilStyleBALD, DyadicNet, dyadic_pool, keyed_strategy
from strategy_fixtures import NUM_CLASSES, FeatureNet, make_pool

import entropy_al
from entropy_al import reference

STOCHASTIC = ["power", "softmax"]
CLASSES = [entropy_al.EntropySamplingDropout, entropy_al.BALDDropout]
NO_DROPOUT = "ignore:.*has no dropout module"


def _shuffled_batches(size: int, seed: int = 0) -> list[list[int]]:
    order = list(range(POOL))
    random.Random(seed).shuffle(order)
    return [order[i : i + size] for i in range(0, POOL, size)]


# What must not change a seed's sample (each differs from BASE_ARGS' batch_size 8 and the default buffer).
BATCHINGS = [
    {"batch_size": 1},
    {"batch_size": 90},
    {"stream_buffer_size": 1},
    {"stream_buffer_size": 7, "batch_size": 3},
    {"mc_memory_budget": 0},
    {"mc_memory_budget": 1 << 30, "batch_size": 30},
    {"batch_sampler": _shuffled_batches(11)},
    {"batch_sampler": _shuffled_batches(1, seed=1), "stream_buffer_size": 5},
]


def _expected(strategy, acquisition: str, coldness: float, seed: int, k: int = BUDGET) -> list[int]:
    """The sample by definition: a stable sort of the perturbed scores of the whole pool (the float64-free oracle
    of the fused ops' keys), the scores from acquire_scores (the same keyed masks as select's)."""
    scores = strategy.acquire_scores(strategy.unlabeled_dataset)
    ranked = reference.perturb_scores_reference(scores, 0, acquisition, coldness, seed)
    ranked = torch.where(torch.isnan(ranked), torch.full_like(ranked, -float("inf")), ranked)
    return torch.sort(ranked, descending=True, stable=True).indices[:k].tolist()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("acquisition", STOCHASTIC)
def test_the_sample_is_the_perturbed_top_k_whatever_the_batching(cls, acquisition):
    args = {"acquisition": acquisition, "coldness": 2.5, "acquisition_seed": 77}
    picked = keyed_strategy(cls, **args).select(BUDGET)
    assert picked == _expected(keyed_strategy(cls, **args), acquisition, 2.5, 77)
    assert picked != keyed_strategy(cls).select(BUDGET), "a sample that equals the top-k tests nothing"
    for overrides in BATCHINGS:
        assert keyed_strategy(cls, **args, **overrides).select(BUDGET) == picked, overrides


@pytest.mark.parametrize("acquisition", STOCHASTIC)
def test_distil_style_acquire_scores_is_perturbed_the_same_whatever_the_buffer(acquisition):
    args = {"acquisition": acquisition, "acquisition_seed": -5, "stream_buffer_size": 13}
    picked = keyed_strategy(DistilStyleBALD, **args).select(BUDGET)
    expected = keyed_strategy(DistilStyleBALD, **args)
    scores = torch.cat([expected.acquire_scores(part) for part in _pool_slices(expected, 13)])
    ranked = reference.perturb_scores_reference(scores, 0, acquisition, 1.0, -5)
    assert picked == torch.sort(ranked, descending=True, stable=True).indices[:BUDGET].tolist()
    for buffer in (5, 1000):
        assert keyed_strategy(DistilStyleBALD, **{**args, "stream_buffer_size": buffer}).select(BUDGET) == picked
    assert picked != keyed_strategy(DistilStyleBALD, stream_buffer_size=13).select(BUDGET)


def _pool_slices(strategy, size: int):
    from entropy_al.active_learning_strategies._runs import PoolSlice

    seed = strategy.args["mc_seed"]
    for lo in range(0, POOL, size):
        yield PoolSlice(strategy.unlabeled_dataset, list(range(lo, min(POOL, lo + size))), lo, seed)


@pytest.mark.parametrize("cls", [*CLASSES, DistilStyleBALD], ids=lambda c: c.__name__)
@pytest.mark.parametrize("acquisition", STOCHASTIC)
def test_huge_coldness_is_the_top_k(cls, acquisition):
    top = keyed_strategy(cls).select(BUDGET + 1)
    scores = keyed_strategy(cls).acquire_scores(dyadic_pool()).double()
    best = scores[top]
    # Distinct and well separated scores, so the top-k is a well-defined order that β · (gaps) ≫ noise must keep.
    assert (best[:-1] - best[1:]).min() > 1e-6 * best.abs().max()
    sampled = keyed_strategy(cls, acquisition=acquisition, coldness=1e30, acquisition_seed=3).select(BUDGET + 1)
    assert sampled == top


@pytest.mark.filterwarnings(NO_DROPOUT)
@pytest.mark.parametrize("keyed", [False, True])
def test_top_is_todays_selection_and_draws_nothing(keyed):
    """'top' with any coldness and seed: the selection without the keys, and torch's generator untouched."""
    pool = make_pool(60, seed=2)
    base = {"device": "cpu", "n_drop": 3, "batch_size": 7}
    if keyed:
        base.update(mc_dropout="keyed", mc_seed=9)
    runs = []
    for extra in ({}, {"acquisition": "top"}, {"acquisition": "top", "coldness": 7.0, "acquisition_seed": 4}):
        torch.manual_seed(0)
        strategy = entropy_al.BALDDropout(None, pool, FeatureNet(0.5), NUM_CLASSES, {**base, **extra})
        torch.manual_seed(1)
        picked = strategy.select(10)
        runs.append((picked, torch.rand(1).item()))
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("acquisition", STOCHASTIC)
def test_different_seeds_give_different_samples(acquisition):
    samples = {tuple(keyed_strategy(acquisition=acquisition, acquisition_seed=s).select(BUDGET)) for s in range(6)}
    assert len(samples) == 6
    again = keyed_strategy(acquisition=acquisition, acquisition_seed=2).select(BUDGET)
    assert tuple(again) in samples


def test_seed_none_is_one_draw_from_torchs_generator_per_select():
    strategy = keyed_strategy(entropy_al.PowerBALDDropout)
    assert strategy.args["acquisition"] == "power" and strategy.args.get("acquisition_seed") is None
    torch.manual_seed(123)
    first, second = strategy.select(BUDGET), strategy.select(BUDGET)
    torch.manual_seed(123)
    draws = [int(torch.empty((), dtype=torch.int64).random_()) for _ in range(2)]
    assert first == keyed_strategy(entropy_al.BALDDropout, acquisition="power", acquisition_seed=draws[0]).select(
        BUDGET
    )
    assert second == keyed_strategy(entropy_al.BALDDropout, acquisition="power", acquisition_seed=draws[1]).select(
        BUDGET
    )
    assert first != second
    torch.manual_seed(123)
    assert strategy.select(BUDGET) == first


def test_seed_none_draws_after_the_keyed_seed():
    """With both seeds left to draw: the keyed-dropout seed first, then the acquisition seed."""
    strategy = keyed_strategy(acquisition="softmax", mc_seed=None)
    torch.manual_seed(8)
    picked = strategy.select(BUDGET)
    torch.manual_seed(8)
    mc_seed, acquisition_seed = (int(torch.empty((), dtype=torch.int64).random_()) for _ in range(2))
    explicit = keyed_strategy(acquisition="softmax", mc_seed=mc_seed, acquisition_seed=acquisition_seed)
    assert explicit.select(BUDGET) == picked


def test_power_classes_default_to_power_and_take_overrides():
    for power_cls, cls in (
        (entropy_al.PowerEntropySamplingDropout, entropy_al.EntropySamplingDropout),
        (entropy_al.PowerBALDDropout, entropy_al.BALDDropout),
    ):
        assert issubclass(power_cls, cls) and power_cls.mc_score == cls.mc_score
        assert power_cls.__name__ in entropy_al.active_learning_strategies.__all__
        assert keyed_strategy(power_cls, acquisition_seed=5).select(BUDGET) == keyed_strategy(
            cls, acquisition="power", acquisition_seed=5
        ).select(BUDGET)
        assert keyed_strategy(power_cls, acquisition="top").select(BUDGET) == keyed_strategy(cls).select(BUDGET)
        assert power_cls(None, dyadic_pool(), DyadicNet(), NUM_CLASSES).args["acquisition"] == "power"


# ------------------------------------------------------------------------------------------------------------------
# Errors, before any forward


class NoForward(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("the model ran before the arguments were checked")


BAD_ARGS = [
    ({"acquisition": "best"}, ValueError, r"args\['acquisition'\] to be one of 'top', 'power', 'softmax', got 'best'"),
    ({"acquisition": None}, ValueError, r"args\['acquisition'\] to be one of"),
    ({"coldness": 0.0}, ValueError, r"args\['coldness'\] to be a finite float > 0, got 0.0"),
    ({"coldness": -1}, ValueError, r"args\['coldness'\] to be a finite float > 0"),
    ({"coldness": float("nan")}, ValueError, r"args\['coldness'\] to be a finite float > 0"),
    ({"coldness": float("inf")}, ValueError, r"args\['coldness'\] to be a finite float > 0"),
    ({"coldness": "2"}, TypeError, r"args\['coldness'\] to be a float > 0, got str"),
    ({"coldness": True}, TypeError, r"args\['coldness'\] to be a float > 0, got bool"),
    ({"acquisition_seed": 1.5}, TypeError, r"args\['acquisition_seed'\] to be an int, got float"),
    ({"acquisition_seed": True}, TypeError, r"args\['acquisition_seed'\] to be an int, got bool"),
    ({"acquisition_seed": 1 << 64}, ValueError, r"args\['acquisition_seed'\] to be an int in \[-2\*\*63, 2\*\*64\)"),
]


@pytest.mark.parametrize("args, error, match", BAD_ARGS, ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_bad_acquisition_args_name_the_key(args, error, match):
    pool = make_pool(10)
    with pytest.raises(error, match=r"EntropySamplingDropout.*" + match):
        entropy_al.EntropySamplingDropout(None, pool, NoForward(), NUM_CLASSES, {"device": "cpu", **args})
    strategy = entropy_al.EntropySamplingDropout(None, pool, NoForward(), NUM_CLASSES, {"device": "cpu"})
    strategy.args.update(args)  # DISTIL lets the user edit args between calls
    with pytest.raises(error, match=r"EntropySamplingDropout.select.*" + match):
        strategy.select(3)


@pytest.mark.parametrize("cls", [entropy_al.MarginSamplingDropout, entropy_al.LeastConfidenceSamplingDropout])
def test_power_on_scores_that_are_never_positive_suggests_softmax(cls):
    pool = make_pool(10)
    message = r"args\['acquisition'\] = 'power' .* <= 0; use args\['acquisition'\] = 'softmax'"
    with pytest.raises(ValueError, match=rf"{cls.__name__}: {message}"):
        cls(None, pool, NoForward(), NUM_CLASSES, {"device": "cpu", "acquisition": "power"})
    strategy = cls(None, pool, NoForward(), NUM_CLASSES, {"device": "cpu", "acquisition": "softmax"})
    strategy.args["acquisition"] = "power"
    with pytest.raises(ValueError, match=rf"{cls.__name__}.select: {message}"):
        strategy.select(3)


def test_softmax_on_margin_samples():
    args = {"acquisition": "softmax", "coldness": 4.0, "acquisition_seed": 1}
    picked = keyed_strategy(entropy_al.MarginSamplingDropout, **args).select(BUDGET)
    expected = keyed_strategy(entropy_al.MarginSamplingDropout, **args)
    assert picked == _expected(expected, "softmax", 4.0, 1)
    assert keyed_strategy(entropy_al.MarginSamplingDropout, **args, batch_size=1).select(BUDGET) == picked
