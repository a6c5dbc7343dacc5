"""What users install: a source distribution that builds on its own, clean metadata, and make targets that leave
an installed package behind. (.ci/sdist_check installs the sdist into a fresh virtualenv and selects with it.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(ROOT, "setup.py")), reason="needs the source tree (not an installed copy)"
)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """``(member names without the top folder, PKG-INFO text, build output)`` of a fresh ``setup.py sdist``."""
    out = tmp_path_factory.mktemp("sdist")
    env = dict(os.environ, ENTROPY_AL_CUDA="0")
    done = subprocess.run(
        [sys.executable, "setup.py", "egg_info", "--egg-base", str(out), "sdist", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (archive,) = out.glob("entropy_al-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        top = tar.getnames()[0].split("/", 1)[0]
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    return names, pkg_info, done.stdout + done.stderr


def test_sdist_ships_every_build_input_and_the_tests(sdist):
    names, _, _ = sdist
    sources = {
        os.path.relpath(os.path.join(folder, name), ROOT)
        for folder, _, files in os.walk(os.path.join(ROOT, "csrc"))
        for name in files
        if name.endswith((".h", ".cpp", ".cu", ".cuh"))
    }
    assert any(name.endswith(".h") for name in sources) and any(name.endswith(".cu") for name in sources)
    assert sources <= names, f"missing from the sdist: {sorted(sources - names)}"
    required = {"README.md", "LICENSE", "setup.py", "pyproject.toml", "tests/conftest.py", "tests/strategy_fixtures.py"}
    assert required <= names, f"missing from the sdist: {sorted(required - names)}"
    assert not [name for name in names if name.endswith((".so", ".o", ".pyc"))]


def test_license_metadata_is_an_spdx_expression_without_deprecation_warnings(sdist):
    _, pkg_info, output = sdist
    assert "License-Expression: MIT" in pkg_info
    assert "License-File: LICENSE" in pkg_info
    assert "SetuptoolsDeprecationWarning" not in output, output


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_installs_the_package_editable_and_tests_the_baseline_kernels():
    """``make test`` (dry run): build in place, install editable into the venv, then the test runs."""
    plan = subprocess.run(
        ["make", "-n", "VENV=.venv-dry-run", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    steps = [
        next(i for i, line in enumerate(plan) if "setup.py -q build_ext --inplace" in line),
        next(i for i, line in enumerate(plan) if "-m pip install -q --no-build-isolation --no-deps -e ." in line),
        next(i for i, line in enumerate(plan) if line.endswith("-m pytest -q")),
        next(i for i, line in enumerate(plan) if line.startswith("ENTROPY_AL_CPU_CAPABILITY=default")),
    ]
    assert steps == sorted(steps), plan
    with open(os.path.join(ROOT, ".ci", "run")) as ci:
        assert "make sdist-check" in ci.read()


def test_readme_says_what_mc_head_splits_after_and_how_to_use_the_venv():
    with open(os.path.join(ROOT, "README.md")) as readme:
        text = readme.read()
    assert "`nn.Sequential` after which the head starts" in text and "where the head starts" not in text
    assert "source .venv/bin/activate" in text and ".venv/bin/entropy-al" in text
    assert "59 s in all" not in text  # the demo's time alone, not a fresh clone's whole `make demo`
