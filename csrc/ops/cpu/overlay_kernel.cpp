// Fused overlay on CPU: one read of the images, one write of the uint8 output, no full-resolution float map.
//
// Pass 1 (per image): byte_scale the (h, w) map and resize it along W into h rows of W floats (cpu/resize.h, the
// cam_step code path). Pass 2 (per output row, all images x rows in one parallel_for): blend the two source rows
// of the row's H tap into LUT row offsets, then per channel convert the pixels to 8-bit values and look the output
// up in the blend table. Both inner steps are separate contiguous loops over x so the float math vectorises (SSE2:
// 4 pixels per instruction). The lookup is a scalar gather and about half the time on the benchmark's random
// images and 7x7 maps: each pixel reads a new 64-byte line of its channel's 64 KB table (an L2 hit); smooth photos
// and heatmaps stay within a few rows (L1 hits).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../kernel_math.h"
#include "../op_utils.h"
#include "resize.h"

namespace pycam_fast {

namespace {

// Rows per parallel_for task: ~32 KB of output (49 rows of 224x3 bytes), so a single 224x224 image still splits
// across 2 threads while a task amortises its buffers and scheduling (~10 us) over ~100 us of work.
constexpr int64_t kOutputBytesPerTask = 32 * 1024;

// Blend-table indices of one row of one channel: LUT row offset + pixel byte (kUnitStride: vectorised loads).
template <typename scalar_t, bool kUnitStride>
inline void row_indices(const scalar_t* __restrict src, int64_t sx, const int32_t* __restrict off,
                        int32_t* __restrict idx, int64_t w) {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t x = 0;
#if defined(__SSE2__)
  if constexpr (kUnitStride && std::is_same_v<scalar_t, float>) {
    // math::pixel_byte<float, float>, 4 pixels per step: _mm_max_ps(x, 0) returns its second operand for NaN, so
    // it is `x > 0 ? x : 0`, followed by the same min, mul, add (separately rounded) and truncation; the tests
    // compare it with the scalar form (row tails, GPU) and the reference. GCC vectorises the scalar selects into
    // compare/and/or chains: 12.6 ms vs 5.7 ms per 9.6M pixels, a quarter of the whole op on fp32 images.
    const __m128 zero = _mm_setzero_ps();
    const __m128 one = _mm_set1_ps(1.0f);
    const __m128 scale = _mm_set1_ps(255.0f);
    const __m128 half = _mm_set1_ps(0.5f);
    for (; x + 4 <= w; x += 4) {
      const __m128 c = _mm_min_ps(_mm_max_ps(_mm_loadu_ps(src + x), zero), one);
      const __m128i v = _mm_cvttps_epi32(_mm_add_ps(_mm_mul_ps(c, scale), half));
      const __m128i o = _mm_loadu_si128(reinterpret_cast<const __m128i*>(off + x));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + x), _mm_add_epi32(o, v));
    }
  }
#endif
  for (; x < w; ++x) idx[x] = off[x] + math::pixel_byte<scalar_t, acc_t>(src[kUnitStride ? x : x * sx]);
}

// d[x] = tab[idx[x]]. The lookups cannot vectorise (no gather below AVX2), so the loop is bound by loads and
// stores: packing 8 looked-up bytes into one 64-bit store cuts the stores 8x, measured 27% faster for the whole
// row (224 px) than byte stores. Bytes are packed in memory order, hence the little-endian branch.
inline void lookup_row(const uint8_t* __restrict tab, const int32_t* __restrict idx, uint8_t* __restrict d, int64_t w) {
  int64_t x = 0;
  if constexpr (std::endian::native == std::endian::little) {
    for (; x + 8 <= w; x += 8) {
      uint64_t word = 0;
      for (int j = 0; j < 8; ++j) word |= uint64_t(tab[idx[x + j]]) << (8 * j);
      std::memcpy(d + x, &word, sizeof(word));
    }
  }
  for (; x < w; ++x) d[x] = tab[idx[x]];
}

