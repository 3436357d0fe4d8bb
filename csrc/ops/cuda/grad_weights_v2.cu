// Gradient-based channel weights on CUDA, v2 (bandwidth rewrite; PYCAM_FAST_CUDA_KERNELS=v2, see v2_plan.h).
// One block per group of consecutive (n, c) rows: the group is one contiguous range of grads (and activations),
// staged into shared memory with 16-byte vector loads (float4 / 8 halves / 2 doubles; an unaligned head and tail
// element-wise), then each warp reduces rows from shared memory with v1's lane order and shuffle reductions (so the
// results are bitwise v1's). v1 reads each 49-value row with one warp: 196-byte rows, half the lanes idle in the
// second sweep, 4-byte loads; here every global load is a full-width vector load of a long contiguous range.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <optional>

#include "../op_utils.h"
#include "cuda_helpers.cuh"
#include "ops_v2.h"

namespace pycam_fast {
namespace {

using cuda_v2::kThreads;
using math::WeightKind;

// dst[0, count) = src[0, count), the aligned middle with 16-byte loads.
template <typename scalar_t>
__device__ inline void stage_range(const scalar_t* __restrict__ src, scalar_t* __restrict__ dst, int64_t count) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  struct alignas(16) Vec {
    scalar_t v[kVec];
  };
  const int t = threadIdx.x;
  const auto addr = reinterpret_cast<uintptr_t>(src);
  int64_t head = static_cast<int64_t>(((16 - (addr & 15)) & 15) / sizeof(scalar_t));
  head = head < count ? head : count;
  for (int64_t i = t; i < head; i += kThreads) dst[i] = src[i];
  const int64_t body = (count - head) / kVec;
  const Vec* vs = reinterpret_cast<const Vec*>(src + head);
  for (int64_t q = t; q < body; q += kThreads) {
    const Vec x = vs[q];
#pragma unroll
    for (int e = 0; e < kVec; ++e) dst[head + q * kVec + e] = x.v[e];
  }
  for (int64_t i = head + body * kVec + t; i < count; i += kThreads) dst[i] = src[i];
}

template <WeightKind kind, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    weights_v2_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ a, scalar_t* __restrict__ out,
                      int64_t rows, int64_t s, int64_t rows_per_block, int64_t region_elems, acc_t eps) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  scalar_t* sg = reinterpret_cast<scalar_t*>(smem_raw);
  scalar_t* sa = sg + region_elems;
  constexpr bool kNeedsActs = kind == WeightKind::XGradCAM || kind == WeightKind::GradCAMpp;
  const int64_t r0 = blockIdx.x * rows_per_block;
  const int64_t nr = rows - r0 < rows_per_block ? rows - r0 : rows_per_block;
  stage_range(g + r0 * s, sg, nr * s);
  if constexpr (kNeedsActs) stage_range(a + r0 * s, sa, nr * s);
  __syncthreads();
  const int lane = threadIdx.x % cuda::kWarp;
  for (int64_t rr = threadIdx.x / cuda::kWarp; rr < nr; rr += kThreads / cuda::kWarp) {
    const scalar_t* gr = sg + rr * s;
    const scalar_t* ar = sa + rr * s;
    const acc_t w = cuda::row_weight<kind>(gr, ar, s, eps, lane);
    if (lane == 0) out[r0 + rr] = static_cast<scalar_t>(w);
  }
}

template <WeightKind kind, typename scalar_t>
void launch_weights_v2(const at::Tensor& g, const at::Tensor& a, at::Tensor& out, int64_t rows, int64_t s,
                       const cuda_v2::WeightsPlan& plan, double eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t region_elems = static_cast<int64_t>(plan.smem_bytes / (a.defined() ? 2 : 1) / sizeof(scalar_t));
  weights_v2_kernel<kind, scalar_t, acc_t>
      <<<static_cast<unsigned int>(plan.blocks), kThreads, plan.smem_bytes, c10::cuda::getCurrentCUDAStream()>>>(
          g.const_data_ptr<scalar_t>(), a.defined() ? a.const_data_ptr<scalar_t>() : nullptr,
          out.mutable_data_ptr<scalar_t>(), rows, s, plan.rows_per_block, region_elems, static_cast<acc_t>(eps));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::optional<at::Tensor> weights_cuda_v2(int kind, const at::Tensor& grads, const at::Tensor* activations, double eps,
                                          const char* op) {
  check_device(grads, c10::DeviceType::CUDA, "grads");
  check_weights_args(grads, activations, op);
  const int64_t rows = grads.size(0) * grads.size(1);
  if (rows == 0 || grads.numel() == 0) return std::nullopt;  // v1 handles the empty cases
  const int64_t s = grads.numel() / rows;
  const bool needs_acts = kind == static_cast<int>(WeightKind::XGradCAM) ||
                          kind == static_cast<int>(WeightKind::GradCAMpp);
  TORCH_CHECK(!needs_acts || activations != nullptr, "pycam_fast::", op, ": activations are required");
  const c10::cuda::CUDAGuard guard(grads.device());
  const int sm_count = cuda::sm_count_v2();
  std::optional<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "pycam_fast::weights_v2", [&] {
    const cuda_v2::WeightsPlan plan = cuda_v2::plan_weights(rows, s, needs_acts ? 2 : 1, sizeof(scalar_t), sm_count);
    if (!plan.ok) return;
    const at::Tensor g = grads.contiguous();
    const at::Tensor a = needs_acts ? activations->contiguous() : at::Tensor();
    at::Tensor out =
        at::empty({grads.size(0), grads.size(1)}, grads.options().memory_format(c10::MemoryFormat::Contiguous));
    TORCH_CHECK(kind >= static_cast<int>(WeightKind::GradCAM) && kind <= static_cast<int>(WeightKind::GradCAMppTorchCAM),
                "pycam_fast::weights_cuda_v2: unknown weight kind ", std::to_string(kind));
    math::with_weight_kind(static_cast<WeightKind>(kind), [&](auto tag) {
      launch_weights_v2<decltype(tag)::value, scalar_t>(g, a, out, rows, s, plan, eps);
    });
    result = out;
  });
  return result;
}

}  // namespace pycam_fast
