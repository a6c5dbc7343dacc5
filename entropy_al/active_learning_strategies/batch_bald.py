"""``BatchBALDDropout``: DISTIL's BatchBALD strategy on a streamed candidate set.

BatchBALD (Kirsch et al., 2019) picks a batch greedily by the mutual information of the batch's joint labels with
the model; it needs every pass to be one sample of the model for the whole pool (consistent MC dropout). DISTIL
holds the whole pool's ``[N, n_drop, C]`` probabilities and scores every sample at every greedy step; here the pool
streams through the MC engine once, the ``args['candidates']`` samples of highest BALD are kept with their
log-probabilities (:class:`entropy_al.selection.CandidateKeeper`), and the greedy selection
(:func:`entropy_al.selection.batchbald_select`) runs on those, on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..mc import MCPlan, dataset_length, is_dropout_like, mc_logit_blocks
from ..ops import mc_scores
from ..selection import BadRowTracker, CandidateKeeper, apply_nan_policy, batchbald_select, distributed_group
from ._batchbald_ranks import gather_candidates
from ._runs import mc_plan
from ._settings import CallSettings, call_seed
from ._validation import DEFAULT_STREAM_BUFFER_SIZE, check_budget, check_int, distributed_flag
from .strategy import Strategy

__all__ = ["BatchBALDDropout"]

DEFAULT_BATCHBALD_N_DROP = 40
DEFAULT_N_SAMPLES = 1000
DEFAULT_MOD_INJECT = "linear"
#: The default candidate set: ``max(CANDIDATES_PER_PICK · budget, MIN_CANDIDATES)`` samples of highest BALD.
CANDIDATES_PER_PICK = 10
MIN_CANDIDATES = 1000
_DEFAULT = object()


class BatchBALDDropout(Strategy):
    """BatchBALD with consistent MC dropout, on the pool's best candidates by BALD.

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`Strategy`.
        args: see :class:`Strategy` (``batch_size``, ``device``, ``progress``, ``amp_dtype``, ``mc_head``,
            ``mc_memory_budget``, ``mc_mode``, ``mc_seed``, ``nan_policy``, ``distributed``, ``reproduce_distil``,
            ``stream_buffer_size``, ...) and DISTIL's keys:

            - ``n_drop`` (default 40): MC passes, each one sample of the model (the same masks for every sample).
            - ``n_samples`` (default 1000): sampled joint label configurations once the exact joint entropy has
              more than that many (``>= n_drop``).
            - ``mod_inject`` (default ``'linear'``): the model attribute before which a dropout of p = 0.5 is
              injected for the passes, the model otherwise in eval mode (DISTIL's procedure; its models' last
              layer is ``linear``). ``None``: no injection; the model's own dropout modules are made consistent
              (``mc_mode`` as for the other strategies; an error if the model has none).
            - ``candidates`` (default ``max(10 · budget, 1000)``): how many samples of highest BALD the greedy
              selection runs on; ``None``: the whole pool (DISTIL's behaviour, O(pool · n_drop · C) memory).

        The masks are keyed (``args['mc_dropout']`` must be ``'keyed'`` or absent): pass ``k``'s mask depends on
        (seed, k, element) only, so the selection does not depend on ``batch_size``, ``stream_buffer_size``,
        stacking or the world size. The seed (``args['mc_seed']``, else one draw from torch's generator per
        ``select``) also seeds the sampled configurations. ``reproduce_distil = True`` runs DISTIL's procedure
        instead: its injected dropout drawing one mask per pass from torch's generator in its pass-major loop,
        and the configurations from torch's generator.
    """

    def __init__(
        self,
        labeled_dataset: Dataset,
        unlabeled_dataset: Dataset,
        net: nn.Module,
        nclasses: int,
        args: Mapping[str, Any] | None = None,
    ):
        super().__init__(labeled_dataset, unlabeled_dataset, net, nclasses, args)
        self.n_drop: int = self.args.get("n_drop", DEFAULT_BATCHBALD_N_DROP)
        self.n_samples: int = self.args.get("n_samples", DEFAULT_N_SAMPLES)
        self.mod_inject: str | None = self.args.get("mod_inject", DEFAULT_MOD_INJECT)
        self.stream_buffer_size: int = self.args.get("stream_buffer_size", DEFAULT_STREAM_BUFFER_SIZE)

    def select(self, budget: int) -> list[int]:
        """The BatchBALD batch of ``budget`` pool samples, in the greedy order.

        Returns:
            Indices into ``unlabeled_dataset``. With ``args['candidates'] = None`` exactly
            ``batchbald_redux.get_batchbald_batch``'s choice on the same log-probabilities (exact joint entropy);
            else its choice on the candidates, mapped back to pool indices.

        Raises:
            TypeError, ValueError: a bad ``budget`` or ``args`` value (the message names it), a model without the
                ``mod_inject`` layer, or without dropout modules when ``mod_inject`` is ``None``.
            ValueError: the model's output width is not ``nclasses``, or (``nan_policy`` ``'raise'``) some logits
                are NaN, ``+inf`` or all ``-inf``; with ``'omit'`` such samples are never chosen while others are.
        """
        where = f"{type(self).__name__}.select"
        group = distributed_group(where, distributed_flag(where, self.args))
        k = num_samples = 0
        failure: Exception | None = None
        try:
            k = check_budget(where, budget)
            num_samples = dataset_length(where, "unlabeled_dataset", self.unlabeled_dataset)
            settings, plan, m, generator_seed = self._run_settings(where, k, num_samples)
        except Exception as exc:
            if group is None:
                raise
            failure, settings, plan, m, generator_seed = exc, None, None, 0, None
        if group is not None:
            return gather_candidates(
                where, group, self._keep, self.choose, settings, plan, m, num_samples, k, generator_seed, failure
            )
        if k == 0 or num_samples == 0:
            return []
        keeper, first, count = self._keep(settings, plan, m, 0, num_samples)
        apply_nan_policy(where, settings.nan_policy, first, count, "they are never selected while others are")
        indices, log_probs = keeper.result()
        return self.choose(settings, indices, log_probs, k, generator_seed)

    def _run_settings(self, where: str, k: int, num_samples: int) -> tuple[CallSettings, MCPlan, int, int | None]:
        """The call's settings, its MC plan, the candidate count and the configurations' seed."""
        settings = self._prepare("select")
        n_drop = check_int(where, "args['n_drop']", self.n_drop, 1)
        n_samples = check_int(where, "args['n_samples']", self.n_samples, 1)
        if n_samples < n_drop:
            raise ValueError(
                f"{where}: expected args['n_samples'] >= args['n_drop'] = {n_drop} (configurations are drawn per "
                f"pass), got {n_samples}"
            )
        candidates = self.args.get("candidates", _DEFAULT)
        if candidates is _DEFAULT:
            m = max(CANDIDATES_PER_PICK * k, MIN_CANDIDATES)
        elif candidates is None:
            m = num_samples
        else:
            m = check_int(where, "args['candidates']", candidates, max(1, k))
        mod_inject = self.mod_inject
        if mod_inject is not None and (not isinstance(mod_inject, str) or not mod_inject):
            raise TypeError(f"{where}: expected args['mod_inject'] to be an attribute name or None, got {mod_inject!r}")
        if settings.reproduce_distil:
            if mod_inject is None:
                raise ValueError(
                    f"{where}: args['reproduce_distil'] = True injects DISTIL's dropout before args['mod_inject'], "
                    "which is None; name the layer"
                )
            # DISTIL: one DataLoader over the whole pool, its injected dropout's masks from torch's generator.
            plan = mc_plan(self.model, settings, self.target_classes, n_drop, num_samples)
            return settings, dataclasses.replace(plan, inject_before=mod_inject), m, None
        if self.args.get("mc_dropout", "keyed") != "keyed":
            raise ValueError(
                f"{where}: BatchBALD needs each pass to be one sample of the model for the whole pool: "
                f"args['mc_dropout'] must be 'keyed' (consistent masks), got {self.args['mc_dropout']!r}"
            )
        settings = dataclasses.replace(settings, mc_dropout="keyed")
        if mod_inject is not None and settings.mc_head is not None:
            raise ValueError(
                f"{where}: args['mc_head'] runs the model's own dropout in its head, while args['mod_inject'] = "
                f"{mod_inject!r} injects one; set args['mod_inject'] = None to use args['mc_head']"
            )
        if mod_inject is None and settings.mc_mode == "dropout":
            if not any(is_dropout_like(module) for module in self.model.modules()):
                raise ValueError(
                    f"{where}: args['mod_inject'] = None uses the model's own dropout, but "
                    f"{type(self.model).__name__} has no dropout module; name a layer to inject dropout before "
                    "(args['mod_inject'], DISTIL's default 'linear')"
                )
        seed = call_seed(settings)
        plan = mc_plan(self.model, settings, self.target_classes, n_drop, self.stream_buffer_size, seed=seed)
        plan = dataclasses.replace(plan, consistent=True, inject_before=mod_inject)
        check_int(where, "`stream_buffer_size`", self.stream_buffer_size, 1)
        return settings, plan, m, seed

    def _keep(
        self, settings: CallSettings, plan: MCPlan, m: int, start: int, stop: int, show_progress: bool = True
    ) -> tuple[CandidateKeeper, int, int]:
        """Streams pool samples ``start … stop − 1`` into the best-``m`` candidate keeper by BALD; returns it and
        the first broken pool index (-1: none) and the broken count."""
        keeper = CandidateKeeper(min(m, max(0, stop - start)), settings.device)
        tracker = BadRowTracker()
        blocks = mc_logit_blocks(self.model, self.unlabeled_dataset, plan, start, stop, show_progress)
        with contextlib.closing(blocks):
            for offset, logits in blocks:
                tracker.update_logits(logits, offset)
                if settings.reproduce_distil:  # DISTIL's log of float32 softmax probabilities
                    log_probs = torch.log(torch.softmax(logits.float(), dim=2))
                    keeper.update(mc_scores(logits, "bald"), log_probs.transpose(0, 1), offset)
                else:
                    keeper.update_logits(logits, offset, "bald")
        first, count = tracker.summary(settings.device).tolist()
        return keeper, first, count

    def choose(
        self,
        settings: CallSettings,
        indices: torch.Tensor,
        log_probs: torch.Tensor,
        k: int,
        generator_seed: int | None,
    ) -> list[int]:
        """The greedy BatchBALD batch of ``k`` among the candidates (``indices``: their pool indices, best BALD
        first), broken ones (NaN log-probabilities) last."""
        if indices.numel() == 0:
            return []
        broken = torch.isnan(log_probs).flatten(1).any(dim=1)
        usable = (~broken).nonzero().flatten()
        generator = None
        if generator_seed is not None:
            generator = torch.Generator(device=log_probs.device)
            generator.manual_seed(generator_seed % (1 << 64))
        n_samples = check_int(settings.where, "args['n_samples']", self.n_samples, 1)
        picks, _ = batchbald_select(log_probs[usable], k, n_samples, generator)
        chosen = usable[torch.tensor(picks, dtype=torch.int64, device=usable.device)].tolist()
        chosen += broken.nonzero().flatten()[: k - len(chosen)].tolist()
        return indices[torch.tensor(chosen, dtype=torch.int64, device=indices.device)].tolist()
