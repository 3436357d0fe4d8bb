// Per-element math shared by the CPU and CUDA kernels (C10_HOST_DEVICE), so the CPU tests cover the formulas the
// GPU runs. Everything here is templated on the accumulation type `acc_t` (float for fp16/bf16/fp32 inputs,
// double for fp64), matching at::opmath_type.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <type_traits>

namespace pycam_fast {
namespace math {

// Multiply and add with one rounding per operation on host and device. nvcc contracts `a * b + c` into one
// FMA by default (one rounding instead of two), so without these the GPU would differ from the CPU kernels and from
// torch's separate mul/add kernels in the last bit of a resize tap or blend; overlay truncates such a value to a
// LUT index, where one ulp is a different colour. (The host side is built with -ffp-contract=off, see setup.py.)
enum class RoundedOp { Mul, Add };

// `a * b` or `a + b` (float or double), rounded once.
template <RoundedOp op, typename acc_t>
C10_HOST_DEVICE inline acc_t rounded(acc_t a, acc_t b) {
  static_assert(std::is_same_v<acc_t, float> || std::is_same_v<acc_t, double>, "float or double operands");
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<acc_t, double>) {
    return op == RoundedOp::Mul ? __dmul_rn(a, b) : __dadd_rn(a, b);
  } else {
    return op == RoundedOp::Mul ? __fmul_rn(a, b) : __fadd_rn(a, b);
  }
#else
  if constexpr (op == RoundedOp::Mul) {
    return a * b;
  } else {
    return a + b;
  }
#endif
}
template <typename acc_t>
C10_HOST_DEVICE inline acc_t mul_rn(acc_t a, acc_t b) {
  return rounded<RoundedOp::Mul>(a, b);
}
template <typename acc_t>
C10_HOST_DEVICE inline acc_t add_rn(acc_t a, acc_t b) {
  return rounded<RoundedOp::Add>(a, b);
}

// Which gradient-weight formula a weights kernel computes (one kernel body, four ops).
enum class WeightKind : int { GradCAM = 0, XGradCAM = 1, GradCAMpp = 2, GradCAMppTorchCAM = 3 };

template <WeightKind kind>
using WeightKindTag = std::integral_constant<WeightKind, kind>;

// f(WeightKindTag<kind>{}) for a run-time kind (one kernel instantiation per kind); kind must be one of the four.
template <typename F>
inline auto with_weight_kind(WeightKind kind, F&& f) {
  switch (kind) {
    case WeightKind::GradCAM: return f(WeightKindTag<WeightKind::GradCAM>{});
    case WeightKind::XGradCAM: return f(WeightKindTag<WeightKind::XGradCAM>{});
    case WeightKind::GradCAMpp: return f(WeightKindTag<WeightKind::GradCAMpp>{});
    default: return f(WeightKindTag<WeightKind::GradCAMppTorchCAM>{});
  }
}

// Source taps of one output coordinate for linear interpolation with align_corners=False. This is ATen's
// area_pixel_compute_scale + area_pixel_compute_source_index + guard_index_and_lambda, in the same operation
// order, so a map resized here matches F.interpolate to the last bit when the input map is the same.
template <typename acc_t>
struct LinearTap {
  int64_t i0;
  int64_t i1;
  acc_t l0;
  acc_t l1;
};

template <typename acc_t>
C10_HOST_DEVICE inline LinearTap<acc_t> linear_tap(int64_t dst, int64_t in_size, int64_t out_size) {
  LinearTap<acc_t> t;
  if (in_size == out_size) {  // identity: F.interpolate is skipped by the reference, so copy exactly
    t.i0 = dst;
    t.i1 = dst;
    t.l0 = acc_t(1);
    t.l1 = acc_t(0);
    return t;
  }
  const acc_t scale = static_cast<acc_t>(in_size) / static_cast<acc_t>(out_size);
  acc_t src = add_rn(mul_rn(scale, static_cast<acc_t>(dst) + acc_t(0.5)), acc_t(-0.5));
  src = src < acc_t(0) ? acc_t(0) : src;  // align_corners=False clamps below 0 (not for cubic)
  int64_t idx = static_cast<int64_t>(src);  // src >= 0, so truncation == floor
  idx = idx > in_size - 1 ? in_size - 1 : idx;
  acc_t lam = src - static_cast<acc_t>(idx);
  lam = lam < acc_t(0) ? acc_t(0) : (lam > acc_t(1) ? acc_t(1) : lam);
  t.i0 = idx;
  t.i1 = idx + (idx < in_size - 1 ? 1 : 0);
  t.l1 = lam;
  t.l0 = acc_t(1) - lam;
  return t;
}

// Linear blend of two taps, written as ATen's `t0 * w0 + t1 * w1` (two products, one sum, each rounded).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t lerp2(acc_t v0, acc_t v1, acc_t l0, acc_t l1) {
  return add_rn(mul_rn(v0, l0), mul_rn(v1, l1));
}

