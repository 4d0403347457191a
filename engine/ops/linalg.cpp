// matmul and friends. The batched product goes to the backend with its operands' own strides, so a
// transposed operand (a.t(), or the transposes in backward) is multiplied in place, not copied.
#include "engine/ops/linalg.hpp"

#include "engine/autograd.hpp"
#include "engine/profiler.hpp"
#include "engine/backend.hpp"
#include "engine/ops/elementwise.hpp"

namespace mg {
namespace {

// A matrix the GEMM can map directly: unit stride in one of its two dims and no zero stride.
Tensor gemm_ready(const Tensor& m) {
  const int64_t sr = m.stride(-2), sc = m.stride(-1);
  const bool mappable = (sc == 1 || sr == 1) && sr != 0 && sc != 0;
  return mappable ? m : m.contiguous();
}

// out[b] = a[b] @ b[b] for 3-d a [B, M, K], b [B, K, N] (B already equal), no autograd.
Tensor bmm_raw(const Tensor& a, const Tensor& b) {
  NoGradGuard no_grad;
  Tensor out = Tensor::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  backend_of(a).matmul(gemm_ready(a), gemm_ready(b), out);
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  MG_PROFILE("matmul");
  MG_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least 1 dim, got shapes ",
           shape_str(a.sizes()), " and ", shape_str(b.sizes()));
  MG_CHECK(a.dtype() == b.dtype(), "matmul: dtype mismatch, ", dtype_name(a.dtype()), " ",
           shape_str(a.sizes()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.sizes()));
  MG_CHECK(a.is_floating_point(), "matmul: expected floating-point tensors, got ", dtype_name(a.dtype()));
  MG_CHECK(a.device() == b.device(), "matmul: device mismatch, ", a.device().str(), " vs ", b.device().str());
  const int64_t K = a.size(-1);
  const int64_t Kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  MG_CHECK(K == Kb, "matmul: shapes ", shape_str(a.sizes()), " and ", shape_str(b.sizes()),
           " cannot be multiplied (", K, " vs ", Kb, ")");

  // Promote 1-d operands, broadcast batch dims, flatten batches.
  Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
  Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
  const int64_t M = a2.size(-2), N = b2.size(-1);
  Shape batch_a(a2.sizes().begin(), a2.sizes().end() - 2);
  Shape batch_b(b2.sizes().begin(), b2.sizes().end() - 2);
  const Shape batch = broadcast_shapes("matmul", batch_a, batch_b);
  const int64_t B = numel_of(batch);

  Shape out_shape = batch;
  if (a.dim() > 1) out_shape.push_back(M);
  if (b.dim() > 1) out_shape.push_back(N);

  Tensor out;
  {
    NoGradGuard no_grad;
    Shape ea = batch, eb = batch;
    ea.insert(ea.end(), {M, K});
    eb.insert(eb.end(), {K, N});
    // A 2-d operand against a batched one keeps its (possibly transposed) strides: the expand
    // adds a zero batch stride, which reshape folds without a copy.
    Tensor a3 = a2.expand(ea).reshape({B, M, K});
    Tensor b3 = b2.expand(eb).reshape({B, K, N});
    // Fold a [B, M, K] @ [K, N] product into one [B*M, K] @ [K, N] GEMM when a's rows allow.
    if (B > 1 && b3.stride(0) == 0 && batch_a == batch && a2.is_contiguous()) {
      a3 = a2.reshape({1, B * M, K});
      b3 = b2.dim() == 2 ? b2.unsqueeze(0) : b3.select(0, 0).unsqueeze(0);
    }
    out = bmm_raw(a3, b3).reshape(out_shape);
  }
  if (!any_requires_grad({&a, &b})) return out;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("matmul", out, {a, b}, [ga, gb, ad = a.detach(), bd = b.detach()](const TensorList& g) {
    // Restore the 1-d promotions on the gradient, then grad_a = g @ b^T, grad_b = a^T @ g,
    // summed over broadcast batch dims.
    Tensor a2 = ad.dim() == 1 ? ad.unsqueeze(0) : ad;
    Tensor b2 = bd.dim() == 1 ? bd.unsqueeze(1) : bd;
    Tensor g2 = g[0];
    if (bd.dim() == 1) g2 = g2.unsqueeze(-1);
    if (ad.dim() == 1) g2 = g2.unsqueeze(-2);
    Tensor grad_a, grad_b;
    if (ga) grad_a = sum_to(matmul(g2, b2.transpose(-1, -2)), a2.sizes()).reshape(ad.sizes());
    if (gb) {
      // A 2-d b stored transposed (Linear's weight.t()) gets its gradient in the same layout,
      // (g^T a)^T, as torch's mm_mat2_backward: the transpose's backward then hands the weight a
      // contiguous gradient, which becomes .grad without a copy.
      const bool b_transposed = bd.dim() == 2 && !bd.is_contiguous() && bd.t().is_contiguous();
      if (b2.dim() == 2 && (a2.dim() > 2 || b_transposed)) {
        // Batched a with a shared 2-d b: one GEMM over the flattened batch.
        Tensor af = a2.reshape({-1, a2.size(-1)});
        Tensor gf = g2.reshape({-1, g2.size(-1)});
        grad_b = b_transposed ? matmul(gf.t(), af).t() : matmul(af.t(), gf);
      } else {
        grad_b = sum_to(matmul(a2.transpose(-1, -2), g2), b2.sizes()).reshape(bd.sizes());
      }
    }
    return TensorList{grad_a, grad_b};
  });
}

Tensor mm(const Tensor& a, const Tensor& b) {
  MG_CHECK(a.dim() == 2 && b.dim() == 2, "mm: expected 2-d tensors, got shapes ", shape_str(a.sizes()),
           " and ", shape_str(b.sizes()));
  return matmul(a, b);
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  MG_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0), "bmm: expected 3-d tensors with "
           "equal batch, got shapes ", shape_str(a.sizes()), " and ", shape_str(b.sizes()));
  return matmul(a, b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  MG_CHECK(weight.dim() == 2, "linear: weight must be 2-d [out, in], got ", shape_str(weight.sizes()));
  MG_CHECK(x.size(-1) == weight.size(1), "linear: input of shape ", shape_str(x.sizes()),
           " does not match weight of shape ", shape_str(weight.sizes()));
  Tensor y = matmul(x, weight.t());
  return bias.defined() ? y + bias : y;
}

Tensor Tensor::matmul(const Tensor& other) const { return mg::matmul(*this, other); }

}  // namespace mg
