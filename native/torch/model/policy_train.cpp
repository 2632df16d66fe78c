// The train step of the native policy (see policy_model.h): the clipped-surrogate + k3-KL loss of
// crpo-method.md section 6 (or the supervised cross-entropy, with an optional prompt LM term),
// backward, the gradient all-reduce over a process group (weighted by each rank's share of the
// loss's denominator; overlapped with backward by crpo::dist::GradReducer, or after it as the slow
// twin), grad-norm clipping and AdamW: the ATen twin of torch.optim.AdamW and the
// fused pass of native/kernels/cpu/adamw_kernel.h.
#include <cmath>
#include <memory>
#include <string>

#include "common/op_error.h"
#include "kernels/cpu/adamw_kernel.h"
#include "torch/dist/process_group.h"
#include "torch/model/policy_internal.h"
#include "torch/model/policy_model.h"

// Weak: the train step can run (without a group) even in a build where process groups are absent.
namespace crpo {
namespace dist {
std::shared_ptr<ProcessGroupHandle> find_process_group(int64_t id) __attribute__((weak));
}  // namespace dist
}  // namespace crpo

namespace crpo {
namespace policy {

PolicyLoss policy_loss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                       const torch::Tensor& advantages, const torch::Tensor& mask, const LossOptions& o) {
  const int64_t C = logp.size(1);
  auto old = old_logp.defined() ? old_logp : logp.detach();
  auto ratio = torch::exp(logp - old);  // (N, C)
  auto A = advantages.unsqueeze(1);     // (N, 1)
  auto l1 = -ratio * A;
  auto l2 = -torch::clamp(ratio, 1.0 - o.eps_low, 1.0 + o.eps_high) * A;
  auto clip_loss = torch::max(l1, l2);  // -min(rA, clamp(r)A)
  torch::Tensor kl = torch::zeros_like(logp);
  if (ref_logp.defined()) {
    auto d = torch::clamp(ref_logp - logp, -10.0, 10.0);
    kl = torch::exp(d) - d - 1.0;  // k3
  }
  auto tokens = mask.sum();
  auto token_mean = [&](const torch::Tensor& x) { return (x * mask).sum() / tokens.clamp_min(1.0); };
  auto agg = [&](const torch::Tensor& x) -> torch::Tensor {
    switch (o.agg) {
      case Aggregation::TokenMean:
        return token_mean(x);
      case Aggregation::SeqMeanTokenSumNorm: {
        const double norm = o.max_new_tokens > 0 ? static_cast<double>(o.max_new_tokens) : static_cast<double>(C);
        return ((x * mask).sum(1) / norm).mean();
      }
      default:
        return ((x * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean();
    }
  };
  PolicyLoss r;
  r.loss = agg(clip_loss + o.beta * kl);
  torch::NoGradGuard ng;
  r.pg_loss = agg(clip_loss).item<double>();
  r.kl_loss = agg(kl).item<double>();
  r.mean_kl = token_mean(kl).item<double>();
  r.clip_frac = token_mean((l2 > l1).to(logp.scalar_type())).item<double>();
  r.ratio_mean = token_mean(ratio).item<double>();
  r.tokens = tokens.item<double>();
  return r;
}

// Grad-norm clipping and AdamW. The reference does it as torch.optim.AdamW with
// clip_grad_norm_ before it: a few ATen ops per parameter tensor (~60 tensors, so ~600 small
// ops and 60 host syncs per step). The fused version makes one pass over each tensor's memory for
// the norm and one for the update, in plain loops (same float32 operations in the same order per
// element; the norm's float64 sum in another order).

double reference_grad_norm(const std::vector<torch::Tensor>& grads) {
  double sq = 0;
  for (auto& g : grads) sq += upcast(g).to(torch::kDouble).pow(2).sum().item<double>();
  return std::sqrt(sq);
}

// AdamW, as torch.optim.AdamW: gradients scaled by `clip`, decoupled decay p *= 1 - lr*wd
// (where decay[i]), bias-corrected moments; `step` counts this update.
void reference_adamw_step(std::vector<torch::Tensor>& params, std::vector<torch::Tensor>& grads,
                          std::vector<torch::Tensor>& exp_avg, std::vector<torch::Tensor>& exp_avg_sq,
                          const std::vector<bool>& decay, int64_t step, double clip, const OptimOptions& oo) {
  if (clip != 1.0) {
    for (auto& g : grads) g.mul_(clip);
  }
  const double bc1 = 1.0 - std::pow(oo.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(oo.beta2, static_cast<double>(step));
  for (size_t i = 0; i < params.size(); i++) {
    auto& p = params[i];
    auto g = grads[i].to(torch::kFloat);
    auto pf = p.to(torch::kFloat);
    if (oo.weight_decay > 0 && decay[i]) pf.mul_(1.0 - oo.lr * oo.weight_decay);
    exp_avg[i].mul_(oo.beta1).add_(g, 1.0 - oo.beta1);
    exp_avg_sq[i].mul_(oo.beta2).addcmul_(g, g, 1.0 - oo.beta2);
    auto denom = (exp_avg_sq[i].sqrt() / std::sqrt(bc2)).add_(oo.eps);
    pf.addcdiv_(exp_avg[i], denom, -oo.lr / bc1);
    if (!pf.is_same(p)) p.copy_(pf);
  }
}

bool fused_adamw_applies(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                         const std::vector<torch::Tensor>& exp_avg, const std::vector<torch::Tensor>& exp_avg_sq) {
  if (reference_paths() || params.size() != exp_avg.size() || params.size() != exp_avg_sq.size()) return false;
  auto ok = [](const torch::Tensor& t, int64_t n) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() &&
           t.numel() == n;
  };
  for (size_t i = 0; i < params.size(); i++) {
    const int64_t n = params[i].numel();
    if (!ok(params[i], n) || !ok(grads[i], n) || !ok(exp_avg[i], n) || !ok(exp_avg_sq[i], n)) return false;
  }
  return true;
}

double fused_grad_norm(const std::vector<torch::Tensor>& grads) {
  double sq = 0;
  for (auto& g : grads) sq += sum_squares_f32(g.data_ptr<float>(), g.numel());
  return std::sqrt(sq);
}

void fused_adamw_step(std::vector<torch::Tensor>& params, std::vector<torch::Tensor>& grads,
                      std::vector<torch::Tensor>& exp_avg, std::vector<torch::Tensor>& exp_avg_sq,
                      const std::vector<bool>& decay, int64_t step, double clip, const OptimOptions& oo) {
  const double bc1 = 1.0 - std::pow(oo.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(oo.beta2, static_cast<double>(step));
  for (size_t i = 0; i < params.size(); i++) {
    auto& p = params[i];
    adamw_f32(p.data_ptr<float>(), grads[i].data_ptr<float>(), exp_avg[i].data_ptr<float>(),
              exp_avg_sq[i].data_ptr<float>(), p.numel(), static_cast<float>(clip), clip != 1.0,
              static_cast<float>(1.0 - oo.lr * oo.weight_decay), oo.weight_decay > 0 && decay[i],
              static_cast<float>(oo.beta1), static_cast<float>(1.0 - oo.beta1), static_cast<float>(oo.beta2),
              static_cast<float>(1.0 - oo.beta2), static_cast<float>(std::sqrt(bc2)), static_cast<float>(oo.eps),
              static_cast<float>(-oo.lr / bc1));
  }
}

StepStats Policy::train_step(const PromptBatch& b, const Completions& c, const torch::Tensor& advantages,
                             const torch::Tensor& old_logp, const torch::Tensor& ref_logp, const LossOptions& lo,
                             const OptimOptions& oo, bool sft, int64_t process_group) {
  if (frozen_)
    throw OpError(ErrorKind::Generic, "ERR_CRPO_FROZEN", "policy trainStep: this policy is a frozen reference copy");
  std::shared_ptr<dist::ProcessGroupHandle> pg;
  if (process_group >= 0) {
    if (!dist::find_process_group) {
      throw OpError(ErrorKind::Generic, "ERR_CRPO_NO_DIST",
                    "policy trainStep: process groups are not built into this addon");
    }
    pg = dist::find_process_group(process_group);
  }
  net_->train();
  auto params = net_->parameters();
  for (auto& p : params) p.mutable_grad() = torch::Tensor();
  StepStats st;
  // An empty batch (a rank left with no sequences in a multi-process step): no forward, zero
  // gradients and zero weight in the all-reduce below; alone, nothing to update.
  const int64_t N = c.ids.defined() ? c.ids.size(0) : 0;
  const bool prompt_lm = sft && lo.prompt_lm > 0;
  const bool vision_aux = sft && lo.vision_aux > 0;
  if (vision_aux && net_->vision_aux.is_empty()) {
    throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                  "policy trainStep: visionAuxWeight > 0 needs a policy with a vision attribute head "
                  "(config visionAuxClasses > 0)");
  }
  // The supervised loss is a target-token mean plus prompt_lm x a prompt-token mean plus
  // vision_aux x a mean over labelled prompts. Ranks are weighted by target tokens below, which is
  // exact for the first term; the other terms' weights on this rank are rescaled so that the global
  // batch's means come out (one small all-reduce of the counts before the forward, every rank
  // taking part).
  double prompt_lm_scale = 1.0, vision_aux_scale = 1.0;
  if (pg && (prompt_lm || vision_aux)) {
    const double target_tokens = N > 0 ? completion_mask(c, torch::kCPU).sum().item<double>() : 0.0;
    const double lm_tokens = N > 0 ? static_cast<double>(prompt_lm_targets(b)) : 0.0;
    const double aux_labels = N > 0 ? static_cast<double>(vision_aux_labels(b)) : 0.0;
    auto counts = torch::tensor({target_tokens, lm_tokens, aux_labels}, torch::TensorOptions().dtype(torch::kDouble))
                      .to(pg->device());
    std::vector<torch::Tensor> cv{counts};
    pg->allreduce_sum(cv);
    auto cc = counts.to(torch::kCPU);
    const double total_targets = cc[0].item<double>(), total_lm = cc[1].item<double>(),
                 total_aux = cc[2].item<double>();
    auto rescale = [&](double mine, double total) {
      return (target_tokens > 0 && total > 0) ? (mine / total) * (total_targets / target_tokens) : 0.0;
    };
    prompt_lm_scale = rescale(lm_tokens, total_lm);
    vision_aux_scale = rescale(aux_labels, total_aux);
  }
  torch::Tensor loss;
  if (N > 0) {
    auto mask = completion_mask(c, device_);
    torch::Tensor prefix_hidden;
    torch::Tensor vision_pooled;
    auto sc = score_tokens(completion_hidden(b, c, lo.full_sequence, prompt_lm ? &prefix_hidden : nullptr,
                                             vision_aux ? &vision_pooled : nullptr),
                           c, mask, lo.temperature, true);
    auto logp = sc.logp;  // (N, C)
    {
      torch::NoGradGuard ng;
      st.entropy = ((sc.entropy * mask).sum() / mask.sum().clamp_min(1.0)).item<double>();
    }
    if (sft) {
      loss = -(logp * mask).sum() / mask.sum().clamp_min(1.0);
      st.pg_loss = loss.item<double>();
      st.tokens = mask.sum().item<double>();
      if (prompt_lm) {
        // Reported in kl_loss's slot (the supervised step has no KL term).
        auto lm = prompt_lm_loss(b, prefix_hidden);
        st.kl_loss = lm.item<double>();
        loss = loss + (lo.prompt_lm * prompt_lm_scale) * lm;
      }
      if (vision_aux) {
        auto aux = vision_aux_loss(b, vision_pooled);
        st.vision_aux_loss = aux.item<double>();
        loss = loss + (lo.vision_aux * vision_aux_scale) * aux;
      }
    } else {
      auto pl = policy_loss(logp, old_logp.defined() ? old_logp.to(device_) : old_logp,
                            ref_logp.defined() ? ref_logp.to(device_) : ref_logp, advantages.to(device_), mask, lo);
      loss = pl.loss;
      st.pg_loss = pl.pg_loss;
      st.kl_loss = pl.kl_loss;
      st.mean_kl = pl.mean_kl;
      st.clip_frac = pl.clip_frac;
      st.ratio_mean = pl.ratio_mean;
      st.tokens = pl.tokens;
    }
    st.loss = loss.item<double>();
  }
  bool bad = !std::isfinite(st.loss);
  // This rank's loss is a mean over `weight` units (the aggregation's denominator: sequences, or
  // tokens for token-mean and the supervised step); the loss of the whole global batch is the
  // weight-weighted mean of the ranks' losses, and so is its gradient.
  const double weight = (sft || lo.agg == Aggregation::TokenMean) ? st.tokens : static_cast<double>(N);
  double total_weight = weight;
  std::vector<torch::Tensor> grads;
  auto collect_grads = [&]() {
    for (auto& p : params) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
  };
  if (pg && oo.overlap_grads) {
    // Overlapped: the weights and bad flags first (they are known after the forward), then
    // backward with GradReducer hooks that put share_r * grad_r into buckets and start each
    // bucket's all-reduce (sum) as soon as it is full; finish() waits for what is still running.
    auto meta = torch::tensor({weight, bad ? 1.0 : 0.0}, torch::TensorOptions().dtype(torch::kDouble)).to(pg->device());
    std::vector<torch::Tensor> m{meta};
    pg->allreduce_sum(m);
    auto mc = meta.to(torch::kCPU);
    total_weight = mc[0].item<double>();
    if (mc[1].item<double>() > 0 && !bad) {
      bad = true;
      st.skip_reason = "a non-finite loss on another rank";
    }
    if (!bad) {
      dist::GradReducer reducer(pg, params, oo.grad_bucket_mb);
      reducer.prepare_weighted(total_weight > 0 ? weight / total_weight : 0.0);
      if (loss.defined()) loss.backward();
      reducer.finish();
    }
    collect_grads();
  } else {
    if (loss.defined() && !bad) loss.backward();
    collect_grads();
  }
  if (pg && !oo.overlap_grads) {
    // Every rank takes part, even when its own loss was bad or its batch empty. First the weights
    // and the bad flags (float64), so that all ranks skip together; then sum_r (w_r / W) grad_r.
    auto meta =
        torch::tensor({weight, bad ? 1.0 : 0.0}, torch::TensorOptions().dtype(torch::kDouble)).to(grads[0].device());
    std::vector<torch::Tensor> m{meta};
    pg->allreduce_sum(m);
    auto mc = meta.to(torch::kCPU);
    total_weight = mc[0].item<double>();
    if (mc[1].item<double>() > 0 && !bad) {
      bad = true;
      st.skip_reason = "a non-finite loss on another rank";
    }
    if (!bad) {
      torch::NoGradGuard ng;
      const double share = total_weight > 0 ? weight / total_weight : 0.0;
      if (share != 1.0)
        for (auto& g : grads) g.mul_(share);
      pg->allreduce_sum(grads);
    }
  }
  torch::NoGradGuard ng;
  if (!bad && !(total_weight > 0)) {
    // No sequence (or no token) on any rank: nothing to learn from, no optimiser step.
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    st.grad_norm = 0;
    st.step = step_;
    return st;
  }
  const bool fused = fused_adamw_applies(params, grads, exp_avg_, exp_avg_sq_);
  st.grad_norm = fused ? fused_grad_norm(grads) : reference_grad_norm(grads);
  if (bad || !std::isfinite(st.grad_norm)) {
    st.skipped = true;
    if (st.skip_reason.empty()) st.skip_reason = bad ? "non-finite loss" : "non-finite gradient norm";
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    st.step = step_;
    return st;
  }
  const double clip =
      (oo.max_grad_norm > 0 && st.grad_norm > oo.max_grad_norm) ? oo.max_grad_norm / (st.grad_norm + 1e-6) : 1.0;
  step_ += 1;
  if (fused)
    fused_adamw_step(params, grads, exp_avg_, exp_avg_sq_, decay_, step_, clip, oo);
  else
    reference_adamw_step(params, grads, exp_avg_, exp_avg_sq_, decay_, step_, clip, oo);
  for (auto& p : params) p.mutable_grad() = torch::Tensor();
  st.step = step_;
  return st;
}

}  // namespace policy
}  // namespace crpo
