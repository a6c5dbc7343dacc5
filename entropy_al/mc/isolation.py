"""Keeps the MC passes of a batch from leaking into each other through the model's input or output tensors.

Two model quirks would otherwise make one pass see another's work, silently changing the selection:

- **The model writes into its input** (``nn.Dropout(inplace=True)`` first, ``x.sub_(mean)``): the next pass would
  see a batch already zeroed or shifted, and a tensor-backed pool (whose batches are views of it) would be
  modified. The first forward of a run gets a copy of its input; the copy's version counter (``_version``, bumped
  by every in-place write) tells whether the model writes. If it does, every later forward gets a fresh copy; if
  not, the batch itself, at no cost beyond reading the counters.
- **The model returns the same output tensor every call** (a preallocated buffer, a captured graph): keeping
  the passes by reference would collapse them into the last one. The outputs of the first two forwards of a run
  are compared by storage; when they share one, every later output is copied before the next forward.

One :class:`PassIsolation` lives for one MC run, like :class:`.stacking.PassGrouping`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["InputGuard", "PassIsolation"]


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for item in value.values() for t in _tensors(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _versions(value: Any) -> list[int]:
    return [tensor._version for tensor in _tensors(value)]


def _copy(value: Any) -> Any:
    """A copy of a batch whose tensors share nothing with the original (other values as they are)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_copy(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # a namedtuple takes fields
    return value


class InputGuard:
    """Calls a model on a batch so that the batch is the same after the call as before.

    Args:
        where: the caller, for the error message.
    """

    def __init__(self, where: str):
        self.where = where
        self.writes: bool | None = None  # unknown until the first call

    def __call__(self, call: Callable[[Any], Any], batch: Any) -> Any:
        """``call(batch)``, or ``call`` on a copy of ``batch`` when the model writes into its input."""
        if self.writes is None:
            copy = _copy(batch)
            before = _versions(copy)
            output = call(copy)
            self.writes = _versions(copy) != before
            return output
        if self.writes:
            return call(_copy(batch))
        before = _versions(batch)
        output = call(batch)
        if _versions(batch) != before:
            raise RuntimeError(
                f"{self.where}: the model wrote into its input tensor in a later forward but not in the first one, "
                "so the other MC passes would see the modified batch; make the in-place operation (e.g. "
                "nn.Dropout(inplace=True), x.sub_(...)) out-of-place, or make it happen on every call"
            )
        return output


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class PassIsolation:
    """The input guards (whole model or trunk, and head) and the output-aliasing check of one MC run."""

    def __init__(self, where: str):
        self.model = InputGuard(where)
        self.head = InputGuard(where)
        self.outputs_alias: bool | None = None  # unknown until two forwards were compared
        self._last: torch.Tensor | None = None  # kept alive so that no fresh output can reuse its storage

    def own(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` of a forward, copied when the model reuses one output buffer for every call."""
        if self.outputs_alias is None:
            if self._last is None:
                self._last = logits
                # The first output may be the buffer itself: copy it, the second forward would overwrite it.
                return logits.clone()
            self.outputs_alias = _storage(logits) == _storage(self._last)
            self._last = None
        return logits.clone() if self.outputs_alias else logits
