"""keyed_dropout: the generator, mask statistics, exact scale and edge values, invariance of a sample's mask, every
backend bit for bit against the pure-PyTorch oracle, errors, registration (opcheck, autograd, torch.compile), and
keyed_mc_dropout on whole models (coverage, layouts, restoring the modules)."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import COMPILED, DEVICES
from torch import nn

import entropy_al
from entropy_al import keyed_mc, reference

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


# ---- errors ------------------------------------------------------------------------------------------------------


def bad_calls():
    x, ids = torch.ones(4, 3), ids_for(4)
    yield (
        (x.long(), 0.5, 0, *ids),
        TypeError,
        "keyed_dropout: expected `x` of dtype float32, float16, bfloat16 or float64, got torch.int64",
    )
    yield (
        (torch.tensor(1.0), 0.5, 0, *ids),
        ValueError,
        r"keyed_dropout: expected `x` of shape \[B, ...\] \(samples first\), got shape \[\]",
    )
    yield (x, 1.5, 0, *ids), ValueError, r"keyed_dropout: expected `p` in \[0, 1\], got 1.5"
    yield (x, -0.1, 0, *ids), ValueError, r"keyed_dropout: expected `p` in \[0, 1\], got -0.1"
    yield (x, float("nan"), 0, *ids), ValueError, r"keyed_dropout: expected `p` in \[0, 1\], got nan"
    yield (
        (x, 0.5, 0, ids[0].int(), ids[1]),
        TypeError,
        "keyed_dropout: expected `sample_ids` to be an int64 tensor, got torch.int32",
    )
    yield (
        (x, 0.5, 0, ids[0], ids[1].float()),
        TypeError,
        "keyed_dropout: expected `pass_ids` to be an int64 tensor, got torch.float32",
    )
    yield (
        (x, 0.5, 0, ids[0][:3], ids[1]),
        ValueError,
        r"keyed_dropout: expected `sample_ids` of shape \[B\] = \[4\], one id per row of `x`, got shape \[3\]",
    )
    yield (
        (x, 0.5, 0, ids[0], ids[1].reshape(2, 2)),
        ValueError,
        r"keyed_dropout: expected `pass_ids` of shape \[B\] = \[4\], one id per row of `x`, got shape \[2, 2\]",
    )
    yield (
        (x, 0.5, 0, ids[0].to("meta"), ids[1]),
        ValueError,
        "keyed_dropout: expected `sample_ids` on cpu like `x`, got meta",
    )


@pytest.mark.parametrize("args,error,message", list(bad_calls()))
def test_errors_name_the_argument(args, error, message):
    with pytest.raises(error, match=message):
        entropy_al.keyed_dropout(*args)


@COMPILED
@pytest.mark.parametrize("args,error,message", list(bad_calls()))
def test_kernel_checks_give_the_same_messages(args, error, message):
    if args[3].device.type == "meta":
        pytest.skip("the dispatcher picks the meta kernel for meta ids")
    with pytest.raises(error, match=message):
        torch.ops.entropy_al.keyed_dropout.default(*args)


def test_python_only_errors():
    x, ids = torch.ones(4, 3), ids_for(4)
    with pytest.raises(TypeError, match="expected `x` to be a torch.Tensor, got list"):
        entropy_al.keyed_dropout([1.0], 0.5, 0, *ids)
    with pytest.raises(ValueError, match=r"expected `seed` to be an int in \[-2\*\*63, 2\*\*64\), got 1844674407"):
        entropy_al.keyed_dropout(x, 0.5, 1 << 64, *ids)
    with pytest.raises(TypeError, match="expected `sample_ids` to be an int64 tensor, got list"):
        entropy_al.keyed_dropout(x, 0.5, 0, [0, 1, 2, 3], 0)


# ---- registration ------------------------------------------------------------------------------------------------


def op_cases(device):
    generator = torch.Generator().manual_seed(0)
    sample_ids = torch.randint(0, 10**6, (6,), generator=generator).to(device)
    pass_ids = torch.arange(6, device=device)
    x = torch.randn(6, 5, 7, generator=generator).to(device)
    yield x, 0.3, -SEED, sample_ids, pass_ids
    yield x.transpose(1, 2), 0.5, 7, sample_ids, pass_ids
    yield x.to(torch.bfloat16), 0.0, 7, sample_ids, pass_ids
    yield x.double(), 1.0, 7, sample_ids, pass_ids
    yield x[:0], 0.5, 7, sample_ids[:0], pass_ids[:0]


@COMPILED
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    for x, *rest in op_cases(device):
        x = x.detach().requires_grad_(requires_grad)
        torch.library.opcheck(torch.ops.entropy_al.keyed_dropout.default, (x, *rest))


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_is_the_same_mask(device):
    x = torch.randn(12, 30, dtype=torch.float64, device=device, requires_grad=True)
    ids = ids_for(12, device)
    torch.autograd.gradcheck(lambda t: entropy_al.keyed_dropout(t, 0.4, SEED, *ids), (x,))
    entropy_al.keyed_dropout(x, 0.4, SEED, *ids).sum().backward()
    assert torch.equal(x.grad, entropy_al.keyed_dropout(torch.ones_like(x), 0.4, SEED, *ids))


@COMPILED
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_equals_eager(device):
    def head(x, sample_ids, pass_ids):
        h = entropy_al.keyed_dropout(torch.relu(x), 0.25, SEED, sample_ids, pass_ids)
        return entropy_al.keyed_feature_dropout(h.unsqueeze(2) * 2, 0.5, 3, sample_ids, pass_ids)

    compiled = torch.compile(head, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch in (9, 31):
        x = torch.randn(batch, 20, device=device)
        ids = ids_for(batch, device)
        assert torch.equal(compiled(x, *ids), head(x, *ids))


# ---- channel and alpha dropout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_feature_dropout_drops_whole_channels_keyed_by_channel(device):
    x = torch.randn(16, 12, 5, 5, device=device)
    ids = ids_for(16, device)
    out = entropy_al.keyed_feature_dropout(x, 0.5, SEED, *ids)
    factor = entropy_al.keyed_dropout(torch.ones(16, 12, device=device), 0.5, SEED, *ids)
    assert torch.equal(out, x * factor[:, :, None, None])
    half = entropy_al.keyed_feature_dropout(x.half(), 0.5, SEED, *ids)
    assert torch.equal(half, (x.half().float() * factor[:, :, None, None]).half())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("feature", [False, True])
def test_alpha_dropout_is_atens_formula_on_the_keyed_mask(device, feature):
    x = torch.randn(2000, 64, 3, device=device)
    ids = ids_for(2000, device)
    p = 0.2
    out = entropy_al.keyed_alpha_dropout(x, p, SEED, *ids, feature=feature)
    mask_shape = (2000, 64) if feature else tuple(x.shape)
    keep = entropy_al.keyed_dropout(torch.ones(mask_shape, device=device), p, SEED, *ids) != 0
    if feature:
        keep = keep[:, :, None].expand_as(x)
    alpha = 1.7580993408473766
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    noise = keep.to(x.dtype)
    expected = x * (noise * a) + (noise - 1) * (alpha * a) + alpha * a * p
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)
    # Self-normalizing: standard normal inputs keep mean 0 and variance 1.
    assert abs(out.mean().item()) < 0.02 and abs(out.var().item() - 1) < 0.03
    assert same_bits(entropy_al.keyed_alpha_dropout(x, 0.0, SEED, *ids, feature=feature), x)
    assert same_bits(entropy_al.keyed_alpha_dropout(x, 1.0, SEED, *ids, feature=feature), x * 0)


# ---- keyed_mc_dropout on models ----------------------------------------------------------------------------------


class FunctionalNet(nn.Module):
    """F.dropout in forward with the module's own training flag (DISTIL's EfficientNet pattern)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(F.dropout(torch.relu(self.fc1(x)), 0.5, training=self.training))


