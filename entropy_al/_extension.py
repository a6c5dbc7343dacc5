"""Loads the compiled extension and decides which backend runs the ops.

``ENTROPY_AL_BACKEND`` selects: ``auto`` (default: the compiled kernels when they load, else the pure-PyTorch
fallback with one warning), ``torch`` (always the fallback, no warning) or ``compiled`` (raise if it cannot load).
"""

from __future__ import annotations

import glob
import os
import warnings

import torch

__all__ = ["EXTENSION_LOADED", "LOAD_ERROR", "backend", "backend_info"]

_HERE = os.path.dirname(os.path.abspath(__file__))
# Every op of csrc/ops.cpp: the library must define them all to be used.
_OPS = ("mc_scores", "topk_update", "mc_topk_update", "keyed_dropout", "_build_info", "_tile_plan")


def _load() -> tuple[bool, str]:
    requested = os.environ.get("ENTROPY_AL_BACKEND", "auto").strip().lower()
    if requested not in ("auto", "torch", "compiled"):
        raise ValueError(f"ENTROPY_AL_BACKEND: expected 'auto', 'torch' or 'compiled', got {requested!r}")
    if requested == "torch":
        return False, "ENTROPY_AL_BACKEND=torch asks for the pure-PyTorch fallback"
    libraries = sorted(glob.glob(os.path.join(_HERE, "_C*.so")) + glob.glob(os.path.join(_HERE, "_C*.pyd")))
    if not libraries:
        error = "the compiled extension entropy_al/_C*.so was not built"
    else:
        try:
            torch.ops.load_library(libraries[0])
        except Exception as exc:  # missing CUDA libraries, ABI mismatch with this torch, not a library, ...
            # torch's OSError only says "Could not load this library"; the dlopen error is its cause.
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            error = f"the compiled extension {libraries[0]} failed to load: {exc}{cause}"
        else:
            # A library that loads but does not define every op (a stale build, another package's file) would
            # break the fake-kernel registrations of ops.py and keyed.py: treat it as not loaded.
            missing = [op for op in _OPS if not hasattr(torch.ops.entropy_al, op)]
            if not missing:
                return True, f"compiled extension loaded from {libraries[0]}"
            error = (
                f"the compiled extension {libraries[0]} loaded but does not define the ops {', '.join(missing)} "
                "(a stale or foreign build)"
            )
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
    }
