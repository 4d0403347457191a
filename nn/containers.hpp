// Containers: Sequential (chains single-tensor forwards), ModuleList and ModuleDict (hold
// modules whose forward the owner calls itself). Children are named "0", "1", ... or by key.
#pragma once
#include <initializer_list>

#include "nn/module.hpp"

namespace mg::nn {

class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  Sequential(std::initializer_list<ModulePtr> modules);
  void push_back(ModulePtr module);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return children().size(); }
  ModulePtr operator[](size_t i) const;
};

class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  ModuleList(std::initializer_list<ModulePtr> modules);
  void push_back(ModulePtr module);
  // Removes the module at i; later modules keep their order and are renamed "i", "i+1", ...
  void erase(size_t i);
  size_t size() const { return children().size(); }
  ModulePtr operator[](size_t i) const;
};

class ModuleDict : public Module {
 public:
  ModuleDict() : Module("ModuleDict") {}
  void insert(const std::string& key, ModulePtr module);
  void erase(const std::string& key);
  bool contains(const std::string& key) const;
  ModulePtr operator[](const std::string& key) const;
  size_t size() const { return children().size(); }
};

}  // namespace mg::nn