def zoo():
    """Models covering every keyed module kind and functional dropout; all samples first."""
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(10, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 32),
        nn.Dropout(0.2),
        nn.AlphaDropout(0.1),
        nn.Linear(32, 4),
    )
    conv = nn.Sequential(
        nn.Unflatten(1, (1, 10)),
        nn.Conv1d(1, 6, 3),
        nn.Dropout1d(0.3),
        nn.Unflatten(2, (2, 4)),
        nn.Dropout2d(0.3),
        nn.Unflatten(3, (2, 2)),
        nn.Dropout3d(0.3),
        nn.FeatureAlphaDropout(0.2),
        nn.Flatten(),
        nn.Linear(48, 4),
    )
    return {"mlp": mlp, "conv": conv, "functional": FunctionalNet()}


def mc_logits(model, x, first_ids, n_drop, seed=SEED, batch=None, stacked=False):
    """Keyed MC logits [n_drop, N, C] of the samples of x (pool indices first_ids + i), in batches."""
    n = x.shape[0]
    batch = batch or n
    blocks = []
    with keyed_mc.keyed_mc_dropout(model, seed) as keyed:
        for start in range(0, n, batch):
            xb = x[start : start + batch]
            ids = torch.arange(start, start + xb.shape[0], device=x.device) + first_ids
            if stacked:
                passes = torch.arange(n_drop, device=x.device).repeat_interleave(xb.shape[0])
                with keyed.batch(ids.repeat(n_drop), passes):
                    out = model(xb.repeat(n_drop, 1))
                    blocks.append(out.reshape(n_drop, xb.shape[0], *out.shape[1:]))
            else:
                outs = []
                for k in range(n_drop):
                    with keyed.batch(ids, k):
                        outs.append(model(xb))
                blocks.append(torch.stack(outs))
    return torch.cat(blocks, dim=1)


