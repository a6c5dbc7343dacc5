"""CUDA timings of the score kernels and the streaming top-k, against baselines measured in the same run.

- bandwidth: mc_scores with the v1 and the v2 kernels on [K = 10, N = 1M, C] logits, C in {10, 100, 1000},
  float32 and bfloat16, as TB/s of logits read and as % of a device-to-device copy_ of 4 GiB (read + write);
- merge: mc_topk_update against mc_scores alone on blocks of 4k, 64k and 1M samples (C = 10, K = 10, float32)
  with k = 1000 and a full state, random order; kernel launches per update (torch.profiler; fails above 3);
- the streaming update under torch.cuda.set_sync_debug_mode("error") (a host synchronization raises).

Times are medians of CUDA-event-timed runs after a warm-up. --dry runs the same code on tiny CPU inputs
(wall-clock times, no copy roof) to check the script.

    python benchmarks/gpu_bench.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # common.py, and the package built in place
from common import machine_description, print_table  # noqa: E402

import entropy_al  # noqa: E402


def median_ms(fn, device: str, repeats: int) -> float:
    fn()
    if device != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def with_kernel(generation: str, fn):
    def run():
        os.environ["ENTROPY_AL_SCORE_KERNEL"] = generation
        try:
            return fn()
        finally:
            os.environ.pop("ENTROPY_AL_SCORE_KERNEL", None)

    return run


def bandwidth(device: str, samples: int, classes: tuple[int, ...], repeats: int) -> list[dict]:
    rows = []
    copy_tbs = float("nan")
    if device == "cuda":
        src = torch.empty(1 << 30, dtype=torch.float32, device=device).normal_()
        dst = torch.empty_like(src)
        ms = median_ms(lambda: dst.copy_(src), device, repeats)
        copy_tbs = 2 * src.numel() * 4 / (ms * 1e-3) / 1e12
        del src, dst
    for C in classes:
        for dtype in (torch.float32, torch.bfloat16):
            logits = torch.randn(10, samples, C, device=device, dtype=dtype)
            nbytes = logits.numel() * logits.element_size()
            row = {"C": C, "dtype": str(dtype).replace("torch.", ""), "GB": nbytes / 1e9, "copy_TBps": copy_tbs}
            for generation in ("v1", "v2"):
                ms = median_ms(
                    with_kernel(generation, lambda: entropy_al.mc_scores(logits, "entropy")), device, repeats
                )
                row[f"{generation}_ms"] = ms
                row[f"{generation}_TBps"] = nbytes / (ms * 1e-3) / 1e12
            rows.append(row)
            logits = None  # free the block before the next one is drawn
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def launches_per_update(logits, state, k) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        entropy_al.mc_topk_update(logits, state, 0, k)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def merge(device: str, blocks: tuple[int, ...], k: int, repeats: int) -> list[dict]:
    rows = []
    for block in blocks:
        logits = torch.randn(10, block, 10, device=device)
        state = entropy_al.mc_topk_update(
            torch.randn(10, max(k, 1), 10, device=device),
            torch.empty(0, dtype=torch.int64, device=device),
            10 * block,
            k,
        )
        score_ms = median_ms(lambda: entropy_al.mc_scores(logits, "entropy"), device, repeats)
        merge_ms = median_ms(lambda: entropy_al.mc_topk_update(logits, state, 0, k), device, repeats)
        launches = launches_per_update(logits, state, k) if device == "cuda" else -1
        rows.append(
            {
                "block": block,
                "k": k,
                "score_ms": score_ms,
                "fused_ms": merge_ms,
                "overhead": merge_ms / score_ms - 1,
                "launches": launches,
            }
        )
    return rows


def no_sync(device: str) -> str:
    if device != "cuda":
        return "not applicable (CPU)"
    topk = entropy_al.StreamingTopK(1000, device)
    logits = torch.randn(10, 65536, 10, device=device)
    topk.update_logits(logits, 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for block in range(1, 5):
            topk.update_logits(logits, block * 65536)
        return "ok: no host synchronization in 4 updates"
    except RuntimeError as exc:
        return f"FAILED: {exc}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny CPU inputs: checks the script")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = "cpu" if args.dry else "cuda"
    samples, classes, blocks, repeats = (
        (2000, (10, 100), (512, 4096), 3) if args.dry else (1_000_000, (10, 100, 1000), (4096, 65536, 1_000_000), 10)
    )
    print(f"# {machine_description(device)}\n")
    bw = bandwidth(device, samples, classes, repeats)
    print_table(
        ["C", "dtype", "GB", "v1 ms", "v1 TB/s", "v2 ms", "v2 TB/s", "v2 / copy_", "v2 / v1"],
        [
            [
                str(r["C"]),
                r["dtype"],
                f"{r['GB']:.2f}",
                f"{r['v1_ms']:.3f}",
                f"{r['v1_TBps']:.2f}",
                f"{r['v2_ms']:.3f}",
                f"{r['v2_TBps']:.2f}",
                f"{100 * r['v2_TBps'] / r['copy_TBps']:.0f} %",
                f"{r['v1_ms'] / r['v2_ms']:.2f}x",
            ]
            for r in bw
        ],
    )
    print()
    mg = merge(device, blocks, 1000, repeats)
    print_table(
        ["block", "k", "mc_scores ms", "mc_topk_update ms", "merge overhead", "launches/update"],
        [
            [
                str(r["block"]),
                str(r["k"]),
                f"{r['score_ms']:.3f}",
                f"{r['fused_ms']:.3f}",
                f"{100 * r['overhead']:.0f} %",
                str(r["launches"]),
            ]
            for r in mg
        ],
    )
    sync = no_sync(device)
    print(f"\nstreaming update under set_sync_debug_mode('error'): {sync}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": machine_description(device), "bandwidth": bw, "merge": mg, "no_sync": sync}, f, indent=1
            )
    too_many = [r for r in mg if r["launches"] > 3]
    for r in too_many:
        print(f"FAILED: {r['launches']} launches per update for a {r['block']}-sample block (at most 3)")
    return 1 if sync.startswith("FAILED") or too_many else 0


if __name__ == "__main__":
    sys.exit(main())
