"""What ``python -m entropy_al info`` reports: versions, devices and which backend runs the ops, and why."""

from __future__ import annotations

import platform

import torch

from . import __version__
from ._extension import backend_info

__all__ = ["collect_info", "format_info"]

_BACKEND_NAMES = {
    "cuda": "CUDA kernel (compiled extension)",
    "cpp": "C++ CPU kernel (compiled extension)",
    "torch": "pure-PyTorch fallback",
}


_CAPABILITY_NAMES = {
    "avx2": "avx2 (AVX2 + FMA build, chosen for this CPU; ENTROPY_AL_CPU_CAPABILITY=default forces the baseline)",
    "default": "default (baseline build)",
}


def collect_info() -> dict[str, object]:
    """The report as plain data: versions, CUDA devices and :func:`entropy_al.backend_info`."""
    cuda_available = torch.cuda.is_available()
    devices = (
        [
            f"cuda:{i} {torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
            for i in range(torch.cuda.device_count())
        ]
        if cuda_available
        else []
    )
    return {
        "entropy_al": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda_available,
        "cuda_devices": devices,
        **backend_info(),
    }


def format_info(info: dict[str, object]) -> str:
    """Renders :func:`collect_info` as aligned ``key: value`` lines."""
    loaded = bool(info["extension_loaded"])
    rows = [
        ("entropy_al", info["entropy_al"]),
        ("python", info["python"]),
        ("torch", info["torch"]),
        ("torch CUDA", info["torch_cuda"] or "none (CPU-only torch build)"),
        ("CUDA available", "yes" if info["cuda_available"] else "no"),
        *(("CUDA device", name) for name in info["cuda_devices"]),
        ("compiled extension", "loaded" if loaded else "not loaded"),
        ("why", info["reason"]),
        ("CPU tensors run on", _BACKEND_NAMES[str(info["cpu_backend"])]),
        ("CUDA tensors run on", _BACKEND_NAMES[str(info["cuda_backend"])]),
    ]
    if loaded:
        rows += [
            ("built with CUDA", "yes" if info["built_with_cuda"] else "no"),
            ("CUDA archs", info["cuda_archs"] or "none"),
            ("built against torch", info["build_torch"] or "unknown"),
            ("CPU kernels", _CAPABILITY_NAMES.get(str(info["cpu_capability"]), info["cpu_capability"])),
        ]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in rows)
