// Fused CAM step on CUDA, v2 (bandwidth rewrite; selected by PYCAM_FAST_CUDA_KERNELS=v2, see v2_plan.h).
//
// Kernel 1, one block per (channel split, sample): `lanes` channel rows x `span` positions per sweep (a 7x7 map:
// 5 rows of 49 contiguous values, so every sweep is one coalesced 980-byte read), per-block partial sums folded
// across lanes in shared memory in a fixed order -> partial[split][n][s] (<= 16 splits, no atomics, deterministic).
// Kernel 2, one block per (output tile of 2048 values, sample): folds the <= 16 partial maps into shared memory
// (the feature-resolution map is tiny: 49 values for layer4), detects a constant map, computes the taps of every
// output coordinate into shared memory, takes the min/max of the resized map over its extreme candidates
// (kernel_math.h: 14 x 14 of 224 x 224 for a 7x7 map, evaluated by every block of the sample: cheaper than a
// separate launch), and writes its tile once, coalesced, with the flat index split by a fast divider. The
// activations are read once and the output written once, over N x tiles blocks instead of v1's N blocks.
// Same math as the CPU kernel (cpu/cam_step_kernel.cpp): ATen resize taps, candidate min/max with the clamp of
// minmax_apply_candidates, a constant map -> exact zeros, NaN products skipped.
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

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    cam_partial_v2_kernel(const scalar_t* __restrict__ w, const scalar_t* __restrict__ a, acc_t* __restrict__ partial,
                          int64_t n_batch, int64_t c_total, int64_t s_in, int64_t w_batch_stride, bool full_weights,
                          int64_t splits, int64_t c_per_split, int span, int lanes) {
  __shared__ acc_t red[kThreads];
  const int64_t k = blockIdx.x % splits;
  const int64_t n = blockIdx.x / splits;
  const int64_t c0 = k * c_per_split;
  const int64_t c1 = c0 + c_per_split < c_total ? c0 + c_per_split : c_total;
  const int t = threadIdx.x;
  const int r = t / span;      // channel lane
  const int j = t - r * span;  // position inside the sweep
  const scalar_t* a_n = a + n * c_total * s_in;
  const scalar_t* w_full = w + n * c_total * s_in;  // only read when full_weights
  const scalar_t* w_vec = w + n * w_batch_stride;
  acc_t* dst = partial + (k * n_batch + n) * s_in;
  for (int64_t s0 = 0; s0 < s_in; s0 += span) {
    const int64_t s = s0 + j;
    acc_t acc = 0;
    if (r < lanes && s < s_in) {
      if (full_weights) {
#pragma unroll 4
        for (int64_t c = c0 + r; c < c1; c += lanes) {
          const int64_t off = c * s_in + s;
          acc += math::nan_to_zero(static_cast<acc_t>(w_full[off]) * static_cast<acc_t>(a_n[off]));
        }
      } else {
#pragma unroll 8  // 8 independent loads in flight per thread: enough bytes in flight to saturate HBM
        for (int64_t c = c0 + r; c < c1; c += lanes) {
          acc += math::nan_to_zero(static_cast<acc_t>(w_vec[c]) * static_cast<acc_t>(a_n[c * s_in + s]));
        }
      }
    }
    red[t] = acc;
    __syncthreads();
    if (r == 0 && s < s_in) {
      acc_t v = red[j];
      for (int l = 1; l < lanes; ++l) v += red[l * span + j];
      dst[s] = v;
    }
    __syncthreads();
  }
}

struct CamDims {
  int64_t din, hin, win, dout, hout, wout;
};

