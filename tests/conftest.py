"""Shared test parameters: devices (CUDA only when present) and the backends that compute the ops."""

import pytest
import torch

import entropy_al
from entropy_al import ops, reference

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]

COMPILED = pytest.mark.skipif(entropy_al.backend("cpu") == "torch", reason="the compiled extension is not loaded")


def error_case(call, error, match, id):
    """A row of an error table: ``call()`` must raise ``error`` with a message matching ``match``."""
    return pytest.param(call, error, match, id=id)


def compiled_scores(logits, score):
    if entropy_al.backend(logits.device) == "torch":
        pytest.skip(f"no compiled kernel for {logits.device.type}")
    return ops.mc_scores(logits, score)


def fallback_scores(logits, score):
    return reference.mc_scores_reference(logits, score, compute_dtype=torch.float32)


SCORE_BACKENDS = [
    pytest.param(compiled_scores, id="compiled"),
    pytest.param(fallback_scores, id="fallback"),
]


def poison_allocator(device, nbytes):
    """Leaves a NaN-filled freed block of nbytes behind, which the next allocation of that size likely reuses,
    so an output element a kernel forgot to write shows up as NaN instead of a lucky zero."""
    block = torch.full((max(1, nbytes // 4),), float("nan"), dtype=torch.float32, device=device)
    del block


@pytest.fixture
def one_torch_thread():
    """Tiny forwards: intra-op threads only add OpenMP barriers, which stall for milliseconds on a loaded machine
    (BatchNorm in train mode took 50 ms per [4, 16] batch with 2 threads on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
