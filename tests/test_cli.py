"""The command line: `info` names the backend, and the demo really runs active learning end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

import entropy_al
from entropy_al import demo
from entropy_al.cli import main

# `info` needs only torch; the demo also needs the `demo` extra.
needs_demo_extra = pytest.mark.skipif(
    find_spec("sklearn") is None or find_spec("matplotlib") is None, reason="requires scikit-learn and matplotlib"
)

# A few seconds: 1 seed, 4 strategies, 3 trainings each on 30, 40 and 50 labels.
TINY = ["demo", "--quick", "--no-progress", "--device", "cpu"]
SIZES = [30, 40, 50]


def test_info_names_the_active_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    info = entropy_al.backend_info()
    assert "entropy_al:" in out and entropy_al.__version__ in out
    assert "why:" in out and str(info["reason"]) in out
    expected = {"cpp": "C++ CPU kernel", "torch": "pure-PyTorch fallback"}[info["cpu_backend"]]
    assert any(line.startswith("CPU tensors run on:") and expected in line for line in out.splitlines())


def test_python_dash_m_runs_info() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entropy_al", "info"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "CUDA tensors run on:" in done.stdout


@needs_demo_extra
def test_demo_writes_table_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    png, table = tmp_path / "learning_curve.png", tmp_path / "results.md"
    assert f"learning curve: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = table.read_text()
    assert (
        "| labelled | EntropySamplingDropout | BALDDropout | PowerEntropySamplingDropout | PowerBALDDropout |" in text
    )
    assert "| distinct classes per batch |" in text
    assert "**area under curve**" in text and text in out + "\n"
    assert "±" not in text and "one seed" in text  # one seed has no spread to show, not a spread of 0.0
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["labeled_sizes"] == SIZES
    assert {name: np.shape(acc) for name, acc in raw["accuracy"].items()} == dict.fromkeys(
        demo.DEFAULT_STRATEGIES, (1, 3)
    )
    # Classes among each acquired batch's labels: between 1 and the batch (10 here), per seed and round.
    distinct = {name: np.asarray(counts) for name, counts in raw["distinct_classes"].items()}
    assert {name: counts.shape for name, counts in distinct.items()} == dict.fromkeys(demo.DEFAULT_STRATEGIES, (1, 2))
    assert all(((counts >= 1) & (counts <= 10)).all() for counts in distinct.values())


@needs_demo_extra
def test_demo_learns_and_labels_budget_per_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if the loop silently does nothing: no learning, no new labels, or the strategies' picks ignored."""
    trained_on: list[int] = []
    picks: dict[str, list[int]] = {}
    train, select = demo._train, demo._select

    def spy_train(model, x, y, epochs):
        trained_on.append(len(x))
        return train(model, x, y, epochs)

    def spy_select(name, model, split, labeled, unlabeled, config, rng):
        picked = select(name, model, split, labeled, unlabeled, config, rng)
        assert not set(picked.tolist()) & set(labeled.tolist()), f"{name} picked an already labelled sample"
        picks.setdefault(name, []).extend(picked.tolist())
        return picked

    monkeypatch.setattr(demo, "_train", spy_train)
    monkeypatch.setattr(demo, "_select", spy_select)
    config = demo.DemoConfig(**demo.QUICK, out=str(tmp_path), progress=False)
    result = demo.run_demo(config)

    assert trained_on == SIZES * len(demo.DEFAULT_STRATEGIES)  # one seed; strategies run one after another
    assert all(len(p) == 2 * config.budget for p in picks.values())
    assert picks["entropy"] != picks["random"] and picks["bald"] != picks["random"]
    for name, accuracy in result.accuracy.items():
        assert accuracy[0, -1] > 0.3, f"{name}: {accuracy} is not far above chance (0.1)"
    # Same seed, same seed set, same init: round 0 cannot depend on the strategy.
    assert len({accuracy[0, 0] for accuracy in result.accuracy.values()}) == 1


@needs_demo_extra
def test_demo_is_reproducible(tmp_path: Path) -> None:
    config = demo.DemoConfig(**{**demo.QUICK, "rounds": 1}, strategies=("entropy",), progress=False)
    first = demo.run_demo(dataclasses.replace(config, out=str(tmp_path / "a")))
    second = demo.run_demo(dataclasses.replace(config, out=str(tmp_path / "b")))
    np.testing.assert_array_equal(first.accuracy["entropy"], second.accuracy["entropy"])


@pytest.mark.parametrize(
    "argv", [["demo", "--strategies", "margin"], ["demo", "--rounds", "two"], ["nope"], []], ids=str
)
def test_bad_arguments_exit_with_usage(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize("key, value", [("budget", 0), ("seeds", 0), ("rounds", -1), ("dropout", 1.0)])
def test_demo_rejects_bad_config(key: str, value: float, tmp_path: Path) -> None:
    config = demo.DemoConfig(**{**demo.QUICK, key: value}, out=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match=key):
        demo.run_demo(config)


def _refuses_before_training(argv: list[str], monkeypatch, capsys) -> str:
    """Runs the demo CLI, which must exit 2 with a one-line error and without training anything."""

    def no_training(*args, **kwargs):
        raise AssertionError("the demo started training before checking its arguments")

    monkeypatch.setattr(demo, "_train", no_training)
    assert main([*TINY[:3], *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("entropy-al demo: error: "), err
    return err


@needs_demo_extra
@pytest.mark.parametrize(
    "device, match",
    [
        ("meta", "`device` to be 'cpu', 'cuda' or 'cuda:N', got 'meta'"),
        ("garbage", "`device` to be 'cpu', 'cuda' or 'cuda:N', got 'garbage'"),
        pytest.param(
            "cuda",
            "`device` 'cuda' is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA"),
        ),
        ("cuda:4096", "`device` 'cuda:4096' is not available"),
    ],
)
def test_demo_checks_device_before_training(device, match, tmp_path, monkeypatch, capsys) -> None:
    err = _refuses_before_training(["--device", device, "--out", str(tmp_path)], monkeypatch, capsys)
    assert match in err


@needs_demo_extra
def test_demo_checks_out_before_training(tmp_path, monkeypatch, capsys) -> None:
    existing_file = tmp_path / "results.md"
    existing_file.write_text("not a folder")
    err = _refuses_before_training(["--device", "cpu", "--out", str(existing_file)], monkeypatch, capsys)
    assert "`out`" in err and "is an existing file" in err
    err = _refuses_before_training(["--device", "cpu", "--out", str(existing_file / "sub")], monkeypatch, capsys)
    assert "cannot write the results into `out`" in err


@needs_demo_extra
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_demo_checks_out_is_writable(tmp_path, monkeypatch, capsys) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o500)
    try:
        err = _refuses_before_training(["--device", "cpu", "--out", str(read_only)], monkeypatch, capsys)
    finally:
        read_only.chmod(0o700)
    assert "cannot write the results into `out`" in err
