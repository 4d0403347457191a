// Training checkpoints on top of safetensors: the tensors under "model." and "optim.", the rest as
// one JSON object in the file's metadata. Loading parses and checks all of it before the model
// is touched, and the model's own load_state_dict checks every key and shape before it copies.
#include "nn/checkpoint.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "nn/safetensors.hpp"

namespace mg::nn {

namespace {

using json = nlohmann::ordered_json;  // the caller's JSON comes back in its own key order

constexpr const char* kMetadataKey = "moegrad.checkpoint";
const std::string kModelPrefix = "model.";
const std::string kOptimPrefix = "optim.";

json parse_field(const std::string& path, const char* field, const std::string& text) {
  if (text.empty()) return nullptr;
  try {
    return json::parse(text);
  } catch (const json::parse_error& err) {
    throw Error(mg::detail::concat("save_checkpoint: ", path, ": ", field, " is not valid JSON: ", err.what()));
  }
}

std::string field_text(const json& value) { return value.is_null() ? std::string() : value.dump(); }

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

uint64_t parse_u64(const std::string& path, const std::string& what, const json& value) {
  const std::string text = value.is_string() ? value.get<std::string>() : std::string();
  size_t used = 0;
  uint64_t out = 0;
  bool ok = !text.empty() && text[0] != '-' && text[0] != '+';
  try {
    if (ok) out = std::stoull(text, &used, 10);
  } catch (const std::exception&) {
    ok = false;
  }
  MG_CHECK(ok && used == text.size(), "load_checkpoint: ", path, ": ", what,
           " must be a decimal string of an unsigned 64-bit integer, got ", value.dump());
  return out;
}

// The metadata part of a checkpoint; throws, naming the file and the field, on anything that is
// not what save_checkpoint writes.
TrainingState parse_metadata(const std::string& path, const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find(kMetadataKey);
  MG_CHECK(it != metadata.end(), "load_checkpoint: ", path, ": not a moegrad checkpoint (its "
           "safetensors __metadata__ has no \"", kMetadataKey, "\" entry)");
  json root;
  try {
    root = json::parse(it->second);
  } catch (const json::parse_error& err) {
    throw Error(mg::detail::concat("load_checkpoint: ", path, ": __metadata__ \"", kMetadataKey,
                               "\" is not valid JSON: ", err.what()));
  }
  auto bad = [&](const std::string& what) {
    throw Error(mg::detail::concat("load_checkpoint: ", path, ": __metadata__ \"", kMetadataKey, "\": ", what));
  };
  if (!root.is_object()) bad("expected a JSON object");
  if (!root.contains("version") || !root["version"].is_number_integer()) bad("no integer \"version\"");
  const auto version = root["version"].get<int64_t>();
  if (version < 1 || version > kCheckpointVersion)
    bad(mg::detail::concat("format version ", version, " is not supported (this build reads 1 to ",
                       kCheckpointVersion, ")"));

  auto integer_field = [&](const char* field) {
    if (!root.contains(field) || !root[field].is_number_integer())
      bad(mg::detail::concat("\"", field, "\" must be an integer"));
    return root[field].get<int64_t>();
  };
  TrainingState state;
  state.step = integer_field("step");
  state.epoch = integer_field("epoch");
  auto optional_field = [&](const char* field) { return root.contains(field) ? field_text(root[field]) : ""; };
  state.model_config_json = optional_field("model_config");
  state.optimizer_json = optional_field("optimizer");
  state.scheduler_json = optional_field("scheduler");
  state.extra_json = optional_field("extra");
  if (root.contains("rng")) {
    if (!root["rng"].is_object()) bad("\"rng\" must be an object");
    for (const auto& [name, gen] : root["rng"].items()) {
      if (!gen.is_object() || !gen.contains("seed") || !gen.contains("offset"))
        bad("rng \"" + name + "\" must be {\"seed\": \"<u64>\", \"offset\": \"<u64>\"}");
      state.rng[name] = {parse_u64(path, "rng " + name + " seed", gen["seed"]),
                         parse_u64(path, "rng " + name + " offset", gen["offset"])};
    }
  }
  return state;
}

}  // namespace

void save_checkpoint(const std::string& path, const Module& model, const TrainingState& state) {
  json root = json::object();
  root["version"] = kCheckpointVersion;
  root["step"] = state.step;
  root["epoch"] = state.epoch;
  root["model_config"] = parse_field(path, "model_config_json", state.model_config_json);
  root["optimizer"] = parse_field(path, "optimizer_json", state.optimizer_json);
  root["scheduler"] = parse_field(path, "scheduler_json", state.scheduler_json);
  json rng = json::object();
  // Decimal strings: JSON readers in other languages hold numbers as doubles, which would round
  // seeds and offsets above 2^53.
  for (const auto& [name, seed_offset] : state.rng)
    rng[name] = {{"seed", std::to_string(seed_offset.first)}, {"offset", std::to_string(seed_offset.second)}};
  root["rng"] = std::move(rng);
  root["extra"] = parse_field(path, "extra_json", state.extra_json);

  NamedTensors tensors;
  for (const auto& [name, t] : model.state_dict()) tensors.emplace_back(kModelPrefix + name, t);
  for (const auto& [name, t] : state.optimizer_tensors) tensors.emplace_back(kOptimPrefix + name, t);
  std::string metadata;
  try {
    metadata = root.dump();
  } catch (const json::type_error& err) {  // an rng name that is not UTF-8
    throw Error(mg::detail::concat("save_checkpoint: ", path, ": ", err.what()));
  }
  save_safetensors(path, tensors, {{kMetadataKey, metadata}});
}

TrainingState load_checkpoint(const std::string& path, Module& model, bool strict) {
  SafetensorsFile file = load_safetensors(path);
  TrainingState state = parse_metadata(path, file.metadata);
  NamedTensors model_tensors;
  std::string stray;
  for (auto& [name, t] : file.tensors) {
    if (starts_with(name, kModelPrefix))
      model_tensors.emplace_back(name.substr(kModelPrefix.size()), std::move(t));
    else if (starts_with(name, kOptimPrefix))
      state.optimizer_tensors.emplace_back(name.substr(kOptimPrefix.size()), std::move(t));
    else
      stray += (stray.empty() ? "" : ", ") + name;
  }
  MG_CHECK(stray.empty(), "load_checkpoint: ", path, ": tensors outside \"model.\" and \"optim.\": ", stray);
  try {
    model.load_state_dict(model_tensors, strict);
  } catch (const Error& err) {
    throw Error(mg::detail::concat("load_checkpoint: ", path, ": ", err.what()));
  }
  return state;
}

TrainingState read_checkpoint_metadata(const std::string& path) {
  return parse_metadata(path, load_safetensors_metadata(path));
}

void capture_rng_states(TrainingState& state, const std::map<std::string, Generator*>& named) {
  MG_CHECK(!named.count(kDefaultGeneratorName), "capture_rng_states: the name \"",
           kDefaultGeneratorName, "\" is reserved for the default generator");
  Generator& def = default_generator();
  state.rng[kDefaultGeneratorName] = {def.seed(), def.offset()};
  for (const auto& [name, gen] : named) {
    MG_CHECK(gen != nullptr, "capture_rng_states: generator \"", name, "\" is null");
    state.rng[name] = {gen->seed(), gen->offset()};
  }
}

void restore_rng_states(const TrainingState& state, const std::map<std::string, Generator*>& named) {
  MG_CHECK(!named.count(kDefaultGeneratorName), "restore_rng_states: the name \"",
           kDefaultGeneratorName, "\" is reserved for the default generator");
  std::string missing;
  if (!state.rng.count(kDefaultGeneratorName)) missing = kDefaultGeneratorName;
  for (const auto& [name, gen] : named) {
    MG_CHECK(gen != nullptr, "restore_rng_states: generator \"", name, "\" is null");
    if (!state.rng.count(name)) missing += (missing.empty() ? "" : ", ") + name;
  }
  MG_CHECK(missing.empty(), "restore_rng_states: the checkpoint has no state for generator(s): ", missing);
  const auto& [seed, offset] = state.rng.at(kDefaultGeneratorName);
  default_generator().set_state(seed, offset);
  for (const auto& [name, gen] : named) gen->set_state(state.rng.at(name).first, state.rng.at(name).second);
}

// Scalars go through JSON numbers, which nlohmann prints with round-trip precision, so a resumed
// run continues bit-exactly. JSON has no NaN or infinity (an option may be inf), so those travel
// as the strings "nan", "inf" and "-inf".
namespace {
nlohmann::json scalar_to_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}
double scalar_from_json(const nlohmann::json& j) {
  if (j.is_number()) return j.get<double>();
  const std::string s = j.is_string() ? j.get<std::string>() : std::string();
  if (s == "nan") return std::nan("");
  if (s == "inf") return INFINITY;
  if (s == "-inf") return -INFINITY;
  throw Error("restore_optimizer_state: expected a number, got " + j.dump());
}
}  // namespace

