// Entry points of the CUDA kernels (the *_kernel.cu files), registered for the ops of ../ops.cpp by register_cuda.cu.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/OptionalArrayRef.h>

#include <optional>

#include "../kernel_math.h"

namespace pycam_fast {

at::Tensor cam_step_cuda(const at::Tensor& weights, const at::Tensor& activations, bool relu,
                         at::OptionalIntArrayRef output_size, bool normalize, double eps);

// activations: nullptr for GradCAM / TorchCAM's Grad-CAM++; op: the op's name, for errors.
at::Tensor weights_cuda(math::WeightKind kind, const at::Tensor& grads, const at::Tensor* activations, double eps,
                        const char* op);

at::Tensor masked_inputs_cuda(const at::Tensor& activations, const at::Tensor& inputs, int64_t start, int64_t stop,
                              const std::optional<at::Tensor>& noise, double scale,
                              std::optional<at::ScalarType> out_dtype, bool channels_last, double eps);

at::Tensor overlay_cuda(const at::Tensor& images, const at::Tensor& cams, const at::Tensor& table);

}  // namespace pycam_fast
