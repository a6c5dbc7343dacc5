"""What BatchBALD's candidate pre-filter trades on the demo (digits, 10 rounds of 20 labels).

    python benchmarks/demo_batchbald_candidates.py [--seeds 3]

Runs the demo's BatchBALD curve with three candidate sets: the whole pool (``args['candidates'] = None``), the
default max(10 · budget, 1000), and a tight 5 · budget. At every selection of the default and tight runs the
whole-pool batch is also computed from the same model and keyed seed: the overlap is the share of it picked.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import entropy_al.demo as demo
from benchmarks.common import print_table
from entropy_al.active_learning_strategies import batch_bald
from entropy_al.demo_report import area_under_curve

SETTINGS = {"whole pool": (10**9, 0), "default": (10, 1000), "5 · budget": (5, 0)}
_select = demo._select


def candidate_rules(per_pick: int, minimum: int) -> None:
    batch_bald.CANDIDATES_PER_PICK, batch_bald.MIN_CANDIDATES = per_pick, minimum


def run(name: str, overlaps: list[float], seeds: int) -> np.ndarray:
    def select(strategy, model, split, labeled, unlabeled, config, rng):
        state = torch.get_rng_state()  # the keyed seed is drawn from it: the same for both selections
        picked = _select(strategy, model, split, labeled, unlabeled, config, rng)
        if name != "whole pool":
            after = torch.get_rng_state()
            torch.set_rng_state(state)
            candidate_rules(*SETTINGS["whole pool"])
            whole = _select(strategy, model, split, labeled, unlabeled, config, rng)
            candidate_rules(*SETTINGS[name])
            torch.set_rng_state(after)
            overlaps.append(len(set(picked.tolist()) & set(whole.tolist())) / len(whole))
        return picked

    candidate_rules(*SETTINGS[name])
    demo._select = select
    config = demo.DemoConfig(
        strategies=("batchbald",), seeds=seeds, progress=False, out=f"/tmp/demo_candidates_{name[:5]}"
    )
    result = demo.run_demo(config)
    return result.accuracy["batchbald"], result.labeled_sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    seeds = parser.parse_args().seeds
    rows = []
    for name in SETTINGS:
        overlaps: list[float] = []
        accuracy, sizes = run(name, overlaps, seeds)
        area = area_under_curve(accuracy, sizes)
        rows.append(
            [
                name,
                f"{100 * area.mean():.1f} ± {100 * area.std():.1f}",
                f"{100 * accuracy[:, -1].mean():.1f}",
                "–" if not overlaps else f"{np.mean(overlaps):.0%} (min {min(overlaps):.0%})",
            ]
        )
    print_table(["candidates", "area under curve %", "final accuracy %", "overlap with whole-pool batch"], rows)


if __name__ == "__main__":
    main()
