"""Resumable selection beyond the fused keyed path: DISTIL's extension point, DISTIL's loop, torch's dropout, when
saves happen, the progress bar, seeds, the NaN policy, and refusals (seed, world size, folder, batch sampler)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from strategy_fixtures import NUM_CLASSES, make_pool, pool_ids
from test_resume import BUDGET, POOL, Interruptible, interrupt, select, uninterrupted

from entropy_al import EntropySamplingDropout
from entropy_al.active_learning_strategies import ScoreStreamingStrategy
from entropy_al.selection import SelectionCheckpoint


class FeatureScores(ScoreStreamingStrategy):
    """DISTIL's extension point: scores from a model's first logit, one forward per sample of the buffer."""

    def acquire_scores(self, unlabeled_buffer: Any) -> torch.Tensor:
        items = torch.stack([unlabeled_buffer[i] for i in range(len(unlabeled_buffer))])
        with torch.no_grad():
            return self.model.eval()(items)[:, 0]


def test_an_overridden_acquire_scores_resumes_at_the_saved_step(tmp_path):
    path = tmp_path / "select.ckpt"
    expected = uninterrupted(cls=FeatureScores)
    interrupt(path, fail_at=35, cls=FeatureScores, checkpoint_every=3600.0)
    model = Interruptible()
    assert select(model, path, cls=FeatureScores) == expected
    assert model.seen == set(range(30, POOL))
    assert not path.exists()


def test_distil_loop_and_torch_dropout_resume_without_rerunning_done_samples(tmp_path):
    # With torch's dropout the resumed part draws fresh masks: the selection is a valid one, not the same one.
    path = tmp_path / "select.ckpt"
    extra = {"mc_dropout": "torch", "reproduce_distil": True}
    interrupt(path, fail_at=25, **extra)
    model = Interruptible()
    selected = select(model, path, **extra)
    assert len(set(selected)) == BUDGET and all(0 <= i < POOL for i in selected)
    assert model.seen == set(range(20, POOL))


class Watching(Interruptible):
    """Records, when it runs on pool index 25, the next offset of the checkpoint on disk (``None``: no file)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.found: list[int | None] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if 25 in pool_ids(features).tolist():
            saved = torch.load(self.path, weights_only=True) if self.path.exists() else None
            self.found.append(None if saved is None else saved["next_offset"])
        return super().forward(features)


@pytest.mark.parametrize(("every", "on_disk"), [(0, 20), (3600.0, None)])
def test_saves_happen_every_step_or_only_on_failure(tmp_path, every, on_disk):
    """While the model runs at pool index 25: the step 10-19 with checkpoint_every 0, no file with 3600 s."""
    path = tmp_path / "select.ckpt"
    torch.manual_seed(0)
    model = Watching(path)
    assert select(model, path, checkpoint_every=every) == uninterrupted()
    assert model.found == [on_disk]


def test_the_progress_bar_starts_at_the_saved_offset(tmp_path, monkeypatch):
    bars: list[dict[str, Any]] = []

    class RecordingBar:
        def __init__(self, total: int, initial: int = 0, **kwargs: Any):
            bars.append({"total": total, "initial": initial, "updates": 0})

        def update(self, amount: int) -> None:
            bars[-1]["updates"] += amount

        def close(self) -> None:
            pass

    path = tmp_path / "select.ckpt"
    interrupt(path, fail_at=35)
    monkeypatch.setattr("tqdm.auto.tqdm", RecordingBar)
    select(Interruptible(), path, progress=True)
    assert bars == [{"total": POOL, "initial": 30, "updates": POOL - 30}]


def test_a_given_seed_must_match_the_saved_one(tmp_path):
    path = tmp_path / "select.ckpt"
    interrupt(path, mc_seed=7)
    model = Interruptible()
    with pytest.raises(ValueError, match="mc_seed: saved 7, now 8"):
        select(model, path, mc_seed=8)
    assert not model.seen and path.exists()
    torch.manual_seed(0)
    assert select(Interruptible(), path, mc_seed=7) == select(Interruptible(), None, mc_seed=7)


def test_broken_logits_keep_the_finished_state_for_a_resume_with_omit(tmp_path):
    class Broken(Interruptible):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            logits = super().forward(features)
            return torch.where((pool_ids(features) == 12)[:, None], float("nan"), logits)

    path = tmp_path / "select.ckpt"
    with pytest.raises(ValueError, match="first at pool index 12"):
        select(Broken(), path)
    assert torch.load(path, weights_only=True)["next_offset"] == POOL
    model = Broken()
    with pytest.warns(RuntimeWarning, match="first at pool index 12"):
        selected = select(model, path, nan_policy="omit")
    assert not model.seen and 12 not in selected and len(selected) == BUDGET
    assert not path.exists()


def test_a_failure_before_the_first_step_leaves_no_file(tmp_path):
    path = tmp_path / "select.ckpt"
    with pytest.raises(RuntimeError, match="interrupted"):
        select(Interruptible(fail_at=3), path, checkpoint_every=0)
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_of_another_world_size_is_refused(tmp_path):
    path = tmp_path / "select.ckpt"
    interrupt(path)
    path.rename(tmp_path / "select.ckpt.rank0")
    with pytest.raises(ValueError, match="same world size"):
        select(Interruptible(), path)


def test_a_checkpoint_in_a_missing_folder_is_refused_before_running(tmp_path):
    model = Interruptible()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "missing"))):
        select(model, tmp_path / "missing" / "select.ckpt")
    assert not model.seen


def test_a_checkpoint_cannot_resume_a_batch_sampler(tmp_path):
    with pytest.raises(ValueError, match="checkpoint.*batch_sampler"):
        select(Interruptible(), tmp_path / "select.ckpt", batch_sampler=[[0, 1], [2]])


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: s.update(version=2), "format version 2"),
        (lambda s: s.update(keys=s["keys"][:0].to(torch.float32)), "bad top-k keys"),
        (lambda s: s.update(keys=s["keys"].flip(0)), "not in descending order"),
        (lambda s: s.update(next_offset=10), "outside the pool range done"),
        (lambda s: s.update(seeds={"mc_seed": "7"}), "bad seeds"),
    ],
)
def test_a_damaged_state_is_refused_with_its_path(tmp_path, edit, problem):
    path = tmp_path / "select.ckpt"
    interrupt(path, checkpoint_every=0)
    saved = torch.load(path, weights_only=True)
    edit(saved)
    torch.save(saved, path)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*{problem}"):
        select(Interruptible(), path)


def test_a_failing_save_does_not_hide_the_selections_error(tmp_path, monkeypatch):
    def refuse(self: SelectionCheckpoint, state: Any, durable: bool = False) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(SelectionCheckpoint, "_save", refuse)
    with pytest.warns(RuntimeWarning, match="disk full"), pytest.raises(RuntimeError, match="interrupted"):
        select(Interruptible(fail_at=35), tmp_path / "select.ckpt", checkpoint_every=3600.0)


def test_budget_and_pool_edge_cases_ignore_the_checkpoint(tmp_path):
    path = tmp_path / "select.ckpt"
    strategy = EntropySamplingDropout(None, make_pool(0), Interruptible(), NUM_CLASSES, {"checkpoint": path})
    assert strategy.select(3) == []
    assert select(Interruptible(), path, budget=0) == []
    assert not path.exists()