// nansum semantics: a NaN product (NaN activation, 0 * inf, ...) contributes 0. Written as a select so the CPU
// loop vectorises; needs IEEE compares, hence no -ffast-math anywhere in the build.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t nan_to_zero(acc_t p) {
  return p == p ? p : acc_t(0);
}

// torch.relu semantics (NaN stays NaN), unlike `x > 0 ? x : 0`.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t relu(acc_t x) {
  return x < acc_t(0) ? acc_t(0) : x;
}

// Min-max normalisation `(x - lo) / (hi - lo + eps)` (reference: spatial_minmax). amax(x - lo) == hi - lo exactly
// because rounding is monotone, so this is bitwise the reference formula.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t minmax_denom(acc_t lo, acc_t hi, acc_t eps) {
  return (hi - lo) + eps;
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t minmax_apply(acc_t x, acc_t lo, acc_t denom) {
  return (x - lo) / denom;
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t min2(acc_t a, acc_t b) {
  return b < a ? b : a;
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t max2(acc_t a, acc_t b) {
  return b > a ? b : a;
}

// Grad-CAM++ per-element term alpha * relu(g), alpha = g2 / (2 g2 + sum_S(A) g3 + eps) where g2 > 0 else 0.
// Like the reference, the division result is used as is (no shortcut for g <= 0), so an infinite alpha times
// relu(g) == 0 gives the same NaN the reference gives.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t gradcampp_term(acc_t g, acc_t act_sum, acc_t eps) {
  const acc_t g2 = g * g;
  const acc_t g3 = g2 * g;
  const acc_t denom = acc_t(2) * g2 + act_sum * g3 + eps;
  const bool pos = g2 > acc_t(0);
  const acc_t alpha = pos ? g2 / (pos ? denom : acc_t(1)) : acc_t(0);
  return alpha * relu(g);
}

// TorchCAM 0.5 GradCAMpp weight term g^2 * relu(g).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t gradcampp_torchcam_term(acc_t g) {
  return g * g * relu(g);
}

// Finishing step of the row reductions of a weights kernel: GradCAM divides by |S|, XGradCAM by sum(A) + eps.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t finish_weight(WeightKind kind, acc_t sum, acc_t act_sum, int64_t numel, acc_t eps) {
  switch (kind) {
    case WeightKind::GradCAM:
      return sum / static_cast<acc_t>(numel);
    case WeightKind::XGradCAM:
      return sum / (act_sum + eps);
    default:
      return sum;
  }
}

}  // namespace math
}  // namespace pycam_fast

