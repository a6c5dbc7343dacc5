"""The strategies' outputs: broken model output, the progress bar, DISTIL's prediction and embedding helpers."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from strategy_fixtures import (
    NUM_CLASSES,
    SCORES,
    EmbeddingNet,
    FeatureNet,
    ListDataset,
    LogitRecorder,
    RowRuleNet,
    as_items,
    make_pool,
    reference_selection,
    strategy,
)
from torch import nn

import entropy_al

# ------------------------------------------------------------------------------------------------------------------
# Bad model output


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "bad_row",
    [
        [float("nan"), 0.0, 0.0, 0.0],
        [float("inf"), 0.0, 0.0, 0.0],
        [-float("inf")] * 4,
    ],
    ids=["nan", "pos-inf", "all-neg-inf"],
)
@pytest.mark.parametrize("score", SCORES)
def test_broken_logits_raise_naming_the_first_pool_index(score, bad_row, device):
    model = RowRuleNet(special={11: bad_row, 4: bad_row})
    s = strategy(score, make_pool(15), model, device, n_drop=2, batch_size=3, mc_mode="train")
    with pytest.raises(ValueError, match=r"2 pool samples, the first at pool index 4\b.*nan_policy"):
        s.select(3)
    with pytest.raises(ValueError, match=r"pool index 4\b"):
        s.acquire_scores(make_pool(15))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", SCORES)
def test_omit_policy_ranks_broken_samples_last_with_one_warning(score, device):
    pool = make_pool(15, seed=9)
    bad = {11: [float("nan"), 0.0, 1.0, 2.0], 4: [0.0, float("inf"), 0.0, 0.0]}
    model = RowRuleNet(special=bad, dropout=0.3)
    s = strategy(score, pool, model, device, n_drop=6, batch_size=4, nan_policy="omit")
    recorder = LogitRecorder(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selected = s.select(15)
    assert [str(w.message) for w in caught] == [
        f"{type(s).__name__}.select: the model's logits are NaN, +inf or all -inf for 2 pool samples (the first at "
        "pool index 4); they are ranked last (args['nan_policy'] = 'omit')"
    ]
    assert selected[-2:] == [4, 11]
    assert selected == reference_selection(recorder.stack(15), score, 15)
    with pytest.warns(RuntimeWarning):
        assert not {4, 11} & set(s.select(13))


@pytest.mark.parametrize("device", DEVICES)
def test_neg_inf_logits_are_valid_probability_zero(device):
    model = RowRuleNet(special={2: [0.0, -float("inf"), 1.0, -float("inf")]})
    s = strategy("bald", make_pool(6), model, device, n_drop=2, mc_mode="train")
    assert len(s.select(6)) == 6
    assert torch.isfinite(s.acquire_scores(make_pool(6))).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", ["entropy", "bald"])
def test_underflow_rows_have_finite_scores_and_are_never_selected_first(score, device):
    """Logit gaps > 110 underflow float32 softmax to 0: DISTIL's −Σ p log p is NaN there and picked first."""
    confident = {i: [0.0, -120.0, -115.0, -200.0] for i in (0, 3, 7)}
    pool = make_pool(12, seed=10)
    model = RowRuleNet(special=confident, dropout=0.3)
    probs = torch.softmax(model(pool)[[0, 3, 7]].detach(), dim=1)
    assert torch.isnan(-(probs * probs.log()).sum(1)).all()  # the DISTIL formula fails on these rows
    s = strategy(score, pool, model, device, n_drop=8)
    scores = s.acquire_scores(pool)
    assert torch.isfinite(scores).all()
    assert scores[[0, 3, 7]].abs().max() < 1e-6
    selected = s.select(12)
    assert set(selected[-3:]) == {0, 3, 7} and selected[0] not in confident


def test_nclasses_mismatch_names_both_numbers():
    s = entropy_al.EntropySamplingDropout(None, make_pool(4), FeatureNet(nclasses=5), 3, {"device": "cpu"})
    for call in (lambda: s.select(2), lambda: s.predict_prob(make_pool(4)), lambda: s.acquire_scores(make_pool(4))):
        with pytest.raises(ValueError, match=r"outputs 5 classes.*nclasses = 3"):
            call()


def test_model_output_must_be_logits():
    class TupleNet(nn.Module):
        def forward(self, x):
            return x[:, :4], x

    with pytest.raises(TypeError, match="floating tensor of logits"):
        strategy("entropy", make_pool(4), TupleNet(), mc_mode="train").select(1)


# ------------------------------------------------------------------------------------------------------------------
# Progress


@pytest.mark.parametrize("reproduce", [False, True])
def test_progress_bar_counts_pool_samples(capsys, reproduce):
    s = strategy(
        "entropy",
        make_pool(37),
        FeatureNet(),
        n_drop=3,
        batch_size=5,
        stream_buffer_size=16,
        progress=True,
        reproduce_distil=reproduce,
    )
    s.select(4)
    err = capsys.readouterr().err
    assert "EntropySamplingDropout.select" in err and "37/37" in err and "sample/s" in err
    s.args["progress"] = False
    s.select(4)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------------------------------
