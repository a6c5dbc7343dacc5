"""Detection of broken model output (NaN, ``+inf``, or a row of only ``-inf``) and the NaN policy.

The first affected pool index and the count stay on the device, so that tracking costs no host
synchronization; the caller reads them once, together with the selection.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["BadRowTracker", "apply_nan_policy"]

_NONE = torch.iinfo(torch.int64).max


class BadRowTracker:
    """Tracks which pool samples got logits with no probability distribution (or NaN scores)."""

    def __init__(self) -> None:
        self._first: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    def update_logits(self, logits: torch.Tensor, offset: int | torch.Tensor) -> None:
        """Checks a ``[K, B, C]`` logit block of pool samples ``offset … offset + B − 1`` (or of the pool indices
        ``offset``, an int64 ``[B]`` tensor)."""
        # A row's max is NaN if it holds a NaN, +inf if it holds +inf, -inf if it is all -inf: one cheap reduction.
        bad = ~torch.isfinite(logits.amax(dim=2)).all(dim=0)
        self._update(bad, offset)

    def update_scores(self, scores: torch.Tensor, offset: int) -> None:
        """Checks a ``[B]`` block of user scores: NaN is the only value that cannot be ranked."""
        self._update(torch.isnan(scores), offset)

    def _update(self, bad: torch.Tensor, offset: int | torch.Tensor) -> None:
        if bad.numel() == 0:
            return
        if isinstance(offset, torch.Tensor):  # the block's pool indices, in any order
            first = torch.where(bad, offset.to(bad.device), _NONE).min()
        else:
            # argmax returns the first maximum: the lowest bad position of the block.
            first = torch.where(bad.any(), bad.to(torch.uint8).argmax() + offset, _NONE)
        count = bad.sum()
        if self._first is None or self._count is None:
            self._first, self._count = first, count
        else:
            self._first = torch.minimum(self._first, first)
            self._count = self._count + count

    def summary(self, device: torch.device) -> torch.Tensor:
        """int64 ``[first pool index (-1 if none), count]`` on ``device``, without synchronizing."""
        if self._first is None or self._count is None:
            return torch.tensor([-1, 0], dtype=torch.int64, device=device)
        first = torch.where(self._first == _NONE, -1, self._first)
        return torch.stack([first, self._count.to(torch.int64)]).to(device)


def apply_nan_policy(where: str, policy: str, first: int, count: int, consequence: str) -> None:
    """Raises (``"raise"``) or warns once (``"omit"``) when ``count`` pool samples had broken output.

    Args:
        where: the public method, for the message.
        policy: ``args['nan_policy']``.
        first: lowest affected pool index.
        count: number of affected pool samples (nothing happens when 0).
        consequence: what ``"omit"`` did with them, e.g. ``"they are ranked last"``.
    """
    if count == 0:
        return
    what = f"{count} pool sample{'s' if count > 1 else ''}"
    if policy == "raise":
        raise ValueError(
            f"{where}: the model's logits are NaN, +inf or all -inf for {what}, the first at pool index {first}; "
            "fix the model, or set args['nan_policy'] = 'omit' to rank such samples last"
        )
    warnings.warn(
        f"{where}: the model's logits are NaN, +inf or all -inf for {what} (the first at pool index {first}); "
        f"{consequence} (args['nan_policy'] = 'omit')",
        RuntimeWarning,
        stacklevel=3,
    )
