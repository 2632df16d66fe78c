// The objective of qwenForward: per-token log-probabilities of the scored next tokens, their sum
// (the objective, whose gradients with respect to named weights the call can return) and the mean
// cross-entropy, over Model::scored_logits (every position of every row, or with shared prefixes
// the completion targets only). The binding (qwen_binding.cpp) reads the arguments and builds the
// JS result; the maths is here.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "torch/qwen/qwen_model.h"

namespace crpo {
namespace qwen {

struct ObjectiveOptions {
  bool capture = false;            // keep the named intermediate outputs (Capture)
  std::vector<std::string> grads;  // weights (base or LoRA) to differentiate the objective by
  int lora = -1;                   // -1: the model's LoRA setting; 0 / 1: off / on for this call only
  double temperature = 1.0;        // of token_logprobs only (the objective and loss stay at 1)
};

struct ObjectiveResult {
  at::Tensor logits;  // (B, L, V) fp32 (fp64 models: fp64); empty on the shared-prefix path
  double loss = 0;    // mean cross-entropy over the scored targets
  // sum_t log_softmax(logits[t])[ids[t+1]] over the scored (attended) targets
  double objective = 0;
  std::vector<std::pair<std::string, at::Tensor>> capture;
  std::vector<std::pair<std::string, at::Tensor>> grads;  // d objective / d weight, per name of o.grads
  at::Tensor token_logprobs;  // (B, L-1) log p(ids[t+1] | ..t) at o.temperature, NaN where not scored
};

// Runs the forward pass and the objective; the caller holds model.mu. Weights in o.grads that did
// not require gradients do for this call only; the LoRA setting is restored, also on a throw.
ObjectiveResult forward_objective(Model& model, const Inputs& in, const ObjectiveOptions& o);

}  // namespace qwen
}  // namespace crpo
