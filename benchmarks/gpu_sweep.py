"""A shape sweep of every compiled op, small enough for compute-sanitizer (memcheck, racecheck, synccheck).

Both score kernel generations over every tile boundary of C, N not a multiple of any tile, K in {1, 64},
misaligned and strided views, the three input dtypes, every score; the streaming top-k (plain and fused);
keyed dropout. Exits non-zero if a result is not finite where it must be.

    compute-sanitizer --tool memcheck python3 benchmarks/gpu_sweep.py --device cuda --quick
    python benchmarks/gpu_sweep.py --device cpu          # the same sweep on the CPU kernels (checks the script)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]  # the package built in place
import entropy_al  # noqa: E402
from entropy_al import keyed, reference  # noqa: E402

CLASSES = [1, 2, 5, 9, 10, 17, 32, 33, 64, 65, 100, 105, 129, 257, 513, 1000, 1024, 1025, 8193]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1, 3), (64, 37), (3, 515)]  # (K, N)
# Under compute-sanitizer every launch is slow: --quick keeps one of each kind.
QUICK_CLASSES, QUICK_DTYPES, QUICK_SHAPES = [1, 10, 33, 100, 1000, 1025], DTYPES[:2], [(64, 37)]


def sweep(device: str, quick: bool) -> int:
    classes, dtypes, shapes = (QUICK_CLASSES, QUICK_DTYPES, QUICK_SHAPES) if quick else (CLASSES, DTYPES, SHAPES)
    generator = torch.Generator().manual_seed(0)
    problems = 0
    generations = ["v2", "v1"] if device == "cuda" else ["cpu"]
    for generation in generations:
        os.environ["ENTROPY_AL_SCORE_KERNEL"] = generation
        for C in classes:
            for K, N in shapes:
                if K * N * C > 2_000_000:
                    continue
                for dtype in dtypes:
                    base = torch.randn(K * N * C + 3, generator=generator).to(dtype).to(device)
                    views = [base[: K * N * C].view(K, N, C), base[3:].view(K, N, C)]  # aligned, misaligned
                    if C > 1:
                        views.append(base[: K * N * C].view(K, N, C)[:, :, : C - 1])  # strided
                    for logits in views:
                        for score in reference.SCORES:
                            if score == "margin" and logits.shape[2] < 2:
                                continue
                            out = entropy_al.mc_scores(logits, score)
                            problems += int(not torch.isfinite(out).all())
        for k in (1, 100):
            topk = entropy_al.StreamingTopK(k, device)
            for start in range(0, 3000, 1000):
                topk.update_logits(torch.randn(4, 1000, 10, generator=generator).to(device), start)
                topk.update(torch.randn(1000, generator=generator).to(device), start + 3000)
            problems += int(topk.result()[1].numel() != k)
    x = torch.randn(513, 37, generator=generator).to(device)
    ids = torch.arange(513, device=device)
    out = keyed.keyed_dropout(x, 0.3, 7, ids, ids % 5)
    problems += int(not torch.isfinite(out).all())
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"sweep on {device}: {problems} problems")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="a smaller sweep (for compute-sanitizer)")
    parser.add_argument("--print-sanitizer", action="store_true", help="print the sanitizer commands and exit")
    args = parser.parse_args()
    if args.print_sanitizer:
        tool = shutil.which("compute-sanitizer") or "compute-sanitizer (not on PATH here)"
        for check in ("memcheck", "racecheck", "synccheck"):
            print(f"{tool} --tool {check} --error-exitcode 97 {sys.executable} {__file__} --device cuda --quick")
        return 0
    return 1 if sweep(args.device, args.quick) else 0


if __name__ == "__main__":
    sys.exit(main())
