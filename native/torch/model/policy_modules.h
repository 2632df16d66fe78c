// The modules of the native video-language policy, each a torch::nn module that can be reused
// (and gradient-checked) on its own: a ViT-style vision encoder over spatio-temporal patches
// (tubelets, as Qwen2.5-VL's temporal_patch_size) with learned spatial + temporal positions, run
// once over all B x T' frame groups; a projector that merges 2x2 neighbouring patches into LM
// tokens (Qwen2-VL's PatchMerger); and a decoder-only LM with RMSNorm, rotary positions, SwiGLU
// MLP and grouped-KV attention with a KV cache. Their config (PolicyConfig) and the switch to the
// slow twins of the fast paths (ReferencePaths) live here too. Definitions: language_model.cpp,
// vision_encoder.cpp; PolicyConfig::validate in policy_model.cpp.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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
  // Convolutional stem: a 3x3 convolution (stride 1) to vision_stem channels + GELU on every frame
  // before the tubelets are cut, so a patch embeds local edge and corner features rather than raw
  // pixels. 0 = off (the patch embedding reads pixels, as Qwen-VL's does).
  int64_t vision_stem = 0;
  // A second 3x3 convolution, stride 2, to vision_stem_down channels + GELU after the stem (0 = off;
  // needs the stem and an even patch_size): the tubelets are then cut from the half-resolution
  // feature map, patch_size / 2 cells a side, so the patch grid and everything after it stay the same.
  int64_t vision_stem_down = 0;
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
  // How the vision position tables start: "random" (N(0, pos_init_std)) or "sincos" (2-D sine-cosine
  // of (row, column) for the spatial table, half the width for each axis, and 1-D of the frame group
  // for the temporal one, scaled to std pos_init_std; learned from there either way).
  std::string pos_init = "random";
  // Option-slot embeddings: the tokens of option line k ("B. blue" is slot 2) get a learned
  // vector of their slot added to their token embedding. 0 = off; else the most slots (<= 26).
  int64_t option_slots = 0;
  // Vision attribute head (0 = off): a linear layer from the vision encoder's mean token to this
  // many logits, trained only by the supervised step's vision attribute loss (LossOptions::vision_aux)
  // and never read when answering: a direct training signal for the vision encoder, as a real
  // model's vision tower gets from its own pretraining. The logits form groups (one per question
  // kind) that each prompt's label names (PromptBatch::aux_start / aux_size / aux_class).
  int64_t vision_aux_classes = 0;
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
  int64_t frames, image, channels, patch, tpatch, dim, stem_channels, stem_down_channels;
  bool clip_attention;
  torch::nn::Conv2d stem{nullptr};       // absent when vision_stem = 0
  torch::nn::Conv2d stem_down{nullptr};  // absent when vision_stem_down = 0
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
  torch::nn::Linear vision_aux{nullptr};  // absent when vision_aux_classes = 0
};
TORCH_MODULE(PolicyNet);

}  // namespace policy
}  // namespace crpo
