"""The MC engine's entry point: the ``[n_drop, B, C]`` logit blocks of a model over a dataset, for a resolved plan.

:func:`mc_logit_blocks` is the only way in. It puts the model in its MC mode (:func:`.model_state.mc_mode`), keys
its dropout when the plan has a seed (or injects a consistent dropout, :mod:`.injection`) (:func:`.keyed.keyed_mc_dropout`), runs the batch-major loop
(:func:`.passes.fast_mc_blocks`) or DISTIL's pass-major one (:func:`.distil_loop.distil_mc_blocks`) over the index
range asked for, and restores everything when the generator ends, raises or is closed. In mc_mode 'dropout', when the
passes of the first block are all identical (no dropout is active), it warns once, at the user's line that asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .distil_loop import distil_mc_blocks
from .injection import injected_dropout
from .keyed import KeyedMCDropout, UnkeyableDropoutError, keyed_mc_dropout
from .model_state import mc_mode
from .passes import fast_mc_blocks
from .plan import MCPlan
from .progress import ProgressBar

__all__ = ["mc_logit_blocks"]


def mc_logit_blocks(
    model: nn.Module,
    dataset: Dataset,
    plan: MCPlan,
    start: int = 0,
    stop: int | None = None,
    show_progress: bool = True,
    counted_from: int | None = None,
) -> Iterator[tuple[int | torch.Tensor, torch.Tensor]]:
    """Yields ``(offset, logits)``: the ``[plan.n_drop, B, C]`` logits of the samples ``start … stop − 1`` of
    ``dataset``, one block per batch (per stream buffer with ``plan.reproduce_distil``), in order.

    ``offset`` is the dataset index of the block's first sample, or, with ``plan.batch_sampler``, the int64 indices
    of the block's samples (the sampler's batches, in its order). With keyed dropout (``plan.mc_seed``) a sample's
    masks are keyed by its pool index ``plan.id_base + index``, whatever the range, batch or stacking it runs in.

    Close the generator when stopping early (``contextlib.closing``): the model's state is restored on close.
    ``show_progress`` False hides the bar that ``plan.progress`` asks for (e.g. on all ranks but one).
    ``counted_from`` (default ``start``): where the bar's count begins, so that a range resumed at ``start`` shows
    the samples ``counted_from … start − 1`` as done.
    """
    stop = len(dataset) if stop is None else stop
    if stop <= start:
        return
    counted_from = start if counted_from is None else min(counted_from, start)
    part = dataset if (start, stop) == (0, len(dataset)) else Subset(dataset, range(start, stop))
    with (
        ProgressBar(stop - counted_from, plan.progress and show_progress, plan.where, start - counted_from) as bar,
        _mode(model, plan) as start_pass,
        _keyed(model, plan) as keyed,
    ):
        if plan.reproduce_distil:
            blocks = distil_mc_blocks(model, part, plan, bar, start_pass)
        else:
            blocks = fast_mc_blocks(model, part, _shifted(plan, start), bar, keyed)
        with contextlib.closing(blocks):
            first = True
            for offset, logits in blocks:
                if first:
                    first = False
                    _warn_if_identical(model, plan, logits)
                yield (offset + start if start else offset), logits


def _warn_if_identical(model: nn.Module, plan: MCPlan, logits: torch.Tensor) -> None:
    """Warns when the ``n_drop`` passes of a block are all the same: MC dropout would score one deterministic pass.

    The logits decide, not the module types: an always-on dropout subclass or ``F.dropout(training=True)`` counts.
    One comparison of the first block per call (one host synchronization), up to float32 rounding.
    """
    if plan.mc_mode != "dropout" or logits.shape[0] < 2:
        return  # DISTIL's whole-model train mode stays silent, as DISTIL is
    # Stacked passes round differently from a single one (other matmul shapes): identical up to float32 rounding.
    first = logits[:1].float()
    if not bool((logits.float() - first).abs().max() <= 1e-5 * first.abs().max()):
        return
    warnings.warn(
        f"{type(model).__name__} has no dropout module active in mc_mode {plan.mc_mode!r}: the {logits.shape[0]} MC "
        "passes of the first batch are identical, so every score is that of one deterministic pass. Add dropout "
        "(nn.Dropout*, nn.AlphaDropout, nn.MultiheadAttention, ...); if the model calls "
        "F.dropout(training=self.training) itself, set args['mc_mode'] = 'train'.",
        UserWarning,
        stacklevel=_caller_stacklevel(),
    )


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside this package and contextlib, for a warning issued by the caller
    of this function."""
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level = 1
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE_DIR) or frame.f_code.co_filename == contextlib.__file__
    ):
        frame = frame.f_back
        level += 1
    return level


def _shifted(plan: MCPlan, start: int) -> MCPlan:
    """The plan of a range that starts at ``start``: its samples keep their pool indices for keyed dropout."""
    return plan if start == 0 else dataclasses.replace(plan, id_base=plan.id_base + start)


@contextlib.contextmanager
def _mode(model: nn.Module, plan: MCPlan) -> Iterator[Callable[[], None] | None]:
    """The model's MC mode, or a dropout injected before ``plan.inject_before`` (the rest in eval mode); yields
    what to call at the start of each pass of DISTIL's loop."""
    if plan.inject_before is None:
        with mc_mode(model, plan.mc_mode):
            yield None
        return
    per_pass_masks = plan.mc_seed is None  # torch's generator: DISTIL's one mask per pass
    with injected_dropout(model, plan.inject_before, plan.where, per_pass_masks) as start_pass:
        yield start_pass


@contextlib.contextmanager
def _keyed(model: nn.Module, plan: MCPlan) -> Iterator[KeyedMCDropout | None]:
    if plan.mc_seed is None:
        yield None
        return
    try:
        with keyed_mc_dropout(model, plan.mc_seed) as keyed:
            yield keyed
    except UnkeyableDropoutError as exc:
        raise UnkeyableDropoutError(
            f"{plan.where}: args['mc_dropout'] = 'keyed': {exc} (args['mc_dropout'] = 'torch')"
        ) from exc
