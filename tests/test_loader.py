"""Finding and loading the compiled library: odd install paths, several candidate files, the backend variable.

Each case imports a copy of the package in a fresh interpreter (a library registers its ops with torch once per
process, so copies cannot share one).
"""

from __future__ import annotations

import glob
import importlib.machinery
import os
import shutil
import subprocess
import sys

from conftest import COMPILED

import entropy_al

PACKAGE = os.path.dirname(os.path.abspath(entropy_al.__file__))
pytestmark = COMPILED


def _built_library() -> str:
    return sorted(glob.glob(os.path.join(glob.escape(PACKAGE), "_C*.so")))[0]


def _copy_package(root: str, libraries: dict[str, str | bytes]) -> str:
    """The package under ``root`` with the given ``_C*`` files (name → a library to copy, or raw bytes)."""
    target = os.path.join(root, "entropy_al")
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "_C*.so", "_C*.pyd"))
    for name, content in libraries.items():
        if isinstance(content, bytes):
            with open(os.path.join(target, name), "wb") as library:
                library.write(content)
        else:
            shutil.copyfile(content, os.path.join(target, name))
    return root


def _import(root: str, backend_variable: str | None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("ENTROPY_AL_BACKEND", "PYTHONPATH")}
    if backend_variable is not None:
        env["ENTROPY_AL_BACKEND"] = backend_variable
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import entropy_al, torch; "
        "assert entropy_al.__file__.startswith(sys.argv[1]), entropy_al.__file__; "
        "print(entropy_al.backend(), entropy_al.mc_scores(torch.zeros(1, 1, 4)).item()); "
        "print(entropy_al.backend_info()['reason'])"
    )
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code, root],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
    )


def test_glob_characters_in_the_install_path_and_an_empty_backend_variable(tmp_path):
    root = _copy_package(str(tmp_path / "we[1]*?"), {"_C.abi3.so": _built_library()})
    result = _import(root, backend_variable="")
    assert result.returncode == 0, result.stderr
    backend, score = result.stdout.split("\n")[0].split()
    assert backend == "cpp" and abs(float(score) - 1.3862943611198906) < 1e-6  # log 4


def test_this_interpreters_exact_suffix_is_preferred_over_a_junk_stable_abi_library(tmp_path):
    exact = "_C" + importlib.machinery.EXTENSION_SUFFIXES[0]
    junk = b"\x7fELF not a library" + bytes(range(256))
    root = _copy_package(str(tmp_path), {"_C.abi3.so": junk, exact: _built_library()})
    result = _import(root, backend_variable=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "cpp"
    assert result.stdout.strip().endswith(exact), result.stdout
