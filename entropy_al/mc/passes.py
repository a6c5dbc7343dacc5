"""The MC-dropout forward passes over a dataset, as a stream of ``[n_drop, B, C]`` logit blocks.

The fast path is batch-major: each batch is fetched and collated once (:mod:`.batches`: sliced from tensor-backed
datasets, prefetched to CUDA), moved to the device once, and run ``n_drop`` times by :func:`mc_forward`, the one
place where a batch's passes run; its logit stack goes straight to the scoring op. DISTIL is pass-major (every pass
re-reads the data); :mod:`.distil_loop` reproduces that order when asked. Both yield blocks in pool order (the fast path
in the user's batch order with ``args['batch_sampler']``). The caller owns the model's mode (:mod:`.model_state`);
forwards run under ``torch.no_grad``.

Three ways :func:`mc_forward` makes the passes cheaper than ``n_drop`` calls of the model:

- **Stacked passes** (:mod:`.stacking`). The batch is repeated ``r`` times along dim 0, so one forward runs ``r`` passes, each copy
  with its own dropout masks. Valid only when the rows of a forward do not interact, so only when no module
  normalizes with batch statistics (BatchNorm in train mode, or without running statistics): in ``mc_mode
  'dropout'`` that is every model whose BatchNorms track statistics; in ``'train'`` only models without BatchNorm.
  ``r`` comes from ``args['mc_memory_budget']`` (bytes; 0 turns stacking off): the first pass of a call runs alone
  and measures the activation bytes per sample (the input plus every submodule's output, an upper bound on what is
  alive at once), then ``r = min(n_drop, budget // (B · bytes per sample))``, at least 1, and the ``n_drop``
  passes of a batch run in ``⌈n_drop / r⌉`` forwards of near-equal size. The default differs by device: on CUDA
  (1 GiB, or a quarter of the free memory) a bigger forward fills the GPU better; on the CPU it is cache-sized
  (2 MiB), because stacking only saves per-forward overhead, large for small batches, while a forward whose
  activations outgrow the caches costs more per row than separate passes (see ``plan.DEFAULT_MC_MEMORY_BUDGET_CPU``).
- **Head-only MC** (``args['mc_head']``, :mod:`.heads`): the trunk runs once per batch and only the head runs
  ``n_drop`` times (stacked as above).
- **Keyed dropout** (``args['mc_dropout'] = 'keyed'``, :mod:`.keyed`) is not a speed-up of the loop
  but of each dropout (counter-based masks instead of torch's generator), and makes the masks, hence the selection,
  independent of all of the above: ``mc_forward`` feeds every forward the rows' global pool indices and pass numbers.
- **Autocast** (``args['amp_dtype']``): the forwards run under ``torch.autocast`` in bfloat16 or float16; scoring
  always accumulates in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .batches import iter_batches, iter_sampled_batches
from .isolation import PassIsolation
from .items import as_logits, call_model
from .keyed import KeyedMCDropout
from .plan import MCPlan, autocast_for
from .progress import ProgressBar
from .stacking import PassGrouping, measured_call, nbytes, stack_copies, stackable, uses_batch_statistics

__all__ = ["block_rows", "fast_mc_blocks", "mc_forward"]


def block_rows(positions: int | torch.Tensor, count: int, device: torch.device) -> slice | torch.Tensor:
    """Where a block of ``count`` samples goes in a per-sample output: a slice from an int offset, or its indices."""
    if isinstance(positions, torch.Tensor):
        return positions.to(device)
    return slice(positions, positions + count)


def _pool_ids(offset: int | torch.Tensor, rows: int, base: int, consistent: bool = False) -> torch.Tensor:
    """int64 ``[rows]`` global pool indices of a batch's rows (CPU; keyed dropout copies them to the device); all 0
    with consistent masks, which then depend on the pass only."""
    if consistent:
        return torch.zeros(rows, dtype=torch.int64)
    if isinstance(offset, torch.Tensor):
        return offset.to("cpu", torch.int64) + base
    return torch.arange(base + offset, base + offset + rows, dtype=torch.int64)


def mc_forward(
    model: nn.Module,
    inputs: torch.Tensor | Mapping[str, Any],
    rows: int,
    plan: MCPlan,
    offset: int | torch.Tensor = 0,
    grouping: PassGrouping | None = None,
    keyed: KeyedMCDropout | None = None,
    isolation: PassIsolation | None = None,
) -> torch.Tensor:
    """Runs the ``n_drop`` passes of one batch; returns its ``[n_drop, rows, C]`` logits.

    Args:
        model: the network, in its MC mode.
        inputs: the batch, on the device: a tensor (``model(x)``) or a mapping (``model(**x)``).
        rows: samples in the batch.
        plan: the run; its ``split``, ``memory_budget`` and ``amp_dtype`` decide how the passes run.
        offset: pool index of the batch's first sample (consecutive batches), or the batch's pool indices (int64
            ``[rows]``, a user batch sampler). Row ``j·rows + i`` of a forward that stacks passes ``p … p+r−1`` is
            pass ``p + j`` of the sample at ``offset + i``. With ``keyed`` (keyed MC dropout) that row's masks
            are keyed by (pool index ``plan.id_base + offset + i``, pass ``p + j``), so the logits of a sample do not
            depend on the batch, the stacking or the shard it runs in.
        grouping: the run's :class:`PassGrouping` (a fresh one, with ``plan.memory_budget``, when ``None``).
        keyed: the active :func:`entropy_al.mc.keyed_mc_dropout` handle, or ``None`` for torch's own dropout.
        isolation: the run's :class:`.isolation.PassIsolation` (a fresh one when ``None``): every forward sees the
            batch as given (or the trunk's output as computed), and each forward's logits survive the next one.

    Returns:
        The logits in the model's output dtype (the autocast dtype under ``amp_dtype``), pass-major.
    """
    ids = _pool_ids(offset, rows, plan.id_base, plan.consistent) if keyed is not None else None
    if grouping is None:
        grouping = PassGrouping(plan.memory_budget)
    if isolation is None:
        isolation = PassIsolation(plan.where)
    with torch.no_grad(), autocast_for(plan.where, plan.amp_dtype, plan.device):
        if plan.split is None:
            net, features, guard = model, inputs, isolation.model
            call = lambda batch: call_model(model, batch)  # noqa: E731
        else:
            # A trunk holds no dropout module; any functional dropout in it is keyed as pass 0, apart from the head's.
            with keyed.batch(ids, 0) if keyed is not None else contextlib.nullcontext():
                features = isolation.model(lambda batch: call_model(plan.split.trunk, batch), inputs)
            net, call, guard = plan.split.head, plan.split.head, isolation.head
        repeatable = stackable(features, rows)
        result: torch.Tensor | None = None
        done = 0
        while done < plan.n_drop:
            copies = grouping.next_copies(rows, plan.n_drop, plan.n_drop - done) if repeatable else 1
            # Stacked copies are fresh tensors; a single pass runs on the batch itself, behind the input guard.
            batch = features if copies == 1 else stack_copies(features, copies)
            run = (lambda batch: guard(call, batch)) if copies == 1 else call
            keys = contextlib.nullcontext()
            if keyed is not None:
                # Row j·rows + i is pass done + j of the sample ids[i]: its masks depend on nothing else.
                passes = torch.arange(done, done + copies, dtype=torch.int64).repeat_interleave(rows)
                keys = keyed.batch(ids.repeat(copies), passes, first_site=0 if plan.split is None else 1 << 20)
            with keys:
                if grouping.probing and repeatable:
                    output, activation_bytes = measured_call(net, lambda batch=batch, run=run: run(batch))
                    grouping.bytes_per_sample = (activation_bytes + nbytes(features)) / max(1, rows)
                else:
                    output = run(batch)
            logits = isolation.own(as_logits(output, copies * rows, plan.nclasses, plan.where))
            logits = logits.reshape(copies, rows, plan.nclasses)
            if copies == plan.n_drop:
                result = logits
            else:  # each forward's logits are consumed before the next one runs
                if result is None:
                    result = logits.new_empty((plan.n_drop, rows, plan.nclasses))
                result[done : done + copies] = logits
            done += copies
    assert result is not None  # n_drop >= 1
    return result


def fast_mc_blocks(
    model: nn.Module, dataset: Dataset, plan: MCPlan, progress: ProgressBar, keyed: KeyedMCDropout | None = None
) -> Iterator[tuple[int | torch.Tensor, torch.Tensor]]:
    """Batch-major MC passes. Yields ``(offset, logits)``, one ``[n_drop, B, C]`` block per batch, in pool order.

    With ``plan.batch_sampler`` the blocks come in the sampler's order and ``offset`` is the block's int64 pool
    indices (CPU) instead of its first index.
    """
    stacked = plan.split.head if plan.split is not None else model
    # Read in the MC mode the caller set: stacking copies must not share batch statistics.
    grouping = PassGrouping(0 if uses_batch_statistics(stacked) else plan.memory_budget)
    isolation = PassIsolation(plan.where)
    # The batch iterators are closed on any exit (contextlib.closing): when the model raises, the traceback keeps this
    # frame alive, and an unclosed iterator would keep its DataLoader workers (processes and threads) running.
    if plan.batch_sampler is not None:
        sampled = iter_sampled_batches(dataset, plan.batch_sampler, plan.device, plan.where, plan.num_workers)
        with contextlib.closing(sampled):
            for indices, _, inputs in sampled:
                logits = mc_forward(model, inputs, indices.numel(), plan, indices, grouping, keyed, isolation)
                progress.advance(indices.numel())
                yield indices, logits
        return
    batches = iter_batches(dataset, plan.batch_size, plan.buffer_size, plan.device, plan.where, plan.num_workers)
    with contextlib.closing(batches):
        for start, stop, _, inputs in batches:
            logits = mc_forward(model, inputs, stop - start, plan, start, grouping, keyed, isolation)
            progress.advance(stop - start)
            yield start, logits
