// Operator schemas of the pycam_fast library (the dispatcher contract; CPU and CUDA kernels register against these
// in cpu/ and cuda/, fake/meta implementations are the references of pycam_fast/ops/reference.py, registered in
// pycam_fast/ops/compiled.py for torch.compile).
#include <torch/library.h>

TORCH_LIBRARY(pycam_fast, m) {
  // Fused CAM step: nansum_c(w * A) -> optional (bi/tri)linear resize -> optional ReLU -> optional per-sample
  // min-max. weights: (N, C), (1, C) or (N, C, *S); activations: (N, C, *S), same dtype. Returns (N, *S_out).
  m.def(
      "cam_step(Tensor weights, Tensor activations, bool relu=True, int[]? output_size=None, bool normalize=True, "
      "float eps=1e-8) -> Tensor");
  // Gradient weights, (N, C, *S) -> (N, C).
  m.def("gradcam_weights(Tensor grads) -> Tensor");
  m.def("xgradcam_weights(Tensor grads, Tensor activations, float eps=1e-8) -> Tensor");
  m.def("gradcampp_weights(Tensor grads, Tensor activations, float eps=1e-8) -> Tensor");
  m.def("gradcampp_weights_torchcam(Tensor grads) -> Tensor");
  // Score-CAM family masked inputs for flattened (sample, channel) pairs [start, stop): (stop - start, Cin, *S_in).
  m.def(
      "masked_inputs(Tensor activations, Tensor inputs, int start, int stop, Tensor? noise=None, float scale=1.0, "
      "ScalarType? out_dtype=None, bool channels_last=False, float eps=1e-8) -> Tensor");
  // Fused overlay: images (N, 3, H, W) uint8 or float in [0, 1], cams (N, h, w) float, table (3, 65536) uint8 blend
  // table (entry [c, 256 k + v]: pixel value v blended with LUT colour k). Returns (N, 3, H, W) uint8.
  m.def("overlay(Tensor images, Tensor cams, Tensor table) -> Tensor");
  // Non-negative matrix factorisation v (B, m, n) ~ w (B, m, k) @ h (B, k, n) by cyclic coordinate descent from the
  // given start; returns the factors and the iterations run per matrix (B,). CPU only.
  m.def("nmf(Tensor v, Tensor w, Tensor h, int max_iter=200, float tol=1e-4) -> (Tensor, Tensor, Tensor)");
}
