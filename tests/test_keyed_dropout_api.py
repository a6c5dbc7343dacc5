"""keyed_dropout's API: errors (the same on every backend), registration (opcheck, autograd, torch.compile) and the
channel and alpha variants."""

import math

import pytest
import torch
from conftest import COMPILED, DEVICES
from keyed_fixtures import SEED, ids_for, same_bits

import entropy_al

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
