// Non-negative matrix factorisation v ~ w @ h (Frobenius loss) by cyclic coordinate descent, on CPU: the whole
// iteration loop in one op. Per iteration, the rows of w^T, then the rows of h, are updated one component t at a
// time (HALS: every element of a component row in one vectorised pass):
//   grad = gram[t] @ rows - prod[t],   rows[t] = max(rows[t] - grad / gram[t, t], 0)
// with gram = other @ other^T (k, k) and prod = other @ target (k, p) from two BLAS products per half-iteration.
// The stopping rule is scikit-learn's: the summed projected gradient |pg| of an iteration, relative to the first
// iteration's, at most tol. Each element's gradient adds gram[t, r] * rows[r] in r order, the order of
// scikit-learn's per-element loop, so started from scikit-learn's init the factors agree to float rounding (of
// the BLAS products) and the iteration counts match. The Python reference (pycam_fast/ops/reference.py) is the
// same algorithm in batched torch ops.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../op_utils.h"

namespace pycam_fast {
namespace {

void check_nmf_args(const at::Tensor& v, const at::Tensor& w, const at::Tensor& h, int64_t max_iter) {
  TORCH_CHECK(v.dim() == 3 && w.dim() == 3 && h.dim() == 3, "pycam_fast::nmf: v, w and h must be (B, m, n), (B, m, k), ",
              "(B, k, n); got ", shape(v.sizes()), ", ", shape(w.sizes()), ", ", shape(h.sizes()));
  TORCH_CHECK(w.size(0) == v.size(0) && h.size(0) == v.size(0) && w.size(1) == v.size(1) && h.size(2) == v.size(2) &&
                  w.size(2) == h.size(1),
              "pycam_fast::nmf: w must be (B, m, k) and h (B, k, n) for v (B, m, n); got v ", shape(v.sizes()), ", w ",
              shape(w.sizes()), ", h ", shape(h.sizes()));
  TORCH_CHECK(w.scalar_type() == v.scalar_type() && h.scalar_type() == v.scalar_type(),
              "pycam_fast::nmf: v, w and h must have one dtype");
  check_same_device(v, w, "v", "w");
  check_same_device(v, h, "v", "h");
  TORCH_CHECK(max_iter >= 1, "pycam_fast::nmf: max_iter must be >= 1, got ", num(max_iter));
}

// One cyclic pass over the k rows (k, p) of `rows`; returns the summed |projected gradient| (before each update).
template <typename scalar_t>
scalar_t cd_pass(scalar_t* __restrict rows, const scalar_t* __restrict gram, const scalar_t* __restrict prod,
                 int64_t k, int64_t p, scalar_t* __restrict grad) {
  scalar_t violation = 0;
  for (int64_t t = 0; t < k; ++t) {
    scalar_t* __restrict row = rows + t * p;
    const scalar_t* __restrict prod_t = prod + t * p;
    for (int64_t i = 0; i < p; ++i) grad[i] = -prod_t[i];
    for (int64_t r = 0; r < k; ++r) {
      const scalar_t c = gram[t * k + r];
      const scalar_t* __restrict other = rows + r * p;
      for (int64_t i = 0; i < p; ++i) grad[i] += c * other[i];
    }
    // sequential sum: the stopping rule compares it with the first iteration's, so keep one rounding order
    for (int64_t i = 0; i < p; ++i) {
      const scalar_t pg = row[i] == 0 ? (grad[i] < 0 ? grad[i] : scalar_t(0)) : grad[i];
      violation += pg < 0 ? -pg : pg;
    }
    const scalar_t hess = gram[t * k + t];
    if (hess != 0) {
      for (int64_t i = 0; i < p; ++i) {
        const scalar_t next = row[i] - grad[i] / hess;
        row[i] = next > 0 ? next : scalar_t(0);
      }
    }
  }
  return violation;
}

// Solves one matrix in place: wt (k, m) = w^T, h (k, n), for v (m, n). Returns the iterations run.
template <typename scalar_t>
int64_t solve_one(const at::Tensor& v, at::Tensor& wt, at::Tensor& h, int64_t max_iter, double tol) {
  const int64_t k = wt.size(0);
  const int64_t m = wt.size(1);
  const int64_t n = h.size(1);
  at::Tensor gram = at::empty({k, k}, v.options());
  at::Tensor prod_w = at::empty({k, m}, v.options());
  at::Tensor prod_h = at::empty({k, n}, v.options());
  std::vector<scalar_t> grad(static_cast<size_t>(std::max(m, n)));
  const at::Tensor vt = v.t();
  double first = 0;
  int64_t iteration = 1;
  for (; iteration <= max_iter; ++iteration) {
    at::mm_out(gram, h, h.t());
    at::mm_out(prod_w, h, vt);
    double violation = cd_pass<scalar_t>(wt.mutable_data_ptr<scalar_t>(), gram.const_data_ptr<scalar_t>(),
                                         prod_w.const_data_ptr<scalar_t>(), k, m, grad.data());
    at::mm_out(gram, wt, wt.t());
    at::mm_out(prod_h, wt, v);
    violation += cd_pass<scalar_t>(h.mutable_data_ptr<scalar_t>(), gram.const_data_ptr<scalar_t>(),
                                   prod_h.const_data_ptr<scalar_t>(), k, n, grad.data());
    if (iteration == 1) first = violation;
    if (first == 0 || violation / first <= tol) break;
  }
  return std::min(iteration, max_iter);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nmf_cpu(const at::Tensor& v, const at::Tensor& w, const at::Tensor& h,
                                                       int64_t max_iter, double tol) {
  check_device(v, c10::DeviceType::CPU, "v");
  check_nmf_args(v, w, h, max_iter);
  const at::Tensor target = v.contiguous();
  // copies (never the caller's tensors): (B, k, m) = w^T, so that a component's row is contiguous, and (B, k, n)
  at::Tensor wt = w.transpose(1, 2).clone(at::MemoryFormat::Contiguous);
  at::Tensor rows_h = h.clone(at::MemoryFormat::Contiguous);
  at::Tensor iterations = at::empty({v.size(0)}, v.options().dtype(at::kLong));
  int64_t* iters = iterations.mutable_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "pycam_fast::nmf_cpu", [&] {
    at::parallel_for(0, v.size(0), 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        at::Tensor wt_b = wt[b];
        at::Tensor h_b = rows_h[b];
        iters[b] = solve_one<scalar_t>(target[b], wt_b, h_b, max_iter, tol);
      }
    });
  });
  return {wt.transpose(1, 2).contiguous(), rows_h, iterations};
}

}  // namespace

TORCH_LIBRARY_IMPL(pycam_fast, CPU, m) {
  m.impl("nmf", &nmf_cpu);
}

}  // namespace pycam_fast
