// Training checkpoints: everything needed to resume a run, in one safetensors file.
//
//   tensors       "model.<name>"  the module's state_dict (parameters, then buffers)
//                 "optim.<name>"  the optimizer's state tensors (moments, ...), named by the trainer
//   __metadata__  "moegrad.checkpoint": a JSON object
//                   {"version", "step", "epoch", "model_config", "optimizer", "scheduler",
//                    "rng": {name: {"seed": "<u64>", "offset": "<u64>"}}, "extra"}
//
// The state is kept generic (tensors plus JSON text) so the nn library does not tie checkpoints
// to particular optimizer or scheduler classes: the trainer serializes those into TrainingState.
// The model configuration travels with the weights because the architecture changes during a
// run (experts are added and removed): read_checkpoint_metadata() gives it back without a model,
// so the caller can build the matching architecture before load_checkpoint().
//
// Saving is atomic (see nn/safetensors.hpp): a crash leaves the previous checkpoint intact.
// Loading reads and checks the whole file, the metadata and the model's keys and shapes (all
// missing, unexpected and mismatched names listed) before the model changes at all.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "engine/generator.hpp"
#include "nn/lr_scheduler.hpp"
#include "nn/module.hpp"
#include "nn/optim.hpp"

namespace mg::nn {

inline constexpr int kCheckpointVersion = 1;
// The rng entry that stands for mg::default_generator().
inline constexpr const char* kDefaultGeneratorName = "default";

struct TrainingState {
  int64_t step = 0, epoch = 0;
  // The JSON fields hold JSON text (an object, array, number, ...) or "" for none. They are
  // checked on save and come back re-serialized compactly: equal as JSON, not byte for byte.
  std::string model_config_json;
  NamedTensors optimizer_tensors;
  std::string optimizer_json;  // per-group options, step counts
  std::string scheduler_json;
  // generator name -> (seed, offset): Generator::set_state(seed, offset) resumes its stream.
  std::map<std::string, std::pair<uint64_t, uint64_t>> rng;
  std::string extra_json;  // free-form user fields
};

void save_checkpoint(const std::string& path, const Module& model, const TrainingState& state);

// Loads the weights into `model` and returns the rest. strict = false accepts missing and
// unexpected model keys (loading an older architecture); shapes must always match.
TrainingState load_checkpoint(const std::string& path, Module& model, bool strict = true);

// Everything but the tensors (optimizer_tensors stays empty); reads only the file's header.
TrainingState read_checkpoint_metadata(const std::string& path);

// Records the default generator (as kDefaultGeneratorName) and each named one into state.rng.
void capture_rng_states(TrainingState& state, const std::map<std::string, Generator*>& named = {});
// Sets the default generator and each named one from state.rng; throws, changing none, when the
// checkpoint lacks any of them.
void restore_rng_states(const TrainingState& state, const std::map<std::string, Generator*>& named = {});

// Stores the optimizer's state (tensors as "optim.<name>", scalars as optimizer_json) and, when
// given, the scheduler's state (scheduler_json) into `state`.
void capture_optimizer_state(TrainingState& state, const Optimizer& optimizer,
                             const LRScheduler* scheduler = nullptr);
// The inverse: loads them into an optimizer built over the same parameters (and its scheduler).
// Throws when the checkpoint holds another optimizer type or no optimizer state.
void restore_optimizer_state(const TrainingState& state, Optimizer& optimizer,
                             LRScheduler* scheduler = nullptr);

}  // namespace mg::nn
