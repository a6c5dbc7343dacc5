"""Throughput of the MC passes, continued: autocast, fast fetching, user batch samplers, CPU pools on CUDA."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import DEVICES
from strategy_fixtures import (
    NUM_CLASSES,
    NUM_FEATURES,
    EmbeddingNet,
    FeatureNet,
    ListDataset,
    LogitRecorder,
    deterministic_net,
    make_pool,
    reference_selection,
    strategy,
)
from torch import nn
from torch.utils.data import Subset, TensorDataset

from entropy_al.mc import autocast_for, tensor_source

# ------------------------------------------------------------------------------------------------------------------
# Autocast


@pytest.mark.parametrize("value", ["bf16", torch.bfloat16, "float16", torch.float16])
def test_amp_dtype_runs_the_forwards_in_low_precision_and_scores_in_float32(value):
    model = deterministic_net(seed=51)
    pool = make_pool(20, seed=52)
    seen = []
    model.body[-1].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    s = strategy("entropy", pool, model, n_drop=3, batch_size=8, amp_dtype=value)
    scores = s.acquire_scores(pool)
    low = torch.bfloat16 if "b" in str(value) else torch.float16
    assert set(seen) == {low} and scores.dtype == torch.float32
    exact = strategy("entropy", pool, model, n_drop=3, batch_size=8).acquire_scores(pool)
    torch.testing.assert_close(scores, exact, rtol=0, atol=0.05)
    assert len(s.select(5)) == 5


@pytest.mark.parametrize("value", [torch.float32, torch.float64, "fp8", "bfloat", 16, True])
def test_bad_amp_dtype_is_named(value):
    with pytest.raises(ValueError, match=r"amp_dtype.*torch\.bfloat16 or torch\.float16"):
        strategy("entropy", make_pool(3), FeatureNet(), amp_dtype=value)


def test_amp_dtype_unsupported_on_the_device_is_a_clear_error(monkeypatch):
    """torch disables autocast with a warning for a dtype a device lacks (e.g. float16 on older CPU builds)."""
    real = torch.autocast

    def autocast_without_float16(device_type, dtype=None, **kwargs):
        if dtype == torch.float16:
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.", stacklevel=2)
            return real(device_type, dtype=dtype, enabled=False)
        return real(device_type, dtype=dtype, **kwargs)

    monkeypatch.setattr(torch, "autocast", autocast_without_float16)
    s = strategy("entropy", make_pool(4), FeatureNet(), amp_dtype="fp16")
    with pytest.raises(ValueError, match=r"amp_dtype'\] = torch.float16 is not supported on cpu"):
        s.select(2)
    assert autocast_for("w", torch.bfloat16, torch.device("cpu")) is not None


def test_throughput_keys_conflict_with_reproduce_distil():
    for key, value in [("mc_head", "3"), ("amp_dtype", "bf16"), ("batch_sampler", [[0]])]:
        with pytest.raises(ValueError, match=rf"reproduce_distil.*{key}"):
            strategy("entropy", make_pool(3), FeatureNet(), reproduce_distil=True, **{key: value})


@pytest.mark.parametrize(
    "key, value, error",
    [("mc_memory_budget", -1, ValueError), ("mc_memory_budget", 1.5, TypeError), ("num_workers", -1, ValueError),
     ("batch_sampler", 5, TypeError), ("batch_sampler", "0,1", TypeError)],
)  # fmt: skip
def test_bad_throughput_args_are_named(key, value, error):
    with pytest.raises(error, match=key):
        strategy("entropy", make_pool(3), FeatureNet(), **{key: value})


# ------------------------------------------------------------------------------------------------------------------
# Fetching


class Items(ListDataset):
    """A dataset of tensor items, fetched one by one (a DataLoader's per-item path)."""


class CountingItems(ListDataset):
    """A dataset with ``__getitems__``: the DataLoader fetches each batch in one call."""

    def __init__(self, items):
        super().__init__(items)
        self.batch_calls = 0

    def __getitems__(self, indices):
        self.batch_calls += 1
        return [self.items[i] for i in indices]


class OverridingTensorDataset(TensorDataset):
    def __getitem__(self, index):
        return (self.tensors[0][index] * 0.0,)


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_backed_datasets_select_what_item_by_item_selects(device):
    pool = make_pool(40, seed=53)
    model = deterministic_net(seed=54).to(device)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    wide = torch.cat([make_pool(10, seed=55), pool])
    datasets = {
        "tensor": pool,
        "TensorDataset": TensorDataset(pool, torch.zeros(40)),
        "Subset(TensorDataset)": Subset(TensorDataset(pool[order]), order.argsort().tolist()),
        "Subset(Subset(tensor, range))": Subset(Subset(wide, range(10, 50)), list(range(40))),
        "Subset(tensor, tensor)": Subset(wide, torch.arange(10, 50)),
    }
    for name, dataset in datasets.items():
        assert tensor_source(dataset) is not None, name
    args = dict(n_drop=3, batch_size=6, stream_buffer_size=15)
    expected = strategy("entropy", Items(list(pool)), model, device, **args).select(12)
    assert expected == reference_selection(model(pool.to(device)).detach().cpu().unsqueeze(0), "entropy", 12)
    for name, dataset in datasets.items():
        assert strategy("entropy", dataset, model, device, **args).select(12) == expected, name
    assert tensor_source(OverridingTensorDataset(pool)) is None
    assert tensor_source(Items(list(pool))) is None


def test_a_model_writing_its_input_in_place_cannot_change_the_pool():
    pool = make_pool(20, seed=56)
    before = pool.clone()
    model = nn.Sequential(nn.Dropout(0.5, inplace=True), nn.Linear(NUM_FEATURES, NUM_CLASSES))
    for dataset in (pool, TensorDataset(pool), Subset(pool, range(3, 20))):
        for budget in (0, None):
            extra = {} if budget is None else {"mc_memory_budget": budget}
            strategy("entropy", dataset, model, n_drop=3, batch_size=4, **extra).select(5)
            assert torch.equal(pool, before)


def test_getitems_datasets_are_fetched_once_per_batch_and_workers_give_the_same_selection():
    pool = make_pool(24, seed=57)
    model = deterministic_net(seed=58)
    items = CountingItems(list(pool))
    expected = strategy("margin", Items(list(pool)), model, n_drop=3, batch_size=5).select(9)
    assert strategy("margin", items, model, n_drop=3, batch_size=5).select(9) == expected
    assert items.batch_calls == 5  # ⌈24 / 5⌉, whatever n_drop
    assert strategy("margin", Items(list(pool)), model, n_drop=3, batch_size=5, num_workers=1).select(9) == expected


def test_predict_helpers_use_the_fast_fetch_too():
    pool = make_pool(15, seed=59)
    model = EmbeddingNet()
    s = strategy("entropy", pool, model, batch_size=4)
    torch.testing.assert_close(s.predict_prob(TensorDataset(pool)), s.predict_prob(Items(list(pool))))
    labels = torch.arange(15) % NUM_CLASSES
    grads = s.get_grad_embedding(TensorDataset(pool, labels), predict_labels=False, grad_embedding_type="bias")
    assert grads.shape == (15, NUM_CLASSES)


# ------------------------------------------------------------------------------------------------------------------
# A user batch sampler


@pytest.mark.parametrize("kind", ["tensor", "items"])
@pytest.mark.parametrize("score", ["entropy", "margin"])
def test_batch_sampler_batches_in_any_order_select_the_same(score, kind):
    pool = make_pool(31, seed=60)
    model = deterministic_net(seed=61)
    dataset = pool if kind == "tensor" else Items(list(pool))
    order = torch.randperm(31, generator=torch.Generator().manual_seed(1)).tolist()
    sampler = [order[i : i + 4] for i in range(0, 31, 4)]  # shuffled batches, e.g. bucketed by length
    expected = strategy(score, dataset, model, n_drop=2, batch_size=8).select(10)
    s = strategy(score, dataset, model, n_drop=2, batch_size=8, batch_sampler=sampler)
    assert s.select(10) == expected
    recorder = LogitRecorder(model)
    scores = s.acquire_scores(dataset)
    assert recorder.stack(31).shape == (2, 31, NUM_CLASSES)  # every sample, n_drop times
    torch.testing.assert_close(scores, strategy(score, dataset, model, n_drop=2).acquire_scores(dataset))
    split = s.predict_prob_dropout_split(dataset, 2)
    torch.testing.assert_close(split[0], torch.softmax(model(pool), 1).detach())


def test_batch_sampler_nan_rows_and_bad_samplers():
    pool = make_pool(10, seed=62)
    model = deterministic_net()
    with pytest.raises(ValueError, match=r"yielded index 10 for a dataset of 10"):
        strategy("entropy", pool, model, batch_sampler=[[0, 1], [10]]).select(2)
    with pytest.raises(ValueError, match=r"yielded 9 indices for a dataset of 10"):
        strategy("entropy", pool, model, batch_sampler=[list(range(9))]).select(2)
    with pytest.raises(ValueError, match=r"empty batch"):
        strategy("entropy", pool, model, batch_sampler=[[]]).select(2)

    class NaNAt(nn.Module):
        def forward(self, x):
            out = x[:, :NUM_CLASSES] * 1.0
            out[x[:, 0].round().long() == 7] = float("nan")
            return out

    s = strategy("entropy", pool, NaNAt(), batch_sampler=[[9, 7, 8], list(range(7))], mc_mode="train")
    with pytest.raises(ValueError, match=r"1 pool sample, the first at pool index 7"):
        s.select(3)
    s.args["nan_policy"] = "omit"
    with pytest.warns(RuntimeWarning):
        assert s.select(10)[-1] == 7


# ------------------------------------------------------------------------------------------------------------------
# CUDA: a CPU pool prefetched to the GPU (pinned, side stream, one batch ahead)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="requires CUDA")
@pytest.mark.parametrize("kind", ["tensor", "items", "sampler"])
def test_cpu_pool_on_a_cuda_model_selects_what_the_cpu_selects(kind):
    pool = make_pool(300, seed=63)
    model = deterministic_net(seed=64)
    dataset = Items(list(pool)) if kind == "items" else pool
    batches = [list(range(i, min(300, i + 32))) for i in range(0, 300, 32)]
    extra = {"batch_sampler": batches} if kind == "sampler" else {}
    expected = strategy("bald", dataset, model, "cpu", n_drop=3, batch_size=32).select(40)
    got = strategy("bald", dataset, model.cuda(), "cuda", n_drop=3, batch_size=32, **extra).select(40)
    assert got == expected
