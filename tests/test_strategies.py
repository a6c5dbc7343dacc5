"""The DISTIL-compatible strategies: API, selection semantics, items, budget edge cases, bad output, progress."""

from __future__ import annotations

import copy
import importlib
from types import MappingProxyType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from strategy_fixtures import (
    NUM_CLASSES,
    SCORES,
    STRATEGIES,
    FeatureNet,
    LogitRecorder,
    RowRuleNet,
    as_items,
    make_pool,
    reference_selection,
    stable_selection,
    strategy,
)

import entropy_al
from entropy_al import active_learning_strategies as als
from entropy_al import reference

MODULES = {
    "Strategy": "strategy",
    "ScoreStreamingStrategy": "score_streaming_strategy",
    "EntropySamplingDropout": "entropy_sampling_dropout",
    "BALDDropout": "bayesian_active_learning_disagreement_dropout",
    "MarginSamplingDropout": "margin_sampling_dropout",
    "LeastConfidenceSamplingDropout": "least_confidence_sampling_dropout",
}
# A deterministic model has no dropout module; the warning saying so is expected in those tests.
no_dropout_ok = pytest.mark.filterwarnings("ignore:.*has no dropout module:UserWarning")


# ------------------------------------------------------------------------------------------------------------------
# API surface


@pytest.mark.parametrize("name", list(MODULES))
def test_import_paths_mirror_distil(name):
    module = importlib.import_module(f"entropy_al.active_learning_strategies.{MODULES[name]}")
    assert getattr(module, name) is getattr(als, name) is getattr(entropy_al, name)
    assert name in entropy_al.__all__ and name in als.__all__


def test_constructor_defaults_match_distil():
    pool = make_pool(5)
    s = entropy_al.EntropySamplingDropout("labeled", pool, FeatureNet(), 4)
    assert (s.labeled_dataset, s.unlabeled_dataset, s.target_classes) == ("labeled", pool, 4)
    assert s.args == {"batch_size": 1}
    assert s.n_drop == 10 and s.stream_buffer_size == 10000
    assert s.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert s.loss is F.cross_entropy
    assert isinstance(s, als.ScoreStreamingStrategy) and isinstance(s, als.Strategy)


@pytest.mark.parametrize("score", SCORES)
def test_callers_args_never_mutated(score):
    args = {"n_drop": 3, "device": "cpu", "stream_buffer_size": 4, "other_strategy_key": [1]}
    before = copy.deepcopy(args)
    pool = make_pool(9)
    s = strategy(score, pool, FeatureNet(), **args)
    s.select(3)
    s.acquire_scores(pool)
    s.predict_prob_dropout(pool, 2)
    assert args == before and "batch_size" not in args
    assert s.args is not args and s.args["batch_size"] == 1
    # A read-only mapping works too.
    assert len(STRATEGIES[score](None, pool, FeatureNet(), NUM_CLASSES, MappingProxyType(args)).select(2)) == 2


@pytest.mark.parametrize(
    "key, value, error",
    [
        ("n_drop", 0, ValueError),
        ("n_drop", 2.0, TypeError),
        ("n_drop", True, TypeError),
        ("batch_size", -1, ValueError),
        ("batch_size", "8", TypeError),
        ("stream_buffer_size", 0, ValueError),
        ("device", "not-a-device", ValueError),
        ("loss", "cross_entropy", TypeError),
        ("mc_mode", "eval", ValueError),
        ("nan_policy", "ignore", ValueError),
        ("reproduce_distil", 1, TypeError),
        ("progress", "yes", TypeError),
    ],
)
def test_bad_args_are_named(key, value, error):
    with pytest.raises(error, match=key):
        entropy_al.EntropySamplingDropout(None, make_pool(3), FeatureNet(), 4, {key: value})


def test_args_edited_after_construction_are_checked_at_use():
    s = strategy("entropy", make_pool(6), FeatureNet())
    s.args["batch_size"] = 0
    with pytest.raises(ValueError, match="batch_size"):
        s.select(2)
    s.args["batch_size"] = 2
    s.n_drop = -1
    with pytest.raises(ValueError, match="n_drop"):
        s.select(2)


