"""The active-learning demo: MC-dropout entropy and BALD against random selection on scikit-learn's digits.

Each (strategy, seed) run starts from the same random labelled seed set and, every round, retrains a dropout MLP
from scratch on the labelled set, measures test accuracy, then labels ``budget`` more pool samples chosen by the
strategy. Retraining from scratch (rather than warm-starting) makes each round's model a function of its labelled
set and seed only, so the strategies are compared on the data they picked, not on their optimisation history; it
also avoids the generalisation loss of warm-starting (Ash & Adams, 2020). With the same seed, round 0 is therefore
identical for every strategy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from .demo_checks import check_device, check_out

__all__ = ["DemoConfig", "DemoResult", "QUICK", "STRATEGIES", "check_config", "run_demo"]

NUM_CLASSES = 10
STRATEGIES = ("entropy", "bald", "random")


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo's numbers (besides the torch/sklearn versions)."""

    rounds: int = 10  # acquisition rounds; accuracy is measured rounds + 1 times
    budget: int = 20  # samples labelled per round
    # Random labelled seed set, shared by all strategies of a seed. From 20 (about 2 per class, 58% accuracy),
    # uncertainty sampling is no better than random for the first 100 labels: the cold-start problem.
    initial: int = 50
    seeds: int = 5  # seeds 0 .. seeds - 1: data split, seed set, model inits, dropout masks
    epochs: int = 100  # training epochs per round, minibatches of 32
    n_drop: int = 20  # MC-dropout passes per selection
    dropout: float = 0.5
    test_fraction: float = 0.3
    strategies: tuple[str, ...] = STRATEGIES
    device: str = "cpu"
    out: str = "demo_output"
    progress: bool = True


# A few seconds end to end: for tests and smoke runs, not for conclusions.
QUICK = {"rounds": 2, "budget": 10, "initial": 30, "seeds": 1, "epochs": 50, "n_drop": 5}


@dataclass
class DemoResult:
    config: DemoConfig
    labeled_sizes: list[int]  # labelled-set size at each measurement
    accuracy: dict[str, np.ndarray]  # strategy -> test accuracy in [0, 1], shape [seeds, rounds + 1]
    select_seconds: dict[str, float]  # strategy -> total time inside selection
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class _Split:
    x_pool: torch.Tensor
    y_pool: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


class _Unlabeled(Dataset):
    """Pool items as bare feature tensors, the form DISTIL's strategies pass to ``model(x)``: no labels leak."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.x[index]


def _load_split(seed: int, test_fraction: float, device: torch.device) -> _Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_pool)  # pool statistics only: the test set stays unseen

    def features(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(scaler.transform(a), dtype=torch.float32, device=device)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.int64, device=device)

    return _Split(features(x_pool), labels(y_pool), features(x_test), labels(y_test))


def make_mlp(in_features: int = 64, hidden: int = 128, dropout: float = 0.5) -> nn.Module:
    """64-128-128-10 MLP; the dropout layers are what MC-dropout samples at selection time."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, NUM_CLASSES),
    )


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int = 32) -> None:
    # Fused Adam: each step is a few tiny matmuls, so per-step overhead, not arithmetic, sets the demo's runtime.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), device=x.device).split(batch_size):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).float().mean().item()


