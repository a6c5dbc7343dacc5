"""select() end to end: against the bare forward passes (the floor) and a DISTIL-style select, in one process.

    python benchmarks/bench_select.py                  # CPU: MC head N in {1e4, 1e5, 2e5}, MLP N in {1e4, 2e4, 1e5}
    python benchmarks/bench_select.py --quick          # CPU, N = 1e4, one round: a smoke run
    python benchmarks/bench_select.py --max-n 1000000  # also N = 1e6 on the CPU (minutes)
    python benchmarks/bench_select.py --device cuda    # + a small CNN on up to 1M uint8 images

For every case and pool size N, three things run side by side (interleaved, in rounds):

- floor: the model's ``n_drop`` passes over batches sliced beforehand (on the model's device), under ``no_grad``,
  dropout on, nothing else (no fetching, no copies to the device, no scoring), two ways: all passes stacked in one
  forward per batch (the batch repeated ``n_drop`` times along dim 0), and one pass per forward. The floor is the
  faster of the two: on a CPU a stacked forward that outgrows the caches is the slower one.
- baseline: DISTIL's ``select`` as its documented behaviour describes it, written here: per stream buffer of 10 000 samples a
  per-item ``DataLoader(batch_size)``, pass-major (``n_drop`` passes over the buffer, each re-fetching it), the
  whole model in train mode, float32 softmax summed per pass then divided, entropy with ``torch.log``, and a Python
  merge of the 0-d score tensors into the best ``budget`` (a heap: cheaper than DISTIL's AVL tree).
- select: ``EntropySamplingDropout.select(budget)`` with default ``args`` besides ``batch_size``, ``n_drop`` and
  ``device``, on the same ``TensorDataset`` as the baseline (the pool stays on the CPU; the model on ``--device``).
- keyed: the same ``select`` with ``args['mc_dropout'] = 'keyed'`` (``mc_seed`` 0): keyed dropout masks
  (:mod:`entropy_al.keyed_mc`) instead of torch's generator.

Before timing, with dropout switched off, the baseline and select() must pick the same samples. Times are the
best of ``--rounds`` interleaved rounds: the CPUs of this workplace are shared, and the minimum is the estimate
least disturbed by other processes (every ratio compares minima taken in the same rounds).

Peak memory, what one call adds on top of the pool and the model (activations, batches, logits, top-k state):
- RSS: in a fresh subprocess per (case, N, contestant), after a warm-up call on a slice, the growth of ``VmHWM``
  (reset through ``/proc/self/clear_refs``) over ``VmRSS`` before the call. The subprocess runs with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the resident set at once (otherwise glibc's
  heap keeps them and the figure says more about fragmentation than about the call); ``--memory off`` skips it.
- CUDA: the growth of ``torch.cuda.max_memory_allocated`` during the call, in the timing process.
"""

from __future__ import annotations

import argparse
import heapq
import os
import subprocess
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # common.py, and the package built in place
from common import fmt_mib, machine_description, peak_rss_growth, print_table, timed  # noqa: E402
from select_cases import CPU_CASES, CUDA_CASES, Case  # noqa: E402

import entropy_al  # noqa: E402

DISTIL_BUFFER = 10_000


# ------------------------------------------------------------------------------------------------------------------
# The three contestants


def set_dropout_mode(model: nn.Module) -> None:
    """What select() does by default (mc_mode 'dropout'); these models have no BatchNorm, so it equals train()."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()


def floor(model: nn.Module, batches: list[torch.Tensor], n_drop: int, stacked: bool = True) -> None:
    """The model's n_drop passes over pre-sliced batches: one stacked forward per batch, or one per pass."""
    with torch.no_grad():
        for batch in batches:
            if stacked:
                model(batch.repeat(n_drop, *([1] * (batch.dim() - 1))))
            else:
                for _ in range(n_drop):
                    model(batch)