def assert_same_masks(a, b):
    """Logits of the same masks: equal up to the last bits that matmul kernels change with the batch size; a
    different mask moves them by O(0.1)."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mlp", "conv", "functional"])
def test_model_logits_invariant_to_batching_and_stacking(device, name):
    model = zoo()[name].to(device).train()
    x = torch.randn(23, 10, device=device)
    with torch.no_grad():
        reference_logits = mc_logits(model, x, 100, 4)
        assert (reference_logits[0] - reference_logits[1]).abs().max() > 0.01  # passes differ
        for batch in (1, 5, 8):
            assert_same_masks(mc_logits(model, x, 100, 4, batch=batch), reference_logits)
        assert_same_masks(mc_logits(model, x, 100, 4, batch=7, stacked=True), reference_logits)
        # A sample's logits follow its id, not its row, the others in its batch or torch's global generator.
        order = torch.randperm(23)
        torch.manual_seed(123)
        with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
            for k in range(2):
                with keyed.batch(100 + order.to(device), k):
                    assert_same_masks(model(x[order]), reference_logits[k, order])
        other_seed = mc_logits(model, x, 100, 4, seed=SEED + 1)
        assert (other_seed - reference_logits).abs().max() > 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_masks_bit_identical_through_a_model(device):
    """Without matmuls in between, the outputs are bit-identical across batch sizes, orders and stacking."""
    model = nn.Sequential(nn.Dropout(0.3), nn.Unflatten(1, (4, 6)), nn.Dropout1d(0.5), nn.AlphaDropout(0.2))
    x = torch.randn(30, 24, device=device)
    with torch.no_grad():
        full = mc_logits(model, x, 7, 3)
        assert torch.equal(mc_logits(model, x, 7, 3, batch=4), full)
        assert torch.equal(mc_logits(model, x, 7, 3, batch=11, stacked=True), full)


@pytest.mark.parametrize("device", DEVICES)
def test_sites_are_independent(device):
    """Two dropout layers on the same shape, and one module called twice, draw different masks."""
    shared = nn.Dropout(0.5)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = shared

        def forward(self, x):
            return torch.stack([self.drop(x), self.drop(x), F.dropout(x, 0.5)])

    x = torch.ones(64, 50, device=device)
    with keyed_mc.keyed_mc_dropout(Twice(), SEED) as keyed, keyed.batch(*ids_for(64, device)):
        a, b, c = Twice()(x)
    assert not torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(b, c)
    assert torch.equal(a, entropy_al.keyed_dropout(x, 0.5, keyed_mc.site_seed(SEED, 0), *ids_for(64, device)))
    assert torch.equal(c, entropy_al.keyed_dropout(x, 0.5, keyed_mc.site_seed(SEED, 2), *ids_for(64, device)))
    with keyed_mc.keyed_mc_dropout(Twice(), SEED) as keyed, keyed.batch(*ids_for(64, device), first_site=7):
        d = Twice()(x)[0]
    assert torch.equal(d, entropy_al.keyed_dropout(x, 0.5, keyed_mc.site_seed(SEED, 7), *ids_for(64, device)))


def test_functional_dropout_follows_the_training_flag_and_the_option():
    """F.dropout(training=self.training) in an eval-mode module stays off, exactly as without keying; with
    functional=False it is left to torch's generator (so it changes with torch's seed)."""
    model = FunctionalNet().eval()
    x = torch.randn(6, 10)
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed, keyed.batch(*ids_for(6)):
        assert torch.equal(model(x), model.fc2(torch.relu(model.fc1(x))))
    model.train()
    outputs = []
    for torch_seed in (1, 2):
        torch.manual_seed(torch_seed)
        with keyed_mc.keyed_mc_dropout(model, SEED, functional=False) as keyed, keyed.batch(*ids_for(6)):
            outputs.append(model(x))
    assert not torch.equal(outputs[0], outputs[1])


def test_inplace_and_eval_modules():
    model = nn.Sequential(nn.Dropout(0.5, inplace=True), nn.Dropout(0.5))
    model[1].eval()
    x = torch.ones(8, 40)
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed, keyed.batch(*ids_for(8)):
        out = model(x)
    assert out is x  # in place, and the eval-mode module is the identity
    assert torch.equal(x, entropy_al.keyed_dropout(torch.ones(8, 40), 0.5, keyed_mc.site_seed(SEED, 0), *ids_for(8)))


class SequenceFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))

    def forward(self, x):  # x [B, T, 4] -> [T, B, 4] inside
        return self.encoder(x.transpose(0, 1)).transpose(0, 1)


def test_unkeyable_layouts_raise_naming_the_module():
    with keyed_mc.keyed_mc_dropout(SequenceFirst(), SEED) as keyed:
        pass
    model = SequenceFirst().train()
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed, keyed.batch(*ids_for(3)):
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError,
            match=r"module 'encoder.1' \(Dropout\) got an input of shape \[5, 3, 4\] "
            r"whose dim 0 is not the 3 rows of the batch",
        ):
            model(torch.randn(3, 5, 4))
    drop1d = nn.Dropout1d(0.5)
    with keyed_mc.keyed_mc_dropout(drop1d, SEED) as keyed, keyed.batch(*ids_for(4)):
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError,
            match=r"module '' \(Dropout1d\) got an input of shape \[4, 9\]: keyed "
            r"channel dropout needs a batched \[N, C, ...\] input",
        ):
            drop1d(torch.randn(4, 9))


def test_dropout_inside_torch_functions_is_refused():
    """The mode sees top-level calls only: dropout that runs inside a torch function is refused, not left
    to torch's generator."""
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True).train()
    x = torch.randn(3, 5, 8)
    with keyed_mc.keyed_mc_dropout(layer, SEED) as keyed, keyed.batch(*ids_for(3)):
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError,
            match=r"attention dropout \(torch.nn.functional.multi_head_attention_forward, "
            r"dropout_p = 0.1\) cannot be keyed",
        ):
            layer(x)
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError, match="scaled_dot_product_attention with dropout_p = 0.2 cannot be keyed"
        ):
            F.scaled_dot_product_attention(x, x, x, None, 0.2)
        lstm = nn.LSTM(8, 4, num_layers=2, dropout=0.3, batch_first=True)
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError, match=r"the dropout between the layers of torch.lstm \(dropout = 0.3\)"
        ):
            lstm(x)
        lstm.eval()
        lstm(x)  # no dropout in eval mode: allowed
    # Attention dropout off: the layer's three dropout modules are keyed and the forward runs.
    layer.self_attn.dropout = 0.0
    with keyed_mc.keyed_mc_dropout(layer, SEED) as keyed:
        assert keyed.modules == ["dropout", "dropout1", "dropout2"]
        with keyed.batch(*ids_for(3)):
            layer(x)


