// The objective of qwenForward (see qwen_objective.h).
#include "torch/qwen/qwen_objective.h"

#include <cmath>

namespace crpo {
namespace qwen {

ObjectiveResult forward_objective(Model& model, const Inputs& in, const ObjectiveOptions& o) {
  ObjectiveResult out;
  const bool prev = model.lora_enabled();
  if (o.lora >= 0) model.set_lora_enabled(o.lora == 1);
  auto weight = [&](const std::string& n) -> at::Tensor& {
    return model.has_param(n) ? model.params().at(n) : model.lora_params().at(n);
  };
  std::vector<at::Tensor> leaves;
  std::vector<std::string> switched;  // weights made to require grad for this call only
  for (const auto& n : o.grads) {
    at::Tensor& p = weight(n);
    if (!p.requires_grad()) {
      p.set_requires_grad(true);
      switched.push_back(n);
    }
    leaves.push_back(p);
  }
  auto restore = [&]() {
    for (const auto& n : switched) weight(n).set_requires_grad(false);
  };
  at::AutoGradMode grad_mode(!o.grads.empty());
  Capture cap;
  cap.on = o.capture;
  ScoredLogits s;  // every position (per-row) or the completions after shared prefixes
  try {
    s = model.scored_logits(in, &cap);
  } catch (...) {
    model.set_lora_enabled(prev);
    restore();
    throw;
  }
  model.set_lora_enabled(prev);
  at::Tensor logits = s.logits.scalar_type() == at::kDouble ? s.logits : s.logits.to(at::kFloat);  // (B, T, V)
  at::Tensor tg = s.targets.unsqueeze(-1);
  at::Tensor lp = at::log_softmax(logits, -1).gather(-1, tg).squeeze(-1);  // (B, T)
  // log-probs at a sampling temperature (the objective and loss stay at temperature 1)
  at::Tensor lp_t =
      o.temperature == 1.0 ? lp : at::log_softmax(logits.detach() / o.temperature, -1).gather(-1, tg).squeeze(-1);
  at::Tensor valid = s.valid.to(lp.scalar_type());
  at::Tensor objective = (lp * valid).sum();
  at::Tensor loss = -(lp * valid).sum() / valid.sum();
  if (!o.grads.empty()) {
    auto g = torch::autograd::grad({objective}, leaves, {}, false, false, true);
    for (size_t i = 0; i < g.size(); ++i)
      out.grads.emplace_back(o.grads[i], g[i].defined() ? g[i] : at::zeros_like(leaves[i]));
  }
  restore();
  // the shared-prefix path has no logits of prefix positions: none are returned
  out.logits = s.full.defined() ? (s.full.scalar_type() == at::kDouble ? s.full : s.full.to(at::kFloat)).detach()
                                : at::zeros({0}, at::kFloat);
  out.loss = loss.item<double>();
  out.objective = objective.item<double>();
  out.token_logprobs = s.to_rows(lp_t.detach(), std::nan("")).detach();
  out.capture = std::move(cap.items);
  return out;
}

}  // namespace qwen
}  // namespace crpo
