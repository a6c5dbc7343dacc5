"""Bad input at every public entry point: a clear error naming the argument; no crash, hang or partial result.

Table-driven: each row is a call, the exception type and a regex the message must match (it names the argument).
It fills the gaps left by the error tests next to each feature: test_registration.py (``mc_scores``' logits and
score, ``topk_update``'s state), test_topk.py (``StreamingTopK``'s k, offset and scores), test_keyed_dropout.py
(``keyed_dropout``'s dtypes, p range, ids; ``keyed_mc_dropout``'s layouts) and test_strategies.py (the ``args`` keys
of one strategy, budgets, nclasses, model output in ``select``).

After a strategy method fails, the model's train/eval flags, parameters and buffers are as before (no partial
state), nothing was selected, and the same strategy still works once the input is fixed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from strategy_fixtures import (
    NUM_CLASSES,
    NUM_FEATURES,
    EmbeddingNet,
    FeatureNet,
    ListDataset,
    assert_same_tensors,
    make_pool,
    module_flags,
    tensor_snapshot,
)
from torch import nn
from torch.utils.data import TensorDataset

import entropy_al
from entropy_al import active_learning_strategies as als
from entropy_al import reference

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires CUDA")

EMPTY = torch.empty(0, dtype=torch.int64)
IDS = torch.arange(4)
PASSES = torch.zeros(4, dtype=torch.int64)
X = torch.ones(4, 3)


def row(call, error, match, id):
    return pytest.param(call, error, match, id=id)


# ------------------------------------------------------------------------------------------------------------------
# The ops

OP_CASES = [
    # mc_scores
    row(
        lambda: entropy_al.mc_scores(torch.randn(5)),
        ValueError,
        r"`logits` of shape \[K, N, C\].*got shape \[5\]",
        "mc_scores-1d",
    ),
    row(
        lambda: entropy_al.mc_scores(torch.randn(1, 2, 3, 4)),
        ValueError,
        r"`logits` of shape \[K, N, C\] \(3 dims\)",
        "mc_scores-4d",
    ),
    row(
        lambda: entropy_al.mc_scores(torch.ones(2, 3, 4, dtype=torch.uint8)),
        TypeError,
        "`logits` of dtype .* got torch.uint8",
        "mc_scores-uint8",
    ),
    row(
        lambda: entropy_al.mc_scores(torch.ones(2, 3, 4, dtype=torch.complex128)),
        TypeError,
        "`logits` of dtype .* got torch.complex128",
        "mc_scores-complex128",
    ),
    row(
        lambda: entropy_al.mc_scores(torch.randn(2, 3, 4), None),
        ValueError,
        "`score` to be one of .* got None",
        "mc_scores-score-None",
    ),
    row(
        lambda: entropy_al.mc_scores(torch.randn(2, 3, 4), 0),
        ValueError,
        "`score` to be one of .* got 0",
        "mc_scores-score-int",
    ),
    # topk_update
    row(
        lambda: entropy_al.topk_update(torch.randn(2, 3), EMPTY, 0, 2),
        TypeError,
        "`scores` to be a 1-D floating tensor, got torch.float32 tensor of shape \\[2, 3\\]",
        "topk-scores-2d",
    ),
    row(
        lambda: entropy_al.topk_update(torch.ones(3, dtype=torch.int32), EMPTY, 0, 2),
        TypeError,
        "`scores` to be a 1-D floating tensor, got torch.int32",
        "topk-scores-int",
    ),
    row(
        lambda: entropy_al.topk_update(torch.ones(3, dtype=torch.bool), EMPTY, 0, 2),
        TypeError,
        "`scores` .* got torch.bool",
        "topk-scores-bool",
    ),
    row(
        lambda: entropy_al.topk_update(torch.ones(3, dtype=torch.complex64), EMPTY, 0, 2),
        TypeError,
        "`scores` .* got torch.complex64",
        "topk-scores-complex",
    ),
    row(
        lambda: entropy_al.topk_update([0.5, 1.0], EMPTY, 0, 2),
        TypeError,
        "`scores` to be a 1-D floating tensor",
        "topk-scores-list",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY.reshape(0, 1), 0, 2),
        TypeError,
        "`state` to be a 1-D int64 tensor",
        "topk-state-2d",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY.int(), 0, 2),
        TypeError,
        "`state` .* got torch.int32",
        "topk-state-int32",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), [], 0, 2),
        TypeError,
        "`state` to be a 1-D int64 tensor",
        "topk-state-list",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, 1.5),
        ValueError,
        "`k` to be an int >= 0, got 1.5",
        "topk-k-float",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, True),
        ValueError,
        "`k` to be an int >= 0, got True",
        "topk-k-bool",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, None),
        ValueError,
        "`k` to be an int >= 0, got None",
        "topk-k-None",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, "2"),
        ValueError,
        "`k` to be an int >= 0, got '2'",
        "topk-k-str",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 2.0, 2),
        ValueError,
        "`offset` to be an int >= 0, got 2.0",
        "topk-offset-float",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, None, 2),
        ValueError,
        "`offset` to be an int >= 0, got None",
        "topk-offset-None",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, np.int64(-1), 2),
        ValueError,
        "`offset` to be an int >= 0",
        "topk-offset-negative-numpy",
    ),
    # mc_topk_update
    row(
        lambda: entropy_al.mc_topk_update(torch.randn(3, 4), EMPTY, 0, 2),
        ValueError,
        "mc_topk_update: expected `logits` of shape",
        "mc_topk-2d",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.ones(2, 3, 4, dtype=torch.int64), EMPTY, 0, 2),
        TypeError,
        "mc_topk_update: expected `logits` of dtype",
        "mc_topk-int",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.ones(2, 3, 4, dtype=torch.bool), EMPTY, 0, 2),
        TypeError,
        "`logits` of dtype .* got torch.bool",
        "mc_topk-bool",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.ones(2, 3, 4, dtype=torch.complex64), EMPTY, 0, 2),
        TypeError,
        "`logits` of dtype .* got torch.complex64",
        "mc_topk-complex",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), torch.empty(0), 0, 2),
        TypeError,
        "mc_topk_update: expected `state`",
        "mc_topk-state-float",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), EMPTY, 0, 2.0),
        ValueError,
        "mc_topk_update: expected `k`",
        "mc_topk-k-float",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), EMPTY, -3, 2),
        ValueError,
        "mc_topk_update: expected `offset`",
        "mc_topk-offset-negative",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 1), EMPTY, 0, 2, "margin"),
        ValueError,
        "score 'margin' needs C >= 2",
        "mc_topk-margin-1-class",
    ),
    # StreamingTopK
    row(
        lambda: entropy_al.StreamingTopK(None),
        ValueError,
        "StreamingTopK: expected `k` to be an int >= 0, got None",
        "stk-k-None",
    ),
    row(lambda: entropy_al.StreamingTopK(2.0), ValueError, "StreamingTopK: expected `k` .* got 2.0", "stk-k-float"),
    row(lambda: entropy_al.StreamingTopK(True), ValueError, "StreamingTopK: expected `k` .* got True", "stk-k-bool"),
    row(lambda: entropy_al.StreamingTopK("3"), ValueError, "StreamingTopK: expected `k`", "stk-k-str"),
    row(
        lambda: entropy_al.StreamingTopK(2**63),
        ValueError,
        r"StreamingTopK: expected `k` to be an int >= 0 and below 2\*\*63 .* got 9223372036854775808",
        "stk-k-2**63",
    ),
    row(lambda: entropy_al.StreamingTopK(2**64 + 3), ValueError, r"`k` .* below 2\*\*63", "stk-k-2**64"),
    row(
        lambda: entropy_al.StreamingTopK(torch.tensor(True)),
        ValueError,
        r"StreamingTopK: expected `k` .* got tensor\(True\)",
        "stk-k-bool-tensor",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 0, 2**63),
        ValueError,
        r"topk_update: expected `k` .* below 2\*\*63",
        "topk-k-2**63",
    ),
    row(
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), EMPTY, 0, 2**63),
        ValueError,
        r"mc_topk_update: expected `k` .* below 2\*\*63",
        "mc_topk-k-2**63",
    ),
    row(
        lambda: entropy_al.topk_update(torch.randn(3), EMPTY, 2**64, 2),
        ValueError,
        r"topk_update: expected `offset` .* below 2\*\*63",
        "topk-offset-2**64",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3, "gpu7"),
        ValueError,
        "StreamingTopK: expected `device` .* got 'gpu7'",
        "stk-device-str",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3, 1.5),
        ValueError,
        "StreamingTopK: expected `device` .* got 1.5",
        "stk-device-float",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3).update(torch.randn(2, 2), 0),
        TypeError,
        "`scores` to be a 1-D floating tensor",
        "stk-update-2d",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3).update(torch.arange(4), 0),
        TypeError,
        "`scores` .* got torch.int64",
        "stk-update-int",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3).update(torch.randn(4), 1.0),
        ValueError,
        "`offset` to be an int >= 0, got 1.0",
        "stk-update-offset-float",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3).update_logits(torch.randn(2, 3), 0),
        ValueError,
        "`logits` of shape \\[K, N, C\\]",
        "stk-logits-2d",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3).update_logits(torch.ones(2, 3, 4, dtype=torch.int8), 0),
        TypeError,
        "`logits` of dtype",
        "stk-logits-int8",
    ),
    row(
        lambda: entropy_al.StreamingTopK(3).update_logits(torch.randn(2, 3, 4), 0, "max"),
        ValueError,
        "`score` to be one of",
        "stk-logits-score",
    ),
    # keyed_dropout and the layers built on it
    row(
        lambda: entropy_al.keyed_dropout([1.0] * 4, 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` to be a torch.Tensor, got list",
        "kd-x-list",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X.int(), 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` of dtype .* got torch.int32",
        "kd-x-int",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X.bool(), 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` of dtype .* got torch.bool",
        "kd-x-bool",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X.to(torch.complex64), 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` of dtype .* got torch.complex64",
        "kd-x-complex",
    ),
    row(
        lambda: entropy_al.keyed_dropout(torch.tensor(1.0), 0.5, 0, IDS, PASSES),
        ValueError,
        r"`x` of shape \[B, ...\]",
        "kd-x-0d",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, "0.5", 0, IDS, PASSES),
        TypeError,
        "`p` to be a float in \\[0, 1\\], got str '0.5'",
        "kd-p-str",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, None, 0, IDS, PASSES),
        TypeError,
        "`p` to be a float .* got NoneType",
        "kd-p-None",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, True, 0, IDS, PASSES),
        TypeError,
        "`p` to be a float .* got bool",
        "kd-p-bool",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, torch.tensor(0.5), 0, IDS, PASSES),
        TypeError,
        "`p` to be a float .* got Tensor",
        "kd-p-tensor",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, float("inf"), 0, IDS, PASSES),
        ValueError,
        r"`p` in \[0, 1\], got inf",
        "kd-p-inf",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 1.0, IDS, PASSES),
        ValueError,
        "`seed` to be an int .* got 1.0",
        "kd-seed-float",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, None, IDS, PASSES),
        ValueError,
        "`seed` to be an int .* got None",
        "kd-seed-None",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, True, IDS, PASSES),
        ValueError,
        "`seed` to be an int .* got True",
        "kd-seed-bool",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, -(2**63) - 1, IDS, PASSES),
        ValueError,
        "`seed` to be an int in",
        "kd-seed-too-small",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS.float(), PASSES),
        TypeError,
        "`sample_ids` to be an int64 tensor, got torch.float32",
        "kd-sample-ids-float",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS.bool(), PASSES),
        TypeError,
        "`sample_ids` to be an int64 tensor, got torch.bool",
        "kd-sample-ids-bool",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS.reshape(2, 2), PASSES),
        ValueError,
        r"`sample_ids` of shape \[B\] = \[4\]",
        "kd-sample-ids-2d",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, 1.0),
        TypeError,
        "`pass_ids` to be an int64 tensor, got float",
        "kd-pass-float",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, True),
        TypeError,
        "`pass_ids` to be an int64 tensor, got bool",
        "kd-pass-bool",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, [0, 0, 0, 0]),
        TypeError,
        "`pass_ids` to be an int64 tensor, got list",
        "kd-pass-list",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, PASSES[:3]),
        ValueError,
        r"`pass_ids` of shape \[B\] = \[4\]",
        "kd-pass-short",
    ),
    row(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, 2**63),
        ValueError,
        r"`pass_ids` to be an int64 tensor or an int in \[-2\*\*63, 2\*\*63\), got 9223372036854775808",
        "kd-pass-beyond-int64",
    ),
    row(
        lambda: entropy_al.keyed_feature_dropout(X.reshape(4, 1, 3), 0.5, 0, IDS, -(2**63) - 1),
        ValueError,
        "`pass_ids` .* got -9223372036854775809",
        "kfd-pass-beyond-int64",
    ),
    row(
        lambda: entropy_al.keyed_feature_dropout(torch.ones(4), 0.5, 0, IDS, 0),
        ValueError,
        r"keyed_feature_dropout: expected `x` of shape \[B, C, ...\]",
        "kfd-x-1d",
    ),
    row(lambda: entropy_al.keyed_feature_dropout(X, 1.5, 0, IDS, 0), ValueError, r"`p` in \[0, 1\], got 1.5", "kfd-p"),
    row(
        lambda: entropy_al.keyed_alpha_dropout(torch.ones(4), 0.5, 0, IDS, 0, feature=True),
        ValueError,
        r"keyed_alpha_dropout: expected `x` of shape \[B, C, ...\]",
        "kad-x-1d",
    ),
    row(lambda: entropy_al.keyed_alpha_dropout(X.long(), 0.5, 0, IDS, 0), TypeError, "`x` of dtype", "kad-x-int"),
    # keyed_mc_dropout (the context manager and its batch blocks)
    row(
        lambda: entropy_al.keyed_mc_dropout(lambda x: x, 0).__enter__(),
        TypeError,
        "`model` to be an nn.Module, got function",
        "kmc-model",
    ),
    row(
        lambda: entropy_al.keyed_mc_dropout(nn.Dropout(), 0.5).__enter__(),
        ValueError,
        "`seed` to be an int",
        "kmc-seed-float",
    ),
]


@pytest.mark.parametrize("call, error, match", OP_CASES)
def test_ops_reject_bad_arguments_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "block, error, match",
    [
        (lambda keyed: keyed.batch(IDS.int(), 0), TypeError, "`sample_ids` to be a 1-D int64 tensor, got torch.int32"),
        (lambda keyed: keyed.batch([0, 1], 0), TypeError, "`sample_ids` to be a 1-D int64 tensor, got list"),
        (lambda keyed: keyed.batch(IDS, 0.0), TypeError, "`pass_ids` to be an int or a 1-D int64 tensor, got float"),
        (lambda keyed: keyed.batch(IDS, 2**63), ValueError, "`pass_ids` to be an int in .* got 9223372036854775808"),
        (lambda keyed: keyed.batch(IDS, PASSES.float()), TypeError, "`pass_ids` .* got torch.float32"),
        (lambda keyed: keyed.batch(IDS, 0, first_site=-1), ValueError, "`first_site` to be an int >= 0, got -1"),
    ],
)
def test_keyed_mc_batch_rejects_bad_ids_and_restores_the_model(block, error, match):
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    with entropy_al.keyed_mc_dropout(model, seed=0) as keyed:
        with pytest.raises(error, match=match), block(keyed):
            pass
    assert "forward" not in model[1].__dict__


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


# ------------------------------------------------------------------------------------------------------------------
# Strategy constructors

CLASSES = [
    als.Strategy,
    als.ScoreStreamingStrategy,
    entropy_al.EntropySamplingDropout,
    entropy_al.BALDDropout,
    entropy_al.MarginSamplingDropout,
    entropy_al.LeastConfidenceSamplingDropout,
]

CONSTRUCTOR_CASES = [
    # (nclasses, args, error, match)
    (0, {}, ValueError, "`nclasses` to be a positive int, got 0"),
    (-2, {}, ValueError, "`nclasses` to be a positive int, got -2"),
    (4.0, {}, TypeError, "`nclasses` to be an int, got float 4.0"),
    ("4", {}, TypeError, "`nclasses` to be an int, got str"),
    (True, {}, TypeError, "`nclasses` to be an int, got bool"),
    (None, {}, TypeError, "`nclasses` to be an int, got NoneType"),
    (4, [("n_drop", 2)], TypeError, "`args` to be a dict, got list"),
    (4, "n_drop=2", TypeError, "`args` to be a dict, got str"),
    (4, {"n_drop": 0}, ValueError, r"args\['n_drop'\] to be a positive int, got 0"),
    (4, {"n_drop": -3}, ValueError, r"args\['n_drop'\] to be a positive int, got -3"),
    (4, {"n_drop": 2.5}, TypeError, r"args\['n_drop'\] to be an int, got float 2.5"),
    (4, {"n_drop": 10.0}, TypeError, r"args\['n_drop'\] to be an int, got float 10.0"),
    (4, {"n_drop": None}, TypeError, r"args\['n_drop'\] to be an int, got NoneType"),
    (4, {"n_drop": np.float32(3)}, TypeError, r"args\['n_drop'\] to be an int, got float32"),
    (4, {"batch_size": 0}, ValueError, r"args\['batch_size'\] to be a positive int, got 0"),
    (4, {"batch_size": 1.5}, TypeError, r"args\['batch_size'\] to be an int"),
    (4, {"stream_buffer_size": 0}, ValueError, r"args\['stream_buffer_size'\] to be a positive int, got 0"),
    (4, {"stream_buffer_size": -5}, ValueError, r"args\['stream_buffer_size'\] to be a positive int, got -5"),
    (4, {"stream_buffer_size": 1e4}, TypeError, r"args\['stream_buffer_size'\] to be an int, got float"),
    (4, {"device": "gpu"}, ValueError, r"args\['device'\] to be a torch device"),
    (4, {"device": 1.5}, ValueError, r"args\['device'\] to be a torch device"),
    (4, {"loss": "cross_entropy"}, TypeError, r"args\['loss'\] to be callable"),
    (4, {"mc_mode": None}, ValueError, r"args\['mc_mode'\] to be one of 'dropout', 'train', got None"),
    (4, {"nan_policy": "skip"}, ValueError, r"args\['nan_policy'\] to be one of 'raise', 'omit'"),
    (4, {"reproduce_distil": "yes"}, TypeError, r"args\['reproduce_distil'\] to be a bool"),
    (4, {"progress": 1}, TypeError, r"args\['progress'\] to be a bool"),
    (4, {"distributed": "auto"}, TypeError, r"args\['distributed'\] to be True, False or None"),
    (4, {"mc_memory_budget": -1}, ValueError, r"args\['mc_memory_budget'\] to be an int >= 0"),
    (4, {"num_workers": 1.0}, TypeError, r"args\['num_workers'\] to be an int"),
    (4, {"amp_dtype": torch.float64}, ValueError, r"args\['amp_dtype'\] to be None, torch.bfloat16 or torch.float16"),
    (4, {"mc_head": 3}, TypeError, r"args\['mc_head'\] to be a \(trunk, head\) pair"),
    (4, {"batch_sampler": 8}, TypeError, r"args\['batch_sampler'\] to be an iterable of index lists"),
]


@pytest.mark.parametrize("nclasses, args, error, match", CONSTRUCTOR_CASES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_constructors_reject_bad_arguments_naming_them(cls, nclasses, args, error, match):
    with pytest.raises(error, match=f"^{cls.__name__}: expected {match}"):
        cls(None, make_pool(3), FeatureNet(), nclasses, args)


# ------------------------------------------------------------------------------------------------------------------
# Strategy methods

POOL = make_pool(8)


class _Returns(nn.Module):
    """A dropout model that returns ``make(logits, features)`` instead of its logits, with or without last=True."""

    def __init__(self, make):
        super().__init__()
        self.linear = nn.Linear(NUM_FEATURES, NUM_CLASSES)
        self.dropout = nn.Dropout(0.2)
        self.make = make

    def forward(self, x, last=False, freeze=False):
        return self.make(self.dropout(self.linear(x)), x)


MODEL_OUTPUTS = {
    "tuple": (lambda z, x: (z, x), TypeError, "expected the model to return a floating tensor of logits, got tuple"),
    "dict": (lambda z, x: {"logits": z}, TypeError, "floating tensor of logits, got dict"),
    "list": (lambda z, x: [z], TypeError, "floating tensor of logits, got list"),
    "int-tensor": (lambda z, x: z.long(), TypeError, "floating tensor of logits, got a torch.int64 tensor"),
    "bool-tensor": (lambda z, x: z > 0, TypeError, "floating tensor of logits, got a torch.bool tensor"),
    "complex-tensor": (lambda z, x: z.to(torch.complex64), TypeError, "got a torch.complex64 tensor"),
    "1d": (lambda z, x: z.sum(1), ValueError, r"logits of shape \[batch, nclasses\] = \[\d+, 4\], got shape \(\d+,\)"),
    "3d": (lambda z, x: z[:, None], ValueError, r"logits of shape \[batch, nclasses\].*got shape \(\d+, 1, 4\)"),
    "wrong-width": (lambda z, x: torch.cat([z, z], 1), ValueError, r"outputs 8 classes .* but nclasses = 4"),
    "wrong-rows": (lambda z, x: z[:1], ValueError, r"returned 1 rows of logits for a batch of 3 samples"),
    "none": (lambda z, x: None, TypeError, "floating tensor of logits, got NoneType"),
}
LOGIT_METHODS = {
    "select": lambda s: s.select(3),
    "acquire_scores": lambda s: s.acquire_scores(POOL),
    "predict": lambda s: s.predict(POOL),
    "predict_prob": lambda s: s.predict_prob(POOL),
    "predict_prob_dropout": lambda s: s.predict_prob_dropout(POOL, 2),
    "predict_prob_dropout_split": lambda s: s.predict_prob_dropout_split(POOL, 2),
}


def mc_strategy(model, cls=entropy_al.EntropySamplingDropout, pool=POOL, **args):
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


@pytest.mark.parametrize("reproduce", [False, True], ids=["fast", "reproduce_distil"])
@pytest.mark.parametrize("method", list(LOGIT_METHODS))
@pytest.mark.parametrize("output", list(MODEL_OUTPUTS))
def test_bad_model_output_is_named_by_every_method(output, method, reproduce):
    if reproduce and method in ("predict", "predict_prob"):
        pytest.skip("eval-mode methods have no DISTIL loop")
    make, error, match = MODEL_OUTPUTS[output]
    model = _Returns(make).train()
    strategy = mc_strategy(model, reproduce_distil=reproduce)
    assert_fails_cleanly(strategy, LOGIT_METHODS[method], error, match)
    model.make = lambda z, x: z  # fixed: the same strategy works
    assert len(LOGIT_METHODS[method](strategy)) in (3, 8, 2)


EMBEDDING_METHODS = {
    "get_embedding": lambda s: s.get_embedding(POOL),
    "get_grad_embedding": lambda s: s.get_grad_embedding(POOL, True),
}
EMBEDDING_OUTPUTS = {
    "bare-logits": (lambda z, x: z, TypeError, r"expected model\(x, last=True\) to return \(logits, embedding\)"),
    "dict": (
        lambda z, x: {"logits": z, "embedding": x},
        TypeError,
        r"to return \(logits, embedding\), got <class 'dict'>",
    ),
    "triple": (lambda z, x: (z, x, x), TypeError, r"to return \(logits, embedding\)"),
    "embedding-not-a-tensor": (lambda z, x: (z, x.tolist()), TypeError, r"to return \(logits, embedding\)"),
    "embedding-wrong-rows": (
        lambda z, x: (z, x[:1]),
        ValueError,
        r"embedding of shape \(1, 6\) for a batch of 3 samples",
    ),
    "embedding-0d": (lambda z, x: (z, x.sum()), ValueError, r"embedding of shape \(\) for a batch of 3 samples"),
}


@pytest.mark.parametrize("method", list(EMBEDDING_METHODS))
@pytest.mark.parametrize("output", list(EMBEDDING_OUTPUTS))
def test_bad_embedding_output_is_named(output, method):
    make, error, match = EMBEDDING_OUTPUTS[output]
    assert_fails_cleanly(mc_strategy(_Returns(make)), EMBEDDING_METHODS[method], error, match)


@pytest.mark.parametrize(
    "output, error, match",
    [
        (lambda z, x: (torch.cat([z, z], 1), x), ValueError, "outputs 8 classes .* but nclasses = 4"),
        (lambda z, x: (z.long(), x), TypeError, "floating tensor of logits, got a torch.int64 tensor"),
        (lambda z, x: ({"logits": z}, x), TypeError, "floating tensor of logits, got dict"),
    ],
)
def test_bad_logits_of_grad_embedding_are_named(output, error, match):
    assert_fails_cleanly(mc_strategy(_Returns(output)), EMBEDDING_METHODS["get_grad_embedding"], error, match)


N_DROP_CASES = [
    (0, ValueError, "`n_drop` to be a positive int, got 0"),
    (-1, ValueError, "`n_drop` to be a positive int, got -1"),
    (2.0, TypeError, "`n_drop` to be an int, got float 2.0"),
    (0.5, TypeError, "`n_drop` to be an int, got float 0.5"),
    (True, TypeError, "`n_drop` to be an int, got bool"),
    (None, TypeError, "`n_drop` to be an int, got NoneType"),
    ("3", TypeError, "`n_drop` to be an int, got str"),
    (torch.tensor(True), TypeError, r"`n_drop` to be an int, got bool tensor\(True\)"),
]


@pytest.mark.parametrize("n_drop, error, match", N_DROP_CASES)
def test_bad_n_drop_is_named_at_every_use(n_drop, error, match):
    model = FeatureNet()
    strategy = mc_strategy(model)
    for method in ("predict_prob_dropout", "predict_prob_dropout_split"):
        assert_fails_cleanly(strategy, lambda s, method=method: getattr(s, method)(POOL, n_drop), error, match)
    strategy.n_drop = n_drop  # DISTIL's API lets the user edit the attribute
    assert_fails_cleanly(strategy, lambda s: s.select(2), error, match)
    assert_fails_cleanly(strategy, lambda s: s.acquire_scores(POOL), error, match)
    strategy.n_drop = 2
    assert len(strategy.select(2)) == 2


@pytest.mark.parametrize(
    "attribute, value, error, match",
    [
        ("stream_buffer_size", 0, ValueError, "`stream_buffer_size` to be a positive int, got 0"),
        ("stream_buffer_size", 2.5, TypeError, "`stream_buffer_size` to be an int, got float"),
        ("stream_buffer_size", None, TypeError, "`stream_buffer_size` to be an int, got NoneType"),
        ("device", "gpu", ValueError, "the strategy's device to be a torch device"),
        (
            "device",
            "cuda:99",
            ValueError,
            r"device \(args\['device'\]\) is cuda:99, but this process sees \d+ CUDA device",
        ),
        ("device", "meta", ValueError, r"device \(args\['device'\]\) is meta, which holds no data"),
        (
            "model",
            None,
            TypeError,
            r"the model \(`net`, or update_model's `clf`\) to be a torch.nn.Module, got NoneType",
        ),
        ("model", lambda x: x, TypeError, r"\(`net`, or update_model's `clf`\) to be a torch.nn.Module, got function"),
        ("target_classes", 3, ValueError, "outputs 4 classes .* but nclasses = 3"),
    ],
)
def test_bad_attributes_are_named_at_use(attribute, value, error, match):
    """DISTIL's API exposes these attributes; a bad value fails at the next call, before any forward."""
    model = FeatureNet()
    strategy = mc_strategy(model)
    setattr(strategy, attribute, value)
    if attribute != "stream_buffer_size":
        for method in ("predict", "predict_prob_dropout", "get_grad_embedding"):
            if method == "get_grad_embedding" and attribute == "target_classes":
                continue
            call = {
                "predict": lambda s: s.predict(POOL),
                "predict_prob_dropout": lambda s: s.predict_prob_dropout(POOL, 2),
                "get_grad_embedding": lambda s: s.get_grad_embedding(POOL, True),
            }[method]
            assert_fails_cleanly(strategy, call, error, match)
    assert_fails_cleanly(strategy, lambda s: s.select(2), error, match)
    assert module_flags(model) == [True] * len(module_flags(model))


