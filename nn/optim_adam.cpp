// Adam (Kingma & Ba, 2015; AMSGrad: Reddi et al., 2018) and AdamW (Loshchilov & Hutter, 2019),
// after torch.optim.Adam / AdamW (PyTorch 1.13, single-tensor path), in the same order of
// floating-point operations. With t the parameter's own step count:
//   AdamW:  p = p * (1 - lr * weight_decay)          decoupled decay, before anything else
//   Adam:   g = grad + weight_decay * p               L2 decay folded into the gradient
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   v_max = max(v_max, v)                             AMSGrad only; v_max replaces v below
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps         eps outside the square root
//   p = p - (lr / (1 - beta1^t)) * m / denom
#include <algorithm>
#include <cmath>

#include "engine/dtype.hpp"
#include "engine/parallel.hpp"
#include "nn/optim.hpp"

namespace mg::nn {

template <class Self>
OptionMap AdamOptionsBase<Self>::to_map() const {
  return {{"lr", lr_}, {"beta1", betas_.first}, {"beta2", betas_.second}, {"eps", eps_},
          {"weight_decay", weight_decay_}, {"amsgrad", amsgrad_ ? 1.0 : 0.0}};
}

template <class Self>
void AdamOptionsBase<Self>::from_map(const OptionMap& m) {
  for (const auto& [k, v] : m) {
    if (k == "lr") lr_ = v;
    else if (k == "beta1") betas_.first = v;
    else if (k == "beta2") betas_.second = v;
    else if (k == "eps") eps_ = v;
    else if (k == "weight_decay") weight_decay_ = v;
    else if (k == "amsgrad") amsgrad_ = v != 0.0;
    else throw Error(mg::detail::concat(optimizer_name(), "Options: unknown option '", k, "'"));
  }
}

template <class Self>
void AdamOptionsBase<Self>::validate() const {
  const char* who = optimizer_name();
  MG_CHECK(lr_ >= 0.0, who, ": invalid learning rate ", lr_);
  MG_CHECK(eps_ >= 0.0, who, ": invalid epsilon ", eps_);
  MG_CHECK(betas_.first >= 0.0 && betas_.first < 1.0, who, ": invalid beta1 ", betas_.first);
  MG_CHECK(betas_.second >= 0.0 && betas_.second < 1.0, who, ": invalid beta2 ", betas_.second);
  MG_CHECK(weight_decay_ >= 0.0, who, ": invalid weight_decay ", weight_decay_);
}

template class AdamOptionsBase<AdamOptions>;
template class AdamOptionsBase<AdamWOptions>;

namespace {

struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, decoupled;
  int64_t step;
};

template <class T>
void adam_kernel(T* p, const T* grad, T* m, T* v, T* v_max, int64_t n, const AdamHyper& h) {
  // Scalars are formed in double, as Python forms them, then cast once, as torch casts alpha.
  const double bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bias_correction2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  const T neg_step_size = static_cast<T>(-(h.lr / bias_correction1));
  const T bc2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
  const T beta1 = static_cast<T>(h.beta1), one_minus_beta1 = static_cast<T>(1.0 - h.beta1);
  const T beta2 = static_cast<T>(h.beta2), one_minus_beta2 = static_cast<T>(1.0 - h.beta2);
  const T eps = static_cast<T>(h.eps), wd = static_cast<T>(h.weight_decay);
  const T decay = static_cast<T>(1.0 - h.lr * h.weight_decay);
  parallel_for(n, n * 6, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T g = grad[i];
      if (h.decoupled) {
        p[i] = p[i] * decay;
      } else if (wd != T(0)) {
        g = g + wd * p[i];
      }
      m[i] = m[i] * beta1 + one_minus_beta1 * g;
      v[i] = v[i] * beta2 + one_minus_beta2 * g * g;
      T second = v[i];
      if (v_max) second = v_max[i] = std::max(v_max[i], v[i]);
      const T denom = std::sqrt(second) / bc2_sqrt + eps;
      p[i] = p[i] + neg_step_size * m[i] / denom;
    }
  });
}

template <class Self>
void adam_update(const AdamOptionsBase<Self>& o, bool decoupled, const Tensor& param,
                 const Tensor& grad, ParamState& state) {
  const AdamHyper h{o.lr(), o.betas().first, o.betas().second, o.eps(), o.weight_decay(),
                    o.amsgrad(), decoupled, state.step};
  Tensor m = detail::state_buffer(state, "exp_avg", param);
  Tensor v = detail::state_buffer(state, "exp_avg_sq", param);
  Tensor v_max = o.amsgrad() ? detail::state_buffer(state, "max_exp_avg_sq", param) : Tensor();
  detail::HostStaging host({param, grad, m, v, v_max});
  MG_DISPATCH_FLOATING_TYPES(param.dtype(), o.optimizer_name(), [&] {
    adam_kernel<scalar_t>(host.ptr<scalar_t>(0), host.ptr<scalar_t>(1), host.ptr<scalar_t>(2),
                          host.ptr<scalar_t>(3), host.ptr<scalar_t>(4), param.numel(), h);
  });
  host.write_back({0, 2, 3, 4});
}

}  // namespace

void Adam::update(const OptimizerOptions& options, const Tensor& param, const Tensor& grad,
                  ParamState& state) {
  adam_update(static_cast<const AdamOptions&>(options), false, param, grad, state);
}

void AdamW::update(const OptimizerOptions& options, const Tensor& param, const Tensor& grad,
                   ParamState& state) {
  adam_update(static_cast<const AdamWOptions&>(options), true, param, grad, state);
}

}  // namespace mg::nn
