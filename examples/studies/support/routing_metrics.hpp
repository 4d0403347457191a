// How well routing follows a known grouping of the classes (domains, superclasses), measured from
// the class-by-expert counts that moe::StatsAccumulator collects.
//
// Expert numbers are arbitrary: a router that sends every footwear image to expert 2 has
// specialized exactly as well as one that sends them to expert 0. So agreement is measured up to
// the best one-to-one map of groups to experts: the map that maximizes the share of inputs whose
// top-1 expert is their group's expert (an assignment problem, solved exactly by
// moe::best_assignment).
//
// What that share would be by chance is itself not 1/E: the best map is chosen after the fact,
// and a router that keeps each class on one expert groups the classes somehow. The chance level
// used here is a permutation test: shuffle which classes form which group (group sizes kept), take
// the best-map agreement of the same counts, repeat.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/stats.hpp"

namespace mg::study {

using CountMatrix = std::vector<std::vector<int64_t>>;  // [class][expert]

// [group][expert]: the rows of class_by_expert summed per group.
std::vector<std::vector<double>> group_by_expert(const CountMatrix& class_by_expert,
                                                 const std::vector<int32_t>& class_to_group, int64_t num_groups);

// The best one-to-one group -> expert map (the Hungarian algorithm: Kuhn 1955, Munkres 1957).
using moe::best_assignment;
using moe::GroupAssignment;

struct ChanceAgreement {
  double mean = 0, p95 = 0;  // of the best-map agreement over the shuffles
};
// The best-map agreement of class_by_expert when the classes are dealt into groups at random
// (each group keeps its number of classes), over `draws` shuffles fixed by `seed`.
ChanceAgreement shuffled_group_agreement(const CountMatrix& class_by_expert, const std::vector<int32_t>& class_to_group,
                                         int64_t num_groups, int64_t draws, uint64_t seed);

// The largest of a set of shares (e.g. StepStats::fraction): 1/E when balanced, 1 when collapsed.
double max_share(const std::vector<double>& fraction);

}  // namespace mg::study
