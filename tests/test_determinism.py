"""Determinism: the same seed gives the same selection, run to run.

On the CPU (asserted here), with the same ``torch.manual_seed``, pool, model, ``args`` and number of intra-op threads,
``select()`` returns the same list every time, in this process and in a fresh one with another ``PYTHONHASHSEED``,
on every path: batch-major with one pass per forward or stacked passes, DISTIL's whole-model train mode, a user
batch sampler, ``reproduce_distil`` and, once the strategies take ``args['mc_dropout'] = 'keyed'``, keyed MC dropout
(whose selection then no longer depends on ``batch_size`` or stacking either). With torch's dropout the masks, hence
the selection, do depend on ``batch_size``, ``mc_memory_budget`` (passes per forward) and, for ``reproduce_distil``,
``stream_buffer_size``: keep them fixed. A different thread count may round the model's matmuls differently.

On CUDA (``test_cuda_selection_is_repeatable``, skipped without a GPU): on one GPU with the same software stack, the
same seed and fixed ``args`` give the same selection run to run. Dropout masks come from the CUDA Philox generator,
whose offsets depend only on the sequence of launches; the score kernel reduces in a fixed order (CUB block
reductions, no floating-point atomics) and the streaming top-k keys (score bits, inverted pool index) are unique, so
the merge order is total. What does not hold on CUDA: equality with the CPU selection (another generator, other
rounding), across GPU models or CUDA/cuBLAS/cuDNN versions, or for models whose own kernels are non-deterministic
(atomics in ``index_add``/``scatter``, some cuDNN convolutions: ``torch.use_deterministic_algorithms(True)`` and
``CUBLAS_WORKSPACE_CONFIG=:4096:8``). One more CUDA caveat: the default ``mc_memory_budget`` is
``min(1 GiB, free memory / 4)``, so when that bound binds, a run with less free memory stacks fewer passes per forward
and draws other masks; pass an explicit ``mc_memory_budget`` (or use keyed dropout) for repeatable selections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import CUDA
from strategy_fixtures import NUM_CLASSES, FeatureNet, make_pool

import entropy_al

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

POOL_SIZE = 60
# name: args on top of {"n_drop": 4, "batch_size": 8, "stream_buffer_size": 25}
PATHS = {
    "one-pass-per-forward": {"mc_memory_budget": 0},
    "stacked": {"mc_memory_budget": 1 << 20},
    "train-mode": {"mc_mode": "train"},
    "batch_sampler": {"batch_sampler": [list(range(i, min(POOL_SIZE, i + 7))) for i in range(0, POOL_SIZE, 7)][::-1]},
    "reproduce_distil": {"reproduce_distil": True},
    "keyed": {"mc_dropout": "keyed"},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def selection(path: str, seed: int, device: str = "cpu", **overrides) -> list[int]:
    """A fresh model and strategy, ``torch.manual_seed(seed)``, then ``select(12)``."""
    args = {"device": device, "n_drop": 4, "batch_size": 8, "stream_buffer_size": 25, **PATHS[path], **overrides}
    strategy = entropy_al.BALDDropout(None, make_pool(POOL_SIZE, seed=9), FeatureNet(dropout=0.5), NUM_CLASSES, args)
    torch.manual_seed(seed)
    return strategy.select(12)


@pytest.mark.parametrize("path", PATHS)
def test_same_seed_same_selection_on_cpu(path):
    first = selection(path, seed=0)
    assert selection(path, seed=0) == first
    # Dropout is in play (a deterministic model has BALD = 0 everywhere: the first 12 by the tie rule) and, with
    # torch's dropout, the seed matters. (Keyed dropout may take its seed from args rather than torch's generator.)
    assert first != list(range(12))
    if path != "keyed":
        assert any(selection(path, seed=seed) != first for seed in (1, 2, 3))


def test_repeated_calls_on_one_strategy_with_the_same_seed():
    """The strategy keeps no state between calls that changes the next selection (e.g. a pass grouping or a cache)."""
    args = {"device": "cpu", "n_drop": 4, "batch_size": 8}
    strategy = entropy_al.EntropySamplingDropout(None, make_pool(POOL_SIZE, seed=9), FeatureNet(0.5), NUM_CLASSES, args)
    runs = []
    for _ in range(3):
        torch.manual_seed(7)
        runs.append(strategy.select(12))
        strategy.acquire_scores(make_pool(5))  # other calls in between draw other random numbers
    assert runs[0] == runs[1] == runs[2]


_SUBPROCESS = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
import test_determinism
print(json.dumps({path: test_determinism.selection(path, seed=0) for path in json.loads(sys.argv[2])}))
"""


def test_same_selection_in_a_fresh_process():
    """Nothing depends on the process: not on hash randomization (set iteration order), ids or allocation order."""
    paths = list(PATHS)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS, os.path.join(ROOT, "tests"), json.dumps(paths)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    there = json.loads(result.stdout.strip().splitlines()[-1])
    assert there == {path: selection(path, seed=0) for path in paths}


def test_keyed_selection_does_not_depend_on_batching_or_stacking():
    expected = selection("keyed", seed=0)
    for overrides in ({"batch_size": 1}, {"batch_size": 60}, {"mc_memory_budget": 0}, {"stream_buffer_size": 7}):
        assert selection("keyed", seed=0, **overrides) == expected, overrides


@CUDA
@pytest.mark.parametrize("path", PATHS)
def test_cuda_selection_is_repeatable(path):
    """Same seed, same GPU, same args (an explicit mc_memory_budget where stacking applies): same selection."""
    first = selection(path, seed=0, device="cuda")
    assert selection(path, seed=0, device="cuda") == first
    assert first != list(range(12))
    if path != "keyed":
        assert any(selection(path, seed=seed, device="cuda") != first for seed in (1, 2, 3))
