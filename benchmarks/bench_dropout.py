"""keyed_dropout against nn.Dropout (train mode) and a torch.rand mask, and keyed MC dropout on a small MC head.

    python benchmarks/bench_dropout.py                     # CPU: 10240x128 and larger, float32 and bfloat16
    python benchmarks/bench_dropout.py --device cuda       # 1M x 128 and larger
    python benchmarks/bench_dropout.py --compile           # adds torch.compile of the torch.rand mask
    python benchmarks/bench_dropout.py --threads 1         # one core (steadier on a shared machine)

Every implementation is checked before it is timed: keyed_dropout bit for bit against the pure-PyTorch oracle, the
baselines for their keep rate and scale. The second table times one forward of an MC head (128 -> 64 -> 10 with
dropout) plain and under keyed_mc_dropout (patched module + functional mode), the per-forward overhead that a
select() loop pays. On CUDA a device-to-device copy of the same bytes is the bandwidth roof.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # common.py, and the package built in place
from common import machine_description, median_seconds, print_table  # noqa: E402

import entropy_al  # noqa: E402
from entropy_al import keyed_mc, reference  # noqa: E402

SEED = 2024


def rand_mask_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """The straightforward alternative: a float32 uniform per element, compared with p, scaled."""
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep * (1.0 / (1.0 - p))


def check_rate(name: str, out: torch.Tensor, x: torch.Tensor, p: float) -> None:
    kept = (out != 0).double().mean().item()
    n = out.numel()
    if abs(kept - (1 - p)) > 6 * math.sqrt(p * (1 - p) / n) + 1e-3:
        raise SystemExit(f"{name}: keep rate {kept:.4f}, expected {1 - p:.4f}")
    ratio = (out[out != 0].float() / x[out != 0].float()).mean().item()
    if abs(ratio - 1 / (1 - p)) > 2e-2 / (1 - p):
        raise SystemExit(f"{name}: kept elements scaled by {ratio:.4f}, expected {1 / (1 - p):.4f}")


def dropout_table(args: argparse.Namespace) -> None:
    cuda = args.device == "cuda"
    shapes = args.shapes or ("1048576x128,1048576x1024" if cuda else "10240x128,102400x128,10240x1024")
    headers = ["shape", "dtype", "keyed ms", "nn.Dropout ms", "rand mask ms"]
    headers += (["compile ms"] if args.compile else []) + ["keyed M elem/s", "nn/keyed", "rand/keyed"]
    headers += (["compile/keyed"] if args.compile else []) + (["GB/s", "% of copy"] if cuda else [])
    rows = []
    drop = nn.Dropout(args.p).train()
    compiled = torch.compile(rand_mask_dropout) if args.compile else None
    for shape_text in shapes.split(","):
        shape = tuple(int(v) for v in shape_text.split("x"))
        sample_ids = torch.arange(shape[0], device=args.device) + 10**6
        pass_ids = torch.full_like(sample_ids, 3)
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            x = torch.randn(shape, device=args.device).to(dtype)
            head = slice(0, 512)
            ours = entropy_al.keyed_dropout(x[head], args.p, SEED, sample_ids[head], pass_ids[head])
            oracle = reference.keyed_dropout_reference(x[head], args.p, SEED, sample_ids[head], pass_ids[head])
            if not torch.equal(ours, oracle):
                raise SystemExit("keyed_dropout: differs from the pure-PyTorch oracle")
            check_rate("keyed", entropy_al.keyed_dropout(x, args.p, SEED, sample_ids, pass_ids), x, args.p)
            check_rate("nn.Dropout", drop(x), x, args.p)
            check_rate("rand mask", rand_mask_dropout(x, args.p), x, args.p)
            timings = {
                "keyed": median_seconds(
                    lambda: entropy_al.keyed_dropout(x, args.p, SEED, sample_ids, pass_ids), args.min_run_time
                ),
                "nn": median_seconds(lambda: drop(x), args.min_run_time),
                "rand": median_seconds(lambda: rand_mask_dropout(x, args.p), args.min_run_time),
            }
            if compiled is not None:
                check_rate("compile", compiled(x, args.p), x, args.p)
                timings["compile"] = median_seconds(lambda: compiled(x, args.p), args.min_run_time)
            keyed = timings["keyed"]
            cells = [shape_text, dtype_name] + [f"{timings[k] * 1e3:.3f}" for k in ("keyed", "nn", "rand")]
            cells += [f"{timings['compile'] * 1e3:.3f}"] if compiled is not None else []
            cells += [f"{x.numel() / keyed / 1e6:.0f}"]
            cells += [f"{timings[k] / keyed:.1f}x" for k in ("nn", "rand") + (("compile",) if compiled else ())]
            if cuda:
                flat = x.view(-1)
                copy = median_seconds(lambda: flat.clone(), args.min_run_time)
                nbytes = 2 * x.numel() * x.element_size()  # read x, write the output
                cells += [f"{nbytes / keyed / 1e9:.0f}", f"{copy / keyed * 100:.0f}%"]
            rows.append(cells)
    print_table(headers, rows)


def mc_head_table(args: argparse.Namespace) -> None:
    """One forward of a small MC head on a batch, plain (nn.Dropout) and keyed (patched module + mode)."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Dropout(args.p), nn.Linear(64, 10)).to(args.device)
    head.train()
    rows = []
    for batch in (1024, 10240):
        x = torch.randn(batch, 128, device=args.device)
        sample_ids = torch.arange(batch, device=args.device)
        with torch.no_grad():
            plain = median_seconds(lambda: head(x), args.min_run_time)
            with keyed_mc.keyed_mc_dropout(head, SEED) as keyed:

                def keyed_forward():
                    with keyed.batch(sample_ids, 1):
                        return head(x)

                keyed_time = median_seconds(keyed_forward, args.min_run_time)
            with keyed_mc.keyed_mc_dropout(head, SEED, functional=False) as keyed:
                no_mode = median_seconds(keyed_forward, args.min_run_time)
        rows.append(
            [
                str(batch),
                f"{plain * 1e3:.3f}",
                f"{keyed_time * 1e3:.3f}",
                f"{no_mode * 1e3:.3f}",
                f"{plain / keyed_time:.2f}x",
            ]
        )
    print_table(["rows", "nn.Dropout head ms", "keyed head ms", "keyed, functional=False ms", "plain/keyed"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma list, e.g. float32,bfloat16")
    parser.add_argument("--shapes", default=None, help="comma list of BxF, e.g. 10240x128")
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--compile", action="store_true", help="add torch.compile of the torch.rand mask")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# keyed_dropout on {machine_description(args.device)}; backend: {entropy_al.backend(args.device)}; "
        f"p = {args.p}\n"
    )
    dropout_table(args)
    print("\n# MC head 128 -> 64 (ReLU, Dropout) -> 10, one forward\n")
    mc_head_table(args)


if __name__ == "__main__":
    main()
