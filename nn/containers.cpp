#include "nn/containers.hpp"

namespace mg::nn {

Sequential::Sequential(std::initializer_list<ModulePtr> modules) : Module("Sequential") {
  for (auto& m : modules) push_back(m);
}
void Sequential::push_back(ModulePtr module) { register_module(std::to_string(size()), std::move(module)); }
Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : children()) h = m->forward(h);
  return h;
}
ModulePtr Sequential::operator[](size_t i) const {
  MG_CHECK(i < size(), "Sequential: index ", i, " out of range for ", size(), " modules");
  return children()[i];
}

ModuleList::ModuleList(std::initializer_list<ModulePtr> modules) : Module("ModuleList") {
  for (auto& m : modules) push_back(m);
}
void ModuleList::push_back(ModulePtr module) { register_module(std::to_string(size()), std::move(module)); }
ModulePtr ModuleList::operator[](size_t i) const {
  MG_CHECK(i < size(), "ModuleList: index ", i, " out of range for ", size(), " modules");
  return children()[i];
}
void ModuleList::erase(size_t i) {
  MG_CHECK(i < size(), "ModuleList: index ", i, " out of range for ", size(), " modules");
  std::vector<ModulePtr> kept = children();
  kept.erase(kept.begin() + static_cast<std::ptrdiff_t>(i));
  for (size_t k = kept.size() + 1; k-- > 0;) unregister_module(std::to_string(k));
  for (auto& m : kept) push_back(m);
}

void ModuleDict::insert(const std::string& key, ModulePtr module) { register_module(key, std::move(module)); }
void ModuleDict::erase(const std::string& key) { unregister_module(key); }
bool ModuleDict::contains(const std::string& key) const {
  for (const auto& [n, m] : named_children())
    if (n == key) return true;
  return false;
}
ModulePtr ModuleDict::operator[](const std::string& key) const {
  for (const auto& [n, m] : named_children())
    if (n == key) return m;
  throw Error("ModuleDict: no module under key '" + key + "'");
}

}  // namespace mg::nn
