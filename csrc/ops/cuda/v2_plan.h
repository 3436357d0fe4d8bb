// Host-side pieces of the v2 ("bandwidth") CUDA kernels that need no GPU and no torch: the runtime switch between
// the verified v1 kernels and v2, launch plans (tile geometry, shared-memory budgets, the envelope outside which v2
// hands the call back to v1) and a 32-bit fast divider. Plain C++ (plus __host__ __device__ under nvcc), so
// csrc/ops/cuda/test_v2_plan.cpp checks it on a CPU with a bare `g++ -std=c++17`.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__CUDACC__)
#define PYCAM_V2_HD __host__ __device__ __forceinline__
#else
#define PYCAM_V2_HD inline
#endif

namespace pycam_fast {
namespace cuda_v2 {

// ---------------------------------------------------------------------------------------------------------------
// Runtime switch. v1 (the default) are the kernels verified on an H100; v2 are the rewrites. The setter
// (pycam_fast._C.set_cuda_kernels) wins over the environment variable, which is read at every dispatch, so a test
// or a benchmark can flip it in-process (os.environ writes go through putenv).
constexpr const char* kEnvVar = "PYCAM_FAST_CUDA_KERNELS";
constexpr int kUnset = 0;
constexpr int kV1 = 1;
constexpr int kV2 = 2;
constexpr int kInvalid = -1;

// "v1"/"1" -> kV1, "v2"/"2" -> kV2, null or "" -> kV1 (the default), anything else -> kInvalid.
inline int parse_kernels(const char* s) {
  if (s == nullptr || s[0] == '\0') return kV1;
  if (std::strcmp(s, "v1") == 0 || std::strcmp(s, "V1") == 0 || std::strcmp(s, "1") == 0) return kV1;
  if (std::strcmp(s, "v2") == 0 || std::strcmp(s, "V2") == 0 || std::strcmp(s, "2") == 0) return kV2;
  return kInvalid;
}

// Process-wide override set by set_cuda_kernels (kUnset: follow the environment). An inline function's static is
// one object across all translation units of the extension.
inline std::atomic<int>& kernels_override() {
  static std::atomic<int> value{kUnset};
  return value;
}

// The kernels a CUDA op dispatches to now: kV1, kV2, or kInvalid (a bad environment value; the caller raises).
inline int selected_kernels() {
  const int o = kernels_override().load(std::memory_order_relaxed);
  return o != kUnset ? o : parse_kernels(std::getenv(kEnvVar));
}

// ---------------------------------------------------------------------------------------------------------------
// Fast unsigned division by a runtime constant (Granlund-Montgomery round-up variant): q = (umulhi(n, m) + n) >> s,
// exact for 1 <= d < 2^31 and 0 <= n < 2^31. Replaces the 64-bit div/mod of a flat index per output element.
struct FastDiv {
  uint32_t d = 1;
  uint32_t m = 1;
  uint32_t s = 0;
};

inline FastDiv make_fastdiv(uint32_t d) {
  FastDiv f;
  f.d = d;
  uint32_t s = 0;
  while ((uint64_t(1) << s) < d) ++s;
  f.s = s;
  f.m = static_cast<uint32_t>((((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d) + 1);
  return f;
}

PYCAM_V2_HD uint32_t umulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((uint64_t(a) * uint64_t(b)) >> 32);
#endif
}

PYCAM_V2_HD uint32_t fast_div(uint32_t n, const FastDiv& f) { return (umulhi32(n, f.m) + n) >> f.s; }

// ---------------------------------------------------------------------------------------------------------------
// Launch plans. Every v2 kernel runs 256-thread blocks; a plan with ok == false means "outside the v2 envelope":
// the v2 entry point returns nothing and the v1 kernel runs (correct for every shape, slower).
constexpr int kThreads = 256;
constexpr size_t kMaxSmem = 48 * 1024;  // dynamic shared memory without the opt-in attribute
constexpr int64_t kMaxIndex = (int64_t(1) << 31) - 1;

// What every launch plan says: whether the shape is inside the kernel's envelope, and the dynamic shared memory of a
// block.
struct Plan {
  bool ok = false;
  size_t smem_bytes = 0;
};

// smem_bytes: kernel 2's
struct CamStepPlan : Plan {
  // kernel 1 (channel partial sums), one block per (split, n): `lanes` channel rows of `span` positions per sweep
  int64_t splits = 1;
  int64_t c_per_split = 0;
  int span = 1;
  int lanes = 1;
  // kernel 2 (fold + min/max + resize + normalise + write), one block per (tile, n)
  int64_t tiles = 1;
  int tile_elems = 0;
  bool resize = false;
};

constexpr int kCamPerThread = 8;           // output values per thread of kernel 2 (tile = 2048 values)
constexpr int64_t kCamMaxSplits = 16;      // kernel 2 blocks fold <= 16 partial maps
constexpr int64_t kCamMaxCandidates = 4096;  // extreme candidates each block of kernel 2 evaluates (resize only)

// in = (din, hin, win), out = (dout, hout, wout); candidates = number of extreme candidates of the resized map
// (product over dims of math::extreme_candidate counts); acc_bytes = sizeof(acc_t); tap_bytes =
// sizeof(math::LinearTap<acc_t>); sm_count = multiprocessors of the device.
inline CamStepPlan plan_cam_step(int64_t n, int64_t c, const int64_t in[3], const int64_t out[3], int64_t candidates,
                                 size_t acc_bytes, size_t tap_bytes, int sm_count) {
  CamStepPlan p;
  const int64_t s_in = in[0] * in[1] * in[2];
  const int64_t s_out = out[0] * out[1] * out[2];
  if (n <= 0 || c <= 0 || s_in <= 0 || s_out <= 0) return p;
  p.resize = in[0] != out[0] || in[1] != out[1] || in[2] != out[2];
  if (s_in > kMaxIndex || s_out > kMaxIndex || n * s_out > (int64_t(1) << 62)) return p;
  if (p.resize && candidates > kCamMaxCandidates) return p;
  // kernel 1
  p.span = static_cast<int>(std::min<int64_t>(s_in, kThreads));
  p.lanes = kThreads / p.span;
  const int64_t target_blocks = 4 * static_cast<int64_t>(std::max(sm_count, 1));
  int64_t splits = (target_blocks + n - 1) / n;
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, c / (4 * p.lanes)));  // >= 4 channels per lane
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, kCamMaxSplits));
  p.c_per_split = (c + splits - 1) / splits;
  p.splits = (c + p.c_per_split - 1) / p.c_per_split;
  if (p.splits * n > kMaxIndex) return p;
  // kernel 2
  p.tile_elems = kThreads * kCamPerThread;
  p.tiles = (s_out + p.tile_elems - 1) / p.tile_elems;
  if (p.tiles * n > kMaxIndex) return p;
  size_t smem = static_cast<size_t>(s_in) * acc_bytes;
  if (p.resize) {
    const size_t coords = static_cast<size_t>(out[0] + out[1] + out[2]);
    smem = (smem + 15) / 16 * 16 + coords * tap_bytes + coords * sizeof(int32_t);
  }
  p.smem_bytes = smem;
  p.ok = smem <= kMaxSmem;
  return p;
}

