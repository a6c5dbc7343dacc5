"""Helpers shared by the keyed-dropout tests (not a test module)."""

import pytest
import torch

import entropy_al

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SEED = 0x1234_5678_9ABC_DEF0


def ids_for(batch, device="cpu", first=1000):
    return torch.arange(first, first + batch, device=device), torch.zeros(batch, dtype=torch.int64, device=device)


def same_bits(a, b):
    """Equal values, signs of zero included; NaN where the other has NaN (payloads may differ across backends)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b))
    a, b = a.cpu()[~nan.cpu()], b.cpu()[~nan.cpu()]
    return torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))


def compiled_op(x, p, seed, sample_ids, pass_ids):
    if entropy_al.backend(x.device) == "torch":
        pytest.skip(f"no compiled kernel for {x.device.type}")
    return torch.ops.entropy_al.keyed_dropout.default(x, p, seed, sample_ids, pass_ids)
