"""Stochastic acquisition: the cost of power / softmax sampling over the top-k, and a baal-style PowerBALD on the
same scores.

    python benchmarks/bench_acquisition.py              # CPU: N = 200k, K = 10, C = 10, BALD, blocks of 10k
    python benchmarks/bench_acquisition.py --threads 1  # one thread: steadier on a shared machine

Times are the best of --rounds interleaved rounds (each round runs every variant once); CPU time with one thread.

Table 1, the fused score + top-k stream (StreamingTopK.update_logits over the blocks): time with acquisition
"top", "power" and "softmax" and the overhead over "top". Table 2, the sampling alone on a precomputed [N] score
array: ours (StreamingTopK.update over the same blocks, power) against a baal-style PowerBALD sampler written here
the way baal's PowerSampling works (scores ** β normalized, NumPy's global np.random.choice without replacement),
and end to end from the [K, N, C] logits: ours fused against NumPy BALD (baal's formula on softmax
probabilities) followed by that sampler. Both samplers' pick laws are checked against each other first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from common import machine_description, print_table  # noqa: E402

import entropy_al  # noqa: E402


def interleaved_min_seconds(fns: dict, rounds: int) -> dict:
    """Best time of each function over `rounds` rounds that call every function once in turn: variants compared
    under the same machine load (a shared machine's load drifts within seconds). With one thread the time is the
    process's CPU time, which other processes on the machine barely change; else wall time."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            best[name] = min(best[name], clock() - start)
    return best


def blocks_of(n: int, block: int):
    return [(start, min(start + block, n)) for start in range(0, n, block)]


def fused(logits, block, k, acquisition, score="bald", seed=0):
    topk = entropy_al.StreamingTopK(k, logits.device, acquisition, 1.0, seed)
    for start, end in blocks_of(logits.shape[1], block):
        topk.update_logits(logits[:, start:end], start, score)
    return topk.indices


def ours_on_scores(scores, block, k, seed=0):
    topk = entropy_al.StreamingTopK(k, scores.device, "power", 1.0, seed)
    for start, end in blocks_of(scores.numel(), block):
        topk.update(scores[start:end], start)
    return topk.indices


def baal_style_power_sampling(scores: np.ndarray, k: int, coldness: float = 1.0) -> np.ndarray:
    """PowerSampling as baal does it: temper, clip, normalize, then the global RNG's choice without replacement."""
    distribution = np.clip(scores.astype(np.float64), 0, None) ** coldness
    distribution /= distribution.sum()
    return np.random.choice(len(distribution), k, replace=False, p=distribution)


def numpy_bald(probabilities: np.ndarray) -> np.ndarray:
    """BALD of [N, C, K] MC probabilities, baal's layout: H(mean_k p) - mean_k H(p_k)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
        expected_entropy = -plogp.sum(axis=1).mean(axis=-1)
        mean = probabilities.mean(axis=-1)
        entropy_of_mean = -np.where(mean > 0, mean * np.log(mean), 0.0).sum(axis=1)
    return entropy_of_mean - expected_entropy


def baal_style_end_to_end(logits: torch.Tensor, k: int) -> np.ndarray:
    probabilities = torch.softmax(logits, dim=2).permute(1, 2, 0).numpy()  # [N, C, K], as baal receives it
    return baal_style_power_sampling(numpy_bald(probabilities), k)


def check_same_law(scores: torch.Tensor, block: int) -> None:
    """First-pick frequencies of both samplers over 300 draws on a 50-sample slice agree (a smoke check of the
    baal-style code; the exact law of ours is tested in tests/test_acquisition_distribution.py)."""
    head = scores[:50].clone()
    ours = np.bincount([int(ours_on_scores(head, block, 1, seed)[0]) for seed in range(300)], minlength=50)
    np.random.seed(0)
    theirs = np.bincount([int(baal_style_power_sampling(head.numpy(), 1)[0]) for _ in range(300)], minlength=50)
    expected = head.clamp_min(0).numpy() / head.clamp_min(0).sum().item() * 300
    for counts in (ours, theirs):
        if np.abs(counts - expected).sum() > 0.5 * 300:
            raise SystemExit("a sampler's first picks do not follow s / sum(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--block", type=int, default=10_000)
    parser.add_argument("--budgets", default="10,1000,10000")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    logits = torch.randn(args.passes, args.n, args.classes) * 3
    budgets = [int(v) for v in args.budgets.split(",")]
    print(
        f"# stochastic acquisition on {machine_description('cpu')}; backend: {entropy_al.backend('cpu')}; "
        f"logits [{args.passes}, {args.n}, {args.classes}] float32, score bald, blocks of {args.block}\n"
    )
    rows = []
    for k in budgets:
        times = interleaved_min_seconds(
            {a: (lambda a=a: fused(logits, args.block, k, a)) for a in ("top", "power", "softmax")}, args.rounds
        )
        rows.append(
            [str(k)]
            + [f"{times[a] * 1e3:.1f}" for a in ("top", "power", "softmax")]
            + [f"{(times[a] / times['top'] - 1) * 100:+.1f}%" for a in ("power", "softmax")]
        )
    print_table(["k", "top ms", "power ms", "softmax ms", "power overhead", "softmax overhead"], rows)

    scores = entropy_al.mc_scores(logits, "bald")
    check_same_law(scores, args.block)
    np_scores = scores.numpy()
    rows = []
    for k in budgets:
        times = interleaved_min_seconds(
            {
                "ours": lambda: ours_on_scores(scores, args.block, k),
                "baal": lambda: baal_style_power_sampling(np_scores, k),
                "fused": lambda: fused(logits, args.block, k, "power"),
                "baal_all": lambda: baal_style_end_to_end(logits, k),
            },
            args.rounds,
        )
        t_ours, t_baal, t_fused, t_baal_all = times["ours"], times["baal"], times["fused"], times["baal_all"]
        rows.append(
            [
                str(k),
                f"{t_ours * 1e3:.1f}",
                f"{t_baal * 1e3:.1f}",
                f"{t_baal / t_ours:.2f}x",
                f"{t_fused * 1e3:.1f}",
                f"{t_baal_all * 1e3:.1f}",
                f"{t_baal_all / t_fused:.2f}x",
            ]
        )
    print()
    print_table(
        [
            "k",
            "ours: power on [N] scores ms",
            "baal-style sampling ms",
            "baal-style/ours",
            "ours: fused from logits ms",
            "baal-style BALD + sampling ms",
            "baal-style/ours",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
