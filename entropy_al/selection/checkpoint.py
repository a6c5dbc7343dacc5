"""Resumable selection: the state of a streaming selection over a pool range, saved to a file and restored from it.

A streaming selection's whole state is its running top-k keys, the next pool offset and the broken-output summary
(first broken pool index, count): O(budget) to save. :class:`SelectionCheckpoint` keeps the state of the last
completed streaming step, writes it at most every ``every`` seconds (and whenever the selection raises, see
:meth:`SelectionCheckpoint.saved_on_failure`), restores it into a :class:`TopKCollector`, and removes the file
once the selection has returned.

The file: ``torch.save`` of a dict of plain values only (strings, ints, int64 tensors), read back with
``torch.load(weights_only=True)``, which refuses every other object: loading never runs pickled code.

- ``format``, ``version``: this format.
- ``fingerprint``: ``{name: str or int}``, what determines the selection (given by the caller: strategy, score,
  pool size, budget, …). A file whose fingerprint differs is refused with a ``ValueError`` naming what differs.
- ``seeds``: ``{name: int}``, the seeds the selection actually ran with (a seed drawn because none was given
  included), so that a resumed selection draws the same masks. A seed given now must equal the saved one.
- ``start``, ``stop``, ``next_offset``: the pool range and where the next step begins.
- ``keys``: the top-k's int64 keys (:mod:`entropy_al.keys`), descending; ``bad_rows``: int64 ``[first, count]``.

Saves are atomic: a temporary file in the same folder, then ``os.replace`` (the save of a failing selection is
also flushed to the disk). Nothing here knows about strategies.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from ..keys import decode_keys
from .bad_rows import BadRowTracker
from .collector import TopKCollector

__all__ = ["SelectionCheckpoint", "rank_checkpoint_path"]

_FORMAT = "entropy_al.selection_checkpoint"
_VERSION = 1


def rank_checkpoint_path(where: str, path: str, rank: int, world: int) -> str:
    """The file of rank ``rank`` of a selection across ``world`` ranks: ``path`` itself in one process, else
    ``path.rank<r>``. Refuses to start over when only the files of another world size exist."""
    mine = path if world == 1 else f"{path}.rank{rank}"
    other = f"{path}.rank0" if world == 1 else path
    if not os.path.exists(mine) and os.path.exists(other):
        saved, now = ("several ranks", "one process") if world == 1 else ("one process", f"{world} ranks")
        raise ValueError(
            f"{where}: args['checkpoint'] = {path!r}: {other} holds a checkpoint of a selection across {saved}, but "
            f"this one runs across {now}; resume it with the same world size, or delete the file to start over"
        )
    return mine


@dataclass(frozen=True)
class _State:
    """A completed streaming step: the pool samples ``start … next_offset − 1`` are in ``keys`` and ``bad_rows``."""

    next_offset: int
    keys: torch.Tensor
    tracker: BadRowTracker


class SelectionCheckpoint:
    """The checkpoint file of one streaming selection over the pool samples ``start … stop − 1``.

    Args:
        where: the public method, for messages.
        path: the file (its folder must exist).
        every: seconds between saves (``0``: after every completed step).
        fingerprint: what determines the selection, ``{name: str or int}``; compared with a saved file's.
        start, stop: the pool range this selection scores.
    """

    def __init__(
        self, where: str, path: str, every: float, fingerprint: Mapping[str, str | int], start: int, stop: int
    ):
        self.where = where
        self.path = path
        self.every = every
        self.fingerprint = dict(fingerprint)
        self.start, self.stop = start, stop
        #: The seeds saved with the state (set by the caller once known: loaded, given or drawn).
        self.seeds: dict[str, int] = {}
        self._loaded: dict | None = None
        self._last: _State | None = None  # the last completed step
        self._saved_offset: int | None = None  # the next offset of the state on disk
        self._saved_at = time.monotonic()

    def load(self, requested_seeds: Mapping[str, int | None]) -> dict[str, int]:
        """Reads the file if there is one; returns its seeds (``{}`` without a file).

        Raises:
            ValueError: the file is not a checkpoint (corrupt, truncated, another format), its fingerprint or
                range differs from this selection's, or a seed of ``requested_seeds`` (``None``: any) differs from
                the saved one. The file is left as it is.
        """
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ValueError(f"{self.where}: args['checkpoint'] = {self.path!r}: the folder {folder} does not exist")
        if not os.path.exists(self.path):
            return {}
        if os.path.isdir(self.path):
            raise ValueError(f"{self.where}: args['checkpoint'] = {self.path!r} is a folder, expected a file path")
        saved = _read(self.where, self.path)
        mine = {**self.fingerprint, "pool range": f"[{self.start}, {self.stop})"}
        theirs = {**saved["fingerprint"], "pool range": f"[{saved['start']}, {saved['stop']})"}
        differences = [
            f"{name}: saved {theirs.get(name, '(absent)')!r}, now {value!r}"
            for name, value in mine.items()
            if theirs.get(name) != value
        ]
        differences += [f"{name}: saved {value!r}, now absent" for name, value in theirs.items() if name not in mine]
        differences += [
            f"{name}: saved {saved['seeds'].get(name, '(none)')!r}, now {value!r}"
            for name, value in requested_seeds.items()
            if value is not None and saved["seeds"].get(name) != value
        ]
        if differences:
            raise ValueError(
                f"{self.where}: the checkpoint {self.path} (args['checkpoint']) was saved by a different selection; "
                f"{'; '.join(differences)}. Call select() with the settings it was saved with, or delete the file "
                "to start over"
            )
        self._loaded = saved
        self._saved_offset = saved["next_offset"]
        return dict(saved["seeds"])

    def resume(self, collector: TopKCollector, device: torch.device) -> int:
        """Restores the loaded state (if any) into ``collector``, its keys on ``device``; returns the pool offset
        the selection continues at (``start`` without a loaded state)."""
        if self._loaded is None:
            self._last = _State(self.start, torch.empty(0, dtype=torch.int64), BadRowTracker())
            return self.start
        keys = self._loaded["keys"].to(device)
        tracker = BadRowTracker.restored(self._loaded["bad_rows"].to(device))
        collector.restore(keys, tracker, self._loaded["next_offset"] - self.start)
        self._last = _State(self._loaded["next_offset"], keys, tracker)
        return self._last.next_offset

    def completed(self, next_offset: int, collector: TopKCollector) -> None:
        """Records a completed streaming step (the samples before ``next_offset`` are in ``collector``); saves it
        when ``every`` seconds have passed since the last save. Costs no device synchronization unless it saves."""
        keys, tracker = collector.snapshot()
        self._last = _State(next_offset, keys, tracker)
        if time.monotonic() - self._saved_at >= self.every:
            self._save(self._last)

    @contextlib.contextmanager
    def saved_on_failure(self) -> Iterator[None]:
        """Saves the last completed step when the body raises (any exception, ``KeyboardInterrupt`` included)
        and the file does not hold it yet. A failing save warns and never hides the body's exception."""
        try:
            yield
        except BaseException:
            last = self._last
            if last is not None and last.next_offset != self._saved_offset and last.next_offset > self.start:
                try:
                    self._save(last, durable=True)
                except Exception as exc:
                    warnings.warn(
                        f"{self.where}: could not save the checkpoint {self.path}: {type(exc).__name__}: {exc}",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            raise

    def remove(self) -> None:
        """Deletes the file (after a successful selection)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    def _save(self, state: _State, durable: bool = False) -> None:
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "fingerprint": self.fingerprint,
            "seeds": dict(self.seeds),
            "start": self.start,
            "stop": self.stop,
            "next_offset": state.next_offset,
            "keys": state.keys.to("cpu", copy=True),
            "bad_rows": state.tracker.summary(torch.device("cpu")),
        }
        _write_atomically(self.path, payload, durable)
        self._saved_offset = state.next_offset
        self._saved_at = time.monotonic()


def _write_atomically(path: str, payload: dict, durable: bool) -> None:
    """``torch.save`` to a temporary file in ``path``'s folder, then renamed over ``path``: a process that dies at
    any point leaves the old file or the new one. ``durable`` also flushes the file to the disk first (``fsync``,
    milliseconds on a busy disk), so that it survives a crash of the machine: done for the save of a failing
    selection; the periodic saves skip it, to cost well under a millisecond per step."""
    folder, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _read(where: str, path: str) -> dict:
    """The checked contents of a checkpoint file; a ``ValueError`` naming ``path`` for anything else."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{where}: the checkpoint {path} (args['checkpoint']) cannot be read: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'corrupt or truncated'}. Delete it to start over"
        ) from exc
    problem = _problem(saved)
    if problem is not None:
        raise ValueError(
            f"{where}: the checkpoint {path} (args['checkpoint']) is not a selection checkpoint of this version of "
            f"entropy_al ({problem}). Delete it to start over"
        )
    return saved


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(saved: object) -> str | None:
    """What is wrong with a loaded checkpoint, or ``None``."""
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
        return "not written by SelectionCheckpoint"
    if saved.get("version") != _VERSION:
        return f"format version {saved.get('version')!r}, expected {_VERSION}"
    fingerprint, seeds = saved.get("fingerprint"), saved.get("seeds")
    if not isinstance(fingerprint, dict) or not all(
        isinstance(name, str) and (isinstance(value, str) or _is_int(value)) for name, value in fingerprint.items()
    ):
        return "bad fingerprint"
    if not isinstance(seeds, dict) or not all(isinstance(n, str) and _is_int(v) for n, v in seeds.items()):
        return "bad seeds"
    start, stop, offset = saved.get("start"), saved.get("stop"), saved.get("next_offset")
    if not (_is_int(start) and _is_int(stop) and _is_int(offset) and 0 <= start <= offset <= stop):
        return "bad pool range"
    keys, bad_rows = saved.get("keys"), saved.get("bad_rows")
    if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64 or keys.dim() != 1:
        return "bad top-k keys"
    if not isinstance(bad_rows, torch.Tensor) or bad_rows.dtype != torch.int64 or bad_rows.shape != (2,):
        return "bad broken-output summary"
    indices = decode_keys(keys)[1]
    if keys.numel() > offset - start or bool(((indices < start) | (indices >= offset)).any()):
        return "top-k keys outside the pool range done"
    if keys.numel() > 1 and bool((keys[1:] >= keys[:-1]).any()):
        return "top-k keys not in descending order"
    return None
