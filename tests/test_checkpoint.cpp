// safetensors files and training checkpoints: round trips, the byte layout, a file written by
// another implementation (tests/reference/make_safetensors_fixture.py), corrupt files, strict
// module loading, and atomic writes.
#include <catch2/catch.hpp>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <numbers>

#include "moegrad.hpp"
#include "nn/checkpoint.hpp"
#include "nn/containers.hpp"
#include "nn/layers.hpp"
#include "nn/normalization.hpp"
#include "nn/safetensors.hpp"

namespace fs = std::filesystem;
using mg::Tensor;
using mg::nn::NamedTensors;

namespace {

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("moegrad_test_checkpoint_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i, n >>= 8) out[i] = static_cast<char>(n & 0xff);
  return out;
}

// A safetensors file from its parts, for files moegrad's writer would never produce.
std::string raw_file(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

template <class T>
std::string bytes_of(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Same dtype, shape and bytes (NaN payloads and the sign of zero included).
bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.sizes() != b.sizes()) return false;
  Tensor ca = a.detach().contiguous(), cb = b.detach().contiguous();
  return a.numel() == 0 || std::memcmp(ca.raw_data(), cb.raw_data(), a.numel() * a.element_size()) == 0;
}

NamedTensors clone_all(const NamedTensors& tensors) {
  NamedTensors out;
  for (const auto& [n, t] : tensors) out.emplace_back(n, t.detach().clone());
  return out;
}

bool all_bit_equal(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].first != b[i].first || !bit_equal(a[i].second, b[i].second)) return false;
  return true;
}

std::vector<std::string> names_of(const NamedTensors& tensors) {
  std::vector<std::string> out;
  for (const auto& kv : tensors) out.push_back(kv.first);
  return out;
}

// A small mixture-of-experts-shaped model: the expert count is the architecture that changes.
struct ToyMoE : mg::nn::Module {
  int64_t d_model, num_experts;
  std::shared_ptr<mg::nn::Linear> gate;
  std::shared_ptr<mg::nn::ModuleList> experts;
  std::shared_ptr<mg::nn::BatchNorm1d> norm;
  Tensor tokens_per_expert;  // an int32 buffer, so checkpoints carry every dtype
  ToyMoE(int64_t d_model_, int64_t num_experts_, int64_t expert_hidden = -1)
      : Module("ToyMoE"), d_model(d_model_), num_experts(num_experts_) {
    gate = register_module("gate", std::make_shared<mg::nn::Linear>(d_model, num_experts));
    experts = register_module("experts", std::make_shared<mg::nn::ModuleList>());
    for (int64_t e = 0; e < num_experts; ++e)
      experts->push_back(std::make_shared<mg::nn::Linear>(d_model, expert_hidden > 0 ? expert_hidden : d_model));
    norm = register_module("norm", std::make_shared<mg::nn::BatchNorm1d>(d_model));
    tokens_per_expert = register_buffer("tokens_per_expert", mg::arange(num_experts, mg::kInt32));
  }
  std::string config_json() const {
    return "{\"d_model\":" + std::to_string(d_model) + ",\"num_experts\":" + std::to_string(num_experts) + "}";
  }
};

// Gives every parameter and buffer new values, so a load that does nothing is caught.
void scramble(mg::nn::Module& m, uint64_t seed) {
  mg::Generator gen(seed);
  mg::NoGradGuard no_grad;
  for (auto& [n, t] : m.state_dict()) {
    if (t.is_floating_point()) t.copy_(mg::randn(t.sizes(), t.dtype(), &gen));
    else t.copy_(mg::randint(0, 1000, t.sizes(), mg::kInt32, &gen));
  }
}

const std::string kFixture = std::string(MOEGRAD_TEST_DATA_DIR) + "/fixture.safetensors";

}  // namespace

// ---------------------------------------------------------------- safetensors

