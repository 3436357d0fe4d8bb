// Fused CAM step on CUDA. Kernel 1 computes the weighted channel nansum at feature resolution into a small
// (splits, N, |S|) acc_t scratch: threads own one (n, s) and a slice of channels, so a warp reads 32 consecutive
// values (coalesced) and splitting C keeps >= 256k threads busy even for N * |S| = 64 * 49. Kernel 2 runs one block
// per sample: it folds the splits (deterministic, no atomics), then resizes + ReLUs the map on the fly twice, once
// for the block min/max and once to write the normalised output, so the output is written exactly once and the
// activations are read exactly once.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <limits>

#include "../op_utils.h"
#include "cuda_helpers.cuh"
#include "ops_cuda.h"
#include "ops_v2.h"

namespace pycam_fast {

// CUDA runtime version nvcc compiled against (reported by pycam_fast._C.build_info()).
int cuda_runtime_version_built() { return CUDART_VERSION; }

namespace {

template <typename scalar_t, typename acc_t>
__global__ void channel_partial_kernel(const scalar_t* __restrict__ w, const scalar_t* __restrict__ a,
                                       acc_t* __restrict__ partial, int64_t n_batch, int64_t c_total, int64_t s_in,
                                       int64_t w_batch_stride, bool full_weights, int64_t splits,
                                       int64_t c_per_split) {
  const int64_t total = splits * n_batch * s_in;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t s = idx % s_in;
    const int64_t n = (idx / s_in) % n_batch;
    const int64_t k = idx / (s_in * n_batch);
    const int64_t c0 = k * c_per_split;
    const int64_t c1 = c0 + c_per_split < c_total ? c0 + c_per_split : c_total;
    acc_t acc = 0;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t off = (n * c_total + c) * s_in + s;
      const acc_t wc = full_weights ? static_cast<acc_t>(w[off]) : static_cast<acc_t>(w[n * w_batch_stride + c]);
      acc += math::nan_to_zero(wc * static_cast<acc_t>(a[off]));
    }
    partial[idx] = acc;
  }
}

struct Dims {
  int64_t din, hin, win, dout, hout, wout;
};

template <typename scalar_t, typename acc_t>
__global__ void resize_normalize_kernel(acc_t* __restrict__ partial, scalar_t* __restrict__ out, int64_t n_batch,
                                        int64_t splits, Dims d, bool relu, bool normalize, acc_t eps) {
  const int64_t n = blockIdx.x;
  const int64_t s_in = d.din * d.hin * d.win;
  const int64_t s_out = d.dout * d.hout * d.wout;
  acc_t* m = partial + n * s_in;  // split 0 of sample n receives the folded sum
  acc_t flo = std::numeric_limits<acc_t>::infinity();
  acc_t fhi = -std::numeric_limits<acc_t>::infinity();
  for (int64_t s = threadIdx.x; s < s_in; s += blockDim.x) {
    acc_t v = m[s];
    for (int64_t k = 1; k < splits; ++k) v += partial[(k * n_batch + n) * s_in + s];
    m[s] = v;
    flo = math::min2(flo, v);
    fhi = math::max2(fhi, v);
  }
  cuda::block_minmax(flo, fhi);  // includes __syncthreads: the folded map is visible to the whole block
  scalar_t* o = out + n * s_out;
  const auto get = [m](int64_t i) { return m[i]; };
  const auto value = [&](int64_t i) {
    const int64_t x = i % d.wout;
    const int64_t y = (i / d.wout) % d.hout;
    const int64_t z = i / (d.wout * d.hout);
    const acc_t v = math::interp3<acc_t>(get, d.din, d.hin, d.win, d.dout, d.hout, d.wout, z, y, x);
    return relu ? math::relu(v) : v;
  };
  if (!normalize) {
    for (int64_t i = threadIdx.x; i < s_out; i += blockDim.x) o[i] = static_cast<scalar_t>(value(i));
    return;
  }
  if (flo == fhi) {  // constant map: exact zeros (interpolation could add ulp noise that min-max would amplify)
    for (int64_t i = threadIdx.x; i < s_out; i += blockDim.x) o[i] = scalar_t(0);
    return;
  }
  acc_t lo = std::numeric_limits<acc_t>::infinity();
  acc_t hi = -std::numeric_limits<acc_t>::infinity();
  for (int64_t i = threadIdx.x; i < s_out; i += blockDim.x) {
    const acc_t v = value(i);
    lo = math::min2(lo, v);
    hi = math::max2(hi, v);
  }
  cuda::block_minmax(lo, hi);
  const acc_t denom = math::minmax_denom(lo, hi, eps);
  for (int64_t i = threadIdx.x; i < s_out; i += blockDim.x) {
    o[i] = static_cast<scalar_t>(math::minmax_apply(value(i), lo, denom));
  }
}

}  // namespace

at::Tensor cam_step_cuda(const at::Tensor& weights, const at::Tensor& activations, bool relu,
                         at::OptionalIntArrayRef output_size, bool normalize, double eps) {
  if (v2_selected()) {  // PYCAM_FAST_CUDA_KERNELS=v2: the bandwidth rewrite (cam_step_v2.cu) unless out of envelope
    if (auto r = cam_step_cuda_v2(weights, activations, relu, output_size, normalize, eps)) return *std::move(r);
  }
  check_device(activations, c10::DeviceType::CUDA, "activations");
  const CamStepGeometry g = cam_step_geometry(weights, activations, output_size);
  const c10::cuda::CUDAGuard guard(activations.device());
  const at::Tensor a = activations.contiguous();
  const at::Tensor w = weights.contiguous();
  at::Tensor out = at::empty(g.out_sizes, activations.options().memory_format(c10::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  if (g.c == 0) return out.zero_();
  const int64_t s_in = g.in.numel();
  // ~2^18 threads fill an H100 (132 SMs x 2048) with a few waves; keep >= 8 channels per thread so each thread
  // amortises its index math and the split fold in kernel 2 stays small (<= C / 8 partial maps).
  const int64_t want = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, g.n * s_in));
  const int64_t splits0 = std::min<int64_t>(want, std::max<int64_t>(1, g.c / 8));
  const int64_t c_per_split = (g.c + splits0 - 1) / splits0;
  const int64_t splits = (g.c + c_per_split - 1) / c_per_split;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pycam_fast::cam_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor partial = at::empty({splits, g.n, s_in}, a.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    channel_partial_kernel<scalar_t, acc_t><<<cuda::grid_for(splits * g.n * s_in), cuda::kBlock, 0, stream>>>(
        w.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(), g.n, g.c, s_in,
        g.weight_batch_stride, g.full_weights, splits, c_per_split);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const Dims d{g.in.d, g.in.h, g.in.w, g.out.d, g.out.h, g.out.w};
    // 512 threads per sample: a 224x224 map is 98 values per thread per pass.
    resize_normalize_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(g.n), 512, 0, stream>>>(
        partial.mutable_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), g.n, splits, d, relu, normalize,
        static_cast<acc_t>(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace pycam_fast
