"""Build script: the Python packages (``kernels/`` ships as ``pycam_fast.kernels``) and the ``pycam_fast._C`` extension.

The extension always contains the CPU kernels (``csrc/ops/cpu``); the CUDA kernels (``csrc/ops/cuda``) are added
only when a GPU is visible (``torch.cuda.is_available()``) or ``FORCE_CUDA=1`` is set (CI sets it, so every ``.cu``
is compiled on every CI run), and then need nvcc (found through ``CUDA_HOME``/``CUDA_PATH`` or ``PATH``) and a CUDA
build of torch (with ``FORCE_CUDA=1`` a missing nvcc or a CPU-only torch is an error, not a silent skip). Compiling
them takes minutes, so a machine without a GPU skips them unless asked. ``TORCH_CUDA_ARCH_LIST`` picks the GPU
architectures (torch's default otherwise: every arch of the visible GPUs, or a long list without one, so set it
in CI: each extra arch adds a full device compile of every ``.cu``). ``PYCAM_FAST_NO_EXT=1`` skips the extension
(pure-Python install; the ``cpp``/``cuda`` backends then report themselves unavailable).

Always build with ``pip install --no-build-isolation -e .``: an isolated build compiles against another torch.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

packages = [*find_packages(include=["pycam_fast", "pycam_fast.*"]), "pycam_fast.kernels"]
ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(msg: str) -> None:
    print(f"pycam_fast setup: {msg}", flush=True)


def _cuda_home() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return None


def _extensions() -> tuple[list, dict]:
    if os.environ.get("PYCAM_FAST_NO_EXT", "0") == "1":
        _log("PYCAM_FAST_NO_EXT=1: skipping the C++/CUDA extension")
        return [], {}
    import torch
    from torch.utils import cpp_extension

    csrc = "csrc"
    cpu_sources = sorted(
        [
            os.path.join(csrc, "pycam_fast.cpp"),
            os.path.join(csrc, "ops", "ops.cpp"),
            *glob.glob(os.path.join(csrc, "ops", "cpu", "*.cpp")),
        ]
    )
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "ops", "cuda", "*.cu")))

    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    cuda_home = _cuda_home()
    gpu_visible = torch.version.cuda is not None and torch.cuda.is_available()
    wanted = force_cuda or gpu_visible
    with_cuda = bool(cuda_sources) and wanted and torch.version.cuda is not None and cuda_home is not None
    if with_cuda and cuda_home is not None:
        # torch resolves CUDA_HOME at import; make sure it agrees with what we found (a /usr/local/bin/nvcc wrapper
        # otherwise makes it guess /usr/local).
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home

    # -O3 lets GCC/Clang vectorise the inner loops with the baseline ISA (no -march=native: the wheel must run on
    # any x86-64). No -ffast-math: nansum/relu rely on IEEE NaN compares. -ffp-contract=off: on FMA targets
    # (aarch64, -march=native) GCC would fuse `v0 * l0 + v1 * l1` into one rounding, and overlay's LUT index
    # truncates that value, so one ulp changes a pixel's colour against the torch reference. -fno-trapping-math (as in
    # torch's own build; no kernel unmasks FP exceptions) lets GCC if-convert the compares of a clamp followed by a
    # float -> int conversion (overlay's fp64 pixel loop stays scalar without it). Neither flag changes a value.
    # -g0 keeps the .so small and halves the compile time of the torch headers.
    cxx_flags = [
        "-O3",
        "-ffp-contract=off",
        "-fno-trapping-math",
        "-g0",
        f'-DPYCAM_FAST_TORCH_VERSION="{torch.__version__}"',
    ]
    # at::parallel_for is a header template: with torch's OpenMP backend it only runs in parallel in code compiled
    # with -fopenmp (without it _OPENMP is undefined and the whole range runs on the calling thread: 1.0x on 2 cores).
    # The GOMP symbols resolve to the libgomp that libtorch_cpu already loaded, so torch.set_num_threads applies.
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        cxx_flags.append("-fopenmp")
    define_macros = []
    sources = list(cpu_sources)
    if with_cuda:
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
        cxx_flags.append("-DPYCAM_FAST_WITH_CUDA")
        cxx_flags.append(f'-DPYCAM_FAST_CUDA_ARCH_LIST="{arch_list or "torch default"}"')
        nvcc_flags = ["-O3", "-lineinfo", "-DPYCAM_FAST_WITH_CUDA"]
        sources += cuda_sources
        ext_cls = cpp_extension.CUDAExtension
        extra = {"cxx": cxx_flags, "nvcc": nvcc_flags}
        _log(
            f"CPU + CUDA kernels (nvcc from {cuda_home}, torch CUDA {torch.version.cuda}, "
            f"TORCH_CUDA_ARCH_LIST={arch_list or '<unset: torch default>'}; "
            f"{'FORCE_CUDA=1' if force_cuda else 'a GPU is visible'})"
        )
    else:
        ext_cls = cpp_extension.CppExtension
        extra = {"cxx": cxx_flags}
        if not cuda_sources:
            why = "no .cu sources"
        elif torch.version.cuda is None:
            why = "torch is a CPU-only build"
        elif not wanted:
            why = "no GPU visible; set FORCE_CUDA=1 to compile the CUDA kernels"
        else:
            why = "nvcc was not found (set CUDA_HOME to the CUDA toolkit)"
        if force_cuda and cuda_sources:
            # CI sets FORCE_CUDA=1 so that every .cu is compiled: skipping them silently would let a CUDA error land.
            raise SystemExit(f"pycam_fast setup: FORCE_CUDA=1 but the CUDA kernels cannot be built: {why}")
        if wanted:
            why = f"a GPU is visible but {why}"
        _log(f"CPU kernels only: {why}")
    ext = ext_cls(
        name="pycam_fast._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, csrc)],
        define_macros=define_macros,
        extra_compile_args=extra,
    )
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)}
    return [ext], cmdclass


ext_modules, cmdclass = _extensions()

setup(
    packages=packages,
    package_dir={"pycam_fast.kernels": "kernels"},
    package_data={"pycam_fast": ["demo/*.pt", "demo/*.json", "ops/auto_table.json"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