TEST_CASE("safetensors round trip: every dtype, 0-d, empty and non-contiguous tensors", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  mg::Generator gen(11);
  Tensor f32 = mg::randn({2, 3}, mg::kFloat32, &gen);
  Tensor base = mg::randn({3, 4}, mg::kFloat64, &gen);
  Tensor transposed = base.t();                 // strides [1, 4]
  Tensor sliced = base.slice(1, 1, 4, 2);       // offset and step
  Tensor expanded = mg::tensor({7, 8}).unsqueeze(0).expand({3, 2});  // stride 0
  Tensor special = mg::from_vector(std::vector<float>{NAN, -0.0f, INFINITY, -INFINITY, FLT_MIN / 4},
                                   {5}, mg::kFloat32);
  const NamedTensors saved = {
      {"f32", f32},
      {"f64.transposed", transposed},
      {"f64.sliced", sliced},
      {"i32.expanded", expanded},
      {"scalar", mg::scalar_tensor(-2.75, mg::kFloat64)},
      {"scalar_i32", mg::scalar_tensor(-7, mg::kInt32)},
      {"empty", mg::zeros({0, 5})},
      {"empty_i32", mg::zeros({4, 0, 2}, mg::kInt32)},
      {"special", special},
      {"requires_grad", mg::ones({2}, mg::requires_grad())},
  };
  REQUIRE_FALSE(transposed.is_contiguous());
  REQUIRE_FALSE(sliced.is_contiguous());
  const Tensor transposed_before = transposed.clone();
  mg::nn::save_safetensors(path, saved, {{"producer", "moegrad"}, {"note", "ünïcode ok"}});

  auto file = mg::nn::load_safetensors(path);
  CHECK(names_of(file.tensors) == names_of(saved));  // file order is the order given
  REQUIRE(file.tensors.size() == saved.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    INFO(saved[i].first);
    const Tensor& got = file.tensors[i].second;
    CHECK(bit_equal(got, saved[i].second));
    // (numel == 0: the engine's is_contiguous() says false for a fresh [4, 0, 2]; torch says true)
    CHECK((got.is_contiguous() || got.numel() == 0));
    CHECK_FALSE(got.requires_grad());
  }
  CHECK(file.tensors[4].second.dim() == 0);
  CHECK(file.tensors[6].second.sizes() == mg::Shape{0, 5});
  CHECK(file.metadata == std::map<std::string, std::string>{{"producer", "moegrad"}, {"note", "ünïcode ok"}});
  CHECK(bit_equal(transposed, transposed_before));  // saving does not disturb the source
  CHECK(mg::nn::load_safetensors_metadata(path) == file.metadata);

  // Nothing but the file itself is left in the directory.
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
}

TEST_CASE("safetensors header is the documented byte layout", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "layout.safetensors";
  mg::nn::save_safetensors(path,
                           {{"a", mg::tensor({1.0f, 2.0f})}, {"b", mg::scalar_tensor(3, mg::kInt32)}},
                           {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() >= 8);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(bytes[i]);
  // Compact JSON, __metadata__ first, tensors in order with packed offsets, padded with spaces so
  // that the data starts 8-byte aligned: what the reference writer produces.
  const std::string json =
      R"({"__metadata__":{"k":"v"},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I32","shape":[],"data_offsets":[8,12]}})";
  const std::string padded = json + std::string((8 - json.size() % 8) % 8, ' ');
  CHECK(header_size == padded.size());
  CHECK((8 + header_size) % 8 == 0);
  REQUIRE(bytes.size() == 8 + padded.size() + 12);
  CHECK(bytes.substr(8, header_size) == padded);
  CHECK(bytes.substr(8 + header_size) == bytes_of(std::vector<float>{1.0f, 2.0f}) + bytes_of(std::vector<int32_t>{3}));
}

