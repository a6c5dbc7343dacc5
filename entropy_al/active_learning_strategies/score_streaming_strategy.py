"""``ScoreStreamingStrategy``: select the ``budget`` highest-scoring pool samples, streaming over the pool.

DISTIL scores one ``stream_buffer_size`` buffer at a time and merges 0-d score tensors into an AVL tree in Python.
Here the MC strategies never materialize scores: each ``[n_drop, B, C]`` logit block goes to the fused score +
streaming top-k op, the running top-k stays on the device, and the host synchronizes once, at the end. Memory is
O(budget + stream buffer), never O(pool). A DISTIL-style subclass that only overrides :meth:`acquire_scores`
still works: its buffer scores are merged by the same streaming top-k.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..ops import mc_scores
from ._args import (
    DEFAULT_N_DROP,
    DEFAULT_STREAM_BUFFER_SIZE,
    RunSettings,
    check_budget,
    check_int,
    draw_mc_seed,
    mc_dropout_settings,
)
from ._bad_rows import BadRowTracker, apply_nan_policy
from ._collector import TopKCollector
from ._distributed import distributed_group, select_across_ranks
from ._items import dataset_length
from ._passes import block_rows
from ._progress import ProgressBar
from .strategy import Strategy

__all__ = ["ScoreStreamingStrategy", "merge"]


def merge(list_1: Sequence[Any], list_2: Sequence[Any], key: Callable[[Any], Any], merged_list_size_cap: int) -> list:
    """DISTIL's helper: merges two lists sorted by ``key`` descending into one list of at most
    ``merged_list_size_cap`` items, sorted the same way; on equal keys ``list_1``'s item comes first."""
    merged: list = []
    i = j = 0
    while len(merged) < merged_list_size_cap and (i < len(list_1) or j < len(list_2)):
        if j == len(list_2) or (i < len(list_1) and key(list_1[i]) >= key(list_2[j])):
            merged.append(list_1[i])
            i += 1
        else:
            merged.append(list_2[j])
            j += 1
    return merged


