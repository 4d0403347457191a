// Indexing and joining ops: hand-computed values, tie and NaN order, gradients on contiguous and
// strided inputs, and the error messages for bad input.
#include "gradcheck.hpp"

#include <cmath>
#include <optional>
#include <string>

#include "engine/backend.hpp"

using mg::Tensor;
using mg::TensorList;
using mgtest::gradcheck;
using mgtest::require_close;

namespace {
Tensor f64(const std::vector<double>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kFloat64); }
Tensor i32(const std::vector<int32_t>& v, const mg::Shape& s) { return mg::from_vector(v, s, mg::kInt32); }
Tensor i32(const std::vector<int32_t>& v) { return i32(v, {static_cast<int64_t>(v.size())}); }
Tensor randn64(const mg::Shape& s, uint64_t seed) {  // distinct values, so topk/sort are smooth
  mg::Generator g(seed);
  return mg::randn(s, mg::kFloat64, &g);
}
std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }
const double kNaN = std::nan("");
}  // namespace

// ---------------------------------------------------------------- index_select / index_add

TEST_CASE("index_select: values, dims, duplicates", "[index]") {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  require_close(mg::index_select(x, 1, i32({2, 0, 2})), f64({3, 1, 3, 6, 4, 6}, {2, 3}));
  require_close(x.index_select(0, i32({1})), f64({4, 5, 6}, {1, 3}));
  require_close(x.index_select(-1, i32({1, 1})), f64({2, 2, 5, 5}, {2, 2}));
  require_close(x.t().index_select(0, i32({2, 0})), f64({3, 6, 1, 4}, {2, 2}));  // strided input
  CHECK(x.index_select(0, i32({}, {0})).sizes() == mg::Shape{0, 3});
  // a 0-d index keeps the dim with size 1, as torch
  CHECK(x.index_select(1, i32({2}, {})).sizes() == mg::Shape{2, 1});
  // int32 data goes through too
  CHECK(ints(i32({7, 8, 9}).index_select(0, i32({2, 2, 0}))) == std::vector<int32_t>{9, 9, 7});

  // duplicate indices: the gradient counts every pick
  Tensor leaf = f64({1, 2, 3}, {3}).requires_grad_();
  leaf.index_select(0, i32({0, 2, 0, 0})).sum().backward();
  require_close(leaf.grad(), f64({3, 0, 1}, {3}));
}

TEST_CASE("index_select: gradients", "[index]") {
  Tensor idx = i32({2, 0, 2, 3});
  gradcheck("index_select dim 0", [&](const TensorList& in) { return mg::index_select(in[0], 0, idx); },
            {randn64({4, 3}, 1)});
  gradcheck("index_select dim 1 of transposed", [&](const TensorList& in) {
    return in[0].t().index_select(1, idx);
  }, {randn64({4, 3}, 2)});
  gradcheck("index_select of expanded", [&](const TensorList& in) {
    return in[0].expand({2, 4}).index_select(1, idx);
  }, {randn64({4}, 3)});
}

