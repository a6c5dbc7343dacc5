"""The behaviours DISTIL's own tests check on its ``Strategy`` base and its four MC-dropout strategies, on our classes.

A two-layer network in DISTIL's model protocol (``last``/``freeze`` keywords, ``get_embedding_dim``), pools of
plain tensors, ``(x, y)`` pairs and dicts (``{"x": ..., "labels": ...}``, as DISTIL's dict wrapper makes them).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from strategy_fixtures import ListDataset, module_flags
from torch import nn

from entropy_al import active_learning_strategies as als
from entropy_al.active_learning_strategies.score_streaming_strategy import merge
from entropy_al.active_learning_strategies.strategy import dict_to

IN, HIDDEN, CLASSES = 7, 5, 3
MC_CLASSES = [
    als.EntropySamplingDropout,
    als.BALDDropout,
    als.MarginSamplingDropout,
    als.LeastConfidenceSamplingDropout,
]


class TwoLayer(nn.Module):
    """``linear1 → relu → dropout → linear2``; the embedding is the hidden layer."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        torch.manual_seed(3)
        self.linear1 = nn.Linear(IN, hidden)
        self.drop = nn.Dropout(0.3)
        self.linear2 = nn.Linear(hidden, CLASSES)

    def forward(self, x, last=False, freeze=False):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze):
            hidden = F.relu(self.linear1(x))
        logits = self.linear2(self.drop(hidden))
        return (logits, hidden) if last else logits

    def get_embedding_dim(self):
        return self.linear1.out_features


def pools(num: int = 23, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num, IN, generator=generator)
    y = torch.randint(0, CLASSES, (num,), generator=generator)
    return x, y


def as_kind(x, y, kind):
    if kind == "tensor":
        return ListDataset(list(x))
    if kind == "pair":
        return ListDataset([(a, b) for a, b in zip(x, y, strict=True)])
    if kind == "dict":
        return ListDataset([{"x": a} for a in x])
    return ListDataset([{"x": a, "labels": b} for a, b in zip(x, y, strict=True)])  # "labelled dict"


def make(cls=als.Strategy, num=23, **args):
    x, y = pools(num)
    args = {"batch_size": 4, "device": "cpu", **args}
    return cls(as_kind(x, y, "pair"), as_kind(x, y, "tensor"), TwoLayer(), CLASSES, args), x, y


def test_update_data_and_model_replace_what_was_given():
    s, x, y = make()
    new_labeled, new_unlabeled, new_model = as_kind(x, y, "dict"), as_kind(x, y, "tensor"), TwoLayer(hidden=7)
    old = (s.labeled_dataset, s.unlabeled_dataset, s.model)
    s.update_data(new_labeled, new_unlabeled)
    s.update_model(new_model)
    assert (s.labeled_dataset, s.unlabeled_dataset, s.model) == (new_labeled, new_unlabeled, new_model)
    s.update_data(*old[:2])
    s.update_model(old[2])
    assert (s.labeled_dataset, s.unlabeled_dataset, s.model) == old


@pytest.mark.parametrize("kind", ["tensor", "dict"])
def test_predictions_have_one_row_per_sample_and_are_distributions(kind):
    s, x, y = make()
    pool = as_kind(x, y, kind)
    labels = s.predict(pool)
    assert labels.shape == (len(x),) and 0 <= int(labels.min()) and int(labels.max()) < CLASSES
    for probs in (s.predict_prob(pool), s.predict_prob_dropout(pool, 5)):
        assert probs.shape == (len(x), CLASSES)
        assert bool(((probs >= 0) & (probs <= 1)).all())
        torch.testing.assert_close(probs.sum(1), torch.ones(len(x)))
    split = s.predict_prob_dropout_split(pool, 5)
    assert split.shape == (5, len(x), CLASSES)
    torch.testing.assert_close(split.sum(2), torch.ones(5, len(x)))


@pytest.mark.parametrize("kind", ["tensor", "dict"])
def test_embeddings_have_the_models_widths(kind):
    s, x, y = make()
    assert s.get_embedding(as_kind(x, y, kind)).shape == (len(x), HIDDEN)
    widths = {"bias": CLASSES, "linear": HIDDEN * CLASSES, "bias_linear": (HIDDEN + 1) * CLASSES}
    labelled = "labelled dict" if kind == "dict" else "pair"
    for kind_used, predict_labels in ((kind, True), (labelled, False)):
        for name, width in widths.items():
            assert s.get_grad_embedding(as_kind(x, y, kind_used), predict_labels, name).shape == (len(x), width)
    with pytest.raises(ValueError, match="grad_embedding_type"):
        s.get_grad_embedding(as_kind(x, y, kind), True, "invalid_type")