def _select(
    name: str,
    model: nn.Module,
    split: _Split,
    labeled: np.ndarray,
    unlabeled: np.ndarray,
    config: DemoConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pool indices of the ``budget`` samples the strategy ``name`` labels next."""
    if name == "random":
        return rng.choice(unlabeled, size=min(config.budget, len(unlabeled)), replace=False)
    from . import BALDDropout, EntropySamplingDropout

    cls = {"entropy": EntropySamplingDropout, "bald": BALDDropout}[name]
    strategy = cls(
        TensorDataset(split.x_pool[labeled], split.y_pool[labeled]),
        _Unlabeled(split.x_pool[unlabeled]),
        model,
        NUM_CLASSES,
        {"batch_size": 1024, "device": config.device, "n_drop": config.n_drop},
    )
    picked = strategy.select(config.budget)
    # A strategy that returned nothing, repeats or out-of-range indices would make the comparison meaningless.
    expected = min(config.budget, len(unlabeled))
    if len(set(picked)) != expected or len(picked) != expected or not all(0 <= i < len(unlabeled) for i in picked):
        raise RuntimeError(f"{cls.__name__}.select({config.budget}) returned {picked} for a pool of {len(unlabeled)}")
    return unlabeled[np.asarray(picked, dtype=np.int64)]


def _run_one(
    name: str, seed: int, split: _Split, config: DemoConfig, bar: tqdm, timing: dict[str, float]
) -> list[float]:
    """Test accuracy after each round of one strategy on one seed."""
    n_pool = len(split.x_pool)
    labeled = np.random.default_rng(seed).choice(n_pool, size=config.initial, replace=False)
    random_rng = np.random.default_rng([seed, 1])
    accuracies = []
    for round_ in range(config.rounds + 1):
        bar.set_postfix_str(f"{name} seed {seed} round {round_}/{config.rounds}")
        # The same initial weights for the same (seed, round): the strategies differ only in the data they picked.
        torch.manual_seed(seed * 1000 + round_)
        model = make_mlp(dropout=config.dropout).to(config.device)
        _train(model, split.x_pool[labeled], split.y_pool[labeled], config.epochs)
        accuracies.append(_accuracy(model, split.x_test, split.y_test))
        bar.update()
        if round_ == config.rounds:
            break
        unlabeled = np.setdiff1d(np.arange(n_pool), labeled)
        start = time.perf_counter()
        picked = _select(name, model, split, labeled, unlabeled, config, random_rng)
        timing[name] += time.perf_counter() - start
        labeled = np.concatenate([labeled, picked])
    return accuracies


def check_config(config: DemoConfig) -> None:
    """A ``ValueError`` naming the first bad field; creates the output folder (proving it writable)."""
    unknown = set(config.strategies) - set(STRATEGIES)
    if unknown or not config.strategies:
        raise ValueError(f"demo: expected strategies among {STRATEGIES}, got {config.strategies}")
    for key in ("rounds", "budget", "initial", "seeds", "epochs", "n_drop"):
        if getattr(config, key) < (0 if key == "rounds" else 1):
            raise ValueError(f"demo: expected `{key}` >= {0 if key == 'rounds' else 1}, got {getattr(config, key)}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"demo: expected 0 <= `dropout` < 1, got {config.dropout}")
    check_device(config.device)
    check_out(config.out)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Runs CPU ops on one thread. The demo's tiny matmuls gain nothing from intra-op threads (measured: 43 s on two
    idle cores, 46 s on one), OpenMP threads slow down many-fold on cores shared with other work, and a fixed
    thread count keeps the float reduction order, hence the numbers, the same on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_demo(config: DemoConfig) -> DemoResult:
    """Runs every (strategy, seed) learning curve and writes the table, the raw numbers and the plot."""
    from .demo_report import write_outputs  # matplotlib is only needed once the numbers exist

    check_config(config)
    start = time.perf_counter()
    accuracy = {name: np.zeros((config.seeds, config.rounds + 1)) for name in config.strategies}
    timing = dict.fromkeys(config.strategies, 0.0)
    total = len(config.strategies) * config.seeds * (config.rounds + 1)
    with _one_thread(), tqdm(total=total, desc="active learning", unit="round", disable=not config.progress) as bar:
        for seed in range(config.seeds):
            split = _load_split(seed, config.test_fraction, torch.device(config.device))
            if config.initial + config.budget * config.rounds > len(split.x_pool):
                raise ValueError(f"demo: initial + budget * rounds exceeds the pool of {len(split.x_pool)}")
            for name in config.strategies:
                accuracy[name][seed] = _run_one(name, seed, split, config, bar, timing)
    sizes = [config.initial + config.budget * r for r in range(config.rounds + 1)]
    result = DemoResult(config, sizes, accuracy, timing, time.perf_counter() - start)
    result.files = write_outputs(result, Path(config.out))
    return result
