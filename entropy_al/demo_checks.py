"""The demo's checks of where it runs and where it writes, made before any training (seconds, not minutes, in)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

__all__ = ["check_device", "check_out"]


def check_device(device: object) -> torch.device:
    """``device`` as a ``torch.device`` this process can train on (the CPU or a visible CUDA device)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"demo: expected `device` to be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            why = "this torch was built without CUDA" if not torch.backends.cuda.is_built() else f"{count} visible"
            raise ValueError(f"demo: `device` {device!r} is not available: CUDA devices: {why}")
    elif parsed.type != "cpu":
        raise ValueError(f"demo: expected `device` to be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return parsed


def check_out(out: str | os.PathLike) -> Path:
    """Creates the output folder ``out`` (with its parents) and proves a file can be written into it."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"demo: `out` {str(path)!r} is an existing file; expected a folder for the results")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"demo: cannot write the results into `out` {str(path)!r}: {exc.strerror or exc}") from None
    return path
