"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import ctypes
import platform
import re
import time
from collections.abc import Callable

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


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.M).group(1))


def timed(fn: Callable[[], object], device: str) -> tuple[float, float | None]:
    """(seconds, peak CUDA allocation growth in MiB, or None off CUDA) of one call."""
    if device == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    cuda = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20 if device == "cuda" else None
    return seconds, cuda


def peak_rss_growth(fn: Callable[[], object]) -> float | None:
    """MiB by which the resident set's peak exceeds its size before ``fn()``; None where Linux cannot tell."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap memory back to the OS: VmRSS is what is in use
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def fmt_mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
