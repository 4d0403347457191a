// grouped_mlp: argument checks, the forward through the backend (which keeps the hidden
// activations), and the backward from the backend's grouped kernel. See grouped_mlp.hpp.
#include "engine/ops/grouped_mlp.hpp"

#include <memory>

#include "engine/autograd.hpp"
#include "engine/error.hpp"
#include "engine/profiler.hpp"

namespace mg {
namespace {

void check_arguments(const Tensor& x, const std::vector<int64_t>& offsets,
                     const std::vector<GroupedMlpWeights>& weights) {
  MG_CHECK(x.defined() && x.dim() == 2, "grouped_mlp: x must be [P, D], got ",
           x.defined() ? shape_str(x.sizes()) : std::string("an undefined tensor"));
  MG_CHECK(x.dtype() == kFloat32 || x.dtype() == kFloat64, "grouped_mlp: x must be float32 or float64, got ",
           dtype_name(x.dtype()));
  const int64_t G = static_cast<int64_t>(weights.size());
  MG_CHECK(G >= 1 && static_cast<int64_t>(offsets.size()) == G + 1, "grouped_mlp: ", G,
           " weight groups need ", G + 1, " offsets, got ", offsets.size());
  MG_CHECK(offsets.front() == 0 && offsets.back() == x.size(0), "grouped_mlp: offsets must run from 0 to P = ",
           x.size(0), ", got ", offsets.front(), " .. ", offsets.back());
  const int64_t D = x.size(1), D_out = weights.front().w2.defined() ? weights.front().w2.size(0) : -1;
  for (int64_t g = 0; g < G; ++g) {
    MG_CHECK(offsets[g] <= offsets[g + 1], "grouped_mlp: offsets must not decrease, offsets[", g, "] = ",
             offsets[g], " > offsets[", g + 1, "] = ", offsets[g + 1]);
    const GroupedMlpWeights& w = weights[g];
    MG_CHECK(w.w1.defined() && w.w2.defined() && w.w1.dim() == 2 && w.w2.dim() == 2,
             "grouped_mlp: group ", g, " needs 2-d w1 and w2");
    const int64_t H = w.w1.size(0);
    MG_CHECK(w.w1.size(1) == D && w.w2.size(1) == H && w.w2.size(0) == D_out, "grouped_mlp: group ", g,
             " has w1 ", shape_str(w.w1.sizes()), " and w2 ", shape_str(w.w2.sizes()), "; expected w1 [H, ", D,
             "] and w2 [", D_out, ", H] for x ", shape_str(x.sizes()));
    MG_CHECK(!w.b1.defined() || w.b1.sizes() == Shape{H}, "grouped_mlp: group ", g, " has b1 ",
             shape_str(w.b1.sizes()), ", expected [", H, "]");
    MG_CHECK(!w.b2.defined() || w.b2.sizes() == Shape{D_out}, "grouped_mlp: group ", g, " has b2 ",
             shape_str(w.b2.sizes()), ", expected [", D_out, "]");
    for (const Tensor* t : {&w.w1, &w.b1, &w.w2, &w.b2})
      MG_CHECK(!t->defined() || (t->dtype() == x.dtype() && t->device() == x.device()), "grouped_mlp: group ",
               g, "'s weights must be ", dtype_name(x.dtype()), " on x's device");
  }
}

Tensor contiguous_or_undefined(const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); }

}  // namespace

Tensor grouped_mlp(const Tensor& x, const std::vector<int64_t>& offsets,
                   const std::vector<GroupedMlpWeights>& weights) {
  MG_PROFILE("grouped_mlp");
  check_arguments(x, offsets, weights);
  const int64_t G = static_cast<int64_t>(weights.size());
  auto layout = std::make_shared<GroupedMlpLayout>();
  layout->offset = offsets;
  layout->D = x.size(1);
  layout->D_out = weights.front().w2.size(0);
  layout->hidden_offset.assign(G + 1, 0);
  auto saved = std::make_shared<std::vector<GroupedMlpWeights>>();
  for (int64_t g = 0; g < G; ++g) {
    const GroupedMlpWeights& w = weights[g];
    layout->hidden.push_back(w.w1.size(0));
    layout->hidden_offset[g + 1] = layout->hidden_offset[g] + layout->rows(g) * layout->hidden[g];
    saved->push_back({contiguous_or_undefined(w.w1), contiguous_or_undefined(w.b1),
                      contiguous_or_undefined(w.w2), contiguous_or_undefined(w.b2)});
  }
  const Tensor x_c = x.detach().contiguous();
  Tensor h = Tensor::empty({layout->hidden_offset[G]}, x.options());
  Tensor y = Tensor::empty({x.size(0), layout->D_out}, x.options());
  backend_of(x).grouped_mlp_forward(*layout, *saved, x_c, h, y);

  TensorList inputs{x};
  for (int64_t g = 0; g < G; ++g)
    if (layout->rows(g) > 0) inputs.insert(inputs.end(), {weights[g].w1, weights[g].b1, weights[g].w2, weights[g].b2});
  if (!any_requires_grad(inputs)) return y;

  // Which gradients to compute: the inputs that require one (frozen experts need none).
  auto wanted = std::make_shared<std::vector<GroupedMlpWeights>>(G);
  auto flag = [](const Tensor& t) { return t.defined() && t.requires_grad() ? t : Tensor(); };
  for (int64_t g = 0; g < G; ++g)
    if (layout->rows(g) > 0)
      (*wanted)[g] = {flag(weights[g].w1), flag(weights[g].b1), flag(weights[g].w2), flag(weights[g].b2)};
  const bool want_x = x.requires_grad();

  return record("grouped_mlp", y, inputs, [layout, saved, wanted, want_x, x_c, h](const TensorList& grads) {
    const int64_t G = static_cast<int64_t>(saved->size());
    const Tensor grad_y = grads[0].contiguous();
    const Tensor grad_x = want_x ? Tensor::empty(x_c.sizes(), x_c.options()) : Tensor();
    std::vector<GroupedMlpWeights> out(G);
    auto like = [&](const Tensor& flag, const Tensor& w) {
      return flag.defined() ? Tensor::empty(w.sizes(), x_c.options()) : Tensor();
    };
    for (int64_t g = 0; g < G; ++g) {
      const GroupedMlpWeights& f = (*wanted)[g];
      const GroupedMlpWeights& w = (*saved)[g];
      out[g] = {like(f.w1, w.w1), like(f.b1, w.b1), like(f.w2, w.w2), like(f.b2, w.b2)};
    }
    backend_of(x_c).grouped_mlp_backward(*layout, *saved, x_c, h, grad_y, grad_x, out);
    TensorList result{grad_x};
    for (int64_t g = 0; g < G; ++g)
      if (layout->rows(g) > 0) result.insert(result.end(), {out[g].w1, out[g].b1, out[g].w2, out[g].b2});
    return result;
  });
}

}  // namespace mg
