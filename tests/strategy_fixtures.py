"""Small models, datasets and references shared by the strategy tests (not a test module).

Pool items carry their pool index in feature 0, so a forward hook can tell which sample each output row belongs
to whatever the loop order, batch size or number of passes per forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import entropy_al
from entropy_al import reference
from entropy_al.scores import SCORES

# The MC-dropout strategy of each registered score.
STRATEGIES: dict[str, type[entropy_al.ScoreStreamingStrategy]] = {
    cls.mc_score: cls
    for cls in (
        entropy_al.EntropySamplingDropout,
        entropy_al.BALDDropout,
        entropy_al.MarginSamplingDropout,
        entropy_al.LeastConfidenceSamplingDropout,
    )
}
assert tuple(STRATEGIES) == SCORES, "every registered score has its strategy"
NUM_FEATURES = 6
NUM_CLASSES = 4


def strategy(score: str, pool: Any, model: nn.Module, device: Any = "cpu", **args: Any) -> Any:
    """The MC strategy of ``score`` over ``pool`` on ``device``, with ``args``."""
    return STRATEGIES[score](None, pool, model, NUM_CLASSES, {"device": device, **args})


def make_pool(num_samples: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """``[N, NUM_FEATURES]`` features with the pool index in column 0 (scaled down so it does not dominate)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_samples, NUM_FEATURES, generator=generator) * scale
    features[:, 0] = torch.arange(num_samples, dtype=torch.float32)
    return features


def pool_ids(inputs: torch.Tensor) -> torch.Tensor:
    return inputs[:, 0].round().long()


class FeatureNet(nn.Module):
    """An MLP ``features → logits``; the pool-index column is divided down. Optional dropout and BatchNorm."""

    def __init__(self, dropout: float = 0.3, batchnorm: bool = False, nclasses: int = NUM_CLASSES, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Linear(NUM_FEATURES, 16)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(16))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(16, nclasses))
        self.body = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scaled = torch.cat([features[:, :1] / 64.0, features[:, 1:]], dim=1)
        return self.body(scaled) * 2.0


def deterministic_net(seed: int = 0) -> nn.Module:
    """FeatureNet with its dropout module kept (so passes can be stacked) but switched off."""
    model = FeatureNet(dropout=0.5, seed=seed)
    model.body[2].p = 0.0
    return model


class EmbeddingNet(nn.Module):
    """DISTIL's model protocol: ``forward(x, last=False, freeze=False)`` and ``get_embedding_dim()``."""

    def __init__(self, nclasses: int = NUM_CLASSES, dim: int = 5):
        super().__init__()
        torch.manual_seed(1)
        self.trunk = nn.Sequential(nn.Linear(NUM_FEATURES, dim), nn.Tanh(), nn.Dropout(0.2))
        self.head = nn.Linear(dim, nclasses)
        self.dim = dim

    def forward(self, features: torch.Tensor, last: bool = False, freeze: bool = False) -> Any:
        if freeze:
            with torch.no_grad():
                embedding = self.trunk(features)
        else:
            embedding = self.trunk(features)
        logits = self.head(embedding)
        return (logits, embedding) if last else logits

    def get_embedding_dim(self) -> int:
        return self.dim


class RowRuleNet(nn.Module):
    """Logits from a fixed linear map (deterministic unless ``dropout``), with chosen samples given fixed rows.

    Args:
        special: pool index → ``[C]`` logits that replace the sample's row (NaN, inf, huge gaps, ...).
        nclasses: output width.
        dropout: dropout probability on the input features (0: a deterministic model with no dropout module).
    """

    def __init__(
        self, special: Mapping[int, list[float]] | None = None, nclasses: int = NUM_CLASSES, dropout: float = 0.0
    ):
        super().__init__()
        torch.manual_seed(2)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(NUM_FEATURES - 1, nclasses)
        self.special = dict(special or {})
        self.calls = 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.linear(self.dropout(features[:, 1:])) * 2.0
        for row, index in enumerate(pool_ids(features).tolist()):
            if index in self.special:
                logits[row] = torch.tensor(self.special[index], dtype=logits.dtype, device=logits.device)
        return logits


class FailingNet(nn.Module):
    """Wraps a model and raises on its ``fail_at``-th call (1-based), after the earlier calls ran normally."""

    def __init__(self, inner: nn.Module, fail_at: int):
        super().__init__()
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom: the model failed halfway through the pool")
        return self.inner(features)


