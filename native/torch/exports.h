// Registration of the torch addon's exports: each module (ops, model, dist, ...) registers a
// function that adds its JS functions to the addon's exports, so adding a module never means
// editing addon.cpp. Usage at namespace scope in a .cpp:
//   static crpo::ExportRegistrar reg("model", [](Napi::Env env, Napi::Object exports) { ... });
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <vector>

namespace crpo {

using ExportFn = std::function<void(Napi::Env, Napi::Object)>;

struct ExportEntry {
  std::string module;
  ExportFn fn;
};

inline std::vector<ExportEntry>& export_registry() {
  static std::vector<ExportEntry> entries;  // function-local: safe across static init order
  return entries;
}

struct ExportRegistrar {
  ExportRegistrar(const std::string& module, ExportFn fn) { export_registry().push_back({module, std::move(fn)}); }
};

// Sets libtorch's intra-op threads for the calling OS thread (call first in every Execute()).
void prepare_thread();

}  // namespace crpo