TEST_CASE("safetensors reads a file written by another implementation", "[checkpoint]") {
  // tests/reference/make_safetensors_fixture.py: the header lists keys alphabetically, the data is
  // laid out F64 first, Python's json spacing, metadata, a 0-d and an empty tensor.
  REQUIRE(fs::exists(kFixture));
  CHECK(fs::file_size(kFixture) < 4096);
  auto file = mg::nn::load_safetensors(kFixture);
  CHECK(names_of(file.tensors) == std::vector<std::string>{"bias", "scale", "empty", "ids", "weight"});
  CHECK(file.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"producer", "make_safetensors_fixture.py"}});
  std::map<std::string, Tensor> t(file.tensors.begin(), file.tensors.end());

  CHECK(t["weight"].dtype() == mg::kFloat32);
  CHECK(t["weight"].sizes() == mg::Shape{2, 3});
  const auto w = t["weight"].to_vector<float>();
  CHECK(w[0] == 0.1f);
  CHECK(w[1] == -1.5f);
  CHECK(w[2] == std::numeric_limits<float>::denorm_min());
  CHECK((w[3] == 0.0f && std::signbit(w[3])));
  CHECK(w[4] == std::numeric_limits<float>::infinity());
  CHECK(w[5] == FLT_MAX);

  CHECK(t["bias"].dtype() == mg::kFloat64);
  CHECK(t["bias"].to_vector<double>() == std::vector<double>{1e-300, -2.5, 1.0 / 3.0});
  CHECK(t["scale"].dtype() == mg::kFloat64);
  CHECK(t["scale"].dim() == 0);
  CHECK(t["scale"].item<double>() == std::numbers::pi);
  CHECK(t["ids"].dtype() == mg::kInt32);
  CHECK(t["ids"].sizes() == mg::Shape{2, 2});
  CHECK(t["ids"].to_vector<int32_t>() == std::vector<int32_t>{INT32_MIN, -1, 0, INT32_MAX});
  CHECK(t["empty"].dtype() == mg::kFloat32);
  CHECK(t["empty"].sizes() == mg::Shape{0, 3});

  // Written back by moegrad and read again, nothing changes.
  TempDir dir;
  mg::nn::save_safetensors(dir / "again.safetensors", file.tensors, file.metadata);
  auto again = mg::nn::load_safetensors(dir / "again.safetensors");
  CHECK(all_bit_equal(again.tensors, file.tensors));
  CHECK(again.metadata == file.metadata);
}

