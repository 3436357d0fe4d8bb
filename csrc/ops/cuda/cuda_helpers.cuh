// Small CUDA helpers shared by the pycam_fast kernels: warp/block reductions and launch configuration. The
// per-element math lives in ../kernel_math.h (shared with the CPU kernels).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../kernel_math.h"

namespace pycam_fast {
namespace cuda {

constexpr int kWarp = 32;
constexpr int kBlock = 256;

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ inline void warp_minmax(T& lo, T& hi) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    lo = math::min2(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = math::max2(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
}

// Block-wide (min, max); every thread gets the result. blockDim.x must be a multiple of 32 and <= 1024.
template <typename T>
__device__ inline void block_minmax(T& lo, T& hi) {
  __shared__ T s_lo[kWarp];
  __shared__ T s_hi[kWarp];
  warp_minmax(lo, hi);
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  __syncthreads();  // s_lo/s_hi may still be read by a previous call
  if (lane == 0) {
    s_lo[warp] = lo;
    s_hi[warp] = hi;
  }
  __syncthreads();
  lo = s_lo[0];
  hi = s_hi[0];
  for (int w = 1; w < warps; ++w) {
    lo = math::min2(lo, s_lo[w]);
    hi = math::max2(hi, s_hi[w]);
  }
}

// Geometry of a masked_inputs call (v1 and v2 kernels).
struct MaskDims {
  int64_t fd, fh, fw;  // feature map
  int64_t d, h, w;     // input / output spatial
  int64_t c, cin;
  bool shared_input;
  bool channels_last;
};

// The linear taps of every output coordinate, W's then H's then D's (taps[i], i < out_w + out_h + out_d), for
// threads first, first + step, ... of a block.
template <typename acc_t>
__device__ inline void fill_taps(math::LinearTap<acc_t>* taps, int64_t first, int64_t step, int64_t in_w,
                                 int64_t out_w, int64_t in_h, int64_t out_h, int64_t in_d, int64_t out_d) {
  const int64_t coords = out_w + out_h + out_d;
  for (int64_t i = first; i < coords; i += step) {
    if (i < out_w) {
      taps[i] = math::linear_tap<acc_t>(i, in_w, out_w);
    } else if (i < out_w + out_h) {
      taps[i] = math::linear_tap<acc_t>(i - out_w, in_h, out_h);
    } else {
      taps[i] = math::linear_tap<acc_t>(i - out_w - out_h, in_d, out_d);
    }
  }
}

// Blocks for a grid-stride loop over `total` items: enough to fill the GPU (a few waves), capped for the 2^31-1
// grid limit.
inline unsigned int grid_for(int64_t total, int threads = kBlock) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(1) << 20)));
}

// One (n, c) row's gradient weight, reduced by the calling warp (every lane gets it): lanes stride over the |S|
// values; XGrad-CAM / Grad-CAM++ first reduce sum_S(A) (xor shuffle, so every lane has it). Shared by the v1 and v2
// weight kernels, which differ only in where the rows live (global or shared memory).
template <math::WeightKind kind, typename scalar_t, typename acc_t>
__device__ inline acc_t row_weight(const scalar_t* gr, const scalar_t* ar, int64_t s, acc_t eps, int lane) {
  using math::WeightKind;
  acc_t sum = 0;
  acc_t act_sum = 0;
  if constexpr (kind == WeightKind::XGradCAM || kind == WeightKind::GradCAMpp) {
    for (int64_t i = lane; i < s; i += kWarp) {
      const acc_t av = static_cast<acc_t>(ar[i]);
      act_sum += av;
      if constexpr (kind == WeightKind::XGradCAM) sum += static_cast<acc_t>(gr[i]) * av;
    }
    act_sum = warp_sum(act_sum);
  }
  for (int64_t i = lane; i < s; i += kWarp) {
    const acc_t gv = static_cast<acc_t>(gr[i]);
    if constexpr (kind == WeightKind::GradCAM) {
      sum += gv;
    } else if constexpr (kind == WeightKind::GradCAMpp) {
      sum += math::gradcampp_term(gv, act_sum, eps);
    } else if constexpr (kind == WeightKind::GradCAMppTorchCAM) {
      sum += math::gradcampp_torchcam_term(gv);
    }
  }
  return math::finish_weight(kind, warp_sum(sum), act_sum, s, eps);
}

}  // namespace cuda
}  // namespace pycam_fast
