// TORCH_LIBRARY_IMPL(pycam_fast, CUDA, m): the CUDA kernels (ops_cuda.h) of the ops declared in ../ops.cpp.
#include <torch/library.h>

#include "../weight_ops.h"
#include "ops_cuda.h"

namespace pycam_fast {

TORCH_LIBRARY_IMPL(pycam_fast, CUDA, m) {
  m.impl("cam_step", &cam_step_cuda);
  WeightOps<&weights_cuda>::impl(m);
  m.impl("masked_inputs", &masked_inputs_cuda);
  m.impl("overlay", &overlay_cuda);
}

}  // namespace pycam_fast
