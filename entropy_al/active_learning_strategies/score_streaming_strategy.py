"""``ScoreStreamingStrategy``: select the ``budget`` highest-scoring pool samples, streaming over the pool.

DISTIL scores one ``stream_buffer_size`` buffer at a time and merges 0-d score tensors into an AVL tree in Python.
Here the MC strategies never materialize scores: each ``[n_drop, B, C]`` logit block goes to the fused score +
streaming top-k op, the running top-k stays on the device, and the host synchronizes once, at the end. Memory is
O(budget + stream buffer), never O(pool). A DISTIL-style subclass that only overrides :meth:`acquire_scores`
still works: its buffer scores are merged by the same streaming top-k.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..ops import mc_scores
from ._args import DEFAULT_STREAM_BUFFER_SIZE, RunSettings, check_budget, check_int
from ._bad_rows import BadRowTracker, apply_nan_policy
from ._collector import TopKCollector
from ._model_state import mc_mode
from ._progress import ProgressBar
from .strategy import Strategy

__all__ = ["ScoreStreamingStrategy"]


class ScoreStreamingStrategy(Strategy):
    """Base class of strategies that rank pool samples by a per-sample score.

    Subclasses either set :attr:`mc_score` (the MC-dropout strategies: the fused path) or override
    :meth:`acquire_scores` (DISTIL's extension point). Selection order: score descending, ties to the lower
    pool index; a sample with a NaN score never ranks ahead of a number.

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`Strategy`.
        args: see :class:`Strategy`; this class also reads ``stream_buffer_size`` (int, default 10000): pool
            samples scored per streaming step (bounds memory; never changes the selection).
    """

    #: Score of the MC-dropout strategies ("entropy", "bald", "margin" or "least_confidence"); ``None`` here.
    mc_score: ClassVar[str | None] = None

    def __init__(
        self,
        labeled_dataset: Dataset,
        unlabeled_dataset: Dataset,
        net: nn.Module,
        nclasses: int,
        args: Mapping[str, Any] | None = None,
    ):
        super().__init__(labeled_dataset, unlabeled_dataset, net, nclasses, args)
        self.stream_buffer_size: int = self.args.get("stream_buffer_size", DEFAULT_STREAM_BUFFER_SIZE)

    def acquire_scores(self, unlabeled_buffer: Dataset) -> torch.Tensor:
        """Score of every sample of ``unlabeled_buffer`` (higher = selected first): float32 ``[len]`` on the device.

        For the MC strategies: ``n_drop`` stochastic passes, then :func:`entropy_al.mc_scores`. Samples whose
        logits are NaN, ``+inf`` or all ``-inf`` raise a ``ValueError`` (or, with ``args['nan_policy'] =
        'omit'``, get a NaN score and one warning).
        """
        if self.mc_score is None:
            raise NotImplementedError(
                f"{type(self).__name__} must override acquire_scores(unlabeled_buffer) or set mc_score"
            )
        where, settings = self._settings("acquire_scores")
        num_samples = len(unlabeled_buffer)
        # One DataLoader over the whole dataset, as DISTIL's acquire_scores.
        plan = self._mc_plan(where, settings, getattr(self, "n_drop", None), num_samples)
        scores = torch.empty(num_samples, dtype=torch.float32, device=settings.device)
        if num_samples == 0:
            return scores
        tracker = BadRowTracker()
        with ProgressBar(num_samples, settings.progress, where) as bar, mc_mode(self.model, settings.mc_mode):
            for offset, logits in self._mc_blocks(unlabeled_buffer, plan, settings, bar):
                tracker.update_logits(logits, offset)
                scores[offset : offset + logits.shape[1]] = mc_scores(logits, self.mc_score)
        first, count = tracker.summary(scores.device).tolist()
        apply_nan_policy(where, settings.nan_policy, first, count, "their scores are NaN")
        return scores

    def select(self, budget: int) -> list[int]:
        """The ``budget`` highest-scoring pool samples.

        Args:
            budget: how many samples to select: a non-negative int (numpy integers accepted). ``0`` or an empty
                pool give ``[]`` without running the model; more than the pool gives every index.

        Returns:
            Indices into ``unlabeled_dataset``, score descending, ties to the lower index: exactly
            ``torch.sort(scores, descending=True, stable=True).indices[:budget]`` (NaN scores last), whatever
            ``stream_buffer_size`` and ``batch_size``.

        Raises:
            TypeError, ValueError: a bad ``budget`` or ``args`` value (the message names it).
            ValueError: the model's output width is not ``nclasses``, or (``nan_policy`` ``'raise'``) some
                logits are NaN, ``+inf`` or all ``-inf``. That check is read once, with the selection, after the
                whole pool has run: the loop never waits on the device.
        """
        where = f"{type(self).__name__}.select"
        k = check_budget(where, budget)
        num_samples = len(self.unlabeled_dataset)
        if k == 0 or num_samples == 0:
            return []
        k = min(k, num_samples)
        buffer_size = check_int(where, "`stream_buffer_size`", self.stream_buffer_size, 1)
        where, settings = self._settings("select")
        collector = TopKCollector(k, self.mc_score, buffer_size)
        with ProgressBar(num_samples, settings.progress, where) as bar:
            if self._scores_are_fused():
                self._stream_mc_logits(where, settings, buffer_size, collector, bar)
            else:
                self._stream_acquired_scores(where, buffer_size, collector, bar)
        indices, first, count = collector.result()
        apply_nan_policy(where, settings.nan_policy, first, count, "they are ranked last")
        return indices

    def _scores_are_fused(self) -> bool:
        # A subclass that overrides acquire_scores (DISTIL's extension point) must have it called.
        return self.mc_score is not None and type(self).acquire_scores is ScoreStreamingStrategy.acquire_scores

    def _stream_mc_logits(
        self, where: str, settings: RunSettings, buffer_size: int, collector: TopKCollector, bar: ProgressBar
    ) -> None:
        plan = self._mc_plan(where, settings, getattr(self, "n_drop", None), buffer_size)
        with mc_mode(self.model, settings.mc_mode):
            for offset, logits in self._mc_blocks(self.unlabeled_dataset, plan, settings, bar):
                collector.add_logits(offset, logits)
            collector.flush()

    def _stream_acquired_scores(self, where: str, buffer_size: int, collector: TopKCollector, bar: ProgressBar) -> None:
        num_samples = len(self.unlabeled_dataset)
        for start in range(0, num_samples, buffer_size):
            stop = min(num_samples, start + buffer_size)
            scores = self.acquire_scores(Subset(self.unlabeled_dataset, list(range(start, stop))))
            collector.add_scores(start, _as_scores(scores, stop - start, where))
            bar.advance(stop - start)


def _as_scores(scores: Any, rows: int, where: str) -> torch.Tensor:
    scores = torch.as_tensor(scores)
    if scores.shape != (rows,):
        raise ValueError(
            f"{where}: expected acquire_scores to return {rows} scores (shape [{rows}]), got shape "
            f"{tuple(scores.shape)}"
        )
    return scores if scores.is_floating_point() else scores.to(torch.float32)
