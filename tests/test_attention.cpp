// Attention: MultiheadAttention and causal scaled_dot_product_attention against PyTorch,
// gradient checks, the transformer layer and the patch embedding.
#include "gradcheck.hpp"
#include "nn/attention.hpp"
#include "reference/attn_reference.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;
namespace nn = mg::nn;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
}  // namespace

TEST_CASE("MultiheadAttention equals PyTorch", "[attention]") {
  nn::MultiheadAttention mha(6, 2);
  mha.to(mg::kFloat64);
  mha.load_state_dict({{"in_proj_weight", f64(attnref::mha_in_proj_weight, {18, 6})},
                       {"in_proj_bias", f64(attnref::mha_in_proj_bias, {18})},
                       {"out_proj.weight", f64(attnref::mha_out_proj_weight, {6, 6})},
                       {"out_proj.bias", f64(attnref::mha_out_proj_bias, {6})}});
  Tensor q = f64(attnref::mha_q, {2, 3, 6}).requires_grad_();
  Tensor kv = f64(attnref::mha_kv, {2, 4, 6}).requires_grad_();
  auto [y, w] = mha.forward(q, kv, kv, true);
  y.backward(f64(attnref::mha_dy, {2, 3, 6}));
  require_close(y, f64(attnref::mha_y, {2, 3, 6}), 1e-12, 1e-10);
  require_close(w, f64(attnref::mha_w, {2, 3, 4}), 1e-12, 1e-10);
  require_close(q.grad(), f64(attnref::mha_dq, {2, 3, 6}), 1e-12, 1e-10);
  require_close(kv.grad(), f64(attnref::mha_dkv, {2, 4, 6}), 1e-12, 1e-10);
  require_close(mha.in_proj_weight.grad(), f64(attnref::mha_d_in_proj_weight, {18, 6}), 1e-12, 1e-10);
}

TEST_CASE("causal scaled_dot_product_attention equals PyTorch", "[attention]") {
  Tensor x = f64(attnref::sdpa_x, {2, 4, 5}).requires_grad_();
  mg::AttentionOptions opt;
  opt.is_causal = true;
  Tensor y = mg::scaled_dot_product_attention(x, x, x, opt);
  y.backward(f64(attnref::sdpa_dy, {2, 4, 5}));
  require_close(y, f64(attnref::sdpa_y, {2, 4, 5}), 1e-12, 1e-10);
  require_close(x.grad(), f64(attnref::sdpa_dx, {2, 4, 5}), 1e-12, 1e-10);
}

TEST_CASE("attention: gradients and modules", "[attention]") {
  mg::Generator g(3);
  auto r = [&](const mg::Shape& s) { return mg::randn(s, mg::kFloat64, &g); };
  gradcheck("sdpa", [](const TensorList& in) { return mg::scaled_dot_product_attention(in[0], in[1], in[2]); },
            {r({2, 3, 4}), r({2, 5, 4}), r({2, 5, 3})});
  mg::AttentionOptions masked;
  masked.attn_mask = f64({0, -1e9, 0, 0, 0, 0}, {2, 3});
  gradcheck("sdpa masked, transposed q", [&](const TensorList& in) {
    return mg::scaled_dot_product_attention(in[0].transpose(0, 1), in[1], in[1], masked);
  }, {r({2, 2, 4}), r({2, 3, 4})});

  mg::manual_seed(4);
  nn::TransformerEncoderLayer layer(8, 2, 16, 0.0);
  layer.to(mg::kFloat64);
  Tensor x = r({2, 5, 8});
  CHECK(layer.forward(x).sizes() == mg::Shape{2, 5, 8});
  gradcheck("transformer layer", [&](const TensorList& in) { return layer.forward(in[0]); }, {x}, {1e-6, 1e-6, 1e-5});

  nn::PatchEmbedding patches(8, 4, 3, 10);
  CHECK(patches.forward(mg::randn({2, 3, 8, 8})).sizes() == mg::Shape{2, 4, 10});
  CHECK_THROWS_WITH(patches.forward(mg::randn({2, 3, 6, 6})), Catch::Contains("PatchEmbedding"));
  CHECK_THROWS_WITH(nn::MultiheadAttention(6, 4), Catch::Contains("divisible"));
  CHECK_THROWS_WITH(mg::scaled_dot_product_attention(r({2, 3}), r({4, 5}), r({4, 5})),
                    Catch::Contains("scaled_dot_product_attention") && Catch::Contains("[2, 3]"));
}
