// The synthetic domain data of domain_data.hpp: Gaussian inputs, a per-domain shift, and random
// tanh teachers whose argmax is the label. Everything is drawn from one Generator seeded by
// config.seed, in a fixed order (teachers, calibration sample, train set, test set).
#include "examples/studies/support/domain_data.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "engine/error.hpp"
#include "engine/generator.hpp"
#include "engine/ops.hpp"

namespace mg::study {
namespace {

// Calibration: examples drawn to balance a teacher's classes, and the rounds of offset updates.
constexpr int64_t kCalibrationSize = 8192;
constexpr int kCalibrationRounds = 100;
// Softmax temperature of the calibration, as a fraction of the scores' standard deviation.
constexpr double kCalibrationTemperature = 0.05;

struct Teacher {
  Tensor w1, w2;  // [H, dim], [classes, H]
  Tensor offset;  // [classes] float64, subtracted from the scores before the argmax

  // Scores [N, classes] of z [N, dim], in float64.
  Tensor scores(const Tensor& z) const { return matmul(tanh(matmul(z, w1.t())), w2.t()).to(kFloat64); }
  std::vector<int32_t> classify(const Tensor& z) const { return argmax(scores(z) - offset, 1).to_vector<int32_t>(); }
};

// A random teacher whose classes are about equally frequent on N(0, I) inputs. The offsets are
// found by Sinkhorn scaling (Sinkhorn & Knopp 1967) of the soft assignments
// softmax((score - offset) / tau) on a calibration sample: each round moves every class's offset by
// tau * log(C * its soft share), which converges to equal soft shares; with tau small next to the
// spread of the scores, the hard argmax shares follow.
Teacher make_teacher(int64_t dim, int64_t hidden, int64_t classes, double gain, Generator& gen) {
  Teacher t;
  t.w1 = randn({hidden, dim}, kFloat32, &gen) * (gain / std::sqrt(static_cast<double>(dim)));
  t.w2 = randn({classes, hidden}, kFloat32, &gen) * (1.0 / std::sqrt(static_cast<double>(hidden)));
  t.offset = zeros({classes}, kFloat64);
  const Tensor scores = t.scores(randn({kCalibrationSize, dim}, kFloat32, &gen));
  const double tau = kCalibrationTemperature * scores.std({}).item();
  for (int round = 0; round < kCalibrationRounds; ++round) {
    const Tensor share = softmax((scores - t.offset) / tau, 1).mean({0});
    t.offset = t.offset + log(share * static_cast<double>(classes)) * tau;
  }
  return t;
}

TensorDataset draw_split(const DomainDataConfig& c, const std::vector<Teacher>& teachers, int64_t n,
                         const std::string& name, Generator& gen) {
  const int64_t K = c.num_domains, C = c.classes_per_domain;
  const Tensor domain = randint(0, K, {n}, kInt32, &gen);
  const Tensor z = randn({n, c.dim}, kFloat32, &gen);
  const std::vector<int32_t> domain_of = domain.to_vector<int32_t>();
  std::vector<int32_t> labels(n);
  if (c.shared_rule) {
    labels = teachers.front().classify(z);
  } else {
    std::vector<std::vector<int32_t>> per_domain;
    for (const Teacher& t : teachers) per_domain.push_back(t.classify(z));
    for (int64_t i = 0; i < n; ++i) labels[i] = domain_of[i] * static_cast<int32_t>(C) + per_domain[domain_of[i]][i];
  }
  TensorDataset out;
  out.name = name;
  out.inputs = (z + one_hot(domain, c.dim).to(kFloat32) * c.domain_separation).contiguous();
  out.labels = from_vector(labels, {n}, kInt32);
  for (int64_t d = 0; d < K; ++d) {
    out.domain_names.push_back("domain " + std::to_string(d));
    for (int64_t k = 0; k < C; ++k) {
      out.class_names.push_back("d" + std::to_string(d) + "c" + std::to_string(k));
      out.class_to_domain.push_back(static_cast<int32_t>(d));
    }
  }
  out.validate();
  return out;
}

}  // namespace

DomainData make_domain_data(const DomainDataConfig& c) {
  MG_CHECK(c.num_domains >= 1 && c.classes_per_domain >= 1, "make_domain_data: need at least one domain and ",
           "one class per domain, got ", c.num_domains, " domains x ", c.classes_per_domain, " classes");
  MG_CHECK(c.dim >= c.num_domains, "make_domain_data: dim = ", c.dim, " must be at least num_domains = ",
           c.num_domains, " (domain d shifts coordinate d)");
  MG_CHECK(c.train_size > 0 && c.test_size > 0 && c.teacher_hidden > 0, "make_domain_data: train_size, ",
           "test_size and teacher_hidden must be positive, got ", c.train_size, ", ", c.test_size, ", ",
           c.teacher_hidden);
  MG_CHECK(c.domain_separation >= 0, "make_domain_data: domain_separation must be >= 0, got ",
           c.domain_separation);
  Generator gen(c.seed);
  std::vector<Teacher> teachers;
  if (c.shared_rule) {
    const int64_t classes = c.num_domains * c.classes_per_domain;
    teachers.push_back(make_teacher(c.dim, c.teacher_hidden, classes, c.teacher_gain, gen));
  } else {
    for (int64_t d = 0; d < c.num_domains; ++d)
      teachers.push_back(make_teacher(c.dim, c.teacher_hidden, c.classes_per_domain, c.teacher_gain, gen));
  }
  const std::string name = std::string("synthetic, ") + (c.domain_separation > 0 ? "visible" : "hidden") +
                           " domains, " + (c.shared_rule ? "one shared rule" : "a rule per domain");
  DomainData data;
  data.train = draw_split(c, teachers, c.train_size, name, gen);
  data.test = draw_split(c, teachers, c.test_size, name, gen);
  return data;
}

}  // namespace mg::study