# DISTIL's prediction helpers


@pytest.mark.parametrize("device", DEVICES)
def test_predict_and_predict_prob_run_in_eval_mode(device):
    pool = make_pool(13, seed=11)
    model = FeatureNet(dropout=0.5).train()
    s = strategy("entropy", make_pool(2), model, device, batch_size=4)
    probs = s.predict_prob(pool)
    assert model.training  # restored
    expected = torch.softmax(copy.deepcopy(model).eval()(pool.to(device)), dim=1)
    torch.testing.assert_close(probs, expected.detach())
    assert torch.equal(s.predict(pool), expected.argmax(1))
    assert s.predict(make_pool(0)).shape == (0,) and s.predict_prob(make_pool(0)).shape == (0, NUM_CLASSES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reproduce", [False, True])
def test_predict_prob_dropout_and_split(device, reproduce):
    pool = make_pool(17, seed=12)
    s = strategy("entropy", make_pool(2), FeatureNet(dropout=0.5), device, batch_size=5, reproduce_distil=reproduce)
    split = s.predict_prob_dropout_split(pool, 4)
    assert split.shape == (4, 17, NUM_CLASSES) and split.dtype == torch.float32
    torch.testing.assert_close(split.sum(2), torch.ones(4, 17, device=split.device))
    assert not torch.equal(split[0], split[1])  # stochastic passes
    mean = s.predict_prob_dropout(pool, 3)
    assert mean.shape == (17, NUM_CLASSES)
    torch.testing.assert_close(mean.sum(1), torch.ones(17, device=mean.device))
    with pytest.raises(ValueError, match="n_drop"):
        s.predict_prob_dropout(pool, 0)


@pytest.mark.filterwarnings("ignore:.*has no dropout module:UserWarning")
def test_predict_prob_dropout_of_a_deterministic_model_is_its_softmax():
    pool = make_pool(9)
    model = RowRuleNet()
    s = strategy("entropy", pool, model, batch_size=2)
    expected = torch.softmax(model(pool), dim=1).detach()
    torch.testing.assert_close(s.predict_prob_dropout(pool, 3), expected)
    torch.testing.assert_close(s.predict_prob_dropout_split(pool, 2), expected.expand(2, -1, -1))


@pytest.mark.parametrize("device", DEVICES)
def test_get_embedding(device):
    pool = make_pool(11, seed=13)
    model = EmbeddingNet()
    s = strategy("entropy", pool, model, device, batch_size=4)
    embedding = s.get_embedding(pool)
    _, expected = copy.deepcopy(model).eval()(pool.to(device), last=True)
    torch.testing.assert_close(embedding, expected.detach())
    assert s.get_embedding(make_pool(0)).shape == (0, 5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["tuple", "dict"])
@pytest.mark.parametrize("predict_labels", [True, False])
def test_get_grad_embedding(device, kind, predict_labels):
    pool = make_pool(10, seed=14)
    labels = torch.arange(10) % NUM_CLASSES
    if kind == "dict":
        items = ListDataset([{"features": x, "labels": y} for x, y in zip(pool, labels, strict=True)])

        class DictNet(EmbeddingNet):
            def forward(self, features, labels=None, last=False, freeze=False):
                return super().forward(features, last=last, freeze=freeze)

        model = DictNet()
    else:
        items, model = as_items(pool, "tuple", labels), EmbeddingNet()
    s = strategy("entropy", pool, model, device, batch_size=3)
    logits, embedding = copy.deepcopy(model).eval()(pool.to(device), last=True)
    targets = logits.argmax(1) if predict_labels else labels.to(device)
    bias = (torch.softmax(logits, 1) - F.one_hot(targets, NUM_CLASSES)).detach()
    linear = (bias[:, :, None] * embedding[:, None, :]).flatten(1).detach()
    got = {t: s.get_grad_embedding(items, predict_labels, t) for t in ("bias", "linear", "bias_linear")}
    torch.testing.assert_close(got["bias"], bias)
    torch.testing.assert_close(got["linear"], linear)
    torch.testing.assert_close(got["bias_linear"], torch.cat([bias, linear], 1))
    assert got["bias_linear"].shape == (10, (5 + 1) * NUM_CLASSES)
    with pytest.raises(ValueError, match="grad_embedding_type"):
        s.get_grad_embedding(items, predict_labels, "weights")


def test_get_grad_embedding_without_labels_is_a_clear_error():
    s = strategy("entropy", make_pool(3), EmbeddingNet())
    with pytest.raises(ValueError, match="labels"):
        s.get_grad_embedding(make_pool(3), predict_labels=False)
    assert s.get_grad_embedding(make_pool(0), True, "linear").shape == (0, 5 * NUM_CLASSES)
