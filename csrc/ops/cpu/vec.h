// Reductions written so GCC/Clang vectorise them at plain -O3 (no -ffast-math, which would break the NaN
// handling): a float reduction `sum += f(i)` is not reassociable, so the compiler keeps it scalar; 16 independent
// lanes are, and they become 4 (SSE2) or 2 (AVX-512) vector accumulators. Lane sums are also more accurate than one
// running sum (pairwise-ish), which matters for |S| in the thousands.
#pragma once

#include <cstdint>
#include <limits>

#include "../kernel_math.h"

namespace pycam_fast {
namespace cpu {

constexpr int kLanes = 16;

// sum_{i < n} f(i) in acc_t.
template <typename acc_t, typename F>
inline acc_t lane_sum(int64_t n, F&& f) {
  acc_t lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) lanes[k] += f(i + k);
  }
  acc_t tail = 0;
  for (; i < n; ++i) tail += f(i);
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int k = 0; k < w; ++k) lanes[k] += lanes[k + w];
  }
  return lanes[0] + tail;
}

// (min, max) of v[0..n), n >= 1.
template <typename acc_t>
inline void lane_minmax(const acc_t* __restrict v, int64_t n, acc_t& lo, acc_t& hi) {
  acc_t l[kLanes];
  acc_t h[kLanes];
  for (int k = 0; k < kLanes; ++k) {
    l[k] = std::numeric_limits<acc_t>::infinity();
    h[k] = -std::numeric_limits<acc_t>::infinity();
  }
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      l[k] = math::min2(l[k], v[i + k]);
      h[k] = math::max2(h[k], v[i + k]);
    }
  }
  for (; i < n; ++i) {
    l[0] = math::min2(l[0], v[i]);
    h[0] = math::max2(h[0], v[i]);
  }
  lo = l[0];
  hi = h[0];
  for (int k = 1; k < kLanes; ++k) {
    lo = math::min2(lo, l[k]);
    hi = math::max2(hi, h[k]);
  }
}

}  // namespace cpu
}  // namespace pycam_fast
