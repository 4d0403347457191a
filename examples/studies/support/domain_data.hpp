// Synthetic classification data with explicit domain structure, for the studies that need to know
// the "right" routing. Each example belongs to one of K domains and carries one of C classes of
// its domain (global label = domain * C + class), and both parts of that structure can be turned
// on or off:
//   x = domain_separation * e_domain + z,   z ~ N(0, I_dim)
//       e_d is the d-th unit vector: the domain shows as a shift of coordinate d (0 hides it).
//   label: a small random teacher network on z (tanh MLP, dim -> teacher_hidden -> classes),
//       one teacher per domain (each domain has its own rule: what an expert can specialize on),
//       or one shared teacher for all K * C classes (shared_rule; the domains are then only names:
//       domain = label / C).
// The teachers' output offsets are calibrated on a large sample so that the classes of a rule are
// about equally frequent. The same config and seed always give the same data.
#pragma once
#include <cstdint>

#include "examples/studies/support/tensor_dataset.hpp"

namespace mg::study {

struct DomainDataConfig {
  int64_t num_domains = 4;          // K
  int64_t classes_per_domain = 4;   // C
  int64_t dim = 32;
  int64_t train_size = 8000, test_size = 2000;
  double domain_separation = 4.0;   // shift of coordinate `domain`; 0: domains invisible in x
  bool shared_rule = false;         // one teacher for every domain (labels carry no domain rule)
  int64_t teacher_hidden = 16;
  double teacher_gain = 2.0;        // scale inside the teacher's tanh: larger is less linear
  uint64_t seed = 0;
};

struct DomainData {
  TensorDataset train, test;
};

// Domains are named "domain 0".. and classes "d<domain>c<class>".
DomainData make_domain_data(const DomainDataConfig& config);

}  // namespace mg::study
