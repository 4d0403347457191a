// SGD with momentum, dampening, Nesterov momentum and L2 weight decay, after torch.optim.SGD
// (PyTorch 1.13, _single_tensor_sgd), in the same order of floating-point operations:
//   g = grad + weight_decay * p
//   buf = g                                        on the buffer's first use (a clone, not a zero
//   buf = momentum * buf + (1 - dampening) * g      start: dampening does not apply to it)
//   g = nesterov ? g + momentum * buf : buf        when momentum != 0
//   p = p - lr * g
#include "engine/dtype.hpp"
#include "engine/parallel.hpp"
#include "nn/optim.hpp"

namespace mg::nn {

OptionMap SGDOptions::to_map() const {
  return {{"lr", lr_}, {"momentum", momentum_}, {"dampening", dampening_},
          {"weight_decay", weight_decay_}, {"nesterov", nesterov_ ? 1.0 : 0.0}};
}

void SGDOptions::from_map(const OptionMap& m) {
  for (const auto& [k, v] : m) {
    if (k == "lr") lr_ = v;
    else if (k == "momentum") momentum_ = v;
    else if (k == "dampening") dampening_ = v;
    else if (k == "weight_decay") weight_decay_ = v;
    else if (k == "nesterov") nesterov_ = v != 0.0;
    else throw Error(mg::detail::concat("SGDOptions: unknown option '", k, "'"));
  }
}

void SGDOptions::validate() const {
  MG_CHECK(lr_ >= 0.0, "SGD: invalid learning rate ", lr_);
  MG_CHECK(momentum_ >= 0.0, "SGD: invalid momentum ", momentum_);
  MG_CHECK(weight_decay_ >= 0.0, "SGD: invalid weight_decay ", weight_decay_);
  MG_CHECK(!nesterov_ || (momentum_ > 0.0 && dampening_ == 0.0),
           "SGD: Nesterov momentum requires a momentum and zero dampening");
}

namespace {

template <class T>
void sgd_kernel(T* p, const T* grad, T* buf, int64_t n, const SGDOptions& o, bool first_use) {
  const T lr = static_cast<T>(o.lr()), wd = static_cast<T>(o.weight_decay());
  const T momentum = static_cast<T>(o.momentum()), keep = static_cast<T>(1.0 - o.dampening());
  const bool nesterov = o.nesterov();
  parallel_for(n, n * 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T g = grad[i];
      if (wd != T(0)) g = g + wd * p[i];
      if (buf) {
        buf[i] = first_use ? g : buf[i] * momentum + keep * g;
        g = nesterov ? g + momentum * buf[i] : buf[i];
      }
      p[i] = p[i] + (-lr) * g;
    }
  });
}

}  // namespace

void SGD::update(const OptimizerOptions& options, const Tensor& param, const Tensor& grad,
                 ParamState& state) {
  const auto& o = static_cast<const SGDOptions&>(options);
  Tensor buf;
  bool first_use = false;
  if (o.momentum() != 0.0) buf = detail::state_buffer(state, "momentum_buffer", param, &first_use);
  detail::HostStaging host({param, grad, buf});
  MG_DISPATCH_FLOATING_TYPES(param.dtype(), "SGD", [&] {
    sgd_kernel<scalar_t>(host.ptr<scalar_t>(0), host.ptr<scalar_t>(1), host.ptr<scalar_t>(2),
                         param.numel(), o, first_use);
  });
  host.write_back({0, 2});
}

}  // namespace mg::nn
