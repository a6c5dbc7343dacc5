"""Streaming top-k: its cost on top of scoring, against keeping all N scores and one torch.topk at the end.

    python benchmarks/bench_topk.py                  # CPU: N = 200k, K = 10, C = 10
    python benchmarks/bench_topk.py --device cuda    # N = 1M

Columns: scoring alone (mc_scores per block, scores dropped), the fused score+merge per block, the unfused
stream (mc_scores then StreamingTopK.update), and the keep-all baseline (mc_scores per block into an [N] buffer,
one topk). Overhead = fused / scoring alone - 1. Selections are checked equal before timing.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from common import machine_description, median_seconds, print_table  # noqa: E402

import entropy_al  # noqa: E402


def blocks_of(n: int, block: int):
    return [(start, min(start + block, n)) for start in range(0, n, block)]


def score_only(logits, block, score):
    for start, end in blocks_of(logits.shape[1], block):
        entropy_al.mc_scores(logits[:, start:end], score)


def fused(logits, block, k, score):
    topk = entropy_al.StreamingTopK(k, device=logits.device)
    for start, end in blocks_of(logits.shape[1], block):
        topk.update_logits(logits[:, start:end], start, score)
    return topk.indices


def unfused(logits, block, k, score):
    topk = entropy_al.StreamingTopK(k, device=logits.device)
    for start, end in blocks_of(logits.shape[1], block):
        topk.update(entropy_al.mc_scores(logits[:, start:end], score), start)
    return topk.indices


def keep_all(logits, block, k, score):
    scores = torch.empty(logits.shape[1], device=logits.device)
    for start, end in blocks_of(logits.shape[1], block):
        scores[start:end] = entropy_al.mc_scores(logits[:, start:end], score)
    return torch.sort(scores, descending=True, stable=True).indices[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--budgets", default="10,1000,100000")
    parser.add_argument("--blocks", default=None, help="comma list of block sizes")
    parser.add_argument("--score", default="entropy")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args()

    cuda = args.device == "cuda"
    n = args.n or (1_000_000 if cuda else 200_000)
    blocks = [int(b) for b in (args.blocks or ("10000,100000,1000000" if cuda else "10000,100000")).split(",")]
    logits = torch.randn(args.passes, n, args.classes, device=args.device) * 3
    print(
        f"# streaming top-k on {machine_description(args.device)}; backend: {entropy_al.backend(args.device)}; "
        f"logits [{args.passes}, {n}, {args.classes}] float32, score {args.score}\n"
    )
    rows = []
    for block in blocks:
        alone = median_seconds(lambda: score_only(logits, block, args.score), args.min_run_time)
        for k in (int(v) for v in args.budgets.split(",")):
            expected = keep_all(logits, block, k, args.score)
            for name, fn in (("fused", fused), ("unfused", unfused)):
                got = fn(logits, block, k, args.score)
                if not torch.equal(got.cpu(), expected.cpu()):
                    raise SystemExit(f"{name} selection differs from the keep-all sort (block {block}, k {k})")
            t_fused = median_seconds(lambda: fused(logits, block, k, args.score), args.min_run_time)
            t_unfused = median_seconds(lambda: unfused(logits, block, k, args.score), args.min_run_time)
            t_all = median_seconds(lambda: keep_all(logits, block, k, args.score), args.min_run_time)
            rows.append(
                [
                    f"{block}",
                    f"{k}",
                    f"{alone * 1e3:.2f}",
                    f"{t_fused * 1e3:.2f}",
                    f"{t_unfused * 1e3:.2f}",
                    f"{t_all * 1e3:.2f}",
                    f"{(t_fused / alone - 1) * 100:+.1f}%",
                    f"{t_all / t_fused:.2f}x",
                ]
            )
    print_table(
        [
            "block",
            "k",
            "scoring alone ms",
            "fused ms",
            "unfused ms",
            "keep-all + sort ms",
            "fused overhead",
            "keep-all/fused",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