TEST_CASE("index_add: out of place, duplicate indices accumulate", "[index]") {
  Tensor x = mg::zeros({3, 2}, mg::kFloat64);
  Tensor src = f64({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor out = mg::index_add(x, 0, i32({0, 2, 0}), src);
  require_close(out, f64({6, 8, 0, 0, 3, 4}, {3, 2}));
  require_close(x, mg::zeros({3, 2}, mg::kFloat64));  // input untouched
  Tensor y = f64({10, 20, 30, 40}, {2, 2});
  require_close(y.index_add(1, i32({1, 1, 1}), f64({1, 2, 3, 4, 5, 6}, {2, 3})), f64({10, 26, 30, 55}, {2, 2}));
  // strided source
  require_close(y.index_add(0, i32({1, 0}), f64({1, 2, 3, 4}, {2, 2}).t()), f64({12, 24, 31, 43}, {2, 2}));
  CHECK(ints(i32({1, 1}).index_add(0, i32({1, 1}), i32({5, 6}))) == std::vector<int32_t>{1, 12});
}

TEST_CASE("index_add: gradients in input and source", "[index]") {
  Tensor idx = i32({1, 0, 1});
  gradcheck("index_add", [&](const TensorList& in) { return mg::index_add(in[0], 0, idx, in[1]); },
            {randn64({2, 3}, 4), randn64({3, 3}, 5)});
  gradcheck("index_add strided", [&](const TensorList& in) {
    return in[0].expand({3, 2}).index_add(1, idx, in[1].t());
  }, {randn64({2}, 6), randn64({3, 3}, 7)});
  // only the source requires grad
  Tensor src = randn64({3, 3}, 8).requires_grad_();
  mg::index_add(mg::zeros({2, 3}, mg::kFloat64), 0, idx, src).sum().backward();
  require_close(src.grad(), mg::ones({3, 3}, mg::kFloat64));
}

// ---------------------------------------------------------------- gather / scatter_add

TEST_CASE("gather and scatter_add: values with duplicates", "[index]") {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  require_close(mg::gather(x, 1, i32({2, 2, 0, 1}, {2, 2})), f64({3, 3, 4, 5}, {2, 2}));
  require_close(x.gather(0, i32({1, 0, 1}, {1, 3})), f64({4, 2, 6}, {1, 3}));

  Tensor acc = mg::zeros({2, 3}, mg::kFloat64);
  Tensor out = mg::scatter_add(acc, 1, i32({0, 0, 2, 1, 1, 1}, {2, 3}), f64({1, 2, 3, 4, 5, 6}, {2, 3}));
  require_close(out, f64({3, 0, 3, 0, 15, 0}, {2, 3}));
  require_close(acc, mg::zeros({2, 3}, mg::kFloat64));
  // src larger than index: only the indexed part of src is used
  Tensor big = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  require_close(mg::zeros({1, 2}, mg::kFloat64).scatter_add(1, i32({1, 1}, {1, 2}), big), f64({0, 3}, {1, 2}));
}

TEST_CASE("gather and scatter_add: 0-d tensors are one element, as torch", "[index]") {
  const Tensor x = f64({2.5}, {}).requires_grad_();
  const Tensor i = i32({0}, {}).reshape({});
  const Tensor y = mg::gather(x, 0, i);
  CHECK(y.dim() == 0);
  CHECK(y.item() == 2.5);
  (y * 3.0).backward();
  CHECK(x.grad().item() == 3.0);
  CHECK(mg::scatter_add(f64({1}, {}), 0, i, f64({4}, {})).item() == 5.0);
  CHECK_THROWS_WITH(mg::gather(x, 0, i32({0, 1})), Catch::Matchers::Contains("must have as many dims"));
}

TEST_CASE("gather and scatter_add: gradients", "[index]") {
  Tensor idx = i32({0, 2, 2, 1, 1, 1, 0, 0}, {4, 2});
  gradcheck("gather", [&](const TensorList& in) { return mg::gather(in[0], 1, idx); }, {randn64({4, 3}, 9)});
  gradcheck("gather of transposed", [&](const TensorList& in) { return in[0].t().gather(1, idx); },
            {randn64({3, 4}, 10)});
  Tensor sidx = i32({0, 2, 2, 0, 1, 1}, {2, 3});
  gradcheck("scatter_add", [&](const TensorList& in) { return mg::scatter_add(in[0], 1, sidx, in[1]); },
            {randn64({2, 3}, 11), randn64({2, 3}, 12)});
  gradcheck("scatter_add strided, src larger than index", [&](const TensorList& in) {
    return in[0].t().scatter_add(1, sidx, in[1].slice(1, 0, 4, 1));
  }, {randn64({3, 2}, 13), randn64({3, 5}, 14)});
}

// ---------------------------------------------------------------- masked_fill / one_hot

TEST_CASE("masked_fill: broadcast masks of any dtype", "[index]") {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  require_close(mg::masked_fill(x, i32({1, 0, 1}, {1, 3}), -1), f64({-1, 2, -1, -1, 5, -1}, {2, 3}));
  require_close(x.masked_fill(f64({0, 2.5}, {2, 1}), 9), f64({1, 2, 3, 9, 9, 9}, {2, 3}));
  // a NaN mask entry is nonzero, so it counts as true
  require_close(x.masked_fill(f64({kNaN, 0, 0}, {3}), 0), f64({0, 2, 3, 0, 5, 6}, {2, 3}));
  require_close(x.t().masked_fill(i32({0, 1, 0, 0, 0, 1}, {3, 2}), 7), f64({1, 7, 2, 5, 3, 7}, {3, 2}));
  Tensor inf_fill = f64({0, 1}, {2}).masked_fill(i32({0, 1}), -INFINITY);
  CHECK(inf_fill.to_vector<double>()[1] == -INFINITY);

  Tensor mask = i32({1, 0, 0, 1, 1, 0}, {2, 3});
  gradcheck("masked_fill", [&](const TensorList& in) { return mg::masked_fill(in[0], mask, 3.0); },
            {randn64({2, 3}, 15)});
  gradcheck("masked_fill strided", [&](const TensorList& in) {
    return in[0].t().masked_fill(i32({1, 0, 0}, {3, 1}), -2.0);
  }, {randn64({2, 3}, 16)});
  Tensor leaf = f64({1, 2, 3}, {3}).requires_grad_();
  leaf.masked_fill(i32({0, 1, 0}), 5).sum().backward();
  require_close(leaf.grad(), f64({1, 0, 1}, {3}));
}

TEST_CASE("one_hot: int32 rows, inferred or given class count", "[index]") {
  Tensor oh = mg::one_hot(i32({2, 0, 1}));
  CHECK(oh.dtype() == mg::kInt32);
  CHECK(oh.sizes() == mg::Shape{3, 3});
  CHECK(ints(oh) == std::vector<int32_t>{0, 0, 1, 1, 0, 0, 0, 1, 0});
  Tensor oh4 = mg::one_hot(i32({3, 1, 1, 0}, {2, 2}), 4);
  CHECK(oh4.sizes() == mg::Shape{2, 2, 4});
  CHECK(ints(oh4) == std::vector<int32_t>{0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0});
  CHECK(ints(mg::one_hot(i32({1}, {}), 2)) == std::vector<int32_t>{0, 1});
  CHECK(mg::one_hot(i32({}, {0}), 5).sizes() == mg::Shape{0, 5});
}

// ---------------------------------------------------------------- topk / sort

TEST_CASE("topk: ties go to the lower index, largest and smallest", "[index]") {
  auto [v, i] = mg::topk(f64({3, 1, 3, 2}, {4}), 2);
  require_close(v, f64({3, 3}, {2}));
  CHECK(i.dtype() == mg::kInt32);
  CHECK(ints(i) == std::vector<int32_t>{0, 2});
  auto [vs, is] = mg::topk(f64({2, 1, 1, 3}, {4}), 3, -1, /*largest=*/false);
  require_close(vs, f64({1, 1, 2}, {3}));
  CHECK(ints(is) == std::vector<int32_t>{1, 2, 0});
  // along dim 0 of a matrix, and through the method
  Tensor m = f64({1, 9, 5, 4, 2, 8, 7, 3, 6}, {3, 3});
  auto [v0, i0] = m.topk(2, 0);
  require_close(v0, f64({7, 9, 8, 4, 3, 6}, {2, 3}));
  CHECK(ints(i0) == std::vector<int32_t>{2, 0, 1, 1, 2, 2});
  auto [v1, i1] = m.t().topk(1, 1, false);  // strided input
  require_close(v1, f64({1, 2, 5}, {3, 1}));
  CHECK(ints(i1) == std::vector<int32_t>{0, 1, 0});
  // NaN ranks as the largest value
  auto [vn, in] = mg::topk(f64({1, kNaN, 3}, {3}), 2);
  CHECK(std::isnan(vn.to_vector<double>()[0]));
  CHECK(ints(in) == std::vector<int32_t>{1, 2});
  auto [vsn, isn] = mg::topk(f64({1, kNaN, 3}, {3}), 2, 0, false);
  require_close(vsn, f64({1, 3}, {2}));
  CHECK(ints(isn) == std::vector<int32_t>{0, 2});
  // k = 0 and k = size
  CHECK(std::get<0>(mg::topk(m, 0, 1)).sizes() == mg::Shape{3, 0});
  CHECK(ints(std::get<1>(mg::topk(m, 3, 1))) == std::vector<int32_t>{1, 2, 0, 2, 0, 1, 0, 2, 1});
  // sorted=false may still come back sorted; the set must be right
  CHECK(ints(std::get<1>(mg::topk(f64({5, 7, 6}, {3}), 2, -1, true, false))) == std::vector<int32_t>{1, 2});
  // the gradient goes back to the picked positions only
  Tensor leaf = f64({3, 1, 3, 2}, {4}).requires_grad_();
  (std::get<0>(leaf.topk(2)) * f64({10, 20}, {2})).sum().backward();
  require_close(leaf.grad(), f64({10, 0, 20, 0}, {4}));
}

TEST_CASE("topk: gradients", "[index]") {
  gradcheck("topk values", [](const TensorList& in) { return std::get<0>(mg::topk(in[0], 2, 1)); },
            {randn64({3, 5}, 17)});
  gradcheck("topk smallest dim 0 of transposed", [](const TensorList& in) {
    return std::get<0>(in[0].t().topk(3, 0, false));
  }, {randn64({3, 4}, 18)});
  gradcheck("topk of a 3-d slice", [](const TensorList& in) {
    return std::get<0>(in[0].slice(2, 0, 4, 2).topk(2, 1));
  }, {randn64({2, 3, 4}, 19)});
}

TEST_CASE("sort: stable with duplicates, NaN last ascending and first descending", "[index]") {
  Tensor x = f64({2, 1, 2, 1, 0}, {5});
  auto [va, ia] = mg::sort(x);
  require_close(va, f64({0, 1, 1, 2, 2}, {5}));
  CHECK(ints(ia) == std::vector<int32_t>{4, 1, 3, 0, 2});
  auto [vd, id] = x.sort(0, true);
  require_close(vd, f64({2, 2, 1, 1, 0}, {5}));
  CHECK(ints(id) == std::vector<int32_t>{0, 2, 1, 3, 4});
  CHECK(ints(mg::argsort(x, -1, true)) == std::vector<int32_t>{0, 2, 1, 3, 4});

  Tensor n = f64({kNaN, 1, kNaN, 0}, {4});
  auto [vn, in] = n.sort();
  require_close(vn, f64({0, 1, kNaN, kNaN}, {4}));
  CHECK(ints(in) == std::vector<int32_t>{3, 1, 0, 2});
  auto [vnd, ind] = n.sort(-1, true);
  require_close(vnd, f64({kNaN, kNaN, 1, 0}, {4}));
  CHECK(ints(ind) == std::vector<int32_t>{0, 2, 1, 3});

  // along dim 0 of a matrix
  Tensor m = f64({3, 1, 1, 2, 1, 0}, {3, 2});
  auto [vm, im] = m.sort(0);
  require_close(vm, f64({1, 0, 1, 1, 3, 2}, {3, 2}));
  CHECK(ints(im) == std::vector<int32_t>{1, 2, 2, 0, 0, 1});
  CHECK(ints(i32({3, 1, 2}).argsort()) == std::vector<int32_t>{1, 2, 0});
  // empty dims sort to empty results
  CHECK(std::get<0>(mg::zeros({2, 0}).sort()).sizes() == mg::Shape{2, 0});
  CHECK(std::get<1>(mg::zeros({0, 3}).sort(0)).sizes() == mg::Shape{0, 3});
  CHECK(std::get<1>(mg::zeros({0, 3}).topk(2)).sizes() == mg::Shape{0, 2});
}

TEST_CASE("sort: gradients", "[index]") {
  gradcheck("sort values", [](const TensorList& in) { return std::get<0>(mg::sort(in[0], 1)); },
            {randn64({3, 4}, 20)});
  gradcheck("sort descending of transposed", [](const TensorList& in) {
    return std::get<0>(in[0].t().sort(0, true));
  }, {randn64({3, 4}, 21)});
}

// ---------------------------------------------------------------- bucket_by_key

TEST_CASE("bucket_by_key: a stable counting sort with a cut per bucket", "[index]") {
  const Tensor keys = i32({2, 0, 2, 1, 0, 2, 2, 0});
  const mg::Buckets all = mg::bucket_by_key(keys, 4);
  CHECK(ints(all.position) == std::vector<int32_t>{1, 4, 7, 3, 0, 2, 5, 6});
  CHECK(all.total == std::vector<int64_t>{3, 1, 4, 0});
  CHECK(all.kept == all.total);

  // the cut keeps each bucket's first positions: the MoE capacity
  const mg::Buckets cut = mg::bucket_by_key(keys, 4, 2);
  CHECK(ints(cut.position) == std::vector<int32_t>{1, 4, 3, 0, 2});
  CHECK(cut.total == std::vector<int64_t>{3, 1, 4, 0});
  CHECK(cut.kept == std::vector<int64_t>{2, 1, 2, 0});
  CHECK(mg::bucket_by_key(keys, 3, 0).position.numel() == 0);

  // the same order as a stable argsort, on a strided view too
  mg::Generator g(5);
  const Tensor many = mg::randint(0, 7, {2, 1000}, mg::kInt32, &g).select(0, 1);
  CHECK(ints(mg::bucket_by_key(many, 7).position) == ints(many.argsort()));
  CHECK(mg::bucket_by_key(i32({}, {0}), 3).total == std::vector<int64_t>{0, 0, 0});
}

TEST_CASE("bucket_by_key: bad keys are counted and named", "[index]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(mg::bucket_by_key(i32({0, 3, -1, 1}), 3),
                    Contains("bucket_by_key: 2 of 4 keys are outside the buckets [0, 3)"));
  CHECK_THROWS_WITH(mg::bucket_by_key(f64({0, 1}, {2}), 3), Contains("keys must be 1-d int32, got float64 [2]"));
  CHECK_THROWS_WITH(mg::bucket_by_key(i32({0, 1}), 0), Contains("num_buckets must be >= 1"));
}

// ---------------------------------------------------------------- cat / stack

TEST_CASE("cat and stack: shapes and values", "[index]") {
  Tensor a = f64({1, 2, 3, 4}, {2, 2});
  Tensor b = f64({5, 6}, {1, 2});
  Tensor c0 = mg::cat({a, b});
  CHECK(c0.sizes() == mg::Shape{3, 2});
  require_close(c0, f64({1, 2, 3, 4, 5, 6}, {3, 2}));
  Tensor c1 = mg::cat({a, b.t(), a.t()}, -1);  // strided inputs
  require_close(c1, f64({1, 2, 5, 1, 3, 3, 4, 6, 2, 4}, {2, 5}));
  // a 1-d empty tensor is skipped whatever the others' shape (torch's legacy rule)
  require_close(mg::cat({mg::zeros({0}, mg::kFloat64), a}, 1), a);
  CHECK(mg::cat({mg::zeros({0}, mg::kFloat64), mg::zeros({0}, mg::kFloat64)}).sizes() == mg::Shape{0});
  CHECK(mg::cat({a, mg::zeros({2, 0}, mg::kFloat64)}, 1).sizes() == mg::Shape{2, 2});
  CHECK(ints(mg::cat({i32({1, 2}), i32({3})})) == std::vector<int32_t>{1, 2, 3});

  Tensor s0 = mg::stack({a, a * 10.0});
  CHECK(s0.sizes() == mg::Shape{2, 2, 2});
  require_close(s0, f64({1, 2, 3, 4, 10, 20, 30, 40}, {2, 2, 2}));
  Tensor s2 = mg::stack({a, a * 10.0}, -1);
  CHECK(s2.sizes() == mg::Shape{2, 2, 2});
  require_close(s2, f64({1, 10, 2, 20, 3, 30, 4, 40}, {2, 2, 2}));
  Tensor s1 = mg::stack({f64({1, 2}, {2}), f64({3, 4}, {2}), f64({5, 6}, {2})}, 1);
  require_close(s1, f64({1, 3, 5, 2, 4, 6}, {2, 3}));
  require_close(mg::stack({f64({7}, {}), f64({8}, {})}), f64({7, 8}, {2}));
}

TEST_CASE("cat and stack: gradients", "[index]") {
  gradcheck("cat dim 0", [](const TensorList& in) { return mg::cat({in[0], in[1], in[0]}); },
            {randn64({2, 3}, 22), randn64({1, 3}, 23)});
  gradcheck("cat dim 1 strided", [](const TensorList& in) {
    return mg::cat({in[0].t(), in[1].expand({3, 2}), in[2].slice(1, 0, 3, 2)}, 1);
  }, {randn64({2, 3}, 24), randn64({1, 2}, 25), randn64({3, 5}, 26)});
  gradcheck("stack", [](const TensorList& in) { return mg::stack({in[0], in[1]}, 1); },
            {randn64({2, 3}, 27), randn64({2, 3}, 28)});
  gradcheck("stack strided", [](const TensorList& in) { return mg::stack({in[0].t(), in[1]}, -1); },
            {randn64({3, 2}, 29), randn64({2, 3}, 30)});
  // an input that needs no gradient gets none, the others get theirs
  Tensor a = f64({1, 2}, {2}).requires_grad_();
  Tensor b = f64({3}, {1});
  (mg::cat({b, a}) * f64({5, 6, 7}, {3})).sum().backward();
  require_close(a.grad(), f64({6, 7}, {2}));
  CHECK_FALSE(b.grad().defined());
}

// ---------------------------------------------------------------- split / chunk / repeat

TEST_CASE("split, split_with_sizes, chunk: piece sizes and values, as torch", "[index]") {
  Tensor x = mg::arange(5, mg::kFloat64);
  TensorList s = x.split(2);
  REQUIRE(s.size() == 3);
  require_close(s[0], f64({0, 1}, {2}));
  require_close(s[2], f64({4}, {1}));
  TensorList w = mg::split_with_sizes(x, {1, 0, 4});
  REQUIRE(w.size() == 3);
  CHECK(w[1].sizes() == mg::Shape{0});
  require_close(w[2], f64({1, 2, 3, 4}, {4}));
  // chunk uses ceil(n / chunks)-sized pieces, so it can return fewer than asked
  TensorList c = mg::arange(6, mg::kFloat64).chunk(4);
  REQUIRE(c.size() == 3);
  for (const Tensor& p : c) CHECK(p.sizes() == mg::Shape{2});
  TensorList c5 = x.chunk(3);
  REQUIRE(c5.size() == 3);
  require_close(c5[2], f64({4}, {1}));
  CHECK(mg::chunk(mg::zeros({0, 2}), 3).size() == 3);
  CHECK(mg::split(mg::zeros({0, 2}), 2).size() == 1);
  TensorList cols = f64({1, 2, 3, 4, 5, 6}, {2, 3}).chunk(3, -1);
  REQUIRE(cols.size() == 3);
  require_close(cols[1], f64({2, 5}, {2, 1}));
  CHECK(x.split(10).size() == 1);
}

TEST_CASE("split and chunk pieces: gradients", "[index]") {
  gradcheck("split piece", [](const TensorList& in) { return in[0].split(2, 1)[1] * 3.0; }, {randn64({2, 5}, 31)});
  gradcheck("split pieces recombined", [](const TensorList& in) {
    TensorList p = in[0].t().split(2, 0);
    return mg::cat({p[2], p[0] * p[1]});
  }, {randn64({3, 5}, 32)});
  gradcheck("chunk pieces", [](const TensorList& in) {
    TensorList p = mg::chunk(in[0].t(), 2, 1);
    return p[0] - p[1] * 2.0;
  }, {randn64({4, 3}, 33)});
  gradcheck("split_with_sizes piece", [](const TensorList& in) {
    return mg::split_with_sizes(in[0], {1, 3}, 0)[1];
  }, {randn64({4, 2}, 34)});
}

TEST_CASE("repeat: values, extra leading dims, fresh storage", "[index]") {
  Tensor x = f64({1, 2}, {2});
  Tensor r = x.repeat({2, 2});
  CHECK(r.sizes() == mg::Shape{2, 4});
  require_close(r, f64({1, 2, 1, 2, 1, 2, 1, 2}, {2, 4}));
  Tensor m = f64({1, 2, 3, 4}, {2, 2});
  require_close(m.repeat({1, 2}), f64({1, 2, 1, 2, 3, 4, 3, 4}, {2, 4}));
  require_close(m.repeat({2, 1}), f64({1, 2, 3, 4, 1, 2, 3, 4}, {4, 2}));
  require_close(m.t().repeat({1, 2}), f64({1, 3, 1, 3, 2, 4, 2, 4}, {2, 4}));
  Tensor lead = f64({5, 6}, {2, 1}).repeat({2, 1, 3});
  CHECK(lead.sizes() == mg::Shape{2, 2, 3});
  require_close(lead, f64({5, 5, 5, 6, 6, 6, 5, 5, 5, 6, 6, 6}, {2, 2, 3}));
  CHECK(m.repeat({0, 3}).sizes() == mg::Shape{0, 6});
  Tensor same = m.repeat({1, 1});
  CHECK_FALSE(same.shares_storage(m));
  require_close(same, m);
  require_close(f64({4}, {}).repeat({3}), f64({4, 4, 4}, {3}));
  CHECK(ints(i32({1, 2}).repeat({2})) == std::vector<int32_t>{1, 2, 1, 2});
}

TEST_CASE("repeat: gradients", "[index]") {
  gradcheck("repeat", [](const TensorList& in) { return in[0].repeat({2, 3}); }, {randn64({2, 2}, 35)});
  gradcheck("repeat strided with lead dims", [](const TensorList& in) {
    return in[0].t().repeat({2, 1, 2});
  }, {randn64({3, 2}, 36)});
  gradcheck("repeat of expanded", [](const TensorList& in) { return in[0].expand({2, 3}).repeat({1, 2}); },
            {randn64({3}, 37)});
  Tensor leaf = f64({1, 2}, {2}).requires_grad_();
  leaf.repeat({3, 2}).sum().backward();
  require_close(leaf.grad(), f64({6, 6}, {2}));
  Tensor empty_leaf = f64({1, 2}, {2}).requires_grad_();
  (empty_leaf.repeat({0, 1}).sum() + empty_leaf.sum()).backward();
  require_close(empty_leaf.grad(), f64({1, 1}, {2}));
}

TEST_CASE("index ops record nothing without grad", "[index]") {
  Tensor x = randn64({3, 4}, 38);
  CHECK_FALSE(x.index_select(0, i32({1})).requires_grad());
  CHECK_FALSE(std::get<0>(x.topk(2)).requires_grad());
  CHECK_FALSE(mg::cat({x, x}).requires_grad());
  CHECK_FALSE(x.repeat({2, 1}).requires_grad());
  Tensor leaf = randn64({3, 4}, 39).requires_grad_();
  mg::NoGradGuard no_grad;
  CHECK_FALSE(leaf.masked_fill(i32({1, 0, 0, 1}, {4}), 0).requires_grad());
  CHECK_FALSE(mg::stack({leaf, leaf}).requires_grad());
}

// ---------------------------------------------------------------- bad input

TEST_CASE("index ops reject bad input with the op and the shapes", "[index]") {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  using Catch::Contains;

  REQUIRE_THROWS_AS(x.index_select(1, i32({5})), mg::Error);
  REQUIRE_THROWS_WITH(x.index_select(1, i32({0, 5})),
                      Contains("index_select") && Contains("index 5") && Contains("[0, 3)") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(x.index_select(0, i32({-1})), Contains("index_select") && Contains("index -1"));
  REQUIRE_THROWS_WITH(x.index_select(0, f64({0}, {1})), Contains("index_select") && Contains("int32"));
  REQUIRE_THROWS_WITH(x.index_select(0, i32({0, 1}, {1, 2})), Contains("index_select") && Contains("1-d"));
  REQUIRE_THROWS_WITH(x.index_select(2, i32({0})), Contains("index_select") && Contains("dim 2"));

  REQUIRE_THROWS_WITH(x.index_add(0, i32({0, 1}), f64({1, 2, 3}, {1, 3})),
                      Contains("index_add") && Contains("[1, 3]") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(x.index_add(0, i32({2}), f64({1, 2, 3}, {1, 3})),
                      Contains("index_add") && Contains("index 2") && Contains("[0, 2)"));
  REQUIRE_THROWS_WITH(x.index_add(0, i32({0}), i32({1, 2, 3}, {1, 3})),
                      Contains("index_add") && Contains("dtype"));

  REQUIRE_THROWS_WITH(x.gather(1, i32({3, 0}, {1, 2})), Contains("gather") && Contains("index 3"));
  REQUIRE_THROWS_WITH(x.gather(1, i32({0, 0}, {2})), Contains("gather") && Contains("[2]"));
  REQUIRE_THROWS_WITH(x.scatter_add(0, i32({0, 2}, {1, 2}), x), Contains("scatter_add") && Contains("index 2"));
  REQUIRE_THROWS_WITH(x.scatter_add(0, i32({0, 1, 0, 1}, {1, 4}), x),
                      Contains("scatter_add") && Contains("[1, 4]"));

  REQUIRE_THROWS_WITH(x.masked_fill(i32({1, 0}), 0), Contains("masked_fill") && Contains("[2]") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(x.masked_fill(i32({1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0}, {2, 2, 3}), 0),
                      Contains("masked_fill") && Contains("[2, 2, 3]"));

  REQUIRE_THROWS_WITH(mg::one_hot(i32({0, 3}), 3), Contains("one_hot") && Contains("label 3") && Contains("[0, 3)"));
  REQUIRE_THROWS_WITH(mg::one_hot(i32({0, -1})), Contains("one_hot") && Contains("label -1"));
  REQUIRE_THROWS_WITH(mg::one_hot(f64({0, 1}, {2})), Contains("one_hot") && Contains("int32"));
  REQUIRE_THROWS_WITH(mg::one_hot(i32({}, {0})), Contains("one_hot") && Contains("num_classes"));

  REQUIRE_THROWS_WITH(x.topk(4), Contains("topk") && Contains("k = 4") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(x.topk(-1), Contains("topk") && Contains("k = -1"));
  REQUIRE_THROWS_WITH(x.topk(1, 2), Contains("topk") && Contains("dim 2"));
  REQUIRE_THROWS_WITH(x.sort(3), Contains("sort") && Contains("dim 3"));

  REQUIRE_THROWS_WITH(mg::cat({x, f64({1, 2}, {1, 2})}),
                      Contains("cat") && Contains("[2, 3]") && Contains("[1, 2]") && Contains("tensor 1"));
  REQUIRE_THROWS_WITH(mg::cat({x, f64({1, 2, 3}, {3})}), Contains("cat") && Contains("dims"));
  REQUIRE_THROWS_WITH(mg::cat({x, i32({1, 2, 3}, {1, 3})}), Contains("cat") && Contains("dtype"));
  REQUIRE_THROWS_WITH(mg::cat({}), Contains("cat") && Contains("non-empty"));
  REQUIRE_THROWS_WITH(mg::cat({x, x}, 2), Contains("cat") && Contains("dim 2"));
  REQUIRE_THROWS_WITH(mg::cat({f64({1}, {}), f64({2}, {})}), Contains("cat") && Contains("zero-dimensional"));
  REQUIRE_THROWS_WITH(mg::stack({x, x.t()}),
                      Contains("stack") && Contains("[2, 3]") && Contains("[3, 2]") && Contains("tensor 1"));
  REQUIRE_THROWS_WITH(mg::stack({x, x}, 3), Contains("stack") && Contains("dim 3"));
  REQUIRE_THROWS_WITH(mg::stack({}), Contains("stack"));

  REQUIRE_THROWS_WITH(x.split(0, 1), Contains("split") && Contains("split_size") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(mg::split_with_sizes(x, {1, 1}, 1),
                      Contains("split_with_sizes") && Contains("[1, 1]") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(mg::split_with_sizes(x, {-1, 4}, 1), Contains("split_with_sizes") && Contains("-1"));
  REQUIRE_THROWS_WITH(x.chunk(0), Contains("chunk") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(f64({1}, {}).chunk(2), Contains("chunk") && Contains("0-d"));

  REQUIRE_THROWS_WITH(x.repeat({2}), Contains("repeat") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(x.repeat({1, -2}), Contains("repeat") && Contains("-2"));
}

// The CPU's index validation throws at once, with the op's own text for the first bad value in
// index order; the GPU's reports later (tests/test_cuda.cpp).
TEST_CASE("check_index_range: the first bad value in index order, ignore excluded", "[index]") {
  mg::Backend& cpu = mg::backend_for(mg::Device::cpu());
  const mg::IndexErrorMessage message = [](int32_t v) { return "bad " + std::to_string(v); };
  CHECK_NOTHROW(cpu.check_index_range(i32({0, 4, 2}), 5, std::nullopt, message));
  CHECK_NOTHROW(cpu.check_index_range(i32({}, {0}), 0, std::nullopt, message));
  CHECK_THROWS_WITH(cpu.check_index_range(i32({0, 7, -1, 9}), 5, std::nullopt, message), "bad 7");
  CHECK_THROWS_WITH(cpu.check_index_range(i32({3, -1, 7}, {3, 1}), 5, std::nullopt, message), "bad -1");
  CHECK_THROWS_WITH(cpu.check_index_range(i32({5}), 5, std::nullopt, message), "bad 5");
  // ignore exempts exactly its value, in range or not
  CHECK_NOTHROW(cpu.check_index_range(i32({-100, 3, -100}), 5, -100, message));
  CHECK_THROWS_WITH(cpu.check_index_range(i32({-100, -1, 8}), 5, -100, message), "bad -1");
  CHECK_THROWS_WITH(cpu.check_index_range(i32({2, -100}), 5, 2, message), "bad -100");
  // the ops' whole messages
  const Tensor x = mg::zeros({5, 3}, mg::kFloat64);
  CHECK_THROWS_WITH(x.index_select(0, i32({1, 9, 2, 11})),
                    "index_select: index 9 is out of range [0, 5) for dim 0 of input shape [5, 3]");
  CHECK_THROWS_WITH(mg::cross_entropy(x, i32({0, 1, 3, -100, 4})),
                    "cross_entropy: target label 3 is out of range [0, 3) for 3 classes (logits shape "
                    "[5, 3], ignore_index -100)");
  CHECK_THROWS_WITH(mg::one_hot(i32({0, -2, 5}), 4),
                    "one_hot: label -2 is out of range [0, 4) in labels of shape [3]");
}
