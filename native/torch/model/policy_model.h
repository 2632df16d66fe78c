// The native video-language policy: the modules of policy_modules.h under one Policy object with
// its generator and AdamW state. On top: sampling (temperature / top-k / top-p, greedy, stop
// tokens), per-token log-probs, the clipped-surrogate + k3-KL policy loss of crpo-method.md
// section 6, a supervised cross-entropy step, and AdamW with grad-norm clipping.
// Which file holds what (all under native/torch/model/):
//   policy_modules.h      PolicyConfig and the torch::nn modules
//   language_model.cpp    RMSNorm, rotary positions, attention (+ the decode-attention entry point), SwiGLU,
//                         decoder layer, the LM and its KV cache
//   vision_encoder.cpp    vision blocks, the tubelet encoder, the projector, PolicyNet
//   policy_model.cpp      config checks, construction and init, the visual + text prefix, completion
//                         hidden states, per-token log-probs and entropy
//   policy_generate.cpp   sampling (seeded per-row uniforms, inverse CDF) and KV-cached generation
//   policy_train.cpp      the policy loss, grad-norm clipping and AdamW (ATen twin and fused pass), the
//                         train step with its optional gradient all-reduce
//   policy_state.cpp      weights, optimizer state and RNG state in and out
//   policy_handles.*      the live-handle registry (id -> Policy)
//   policy_internal.h     helpers shared by these files (not used by the binding)
//   checks/               the gradient checks and fast-path checks behind policyGradCheck
//   policy_binding.cpp    the JS functions
// The CPU kernels of the fast paths are in native/kernels/cpu/ (decode_attention_kernel,
// adamw_kernel).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cpu/video_transform_kernel.h"
#include "torch/model/policy_handles.h"
#include "torch/model/policy_modules.h"

