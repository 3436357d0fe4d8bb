// Gradient-based channel weights on CPU, (N, C, *S) -> (N, C): one task per block of (n, c) rows, each row
// reduced with contiguous, vectorisable loops in acc_t (fp32 for fp16/bf16). Grad-CAM++ reads the row of A once
// for sum_S(A), then g and A once more while the row (|S| <= a few k values) is still in L1: alpha and the
// weight in one pass, never an (N, C, *S) alpha tensor.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../kernel_math.h"
#include "../op_utils.h"
#include "../weight_ops.h"
#include "vec.h"

namespace pycam_fast {
namespace {

using math::WeightKind;

template <WeightKind kind, typename scalar_t>
void weights_cpu_kernel(const at::Tensor& grads, const at::Tensor& acts, at::Tensor& out, double eps_d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = grads.size(0) * grads.size(1);
  const int64_t s = grads.numel() / (rows == 0 ? 1 : rows);
  const scalar_t* g_ptr = grads.const_data_ptr<scalar_t>();
  const scalar_t* a_ptr = acts.defined() ? acts.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* o_ptr = out.mutable_data_ptr<scalar_t>();
  const acc_t eps = static_cast<acc_t>(eps_d);
  // ~32k elements per task: enough work to amortise a task on 2-64 cores, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(s, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* __restrict g = g_ptr + r * s;
      acc_t sum = 0;
      acc_t act_sum = 0;
      if constexpr (kind == WeightKind::XGradCAM || kind == WeightKind::GradCAMpp) {
        const scalar_t* __restrict a = a_ptr + r * s;
        act_sum = cpu::lane_sum<acc_t>(s, [&](int64_t i) { return static_cast<acc_t>(a[i]); });
        if constexpr (kind == WeightKind::XGradCAM) {
          sum = cpu::lane_sum<acc_t>(s, [&](int64_t i) { return static_cast<acc_t>(g[i]) * static_cast<acc_t>(a[i]); });
        }
      }
      if constexpr (kind == WeightKind::GradCAM) {
        sum = cpu::lane_sum<acc_t>(s, [&](int64_t i) { return static_cast<acc_t>(g[i]); });
      } else if constexpr (kind == WeightKind::GradCAMpp) {
        sum = cpu::lane_sum<acc_t>(s, [&](int64_t i) { return math::gradcampp_term(static_cast<acc_t>(g[i]), act_sum, eps); });
      } else if constexpr (kind == WeightKind::GradCAMppTorchCAM) {
        sum = cpu::lane_sum<acc_t>(s, [&](int64_t i) { return math::gradcampp_torchcam_term(static_cast<acc_t>(g[i])); });
      }
      o_ptr[r] = static_cast<scalar_t>(math::finish_weight(kind, sum, act_sum, s, eps));
    }
  });
}

at::Tensor weights_cpu(WeightKind kind, const at::Tensor& grads, const at::Tensor* activations, double eps,
                       const char* op) {
  check_device(grads, c10::DeviceType::CPU, "grads");
  check_weights_args(grads, activations, op);
  const at::Tensor g = grads.contiguous();
  const at::Tensor a = activations != nullptr ? activations->contiguous() : at::Tensor();
  at::Tensor out = at::empty({grads.size(0), grads.size(1)}, grads.options().memory_format(c10::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "pycam_fast::weights_cpu", [&] {
    math::with_weight_kind(kind, [&](auto tag) { weights_cpu_kernel<decltype(tag)::value, scalar_t>(g, a, out, eps); });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pycam_fast, CPU, m) {
  WeightOps<&weights_cpu>::impl(m);
}

}  // namespace pycam_fast
