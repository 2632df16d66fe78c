// Qwen2.5-VL and Qwen3-VL in libtorch: vision towers (3D patch embedding, 2D rotary positions,
// Qwen2.5-VL window attention / Qwen3-VL interpolated position embeddings and DeepStack),
// multimodal-rotary (mrope) decoders with grouped KV heads, KV-cached greedy decoding and LoRA.
// The maths follows Hugging Face transformers' modeling_qwen2_5_vl.py and modeling_qwen3_vl.py
// (eager attention) so that fp32 outputs match them; weights live in one map keyed by the
// canonical transformers names (`model.visual.*`, `model.language_model.*`, `lm_head.weight`).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace crpo {
namespace dist {
class ProcessGroupHandle;  // torch/dist/process_group.h
}  // namespace dist
namespace qwen {

enum class Arch { Qwen25VL, Qwen3VL };

struct TextConfig {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double eps = 1e-6, theta = 10000.0;
  std::vector<int64_t> mrope_section;  // (3,) frequencies per axis t, h, w; sums to head_dim / 2
  bool interleaved = false;            // Qwen3-VL: t/h/w frequencies interleaved instead of chunked
  bool attn_bias = false;              // q/k/v biases (Qwen2 LM: true)
  bool qk_norm = false;                // Qwen3 LM: RMSNorm over head_dim on q and k
  bool tie = false;                    // lm_head shares embed_tokens
  std::string act = "silu";
};

struct VisionConfig {
  int64_t depth = 0, hidden = 0, intermediate = 0, heads = 0, patch = 0, temporal_patch = 2, merge = 2, in_ch = 3,
          out_hidden = 0;
  std::string act = "silu";
  int64_t window_size = 0;              // Qwen2.5-VL: window in pixels
  std::vector<int64_t> fullatt_blocks;  // Qwen2.5-VL: blocks with full (per-frame) attention
  int64_t num_pos = 0;                  // Qwen3-VL: learned position embeddings (a square grid)
  std::vector<int64_t> deepstack;       // Qwen3-VL: blocks whose output feeds the first LM layers
};

struct Config {
  Arch arch = Arch::Qwen25VL;
  TextConfig text;
  VisionConfig vision;
  int64_t image_token = -1, video_token = -1;
};

struct LoraConfig {
  int64_t rank = 0;  // 0 = no LoRA
  double alpha = 16;
  double dropout = 0;
  std::vector<std::string> targets;  // module suffixes such as "q_proj", "v_proj", "qkv"
  bool vision = false;               // also adapt matching vision-tower linears
  uint64_t seed = 0;
};

// One model call. All tensors on CPU, int64 ids, fp32 pixels; moved to the model's device inside.
struct Inputs {
  at::Tensor input_ids;       // (B, L)
  at::Tensor attention_mask;  // (B, L) 1 = token, 0 = padding; undefined = all ones
  at::Tensor position_ids;    // (3, B, L) from the rope-index function
  at::Tensor pixel_values;    // (N_img_patches, C*tp*p*p) rows as the HF processor emits them
  at::Tensor image_grid;      // (n_img, 3)
  at::Tensor pixel_values_videos;
  at::Tensor video_grid;      // (n_vid, 3)
  bool share_vision = false;  // the vision inputs belong to every row (a GRPO group): encoded once
  // Each image / video i is used by image_repeats[i] consecutive placeholder runs (rows of one
  // prompt): encoded once, its features repeated. Empty = each item used once (transformers).
  std::vector<int64_t> image_repeats, video_repeats;
  // Shared-prefix scoring and training (scored_logits): consecutive rows form groups of
  // (rows, prefix length) whose first `prefix length` tokens (vision + prompt) are the same; each
  // prefix runs once and the group's completions attend to its keys/values. Empty = every row whole.
  std::vector<std::pair<int64_t, int64_t>> prefix_groups;
};

// Named intermediate outputs, recorded when enabled (for golden comparisons).
struct Capture {
  bool on = false;
  std::vector<std::pair<std::string, at::Tensor>> items;
  void add(const std::string& name, const at::Tensor& t) {
    if (on) items.emplace_back(name, t.detach().to(at::kCPU, at::kFloat).contiguous());
  }
};

// Per-layer key/value cache of the decoder: (B, kv_heads, T, head_dim) each.
struct KVCache {
  std::vector<at::Tensor> k, v;
  at::Tensor mask;  // (B, T) keys seen so far, 1 = real token
  int64_t len = 0;
};

struct VisionResult {
  at::Tensor embeds;                  // (N / merge^2, out_hidden)
  std::vector<at::Tensor> deepstack;  // Qwen3-VL: one (N / merge^2, out_hidden) per deepstack block
};

struct ForwardResult {
  at::Tensor logits;  // (B, L, V)
  at::Tensor hidden;  // (B, L, H) final-norm output
};

// The next-token predictions a call scores and where they sit in the rows: logits (B, T, V) for
// targets (B, T); column t of row b is column offset[b] + t of the (B, L-1) layout of the full rows
// (target = token offset[b] + t + 1). Per-row path: T = L-1, offset 0, `full` = the (B, L, V)
// logits. Shared prefix: T = the longest completion, offset = prefix length - 1.
struct ScoredLogits {
  at::Tensor logits;   // (B, T, V) model dtype
  at::Tensor targets;  // (B, T) int64
  at::Tensor valid;    // (B, T) fp32, 1 = a real target (attended token)
  std::vector<int64_t> offset;
  at::Tensor full;  // (B, L, V) per-row path only
  int64_t seq_len = 0;
  // (B, T) values in the (B, L-1) layout, `fill` where nothing was scored (differentiable).
  at::Tensor to_rows(const at::Tensor& x, double fill) const;
};

struct GenerateResult {
  std::vector<std::vector<int64_t>> tokens;  // per row, new tokens only
  std::vector<std::vector<float>> logprobs;  // per row, log p(token) under the model (temperature 1)
  std::vector<at::Tensor> step_logits;       // per step (B, V), fp32 CPU (when kept)
};

struct SampleOptions {
  int64_t max_new_tokens = 16;
  int64_t eos = -1;
  bool use_cache = true;
  double temperature = 0;  // 0 = greedy
  int64_t top_k = 0;       // 0 = off
  double top_p = 1.0;
  uint64_t seed = 0;
  bool keep_logits = false;
};

// One policy-gradient / SFT step (GRPO-family clipped surrogate, as TRL/verl define it).
struct TrainBatch {
  at::Tensor completion_mask;  // (B, L) 1 on tokens whose log-prob is trained (completion targets)
  at::Tensor advantages;       // (B,) per sequence (grpo)
  at::Tensor old_logprobs;     // (B, L-1) optional; default = current (detached)
  at::Tensor ref_logprobs;     // (B, L-1) optional; KL(k3) to the reference when kl_beta > 0
};

struct TrainOptions {
  std::string objective = "grpo";  // "grpo" | "sft"
  // "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum-norm" (crpo-method.md section 6)
  std::string aggregation = "token-mean";
  double max_new_tokens = 1;  // divisor of seq-mean-token-sum-norm
  double temperature = 1.0;   // log-probs of logits / temperature
  double lr = 1e-4, weight_decay = 0.0, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double max_grad_norm = 1.0;  // <= 0: no clipping
  double clip_low = 0.2, clip_high = 0.2, kl_beta = 0.0;
  // Gradient accumulation over micro-batches: the aggregation's normalisers for the whole batch
  // (0 = this call's own counts), and whether this call ends the batch (clip + AdamW step).
  int64_t norm_tokens = 0, norm_seqs = 0;
  bool apply = true;
  int64_t seed = -1;  // >= 0: seed the global generators first (reproducible LoRA dropout)
  // Data parallel: the ranks of this group average their gradients (weighted by each rank's loss
  // denominator) before clipping and AdamW, in the call that applies the step (qwen_train_dist.cpp).
  std::shared_ptr<dist::ProcessGroupHandle> group;
  // With a group: all-reduce gradient buckets during the applying call's backward (GradReducer,
  // buckets of grad_bucket_mb MiB), or after it (false: the slow twin the tests compare against).
  bool overlap_grads = true;
  double grad_bucket_mb = 25.0;
  // 1: ZeRO stage 1 over the group: each rank keeps and updates the AdamW moments of 1/N of the
  // flattened trainable weights, then the updated slices are gathered on every rank.
  int zero = 0;
};

struct TrainStats {
  double loss = 0, pg_loss = 0, kl = 0, clip_frac = 0, grad_norm = 0, entropy = 0;
  int64_t tokens = 0;
  bool skipped = false;  // non-finite loss or gradient: no update applied
};

class Model {
 public:
  Model(Config cfg, at::ScalarType dtype, at::Device device);