def test_args_numpy_integers_accepted():
    s = strategy("entropy", make_pool(7), FeatureNet(), n_drop=np.int64(2), batch_size=np.int32(3))
    assert len(s.select(np.int64(4))) == 4


def test_reproduce_distil_conflicts_with_dropout_mode():
    with pytest.raises(ValueError, match=r"reproduce_distil.*mc_mode"):
        strategy("entropy", make_pool(3), FeatureNet(), reproduce_distil=True, mc_mode="dropout")


def test_nclasses_checked():
    with pytest.raises(ValueError, match="nclasses"):
        entropy_al.EntropySamplingDropout(None, make_pool(3), FeatureNet(), 0)
    with pytest.raises(ValueError, match="nclasses >= 2"):
        entropy_al.MarginSamplingDropout(None, make_pool(3), FeatureNet(nclasses=1), 1)


def test_base_classes_do_not_select():
    with pytest.raises(NotImplementedError):
        als.Strategy(None, make_pool(3), FeatureNet(), 4, {"device": "cpu"}).select(1)
    with pytest.raises(NotImplementedError, match="acquire_scores"):
        als.ScoreStreamingStrategy(None, make_pool(3), FeatureNet(), 4, {"device": "cpu"}).select(1)


# ------------------------------------------------------------------------------------------------------------------
# Selection


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", SCORES)
def test_select_returns_budget_unique_indices_in_range(score, device):
    s = strategy(score, make_pool(37), FeatureNet(), device, n_drop=4, batch_size=4, stream_buffer_size=16)
    selected = s.select(10)
    assert isinstance(selected, list) and all(type(i) is int for i in selected)
    assert len(selected) == len(set(selected)) == 10
    assert all(0 <= i < 37 for i in selected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mc_mode", ["dropout", "train"])
@pytest.mark.parametrize("score", SCORES)
def test_selection_is_stable_sort_of_reference_scores(score, mc_mode, device):
    """Whatever the model did (dropout), the selection ranks the logits it produced exactly as the contract."""
    pool = make_pool(41, seed=3)
    model = FeatureNet(dropout=0.5, seed=4)
    s = strategy(score, pool, model, device, n_drop=5, batch_size=6, stream_buffer_size=13, mc_mode=mc_mode)
    recorder = LogitRecorder(model)
    selected = s.select(12)
    logits = recorder.stack(len(pool))
    assert logits.shape == (5, 41, NUM_CLASSES)
    assert selected == reference_selection(logits, score, 12)


@no_dropout_ok
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", ["entropy", "margin", "least_confidence"])
def test_selection_invariant_to_buffer_and_batch_size(score, device):
    pool = make_pool(50, seed=5)
    expected = reference_selection(RowRuleNet()(pool).unsqueeze(0).detach(), score, 20)
    for batch_size, buffer_size in [(1, 10000), (3, 7), (7, 3), (50, 50), (64, 1), (16, 17)]:
        s = strategy(score, pool, RowRuleNet(), device, n_drop=2, batch_size=batch_size, stream_buffer_size=buffer_size)
        assert s.select(20) == expected, (batch_size, buffer_size)


@no_dropout_ok
@pytest.mark.parametrize("score", SCORES)
def test_ties_go_to_the_lower_index_across_buffers(score):
    pool = make_pool(23)
    constant = RowRuleNet(special={i: [0.5, 0.1, -0.2, 0.0] for i in range(23)})
    s = strategy(score, pool, constant, n_drop=2, batch_size=2, stream_buffer_size=5)
    assert s.select(7) == list(range(7))  # DISTIL's AVL merge keeps the *last* 7 on ties


@no_dropout_ok
@pytest.mark.parametrize("device", DEVICES)
def test_budget_edge_cases(device):
    pool = make_pool(12, seed=6)
    model = RowRuleNet()
    s = strategy("entropy", pool, model, device, n_drop=2, batch_size=5)
    assert s.select(0) == [] and model.calls == 0  # without running the model
    s.update_data(None, make_pool(0))
    assert s.select(5) == [] and model.calls == 0
    s.update_data(None, pool)
    everything = s.select(100)
    assert sorted(everything) == list(range(12))
    assert everything == reference_selection(model(pool).unsqueeze(0).detach(), "entropy", 12)
    assert s.select(np.int64(3)) == everything[:3]
    assert s.select(np.uint8(12)) == everything


@pytest.mark.parametrize(
    "budget, error", [(-1, ValueError), (2.0, TypeError), (True, TypeError), ("3", TypeError), (None, TypeError)]
)
def test_bad_budget_is_named(budget, error):
    model = RowRuleNet()
    with pytest.raises(error, match="budget"):
        strategy("entropy", make_pool(5), model).select(budget)
    assert model.calls == 0


@no_dropout_ok
@pytest.mark.parametrize("kind", ["dict", "mapping", "tuple", "list"])
@pytest.mark.parametrize("device", DEVICES)
def test_item_kinds_select_like_tensor_items(kind, device):
    """Mappings are passed as model(**item); an (x, y) pair uses x (DISTIL crashes there)."""
    pool = make_pool(19, seed=7)
    net = FeatureNet(dropout=0.0)
    args = dict(n_drop=2, batch_size=4, stream_buffer_size=9)
    expected = strategy("entropy", as_items(pool, "tensor"), net, device, **args).select(8)
    assert strategy("entropy", as_items(pool, kind), net, device, **args).select(8) == expected
    assert len(strategy("bald", as_items(pool, kind), FeatureNet(), device, **args).select(8)) == 8


@no_dropout_ok
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", SCORES)
def test_acquire_scores_of_a_whole_dataset(score, device):
    pool = make_pool(26, seed=8)
    model = RowRuleNet()
    s = strategy(score, make_pool(3), model, device, n_drop=3, batch_size=4)
    scores = s.acquire_scores(pool)
    assert scores.shape == (26,) and scores.dtype == torch.float32
    assert scores.device.type == torch.device(device).type
    logits = model(pool.to(device)).detach().unsqueeze(0).expand(3, -1, -1)
    expected = reference.mc_scores_reference(logits.cpu().double(), score)
    torch.testing.assert_close(scores.cpu().double(), expected, rtol=1e-5, atol=1e-6)
    assert s.acquire_scores(make_pool(0)).shape == (0,)


def test_update_data_and_update_model():
    s = strategy("entropy", make_pool(30), FeatureNet(), n_drop=2, batch_size=8)
    assert max(s.select(30)) == 29
    s.update_data("new labeled", make_pool(6, seed=1))
    assert s.labeled_dataset == "new labeled" and sorted(s.select(10)) == list(range(6))
    other = RowRuleNet()
    s.update_model(other)
    assert s.model is other
    with pytest.warns(UserWarning, match="no dropout module"):
        s.select(2)
    assert other.calls == 2 * 1  # n_drop passes of one batch of 6
    s.update_queries("q")
    s.update_privates("p")
    assert (s.query_dataset, s.private_dataset) == ("q", "p")


class TableScores(als.ScoreStreamingStrategy):
    """A DISTIL-style subclass: only acquire_scores is overridden; the scores come from a table."""

    table = torch.tensor([0.5, 2.0, -1.0, 2.0, float("nan"), 7.0, 0.5, 3.0, -4.0, 2.0, 1.0])

    def acquire_scores(self, unlabeled_buffer):
        return self.table[unlabeled_buffer.indices]


@pytest.mark.parametrize("buffer_size", [1, 3, 4, 100])
def test_subclass_acquire_scores_is_streamed(buffer_size):
    pool = make_pool(11)
    s = TableScores(None, pool, FeatureNet(), 4, {"stream_buffer_size": buffer_size, "device": "cpu"})
    with pytest.raises(ValueError, match="pool index 4"):
        s.select(3)
    s.args["nan_policy"] = "omit"
    with pytest.warns(RuntimeWarning, match="ranked last"):
        selected = s.select(11)
    assert selected == stable_selection(TableScores.table, 11)
    assert selected[-1] == 4 and selected[:5] == [5, 7, 1, 3, 9]
