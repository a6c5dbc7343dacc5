"""Builds entropy_al._C: a CppExtension with a CPU-only torch, a CUDAExtension with a CUDA build of torch.

The choice follows the installed torch and the toolkit, never `torch.cuda.is_available()`, so a GPU-less machine
with a CUDA torch and nvcc still builds (and so checks) the CUDA kernels. Environment:
  ENTROPY_AL_CUDA=auto|1|0   force the CUDA build on (fail loudly if impossible) or off; default auto
  TORCH_CUDA_ARCH_LIST       CUDA architectures; default "8.0;9.0+PTX" when unset
  ENTROPY_AL_PTXAS_VERBOSE=1 print registers and spills of every kernel (-Xptxas -v)
  ENTROPY_AL_CPU_FLAGS       extra C++ flags (default none: the build runs on any CPU of its architecture)
  DEBUG=1                    -O0 -g
The CPU kernels are compiled for baseline x86-64 and, on x86-64, once more for AVX2 + FMA (csrc/cpu/avx2/); the
library picks one at run time from the CPU it runs on (csrc/cpu/cpu_kernels.h), never from the build machine.
"""

import glob
import os
import platform
import re
import subprocess
import sys
import sysconfig

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home() -> str | None:
    """CUDA_HOME from the environment, else from `nvcc --dryrun` (nvcc may be a wrapper outside the toolkit)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    try:
        dryrun = subprocess.run(["nvcc", "--dryrun", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    match = re.search(r"#\$ TOP=(\S+)", dryrun.stdout + dryrun.stderr)
    return os.path.realpath(match.group(1)) if match else None


def want_cuda() -> bool:
    mode = os.environ.get("ENTROPY_AL_CUDA", "auto").lower()
    if mode in ("0", "off", "false"):
        return False
    cuda_home = find_cuda_home() if torch.version.cuda else None
    possible = cuda_home is not None and any(
        os.path.exists(os.path.join(cuda_home, lib, "libcudart.so")) for lib in ("lib64", "lib")
    )
    if mode in ("1", "on", "true") and not possible:
        raise RuntimeError(
            f"ENTROPY_AL_CUDA=1 but no CUDA build is possible: torch.version.cuda={torch.version.cuda}, "
            f"CUDA_HOME={cuda_home} (needs lib64/libcudart.so)"
        )
    if possible:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home  # torch guessed it at import time, possibly wrongly
    return possible


def builds_avx2_kernels() -> bool:
    """Whether the AVX2 + FMA build of the CPU kernels is compiled: on x86-64 with GCC or clang (MSVC lacks the
    target pragma and __builtin_cpu_supports)."""
    return platform.machine().lower() in ("x86_64", "amd64") and os.name != "nt"


class BuildExtension(cpp_extension.BuildExtension):
    def finalize_options(self):
        super().finalize_options()
        if getattr(self, "editable_mode", False):
            # An editable install builds in a fresh temporary folder, recompiling everything; share the objects of
            # `setup.py build_ext --inplace` instead (ninja then recompiles only what changed).
            plat = f"{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
            self.build_temp = os.path.join(ROOT, "build", f"temp.{plat}")


def extension():
    use_cuda = want_cuda()
    debug = os.environ.get("DEBUG", "0") == "1"
    optimize = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # No FP traps are relied on; without this GCC will not if-convert (vectorize) the selects of the math.
    cxx = optimize + ["-fopenmp", "-fno-trapping-math", "-fno-math-errno"]
    if builds_avx2_kernels():
        sources += sorted(glob.glob("csrc/cpu/avx2/*.cpp"))
        cxx.append("-DENTROPY_AL_HAVE_AVX2_KERNELS")
    cxx += os.environ.get("ENTROPY_AL_CPU_FLAGS", "").split()
    args = {"cxx": cxx}
    extension_class = cpp_extension.CppExtension
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        args["cxx"] = cxx + ["-DWITH_CUDA"]
        args["nvcc"] = optimize + ["-DWITH_CUDA", "-lineinfo", "--use_fast_math"]
        if os.environ.get("ENTROPY_AL_PTXAS_VERBOSE") == "1":
            args["nvcc"] += ["-Xptxas", "-v"]
        extension_class = cpp_extension.CUDAExtension
    return extension_class(
        name="entropy_al._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=args,
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
