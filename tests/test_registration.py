"""Op registration: opcheck, torch.compile, error messages on every entry point, backend reporting."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import COMPILED, DEVICES

import entropy_al
from entropy_al import reference


def op_cases(device):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, 5, generator=generator).to(device)
    state = reference.topk_update_reference(
        torch.randn(6, generator=generator).to(device), torch.empty(0, dtype=torch.int64, device=device), 100, 4
    )
    yield torch.ops.entropy_al.mc_scores.default, (logits, "bald")
    yield (
        torch.ops.entropy_al.mc_scores.default,
        (logits.to(torch.bfloat16).transpose(0, 1).contiguous().transpose(0, 1), "margin"),
    )
    yield torch.ops.entropy_al.mc_scores.default, (logits[:, :0], "entropy")
    yield torch.ops.entropy_al.topk_update.default, (torch.randn(9, generator=generator).to(device), state, 0, 5)
    yield torch.ops.entropy_al.mc_topk_update.default, (logits, state, 0, 8, "least_confidence")


@COMPILED
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for op, args in op_cases(device):
        torch.library.opcheck(op, args)


@COMPILED
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_equals_eager(device):
    def select_uncertain(logits, state):
        scores = entropy_al.mc_scores(logits, "entropy") + entropy_al.mc_scores(logits, "bald")
        return scores * 2, entropy_al.mc_topk_update(logits, state, 0, 5, "entropy")

    state = torch.empty(0, dtype=torch.int64, device=device)
    compiled = torch.compile(select_uncertain, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (33, 70):
        logits = torch.randn(4, n, 6, device=device)
        for got, want in zip(compiled(logits, state), select_uncertain(logits, state), strict=False):
            assert torch.equal(got, want)


@COMPILED
def test_torch_compile_inductor():
    fn = torch.compile(lambda z: entropy_al.mc_scores(z.float() * 2, "entropy").sum(), fullgraph=True)
    logits = torch.randn(3, 40, 7)
    assert torch.allclose(fn(logits), entropy_al.mc_scores(logits * 2).sum())


BAD_LOGITS = [
    (
        torch.randn(3, 4),
        ValueError,
        r"mc_scores: expected `logits` of shape \[K, N, C\] \(3 dims\), got shape \[3, 4\]",
    ),
    (
        torch.ones(2, 3, 4, dtype=torch.int64),
        TypeError,
        "expected `logits` of dtype float32, float16, bfloat16 or float64, got torch.int64",
    ),
    (torch.ones(2, 3, 4, dtype=torch.bool), TypeError, "got torch.bool"),
    (torch.ones(2, 3, 4, dtype=torch.complex64), TypeError, "got torch.complex64"),
    (torch.randn(0, 3, 4), ValueError, "expected `logits` with K = size\\(0\\) >= 1 MC passes, got K = 0"),
    (torch.randn(2, 3, 0), ValueError, "expected `logits` with C = size\\(2\\) >= 1 classes, got C = 0"),
]


@pytest.mark.parametrize("logits,error,message", BAD_LOGITS)
def test_bad_logits_raise_clear_errors(logits, error, message):
    with pytest.raises(error, match=message):
        entropy_al.mc_scores(logits)


@COMPILED
@pytest.mark.parametrize("logits,error,message", BAD_LOGITS)
def test_kernels_check_their_arguments_too(logits, error, message):
    """Called past the Python layer, the C++ checks give the same messages."""
    with pytest.raises(error, match=message.replace("mc_scores", "mc_scores")):
        torch.ops.entropy_al.mc_scores(logits, "entropy")


@pytest.mark.parametrize(
    "call",
    [
        lambda: entropy_al.mc_scores(torch.randn(2, 3, 4), "entropyy"),
        lambda: entropy_al.mc_topk_update(torch.randn(2, 3, 4), torch.empty(0, dtype=torch.int64), 0, 2, "max"),
        lambda: (
            torch.ops.entropy_al.mc_scores(torch.randn(2, 3, 4), "Entropy")
            if entropy_al.backend() != "torch"
            else entropy_al.mc_scores(torch.randn(2, 3, 4), "Entropy")
        ),
    ],
)
def test_unknown_score_name(call):
    with pytest.raises(
        ValueError, match="expected `score` to be one of 'entropy', 'bald', 'margin', 'least_confidence', got"
    ):
        call()


def test_margin_needs_two_classes():
    with pytest.raises(ValueError, match="score 'margin' needs C >= 2 classes, got C = 1"):
        entropy_al.mc_scores(torch.randn(2, 3, 1), "margin")


def test_not_a_tensor():
    with pytest.raises(TypeError, match="expected `logits` to be a torch.Tensor, got list"):
        entropy_al.mc_scores([[[1.0]]])


def test_topk_state_checks():
    with pytest.raises(TypeError, match="expected `state` to be a 1-D int64 tensor of keys"):
        entropy_al.topk_update(torch.randn(3), torch.empty(0), 0, 2)
    with pytest.raises(ValueError, match="expected `k` to be an int >= 0, got -3"):
        entropy_al.topk_update(torch.randn(3), torch.empty(0, dtype=torch.int64), 0, -3)


def test_backend_reporting():
    info = entropy_al.backend_info()
    assert info["cpu_backend"] == entropy_al.backend("cpu") in ("cpp", "torch")
    assert (info["cpu_backend"] == "cpp") == info["extension_loaded"]
    assert isinstance(info["reason"], str) and info["reason"]


def _import_in_subprocess(env_update):
    env = dict(os.environ, **env_update)
    code = "import warnings, entropy_al; print(entropy_al.backend())"
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def test_forced_fallback_is_silent_and_works():
    result = _import_in_subprocess({"ENTROPY_AL_BACKEND": "torch"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch"
    assert "RuntimeWarning" not in result.stderr


def test_bad_backend_variable_is_rejected():
    result = _import_in_subprocess({"ENTROPY_AL_BACKEND": "gpu"})
    assert result.returncode != 0
    assert "ENTROPY_AL_BACKEND: expected 'auto', 'torch' or 'compiled', got 'gpu'" in result.stderr
