"""The CUDA score kernels of both generations against the float64 reference, and the CUDA top-k against the CPU.

Skipped without a GPU. ENTROPY_AL_SCORE_KERNEL=v1 routes every launch to the v1 kernels, so each test runs both
generations (the environment variable is read on every launch).
"""

import pytest
import torch
from test_mc_scores import assert_scores_close, realistic_logits

import entropy_al
from entropy_al import reference
from entropy_al.scores import scores_for_classes as scores_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires CUDA")

GENERATIONS = ["v1", "v2"]
# Every tile boundary of both generations, and C past the register tiles.
CLASSES = [1, 2, 3, 5, 9, 10, 16, 17, 32, 33, 48, 49, 64, 65, 100, 104, 105, 128, 129, 256, 257, 512, 513, 1000]
CLASSES += [1024, 1025, 2048, 8193]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.fixture(params=GENERATIONS)
def generation(request, monkeypatch):
    monkeypatch.setenv("ENTROPY_AL_SCORE_KERNEL", request.param)
    return request.param


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scores_match_float64_reference(generation, C, dtype):
    generator = torch.Generator().manual_seed(C)
    for K, N in ((1, 1), (3, 257), (10, 1031)):
        if K * N * C > 3_000_000:
            N = max(1, 3_000_000 // (K * C)) | 1
        logits = realistic_logits((K, N, C), dtype, "cuda", generator)
        for score in scores_for(C):
            ref = reference.mc_scores_reference(logits, score)
            out = entropy_al.mc_scores(logits, score)
            assert_scores_close(out, ref, f"{generation} {score} K={K} N={N} C={C} {dtype}")


@pytest.mark.parametrize("offset", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_misaligned_data_pointers(generation, offset, dtype):
    """Contiguous views that start inside a 16-byte vector: the slabs' partial first and last vectors."""
    generator = torch.Generator().manual_seed(offset)
    K, N, C = 4, 300, 10
    flat = realistic_logits((1, 1, K * N * C + offset), dtype, "cuda", generator).flatten()
    logits = flat[offset:].view(K, N, C)
    assert logits.is_contiguous() and logits.data_ptr() % 16 != 0
    for score in reference.SCORES:
        assert_scores_close(entropy_al.mc_scores(logits, score), reference.mc_scores_reference(logits, score), score)


@pytest.mark.parametrize("C", [10, 100, 1000])
def test_bad_rows_and_minus_inf_logits(generation, C):
    generator = torch.Generator().manual_seed(11)
    logits = realistic_logits((3, 40, C), torch.float32, "cuda", generator)
    logits[1, 2, 0] = float("nan")
    logits[2, 4, C - 1] = float("inf")
    logits[:, 6, :] = float("-inf")
    logits[0, 8, 1:] = float("-inf")  # one finite logit: valid
    logits[1, 9, ::2] = float("-inf")  # BALD recounts this row with the clamped exponent
    logits[2, 10, 0] = 3e38  # beyond 2e38: the exact exponent path
    for score in scores_for(C):
        out = entropy_al.mc_scores(logits, score)
        ref = reference.mc_scores_reference(logits, score)
        assert torch.isnan(out).nonzero().flatten().tolist() == [2, 4, 6], score
        assert_scores_close(out, ref, f"{generation} {score}")


@pytest.mark.parametrize("k", [0, 1, 50, 5000])
def test_topk_update_is_bit_equal_to_cpu(k):
    generator = torch.Generator().manual_seed(k)
    state_cpu = torch.empty(0, dtype=torch.int64)
    state_cuda = state_cpu.cuda()
    offset = 0
    for size in (0, 100, 4096, 1, 20000, 333):
        scores = torch.randn(size, generator=generator)
        scores[::7] = scores[::14].repeat_interleave(2)[: scores[::7].numel()]  # ties
        state_cpu = entropy_al.topk_update(scores, state_cpu, offset, k)
        state_cuda = entropy_al.topk_update(scores.cuda(), state_cuda, offset, k)
        assert torch.equal(state_cuda.cpu(), state_cpu)
        offset += size


@pytest.mark.parametrize("block", [500, 5000])
def test_topk_update_ascending_pool(block):
    """Every block beats the whole state (the adversarial order): many candidates, merged in chunks."""
    k = 100
    state_cpu = torch.empty(0, dtype=torch.int64)
    state_cuda = state_cpu.cuda()
    for b in range(8):
        scores = torch.arange(b * block, (b + 1) * block, dtype=torch.float32)
        state_cpu = entropy_al.topk_update(scores, state_cpu, b * block, k)
        state_cuda = entropy_al.topk_update(scores.cuda(), state_cuda, b * block, k)
        assert torch.equal(state_cuda.cpu(), state_cpu)


@pytest.mark.parametrize("k", [1, 64, 3000])
@pytest.mark.parametrize("order", ["random", "ascending"])
def test_fused_update_equals_scores_then_update(generation, k, order):
    """mc_topk_update (candidates filtered in the score kernel, merged on the device) against mc_scores followed
    by topk_update: the same kernel scores both, so the keys must agree bit for bit."""
    generator = torch.Generator().manual_seed(k)
    logits = realistic_logits((6, 12000, 10), torch.bfloat16, "cpu", generator)
    if order == "ascending":
        logits = logits[:, reference.mc_scores_reference(logits, "bald").argsort()]
    logits = logits.cuda()
    fused = plain = torch.empty(0, dtype=torch.int64, device="cuda")
    for start in range(0, 12000, 2500):
        block = logits[:, start : start + 2500]
        fused = entropy_al.mc_topk_update(block, fused, start, k, "bald")
        plain = entropy_al.topk_update(entropy_al.mc_scores(block, "bald"), plain, start, k)
        assert torch.equal(fused, plain), start


@pytest.mark.parametrize("score", reference.SCORES)
@pytest.mark.parametrize("order", ["random", "ascending"])
def test_mc_topk_update_within_score_tolerance(generation, score, order):
    generator = torch.Generator().manual_seed(5)
    k, C = 300, 10
    logits = realistic_logits((5, 6000, C), torch.float32, "cpu", generator)
    if order == "ascending":  # sort the samples by their score: every block beats the state
        logits = logits[:, reference.mc_scores_reference(logits, score).argsort()]
    ref = reference.mc_scores_reference(logits, score).float()
    topk = entropy_al.StreamingTopK(k, "cuda")
    for start in range(0, 6000, 1000):
        topk.update_logits(logits[:, start : start + 1000].cuda(), start, score)
    values, indices = (t.cpu() for t in topk.result())
    assert indices.unique().numel() == k
    assert torch.allclose(values.double(), ref[indices].double(), atol=1e-5, rtol=1e-5)
    kth = ref.topk(k).values[-1].item()
    assert torch.all(ref[indices] >= kth - 2e-5), "a kept sample is clearly below the k-th best"


def test_streaming_update_does_not_synchronize():
    logits = torch.randn(4, 2048, 10, device="cuda")
    scores = torch.randn(2048, device="cuda")
    topk = entropy_al.StreamingTopK(100, "cuda")
    topk.update_logits(logits, 0)  # warm-up: first-call allocations and attribute queries
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for block in range(1, 4):
            topk.update_logits(logits, block * 2048)
            topk.update(scores, (block + 3) * 2048)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert topk.result()[1].numel() == 100
