"""StreamingTopK with 64-bit scores: exactly the stable sort, for float64, int64 and blocks of mixed dtypes."""

from __future__ import annotations

import pytest
import torch

from entropy_al import StreamingTopK


def stable_order(scores: torch.Tensor) -> list[int]:
    """``torch.sort(descending=True, stable=True)`` with NaN below every number."""
    lowest = torch.finfo(torch.float64).min if scores.is_floating_point() else None
    if lowest is not None and torch.isnan(scores).any():
        # Rank NaN below -inf: sort (is_nan ascending) first, then by score, both stable.
        by_score = torch.sort(scores.nan_to_num(nan=-float("inf")), descending=True, stable=True).indices
        return sorted(by_score.tolist(), key=lambda i: bool(torch.isnan(scores[i])))
    return torch.sort(scores, descending=True, stable=True).indices.tolist()


def fed(blocks: list[torch.Tensor], k: int, order: list[int] | None = None) -> StreamingTopK:
    """A StreamingTopK fed ``blocks`` (consecutive pool ranges), in ``order`` of the blocks."""
    offsets = [0]
    for block in blocks:
        offsets.append(offsets[-1] + block.numel())
    topk = StreamingTopK(k)
    for b in order if order is not None else range(len(blocks)):
        topk.update(blocks[b], offsets[b])
    return topk


def test_float64_ties_negative_zero_infinities_and_nan():
    scores = torch.tensor(
        [0.0, -0.0, float("nan"), 1.0 + 2e-16 * 2, -float("inf"), 1.0, float("inf"), -1e-300, 1e-300, 1.0],
        dtype=torch.float64,
    )
    for k in (1, 4, len(scores)):
        for block in (1, 3, len(scores)):
            blocks = list(scores.split(block))
            topk = fed(blocks, k, list(reversed(range(len(blocks)))))
            assert topk.indices.tolist() == stable_order(scores)[:k]
    values = fed([scores], len(scores)).values
    assert values.dtype == torch.float64
    assert torch.equal(values[:-1], scores[stable_order(scores)][:-1]) and torch.isnan(values[-1])


def test_int64_scores_are_exact_beyond_float_precision():
    base = 2**62
    scores = torch.tensor([base, base + 3, base + 1, base + 3, -base, 2**63 - 1, -(2**63)], dtype=torch.int64)
    topk = fed(list(scores.split(2)), 5)
    assert topk.indices.tolist() == stable_order(scores)[:5]
    assert topk.values.dtype == torch.int64 and topk.values.tolist() == sorted(scores.tolist(), reverse=True)[:5]


@pytest.mark.parametrize("first", [torch.float32, torch.float64, torch.int64, torch.int32, torch.float16])
@pytest.mark.parametrize("second", [torch.float32, torch.float64, torch.int64])
def test_mixed_blocks_promote_to_an_exact_common_order(first, second):
    """Mixed dtypes are ranked as float64 (as int64 when all blocks are integers): the stable sort of the scores
    promoted that way, whatever order the blocks come in."""
    generator = torch.Generator().manual_seed(7)
    a = (torch.randint(-5, 5, (9,), generator=generator) * 0.5).to(first)
    b = (torch.randint(-5, 5, (11,), generator=generator) * 0.5).to(second)
    if not first.is_floating_point and not second.is_floating_point:
        common = torch.int64
    elif first == second == torch.float32 or {first, second} == {torch.float16, torch.float32}:
        common = torch.float32
    else:
        common = torch.float64
    whole = torch.cat([a.to(common), b.to(common)])
    for order in ([0, 1], [1, 0]):
        topk = fed([a, b], 12, order)
        assert topk.indices.tolist() == stable_order(whole)[:12]
        assert topk.values.dtype == common


def test_float32_state_promoted_keeps_its_nan_last_and_ties():
    topk = StreamingTopK(6)
    topk.update(torch.tensor([float("nan"), 1.0, 1.0], dtype=torch.float32), 0)
    topk.update(torch.tensor([1.0 + 1e-12, 1.0, -float("inf")], dtype=torch.float64), 3)
    assert topk.indices.tolist() == [3, 1, 2, 4, 5, 0]


def test_indexed_updates_and_logits_after_a_64_bit_block():
    topk = StreamingTopK(4)
    topk.update_indexed(torch.tensor([2.0 + 1e-12, 2.0], dtype=torch.float64), torch.tensor([7, 2]))
    topk.update(torch.tensor([2.0 + 2e-12], dtype=torch.float64), 0)
    logits = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))
    topk.update_logits(logits, 3, "entropy")  # entropies of 4 classes are at most log(4) < 2
    assert topk.indices.tolist()[:3] == [0, 7, 2] and topk.seen == 5


def test_a_rejected_64_bit_update_leaves_the_state_untouched():
    topk = StreamingTopK(3)
    topk.update(torch.tensor([1.0, 5.0], dtype=torch.float64), 0)
    before = topk.indices.clone(), topk.values.clone(), topk.seen
    for bad in (
        lambda: topk.update(torch.tensor([[9.0]], dtype=torch.float64), 2),
        lambda: topk.update(torch.tensor([True]), 2),
        lambda: topk.update(torch.tensor([9.0], dtype=torch.float64), -1),
    ):
        with pytest.raises((TypeError, ValueError)):
            bad()
        assert torch.equal(topk.indices, before[0]) and torch.equal(topk.values, before[1]) and topk.seen == before[2]
