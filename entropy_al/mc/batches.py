"""Batches of a map-style dataset, with their pool positions, fetched once and moved to the model's device.

Batches never straddle a stream-buffer boundary, so that a model whose output depends on batch composition
(BatchNorm in train mode) sees the same batches as under DISTIL, which builds one DataLoader per buffer.

Fetching costs nothing per item where the dataset allows it:

- tensor-backed datasets (a tensor, a ``TensorDataset``, or a ``Subset`` of one, nested or not, as long as their
  ``__getitem__`` is not overridden) are sliced (contiguous positions) or gathered (a ``Subset``'s indices) once
  per batch; the batch equals what ``default_collate`` makes of the items, and is a copy, never a view of the
  pool (a model that writes its input in place cannot change the dataset);
- other datasets go through a ``DataLoader`` with a batch sampler, which fetches a batch with the dataset's
  ``__getitems__`` when it has one (one call per batch), else item by item, with ``args['num_workers']`` workers;
- a user batch sampler (``args['batch_sampler']``) decides the batches' composition and order instead
  (:func:`iter_sampled_batches`).

When the model runs on CUDA and the batches come from the CPU, they are pinned and copied with ``non_blocking`` on a
side stream one batch ahead, so that fetching and copying batch ``i + 1`` overlap the forwards of batch ``i``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .tensor_source import tensor_source
from .transfer import moved

__all__ = ["batch_ranges", "iter_batches", "iter_sampled_batches"]


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
    dataset: Dataset, batch_size: int, buffer_size: int, device: torch.device, where: str, num_workers: int = 0
) -> Iterator[tuple[int, int, Any, Any]]:
    """Iterates over ``dataset`` in order, fetching and collating each batch once.

    Tensor-backed datasets are sliced or gathered per batch (:func:`tensor_source`); others go through a
    ``DataLoader`` (``__getitems__`` when the dataset has one, else item by item, then ``default_collate``, as
    DISTIL's) with ``num_workers`` workers.

    Yields:
        ``(start, stop, batch, inputs)``: the pool positions ``start … stop − 1``, the collated batch (labels
        included; on the dataset's device) and the model's input on ``device``.
    """
    num_samples = len(dataset)
    ranges = batch_ranges(num_samples, batch_size, buffer_size)
    source = tensor_source(dataset)
    fetched: Iterable[tuple[tuple[int, int], Any, bool]]
    if source is not None:
        fetched = (((start, stop), *source.fetch(range(start, stop))) for start, stop in ranges)
    else:
        sampler = _RangeBatchSampler(num_samples, batch_size, buffer_size)
        loader = _loader(dataset, sampler, num_workers)
        fetched = ((bounds, batch, True) for bounds, batch in zip(ranges, loader, strict=True))
    for (start, stop), batch, inputs in moved(fetched, device, where):
        yield start, stop, batch, inputs


def iter_sampled_batches(
    dataset: Dataset, batch_sampler: Iterable[Sequence[int]], device: torch.device, where: str, num_workers: int = 0
) -> Iterator[tuple[torch.Tensor, Any, Any]]:
    """Iterates over ``dataset`` in the batches of a user batch sampler (any composition, any order).

    Args:
        batch_sampler: yields lists of indices into ``dataset``; together they must cover every index exactly
            once (checked: every index in range, and as many indices as samples).

    Yields:
        ``(indices, batch, inputs)``: the batch's pool indices (int64, CPU), the collated batch and the model's
        input on ``device``.

    Raises:
        ValueError: an index out of range, an empty batch, or not as many indices as samples in the end.
    """
    num_samples = len(dataset)
    source = tensor_source(dataset)
    recorder = _RecordingBatchSampler(batch_sampler, num_samples, where, as_lists=source is None)
    fetched: Iterable[tuple[torch.Tensor, Any, bool]]
    if source is not None:
        fetched = ((indices, *source.fetch(indices)) for indices in recorder)
    else:
        # The DataLoader runs ahead of us (workers, prefetch): the recorder keeps the batches it handed out.
        loader = _loader(dataset, recorder, num_workers)
        fetched = ((recorder.taken.popleft(), batch, True) for batch in loader)
    yield from moved(fetched, device, where)
    if recorder.count != num_samples:
        raise ValueError(
            f"{where}: args['batch_sampler'] yielded {recorder.count} indices for a dataset of {num_samples} "
            "samples; it must yield every index exactly once"
        )


class _RecordingBatchSampler:
    """Passes a user batch sampler's batches on, checked, as int64 tensors or (``as_lists``, for a DataLoader) as
    lists of ints, which it then also keeps in :attr:`taken` until the caller pops them."""

    def __init__(self, batch_sampler: Iterable[Sequence[int]], num_samples: int, where: str, as_lists: bool):
        self.batch_sampler = batch_sampler
        self.num_samples = num_samples
        self.where = where
        self.as_lists = as_lists
        self.taken: deque[torch.Tensor] = deque()
        self.count = 0
        self.seen: torch.Tensor | None = None  # bool [num_samples]: the indices yielded so far

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batch_sampler:
            indices = torch.as_tensor(batch, dtype=torch.int64).reshape(-1)
            if indices.numel() == 0:
                raise ValueError(f"{self.where}: args['batch_sampler'] yielded an empty batch")
            low, high = indices.aminmax()
            if low < 0 or high >= self.num_samples:
                raise ValueError(
                    f"{self.where}: args['batch_sampler'] yielded index {int(low if low < 0 else high)} for a "
                    f"dataset of {self.num_samples} samples"
                )
            # A repeated index would be scored twice (and could be selected twice) while another is never scored.
            if self.seen is None:
                self.seen = torch.zeros(self.num_samples, dtype=torch.bool)
            repeated = self.seen[indices].any() or indices.unique().numel() != indices.numel()
            if repeated:
                twice = next(i for i in indices.tolist() if self.seen[i] or (indices == i).sum() > 1)
                raise ValueError(
                    f"{self.where}: args['batch_sampler'] yielded index {twice} twice; it must yield every index "
                    "exactly once"
                )
            self.seen[indices] = True
            self.count += indices.numel()
            if self.as_lists:
                self.taken.append(indices)
                yield indices.tolist()
            else:
                yield indices


def _loader(dataset: Dataset, batch_sampler: Iterable[Any], num_workers: int) -> DataLoader:
    # No pin_memory here: items already on a GPU would make the DataLoader's pinning fail, and _AsyncCopier pins
    # CPU batches itself before its non_blocking copies.
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers)
