"""Bad budgets, datasets, items, subclass scores and batch samplers of a selection; pools on other devices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import CUDA
from strategy_fixtures import (
    NUM_CLASSES,
    NUM_FEATURES,
    STRATEGIES,
    EmbeddingNet,
    FeatureNet,
    ListDataset,
    ReturnsNet,
    assert_fails_cleanly,
    make_pool,
    mc_strategy,
)
from torch.utils.data import TensorDataset

import entropy_al
from entropy_al import active_learning_strategies as als

POOL = make_pool(8)


BUDGET_CASES = [
    (-1, ValueError, "`budget` to be an int >= 0, got -1"),
    (2.5, TypeError, "`budget` to be an int, got float 2.5"),
    (float("nan"), TypeError, "`budget` to be an int, got float nan"),
    (float("inf"), TypeError, "`budget` to be an int, got float inf"),
    (np.float64(2.0), TypeError, "`budget` to be an int, got float64"),
    (torch.tensor(2.0), TypeError, "`budget` to be an int, got Tensor"),
    (np.bool_(True), TypeError, "`budget` to be an int, got bool"),
    (torch.tensor(True), TypeError, r"`budget` to be an int, got bool tensor\(True\)"),
    (torch.tensor(False), TypeError, r"`budget` to be an int, got bool tensor\(False\)"),
    ([2], TypeError, "`budget` to be an int, got list"),
    (np.int64(-3), ValueError, "`budget` to be an int >= 0, got -3"),
]


@pytest.mark.parametrize("budget, error, match", BUDGET_CASES)
@pytest.mark.parametrize("cls", list(STRATEGIES.values()), ids=lambda cls: cls.__name__)
def test_bad_budgets_are_named_before_any_forward(cls, budget, error, match):
    model = ReturnsNet(lambda z, x: z)
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    assert_fails_cleanly(mc_strategy(model, cls), lambda s: s.select(budget), error, match)
    assert not calls


DATASETS = {
    "None": (None, TypeError, "map-style dataset .* got NoneType"),
    "int": (5, TypeError, "map-style dataset .* got int"),
    "0-d tensor": (torch.tensor(1.0), TypeError, "map-style dataset .* got Tensor of 0 dimensions"),
    "generator": ((x for x in POOL), TypeError, "map-style dataset .* got generator"),
    "string items": (ListDataset(["a", "b"]), TypeError, r"dataset items to be tensors, mappings .* or \(x, y\) pairs"),
    "empty tuple items": (ListDataset([(), ()]), TypeError, "dataset items to be tensors, mappings"),
    "nested lists": (ListDataset([[[1.0] * NUM_FEATURES]] * 2), TypeError, "dataset items to be tensors, mappings"),
    # default_collate's own message names the unsupported item type.
    "object items": (
        ListDataset([object(), object()]),
        TypeError,
        "batch must contain tensors.*found <class 'object'>",
    ),
    "None items": (ListDataset([None, None]), TypeError, "batch must contain tensors.*found <class 'NoneType'>"),
}
DATASET_METHODS = {
    "select": ("unlabeled_dataset", lambda s, d: (s.update_data(None, d), s.select(2))),
    "acquire_scores": ("unlabeled_buffer", lambda s, d: s.acquire_scores(d)),
    "predict": ("to_predict_dataset", lambda s, d: s.predict(d)),
    "predict_prob": ("to_predict_dataset", lambda s, d: s.predict_prob(d)),
    "predict_prob_dropout": ("to_predict_dataset", lambda s, d: s.predict_prob_dropout(d, 2)),
    "predict_prob_dropout_split": ("to_predict_dataset", lambda s, d: s.predict_prob_dropout_split(d, 2)),
    "get_embedding": ("to_predict_dataset", lambda s, d: s.get_embedding(d)),
    "get_grad_embedding": ("dataset", lambda s, d: s.get_grad_embedding(d, True)),
}


@pytest.mark.parametrize("method", list(DATASET_METHODS))
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_unsupported_datasets_and_items_are_named(dataset, method):
    value, error, match = DATASETS[dataset]
    name, call = DATASET_METHODS[method]
    if "map-style" in match:
        match = f"`{name}` to be a {match}"
    strategy = mc_strategy(EmbeddingNet())
    with pytest.raises(error, match=match):
        call(strategy, value)
    strategy.update_data(None, POOL)
    assert len(strategy.select(2)) == 2


class _ScoresFrom(als.ScoreStreamingStrategy):
    """A DISTIL-style subclass whose acquire_scores returns ``make(buffer)``."""

    make = staticmethod(lambda buffer: torch.zeros(len(buffer)))

    def acquire_scores(self, unlabeled_buffer):
        return self.make(unlabeled_buffer)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda b: None, TypeError, "acquire_scores to return a tensor of 3 real scores, got NoneType"),
        (lambda b: "scores", TypeError, "acquire_scores to return a tensor of 3 real scores, got str"),
        (lambda b: {"scores": 1}, TypeError, "acquire_scores to return a tensor of 3 real scores, got dict"),
        (
            lambda b: torch.zeros(len(b), dtype=torch.complex64),
            TypeError,
            "acquire_scores to return real scores, got a torch.complex64",
        ),
        (
            lambda b: torch.zeros(len(b) + 1),
            ValueError,
            r"acquire_scores to return 3 scores \(shape \[3\]\), got shape \(4,\)",
        ),
        (
            lambda b: torch.zeros(len(b), 1),
            ValueError,
            r"acquire_scores to return 3 scores \(shape \[3\]\), got shape \(3, 1\)",
        ),
        (lambda b: torch.tensor(0.0), ValueError, r"got shape \(\)"),
    ],
)
def test_bad_acquire_scores_of_a_subclass_are_named(make, error, match):
    strategy = _ScoresFrom(None, POOL, FeatureNet(), NUM_CLASSES, {"device": "cpu", "stream_buffer_size": 3})
    strategy.make = make
    assert_fails_cleanly(strategy, lambda s: s.select(2), error, match)
    strategy.make = lambda b: torch.as_tensor(b.indices, dtype=torch.float32)
    assert strategy.select(2) == [7, 6]


@pytest.mark.parametrize(
    "sampler, match",
    [
        ([[0, 1, 2, 3], [0, 1, 2, 3]], "yielded index 0 twice"),  # as many indices as samples, 4 … 7 never scored
        ([[0, 1, 1, 2], [3, 4, 5, 6, 7]], "yielded index 1 twice"),  # a repeat inside one batch
        (itertools.repeat([0, 1]), "yielded index 0 twice"),  # endless: an error, not a hang
        ([[0, 1, 2], [3]], "yielded 4 indices for a dataset of 8 samples"),
        ([[0, 8]], "yielded index 8 for a dataset of 8 samples"),
        ([[-1, 0]], "yielded index -1 for a dataset of 8 samples"),
        ([[0, 1], []], "yielded an empty batch"),
    ],
)
@pytest.mark.parametrize("items", ["tensor", "list"])
def test_a_batch_sampler_that_is_not_a_partition_is_rejected(sampler, match, items):
    pool = POOL if items == "tensor" else ListDataset(list(POOL))
    strategy = mc_strategy(FeatureNet(), pool=pool, batch_sampler=sampler)
    assert_fails_cleanly(strategy, lambda s: s.select(8), ValueError, r"args\['batch_sampler'\] " + match)


@CUDA
@pytest.mark.filterwarnings("ignore:.*has no dropout module:UserWarning")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_pool_and_model_on_other_devices_are_moved(device):
    """Mixed devices in a strategy are not an error: the model and each batch go to args['device']."""

    def select(pool, model_device):
        model = FeatureNet(dropout=0.0).to(model_device)
        args = {"device": device, "n_drop": 1, "batch_size": 3}
        return entropy_al.EntropySamplingDropout(None, pool, model, NUM_CLASSES, args).select(5)

    other = "cuda" if device == "cpu" else "cpu"
    expected = select(POOL.to(device), device)
    assert select(POOL.to(other), other) == expected
    assert select(TensorDataset(POOL.to(other)), device) == expected
    assert select(ListDataset(list(POOL.to(other))), other) == expected


@CUDA
@pytest.mark.filterwarnings("ignore:.*has no dropout module:UserWarning")
def test_gpu_items_of_a_plain_dataset_on_a_gpu_device():
    """A dataset fetched item by item (not tensor-backed) whose items already live on the GPU: the DataLoader must
    not try to pin them (pinning a CUDA tensor raises "cannot pin ... only dense CPU tensors can be pinned")."""
    args = {"device": "cuda", "n_drop": 1, "batch_size": 3}
    on_gpu = POOL.cuda()
    expected = entropy_al.EntropySamplingDropout(None, on_gpu, FeatureNet(0.0), NUM_CLASSES, args).select(5)
    for items in (ListDataset(list(on_gpu)), ListDataset([{"features": row} for row in on_gpu])):
        assert entropy_al.EntropySamplingDropout(None, items, FeatureNet(0.0), NUM_CLASSES, args).select(5) == expected
