"""The resolved plan of one MC run (:class:`MCPlan`) and the runtime helpers it is executed with.

Everything a caller decides (from its arguments) before the passes run is in the plan; the engine
(:mod:`entropy_al.mc.engine`) never reads anything else.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .heads import HeadSplit

__all__ = [
    "DEFAULT_MC_MEMORY_BUDGET_CPU",
    "DEFAULT_MC_MEMORY_BUDGET_CUDA",
    "MCPlan",
    "autocast_for",
    "default_memory_budget",
]

#: Default of ``args['mc_memory_budget']`` on the CPU: activation bytes one stacked forward may use. About an L2
#: cache: on a CPU stacking saves per-forward overhead, which matters for small batches, while a stacked forward whose
#: activations outgrow the caches is slower per row than separate passes. Measured here (AMD EPYC, 1 MiB L2 per
#: core, one thread, 10 passes): stacking made the 128-64-10 MC head 2.3x faster at batch 16 and 6.8x at batch 1,
#: and 1.35x slower at batch 1024 (0.50 s against 0.37 s per 20k samples); the 784-512-512-10 MLP at batch 256
#: 1.3x slower.
DEFAULT_MC_MEMORY_BUDGET_CPU = 2 << 20
#: Default on CUDA, where a bigger forward always fills the device better: 1 GiB, or a quarter of the free memory.
DEFAULT_MC_MEMORY_BUDGET_CUDA = 1 << 30


@dataclass(frozen=True)
class MCPlan:
    """What one MC run does.

    Attributes:
        n_drop: stochastic passes per sample.
        batch_size: samples per forward.
        buffer_size: batches restart at multiples of it (DISTIL's stream buffer; see :mod:`entropy_al.mc.batches`).
        nclasses: expected width of the model's output.
        device: where inputs go.
        where: the public method running, for error messages.
        memory_budget: activation bytes one stacked forward may use (0: one pass per forward).
        split: run the trunk once per batch and the head ``n_drop`` times (``None``: the whole model).
        amp_dtype: autocast dtype of the forwards (``None``: the model's own dtype).
        num_workers: DataLoader workers for datasets fetched item by item.
        batch_sampler: the user's batches (index lists, any order), or ``None`` for consecutive batches.
        mc_mode: ``"dropout"`` (only the dropout modules stochastic) or ``"train"`` (the whole model in train mode),
            see :func:`entropy_al.mc.mc_mode`.
        reproduce_distil: run DISTIL's pass-major loop (:mod:`entropy_al.mc.distil_loop`) instead of the batch-major
            one.
        mc_seed: keyed MC dropout's seed (:mod:`entropy_al.mc.keyed`), or ``None`` for torch's own dropout.
        id_base: pool index of the dataset's sample 0 (a stream buffer's start): what keyed dropout adds to the
            offsets to key the rows by global pool index.
        progress: show a tqdm bar over the samples.
    """

    n_drop: int
    batch_size: int
    buffer_size: int
    nclasses: int
    device: torch.device
    where: str
    # Throughput; the defaults are the plain loop.
    memory_budget: int = 0
    split: HeadSplit | None = None
    amp_dtype: torch.dtype | None = None
    num_workers: int = 0
    batch_sampler: Any = None
    # What the passes are: the model's MC mode, the loop order, keyed dropout's seed, and the progress bar.
    mc_mode: str = "dropout"
    reproduce_distil: bool = False
    mc_seed: int | None = None
    id_base: int = 0
    progress: bool = False


def default_memory_budget(device: torch.device) -> int:
    """``args['mc_memory_budget']``'s default: 2 MiB on the CPU; on CUDA 1 GiB, or a quarter of the free memory."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return min(DEFAULT_MC_MEMORY_BUDGET_CUDA, free // 4)
    return DEFAULT_MC_MEMORY_BUDGET_CPU


def autocast_for(where: str, dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``args['amp_dtype']`` on ``device`` (a no-op context for ``None``).

    Raises:
        ValueError: autocast to ``dtype`` is not available on ``device`` (torch would silently disable it, e.g.
            float16 on a CPU build without it, or bfloat16 on a GPU without it).
    """
    if dtype is None:
        return contextlib.nullcontext()
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            context = torch.autocast(device_type=device.type, dtype=dtype)
        except (RuntimeError, ValueError) as exc:
            problem = str(exc)
    problem = problem or next((str(w.message) for w in caught if "autocast" in str(w.message).lower()), None)
    if problem is not None:
        raise ValueError(
            f"{where}: args['amp_dtype'] = {dtype} is not supported on {device} by this torch build ({problem}); "
            "use torch.bfloat16, or drop the key to run the forwards in the model's own dtype"
        )
    return context
