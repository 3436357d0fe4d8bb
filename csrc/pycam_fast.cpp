// The pycam_fast._C Python module. Importing it loads this shared library, whose static initialisers register the
// pycam_fast:: operators (ops/ops.cpp) and their CPU/CUDA kernels with the dispatcher; the ops are then reached as
// torch.ops.pycam_fast.<name>. The module itself only reports how it was built.
// pybind11 alone, not <torch/extension.h>: the module exposes no tensors, and the torch header triples this file's
// compile time (38 s -> 10 s on a 2-core EPYC), the longest step of a CPU-only install.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "ops/cuda/v2_plan.h"

#ifndef PYCAM_FAST_TORCH_VERSION  // set by setup.py to torch.__version__ at build time
#define PYCAM_FAST_TORCH_VERSION "unknown"
#endif
#ifndef PYCAM_FAST_CUDA_ARCH_LIST
#define PYCAM_FAST_CUDA_ARCH_LIST ""
#endif

namespace pycam_fast {
#ifdef PYCAM_FAST_WITH_CUDA
// Defined in ops/cuda/cam_step_kernel.cu: the CUDA runtime version (CUDART_VERSION) nvcc compiled against.
int cuda_runtime_version_built();
#endif
}  // namespace pycam_fast

namespace py = pybind11;

namespace {

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict info;
#ifdef PYCAM_FAST_WITH_CUDA
  info["cuda"] = true;
  const int v = pycam_fast::cuda_runtime_version_built();
  info["cuda_version"] = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
#else
  info["cuda"] = false;
  info["cuda_version"] = py::none();
#endif
  info["cuda_arch_list"] = std::string(PYCAM_FAST_CUDA_ARCH_LIST);
  info["compiler"] = compiler();
  info["cplusplus"] = static_cast<long>(__cplusplus);
  info["torch_version"] = std::string(PYCAM_FAST_TORCH_VERSION);
  info["ops"] = py::make_tuple("cam_step", "gradcam_weights", "xgradcam_weights", "gradcampp_weights",
                               "gradcampp_weights_torchcam", "masked_inputs", "overlay", "nmf");
  return info;
}

// The CUDA kernel generation the CUDA ops run: "v1" (verified, the default) or "v2" (bandwidth rewrite).
std::string cuda_kernels() {
  const int k = pycam_fast::cuda_v2::selected_kernels();
  if (k == pycam_fast::cuda_v2::kInvalid) {
    throw std::invalid_argument(std::string(pycam_fast::cuda_v2::kEnvVar) + " must be v1 or v2");
  }
  return k == pycam_fast::cuda_v2::kV2 ? "v2" : "v1";
}

void set_cuda_kernels(const std::optional<std::string>& which) {
  if (!which.has_value()) {  // None: follow PYCAM_FAST_CUDA_KERNELS again
    pycam_fast::cuda_v2::kernels_override().store(pycam_fast::cuda_v2::kUnset);
    return;
  }
  const int k = pycam_fast::cuda_v2::parse_kernels(which->c_str());
  if (k == pycam_fast::cuda_v2::kInvalid || which->empty()) {
    throw std::invalid_argument("set_cuda_kernels: expected 'v1', 'v2' or None, got '" + *which + "'");
  }
  pycam_fast::cuda_v2::kernels_override().store(k);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pycam_fast compiled kernels: the ops live in torch.ops.pycam_fast; this module reports the build.";
  m.def("build_info", &build_info,
        "How this extension was built: cuda (bool), cuda_version, cuda_arch_list, compiler, torch_version, ops.");
  m.def("cuda_kernels", &cuda_kernels,
        "The CUDA kernels the CUDA ops run now: 'v1' (default) or 'v2' (set_cuda_kernels, else the "
        "PYCAM_FAST_CUDA_KERNELS environment variable, read at every call).");
  m.def("set_cuda_kernels", &set_cuda_kernels, py::arg("which"),
        "Select the CUDA kernels process-wide: 'v1', 'v2', or None to follow PYCAM_FAST_CUDA_KERNELS again.");
}
