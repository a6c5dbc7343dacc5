"""Bad arguments of ``topk_update`` and ``StreamingTopK``: a clear error naming the argument, state untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CUDA, error_case

import entropy_al
from entropy_al import reference

EMPTY = torch.empty(0, dtype=torch.int64)
IDS = torch.arange(4)
PASSES = torch.zeros(4, dtype=torch.int64)
X = torch.ones(4, 3)

OP_CASES = [
    # topk_update
    error_case(
        lambda: entropy_al.topk_update(torch.randn(2, 3), EMPTY, 0, 2),
        TypeError,
        "`scores` to be a 1-D floating tensor, got torch.float32 tensor of shape \\[2, 3\\]",
        "topk-scores-2d",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.ones(3, dtype=torch.int32), EMPTY, 0, 2),
        TypeError,
        "`scores` to be a 1-D floating tensor, got torch.int32",
        "topk-scores-int",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.ones(3, dtype=torch.bool), EMPTY, 0, 2),
        TypeError,
        "`scores` .* got torch.bool",
        "topk-scores-bool",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.ones(3, dtype=torch.complex64), EMPTY, 0, 2),
        TypeError,
        "`scores` .* got torch.complex64",
        "topk-scores-complex",
    ),
    error_case(
        lambda: entropy_al.topk_update([0.5, 1.0], EMPTY, 0, 2),
        TypeError,
        "`scores` to be a 1-D floating tensor",
        "topk-scores-list",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY.reshape(0, 1), 0, 2),
        TypeError,
        "`state` to be a 1-D int64 tensor",
        "topk-state-2d",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY.int(), 0, 2),
        TypeError,
        "`state` .* got torch.int32",
        "topk-state-int32",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), [], 0, 2),
        TypeError,
        "`state` to be a 1-D int64 tensor",
        "topk-state-list",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, 1.5),
        ValueError,
        "`k` to be an int >= 0, got 1.5",
        "topk-k-float",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, True),
        ValueError,
        "`k` to be an int >= 0, got True",
        "topk-k-bool",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, None),
        ValueError,
        "`k` to be an int >= 0, got None",
        "topk-k-None",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, "2"),
        ValueError,
        "`k` to be an int >= 0, got '2'",
        "topk-k-str",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 2.0, 2),
        ValueError,
        "`offset` to be an int >= 0, got 2.0",
        "topk-offset-float",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, None, 2),
        ValueError,
        "`offset` to be an int >= 0, got None",
        "topk-offset-None",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, np.int64(-1), 2),
        ValueError,
        "`offset` to be an int >= 0",
        "topk-offset-negative-numpy",
    ),
    # StreamingTopK
    error_case(
        lambda: entropy_al.StreamingTopK(None),
        ValueError,
        "StreamingTopK: expected `k` to be an int >= 0, got None",
        "stk-k-None",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(2.0), ValueError, "StreamingTopK: expected `k` .* got 2.0", "stk-k-float"
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(True), ValueError, "StreamingTopK: expected `k` .* got True", "stk-k-bool"
    ),
    error_case(lambda: entropy_al.StreamingTopK("3"), ValueError, "StreamingTopK: expected `k`", "stk-k-str"),
    error_case(
        lambda: entropy_al.StreamingTopK(2**63),
        ValueError,
        r"StreamingTopK: expected `k` to be an int >= 0 and below 2\*\*63 .* got 9223372036854775808",
        "stk-k-2**63",
    ),
    error_case(lambda: entropy_al.StreamingTopK(2**64 + 3), ValueError, r"`k` .* below 2\*\*63", "stk-k-2**64"),
    error_case(
        lambda: entropy_al.StreamingTopK(torch.tensor(True)),
        ValueError,
        r"StreamingTopK: expected `k` .* got tensor\(True\)",
        "stk-k-bool-tensor",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, 2**63),
        ValueError,
        r"topk_update: expected `k` .* below 2\*\*63",
        "topk-k-2**63",
    ),
    error_case(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), EMPTY, 0, 2**63),
        ValueError,
        r"mc_topk_update: expected `k` .* below 2\*\*63",
        "mc_topk-k-2**63",
    ),
    error_case(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 2**64, 2),
        ValueError,
        r"topk_update: expected `offset` .* below 2\*\*63",
        "topk-offset-2**64",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3, "gpu7"),
        ValueError,
        "StreamingTopK: expected `device` .* got 'gpu7'",
        "stk-device-str",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3, 1.5),
        ValueError,
        "StreamingTopK: expected `device` .* got 1.5",
        "stk-device-float",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3).update(torch.randn(2, 2), 0),
        TypeError,
        "`scores` to be a 1-D floating tensor",
        "stk-update-2d",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3).update(torch.arange(4) > 1, 0),
        TypeError,
        "`scores` .* got torch.bool",
        "stk-update-bool",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3).update(torch.randn(4), 1.0),
        ValueError,
        "`offset` to be an int >= 0, got 1.0",
        "stk-update-offset-float",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3).update_logits(torch.randn(2, 3), 0),
        ValueError,
        "`logits` of shape \\[K, N, C\\]",
        "stk-logits-2d",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3).update_logits(torch.ones(2, 3, 4, dtype=torch.int8), 0),
        TypeError,
        "`logits` of dtype",
        "stk-logits-int8",
    ),
    error_case(
        lambda: entropy_al.StreamingTopK(3).update_logits(torch.randn(2, 3, 4), 0, "max"),
        ValueError,
        "`score` to be one of",
        "stk-logits-score",
    ),
]


@pytest.mark.parametrize("call, error, match", OP_CASES)
def test_ops_reject_bad_arguments_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a process without CUDA")
def test_streaming_topk_on_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="StreamingTopK: expected `device` to be a device this process can use"):
        entropy_al.StreamingTopK(3, device="cuda")


def test_largest_int64_k_is_accepted_and_selects_everything():
    topk = entropy_al.StreamingTopK(2**63 - 1)
    topk.update(torch.tensor([0.5, 2.0, 1.0]), 0)
    topk.update_logits(torch.zeros(2, 2, 3), 3)
    assert topk.indices.tolist() == [1, 3, 4, 2, 0]  # uniform logits over 3 classes score log 3 ≈ 1.1


def test_numpy_integers_and_floats_are_accepted_like_python_numbers():
    """numpy scalars (e.g. a budget or seed computed with numpy) mean the same as the Python numbers."""
    scores = torch.tensor([0.5, 2.0, -1.0, 2.0, 7.0])
    state = entropy_al.topk_update(scores, EMPTY, 0, 3)
    assert torch.equal(entropy_al.topk_update(scores, EMPTY, np.int64(0), np.int32(3)), state)
    logits = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    fused = entropy_al.mc_topk_update(logits, EMPTY, 0, 2)
    assert torch.equal(entropy_al.mc_topk_update(logits, EMPTY, np.uint8(0), np.int64(2)), fused)
    topk = entropy_al.StreamingTopK(np.int64(3))
    topk.update(scores, np.int64(0))
    assert topk.k == 3 and type(topk.k) is int and topk.indices.tolist() == [4, 1, 3]
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    expected = entropy_al.keyed_dropout(x, 0.25, 7, IDS, 2)
    assert torch.equal(entropy_al.keyed_dropout(x, np.float64(0.25), np.int64(7), IDS, np.int64(2)), expected)
    assert torch.equal(entropy_al.keyed_dropout(x, np.float32(0.25), np.uint64(7), IDS, np.int32(2)), expected)
    assert torch.equal(expected, reference.keyed_dropout_reference(x, 0.25, 7, IDS, torch.full((4,), 2)))


def test_a_rejected_update_leaves_streaming_topk_untouched():
    topk = entropy_al.StreamingTopK(3)
    topk.update(torch.tensor([1.0, 5.0]), 0)
    state, seen = topk.state.clone(), topk.seen
    for bad in (
        lambda: topk.update(torch.tensor([[9.0]]), 2),
        lambda: topk.update(torch.tensor([9.0]), -1),
        lambda: topk.update_logits(torch.ones(1, 1, 2, dtype=torch.int32), 2),
        lambda: topk.update_logits(torch.randn(1, 1, 2), 2, "nope"),
    ):
        with pytest.raises((TypeError, ValueError)):
            bad()
        assert torch.equal(topk.state, state) and topk.seen == seen
    topk.update(torch.tensor([3.0]), 2)
    assert topk.indices.tolist() == [1, 2, 0] and topk.seen == 3


@CUDA
@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: entropy_al.topk_update(torch.randn(3, device="cuda"), EMPTY, 0, 2),
            "`state` on cuda:0 like the scores, got cpu",
        ),
        (
            lambda: entropy_al.topk_update(torch.randn(3), EMPTY.cuda(), 0, 2),
            "`state` on cpu like the scores, got cuda:0",
        ),
        (lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4, device="cuda"), EMPTY, 0, 2), "`state` on cuda:0"),
        (lambda: entropy_al.StreamingTopK(2, "cpu").update(torch.randn(3, device="cuda"), 0), "`state` on cuda:0"),
        (lambda: entropy_al.StreamingTopK(2, "cuda").update_logits(torch.randn(2, 3, 4), 0), "`state` on cpu"),
        (
            lambda: entropy_al.keyed_dropout(X.cuda(), 0.5, 0, IDS, PASSES.cuda()),
            "`sample_ids` on cuda:0 like `x`, got cpu",
        ),
        (
            lambda: entropy_al.keyed_dropout(X.cuda(), 0.5, 0, IDS.cuda(), PASSES),
            "`pass_ids` on cuda:0 like `x`, got cpu",
        ),
    ],
)
def test_mixed_devices_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
