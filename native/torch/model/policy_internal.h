// Helpers shared by the source files of the native policy (native/torch/model/*.cpp and checks/),
// not part of the interface the binding uses.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "torch/model/policy_model.h"

namespace crpo {
namespace policy {

// bfloat16 / half -> float32 (for softmax and norms); other dtypes as they are.
inline torch::Tensor upcast(const torch::Tensor& x) {
  return (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf) ? x.to(torch::kFloat) : x;
}

inline torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

// (N, C) float: 1 inside each completion (column < length), 0 after it.
torch::Tensor completion_mask(const Completions& c, const torch::Device& d);
// Tokens the prompt language-model loss predicts: every prompt token after the first, over the batch.
int64_t prompt_lm_targets(const PromptBatch& b);
// Prompts with a vision attribute label.
int64_t vision_aux_labels(const PromptBatch& b);

// Grad-norm clipping and AdamW (policy_train.cpp): the ATen twin of torch.optim.AdamW after
// clip_grad_norm_, and the fused pass over native/kernels/cpu/adamw_kernel.h.
double reference_grad_norm(const std::vector<torch::Tensor>& grads);
// AdamW, as torch.optim.AdamW: gradients scaled by `clip`, decoupled decay p *= 1 - lr*wd
// (where decay[i]), bias-corrected moments; `step` counts this update.
void reference_adamw_step(std::vector<torch::Tensor>& params, std::vector<torch::Tensor>& grads,
                          std::vector<torch::Tensor>& exp_avg, std::vector<torch::Tensor>& exp_avg_sq,
                          const std::vector<bool>& decay, int64_t step, double clip, const OptimOptions& oo);
// The fused pass applies to CPU float32 contiguous tensors only, and never under ReferencePaths.
bool fused_adamw_applies(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                         const std::vector<torch::Tensor>& exp_avg, const std::vector<torch::Tensor>& exp_avg_sq);
double fused_grad_norm(const std::vector<torch::Tensor>& grads);
void fused_adamw_step(std::vector<torch::Tensor>& params, std::vector<torch::Tensor>& grads,
                      std::vector<torch::Tensor>& exp_avg, std::vector<torch::Tensor>& exp_avg_sq,
                      const std::vector<bool>& decay, int64_t step, double clip, const OptimOptions& oo);

}  // namespace policy
}  // namespace crpo
