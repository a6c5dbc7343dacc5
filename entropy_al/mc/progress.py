"""An optional tqdm progress bar over pool samples (samples/s and ETA), and a no-op stand-in."""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """Counts processed pool samples, possibly in fractions (a pass-major loop sees each sample ``n_drop`` times).

    Args:
        total: number of pool samples.
        enabled: show a tqdm bar; when false every method is a no-op and tqdm is not imported.
        desc: the bar's label.
    """

    def __init__(self, total: int, enabled: bool, desc: str):
        self._bar: Any = None
        self._done = 0.0
        self._shown = 0
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True)

    def advance(self, amount: float) -> None:
        """Adds ``amount`` samples; the bar moves by whole samples so that its count and rate stay integral."""
        if self._bar is None:
            return
        self._done += amount
        # round() absorbs the float error of n_drop fractions summing to one sample.
        step = int(round(self._done, 6)) - self._shown
        if step > 0:
            self._bar.update(step)
            self._shown += step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