__host__ __device__ inline size_t align16(size_t b) { return (b + 15) / 16 * 16; }

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    cam_write_v2_kernel(const acc_t* __restrict__ partial, scalar_t* __restrict__ out, int64_t n_batch,
                        int64_t splits, CamDims d, int64_t tiles, int tile_elems, FastDiv div_w, FastDiv div_hw,
                        bool resize, bool relu, bool normalize, acc_t eps) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t tile = blockIdx.x % tiles;
  const int64_t n = blockIdx.x / tiles;
  const int t = threadIdx.x;
  const int64_t s_in = d.din * d.hin * d.win;
  const int64_t s_out = d.dout * d.hout * d.wout;
  const int64_t coords = d.dout + d.hout + d.wout;
  acc_t* map = reinterpret_cast<acc_t*>(smem_raw);
  // taps/candidates of x in [0, wout), y in [wout, wout + hout), z in [wout + hout, coords) (resize only)
  LinearTap<acc_t>* taps = reinterpret_cast<LinearTap<acc_t>*>(smem_raw + align16(s_in * sizeof(acc_t)));
  int32_t* cand = reinterpret_cast<int32_t*>(taps + coords);
  __shared__ int cand_count[3];

  acc_t flo = std::numeric_limits<acc_t>::infinity();
  acc_t fhi = -std::numeric_limits<acc_t>::infinity();
  for (int64_t s = t; s < s_in; s += kThreads) {
    acc_t v = partial[n * s_in + s];
    for (int64_t k = 1; k < splits; ++k) v += partial[(k * n_batch + n) * s_in + s];  // v1's fold order
    map[s] = v;
    flo = math::min2(flo, v);
    fhi = math::max2(fhi, v);
  }
  if (resize) {
    cuda::fill_taps(taps, t, kThreads, d.win, d.wout, d.hin, d.hout, d.din, d.dout);
  }
  cuda::block_minmax(flo, fhi);  // includes __syncthreads: map and taps are visible to the block
  const LinearTap<acc_t>* tx = taps;
  const LinearTap<acc_t>* ty = taps + d.wout;
  const LinearTap<acc_t>* tz = taps + d.wout + d.hout;
  const auto get = [map](int64_t i) { return map[i]; };

  acc_t lo = 0;
  acc_t denom = 1;
  bool zero = false;
  if (normalize) {
    if (flo == fhi) {  // constant at feature resolution: exact zeros (resize rounding would be amplified)
      zero = true;
    } else {
      acc_t hi;
      if (!resize) {
        lo = flo;
        hi = fhi;
      } else {
        // candidate coordinates of each dim, compacted by one warp per dim with ballots
        const int warp = t / cuda::kWarp;
        const int lane = t % cuda::kWarp;
        if (warp < 3) {
          const int64_t size = warp == 0 ? d.wout : (warp == 1 ? d.hout : d.dout);
          const int64_t in_size = warp == 0 ? d.win : (warp == 1 ? d.hin : d.din);
          int32_t* dst = cand + (warp == 0 ? 0 : (warp == 1 ? d.wout : d.wout + d.hout));
          int count = 0;
          for (int64_t i0 = 0; i0 < size; i0 += cuda::kWarp) {
            const int64_t i = i0 + lane;
            const bool f = i < size && math::extreme_candidate<acc_t>(i, in_size, size);
            const unsigned mask = __ballot_sync(0xffffffffu, f);
            if (f) dst[count + __popc(mask & ((1u << lane) - 1u))] = static_cast<int32_t>(i);
            count += __popc(mask);
          }
          if (lane == 0) cand_count[warp] = count;
        }
        __syncthreads();
        const int64_t nx = cand_count[0];
        const int64_t ny = cand_count[1];
        const int64_t nz = cand_count[2];
        const int32_t* cx = cand;
        const int32_t* cy = cand + d.wout;
        const int32_t* cz = cand + d.wout + d.hout;
        lo = std::numeric_limits<acc_t>::infinity();
        hi = -std::numeric_limits<acc_t>::infinity();
        for (int64_t q = t; q < nx * ny * nz; q += kThreads) {
          const int64_t xi = cx[q % nx];
          const int64_t yi = cy[(q / nx) % ny];
          const int64_t zi = cz[q / (nx * ny)];
          const acc_t v = math::interp3_taps<acc_t>(get, d.din, d.hin, d.win, tz[zi], ty[yi], tx[xi]);
          lo = math::min2(lo, v);
          hi = math::max2(hi, v);
        }
        cuda::block_minmax(lo, hi);
      }
      if (relu) {  // relu is monotone: the extremes of relu(v) are relu of the extremes
        lo = math::relu(lo);
        hi = math::relu(hi);
      }
      denom = math::minmax_denom(lo, hi, eps);
    }
  }

  scalar_t* o = out + n * s_out;
  const int64_t base = tile * tile_elems;
