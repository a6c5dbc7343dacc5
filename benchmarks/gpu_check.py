"""The whole GPU proof as one command (``make gpu-check``), for an H100/H200 with no internet access.

Uses the machine's own ``python3`` and its preinstalled CUDA build of torch: no venv, no installs. Steps, each
with a time limit, all recorded (a failing step does not stop the others):

1. build the extension in place for the device's architecture;
2. CUDA tests: tests/test_cuda_kernels.py (v1 and v2 kernels against the float64 reference, top-k against the
   CPU, no host synchronization in the streaming update) plus the CUDA cases of the op test files, once with the
   v2 kernels and once with ENTROPY_AL_SCORE_KERNEL=v1;
3. compute-sanitizer memcheck, racecheck and synccheck over the shape sweep of benchmarks/gpu_sweep.py (a
   device the sanitizer refuses is reported, and the check goes on);
4. benchmarks/gpu_bench.py: bandwidth of v1 and v2 against copy_, the top-k merge against scoring alone and its
   launches per update, the streaming update under torch.cuda.set_sync_debug_mode("error");
5. benchmarks/bench_dropout.py (keyed dropout against nn.Dropout) and benchmarks/bench_select.py (select() on a
   small CNN over 1M uint8 images against a DISTIL-style loop).

Writes report.md (every step's status and tables) and report.json into the output folder.

    python3 benchmarks/gpu_check.py OUT            # on the GPU machine (about 6-8 minutes)
    python3 benchmarks/gpu_check.py --dry OUT      # no GPU: every step on tiny CPU inputs, checks this script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUDGET_SECONDS = 460  # no step runs past this (the whole check must stay under 8 minutes)
CUDA_TEST_FILES = ["tests/test_mc_scores.py", "tests/test_topk.py", "tests/test_keyed_dropout.py"]


def step(name, command, timeout, env=None, cwd=ROOT):
    """Runs a command; returns its record (status ok / failed / timeout / skipped, seconds, output)."""
    start = time.monotonic()
    merged_env = dict(os.environ, **(env or {}))
    try:
        done = subprocess.run(command, cwd=cwd, env=merged_env, capture_output=True, text=True, timeout=timeout)
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status = f"timeout ({timeout} s)"
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    except OSError as exc:
        status, output = f"not run ({exc})", ""
    return {
        "name": name,
        "command": " ".join(command),
        "status": status,
        "seconds": round(time.monotonic() - start, 1),
        "output": output,
    }


def plan(dry: bool, out: str) -> list[tuple[str, list[str], int, dict]]:
    """(name, command, timeout, extra environment) of every step."""
    py = sys.executable
    bench_json = os.path.join(out, "bench.json")
    if dry:
        return [
            (
                "cuda tests collect (skip without GPU)",
                [py, "-m", "pytest", "-q", "tests/test_cuda_kernels.py"],
                120,
                {},
            ),
            ("shape sweep (CPU)", [py, "benchmarks/gpu_sweep.py", "--device", "cpu", "--quick"], 120, {}),
            ("sanitizer command", [py, "benchmarks/gpu_sweep.py", "--device", "cpu", "--print-sanitizer"], 30, {}),
            ("benchmarks (CPU, tiny)", [py, "benchmarks/gpu_bench.py", "--dry", "--json", bench_json], 180, {}),
            (
                "keyed dropout (CPU, tiny)",
                [
                    py,
                    "benchmarks/bench_dropout.py",
                    "--shapes",
                    "1024x64",
                    "--dtypes",
                    "float32",
                    "--min-run-time",
                    "0.05",
                ],
                120,
                {},
            ),
        ]
    import torch  # the GPU machine's own torch

    major, minor = torch.cuda.get_device_capability()
    build_env = {
        "ENTROPY_AL_CUDA": "1",
        "TORCH_CUDA_ARCH_LIST": f"{major}.{minor}",
        "MAX_JOBS": str(os.cpu_count() or 4),
    }
    tests = (
        [py, "-m", "pytest", "-q", "-x", "tests/test_cuda_kernels.py"]
        + CUDA_TEST_FILES
        + ["-k", "cuda or Cuda or kernels"]
    )
    sanitizer = shutil.which("compute-sanitizer") or os.path.join(
        os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "compute-sanitizer"
    )
    steps = [
        ("build", [py, "setup.py", "build_ext", "--inplace"], 300, build_env),
        ("cuda tests, v2 kernels", tests, 150, {}),
        ("cuda tests, v1 kernels", tests, 150, {"ENTROPY_AL_SCORE_KERNEL": "v1"}),
    ]
    for tool in ("memcheck", "racecheck", "synccheck"):
        steps.append(
            (
                f"compute-sanitizer {tool}",
                [
                    sanitizer,
                    "--tool",
                    tool,
                    "--error-exitcode",
                    "97",
                    py,
                    "benchmarks/gpu_sweep.py",
                    "--device",
                    "cuda",
                ],
                150,
                {},
            )
        )
    steps += [
        ("benchmarks", [py, "benchmarks/gpu_bench.py", "--json", bench_json], 150, {}),
        (
            "keyed dropout vs nn.Dropout",
            [py, "benchmarks/bench_dropout.py", "--device", "cuda", "--min-run-time", "0.2"],
            90,
            {},
        ),
        (
            "select() on a CNN over 1M uint8 images",
            [
                py,
                "benchmarks/bench_select.py",
                "--device",
                "cuda",
                "--cases",
                "CNN",
                "--sizes",
                "1000000",
                "--rounds",
                "1",
                "--memory",
                "off",
            ],
            180,
            {},
        ),
    ]
    return steps


def markdown(records: list[dict], header: str) -> str:
    lines = [f"# gpu-check: {header}", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']} |" for r in records]
    for r in records:
        lines += ["", f"## {r['name']}", "", f"`{r['command']}`", "", "```", r["output"][-6000:].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for report.md, report.json and bench.json")
    parser.add_argument("--dry", action="store_true", help="no GPU: run every step on tiny CPU inputs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = os.path.abspath(args.out)
    start = time.monotonic()
    records = []
    for name, command, timeout, env in plan(args.dry, out):
        left = BUDGET_SECONDS - (time.monotonic() - start)
        if left < 10:
            records.append(
                {
                    "name": name,
                    "command": " ".join(command),
                    "status": "skipped (time budget)",
                    "seconds": 0,
                    "output": "",
                }
            )
            continue
        record = step(name, command, int(min(timeout, left)), env)
        if "sanitizer" in name and record["status"].startswith("failed") and "exit 97" not in record["status"]:
            record["status"] = "refused: " + record["status"]  # the tool could not run here: reported, not fatal
        records.append(record)
        print(f"{records[-1]['status']:>24}  {records[-1]['seconds']:6.1f} s  {name}", flush=True)
    header = "dry run (no GPU)" if args.dry else _device_name()
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(records, header))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump({"device": header, "steps": records}, f, indent=1)
    print(f"report: {os.path.join(out, 'report.md')}")
    return 0 if all(r["status"] == "ok" or r["status"].startswith("refused") for r in records) else 1


def _device_name() -> str:
    import torch

    return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"


if __name__ == "__main__":
    sys.exit(main())
