"""Stacked MC passes: one forward runs ``r`` passes of a batch, repeated along dim 0, each copy with its own masks.

Valid only when the rows of a forward do not interact, so never when a module normalizes with batch statistics
(:func:`uses_batch_statistics`). ``r`` comes from a memory budget and the activation bytes of one pass, measured on
the first forward of a run (:class:`PassGrouping`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["PassGrouping", "measured_call", "nbytes", "stack_copies", "stackable", "uses_batch_statistics"]


def uses_batch_statistics(module: nn.Module) -> bool:
    """Whether a forward of ``module`` in its current mode normalizes with the statistics of its batch."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
        for m in module.modules()
    )


class PassGrouping:
    """How many passes each forward stacks, from a memory budget and the activation bytes of one pass.

    One instance lives for one MC run: the first forward it sizes is a single pass (the probe); its measured
    bytes per sample size every later forward.

    Args:
        memory_budget: activation bytes one forward may use; 0 disables stacking (and the probe).
    """

    def __init__(self, memory_budget: int):
        self.memory_budget = memory_budget
        self.bytes_per_sample: float | None = None

    @property
    def probing(self) -> bool:
        """Whether the next forward must measure its activations (stacking is on and nothing is known yet)."""
        return self.memory_budget > 0 and self.bytes_per_sample is None

    def max_copies(self, rows: int, n_drop: int) -> int:
        """``r``: the most passes one forward of ``rows`` samples may stack (1 until the probe has run)."""
        if self.memory_budget <= 0 or self.bytes_per_sample is None:
            return 1
        per_pass = max(1, math.ceil(self.bytes_per_sample * rows))
        return max(1, min(n_drop, self.memory_budget // per_pass))

    def next_copies(self, rows: int, n_drop: int, remaining: int) -> int:
        """Passes of the next forward when ``remaining`` passes are left: ``remaining`` split in
        ``⌈remaining / r⌉`` forwards of near-equal size (e.g. 10 passes with ``r = 4``: 4, 3, 3)."""
        r = self.max_copies(rows, n_drop)
        forwards = -(-remaining // r)
        return -(-remaining // forwards)


def nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(nbytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(item) for item in value)
    return 0


def measured_call(net: nn.Module, run: Any) -> tuple[Any, int]:
    """``run()`` with a forward hook on every submodule of ``net``; returns its output and the bytes they output."""
    total = 0

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal total
        total += nbytes(output)

    handles = [module.register_forward_hook(hook) for module in net.modules()]
    try:
        output = run()
    finally:
        for handle in handles:
            handle.remove()
    return output, total


def stackable(value: Any, rows: int) -> bool:
    """Whether ``value`` is a batch that stacking can repeat: tensors (in a mapping, tuple or list) of ``rows`` rows."""
    if isinstance(value, torch.Tensor):
        return value.dim() >= 1 and value.shape[0] == rows
    if isinstance(value, Mapping):
        tensors = [item for item in value.values() if isinstance(item, torch.Tensor)]
        return bool(tensors) and all(stackable(item, rows) for item in tensors)
    if isinstance(value, (list, tuple)):
        return bool(value) and all(stackable(item, rows) for item in value)
    return False


def stack_copies(value: Any, copies: int) -> Any:
    """``copies`` copies of a batch along dim 0 (copy ``j`` at rows ``j·B … (j+1)·B − 1``)."""
    if isinstance(value, torch.Tensor):
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    if isinstance(value, Mapping):
        return {
            key: stack_copies(item, copies) if isinstance(item, torch.Tensor) else item for key, item in value.items()
        }
    items = [stack_copies(item, copies) for item in value]
    return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # a namedtuple takes fields
