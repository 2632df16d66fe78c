// The live-handle registry of the native policy (see policy_handles.h).
#include "torch/model/policy_handles.h"

#include <mutex>
#include <unordered_map>

#include "common/op_error.h"

namespace crpo {
namespace policy {

namespace {
std::mutex g_mu;
std::unordered_map<int64_t, std::shared_ptr<Policy>> g_policies;
int64_t g_next = 1;
}  // namespace

int64_t register_policy(std::shared_ptr<Policy> p) {
  std::lock_guard<std::mutex> l(g_mu);
  const int64_t id = g_next++;
  g_policies[id] = std::move(p);
  return id;
}

std::shared_ptr<Policy> find_policy(int64_t id, const std::string& op) {
  std::lock_guard<std::mutex> l(g_mu);
  auto it = g_policies.find(id);
  if (it == g_policies.end()) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED",
                  op + ": policy " + std::to_string(id) + " does not exist (disposed?)");
  }
  return it->second;
}

bool dispose_policy(int64_t id) {
  std::lock_guard<std::mutex> l(g_mu);
  return g_policies.erase(id) > 0;
}

int64_t live_policies() {
  std::lock_guard<std::mutex> l(g_mu);
  return static_cast<int64_t>(g_policies.size());
}

}  // namespace policy
}  // namespace crpo
