"""Streaming top-k against the stable-sort reference, for any split of the pool into blocks, on every backend."""

import random

import pytest
import torch
from conftest import DEVICES

import entropy_al
from entropy_al import reference


def sort_reference(scores, k):
    """Indices of the best k: score descending, ties to the lower index, NaN below every number."""
    values = scores.double().tolist()
    order = sorted(
        range(len(values)), key=lambda i: (values[i] != values[i], -values[i] if values[i] == values[i] else 0, i)
    )
    return order[:k]


def random_blocks(n, rng, max_block=None):
    """Random cut points (empty blocks included), returned in a random order."""
    cuts = sorted(rng.randint(0, n) for _ in range(rng.randint(0, 12)))
    bounds = [0] + cuts + [n]
    blocks = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    if max_block:
        blocks = [(s, min(s + max_block, e)) for s, e in blocks for s in range(s, max(e, s + 1), max_block)]
    rng.shuffle(blocks)
    return blocks


def tricky_scores(n, generator, kind):
    if kind == "random":
        return torch.randn(n, generator=generator)
    if kind == "ties":  # heavily quantized: most comparisons are ties broken by index
        return torch.randint(0, 4, (n,), generator=generator).float() / 3
    scores = torch.randn(n, generator=generator)
    special = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, float("nan")])
    positions = torch.randint(0, n, (n // 5 + 1,), generator=generator)
    scores[positions] = special[torch.arange(positions.numel()) % special.numel()]
    return scores


class FallbackTopK(entropy_al.StreamingTopK):
    """The same class driven by the pure-PyTorch merge, to check that backend too."""

    def update(self, scores, offset):
        self.state = reference.topk_update_reference(scores, self.state, offset, self.k)


TOPK_CLASSES = [pytest.param(entropy_al.StreamingTopK, id="active"), pytest.param(FallbackTopK, id="fallback")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("topk_class", TOPK_CLASSES)
@pytest.mark.parametrize("kind", ["random", "ties", "special"])
@pytest.mark.parametrize("n", [0, 1, 37, 1000])
def test_equals_stable_sort_for_any_blocks(device, topk_class, kind, n):
    generator = torch.Generator().manual_seed(n * 31 + len(kind))
    rng = random.Random(n + len(kind))
    scores = tricky_scores(n, generator, kind) if n else torch.empty(0)
    for k in sorted({0, 1, 7, max(n - 1, 0), n, n + 5}):
        for _ in range(3):
            topk = topk_class(k, device=device)
            for start, end in random_blocks(n, rng):
                topk.update(scores[start:end].to(device), start)
            values, indices = topk.result()
            expected = sort_reference(scores, k)
            assert indices.cpu().tolist() == expected, (k, kind)
            assert torch.equal(values.cpu(), scores[expected].float()) or torch.allclose(
                values.cpu(), scores[expected].float(), equal_nan=True
            )


@pytest.mark.parametrize("device", DEVICES)
def test_many_small_blocks_and_dtypes(device):
    generator = torch.Generator().manual_seed(5)
    scores = tricky_scores(3000, generator, "ties")
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        block = scores.to(dtype)
        topk = entropy_al.StreamingTopK(100, device=device)
        for start in range(0, 3000, 7):
            topk.update(block[start : start + 7].to(device), start)
        assert topk.indices.cpu().tolist() == sort_reference(block.float(), 100), dtype


def test_nan_only_when_fewer_than_k_numbers():
    scores = torch.tensor([float("nan"), 1.0, float("nan"), -float("inf"), 2.0])
    topk = entropy_al.StreamingTopK(4)
    topk.update(scores, 0)
    assert topk.indices.tolist() == [4, 1, 3, 0]
    assert torch.isnan(topk.values[3]) and topk.values[:3].tolist() == [2.0, 1.0, -float("inf")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", reference.SCORES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fused_form_equals_scores_then_sort(device, score, dtype):
    generator = torch.Generator().manual_seed(11)
    logits = (torch.randn(4, 2000, 10, generator=generator) * 4).to(dtype)
    logits[:, ::97] = logits[:, :1]  # duplicated samples: exact score ties across blocks
    logits[2, 500, 3] = float("nan")
    logits = logits.to(device)
    scores = entropy_al.mc_scores(logits, score)
    rng = random.Random(3)
    for k in (0, 1, 7, 300, 2000, 2005):
        topk = entropy_al.StreamingTopK(k, device=device)
        for start, end in random_blocks(2000, rng, max_block=500):
            topk.update_logits(logits[:, start:end], start, score)
        assert topk.indices.cpu().tolist() == sort_reference(scores.cpu(), k), k


def test_keys_round_trip_and_order():
    scores = torch.tensor([1.5, -0.0, 0.0, float("-inf"), float("inf"), float("nan"), -3.25, 1e-40])
    keys = reference.encode_keys(scores, 10)
    values, indices = reference.decode_keys(keys)
    assert indices.tolist() == list(range(10, 18))
    expected = torch.where(scores == 0, torch.zeros_like(scores), scores)
    assert torch.allclose(values, expected, equal_nan=True)
    order = keys.argsort(descending=True).tolist()
    assert order == [4, 0, 7, 1, 2, 6, 3, 5]  # -0.0 ties +0.0 and the lower index wins; NaN last


def test_bad_arguments():
    with pytest.raises(ValueError, match="StreamingTopK: expected `k` to be an int >= 0, got -1"):
        entropy_al.StreamingTopK(-1)
    topk = entropy_al.StreamingTopK(3)
    with pytest.raises(ValueError, match="expected `offset` to be an int >= 0"):
        topk.update(torch.randn(4), -2)
    with pytest.raises(TypeError, match="expected `scores` to be a 1-D floating tensor"):
        topk.update(torch.arange(4) > 1, 0)  # integer scores are ranked exactly; bool is no score
    with pytest.raises(ValueError, match="pool indices must be below 2\\*\\*32"):
        topk.update(torch.randn(4), 2**32 - 2)
