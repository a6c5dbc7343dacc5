"""64-bit indexing: a logit stack of more than 2**31 elements, scored correctly at its far end.

bfloat16 keeps it near 4.3 GB. Marked slow (deselect with -m "not slow"); `make test` runs it.
"""

import pytest
import torch
from conftest import DEVICES
from test_mc_scores import assert_scores_close
from test_topk import sort_reference

import entropy_al
from entropy_al import reference

PASSES, CLASSES = 2, 1000
SAMPLES = (2**31) // (PASSES * CLASSES) + 1000  # K·N·C just above 2**31


def _free_bytes(device):
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) * 1024


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_scores_beyond_two_to_the_31_elements(device):
    need = PASSES * SAMPLES * CLASSES * 2
    if _free_bytes(device) < 1.5 * need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB free")
    assert PASSES * SAMPLES * CLASSES > 2**31
    logits = torch.zeros(PASSES, SAMPLES, CLASSES, dtype=torch.bfloat16, device=device)
    generator = torch.Generator().manual_seed(0)
    tail = 300  # samples whose elements all lie beyond index 2**31 in the second pass
    logits[:, -tail:] = (torch.randn(PASSES, tail, CLASSES, generator=generator) * 5).to(torch.bfloat16).to(device)
    logits[0, 0] = 8.0  # a distinct sample at the start, to catch wrapped offsets aliasing it
    for score in ("entropy", "least_confidence"):
        out = entropy_al.mc_scores(logits, score)
        assert_scores_close(out[-tail:], reference.mc_scores_reference(logits[:, -tail:], score), score)
        assert_scores_close(out[:2], reference.mc_scores_reference(logits[:, :2], score), score)
    # The fused op on a view that starts deep inside the storage (pass 1 lies beyond element 2**31).
    start = SAMPLES - tail - 3
    topk = entropy_al.StreamingTopK(5, device=device)
    topk.update_logits(logits[:, start:], start, "entropy")
    expected = reference.mc_scores_reference(logits[:, start:], "entropy")
    assert topk.indices.cpu().tolist() == [start + i for i in sort_reference(expected.cpu(), 5)]
