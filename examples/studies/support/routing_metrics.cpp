// Agreement of routing with a grouping of the classes, up to the best group -> expert map; the
// assignment is the Hungarian algorithm in its O(n^2 m) potentials form (as in e-maxx's write-up
// of Kuhn-Munkres), minimizing the negated counts.
#include "examples/studies/support/routing_metrics.hpp"

#include <algorithm>
#include <limits>

#include "engine/error.hpp"
#include "engine/generator.hpp"

namespace mg::study {
namespace {

// Minimum-cost assignment of each of the n rows to a distinct column of cost[n][m], n <= m.
// Returns the column of each row.
std::vector<int64_t> hungarian(const std::vector<std::vector<double>>& cost) {
  const int64_t n = static_cast<int64_t>(cost.size()), m = n ? static_cast<int64_t>(cost[0].size()) : 0;
  const double inf = std::numeric_limits<double>::infinity();
  // 1-based potentials u (rows), v (columns); row_of[j] is the row matched to column j (0: none).
  std::vector<double> u(n + 1, 0.0), v(m + 1, 0.0);
  std::vector<int64_t> row_of(m + 1, 0), previous(m + 1, 0);
  for (int64_t i = 1; i <= n; ++i) {
    row_of[0] = i;
    int64_t j0 = 0;
    std::vector<double> min_slack(m + 1, inf);
    std::vector<bool> used(m + 1, false);
    do {  // grow an alternating tree from row i until it reaches a free column
      used[j0] = true;
      const int64_t i0 = row_of[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double slack = cost[i0 - 1][j - 1] - u[i0] - v[j];
        if (slack < min_slack[j]) {
          min_slack[j] = slack;
          previous[j] = j0;
        }
        if (min_slack[j] < delta) {
          delta = min_slack[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= m; ++j) {
        if (used[j]) {
          u[row_of[j]] += delta;
          v[j] -= delta;
        } else {
          min_slack[j] -= delta;
        }
      }
      j0 = j1;
    } while (row_of[j0] != 0);
    do {  // flip the augmenting path
      const int64_t j1 = previous[j0];
      row_of[j0] = row_of[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> column_of(n, -1);
  for (int64_t j = 1; j <= m; ++j)
    if (row_of[j] > 0) column_of[row_of[j] - 1] = j - 1;
  return column_of;
}

}  // namespace

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

GroupAssignment best_assignment(const std::vector<std::vector<double>>& counts) {
  const int64_t G = static_cast<int64_t>(counts.size()), E = G ? static_cast<int64_t>(counts[0].size()) : 0;
  GroupAssignment out;
  out.expert_of_group.assign(G, -1);
  double total = 0;
  for (const auto& row : counts) {
    MG_CHECK(static_cast<int64_t>(row.size()) == E, "best_assignment: rows of different lengths");
    for (double c : row) total += c;
  }
  if (G == 0 || E == 0 || total <= 0) return out;
  // The solver needs rows <= columns: with more groups than experts, assign experts to groups.
  const bool transpose = G > E;
  std::vector<std::vector<double>> cost(transpose ? E : G, std::vector<double>(transpose ? G : E));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t e = 0; e < E; ++e) (transpose ? cost[e][g] : cost[g][e]) = -counts[g][e];
  const std::vector<int64_t> match = hungarian(cost);
  for (int64_t r = 0; r < static_cast<int64_t>(match.size()); ++r) {
    if (match[r] < 0) continue;
    if (transpose) out.expert_of_group[match[r]] = r;
    else out.expert_of_group[r] = match[r];
  }
  double agreed = 0;
  for (int64_t g = 0; g < G; ++g)
    if (out.expert_of_group[g] >= 0) agreed += counts[g][out.expert_of_group[g]];
  out.agreement = agreed / total;
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
