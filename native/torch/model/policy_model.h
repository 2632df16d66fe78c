// The native video-language policy: a ViT-style vision encoder over spatio-temporal patches
// (tubelets, as Qwen2.5-VL's temporal_patch_size) with learned spatial + temporal positions, run
// once over all B x T' frame groups; a projector that merges 2x2 neighbouring patches into LM
// tokens (Qwen2-VL's PatchMerger); and a decoder-only LM with RMSNorm, rotary positions, SwiGLU
// MLP and grouped-KV attention with a KV cache. On top: sampling (temperature / top-k / top-p,
// greedy, stop tokens), per-token log-probs, the clipped-surrogate + k3-KL policy loss of
// crpo-method.md section 6, a supervised cross-entropy step, and AdamW with grad-norm clipping.
// Every module is a torch::nn module that can be reused (and gradient-checked) on its own.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cpu/video_transform_kernel.h"

namespace crpo {
namespace policy {

struct PolicyConfig {
  int64_t vocab_size = 0;
  // Video input: frames x image_size x image_size x channels, uint8.
  int64_t frames = 8;
  int64_t image_size = 32;
  int64_t channels = 3;
  int64_t patch_size = 8;
  int64_t temporal_patch = 2;  // frames per tubelet
  int64_t merge_size = 2;      // projector merges merge_size^2 neighbouring patches
  int64_t vision_dim = 64;
  int64_t vision_layers = 2;
  int64_t vision_heads = 4;
  int64_t vision_mlp = 128;
  // Vision attention over all tubelets of a clip (true) or within each tubelet (false). Either
  // way one batched pass; clip attention lets the encoder compare frames directly.
  bool vision_clip_attention = false;
  int64_t lm_dim = 96;
  int64_t lm_layers = 2;
  int64_t lm_heads = 4;
  int64_t lm_kv_heads = 2;
  int64_t lm_mlp = 256;
  int64_t max_seq_len = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  double init_std = 0.02;
  double pos_init_std = 0.02;  // std of the vision position tables' init
  // Option-slot embeddings: the tokens of option line k ("B. blue" is slot 2) get a learned
  // vector of their slot added to their token embedding. 0 = off; else the most slots (<= 26).
  int64_t option_slots = 0;
  int64_t pad_id = 0;
  uint64_t seed = 0;
  std::string dtype = "float32";  // "float32" | "bfloat16" (CUDA only)
  std::string device = "cpu";

