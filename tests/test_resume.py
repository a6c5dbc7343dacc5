"""Resumable selection: an interrupted select() leaves its last completed streaming step on disk, and a later
select() with the same settings resumes there and returns what an uninterrupted call returns (keyed dropout).

Pool items carry their pool index in feature 0, so the model can fail at a given pool index and count which
samples it ran on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from strategy_fixtures import NUM_CLASSES, FeatureNet, make_pool, pool_ids
from torch import nn

from entropy_al import BALDDropout, EntropySamplingDropout

BUFFER = 10  # stream_buffer_size: a checkpoint step
POOL = 47
BUDGET = 6


class Interruptible(nn.Module):
    """A dropout MLP that records the pool indices it runs on and raises ``error`` at pool index ``fail_at``."""

    def __init__(self, fail_at: int | None = None, error: type[BaseException] = RuntimeError):
        super().__init__()
        self.inner = FeatureNet(dropout=0.4)
        self.fail_at = fail_at
        self.error = error
        self.seen: set[int] = set()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        ids = pool_ids(features)
        if self.fail_at is not None and bool((ids >= self.fail_at).any()):
            raise self.error(f"interrupted at pool index {self.fail_at}")
        self.seen.update(ids.tolist())
        return self.inner(features)


def make_args(path: Path | None, **extra) -> dict:
    args = {
        "batch_size": 5,
        "device": "cpu",
        "n_drop": 4,
        "stream_buffer_size": BUFFER,
        "mc_dropout": "keyed",
        "mc_seed": None,  # drawn per call from torch's generator: a resumed call must reuse the saved draw
        **extra,
    }
    if path is not None:
        args["checkpoint"] = path
    return args


def select(model: nn.Module, path: Path | None, budget: int = BUDGET, pool=None, cls=EntropySamplingDropout, **extra):
    pool = make_pool(POOL) if pool is None else pool
    return cls(pool, pool, model, NUM_CLASSES, make_args(path, **extra)).select(budget)


def uninterrupted(seed: int = 0, **extra) -> list[int]:
    torch.manual_seed(seed)
    return select(Interruptible(), None, **extra)


def interrupt(path: Path, fail_at: int = 35, error: type[BaseException] = RuntimeError, **extra) -> None:
    torch.manual_seed(0)
    with pytest.raises(error, match="interrupted"):
        select(Interruptible(fail_at, error), path, **extra)
    assert path.exists(), "the last completed step must be on disk after the exception"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("every", [0, 3600.0])
def test_resume_after_an_interruption_equals_the_uninterrupted_selection(tmp_path, error, every):
    path = tmp_path / "select.ckpt"
    expected = uninterrupted()
    interrupt(path, fail_at=35, error=error, checkpoint_every=every)
    model = Interruptible()  # (its constructor seeds torch's generator)
    torch.manual_seed(12345)  # a different global draw: the resumed call must use the saved mc_seed
    assert select(model, path, checkpoint_every=every) == expected
    # Steps of BUFFER samples: 0-9, 10-19, 20-29 completed before the failure at 35, so the resume starts at 30.
    assert min(model.seen) == 30 and model.seen == set(range(30, POOL))
    assert not path.exists(), "the checkpoint is removed after a successful select()"


def test_a_successful_select_leaves_no_checkpoint(tmp_path):
    path = tmp_path / "select.ckpt"
    torch.manual_seed(0)
    assert select(Interruptible(), path, checkpoint_every=0) == uninterrupted()
    assert not path.exists()
    assert not list(tmp_path.iterdir()), "no temporary file may be left behind"


def test_checkpoint_accepts_os_pathlike_and_str(tmp_path):
    for path in (tmp_path / "a.ckpt", str(tmp_path / "b.ckpt")):
        torch.manual_seed(0)
        with pytest.raises(RuntimeError, match="interrupted"):
            select(Interruptible(25), path, checkpoint_every=0)
        assert os.path.exists(path)
        torch.manual_seed(1)
        assert select(Interruptible(), path) == uninterrupted()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"budget": BUDGET + 1}, "budget"),
        ({"pool": make_pool(POOL + 3)}, "pool"),
        ({"n_drop": 5}, "n_drop"),
        ({"cls": BALDDropout}, "BALDDropout|bald"),
    ],
    ids=["budget", "pool", "n_drop", "strategy"],
)
def test_a_mismatched_checkpoint_is_refused_and_left_alone(tmp_path, change, named):
    path = tmp_path / "select.ckpt"
    interrupt(path, checkpoint_every=0)
    saved = path.read_bytes()
    extra = dict(change)
    model = Interruptible()
    with pytest.raises(ValueError, match=named):
        select(model, path, checkpoint_every=0, **extra)
    assert not model.seen, "nothing may run before the checkpoint is checked"
    assert path.read_bytes() == saved


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_checkpoint_names_its_path(tmp_path, damage):
    path = tmp_path / "select.ckpt"
    interrupt(path, checkpoint_every=0)
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a checkpoint at all", "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        select(Interruptible(), path)


LOADED_CODE = []


def _mark_loaded():
    LOADED_CODE.append(True)
    return {}


class Payload:
    def __reduce__(self):
        return (_mark_loaded, ())


def test_loading_never_runs_pickled_code(tmp_path):
    path = tmp_path / "select.ckpt"
    torch.save({"state": Payload()}, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        select(Interruptible(), path)
    assert not LOADED_CODE


@pytest.mark.parametrize(
    ("extra", "error", "named"),
    [
        ({"checkpoint_every": -1.0}, ValueError, "checkpoint_every"),
        ({"checkpoint_every": float("nan")}, ValueError, "checkpoint_every"),
        ({"checkpoint_every": "often"}, TypeError, "checkpoint_every"),
        ({"checkpoint": 42}, TypeError, "checkpoint"),
    ],
)
def test_bad_checkpoint_args_are_named(tmp_path, extra, error, named):
    args = {"checkpoint": tmp_path / "select.ckpt", **extra}
    with pytest.raises(error, match=named):
        select(Interruptible(), None, **args)
