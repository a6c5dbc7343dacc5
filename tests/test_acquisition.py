"""Stochastic acquisition in the top-k ops: "top" unchanged, bit-identical Gumbel noise and keys on every backend,
invariance to the blocking, seeds, the power rules for 0 / negative / NaN scores, errors and registration.
The sampling distribution itself is tested in test_acquisition_distribution.py."""

import math
import re

import pytest
import scipy.stats
import torch
from conftest import COMPILED, DEVICES

import entropy_al
from entropy_al import ops, reference
from entropy_al.topk import StreamingTopK

EMPTY = torch.empty(0, dtype=torch.int64)
SEEDS = [0, 1, -1, 7, 2**32, 2**63 - 1, -(2**63), 0x5EED_1234_ABCD_0042]
INDICES = torch.tensor([0, 1, 2, 3, 4, 5, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, 2**33 + 1, 2**62 + 3])


def compiled_topk(scores, state, offset, k, *acquisition):
    if entropy_al.backend(scores.device) == "torch":
        pytest.skip(f"no compiled kernel for {scores.device}")
    return ops.topk_update(scores, state, offset, k, *acquisition)


def fallback_topk(scores, state, offset, k, *acquisition):
    return reference.topk_update_reference(scores, state, offset, k, *acquisition)


TOPK_BACKENDS = [pytest.param(compiled_topk, id="compiled"), pytest.param(fallback_topk, id="fallback")]


def awkward_scores(n, generator):
    """Entropy-like scores with the edge cases mixed in: 0, -0, BALD's rounding negatives, tiny, subnormal, huge,
    +-inf, NaN."""
    scores = torch.rand(n, generator=generator) * 2
    specials = [0.0, -0.0, -3e-7, -1.0, 1e-30, 1e-45, 3e38, math.inf, -math.inf, math.nan, 1.0, 1.0]
    scores[: len(specials)] = torch.tensor(specials)
    return scores[torch.randperm(n, generator=generator)]


@COMPILED
@pytest.mark.parametrize("seed", SEEDS)
def test_noise_is_bit_identical_to_the_fallback(seed):
    index = torch.cat([INDICES, torch.randint(0, 2**32, (20000,), generator=torch.Generator().manual_seed(3))])
    got = torch.ops.entropy_al._acquisition_noise(index, seed)
    want = reference.acquisition_noise_reference(index, seed)
    assert torch.equal(got.view(torch.int64), want.view(torch.int64))


def test_noise_is_standard_gumbel():
    noise = reference.acquisition_noise_reference(torch.arange(200000), 11).numpy()
    assert scipy.stats.kstest(noise, scipy.stats.gumbel_r.cdf).pvalue > 1e-3
    # A shifted or scaled noise fails the same test.
    assert scipy.stats.kstest(noise * 1.05, scipy.stats.gumbel_r.cdf).pvalue < 1e-6


def test_deterministic_log_is_accurate():
    x = torch.cat([torch.rand(100000, dtype=torch.float64) * 50, torch.tensor([2.0**-53, 1e-16, 0.5, 1.0, 3e38])])
    x = x[x > 0]
    assert torch.allclose(reference.deterministic_log(x), torch.log(x), rtol=2e-12, atol=1e-15)
    assert not torch.allclose(reference.deterministic_log(x) * (1 + 1e-11), torch.log(x), rtol=2e-12, atol=1e-15)


@COMPILED
@pytest.mark.parametrize("acquisition", ["power", "softmax"])
@pytest.mark.parametrize("coldness", [1.0, 0.37, 25.0, 1e6])
@pytest.mark.parametrize("seed", [0, -5, 2**64 - 5])
def test_keys_are_bit_identical_to_the_fallback(acquisition, coldness, seed):
    scores = awkward_scores(3000, torch.Generator().manual_seed(seed % 1000))
    offset = 2**32 - 3000 if seed == 0 else 17
    args = (offset, 3000, acquisition, coldness, seed)
    got = ops.topk_update(scores, EMPTY, *args)
    assert torch.equal(got, reference.topk_update_reference(scores, EMPTY, *args))


@COMPILED
def test_top_is_unchanged():
    generator = torch.Generator().manual_seed(1)
    scores = awkward_scores(500, generator)
    state = reference.topk_update_reference(torch.randn(40, generator=generator), EMPTY, 1000, 30)
    today = torch.ops.entropy_al.topk_update.default(scores, state, 3, 60)  # the schema's defaults
    assert torch.equal(ops.topk_update(scores, state, 3, 60, "top", 123.0, 99), today)
    assert torch.equal(reference.topk_update_reference(scores, state, 3, 60, "top", 0.5, -1), today)
    logits = torch.randn(4, 300, 7, generator=generator)
    fused = torch.ops.entropy_al.mc_topk_update.default(logits, state, 5, 50, "bald")
    assert torch.equal(ops.mc_topk_update(logits, state, 5, 50, "bald", "top", 9.0, 3), fused)