  int64_t grid() const { return image_size / patch_size; }
  int64_t tubelets() const { return frames / temporal_patch; }
  int64_t patches_per_group() const { return grid() * grid(); }
  int64_t visual_tokens() const { return tubelets() * patches_per_group() / (merge_size * merge_size); }
  void validate() const;  // throws OpError naming the field
};

// y = x / sqrt(mean(x^2) + eps) * w
struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Rotary position embedding (rotate-half form). positions (N, L) int64 -> cos, sin (N, 1, L, hd/2).
std::pair<torch::Tensor, torch::Tensor> rotary_tables(const torch::Tensor& positions, int64_t head_dim, double theta,
                                                      torch::ScalarType dtype);
// x (N, H, L, hd)
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Fast paths (the decode-attention kernel, grouped-KV attention without copying keys/values per
// query head, the fused AdamW + grad-norm pass) are on by default. While a ReferencePaths guard
// lives on the current thread, every one of them falls back to its slow, obviously correct twin
// (plain ATen ops, as written before the fast path existed); fast_path_check compares the two.
bool reference_paths();
struct ReferencePaths {
  ReferencePaths();
  ~ReferencePaths();
  ReferencePaths(const ReferencePaths&) = delete;
  ReferencePaths& operator=(const ReferencePaths&) = delete;

 private:
  bool previous_;
};

// Causal grouped-KV attention of a few query rows against keys/values already in place, without
// autograd (generation's decode steps, no-grad scoring), CPU float32/float64:
// q (N, H, L, hd) contiguous, k/v (N, Hkv, >= Lk, hd) with the last two dims contiguous (a KV
// cache's first Lk columns), allowed (N, 1, L, Lk) bool -> (N, L, H*hd). Query head h reads kv head
// h / (H / Hkv); masked scores are -1e9 before the softmax, as in the matmul path.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& allowed, double scale);

// One layer's KV cache: k, v (N, kv_heads, capacity, hd), filled up to the cache's length.
struct LayerCache {
  torch::Tensor k, v;
};

// Causal grouped-KV self-attention with rotary positions.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t dim, int64_t heads, int64_t kv_heads);
  // x (N, L, D); cos/sin (N, 1, L, hd/2); allowed (N, 1, L, Lk) bool (true = may attend);
  // cache: when given, k/v are written at [start, start+L) and attention runs over [0, start+L).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& allowed, LayerCache* cache, int64_t start);
  int64_t heads, kv_heads, head_dim;
  torch::nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};
};
TORCH_MODULE(Attention);

// SwiGLU MLP: down(silu(gate(x)) * up(x)).
struct SwiGLUImpl : torch::nn::Module {
  SwiGLUImpl(int64_t dim, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear gate{nullptr}, up{nullptr}, down{nullptr};
};
TORCH_MODULE(SwiGLU);

struct DecoderLayerImpl : torch::nn::Module {
  DecoderLayerImpl(int64_t dim, int64_t heads, int64_t kv_heads, int64_t mlp, double eps);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& allowed, LayerCache* cache, int64_t start);
  RMSNorm attn_norm{nullptr}, mlp_norm{nullptr};
  Attention attn{nullptr};
  SwiGLU mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// KV cache of the whole LM: one LayerCache per layer plus the key validity mask.
struct KVCache {
  std::vector<LayerCache> layers;
  torch::Tensor key_valid;  // (N, capacity) bool
  int64_t length = 0;
};

struct LanguageModelImpl : torch::nn::Module {
  LanguageModelImpl(const PolicyConfig& c);
  // embeds (N, L, D) of the tokens at columns [start, start+L); positions (N, L); key_valid
  // (N, start+L) bool for every key column so far. Returns the final-normed hidden (N, L, D).
  torch::Tensor forward(const torch::Tensor& embeds, const torch::Tensor& positions, const torch::Tensor& key_valid,
                        KVCache* cache, int64_t start);
  torch::Tensor logits(const torch::Tensor& hidden) { return head->forward(hidden); }
  KVCache make_cache(int64_t n, int64_t capacity, const torch::TensorOptions& opts) const;
  int64_t dim, heads, kv_heads;
  double theta;
  torch::nn::Embedding embed{nullptr};
  torch::nn::Embedding slot_embed{nullptr};  // (option_slots + 1, D); row 0 = not an option; absent when off
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(LanguageModel);

// Pre-norm ViT block (LayerNorm, full attention over the patches of one frame group, GELU MLP).
struct VisionBlockImpl : torch::nn::Module {
  VisionBlockImpl(int64_t dim, int64_t heads, int64_t mlp);
  torch::Tensor forward(const torch::Tensor& x);  // (M, P, D)
  int64_t heads;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(VisionBlock);

struct VisionEncoderImpl : torch::nn::Module {
  VisionEncoderImpl(const PolicyConfig& c);
  // pixels (M, T, H, W, C) float in [-1, 1] -> (M, T', P, D). All M*T' tubelets in one batch
  // (attention per clip over T'*P tokens, or per tubelet over P tokens).
  torch::Tensor forward(const torch::Tensor& pixels);
  int64_t frames, image, channels, patch, tpatch, dim;
  bool clip_attention;
  torch::nn::Linear patch_embed{nullptr};
  torch::Tensor spatial_pos, temporal_pos;  // (P, D), (T', D)
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(VisionEncoder);

// Merges merge x merge neighbouring patches and maps them to the LM width.
struct ProjectorImpl : torch::nn::Module {
  ProjectorImpl(int64_t vision_dim, int64_t lm_dim, int64_t grid, int64_t merge);
  torch::Tensor forward(const torch::Tensor& x);  // (M, T', P, Dv) -> (M, T'*P/merge^2, Dl)
  int64_t grid, merge;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Projector);

struct PolicyNetImpl : torch::nn::Module {
  PolicyNetImpl(const PolicyConfig& c);
  VisionEncoder vision{nullptr};
  Projector projector{nullptr};
  LanguageModel lm{nullptr};
};
TORCH_MODULE(PolicyNet);

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

enum class FrameOp { None = 0, HFlip = 1, Reverse = 2, HFlipReverse = 3 };

// P prompts over V videos; row r of the output batch is prompt r / G, sample r % G.
struct PromptBatch {
  torch::Tensor frames;                     // (V, T, H, W, C) uint8, CPU (may wrap a JS buffer)
  std::vector<int64_t> video;               // (P) index into frames
  std::vector<FrameOp> op;                  // (P) counterfactual transform applied on the device
  std::vector<std::vector<int64_t>> ids;    // (P) prompt token ids
  std::vector<std::vector<int64_t>> slots;  // (P) option slot of each prompt token (0 = none), or empty: all 0
  int64_t group = 1;                        // G
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
};

struct StepStats {
  double loss = 0, pg_loss = 0, kl_loss = 0, mean_kl = 0, clip_frac = 0, ratio_mean = 0, entropy = 0, tokens = 0;
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
  // (video, transform) pair.
  torch::Tensor encode_prompts_visual(const PromptBatch& b);

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
  // The final hidden states (N, C, D) those logits come from.
  // prefix_hidden, when given, receives the prefix's hidden states (P, Lpre, D).
  torch::Tensor completion_hidden(const PromptBatch& b, const Completions& c, bool full_sequence = false,
                                  torch::Tensor* prefix_hidden = nullptr);

 private:
  struct Prefix {
    torch::Tensor embeds;     // (P, Lpre, D)
    torch::Tensor valid;      // (P, Lpre) bool
    torch::Tensor positions;  // (P, Lpre) int64
    torch::Tensor next_pos;   // (P) int64: position of the first completion token
  };
  Prefix build_prefix(const PromptBatch& b);
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

// Finite-difference gradient check of one module in double precision on tiny shapes.
// name: rmsnorm | rotary | attention | swiglu | decoder_layer | language_model | vision_encoder |
// projector | policy_loss | policy. Returns max |analytic - numeric| / max(1, |numeric|) and count.
struct GradCheckResult {
  double max_error = 0;
  double max_abs_grad = 0;
  int64_t checked = 0;
};
GradCheckResult grad_check(const std::string& name, uint64_t seed);
// Fast path vs its slow twin (ReferencePaths) on random inputs; max_error = max |fast - slow| /
// max(1, |slow|), max_abs_grad = max |slow| (scale of what was compared), checked = entries.
// name: attention_decode (float64) | attention_decode_f32 | attention_grouped | generate | logprobs | train_step |
// adamw (more as fast paths are added). grad_check("fast:<name>") runs it.
GradCheckResult fast_path_check(const std::string& name, uint64_t seed);

// Live handles: id -> model.
int64_t register_policy(std::shared_ptr<Policy> p);
std::shared_ptr<Policy> find_policy(int64_t id, const std::string& op);
bool dispose_policy(int64_t id);
int64_t live_policies();

}  // namespace policy
}  // namespace crpo
