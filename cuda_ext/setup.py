"""Build marionette_kernels: the renderer's raycast and bone-texture ops as torch custom ops.

    pip install --no-build-isolation ./cuda_ext

CPU kernels are always built.  CUDA kernels are added when torch sees a GPU at build time, or
when MARIONETTE_KERNELS_CUDA=1 (e.g. building on a GPU-less node for GPU machines; needs a CUDA
build of torch and nvcc).  MARIONETTE_KERNELS_CUDA=0 forces a CPU-only build.
TORCH_CUDA_ARCH_LIST picks the GPU architectures as usual for torch extensions.
"""

import os

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, CUDA_HOME
except ImportError as exc:  # pip's isolated build env has no torch (and must not fetch another one)
    raise SystemExit("marionette_kernels must be built against the installed torch: "
                     "pip install --no-build-isolation ./cuda_ext") from exc

HERE = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    flag = os.environ.get("MARIONETTE_KERNELS_CUDA", "auto").strip().lower()
    if flag in ("0", "no", "false", "off"):
        return False
    if flag in ("1", "yes", "true", "on"):
        if torch.version.cuda is None or CUDA_HOME is None:
            raise RuntimeError("MARIONETTE_KERNELS_CUDA=1 needs a CUDA build of torch and the CUDA toolkit (nvcc)")
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None and torch.version.cuda is not None


def src(name: str) -> str:
    return os.path.join("csrc", name)


# -g0: Python's default CFLAGS carry -g, which doubles the compile time of torch headers.
# torch adds the C++ standard its headers need.
cxx_flags = ["-O3", "-g0", "-fopenmp"]
sources = [src("ops.cpp"), src("raycast_cpu.cpp"), src("texture_ops.cpp"), src("texture_cpu.cpp")]
if want_cuda():
    ext = CUDAExtension(
        "marionette_kernels._C",
        sources + [src("raycast_cuda.cu"), src("raycast_cuda_binding.cpp"), src("texture_cuda.cu"),
                   src("texture_cuda_binding.cpp")],
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=[("MARIONETTE_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        extra_link_args=["-fopenmp"],
    )
else:
    ext = CppExtension(
        "marionette_kernels._C",
        sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )

setup(
    name="marionette_kernels",
    version="0.1.0",
    description="Compiled CPU/CUDA kernels of Marionette's Gaussian-bone renderer (torch custom ops)",
    packages=["marionette_kernels"],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    zip_safe=False,
)
