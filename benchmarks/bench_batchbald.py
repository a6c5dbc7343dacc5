"""BatchBALD selection: entropy_al's greedy (on the whole pool, or on the BALD candidates kept while the pool
streams by) against batchbald_redux's ``get_batchbald_batch`` on the same log-probabilities, in one run.

    python benchmarks/bench_batchbald.py            # N = 10k and 100k, budget 10 and 100 (2–3 minutes on 2 cores)
    python benchmarks/bench_batchbald.py --quick    # N = 10k only

Every measurement runs in a fresh process: wall time of one selection, peak resident memory above the process's
level at the start of the call (sampled every 5 ms from /proc/self/statm), the picks.

batchbald_redux scores every candidate in a Python loop (about 1.7 ms per candidate and greedy step here), so
it is run for real only on a sub-pool (``--redux-pool`` samples, ``--redux-steps`` steps): table 1 compares the
selections there. Table 2 extrapolates its time to N and the budget, linearly in N (its cost per step is linear
in the candidates) and in the steps beyond those timed (at the cost of its sampled steps, all alike): those
figures are marked "≈" and are estimates; entropy_al's figures in table 2 are measured.
The log-probabilities are synthetic: softmax of random logits with per-sample scales, K passes, C classes.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # batchbald_redux's progress bars

import argparse
import json
import subprocess
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine_description, print_table
from entropy_al.selection.batchbald import batchbald_select
from entropy_al.selection.candidates import CandidateKeeper


class PeakMemory:
    """Peak resident set size above the level at entry, sampled in a thread (Linux /proc)."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.megabytes = (self.peak - self.start) / 2**20


def synthetic_log_probs(N: int, K: int, C: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(N, 1, 1, generator=g) * 4
    logits = torch.randn(N, 1, C, generator=g) * scale + torch.randn(N, K, C, generator=g) * scale * 0.5
    return torch.log_softmax(logits, dim=2)


def ours(log_probs, budget, candidates, num_samples, block=8192):
    """Streams the pool once (BALD + candidate keeper), then the greedy on the candidates."""
    N = log_probs.shape[0]
    generator = torch.Generator().manual_seed(0)
    if candidates is None:
        return batchbald_select(log_probs, budget, num_samples, generator)[0]
    keeper = CandidateKeeper(candidates)
    for start in range(0, N, block):
        keeper.update_logits(log_probs[start : start + block].transpose(0, 1), start)  # log-probs are logits too
    index, kept = keeper.result()
    picks = batchbald_select(kept, budget, num_samples, generator)[0]
    return index[picks].tolist()


def redux(log_probs, budget, num_samples):
    from batchbald_redux.batchbald import get_batchbald_batch

    torch.manual_seed(0)
    return get_batchbald_batch(log_probs, budget, num_samples).indices


def child(spec: dict) -> dict:
    """One measurement, in this (fresh) process: ``spec`` names the method, the pool and the budget."""
    torch.set_num_threads(spec["threads"])
    log_probs = synthetic_log_probs(spec["N"], spec["K"], spec["C"])
    if spec["method"] == "redux":
        fn = lambda: redux(log_probs, spec["budget"], spec["num_samples"])  # noqa: E731
    else:
        fn = lambda: ours(log_probs, spec["budget"], spec["candidates"], spec["num_samples"])  # noqa: E731
    with PeakMemory() as memory:
        start = time.perf_counter()
        picks = fn()
        seconds = time.perf_counter() - start
    return {"picks": [int(i) for i in picks], "seconds": seconds, "megabytes": memory.megabytes}


def measure(**spec) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def overlap(picks: list[int], reference: list[int]) -> str:
    return f"{len(set(picks) & set(reference)) / max(1, len(reference)):.0%}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 10k only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="pool sizes (default 10000 100000)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--passes", type=int, default=20, help="K")
    parser.add_argument("--classes", type=int, default=10, help="C")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--redux-pool", type=int, default=1000, help="sub-pool batchbald_redux runs on")
    parser.add_argument("--redux-steps", type=int, default=10, help="greedy steps batchbald_redux runs")
    parser.add_argument("--whole-pool-max", type=int, default=10000, help="largest N our whole-pool greedy runs on")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    sizes = args.sizes or ([10000] if args.quick else [10000, 100000])
    common = {"K": args.passes, "C": args.classes, "num_samples": args.num_samples, "threads": torch.get_num_threads()}
    print(
        f"# BatchBALD selection, {machine_description('cpu')}, K = {args.passes}, C = {args.classes}, "
        f"num_samples = {args.num_samples}\n"
    )

    # 1. Measured on the sub-pool: batchbald_redux against ours, whole pool and default candidates.
    sub, steps = args.redux_pool, args.redux_steps
    full = measure(method="redux", N=sub, budget=steps, **common)
    half = measure(method="redux", N=sub, budget=steps // 2, **common)
    per_step = (full["seconds"] - half["seconds"]) / (steps - steps // 2)
    rows = [
        [
            f"{sub:,}",
            str(steps),
            "batchbald_redux",
            "–",
            f"{full['seconds']:.2f} s",
            f"{full['megabytes']:.0f}",
            "1×",
            "–",
        ]
    ]
    for candidates in (None, max(10 * steps, 1000) // 2):
        got = measure(method="ours", N=sub, budget=steps, candidates=candidates, **common)
        name = "whole pool" if candidates is None else f"{candidates:,}"
        speedup = f"{full['seconds'] / got['seconds']:.1f}×"
        rows.append(
            [
                f"{sub:,}",
                str(steps),
                "entropy_al",
                name,
                f"{got['seconds']:.2f} s",
                f"{got['megabytes']:.0f}",
                speedup,
                overlap(got["picks"], full["picks"]),
            ]
        )
    print("Table 1: measured, same pool (overlap: share of batchbald_redux's batch that ours picks too)\n")
    print_table(["N", "budget", "method", "candidates", "time", "peak MB", "speed-up", "overlap with redux"], rows)

    # 2. At scale: ours measured, batchbald_redux extrapolated from table 1.
    rows = []
    for N in sizes:
        for budget in args.budgets:
            estimate = N / sub * (full["seconds"] + per_step * max(0, budget - steps))
            rows.append([f"{N:,}", str(budget), "batchbald_redux", "–", f"≈ {estimate:.0f} s", "–", "1×", "–"])
            reference = None
            for candidates in ([None] if N <= args.whole_pool_max else []) + [max(10 * budget, 1000)]:
                got = measure(method="ours", N=N, budget=budget, candidates=candidates, **common)
                if candidates is None:
                    reference = got["picks"]
                name = "whole pool" if candidates is None else f"{candidates:,}"
                same = "–" if reference is None or candidates is None else overlap(got["picks"], reference)
                rows.append(
                    [
                        f"{N:,}",
                        str(budget),
                        "entropy_al",
                        name,
                        f"{got['seconds']:.2f} s",
                        f"{got['megabytes']:.0f}",
                        f"≈ {estimate / got['seconds']:.0f}×",
                        same,
                    ]
                )
    print("\nTable 2: at scale (≈: batchbald_redux extrapolated; overlap: with our whole-pool batch)\n")
    print_table(["N", "budget", "method", "candidates", "time", "peak MB", "speed-up", "overlap with whole pool"], rows)


if __name__ == "__main__":
    main()
