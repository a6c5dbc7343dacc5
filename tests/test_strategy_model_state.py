"""MC modes of the strategies: which modules are stochastic, and that the model is always left as found."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import DEVICES
from strategy_fixtures import (
    NUM_CLASSES,
    SCORES,
    STRATEGIES,
    FailingNet,
    FeatureNet,
    assert_same_tensors,
    make_pool,
    module_flags,
    tensor_snapshot,
)
from torch import nn

import entropy_al
from entropy_al.mc import mc_mode, preserved_state


def bn_dropout_net(device: str) -> nn.Module:
    """Linear → BatchNorm1d → ReLU → Dropout → Linear, trained a little so its running stats are not the defaults,
    and left in a mixed state (whole model train, BatchNorm eval) that a restore must reproduce exactly."""
    model = FeatureNet(dropout=0.4, batchnorm=True).to(device)
    model.train()
    with torch.no_grad():
        model(make_pool(32, seed=20).to(device))
    model.body[1].eval()
    return model


def record_modes(model: nn.Module) -> list[tuple[bool, bool]]:
    """(BatchNorm.training, Dropout.training) at each forward."""
    seen: list[tuple[bool, bool]] = []
    batchnorm, dropout = model.body[1], model.body[3]
    model.register_forward_pre_hook(lambda module, inputs: seen.append((batchnorm.training, dropout.training)))
    return seen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode, expected", [("dropout", (False, True)), ("train", (True, True))])
@pytest.mark.parametrize("score", SCORES)
def test_mc_mode_sets_module_modes_and_restores_everything(score, mode, expected, device):
    model = bn_dropout_net(device)
    flags, tensors = module_flags(model), tensor_snapshot(model)
    seen = record_modes(model)
    strategy = STRATEGIES[score](
        None, make_pool(30), model, NUM_CLASSES, {"device": device, "n_drop": 3, "batch_size": 4, "mc_mode": mode}
    )
    strategy.select(5)
    strategy.acquire_scores(make_pool(10))
    strategy.predict_prob_dropout_split(make_pool(10), 2)
    assert seen and set(seen) == {expected}
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)


@pytest.mark.parametrize("device", DEVICES)
def test_train_mode_uses_batch_statistics_dropout_mode_does_not(device):
    """In 'train' mode BatchNorm normalizes with batch statistics, so a sample's scores depend on its batch
    (and a batch of one fails, as in DISTIL); in 'dropout' mode they do not."""
    pool = make_pool(12, seed=21)
    scores = {}
    for mode in ("dropout", "train"):
        for batch_size in (3, 12):
            model = bn_dropout_net(device)
            model.body[3].p = 0.0  # no dropout noise: any difference comes from BatchNorm
            strategy = entropy_al.EntropySamplingDropout(
                None,
                pool,
                model,
                NUM_CLASSES,
                {"device": device, "n_drop": 2, "batch_size": batch_size, "mc_mode": mode},
            )
            scores[mode, batch_size] = strategy.acquire_scores(pool)
    torch.testing.assert_close(scores["dropout", 3], scores["dropout", 12])
    assert not torch.allclose(scores["train", 3], scores["train", 12])

    model = bn_dropout_net(device)
    flags, tensors = module_flags(model), tensor_snapshot(model)
    single = {"device": device, "n_drop": 2, "batch_size": 1}
    assert len(entropy_al.EntropySamplingDropout(None, pool, model, NUM_CLASSES, single).select(3)) == 3
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        entropy_al.EntropySamplingDropout(None, pool, model, NUM_CLASSES, {**single, "mc_mode": "train"}).select(3)
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reproduce", [False, True])
@pytest.mark.parametrize("mode", ["dropout", "train"])
def test_state_restored_when_the_model_raises_halfway(mode, reproduce, device):
    if reproduce and mode == "dropout":
        pytest.skip("reproduce_distil runs in train mode")
    model = FailingNet(bn_dropout_net(device), fail_at=5)
    flags, tensors = module_flags(model), tensor_snapshot(model)
    args = {"device": device, "n_drop": 3, "batch_size": 4, "mc_mode": mode, "reproduce_distil": reproduce}
    strategy = entropy_al.BALDDropout(None, make_pool(30), model, NUM_CLASSES, args)
    with pytest.raises(RuntimeError, match="boom"):
        strategy.select(4)
    assert model.calls == 5
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)


class MutatingNet(nn.Module):
    """A pathological model that writes its own weights (behind autograd's back) and a buffer in forward."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, NUM_CLASSES)
        self.dropout = nn.Dropout(0.2)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, features):
        self.linear.weight.data.mul_(1.5)  # .data: invisible to the version counter
        self.calls += 1
        return self.linear(self.dropout(features))


@pytest.mark.parametrize("mode", ["dropout", "train"])
def test_parameters_and_buffers_written_by_forward_are_restored(mode):
    model = MutatingNet()
    tensors = tensor_snapshot(model)
    args = {"device": "cpu", "n_drop": 2, "batch_size": 3, "mc_mode": mode}
    entropy_al.EntropySamplingDropout(None, make_pool(7), model, NUM_CLASSES, args).select(2)
    assert_same_tensors(model, tensors)


def test_untouched_tensors_keep_their_version_counters():
    """Restoring only what changed keeps an autograd graph built before select() usable."""
    model = FeatureNet(dropout=0.3)
    loss = model(make_pool(4)).square().sum()
    entropy_al.EntropySamplingDropout(None, make_pool(9), model, NUM_CLASSES, {"device": "cpu", "n_drop": 2}).select(3)
    loss.backward()  # would raise if a parameter had been written in place


def test_rebound_attributes_are_put_back():
    model = FeatureNet(dropout=0.3)
    original = model.body[0].weight
    with preserved_state(model):
        model.body[0].weight = nn.Parameter(torch.zeros_like(original))
    assert model.body[0].weight is original


def test_dropout_mode_covers_transformer_attention_dropout():
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=True)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), layer)
    model.train()
    with mc_mode(model, "dropout"):
        assert layer.training and layer.self_attn.training and layer.dropout1.training
        assert not model[0].training and not model[1].training and not layer.norm1.training
    assert all(module_flags(model))


def test_dropout_mode_warns_when_the_model_has_no_dropout_module():
    model = nn.Sequential(nn.Linear(6, NUM_CLASSES))
    dropout_mode = entropy_al.EntropySamplingDropout(None, make_pool(5), model, NUM_CLASSES, {"device": "cpu"})
    with pytest.warns(UserWarning, match="no dropout module.*mc_mode"):
        dropout_mode.select(2)
    strategy = entropy_al.EntropySamplingDropout(
        None, make_pool(5), model, NUM_CLASSES, {"device": "cpu", "mc_mode": "train"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strategy.select(2)


def test_unknown_mode_is_rejected_and_nothing_changes():
    model = FeatureNet()
    with pytest.raises(ValueError, match="mc_mode"), mc_mode(model, "eval"):
        pass
    assert all(module_flags(model))
