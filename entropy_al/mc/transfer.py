"""Batches to the model's device: copies that own their memory, and host-to-CUDA copies one batch ahead.

To a CUDA device, CPU batches are pinned and copied with ``non_blocking`` on a side stream one batch ahead, so that
fetching and copying batch ``i + 1`` overlap the forwards of batch ``i``; otherwise the copy is synchronous.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from .items import model_input, to_device

__all__ = ["moved"]


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


def moved(fetched: Iterable[tuple[Any, Any, bool]], device: torch.device, where: str) -> Iterator[tuple[Any, Any, Any]]:
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