def test_forward_outside_a_batch_block_raises():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    with keyed_mc.keyed_mc_dropout(model, SEED):
        with pytest.raises(RuntimeError, match=r"module '1' \(Dropout\) ran outside `keyed.batch"):
            model(torch.randn(2, 3))


def forwards_of(model):
    return {name: dict(module.__dict__).get("forward") for name, module in model.named_modules()}


def test_modules_restored_exactly_also_after_exceptions():
    model = zoo()["mlp"].train()
    custom = nn.Dropout(0.5)
    custom.forward = lambda x: x * 3  # an instance forward someone else set: left alone, kept afterwards
    model.append(custom)
    before = forwards_of(model)
    with pytest.raises(ZeroDivisionError):
        with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
            assert keyed.modules == ["2", "4", "5"]
            assert all(getattr(model[i].forward, "_entropy_al_keyed", False) for i in (2, 4, 5))
            with keyed.batch(*ids_for(2)):
                model(torch.randn(2, 10))
                raise ZeroDivisionError
    assert forwards_of(model) == before
    assert all("forward" not in model[i].__dict__ for i in (2, 4, 5)) and model[7].__dict__["forward"] is custom.forward
    assert type(model[2]).forward is nn.Dropout.forward
    # Stock behaviour is back: torch's generator again.
    torch.manual_seed(0)
    a = model[2](torch.ones(4, 100))
    torch.manual_seed(0)
    assert torch.equal(a, F.dropout(torch.ones(4, 100), 0.5, training=True))
    # The mode is gone too: functional dropout no longer needs ids.
    F.dropout(torch.ones(3), 0.5)


