// State of the native policy in and out (see policy_model.h): weights and AdamW moments as named
// float32 CPU tensors, loaded back only when every name and shape matches; the generator state.
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

#include "common/op_error.h"
#include "torch/model/policy_model.h"

namespace crpo {
namespace policy {

std::vector<NamedTensor> Policy::get_parameters() const {
  std::vector<NamedTensor> out;
  for (auto& kv : net_->named_parameters())
    out.push_back({kv.key(), kv.value().detach().to(torch::kCPU, torch::kFloat).contiguous().clone()});
  return out;
}

std::vector<NamedTensor> Policy::get_optimizer_state() const {
  std::vector<NamedTensor> out;
  if (frozen_) return out;
  size_t i = 0;
  for (auto& kv : net_->named_parameters()) {
    out.push_back({kv.key() + ".exp_avg", exp_avg_[i].to(torch::kCPU).contiguous().clone()});
    out.push_back({kv.key() + ".exp_avg_sq", exp_avg_sq_[i].to(torch::kCPU).contiguous().clone()});
    i++;
  }
  return out;
}

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}

// Copies `values` into `targets` by name after checking that names and shapes match exactly.
void load_named(const std::vector<std::pair<std::string, torch::Tensor>>& targets,
                const std::vector<NamedTensor>& values, const std::string& what) {
  std::unordered_map<std::string, const torch::Tensor*> given;
  for (auto& v : values) {
    if (!given.emplace(v.name, &v.value).second)
      throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT", what + ": tensor '" + v.name + "' given twice");
  }
  for (auto& t : targets) {
    auto it = given.find(t.first);
    if (it == given.end())
      throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT", what + ": missing tensor '" + t.first + "'");
    if (!it->second->sizes().equals(t.second.sizes())) {
      throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT",
                    what + ": tensor '" + t.first + "' has shape " + shape_str(it->second->sizes()) + ", expected " +
                        shape_str(t.second.sizes()));
    }
  }
  if (given.size() != targets.size()) {
    std::unordered_map<std::string, int> known;
    for (auto& t : targets) known[t.first] = 1;
    for (auto& v : values) {
      if (!known.count(v.name))
        throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT", what + ": unexpected tensor '" + v.name + "'");
    }
  }
  torch::NoGradGuard ng;
  for (auto& t : targets) {
    auto dst = t.second;
    dst.copy_(*given[t.first]);
  }
}

}  // namespace

void Policy::set_parameters(const std::vector<NamedTensor>& values) {
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (auto& kv : net_->named_parameters()) targets.emplace_back(kv.key(), kv.value());
  load_named(targets, values, "policy weights");
}

void Policy::set_optimizer_state(const std::vector<NamedTensor>& values, int64_t step) {
  if (frozen_)
    throw OpError(ErrorKind::Generic, "ERR_CRPO_FROZEN",
                  "policy setOptimizerState: a frozen reference copy has no optimizer");
  if (step < 0)
    throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                  "policy optimizer step must be >= 0, got " + std::to_string(step));
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  size_t i = 0;
  for (auto& kv : net_->named_parameters()) {
    targets.emplace_back(kv.key() + ".exp_avg", exp_avg_[i]);
    targets.emplace_back(kv.key() + ".exp_avg_sq", exp_avg_sq_[i]);
    i++;
  }
  load_named(targets, values, "optimizer state");
  step_ = step;
}

torch::Tensor Policy::rng_state() const {
  at::Generator g = gen_;
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

void Policy::set_rng_state(const torch::Tensor& s) {
  at::Generator g = gen_;
  std::lock_guard<std::mutex> lock(g.mutex());
  try {
    g.set_state(s);
  } catch (const c10::Error& e) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT",
                  std::string("policy RNG state rejected: ") + e.what_without_backtrace());
  }
}

}  // namespace policy
}  // namespace crpo
