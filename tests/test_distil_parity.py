"""``args['reproduce_distil'] = True`` selects exactly what DISTIL selects, under the same seed, on CPU.

The oracle below is written from the documented behaviour of DISTIL (decile-team/distil, main), not from its code:
the pool is scored buffer by buffer (``stream_buffer_size``); for each buffer a ``DataLoader(batch_size,
shuffle=False)`` is iterated ``n_drop`` times (pass-major: every pass re-reads the buffer), the whole model in
train mode and never restored; softmax probabilities are accumulated in float32; the scores use DISTIL's formulas;
the merge keeps the best ``budget`` (here the contract's stable sort). The oracle's only random-number use is the
one int64 each ``iter(DataLoader)`` draws, checked on its own below.
"""

from __future__ import annotations

import copy

import pytest
import torch
from strategy_fixtures import NUM_CLASSES, SCORES, STRATEGIES, FeatureNet, as_items, make_pool, stable_selection
from torch import nn
from torch.utils.data import DataLoader, Subset


def distil_probabilities(model: nn.Module, dataset, n_drop: int, batch_size: int) -> torch.Tensor:
    """DISTIL's predict_prob_dropout_split: ``[n_drop, N, C]`` float32, pass-major, whole model in train mode."""
    model.train()
    probs = torch.zeros(n_drop, len(dataset), NUM_CLASSES)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for k in range(n_drop):
            position = 0
            for batch in loader:
                inputs = batch["features"] if isinstance(batch, dict) else batch
                out = torch.softmax(model(inputs), dim=1)
                probs[k, position : position + len(out)] = out
                position += len(out)
    return probs


def distil_scores(probs: torch.Tensor, score: str) -> torch.Tensor:
    """DISTIL's score formulas (natural log; NaN where a probability underflows to 0)."""
    mean = probs.sum(0) / probs.shape[0]  # DISTIL accumulates the passes, then divides
    if score == "entropy":
        return -(mean * torch.log(mean)).sum(1)
    if score == "bald":
        expected_entropy = (-probs * torch.log(probs)).sum(2).mean(0)
        return (-mean * torch.log(mean)).sum(1) - expected_entropy
    top = mean.sort(dim=1, descending=True).values
    return top[:, 1] - top[:, 0] if score == "margin" else -top[:, 0]


def distil_select(model, pool, score, budget, n_drop, batch_size, buffer_size) -> tuple[list[int], torch.Tensor]:
    """DISTIL's streaming select: the selection and the scores of the whole pool."""
    scores = []
    for start in range(0, len(pool), buffer_size):
        buffer = Subset(pool, list(range(start, min(len(pool), start + buffer_size))))
        scores.append(distil_scores(distil_probabilities(model, buffer, n_drop, batch_size), score))
    scores = torch.cat(scores)
    return stable_selection(scores, budget), scores


def test_each_dataloader_iteration_draws_one_int64_from_the_global_generator():
    """The fact the reproduction rests on; if torch changes it, this fails first."""
    torch.manual_seed(123)
    torch.empty((), dtype=torch.int64).random_()
    expected = torch.rand(4)
    torch.manual_seed(123)
    loader = DataLoader(list(range(10)), batch_size=3)  # building a loader draws nothing
    for _ in loader:  # iterating to the end draws nothing more
        pass
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("kind", ["tensor", "dict"])
@pytest.mark.parametrize("score", SCORES)
def test_reproduce_distil_selects_what_distil_selects(score, kind):
    pool = as_items(make_pool(46, seed=30), kind)  # no batch of one: BatchNorm in train mode
    model = FeatureNet(dropout=0.4, batchnorm=True, seed=31)
    with torch.no_grad():  # non-trivial running statistics
        model.train()(make_pool(16, seed=32))
    model.eval()
    distil_model = copy.deepcopy(model)
    settings = dict(n_drop=3, batch_size=4, buffer_size=16)

    torch.manual_seed(7)
    expected, scores = distil_select(distil_model, pool, score, 12, **settings)
    rng_after_distil = torch.get_rng_state()
    assert torch.isfinite(scores).all()

    args = {"device": "cpu", "n_drop": 3, "batch_size": 4, "stream_buffer_size": 16, "reproduce_distil": True}
    strategy = STRATEGIES[score](None, pool, model, NUM_CLASSES, args)
    running_mean = model.body[1].running_mean.clone()
    torch.manual_seed(7)
    assert strategy.select(12) == expected
    assert torch.equal(torch.get_rng_state(), rng_after_distil)  # same random-number use, draw for draw
    # DISTIL overwrote its model's BatchNorm statistics and left it in train mode; ours is untouched.
    assert not torch.equal(distil_model.body[1].running_mean, running_mean) and distil_model.training
    assert torch.equal(model.body[1].running_mean, running_mean) and not model.training

    # The default fast path draws differently (batch-major, dropout-only), so it is not expected to match.
    torch.manual_seed(7)
    fast = STRATEGIES[score](None, pool, model, NUM_CLASSES, {**args, "reproduce_distil": False})
    assert len(fast.select(12)) == 12


@pytest.mark.parametrize("score", SCORES)
def test_reproduce_distil_acquire_scores_and_probabilities(score):
    pool = make_pool(23, seed=33)
    model = FeatureNet(dropout=0.5, seed=34)
    args = {"device": "cpu", "n_drop": 4, "batch_size": 5, "reproduce_distil": True}
    strategy = STRATEGIES[score](None, pool, model, NUM_CLASSES, args)

    torch.manual_seed(8)
    probs = distil_probabilities(copy.deepcopy(model), pool, 4, 5)
    torch.manual_seed(8)
    torch.testing.assert_close(strategy.predict_prob_dropout_split(pool, 4), probs, rtol=0, atol=1e-7)

    torch.manual_seed(9)
    expected = distil_scores(distil_probabilities(copy.deepcopy(model), pool, 4, 5), score)
    torch.manual_seed(9)
    torch.testing.assert_close(strategy.acquire_scores(pool), expected, rtol=1e-5, atol=1e-6)

    torch.manual_seed(10)
    mean = distil_probabilities(copy.deepcopy(model), pool, 3, 5).sum(0) / 3
    torch.manual_seed(10)
    torch.testing.assert_close(strategy.predict_prob_dropout(pool, 3), mean, rtol=1e-6, atol=1e-7)
