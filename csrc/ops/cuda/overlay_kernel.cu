// Fused overlay on CUDA: one thread per output pixel (n, y, x). It resizes the byte_scale'd map at (y, x) on the
// fly (4 reads of a tiny, cached map; interp3 blends W then H like the CPU path) and, for each channel, reads the
// pixel, looks the output up in the (3, 65536) blend table and stores one byte. Consecutive threads take
// consecutive x, so image loads and uint8 stores of a warp are contiguous (coalesced) in every channel; the table
// lookups of a smooth heatmap stay within a few 256-byte rows (L1/L2 hits). All arithmetic is the shared
// kernel_math.h code with explicit roundings, so the result equals the CPU kernel and the torch reference.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include "../op_utils.h"
#include "cuda_helpers.cuh"
#include "ops_cuda.h"

namespace pycam_fast {

namespace {

struct ImageStrides {
  int64_t n, c, y, x;
};

template <typename scalar_t>
__global__ void overlay_kernel(const scalar_t* __restrict__ images, ImageStrides s, const float* __restrict__ cams,
                               const uint8_t* __restrict__ table, uint8_t* __restrict__ out, int64_t n_batch,
                               int64_t h, int64_t w, int64_t ho, int64_t wo) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane = ho * wo;
  const int64_t total = n_batch * plane;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t x = i % wo;
    const int64_t y = (i / wo) % ho;
    const int64_t n = i / plane;
    const float* m = cams + n * h * w;
    const auto get = [m](int64_t j) { return math::byte_scale<float>(__ldg(m + j)); };
    const int32_t row = math::lut_row_offset(math::interp3<float>(get, 1, h, w, 1, ho, wo, 0, y, x));
    const scalar_t* px = images + n * s.n + y * s.y + x * s.x;
    uint8_t* o = out + n * 3 * plane + y * wo + x;
    for (int64_t c = 0; c < 3; ++c) {
      const int32_t v = math::pixel_byte<scalar_t, acc_t>(px[c * s.c]);
      o[c * plane] = __ldg(table + c * math::kBlendTableCols + row + v);
    }
  }
}

}  // namespace

at::Tensor overlay_cuda(const at::Tensor& images, const at::Tensor& cams, const at::Tensor& table) {
  check_device(images, c10::DeviceType::CUDA, "images");
  const OverlayGeometry g = overlay_geometry(images, cams, table);
  const c10::cuda::CUDAGuard guard(images.device());
  at::Tensor out = at::empty({g.n, 3, g.out.h, g.out.w}, images.options().dtype(at::kByte));
  if (out.numel() == 0) return out;
  // The reference converts the maps with cams.float() first (fp64 rounds to fp32 here, fp16/bf16 are exact).
  const at::Tensor m = cams.to(at::kFloat).contiguous();
  const at::Tensor tab = table.contiguous();
  const ImageStrides s{images.stride(0), images.stride(1), images.stride(2), images.stride(3)};
  const int64_t total = g.n * g.out.h * g.out.w;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, images.scalar_type(), "pycam_fast::overlay_cuda",
                                  [&] {
                                    overlay_kernel<scalar_t><<<cuda::grid_for(total), cuda::kBlock, 0, stream>>>(
                                        images.const_data_ptr<scalar_t>(), s, m.const_data_ptr<float>(),
                                        tab.const_data_ptr<uint8_t>(), out.mutable_data_ptr<uint8_t>(), g.n,
                                        g.map.h, g.map.w, g.out.h, g.out.w);
                                    C10_CUDA_KERNEL_LAUNCH_CHECK();
                                  });
  return out;
}

}  // namespace pycam_fast
