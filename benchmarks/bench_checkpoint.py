"""What resumable selection costs: select() with ``args['checkpoint']`` against the same select() without it.

    python benchmarks/bench_checkpoint.py                   # CPU: MC head, N in {1e5, 2e5}, 7 rounds
    python benchmarks/bench_checkpoint.py --quick           # N = 1e5, 3 rounds: a smoke run
    python benchmarks/bench_checkpoint.py --device cuda     # the same on the GPU (N up to 1e6)

The case is bench_select.py's "MC head 128-64-10" (batch 1024, n_drop 10, budget 1000, default stream buffer of
10 000 samples). Three contestants run interleaved, in rounds (each round in a rotated order), on one pool and
model:

- plain: ``EntropySamplingDropout.select(budget)`` without a checkpoint;
- every step: ``args['checkpoint_every'] = 0``: the state (1000 keys) is written to a file (temporary file, fsync,
  ``os.replace``) after every streaming step of 10 000 samples, the worst case;
- default: ``args['checkpoint_every'] = 60``: a step only records its state (no copy, no device synchronization);
  these calls are shorter than 60 s, so nothing is written.

Times are the best of ``--rounds`` rounds (the CPUs here are shared: the minimum is the least disturbed estimate);
ratios compare minima taken in the same rounds. Since a 2 % difference is within the noise of a shared machine, the
script also times the checkpoint's own work inside the every-step calls (every ``SelectionCheckpoint.completed``:
the step's snapshot and its save), which no other process's load can hide: "in checkpoint" is its best-round sum,
as a fraction of plain's time. ``--keyed`` uses keyed dropout (``mc_dropout='keyed'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from torch.utils.data import TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # common.py, and the package built in place
from common import machine_description, print_table, timed  # noqa: E402
from select_cases import CPU_CASES  # noqa: E402

import entropy_al  # noqa: E402
from entropy_al.selection import SelectionCheckpoint  # noqa: E402

CASE = next(case for case in CPU_CASES if case.name.startswith("MC head"))


class CheckpointClock:
    """Sums the time spent in ``SelectionCheckpoint.completed`` (snapshot and save of a step) while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._original = SelectionCheckpoint.completed

    def __enter__(self) -> CheckpointClock:
        original = self._original

        def completed(checkpoint: SelectionCheckpoint, *args: object) -> None:
            start = time.perf_counter()
            original(checkpoint, *args)
            self.seconds += time.perf_counter() - start

        SelectionCheckpoint.completed = completed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        SelectionCheckpoint.completed = self._original  # type: ignore[method-assign]


def run_size(n: int, device: str, rounds: int, keyed: bool, folder: str) -> list[str]:
    torch.manual_seed(0)
    model = CASE.model().to(device)
    pool = TensorDataset(CASE.pool(n, torch.Generator().manual_seed(n)))
    path = os.path.join(folder, "select.ckpt")
    base = {"batch_size": CASE.batch_size, "n_drop": CASE.n_drop, "device": device}
    if keyed:
        base.update(mc_dropout="keyed", mc_seed=0)
    contestants = {
        "plain": base,
        "every step": {**base, "checkpoint": path, "checkpoint_every": 0},
        "default": {**base, "checkpoint": path},
    }

    def call(args: dict) -> list[int]:
        return entropy_al.EntropySamplingDropout(None, pool, model, 10, args).select(CASE.budget)

    names = list(contestants)
    for name in names:  # warm-up, and every contestant must pick the same samples (keyed) or as many
        selected = call(contestants[name])
        assert len(selected) == CASE.budget and not os.path.exists(path)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    in_checkpoint: list[float] = []
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            with CheckpointClock() as clock:
                seconds[name].append(timed(lambda name=name: call(contestants[name]), device)[0])
            if name == "every step":
                in_checkpoint.append(clock.seconds)
    best = {name: min(values) for name, values in seconds.items()}
    steps = -(-n // 10_000)
    return [
        f"{n:,}",
        str(steps),
        f"{best['plain']:.3f}",
        f"{best['every step']:.3f}",
        f"{best['every step'] / best['plain']:.3f}",
        f"{1e3 * (best['every step'] - best['plain']) / steps:+.2f}",
        f"{best['default']:.3f}",
        f"{best['default'] / best['plain']:.3f}",
        f"{1e3 * min(in_checkpoint):.1f} ms ({100 * min(in_checkpoint) / best['plain']:.2f} %)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="N = 1e5 only, 3 rounds")
    parser.add_argument("--sizes", default=None, help="comma list of pool sizes (default 1e5,2e5; CUDA: + 1e6)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds, best reported (7; --quick 3)")
    parser.add_argument("--keyed", action="store_true", help="keyed dropout (mc_dropout='keyed', mc_seed 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    options = parser.parse_args()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    default_sizes = (
        [100_000] if options.quick else [100_000, 200_000] + ([1_000_000] if options.device == "cuda" else [])
    )
    sizes = [int(float(s)) for s in options.sizes.split(",")] if options.sizes else default_sizes
    rounds = options.rounds or (3 if options.quick else 7)
    print(f"{CASE.name}, {machine_description(options.device)}, backend {entropy_al.backend(options.device)}, ", end="")
    print(f"{'keyed' if options.keyed else 'torch'} dropout, best of {rounds} rounds")
    headers = [
        "N",
        "steps",
        "plain s",
        "every step s",
        "every step / plain",
        "ms per save",
        "default s",
        "default / plain",
        "in checkpoint (every step)",
    ]
    with tempfile.TemporaryDirectory() as folder:
        rows = [run_size(n, options.device, rounds, options.keyed, folder) for n in sizes]
    print_table(headers, rows)


if __name__ == "__main__":
    main()