def test_cuda_device_without_cuda_or_out_of_range_is_named_in_args():
    args = {"device": "cuda:99", "n_drop": 2}
    strategy = entropy_al.BALDDropout(None, POOL, FeatureNet(), NUM_CLASSES, args)  # checked at use, like DISTIL
    assert_fails_cleanly(strategy, lambda s: s.select(2), ValueError, r"args\['device'\]\) is cuda:99")
    assert strategy.model.body[0].weight.device.type == "cpu"  # never moved


BUDGET_CASES = [
    (-1, ValueError, "`budget` to be an int >= 0, got -1"),
    (2.5, TypeError, "`budget` to be an int, got float 2.5"),
    (float("nan"), TypeError, "`budget` to be an int, got float nan"),
    (float("inf"), TypeError, "`budget` to be an int, got float inf"),
    (np.float64(2.0), TypeError, "`budget` to be an int, got float64"),
    (torch.tensor(2.0), TypeError, "`budget` to be an int, got Tensor"),
    (np.bool_(True), TypeError, "`budget` to be an int, got bool"),
    (torch.tensor(True), TypeError, r"`budget` to be an int, got bool tensor\(True\)"),
    (torch.tensor(False), TypeError, r"`budget` to be an int, got bool tensor\(False\)"),
    ([2], TypeError, "`budget` to be an int, got list"),
    (np.int64(-3), ValueError, "`budget` to be an int >= 0, got -3"),
]


