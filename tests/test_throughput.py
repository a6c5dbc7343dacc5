"""Throughput of the MC passes: stacked passes, head-only MC, autocast, fast fetching, batch samplers.

None of these may change a selection: for a deterministic model every path selects exactly what the plain loop
(one pass per forward, whole model, consecutive batches fetched item by item) selects; for a dropout model the
scores have the plain loop's distribution.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import DEVICES
from strategy_fixtures import (
    NUM_CLASSES,
    NUM_FEATURES,
    FeatureNet,
    ListDataset,
    deterministic_net,
    make_pool,
    reference_selection,
    strategy,
)
from torch import nn

from entropy_al.mc import PassGrouping, stack_copies, stackable
from entropy_al.scores import SCORE_INFO

PLAIN = {"mc_memory_budget": 0}  # one pass per forward: the loop every fast path must agree with
# BALD of a deterministic model is 0 for every sample (all ties): its exact-selection tests would prove nothing.
DETERMINISTIC_SCORES = [name for name, info in SCORE_INFO.items() if not info.stochastic_only]


def sequential_net(seed: int = 0, p: float = 0.3) -> nn.Sequential:
    """trunk (Linear, Tanh, Linear, ReLU) → head (Dropout, Linear, ReLU, Dropout, Linear); children named 0…8."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(NUM_FEATURES, 12), nn.Tanh(), nn.Linear(12, 10), nn.ReLU(),
        nn.Dropout(p), nn.Linear(10, 8), nn.ReLU(), nn.Dropout(p), nn.Linear(8, NUM_CLASSES),
    )  # fmt: skip


class RowCounter:
    """Rows of every forward of a module (a pre-hook; the first tensor argument, positional or keyword)."""

    def __init__(self, module: nn.Module):
        self.rows: list[int] = []
        module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        first = next(value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor))
        self.rows.append(first.shape[0])


# ------------------------------------------------------------------------------------------------------------------
# Stacked passes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", DETERMINISTIC_SCORES)
def test_stacked_passes_select_what_the_plain_loop_selects(score, device):
    pool = make_pool(45, seed=40)
    model = deterministic_net(seed=41)
    expected = reference_selection(model(pool).detach().unsqueeze(0), score, 15)
    for budget in (0, 4000, None):  # one pass per forward, a few per forward, the default (all 5)
        rows = RowCounter(model)
        args = dict(n_drop=5, batch_size=7, stream_buffer_size=20)
        if budget is not None:
            args["mc_memory_budget"] = budget
        assert strategy(score, pool, model.to(device), device, **args).select(15) == expected, budget
        if budget is None:
            assert max(rows.rows) == 5 * 7  # stacked indeed


def test_memory_budget_sets_passes_per_forward_as_documented():
    # Per sample: input 8 floats (32 B) + Dropout out 32 B + Linear out 16 B + Sequential out 16 B = 96 B.
    model = nn.Sequential(nn.Dropout(0.1), nn.Linear(8, NUM_CLASSES))
    pool = torch.randn(25, 8)
    rows = RowCounter(model)
    strategy("entropy", pool, model, n_drop=10, batch_size=10, mc_memory_budget=3000).select(3)
    # r = min(n_drop, 3000 // (10 · 96)) = 3. First batch: the probe pass, then 9 passes as 3+3+3;
    # second batch: 10 passes in ⌈10/3⌉ = 4 forwards of 3, 3, 2, 2; last batch (5 samples): r = 6, 10 = 5 + 5.
    assert rows.rows == [10, 30, 30, 30] + [30, 30, 20, 20] + [25, 25]
    assert all(r * 96 <= 3000 for r in rows.rows)

    grouping = PassGrouping(3000)
    assert grouping.probing and grouping.max_copies(10, 10) == 1
    grouping.bytes_per_sample = 96.0
    assert [grouping.max_copies(rows, 10) for rows in (10, 5, 1, 1000)] == [3, 6, 10, 1]
    assert PassGrouping(0).max_copies(10, 10) == 1 and not PassGrouping(0).probing

    rows.rows.clear()
    strategy("entropy", pool, model, n_drop=10, batch_size=10, mc_memory_budget=0).select(3)
    assert rows.rows == [10] * 20 + [5] * 10


