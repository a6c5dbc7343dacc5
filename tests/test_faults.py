"""Faults: the model raises, or a KeyboardInterrupt arrives, in the middle of select().

An interrupted ``select()`` leaves the model exactly as found (train/eval flags, parameters, buffers, and no keyed
dropout ``forward`` left on a dropout module), leaves no thread, DataLoader worker or progress bar behind (even while
the caller still holds the exception's traceback, as IPython does with ``sys.last_traceback``), and the next
``select()`` with the same seed returns what a clean run returns.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import torch
from strategy_fixtures import (
    NUM_CLASSES,
    FeatureNet,
    ListDataset,
    assert_same_tensors,
    make_pool,
    module_flags,
    tensor_snapshot,
)
from torch import nn
from tqdm import tqdm

import entropy_al

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupting(nn.Module):
    """Runs ``inner`` but raises ``error`` on forward number ``at`` (counting from the first call; 0: never)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.at = 0
        self.error: type[BaseException] = KeyboardInterrupt

    def forward(self, features: torch.Tensor, last: bool = False) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise self.error(f"interrupted at forward {self.calls}")  # a fresh exception: no traceback kept here
        logits = self.inner(features)
        return (logits, features) if last else logits


def bn_dropout_model() -> Interrupting:
    """Linear → BatchNorm1d → ReLU → Dropout → Linear with trained running statistics, in a mixed mode (train,
    BatchNorm in eval) that a restore must reproduce exactly."""
    inner = FeatureNet(dropout=0.4, batchnorm=True)
    inner.train()
    with torch.no_grad():
        inner(make_pool(32, seed=20))
    inner.body[1].eval()
    return Interrupting(inner)


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def no_keyed_forward_left(model: nn.Module) -> bool:
    return all("forward" not in module.__dict__ for module in model.modules())


POOL = make_pool(40, seed=3)
PATHS = {
    "fast": ({"mc_memory_budget": 0}, POOL),
    "fast-stacked": ({}, POOL),  # several passes per forward (the default memory budget)
    "train-mode": ({"mc_mode": "train"}, POOL),
    "reproduce_distil": ({"reproduce_distil": True}, POOL),
    "batch_sampler": ({"batch_sampler": [list(range(i, min(40, i + 6))) for i in range(0, 40, 6)][::-1]}, POOL),
    "workers": ({"num_workers": 2}, ListDataset(list(POOL))),
    "progress": ({"progress": True}, POOL),
    "keyed": ({"mc_dropout": "keyed"}, POOL),
}


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("path", PATHS)
def test_interrupted_select_leaves_nothing_behind(path, error):
    args, pool = PATHS[path]
    model = bn_dropout_model()
    args = {"device": "cpu", "n_drop": 3, "batch_size": 4, "stream_buffer_size": 12, **args}
    strategy = entropy_al.BALDDropout(None, pool, model, NUM_CLASSES, args)
    threads, children = set(threading.enumerate()), set(multiprocessing.active_children())
    torch.manual_seed(0)
    clean = strategy.select(7)
    threads |= {t for t in threading.enumerate() if t.name == "tqdm_monitor"}  # tqdm's own, once per process
    flags, tensors = module_flags(model), tensor_snapshot(model)

    model.at, model.error = model.calls + 4, error  # a few forwards into the pool
    torch.manual_seed(1)
    with pytest.raises(error, match="interrupted at forward") as held:  # `held` keeps the traceback alive
        strategy.select(7)
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)
    assert no_keyed_forward_left(model)
    assert not tqdm._instances, "the progress bar was not closed"
    assert wait_until(lambda: set(multiprocessing.active_children()) <= children), "DataLoader workers left running"
    assert wait_until(lambda: set(threading.enumerate()) <= threads), f"threads left: {threading.enumerate()}"
    del held

    torch.manual_seed(0)
    assert strategy.select(7) == clean
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)


def test_interrupt_between_merges_restores_the_model(monkeypatch):
    """A KeyboardInterrupt outside the model (here in the streaming merge) restores the model just the same."""
    model = bn_dropout_model()
    args = {"device": "cpu", "n_drop": 2, "batch_size": 4, "stream_buffer_size": 8}
    strategy = entropy_al.EntropySamplingDropout(None, POOL, model, NUM_CLASSES, args)
    torch.manual_seed(0)
    clean = strategy.select(5)
    flags, tensors = module_flags(model), tensor_snapshot(model)
    merge, merges = entropy_al.ops.mc_topk_update, []

    def interrupted_merge(*merge_args, **merge_kwargs):
        merges.append(1)
        if len(merges) == 2:
            raise KeyboardInterrupt("interrupted in the second merge")
        return merge(*merge_args, **merge_kwargs)

    monkeypatch.setattr(entropy_al.ops, "mc_topk_update", interrupted_merge)
    with pytest.raises(KeyboardInterrupt, match="second merge"):
        strategy.select(5)
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)
    monkeypatch.undo()
    torch.manual_seed(0)
    assert strategy.select(5) == clean


@pytest.mark.parametrize("method", ["acquire_scores", "predict_prob_dropout", "predict", "get_embedding"])
def test_interrupted_helpers_restore_the_model(method):
    model = bn_dropout_model()
    strategy = entropy_al.EntropySamplingDropout(None, POOL, model, NUM_CLASSES, {"device": "cpu", "batch_size": 4})
    call = {
        "acquire_scores": lambda: strategy.acquire_scores(POOL),
        "predict_prob_dropout": lambda: strategy.predict_prob_dropout(POOL, 3),
        "predict": lambda: strategy.predict(POOL),
        "get_embedding": lambda: strategy.get_embedding(POOL),
    }[method]
    flags, tensors = module_flags(model), tensor_snapshot(model)
    model.at = 3
    with pytest.raises(KeyboardInterrupt):
        call()
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)


def test_keyed_mc_dropout_restores_forwards_on_keyboard_interrupt():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.AlphaDropout(0.1)))
    with pytest.raises(KeyboardInterrupt):
        with entropy_al.keyed_mc_dropout(model, seed=3) as keyed:
            assert not no_keyed_forward_left(model)
            with keyed.batch(torch.arange(2), 0):
                model(torch.ones(2, 4))
                raise KeyboardInterrupt
    assert no_keyed_forward_left(model)
    assert keyed._batch is None
    with entropy_al.keyed_mc_dropout(model, seed=3) as keyed:  # usable again: nothing half-patched
        with keyed.batch(torch.arange(2), 0):
            assert model(torch.ones(2, 4)).shape == (2, 4)
