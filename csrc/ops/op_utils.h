// Host-side argument checks and geometry shared by the CPU and CUDA implementations (one place for the shape
// rules, so both backends reject the same inputs with the same messages).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <c10/util/OptionalArrayRef.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernel_math.h"

namespace pycam_fast {

// Numbers and shapes in error messages are formatted with std::to_string, not iostreams: on one deployment
// (torch 2.11 + gcc 13, the H100 image) an extension raising a message with an ostream-formatted integer crashed
// (SIGSEGV) instead of raising, while messages of strings only raised fine.
inline std::string num(int64_t v) { return std::to_string(v); }

inline std::string shape(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// 1-, 2- and 3-D spatial shapes are all handled as (D, H, W): missing leading dims are size 1, and a size-1 dim
// resized to size 1 is an identity tap, so one code path covers linear, bilinear and trilinear.
struct Spatial3 {
  int64_t d = 1;
  int64_t h = 1;
  int64_t w = 1;
  int64_t numel() const { return d * h * w; }
};

inline Spatial3 to_spatial3(c10::IntArrayRef s) {
  TORCH_CHECK(s.size() >= 1 && s.size() <= 3, "pycam_fast: CAMs need 1, 2 or 3 spatial dims, got ", num(s.size()));
  Spatial3 out;
  int64_t* dims[3] = {&out.d, &out.h, &out.w};
  for (size_t i = 0; i < s.size(); ++i) {
    TORCH_CHECK(s[i] > 0, "pycam_fast: spatial sizes must be positive, got ", shape(s));
    *dims[3 - s.size() + i] = s[i];
  }
  return out;
}

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "pycam_fast: ", name,
              " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* an, const char* bn) {
  TORCH_CHECK(a.device() == b.device(), "pycam_fast: ", an, " is on ", a.device(), " but ", bn, " is on ",
              b.device());
}

inline void check_device(const at::Tensor& t, c10::DeviceType type, const char* name) {
  TORCH_CHECK(t.device().type() == type, "pycam_fast: ", name, " must be a ", c10::DeviceTypeName(type),
              " tensor for this kernel, got one on ", t.device());
}

// Validated geometry of a cam_step call.
struct CamStepGeometry {
  int64_t n = 0;
  int64_t c = 0;
  Spatial3 in;
  Spatial3 out;
  std::vector<int64_t> out_sizes;  // (N, *S_out)
  bool full_weights = false;       // LayerCAM (N, C, *S) weights
  int64_t weight_batch_stride = 0;  // 0 when (1, C) weights broadcast over the batch
};

inline CamStepGeometry cam_step_geometry(const at::Tensor& weights, const at::Tensor& activations,
                                         at::OptionalIntArrayRef output_size) {
  check_float(weights, "weights");
  check_float(activations, "activations");
  TORCH_CHECK(weights.scalar_type() == activations.scalar_type(),
              "pycam_fast::cam_step: weights and activations must share a dtype (the Python wrapper promotes), got ",
              weights.scalar_type(), " and ", activations.scalar_type());
  check_same_device(weights, activations, "weights", "activations");
  TORCH_CHECK(activations.dim() >= 3 && activations.dim() <= 5,
              "pycam_fast::cam_step: activations must be (N, C, *S) with 1-3 spatial dims, got ", shape(activations.sizes()));
  CamStepGeometry g;
  g.n = activations.size(0);
  g.c = activations.size(1);
  const auto spatial = activations.sizes().slice(2);
  g.in = to_spatial3(spatial);
  if (weights.dim() == 2) {
    TORCH_CHECK((weights.size(0) == g.n || weights.size(0) == 1) && weights.size(1) == g.c,
                "pycam_fast::cam_step: weights must be (N, C) or (1, C) for activations ", shape(activations.sizes()),
                ", got ", shape(weights.sizes()));
    g.weight_batch_stride = weights.size(0) == 1 ? 0 : g.c;
  } else {
    TORCH_CHECK(weights.sizes() == activations.sizes(),
                "pycam_fast::cam_step: full-shape weights must match activations ", shape(activations.sizes()), ", got ",
                shape(weights.sizes()));
    g.full_weights = true;
  }
  g.out_sizes = {g.n};
  if (output_size.has_value()) {
    TORCH_CHECK(output_size->size() == spatial.size(), "pycam_fast::cam_step: output_size ", shape(*output_size),
                " must have ", num(spatial.size()), " dims");
    g.out = to_spatial3(*output_size);
    g.out_sizes.insert(g.out_sizes.end(), output_size->begin(), output_size->end());
  } else {
    g.out = g.in;
    g.out_sizes.insert(g.out_sizes.end(), spatial.begin(), spatial.end());
  }
  return g;
}

// Validated (grads, activations) pair of a weights op; activations may be undefined (GradCAM, TorchCAM++).
inline void check_weights_args(const at::Tensor& grads, const at::Tensor* activations, const char* op) {
  check_float(grads, "grads");
  TORCH_CHECK(grads.dim() >= 3, "pycam_fast::", op, ": grads must be (N, C, *S), got ", shape(grads.sizes()));
  if (activations != nullptr) {
    check_float(*activations, "activations");
    TORCH_CHECK(activations->sizes() == grads.sizes(), "pycam_fast::", op, ": activations ", shape(activations->sizes()),
                " must match grads ", shape(grads.sizes()));
    TORCH_CHECK(activations->scalar_type() == grads.scalar_type(), "pycam_fast::", op,
                ": grads and activations must share a dtype (the Python wrapper promotes)");
    check_same_device(grads, *activations, "grads", "activations");
  }
}

// Validated geometry of a masked_inputs call.
struct MaskedGeometry {
  int64_t n = 0;
  int64_t c = 0;
  int64_t pairs = 0;
  int64_t cin = 0;
  bool shared_input = false;  // (1, Cin, *S_in) inputs used by every sample
  Spatial3 feat;
  Spatial3 in;
  std::vector<int64_t> out_sizes;  // (stop - start, Cin, *S_in)
  at::ScalarType out_dtype = at::kFloat;
  c10::MemoryFormat format = c10::MemoryFormat::Contiguous;
};

inline MaskedGeometry masked_geometry(const at::Tensor& activations, const at::Tensor& inputs, int64_t start,
                                      int64_t stop, const std::optional<at::Tensor>& noise,
                                      std::optional<at::ScalarType> out_dtype, bool channels_last) {
  check_float(activations, "activations");
  check_float(inputs, "inputs");
  TORCH_CHECK(activations.scalar_type() == inputs.scalar_type(),
              "pycam_fast::masked_inputs: activations and inputs must share a dtype (the Python wrapper promotes)");
  check_same_device(activations, inputs, "activations", "inputs");
  TORCH_CHECK(activations.dim() >= 3 && activations.dim() <= 5,
              "pycam_fast::masked_inputs: activations must be (N, C, *S) with 1-3 spatial dims, got ",
              shape(activations.sizes()));
  TORCH_CHECK(inputs.dim() == activations.dim(), "pycam_fast::masked_inputs: inputs ", shape(inputs.sizes()),
              " must have the spatial rank of activations ", shape(activations.sizes()));
  MaskedGeometry g;
  g.n = activations.size(0);
  g.c = activations.size(1);
  TORCH_CHECK(0 <= start && start <= stop && stop <= g.n * g.c, "pycam_fast::masked_inputs: need 0 <= start (",
              num(start), ") <= stop (", num(stop), ") <= N * C (", num(g.n * g.c), ")");
  g.pairs = stop - start;
  TORCH_CHECK(inputs.size(0) == 1 || inputs.size(0) == g.n, "pycam_fast::masked_inputs: inputs batch ",
              num(inputs.size(0)), " must be 1 or N = ", num(g.n));
  g.shared_input = inputs.size(0) == 1;
  g.cin = inputs.size(1);
  g.feat = to_spatial3(activations.sizes().slice(2));
  g.in = to_spatial3(inputs.sizes().slice(2));
  g.out_sizes = {g.pairs, g.cin};
  const auto s_in = inputs.sizes().slice(2);
  g.out_sizes.insert(g.out_sizes.end(), s_in.begin(), s_in.end());
  if (noise.has_value()) {
    std::vector<int64_t> expect = {g.pairs};
    expect.insert(expect.end(), s_in.begin(), s_in.end());
    TORCH_CHECK(noise->sizes() == c10::IntArrayRef(expect), "pycam_fast::masked_inputs: noise must be ",
                shape(expect), ", got ", shape(noise->sizes()));
    TORCH_CHECK(noise->scalar_type() == inputs.scalar_type(),
                "pycam_fast::masked_inputs: noise must have the inputs' dtype (the Python wrapper casts)");
    check_same_device(noise.value(), inputs, "noise", "inputs");
  }
  g.out_dtype = out_dtype.value_or(inputs.scalar_type());
  TORCH_CHECK(at::isFloatingType(g.out_dtype), "pycam_fast::masked_inputs: out_dtype must be a float type, got ",
              g.out_dtype);
  if (channels_last && s_in.size() == 2) {
    g.format = c10::MemoryFormat::ChannelsLast;
  } else if (channels_last && s_in.size() == 3) {
    g.format = c10::MemoryFormat::ChannelsLast3d;
  }
  return g;
}

// Validated geometry of an overlay call: images (N, 3, H, W), cams (N, h, w) of any float dtype (the kernels convert
// them to fp32 like the reference), table (3, 65536) uint8.
struct OverlayGeometry {
  int64_t n = 0;
  Spatial3 map;  // (1, h, w)
  Spatial3 out;  // (1, H, W)
};

inline OverlayGeometry overlay_geometry(const at::Tensor& images, const at::Tensor& cams, const at::Tensor& table) {
  const auto dt = images.scalar_type();
  TORCH_CHECK(dt == at::kByte || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat || dt == at::kDouble,
              "pycam_fast::overlay: images must be uint8 or float16, bfloat16, float32, float64 (in [0, 1]), got ", dt);
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "pycam_fast::overlay: images must be (N, 3, H, W), got ",
              shape(images.sizes()));
  check_float(cams, "cams");
  TORCH_CHECK(cams.dim() == 3 && cams.size(0) == images.size(0),
              "pycam_fast::overlay: cams must be (N, h, w) with N = ", num(images.size(0)), " (the images' batch), got ",
              shape(cams.sizes()));
  TORCH_CHECK(cams.size(1) > 0 && cams.size(2) > 0, "pycam_fast::overlay: cams must have positive h and w, got ",
              shape(cams.sizes()));
  TORCH_CHECK(table.scalar_type() == at::kByte && table.dim() == 2 && table.size(0) == 3 &&
                  table.size(1) == math::kBlendTableCols,
              "pycam_fast::overlay: table must be a (3, 65536) uint8 blend table, got ", table.scalar_type(), " ",
              shape(table.sizes()));
  check_same_device(cams, images, "cams", "images");
  check_same_device(table, images, "table", "images");
  OverlayGeometry g;
  g.n = images.size(0);
  g.map = Spatial3{1, cams.size(1), cams.size(2)};
  g.out = Spatial3{1, images.size(2), images.size(3)};
  return g;
}

// Calls f(static_cast<out_t*>(nullptr)) with out_t the C++ type of `dtype` (a second dispatch level for the
// output dtype of masked_inputs; AT_DISPATCH cannot nest because both levels bind `scalar_t`).
template <typename F>
void dispatch_out_dtype(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat:
      f(static_cast<float*>(nullptr));
      break;
    case at::kDouble:
      f(static_cast<double*>(nullptr));
      break;
    case at::kHalf:
      f(static_cast<c10::Half*>(nullptr));
      break;
    case at::kBFloat16:
      f(static_cast<c10::BFloat16*>(nullptr));
      break;
    default:
      TORCH_CHECK(false, "pycam_fast: unsupported output dtype ", dtype);
  }
}

}  // namespace pycam_fast
