// The four gradient-weight ops (schemas in ops.cpp) of one backend, from its entry point
// `weights(kind, grads, activations or nullptr, eps, op name)`: the same wrappers and registrations on CPU and CUDA.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "kernel_math.h"

namespace pycam_fast {

using WeightsEntry = at::Tensor (*)(math::WeightKind, const at::Tensor&, const at::Tensor*, double, const char*);

template <WeightsEntry weights>
struct WeightOps {
  static at::Tensor gradcam(const at::Tensor& grads) {
    return weights(math::WeightKind::GradCAM, grads, nullptr, 0.0, "gradcam_weights");
  }
  static at::Tensor xgradcam(const at::Tensor& grads, const at::Tensor& activations, double eps) {
    return weights(math::WeightKind::XGradCAM, grads, &activations, eps, "xgradcam_weights");
  }
  static at::Tensor gradcampp(const at::Tensor& grads, const at::Tensor& activations, double eps) {
    return weights(math::WeightKind::GradCAMpp, grads, &activations, eps, "gradcampp_weights");
  }
  static at::Tensor gradcampp_torchcam(const at::Tensor& grads) {
    return weights(math::WeightKind::GradCAMppTorchCAM, grads, nullptr, 0.0, "gradcampp_weights_torchcam");
  }
  // Registers the four ops in a TORCH_LIBRARY_IMPL block.
  static void impl(torch::Library& m) {
    m.impl("gradcam_weights", &gradcam);
    m.impl("xgradcam_weights", &xgradcam);
    m.impl("gradcampp_weights", &gradcampp);
    m.impl("gradcampp_weights_torchcam", &gradcampp_torchcam);
  }
};

}  // namespace pycam_fast
