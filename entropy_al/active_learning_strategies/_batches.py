"""Batches of a map-style dataset, with their pool positions, and the check of what the model returns.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from ._items import model_input, to_device

__all__ = ["as_logits", "batch_ranges", "iter_batches", "iter_sampled_batches", "tensor_source"]


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
    for (start, stop), batch, inputs in _moved(fetched, device, where):
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
    yield from _moved(fetched, device, where)
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


# ------------------------------------------------------------------------------------------------------------------
# Tensor-backed datasets


def _is_plain(dataset: Dataset, cls: type) -> bool:
    """Whether ``dataset`` fetches items as ``cls`` does (a subclass may override how; then it is not sliced)."""
    kind = type(dataset)
    return (
        isinstance(dataset, cls)
        and kind.__getitem__ is cls.__getitem__
        and getattr(kind, "__getitems__", None) is getattr(cls, "__getitems__", None)
    )


def _index_tensor(indices: Any) -> torch.Tensor:
    """A ``Subset``'s indices (a list, range, tensor or numpy array) as an int64 CPU tensor."""
    if isinstance(indices, torch.Tensor):
        return indices.to(device="cpu", dtype=torch.int64)
    if isinstance(indices, range):
        return torch.arange(indices.start, indices.stop, indices.step, dtype=torch.int64)
    if hasattr(indices, "__array__"):  # numpy: one conversion, not one Python int per index
        return torch.from_numpy(indices.__array__()).to(torch.int64)
    return torch.tensor(list(indices), dtype=torch.int64)


class TensorSource:
    """Batches of a tensor-backed dataset, sliced or gathered from its tensors.

    Args:
        tensors: the tensors whose rows are the items (one for a tensor dataset, ``TensorDataset.tensors``).
        as_tensor: the items are rows of one tensor (batches are tensors), not tuples (batches are lists).
        subsets: the index lists of the ``Subset`` wrappers, outermost first.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], as_tensor: bool, subsets: Sequence[Any] = ()):
        self.tensors = list(tensors)
        self.as_tensor = as_tensor
        self.subsets = list(subsets)
        self._subset_tensors: dict[int, torch.Tensor] = {}

    def _inner(self, level: int, positions: range | torch.Tensor) -> range | torch.Tensor:
        """Maps positions in the dataset at ``level`` (0: outermost) to positions in its parent dataset."""
        indices = self.subsets[level]
        if isinstance(positions, range):
            picked = indices[positions.start : positions.stop]
            if isinstance(picked, range) and picked.step == 1:
                return picked
            return _index_tensor(picked)
        if level not in self._subset_tensors:  # a gather through a gather: index the subset's indices as a tensor
            self._subset_tensors[level] = _index_tensor(indices)
        return self._subset_tensors[level][positions]

    def fetch(self, positions: range | torch.Tensor) -> tuple[Any, bool]:
        """The collated batch of the samples at ``positions`` (a contiguous range or int64 indices).

        Returns:
            ``(batch, fresh)``: a tensor (or a list of one tensor per ``TensorDataset`` tensor), and whether the
            tensors are new (a gather) rather than views of the dataset (a slice).
        """
        for level in range(len(self.subsets)):
            positions = self._inner(level, positions)
        if isinstance(positions, range):
            parts = [tensor[positions.start : positions.stop] for tensor in self.tensors]
            fresh = False
        else:
            parts = [tensor[positions.to(tensor.device)] for tensor in self.tensors]
            fresh = True
        return (parts[0] if self.as_tensor else parts), fresh


def tensor_source(dataset: Any) -> TensorSource | None:
    """A :class:`TensorSource` when ``dataset`` is a tensor, a ``TensorDataset`` or a ``Subset`` of one; else ``None``.

    Subclasses that override ``__getitem__`` or ``__getitems__`` are fetched by a ``DataLoader`` like any dataset.
    """
    subsets = []
    while _is_plain(dataset, Subset):
        subsets.append(dataset.indices)
        dataset = dataset.dataset
    if isinstance(dataset, torch.Tensor) and dataset.dim() >= 1:
        return TensorSource([dataset], True, subsets)
    if _is_plain(dataset, TensorDataset) and len(dataset.tensors) > 0:
        return TensorSource(dataset.tensors, False, subsets)
    return None


# ------------------------------------------------------------------------------------------------------------------
# To the device


def _owned(value: Any, device: torch.device, fresh: bool) -> Any:
    """``value`` on ``device``, copied if it would otherwise still be a view of the dataset."""
    if isinstance(value, torch.Tensor):
        moved = value.to(device)
        if not fresh and moved.data_ptr() == value.data_ptr() and value.numel() > 0:
            moved = moved.clone()
        return moved
    return to_device(value, device)


def _tensors_of(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors_of(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_of(item)


class _AsyncCopier:
    """Host-to-CUDA copies on a side stream: pinned source, ``non_blocking``, then the compute stream waits."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)
        # Once: whatever the caller queued before (e.g. writing a GPU pool) is done before the first copy reads it.
        self.stream.wait_stream(torch.cuda.current_stream(device))

    def _copy(self, value: Any, fresh: bool) -> Any:
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":  # already on a GPU: at most a device copy (or a clone of a pool view)
                return _owned(value, self.device, fresh)
            host = value if value.is_pinned() else value.pin_memory()
            return host.to(self.device, non_blocking=True)
        if isinstance(value, Mapping):
            return {key: self._copy(item, fresh) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._copy(item, fresh) for item in value]
        return to_device(value, self.device)

    def start(self, value: Any, fresh: bool) -> tuple[Any, torch.cuda.Event]:
        """Issues the copy of ``value`` (returns at once); the result may be used after :meth:`finish`.

        The side stream does not wait for the compute stream, so the copy overlaps the forwards already queued;
        its destination memory is safe to reuse because every batch is ``record_stream``-ed on the compute stream.
        """
        with torch.cuda.stream(self.stream):
            moved = self._copy(value, fresh)
            done = torch.cuda.Event()
            done.record(self.stream)
        return moved, done

    def finish(self, moved: Any, done: torch.cuda.Event) -> Any:
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(done)
        for tensor in _tensors_of(moved):
            tensor.record_stream(compute)  # allocated on the side stream, used (and freed) on the compute stream
        return moved


def _moved(
    fetched: Iterable[tuple[Any, Any, bool]], device: torch.device, where: str
) -> Iterator[tuple[Any, Any, Any]]:
    """``(positions, batch, inputs on device)`` for each fetched ``(positions, batch, fresh)``.

    To a CUDA device, one batch ahead on a side stream (see :class:`_AsyncCopier`); otherwise synchronously.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        for positions, batch, fresh in fetched:
            yield positions, batch, _owned(model_input(batch, where), device, fresh)
        return
    device = torch.device("cuda", torch.cuda.current_device()) if device.index is None else device
    copier = _AsyncCopier(device)
    pending = None
    for positions, batch, fresh in fetched:
        staged = (positions, batch, *copier.start(model_input(batch, where), fresh))
        if pending is not None:
            yield pending[0], pending[1], copier.finish(pending[2], pending[3])
        pending = staged
    if pending is not None:
        yield pending[0], pending[1], copier.finish(pending[2], pending[3])


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
