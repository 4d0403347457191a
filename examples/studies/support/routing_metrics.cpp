// Agreement of routing with a grouping of the classes, up to the best group -> expert map
// (moe::best_assignment), and its chance level.
#include "examples/studies/support/routing_metrics.hpp"

#include <algorithm>
#include <limits>

#include "engine/error.hpp"
#include "engine/generator.hpp"

namespace mg::study {

std::vector<std::vector<double>> group_by_expert(const CountMatrix& class_by_expert,
                                                 const std::vector<int32_t>& class_to_group, int64_t num_groups) {
  MG_CHECK(class_by_expert.size() == class_to_group.size(), "group_by_expert: ", class_by_expert.size(),
           " classes of counts but a group map of ", class_to_group.size());
  const size_t E = class_by_expert.empty() ? 0 : class_by_expert[0].size();
  std::vector<std::vector<double>> out(num_groups, std::vector<double>(E, 0.0));
  for (size_t c = 0; c < class_by_expert.size(); ++c) {
    const int32_t g = class_to_group[c];
    MG_CHECK(g >= 0 && g < num_groups, "group_by_expert: class ", c, " maps to group ", g, ", outside 0..",
             num_groups - 1);
    for (size_t e = 0; e < E; ++e) out[g][e] += static_cast<double>(class_by_expert[c][e]);
  }
  return out;
}


ChanceAgreement shuffled_group_agreement(const CountMatrix& class_by_expert, const std::vector<int32_t>& class_to_group,
                                         int64_t num_groups, int64_t draws, uint64_t seed) {
  MG_CHECK(draws >= 1, "shuffled_group_agreement: draws must be at least 1, got ", draws);
  Generator gen(seed);
  const int64_t C = static_cast<int64_t>(class_to_group.size());
  std::vector<double> agreements;
  for (int64_t d = 0; d < draws; ++d) {
    const std::vector<int32_t> perm = randperm(C, &gen).to_vector<int32_t>();
    std::vector<int32_t> shuffled(C);
    for (int64_t c = 0; c < C; ++c) shuffled[c] = class_to_group[perm[c]];
    agreements.push_back(best_assignment(group_by_expert(class_by_expert, shuffled, num_groups)).agreement);
  }
  std::sort(agreements.begin(), agreements.end());
  ChanceAgreement out;
  for (double a : agreements) out.mean += a / static_cast<double>(draws);
  out.p95 = agreements[std::min<size_t>(agreements.size() - 1, static_cast<size_t>(0.95 * draws))];
  return out;
}

double max_share(const std::vector<double>& fraction) {
  return fraction.empty() ? 0.0 : *std::max_element(fraction.begin(), fraction.end());
}

}  // namespace mg::study
