"""Faults: the model raises, or a KeyboardInterrupt arrives, in the middle of select(); the extension is missing or
broken at import.

An interrupted ``select()`` leaves the model exactly as found (train/eval flags, parameters, buffers, and no keyed
dropout ``forward`` left on a dropout module), leaves no thread, DataLoader worker or progress bar behind (even while
the caller still holds the exception's traceback, as IPython does with ``sys.last_traceback``), and the next
``select()`` with the same seed returns what a clean run returns.

A missing, corrupt or foreign compiled extension falls back to the pure-PyTorch ops with exactly one
``RuntimeWarning`` and never crashes the import; ``ENTROPY_AL_BACKEND=compiled`` turns each case into a clear
``ImportError``. Checked on copies of the package (no ``_C*.so``; a garbage ``_C.abi3.so``; torch's own libc10 renamed
``_C.abi3.so``, a valid library that defines none of the ops, like a stale build) imported one after the other in a
fresh interpreter.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch
from strategy_fixtures import (
    NUM_CLASSES,
    FeatureNet,
    ListDataset,
    assert_same_tensors,
    make_pool,
    module_flags,
    tensor_snapshot,
)
from torch import nn
from tqdm import tqdm

import entropy_al
from entropy_al import reference

PACKAGE = os.path.dirname(os.path.abspath(entropy_al.__file__))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupting(nn.Module):
    """Runs ``inner`` but raises ``error`` on forward number ``at`` (counting from the first call; 0: never)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.at = 0
        self.error: type[BaseException] = KeyboardInterrupt

    def forward(self, features: torch.Tensor, last: bool = False) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise self.error(f"interrupted at forward {self.calls}")  # a fresh exception: no traceback kept here
        logits = self.inner(features)
        return (logits, features) if last else logits


def bn_dropout_model() -> Interrupting:
    """Linear → BatchNorm1d → ReLU → Dropout → Linear with trained running statistics, in a mixed mode (train,
    BatchNorm in eval) that a restore must reproduce exactly."""
    inner = FeatureNet(dropout=0.4, batchnorm=True)
    inner.train()
    with torch.no_grad():
        inner(make_pool(32, seed=20))
    inner.body[1].eval()
    return Interrupting(inner)


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def no_keyed_forward_left(model: nn.Module) -> bool:
    return all("forward" not in module.__dict__ for module in model.modules())


POOL = make_pool(40, seed=3)
PATHS = {
    "fast": ({"mc_memory_budget": 0}, POOL),
    "fast-stacked": ({}, POOL),  # several passes per forward (the default memory budget)
    "train-mode": ({"mc_mode": "train"}, POOL),
    "reproduce_distil": ({"reproduce_distil": True}, POOL),
    "batch_sampler": ({"batch_sampler": [list(range(i, min(40, i + 6))) for i in range(0, 40, 6)][::-1]}, POOL),
    "workers": ({"num_workers": 2}, ListDataset(list(POOL))),
    "progress": ({"progress": True}, POOL),
    "keyed": ({"mc_dropout": "keyed"}, POOL),
}


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("path", PATHS)
def test_interrupted_select_leaves_nothing_behind(path, error):
    args, pool = PATHS[path]
    model = bn_dropout_model()
    args = {"device": "cpu", "n_drop": 3, "batch_size": 4, "stream_buffer_size": 12, **args}
    strategy = entropy_al.BALDDropout(None, pool, model, NUM_CLASSES, args)
    threads, children = set(threading.enumerate()), set(multiprocessing.active_children())
    torch.manual_seed(0)
    clean = strategy.select(7)
    threads |= {t for t in threading.enumerate() if t.name == "tqdm_monitor"}  # tqdm's own, once per process
    flags, tensors = module_flags(model), tensor_snapshot(model)

    model.at, model.error = model.calls + 4, error  # a few forwards into the pool
    torch.manual_seed(1)
    with pytest.raises(error, match="interrupted at forward") as held:  # `held` keeps the traceback alive
        strategy.select(7)
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)
    assert no_keyed_forward_left(model)
    assert not tqdm._instances, "the progress bar was not closed"
    assert wait_until(lambda: set(multiprocessing.active_children()) <= children), "DataLoader workers left running"
    assert wait_until(lambda: set(threading.enumerate()) <= threads), f"threads left: {threading.enumerate()}"
    del held

    torch.manual_seed(0)
    assert strategy.select(7) == clean
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)


def test_interrupt_between_merges_restores_the_model(monkeypatch):
    """A KeyboardInterrupt outside the model (here in the streaming merge) restores the model just the same."""
    model = bn_dropout_model()
    args = {"device": "cpu", "n_drop": 2, "batch_size": 4, "stream_buffer_size": 8}
    strategy = entropy_al.EntropySamplingDropout(None, POOL, model, NUM_CLASSES, args)
    torch.manual_seed(0)
    clean = strategy.select(5)
    flags, tensors = module_flags(model), tensor_snapshot(model)
    merge, merges = entropy_al.ops.mc_topk_update, []

    def interrupted_merge(*merge_args, **merge_kwargs):
        merges.append(1)
        if len(merges) == 2:
            raise KeyboardInterrupt("interrupted in the second merge")
        return merge(*merge_args, **merge_kwargs)

    monkeypatch.setattr(entropy_al.ops, "mc_topk_update", interrupted_merge)
    with pytest.raises(KeyboardInterrupt, match="second merge"):
        strategy.select(5)
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)
    monkeypatch.undo()
    torch.manual_seed(0)
    assert strategy.select(5) == clean


@pytest.mark.parametrize("method", ["acquire_scores", "predict_prob_dropout", "predict", "get_embedding"])
def test_interrupted_helpers_restore_the_model(method):
    model = bn_dropout_model()
    strategy = entropy_al.EntropySamplingDropout(None, POOL, model, NUM_CLASSES, {"device": "cpu", "batch_size": 4})
    call = {
        "acquire_scores": lambda: strategy.acquire_scores(POOL),
        "predict_prob_dropout": lambda: strategy.predict_prob_dropout(POOL, 3),
        "predict": lambda: strategy.predict(POOL),
        "get_embedding": lambda: strategy.get_embedding(POOL),
    }[method]
    flags, tensors = module_flags(model), tensor_snapshot(model)
    model.at = 3
    with pytest.raises(KeyboardInterrupt):
        call()
    assert module_flags(model) == flags
    assert_same_tensors(model, tensors)


def test_keyed_mc_dropout_restores_forwards_on_keyboard_interrupt():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.AlphaDropout(0.1)))
    with pytest.raises(KeyboardInterrupt):
        with entropy_al.keyed_mc_dropout(model, seed=3) as keyed:
            assert not no_keyed_forward_left(model)
            with keyed.batch(torch.arange(2), 0):
                model(torch.ones(2, 4))
                raise KeyboardInterrupt
    assert no_keyed_forward_left(model)
    assert keyed._batch is None
    with entropy_al.keyed_mc_dropout(model, seed=3) as keyed:  # usable again: nothing half-patched
        with keyed.batch(torch.arange(2), 0):
            assert model(torch.ones(2, 4)).shape == (2, 4)


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
    with pytest.warns(UserWarning, match="no dropout module"):
        selected = strategy.select(6)
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
