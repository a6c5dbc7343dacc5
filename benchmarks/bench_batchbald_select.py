"""``BatchBALDDropout.select()`` end to end (MC passes, BALD candidates, greedy), and how much the greedy's sampling
alone moves a batch: the baseline against which the candidate pre-filter's overlap is to be read.

    python benchmarks/bench_batchbald_select.py            # N = 10k and 100k, budget 10 and 100
    python benchmarks/bench_batchbald_select.py --quick    # N = 10k only

Table 1: ``select()`` on a tensor pool through a 16-64-10 MLP (dropout injected before its ``linear``, the keyed
consistent passes), ``n_drop`` = 20, default candidates = max(10 · budget, 1000): wall time and peak resident memory
above the start of the call, in a fresh process each; batchbald_redux's time on the same pool's ``[N, K, C]``
log-probabilities is extrapolated from ``bench_batchbald.py``'s measured cost per candidate and greedy step
(``--redux-ms``), as running it at 100k would take hours; "overlap" is with our whole-pool batch (N = 10k only).
Table 2: seed-to-seed overlap: the same synthetic log-probabilities, the greedy's configurations drawn from two
seeds, on the whole pool and on the default candidates, beside the candidates' overlap with the whole pool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_batchbald import PeakMemory, overlap, synthetic_log_probs
from benchmarks.common import machine_description, print_table
from entropy_al import BatchBALDDropout
from entropy_al.selection.batchbald import batchbald_select
from entropy_al.selection.candidates import CandidateKeeper


class Net(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Sequential(nn.Linear(16, 64), nn.ReLU())
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        return self.linear(self.fc(x))


def child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    pool = torch.randn(spec["N"], 16, generator=torch.Generator().manual_seed(1)) * 3
    args = {"device": "cpu", "n_drop": spec["K"], "batch_size": 4096, "mc_seed": 0, "candidates": spec["candidates"]}
    strategy = BatchBALDDropout(None, pool, Net(spec["C"]), spec["C"], args)
    strategy.select(1) if spec["warm"] else None
    with PeakMemory() as memory:
        start = time.perf_counter()
        picks = strategy.select(spec["budget"])
        seconds = time.perf_counter() - start
    return {"picks": picks, "seconds": seconds, "megabytes": memory.megabytes}


def measure(**spec) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def seeded_picks(log_probs: torch.Tensor, budget: int, candidates: int | None, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    if candidates is None:
        return batchbald_select(log_probs, budget, 1000, generator)[0]
    keeper = CandidateKeeper(candidates)
    keeper.update_logits(log_probs.transpose(0, 1), 0)
    index, kept = keeper.result()
    return index[batchbald_select(kept, budget, 1000, generator)[0]].tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--redux-ms", type=float, default=1.7, help="batchbald_redux's ms per candidate and step")
    parser.add_argument("--baseline-pool", type=int, default=2000, help="N of table 2")
    parser.add_argument("--whole-pool-max", type=int, default=10000, help="largest N the whole-pool run is timed at")
    parser.add_argument("--baseline-only", action="store_true", help="table 2 only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    sizes = [10000] if args.quick else [10000, 100000]
    common = {"K": args.passes, "C": args.classes, "threads": torch.get_num_threads(), "warm": True}
    print(f"# BatchBALDDropout.select, {machine_description('cpu')}, n_drop = {args.passes}, C = {args.classes}\n")
    rows = []
    for N in [] if args.baseline_only else sizes:
        for budget in args.budgets:
            redux_s = args.redux_ms / 1000 * N * budget
            got = measure(N=N, budget=budget, candidates=max(10 * budget, 1000), **common)
            same = "–"
            if N <= args.whole_pool_max:
                whole = measure(N=N, budget=budget, candidates=None, **common)
                same = overlap(got["picks"], whole["picks"])
                rows.append([f"{N:,}", str(budget), "whole pool", f"{whole['seconds']:.2f} s",
                             f"{whole['megabytes']:.0f}", f"≈ {redux_s / whole['seconds']:.0f}×", "–"])  # fmt: skip
            rows.append([f"{N:,}", str(budget), f"{max(10 * budget, 1000):,}", f"{got['seconds']:.2f} s",
                         f"{got['megabytes']:.0f}", f"≈ {redux_s / got['seconds']:.0f}×", same])  # fmt: skip
            rows.append([f"{N:,}", str(budget), "batchbald_redux (≈)", f"≈ {redux_s:.0f} s", "–", "1×", "–"])
    print("Table 1: select() end to end (speed-up against batchbald_redux's extrapolated greedy alone)\n")
    print_table(["N", "budget", "candidates", "time", "peak MB", "speed-up", "overlap with whole pool"], rows)

    rows = []
    log_probs = synthetic_log_probs(args.baseline_pool, args.passes, args.classes)
    for budget in args.budgets:
        whole = [seeded_picks(log_probs, budget, None, seed) for seed in (0, 1)]
        kept = [seeded_picks(log_probs, budget, max(10 * budget, 1000), seed) for seed in (0, 1)]
        rows.append([f"{args.baseline_pool:,}", str(budget), f"{max(10 * budget, 1000):,}", overlap(whole[1], whole[0]),
                     overlap(kept[1], kept[0]), overlap(kept[0], whole[0])])  # fmt: skip
    print(
        "\nTable 2: the same log-probabilities, configurations sampled from seeds 0 and 1 (synthetic, as bench_batchbald)\n"
    )
    print_table(
        [
            "N",
            "budget",
            "candidates",
            "whole pool: seed 1 vs 0",
            "candidates: seed 1 vs 0",
            "candidates vs whole (seed 0)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
