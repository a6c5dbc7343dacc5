"""mc_scores on every backend against the float64 reference, across scores, dtypes, shapes, strides, devices."""

import itertools

import pytest
import torch
from conftest import DEVICES, SCORE_BACKENDS, poison_allocator

import entropy_al
from entropy_al import reference
from entropy_al.scores import scores_for_classes

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
CLASSES = [1, 2, 7, 10, 100, 1000, 1031]
PASSES = [1, 3, 10]
SAMPLES = [0, 1, 257, 10001]
# Cap on K·N·C per case so the float64 reference keeps the suite fast; every size still meets every other.
MAX_ELEMENTS = 1_100_000
SHAPES = [(k, n, c) for k, n, c in itertools.product(PASSES, SAMPLES, CLASSES) if k * n * c <= MAX_ELEMENTS]


def realistic_logits(shape, dtype, device, generator):
    """Logits of realistic range (|z| up to 30) with a spread of confident and uncertain samples."""
    k, n, c = shape
    scale = torch.rand(1, n, 1, generator=generator) * 10
    z = (torch.randn(k, n, c, generator=generator) * scale).clamp(-30, 30)
    return z.to(dtype).to(device)


def assert_scores_close(out, ref, what):
    assert out.dtype == torch.float32, what
    assert out.shape == ref.shape, what
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), f"{what}: NaN pattern differs"
    finite = ~torch.isnan(ref)
    err = (out.double()[finite] - ref[finite]).abs()
    bound = 1e-5 * ref[finite].abs().clamp(min=1)
    worst = (err / bound).max().item() if err.numel() else 0.0
    assert worst <= 1.0, f"{what}: error {worst:.2f}x the tolerance 1e-5*max(1,|ref|)"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", SCORE_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "K{}-N{}-C{}".format(*s))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_float64_reference(device, backend, shape, dtype):
    generator = torch.Generator().manual_seed(hash((shape, str(dtype))) % 2**31)
    logits = realistic_logits(shape, dtype, device, generator)
    for score in scores_for_classes(shape[2]):
        ref = reference.mc_scores_reference(logits, score)
        poison_allocator(device, shape[1] * 4)
        assert_scores_close(backend(logits, score), ref, f"{score} {shape} {dtype}")


def extreme_rows(num_classes, device):
    """Rows where float32 softmax underflows to exactly 0 (gaps > 110), -inf logits, huge magnitudes."""
    c = num_classes
    rows = [
        torch.tensor([0.0] + [-120.0] * (c - 1)),
        torch.tensor([115.0] + [0.0] * (c - 1)),
        torch.tensor([-1e30] * c),
        torch.tensor([3e4] + [-3e4] * (c - 1)),
        torch.tensor([0.0] + [float("-inf")] * (c - 1)),
        torch.linspace(-200, 200, c),
        torch.zeros(c),
    ]
    return torch.stack(rows).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", SCORE_BACKENDS)
@pytest.mark.parametrize("num_classes", [1, 2, 10, 100, 1031])
def test_extreme_rows_stay_finite(device, backend, num_classes):
    rows = extreme_rows(num_classes, device)
    # Pass k of sample n uses a different extreme row, so passes disagree wildly.
    logits = torch.stack([rows.roll(k, dims=0) for k in range(4)])
    for score in scores_for_classes(num_classes):
        out = backend(logits, score)
        assert torch.isfinite(out).all(), f"{score}: {out}"
        assert_scores_close(out, reference.mc_scores_reference(logits, score), score)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", SCORE_BACKENDS)