@pytest.mark.parametrize("topk", TOPK_BACKENDS)
@pytest.mark.parametrize("acquisition", ["power", "softmax"])
def test_huge_coldness_gives_the_top_k(topk, acquisition):
    generator = torch.Generator().manual_seed(2)
    scores = (torch.randperm(1000, generator=generator).float() + 100) / 1000  # distinct, gaps >= 1e-3
    want = reference.decode_keys(reference.topk_update_reference(scores, EMPTY, 0, 40))[1]
    for seed in range(5):
        got = reference.decode_keys(topk(scores, EMPTY, 0, 40, acquisition, 1e6, seed))[1]
        assert torch.equal(got, want)
    # At coldness 1 the noise does reorder them.
    assert not torch.equal(reference.decode_keys(topk(scores, EMPTY, 0, 40, acquisition, 1.0, 0))[1], want)


def split_merge(topk, scores, k, sizes, order, acquisition):
    """Streams scores in blocks of the given sizes, merged in the given block order."""
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    state = EMPTY.to(scores.device)
    for block in order:
        start, stop = bounds[block], bounds[block + 1]
        state = topk(scores[start:stop], state, start, k, *acquisition)
    return state


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("topk", TOPK_BACKENDS)
@pytest.mark.parametrize("acquisition", [("power", 1.0, 4), ("softmax", 3.0, -8), ("power", 0.25, 2**64 - 1)])
def test_selection_does_not_depend_on_the_blocks(device, topk, acquisition):
    generator = torch.Generator().manual_seed(4)
    scores = awkward_scores(2001, generator).to(device)
    whole = topk(scores, EMPTY.to(device), 0, 64, *acquisition)
    for block in (1, 7, 64, 1000):
        sizes = [block] * (2001 // block) + ([2001 % block] if 2001 % block else [])
        order = torch.randperm(len(sizes), generator=generator).tolist()
        assert torch.equal(split_merge(topk, scores, 64, sizes, order, acquisition), whole)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("acquisition", [("power", 2.0, 6), ("softmax", 0.5, 7)])
def test_fused_op_equals_scores_then_topk(device, acquisition):
    generator = torch.Generator().manual_seed(5)
    logits = (torch.randn(5, 700, 9, generator=generator) * 3).to(device)
    state = EMPTY.to(device)
    fused, separate = state, state
    for start in range(0, 700, 128):
        block = logits[:, start : start + 128]
        fused = ops.mc_topk_update(block, fused, start, 100, "entropy", *acquisition)
        separate = ops.topk_update(ops.mc_scores(block, "entropy"), separate, start, 100, *acquisition)
    assert torch.equal(fused, separate)
    # The streaming class passes the arguments through.
    stream = StreamingTopK(100, device, *acquisition)
    for start in range(0, 700, 300):
        stream.update_logits(logits[:, start : start + 300], start, "entropy")
    assert torch.equal(stream.state, fused)


@pytest.mark.parametrize("topk", TOPK_BACKENDS)
def test_seeds(topk):
    scores = torch.rand(500, generator=torch.Generator().manual_seed(6)) + 0.1
    picks = {seed: topk(scores, EMPTY, 0, 20, "power", 1.0, seed) for seed in (0, 1, 2, -1, 2**32)}
    assert len({tuple(p.tolist()) for p in picks.values()}) == len(picks)
    # Only the 64 bits of the seed matter, as for keyed dropout.
    assert torch.equal(topk(scores, EMPTY, 0, 20, "power", 1.0, 2**64 - 1), picks[-1])
    assert torch.equal(topk(scores, EMPTY, 0, 20, "power", 1.0, 0), picks[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("topk", TOPK_BACKENDS)
def test_power_ranks_zero_and_negative_after_positive_and_nan_last(device, topk):
    scores = torch.tensor([0.0, 0.3, -2e-7, math.nan, 1e-30, -0.0, 2.0, -1.0, math.inf, 0.01], device=device)
    values, index = reference.decode_keys(topk(scores, EMPTY.to(device), 0, 10, "power", 1.0, 0))
    assert set(index[:5].tolist()) == {1, 4, 6, 8, 9}  # every positive score first, in a random order
    assert index[5:].tolist() == [0, 2, 5, 7, 3]  # then s <= 0 by index (-inf keys), then NaN
    assert torch.isinf(values[5:9]).all() and (values[5:9] < 0).all() and torch.isnan(values[9])
    # softmax keeps the order information of negatives and zero; NaN still last.
    values, index = reference.decode_keys(topk(scores, EMPTY.to(device), 0, 10, "softmax", 1.0, 0))
    assert index[-1] == 3 and index[0] == 8 and torch.isfinite(values[1:9]).all()


BAD_ACQUISITION = [
    (("greedy", 1.0, 0), ValueError, "expected `acquisition` to be one of 'top', 'power', 'softmax'"),
    (("Power", 1.0, 0), ValueError, "expected `acquisition`"),
    (("power", 0.0, 0), ValueError, "expected `coldness` to be a finite float > 0, got 0.0"),
    (("softmax", -1.0, 0), ValueError, "expected `coldness` to be a finite float > 0"),
    (("softmax", math.nan, 0), ValueError, "expected `coldness`"),
    (("softmax", math.inf, 0), ValueError, "expected `coldness`"),
    (("softmax", True, 0), ValueError, "expected `coldness`"),
    (("softmax", 1.0, 2**64), ValueError, "expected `acquisition_seed` to be an int in [-2**63, 2**64)"),
    (("softmax", 1.0, 1.5), ValueError, "expected `acquisition_seed`"),
    (("softmax", 1.0, torch.tensor(3)), ValueError, "expected `acquisition_seed`"),
]


@pytest.mark.parametrize("args, error, message", BAD_ACQUISITION)
def test_errors(args, error, message):
    with pytest.raises(error, match="^topk_update: " + re.escape(message)):
        ops.topk_update(torch.rand(4), EMPTY, 0, 2, *args)
    with pytest.raises(error, match="^mc_topk_update: "):
        ops.mc_topk_update(torch.randn(2, 4, 3), EMPTY, 0, 2, "entropy", *args)
    with pytest.raises(error, match="^StreamingTopK: "):
        StreamingTopK(2, "cpu", *args)


@pytest.mark.parametrize("score", ["margin", "least_confidence"])
def test_power_on_nonpositive_scores_suggests_softmax(score):
    message = f"mc_topk_update: acquisition 'power' needs scores >= 0, but score '{score}' is <= 0; use acquisition"
    with pytest.raises(ValueError, match=message + " 'softmax'"):
        ops.mc_topk_update(torch.randn(2, 4, 3), EMPTY, 0, 2, score, "power")
    ops.mc_topk_update(torch.randn(2, 4, 3), EMPTY, 0, 2, score, "softmax")  # the suggestion works


@COMPILED
def test_the_kernels_check_the_same():
    logits = torch.randn(2, 4, 3)
    for call, message in [
        (lambda: torch.ops.entropy_al.topk_update(torch.rand(4), EMPTY, 0, 2, "greedy"), "`acquisition`"),
        (lambda: torch.ops.entropy_al.topk_update(torch.rand(4), EMPTY, 0, 2, "power", -1.0), "`coldness`"),
        (lambda: torch.ops.entropy_al.mc_topk_update(logits, EMPTY, 0, 2, "margin", "power"), "'softmax'"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


@COMPILED
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    state = reference.topk_update_reference(torch.randn(6), EMPTY, 100, 4).to(device)
    torch.library.opcheck(
        torch.ops.entropy_al.topk_update.default, (torch.rand(9, device=device), state, 0, 5, "power", 2.0, -3)
    )
    torch.library.opcheck(
        torch.ops.entropy_al.mc_topk_update.default,
        (torch.randn(3, 17, 5, device=device), state, 0, 8, "margin", "softmax", 0.5, 2**40),
    )


@pytest.mark.parametrize("acquisition", ["power", "softmax"])
def test_cuda_keys_equal_cpu_keys(acquisition):
    if not torch.cuda.is_available() or entropy_al.backend("cuda") == "torch":
        pytest.skip("requires the compiled CUDA kernels and a GPU")
    logits = torch.randn(6, 5000, 40, generator=torch.Generator().manual_seed(8)) * 2
    args = (2**32 - 5000, 5000, "entropy", acquisition, 1.5, -77)
    cpu = ops.mc_topk_update(logits, EMPTY, *args)
    cuda = ops.mc_topk_update(logits.cuda(), EMPTY.cuda(), *args).cpu()
    # Scores agree to float32 rounding across backends; the noise is identical, so nearly every pick is too.
    cpu_picks, cuda_picks = reference.decode_keys(cpu)[1][:100], reference.decode_keys(cuda)[1][:100]
    assert (cpu_picks == cuda_picks).float().mean() > 0.9
    scores = ops.mc_scores(logits, "entropy")
    noise_args = (scores, EMPTY, args[0], 5000, acquisition, 1.5, -77)
    assert torch.equal(ops.topk_update(*noise_args), ops.topk_update(scores.cuda(), *noise_args[1:]).cpu())


@COMPILED
def test_torch_compile_fullgraph_equals_eager():
    def select(logits, state):
        return entropy_al.mc_topk_update(logits, state, 0, 5, "bald", "power", 2.0, 2**64 - 9)

    compiled = torch.compile(select, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (33, 70):
        logits = torch.randn(4, n, 6)
        assert torch.equal(compiled(logits, EMPTY), select(logits, EMPTY))
