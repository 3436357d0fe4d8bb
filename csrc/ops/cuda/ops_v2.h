// Entry points of the v2 CUDA kernels (csrc/ops/cuda/*_v2.cu). The v1 ops (the registered CUDA kernels) call
// v2_selected() first and, when it says v2, call these; a v2 entry point returns std::nullopt for a shape outside
// its envelope (v2_plan.h), and the v1 kernel then runs as usual.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <c10/util/Exception.h>
#include <c10/util/OptionalArrayRef.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "../op_utils.h"
#include "v2_plan.h"

namespace pycam_fast {

// Whether the CUDA ops run the v2 kernels now (setter > PYCAM_FAST_CUDA_KERNELS > v1); raises on a bad env value.
inline bool v2_selected() {
  const int k = cuda_v2::selected_kernels();
  TORCH_CHECK(k != cuda_v2::kInvalid, "pycam_fast: ", cuda_v2::kEnvVar, " must be v1 or v2, got '",
              std::string(std::getenv(cuda_v2::kEnvVar) ? std::getenv(cuda_v2::kEnvVar) : ""), "'");
  return k == cuda_v2::kV2;
}

namespace cuda {
// (d, h, w) of a spatial shape, as the launch plans (v2_plan.h) take it.
inline std::array<int64_t, 3> dhw(const Spatial3& s) { return {s.d, s.h, s.w}; }

// Multiprocessors of the current device (sizes the v2 grids; cudaDeviceGetAttribute is a cheap cached query).
inline int sm_count_v2() {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return count;
}
}  // namespace cuda

std::optional<at::Tensor> cam_step_cuda_v2(const at::Tensor& weights, const at::Tensor& activations, bool relu,
                                           at::OptionalIntArrayRef output_size, bool normalize, double eps);

// kind: static_cast<int>(math::WeightKind); activations undefined for GradCAM / TorchCAM's Grad-CAM++.
std::optional<at::Tensor> weights_cuda_v2(int kind, const at::Tensor& grads, const at::Tensor* activations, double eps,
                                          const char* op);

std::optional<at::Tensor> masked_inputs_cuda_v2(const at::Tensor& activations, const at::Tensor& inputs, int64_t start,
                                                int64_t stop, const std::optional<at::Tensor>& noise, double scale,
                                                std::optional<at::ScalarType> out_dtype, bool channels_last,
                                                double eps);

}  // namespace pycam_fast