@pytest.mark.parametrize("budget, error, match", BUDGET_CASES)
@pytest.mark.parametrize("cls", CLASSES[2:], ids=lambda cls: cls.__name__)
def test_bad_budgets_are_named_before_any_forward(cls, budget, error, match):
    model = _Returns(lambda z, x: z)
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    assert_fails_cleanly(mc_strategy(model, cls), lambda s: s.select(budget), error, match)
    assert not calls


DATASETS = {
    "None": (None, TypeError, "map-style dataset .* got NoneType"),
    "int": (5, TypeError, "map-style dataset .* got int"),
    "0-d tensor": (torch.tensor(1.0), TypeError, "map-style dataset .* got Tensor of 0 dimensions"),
    "generator": ((x for x in POOL), TypeError, "map-style dataset .* got generator"),
    "string items": (ListDataset(["a", "b"]), TypeError, r"dataset items to be tensors, mappings .* or \(x, y\) pairs"),
    "empty tuple items": (ListDataset([(), ()]), TypeError, "dataset items to be tensors, mappings"),
    "nested lists": (ListDataset([[[1.0] * NUM_FEATURES]] * 2), TypeError, "dataset items to be tensors, mappings"),
    # default_collate's own message names the unsupported item type.
    "object items": (
        ListDataset([object(), object()]),
        TypeError,
        "batch must contain tensors.*found <class 'object'>",
    ),
    "None items": (ListDataset([None, None]), TypeError, "batch must contain tensors.*found <class 'NoneType'>"),
}
DATASET_METHODS = {
    "select": ("unlabeled_dataset", lambda s, d: (s.update_data(None, d), s.select(2))),
    "acquire_scores": ("unlabeled_buffer", lambda s, d: s.acquire_scores(d)),
    "predict": ("to_predict_dataset", lambda s, d: s.predict(d)),
    "predict_prob": ("to_predict_dataset", lambda s, d: s.predict_prob(d)),
    "predict_prob_dropout": ("to_predict_dataset", lambda s, d: s.predict_prob_dropout(d, 2)),
    "predict_prob_dropout_split": ("to_predict_dataset", lambda s, d: s.predict_prob_dropout_split(d, 2)),
    "get_embedding": ("to_predict_dataset", lambda s, d: s.get_embedding(d)),
    "get_grad_embedding": ("dataset", lambda s, d: s.get_grad_embedding(d, True)),
}


