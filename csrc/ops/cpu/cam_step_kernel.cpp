// Fused CAM step on CPU: one read of the activations, one write of the output, no (N, C, *S) intermediate.
//
// Per sample: (1) weighted channel sum at feature resolution into an acc_t buffer (the sum is linear, so summing
// before resizing is exact math and costs C * |S| instead of C * |S_out| multiply-adds: 100k vs 100M for
// C=2048, 7x7 -> 224x224); (2) separable resize of that one map (W first, then H/D, ATen's order) into a scratch
// map; (3) min/max from the map's extreme candidates (kernel_math.h: 196 of 50176 values for 7x7 -> 224x224), then
// normalise while writing the output.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../kernel_math.h"
#include "../op_utils.h"
#include "resize.h"
#include "vec.h"

namespace pycam_fast {

namespace {

template <typename scalar_t>
void cam_step_cpu_kernel(const at::Tensor& weights, const at::Tensor& acts, at::Tensor& out,
                         const CamStepGeometry& g, bool relu, bool normalize, double eps_d) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* w_ptr = weights.const_data_ptr<scalar_t>();
  const scalar_t* a_ptr = acts.const_data_ptr<scalar_t>();
  scalar_t* o_ptr = out.mutable_data_ptr<scalar_t>();
  const int64_t s_in = g.in.numel();
  const int64_t s_out = g.out.numel();
  const bool resize = s_in != s_out || g.in.d != g.out.d || g.in.h != g.out.h;
  const acc_t eps = static_cast<acc_t>(eps_d);
  const cpu::Taps3<acc_t> taps(g.in, g.out);
  const cpu::Candidates3<acc_t> cands(g.in, g.out);

  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> map(static_cast<size_t>(s_in));
    std::vector<acc_t> up(resize ? static_cast<size_t>(s_out) : 0);
    std::vector<acc_t> rows(resize ? static_cast<size_t>(g.in.d * g.in.h * g.out.w) : 0);
    for (int64_t n = begin; n < end; ++n) {
      acc_t* __restrict m = map.data();
      for (int64_t s = 0; s < s_in; ++s) m[s] = acc_t(0);
      const scalar_t* a_n = a_ptr + n * g.c * s_in;
      for (int64_t c = 0; c < g.c; ++c) {
        const scalar_t* __restrict a = a_n + c * s_in;
        if (g.full_weights) {
          const scalar_t* __restrict w = w_ptr + (n * g.c + c) * s_in;
          for (int64_t s = 0; s < s_in; ++s) {
            m[s] += math::nan_to_zero(static_cast<acc_t>(w[s]) * static_cast<acc_t>(a[s]));
          }
        } else {
          const acc_t wc = static_cast<acc_t>(w_ptr[n * g.weight_batch_stride + c]);
          for (int64_t s = 0; s < s_in; ++s) m[s] += math::nan_to_zero(wc * static_cast<acc_t>(a[s]));
        }
      }
      // A constant map stays constant under interpolation in exact math, but `v * l0 + v * l1` may differ from v
      // by an ulp, which min-max would blow up to O(1) values (eps = 1e-8 << ulp(1) = 1.2e-7). Detect it at
      // feature resolution and emit the exact answer (zeros).
      acc_t fmin;
      acc_t fmax;
      cpu::lane_minmax(m, s_in, fmin, fmax);
      const acc_t* v = m;
      if (resize) {
        cpu::resize_map<acc_t>(m, up.data(), rows.data(), g.in, g.out, taps);
        v = up.data();
      }
      scalar_t* o = o_ptr + n * s_out;
      if (!normalize) {
        for (int64_t s = 0; s < s_out; ++s) o[s] = static_cast<scalar_t>(relu ? math::relu(v[s]) : v[s]);
        continue;
      }
      if (fmin == fmax) {
        for (int64_t s = 0; s < s_out; ++s) o[s] = scalar_t(0);
        continue;
      }
      acc_t lo;
      acc_t hi;
      cands.minmax(v, g.out, lo, hi);
      if (relu) {  // relu is monotone: min/max of relu(v) are relu(min), relu(max)
        lo = math::relu(lo);
        hi = math::relu(hi);
      }
      const acc_t denom = math::minmax_denom(lo, hi, eps);
      if (relu) {
        for (int64_t s = 0; s < s_out; ++s) {
          o[s] = static_cast<scalar_t>(math::minmax_apply_candidates(math::relu(v[s]), lo, denom));
        }
      } else {
        for (int64_t s = 0; s < s_out; ++s) o[s] = static_cast<scalar_t>(math::minmax_apply_candidates(v[s], lo, denom));
      }
    }
  });
}

at::Tensor cam_step_cpu(const at::Tensor& weights, const at::Tensor& activations, bool relu,
                        at::OptionalIntArrayRef output_size, bool normalize, double eps) {
  check_device(activations, c10::DeviceType::CPU, "activations");
  const CamStepGeometry g = cam_step_geometry(weights, activations, output_size);
  const at::Tensor a = activations.contiguous();
  const at::Tensor w = weights.contiguous();
  at::Tensor out = at::empty(g.out_sizes, activations.options().memory_format(c10::MemoryFormat::Contiguous));
  if (out.numel() == 0 || g.c == 0) {
    return g.c == 0 ? out.zero_() : out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pycam_fast::cam_step_cpu", [&] {
    cam_step_cpu_kernel<scalar_t>(w, a, out, g, relu, normalize, eps);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pycam_fast, CPU, m) {
  m.impl("cam_step", &cam_step_cpu);
}

}  // namespace pycam_fast