namespace pycam_fast {
namespace math {

// One output value of a (bi/tri)linear resize of a (din, hin, win) map from the taps of its output coordinate,
// reading input values through get(flat_index). Blends W first, then H, then D: the order of ATen's separable kernel
// and of the CPU row-wise path (cpu/resize.h), so CPU and CUDA agree to the last bit given the same map.
template <typename acc_t, typename Get>
C10_HOST_DEVICE inline acc_t interp3_taps(const Get& get, int64_t din, int64_t hin, int64_t win,
                                          const LinearTap<acc_t>& tz, const LinearTap<acc_t>& ty,
                                          const LinearTap<acc_t>& tx) {
  const int64_t r00 = (tz.i0 * hin + ty.i0) * win;
  const int64_t r01 = (tz.i0 * hin + ty.i1) * win;
  const acc_t p0 = lerp2(lerp2(get(r00 + tx.i0), get(r00 + tx.i1), tx.l0, tx.l1),
                         lerp2(get(r01 + tx.i0), get(r01 + tx.i1), tx.l0, tx.l1), ty.l0, ty.l1);
  if (din == 1) return p0;  // 1-D/2-D: no depth blend (the CPU path skips it too)
  const int64_t r10 = (tz.i1 * hin + ty.i0) * win;
  const int64_t r11 = (tz.i1 * hin + ty.i1) * win;
  const acc_t p1 = lerp2(lerp2(get(r10 + tx.i0), get(r10 + tx.i1), tx.l0, tx.l1),
                         lerp2(get(r11 + tx.i0), get(r11 + tx.i1), tx.l0, tx.l1), ty.l0, ty.l1);
  return lerp2(p0, p1, tz.l0, tz.l1);
}

// Whether output coordinate `dst` of one resized dim can hold an extreme of the resized map. Output coordinates
// sharing a left tap i0 form a run along which the weight l1 is non-decreasing, and the resized map is multilinear
// in (l1_z, l1_y, l1_x) inside a box of runs, so its min and max over the box sit at the first or last coordinate of
// each run. Scanning only those (14 x 14 of 224 x 224 for a 7x7 map: 256x fewer values) gives the map's min/max
// without evaluating every output value. Downsampling makes every run length 1, i.e. every coordinate a candidate.
template <typename acc_t>
C10_HOST_DEVICE inline bool extreme_candidate(int64_t dst, int64_t in_size, int64_t out_size) {
  if (dst == 0 || dst == out_size - 1) return true;
  const int64_t i0 = linear_tap<acc_t>(dst, in_size, out_size).i0;
  return linear_tap<acc_t>(dst - 1, in_size, out_size).i0 != i0 || linear_tap<acc_t>(dst + 1, in_size, out_size).i0 != i0;
}

// Min-max normalisation with (lo, hi) taken over the extreme candidates: in exact math they are the map's min/max;
// in floating point a non-candidate value can round one ulp below lo, and the clamp keeps such a value at the
// reference's exact 0 instead of -1e-7.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t minmax_apply_candidates(acc_t x, acc_t lo, acc_t denom) {
  return relu(minmax_apply(x, lo, denom));
}

// interp3_taps at output coordinate (z, y, x), computing the taps.
template <typename acc_t, typename Get>
C10_HOST_DEVICE inline acc_t interp3(const Get& get, int64_t din, int64_t hin, int64_t win, int64_t dout, int64_t hout,
                                     int64_t wout, int64_t z, int64_t y, int64_t x) {
  return interp3_taps<acc_t>(get, din, hin, win, linear_tap<acc_t>(z, din, dout), linear_tap<acc_t>(y, hin, hout),
                             linear_tap<acc_t>(x, win, wout));
}

}  // namespace math
}  // namespace pycam_fast

namespace pycam_fast {
namespace math {

// Overlay (pycam_fast.ops.reference.overlay is the spec). A blend table row holds the 256 outputs of one LUT colour:
// out[n, c, y, x] = table[c, kBlendRow * k + v] with k the LUT index of the resized map and v the 8-bit pixel.
constexpr int32_t kBlendRow = 256;
constexpr int64_t kBlendTableCols = 256 * kBlendRow;  // one (256 colours x 256 pixel values) table per channel

// `255 * clamp(x, 0, 1) + 0.5` with NaN -> 0 in acc_t (fp32, or fp64 for fp64 inputs), like the reference's
// x.nan_to_num(0).clamp(0, 1).mul_(255).add_(0.5) on fp32/fp64 values. In [0.5, 255.5]: truncation is
// round-half-up of 255 * x. (fp16/bf16 are widened first: in bf16, 255.5 would round to 256, past the table row.)
template <typename acc_t>
C10_HOST_DEVICE inline acc_t byte_scale(acc_t x) {
  // Two unconditional selects, not a nested ternary, so the CPU loop if-converts and vectorises.
  const acc_t lo = x > acc_t(0) ? x : acc_t(0);  // NaN fails `x > 0`: 0
  const acc_t c = lo < acc_t(1) ? lo : acc_t(1);
  return add_rn(mul_rn(c, acc_t(255)), acc_t(0.5));
}

// The 8-bit value v of an image pixel: uint8 as is, float through byte_scale in acc_t.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline int32_t pixel_byte(scalar_t x) {
  if constexpr (std::is_same_v<scalar_t, uint8_t>) {
    return static_cast<int32_t>(x);
  } else {
    return static_cast<int32_t>(byte_scale<acc_t>(static_cast<acc_t>(x)));
  }
}

// Offset of the blend-table row of a resized map value `up` (a bilinear blend of byte_scale values, fp32):
// k = trunc(up). up lies in [0.5, 255.5] up to rounding (the weights sum to 1 within an ulp), so k is in [0, 255].
C10_HOST_DEVICE inline int32_t lut_row_offset(float up) { return static_cast<int32_t>(up) * kBlendRow; }

}  // namespace math
}  // namespace pycam_fast