@pytest.mark.parametrize("method", list(DATASET_METHODS))
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_unsupported_datasets_and_items_are_named(dataset, method):
    value, error, match = DATASETS[dataset]
    name, call = DATASET_METHODS[method]
    if "map-style" in match:
        match = f"`{name}` to be a {match}"
    strategy = mc_strategy(EmbeddingNet())
    with pytest.raises(error, match=match):
        call(strategy, value)
    strategy.update_data(None, POOL)
    assert len(strategy.select(2)) == 2


class _ScoresFrom(als.ScoreStreamingStrategy):
    """A DISTIL-style subclass whose acquire_scores returns ``make(buffer)``."""

    make = staticmethod(lambda buffer: torch.zeros(len(buffer)))

    def acquire_scores(self, unlabeled_buffer):
        return self.make(unlabeled_buffer)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda b: None, TypeError, "acquire_scores to return a tensor of 3 real scores, got NoneType"),
        (lambda b: "scores", TypeError, "acquire_scores to return a tensor of 3 real scores, got str"),
        (lambda b: {"scores": 1}, TypeError, "acquire_scores to return a tensor of 3 real scores, got dict"),
        (
            lambda b: torch.zeros(len(b), dtype=torch.complex64),
            TypeError,
            "acquire_scores to return real scores, got a torch.complex64",
        ),
        (
            lambda b: torch.zeros(len(b) + 1),
            ValueError,
            r"acquire_scores to return 3 scores \(shape \[3\]\), got shape \(4,\)",
        ),
        (
            lambda b: torch.zeros(len(b), 1),
            ValueError,
            r"acquire_scores to return 3 scores \(shape \[3\]\), got shape \(3, 1\)",
        ),
        (lambda b: torch.tensor(0.0), ValueError, r"got shape \(\)"),
    ],
)
def test_bad_acquire_scores_of_a_subclass_are_named(make, error, match):
    strategy = _ScoresFrom(None, POOL, FeatureNet(), NUM_CLASSES, {"device": "cpu", "stream_buffer_size": 3})
    strategy.make = make
    assert_fails_cleanly(strategy, lambda s: s.select(2), error, match)
    strategy.make = lambda b: torch.as_tensor(b.indices, dtype=torch.float32)
    assert strategy.select(2) == [7, 6]


