"""mc_scores against eager PyTorch, torch.compile of the same math, and the pure-PyTorch fallback.

    python benchmarks/bench_scores.py                      # CPU: [10, 100_000, 100] float32, every score
    python benchmarks/bench_scores.py --device cuda        # K=10, N=1M, C in {10, 100, 1000}, fp32 and bf16

Every implementation is checked against the float64 reference before it is timed. On CUDA a device-to-device copy
of the same bytes is the bandwidth roof; effective bandwidth counts the logits read once.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # common.py, and the package built in place
from common import machine_description, median_seconds, print_table  # noqa: E402

import entropy_al  # noqa: E402
from entropy_al import reference  # noqa: E402


def eager_scores(logits: torch.Tensor, score: str) -> torch.Tensor:
    """The straightforward PyTorch: softmax -> mean over passes -> score, in float32."""
    p = torch.softmax(logits.float(), dim=-1)
    p_mean = p.mean(0)
    if score == "entropy":
        return -torch.xlogy(p_mean, p_mean).sum(-1)
    if score == "bald":
        return -torch.xlogy(p_mean, p_mean).sum(-1) + torch.xlogy(p, p).sum(-1).mean(0)
    if score == "margin":
        top2 = p_mean.topk(2, dim=-1).values
        return top2[:, 1] - top2[:, 0]
    return -p_mean.max(-1).values


def check(name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    err = ((out.double() - ref).abs() / ref.abs().clamp(min=1)).max().item()
    if not err <= 1e-4:
        raise SystemExit(f"{name}: wrong result (max relative error {err:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtypes", default=None, help="comma list, e.g. float32,bfloat16")
    parser.add_argument("--shapes", default=None, help="comma list of KxNxC, e.g. 10x100000x100")
    parser.add_argument("--scores", default=",".join(reference.SCORES))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args()

    cuda = args.device == "cuda"
    shapes = args.shapes or ("10x1000000x10,10x1000000x100,10x1000000x1000" if cuda else "10x100000x100")
    dtypes = args.dtypes or ("float32,bfloat16" if cuda else "float32")
    print(f"# mc_scores on {machine_description(args.device)}; backend: {entropy_al.backend(args.device)}\n")
    headers = [
        "shape",
        "dtype",
        "score",
        "ours ms",
        "eager ms",
        "compile ms",
        "fallback ms",
        "eager/ours",
        "compile/ours",
        "fallback/ours",
    ]
    if cuda:
        headers += ["GB/s", "% of copy"]
    rows = []
    for shape_text in shapes.split(","):
        shape = tuple(int(v) for v in shape_text.split("x"))
        for dtype_name in dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            logits = (torch.randn(shape, device=args.device) * 4).to(dtype)
            nbytes = logits.numel() * logits.element_size()
            copy_ms = None
            if cuda:
                flat = logits.view(-1)
                copy_ms = median_seconds(lambda: flat.clone(), args.min_run_time) * 1e3 / 2  # read + write
            for score in args.scores.split(","):
                ref_sample = reference.mc_scores_reference(logits[:, :20000], score)
                check("ours", entropy_al.mc_scores(logits[:, :20000], score), ref_sample)
                check("eager", eager_scores(logits[:, :20000], score), ref_sample)
                timings = {
                    "ours": median_seconds(lambda: entropy_al.mc_scores(logits, score), args.min_run_time),
                    "eager": median_seconds(lambda: eager_scores(logits, score), args.min_run_time),
                    "fallback": median_seconds(
                        lambda: reference.mc_scores_reference(logits, score, torch.float32), args.min_run_time
                    ),
                }
                if not args.no_compile:
                    torch._dynamo.reset()  # a fresh compile per score, never the recompile-limit eager fallback
                    compiled = torch.compile(lambda z, score=score: eager_scores(z, score))
                    check("compile", compiled(logits[:, :20000]), ref_sample)
                    timings["compile"] = median_seconds(lambda: compiled(logits), args.min_run_time)
                ours = timings["ours"]
                cells = (
                    [shape_text, dtype_name, score]
                    + [
                        f"{timings[k] * 1e3:.2f}" if k in timings else "-"
                        for k in ("ours", "eager", "compile", "fallback")
                    ]
                    + [f"{timings[k] / ours:.2f}x" if k in timings else "-" for k in ("eager", "compile", "fallback")]
                )
                if cuda:
                    cells += [f"{nbytes / ours / 1e9:.0f}", f"{copy_ms / 1e3 / ours * 100:.0f}%"]
                rows.append(cells)
    print_table(headers, rows)


if __name__ == "__main__":
    main()
