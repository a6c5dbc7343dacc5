"""keyed_dropout: the generator, mask statistics, exact scale and edge values, invariance of a sample's mask, and
every backend bit for bit against the pure-PyTorch oracle."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from keyed_fixtures import DTYPES, SEED, compiled_op, ids_for, same_bits

import entropy_al
from entropy_al import reference

# ---- the generator -----------------------------------------------------------------------------------------------

# Known-answer vectors of Philox4x32-10 (Random123's kat_vectors).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX_KAT)
def test_philox_known_answers(counter, key, expected):
    words = reference.philox4x32_10_reference(*(torch.tensor([c]) for c in counter), *key)
    assert tuple(int(w) for w in words) == expected


@pytest.mark.parametrize("device", DEVICES)
def test_mask_follows_the_documented_counter_layout(device):
    """Element e of a row is kept iff Philox word e % 4 of counter (e // 4, pass, sample lo, sample hi) >> 8 is
    at least ceil(p * 2^24)."""
    sample_ids = torch.tensor([0, 5, 2**40 + 7, -3], device=device)
    pass_ids = torch.tensor([0, 3, 2**32 + 9, 1], device=device)
    p, seed, features = 0.3, -987654321, 11
    kept = entropy_al.keyed_dropout(torch.ones(4, features, device=device), p, seed, sample_ids, pass_ids) != 0
    mask64, mask32 = (1 << 64) - 1, (1 << 32) - 1
    for row in range(4):
        sample, pass_ = int(sample_ids[row]) & mask64, int(pass_ids[row]) & mask32
        for e in range(features):
            words = reference.philox4x32_10_reference(
                torch.tensor([e // 4]),
                torch.tensor([pass_]),
                torch.tensor([sample & mask32]),
                torch.tensor([sample >> 32]),
                seed & mask32,
                (seed & mask64) >> 32,
            )
            assert bool(kept[row, e]) == (int(words[e % 4]) >> 8 >= math.ceil(p * 2**24)), (row, e)


# ---- distribution, scale, edge values ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_keep_rate_within_binomial_bounds(device, p):
    x = torch.ones(4096, 257, device=device)
    sample_ids, pass_ids = ids_for(4096, device)
    n = x.numel()
    for pass_ in (0, 1):
        kept = (entropy_al.keyed_dropout(x, p, SEED, sample_ids, pass_ids + pass_) != 0).double()
        sd = math.sqrt(n * p * (1 - p))
        assert abs(kept.sum().item() - n * (1 - p)) < 6 * sd
        # No structure along either axis: every element position and every sample keeps at the same rate.
        per_position = kept.mean(0)
        assert (per_position - (1 - p)).abs().max().item() < 6 * math.sqrt(p * (1 - p) / 4096)
        if pass_ == 0:
            first = kept
    # Two passes of the same sample are independent draws: both kept with probability (1 - p)^2.
    both = (first * kept).sum().item()
    q = (1 - p) ** 2
    assert abs(both - n * q) < 6 * math.sqrt(n * q * (1 - q))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7, 1 / 3, 0.999])
def test_scale_is_exactly_nn_dropouts(device, dtype, p):
    x = torch.ones(64, 64, dtype=dtype, device=device)
    ours = entropy_al.keyed_dropout(x, p, SEED, *ids_for(64, device))
    torch_scale = F.dropout(torch.ones(200_000, dtype=dtype, device=device), p, training=True).unique()
    assert set(ours.unique().tolist()) <= set(torch_scale.tolist()) | {0.0}
    expected = (torch.tensor(1.0, dtype=dtype) / torch.tensor(1.0 - p, dtype=dtype)).item()
    assert ours.max().item() == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kept_values_are_x_times_scale_rounded_once(device, dtype):
    x = (torch.randn(33, 50) * 100).to(dtype).to(device)
    p = 0.37
    out = entropy_al.keyed_dropout(x, p, SEED, *ids_for(33, device))
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    scale = torch.tensor(1.0, dtype=compute) / torch.tensor(1 - p, dtype=compute)
    kept = out != 0
    assert torch.equal(out[kept], (x[kept].to(compute) * scale.to(device)).to(dtype))


def special_values(dtype, device):
    tiny = torch.finfo(dtype).tiny
    values = [0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan"), tiny / 4, -tiny / 2, tiny]
    return torch.tensor(values * 13, dtype=dtype).reshape(10, 13).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_p_zero_is_a_copy_and_p_one_is_x_times_zero(device, dtype):
    x = special_values(dtype, device)
    ids = ids_for(10, device)
    same = entropy_al.keyed_dropout(x, 0.0, SEED, *ids)
    assert same.data_ptr() != x.data_ptr() and same_bits(same, x)
    zeros = entropy_al.keyed_dropout(x, 1.0, SEED, *ids)
    assert same_bits(zeros, x * 0)  # as nn.Dropout(p=1): 0 with x's sign, NaN for inf and NaN
    finite = torch.isfinite(x)
    assert (zeros[finite] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_special_values_like_nn_dropout(device, dtype):
    """Subnormals survive (no flush to zero, also on CUDA under --use_fast_math); inf/NaN that are dropped
    become NaN (inf * 0), as in nn.Dropout."""
    x = special_values(dtype, device)
    out = entropy_al.keyed_dropout(x, 0.5, SEED, *ids_for(10, device))
    ones = entropy_al.keyed_dropout(torch.ones_like(x), 0.5, SEED, *ids_for(10, device))
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    assert same_bits(out, (x.to(compute) * ones.to(compute)).to(dtype))
    kept = ones != 0
    subnormal = (x != 0) & (x.abs() < torch.finfo(dtype).tiny)
    assert (out[kept & subnormal] != 0).all()


# ---- a sample's mask depends on its ids only ---------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_mask_invariant_across_batching_order_and_replication(device):
    pool, features, p = 64, 37, 0.5
    x_pool = torch.randn(pool, 3, features).to(device)  # trailing shape [3, 37]: positions are row-major
    all_ids = torch.arange(pool, device=device) * 7919 + 11
    full = entropy_al.keyed_dropout(x_pool, p, SEED, all_ids, torch.full_like(all_ids, 4))
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 5, 17, 64):
        order = torch.randperm(pool, generator=generator)[:batch].to(device)
        out = entropy_al.keyed_dropout(x_pool[order], p, SEED, all_ids[order], 4)
        assert torch.equal(out, full[order])
    # Stacked passes (replication): rows j*B .. (j+1)*B - 1 are pass j.
    stacked = entropy_al.keyed_dropout(
        x_pool.repeat(3, 1, 1), p, SEED, all_ids.repeat(3), torch.arange(3, device=device).repeat_interleave(pool) + 3
    )
    assert torch.equal(stacked[pool : 2 * pool], full)
    assert not torch.equal(stacked[:pool], full) and not torch.equal(stacked[2 * pool :], full)


@pytest.mark.parametrize("device", DEVICES)
def test_mask_identical_across_dtypes_and_strides(device):
    x = torch.randn(40, 6, 9).to(device)
    ids = ids_for(40, device)
    masks = [entropy_al.keyed_dropout(x.to(dtype), 0.4, SEED, *ids) != 0 for dtype in DTYPES]
    for mask in masks[1:]:
        assert torch.equal(mask, masks[0])
    # A non-contiguous x with the same logical values gives the same output.
    transposed = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(
        entropy_al.keyed_dropout(transposed, 0.4, SEED, *ids), entropy_al.keyed_dropout(x, 0.4, SEED, *ids)
    )


def test_seed_bits_matter_and_high_seeds_wrap():
    x = torch.ones(8, 64)
    ids = ids_for(8)
    a = entropy_al.keyed_dropout(x, 0.5, 1, *ids)
    assert not torch.equal(a, entropy_al.keyed_dropout(x, 0.5, 1 + (1 << 32), *ids))
    assert torch.equal(
        entropy_al.keyed_dropout(x, 0.5, (1 << 64) - 5, *ids), entropy_al.keyed_dropout(x, 0.5, -5, *ids)
    )


# ---- every backend against the oracle, bit for bit ---------------------------------------------------------------

SHAPES = [(1, 1), (3, 5), (7, 13), (2, 1031), (5, 3, 4, 5), (4,), (0, 7), (6, 0), (257, 128)]


def make_input(shape, dtype, device, layout):
    if layout == "transposed" and len(shape) >= 2:
        return torch.randn(*shape[:-2], shape[-1], shape[-2]).to(dtype).to(device).transpose(-1, -2)
    if layout == "sliced":
        big = torch.randn(shape[0] + 2, *(s + 3 for s in shape[1:]))
        return big[(slice(1, shape[0] + 1),) + tuple(slice(1, s + 1) for s in shape[1:])].to(dtype).to(device)
    return torch.randn(shape).to(dtype).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_compiled_kernel_equals_reference(device, dtype, shape, layout):
    x = make_input(shape, dtype, device, layout)
    generator = torch.Generator().manual_seed(len(shape) * 1000 + shape[0])
    sample_ids = torch.randint(-(2**62), 2**62, (shape[0],), generator=generator).to(device)
    pass_ids = torch.randint(0, 50, (shape[0],), generator=generator).to(device)
    for p in (0.0, 0.25, 0.5, 0.999, 1.0):
        out = compiled_op(x, p, SEED, sample_ids, pass_ids)
        ref = reference.keyed_dropout_reference(x.cpu(), p, SEED, sample_ids.cpu(), pass_ids.cpu())
        assert out.is_contiguous() and out.device == x.device
        assert same_bits(out.cpu(), ref), (p, shape, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_threshold_and_scale_agree_for_many_p(device, dtype):
    """The integer threshold ceil(p 2^24) and the scale 1/(1-p) of the kernels and of the oracle, for p near the
    draws' resolution and for random p."""
    generator = torch.Generator().manual_seed(1)
    probabilities = torch.rand(100, generator=generator, dtype=torch.float64).tolist()
    probabilities += [2.0**-24, 2.0**-25, 3 * 2.0**-25, 1 - 2.0**-24, 1 - 2.0**-53, 0.5 + 2.0**-30]
    x = torch.ones(16, 64, dtype=dtype, device=device)
    sample_ids, pass_ids = ids_for(16, device)
    for p in probabilities:
        out = compiled_op(x, p, SEED, sample_ids, pass_ids)
        assert same_bits(
            out.cpu(), reference.keyed_dropout_reference(x.cpu(), p, SEED, sample_ids.cpu(), pass_ids.cpu())
        ), p


@pytest.mark.parametrize("device", DEVICES)
def test_reference_runs_on_the_device(device):
    x = torch.randn(9, 21, device=device)
    ids = ids_for(9, device)
    out = reference.keyed_dropout_reference(x, 0.3, SEED, *ids)
    assert out.device == x.device
    assert torch.equal(out.cpu(), reference.keyed_dropout_reference(x.cpu(), 0.3, SEED, ids[0].cpu(), ids[1].cpu()))