TEST_CASE("safetensors rejects corrupt files, naming the file and the byte offset", "[checkpoint]") {
  TempDir dir;
  const std::string good_path = dir / "good.safetensors";
  mg::nn::save_safetensors(good_path, {{"w", mg::ones({4, 4})}, {"b", mg::zeros({4}, mg::kFloat64)}});
  const std::string good = read_bytes(good_path);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(good[i]);
  const uint64_t data_start = 8 + header_size;
  REQUIRE(good.size() == data_start + 64 + 32);
  const std::string path = dir / "bad.safetensors";
  auto loads = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    return mg::nn::load_safetensors(path);
  };
  // One matcher: Catch's `&&` keeps references to its operands, which must outlive the check.
  auto where = [&](uint64_t offset) { return Catch::Contains(path + ": at byte " + std::to_string(offset) + ":"); };
  // Errors about one entry point at its key: the hand-written headers below open with {"name".
  const uint64_t key = 9;

  SECTION("truncated at several points") {
    for (uint64_t cut : {uint64_t{0}, uint64_t{5}})
      CHECK_THROWS_WITH(loads(good.substr(0, cut)), where(cut) && Catch::Contains("too short"));
    for (uint64_t cut : {uint64_t{8}, uint64_t{9}, data_start / 2, data_start - 1})
      CHECK_THROWS_WITH(loads(good.substr(0, cut)), where(0) && Catch::Contains("runs past the end"));
    // Inside the data: names the tensor that does not fit and where the file ends.
    CHECK_THROWS_WITH(loads(good.substr(0, data_start)),
                      where(data_start) && Catch::Contains("'w'") && Catch::Contains("truncated"));
    CHECK_THROWS_WITH(loads(good.substr(0, data_start + 70)),
                      where(data_start + 70) && Catch::Contains("'b'") && Catch::Contains("truncated"));
    CHECK_THROWS_WITH(loads(good.substr(0, good.size() - 1)),
                      where(good.size() - 1) && Catch::Contains("'b'"));
    CHECK_THROWS_WITH(mg::nn::load_safetensors_metadata(path), Catch::Contains("truncated"));
  }
  SECTION("bad header size") {
    CHECK_THROWS_WITH(loads(u64_le(uint64_t{1} << 40) + good.substr(8)),
                      where(0) && Catch::Contains("header size 1099511627776"));
    CHECK_THROWS_WITH(loads(u64_le(~uint64_t{0}) + good.substr(8)), where(0));
    // Too small: the JSON is cut off.
    CHECK_THROWS_WITH(loads(u64_le(header_size - 8) + good.substr(8)),
                      Catch::Contains(path) && Catch::Contains("not valid JSON"));
  }
  SECTION("bad JSON") {
    CHECK_THROWS_WITH(loads(raw_file("{\"w\": {\"dtype\" \"F32\"}}", "")),
                      where(8 + 19) && Catch::Contains("not valid JSON"));  // end of the bad token "F32"
    CHECK_THROWS_WITH(loads(raw_file("", "")), where(8) && Catch::Contains("not valid JSON"));
    CHECK_THROWS_WITH(loads(raw_file("[1, 2]", "")), where(8) && Catch::Contains("not a JSON object"));
    CHECK_THROWS_WITH(loads(raw_file(R"({"w": [1]})", "")), where(key) && Catch::Contains("'w'"));
    CHECK_THROWS_WITH(loads(raw_file(R"({"w": {"dtype": "F32", "shape": [1]}})", "1234")),
                      where(key) && Catch::Contains("missing \"data_offsets\""));
    CHECK_THROWS_WITH(loads(raw_file(R"({"__metadata__": {"k": 1}})", "")),
                      where(key) && Catch::Contains("must be a string"));
    CHECK_THROWS_WITH(loads(raw_file(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", "")),
                      where(key) && Catch::Contains("non-negative"));
  }
  SECTION("bad dtype") {
    const std::string header = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, )"
                               R"("h": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]}})";
    const uint64_t at = 8 + header.find("\"h\"");
    CHECK_THROWS_WITH(loads(raw_file(header, std::string(8, '\0'))),
                      where(at) && Catch::Contains("'h'") && Catch::Contains("unsupported dtype \"F16\""));
    CHECK_THROWS_WITH(loads(raw_file(R"({"a": {"dtype": 3, "shape": [], "data_offsets": [0, 4]}})", "1234")),
                      where(key) && Catch::Contains("dtype must be a string"));
  }
  SECTION("bad offsets") {
    auto entry = [](const std::string& name, int64_t begin, int64_t end, const std::string& shape = "[2]") {
      return "\"" + name + "\": {\"dtype\": \"F32\", \"shape\": " + shape + ", \"data_offsets\": [" +
             std::to_string(begin) + ", " + std::to_string(end) + "]}";
    };
    const std::string data(16, '\0');
    // size does not match shape * itemsize
    CHECK_THROWS_WITH(loads(raw_file("{" + entry("a", 0, 12) + "}", data.substr(0, 12))),
                      where(key) && Catch::Contains("span 12 bytes") && Catch::Contains("needs 8"));
    // end before begin
    CHECK_THROWS_WITH(loads(raw_file("{" + entry("a", 8, 0) + "}", data)), where(key) && Catch::Contains("end before"));
    // overlapping
    const std::string overlap = "{" + entry("a", 0, 8) + ", " + entry("b", 4, 12) + "}";
    CHECK_THROWS_WITH(loads(raw_file(overlap, data.substr(0, 12))),
                      where(8 + overlap.size() + 4) && Catch::Contains("overlaps 'a'"));
    // a gap between tensors, and a first tensor that does not start at 0
    const std::string gap = "{" + entry("a", 0, 8) + ", " + entry("b", 12, 20) + "}";
    CHECK_THROWS_WITH(loads(raw_file(gap, data + "1234")),
                      where(8 + gap.size() + 8) && Catch::Contains("4 bytes before tensor 'b'"));
    const std::string late = "{" + entry("a", 4, 12) + "}";
    CHECK_THROWS_WITH(loads(raw_file(late, data.substr(0, 12))), where(8 + late.size()) && Catch::Contains("belong to no tensor"));
    // past the end of the file
    const std::string past = "{" + entry("a", 0, 8) + ", " + entry("b", 8, 16) + "}";
    CHECK_THROWS_WITH(loads(raw_file(past, data.substr(0, 12))),
                      where(8 + past.size() + 12) && Catch::Contains("'b'") && Catch::Contains("truncated"));
    // trailing bytes after the last tensor
    CHECK_THROWS_WITH(loads(good + "xyz"), where(good.size()) && Catch::Contains("3 trailing bytes"));
    // not integers
    CHECK_THROWS_WITH(loads(raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4]}})", "1234")),
                      where(key) && Catch::Contains("data_offsets must be two non-negative integers"));
    // a shape whose byte size overflows
    CHECK_THROWS_WITH(loads(raw_file("{" + entry("a", 0, 8, "[4294967296, 4294967296]") + "}", data.substr(0, 8))),
                      where(key) && Catch::Contains("too large"));
  }
  SECTION("not a file") {
    CHECK_THROWS_WITH(mg::nn::load_safetensors(dir / "missing.safetensors"),
                      Catch::Contains("missing.safetensors") && Catch::Contains("No such file"));
    CHECK_THROWS_WITH(mg::nn::load_safetensors(dir.path.string()), Catch::Contains("not a regular file"));
  }
}