namespace crpo {
namespace policy {

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

enum class FrameOp { None = 0, HFlip = 1, Reverse = 2, HFlipReverse = 3, Swap = 4 };

// P prompts over V videos; row r of the output batch is prompt r / G, sample r % G.
struct PromptBatch {
  torch::Tensor frames;                     // (V, T, H, W, C) uint8, CPU (may wrap a JS buffer)
  std::vector<int64_t> video;               // (P) index into frames
  std::vector<FrameOp> op;                  // (P) counterfactual transform applied on the device
  std::vector<int64_t> swap_at;             // (P) Swap: first frame of the second segment; else 0 (or empty: all 0)
  std::vector<std::vector<int64_t>> ids;    // (P) prompt token ids
  std::vector<std::vector<int64_t>> slots;  // (P) option slot of each prompt token (0 = none), or empty: all 0
  // Vision attribute labels (supervised step only), per prompt or empty: none. Prompt p's label is
  // class aux_class[p] of the logit group [aux_start[p], aux_start[p] + aux_size[p]) of the vision
  // attribute head; aux_size[p] = 0 means no label.
  std::vector<int64_t> aux_start, aux_size, aux_class;
  int64_t group = 1;  // G
  int64_t prompts() const { return static_cast<int64_t>(ids.size()); }
};

// N = P*G completions, right-padded to width C.
struct Completions {
  torch::Tensor ids;      // (N, C) int64
  torch::Tensor lengths;  // (N) int64
};

struct SamplingOptions {
  int64_t max_new_tokens = 8;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;  // 0 = off
  bool greedy = false;
  bool use_cache = true;
  std::vector<int64_t> stop;  // stop tokens (included in the completion)
  // Per-prompt sampling seeds (P), or empty: draw from the policy's own generator. With seeds, the
  // uniform of row p*G+g at token s is sample_uniform(seeds[p], g, s): a prompt's samples depend on
  // its seed only, not on the other rows of the batch nor on the policy's generator state.
  std::vector<uint64_t> seeds;
};

// The counter-based uniform in [0, 1) of (seed, sample, token): splitmix64's output function
// chained over the three counters, top 53 bits. Stateless, so each row has its own stream.
double sample_uniform(uint64_t seed, uint64_t sample, uint64_t token);

struct Generation {
  torch::Tensor tokens;    // (N, max_new) int64, pad after the end
  torch::Tensor logprobs;  // (N, max_new) float, 0 after the end
  torch::Tensor lengths;   // (N) int64
};

enum class Aggregation { SeqMeanTokenMean = 0, TokenMean = 1, SeqMeanTokenSumNorm = 2 };

struct LossOptions {
  double eps_low = 0.2, eps_high = 0.2, beta = 0.04;
  Aggregation agg = Aggregation::SeqMeanTokenMean;
  int64_t max_new_tokens = 0;  // for SeqMeanTokenSumNorm (0: completion width)
  double temperature = 1.0;
  bool full_sequence = false;  // the slow twin of completion_logits (see there)
  // Supervised step only: weight of a language-model loss on the prompt text (next-token
  // cross-entropy over the prompt's words after <bos>), added to the completion loss. 0 = off.
  double prompt_lm = 0.0;
  // Supervised step only: weight of the vision attribute loss (cross-entropy of the vision
  // attribute head over each labelled prompt's logit group, mean over labelled prompts). 0 = off.
  double vision_aux = 0.0;
};

// logp, old, ref (N, C) float (old/ref may be undefined: on-policy ratio 1 / no KL term);
// advantages (N); mask (N, C) float in {0,1}. Returns the scalar loss and its parts (detached).
struct PolicyLoss {
  torch::Tensor loss;
  double pg_loss = 0, kl_loss = 0, mean_kl = 0, clip_frac = 0, ratio_mean = 0, tokens = 0;
};
PolicyLoss policy_loss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                       const torch::Tensor& advantages, const torch::Tensor& mask, const LossOptions& o);

struct OptimOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, max_grad_norm = 1.0;
  // With a process group: all-reduce gradient buckets during backward (crpo::dist::GradReducer,
  // buckets of grad_bucket_mb MiB), or after it (false: the slow twin the tests compare against).
  bool overlap_grads = true;
  double grad_bucket_mb = 25.0;
};

struct StepStats {
  double loss = 0, pg_loss = 0, kl_loss = 0, mean_kl = 0, clip_frac = 0, ratio_mean = 0, entropy = 0, tokens = 0;
  double vision_aux_loss = 0;  // the supervised step's vision attribute loss (0 when off)
  double grad_norm = 0;
  bool skipped = false;
  std::string skip_reason;
  int64_t step = 0;
};

struct NamedTensor {
  std::string name;
  torch::Tensor value;  // float32, CPU, contiguous
};

class Policy {
 public:
  explicit Policy(const PolicyConfig& c);
  Policy(const Policy& other, bool frozen);  // deep copy of weights (no optimizer state)

  const PolicyConfig& config() const { return cfg_; }
  bool frozen() const { return frozen_; }
  int64_t step() const { return step_; }
  int64_t parameter_count() const;
  std::vector<torch::Tensor> net_params() const { return net_->parameters(); }
  std::vector<std::string> parameter_names() const {
    std::vector<std::string> v;
    for (auto& kv : net_->named_parameters()) v.push_back(kv.key());
    return v;
  }

  // Visual tokens for each prompt: (P, Nv, D). Runs the vision encoder once per unique
  // (video, transform) pair. vision_pooled, when given, receives each prompt's mean vision-encoder
  // token (P, vision_dim), the input of the vision attribute head.
  torch::Tensor encode_prompts_visual(const PromptBatch& b, torch::Tensor* vision_pooled = nullptr);

