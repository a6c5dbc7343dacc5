"""The keyed-selection tests' model, pool and strategies (not a test module).

:class:`DyadicNet`'s weights and inputs are multiples of 1/8 small enough that every matmul is exact in float32 (and
dropout's 1/(1 − 0.5) = 2 is exact too): its logits are bit-identical whatever the batch size or the kernel's
summation order, so whole selections can be compared, ties included.
"""

from __future__ import annotations

from typing import Any

import torch
from strategy_fixtures import NUM_CLASSES, NUM_FEATURES, make_pool
from torch import nn

import entropy_al
from entropy_al.active_learning_strategies import ScoreStreamingStrategy

POOL = 90
BUDGET = 12
BASE_ARGS = {"device": "cpu", "n_drop": 4, "batch_size": 8, "mc_dropout": "keyed", "mc_seed": 1234}


def dyadic(t: torch.Tensor) -> torch.Tensor:
    return (t * 8).round().clamp(-16, 16) / 8


class DyadicNet(nn.Module):
    """Dropout → Linear → ReLU → Dropout → Linear on exactly representable values: batching-independent logits."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(NUM_FEATURES - 1, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, NUM_CLASSES)
        )
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(dyadic(parameter * 4))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(dyadic(features[:, 1:]))


def dyadic_pool(num_samples: int = POOL, seed: int = 5) -> torch.Tensor:
    return make_pool(num_samples, seed=seed)


def keyed_strategy(cls=entropy_al.EntropySamplingDropout, model: nn.Module | None = None, pool=None, **args: Any):
    pool = dyadic_pool() if pool is None else pool
    return cls(None, pool, model or DyadicNet(), NUM_CLASSES, {**BASE_ARGS, **args})


def keyed_leftovers(model: nn.Module) -> list[str]:
    """Modules that still carry an instance ``forward`` (keyed_mc_dropout's patch) after a call."""
    return [name for name, module in model.named_modules() if "forward" in module.__dict__]


class DistilStyleBALD(ScoreStreamingStrategy):
    """DISTIL's extension point: ``acquire_scores`` runs predict_prob_dropout_split on each stream buffer."""

    def acquire_scores(self, unlabeled_buffer):
        probs = self.predict_prob_dropout_split(unlabeled_buffer, 4)
        mean = probs.mean(0)
        entropy = -(mean * torch.log(mean)).sum(1)
        return entropy + (probs * torch.log(probs)).sum(2).mean(0)
