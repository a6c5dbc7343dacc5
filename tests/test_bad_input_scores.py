"""Bad arguments of ``mc_scores`` and ``mc_topk_update``: a clear error naming the argument, on every backend."""

from __future__ import annotations

import pytest
import torch
from conftest import error_case

import entropy_al

EMPTY = torch.empty(0, dtype=torch.int64)

OP_CASES = [
    # mc_scores
    error_case(
        lambda: entropy_al.mc_scores(torch.randn(5)),
        ValueError,
        r"`logits` of shape \[K, N, C\].*got shape \[5\]",
        "mc_scores-1d",
    ),
    error_case(
        lambda: entropy_al.mc_scores(torch.randn(1, 2, 3, 4)),
        ValueError,
        r"`logits` of shape \[K, N, C\] \(3 dims\)",
        "mc_scores-4d",
    ),
    error_case(
        lambda: entropy_al.mc_scores(torch.ones(2, 3, 4, dtype=torch.uint8)),
        TypeError,
        "`logits` of dtype .* got torch.uint8",
        "mc_scores-uint8",
    ),
    error_case(
        lambda: entropy_al.mc_scores(torch.ones(2, 3, 4, dtype=torch.complex128)),
        TypeError,
        "`logits` of dtype .* got torch.complex128",
        "mc_scores-complex128",
    ),
    error_case(
        lambda: entropy_al.mc_scores(torch.randn(2, 3, 4), None),
        ValueError,
        "`score` to be one of .* got None",
        "mc_scores-score-None",
    ),
    error_case(
        lambda: entropy_al.mc_scores(torch.randn(2, 3, 4), 0),
        ValueError,
        "`score` to be one of .* got 0",
        "mc_scores-score-int",
    ),
    # mc_topk_update
    error_case(
        lambda: entropy_al.mc_topk_update(torch.randn(3, 4), EMPTY, 0, 2),
        ValueError,
        "mc_topk_update: expected `logits` of shape",
        "mc_topk-2d",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.ones(2, 3, 4, dtype=torch.int64), EMPTY, 0, 2),
        TypeError,
        "mc_topk_update: expected `logits` of dtype",
        "mc_topk-int",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.ones(2, 3, 4, dtype=torch.bool), EMPTY, 0, 2),
        TypeError,
        "`logits` of dtype .* got torch.bool",
        "mc_topk-bool",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.ones(2, 3, 4, dtype=torch.complex64), EMPTY, 0, 2),
        TypeError,
        "`logits` of dtype .* got torch.complex64",
        "mc_topk-complex",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), torch.empty(0), 0, 2),
        TypeError,
        "mc_topk_update: expected `state`",
        "mc_topk-state-float",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), EMPTY, 0, 2.0),
        ValueError,
        "mc_topk_update: expected `k`",
        "mc_topk-k-float",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), EMPTY, -3, 2),
        ValueError,
        "mc_topk_update: expected `offset`",
        "mc_topk-offset-negative",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 1), EMPTY, 0, 2, "margin"),
        ValueError,
        "score 'margin' needs C >= 2",
        "mc_topk-margin-1-class",
    ),
]


@pytest.mark.parametrize("call, error, match", OP_CASES)
def test_ops_reject_bad_arguments_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()