def test_grad_embedding_of_labelled_dicts_uses_the_labels_and_keeps_them_from_the_model():
    s, x, y = make()
    logits, hidden = copy.deepcopy(s.model).eval()(x, last=True)
    bias = (torch.softmax(logits, 1) - F.one_hot(y, CLASSES)).detach()  # d(sum CE)/d logits with the true labels
    got = s.get_grad_embedding(as_kind(x, y, "labelled dict"), predict_labels=False)
    torch.testing.assert_close(got, torch.cat([bias, (bias[:, :, None] * hidden[:, None, :]).flatten(1)], 1))


@pytest.mark.parametrize(
    ("kind", "unlabeled"), [("tensor", True), ("pair", False), ("dict", True), ("labelled dict", False)]
)
def test_feature_embedding_is_the_named_layers_output(kind, unlabeled):
    s, x, y = make()
    s.model.train()
    flags = module_flags(s.model)
    features = s.get_feature_embedding(as_kind(x, y, kind), unlabeled=unlabeled, layer_name="linear1")
    torch.testing.assert_close(features, s.model.linear1(x).detach())
    assert module_flags(s.model) == flags  # run in eval mode, the caller's mode restored
    assert all(not module._forward_hooks for module in s.model.modules())  # the hook is gone


def test_feature_extraction_of_one_batch_is_squeezed_and_leaves_no_hook():
    s, x, _ = make()
    for _ in range(3):
        one = s.feature_extraction(x[:1], "linear2")
        assert one.shape == (CLASSES,)
        torch.testing.assert_close(one, s.model.linear2(F.relu(s.model.linear1(x[:1])))[0].detach())
    torch.testing.assert_close(s.feature_extraction({"x": x}, "linear1"), s.model.linear1(x).detach())
    assert not s.model.linear1._forward_hooks and not s.model.linear2._forward_hooks


def test_feature_extraction_errors_name_the_layer_and_remove_the_hook():
    s, x, _ = make()
    with pytest.raises(ValueError, match="layer_name.*'avgpool'"):
        s.get_feature_embedding(ListDataset(list(x)), unlabeled=True)

    def broken_input(module, inputs):
        raise RuntimeError("broken input")

    s.model.linear2.register_forward_pre_hook(broken_input)
    with pytest.raises(RuntimeError, match="broken input"):
        s.feature_extraction(x, "linear1")
    assert not s.model.linear1._forward_hooks


@pytest.mark.parametrize("cls", MC_CLASSES)
@pytest.mark.parametrize("kind", ["tensor", "dict"])
def test_mc_strategies_score_every_sample_and_select_budget_distinct_indices(cls, kind):
    s, x, y = make(cls, num=31, stream_buffer_size=10, n_drop=4)
    s.update_data(as_kind(x, y, "pair"), as_kind(x, y, kind))
    assert s.n_drop == 4 and s.stream_buffer_size == 10
    assert len(s.acquire_scores(s.unlabeled_dataset)) == len(x)
    chosen = s.select(10)
    assert len(chosen) == 10 == len(set(chosen)) and all(0 <= i < len(x) for i in chosen)


def test_dict_to_moves_dict_values_in_place_and_leaves_other_values():
    batch = {"x": torch.ones(2, dtype=torch.float64), "n": 3}
    assert dict_to(batch, "meta") is batch
    assert batch["x"].device.type == "meta" and batch["n"] == 3
    items = [torch.ones(1)]
    assert dict_to(items, "meta") is items and items[0].device.type == "cpu"


def test_merge_keeps_the_larger_keys_first_with_list_1_winning_ties():
    first = [(5, "a"), (3, "b"), (3, "c"), (1, "d")]
    second = [(4, "e"), (3, "f"), (0, "g")]
    key = lambda item: item[0]  # noqa: E731
    assert [n for _, n in merge(first, second, key, 10)] == ["a", "e", "b", "c", "f", "d", "g"]
    assert [n for _, n in merge(first, second, key, 3)] == ["a", "e", "b"]
    assert merge(first, [], key, 2) == first[:2] and merge([], second, key, 0) == []


def test_last_layer_backprop_is_the_grad_embedding_of_one_batch():
    s, x, y = make()
    logits, hidden = s.model.eval()(x, last=True)
    block = s._last_layer_backprop(logits, hidden, y, "bias_linear")
    torch.testing.assert_close(block, s.get_grad_embedding(as_kind(x, y, "pair"), predict_labels=False))
