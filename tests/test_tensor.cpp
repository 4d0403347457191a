// Tensors: factories, views sharing storage, contiguity, copies, dtypes, printing, generators.
#include "gradcheck.hpp"

#include <sstream>

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
}  // namespace

TEST_CASE("factories", "[tensor]") {
  CHECK(mg::zeros({2, 3}).to_vector<float>() == std::vector<float>(6, 0.0f));
  CHECK(mg::ones({2}, mg::kInt32).to_vector<int32_t>() == std::vector<int32_t>{1, 1});
  CHECK(mg::full({2}, 2.5, mg::kFloat64).to_vector<double>() == std::vector<double>{2.5, 2.5});
  CHECK(mg::arange(4).to_vector<float>() == std::vector<float>{0, 1, 2, 3});
  CHECK(mg::arange(1, 2, 0.25, mg::kFloat64).to_vector<double>() == std::vector<double>{1, 1.25, 1.5, 1.75});
  CHECK(mg::eye(2).to_vector<float>() == std::vector<float>{1, 0, 0, 1});
  Tensor s = mg::scalar_tensor(3.0);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item<float>() == 3.0f);
  CHECK(mg::tensor({1, 2, 3}).dtype() == mg::kInt32);
  CHECK(mg::zeros({2}, mg::requires_grad()).requires_grad());
  CHECK_THROWS_WITH(mg::from_vector(std::vector<float>{1, 2, 3}, {2, 2}), Catch::Contains("[2, 2]"));
  CHECK_THROWS_WITH(mg::zeros({2}).item(), Catch::Contains("item") && Catch::Contains("[2]"));
}

TEST_CASE("views share storage and have the right strides", "[tensor]") {
  Tensor a = mg::arange(0, 6, 1, mg::kFloat64).reshape({2, 3});
  CHECK(a.strides() == mg::Shape{3, 1});
  Tensor t = a.t();
  CHECK(t.sizes() == mg::Shape{3, 2});
  CHECK(t.strides() == mg::Shape{1, 3});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.shares_storage(a));
  CHECK(t.to_vector<double>() == std::vector<double>{0, 3, 1, 4, 2, 5});
  CHECK(t.contiguous().is_contiguous());
  CHECK_FALSE(t.contiguous().shares_storage(a));
  CHECK(a.contiguous().is_same(a));

  Tensor row = a.select(0, 1);
  CHECK(row.to_vector<double>() == std::vector<double>{3, 4, 5});
  CHECK(a[0].to_vector<double>() == std::vector<double>{0, 1, 2});
  Tensor col = a.select(1, -1);
  CHECK(col.to_vector<double>() == std::vector<double>{2, 5});
  CHECK(a.narrow(1, 1, 2).to_vector<double>() == std::vector<double>{1, 2, 4, 5});
  CHECK(a.slice(1, 0, 3, 2).to_vector<double>() == std::vector<double>{0, 2, 3, 5});
  CHECK(a.unsqueeze(1).sizes() == mg::Shape{2, 1, 3});
  CHECK(a.unsqueeze(-1).sizes() == mg::Shape{2, 3, 1});
  CHECK(a.unsqueeze(0).squeeze().sizes() == mg::Shape{2, 3});
  CHECK(a.unsqueeze(0).squeeze(0).sizes() == mg::Shape{2, 3});
  CHECK(a.permute({1, 0}).to_vector<double>() == t.to_vector<double>());
  CHECK(a.flatten().sizes() == mg::Shape{6});
  CHECK(a.view({3, -1}).sizes() == mg::Shape{3, 2});
  Tensor e = f64({1, 2}, {2, 1}).expand({2, 3});
  CHECK(e.strides() == mg::Shape{1, 0});
  CHECK(e.to_vector<double>() == std::vector<double>{1, 1, 1, 2, 2, 2});

  // writing through a view is visible in the base
  {
    mg::NoGradGuard guard;
    a.select(0, 0).fill_(-1);
    col.copy_(f64({7, 8}, {2}));
  }
  CHECK(a.to_vector<double>() == std::vector<double>{-1, -1, 7, 3, 4, 8});
}