class ScoreStreamingStrategy(Strategy):
    """Base class of strategies that rank pool samples by a per-sample score.

    Subclasses either set :attr:`mc_score` (the MC-dropout strategies: the fused path) or override
    :meth:`acquire_scores` (DISTIL's extension point). Selection order: score descending, ties to the lower
    pool index; a sample with a NaN score never ranks ahead of a number.

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`Strategy`.
        args: see :class:`Strategy`; this class also reads ``stream_buffer_size`` (int, default 10000): pool
            samples scored per streaming step (bounds memory; never changes the selection), and ``distributed``
            (``None`` default, ``True`` or ``False``): whether :meth:`select` splits the pool across the ranks of
            torch.distributed's default process group. ``None`` does so when a default group of more than one
            process is initialized; ``True`` requires one; ``False`` selects in this process alone (e.g. on one
            rank of a DDP job).
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
        if self.mc_score is not None:  # the MC-dropout strategies, as DISTIL's subclasses set it
            self.n_drop: int = self.args.get("n_drop", DEFAULT_N_DROP)

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
        num_samples = dataset_length(where, "unlabeled_buffer", unlabeled_buffer)
        # One DataLoader over the whole dataset, as DISTIL's acquire_scores.
        plan = self._mc_plan(where, settings, getattr(self, "n_drop", None), num_samples)
        scores = torch.empty(num_samples, dtype=torch.float32, device=settings.device)
        if num_samples == 0:
            return scores
        tracker = BadRowTracker()
        with (
            ProgressBar(num_samples, settings.progress, where) as bar,
            self._mc_session(where, settings, plan, unlabeled_buffer) as plan,
        ):
            for offset, logits in self._mc_blocks(unlabeled_buffer, plan, settings, bar):
                tracker.update_logits(logits, offset)
                scores[block_rows(offset, logits.shape[1], scores.device)] = mc_scores(logits, self.mc_score)
        first, count = tracker.summary(scores.device).tolist()
        apply_nan_policy(where, settings.nan_policy, first, count, "their scores are NaN")
        return scores

    def select(self, budget: int) -> list[int]:
        """The ``budget`` highest-scoring pool samples.

        Under torch.distributed (see ``args['distributed']``), every rank of the default process group must call
        ``select`` with the same pool, budget and ``args``: each scores a contiguous shard of the pool, the ranks
        exchange at most ``budget`` candidates each, and every rank returns the same list, equal to this
        process's selection for the same scores. An error on one rank (the model raises, NaN logits) is raised on
        every rank; a rank that dies or never calls ``select`` leaves the others waiting for the process group's
        timeout. Details: :mod:`entropy_al.active_learning_strategies._distributed`.

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
        group = distributed_group(where, self.args)
        if group is not None:
            return select_across_ranks(self, where, budget, group)
        k = check_budget(where, budget)
        num_samples = dataset_length(where, "unlabeled_dataset", self.unlabeled_dataset)
        if k == 0 or num_samples == 0:
            return []
        settings, collector = self._score_range(min(k, num_samples), 0, num_samples)
        indices, first, count = collector.result()
        apply_nan_policy(where, settings.nan_policy, first, count, "they are ranked last")
        return indices

    def _select_seed(self, where: str) -> int | None:
        """The keyed-dropout seed of one ``select`` call (``args['mc_seed']``, else drawn now), or ``None`` with
        torch's dropout (which then draws nothing here)."""
        mode, seed = mc_dropout_settings(where, self.args)
        if mode != "keyed":
            return None
        return seed if seed is not None else draw_mc_seed()

    def _score_range(
        self, k: int, start: int, stop: int, progress: bool = True, mc_seed: int | None = None
    ) -> tuple[RunSettings, TopKCollector]:
        """Scores pool samples ``start … stop − 1`` into a top-``k`` collector (whose keys carry pool indices).

        The whole pool for a single-process selection, one rank's shard under torch.distributed (``progress``
        False hides the bar on all but one rank). ``mc_seed``: the keyed-dropout seed every rank uses (``None``:
        this call's own, see :meth:`_select_seed`). Returns the settings it ran with and the collector.
        """
        where = f"{type(self).__name__}.select"
        buffer_size = check_int(where, "`stream_buffer_size`", self.stream_buffer_size, 1)
        where, settings = self._settings("select")
        seed = mc_seed if mc_seed is not None else self._select_seed(where)
        collector = TopKCollector(k, self.mc_score, buffer_size)
        if stop > start:
            with ProgressBar(stop - start, settings.progress and progress, where) as bar:
                if self._scores_are_fused():
                    self._stream_mc_logits(where, settings, buffer_size, collector, bar, start, stop, seed)
                else:
                    self._stream_acquired_scores(where, buffer_size, collector, bar, start, stop, seed)
        return settings, collector

    def _scores_are_fused(self) -> bool:
        # A subclass that overrides acquire_scores (DISTIL's extension point) must have it called.
        return self.mc_score is not None and type(self).acquire_scores is ScoreStreamingStrategy.acquire_scores

    def _stream_mc_logits(
        self,
        where: str,
        settings: RunSettings,
        buffer_size: int,
        collector: TopKCollector,
        bar: ProgressBar,
        start: int,
        stop: int,
        seed: int | None = None,
    ) -> None:
        plan = self._mc_plan(where, settings, getattr(self, "n_drop", None), buffer_size)
        pool = self.unlabeled_dataset
        # Blocks of a shard count from its first sample; the collector gets pool indices, and so does keyed dropout
        # (id_base = start), so a sample's masks do not depend on the shard it falls in.
        shard = pool if (start, stop) == (0, len(pool)) else Subset(pool, range(start, stop))
        with self._mc_session(where, settings, plan, shard, seed=seed, id_base=start) as plan:
            for offset, logits in self._mc_blocks(shard, plan, settings, bar):
                collector.add_logits(start + offset, logits)
            collector.flush()

    def _stream_acquired_scores(
        self,
        where: str,
        buffer_size: int,
        collector: TopKCollector,
        bar: ProgressBar,
        start: int,
        stop: int,
        seed: int | None = None,
    ) -> None:
        for lo in range(start, stop, buffer_size):
            hi = min(stop, lo + buffer_size)
            buffer = Subset(self.unlabeled_dataset, list(range(lo, hi)))
            # An overridden acquire_scores that runs the MC methods on this buffer (DISTIL's strategies do) gets
            # keyed masks by pool index (lo + i) and this call's seed: the same whatever stream_buffer_size.
            self._acquire_buffer = (buffer, lo, seed)
            try:
                scores = self.acquire_scores(buffer)
            finally:
                self._acquire_buffer = None
            collector.add_scores(lo, _as_scores(scores, hi - lo, where))
            bar.advance(hi - lo)


def _as_scores(scores: Any, rows: int, where: str) -> torch.Tensor:
    try:
        scores = torch.as_tensor(scores)
    except (RuntimeError, TypeError, ValueError):
        raise TypeError(
            f"{where}: expected acquire_scores to return a tensor of {rows} real scores, got {type(scores).__name__}"
        ) from None
    if scores.is_complex():
        raise TypeError(f"{where}: expected acquire_scores to return real scores, got a {scores.dtype} tensor")
    if scores.shape != (rows,):
        raise ValueError(
            f"{where}: expected acquire_scores to return {rows} scores (shape [{rows}]), got shape "
            f"{tuple(scores.shape)}"
        )
    return scores if scores.is_floating_point() else scores.to(torch.float32)
