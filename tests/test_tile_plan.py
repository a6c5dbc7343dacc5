"""The v2 CUDA score kernel's index arithmetic, run on the CPU through the `_tile_plan` test op.

For one block and one MC pass the op reports which 16-byte vectors the block stages (and which thread copies
each) and which staged element every (thread, row, position) reads. The checks: the staged vectors cover the
block's slab exactly once and are 16-byte aligned; every sample's classes are read exactly once, from the right
logit, and positions past C read nothing; everything stays inside the shared buffer. Over every class-count
boundary of the tiles, N not a multiple of any tile, K in {1, 64} and K*N*C beyond 2**31 (arithmetic only).
"""

import pytest
import torch

import entropy_al  # noqa: F401  (loads the extension)

CLASSES = [1, 2, 4, 5, 8, 9, 10, 16, 17, 32, 33, 48, 49, 64, 65, 80, 81, 100, 104, 105, 128, 129, 192, 193]
CLASSES += [256, 257, 384, 385, 512, 513, 768, 769, 1000, 1024]
BEYOND_V2 = [1025, 2048, 4096, 8192, 8193, 20000]


def tile_plan(C, N, K, element_bytes, misalignment, tile, pass_index):
    op = torch.ops.entropy_al._tile_plan.default
    return op(C, N, K, element_bytes, misalignment, tile, pass_index)


def check_block(C, N, K, element_bytes, misalignment, tile, pass_index):
    info, vectors, reads = tile_plan(C, N, K, element_bytes, misalignment, tile, pass_index)
    index, group, values, min_classes, threads, rows, samples, per_thread, shared_bytes, pairs = info.tolist()
    assert index >= 0 and min_classes <= C <= group * values
    assert threads == group * samples // rows and bool(pairs) == (element_bytes == 2)
    per_vector = 16 // element_bytes
    n0 = tile * samples
    count = min(samples, N - n0)
    first, length = (pass_index * N + n0) * C, count * C

    # Staging: aligned vectors whose in-slab ranges tile [first, first + length) in order, each copied once.
    starts, lo, hi, owner, step = vectors.T
    assert torch.all((starts + misalignment) % per_vector == 0)
    assert torch.all(starts[1:] - starts[:-1] == per_vector)
    assert starts[0] + lo[0] == first and starts[-1] + hi[-1] == first + length
    assert torch.all(lo[1:] == 0) and torch.all(hi[:-1] == per_vector) and torch.all(hi > lo)
    assert torch.all(owner >= 0) and torch.all(owner < threads)
    assert torch.all((step >= 0) | (step == -1)) and torch.all(step < per_thread)
    edge = step == -1
    assert edge[0] and edge[-1] and edge.sum() <= 2
    copies = owner * (per_thread + 1) + step + 1
    assert copies.unique().numel() == copies.numel()
    assert vectors.shape[0] * 16 <= shared_bytes

    # Reads: (sample, class, staged element, logit staged there).
    sample, klass, staged, logit = reads.T
    assert torch.all(staged >= 0) and torch.all((staged + 1) * element_bytes <= shared_bytes)
    if pairs:
        assert torch.all(staged[klass >= 0] % 2 == klass[klass >= 0] % 2)
    live = (sample < N) & (klass >= 0)
    assert torch.all(klass[live] < C)
    assert torch.equal(logit[live], (pass_index * N + sample[live]) * C + klass[live])
    read = sample[live] * C + klass[live]
    expected = torch.arange(n0 * C, (n0 + count) * C)
    assert torch.equal(read.sort().values, expected), "every class of every sample read exactly once"


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("element_bytes", [4, 2])
def test_blocks_stage_and_read_every_logit_once(C, element_bytes):
    if element_bytes == 2 and C % 2:
        pytest.skip("16-bit logits with odd C go to the v1 kernels")
    per_vector = 16 // element_bytes
    samples = tile_plan(C, 1, 1, element_bytes, 0, 0, 0)[0][6].item()
    for N in (1, 3 * samples + 7):
        last_tile = (N + samples - 1) // samples - 1
        for K in (1, 64):
            for misalignment in sorted({0, per_vector - 2 if element_bytes == 2 else per_vector - 1}):
                check_block(C, N, K, element_bytes, misalignment, 0, 0)
                check_block(C, N, K, element_bytes, misalignment, last_tile, K - 1)


@pytest.mark.parametrize("C", [10, 100, 1000, 1024])
def test_index_arithmetic_beyond_int32(C):
    K = 64
    N = (2**31 // (K * C)) * 3 + 5  # K * N * C > 2**31, N not a multiple of any tile
    assert K * N * C > 2**31
    samples = tile_plan(C, N, K, 4, 0, 0, 0)[0][6].item()
    last_tile = (N + samples - 1) // samples - 1
    for element_bytes, misalignment in ((4, 3), (2, 6)):
        check_block(C, N, K, element_bytes, misalignment, last_tile, K - 1)
        check_block(C, N, K, element_bytes, misalignment, last_tile // 2, K // 2)


@pytest.mark.parametrize("C", BEYOND_V2)
def test_large_class_counts_go_to_v1(C):
    info, vectors, reads = tile_plan(C, 10, 2, 4, 0, 0, 0)
    assert info[0].item() == -1 and vectors.numel() == 0 and reads.numel() == 0


def test_every_class_count_has_exactly_one_tile():
    for C in range(1, 1025):
        info = tile_plan(C, 1, 1, 4, 0, 0, 0)[0]
        group, values, min_classes = info[1:4].tolist()
        assert min_classes <= C <= group * values, C
