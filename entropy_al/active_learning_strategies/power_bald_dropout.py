"""``PowerBALDDropout``: BALD that samples the batch ∝ BALD^coldness (stochastic acquisition) instead of taking the
top ``budget``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .bayesian_active_learning_disagreement_dropout import BALDDropout

__all__ = ["PowerBALDDropout"]


class PowerBALDDropout(BALDDropout):
    """Samples the batch without replacement, each next pick with probability ∝ BALD^coldness.

    :class:`.BALDDropout` with ``args['acquisition'] = 'power'`` by default (Kirsch et al., "Stochastic Batch
    Acquisition", TMLR 2023: close to BatchBALD at the cost of top-k). ``select`` returns the picks in sampling
    order; BALD's rounding negatives count as 0, picked only after every positive score. The sample is a top-k of
    keys coldness · log BALD + Gumbel noise keyed on (``acquisition_seed``, pool index), computed inside the fused
    score + top-k op: same cost, and the same selection for a seed whatever ``batch_size``,
    ``stream_buffer_size``, ``batch_sampler`` or the number of ranks (given the same scores).

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`.Strategy`.
        args: as :class:`.BALDDropout`'s, and ``acquisition`` (default ``'power'``; ``'softmax'`` samples
            ∝ exp(coldness · BALD), ``'top'`` is BALD), ``coldness`` (β, a float > 0, default 1; large values
            approach the top-k), ``acquisition_seed`` (int, default ``None``: one draw from torch's global
            generator per ``select``).
    """

    default_args: ClassVar[Mapping[str, Any]] = {"acquisition": "power"}