def distil_style_select(
    model: nn.Module, pool: TensorDataset, budget: int, n_drop: int, batch_size: int, nclasses: int, device: str
) -> list[int]:
    """DISTIL's select() from its documented behaviour (see the module docstring)."""
    model.train()  # DISTIL: the whole model, never restored (the caller restores these models' flags)
    best: list[tuple[torch.Tensor, int]] = []  # min-heap of (0-d score tensor, pool index), at most budget long
    for buffer_start in range(0, len(pool), DISTIL_BUFFER):
        buffer = Subset(pool, list(range(buffer_start, min(len(pool), buffer_start + DISTIL_BUFFER))))
        loader = DataLoader(buffer, batch_size=batch_size, shuffle=False)
        probs = torch.zeros(len(buffer), nclasses, device=device)
        with torch.no_grad():
            for _ in range(n_drop):
                position = 0
                for batch in loader:
                    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
                    out = model(inputs.to(device))
                    probs[position : position + len(out)] += F.softmax(out, dim=1)
                    position += len(out)
        probs /= n_drop
        scores = -(probs * torch.log(probs)).sum(1)
        for offset, score in enumerate(scores):  # 0-d tensors, merged in Python
            item = (score, buffer_start + offset)
            if len(best) < budget:
                heapq.heappush(best, item)
            elif score > best[0][0]:
                heapq.heapreplace(best, item)
    return [index for _, index in sorted(best, key=lambda item: (-item[0].item(), item[1]))]


def our_select(
    model: nn.Module, pool: TensorDataset, budget: int, n_drop: int, batch_size: int, device: str, keyed: bool = False
) -> list[int]:
    args = {"batch_size": batch_size, "n_drop": n_drop, "device": device}
    if keyed:
        args.update(mc_dropout="keyed", mc_seed=0)
    return entropy_al.EntropySamplingDropout(None, pool, model, 10, args).select(budget)


def check_same_selection(case: Case, model: nn.Module, pool: TensorDataset, device: str) -> None:
    """With dropout off, the baseline and select() see the same logits and must pick the same samples."""
    rates = {module: module.p for module in model.modules() if isinstance(module, nn.Dropout)}
    for module in rates:
        module.p = 0.0
    try:
        small = Subset(pool, range(min(len(pool), 3000)))
        budget = min(case.budget, 200)
        expected = distil_style_select(model, small, budget, 2, case.batch_size, 10, device)
        with_ours = our_select(model, small, budget, 2, case.batch_size, device)
        keyed = our_select(model, small, budget, 2, case.batch_size, device, keyed=True)
    finally:
        for module, p in rates.items():
            module.p = p
    if sorted(expected) != sorted(with_ours) or sorted(expected) != sorted(keyed):
        raise SystemExit(f"{case.name}: select() and the DISTIL-style baseline disagree with dropout off")


class Setup:
    """One case at one pool size: the model, the pool, the pre-sliced batches and the three contestants."""

    def __init__(self, case: Case, n: int, device: str):
        self.case, self.n, self.device = case, n, device
        torch.manual_seed(0)
        self.model = case.model().to(device)
        data = case.pool(n, torch.Generator().manual_seed(n))
        self.pool = TensorDataset(data)
        on_device = data.to(device)
        self.batches = [on_device[start : start + case.batch_size] for start in range(0, n, case.batch_size)]
        set_dropout_mode(self.model)
        self.contestants: dict[str, Callable[[], object]] = {
            "stacked": self.run_floor,
            "per-pass": lambda: self.run_floor(stacked=False),
            "baseline": self.run_baseline,
            "select": self.run_select,
            "keyed": lambda: self.run_select(keyed=True),
        }

    def run_floor(self, stacked: bool = True) -> None:
        set_dropout_mode(self.model)
        floor(self.model, self.batches, self.case.n_drop, stacked)

    def run_baseline(self) -> None:
        c = self.case
        distil_style_select(self.model, self.pool, c.budget, c.n_drop, c.batch_size, 10, self.device)
        set_dropout_mode(self.model)

    def run_select(self, keyed: bool = False) -> None:
        c = self.case
        our_select(self.model, self.pool, c.budget, c.n_drop, c.batch_size, self.device, keyed)

    def warm_up(self, name: str) -> None:
        """One untimed call on a slice (allocator, thread pools, first-call costs)."""
        c, model = self.case, self.model
        warm = Subset(self.pool, range(min(self.n, 2 * c.batch_size)))
        if name in ("stacked", "per-pass"):
            set_dropout_mode(model)
            floor(model, self.batches[:2], c.n_drop, name == "stacked")
        elif name == "baseline":
            distil_style_select(model, warm, 10, c.n_drop, c.batch_size, 10, self.device)
        else:
            our_select(model, warm, 10, c.n_drop, c.batch_size, self.device, name == "keyed")
        set_dropout_mode(model)


