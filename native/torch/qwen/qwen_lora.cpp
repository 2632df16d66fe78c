// LoRA adapters of the Qwen models (PEFT conventions: A Kaiming-uniform, B zeros, scale alpha / r):
// attaching them to the target linears, merged weights for export, and folding them into the base.
#include "qwen_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "qwen_util.h"

namespace crpo {
namespace qwen {

using detail::ends_with;

void Model::add_lora(const LoraConfig& lc) {
  TORCH_CHECK(lc.rank > 0, "qwen: LoRA rank must be positive but is ", lc.rank);
  TORCH_CHECK(lora_.rank == 0, "qwen: LoRA adapters are already attached");
  lora_ = lc;
  auto gen = at::detail::createCPUGenerator(lc.seed);
  std::vector<std::string> names = param_names();
  for (const auto& n : names) {
    if (!ends_with(n, ".weight")) continue;
    const at::Tensor& w = params_.at(n);
    if (w.dim() != 2) continue;
    std::string prefix = n.substr(0, n.size() - 7);
    if (prefix == "lm_head" || ends_with(prefix, "embed_tokens") || ends_with(prefix, "pos_embed")) continue;
    bool vis = prefix.rfind(vpre(), 0) == 0;
    if (vis && !lc.vision) continue;
    std::string last = prefix.substr(prefix.rfind('.') + 1);
    bool hit = false;
    for (const auto& tgt : lc.targets) hit = hit || tgt == last || ends_with(prefix, "." + tgt);
    if (!hit) continue;
    const int64_t out = w.size(0), in = w.size(1);
    double bound = 1.0 / std::sqrt(static_cast<double>(in));  // kaiming_uniform_(a=sqrt(5)), as PEFT
    at::Tensor A = at::empty({lc.rank, in}, at::kFloat).uniform_(-bound, bound, gen).to(device_, dtype_);
    at::Tensor Bm = at::zeros({out, lc.rank}, at::TensorOptions().dtype(dtype_).device(device_));
    lora_params_[prefix + ".lora_A"] = A.set_requires_grad(true);
    lora_params_[prefix + ".lora_B"] = Bm.set_requires_grad(true);
  }
  TORCH_CHECK(!lora_params_.empty(), "qwen: no linear layer matches the LoRA target modules");
}

void Model::merge_lora() {
  TORCH_CHECK(lora_.rank > 0, "qwen: no LoRA adapters to merge");
  at::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(lora_.seed + 1);
  for (auto& kv : lora_params_) {
    const std::string& n = kv.first;
    if (!ends_with(n, ".lora_A")) continue;
    std::string prefix = n.substr(0, n.size() - 7);
    at::Tensor& w = params_.at(prefix + ".weight");
    at::Tensor merged = merged_weight(prefix + ".weight");
    w.copy_(merged);
    at::Tensor& A = kv.second;
    double bound = 1.0 / std::sqrt(static_cast<double>(A.size(1)));
    A.copy_(at::empty(A.sizes(), at::kFloat).uniform_(-bound, bound, gen));
    lora_params_.at(prefix + ".lora_B").zero_();
  }
  opt_.reset();
  opt_params_.clear();
  accumulating_ = false;
}

at::Tensor Model::merged_weight(const std::string& name) const {
  at::NoGradGuard ng;
  const at::Tensor& w = param(name);
  if (lora_.rank > 0 && ends_with(name, ".weight")) {
    std::string prefix = name.substr(0, name.size() - 7);
    auto a = lora_params_.find(prefix + ".lora_A");
    if (a != lora_params_.end()) {
      at::Tensor d = at::matmul(lora_params_.at(prefix + ".lora_B").to(at::kFloat), a->second.to(at::kFloat));
      return (w.to(at::kFloat) + d * (lora_.alpha / static_cast<double>(lora_.rank))).to(w.scalar_type());
    }
  }
  return w;
}

}  // namespace qwen
}  // namespace crpo
