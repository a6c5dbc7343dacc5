"""The demo's outputs: the accuracy table, the area under the learning curve, the raw numbers and the plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .demo import DemoResult

__all__ = ["area_under_curve", "format_table", "plot_learning_curves", "write_outputs"]

_LABELS = {"entropy": "EntropySamplingDropout", "bald": "BALDDropout", "random": "random"}


def area_under_curve(accuracy: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Normalised area under each learning curve (trapezoids over labelled-set size): the mean accuracy over the
    labelling budget, in [0, 1]. ``accuracy`` is ``[seeds, rounds + 1]``; returns ``[seeds]``."""
    if len(sizes) == 1:
        return accuracy[:, 0].copy()
    widths = np.diff(sizes)
    return ((accuracy[:, 1:] + accuracy[:, :-1]) / 2 * widths).sum(1) / (sizes[-1] - sizes[0])


def _cell(values: np.ndarray, sign: str = "") -> str:
    """Mean ± std in percent; the mean alone for a single seed, whose spread is unknown rather than zero."""
    mean = f"{100 * values.mean():{sign}.1f}"
    return mean if len(values) < 2 else f"{mean} ± {100 * values.std():.1f}"


def format_table(result: DemoResult) -> str:
    """Markdown table: mean ± std test accuracy (%) across seeds per labelled-set size and strategy, then the area
    under the curve, then each uncertainty strategy's paired gain over random."""
    names = list(result.accuracy)
    header = ["labelled", *(_LABELS[n] for n in names)]
    sizes = result.labeled_sizes
    rows = [[str(size), *(_cell(result.accuracy[n][:, i]) for n in names)] for i, size in enumerate(sizes)]
    areas = {n: area_under_curve(result.accuracy[n], sizes) for n in names}
    rows.append(["**area under curve**", *(f"**{_cell(areas[n])}**" for n in names)])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    seeds = result.config.seeds
    lines.append("")
    lines.append(f"Test accuracy (%), mean ± std over {seeds} seeds." if seeds > 1 else "Test accuracy (%), one seed.")
    if "random" in areas:
        for n in names:
            if n == "random":
                continue
            # Paired by seed: same split, seed set and model inits, so the difference isolates the selection.
            gain = areas[n] - areas["random"]
            wins = int((gain > 0).sum())
            lines.append(
                f"{_LABELS[n]} − random, area under curve: {_cell(gain, '+')} points (ahead on {wins}/{seeds} "
                f"seed{'s' * (seeds > 1)})."
            )
    return "\n".join(lines)


def plot_learning_curves(result: DemoResult, path: Path) -> None:
    """Mean test accuracy against labelled-set size with a ±1 std band per strategy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot, so no global backend switch and no display needed.
    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    sizes = np.asarray(result.labeled_sizes)
    for name, accuracy in result.accuracy.items():
        mean, std = 100 * accuracy.mean(0), 100 * accuracy.std(0)
        (line,) = axes.plot(sizes, mean, marker="o", markersize=3, label=_LABELS[name])
        axes.fill_between(sizes, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    config = result.config
    axes.set_title(f"digits, MLP + MC dropout ({config.n_drop} passes), {config.seeds} seeds")
    axes.set_xlabel("labelled samples")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


def write_outputs(result: DemoResult, out: Path) -> dict[str, Path]:
    """Writes ``results.md`` (the table), ``results.json`` (config and per-seed accuracies) and
    ``learning_curve.png`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "results.md", "json": out / "results.json", "plot": out / "learning_curve.png"}
    files["table"].write_text(format_table(result) + "\n")
    raw = {
        "config": {**asdict(result.config), "strategies": list(result.config.strategies)},
        "labeled_sizes": result.labeled_sizes,
        "accuracy": {name: acc.tolist() for name, acc in result.accuracy.items()},
        "select_seconds": result.select_seconds,
        "seconds": result.seconds,
    }
    files["json"].write_text(json.dumps(raw, indent=2) + "\n")
    plot_learning_curves(result, files["plot"])
    return files
