"""``args['mc_dropout'] = 'keyed'`` in the strategies: the selection of a seed under any batching and world size.

The invariance tests use :class:`DyadicNet`, whose weights and inputs are multiples of 1/8 small enough that every
matmul is exact in float32 (and dropout's 1/(1 − 0.5) = 2 is exact too): its logits are bit-identical whatever the
batch size or the kernel's summation order, so whole selections can be compared, ties included. Models with ordinary
weights are compared with a tolerance (a Linear's rounding may change with the batch size, ~1e-7).
"""

from __future__ import annotations

import pytest
import torch
from keyed_select_fixtures import (
    BUDGET,
    POOL,
    DistilStyleBALD,
    DyadicNet,
    dyadic_pool,
    keyed_strategy,
)
from strategy_fixtures import STRATEGIES, FeatureNet, make_pool
from torch import nn

import entropy_al

# ------------------------------------------------------------------------------------------------------------------
# Invariance of the selection


@pytest.mark.parametrize("cls", list(STRATEGIES.values()), ids=lambda cls: cls.__name__)
def test_selection_does_not_depend_on_batching_buffering_or_stacking(cls):
    expected = keyed_strategy(cls).select(BUDGET)
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
        assert keyed_strategy(cls, **overrides).select(BUDGET) == expected, overrides


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
        return keyed_strategy(model=split, mc_head=(split.trunk, split.head), **args)

    expected = head_strategy().select(BUDGET)
    for overrides in ({"batch_size": 1}, {"batch_size": 50, "mc_memory_budget": 1 << 30}, {"stream_buffer_size": 9}):
        assert head_strategy(**overrides).select(BUDGET) == expected, overrides


def test_distil_style_acquire_scores_is_keyed_by_pool_index():
    """An overridden acquire_scores on select's stream buffers gets pool indices and one seed per select call."""
    expected = keyed_strategy(DistilStyleBALD, stream_buffer_size=POOL).select(BUDGET)
    for buffer_size in (7, 30):
        assert keyed_strategy(DistilStyleBALD, stream_buffer_size=buffer_size).select(BUDGET) == expected, buffer_size


# ------------------------------------------------------------------------------------------------------------------
# Seeds


def test_same_seed_same_selection_different_seed_different_masks():
    assert keyed_strategy().select(BUDGET) == keyed_strategy().select(BUDGET)
    probs = {seed: keyed_strategy(mc_seed=seed).predict_prob_dropout_split(dyadic_pool(), 4) for seed in (1, 2)}
    assert not torch.equal(probs[1], probs[2])
    assert torch.equal(probs[1], keyed_strategy(mc_seed=1).predict_prob_dropout_split(dyadic_pool(), 4))


def test_the_default_seed_comes_from_torch_manual_seed():
    def run(seed: int) -> torch.Tensor:
        built = keyed_strategy(mc_seed=None)
        torch.manual_seed(seed)  # after building: DyadicNet seeds torch itself
        return built.predict_prob_dropout_split(dyadic_pool(), 4)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    # Drawn once per call: two calls in a row draw different seeds.
    s = keyed_strategy(mc_seed=None)
    torch.manual_seed(3)
    assert not torch.equal(
        s.predict_prob_dropout_split(dyadic_pool(), 4), s.predict_prob_dropout_split(dyadic_pool(), 4)
    )


def test_an_explicit_seed_ignores_the_global_generator():
    torch.manual_seed(0)
    first = keyed_strategy().predict_prob_dropout_split(dyadic_pool(), 4)
    torch.manual_seed(99)
    assert torch.equal(keyed_strategy().predict_prob_dropout_split(dyadic_pool(), 4), first)


def test_seeds_that_differ_by_two_to_the_64_are_one_seed():
    a = keyed_strategy(mc_seed=(1 << 64) - 5).predict_prob_dropout_split(dyadic_pool(30), 2)
    assert torch.equal(a, keyed_strategy(mc_seed=-5).predict_prob_dropout_split(dyadic_pool(30), 2))


# ------------------------------------------------------------------------------------------------------------------
# The other MC methods


def test_mc_methods_agree_across_batch_sizes():
    pool = make_pool(70, seed=2)  # FeatureNet: ordinary float weights, hence a tolerance
    small = keyed_strategy(model=FeatureNet(0.5), pool=pool, batch_size=3)
    large = keyed_strategy(model=FeatureNet(0.5), pool=pool, batch_size=70, mc_memory_budget=1 << 30)
    split = small.predict_prob_dropout_split(pool, 5)
    torch.testing.assert_close(split, large.predict_prob_dropout_split(pool, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(small.predict_prob_dropout(pool, 5), split.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(large.predict_prob_dropout(pool, 5), split.mean(0), atol=1e-6, rtol=0)
    small.n_drop = large.n_drop = 5
    torch.testing.assert_close(small.acquire_scores(pool), large.acquire_scores(pool), atol=1e-5, rtol=0)
    # Passes really differ (dropout is on), and keyed masks are not torch's.
    assert (split[0] - split[1]).abs().max() > 1e-3
    torch.manual_seed(0)
    torch_probs = keyed_strategy(model=FeatureNet(0.5), pool=pool, mc_dropout="torch").predict_prob_dropout_split(
        pool, 5
    )
    assert not torch.allclose(torch_probs, split)


def test_select_scores_are_acquire_scores_of_the_pool():
    s = keyed_strategy(batch_size=7)
    s.n_drop = 4
    scores = s.acquire_scores(dyadic_pool())
    expected = torch.sort(scores, descending=True, stable=True).indices[:BUDGET].tolist()
    assert s.select(BUDGET) == expected
