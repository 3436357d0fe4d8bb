// Score-CAM family masked inputs on CUDA, v2 (bandwidth rewrite; PYCAM_FAST_CUDA_KERNELS=v2, see v2_plan.h).
// One launch, one block per (output tile of 2048 pixels, (sample, channel) pair): the block loads the pair's
// feature map (49 values for layer4) into shared memory with its min/max (a block reduction, so no separate stats
// pass), normalises it in place, computes the taps of every output coordinate into shared memory, and then each
// thread interpolates 8 pixels (flat index split by a fast divider, no per-pixel tap math) and writes Cin outputs
// each. The output, the only large tensor, is written once with coalesced stores in either memory format. The
// values are v1's bit for bit: same taps, same blend order, minmax_apply on the same (lo, denom).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <limits>
#include <optional>

#include "../op_utils.h"
#include "cuda_helpers.cuh"
#include "ops_v2.h"

namespace pycam_fast {
namespace {

using cuda_v2::FastDiv;
using cuda_v2::kThreads;
using math::LinearTap;

using cuda::MaskDims;

template <typename scalar_t, typename out_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    masked_inputs_v2_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ inputs,
                            const scalar_t* __restrict__ noise, out_t* __restrict__ out, int64_t start,
                            MaskDims md, int64_t tiles, int tile_elems, FastDiv div_w, FastDiv div_hw, acc_t scale,
                            acc_t eps) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t tile = blockIdx.x % tiles;
  const int64_t p = blockIdx.x / tiles;
  const int64_t j = start + p;
  const int64_t n = j / md.c;
  const int t = threadIdx.x;
  const int64_t s_f = md.fd * md.fh * md.fw;
  const int64_t s_in = md.d * md.h * md.w;
  acc_t* map = reinterpret_cast<acc_t*>(smem_raw);
  LinearTap<acc_t>* taps = reinterpret_cast<LinearTap<acc_t>*>(smem_raw + (s_f * sizeof(acc_t) + 15) / 16 * 16);

  const scalar_t* row = a + j * s_f;
  acc_t lo = std::numeric_limits<acc_t>::infinity();
  acc_t hi = -std::numeric_limits<acc_t>::infinity();
  for (int64_t s = t; s < s_f; s += kThreads) {
    const acc_t v = static_cast<acc_t>(row[s]);
    map[s] = v;
    lo = math::min2(lo, v);
    hi = math::max2(hi, v);
  }
  cuda::fill_taps(taps, t, kThreads, md.fw, md.w, md.fh, md.h, md.fd, md.d);
  cuda::block_minmax(lo, hi);  // includes __syncthreads: map and taps are visible
  const acc_t denom = math::minmax_denom(lo, hi, eps);
  for (int64_t s = t; s < s_f; s += kThreads) map[s] = math::minmax_apply(map[s], lo, denom);
  __syncthreads();

  const LinearTap<acc_t>* tx = taps;
  const LinearTap<acc_t>* ty = taps + md.w;
  const LinearTap<acc_t>* tz = taps + md.w + md.h;
  const auto get = [map](int64_t i) { return map[i]; };
  const scalar_t* in_n = inputs + (md.shared_input ? 0 : n) * md.cin * s_in;
  const int64_t base = tile * tile_elems;
#pragma unroll
  for (int jj = 0; jj < cuda_v2::kMaskPerThread; ++jj) {
    const int64_t o = base + int64_t(jj) * kThreads + t;
    if (o >= s_in) break;
    const uint32_t uo = static_cast<uint32_t>(o);
    const uint32_t zy = cuda_v2::fast_div(uo, div_w);
    const uint32_t x = uo - zy * static_cast<uint32_t>(md.w);
    const uint32_t z = cuda_v2::fast_div(uo, div_hw);
    const uint32_t y = zy - z * static_cast<uint32_t>(md.h);
    acc_t mask = math::interp3_taps<acc_t>(get, md.fd, md.fh, md.fw, tz[z], ty[y], tx[x]);
    if (noise != nullptr) mask += static_cast<acc_t>(noise[p * s_in + o]);
    for (int64_t ci = 0; ci < md.cin; ++ci) {
      const out_t v = static_cast<out_t>(mask * static_cast<acc_t>(in_n[ci * s_in + o]) * scale);
      if (md.channels_last) {
        out[(p * s_in + o) * md.cin + ci] = v;  // (pair, *S, Cin)
      } else {
        out[(p * md.cin + ci) * s_in + o] = v;
      }
    }
  }
}

}  // namespace

std::optional<at::Tensor> masked_inputs_cuda_v2(const at::Tensor& activations, const at::Tensor& inputs, int64_t start,
                                                int64_t stop, const std::optional<at::Tensor>& noise, double scale,
                                                std::optional<at::ScalarType> out_dtype, bool channels_last,
                                                double eps) {
  check_device(activations, c10::DeviceType::CUDA, "activations");
  const MaskedGeometry g = masked_geometry(activations, inputs, start, stop, noise, out_dtype, channels_last);
  if (g.pairs == 0 || g.cin == 0) return std::nullopt;  // v1 handles the empty cases
  const c10::cuda::CUDAGuard guard(activations.device());
  std::optional<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, activations.scalar_type(), "pycam_fast::masked_v2", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const cuda_v2::MaskedPlan plan = cuda_v2::plan_masked_inputs(g.pairs, cuda::dhw(g.feat).data(),
                                                                 cuda::dhw(g.in).data(), sizeof(acc_t),
                                                                 sizeof(LinearTap<acc_t>));
    if (!plan.ok) return;
    const at::Tensor a = activations.contiguous();
    const at::Tensor in = inputs.contiguous();
    const at::Tensor nz = noise.has_value() ? noise->contiguous() : at::Tensor();
    at::Tensor out = at::empty(g.out_sizes, inputs.options().dtype(g.out_dtype).memory_format(g.format));
    const MaskDims md{g.feat.d, g.feat.h, g.feat.w, g.in.d, g.in.h, g.in.w, g.c, g.cin, g.shared_input,
                        g.format != c10::MemoryFormat::Contiguous};
    const FastDiv div_w = cuda_v2::make_fastdiv(static_cast<uint32_t>(g.in.w));
    const FastDiv div_hw = cuda_v2::make_fastdiv(static_cast<uint32_t>(g.in.h * g.in.w));
    const auto stream = c10::cuda::getCurrentCUDAStream();
    dispatch_out_dtype(g.out_dtype, [&](auto tag) {
      using out_t = std::remove_pointer_t<decltype(tag)>;
      masked_inputs_v2_kernel<scalar_t, out_t, acc_t>
          <<<static_cast<unsigned int>(plan.tiles * g.pairs), kThreads, plan.smem_bytes, stream>>>(
              a.const_data_ptr<scalar_t>(), in.const_data_ptr<scalar_t>(),
              nz.defined() ? nz.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<out_t>(), start, md,
              plan.tiles, plan.tile_elems, div_w, div_hw, static_cast<acc_t>(scale), static_cast<acc_t>(eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    result = out;
  });
  return result;
}

}  // namespace pycam_fast
