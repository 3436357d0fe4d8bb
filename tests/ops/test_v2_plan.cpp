// CPU check of csrc/ops/cuda/v2_plan.h (the host-side part of the v2 CUDA kernels): the fast divider, the kernel
// switch parser and the launch plans. Built and run by tests/ops/test_cuda_v2.py::test_host_plan_cpp with
// `g++ -std=c++17 -I csrc` (no torch, no CUDA). Prints "ok" and exits 0, or names the first failed check.
#include <cstdio>
#include <cstdlib>
#include <random>

#include "ops/cuda/v2_plan.h"

using namespace pycam_fast::cuda_v2;

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::printf("FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                      \
    }                                                                \
  } while (0)

static int check_fastdiv() {
  std::mt19937 rng(0);
  std::uniform_int_distribution<uint32_t> any(0, (1u << 31) - 1);
  // every small divisor against small and extreme numerators, then random pairs
  for (uint32_t d = 1; d <= 5000; ++d) {
    const FastDiv f = make_fastdiv(d);
    for (uint32_t n = 0; n < 3 * d + 7; ++n) CHECK(fast_div(n, f) == n / d);
    for (uint32_t n : {(1u << 31) - 1, (1u << 31) - 2, (1u << 30), 50175u * d % (1u << 31)}) {
      CHECK(fast_div(n, f) == n / d);
    }
  }
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t d = 1 + any(rng) % ((1u << 31) - 1);
    const uint32_t n = any(rng);
    CHECK(fast_div(n, make_fastdiv(d)) == n / d);
  }
  for (uint32_t d : {1u, 2u, 3u, 7u, 224u, 50176u, (1u << 30) + 1, (1u << 31) - 1}) {
    const FastDiv f = make_fastdiv(d);
    for (int i = 0; i < 100000; ++i) {
      const uint32_t n = any(rng);
      CHECK(fast_div(n, f) == n / d);
    }
  }
  return 0;
}

static int check_switch() {
  CHECK(parse_kernels(nullptr) == kV1);
  CHECK(parse_kernels("") == kV1);
  CHECK(parse_kernels("v1") == kV1);
  CHECK(parse_kernels("1") == kV1);
  CHECK(parse_kernels("v2") == kV2);
  CHECK(parse_kernels("V2") == kV2);
  CHECK(parse_kernels("v3") == kInvalid);
  CHECK(parse_kernels("v2 ") == kInvalid);
  unsetenv(kEnvVar);
  CHECK(selected_kernels() == kV1);  // the default
  setenv(kEnvVar, "v2", 1);
  CHECK(selected_kernels() == kV2);  // read at every call
  setenv(kEnvVar, "bogus", 1);
  CHECK(selected_kernels() == kInvalid);
  kernels_override().store(kV1);
  CHECK(selected_kernels() == kV1);  // the setter wins over the environment
  kernels_override().store(kUnset);
  unsetenv(kEnvVar);
  CHECK(selected_kernels() == kV1);
  return 0;
}

static int check_cam_plan() {
  const int64_t in7[3] = {1, 7, 7};
  const int64_t out224[3] = {1, 224, 224};
  // ResNet-50 layer4 -> 224x224, 64 samples, 132 SMs (H100)
  CamStepPlan p = plan_cam_step(64, 2048, in7, out224, 14 * 14, 4, 24, 132);
  CHECK(p.ok && p.resize);
  CHECK(p.span == 49 && p.lanes == 5);
  CHECK(p.splits >= 1 && p.splits <= kCamMaxSplits && p.splits * p.c_per_split >= 2048);
  CHECK((p.splits - 1) * p.c_per_split < 2048);  // no empty split
  CHECK(p.splits * 64 >= 4 * 132 || p.splits == kCamMaxSplits);
  CHECK(p.tile_elems == kThreads * kCamPerThread && p.tiles * p.tile_elems >= 224 * 224);
  CHECK((p.tiles - 1) * p.tile_elems < 224 * 224);
  CHECK(p.smem_bytes == 208 + 449 * (24 + 4));  // map padded to 16 bytes, then taps + candidates of 1+224+224
  // one sample, few channels: splits never leave a lane with < 4 channels (except a single split)
  p = plan_cam_step(1, 17, in7, out224, 196, 4, 24, 132);
  CHECK(p.ok && p.splits == 1 && p.c_per_split == 17);
  // identity (no resize): no taps in shared memory, any candidate count
  const int64_t in56[3] = {1, 56, 56};
  p = plan_cam_step(8, 256, in56, in56, 56 * 56, 4, 24, 132);
  CHECK(p.ok && !p.resize && p.span == kThreads && p.lanes == 1 && p.smem_bytes == 56 * 56 * 4);
  // downsampling with too many candidates, or a feature map too large for shared memory: v1
  const int64_t big[3] = {1, 300, 300};
  const int64_t out299[3] = {1, 299, 299};
  CHECK(!plan_cam_step(2, 3, big, out299, 299 * 299, 4, 24, 132).ok);
  const int64_t in3d[3] = {32, 32, 32};
  const int64_t out3d[3] = {64, 64, 64};
  CHECK(!plan_cam_step(2, 3, in3d, out3d, 32 * 32 * 32 * 8, 4, 24, 132).ok);
  // empty inputs are left to v1
  CHECK(!plan_cam_step(0, 3, in7, out224, 196, 4, 24, 132).ok);
  CHECK(!plan_cam_step(2, 0, in7, out224, 196, 4, 24, 132).ok);
  return 0;
}

static int check_masked_plan() {
  const int64_t f7[3] = {1, 7, 7};
  const int64_t in224[3] = {1, 224, 224};
  const MaskedPlan p = plan_masked_inputs(512, f7, in224, 4, 24);
  CHECK(p.ok && p.tile_elems == kThreads * kMaskPerThread);
  CHECK(p.tiles == (224 * 224 + p.tile_elems - 1) / p.tile_elems);
  CHECK(p.smem_bytes == 208 + 449 * 24);  // map padded to 16 bytes, then the taps of 1+224+224
  const int64_t fbig[3] = {1, 128, 128};
  CHECK(!plan_masked_inputs(4, fbig, in224, 4, 24).ok);  // 64 KB map: v1
  CHECK(!plan_masked_inputs(0, f7, in224, 4, 24).ok);
  return 0;
}

static int check_weights_plan() {
  WeightsPlan p = plan_weights(64 * 2048, 49, 2, 4, 132);
  CHECK(p.ok && p.rows_per_block >= 1 && p.blocks * p.rows_per_block >= 64 * 2048);
  CHECK((p.blocks - 1) * p.rows_per_block < 64 * 2048);
  CHECK(p.smem_bytes <= kMaxSmem && p.smem_bytes >= static_cast<size_t>(p.rows_per_block * 49 * 4 * 2));
  CHECK(p.blocks >= 2 * 132);
  p = plan_weights(512, 49, 1, 4, 132);  // few rows: spread over the SMs
  CHECK(p.ok && p.rows_per_block == 2 && p.blocks == 256);
  p = plan_weights(3, 7, 1, 2, 132);
  CHECK(p.ok && p.rows_per_block == 1 && p.blocks == 3);
  CHECK(!plan_weights(4, 8000, 2, 4, 132).ok);  // a row pair over 48 KB: v1
  CHECK(!plan_weights(0, 49, 1, 4, 132).ok);
  return 0;
}

int main() {
  if (check_fastdiv() || check_switch() || check_cam_plan() || check_masked_plan() || check_weights_plan()) return 1;
  std::printf("ok\n");
  return 0;
}