def memory_probe(case_index: int, n: int, name: str, device: str) -> None:
    """The subprocess side of the RSS measurement: prints the peak RSS growth of one call, in MiB."""
    setup = Setup((CPU_CASES + CUDA_CASES)[case_index], n, device)
    setup.warm_up(name)
    growth = peak_rss_growth(setup.contestants[name])
    print("-" if growth is None else f"{growth:.1f}")


def rss_in_subprocess(case: Case, n: int, name: str, device: str) -> str:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    index = (CPU_CASES + CUDA_CASES).index(case)
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", f"{index},{n},{name}", "--device", device]
    command += ["--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory probe {case.name} N={n} {name} failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def run_case(case: Case, n: int, device: str, rounds: int, memory: bool) -> list[str]:
    setup = Setup(case, n, device)
    check_same_selection(case, setup.model, setup.pool, device)
    names = list(setup.contestants)
    for name in names:
        setup.warm_up(name)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cuda_peak: dict[str, float | None] = {}
    for round_index in range(rounds):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]  # rotate: no contestant always runs first
        for name in order:
            elapsed, cuda = timed(setup.contestants[name], device)
            seconds[name].append(elapsed)
            cuda_peak.setdefault(name, cuda)
    best = {name: min(values) for name, values in seconds.items()}
    best["floor"] = min(best["stacked"], best["per-pass"])
    del setup
    shown = ["stacked", "baseline", "select", "keyed"]
    rss = [rss_in_subprocess(case, n, name, device) if memory else "-" for name in shown]
    row = [
        case.name,
        f"{n:,}",
        f"{best['stacked']:.2f} / {best['per-pass']:.2f}",
        f"{best['baseline']:.2f}",
        f"{best['select']:.2f}",
        f"{n / best['select']:,.0f}",
        f"{best['select'] / best['floor']:.2f}",
        f"{best['baseline'] / best['select']:.2f}",
        f"{best['keyed']:.2f}",
        f"{best['select'] / best['keyed']:.2f}",
        f"{best['baseline'] / best['keyed']:.2f}",
        " / ".join(rss),
    ]
    if device == "cuda":
        row.append(" / ".join(fmt_mib(cuda_peak[name]) for name in shown))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="N = 1e4 only, one round by default")
    parser.add_argument("--max-n", type=int, default=None, help="largest pool (default: 2e5 on the CPU, 1e6 on CUDA)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds, best reported (3; --quick 1)")
    parser.add_argument("--cases", default=None, help="comma list of case-name prefixes, e.g. 'MC head,MLP'")
    parser.add_argument("--sizes", default=None, help="comma list of pool sizes to run (default: each case's)")
    parser.add_argument("--memory", default="subprocess", choices=["subprocess", "off"], help="peak RSS measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: CASE,N,CONTESTANT
    args = parser.parse_args()

    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        case_index, n, name = args.memory_probe.split(",")
        memory_probe(int(case_index), int(n), name, device)
        return
    cases = CPU_CASES + (CUDA_CASES if device == "cuda" else [])
    if args.cases:
        prefixes = [p.strip().lower() for p in args.cases.split(",")]
        cases = [case for case in cases if any(case.name.lower().startswith(p) for p in prefixes)]
    max_n = 10_000 if args.quick else (args.max_n or (200_000 if device == "cpu" else 1_000_000))
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = {int(float(v)) for v in args.sizes.split(",")} if args.sizes else None
    if sizes:
        max_n = max(max_n, *sizes)

    print(f"# select() on {machine_description(device)}; backend: {entropy_al.backend(device)}")
    print(f"# load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; best of {rounds} round(s)\n")
    headers = ["case", "N", "floor s (stacked / per-pass)", "DISTIL-style s", "select s", "select samples/s",
               "select/floor", "baseline/select", "keyed select s", "select/keyed", "baseline/keyed",
               "peak RSS +MiB (stacked floor / baseline / select / keyed)"]  # fmt: skip
    if device == "cuda":
        headers.append("peak CUDA +MiB (stacked floor / baseline / select / keyed)")
    rows = []
    for case in cases:
        for n in case.sizes:
            if n <= max_n and (sizes is None or n in sizes):
                rows.append(run_case(case, n, device, rounds, args.memory == "subprocess"))
                print("  done:", " | ".join(rows[-1]), file=sys.stderr, flush=True)
    print_table(headers, rows)
    print(f"\n# load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