TEST_CASE("save_safetensors rejects bad input before writing anything", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  CHECK_THROWS_WITH(mg::nn::save_safetensors(path, {{"a", mg::ones({1})}, {"a", mg::ones({1})}}),
                    Catch::Contains("duplicate tensor name 'a'"));
  CHECK_THROWS_WITH(mg::nn::save_safetensors(path, {{"__metadata__", mg::ones({1})}}),
                    Catch::Contains("invalid tensor name"));
  CHECK_THROWS_WITH(mg::nn::save_safetensors(path, {{"", mg::ones({1})}}), Catch::Contains("invalid tensor name"));
  CHECK_THROWS_WITH(mg::nn::save_safetensors(path, {{"u", Tensor()}}), Catch::Contains("'u' is undefined"));
  CHECK_THROWS_WITH(mg::nn::save_safetensors(path, {{"a", mg::ones({1})}}, {{"bad", "\xff\xfe"}}),
                    Catch::Contains(path) && Catch::Contains("UTF-8"));
  CHECK(fs::is_empty(dir.path));
}

// ---------------------------------------------------------------- checkpoints

TEST_CASE("checkpoint round trip restores step, RNG states and weights bit-exactly", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  mg::manual_seed(1234);
  ToyMoE model(4, 3);
  scramble(model, 5);
  const NamedTensors weights = clone_all(model.state_dict());

  mg::nn::TrainingState state;
  state.step = 123456789012;
  state.epoch = 7;
  state.model_config_json = model.config_json();
  state.optimizer_tensors = {{"state.0.exp_avg", mg::full({3, 4}, 0.25)},
                             {"state.0.step", mg::scalar_tensor(17, mg::kInt32)},
                             {"state.1.exp_avg_sq", mg::zeros({0})}};
  state.optimizer_json = R"({"groups":[{"lr":0.001,"betas":[0.9,0.999],"weight_decay":0}],"steps":[17]})";
  state.scheduler_json = R"({"last_epoch":6,"base_lrs":[0.01]})";
  state.extra_json = R"({"run":"moe-4x3","best_accuracy":0.875,"notes":null})";
  mg::Generator dropout_gen(~uint64_t{0});  // a seed JSON doubles could not hold
  (void)mg::rand({5});
  (void)mg::rand({3}, {}, &dropout_gen);
  mg::nn::capture_rng_states(state, {{"dropout", &dropout_gen}});
  mg::nn::save_checkpoint(path, model, state);
  const Tensor draw_default = mg::rand({8});
  const Tensor draw_dropout = mg::randn({8}, mg::kFloat64, &dropout_gen);

  // Everything moves on; then the checkpoint brings it back.
  mg::manual_seed(99);
  (void)mg::rand({100});
  dropout_gen.manual_seed(1);
  ToyMoE restored(4, 3);
  scramble(restored, 77);
  REQUIRE_FALSE(all_bit_equal(restored.state_dict(), weights));

  const mg::nn::TrainingState loaded = mg::nn::load_checkpoint(path, restored);
  CHECK(all_bit_equal(restored.state_dict(), weights));
  CHECK(loaded.step == state.step);
  CHECK(loaded.epoch == state.epoch);
  CHECK(loaded.model_config_json == state.model_config_json);
  CHECK(loaded.optimizer_json == state.optimizer_json);
  CHECK(loaded.scheduler_json == state.scheduler_json);
  CHECK(loaded.extra_json == state.extra_json);
  CHECK(loaded.rng == state.rng);
  CHECK(all_bit_equal(loaded.optimizer_tensors, state.optimizer_tensors));

  mg::nn::restore_rng_states(loaded, {{"dropout", &dropout_gen}});
  CHECK(bit_equal(mg::rand({8}), draw_default));
  CHECK(bit_equal(mg::randn({8}, mg::kFloat64, &dropout_gen), draw_dropout));

  // The metadata alone, without a model: enough to build the right architecture first.
  const mg::nn::TrainingState meta = mg::nn::read_checkpoint_metadata(path);
  CHECK(meta.step == state.step);
  CHECK(meta.model_config_json == state.model_config_json);
  CHECK(meta.rng == state.rng);
  CHECK(meta.optimizer_tensors.empty());

  // Readable as a plain safetensors file: tensors under model. and optim.
  const auto file = mg::nn::load_safetensors(path);
  CHECK(file.tensors.front().first == "model.gate.weight");
  CHECK(file.tensors.back().first == "optim.state.1.exp_avg_sq");
  CHECK(file.metadata.count("moegrad.checkpoint") == 1);
}