#pragma unroll
  for (int jj = 0; jj < cuda_v2::kCamPerThread; ++jj) {
    const int64_t i = base + int64_t(jj) * kThreads + t;
    if (i >= s_out) break;
    if (zero) {
      o[i] = scalar_t(0);
      continue;
    }
    acc_t v;
    if (resize) {
      const uint32_t ui = static_cast<uint32_t>(i);
      const uint32_t zy = cuda_v2::fast_div(ui, div_w);
      const uint32_t x = ui - zy * static_cast<uint32_t>(d.wout);
      const uint32_t z = cuda_v2::fast_div(ui, div_hw);
      const uint32_t y = zy - z * static_cast<uint32_t>(d.hout);
      v = math::interp3_taps<acc_t>(get, d.din, d.hin, d.win, tz[z], ty[y], tx[x]);
    } else {
      v = map[i];
    }
    if (relu) v = math::relu(v);
    if (normalize) v = math::minmax_apply_candidates(v, lo, denom);
    o[i] = static_cast<scalar_t>(v);
  }
}

template <typename acc_t>
int64_t candidate_count(const Spatial3& in, const Spatial3& out) {
  const auto one = [](int64_t i, int64_t o) {
    int64_t c = 0;
    for (int64_t x = 0; x < o; ++x) c += math::extreme_candidate<acc_t>(x, i, o) ? 1 : 0;
    return c;
  };
  return one(in.d, out.d) * one(in.h, out.h) * one(in.w, out.w);
}

}  // namespace

std::optional<at::Tensor> cam_step_cuda_v2(const at::Tensor& weights, const at::Tensor& activations, bool relu,
                                           at::OptionalIntArrayRef output_size, bool normalize, double eps) {
  check_device(activations, c10::DeviceType::CUDA, "activations");
  const CamStepGeometry g = cam_step_geometry(weights, activations, output_size);
  if (g.n == 0 || g.c == 0 || g.out.numel() == 0) return std::nullopt;  // v1 handles the empty cases
  const c10::cuda::CUDAGuard guard(activations.device());
  const int sm_count = cuda::sm_count_v2();
  std::optional<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, activations.scalar_type(), "pycam_fast::cam_step_v2", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const cuda_v2::CamStepPlan plan =
        cuda_v2::plan_cam_step(g.n, g.c, cuda::dhw(g.in).data(), cuda::dhw(g.out).data(),
                               candidate_count<acc_t>(g.in, g.out), sizeof(acc_t), sizeof(LinearTap<acc_t>), sm_count);
    if (!plan.ok) return;
    const at::Tensor a = activations.contiguous();
    const at::Tensor w = weights.contiguous();
    at::Tensor out = at::empty(g.out_sizes, activations.options().memory_format(c10::MemoryFormat::Contiguous));
    const int64_t s_in = g.in.numel();
    at::Tensor partial =
        at::empty({plan.splits, g.n, s_in}, a.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    const auto stream = c10::cuda::getCurrentCUDAStream();
    cam_partial_v2_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(plan.splits * g.n), kThreads, 0, stream>>>(
        w.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(), g.n, g.c,
        s_in, g.weight_batch_stride, g.full_weights, plan.splits, plan.c_per_split, plan.span, plan.lanes);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const CamDims d{g.in.d, g.in.h, g.in.w, g.out.d, g.out.h, g.out.w};
    const FastDiv div_w = cuda_v2::make_fastdiv(static_cast<uint32_t>(g.out.w));
    const FastDiv div_hw = cuda_v2::make_fastdiv(static_cast<uint32_t>(g.out.h * g.out.w));
    cam_write_v2_kernel<scalar_t, acc_t>
        <<<static_cast<unsigned int>(plan.tiles * g.n), kThreads, plan.smem_bytes, stream>>>(
            partial.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), g.n, plan.splits, d, plan.tiles,
            plan.tile_elems, div_w, div_hw, plan.resize, relu, normalize, static_cast<acc_t>(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    result = out;
  });
  return result;
}

}  // namespace pycam_fast