  Generation generate(const PromptBatch& b, const SamplingOptions& o);
  // Per-token log-probs (N, C) of given completions; entropy (N, C) when wanted.
  std::pair<torch::Tensor, torch::Tensor> logprobs(const PromptBatch& b, const Completions& c, double temperature,
                                                   bool want_entropy, bool full_sequence = false);
  // RL step (loss of section 6) or, when `sft`, teacher-forced cross-entropy (token mean).
  StepStats train_step(const PromptBatch& b, const Completions& c, const torch::Tensor& advantages,
                       const torch::Tensor& old_logp, const torch::Tensor& ref_logp, const LossOptions& lo,
                       const OptimOptions& oo, bool sft, int64_t process_group);

  std::vector<NamedTensor> get_parameters() const;
  std::vector<NamedTensor> get_optimizer_state() const;  // "<param>.exp_avg", "<param>.exp_avg_sq"
  void set_parameters(const std::vector<NamedTensor>& values);
  void set_optimizer_state(const std::vector<NamedTensor>& values, int64_t step);
  torch::Tensor rng_state() const;
  void set_rng_state(const torch::Tensor& s);

  // Logits (N, C, V) of the completions' positions. The prefix (visual + prompt tokens) is the
  // same for the G completions of a prompt, so by default it runs once per prompt and its keys and
  // values are shared by the G completions (exact: a prefix token never attends to a completion).
  // full_sequence runs every (prefix + completion) row whole: the slow, obviously correct twin.
  torch::Tensor completion_logits(const PromptBatch& b, const Completions& c, bool full_sequence = false);
  // Next-token cross-entropy (mean over tokens) of the prompt text after <bos>, from the prefix
  // hidden states (P, Lpre, D) of build_prefix's layout: the text is the last columns of each row.
  torch::Tensor prompt_lm_loss(const PromptBatch& b, const torch::Tensor& prefix_hidden);
  // Cross-entropy of the vision attribute head over the labelled prompts' logit groups (mean over
  // labelled prompts; 0 when none), from encode_prompts_visual's vision_pooled (P, vision_dim).
  torch::Tensor vision_aux_loss(const PromptBatch& b, const torch::Tensor& vision_pooled);
  // The final hidden states (N, C, D) those logits come from.
  // prefix_hidden, when given, receives the prefix's hidden states (P, Lpre, D); vision_pooled as
  // in encode_prompts_visual.
  torch::Tensor completion_hidden(const PromptBatch& b, const Completions& c, bool full_sequence = false,
                                  torch::Tensor* prefix_hidden = nullptr, torch::Tensor* vision_pooled = nullptr);

 private:
  struct Prefix {
    torch::Tensor embeds;     // (P, Lpre, D)
    torch::Tensor valid;      // (P, Lpre) bool
    torch::Tensor positions;  // (P, Lpre) int64
    torch::Tensor next_pos;   // (P) int64: position of the first completion token
  };
  Prefix build_prefix(const PromptBatch& b, torch::Tensor* vision_pooled = nullptr);
  // Log-probs (N, C) of the completion tokens under hidden (N, C, D) and, when wanted, the entropy
  // (N, C, no grad) of each position's distribution; both 0 where mask (N, C) is 0 on the fast
  // path (head + log-softmax only inside the completions), any value there on the slow twin.
  struct TokenScores {
    torch::Tensor logp, entropy;
  };
  TokenScores score_tokens(const torch::Tensor& hidden, const Completions& c, const torch::Tensor& mask,
                           double temperature, bool want_entropy);
  // Rows are prompt-major with `group` samples per prompt; `token` is the index of the token drawn
  // (the counter of the per-row streams when o.seeds is set).
  torch::Tensor sample_next(const torch::Tensor& logits, const SamplingOptions& o, torch::Tensor* logp_out,
                            int64_t group, int64_t token);

  PolicyConfig cfg_;
  PolicyNet net_{nullptr};
  torch::Device device_;
  torch::ScalarType dtype_;
  at::Generator gen_;
  bool frozen_ = false;
  int64_t step_ = 0;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<bool> decay_;  // per parameter (named_parameters order): weight decay applies
};

}  // namespace policy
}  // namespace crpo
