// Gradient-based channel weights on CUDA, (N, C, *S) -> (N, C): one warp per (n, c) row, lanes stride over |S|
// (coalesced 128-byte reads for fp32), shuffle reductions in acc_t. Grad-CAM++ reduces sum_S(A) first (xor
// shuffle, so every lane has it), then alpha * relu(g) in a second sweep of the same row (L1/L2-resident for the
// usual |S| <= 3136); no (N, C, *S) alpha tensor.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include "../op_utils.h"
#include "cuda_helpers.cuh"
#include "ops_cuda.h"
#include "ops_v2.h"

namespace pycam_fast {
namespace {

using math::WeightKind;

template <WeightKind kind, typename scalar_t, typename acc_t>
__global__ void weights_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ a,
                               scalar_t* __restrict__ out, int64_t rows, int64_t s, acc_t eps) {
  const int lane = threadIdx.x % cuda::kWarp;
  const int64_t warps_per_grid = int64_t(gridDim.x) * (blockDim.x / cuda::kWarp);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x / cuda::kWarp) + threadIdx.x / cuda::kWarp; r < rows;
       r += warps_per_grid) {
    const scalar_t* gr = g + r * s;
    const scalar_t* ar = a == nullptr ? nullptr : a + r * s;
    const acc_t w = cuda::row_weight<kind>(gr, ar, s, eps, lane);
    if (lane == 0) out[r] = static_cast<scalar_t>(w);
  }
}

}  // namespace

at::Tensor weights_cuda(WeightKind kind, const at::Tensor& grads, const at::Tensor* activations, double eps,
                        const char* op) {
  if (v2_selected()) {  // PYCAM_FAST_CUDA_KERNELS=v2: grad_weights_v2.cu unless out of envelope
    if (auto r = weights_cuda_v2(static_cast<int>(kind), grads, activations, eps, op)) return *std::move(r);
  }
  check_device(grads, c10::DeviceType::CUDA, "grads");
  check_weights_args(grads, activations, op);
  const c10::cuda::CUDAGuard guard(grads.device());
  const at::Tensor g = grads.contiguous();
  const at::Tensor a = activations != nullptr ? activations->contiguous() : at::Tensor();
  at::Tensor out = at::empty({grads.size(0), grads.size(1)}, grads.options().memory_format(c10::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const int64_t rows = out.numel();
  const int64_t s = grads.numel() / rows;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "pycam_fast::weights_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t threads = rows * cuda::kWarp;  // one warp per row
    math::with_weight_kind(kind, [&](auto tag) {
      weights_kernel<decltype(tag)::value, scalar_t, acc_t><<<cuda::grid_for(threads), cuda::kBlock, 0, stream>>>(
          g.const_data_ptr<scalar_t>(), a.defined() ? a.const_data_ptr<scalar_t>() : nullptr,
          out.mutable_data_ptr<scalar_t>(), rows, s, static_cast<acc_t>(eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace pycam_fast
