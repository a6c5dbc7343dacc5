"""Batches of a map-style dataset, with their pool positions, and the check of what the model returns.

Batches never straddle a stream-buffer boundary, so that a model whose output depends on batch composition
(BatchNorm in train mode) sees the same batches as under DISTIL, which builds one DataLoader per buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ._items import model_input, to_device

__all__ = ["as_logits", "batch_ranges", "iter_batches"]


def batch_ranges(num_samples: int, batch_size: int, buffer_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each batch, in order: ``batch_size`` samples, restarting at every buffer boundary."""
    for buffer_start in range(0, num_samples, buffer_size):
        buffer_stop = min(num_samples, buffer_start + buffer_size)
        for start in range(buffer_start, buffer_stop, batch_size):
            yield start, min(buffer_stop, start + batch_size)


class _RangeBatchSampler(Sampler[list[int]]):
    """Yields the index list of each of :func:`batch_ranges`' batches (a DataLoader ``batch_sampler``)."""

    def __init__(self, num_samples: int, batch_size: int, buffer_size: int):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.buffer_size = buffer_size

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in batch_ranges(self.num_samples, self.batch_size, self.buffer_size):
            yield list(range(start, stop))

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.buffer_size)
        per_buffer = -(-self.buffer_size // self.batch_size)
        return full * per_buffer + -(-rest // self.batch_size)


def iter_batches(
    dataset: Dataset, batch_size: int, buffer_size: int, device: torch.device, where: str
) -> Iterator[tuple[int, int, Any, Any]]:
    """Iterates over ``dataset`` in order, fetching and collating each batch once.

    The DataLoader fetches a batch with the dataset's ``__getitems__`` when it has one (one call per batch),
    else item by item, and collates with ``default_collate``, like DISTIL's.

    Yields:
        ``(start, stop, batch, inputs)``: the pool positions ``start … stop − 1``, the collated batch as the
        DataLoader returned it (on the CPU, labels included) and the model's input on ``device``.
    """
    num_samples = len(dataset)
    sampler = _RangeBatchSampler(num_samples, batch_size, buffer_size)
    loader = DataLoader(dataset, batch_sampler=sampler)
    for (start, stop), batch in zip(batch_ranges(num_samples, batch_size, buffer_size), loader, strict=True):
        yield start, stop, batch, to_device(model_input(batch, where), device)


def as_logits(output: Any, rows: int, nclasses: int, where: str) -> torch.Tensor:
    """Checks that a model output is a ``[rows, nclasses]`` floating tensor and returns it.

    Raises:
        TypeError: the output is not a floating tensor.
        ValueError: its shape is not ``[rows, nclasses]``; the message names both class counts.
    """
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        got = f"a {output.dtype} tensor" if isinstance(output, torch.Tensor) else type(output).__name__
        raise TypeError(f"{where}: expected the model to return a floating tensor of logits, got {got}")
    if output.dim() != 2:
        raise ValueError(
            f"{where}: expected the model to return logits of shape [batch, nclasses] = [{rows}, {nclasses}], "
            f"got shape {tuple(output.shape)}"
        )
    if output.shape[1] != nclasses:
        raise ValueError(
            f"{where}: the model outputs {output.shape[1]} classes (logits of shape {tuple(output.shape)}) but "
            f"nclasses = {nclasses}; pass nclasses={output.shape[1]} or fix the model's last layer"
        )
    if output.shape[0] != rows:
        raise ValueError(f"{where}: the model returned {output.shape[0]} rows of logits for a batch of {rows} samples")
    return output
