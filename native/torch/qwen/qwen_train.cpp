// Training of the Qwen models: which weights train, AdamW and its saved state, and the
// GRPO-family / SFT train step (clipped surrogate as TRL/verl define it, crpo-method.md section
// 6), with micro-batch accumulation and, across processes, the gradient all-reduce of data
// parallel training (weighted by each rank's loss denominator, before clipping and AdamW; the
// overlapped all-reduce and the sharded AdamW state are in qwen_train_dist.cpp).
#include "qwen_model.h"

#include <cmath>

#include "qwen_util.h"
#include "torch/dist/process_group.h"

namespace crpo {
namespace qwen {

using detail::acc;

void Model::set_trainable(const std::string& mode) {
  TORCH_CHECK(mode == "lora" || mode == "lm" || mode == "all", "qwen: trainable must be 'lora', 'lm' or 'all' but is '",
              mode, "'");
  TORCH_CHECK(mode != "lora" || !lora_params_.empty(), "qwen: trainable 'lora' needs LoRA adapters (addLora first)");
  for (auto& kv : params_) {
    bool vis = kv.first.rfind(vpre(), 0) == 0;
    bool on = mode == "all" || (mode == "lm" && !vis);
    kv.second.set_requires_grad(on);
  }
  for (auto& kv : lora_params_) kv.second.set_requires_grad(mode == "lora");
  trainable_mode_ = mode;
  if (opt_) {
    // The same trainable tensors as the optimizer's (e.g. setTrainable after loading a resumed
    // run's AdamW state): keep that state, but start a fresh gradient accumulation.
    std::vector<at::Tensor> now;
    for (auto& kv : params_)
      if (kv.second.requires_grad()) now.push_back(kv.second);
    for (auto& kv : lora_params_)
      if (kv.second.requires_grad()) now.push_back(kv.second);
    bool same = now.size() == opt_params_.size();
    for (size_t i = 0; same && i < now.size(); ++i) same = now[i].is_same(opt_params_[i]);
    if (same) {
      accumulating_ = false;
      return;
    }
  }
  opt_.reset();
  zero_.reset();
  reducer_.reset();
  opt_params_.clear();
  accumulating_ = false;
}

std::vector<std::string> Model::trainable_names() const {
  std::vector<std::string> out;
  for (const auto& kv : params_)
    if (kv.second.requires_grad()) out.push_back(kv.first);
  for (const auto& kv : lora_params_)
    if (kv.second.requires_grad()) out.push_back(kv.first);
  return out;
}

void Model::ensure_optimizer(const TrainOptions& o) {
  if (trainable_mode_.empty()) set_trainable(lora_params_.empty() ? "lm" : "lora");
  if (opt_) return;
  // parameter order = map order (names sorted), so saved optimizer state lines up on reload
  for (auto& kv : params_)
    if (kv.second.requires_grad()) opt_params_.push_back(kv.second);
  for (auto& kv : lora_params_)
    if (kv.second.requires_grad()) opt_params_.push_back(kv.second);
  TORCH_CHECK(!opt_params_.empty(), "qwen: nothing to train");
  zero_.reset();  // sharded moments belong to the optimizer this one replaces (e.g. after mergeLora)
  opt_.reset(new torch::optim::AdamW(
      opt_params_,
      torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(o.weight_decay)));
}

void Model::save_optimizer(const std::string& path) {
  TORCH_CHECK(opt_, "qwen: no optimizer state yet (no train step was run)");
  if (zero_) {
    zero_gather_into_optimizer();  // collective: the whole state on every rank, for this save only
    if (!path.empty()) torch::save(*opt_, path);
    opt_->state().clear();
    return;
  }
  TORCH_CHECK(!path.empty(), "qwen: saveOptimizer needs a file path (an empty one is for ranks of zero 1)");
  torch::save(*opt_, path);
}

void Model::load_optimizer(const std::string& path, const TrainOptions& o) {
  ensure_optimizer(o);
  torch::load(*opt_, path);
  zero_.reset();  // a sharded step takes its slice of the loaded state
}

namespace {

// This rank's loss is a mean over `weight` units (the aggregation's denominator for the whole
// batch of this rank: tokens for token-mean, else sequences); the loss of the global batch is
// the weight-weighted mean of the ranks' losses, and so is its gradient.
double rank_weight(const TrainOptions& o, const TrainStats& st, int64_t B) {
  return o.aggregation == "token-mean" ? static_cast<double>(o.norm_tokens > 0 ? o.norm_tokens : st.tokens)
                                       : static_cast<double>(o.norm_seqs > 0 ? o.norm_seqs : B);
}

}  // namespace

TrainStats Model::train_step(const Inputs& in, const TrainBatch& b, const TrainOptions& o) {
  ensure_optimizer(o);
  for (auto& g : opt_->param_groups()) {
    auto& op = static_cast<torch::optim::AdamWOptions&>(g.options());
    op.lr(o.lr);
    op.weight_decay(o.weight_decay);
  }
  const int64_t B = in.input_ids.size(0), L = in.input_ids.size(1);
  TORCH_CHECK(b.completion_mask.defined() && b.completion_mask.size(0) == B && b.completion_mask.size(1) == L,
              "qwen: completion mask must be (B, L) = (", B, ", ", L, ")");
  // training mode (LoRA dropout) until the end of backward: checkpointed layers recompute there
  struct TrainingMode {
    bool& flag;
    bool was;
    explicit TrainingMode(bool& f) : flag(f), was(f) { flag = true; }
    ~TrainingMode() { flag = was; }
  } training_mode(training_);
  if (!accumulating_) {
    opt_->zero_grad();
    pending_bad_ = false;
  }
  if (o.seed >= 0) torch::manual_seed(static_cast<uint64_t>(o.seed));
  // (B, T, V) next-token predictions: every position of every row, or with in.prefix_groups the
  // completions after each group's shared prefix (qwen_prefix.cpp); lp in the (B, L-1) layout
  ScoredLogits sl = scored_logits(in, nullptr);
  at::Tensor logits = sl.logits.to(acc(sl.logits));
  if (o.temperature != 1.0) logits = logits / o.temperature;
  at::Tensor all_lp = at::log_softmax(logits, -1);                                               // (B, T, V)
  at::Tensor lp = sl.to_rows(all_lp.gather(-1, sl.targets.unsqueeze(-1)).squeeze(-1), 0.0);      // (B, L-1)
  at::Tensor mask = b.completion_mask.narrow(1, 1, L - 1).to(lp.device()).to(lp.scalar_type());  // targets t+1
  if (!sl.full.defined()) {
    at::Tensor outside = mask * (1 - sl.to_rows(sl.valid.to(lp.scalar_type()), 0.0));
    TORCH_CHECK(outside.sum().item<double>() == 0, "qwen: with prefix groups the completion mask may mark only ",
                "completion tokens (after each group's prefix, before padding); it marks ",
                outside.sum().item<double>(), " others");
  }
  TrainStats st;
  st.tokens = static_cast<int64_t>(mask.sum().item<double>());
  {
    at::NoGradGuard ng;
    at::Tensor ent = sl.to_rows(-(all_lp.exp() * all_lp).sum(-1), 0.0);  // (B, L-1)
    st.entropy = ((ent * mask).sum() / mask.sum().clamp_min(1)).item<double>();
  }
  // per-token weights of the aggregation (lib/algo/loss.ts policyLoss)
  at::Tensor per_seq = mask.sum(1, true).clamp_min(1);  // (B, 1)
  const double nseq = static_cast<double>(o.norm_seqs > 0 ? o.norm_seqs : B);
  at::Tensor wgt;
  if (o.aggregation == "token-mean")
    wgt = o.norm_tokens > 0 ? mask / static_cast<double>(o.norm_tokens) : mask / mask.sum().clamp_min(1);
  else if (o.aggregation == "seq-mean-token-mean")
    wgt = mask / (per_seq * nseq);
  else if (o.aggregation == "seq-mean-token-sum-norm")
    wgt = mask / (nseq * o.max_new_tokens);
  else
    TORCH_CHECK(false, "qwen: aggregation must be token-mean, seq-mean-token-mean or seq-mean-token-sum-norm but is '",
                o.aggregation, "'");
  at::Tensor loss;
  if (o.objective == "sft") {
    loss = -(lp * wgt).sum();
    st.pg_loss = loss.item<double>();
  } else {
    TORCH_CHECK(o.objective == "grpo", "qwen: objective must be 'grpo' or 'sft' but is '", o.objective, "'");
    TORCH_CHECK(b.advantages.defined() && b.advantages.numel() == B, "qwen: grpo needs one advantage per row (", B,
                ")");
    at::Tensor adv = b.advantages.to(lp.device()).to(lp.scalar_type()).view({B, 1});
    at::Tensor old = b.old_logprobs.defined() ? b.old_logprobs.to(lp.device()).to(lp.scalar_type()) : lp.detach();
    old = at::where(mask > 0, old, lp.detach());  // untrained positions: ratio 1 (no inf * 0 from their values)
    at::Tensor ratio = at::exp(lp - old);
    at::Tensor s1 = -ratio * adv, s2 = -ratio.clamp(1 - o.clip_low, 1 + o.clip_high) * adv;
    at::Tensor pg = at::max(s1, s2);  // clipped surrogate
    at::Tensor tok = pg;
    st.clip_frac = ((s2 > s1).to(lp.scalar_type()) * mask).sum().item<double>() / std::max<int64_t>(st.tokens, 1);
    st.pg_loss = (pg * wgt).sum().item<double>();
    if (o.kl_beta > 0) {
      TORCH_CHECK(b.ref_logprobs.defined(), "qwen: klBeta > 0 needs reference log-probs");
      at::Tensor d = (b.ref_logprobs.to(lp.device()).to(lp.scalar_type()) - lp).clamp(-10, 10);
      at::Tensor kl = at::exp(d) - d - 1;  // k3 estimator, >= 0
      tok = tok + o.kl_beta * kl;
      st.kl = (kl * wgt).sum().item<double>();
    }
    loss = (tok * wgt).sum();
  }
  st.loss = loss.item<double>();
  const bool bad = !std::isfinite(st.loss);
  if (bad) {
    opt_->zero_grad();
    accumulating_ = false;
    if (!o.apply || !o.group) {
      // Alone: the step is skipped here. With a group, the rank still has to join the step's
      // all-reduce: the caller follows with sync_step, which tells the other ranks to skip too.
      pending_bad_ = o.group != nullptr;
      st.skipped = true;
      st.grad_norm = std::nan("");
      return st;
    }
  } else if (o.apply && o.group && o.overlap_grads) {
    // Data parallel, overlapped: the ranks' weights and bad flags first (known after the forward),
    // then backward with the reducer's hooks starting bucket all-reduces (qwen_train_dist.cpp).
    accumulating_ = false;
    const double weight = rank_weight(o, st, B);
    const Reduced red = allreduce_weights(weight, false, o);
    if (!red.bad) reduce_grads_overlapped(loss, red.total_weight > 0 ? weight / red.total_weight : 0.0, o);
    return finish_step(st, false, weight, o, &red);
  } else {
    loss.backward();
  }
  if (!o.apply) {
    accumulating_ = true;  // the next call adds to these gradients
    st.grad_norm = std::nan("");
    return st;
  }
  accumulating_ = false;
  return finish_step(st, bad, rank_weight(o, st, B), o);
}

TrainStats Model::sync_step(const TrainOptions& o) {
  TORCH_CHECK(o.group, "qwen: a train step without sequences needs a process group (it only joins the all-reduce)");
  ensure_optimizer(o);
  for (auto& g : opt_->param_groups()) {
    auto& op = static_cast<torch::optim::AdamWOptions&>(g.options());
    op.lr(o.lr);
    op.weight_decay(o.weight_decay);
  }
  opt_->zero_grad();
  accumulating_ = false;
  const bool bad = pending_bad_;
  TrainStats st;
  if (bad) st.loss = std::nan("");
  return finish_step(st, bad, 0.0, o);
}

TrainStats Model::finish_step(TrainStats st, bool bad, double weight, const TrainOptions& o, const Reduced* reduced) {
  pending_bad_ = false;
  double total_weight = weight;
  if (o.group) {
    // Every rank takes part, also one whose loss was bad or whose batch was empty. First the
    // weights and the bad flags (float64), so that all ranks skip together; then
    // sum_r (w_r / W) grad_r in place of each rank's gradient.
    const Reduced red = reduced ? *reduced : allreduce_weights(weight, bad, o);
    total_weight = red.total_weight;
    bad = bad || red.bad;
    if (!bad && !reduced && o.overlap_grads) {
      // A rank without a backward in this call (no sequences): it joins the others' bucket
      // all-reduces with what its .grad() holds, scaled by its share (0 without sequences).
      reduce_grads_overlapped(at::Tensor(), total_weight > 0 ? weight / total_weight : 0.0, o);
    } else if (!bad && !reduced) {
      // The slow twin: after backward, buckets of ProcessGroupOptions::bucket_mb.
      at::NoGradGuard ng;
      std::vector<at::Tensor> grads;
      for (auto& p : opt_params_) {
        if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
        grads.push_back(p.grad());
      }
      const double share = total_weight > 0 ? weight / total_weight : 0.0;
      if (share != 1.0)
        for (auto& g : grads) g.mul_(share);
      o.group->allreduce_sum(grads);
    }
  }
  if (bad) {
    st.skipped = true;
    st.grad_norm = std::nan("");
    opt_->zero_grad();
    return st;
  }
  if (o.group && !(total_weight > 0)) {
    // No sequence (or no token) on any rank: nothing to learn from, no optimizer step.
    opt_->zero_grad();
    st.grad_norm = 0;
    return st;
  }
  double sq = 0;
  for (auto& p : opt_params_)
    if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  st.grad_norm = std::sqrt(sq);  // before clipping; the same on every rank after the all-reduce
  if (!std::isfinite(st.grad_norm)) {
    st.skipped = true;
    opt_->zero_grad();
    return st;
  }
  if (o.max_grad_norm > 0 && st.grad_norm > o.max_grad_norm) {
    at::NoGradGuard ng;
    double c = o.max_grad_norm / (st.grad_norm + 1e-6);
    for (auto& p : opt_params_)
      if (p.grad().defined()) p.grad().mul_(c);
  }
  if (o.zero > 0 && o.group && o.group->world_size() > 1) {
    zero_step(o);
  } else {
    if (zero_) {
      // Back to the plain optimizer (zero 0, or one process): the whole state on every rank.
      zero_gather_into_optimizer();
      zero_.reset();
    }
    opt_->step();
  }
  opt_->zero_grad();
  return st;
}

}  // namespace qwen
}  // namespace crpo
