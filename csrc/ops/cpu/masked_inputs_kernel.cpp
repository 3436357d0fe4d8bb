// Score-CAM family masked inputs on CPU for a chunk of flattened (sample, channel) pairs. Per pair: min-max of the
// channel at feature resolution (|S| values), W-resize of its rows, then per output row the mask row is blended,
// the SSCAM noise added, and Cin output rows written (ISCAM scale folded in). The upsampled masks are never
// materialised: the largest scratch is D_f * H_f rows of W_in values (7 x 224 floats = 6 KB for a 224x224 input).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../kernel_math.h"
#include "../op_utils.h"
#include "resize.h"
#include "vec.h"

namespace pycam_fast {
namespace {

template <typename scalar_t, typename out_t>
void masked_inputs_cpu_kernel(const at::Tensor& acts, const at::Tensor& inputs, const at::Tensor& noise,
                              at::Tensor& out, const MaskedGeometry& g, int64_t start, double scale_d,
                              double eps_d) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* a_ptr = acts.const_data_ptr<scalar_t>();
  const scalar_t* in_ptr = inputs.const_data_ptr<scalar_t>();
  const scalar_t* nz_ptr = noise.defined() ? noise.const_data_ptr<scalar_t>() : nullptr;
  out_t* o_ptr = out.mutable_data_ptr<out_t>();
  const bool cl = g.format != c10::MemoryFormat::Contiguous;
  const int64_t s_f = g.feat.numel();
  const int64_t s_in = g.in.numel();
  const int64_t wo = g.in.w;
  const acc_t eps = static_cast<acc_t>(eps_d);
  const acc_t scale = static_cast<acc_t>(scale_d);
  const cpu::Taps3<acc_t> taps(g.feat, g.in);

  at::parallel_for(0, g.pairs, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> map(static_cast<size_t>(s_f));
    std::vector<acc_t> rows(static_cast<size_t>(g.feat.d * g.feat.h * wo));
    std::vector<acc_t> mrow(static_cast<size_t>(wo));
    for (int64_t p = begin; p < end; ++p) {
      const int64_t j = start + p;
      const int64_t n = j / g.c;
      const scalar_t* __restrict a = a_ptr + j * s_f;
      acc_t* __restrict m = map.data();
      for (int64_t s = 0; s < s_f; ++s) m[s] = static_cast<acc_t>(a[s]);
      acc_t lo;
      acc_t hi;
      cpu::lane_minmax(m, s_f, lo, hi);
      const acc_t denom = math::minmax_denom(lo, hi, eps);
      for (int64_t s = 0; s < s_f; ++s) m[s] = math::minmax_apply(m[s], lo, denom);
      cpu::resize_rows(m, rows.data(), g.feat, wo, taps.x.data());
      const scalar_t* base = in_ptr + (g.shared_input ? 0 : n) * g.cin * s_in;
      out_t* o_pair = o_ptr + p * g.cin * s_in;
      for (int64_t z = 0; z < g.in.d; ++z) {
        for (int64_t y = 0; y < g.in.h; ++y) {
          const int64_t row_off = (z * g.in.h + y) * wo;
          acc_t* __restrict mr = mrow.data();
          cpu::blend_row(rows.data(), mr, g.feat, wo, taps.z[z], taps.y[y]);
          if (nz_ptr != nullptr) {
            const scalar_t* __restrict nz = nz_ptr + p * s_in + row_off;
            for (int64_t x = 0; x < wo; ++x) mr[x] += static_cast<acc_t>(nz[x]);
          }
          if (!cl) {
            for (int64_t ci = 0; ci < g.cin; ++ci) {
              const scalar_t* __restrict b = base + ci * s_in + row_off;
              out_t* __restrict o = o_pair + ci * s_in + row_off;
              for (int64_t x = 0; x < wo; ++x) o[x] = static_cast<out_t>(mr[x] * static_cast<acc_t>(b[x]) * scale);
            }
          } else {  // channels-last: (pair, z, y, x, ci); Cin is 1-4 for images, so the inner loop is short
            out_t* __restrict o = o_pair + row_off * g.cin;
            for (int64_t x = 0; x < wo; ++x) {
              for (int64_t ci = 0; ci < g.cin; ++ci) {
                o[x * g.cin + ci] =
                    static_cast<out_t>(mr[x] * static_cast<acc_t>(base[ci * s_in + row_off + x]) * scale);
              }
            }
          }
        }
      }
    }
  });
}

at::Tensor masked_inputs_cpu(const at::Tensor& activations, const at::Tensor& inputs, int64_t start, int64_t stop,
                             const std::optional<at::Tensor>& noise, double scale,
                             std::optional<at::ScalarType> out_dtype, bool channels_last, double eps) {
  check_device(activations, c10::DeviceType::CPU, "activations");
  const MaskedGeometry g = masked_geometry(activations, inputs, start, stop, noise, out_dtype, channels_last);
  const at::Tensor a = activations.contiguous();
  const at::Tensor in = inputs.contiguous();
  const at::Tensor nz = noise.has_value() ? noise->contiguous() : at::Tensor();
  at::Tensor out = at::empty(g.out_sizes, inputs.options().dtype(g.out_dtype).memory_format(g.format));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pycam_fast::masked_inputs_cpu", [&] {
    dispatch_out_dtype(g.out_dtype, [&](auto tag) {
      using out_t = std::remove_pointer_t<decltype(tag)>;
      masked_inputs_cpu_kernel<scalar_t, out_t>(a, in, nz, out, g, start, scale, eps);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pycam_fast, CPU, m) {
  m.impl("masked_inputs", &masked_inputs_cpu);
}

}  // namespace pycam_fast
