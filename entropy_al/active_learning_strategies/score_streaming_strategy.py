"""``ScoreStreamingStrategy``: select the ``budget`` highest-scoring pool samples, streaming over the pool.

DISTIL scores one ``stream_buffer_size`` buffer at a time and merges 0-d score tensors into an AVL tree in Python.
Here the MC strategies never materialize scores: each ``[n_drop, B, C]`` logit block goes to the fused score +
streaming top-k op, the running top-k stays on the device, and the host synchronizes once, at the end. Memory is
O(budget + stream buffer), never O(pool). A DISTIL-style subclass that only overrides :meth:`acquire_scores`
still works: its buffer scores are merged by the same streaming top-k.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from ..mc import ProgressBar, block_rows, dataset_length, mc_logit_blocks
from ..ops import mc_scores
from ..scores import SCORE_INFO
from ..selection import (
    BadRowTracker,
    SelectionCheckpoint,
    ShardScorer,
    TopKCollector,
    apply_nan_policy,
    distributed_group,
    select_across_ranks,
    shard_bounds,
)
from ._checkpointing import open_checkpoint
from ._runs import PoolSlice, mc_plan
from ._settings import CallSettings
from ._validation import (
    DEFAULT_N_DROP,
    DEFAULT_STREAM_BUFFER_SIZE,
    check_acquisition_score,
    check_budget,
    check_int,
    distributed_flag,
)
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
            rank of a DDP job). ``checkpoint`` (a path, default ``None``) and ``checkpoint_every`` (seconds,
            default 60): :meth:`select` saves its state there and a later call resumes from it (see ``select``).
    """

    #: Score of the MC-dropout strategies, a name of :data:`entropy_al.scores.SCORES`; ``None`` here.
    mc_score: ClassVar[str | None] = None
    #: ``args`` this class defaults to, under the user's own (``{"acquisition": "power"}`` for the power classes).
    default_args: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        labeled_dataset: Dataset,
        unlabeled_dataset: Dataset,
        net: nn.Module,
        nclasses: int,
        args: Mapping[str, Any] | None = None,
    ):
        if self.default_args and (args is None or isinstance(args, Mapping)):
            args = {**self.default_args, **(args or {})}
        super().__init__(labeled_dataset, unlabeled_dataset, net, nclasses, args)
        minimum = SCORE_INFO[self.mc_score].min_classes if self.mc_score is not None else 1
        if self.target_classes < minimum:
            raise ValueError(
                f"{type(self).__name__}: {self.mc_score} sampling needs nclasses >= {minimum}, got {self.target_classes}"
            )
        self.stream_buffer_size: int = self.args.get("stream_buffer_size", DEFAULT_STREAM_BUFFER_SIZE)
        check_acquisition_score(type(self).__name__, self.args.get("acquisition", "top"), self.mc_score)
        if self.mc_score is not None:  # the MC-dropout strategies, as DISTIL's subclasses set it
            self.n_drop: int = self.args.get("n_drop", DEFAULT_N_DROP)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.mc_score is not None and cls.mc_score not in SCORE_INFO:
            raise TypeError(f"{cls.__name__}.mc_score: {cls.mc_score!r} is not a score of entropy_al.scores.SCORES")

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
        settings = self._prepare("acquire_scores")
        where = settings.where
        num_samples = dataset_length(where, "unlabeled_buffer", unlabeled_buffer)
        # One DataLoader over the whole dataset, as DISTIL's acquire_scores.
        plan = mc_plan(
            self.model, settings, self.target_classes, getattr(self, "n_drop", None), num_samples, unlabeled_buffer
        )
        scores = torch.empty(num_samples, dtype=torch.float32, device=settings.device)
        tracker = BadRowTracker()
        with contextlib.closing(mc_logit_blocks(self.model, unlabeled_buffer, plan)) as blocks:
            for offset, logits in blocks:
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
        timeout. Details: :mod:`entropy_al.selection.distributed`.

        With ``args['checkpoint']``, the state of the last completed streaming step is saved to that file every
        ``args['checkpoint_every']`` seconds and whenever ``select`` raises; a later ``select`` with the same
        selection resumes there (with keyed dropout: the uninterrupted result) and removes the file when it returns.
        Under torch.distributed each rank saves ``<path>.rank<r>``. Details: :mod:`entropy_al.selection.checkpoint`.

        Args:
            budget: how many samples to select: a non-negative int (numpy integers accepted). ``0`` or an empty
                pool give ``[]`` without running the model; more than the pool gives every index.

        Returns:
            Indices into ``unlabeled_dataset``, score descending, ties to the lower index: exactly
            ``torch.sort(scores, descending=True, stable=True).indices[:budget]`` (NaN scores last), whatever
            ``stream_buffer_size`` and ``batch_size``.

        Raises:
            TypeError, ValueError: a bad ``budget`` or ``args`` value (the message names it).
            ValueError: the checkpoint file was saved by another selection (the message names what differs) or is
                not a checkpoint (it names the path).
            ValueError: the model's output width is not ``nclasses``, or (``nan_policy`` ``'raise'``) some
                logits are NaN, ``+inf`` or all ``-inf``. That check is read once, with the selection, after the
                whole pool has run: the loop never waits on the device.
        """
        where = f"{type(self).__name__}.select"
        group = distributed_group(where, distributed_flag(where, self.args))
        if group is not None:
            request, checkpoint = self._shard_request(where, group, budget)
            with _saved_on_failure(checkpoint):
                selected = select_across_ranks(where, group, *request)
        else:
            k = check_budget(where, budget)
            num_samples = dataset_length(where, "unlabeled_dataset", self.unlabeled_dataset)
            if k == 0 or num_samples == 0:
                return []
            settings, buffer_size = self._prepare_select()
            checkpoint, seeds = open_checkpoint(self, settings, num_samples, k, (0, num_samples))
            settings = replace(settings, acquisition_seed=seeds.get("acquisition_seed"))
            with _saved_on_failure(checkpoint):
                collector = self._score_range(
                    settings, buffer_size, min(k, num_samples), 0, num_samples, seeds.get("mc_seed"), True, checkpoint
                )
                selected, first, count = collector.result()
                apply_nan_policy(where, settings.nan_policy, first, count, "they are ranked last")
        if checkpoint is not None:
            checkpoint.remove()
        return selected

    def _prepare_select(self) -> tuple[CallSettings, int]:
        where = f"{type(self).__name__}.select"
        buffer_size = check_int(where, "`stream_buffer_size`", self.stream_buffer_size, 1)
        settings = self._prepare("select")
        # Before any forward: 'power' of a score that is never positive would rank every sample by index.
        check_acquisition_score(where, settings.acquisition, self.mc_score)
        return settings, buffer_size

    def _shard_request(
        self, where: str, group: dist.ProcessGroup, budget: Any
    ) -> tuple[tuple[ShardScorer, int, int, int | None, str, Exception | None, int | None], SelectionCheckpoint | None]:
        """The arguments of :func:`entropy_al.selection.select_across_ranks` after ``group``: this rank's shard
        scorer, pool size, budget, keyed seed (drawn on every rank, rank 0's used), NaN policy, the exception met
        while preparing them, which the protocol's handshake raises on every rank, and the acquisition seed (drawn
        after the keyed one, on every rank; rank 0's used); and this rank's checkpoint."""
        failure: Exception | None = None
        k = num_samples = 0
        seed: int | None = None
        nan_policy = "raise"
        checkpoint: SelectionCheckpoint | None = None
        try:
            k = check_budget(where, budget)
            num_samples = len(self.unlabeled_dataset)
            settings, buffer_size = self._prepare_select()
            if settings.batch_sampler is not None:
                # Its batches index the whole pool, and must cover it: they cannot be cut into contiguous shards.
                raise ValueError(
                    f"{where}: args['batch_sampler'] orders the whole pool and cannot be combined with a distributed "
                    "select, where each rank scores its own contiguous shard; drop the key, or set "
                    "args['distributed'] = False"
                )
            rank, world = dist.get_rank(group), dist.get_world_size(group)
            shard = shard_bounds(num_samples, rank, world)
            checkpoint, seeds = open_checkpoint(self, settings, num_samples, k, shard, rank, world)
            seed, nan_policy = seeds.get("mc_seed"), settings.nan_policy
            settings = replace(settings, acquisition_seed=seeds.get("acquisition_seed"))
        except Exception as exc:
            failure, checkpoint = exc, None

        def score_shard(k, start, stop, seed, show_progress, acquisition_seed):
            if checkpoint is not None and seed is not None:
                checkpoint.seeds["mc_seed"] = seed  # rank 0's, which every rank runs with
            if checkpoint is not None and acquisition_seed is not None:
                checkpoint.seeds["acquisition_seed"] = acquisition_seed
            shared = settings if acquisition_seed is None else replace(settings, acquisition_seed=acquisition_seed)
            return self._score_range(shared, buffer_size, k, start, stop, seed, show_progress, checkpoint).partial()

        acquisition_seed = None if failure is not None else settings.acquisition_seed
        return (score_shard, num_samples, k, seed, nan_policy, failure, acquisition_seed), checkpoint

    def _score_range(
        self,
        settings: CallSettings,
        buffer_size: int,
        k: int,
        start: int,
        stop: int,
        seed: int | None,
        show_progress: bool = True,
        checkpoint: SelectionCheckpoint | None = None,
    ) -> TopKCollector:
        """Scores pool samples ``start … stop − 1`` into a top-``k`` collector (whose keys carry pool indices).

        The whole pool for a single-process selection, one rank's shard under torch.distributed. ``seed``: the
        selection's keyed-dropout seed (``None`` with torch's dropout). The acquisition is the settings'. With a
        ``checkpoint``, the range resumes where its loaded state ends, and every completed streaming step of
        ``buffer_size`` samples is reported to it.
        """
        acquisition = (settings.acquisition, settings.coldness, settings.acquisition_seed or 0)
        collector = TopKCollector(k, self.mc_score, buffer_size, *acquisition)
        resume_at = start if checkpoint is None else checkpoint.resume(collector, settings.device)
        if stop <= resume_at:
            return collector
        if self._scores_are_fused():
            n_drop = getattr(self, "n_drop", None)
            plan = mc_plan(self.model, settings, self.target_classes, n_drop, buffer_size, seed=seed)
            blocks = mc_logit_blocks(self.model, self.unlabeled_dataset, plan, resume_at, stop, show_progress, start)
            with contextlib.closing(blocks):
                for offset, logits in blocks:
                    collector.add_logits(offset, logits)
                    if checkpoint is not None:  # batches restart at every step, so a step ends with a block
                        end = offset + logits.shape[1]
                        if end == stop or (end - resume_at) % buffer_size == 0:
                            checkpoint.completed(end, collector)
            collector.flush()
            return collector
        bar = ProgressBar(stop - start, settings.progress and show_progress, settings.where, resume_at - start)
        with bar:
            for lo in range(resume_at, stop, buffer_size):
                hi = min(stop, lo + buffer_size)
                # An overridden acquire_scores that runs the MC methods on this buffer (DISTIL's strategies do) gets
                # keyed masks by pool index (lo + i) and this selection's seed: the same whatever stream_buffer_size.
                scores = self.acquire_scores(PoolSlice(self.unlabeled_dataset, list(range(lo, hi)), lo, seed))
                collector.add_scores(lo, _as_scores(scores, hi - lo, settings.where))
                bar.advance(hi - lo)
                if checkpoint is not None:
                    checkpoint.completed(hi, collector)
        return collector

    def _scores_are_fused(self) -> bool:
        # A subclass that overrides acquire_scores (DISTIL's extension point) must have it called.
        return self.mc_score is not None and type(self).acquire_scores is ScoreStreamingStrategy.acquire_scores


def _saved_on_failure(checkpoint: SelectionCheckpoint | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if checkpoint is None else checkpoint.saved_on_failure()


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
    # Integer scores stay integers: the top-k ranks them (and float64) exactly.
    return scores.to(torch.float32) if scores.dtype == torch.bool else scores
