// Live policy handles: the JS side holds an id, this registry holds the Policy (id -> model).
// Thread-safe; dispose drops the registry's reference (a call still running keeps its own).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace crpo {
namespace policy {

class Policy;

// Live handles: id -> model.
int64_t register_policy(std::shared_ptr<Policy> p);
std::shared_ptr<Policy> find_policy(int64_t id, const std::string& op);
bool dispose_policy(int64_t id);
int64_t live_policies();

}  // namespace policy
}  // namespace crpo
