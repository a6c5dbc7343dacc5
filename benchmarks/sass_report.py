"""Static performance report of the compiled score kernels (no GPU needed).

For each (score, C, dtype) it names the kernel and tile the launcher dispatches to, reads the kernel's registers
and the steady-state instructions and MUFU ops per logit from its sm_90 SASS, computes the theoretical occupancy,
and turns the counts into issue-bound and MUFU-bound ceilings as % of H200 and H100 HBM bandwidth:

    issue ceiling [B/s] = SMs * clock * 4 warp-instructions/clock * 32 / (thread instructions per logit) * bytes/logit
    MUFU ceiling  [B/s] = SMs * clock * 16 MUFU ops/clock / (MUFU ops per logit) * bytes/logit

A kernel whose two ceilings exceed 100 % of HBM is memory-bound by construction. Per logit = (the instructions
of K - 1 pass-loop iterations + one iteration of the per-tile loop around it) / (the logits a thread scores in
them), with K = --passes; paths are the longest ones that avoid marked cold code (see benchmarks/sass.py).

    python benchmarks/sass_report.py [--library build-cuda/lib/entropy_al/_C.abi3.so] [--check] [--json out.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORES = ("entropy", "bald", "margin", "least_confidence")
CLASSES = (10, 100, 1000)
DTYPES = {"fp32": ("float", 4), "bf16": ("__nv_bfloat16", 2)}
V1_DTYPES = {"fp32": "float", "bf16": "c10::BFloat16"}
# (name, SMs, boost clock [Hz], HBM datasheet bandwidth [B/s]); 4 warp-instructions and 16 MUFU ops per clock per SM.
CARDS = (("H200", 132, 1.98e9, 4.8e12), ("H100", 132, 1.98e9, 3.35e12))
ISSUE_PER_CLOCK = 4 * 32
MUFU_PER_CLOCK = 16
# sm_90 limits for the occupancy calculation.
SM_THREADS, SM_BLOCKS, SM_REGISTERS, SM_SHARED, BLOCK_SHARED_RESERVED = 2048, 32, 65536, 233472, 1024


def v2_tiles() -> list[tuple[int, int, int, int, int]]:
    """(G, V, min_classes, threads, R) of every v2 tile, read from csrc/mc_scores_tiles.h."""
    text = open(os.path.join(ROOT, "csrc", "mc_scores_tiles.h")).read()
    table = text[text.index("kV2Tiles[] = {") : text.index("};", text.index("kV2Tiles[] = {"))]
    return [tuple(map(int, t)) for t in re.findall(r"\{(\d+), (\d+), (\d+), (\d+), (\d+)\}", table)]


def v1_tiles() -> list[tuple[int, int, int]]:
    """(max C, G, V) of the v1 register kernel's tiles, read from csrc/cuda/mc_scores_cuda.cu."""
    text = open(os.path.join(ROOT, "csrc", "cuda", "mc_scores_cuda.cu")).read()
    return [tuple(map(int, t)) for t in re.findall(r"num_classes <= (\d+)\) \{ fn\(RowTile<(\d+), (\d+)>", text)]