class ListDataset(Dataset):
    """A map-style dataset over a list of items."""

    def __init__(self, items: list[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def as_items(features: torch.Tensor, kind: str, labels: torch.Tensor | None = None) -> Dataset:
    """The pool as a dataset of ``kind`` items: tensor, dict, mapping (read-only proxy), tuple or list pairs."""
    labels = labels if labels is not None else torch.zeros(len(features), dtype=torch.int64)
    build: dict[str, Callable[[int], Any]] = {
        "tensor": lambda i: features[i],
        "dict": lambda i: {"features": features[i]},
        "mapping": lambda i: MappingProxyType({"features": features[i]}),
        "tuple": lambda i: (features[i], labels[i]),
        "list": lambda i: [features[i], labels[i]],
    }
    return ListDataset([build[kind](i) for i in range(len(features))])


class LogitRecorder:
    """Forward hook collecting every output row by pool index: the logits a selection actually saw."""

    def __init__(self, model: nn.Module):
        self.rows: dict[int, list[torch.Tensor]] = {}
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        for index, row in zip(pool_ids(inputs[0]).tolist(), output.detach().cpu(), strict=True):
            self.rows.setdefault(index, []).append(row.clone())

    def stack(self, num_samples: int) -> torch.Tensor:
        """``[n_drop, N, C]`` logits, each sample's passes in the order they ran."""
        self.handle.remove()
        return torch.stack([torch.stack(self.rows[i]) for i in range(num_samples)], dim=1)


def stable_selection(scores: torch.Tensor, budget: int) -> list[int]:
    """The contract's order: score descending, ties to the lower index, NaN last."""
    keyed = torch.where(torch.isnan(scores), torch.full_like(scores, -float("inf")), scores)
    order = torch.sort(keyed, descending=True, stable=True).indices
    nan_last = torch.cat([order[~torch.isnan(scores[order])], order[torch.isnan(scores[order])]])
    return nan_last[:budget].tolist()


def reference_selection(logits: torch.Tensor, score: str, budget: int, min_gap: float = 1e-5) -> list[int]:
    """Stable-sort selection of the float64 reference scores; asserts the cut is not a near-tie.

    A near-tie (closer than float32 scoring error) would make the expected order ill-defined, so the test
    would prove nothing; the fixtures' seeds are chosen so that it never happens.
    """
    scores = reference.mc_scores_reference(logits.double(), score)
    expected = stable_selection(scores, budget)
    ranked = scores[~torch.isnan(scores)].sort(descending=True).values[: budget + 1]
    if ranked.numel() > 1:
        assert (ranked[:-1] - ranked[1:]).min() > min_gap, "near-tie in the fixture: pick another seed"
    return expected


def module_flags(model: nn.Module) -> list[bool]:
    return [module.training for module in model.modules()]


def tensor_snapshot(model: nn.Module) -> dict[str, tuple[int, torch.Tensor]]:
    """Every parameter and buffer: (object id, value copy)."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {name: (id(tensor), tensor.detach().clone()) for name, tensor in named}


def assert_same_tensors(model: nn.Module, snapshot: dict[str, tuple[int, torch.Tensor]]) -> None:
    current = tensor_snapshot(model)
    assert current.keys() == snapshot.keys()
    for name, (identity, value) in snapshot.items():
        assert current[name][0] == identity, f"{name} was replaced by another tensor object"
        assert torch.equal(current[name][1], value), f"{name} changed"


class ReturnsNet(nn.Module):
    """A dropout model that returns ``make(logits, features)`` instead of its logits, with or without last=True."""

    def __init__(self, make):
        super().__init__()
        self.linear = nn.Linear(NUM_FEATURES, NUM_CLASSES)
        self.dropout = nn.Dropout(0.2)
        self.make = make

    def forward(self, x, last=False, freeze=False):
        return self.make(self.dropout(self.linear(x)), x)


def mc_strategy(model, cls=entropy_al.EntropySamplingDropout, pool=None, **args):
    """A strategy over ``pool`` (default: 8 samples of :func:`make_pool`) with 2 passes in batches of 3, on the CPU."""
    pool = make_pool(8) if pool is None else pool
    return cls(None, pool, model, NUM_CLASSES, {"device": "cpu", "n_drop": 2, "batch_size": 3, **args})


def assert_fails_cleanly(strategy, call, error, match):
    """``call(strategy)`` raises; the model is left as found and the message names the method."""
    model = strategy.model
    flags = module_flags(model) if isinstance(model, nn.Module) else None
    tensors = tensor_snapshot(model) if isinstance(model, nn.Module) else None
    with pytest.raises(error, match=match) as info:
        call(strategy)
    assert str(info.value).startswith(type(strategy).__name__ + "."), "the message names the method"
    if flags is not None:
        assert module_flags(model) == flags
        assert_same_tensors(model, tensors)
