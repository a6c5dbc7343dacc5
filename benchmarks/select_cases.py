"""The models and pools that bench_select.py times select() on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class ToFloat(nn.Module):
    """uint8 images to float in [0, 1] (the CNN's pool is stored as uint8, as image datasets are)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255)


def mc_head() -> nn.Module:
    return nn.Sequential(nn.Dropout(0.2), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(512, 10),
    )  # fmt: skip


def cnn() -> nn.Module:
    return nn.Sequential(
        ToFloat(),
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10),
    )  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    model: Callable[[], nn.Module]
    pool: Callable[[int, torch.Generator], torch.Tensor]  # N -> the pool, on the CPU
    batch_size: int
    budget: int
    sizes: tuple[int, ...]
    n_drop: int = 10


CPU_CASES = [
    Case("MC head 128-64-10", mc_head, lambda n, g: torch.randn(n, 128, generator=g), 1024, 1000,
         (10_000, 100_000, 200_000, 1_000_000)),
    Case("MLP 784-512-512-10", mlp, lambda n, g: torch.randn(n, 784, generator=g), 256, 100,
         (10_000, 20_000, 100_000, 1_000_000)),
]  # fmt: skip
CUDA_CASES = [
    Case("CNN 32x32x3 (uint8)", cnn,
         lambda n, g: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), 256, 1000,
         (10_000, 100_000, 1_000_000)),
]  # fmt: skip
