"""Bad arguments of ``keyed_dropout`` & co. and ``keyed_mc_dropout``: a clear error naming the argument."""

from __future__ import annotations

import pytest
import torch
from conftest import error_case
from torch import nn

import entropy_al

IDS = torch.arange(4)
PASSES = torch.zeros(4, dtype=torch.int64)
X = torch.ones(4, 3)

OP_CASES = [
    # keyed_dropout and the layers built on it
    error_case(
        lambda: entropy_al.keyed_dropout([1.0] * 4, 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` to be a torch.Tensor, got list",
        "kd-x-list",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X.int(), 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` of dtype .* got torch.int32",
        "kd-x-int",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X.bool(), 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` of dtype .* got torch.bool",
        "kd-x-bool",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X.to(torch.complex64), 0.5, 0, IDS, PASSES),
        TypeError,
        "`x` of dtype .* got torch.complex64",
        "kd-x-complex",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(torch.tensor(1.0), 0.5, 0, IDS, PASSES),
        ValueError,
        r"`x` of shape \[B, ...\]",
        "kd-x-0d",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, "0.5", 0, IDS, PASSES),
        TypeError,
        "`p` to be a float in \\[0, 1\\], got str '0.5'",
        "kd-p-str",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, None, 0, IDS, PASSES),
        TypeError,
        "`p` to be a float .* got NoneType",
        "kd-p-None",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, True, 0, IDS, PASSES),
        TypeError,
        "`p` to be a float .* got bool",
        "kd-p-bool",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, torch.tensor(0.5), 0, IDS, PASSES),
        TypeError,
        "`p` to be a float .* got Tensor",
        "kd-p-tensor",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, float("inf"), 0, IDS, PASSES),
        ValueError,
        r"`p` in \[0, 1\], got inf",
        "kd-p-inf",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 1.0, IDS, PASSES),
        ValueError,
        "`seed` to be an int .* got 1.0",
        "kd-seed-float",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, None, IDS, PASSES),
        ValueError,
        "`seed` to be an int .* got None",
        "kd-seed-None",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, True, IDS, PASSES),
        ValueError,
        "`seed` to be an int .* got True",
        "kd-seed-bool",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, -(2**63) - 1, IDS, PASSES),
        ValueError,
        "`seed` to be an int in",
        "kd-seed-too-small",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS.float(), PASSES),
        TypeError,
        "`sample_ids` to be an int64 tensor, got torch.float32",
        "kd-sample-ids-float",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS.bool(), PASSES),
        TypeError,
        "`sample_ids` to be an int64 tensor, got torch.bool",
        "kd-sample-ids-bool",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS.reshape(2, 2), PASSES),
        ValueError,
        r"`sample_ids` of shape \[B\] = \[4\]",
        "kd-sample-ids-2d",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, 1.0),
        TypeError,
        "`pass_ids` to be an int64 tensor, got float",
        "kd-pass-float",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, True),
        TypeError,
        "`pass_ids` to be an int64 tensor, got bool",
        "kd-pass-bool",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, [0, 0, 0, 0]),
        TypeError,
        "`pass_ids` to be an int64 tensor, got list",
        "kd-pass-list",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, PASSES[:3]),
        ValueError,
        r"`pass_ids` of shape \[B\] = \[4\]",
        "kd-pass-short",
    ),
    error_case(
        lambda: entropy_al.keyed_dropout(X, 0.5, 0, IDS, 2**63),
        ValueError,
        r"`pass_ids` to be an int64 tensor or an int in \[-2\*\*63, 2\*\*63\), got 9223372036854775808",
        "kd-pass-beyond-int64",
    ),
    error_case(
        lambda: entropy_al.keyed_feature_dropout(X.reshape(4, 1, 3), 0.5, 0, IDS, -(2**63) - 1),
        ValueError,
        "`pass_ids` .* got -9223372036854775809",
        "kfd-pass-beyond-int64",
    ),
    error_case(
        lambda: entropy_al.keyed_feature_dropout(torch.ones(4), 0.5, 0, IDS, 0),
        ValueError,
        r"keyed_feature_dropout: expected `x` of shape \[B, C, ...\]",
        "kfd-x-1d",
    ),
    error_case(
        lambda: entropy_al.keyed_feature_dropout(X, 1.5, 0, IDS, 0), ValueError, r"`p` in \[0, 1\], got 1.5", "kfd-p"
    ),
    error_case(
        lambda: entropy_al.keyed_alpha_dropout(torch.ones(4), 0.5, 0, IDS, 0, feature=True),
        ValueError,
        r"keyed_alpha_dropout: expected `x` of shape \[B, C, ...\]",
        "kad-x-1d",
    ),
    error_case(
        lambda: entropy_al.keyed_alpha_dropout(X.long(), 0.5, 0, IDS, 0), TypeError, "`x` of dtype", "kad-x-int"
    ),
    # keyed_mc_dropout (the context manager and its batch blocks)
    error_case(
        lambda: entropy_al.keyed_mc_dropout(lambda x: x, 0).__enter__(),
        TypeError,
        "`model` to be an nn.Module, got function",
        "kmc-model",
    ),
    error_case(
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
