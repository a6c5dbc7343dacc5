# Fresh-machine entry points: each target creates or reuses its virtualenv, builds the extension, installs the
# package into that virtualenv (editable: `.venv/bin/python`, `.venv/bin/entropy-al` work from any folder) and runs.
#   make demo        the active-learning demo on the bundled digits data
#   make test        format, lint and import-contract checks, CPU build, the whole test suite (the CPU kernel
#                    tests twice: also on the baseline x86-64 code)
#   make sdist-check build the source distribution, install it into a fresh virtualenv, import it, select
#   make bench       the benchmarks (tables into the terminal; figures recorded in benchmarks/RESULTS.md)
#   make cuda-check  full CUDA build against the CUDA torch build (no GPU needed), ptxas report, static SASS report
#                    of the score kernels (fails below 100 % of HBM), import, CPU tests
#   make gpu-check   on a machine with an H100/H200: build in place with its python3 and torch, CUDA tests,
#                    compute-sanitizer, benchmarks; tables into GPU_CHECK_OUT (see benchmarks/gpu_check.py)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
CUDA_VENV ?= .venv-cuda
PY := $(VENV)/bin/python
CUDA_PY := $(CUDA_VENV)/bin/python
# torch 2.13.0 is the CPU build on this workplace's local index; 2.14.1 is the CUDA 13.0 build.
TORCH_CPU ?= torch==2.13.0
TORCH_CUDA ?= torch==2.14.1
# setuptools 77+ reads the SPDX license metadata; the builds use the venv's own (--no-build-isolation).
DEPS := numpy pytest ninja tqdm hypothesis scikit-learn matplotlib "setuptools>=77" wheel scipy ruff import-linter
# Test-only packages that depend on torch: installed without their dependencies, so that pip never swaps the torch
# build above for another (batchbald-redux pins a CUDA one).
NO_DEPS := batchbald-redux toma psutil
# cuobjdump and nvdisasm for the static SASS report (benchmarks/sass_report.py); no torch dependency.
SASS_TOOLS := nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
export CUDA_HOME ?= /usr/local/cuda
CUDA_ARCHS ?= 8.0;9.0+PTX
CUDA_BUILD := build-cuda

.PHONY: venv build lint test demo bench cuda-check gpu-check gpu-check-dry sdist-check clean

$(VENV)/.installed:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_CPU) $(DEPS)
	$(PY) -m pip install -q --no-deps $(NO_DEPS)
	touch $@

venv: $(VENV)/.installed

build: $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .

# Format, lint and the import contracts of the layers (pyproject.toml, docs/architecture.md).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint build
	$(PY) -c "import entropy_al, sys; b = entropy_al.backend(); print('entropy_al backend:', b); sys.exit(b != 'cpp')"
	$(PY) -m pytest -q
	@echo "The CPU kernel tests again on the baseline (non-AVX2) build of the kernels:"
	ENTROPY_AL_CPU_CAPABILITY=default $(PY) -m pytest -q -x tests/test_cpu_dispatch.py tests/test_mc_scores.py -k "not N10001 and not fallback"

demo: build
	$(PY) -m entropy_al demo

bench: build
	$(PY) benchmarks/bench_scores.py
	$(PY) benchmarks/bench_topk.py
	$(PY) benchmarks/bench_dropout.py
	$(PY) benchmarks/bench_select.py

$(CUDA_VENV)/.installed:
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install -q $(TORCH_CUDA) $(DEPS) $(SASS_TOOLS)
	$(CUDA_PY) -m pip install -q --no-deps $(NO_DEPS)
	touch $@

# A Python whose environment has the SASS tools (the CUDA venv made by this Makefile has them).
SASS_PY ?= $(CUDA_PY)
GPU_CHECK_OUT ?= gpu-check-out

# Builds outside the source tree so the CPU build in entropy_al/ stays usable, then tests a staged copy of the
# package that carries the CUDA library. Fails on any compile error and on any register spill in a kernel.
cuda-check: $(CUDA_VENV)/.installed
	rm -rf $(CUDA_BUILD)/stage
	TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" ENTROPY_AL_CUDA=1 ENTROPY_AL_PTXAS_VERBOSE=1 MAX_JOBS=2 \
		$(CUDA_PY) setup.py build_ext --build-temp $(CUDA_BUILD)/tmp --build-lib $(CUDA_BUILD)/lib 2>&1 | tee $(CUDA_BUILD).log
	@grep -E "ptxas info *: (Used|Compiling)" $(CUDA_BUILD).log | sed 's/^/  /' || true
	@if grep -E "[1-9][0-9]* bytes spill (stores|loads)" $(CUDA_BUILD).log; then echo "cuda-check: a kernel spills registers"; exit 1; fi
	$(SASS_PY) benchmarks/sass_report.py --library $(CUDA_BUILD)/lib/entropy_al/_C*.so --check
	mkdir -p $(CUDA_BUILD)/stage
	cp -r entropy_al tests pyproject.toml $(CUDA_BUILD)/stage/
	rm -f $(CUDA_BUILD)/stage/entropy_al/_C*.so
	cp $(CUDA_BUILD)/lib/entropy_al/_C*.so $(CUDA_BUILD)/stage/entropy_al/
	cd $(CUDA_BUILD)/stage && ENTROPY_AL_BACKEND=compiled $(abspath $(CUDA_PY)) -c \
		"import entropy_al as e; i = e.backend_info(); print(i); assert i['built_with_cuda'], i"
	cd $(CUDA_BUILD)/stage && ENTROPY_AL_BACKEND=compiled $(abspath $(CUDA_PY)) -m pytest -q -x -m "not slow"

# The whole GPU proof in one command, with the machine's own python3 and its preinstalled CUDA torch (no venv,
# no installs): under 8 minutes on an H100/H200.
gpu-check:
	python3 benchmarks/gpu_check.py $(GPU_CHECK_OUT)

# The same script without a GPU: checks the script itself on tiny CPU inputs (CI).
gpu-check-dry: $(VENV)/.installed
	$(PY) benchmarks/gpu_check.py --dry $(GPU_CHECK_OUT)-dry

sdist-check: $(VENV)/.installed
	.ci/sdist_check $(PY)

clean:
	rm -rf build $(CUDA_BUILD) $(CUDA_BUILD).log *.egg-info entropy_al/_C*.so dist $(GPU_CHECK_OUT) $(GPU_CHECK_OUT)-dry
