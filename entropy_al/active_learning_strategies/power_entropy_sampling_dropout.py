"""``PowerEntropySamplingDropout``: entropy sampling that samples the batch ∝ entropy^coldness (stochastic
acquisition) instead of taking the top ``budget``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .entropy_sampling_dropout import EntropySamplingDropout

__all__ = ["PowerEntropySamplingDropout"]


class PowerEntropySamplingDropout(EntropySamplingDropout):
    """Samples the batch without replacement, each next pick with probability ∝ H(p̄)^coldness.

    :class:`.EntropySamplingDropout` with ``args['acquisition'] = 'power'`` by default (Kirsch et al., "Stochastic
    Batch Acquisition", TMLR 2023): a top-``budget`` batch piles up near-duplicates of the most uncertain region,
    a sample spreads over the uncertain ones. ``select`` returns the picks in sampling order. The sample is a top-k
    of keys coldness · log H + Gumbel noise keyed on (``acquisition_seed``, pool index), computed inside the fused
    score + top-k op: same cost, and the same selection for a seed whatever ``batch_size``,
    ``stream_buffer_size``, ``batch_sampler`` or the number of ranks (given the same scores).

    Args:
        labeled_dataset, unlabeled_dataset, net, nclasses: see :class:`.Strategy`.
        args: as :class:`.EntropySamplingDropout`'s, and ``acquisition`` (default ``'power'``; ``'softmax'``
            samples ∝ exp(coldness · H), ``'top'`` is entropy sampling), ``coldness`` (β, a float > 0, default 1;
            large values approach the top-k), ``acquisition_seed`` (int, default ``None``: one draw from torch's
            global generator per ``select``).
    """

    default_args: ClassVar[Mapping[str, Any]] = {"acquisition": "power"}