TEST_CASE("view refuses incompatible strides - reshape copies instead", "[tensor]") {
  Tensor a = mg::arange(6).reshape({2, 3});
  CHECK_THROWS_WITH(a.t().view({6}), Catch::Contains("view") && Catch::Contains("reshape"));
  Tensor r = a.t().reshape({6});
  CHECK(r.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK_THROWS_WITH(a.view({4, -1}), Catch::Contains("[4, -1]") && Catch::Contains("[2, 3]"));
  CHECK_THROWS_WITH(a.select(0, 2), Catch::Contains("select") && Catch::Contains("index 2"));
  CHECK_THROWS_WITH(a.narrow(1, 2, 2), Catch::Contains("narrow"));
  CHECK_THROWS_WITH(a.expand({3, 3}), Catch::Contains("expand") && Catch::Contains("[2, 3]"));
  CHECK_THROWS_WITH(a.permute({0, 0}), Catch::Contains("permute"));
  CHECK_THROWS_WITH(a.transpose(0, 2), Catch::Contains("transpose") && Catch::Contains("dim 2"));
}

TEST_CASE("view ops: gradients", "[tensor]") {
  mg::Generator g(5);
  Tensor x = mg::randn({2, 3, 4}, mg::kFloat64, &g);
  gradcheck("reshape", [](const TensorList& in) { return in[0].reshape({6, 4}); }, {x});
  gradcheck("view of transpose via reshape", [](const TensorList& in) { return in[0].transpose(0, 2).reshape({-1}); }, {x});
  gradcheck("permute", [](const TensorList& in) { return in[0].permute({2, 0, 1}); }, {x});
  gradcheck("select", [](const TensorList& in) { return in[0].select(1, 2); }, {x});
  gradcheck("narrow", [](const TensorList& in) { return in[0].narrow(2, 1, 2); }, {x});
  gradcheck("slice step", [](const TensorList& in) { return in[0].slice(2, 0, 4, 3); }, {x});
  gradcheck("expand", [](const TensorList& in) { return in[0].unsqueeze(0).expand({3, 2, 3, 4}); }, {x});
  gradcheck("squeeze", [](const TensorList& in) { return in[0].narrow(1, 0, 1).squeeze(1); }, {x});
  gradcheck("flatten", [](const TensorList& in) { return in[0].flatten(1); }, {x});
  gradcheck("clone", [](const TensorList& in) { return in[0].t().clone(); }, {mg::randn({2, 3}, mg::kFloat64, &g)});
  gradcheck("dtype round trip", [](const TensorList& in) { return in[0].to(mg::kFloat32).to(mg::kFloat64) * 2.0; },
            {mg::randn({3}, mg::kFloat64, &g)}, {1e-3, 1e-5, 1e-4});
}

TEST_CASE("dtype conversion and copies", "[tensor]") {
  Tensor f = mg::from_vector(std::vector<float>{1.7f, -2.2f}, {2});
  CHECK(f.to(mg::kInt32).to_vector<int32_t>() == std::vector<int32_t>{1, -2});
  CHECK(f.to(mg::kFloat64).dtype() == mg::kFloat64);
  Tensor c = f.clone();
  CHECK_FALSE(c.shares_storage(f));
  CHECK_THROWS_WITH(f.data_ptr<double>(), Catch::Contains("float32"));
  Tensor dst = mg::zeros({2, 2});
  dst.copy_(mg::from_vector(std::vector<float>{1, 2}, {2}));  // broadcast copy
  CHECK(dst.to_vector<float>() == std::vector<float>{1, 2, 1, 2});
  CHECK_THROWS_WITH(dst.copy_(mg::zeros({3})), Catch::Contains("copy_") && Catch::Contains("[3]"));
  CHECK_THROWS_WITH(f.to(mg::Device::cuda()), Catch::Contains("cuda"));
}

TEST_CASE("printing follows PyTorch's style", "[tensor]") {
  std::ostringstream os;
  os << mg::from_vector(std::vector<float>{1, 2.5f, -3, 4}, {2, 2});
  CHECK(os.str() == "tensor([[ 1.0000,  2.5000],\n        [-3.0000,  4.0000]])");
  CHECK(mg::tensor({1, 2}).to_string() == "tensor([1, 2], dtype=int32)");
  CHECK(mg::scalar_tensor(0.5, mg::kFloat64).to_string() == "tensor(0.5000, dtype=float64)");
  Tensor w = mg::ones({2}, mg::requires_grad());
  CHECK(w.to_string() == "tensor([1.0000, 1.0000], requires_grad=True)");
  CHECK((w * 2.0).to_string() == "tensor([2.0000, 2.0000], grad_fn=<mulBackward>)");
  CHECK(mg::from_vector(std::vector<float>{1e-5f, 1.0f}, {2}).to_string() == "tensor([1.0000e-05, 1.0000e+00])");
}

TEST_CASE("generators: seeded, counter-based, thread-count independent", "[tensor][random]") {
  mg::manual_seed(42);
  Tensor a = mg::randn({1000});
  mg::manual_seed(42);
  Tensor b = mg::randn({1000});
  CHECK(a.to_vector<float>() == b.to_vector<float>());
  Tensor c = mg::randn({1000});
  CHECK(a.to_vector<float>() != c.to_vector<float>());

  // A random tensor is a function of (seed, offset) alone.
  mg::Generator g1(7), g2(7);
  mg::set_num_threads(1);
  Tensor one_thread = mg::rand({100000}, mg::kFloat32, &g1);
  mg::set_num_threads(2);
  Tensor two_threads = mg::rand({100000}, mg::kFloat32, &g2);
  CHECK(one_thread.to_vector<float>() == two_threads.to_vector<float>());
  CHECK(g1.offset() == 100000);

  // Saving and restoring (seed, offset) reproduces the stream exactly.
  mg::Generator g(3);
  mg::rand({10}, mg::kFloat32, &g);
  mg::Generator restored;
  restored.set_state(g.seed(), g.offset());
  CHECK(mg::randn({5}, mg::kFloat32, &g).to_vector<float>() == mg::randn({5}, mg::kFloat32, &restored).to_vector<float>());

  // Moments of a large sample
  Tensor n = mg::randn({200000}, mg::kFloat64, &g);
  CHECK(std::abs(n.mean().item()) < 0.01);
  CHECK(std::abs(n.std({0}).item() - 1.0) < 0.01);
  Tensor u = mg::rand({200000}, mg::kFloat64, &g);
  CHECK(u.min().item() >= 0.0);
  CHECK(u.max().item() < 1.0);
  CHECK(std::abs(u.mean().item() - 0.5) < 0.01);
  Tensor r = mg::randint(3, 7, {10000}, mg::kInt32, &g);
  CHECK(r.min().item<int32_t>() == 3);
  CHECK(r.max().item<int32_t>() == 6);
  Tensor p = mg::randperm(50, &g);
  std::vector<int32_t> sorted = p.to_vector<int32_t>();
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 50; ++i) CHECK(sorted[i] == i);
}
