"""No leaks: 100 repeated ``select()`` calls keep the process's memory flat.

After a warm-up, 100 more calls may not grow the CPU resident set (``/proc/self/statm``) by more than a fraction of
what they allocate in total (so a selection that kept its logits, or its DataLoader, alive would fail), nor the
number of objects tracked by Python's garbage collector (any per-call reference kept: a cache, a list of warnings,
a traceback). The same holds for calls interrupted halfway by the model. On CUDA, the allocated memory after 100
calls is what it was after the warm-up.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest
import torch
from conftest import CUDA
from strategy_fixtures import NUM_CLASSES, FeatureNet, make_pool
from torch import nn

import entropy_al

statm = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc/self/statm")

CALLS = 100
WARM_UP = 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm_file:
        return int(statm_file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class FailsEveryOtherCall(nn.Module):
    """Raises halfway through every second select (forward 4 of 8), a fresh exception each time."""

    def __init__(self):
        super().__init__()
        self.inner = FeatureNet(dropout=0.3)
        self.calls = 0

    def forward(self, features):
        self.calls += 1
        if self.calls % 16 == 4:
            raise RuntimeError("the model failed halfway")
        return self.inner(features)


# name: (pool size, args, model factory)
PATHS = {
    "fast": (1024, {"batch_size": 64}, FeatureNet),
    "batch-1-tiny-buffers": (24, {"batch_size": 1, "stream_buffer_size": 5, "n_drop": 2}, FeatureNet),
    "reproduce_distil": (256, {"batch_size": 64, "reproduce_distil": True}, FeatureNet),
    "interrupted": (128, {"batch_size": 16, "mc_memory_budget": 0, "n_drop": 1}, FailsEveryOtherCall),
}


def run(strategy: entropy_al.BALDDropout, calls: int) -> None:
    for _ in range(calls):
        try:
            assert len(strategy.select(10)) == 10
        except RuntimeError as exc:
            assert "failed halfway" in str(exc)


@statm
@pytest.mark.parametrize("path", list(PATHS))
def test_repeated_select_keeps_cpu_memory_flat(path):
    size, args, factory = PATHS[path]
    pool = make_pool(size, seed=5)
    strategy = entropy_al.BALDDropout(None, pool, factory(), NUM_CLASSES, {"device": "cpu", "n_drop": 4, **args})
    run(strategy, WARM_UP)
    gc.collect()
    objects, resident = len(gc.get_objects()), resident_bytes()
    run(strategy, CALLS)
    gc.collect()
    grown_objects, grown_bytes = len(gc.get_objects()) - objects, resident_bytes() - resident
    # What 100 calls allocate at least: their [n_drop, pool, C] float32 logits.
    allocated = CALLS * strategy.n_drop * size * NUM_CLASSES * 4
    assert grown_bytes < max(2 << 20, allocated // 4), f"RSS grew by {grown_bytes} bytes over {CALLS} calls"
    assert grown_objects < 50, f"{grown_objects} more Python objects after {CALLS} calls"
    assert sys.getrefcount(strategy) < 10


@CUDA
@pytest.mark.parametrize("path", ["fast", "interrupted"])
def test_repeated_select_keeps_cuda_memory_flat(path):
    size, args, factory = PATHS[path]
    pool = make_pool(size, seed=5)
    strategy = entropy_al.BALDDropout(None, pool, factory(), NUM_CLASSES, {"device": "cuda", "n_drop": 4, **args})
    run(strategy, WARM_UP)
    gc.collect()
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    run(strategy, CALLS)
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - allocated <= 64 << 10
