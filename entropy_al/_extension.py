"""Loads the compiled extension and decides which backend runs the ops.

``ENTROPY_AL_BACKEND`` selects: ``auto`` (default, also when empty: the compiled kernels when they load, else the
pure-PyTorch fallback with one warning), ``torch`` (always the fallback, no warning) or ``compiled`` (raise if it
cannot load). Of several ``_C*`` libraries in the package, the one named with this interpreter's exact extension
suffix is tried first, then the stable-ABI one (``.abi3.so``), then any other.
"""

from __future__ import annotations

import glob
import importlib.machinery
import os
import warnings

import torch

__all__ = ["EXTENSION_LOADED", "LOAD_ERROR", "backend", "backend_info", "cpu_capability"]

_HERE = os.path.dirname(os.path.abspath(__file__))
# Every op of csrc/ops.cpp: the library must define them all to be used.
_OPS = ("mc_scores", "topk_update", "mc_topk_update", "keyed_dropout", "_build_info", "_cpu_capability", "_tile_plan")


def _libraries(folder: str) -> list[str]:
    """The ``_C*.so`` / ``_C*.pyd`` files of ``folder`` (any characters in its path), best suffix first."""
    pattern = os.path.join(glob.escape(folder), "_C*")
    found = [path for path in glob.glob(pattern) if path.endswith((".so", ".pyd"))]
    preference = {"_C" + suffix: rank for rank, suffix in enumerate(importlib.machinery.EXTENSION_SUFFIXES)}
    return sorted(found, key=lambda path: (preference.get(os.path.basename(path), len(preference)), path))


def _try_load(library: str) -> str | None:
    """Loads ``library`` as the extension; ``None`` on success, else why it cannot be used."""
    try:
        torch.ops.load_library(library)
    except Exception as exc:  # missing CUDA libraries, ABI mismatch with this torch, not a library, ...
        # torch's OSError only says "Could not load this library"; the dlopen error is its cause.
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        return f"the compiled extension {library} failed to load: {exc}{cause}"
    # A library that loads but does not define every op (a stale build, another package's file) would break the
    # fake-kernel registrations of ops.py and keyed.py: treat it as not loaded.
    missing = [op for op in _OPS if not hasattr(torch.ops.entropy_al, op)]
    if missing:
        return (
            f"the compiled extension {library} loaded but does not define the ops {', '.join(missing)} "
            "(a stale or foreign build)"
        )
    return None


def _load() -> tuple[bool, str]:
    requested = os.environ.get("ENTROPY_AL_BACKEND", "").strip().lower() or "auto"
    if requested not in ("auto", "torch", "compiled"):
        raise ValueError(f"ENTROPY_AL_BACKEND: expected 'auto', 'torch' or 'compiled', got {requested!r}")
    if requested == "torch":
        return False, "ENTROPY_AL_BACKEND=torch asks for the pure-PyTorch fallback"
    errors = []
    for library in _libraries(_HERE):
        failure = _try_load(library)
        if failure is None:
            return True, f"compiled extension loaded from {library}"
        errors.append(failure)
    # Every candidate's failure, best first.
    error = "; ".join(errors) if errors else "the compiled extension entropy_al/_C*.so was not built"
    if requested == "compiled":
        raise ImportError(f"entropy_al: ENTROPY_AL_BACKEND=compiled but {error}")
    warnings.warn(
        f"entropy_al: {error}; using the pure-PyTorch fallback (correct but slower). "
        "Build the extension with `pip install --no-build-isolation -e .`, or set ENTROPY_AL_BACKEND=torch "
        "to silence this warning.",
        RuntimeWarning,
        stacklevel=3,
    )
    return False, error


EXTENSION_LOADED, LOAD_ERROR = _load()


def _build_info() -> dict[str, str]:
    if not EXTENSION_LOADED:
        return {}
    fields = (item.split("=", 1) for item in torch.ops.entropy_al._build_info().split(";") if "=" in item)
    return dict(fields)


def cpu_capability() -> str:
    """The build of the CPU kernels this process runs: ``"avx2"`` (AVX2 + FMA) or ``"default"`` (any x86-64 or other
    CPU), chosen from the CPU at run time and lowered by ``ENTROPY_AL_CPU_CAPABILITY=default``; ``""`` without the
    compiled extension, or the error when that variable holds anything else."""
    if not EXTENSION_LOADED:
        return ""
    try:
        return torch.ops.entropy_al._cpu_capability()
    except (RuntimeError, ValueError) as exc:
        return f"error: {exc}".splitlines()[0]


def backend(device: torch.device | str = "cpu") -> str:
    """Which implementation runs the ops for tensors on ``device``: ``"cuda"``, ``"cpp"`` or ``"torch"``."""
    device = torch.device(device)
    if not EXTENSION_LOADED:
        return "torch"
    if device.type == "cuda":
        return "cuda" if _build_info().get("cuda") == "1" else "torch"
    return "cpp" if device.type == "cpu" else "torch"


def backend_info() -> dict[str, object]:
    """Everything ``python -m entropy_al info`` prints about the backends."""
    build = _build_info()
    return {
        "extension_loaded": EXTENSION_LOADED,
        "reason": LOAD_ERROR,
        "cpu_backend": backend("cpu"),
        "cuda_backend": backend("cuda"),
        "built_with_cuda": build.get("cuda") == "1",
        "cuda_archs": build.get("archs", ""),
        "build_torch": build.get("torch", ""),
        "cpu_capability": cpu_capability(),
    }