void capture_optimizer_state(TrainingState& state, const Optimizer& optimizer, const LRScheduler* scheduler) {
  const OptimizerStateDict dict = optimizer.state_dict();
  state.optimizer_tensors = dict.tensors;
  nlohmann::json scalars = nlohmann::json::object();
  for (const auto& [k, v] : dict.scalars) scalars[k] = scalar_to_json(v);
  state.optimizer_json = nlohmann::json{{"optimizer", dict.optimizer}, {"scalars", scalars}}.dump();
  if (scheduler) {
    nlohmann::json sched = nlohmann::json::object();
    for (const auto& [k, v] : scheduler->state_dict()) sched[k] = scalar_to_json(v);
    state.scheduler_json = sched.dump();
  }
}

void restore_optimizer_state(const TrainingState& state, Optimizer& optimizer, LRScheduler* scheduler) {
  MG_CHECK(!state.optimizer_json.empty(), "restore_optimizer_state: the checkpoint holds no optimizer state");
  const nlohmann::json j = nlohmann::json::parse(state.optimizer_json);
  MG_CHECK(j.is_object() && j.contains("optimizer") && j.contains("scalars") && j["scalars"].is_object(),
           "restore_optimizer_state: malformed optimizer state ", state.optimizer_json.substr(0, 80));
  OptimizerStateDict dict;
  dict.optimizer = j["optimizer"].get<std::string>();
  dict.tensors = state.optimizer_tensors;
  for (const auto& [k, v] : j["scalars"].items()) dict.scalars[k] = scalar_from_json(v);
  std::map<std::string, double> sched;  // parsed before anything is loaded
  if (scheduler) {
    MG_CHECK(!state.scheduler_json.empty(), "restore_optimizer_state: the checkpoint holds no scheduler state");
    const nlohmann::json parsed = nlohmann::json::parse(state.scheduler_json);  // must outlive the loop
    for (const auto& [k, v] : parsed.items()) sched[k] = scalar_from_json(v);
  }
  optimizer.load_state_dict(dict);
  if (scheduler) scheduler->load_state_dict(sched);
}

}  // namespace mg::nn
