"""DISTIL's MC loop, reproduced so that a migrating user can check that both select the same samples.

DISTIL (decile-team/distil, main) scores a pool buffer by buffer (``Subset`` of ``stream_buffer_size`` samples);
for each buffer it builds a ``DataLoader(batch_size, shuffle=False)`` and iterates it ``n_drop`` times, the
whole model in train mode. Each ``iter(DataLoader)`` draws one int64 from the global CPU generator (the loader's
base seed, drawn even with ``num_workers=0``), so the dropout masks of pass ``k`` depend on the loop order. This
module follows that order and those draws exactly; with the same seed on CPU the logits are bit-identical to
DISTIL's. It keeps one buffer's ``[n_drop, buffer, C]`` logits (DISTIL keeps ``[buffer, C]`` probabilities).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .isolation import PassIsolation
from .items import as_logits, call_model, model_input, to_device
from .plan import MCPlan
from .progress import ProgressBar

__all__ = ["distil_mc_blocks"]


def distil_mc_blocks(
    model: nn.Module,
    dataset: Dataset,
    plan: MCPlan,
    progress: ProgressBar,
    start_pass: Callable[[], None] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Pass-major MC passes. Yields ``(offset, logits)``, one ``[n_drop, buffer, C]`` block per stream buffer.
    ``start_pass`` is called before each pass (DISTIL's BatchBALD resets its injected dropout's mask there)."""
    num_samples = len(dataset)
    isolation = PassIsolation(plan.where)  # the pool is never written, and each pass's logits are copied at once
    for buffer_start in range(0, num_samples, plan.buffer_size):
        buffer_stop = min(num_samples, buffer_start + plan.buffer_size)
        loader = DataLoader(Subset(dataset, range(buffer_start, buffer_stop)), batch_size=plan.batch_size)
        block: torch.Tensor | None = None
        for k in range(plan.n_drop):
            if start_pass is not None:
                start_pass()
            position = 0
            for batch in loader:  # iter(loader) draws DISTIL's int64 here, once per pass
                rows = min(plan.batch_size, buffer_stop - buffer_start - position)
                inputs = to_device(model_input(batch, plan.where), plan.device)
                with torch.no_grad():
                    output = isolation.model(lambda batch: call_model(model, batch), inputs)
                    logits = as_logits(output, rows, plan.nclasses, plan.where)
                if block is None:
                    block = logits.new_empty((plan.n_drop, buffer_stop - buffer_start, plan.nclasses))
                block[k, position : position + rows] = logits
                position += rows
                progress.advance(rows / plan.n_drop)
        assert block is not None  # the buffer is non-empty and n_drop >= 1
        yield buffer_start, block