def test_nested_activation_is_refused_and_ids_are_checked():
    model = nn.Sequential(nn.Dropout(0.5))
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
        with pytest.raises(RuntimeError, match="already active on module '0'"):
            with keyed_mc.keyed_mc_dropout(model, SEED):
                pass
        assert getattr(model[0].forward, "_entropy_al_keyed", False)  # the outer activation is intact
        with pytest.raises(TypeError, match="expected `sample_ids` to be a 1-D int64 tensor, got torch.int32"):
            with keyed.batch(torch.arange(3, dtype=torch.int32), 0):
                pass
        with pytest.raises(ValueError, match=r"expected `pass_ids` of shape \[3\]"):
            with keyed.batch(torch.arange(3), torch.arange(4)):
                pass
    assert "forward" not in model[0].__dict__


@pytest.mark.parametrize("device", DEVICES)
def test_ids_on_another_device_are_moved(device):
    model = nn.Sequential(nn.Linear(5, 5), nn.Dropout(0.5)).to(device)
    x = torch.randn(4, 5, device=device)
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
        with keyed.batch(torch.arange(4), 2):
            cpu_ids = model(x)
        with keyed.batch(torch.arange(4, device=device), torch.full((4,), 2, device=device)):
            device_ids = model(x)
    assert torch.equal(cpu_ids, device_ids)
