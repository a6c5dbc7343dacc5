"""Property-based tests (hypothesis): random shapes, dtypes, strides and values through every backend present.

Scores against the float64 reference, StreamingTopK against a stable sort, keyed_dropout against its pure-PyTorch
oracle bit for bit.

The fast profile runs in CI. ENTROPY_AL_FUZZ_EXAMPLES=10000 (or more) runs the long profile:
    ENTROPY_AL_FUZZ_EXAMPLES=10000 python -m pytest tests/test_properties.py -q
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mc_scores import assert_scores_close
from test_topk import sort_reference

import entropy_al
from entropy_al import reference
from entropy_al.scores import SCORE_INFO

EXAMPLES = int(os.environ.get("ENTROPY_AL_FUZZ_EXAMPLES", "60"))
PROFILE = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES <= 60
)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

SPECIAL_VALUES = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e30, -1e30, 1e-30, 88.0, -104.0, 120.0]


@st.composite
def logit_stacks(draw):
    """A [K, N, C] logit stack in a random layout, with random regimes of values."""
    k = draw(st.integers(1, 6))
    n = draw(st.integers(0, 40))
    c = draw(st.sampled_from([1, 2, 3, 8, 9, 15, 16, 17, 31, 64, 130]))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
    regime = draw(st.sampled_from(["normal", "huge", "tiny", "equal", "one-hot", "special"]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(k, n, c, generator=generator, dtype=torch.float64)
    if regime == "normal":
        z = z * draw(st.floats(0.01, 40))
    elif regime == "huge":
        z = z * 1e4
    elif regime == "tiny":
        z = z * 1e-6
    elif regime == "equal":
        z = torch.full_like(z, draw(st.floats(-50, 50)))
    elif regime == "one-hot":
        z = torch.where(torch.rand(z.shape, generator=generator, dtype=torch.float64) < 0.2, z + 150, z - 150)
    else:
        picks = torch.randint(0, len(SPECIAL_VALUES), z.shape, generator=generator)
        mask = torch.rand(z.shape, generator=generator) < 0.1
        z = torch.where(mask, torch.tensor(SPECIAL_VALUES, dtype=torch.float64)[picks], z * 10)
    z = z.to(dtype)
    layout = draw(st.sampled_from(["contiguous", "permuted", "strided-classes", "transposed"]))
    if layout == "permuted":
        z = z.permute(1, 0, 2).contiguous().permute(1, 0, 2)
    elif layout == "strided-classes":
        z = torch.repeat_interleave(z, 2, dim=2)[:, :, ::2]
    elif layout == "transposed":
        z = z.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    return z


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(logits=logit_stacks(), score=st.sampled_from(reference.SCORES))
def test_scores_match_reference_on_any_input(device, logits, score):
    if logits.shape[2] < SCORE_INFO[score].min_classes:
        return
    logits = logits.to(device)
    ref = reference.mc_scores_reference(logits, score)
    assert_scores_close(entropy_al.mc_scores(logits, score), ref, "active backend")
    assert_scores_close(reference.mc_scores_reference(logits, score, torch.float32), ref, "fallback")


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(
    values=st.lists(
        st.sampled_from(SPECIAL_VALUES + [1.0, 2.0, -1.0, 0.5]) | st.floats(allow_nan=True, width=32), max_size=80
    ),
    cuts=st.lists(st.integers(0, 80), max_size=8),
    k=st.integers(0, 90),
    seed=st.integers(0, 1000),
)
def test_streaming_topk_equals_sort_on_any_blocks(device, values, cuts, k, seed):
    scores = torch.tensor(values, dtype=torch.float32)
    bounds = [0] + sorted(min(c, len(values)) for c in cuts) + [len(values)]
    blocks = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed)).tolist()
    topk = entropy_al.StreamingTopK(k, device=device)
    for i in order:
        start, end = blocks[i]
        topk.update(scores[start:end].to(device), start)
    assert topk.indices.cpu().tolist() == sort_reference(scores, k)


@st.composite
def keyed_dropout_inputs(draw):
    """(x, p, seed, sample_ids, pass_ids): any shape (zero sizes too), dtype, layout and value, any p, seed and ids."""
    rows = draw(st.integers(0, 12))
    trailing = draw(st.lists(st.integers(0, 17), min_size=0, max_size=3))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(rows, *trailing, generator=generator, dtype=torch.float64)
    if draw(st.booleans()):  # special values: NaN, ±inf, ±0, huge and tiny magnitudes
        picks = torch.randint(0, len(SPECIAL_VALUES), x.shape, generator=generator)
        special = torch.tensor(SPECIAL_VALUES, dtype=torch.float64)[picks]
        x = torch.where(torch.rand(x.shape, generator=generator) < 0.2, special, x)
    x = x.to(dtype)
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    if layout == "transposed" and x.dim() >= 3:
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "strided" and x.dim() >= 2:
        x = torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
    p = draw(st.sampled_from([0.0, 1.0, 0.5, 2.0**-24, 2.0**-25, 1 - 2.0**-24]) | st.floats(0.0, 1.0))
    seed = draw(st.integers(-(2**63), 2**64 - 1))
    sample_ids = torch.randint(-(2**63), 2**63 - 1, (rows,), generator=generator, dtype=torch.int64)
    pass_ids = torch.randint(-(2**63), 2**63 - 1, (rows,), generator=generator, dtype=torch.int64)
    return x, p, seed, sample_ids, pass_ids


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(inputs=keyed_dropout_inputs(), order_seed=st.integers(0, 1000))
def test_keyed_dropout_is_the_reference_bit_for_bit(device, inputs, order_seed):
    """The active backend equals the pure-PyTorch oracle bit for bit, and a row's output depends on its own ids
    only (permuting the rows permutes the output)."""
    from test_keyed_dropout import same_bits

    x, p, seed, sample_ids, pass_ids = inputs
    ref = reference.keyed_dropout_reference(x, p, seed, sample_ids, pass_ids)
    x, sample_ids, pass_ids = x.to(device), sample_ids.to(device), pass_ids.to(device)
    out = entropy_al.keyed_dropout(x, p, seed, sample_ids, pass_ids)
    assert out.is_contiguous() and out.dtype == x.dtype and out.shape == x.shape
    assert same_bits(out.cpu(), ref), (p, seed, x.dtype, list(x.shape))
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(order_seed)).to(device)
    permuted = entropy_al.keyed_dropout(x[order], p, seed, sample_ids[order], pass_ids[order])
    assert same_bits(permuted.cpu(), out[order].cpu())


# Found by the long profile: float64 logits used to be rounded to float32 before the row max was subtracted, so
# near-tied logits of magnitude ~1e4 lost their difference (30x the 1e-5 bound).
@pytest.mark.parametrize("device", DEVICES)
def test_float64_logits_of_huge_magnitude_with_near_ties(device):
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4, 2000, 9, generator=generator, dtype=torch.float64) * 1e4
    # In every pass one more class within 3 of the row's max: its probability is far from 0 and 1.
    top = z.max(dim=2, keepdim=True).values
    near = torch.randint(0, 9, (4, 2000, 1), generator=generator)
    z = z.scatter(2, near, top - 3 * torch.rand(4, 2000, 1, generator=generator, dtype=torch.float64)).to(device)
    assert_scores_close(entropy_al.mc_scores(z, "entropy"), reference.mc_scores_reference(z, "entropy"), "backend")