def occupancy(registers: int, threads: int, shared: int) -> tuple[int, float]:
    """(resident blocks per SM, fraction of the SM's 64 warps) on sm_90."""
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(registers * 32 / 256) * 256
    by_registers = SM_REGISTERS // (per_warp * warps) if registers else SM_BLOCKS
    by_shared = SM_SHARED // (shared + BLOCK_SHARED_RESERVED)
    blocks = min(SM_BLOCKS, SM_THREADS // threads, by_registers, by_shared)
    return blocks, blocks * warps / 64


def ceilings(instructions: float, mufu: float, element_bytes: int) -> dict[str, float]:
    out = {}
    for name, sms, clock, bandwidth in CARDS:
        issue = sms * clock * ISSUE_PER_CLOCK / instructions * element_bytes
        special = sms * clock * MUFU_PER_CLOCK / mufu * element_bytes
        out[f"{name}_issue"] = 100 * issue / bandwidth
        out[f"{name}_mufu"] = 100 * special / bandwidth
    return out


def find_kernel(names: dict[str, str], pattern: str) -> str:
    hits = [m for m, d in names.items() if d.replace(" ", "").startswith(pattern.replace(" ", ""))]
    if len(hits) != 1:
        raise LookupError(f"{len(hits)} kernels match {pattern}")
    return hits[0]


def report(library: str, passes: int, arch: str) -> list[dict]:
    code = sass.functions(library, arch)
    usage = sass.resources(library, arch)
    names = sass.demangle(list(code))
    rows = []
    for score in SCORES:
        bald = "true" if score == "bald" else "false"
        for C in CLASSES:
            for dtype, (ctype, element_bytes) in DTYPES.items():
                G, V, low, threads, R = next(t for t in v2_tiles() if t[2] <= C <= t[0] * t[1])
                mangled = find_kernel(
                    names, f"void entropy_al::v2::mc_scores_v2_kernel<{ctype}, {G}, {V}, {low}, {threads}, {R}, {bald}>"
                )
                samples = threads // G * R
                shared = 2 * (samples * G * V * element_bytes + 32)
                steady = sass.steady_state(code[mangled])
                logits = passes * C * R / G
                per_logit = ((passes - 1) * steady.pass_instructions + steady.tile_instructions) / logits
                mufu = ((passes - 1) * steady.pass_mufu + steady.tile_mufu) / logits
                registers = usage[mangled]["REG"]
                blocks, occ = occupancy(registers, threads, shared)
                row = dict(
                    generation="v2",
                    score=score,
                    C=C,
                    dtype=dtype,
                    tile=f"G{G}xV{V}xR{R} ({threads} thr)",
                    registers=registers,
                    occupancy=occ,
                    inflight_kib=blocks * samples * C * element_bytes / 1024,
                    instructions=per_logit,
                    mufu=mufu,
                    **ceilings(per_logit, mufu, element_bytes),
                )
                rows.append(row)
                # v1 for comparison (its score branch is at run time: the longest path includes BALD's work).
                limit, G1, V1 = next(t for t in v1_tiles() if C <= t[0])
                mangled = find_kernel(
                    names,
                    f"void entropy_al::(anonymous namespace)::mc_scores_v1_register_kernel<{V1_DTYPES[dtype]}, {G1}, {V1}>",
                )
                steady = sass.steady_state(code[mangled])
                threads1 = 256
                logits = passes * C / G1
                per_logit = (passes * steady.pass_instructions + steady.tile_instructions) / logits
                mufu = (passes * steady.pass_mufu + steady.tile_mufu) / logits
                registers = usage[mangled]["REG"]
                blocks, occ = occupancy(registers, threads1, usage[mangled].get("SHARED", 0))
                rows.append(
                    dict(
                        generation="v1",
                        score=score,
                        C=C,
                        dtype=dtype,
                        tile=f"G{G1}xV{V1}",
                        registers=registers,
                        occupancy=occ,
                        inflight_kib=float("nan"),
                        instructions=per_logit,
                        mufu=mufu,
                        **ceilings(per_logit, mufu, element_bytes),
                    )
                )
    return rows


def markdown(rows: list[dict]) -> str:
    head = (
        "| kernel | score | C | dtype | tile | regs | occupancy | KiB in flight/SM | instr/logit | MUFU/logit "
        "| H200 issue | H200 MUFU | H100 issue | H100 MUFU |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        inflight = "" if math.isnan(r["inflight_kib"]) else f"{r['inflight_kib']:.0f}"
        lines.append(
            f"| {r['generation']} | {r['score']} | {r['C']} | {r['dtype']} | {r['tile']} | {r['registers']} "
            f"| {100 * r['occupancy']:.0f} % | {inflight} | {r['instructions']:.1f} | {r['mufu']:.2f} "
            f"| {r['H200_issue']:.0f} % | {r['H200_mufu']:.0f} % | {r['H100_issue']:.0f} % | {r['H100_mufu']:.0f} % |"
        )
    return "\n".join(lines)


def default_library() -> str:
    hits = sorted(glob.glob(os.path.join(ROOT, "build-cuda", "lib", "entropy_al", "_C*.so")))
    if not hits:
        raise SystemExit("no CUDA build found under build-cuda/lib (run make cuda-check), or pass --library")
    return hits[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default=None, help="the built extension (.so) or a cubin")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--passes", type=int, default=10, help="K, the MC passes per sample")
    parser.add_argument("--check", action="store_true", help="exit 1 when a v2 ceiling is below 100 %% of HBM")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = report(args.library or default_library(), args.passes, args.arch)
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    keys = [f"{card[0]}_{kind}" for card in CARDS for kind in ("issue", "mufu")]
    failing = [r for r in rows if r["generation"] == "v2" and min(r[k] for k in keys) < 100]
    for r in failing:
        print(f"below 100 % of HBM: v2 {r['score']} C={r['C']} {r['dtype']}", file=sys.stderr)
    return 1 if (args.check and failing) else 0


if __name__ == "__main__":
    sys.exit(main())
