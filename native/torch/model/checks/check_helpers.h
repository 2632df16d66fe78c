// Random modules and inputs shared by the policy's gradient checks and fast-path checks.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace crpo {
namespace policy {

inline void randomize(torch::nn::Module& m, at::Generator& gen) {
  torch::NoGradGuard ng;
  for (auto& p : m.parameters()) {
    if (p.dim() == 1)
      p.normal_(1.0, 0.3, gen);
    else
      p.normal_(0.0, 0.4, gen);
  }
}

inline std::vector<torch::Tensor> leaves_of(torch::nn::Module& m, std::vector<torch::Tensor> extra) {
  for (auto& p : m.parameters()) extra.push_back(p);
  return extra;
}

inline torch::Tensor randn(at::IntArrayRef s, at::Generator& gen, bool grad = true) {
  auto t = at::randn(s, gen, torch::kDouble);
  if (grad) t.set_requires_grad(true);
  return t;
}

// A causal mask with one padded key column (never a fully-masked row).
inline torch::Tensor test_allowed(int64_t N, int64_t L) {
  auto causal = torch::arange(L).unsqueeze(0) <= torch::arange(L).unsqueeze(1);
  auto valid = torch::ones({N, L}, torch::kBool);
  if (L > 2) valid[N - 1][1] = false;
  return causal.unsqueeze(0).unsqueeze(0).logical_and(valid.view({N, 1, 1, L}));
}

}  // namespace policy
}  // namespace crpo
