"""The CPU kernels' instruction set is chosen at run time: a baseline build runs on any x86-64 CPU, the AVX2 + FMA
build where the CPU has both, and ``ENTROPY_AL_CPU_CAPABILITY=default`` forces the baseline (``make test`` runs the
kernel tests once more under it)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import COMPILED

import entropy_al
from entropy_al import reference
from entropy_al._extension import cpu_capability

pytestmark = COMPILED
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_has_avx2_fma() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    return "avx2" in flags and "fma" in flags


def test_the_capability_follows_the_cpu_and_the_variable():
    forced = os.environ.get("ENTROPY_AL_CPU_CAPABILITY", "")
    expected = "avx2" if forced != "default" and X86_64 and _cpu_has_avx2_fma() else "default"
    assert cpu_capability() == expected
    assert entropy_al.backend_info()["cpu_capability"] == expected


_SCRIPT = """
import json, torch, entropy_al
from entropy_al._extension import cpu_capability
generator = torch.Generator().manual_seed(5)
logits = torch.randn(7, 301, 13, generator=generator) * 3  # C > 8: the vector path; 301: a ragged tail
small = torch.randn(5, 37, 3, generator=generator) * 3     # C <= 8: the tiled path
x = torch.randn(9, 1000, generator=generator)
out = {"capability": cpu_capability()}
for score in ("entropy", "bald", "margin", "least_confidence"):
    out[score] = entropy_al.mc_scores(logits, score).tolist() + entropy_al.mc_scores(small, score).tolist()
out["keyed"] = entropy_al.keyed_dropout(x, 0.3, 77, torch.arange(9), torch.arange(9) % 4).tolist()
print(json.dumps(out))
"""


def _run(capability: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "ENTROPY_AL_CPU_CAPABILITY"}
    env.update(ENTROPY_AL_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, cwd=root, timeout=120
    )


def test_the_baseline_build_computes_what_the_reference_does():
    result = _run("default")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["capability"] == "default"
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(7, 301, 13, generator=generator) * 3
    small = torch.randn(5, 37, 3, generator=generator) * 3
    x = torch.randn(9, 1000, generator=generator)
    for score in ("entropy", "bald", "margin", "least_confidence"):
        expected = torch.cat([reference.mc_scores_reference(t.double(), score) for t in (logits, small)])
        torch.testing.assert_close(torch.tensor(got[score], dtype=torch.float64), expected, rtol=1e-5, atol=1e-5)
    # Keyed masks are integer arithmetic: bit-identical across builds and backends.
    keyed = reference.keyed_dropout_reference(x, 0.3, 77, torch.arange(9), torch.arange(9) % 4)
    assert torch.equal(torch.tensor(got["keyed"]), keyed)


def test_an_unknown_capability_is_a_clear_error():
    result = _run("sse9")
    assert result.returncode != 0
    assert "ENTROPY_AL_CPU_CAPABILITY: expected 'default' or 'avx2', got 'sse9'" in result.stderr


@pytest.mark.skipif(not X86_64 or shutil.which("objdump") is None, reason="needs x86-64 and objdump")
def test_only_the_avx2_build_holds_avx_instructions():
    """A library built on an AVX2 machine must run on an x86-64 CPU without AVX: every VEX-encoded instruction
    (AVX, AVX2, FMA: mnemonics v...) is in a function of the AVX2 build, which only runs after the CPU check."""
    library = entropy_al.backend_info()["reason"].rsplit(" ", 1)[-1]
    listing = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", library], capture_output=True, text=True, check=True
    ).stdout
    function, with_vex = "", set()
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
        elif re.match(r"^\s+[0-9a-f]+:\s+v[a-z0-9]+\s", line):
            with_vex.add(function)
    outside = sorted(name for name in with_vex if "entropy_al::cpu_avx2::" not in name)
    assert not outside, f"AVX instructions outside the AVX2 build: {outside[:5]}"
    assert any("entropy_al::cpu_avx2::" in name for name in with_vex), "the AVX2 build is missing or not vectorized"