@pytest.mark.parametrize("mode, stacked", [("dropout", True), ("train", False)])
def test_no_stacking_where_batch_statistics_would_mix_the_copies(mode, stacked):
    model = FeatureNet(dropout=0.3, batchnorm=True)
    rows = RowCounter(model)
    strategy("bald", make_pool(16), model, n_drop=4, batch_size=8, mc_mode=mode).select(3)
    assert (max(rows.rows) > 8) == stacked


def test_stacked_passes_have_the_plain_loops_distribution():
    """Mean scores over many seeds agree within sampling error (each copy draws its own dropout masks)."""
    pool = make_pool(12, seed=42)
    model = FeatureNet(dropout=0.5, seed=43)
    plain, stacked = [], []
    for seed in range(40):
        for runs, extra in ((plain, PLAIN), (stacked, {})):
            torch.manual_seed(seed)
            runs.append(strategy("bald", pool, model, n_drop=4, batch_size=5, **extra).acquire_scores(pool))
    plain, stacked = torch.stack(plain), torch.stack(stacked)
    error = (plain.var(0) / len(plain) + stacked.var(0) / len(stacked)).sqrt()
    assert ((plain.mean(0) - stacked.mean(0)).abs() <= 4 * error + 1e-6).all()
    assert not torch.equal(plain, stacked)  # stochastic indeed, and other masks


def test_stacking_repeats_every_tensor_of_a_mapping_input():
    class DictNet(FeatureNet):
        def forward(self, features, scale=None):
            return super().forward(features * scale)

    pool = make_pool(14, seed=44)
    model = DictNet(dropout=0.0)
    items = ListDataset([{"features": x, "scale": torch.tensor([2.0])} for x in pool])
    expected = reference_selection(model(pool, torch.tensor([2.0])).detach().unsqueeze(0), "entropy", 5)
    rows = RowCounter(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no dropout module
        assert strategy("entropy", items, model, n_drop=3, batch_size=7).select(5) == expected
    assert max(rows.rows) == 21  # "scale" has one row per sample: repeated too


def test_only_batches_of_per_sample_tensors_are_stacked():
    rows, x = 4, torch.zeros(4, 3)
    assert stackable(x, rows) and stackable({"x": x, "flag": True}, rows) and stackable((x, x), rows)
    assert not stackable(torch.zeros(3, 4), rows)  # not one row per sample
    assert not stackable({"x": x, "shared": torch.zeros(7)}, rows) and not stackable({"flag": True}, rows)
    assert not stackable((x, 2.0), rows) and not stackable(torch.tensor(1.0), rows)
    stacked = stack_copies({"x": torch.arange(4.0)[:, None], "flag": True}, 3)
    assert stacked["flag"] is True and stacked["x"].flatten().tolist() == [0, 1, 2, 3] * 3


# ------------------------------------------------------------------------------------------------------------------
# Head-only MC


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split", ["name", "nested-name", "pair"])
def test_head_only_equals_the_plain_loop(split, device):
    model = sequential_net(seed=45).to(device)
    if split == "nested-name":
        model = nn.Sequential(model[:2], nn.Sequential(model[2], model[3], nn.Sequential(*model[4:]))).to(device)
        spec = "1.1"
    elif split == "name":
        spec = "3"
    else:
        model = nn.Sequential(nn.Sequential(*model[:4]), nn.Sequential(*model[4:])).to(device)
        spec = (model[0], model[1])
    pool = make_pool(30, seed=46)
    trunk_calls = RowCounter(model[0])
    for plain_args, fast_args in [(PLAIN, {"mc_memory_budget": 0}), (PLAIN, {})]:
        torch.manual_seed(3)
        plain = strategy("bald", pool, model, device, n_drop=4, batch_size=8, **plain_args).acquire_scores(pool)
        trunk_calls.rows.clear()
        torch.manual_seed(3)
        fast = strategy("bald", pool, model, device, n_drop=4, batch_size=8, mc_head=spec, **fast_args)
        scores = fast.acquire_scores(pool)
        if fast_args:  # the plain loop's random numbers, in the same order: the same logits
            torch.testing.assert_close(scores, plain, rtol=0, atol=0)
        else:  # stacked: other masks, same distribution (tested below); here only the trunk count
            assert scores.shape == plain.shape
        assert trunk_calls.rows == [8, 8, 8, 6]  # the trunk once per batch, not n_drop times


@pytest.mark.parametrize("score", DETERMINISTIC_SCORES)
def test_head_only_selection_of_a_deterministic_model(score):
    model = sequential_net(seed=47, p=0.0)
    pool = make_pool(33, seed=48)
    expected = reference_selection(model(pool).detach().unsqueeze(0), score, 11)
    pair = nn.Sequential(nn.Sequential(*model[:4]), nn.Sequential(*model[4:]))
    for net, spec in ((model, "3"), (model, "0"), (pair, (pair[0], pair[1]))):
        assert strategy(score, pool, net, n_drop=6, batch_size=5, mc_head=spec).select(11) == expected


def test_head_only_has_the_plain_loops_distribution_when_stacked():
    model = sequential_net(seed=49, p=0.4)
    pool = make_pool(10, seed=50)
    plain, head = [], []
    for seed in range(40):
        torch.manual_seed(seed)
        plain.append(strategy("entropy", pool, model, n_drop=4, batch_size=5, **PLAIN).acquire_scores(pool))
        torch.manual_seed(seed)
        head.append(strategy("entropy", pool, model, n_drop=4, batch_size=5, mc_head="3").acquire_scores(pool))
    plain, head = torch.stack(plain), torch.stack(head)
    error = (plain.var(0) / len(plain) + head.var(0) / len(head)).sqrt()
    assert ((plain.mean(0) - head.mean(0)).abs() <= 4 * error + 1e-6).all()


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(NUM_FEATURES, 8), nn.Dropout(0.2), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, NUM_CLASSES))
        self.extra_dropout = nn.Dropout(0.1)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.mark.parametrize(
    "make_spec, message",
    [
        (lambda m: "0", r"needs an nn.Sequential model.*TwoPart"),
        (lambda m: (m.features, m.classifier), r"trunk contains the dropout module features\.1 \(Dropout\)"),
        (lambda m: (m.features[0], m.classifier), r"dropout module features\.1 .*neither in the trunk nor in the head"),
        (lambda m: (nn.Linear(6, 8), m.classifier), r"trunk \(Linear\) is not a submodule of the model"),
        (lambda m: (m, m.classifier), r"trunk is the whole model"),
        (lambda m: (m.features[0], m.features), r"share the module features\.0"),
    ],
)
def test_invalid_splits_are_clear_errors(make_spec, message):
    model = TwoPart()
    s = strategy("entropy", make_pool(5), model, mc_head=make_spec(model))
    with pytest.raises(ValueError, match=message):
        s.select(2)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("9", r"the model has no child '9'; its children are \['0', '1'"),
        ("8", r"last module: the head would be empty"),
        ("1.0", r"1 is a Tanh, not an nn.Sequential"),
        ("3", r"trunk contains the dropout module 2"),
    ],
)
def test_invalid_split_names_are_clear_errors(spec, message):
    model = sequential_net()
    model[2] = nn.Dropout(0.1)
    s = strategy("entropy", make_pool(5), model, mc_head=spec)
    with pytest.raises(ValueError, match=message):
        s.select(2)


