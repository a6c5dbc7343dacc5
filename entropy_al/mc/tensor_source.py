"""Tensor-backed datasets, fetched by slicing or gathering their tensors once per batch instead of item by item.

A tensor, a ``TensorDataset`` or a ``Subset`` of one (nested or not), as long as their ``__getitem__`` is not
overridden. The batch equals what ``default_collate`` makes of the items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = ["TensorSource", "tensor_source"]


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
