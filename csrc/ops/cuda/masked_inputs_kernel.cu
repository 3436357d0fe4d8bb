// Score-CAM family masked inputs on CUDA. Kernel 1: one warp per (sample, channel) pair computes the channel's
// min and min-max denominator at feature resolution (2 acc_t per pair). Kernel 2: one thread per (pair, output
// pixel) interpolates the normalised map on the fly (8 taps of a 49-value map that stays in L1), adds the SSCAM
// noise and writes Cin outputs with the ISCAM scale: the upsampled masks never exist in memory, and the output
// (the only large tensor) is written once with coalesced stores in either memory format.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <limits>

#include "../op_utils.h"
#include "cuda_helpers.cuh"
#include "ops_cuda.h"
#include "ops_v2.h"

namespace pycam_fast {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void channel_stats_kernel(const scalar_t* __restrict__ a, acc_t* __restrict__ stats, int64_t start,
                                     int64_t pairs, int64_t s_f, acc_t eps) {
  const int lane = threadIdx.x % cuda::kWarp;
  const int64_t warps_per_grid = int64_t(gridDim.x) * (blockDim.x / cuda::kWarp);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x / cuda::kWarp) + threadIdx.x / cuda::kWarp; p < pairs;
       p += warps_per_grid) {
    const scalar_t* row = a + (start + p) * s_f;
    acc_t lo = std::numeric_limits<acc_t>::infinity();
    acc_t hi = -std::numeric_limits<acc_t>::infinity();
    for (int64_t i = lane; i < s_f; i += cuda::kWarp) {
      const acc_t v = static_cast<acc_t>(row[i]);
      lo = math::min2(lo, v);
      hi = math::max2(hi, v);
    }
    cuda::warp_minmax(lo, hi);
    if (lane == 0) {
      stats[2 * p] = lo;
      stats[2 * p + 1] = math::minmax_denom(lo, hi, eps);
    }
  }
}

using cuda::MaskDims;

template <typename scalar_t, typename out_t, typename acc_t>
__global__ void masked_inputs_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ inputs,
                                     const scalar_t* __restrict__ noise, const acc_t* __restrict__ stats,
                                     out_t* __restrict__ out, int64_t start, int64_t pairs, MaskDims md,
                                     acc_t scale) {
  const int64_t s_f = md.fd * md.fh * md.fw;
  const int64_t s_in = md.d * md.h * md.w;
  const int64_t total = pairs * s_in;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t o = idx % s_in;
    const int64_t p = idx / s_in;
    const int64_t j = start + p;
    const int64_t n = j / md.c;
    const scalar_t* row = a + j * s_f;
    const acc_t lo = stats[2 * p];
    const acc_t denom = stats[2 * p + 1];
    const auto get = [row, lo, denom](int64_t i) {
      return math::minmax_apply(static_cast<acc_t>(row[i]), lo, denom);
    };
    const int64_t x = o % md.w;
    const int64_t y = (o / md.w) % md.h;
    const int64_t z = o / (md.w * md.h);
    acc_t mask = math::interp3<acc_t>(get, md.fd, md.fh, md.fw, md.d, md.h, md.w, z, y, x);
    if (noise != nullptr) mask += static_cast<acc_t>(noise[idx]);
    const scalar_t* base = inputs + (md.shared_input ? 0 : n) * md.cin * s_in + o;
    for (int64_t ci = 0; ci < md.cin; ++ci) {
      const out_t v = static_cast<out_t>(mask * static_cast<acc_t>(base[ci * s_in]) * scale);
      if (md.channels_last) {
        out[idx * md.cin + ci] = v;  // (pair, *S, Cin): idx = p * s_in + o
      } else {
        out[(p * md.cin + ci) * s_in + o] = v;
      }
    }
  }
}

}  // namespace

at::Tensor masked_inputs_cuda(const at::Tensor& activations, const at::Tensor& inputs, int64_t start, int64_t stop,
                              const std::optional<at::Tensor>& noise, double scale,
                              std::optional<at::ScalarType> out_dtype, bool channels_last, double eps) {
  if (v2_selected()) {  // PYCAM_FAST_CUDA_KERNELS=v2: masked_inputs_v2.cu unless out of envelope
    if (auto r = masked_inputs_cuda_v2(activations, inputs, start, stop, noise, scale, out_dtype, channels_last, eps)) {
      return *std::move(r);
    }
  }
  check_device(activations, c10::DeviceType::CUDA, "activations");
  const MaskedGeometry g = masked_geometry(activations, inputs, start, stop, noise, out_dtype, channels_last);
  const c10::cuda::CUDAGuard guard(activations.device());
  const at::Tensor a = activations.contiguous();
  const at::Tensor in = inputs.contiguous();
  const at::Tensor nz = noise.has_value() ? noise->contiguous() : at::Tensor();
  at::Tensor out = at::empty(g.out_sizes, inputs.options().dtype(g.out_dtype).memory_format(g.format));
  if (out.numel() == 0) return out;
  const MaskDims md{g.feat.d, g.feat.h, g.feat.w, g.in.d, g.in.h, g.in.w, g.c, g.cin, g.shared_input,
                    g.format != c10::MemoryFormat::Contiguous};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pycam_fast::masked_inputs_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor stats = at::empty({g.pairs, 2}, a.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    channel_stats_kernel<scalar_t, acc_t><<<cuda::grid_for(g.pairs * cuda::kWarp), cuda::kBlock, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), stats.mutable_data_ptr<acc_t>(), start, g.pairs, g.feat.numel(),
        static_cast<acc_t>(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    dispatch_out_dtype(g.out_dtype, [&](auto tag) {
      using out_t = std::remove_pointer_t<decltype(tag)>;
      masked_inputs_kernel<scalar_t, out_t, acc_t><<<cuda::grid_for(g.pairs * g.in.numel()), cuda::kBlock, 0,
                                                     stream>>>(
          a.const_data_ptr<scalar_t>(), in.const_data_ptr<scalar_t>(),
          nz.defined() ? nz.const_data_ptr<scalar_t>() : nullptr, stats.const_data_ptr<acc_t>(),
          out.mutable_data_ptr<out_t>(), start, g.pairs, md, static_cast<acc_t>(scale));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace pycam_fast
