// CPU separable (bi/tri)linear resize of one (D, H, W) map, shared by the cam_step and masked_inputs kernels.
// Taps come from math::linear_tap (the formulas the CUDA kernels use too).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "../kernel_math.h"
#include "../op_utils.h"

namespace pycam_fast {
namespace cpu {

using math::LinearTap;

// Taps of every output coordinate of one dim (computed once per call, reused by every sample).
template <typename acc_t>
std::vector<LinearTap<acc_t>> taps_of(int64_t in_size, int64_t out_size) {
  std::vector<LinearTap<acc_t>> taps(static_cast<size_t>(out_size));
  for (int64_t i = 0; i < out_size; ++i) taps[static_cast<size_t>(i)] = math::linear_tap<acc_t>(i, in_size, out_size);
  return taps;
}

// Output coordinates of one dim that can hold an extreme of the resized map (math::extreme_candidate).
template <typename acc_t>
std::vector<int64_t> candidates_of(int64_t in_size, int64_t out_size) {
  std::vector<int64_t> c;
  for (int64_t i = 0; i < out_size; ++i) {
    if (math::extreme_candidate<acc_t>(i, in_size, out_size)) c.push_back(i);
  }
  return c;
}

// Min and max of a resized (D, H, W) map from its extreme candidates only.
template <typename acc_t>
struct Candidates3 {
  std::vector<int64_t> z, y, x;
  Candidates3(const Spatial3& in, const Spatial3& out)
      : z(candidates_of<acc_t>(in.d, out.d)), y(candidates_of<acc_t>(in.h, out.h)), x(candidates_of<acc_t>(in.w, out.w)) {}

  void minmax(const acc_t* v, const Spatial3& out, acc_t& lo, acc_t& hi) const {
    lo = std::numeric_limits<acc_t>::infinity();
    hi = -std::numeric_limits<acc_t>::infinity();
    for (const int64_t zi : z) {
      for (const int64_t yi : y) {
        const acc_t* row = v + (zi * out.h + yi) * out.w;
        for (const int64_t xi : x) {
          lo = math::min2(lo, row[xi]);
          hi = math::max2(hi, row[xi]);
        }
      }
    }
  }
};

template <typename acc_t>
struct Taps3 {
  std::vector<LinearTap<acc_t>> z, y, x;
  Taps3(const Spatial3& in, const Spatial3& out)
      : z(taps_of<acc_t>(in.d, out.d)), y(taps_of<acc_t>(in.h, out.h)), x(taps_of<acc_t>(in.w, out.w)) {}
};

// Resize along W first for every input row into `row_buf` (D_in * H_in rows of W_out values), then blend 2 (2-D)
// or 4 (3-D) of those rows per output row: the same operation order as ATen's separable CPU kernel, and every
// inner loop is a contiguous, vectorisable loop over W_out.
template <typename acc_t>
inline void resize_rows(const acc_t* __restrict src, acc_t* __restrict row_buf, const Spatial3& in, int64_t wo,
                        const LinearTap<acc_t>* tx) {
  for (int64_t r = 0; r < in.d * in.h; ++r) {
    const acc_t* s = src + r * in.w;
    acc_t* b = row_buf + r * wo;
    for (int64_t x = 0; x < wo; ++x) b[x] = math::lerp2(s[tx[x].i0], s[tx[x].i1], tx[x].l0, tx[x].l1);
  }
}

// One output row (z, y) of the resized map from the W-resized rows.
template <typename acc_t>
inline void blend_row(const acc_t* __restrict row_buf, acc_t* __restrict d, const Spatial3& in, int64_t wo,
                      const LinearTap<acc_t>& zt, const LinearTap<acc_t>& yt) {
  const acc_t* r00 = row_buf + (zt.i0 * in.h + yt.i0) * wo;
  const acc_t* r01 = row_buf + (zt.i0 * in.h + yt.i1) * wo;
  if (in.d == 1) {  // 1-D/2-D maps: skip the depth blend (half the work of the trilinear form)
    for (int64_t x = 0; x < wo; ++x) d[x] = math::lerp2(r00[x], r01[x], yt.l0, yt.l1);
    return;
  }
  const acc_t* r10 = row_buf + (zt.i1 * in.h + yt.i0) * wo;
  const acc_t* r11 = row_buf + (zt.i1 * in.h + yt.i1) * wo;
  for (int64_t x = 0; x < wo; ++x) {
    d[x] = math::lerp2(math::lerp2(r00[x], r01[x], yt.l0, yt.l1), math::lerp2(r10[x], r11[x], yt.l0, yt.l1), zt.l0,
                       zt.l1);
  }
}

// Whole-map resize into `dst` (D_out * H_out * W_out values).
template <typename acc_t>
inline void resize_map(const acc_t* __restrict src, acc_t* __restrict dst, acc_t* __restrict row_buf,
                       const Spatial3& in, const Spatial3& out, const Taps3<acc_t>& t) {
  resize_rows(src, row_buf, in, out.w, t.x.data());
  for (int64_t z = 0; z < out.d; ++z) {
    for (int64_t y = 0; y < out.h; ++y) blend_row(row_buf, dst + (z * out.h + y) * out.w, in, out.w, t.z[z], t.y[y]);
  }
}

}  // namespace cpu
}  // namespace pycam_fast
