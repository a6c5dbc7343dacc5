"""Deterministic forwards over a dataset (the prediction and embedding helpers), fetched like the MC passes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .batches import iter_batches
from .items import call_model, without_labels

__all__ = ["eval_forwards"]


def eval_forwards(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    where: str,
    num_workers: int = 0,
    drop_labels: bool = False,
    **model_kwargs: Any,
) -> Iterator[tuple[int, int, Any, Any]]:
    """``(start, stop, batch, output)`` of one ``model(inputs, **model_kwargs)`` per batch, under ``torch.no_grad``;
    the caller holds :func:`.model_state.eval_mode`. ``drop_labels``: a mapping batch is passed without its
    ``"labels"`` key (``batch`` keeps it)."""
    batches = iter_batches(dataset, batch_size, max(1, len(dataset)), device, where, num_workers)
    # Closed on any exit: a traceback that keeps this frame alive must not keep DataLoader workers running.
    with contextlib.closing(batches):
        for start, stop, batch, inputs in batches:
            if drop_labels:
                inputs = without_labels(inputs)
            with torch.no_grad():
                output = call_model(model, inputs, **model_kwargs)
            yield start, stop, batch, output
