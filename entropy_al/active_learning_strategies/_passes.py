"""The MC-dropout forward passes over a dataset, as a stream of ``[n_drop, B, C]`` logit blocks.

The fast path is batch-major: each batch is fetched and collated once, moved to the device once, and run
``n_drop`` times, and its logit stack goes straight to the scoring op. DISTIL is pass-major (every pass re-reads
the data); :mod:`._distil` reproduces that order when asked. Both yield blocks in pool order. The caller owns the
model's mode (:mod:`._model_state`); forwards run under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ._batches import as_logits, iter_batches
from ._items import call_model
from ._progress import ProgressBar

__all__ = ["MCPlan", "fast_mc_blocks", "mc_forward"]


@dataclass(frozen=True)
class MCPlan:
    """What one MC run does.

    Attributes:
        n_drop: stochastic passes per sample.
        batch_size: samples per forward.
        buffer_size: batches restart at multiples of it (DISTIL's stream buffer; see :mod:`._batches`).
        nclasses: expected width of the model's output.
        device: where inputs go.
        where: the public method running, for error messages.
    """

    n_drop: int
    batch_size: int
    buffer_size: int
    nclasses: int
    device: torch.device
    where: str


def mc_forward(model: nn.Module, inputs: torch.Tensor | Mapping[str, Any], rows: int, plan: MCPlan) -> torch.Tensor:
    """Runs the ``n_drop`` passes of one batch; returns its ``[n_drop, rows, C]`` logits (the model's dtype)."""
    with torch.no_grad():
        passes = [as_logits(call_model(model, inputs), rows, plan.nclasses, plan.where) for _ in range(plan.n_drop)]
    return torch.stack(passes)


def fast_mc_blocks(
    model: nn.Module, dataset: Dataset, plan: MCPlan, progress: ProgressBar
) -> Iterator[tuple[int, torch.Tensor]]:
    """Batch-major MC passes. Yields ``(offset, logits)``, one ``[n_drop, B, C]`` block per batch, in pool order."""
    for start, stop, _, inputs in iter_batches(dataset, plan.batch_size, plan.buffer_size, plan.device, plan.where):
        logits = mc_forward(model, inputs, stop - start, plan)
        progress.advance(stop - start)
        yield start, logits
