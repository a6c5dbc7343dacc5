"""Faults at import: the compiled extension is missing or broken.

A missing, corrupt or foreign compiled extension falls back to the pure-PyTorch ops with exactly one
``RuntimeWarning`` and never crashes the import; ``ENTROPY_AL_BACKEND=compiled`` turns each case into a clear
``ImportError``. Checked on copies of the package (no ``_C*.so``; a garbage ``_C.abi3.so``; torch's own libc10 renamed
``_C.abi3.so``, a valid library that defines none of the ops, like a stale build) imported one after the other in a
fresh interpreter.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

import entropy_al
from entropy_al import reference

PACKAGE = os.path.dirname(os.path.abspath(entropy_al.__file__))


# ------------------------------------------------------------------------------------------------------------------
# A missing or broken compiled extension

# One fresh interpreter imports each broken copy of the package in turn (none of them registers anything with torch,
# so a copy can be dropped from sys.modules and the next imported): first with ENTROPY_AL_BACKEND=compiled, which must
# raise a clear ImportError, then with the default, which must fall back with one warning. The fallback's results on
# fixed inputs are printed as JSON on the last line, for the test to compare with this process's (compiled) backend.
_SCRIPT = r"""
import importlib, json, os, sys, warnings
import torch

def computed(entropy_al, reference):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, 5, generator=generator) * 4
    x = torch.randn(6, 9, generator=generator)
    ids, passes = torch.arange(100, 106), torch.arange(6) % 2
    topk = entropy_al.StreamingTopK(5)
    topk.update_logits(logits[:, :9], 0, "bald")
    topk.update_logits(logits[:, 9:], 9, "bald")
    model = torch.nn.Linear(5, 5)
    model.load_state_dict({"weight": torch.eye(5), "bias": torch.zeros(5)})
    args = {"device": "cpu", "n_drop": 1, "batch_size": 4}
    strategy = entropy_al.EntropySamplingDropout(None, logits[0], model, 5, args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no dropout module"
        selected = strategy.select(6)
    return {
        "backend": entropy_al.backend(),
        "reason": entropy_al.backend_info()["reason"],
        "scores": {s: entropy_al.mc_scores(logits, s).tolist() for s in reference.SCORES},
        "topk": topk.indices.tolist(),
        "keyed": entropy_al.keyed_dropout(x, 0.3, 12345, ids, passes).tolist(),
        "select": selected,
    }

results = {}
for backend in ("compiled", "auto"):
    os.environ["ENTROPY_AL_BACKEND"] = backend
    for variant, root in json.loads(sys.argv[1]).items():
        sys.path.insert(0, root)
        result = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                entropy_al = importlib.import_module("entropy_al")
            except BaseException as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
        result["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        if "error" not in result:
            assert entropy_al.__file__.startswith(root), entropy_al.__file__
            result.update(computed(entropy_al, importlib.import_module("entropy_al.reference")))
        results[f"{backend}/{variant}"] = result
        sys.path.remove(root)
        for name in [name for name in sys.modules if name == "entropy_al" or name.startswith("entropy_al.")]:
            del sys.modules[name]
print(json.dumps(results))
"""


def _foreign_library() -> str | None:
    """A valid shared library that defines none of our ops (torch's own c10, already loaded: no side effects)."""
    found = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so*"))
    return found[0] if found else None


VARIANTS = {
    "missing": (None, "the compiled extension entropy_al/_C\\*.so was not built"),
    "garbage": (b"\x7fELF this is not a shared library" + bytes(range(256)) * 8, "failed to load: Could not load"),
    "foreign": ("foreign", r"loaded but does not define the ops mc_scores, topk_update, mc_topk_update, keyed_dropout"),
}


def _copy_package(root: str, content) -> str:
    target = os.path.join(root, "entropy_al")
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "_C*.so", "_C*.pyd"))
    if content == "foreign":
        shutil.copyfile(_foreign_library(), os.path.join(target, "_C.abi3.so"))
    elif content is not None:
        with open(os.path.join(target, "_C.abi3.so"), "wb") as library:
            library.write(content)
    return root


@pytest.fixture(scope="module")
def broken_installs(tmp_path_factory):
    """``{"compiled/<variant>" | "auto/<variant>": what importing that copy gave}``, from one fresh interpreter."""
    roots = {}
    for variant, (content, _) in VARIANTS.items():
        if content == "foreign" and _foreign_library() is None:
            continue
        roots[variant] = _copy_package(str(tmp_path_factory.mktemp(variant)), content)
    env = {key: value for key, value in os.environ.items() if key not in ("ENTROPY_AL_BACKEND", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    process = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(roots)],
        cwd=str(tmp_path_factory.getbasetemp()),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, f"the interpreter failed:\n{process.stderr}"
    return json.loads(process.stdout.strip().splitlines()[-1])


def _expected() -> dict:
    """The script's values from this process's backend (the compiled one when built) and the float64 reference."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, 5, generator=generator) * 4
    x = torch.randn(6, 9, generator=generator)
    ids, passes = torch.arange(100, 106), torch.arange(6) % 2
    topk = entropy_al.StreamingTopK(5)
    topk.update_logits(logits, 0, "bald")
    model = nn.Linear(5, 5)
    model.load_state_dict({"weight": torch.eye(5), "bias": torch.zeros(5)})
    strategy = entropy_al.EntropySamplingDropout(None, logits[0], model, 5, {"device": "cpu", "n_drop": 1})
    selected = strategy.select(6)  # one pass: nothing to compare, so no "no dropout module" warning
    return {
        "scores": {s: reference.mc_scores_reference(logits, s) for s in reference.SCORES},
        "topk": topk.indices.tolist(),
        "keyed": entropy_al.keyed_dropout(x, 0.3, 12345, ids, passes),
        "select": selected,
    }


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_broken_extension_falls_back_with_one_warning(broken_installs, variant):
    if f"auto/{variant}" not in broken_installs:
        pytest.skip("no foreign shared library to copy")
    result = broken_installs[f"auto/{variant}"]
    _, reason = VARIANTS[variant]
    assert "error" not in result, result["error"]
    assert len(result["warnings"]) == 1, result["warnings"]
    warning = result["warnings"][0]
    assert warning.startswith("RuntimeWarning: entropy_al: ")
    assert "using the pure-PyTorch fallback" in warning and "ENTROPY_AL_BACKEND=torch" in warning
    assert re.search(reason, warning), warning
    assert result["backend"] == "torch" and re.search(reason, result["reason"])
    expected = _expected()
    for score, ref in expected["scores"].items():
        got = torch.tensor(result["scores"][score], dtype=torch.float64)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert result["topk"] == expected["topk"]
    assert torch.equal(torch.tensor(result["keyed"]), expected["keyed"])  # bit-exact across backends
    assert result["select"] == expected["select"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backend_compiled_turns_a_broken_extension_into_a_clear_import_error(broken_installs, variant):
    if f"compiled/{variant}" not in broken_installs:
        pytest.skip("no foreign shared library to copy")
    _, reason = VARIANTS[variant]
    message = broken_installs[f"compiled/{variant}"].get("error", "imported")
    assert message.startswith("ImportError: entropy_al: ENTROPY_AL_BACKEND=compiled but "), message
    assert re.search(reason, message), message