@pytest.mark.parametrize("num_classes", [2, 7, 100, 1031])
def test_nan_and_positive_inf_poison_only_their_sample(device, backend, num_classes):
    generator = torch.Generator().manual_seed(7)
    logits = realistic_logits((3, 9, num_classes), torch.float32, device, generator)
    logits[1, 2, 0] = float("nan")
    logits[2, 4, num_classes - 1] = float("inf")
    logits[:, 6, :] = float("-inf")  # no finite logit: the softmax is undefined
    logits[0, 8, 1:] = float("-inf")  # one finite logit: a valid one-hot row
    for score in scores_for_classes(num_classes):
        out = backend(logits, score)
        assert torch.isnan(out).nonzero().flatten().tolist() == [2, 4, 6], score
        assert_scores_close(out, reference.mc_scores_reference(logits, score), score)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", SCORE_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_any_strides(device, backend, dtype):
    generator = torch.Generator().manual_seed(3)
    base = realistic_logits((5, 7, 2 * 33), dtype, device, generator)
    layouts = {
        "pass-last": base[:, :, :33].permute(1, 0, 2).contiguous().permute(1, 0, 2),
        "class-stride-2": base[:, :, ::2],
        "sample-major": base[:, :, :33].transpose(0, 1).contiguous().transpose(0, 1),
        "classes-first": base[:, :, :33].permute(2, 0, 1).contiguous().permute(1, 2, 0),
        "sliced-samples": base[:, 1::2, 5:38],
        "expanded-passes": base[:1, :, :33].expand(4, -1, -1),
    }
    for name, logits in layouts.items():
        assert not logits.is_contiguous(), name
        for score in reference.SCORES:
            ref = reference.mc_scores_reference(logits.contiguous(), score)
            assert_scores_close(backend(logits, score), ref, f"{name} {score}")


def test_known_values():
    """Hand-computed values: uniform and certain predictions, and passes that disagree."""
    uniform = torch.zeros(2, 1, 4)
    assert entropy_al.mc_scores(uniform, "entropy").item() == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert entropy_al.mc_scores(uniform, "bald").item() == pytest.approx(0.0, abs=1e-6)
    assert entropy_al.mc_scores(uniform, "margin").item() == pytest.approx(0.0, abs=1e-7)
    assert entropy_al.mc_scores(uniform, "least_confidence").item() == pytest.approx(-0.25)
    # Two confident passes that disagree: p̄ = (0.5, 0.5), each pass has entropy ~0, so BALD = ln 2.
    disagree = torch.tensor([[[200.0, 0.0]], [[0.0, 200.0]]])
    assert entropy_al.mc_scores(disagree, "entropy").item() == pytest.approx(0.693147, abs=1e-5)
    assert entropy_al.mc_scores(disagree, "bald").item() == pytest.approx(0.693147, abs=1e-5)
    one_class = torch.randn(3, 5, 1)
    assert torch.allclose(entropy_al.mc_scores(one_class, "entropy"), torch.zeros(5), atol=1e-6)
    assert torch.allclose(entropy_al.mc_scores(one_class, "least_confidence"), -torch.ones(5), atol=1e-6)


def test_output_is_on_the_input_device_and_float32():
    out = entropy_al.mc_scores(torch.randn(2, 3, 4, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (3,)


# Every boundary of the CUDA kernel's class-count switch (threads per sample x classes per thread), and the
# path for rows too long for registers (C > 8192); cheap enough to run on every device.
KERNEL_BOUNDARIES = [
    4,
    5,
    8,
    9,
    16,
    17,
    32,
    33,
    64,
    65,
    128,
    129,
    256,
    257,
    512,
    513,
    1024,
    1025,
    2048,
    2049,
    4096,
    4097,
    8192,
    8193,
    20000,
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_classes", KERNEL_BOUNDARIES)
def test_class_count_boundaries(device, num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    logits = realistic_logits((3, 37, 2 * num_classes), torch.float32, device, generator)[:, :, ::2]
    logits[1, 5, 0] = float("nan")
    logits[:, 9] = float("-inf")
    logits[2, 20, -1] = float("inf")
    for score in reference.SCORES:
        ref = reference.mc_scores_reference(logits, score)
        poison_allocator(device, 37 * 4)
        assert_scores_close(entropy_al.mc_scores(logits, score), ref, f"{score} C={num_classes}")