@pytest.mark.parametrize(
    "sampler, match",
    [
        ([[0, 1, 2, 3], [0, 1, 2, 3]], "yielded index 0 twice"),  # as many indices as samples, 4 … 7 never scored
        ([[0, 1, 1, 2], [3, 4, 5, 6, 7]], "yielded index 1 twice"),  # a repeat inside one batch
        (itertools.repeat([0, 1]), "yielded index 0 twice"),  # endless: an error, not a hang
        ([[0, 1, 2], [3]], "yielded 4 indices for a dataset of 8 samples"),
        ([[0, 8]], "yielded index 8 for a dataset of 8 samples"),
        ([[-1, 0]], "yielded index -1 for a dataset of 8 samples"),
        ([[0, 1], []], "yielded an empty batch"),
    ],
)
@pytest.mark.parametrize("items", ["tensor", "list"])
def test_a_batch_sampler_that_is_not_a_partition_is_rejected(sampler, match, items):
    pool = POOL if items == "tensor" else ListDataset(list(POOL))
    strategy = mc_strategy(FeatureNet(), pool=pool, batch_sampler=sampler)
    assert_fails_cleanly(strategy, lambda s: s.select(8), ValueError, r"args\['batch_sampler'\] " + match)


@CUDA
@pytest.mark.filterwarnings("ignore:.*has no dropout module:UserWarning")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_pool_and_model_on_other_devices_are_moved(device):
    """Mixed devices in a strategy are not an error: the model and each batch go to args['device']."""

    def select(pool, model_device):
        model = FeatureNet(dropout=0.0).to(model_device)
        args = {"device": device, "n_drop": 1, "batch_size": 3}
        return entropy_al.EntropySamplingDropout(None, pool, model, NUM_CLASSES, args).select(5)

    other = "cuda" if device == "cpu" else "cpu"
    expected = select(POOL.to(device), device)
    assert select(POOL.to(other), other) == expected
    assert select(TensorDataset(POOL.to(other)), device) == expected
    assert select(ListDataset(list(POOL.to(other))), other) == expected


@CUDA
@pytest.mark.filterwarnings("ignore:.*has no dropout module:UserWarning")
def test_gpu_items_of_a_plain_dataset_on_a_gpu_device():
    """A dataset fetched item by item (not tensor-backed) whose items already live on the GPU: the DataLoader must
    not try to pin them (pinning a CUDA tensor raises "cannot pin ... only dense CPU tensors can be pinned")."""
    args = {"device": "cuda", "n_drop": 1, "batch_size": 3}
    on_gpu = POOL.cuda()
    expected = entropy_al.EntropySamplingDropout(None, on_gpu, FeatureNet(0.0), NUM_CLASSES, args).select(5)
    for items in (ListDataset(list(on_gpu)), ListDataset([{"features": row} for row in on_gpu])):
        assert entropy_al.EntropySamplingDropout(None, items, FeatureNet(0.0), NUM_CLASSES, args).select(5) == expected