TEST_CASE("checkpoint JSON fields: empty stays empty, invalid is refused on save", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  ToyMoE model(2, 1);
  mg::nn::save_checkpoint(path, model, {});
  const auto loaded = mg::nn::load_checkpoint(path, model);
  CHECK(loaded.step == 0);
  CHECK(loaded.model_config_json.empty());
  CHECK(loaded.optimizer_json.empty());
  CHECK(loaded.rng.empty());
  CHECK_THROWS_WITH(mg::nn::restore_rng_states(loaded), Catch::Contains("no state for generator(s): default"));

  mg::nn::TrainingState bad;
  bad.scheduler_json = "{\"last_epoch\": ";
  const std::string bad_path = dir / "bad.safetensors";
  CHECK_THROWS_WITH(mg::nn::save_checkpoint(bad_path, model, bad),
                    Catch::Contains(bad_path) && Catch::Contains("scheduler_json is not valid JSON"));
  CHECK_FALSE(fs::exists(bad_path));
}

TEST_CASE("checkpoint load lists every key problem and leaves the model unchanged", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  ToyMoE saved(4, 3);  // experts 0, 1, 2
  scramble(saved, 1);
  mg::nn::TrainingState state;
  state.step = 10;
  state.model_config_json = saved.config_json();
  mg::nn::save_checkpoint(path, saved, state);

  SECTION("missing, unexpected and mismatched keys, all listed") {
    // 2 experts instead of 3 and wider experts: expert 2 is unexpected, the gate and the expert
    // weights mismatch; and a buffer the checkpoint lacks.
    ToyMoE other(4, 2, 5);
    other.register_buffer("router_temperature", mg::ones({1}));
    scramble(other, 2);
    const NamedTensors before = clone_all(other.state_dict());
    try {
      mg::nn::load_checkpoint(path, other);
      FAIL("load_checkpoint accepted a checkpoint of another architecture");
    } catch (const mg::Error& err) {
      const std::string msg = err.what();
      INFO(msg);
      CHECK_THAT(msg, Catch::Contains(path));
      CHECK_THAT(msg, Catch::Contains("missing keys: router_temperature"));
      CHECK_THAT(msg, Catch::Contains("unexpected keys: experts.2.weight, experts.2.bias"));
      CHECK_THAT(msg, Catch::Contains("gate.weight (checkpoint [3, 4], model [2, 4])"));
      CHECK_THAT(msg, Catch::Contains("gate.bias"));
      CHECK_THAT(msg, Catch::Contains("experts.0.weight (checkpoint [4, 4], model [5, 4])"));
      CHECK_THAT(msg, Catch::Contains("experts.1.bias"));
      CHECK_THAT(msg, Catch::Contains("tokens_per_expert (checkpoint [3], model [2])"));
    }
    CHECK(all_bit_equal(other.state_dict(), before));
  }
  SECTION("non-strict load of a changed architecture loads what matches") {
    // An expert added since the checkpoint: the rebuilt model has it, the checkpoint does not.
    const auto meta = mg::nn::read_checkpoint_metadata(path);
    CHECK(meta.model_config_json == R"({"d_model":4,"num_experts":3})");
    ToyMoE grown(4, 3);
    grown.experts->push_back(std::make_shared<mg::nn::Linear>(4, 4));
    scramble(grown, 3);
    const Tensor new_expert = grown.experts->children()[3]->state_dict()[0].second.clone();
    CHECK_THROWS_WITH(mg::nn::load_checkpoint(path, grown), Catch::Contains("missing keys: experts.3.weight, experts.3.bias"));
    CHECK(mg::nn::load_checkpoint(path, grown, /*strict=*/false).step == 10);
    CHECK(bit_equal(grown.gate->weight, saved.gate->weight));
    CHECK(bit_equal(grown.experts->children()[2]->state_dict()[0].second, saved.experts->children()[2]->state_dict()[0].second));
    CHECK(bit_equal(grown.experts->children()[3]->state_dict()[0].second, new_expert));
  }
  SECTION("a file that is not a checkpoint, or a corrupt one, changes nothing") {
    ToyMoE target(4, 3);
    scramble(target, 4);
    const NamedTensors before = clone_all(target.state_dict());
    const std::string plain = dir / "plain.safetensors";
    mg::nn::save_safetensors(plain, saved.state_dict());
    CHECK_THROWS_WITH(mg::nn::load_checkpoint(plain, target),
                      Catch::Contains(plain) && Catch::Contains("not a moegrad checkpoint"));
    const std::string stray = dir / "stray.safetensors";
    NamedTensors tensors;
    for (const auto& [n, t] : saved.state_dict()) tensors.emplace_back("model." + n, t);
    tensors.emplace_back("ema.gate.weight", saved.gate->weight);
    mg::nn::save_safetensors(stray, tensors, mg::nn::load_safetensors_metadata(path));
    CHECK_THROWS_WITH(mg::nn::load_checkpoint(stray, target), Catch::Contains("ema.gate.weight"));
    const std::string newer = dir / "newer.safetensors";
    mg::nn::save_safetensors(newer, tensors, {{"moegrad.checkpoint", R"({"version": 99, "step": 1, "epoch": 0})"}});
    CHECK_THROWS_WITH(mg::nn::load_checkpoint(newer, target), Catch::Contains("format version 99"));
    const std::string cut = dir / "cut.safetensors";
    const std::string bytes = read_bytes(path);
    write_bytes(cut, bytes.substr(0, bytes.size() - 10));
    CHECK_THROWS_WITH(mg::nn::load_checkpoint(cut, target), Catch::Contains(cut) && Catch::Contains("truncated"));
    CHECK(all_bit_equal(target.state_dict(), before));
  }
}