  const Config& config() const { return cfg_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

  // Weights by canonical name; set_param converts to the model dtype/device.
  void set_param(const std::string& name, const at::Tensor& value);
  // The same for a large contiguous source (a memory-mapped file): copied in slices of ~64 MiB of
  // the source, `release(byte offset, bytes)` called after each so the caller can free that part.
  void set_param_chunked(const std::string& name, const at::Tensor& src,
                         const std::function<void(int64_t, int64_t)>& release);
  const at::Tensor& param(const std::string& name) const;
  bool has_param(const std::string& name) const { return params_.count(name) > 0; }
  std::vector<std::string> param_names() const;
  std::map<std::string, at::Tensor>& params() { return params_; }

  // LoRA adapters on the target linears (A: (r, in) Kaiming-uniform, B: (out, r) zeros).
  void add_lora(const LoraConfig& lc);
  const LoraConfig& lora_config() const { return lora_; }
  std::map<std::string, at::Tensor>& lora_params() { return lora_params_; }
  void set_lora_enabled(bool on) { lora_enabled_ = on; }
  bool lora_enabled() const { return lora_enabled_; }
  // W + scale * B A for every adapted linear (weights for export).
  at::Tensor merged_weight(const std::string& name) const;
  // Folds the adapters into the base weights and restarts them (B = 0, A re-drawn): the model is
  // unchanged and the LoRA-disabled reference becomes the current policy. Resets the optimizer.
  void merge_lora();

  void set_training(bool on) { training_ = on; }
  void set_checkpointing(bool on) { checkpointing_ = on; }
  bool checkpointing() const { return checkpointing_; }

  // Vision tower over one batch of patch rows with its grids (images or videos).
  VisionResult vision(const at::Tensor& pixels, const at::Tensor& grid, Capture* cap, const std::string& call);

  // Token embeddings with vision features scattered into the placeholder tokens; fills the
  // visual mask / deepstack tensors (zero outside visual positions) for Qwen3-VL.
  at::Tensor embed(const Inputs& in, Capture* cap, std::vector<at::Tensor>* deepstack_full);

  // Decoder over embeddings (B, L, H) with position ids (3, B, L); the cache, if given, holds the
  // previous keys/values and is extended. `mask` (B, L) marks real tokens of this chunk.
  ForwardResult decode(const at::Tensor& embeds, const at::Tensor& position_ids, const at::Tensor& mask,
                       const std::vector<at::Tensor>& deepstack_full, KVCache* cache, Capture* cap);

  ForwardResult forward(const Inputs& in, Capture* cap, KVCache* cache = nullptr);

  // Logits of every next-token prediction the rows score: every position of every row (per-row
  // path, the slow twin), or with in.prefix_groups each group's prefix once and the completions
  // against its keys/values (qwen_prefix.cpp), which scores only completion tokens.
  ScoredLogits scored_logits(const Inputs& in, Capture* cap);

  // Greedy or sampled decoding; with use_cache=false every step recomputes the whole sequence.
  GenerateResult generate(const Inputs& in, const SampleOptions& o);

  // Which weights train: "lora" (the adapters; default once attached), "lm" (every LM weight),
  // "all" (LM and vision tower). Resets the optimizer.
  void set_trainable(const std::string& mode);
  std::vector<std::string> trainable_names() const;
  TrainStats train_step(const Inputs& in, const TrainBatch& b, const TrainOptions& o);
  // The applying step of a rank with nothing (more) to train this step: no sequences in its shard,
  // or an earlier micro-batch whose loss was not finite. It takes part in the gradient all-reduce
  // of o.group with weight 0 (and its non-finite flag), then steps like the other ranks.
  TrainStats sync_step(const TrainOptions& o);
  // AdamW state (moments, step counts) for resuming; load creates the optimizer if needed. With
  // sharded state (zero 1) saving is collective: every rank of the group calls it (the moments are
  // gathered into the one-replica form, which loads at any world size); an empty path writes nothing.
  void save_optimizer(const std::string& path);
  void load_optimizer(const std::string& path, const TrainOptions& o);

  // Decoder layer (public for the checkpointing autograd function).
  at::Tensor decoder_layer(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                           const at::Tensor& bias, KVCache* cache) const;
  // The same layer with keys/values (B, kv_heads, Tp, hd) put before this chunk's (`past_k`,
  // undefined = none; gradients flow into them), returning the keys/values it attended to
  // (past + this chunk's, rotated, before the grouped-head expansion) in k_out / v_out.
  at::Tensor decoder_layer_kv(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                              const at::Tensor& bias, const at::Tensor& past_k, const at::Tensor& past_v,
                              at::Tensor* k_out, at::Tensor* v_out) const;
  // A decoder layer of the shared-prefix path: the groups' keys/values `pk`/`pv` (NG, kv_heads, P, hd)
  // picked for each row by `rows` (B,) before this chunk's; undefined pk = a prefix chunk.
  at::Tensor shared_layer(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                          const at::Tensor& bias, const at::Tensor& pk, const at::Tensor& pv, const at::Tensor& rows,
                          at::Tensor* k_out, at::Tensor* v_out) const;

  std::mutex mu;  // one call at a time per model

 private:
  at::Tensor linear(const at::Tensor& x, const std::string& prefix, bool bias) const;
  at::Tensor rms_norm(const at::Tensor& x, const std::string& weight, double eps) const;
  at::Tensor layer_norm(const at::Tensor& x, const std::string& prefix, int64_t dim) const;
  at::Tensor act(const at::Tensor& x, const std::string& name) const;
  at::Tensor vision_block(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                          const std::vector<int64_t>& cu) const;
  std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& position_ids) const;
  ScoredLogits shared_prefix_logits(const Inputs& in);
  // Trainable weights of decoder layer i (what a checkpointed layer passes its gradients to).
  std::vector<at::Tensor> layer_trainables(int64_t i) const;
  std::string vpre() const { return "model.visual."; }
  std::string tpre() const { return "model.language_model."; }

