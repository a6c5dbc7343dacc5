"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import platform

import torch
from torch.utils import benchmark


def median_seconds(fn, min_run_time: float = 1.0) -> float:
    """Median time of fn() (CUDA-synchronized by torch.utils.benchmark), after one warm-up call."""
    fn()
    # Timer defaults to one thread; time with the threads the process was given, as a user's call runs.
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def machine_description(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name()
        return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A markdown table, ready to paste into benchmarks/RESULTS.md."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