TEST_CASE("checkpoint writes are atomic: a crash or a failed save keeps the previous file", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  ToyMoE model(8, 4);
  scramble(model, 10);
  mg::nn::TrainingState state;
  state.step = 1;
  mg::nn::save_checkpoint(path, model, state);
  const std::string first = read_bytes(path);
  const NamedTensors first_weights = clone_all(model.state_dict());

  auto previous_intact = [&] {
    CHECK(read_bytes(path) == first);
    ToyMoE check(8, 4);
    CHECK(mg::nn::load_checkpoint(path, check).step == 1);
    CHECK(all_bit_equal(check.state_dict(), first_weights));
  };

  SECTION("a writer that crashed mid-write leaves only its temporary file") {
    // What a killed save of step 2 leaves behind: part of the new file under the temporary name.
    scramble(model, 11);
    state.step = 2;
    mg::nn::save_checkpoint(dir / "next.safetensors", model, state);
    const std::string next = read_bytes(dir / "next.safetensors");
    write_bytes(path + ".tmp.999999", next.substr(0, next.size() / 2));
    previous_intact();
    // The next save succeeds regardless, also over a leftover with our own pid.
    write_bytes(path + ".tmp." + std::to_string(::getpid()), "garbage");
    mg::nn::save_checkpoint(path, model, state);
    CHECK(read_bytes(path) == next);
    CHECK_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
  }
  SECTION("the disk fills up mid-write") {
    scramble(model, 12);
    state.step = 2;
    // RLIMIT_FSIZE makes write() fail (EFBIG) past the limit, as a full disk fails (ENOSPC):
    // here in the tensor data, after the header has been written.
    const uint64_t data_start = 8 + static_cast<unsigned char>(first[0]) + 256u * static_cast<unsigned char>(first[1]);
    REQUIRE(data_start + 512 < first.size());
    struct rlimit old_limit {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old_limit;
    small.rlim_cur = data_start + 512;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string error;
    try {
      mg::nn::save_checkpoint(path, model, state);
    } catch (const mg::Error& err) {
      error = err.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    ::signal(SIGXFSZ, old_handler);
    CHECK_THAT(error, Catch::Contains("cannot write") && Catch::Contains(path + " is left as it was"));
    CHECK_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
    previous_intact();
  }
  SECTION("the temporary file cannot be created") {
    fs::create_directory(path + ".tmp." + std::to_string(::getpid()));  // the name is taken
    CHECK_THROWS_WITH(mg::nn::save_checkpoint(path, model, state), Catch::Contains("cannot create"));
    fs::remove(path + ".tmp." + std::to_string(::getpid()));
    previous_intact();
    if (::geteuid() != 0) {  // root writes into read-only directories regardless
      fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
      CHECK_THROWS_WITH(mg::nn::save_checkpoint(path, model, state), Catch::Contains("Permission denied"));
      fs::permissions(dir.path, fs::perms::owner_all);
      previous_intact();
    }
    CHECK_THROWS_WITH(mg::nn::save_checkpoint(dir / "no/such/dir/ckpt.safetensors", model, state),
                      Catch::Contains("no/such/dir/ckpt.safetensors"));
  }
}