  Config cfg_;
  at::ScalarType dtype_;
  at::Device device_;
  std::map<std::string, at::Tensor> params_;
  LoraConfig lora_;
  std::map<std::string, at::Tensor> lora_params_;  // "<linear prefix>.lora_A" / ".lora_B"
  bool lora_enabled_ = true;
  bool training_ = false;
  bool checkpointing_ = false;
  std::string trainable_mode_;
  bool accumulating_ = false;  // gradients of earlier micro-batches are held
  bool pending_bad_ = false;   // a micro-batch of this step had a non-finite loss (data parallel)
  std::unique_ptr<torch::optim::AdamW> opt_;
  std::vector<at::Tensor> opt_params_;
  void ensure_optimizer(const TrainOptions& o);
  // All-reduce (with a group), clip and AdamW; `weight`: this rank's loss denominator. `reduced`:
  // the weights were all-reduced and the gradients reduced during backward already.
  struct Reduced {
    double total_weight;
    bool bad;
  };
  TrainStats finish_step(TrainStats st, bool bad, double weight, const TrainOptions& o,
                         const Reduced* reduced = nullptr);

  // qwen_train_dist.cpp: the weights / bad flags all-reduce, the overlapped gradient all-reduce
  // (loss may be undefined: a round without backward), the sharded AdamW state.
  Reduced allreduce_weights(double weight, bool bad, const TrainOptions& o);
  void reduce_grads_overlapped(const at::Tensor& loss, double share, const TrainOptions& o);
  struct ZeroState;
  std::shared_ptr<ZeroState> zero_;
  // The reducer of the last overlapped step, kept while group, bucket size and trainable weights
  // stay the same (its hooks stay registered; its buckets hold one gradient-sized buffer).
  struct ReducerCache;
  std::shared_ptr<ReducerCache> reducer_;
  void zero_step(const TrainOptions& o);  // creates the shards on first use
  void zero_gather_into_optimizer();

 public:
  // Bytes of AdamW state this rank holds (all of it, or its shard with zero 1).
  int64_t optimizer_state_bytes() const;
};

// Greedy-decoding helper for tests: rope positions of text tokens appended after a prompt.
at::Tensor text_positions(int64_t start, int64_t len, int64_t batch);

}  // namespace qwen
}  // namespace crpo