template <typename scalar_t>
void overlay_cpu_kernel(const at::Tensor& images, const at::Tensor& scaled_rows, const uint8_t* table,
                        at::Tensor& out, const OverlayGeometry& g) {
  const scalar_t* img = images.const_data_ptr<scalar_t>();
  const float* rows = scaled_rows.const_data_ptr<float>();
  uint8_t* o_ptr = out.mutable_data_ptr<uint8_t>();
  const int64_t sn = images.stride(0), sc = images.stride(1), sy = images.stride(2), sx = images.stride(3);
  const int64_t h = g.map.h, ho = g.out.h, wo = g.out.w;
  const std::vector<math::LinearTap<float>> ty = cpu::taps_of<float>(h, ho);
  const int64_t grain = std::max<int64_t>(1, kOutputBytesPerTask / (3 * wo));

  at::parallel_for(0, g.n * ho, grain, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> off(static_cast<size_t>(wo));
    std::vector<int32_t> idx(static_cast<size_t>(wo));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / ho;
      const int64_t y = r % ho;
      const math::LinearTap<float>& t = ty[static_cast<size_t>(y)];
      const float* __restrict r0 = rows + (n * h + t.i0) * wo;
      const float* __restrict r1 = rows + (n * h + t.i1) * wo;
      int32_t* __restrict o = off.data();
      for (int64_t x = 0; x < wo; ++x) o[x] = math::lut_row_offset(math::lerp2(r0[x], r1[x], t.l0, t.l1));
      for (int64_t c = 0; c < 3; ++c) {
        const scalar_t* src = img + n * sn + c * sc + y * sy;
        if (sx == 1) {
          row_indices<scalar_t, true>(src, sx, o, idx.data(), wo);
        } else {
          row_indices<scalar_t, false>(src, sx, o, idx.data(), wo);
        }
        lookup_row(table + c * math::kBlendTableCols, idx.data(), o_ptr + ((n * 3 + c) * ho + y) * wo, wo);
      }
    }
  });
}

// (N, h, W) fp32: the byte_scale'd maps resized along W (pass 1). cams are fp32 contiguous (N, h, w).
at::Tensor scaled_rows_cpu(const at::Tensor& cams, const OverlayGeometry& g) {
  at::Tensor rows = at::empty({g.n, g.map.h, g.out.w}, cams.options());
  const std::vector<math::LinearTap<float>> tx = cpu::taps_of<float>(g.map.w, g.out.w);
  const float* m_ptr = cams.const_data_ptr<float>();
  float* r_ptr = rows.mutable_data_ptr<float>();
  const int64_t s_map = g.map.numel();
  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scaled(static_cast<size_t>(s_map));
    for (int64_t n = begin; n < end; ++n) {
      const float* m = m_ptr + n * s_map;
      for (int64_t s = 0; s < s_map; ++s) scaled[static_cast<size_t>(s)] = math::byte_scale<float>(m[s]);
      cpu::resize_rows<float>(scaled.data(), r_ptr + n * g.map.h * g.out.w, g.map, g.out.w, tx.data());
    }
  });
  return rows;
}

at::Tensor overlay_cpu(const at::Tensor& images, const at::Tensor& cams, const at::Tensor& table) {
  check_device(images, c10::DeviceType::CPU, "images");
  const OverlayGeometry g = overlay_geometry(images, cams, table);
  at::Tensor out = at::empty({g.n, 3, g.out.h, g.out.w}, images.options().dtype(at::kByte));
  if (out.numel() == 0) return out;
  // The reference converts the maps with cams.float() first (fp64 rounds to fp32 here, fp16/bf16 are exact).
  const at::Tensor rows = scaled_rows_cpu(cams.to(at::kFloat).contiguous(), g);
  const at::Tensor tab = table.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, images.scalar_type(), "pycam_fast::overlay_cpu",
                                  [&] { overlay_cpu_kernel<scalar_t>(images, rows, tab.const_data_ptr<uint8_t>(), out, g); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pycam_fast, CPU, m) {
  m.impl("overlay", &overlay_cpu);
}

}  // namespace pycam_fast