def test_a_trunk_may_hold_dropout_modules_that_drop_nothing():
    encoder = nn.TransformerEncoderLayer(NUM_FEATURES, nhead=2, dim_feedforward=8, dropout=0.0, batch_first=True)
    model = nn.Sequential(
        nn.Unflatten(1, (1, NUM_FEATURES)), encoder, nn.Flatten(), nn.Dropout(0.3), nn.Linear(NUM_FEATURES, NUM_CLASSES)
    )  # each sample a sequence of one token
    pool = make_pool(9, seed=65)
    torch.manual_seed(4)
    plain = strategy("entropy", pool, model, n_drop=3, batch_size=4, **PLAIN).acquire_scores(pool)
    torch.manual_seed(4)
    head = strategy("entropy", pool, model, n_drop=3, batch_size=4, mc_head="2", **PLAIN).acquire_scores(pool)
    torch.testing.assert_close(head, plain, rtol=0, atol=0)
    encoder.dropout.p = 0.1
    with pytest.raises(ValueError, match=r"trunk contains the dropout module 1 \(TransformerEncoderLayer\)"):
        strategy("entropy", pool, model, mc_head="2").select(2)


@pytest.mark.parametrize("value", [3, (nn.Linear(2, 2),), ("a", "b"), ""])
def test_bad_mc_head_values_are_named(value):
    with pytest.raises((TypeError, ValueError), match="mc_head"):
        strategy("entropy", make_pool(3), FeatureNet(), mc_head=value)