struct MaskedPlan : Plan {
  int64_t tiles = 1;
  int tile_elems = 0;
};

// output pixels per thread (x Cin stores each): 2048-pixel tiles amortise the per-block prologue
constexpr int kMaskPerThread = 8;

// feat = feature-map dims, in = input (= output) spatial dims, pairs = (sample, channel) pairs of the call.
inline MaskedPlan plan_masked_inputs(int64_t pairs, const int64_t feat[3], const int64_t in[3], size_t acc_bytes,
                                     size_t tap_bytes) {
  MaskedPlan p;
  const int64_t s_f = feat[0] * feat[1] * feat[2];
  const int64_t s_in = in[0] * in[1] * in[2];
  if (pairs <= 0 || s_f <= 0 || s_in <= 0 || s_f > kMaxIndex || s_in > kMaxIndex) return p;
  p.tile_elems = kThreads * kMaskPerThread;
  p.tiles = (s_in + p.tile_elems - 1) / p.tile_elems;
  if (p.tiles * pairs > kMaxIndex) return p;
  const size_t coords = static_cast<size_t>(in[0] + in[1] + in[2]);
  p.smem_bytes = (static_cast<size_t>(s_f) * acc_bytes + 15) / 16 * 16 + coords * tap_bytes;
  p.ok = p.smem_bytes <= kMaxSmem;
  return p;
}

struct WeightsPlan : Plan {
  int64_t rows_per_block = 1;
  int64_t blocks = 0;
};

constexpr size_t kWeightsStageBytes = 16 * 1024;  // staged bytes per block (all tensors) when rows are short

// rows = N * C rows of s values; tensors = 1 (grads) or 2 (grads + activations); elem_bytes = sizeof(scalar_t).
inline WeightsPlan plan_weights(int64_t rows, int64_t s, int tensors, size_t elem_bytes, int sm_count) {
  WeightsPlan p;
  if (rows <= 0 || s <= 0) return p;
  const size_t row_bytes = static_cast<size_t>(s) * elem_bytes * static_cast<size_t>(tensors);
  // one tensor's staged row range stays 16-byte aligned in shared memory: pad each tensor's region
  if (row_bytes + 16 * static_cast<size_t>(tensors) > kMaxSmem) return p;
  int64_t r = static_cast<int64_t>(std::max<size_t>(1, kWeightsStageBytes / row_bytes));
  r = std::min<int64_t>(r, 256);
  // keep >= 2 blocks per multiprocessor when there are enough rows
  const int64_t fill_blocks = 2 * static_cast<int64_t>(std::max(sm_count, 1));
  const int64_t per_block_for_fill = (rows + fill_blocks - 1) / fill_blocks;
  r = std::max<int64_t>(1, std::min<int64_t>(r, per_block_for_fill));
  p.rows_per_block = r;
  p.blocks = (rows + r - 1) / r;
  if (p.blocks > kMaxIndex) return p;
  const size_t region = (static_cast<size_t>(r * s) * elem_bytes + 15) / 16 * 16;
  p.smem_bytes = region * static_cast<size_t>(tensors);
  p.ok = p.smem_bytes <= kMaxSmem;
  return p;
}

}  // namespace cuda_v2
}  // namespace pycam_fast
