// The native video-language policy (see policy_model.h): modules, batching, KV-cached sampling,
// log-probs, the clipped-surrogate + k3-KL loss of crpo-method.md section 6 (and a supervised
// cross-entropy step), AdamW with grad-norm clipping, state export, and finite-difference
// gradient checks of every module in double precision.
#include "torch/model/policy_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <map>
#include <sstream>
#include <unordered_map>

#include "common/op_error.h"
#include "torch/dist/process_group.h"
#include "torch/ops.h"

// Weak: the train step can run (without a group) even in a build where process groups are absent.
namespace crpo {
namespace dist {
std::shared_ptr<ProcessGroupHandle> find_process_group(int64_t id) __attribute__((weak));
}  // namespace dist
}  // namespace crpo

namespace crpo {
namespace policy {

namespace {

[[noreturn]] void config_error(const std::string& field, const std::string& what) {
  throw OpError(ErrorKind::Range, "ERR_CRPO_POLICY_CONFIG", "policy config: " + field + " " + what);
}

torch::Tensor upcast(const torch::Tensor& x) {
  return (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf) ? x.to(torch::kFloat) : x;
}

torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

}  // namespace

void PolicyConfig::validate() const {
  auto pos = [](const char* f, int64_t v) {
    if (v <= 0) config_error(f, "must be a positive integer, got " + std::to_string(v));
  };
  pos("vocabSize", vocab_size);
  pos("frames", frames);
  pos("imageSize", image_size);
  pos("channels", channels);
  pos("patchSize", patch_size);
  pos("temporalPatch", temporal_patch);
  pos("mergeSize", merge_size);
  pos("visionDim", vision_dim);
  pos("visionLayers", vision_layers);
  pos("visionHeads", vision_heads);
  pos("visionMlp", vision_mlp);
  pos("lmDim", lm_dim);
  pos("lmLayers", lm_layers);
  pos("lmHeads", lm_heads);
  pos("lmKvHeads", lm_kv_heads);
  pos("lmMlp", lm_mlp);
  pos("maxSeqLen", max_seq_len);
  if (vocab_size < 4) config_error("vocabSize", "must be at least 4, got " + std::to_string(vocab_size));
  if (pad_id < 0 || pad_id >= vocab_size)
    config_error("padId", "must be in [0, vocabSize), got " + std::to_string(pad_id));
  if (frames % temporal_patch)
    config_error("frames", "must be a multiple of temporalPatch (" + std::to_string(temporal_patch) + "), got " +
                               std::to_string(frames));
  if (image_size % (patch_size * merge_size)) {
    config_error("imageSize", "must be a multiple of patchSize*mergeSize (" + std::to_string(patch_size * merge_size) +
                                  "), got " + std::to_string(image_size));
  }
  if (vision_dim % vision_heads) config_error("visionDim", "must be a multiple of visionHeads");
  if (lm_dim % lm_heads) config_error("lmDim", "must be a multiple of lmHeads");
  if (lm_heads % lm_kv_heads) config_error("lmHeads", "must be a multiple of lmKvHeads");
  if ((lm_dim / lm_heads) % 2) config_error("lmDim", "/ lmHeads (the head size) must be even for rotary positions");
  if (max_seq_len <= visual_tokens())
    config_error("maxSeqLen", "must exceed the " + std::to_string(visual_tokens()) + " visual tokens");
  if (!(rope_theta > 0)) config_error("ropeTheta", "must be > 0");
  if (!(norm_eps > 0)) config_error("normEps", "must be > 0");
  if (!(init_std > 0)) config_error("initStd", "must be > 0");
  if (!(pos_init_std > 0)) config_error("posInitStd", "must be > 0");
  if (option_slots < 0 || option_slots > 26) config_error("optionSlots", "must be in [0, 26]");
  if (dtype != "float32" && dtype != "bfloat16" && dtype != "float64")
    config_error("dtype", "must be 'float32', 'bfloat16' or 'float64', got '" + dtype + "'");
  torch::Device d(torch::kCPU);
  try {
    d = torch::Device(device);
  } catch (const c10::Error&) {
    config_error("device", "must be 'cpu' or 'cuda[:N]', got '" + device + "'");
  }
  if (d.is_cuda() && !torch::cuda::is_available()) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_NO_CUDA",
                  "policy config: device '" + device + "' requested but CUDA is not available");
  }
  if (dtype == "bfloat16" && !d.is_cuda()) config_error("dtype", "'bfloat16' needs a CUDA device (fp32 on CPU)");
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto t = upcast(x);
  auto y = t * torch::rsqrt(t.pow(2).mean(-1, true) + eps);
  return y.to(x.scalar_type()) * weight;
}

std::pair<torch::Tensor, torch::Tensor> rotary_tables(const torch::Tensor& positions, int64_t head_dim, double theta,
                                                      torch::ScalarType dtype) {
  const int64_t half = head_dim / 2;
  auto opts = torch::TensorOptions().dtype(torch::kDouble).device(positions.device());
  auto inv = torch::pow(theta, -torch::arange(0, half, opts) * (2.0 / static_cast<double>(head_dim)));  // (hd/2)
  auto ang = positions.to(torch::kDouble).unsqueeze(-1) * inv;                                          // (N, L, hd/2)
  return {ang.cos().to(dtype).unsqueeze(1), ang.sin().to(dtype).unsqueeze(1)};
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

// An AVX2 clone of the hot loops is chosen at load time where the CPU has it (8-wide float ops);
// the default clone is plain SSE2. Only GCC on x86-64 has target_clones.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CRPO_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define CRPO_AVX2_CLONE
#endif

namespace {
thread_local bool t_reference_paths = false;
}  // namespace

bool reference_paths() { return t_reference_paths; }
ReferencePaths::ReferencePaths() : previous_(t_reference_paths) { t_reference_paths = true; }
ReferencePaths::~ReferencePaths() { t_reference_paths = previous_; }

namespace {

// One (row n, kv head g) item of decode_attention: the rep = H / Hkv query heads that read kv head
// g, each of L rows, against Lk keys; scores go into `s` (rep * L * Lk). Eight partial sums per dot
// product so that the compiler vectorises over the head dimension.
template <typename T>
__attribute__((always_inline)) inline void decode_attention_item(const T* q, const T* k, const T* v,
                                                                 const bool* allowed, T* out, int64_t n, int64_t g,
                                                                 int64_t H, int64_t Hkv, int64_t L, int64_t Lk,
                                                                 int64_t hd, int64_t k_row, int64_t k_head, T scale,
                                                                 T* s) {
  const int64_t rep = H / Hkv;
  const T* kb = k + n * k_row + g * k_head;
  const T* vb = v + n * k_row + g * k_head;
  for (int64_t r = 0; r < rep; r++) {
    const int64_t h = g * rep + r;
    for (int64_t l = 0; l < L; l++) {
      const T* qr = q + ((n * H + h) * L + l) * hd;
      const bool* al = allowed + (n * L + l) * Lk;
      T* sr = s + (r * L + l) * Lk;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < Lk; j++) {
        const T* kj = kb + j * hd;
        T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t d = 0;
        for (; d + 8 <= hd; d += 8) {
          for (int u = 0; u < 8; u++) acc[u] += qr[d + u] * kj[d + u];
        }
        T dot = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; d < hd; d++) dot += qr[d] * kj[d];
        const T x = al[j] ? dot * scale : static_cast<T>(-1e9);
        sr[j] = x;
        mx = std::max(mx, x);
      }
      T* o = out + ((n * L + l) * H + h) * hd;
      for (int64_t d = 0; d < hd; d++) o[d] = 0;
      T sum = 0;
      for (int64_t j = 0; j < Lk; j++) {
        const T e = std::exp(sr[j] - mx);
        sum += e;
        if (e == 0) continue;  // masked keys: exp(-1e9 - max) underflows to 0
        const T* vj = vb + j * hd;
        for (int64_t d = 0; d < hd; d++) o[d] += e * vj[d];
      }
      const T inv = static_cast<T>(1) / sum;
      for (int64_t d = 0; d < hd; d++) o[d] *= inv;
    }
  }
}

template <typename T>
__attribute__((always_inline)) inline void decode_attention_range(const T* q, const T* k, const T* v,
                                                                  const bool* allowed, T* out, int64_t begin,
                                                                  int64_t end, int64_t H, int64_t Hkv, int64_t L,
                                                                  int64_t Lk, int64_t hd, int64_t k_row, int64_t k_head,
                                                                  T scale) {
  std::vector<T> s(static_cast<size_t>((H / Hkv) * L * Lk));
  for (int64_t i = begin; i < end; i++)
    decode_attention_item(q, k, v, allowed, out, i / Hkv, i % Hkv, H, Hkv, L, Lk, hd, k_row, k_head, scale, s.data());
}

CRPO_AVX2_CLONE void decode_attention_f32(const float* q, const float* k, const float* v, const bool* allowed,
                                          float* out, int64_t begin, int64_t end, int64_t H, int64_t Hkv, int64_t L,
                                          int64_t Lk, int64_t hd, int64_t k_row, int64_t k_head, float scale) {
  decode_attention_range<float>(q, k, v, allowed, out, begin, end, H, Hkv, L, Lk, hd, k_row, k_head, scale);
}

void decode_attention_f64(const double* q, const double* k, const double* v, const bool* allowed, double* out,
                          int64_t begin, int64_t end, int64_t H, int64_t Hkv, int64_t L, int64_t Lk, int64_t hd,
                          int64_t k_row, int64_t k_head, double scale) {
  decode_attention_range<double>(q, k, v, allowed, out, begin, end, H, Hkv, L, Lk, hd, k_row, k_head, scale);
}

// The kernel serves CPU float32/float64 without autograd and few query rows (beyond that, the
// batched matmuls amortise their per-call cost).
bool decode_kernel_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t L) {
  return !reference_paths() && !torch::GradMode::is_enabled() && q.device().is_cpu() &&
         (q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kDouble) && L <= 16 && k.stride(3) == 1 &&
         k.stride(2) == k.size(3) && v.strides().equals(k.strides());
}

}  // namespace

torch::Tensor decode_attention(const torch::Tensor& q_, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& allowed_, double scale) {
  TORCH_CHECK(q_.dim() == 4 && k.dim() == 4 && allowed_.dim() == 4, "decode_attention: q ", q_.sizes(), ", k ",
              k.sizes(), ", allowed ", allowed_.sizes(), " must be 4-d");
  const int64_t N = q_.size(0), H = q_.size(1), L = q_.size(2), hd = q_.size(3), Hkv = k.size(1), Lk = allowed_.size(3);
  TORCH_CHECK(v.sizes().equals(k.sizes()) && k.size(0) == N && k.size(3) == hd && H % Hkv == 0 && k.size(2) >= Lk &&
                  allowed_.size(0) == N && allowed_.size(1) == 1 && allowed_.size(2) == L,
              "decode_attention: q ", q_.sizes(), ", k ", k.sizes(), ", v ", v.sizes(), ", allowed ", allowed_.sizes(),
              " do not fit");
  TORCH_CHECK(k.stride(3) == 1 && k.stride(2) == hd && v.strides().equals(k.strides()),
              "decode_attention: k/v need contiguous rows, got strides ", k.strides(), " / ", v.strides());
  TORCH_CHECK(q_.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type() && q_.device().is_cpu(),
              "decode_attention: CPU q/k/v of one dtype expected");
  auto q = q_.contiguous();
  auto allowed = allowed_.to(torch::kBool).contiguous();
  auto out = torch::empty({N, L, H * hd}, q.options());
  const int64_t items = N * Hkv, work = 2 * (H / Hkv) * L * Lk * hd;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(work, 1));
  if (q.scalar_type() == torch::kFloat) {
    const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const bool* ap = allowed.data_ptr<bool>();
    at::parallel_for(0, items, grain, [&](int64_t b, int64_t e) {
      decode_attention_f32(qp, kp, vp, ap, op, b, e, H, Hkv, L, Lk, hd, k.stride(0), k.stride(1),
                           static_cast<float>(scale));
    });
  } else {
    TORCH_CHECK(q.scalar_type() == torch::kDouble, "decode_attention: float32 or float64 expected, got ",
                q.scalar_type());
    const double *qp = q.data_ptr<double>(), *kp = k.data_ptr<double>(), *vp = v.data_ptr<double>();
    double* op = out.data_ptr<double>();
    const bool* ap = allowed.data_ptr<bool>();
    at::parallel_for(0, items, grain, [&](int64_t b, int64_t e) {
      decode_attention_f64(qp, kp, vp, ap, op, b, e, H, Hkv, L, Lk, hd, k.stride(0), k.stride(1), scale);
    });
  }
  return out;
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads_, int64_t kv_heads_)
    : heads(heads_), kv_heads(kv_heads_), head_dim(dim / heads_) {
  wq = register_module("wq", linear(dim, heads * head_dim, false));
  wk = register_module("wk", linear(dim, kv_heads * head_dim, false));
  wv = register_module("wv", linear(dim, kv_heads * head_dim, false));
  wo = register_module("wo", linear(heads * head_dim, dim, false));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                     const torch::Tensor& allowed, LayerCache* cache, int64_t start) {
  const int64_t N = x.size(0), L = x.size(1);
  auto q = wq->forward(x).view({N, L, heads, head_dim}).transpose(1, 2);     // (N, H, L, hd)
  auto k = wk->forward(x).view({N, L, kv_heads, head_dim}).transpose(1, 2);  // (N, Hkv, L, hd)
  auto v = wv->forward(x).view({N, L, kv_heads, head_dim}).transpose(1, 2);
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  if (cache) {
    cache->k.narrow(2, start, L).copy_(k);
    cache->v.narrow(2, start, L).copy_(v);
    k = cache->k.narrow(2, 0, start + L);
    v = cache->v.narrow(2, 0, start + L);
  }
  if (decode_kernel_applies(q, k, v, L)) {  // generation's decode steps (slow twin: the matmuls below)
    return wo->forward(
        decode_attention(q, k, v, allowed, 1.0 / std::sqrt(static_cast<double>(head_dim))));  // (N, L, H*hd)
  }
  if (reference_paths()) {
    // Slow twin of the grouped form below: keys/values repeated for every query head.
    auto kr = k.repeat_interleave(heads / kv_heads, 1),
         vr = v.repeat_interleave(heads / kv_heads, 1);  // (N, H, Lk, hd)
    auto scores =
        torch::matmul(q, kr.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(head_dim)));  // (N, H, L, Lk)
    scores = upcast(scores).masked_fill(allowed.logical_not(), -1e9);
    auto attn = torch::softmax(scores, -1).to(x.scalar_type());
    return wo->forward(torch::matmul(attn, vr).transpose(1, 2).reshape({N, L, heads * head_dim}));
  }
  // Grouped KV: query head h reads kv head h / g (g = H / Hkv). The g query heads of a kv head are
  // adjacent, so they are viewed as g*L rows of that kv head: no copy of the keys and values.
  const int64_t g = heads / kv_heads, Lk = k.size(2);
  auto qg = q.reshape({N, kv_heads, g * L, head_dim});
  auto scores =
      torch::matmul(qg, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(head_dim)));  // (N, Hkv, g*L, Lk)
  scores = upcast(scores).view({N, kv_heads, g, L, Lk}).masked_fill(allowed.logical_not().unsqueeze(2), -1e9);
  auto attn = torch::softmax(scores, -1).to(x.scalar_type()).view({N, kv_heads, g * L, Lk});
  auto out = torch::matmul(attn, v).view({N, heads, L, head_dim}).transpose(1, 2).reshape({N, L, heads * head_dim});
  return wo->forward(out);
}

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t hidden) {
  gate = register_module("gate", linear(dim, hidden, false));
  up = register_module("up", linear(dim, hidden, false));
  down = register_module("down", linear(hidden, dim, false));
}

torch::Tensor SwiGLUImpl::forward(const torch::Tensor& x) {
  return down->forward(torch::silu(gate->forward(x)) * up->forward(x));
}

DecoderLayerImpl::DecoderLayerImpl(int64_t dim, int64_t heads, int64_t kv_heads, int64_t mlp_hidden, double eps) {
  attn_norm = register_module("attn_norm", RMSNorm(dim, eps));
  attn = register_module("attn", Attention(dim, heads, kv_heads));
  mlp_norm = register_module("mlp_norm", RMSNorm(dim, eps));
  mlp = register_module("mlp", SwiGLU(dim, mlp_hidden));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                        const torch::Tensor& allowed, LayerCache* cache, int64_t start) {
  auto h = x + attn->forward(attn_norm->forward(x), cos, sin, allowed, cache, start);
  return h + mlp->forward(mlp_norm->forward(h));
}

LanguageModelImpl::LanguageModelImpl(const PolicyConfig& c)
    : dim(c.lm_dim), heads(c.lm_heads), kv_heads(c.lm_kv_heads), theta(c.rope_theta) {
  embed = register_module("embed", torch::nn::Embedding(c.vocab_size, c.lm_dim));
  if (c.option_slots > 0)
    slot_embed = register_module("slot_embed", torch::nn::Embedding(c.option_slots + 1, c.lm_dim));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.lm_layers; i++)
    layers->push_back(DecoderLayer(c.lm_dim, c.lm_heads, c.lm_kv_heads, c.lm_mlp, c.norm_eps));
  norm = register_module("norm", RMSNorm(c.lm_dim, c.norm_eps));
  head = register_module("head", linear(c.lm_dim, c.vocab_size, false));
}

torch::Tensor LanguageModelImpl::forward(const torch::Tensor& embeds, const torch::Tensor& positions,
                                         const torch::Tensor& key_valid, KVCache* cache, int64_t start) {
  const int64_t N = embeds.size(0), L = embeds.size(1), Lk = start + L;
  TORCH_CHECK(key_valid.size(0) == N && key_valid.size(1) == Lk, "language model: key_valid is ", key_valid.sizes(),
              ", expected [", N, ", ", Lk, "]");
  auto [cos, sin] = rotary_tables(positions, dim / heads, theta, embeds.scalar_type());
  auto idx = torch::TensorOptions().dtype(torch::kLong).device(embeds.device());
  auto causal = torch::arange(Lk, idx).unsqueeze(0) <= torch::arange(start, start + L, idx).unsqueeze(1);  // (L, Lk)
  auto allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(key_valid.view({N, 1, 1, Lk}));  // (N, 1, L, Lk)
  auto h = embeds;
  for (size_t i = 0; i < layers->size(); i++) {
    h = layers[i]->as<DecoderLayer>()->forward(h, cos, sin, allowed, cache ? &cache->layers[i] : nullptr, start);
  }
  if (cache) cache->length = Lk;
  return norm->forward(h);
}

KVCache LanguageModelImpl::make_cache(int64_t n, int64_t capacity, const torch::TensorOptions& opts) const {
  KVCache c;
  const int64_t hd = dim / heads;
  for (size_t i = 0; i < layers->size(); i++) {
    c.layers.push_back(
        {torch::zeros({n, kv_heads, capacity, hd}, opts), torch::zeros({n, kv_heads, capacity, hd}, opts)});
  }
  c.key_valid = torch::zeros({n, capacity}, opts.dtype(torch::kBool));
  return c;
}

VisionBlockImpl::VisionBlockImpl(int64_t dim, int64_t heads_, int64_t mlp) : heads(heads_) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  qkv = register_module("qkv", linear(dim, 3 * dim, true));
  proj = register_module("proj", linear(dim, dim, true));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  fc1 = register_module("fc1", linear(dim, mlp, true));
  fc2 = register_module("fc2", linear(mlp, dim, true));
}

torch::Tensor VisionBlockImpl::forward(const torch::Tensor& x) {
  const int64_t M = x.size(0), P = x.size(1), D = x.size(2), hd = D / heads;
  auto qkv_ = qkv->forward(norm1->forward(x)).view({M, P, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // (3, M, H, P, hd)
  auto q = qkv_[0], k = qkv_[1], v = qkv_[2];
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto attn = torch::softmax(upcast(scores), -1).to(x.scalar_type());
  auto o = torch::matmul(attn, v).transpose(1, 2).reshape({M, P, D});
  auto h = x + proj->forward(o);
  return h + fc2->forward(torch::gelu(fc1->forward(norm2->forward(h))));
}

VisionEncoderImpl::VisionEncoderImpl(const PolicyConfig& c)
    : frames(c.frames),
      image(c.image_size),
      channels(c.channels),
      patch(c.patch_size),
      tpatch(c.temporal_patch),
      dim(c.vision_dim),
      clip_attention(c.vision_clip_attention) {
  patch_embed = register_module("patch_embed", linear(tpatch * patch * patch * channels, dim, true));
  spatial_pos = register_parameter("spatial_pos", torch::zeros({c.patches_per_group(), dim}));
  temporal_pos = register_parameter("temporal_pos", torch::zeros({c.tubelets(), dim}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.vision_layers; i++) blocks->push_back(VisionBlock(dim, c.vision_heads, c.vision_mlp));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
}

torch::Tensor VisionEncoderImpl::forward(const torch::Tensor& pixels) {
  const int64_t M = pixels.size(0), g = image / patch, Tg = frames / tpatch, P = g * g;
  TORCH_CHECK(pixels.dim() == 5 && pixels.size(1) == frames && pixels.size(2) == image && pixels.size(3) == image &&
                  pixels.size(4) == channels,
              "vision encoder: pixels are ", pixels.sizes(), ", expected [M, ", frames, ", ", image, ", ", image, ", ",
              channels, "]");
  // Tubelets: (M, T', tp, gy, p, gx, p, C) -> (M*T', gy*gx, tp*p*p*C); one batch for all frame groups.
  auto x = pixels.reshape({M, Tg, tpatch, g, patch, g, patch, channels})
               .permute({0, 1, 3, 5, 2, 4, 6, 7})
               .reshape({M * Tg, P, tpatch * patch * patch * channels});
  x = patch_embed->forward(x).view({M, Tg, P, dim}) + spatial_pos.view({1, 1, P, dim}) +
      temporal_pos.view({1, Tg, 1, dim});
  x = clip_attention ? x.reshape({M, Tg * P, dim}) : x.reshape({M * Tg, P, dim});
  for (size_t i = 0; i < blocks->size(); i++) x = blocks[i]->as<VisionBlock>()->forward(x);
  return norm->forward(x).view({M, Tg, P, dim});
}

ProjectorImpl::ProjectorImpl(int64_t vision_dim, int64_t lm_dim, int64_t grid_, int64_t merge_)
    : grid(grid_), merge(merge_) {
  const int64_t in = vision_dim * merge * merge;
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({vision_dim}).eps(1e-6)));
  fc1 = register_module("fc1", linear(in, in, true));
  fc2 = register_module("fc2", linear(in, lm_dim, true));
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& x) {
  const int64_t M = x.size(0), Tg = x.size(1), D = x.size(3), gm = grid / merge;
  auto h = norm->forward(x)
               .reshape({M, Tg, gm, merge, gm, merge, D})
               .permute({0, 1, 2, 4, 3, 5, 6})
               .reshape({M, Tg * gm * gm, merge * merge * D});  // tokens in (t, row, col) order
  return fc2->forward(torch::gelu(fc1->forward(h)));
}

PolicyNetImpl::PolicyNetImpl(const PolicyConfig& c) {
  vision = register_module("vision", VisionEncoder(c));
  projector = register_module("projector", Projector(c.vision_dim, c.lm_dim, c.grid(), c.merge_size));
  lm = register_module("lm", LanguageModel(c));
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// GPT-2 style init from the policy's own generator: N(0, std) matrices, output projections
// scaled by 1/sqrt(2 * layers), norms at 1, biases at 0, positions N(0, pos_init_std). The
// patch embedding outputs have std ~0.8 on these clips: positions at 0.02 are ~2.5% of a token,
// too little for identical background patches to be told apart (docs/model.md, "Levers").
void init_parameters(torch::nn::Module& net, const PolicyConfig& c, at::Generator& gen) {
  torch::NoGradGuard ng;
  const double out_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(std::max(c.lm_layers, c.vision_layers)));
  for (auto& kv : net.named_parameters()) {
    const std::string& n = kv.key();
    auto& p = kv.value();
    if (ends_with(n, "_pos")) {
      p.normal_(0.0, c.pos_init_std, gen);
    } else if (p.dim() == 1) {
      if (ends_with(n, ".bias"))
        p.zero_();
      else
        p.fill_(1.0);
    } else {
      double s = c.init_std;
      if (ends_with(n, ".wo.weight") || ends_with(n, ".down.weight") || ends_with(n, ".proj.weight") ||
          ends_with(n, ".fc2.weight"))
        s *= out_scale;
      p.normal_(0.0, s, gen);
    }
  }
}

// Weight decay applies to the weight matrices only: not to norms and biases (1-D), nor to the
// position tables and the token embedding, which decay would pull towards zero between uses.
std::vector<bool> decay_mask(torch::nn::Module& net) {
  std::vector<bool> mask;
  for (auto& kv : net.named_parameters()) {
    const std::string& n = kv.key();
    mask.push_back(kv.value().dim() >= 2 && !ends_with(n, "_pos") && !ends_with(n, "embed.weight"));
  }
  return mask;
}

torch::ScalarType dtype_of(const std::string& s) {
  if (s == "bfloat16") return torch::kBFloat16;
  if (s == "float64") return torch::kDouble;
  return torch::kFloat;
}

VideoTransform to_kernel(FrameOp op) {
  switch (op) {
    case FrameOp::HFlip:
      return VideoTransform::HFlip;
    case FrameOp::Reverse:
      return VideoTransform::Reverse;
    default:
      return VideoTransform::HFlipReverse;
  }
}

}  // namespace

Policy::Policy(const PolicyConfig& c) : cfg_(c), device_(torch::kCPU) {
  cfg_.validate();
  device_ = torch::Device(cfg_.device);
  dtype_ = dtype_of(cfg_.dtype);
  gen_ = at::make_generator<at::CPUGeneratorImpl>(cfg_.seed);
  net_ = PolicyNet(cfg_);
  init_parameters(*net_, cfg_, gen_);
  decay_ = decay_mask(*net_);
  net_->to(device_, dtype_);
  for (auto& p : net_->parameters()) {
    exp_avg_.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat)));
    exp_avg_sq_.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat)));
  }
}

Policy::Policy(const Policy& other, bool frozen)
    : cfg_(other.cfg_), device_(other.device_), dtype_(other.dtype_), frozen_(frozen) {
  gen_ = at::make_generator<at::CPUGeneratorImpl>(cfg_.seed);
  net_ = PolicyNet(cfg_);
  decay_ = decay_mask(*net_);
  net_->to(device_, dtype_);
  torch::NoGradGuard ng;
  auto src = other.net_->parameters();
  auto dst = net_->parameters();
  for (size_t i = 0; i < dst.size(); i++) {
    dst[i].copy_(src[i]);
    if (frozen) dst[i].set_requires_grad(false);
  }
  step_ = frozen ? other.step_ : 0;
  if (!frozen) {
    for (auto& p : dst) {
      exp_avg_.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat)));
      exp_avg_sq_.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat)));
    }
  }
}

int64_t Policy::parameter_count() const {
  int64_t n = 0;
  for (auto& p : net_->parameters()) n += p.numel();
  return n;
}

torch::Tensor Policy::encode_prompts_visual(const PromptBatch& b) {
  const int64_t P = b.prompts();
  std::map<std::pair<int64_t, int>, int64_t> slot;
  std::vector<std::pair<int64_t, int>> keys;
  std::vector<int64_t> which(P);
  for (int64_t p = 0; p < P; p++) {
    auto key = std::make_pair(b.video[p], static_cast<int>(b.op[p]));
    auto it = slot.find(key);
    if (it == slot.end()) {
      it = slot.emplace(key, static_cast<int64_t>(keys.size())).first;
      keys.push_back(key);
    }
    which[p] = it->second;
  }
  // Frames of each unique (video, transform), grouped by transform so that each transform
  // runs once over all its clips (crpo::video_transform on the model's device).
  const int64_t M = static_cast<int64_t>(keys.size());
  auto frames = b.frames;
  std::vector<torch::Tensor> clips(M);
  for (int op = 0; op < 4; op++) {
    std::vector<int64_t> vids, slots;
    for (int64_t m = 0; m < M; m++) {
      if (keys[m].second == op) {
        vids.push_back(keys[m].first);
        slots.push_back(m);
      }
    }
    if (vids.empty()) continue;
    auto sel =
        frames.index_select(0, torch::tensor(vids, torch::kLong)).to(device_).contiguous();  // (m, T, H, W, C) uint8
    if (op != 0) sel = video_transform(sel, FrameLayout::BTHWC, to_kernel(static_cast<FrameOp>(op)), 0);
    for (size_t i = 0; i < slots.size(); i++) clips[slots[i]] = sel[static_cast<int64_t>(i)];
  }
  auto pixels = torch::stack(clips).to(dtype_).div_(127.5).sub_(1.0);  // (M, T, H, W, C) in [-1, 1]
  auto vis = net_->projector->forward(net_->vision->forward(pixels));  // (M, Nv, D)
  return vis.index_select(0, torch::tensor(which, torch::kLong).to(device_));
}

Policy::Prefix Policy::build_prefix(const PromptBatch& b) {
  const int64_t P = b.prompts();
  auto vis = encode_prompts_visual(b);  // (P, Nv, D)
  const int64_t Nv = vis.size(1);
  int64_t Lp = 1;
  for (auto& ids : b.ids) Lp = std::max<int64_t>(Lp, static_cast<int64_t>(ids.size()));
  // Prompts are left-padded so that every completion starts in the same column; the padding is
  // masked out of attention and skipped by the positions (cumsum of validity).
  auto ids = torch::full({P, Lp}, cfg_.pad_id, torch::kLong);
  auto valid_text = torch::zeros({P, Lp}, torch::kBool);
  const bool slots = !net_->lm->slot_embed.is_empty() && !b.slots.empty();
  auto slot_ids = torch::zeros({P, slots ? Lp : 0}, torch::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto va = valid_text.accessor<bool, 2>();
  auto sa = slot_ids.accessor<int64_t, 2>();
  for (int64_t p = 0; p < P; p++) {
    const int64_t n = static_cast<int64_t>(b.ids[p].size());
    for (int64_t i = 0; i < n; i++) {
      ia[p][Lp - n + i] = b.ids[p][i];
      va[p][Lp - n + i] = true;
      if (slots) sa[p][Lp - n + i] = b.slots[p][i];
    }
  }
  ids = ids.to(device_);
  valid_text = valid_text.to(device_);
  auto text = net_->lm->embed->forward(ids);  // (P, Lp, D)
  if (slots) text = text + net_->lm->slot_embed->forward(slot_ids.to(device_));
  Prefix pre;
  pre.embeds = torch::cat({vis, text}, 1);
  pre.valid = torch::cat({torch::ones({P, Nv}, valid_text.options()), valid_text}, 1);
  auto cum = pre.valid.to(torch::kLong).cumsum(1);
  pre.positions = (cum - 1).clamp_min(0);
  pre.next_pos = cum.select(1, cum.size(1) - 1);
  return pre;
}

torch::Tensor Policy::completion_logits(const PromptBatch& b, const Completions& c, bool full_sequence) {
  return net_->lm->logits(completion_hidden(b, c, full_sequence));  // (N, C, V)
}

torch::Tensor Policy::completion_hidden(const PromptBatch& b, const Completions& c, bool full_sequence,
                                        torch::Tensor* prefix_hidden) {
  const int64_t G = b.group, C = c.ids.size(1);
  auto pre = build_prefix(b);
  const int64_t P = pre.embeds.size(0), Lpre = pre.embeds.size(1);
  if (Lpre + C > cfg_.max_seq_len) {
    throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                  "policy: prompt (" + std::to_string(Lpre) + " tokens with the visual ones) + completion width (" +
                      std::to_string(C) + ") exceeds maxSeqLen " + std::to_string(cfg_.max_seq_len));
  }
  auto ids = c.ids.to(device_);
  const int64_t N = P * G;
  auto cpos = pre.next_pos.repeat_interleave(G, 0).unsqueeze(1) + torch::arange(C, pre.next_pos.options()).unsqueeze(0);
  auto valid = torch::cat({pre.valid.repeat_interleave(G, 0), torch::ones({N, C}, pre.valid.options())}, 1);
  if (full_sequence) {
    auto emb = torch::cat({pre.embeds.repeat_interleave(G, 0), net_->lm->embed->forward(ids)}, 1);  // (N, Lpre+C, D)
    auto pos = torch::cat({pre.positions.repeat_interleave(G, 0), cpos}, 1);
    auto hidden = net_->lm->forward(emb, pos, valid, nullptr, 0);                     // (N, Lpre+C, D)
    if (prefix_hidden) *prefix_hidden = hidden.narrow(1, 0, Lpre).slice(0, 0, N, G);  // row p*G of each prompt
    // Column Lpre-1+t predicts completion token t.
    return hidden.narrow(1, Lpre - 1, C);  // (N, C, D)
  }
  // 1. The prefix once per prompt, keeping every layer's keys and values (P rows).
  KVCache cache = net_->lm->make_cache(P, Lpre, pre.embeds.options());
  auto hp = net_->lm->forward(pre.embeds, pre.positions, pre.valid, &cache, 0);  // (P, Lpre, D)
  if (prefix_hidden) *prefix_hidden = hp;
  // 2. Those keys and values shared by the prompt's G completions, with room for the completions'.
  for (auto& l : cache.layers) {
    auto room = torch::zeros({N, l.k.size(1), C, l.k.size(3)}, l.k.options());
    l.k = torch::cat({l.k.repeat_interleave(G, 0), room}, 2);
    l.v = torch::cat({l.v.repeat_interleave(G, 0), room}, 2);
  }
  auto hc = net_->lm->forward(net_->lm->embed->forward(ids), cpos, valid, &cache, Lpre);  // (N, C, D)
  // The last prefix column predicts completion token 0, completion column t token t+1.
  return torch::cat({hp.narrow(1, Lpre - 1, 1).repeat_interleave(G, 0), hc.narrow(1, 0, C - 1)}, 1);  // (N, C, D)
}

torch::Tensor Policy::prompt_lm_loss(const PromptBatch& b, const torch::Tensor& prefix_hidden) {
  const int64_t P = prefix_hidden.size(0), Lpre = prefix_hidden.size(1), D = prefix_hidden.size(2);
  // Targets: prompt token i >= 1 (after <bos>) sits in column Lpre - n + i and is predicted by the
  // column before it. Gathered as flat (row, column) indices so that the head runs on those only.
  std::vector<int64_t> rows_cols, targets;
  for (int64_t p = 0; p < P; p++) {
    const int64_t n = static_cast<int64_t>(b.ids[p].size());
    for (int64_t i = 1; i < n; i++) {
      rows_cols.push_back(p * Lpre + (Lpre - n + i - 1));
      targets.push_back(b.ids[p][i]);
    }
  }
  if (targets.empty()) return torch::zeros({}, prefix_hidden.options().dtype(torch::kFloat));
  auto idx = torch::tensor(rows_cols, torch::kLong).to(device_);
  auto tgt = torch::tensor(targets, torch::kLong).to(device_);
  auto h = prefix_hidden.reshape({P * Lpre, D}).index_select(0, idx);                // (T, D)
  auto lsm = torch::log_softmax(upcast(net_->lm->logits(h)).to(torch::kFloat), -1);  // (T, V)
  return -lsm.gather(-1, tgt.unsqueeze(-1)).mean();
}

Policy::TokenScores Policy::score_tokens(const torch::Tensor& hidden, const Completions& c, const torch::Tensor& mask,
                                         double temperature, bool want_entropy) {
  const int64_t N = hidden.size(0), C = hidden.size(1), D = hidden.size(2);
  auto ids = c.ids.to(device_);
  TokenScores out;
  if (reference_paths()) {
    // Slow twin: the head and log-softmax at every position (N, C, V).
    auto lsm = torch::log_softmax(upcast(net_->lm->logits(hidden)).to(torch::kFloat) / temperature, -1);
    out.logp = lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1);
    if (want_entropy) {
      torch::NoGradGuard ng;
      out.entropy = -(lsm.exp() * lsm).sum(-1);
    }
    return out;
  }
  // Only positions inside each completion reach the loss: the head (a D x V matmul per position)
  // and the log-softmax run on those T positions, packed, and the results are scattered back (0
  // elsewhere, where every consumer masks).
  auto idx = mask.reshape({N * C}).gt(0.5).nonzero().squeeze(1);  // (T)
  auto lsm = torch::log_softmax(
      upcast(net_->lm->logits(hidden.reshape({N * C, D}).index_select(0, idx))).to(torch::kFloat) / temperature,
      -1);                                                                                        // (T, V)
  auto lp = lsm.gather(-1, ids.reshape({N * C}).index_select(0, idx).unsqueeze(-1)).squeeze(-1);  // (T)
  out.logp = torch::zeros({N * C}, lp.options()).index_copy(0, idx, lp).view({N, C});
  if (want_entropy) {
    torch::NoGradGuard ng;
    out.entropy = torch::zeros({N * C}, lp.options()).index_copy(0, idx, -(lsm.exp() * lsm).sum(-1)).view({N, C});
  }
  return out;
}

namespace {

torch::Tensor completion_mask(const Completions& c, const torch::Device& d) {
  const int64_t C = c.ids.size(1);
  auto lens = c.lengths.to(d);
  return (torch::arange(C, lens.options()).unsqueeze(0) < lens.unsqueeze(1)).to(torch::kFloat);  // (N, C)
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> Policy::logprobs(const PromptBatch& b, const Completions& c, double temperature,
                                                         bool want_entropy, bool full_sequence) {
  torch::NoGradGuard ng;
  net_->eval();
  auto mask = completion_mask(c, device_);
  auto sc = score_tokens(completion_hidden(b, c, full_sequence), c, mask, temperature, want_entropy);
  auto lp = sc.logp * mask;
  torch::Tensor ent;
  if (want_entropy) ent = sc.entropy * mask;
  return {lp, ent};
}

namespace {

// One token per row of probs (N, V) on the CPU, by inverting the row's CDF at its uniform u (N, 1)
// in [0, 1) (float64).
torch::Tensor sample_inverse_cdf(const torch::Tensor& probs, const torch::Tensor& u01) {
  auto cdf = probs.to(torch::kDouble).cumsum(-1);    // (N, V)
  auto total = cdf.narrow(-1, cdf.size(-1) - 1, 1);  // (N, 1)
  auto u = u01 * total;                              // in [0, total)
  // The first entry whose CDF exceeds u: never a zero-probability entry (its CDF equals the previous one).
  return at::searchsorted(cdf, u, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(probs.size(-1) - 1);
}

// splitmix64's output function (Steele, Lea, Flood 2014): a bijective mix of x + golden gamma.
inline uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

double sample_uniform(uint64_t seed, uint64_t sample, uint64_t token) {
  const uint64_t h = splitmix64(splitmix64(splitmix64(seed) ^ sample) ^ token);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

torch::Tensor Policy::sample_next(const torch::Tensor& logits, const SamplingOptions& o, torch::Tensor* logp_out,
                                  int64_t group, int64_t token) {
  auto lf = upcast(logits).to(torch::kFloat) / o.temperature;  // (N, V)
  auto lsm = torch::log_softmax(lf, -1);
  torch::Tensor tok;
  if (o.greedy) {
    tok = lf.argmax(-1);
  } else {
    auto f = lf;
    const int64_t V = f.size(-1);
    if (o.top_k > 0 && o.top_k < V) {
      auto kth = std::get<0>(f.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
      f = f.masked_fill(f < kth, -std::numeric_limits<float>::infinity());
    }
    if (o.top_p < 1.0) {
      auto [sorted, idx] = f.sort(-1, true);
      auto probs = torch::softmax(sorted, -1);
      auto remove = (probs.cumsum(-1) - probs) > o.top_p;  // keeps the smallest prefix with mass >= top_p
      remove.select(-1, 0).fill_(false);
      sorted = sorted.masked_fill(remove, -std::numeric_limits<float>::infinity());
      f = torch::full_like(f, -std::numeric_limits<float>::infinity()).scatter(-1, idx, sorted);
    }
    // Sampled on the CPU (same seed, same tokens on any device) by inverting each row's CDF at
    // one uniform draw: one random number per row, where at::multinomial draws an exponential per
    // vocabulary entry. The uniforms come from the per-prompt seeds' counter-based streams when
    // given, else from the policy's generator. Tests check the sampled frequencies against the
    // exact probabilities from logprobs().
    auto probs = torch::softmax(f, -1).to(torch::kCPU);
    const int64_t N = probs.size(0);
    torch::Tensor u;
    if (!o.seeds.empty()) {
      u = torch::empty({N, 1}, torch::kDouble);
      auto ua = u.data_ptr<double>();
      for (int64_t r = 0; r < N; r++) {
        ua[r] = sample_uniform(o.seeds[static_cast<size_t>(r / group)], static_cast<uint64_t>(r % group),
                               static_cast<uint64_t>(token));
      }
    } else {
      u = at::rand({N, 1}, gen_, torch::TensorOptions().dtype(torch::kDouble));
    }
    tok = sample_inverse_cdf(probs, u).to(lf.device());
  }
  *logp_out = lsm.gather(-1, tok.unsqueeze(-1)).squeeze(-1);
  return tok;
}

Generation Policy::generate(const PromptBatch& b, const SamplingOptions& o) {
  torch::NoGradGuard ng;
  net_->eval();
  const int64_t P = b.prompts(), G = b.group, N = P * G, T = o.max_new_tokens;
  auto pre = build_prefix(b);
  const int64_t Lpre = pre.embeds.size(1);
  if (!o.seeds.empty() && static_cast<int64_t>(o.seeds.size()) != P) {
    throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                  "policy generate: seeds has " + std::to_string(o.seeds.size()) +
                      " entries, expected one per prompt (" + std::to_string(P) + ")");
  }
  if (Lpre + T > cfg_.max_seq_len) {
    throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                  "policy generate: prompt (" + std::to_string(Lpre) +
                      " tokens with the visual ones) + maxNewTokens (" + std::to_string(T) + ") exceeds maxSeqLen " +
                      std::to_string(cfg_.max_seq_len));
  }
  auto lopts = torch::TensorOptions().dtype(torch::kLong).device(device_);
  Generation out;
  out.tokens = torch::full({N, T}, cfg_.pad_id, lopts);
  out.logprobs = torch::zeros({N, T}, lopts.dtype(torch::kFloat));
  out.lengths = torch::zeros({N}, lopts);
  auto finished = torch::zeros({N}, lopts.dtype(torch::kBool));
  auto next_pos = pre.next_pos.repeat_interleave(G, 0);  // (N)
  auto prefix_valid = pre.valid.repeat_interleave(G, 0);

  KVCache cache;
  torch::Tensor logits;  // (N, V)
  if (o.use_cache) {
    cache = net_->lm->make_cache(P, Lpre + T, pre.embeds.options());
    auto h = net_->lm->forward(pre.embeds, pre.positions, pre.valid, &cache, 0);  // prefill once per prompt
    for (auto& l : cache.layers) {
      l.k = l.k.repeat_interleave(G, 0);
      l.v = l.v.repeat_interleave(G, 0);
    }
    cache.key_valid = torch::cat({prefix_valid, torch::zeros({N, T}, prefix_valid.options())}, 1);
    logits = net_->lm->logits(h.select(1, Lpre - 1)).repeat_interleave(G, 0);
  }
  auto prefix_embeds = o.use_cache ? torch::Tensor() : pre.embeds.repeat_interleave(G, 0);
  auto prefix_pos = o.use_cache ? torch::Tensor() : pre.positions.repeat_interleave(G, 0);
  for (int64_t s = 0; s < T; s++) {
    if (!o.use_cache) {
      // Slow twin: the whole sequence again, no cache.
      auto gen_ids = out.tokens.narrow(1, 0, s);
      auto emb = torch::cat({prefix_embeds, net_->lm->embed->forward(gen_ids)}, 1);
      auto valid = torch::cat({prefix_valid, torch::ones({N, s}, prefix_valid.options())}, 1);
      auto gpos = next_pos.unsqueeze(1) + torch::arange(s, lopts).unsqueeze(0);
      auto h = net_->lm->forward(emb, torch::cat({prefix_pos, gpos}, 1), valid, nullptr, 0);
      logits = net_->lm->logits(h.select(1, Lpre + s - 1));
    }
    torch::Tensor lp;
    auto tok = sample_next(logits, o, &lp, G, s);
    tok = tok.masked_fill(finished, cfg_.pad_id);
    lp = lp.masked_fill(finished, 0.0);
    out.tokens.select(1, s).copy_(tok);
    out.logprobs.select(1, s).copy_(lp);
    out.lengths += finished.logical_not().to(torch::kLong);
    for (int64_t st : o.stop) finished = finished.logical_or(tok == st);
    if (s + 1 == T || finished.all().item<bool>()) break;
    if (o.use_cache) {
      cache.key_valid.select(1, Lpre + s).fill_(true);
      auto emb = net_->lm->embed->forward(tok.unsqueeze(1));  // (N, 1, D)
      auto h = net_->lm->forward(emb, (next_pos + s).unsqueeze(1), cache.key_valid.narrow(1, 0, Lpre + s + 1), &cache,
                                 Lpre + s);
      logits = net_->lm->logits(h.select(1, 0));
    }
  }
  return out;
}

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

namespace {

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

CRPO_AVX2_CLONE double sum_squares_f32(const float* x, int64_t n) {
  double a[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int u = 0; u < 4; u++) a[u] += static_cast<double>(x[i + u]) * static_cast<double>(x[i + u]);
  }
  for (; i < n; i++) a[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return (a[0] + a[1]) + (a[2] + a[3]);
}

double fused_grad_norm(const std::vector<torch::Tensor>& grads) {
  double sq = 0;
  for (auto& g : grads) sq += sum_squares_f32(g.data_ptr<float>(), g.numel());
  return std::sqrt(sq);
}

// Per element, the reference's float32 operations in its order: g *= clip; p *= 1 - lr*wd;
// m = m*b1 + (1-b1)*g; v = v*b2 + (1-b2)*g*g; p += step_size * m / (sqrt(v) / sqrt(bc2) + eps).
CRPO_AVX2_CLONE void adamw_f32(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                               int64_t n, float clip, bool scale_grad, float decay, bool apply_decay, float b1,
                               float omb1, float b2, float omb2, float sqrt_bc2, float eps, float step_size) {
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i];
    if (scale_grad) gi = gi * clip;
    float pi = p[i];
    if (apply_decay) pi = pi * decay;
    const float mi = m[i] * b1 + omb1 * gi;
    const float vi = v[i] * b2 + omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + step_size * (mi / (std::sqrt(vi) / sqrt_bc2 + eps));
  }
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

}  // namespace

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
  torch::Tensor loss;
  if (N > 0) {
    auto mask = completion_mask(c, device_);
    torch::Tensor prefix_hidden;
    const bool prompt_lm = sft && lo.prompt_lm > 0;
    auto sc = score_tokens(completion_hidden(b, c, lo.full_sequence, prompt_lm ? &prefix_hidden : nullptr), c, mask,
                           lo.temperature, true);
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
        loss = loss + lo.prompt_lm * lm;
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
  if (loss.defined() && !bad) loss.backward();
  std::vector<torch::Tensor> grads;
  for (auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  // This rank's loss is a mean over `weight` units (the aggregation's denominator: sequences, or
  // tokens for token-mean and the supervised step); the loss of the whole global batch is the
  // weight-weighted mean of the ranks' losses, and so is its gradient.
  const double weight = (sft || lo.agg == Aggregation::TokenMean) ? st.tokens : static_cast<double>(N);
  double total_weight = weight;
  if (pg) {
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

std::vector<NamedTensor> Policy::get_parameters() const {
  std::vector<NamedTensor> out;
  for (auto& kv : net_->named_parameters())
    out.push_back({kv.key(), kv.value().detach().to(torch::kCPU, torch::kFloat).contiguous().clone()});
  return out;
}

std::vector<NamedTensor> Policy::get_optimizer_state() const {
  std::vector<NamedTensor> out;
  if (frozen_) return out;
  size_t i = 0;
  for (auto& kv : net_->named_parameters()) {
    out.push_back({kv.key() + ".exp_avg", exp_avg_[i].to(torch::kCPU).contiguous().clone()});
    out.push_back({kv.key() + ".exp_avg_sq", exp_avg_sq_[i].to(torch::kCPU).contiguous().clone()});
    i++;
  }
  return out;
}

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}

// Copies `values` into `targets` by name after checking that names and shapes match exactly.
void load_named(const std::vector<std::pair<std::string, torch::Tensor>>& targets,
                const std::vector<NamedTensor>& values, const std::string& what) {
  std::unordered_map<std::string, const torch::Tensor*> given;
  for (auto& v : values) {
    if (!given.emplace(v.name, &v.value).second)
      throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT", what + ": tensor '" + v.name + "' given twice");
  }
  for (auto& t : targets) {
    auto it = given.find(t.first);
    if (it == given.end())
      throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT", what + ": missing tensor '" + t.first + "'");
    if (!it->second->sizes().equals(t.second.sizes())) {
      throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT",
                    what + ": tensor '" + t.first + "' has shape " + shape_str(it->second->sizes()) + ", expected " +
                        shape_str(t.second.sizes()));
    }
  }
  if (given.size() != targets.size()) {
    std::unordered_map<std::string, int> known;
    for (auto& t : targets) known[t.first] = 1;
    for (auto& v : values) {
      if (!known.count(v.name))
        throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT", what + ": unexpected tensor '" + v.name + "'");
    }
  }
  torch::NoGradGuard ng;
  for (auto& t : targets) {
    auto dst = t.second;
    dst.copy_(*given[t.first]);
  }
}

}  // namespace

void Policy::set_parameters(const std::vector<NamedTensor>& values) {
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (auto& kv : net_->named_parameters()) targets.emplace_back(kv.key(), kv.value());
  load_named(targets, values, "policy weights");
}

void Policy::set_optimizer_state(const std::vector<NamedTensor>& values, int64_t step) {
  if (frozen_)
    throw OpError(ErrorKind::Generic, "ERR_CRPO_FROZEN",
                  "policy setOptimizerState: a frozen reference copy has no optimizer");
  if (step < 0)
    throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                  "policy optimizer step must be >= 0, got " + std::to_string(step));
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  size_t i = 0;
  for (auto& kv : net_->named_parameters()) {
    targets.emplace_back(kv.key() + ".exp_avg", exp_avg_[i]);
    targets.emplace_back(kv.key() + ".exp_avg_sq", exp_avg_sq_[i]);
    i++;
  }
  load_named(targets, values, "optimizer state");
  step_ = step;
}

torch::Tensor Policy::rng_state() const {
  at::Generator g = gen_;
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

void Policy::set_rng_state(const torch::Tensor& s) {
  at::Generator g = gen_;
  std::lock_guard<std::mutex> lock(g.mutex());
  try {
    g.set_state(s);
  } catch (const c10::Error& e) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_CHECKPOINT",
                  std::string("policy RNG state rejected: ") + e.what_without_backtrace());
  }
}

// ---------------------------------------------------------------------------------------------
// Gradient checks
// ---------------------------------------------------------------------------------------------

namespace {

// Central differences on up to `per_leaf` random entries of every leaf against autograd.
GradCheckResult fd_check(const std::function<torch::Tensor()>& f, const std::vector<torch::Tensor>& leaves,
                         at::Generator& gen, int64_t per_leaf = 12, double h = 1e-6) {
  for (auto l : leaves) l.mutable_grad() = torch::Tensor();
  f().backward();
  GradCheckResult r;
  torch::NoGradGuard ng;
  for (auto l : leaves) {
    TORCH_CHECK(l.scalar_type() == torch::kDouble, "grad check needs double leaves");
    auto g = l.grad().defined() ? l.grad().clone() : torch::zeros_like(l);
    auto flat = l.view(-1);
    auto gflat = g.view(-1);
    const int64_t n = flat.numel();
    for (int64_t k = 0; k < std::min(per_leaf, n); k++) {
      const int64_t i = n <= per_leaf ? k : torch::randint(n, {1}, gen, torch::kLong).item<int64_t>();
      const double x0 = flat[i].item<double>();
      flat[i].fill_(x0 + h);
      const double fp = f().item<double>();
      flat[i].fill_(x0 - h);
      const double fm = f().item<double>();
      flat[i].fill_(x0);
      const double num = (fp - fm) / (2 * h);
      const double ana = gflat[i].item<double>();
      r.max_error = std::max(r.max_error, std::abs(ana - num) / std::max(1.0, std::abs(num)));
      r.max_abs_grad = std::max(r.max_abs_grad, std::abs(num));
      r.checked++;
    }
  }
  return r;
}

void randomize(torch::nn::Module& m, at::Generator& gen) {
  torch::NoGradGuard ng;
  for (auto& p : m.parameters()) {
    if (p.dim() == 1)
      p.normal_(1.0, 0.3, gen);
    else
      p.normal_(0.0, 0.4, gen);
  }
}

std::vector<torch::Tensor> leaves_of(torch::nn::Module& m, std::vector<torch::Tensor> extra) {
  for (auto& p : m.parameters()) extra.push_back(p);
  return extra;
}

torch::Tensor randn(at::IntArrayRef s, at::Generator& gen, bool grad = true) {
  auto t = at::randn(s, gen, torch::kDouble);
  if (grad) t.set_requires_grad(true);
  return t;
}

// A causal mask with one padded key column (never a fully-masked row).
torch::Tensor test_allowed(int64_t N, int64_t L) {
  auto causal = torch::arange(L).unsqueeze(0) <= torch::arange(L).unsqueeze(1);
  auto valid = torch::ones({N, L}, torch::kBool);
  if (L > 2) valid[N - 1][1] = false;
  return causal.unsqueeze(0).unsqueeze(0).logical_and(valid.view({N, 1, 1, L}));
}

}  // namespace

GradCheckResult grad_check(const std::string& name, uint64_t seed) {
  if (name.rfind("fast:", 0) == 0) return fast_path_check(name.substr(5), seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto dbl = torch::kDouble;
  if (name == "rmsnorm") {
    RMSNorm m(6, 1e-6);
    m->to(dbl);
    randomize(*m, gen);
    auto x = randn({2, 3, 6}, gen), w = randn({2, 3, 6}, gen, false);
    return fd_check([&] { return (m->forward(x) * w).sum(); }, leaves_of(*m, {x}), gen);
  }
  if (name == "rotary") {
    auto x = randn({2, 2, 3, 4}, gen), w = randn({2, 2, 3, 4}, gen, false);
    auto pos = torch::tensor({0, 1, 5, 2, 3, 4}, torch::kLong).view({2, 3});
    auto [c, s] = rotary_tables(pos, 4, 10000.0, dbl);
    return fd_check([&] { return (apply_rotary(x, c, s) * w).sum(); }, {x}, gen);
  }
  if (name == "attention") {
    Attention m(8, 4, 2);
    m->to(dbl);
    randomize(*m, gen);
    auto x = randn({2, 5, 8}, gen), w = randn({2, 5, 8}, gen, false);
    auto pos = torch::arange(5).repeat({2, 1});
    auto [c, s] = rotary_tables(pos, 2, 10000.0, dbl);
    auto allowed = test_allowed(2, 5);
    return fd_check([&] { return (m->forward(x, c, s, allowed, nullptr, 0) * w).sum(); }, leaves_of(*m, {x}), gen);
  }
  if (name == "swiglu") {
    SwiGLU m(6, 10);
    m->to(dbl);
    randomize(*m, gen);
    auto x = randn({2, 3, 6}, gen), w = randn({2, 3, 6}, gen, false);
    return fd_check([&] { return (m->forward(x) * w).sum(); }, leaves_of(*m, {x}), gen);
  }
  if (name == "decoder_layer") {
    DecoderLayer m(8, 4, 2, 12, 1e-6);
    m->to(dbl);
    randomize(*m, gen);
    auto x = randn({2, 4, 8}, gen), w = randn({2, 4, 8}, gen, false);
    auto pos = torch::arange(4).repeat({2, 1});
    auto [c, s] = rotary_tables(pos, 2, 10000.0, dbl);
    auto allowed = test_allowed(2, 4);
    return fd_check([&] { return (m->forward(x, c, s, allowed, nullptr, 0) * w).sum(); }, leaves_of(*m, {x}), gen);
  }
  PolicyConfig c;
  c.vocab_size = 11;
  c.frames = 4;
  c.image_size = 8;
  c.patch_size = 2;
  c.temporal_patch = 2;
  c.merge_size = 2;
  c.vision_dim = 8;
  c.vision_layers = 1;
  c.vision_heads = 2;
  c.vision_mlp = 12;
  c.lm_dim = 8;
  c.lm_layers = 2;
  c.lm_heads = 4;
  c.lm_kv_heads = 2;
  c.lm_mlp = 12;
  c.max_seq_len = 64;
  if (name == "language_model") {
    LanguageModel m(c);
    m->to(dbl);
    randomize(*m, gen);
    auto x = randn({2, 5, 8}, gen), w = randn({2, 5, 11}, gen, false);
    auto pos = torch::tensor({0, 1, 2, 3, 4, 0, 0, 1, 2, 3}, torch::kLong).view({2, 5});
    auto valid = torch::ones({2, 5}, torch::kBool);
    valid[1][1] = false;
    return fd_check([&] { return (m->logits(m->forward(x, pos, valid, nullptr, 0)) * w).sum(); }, leaves_of(*m, {x}),
                    gen);
  }
  if (name == "vision_encoder" || name == "vision_encoder_clip") {
    c.vision_clip_attention = name == "vision_encoder_clip";
    VisionEncoder m(c);
    m->to(dbl);
    randomize(*m, gen);
    auto x = randn({2, 4, 8, 8, 3}, gen), w = randn({2, 2, 16, 8}, gen, false);
    return fd_check([&] { return (m->forward(x) * w).sum(); }, leaves_of(*m, {x}), gen, 8);
  }
  if (name == "projector") {
    Projector m(8, 6, 4, 2);
    m->to(dbl);
    randomize(*m, gen);
    auto x = randn({2, 2, 16, 8}, gen), w = randn({2, 8, 6}, gen, false);
    return fd_check([&] { return (m->forward(x) * w).sum(); }, leaves_of(*m, {x}), gen);
  }
  if (name == "policy_loss") {
    auto logp = (randn({3, 4}, gen, false) * 0.3 - 1.0).set_requires_grad(true);
    auto old = randn({3, 4}, gen, false) * 0.3 - 1.0;
    auto ref = randn({3, 4}, gen, false) * 0.3 - 1.0;
    auto adv = randn({3}, gen, false);
    auto mask = torch::tensor({1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1}, dbl).view({3, 4});
    double worst = 0;
    GradCheckResult total;
    for (int a = 0; a < 3; a++) {
      LossOptions o;
      o.agg = static_cast<Aggregation>(a);
      o.beta = 0.1;
      o.max_new_tokens = 6;
      auto r = fd_check([&] { return policy_loss(logp, old, ref, adv, mask, o).loss; }, {logp}, gen);
      worst = std::max(worst, r.max_error);
      total.checked += r.checked;
      total.max_abs_grad = std::max(total.max_abs_grad, r.max_abs_grad);
    }
    total.max_error = worst;
    return total;
  }
  if (name == "policy") {
    // The whole network end to end (pixels -> vision -> projector -> LM -> token log-probs), in float64.
    c.dtype = "float64";
    c.seed = seed;
    c.vision_clip_attention = true;
    Policy p(c);
    PromptBatch b;
    b.frames = torch::randint(0, 256, {2, 4, 8, 8, 3}, gen, torch::kByte);
    b.video = {0, 1, 0};
    b.op = {FrameOp::None, FrameOp::HFlip, FrameOp::Reverse};
    b.ids = {{2, 5, 6}, {2, 7}, {2, 8, 9, 10}};
    b.group = 2;
    Completions comp;
    comp.ids = torch::randint(4, 11, {6, 3}, gen, torch::kLong);
    comp.lengths = torch::tensor({3, 2, 1, 3, 2, 3}, torch::kLong);
    auto mask = completion_mask(comp, torch::Device(torch::kCPU)).to(dbl);
    auto w = randn({6, 3}, gen, false);
    auto f = [&] {
      auto lsm = torch::log_softmax(p.completion_logits(b, comp), -1);
      return (lsm.gather(-1, comp.ids.unsqueeze(-1)).squeeze(-1) * mask * w).sum();
    };
    // Checks a sample of entries of every parameter tensor.
    return fd_check(f, p.net_params(), gen, 3);
  }
  throw OpError(
      ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
      "policy gradCheck: unknown module '" + name +
          "' (known: rmsnorm, rotary, attention, swiglu, decoder_layer, language_model, vision_encoder, "
          "vision_encoder_clip, projector, policy_loss, policy; fast:<name> compares a fast path with its slow twin)");
}

// ---------------------------------------------------------------------------------------------
// Fast paths vs their slow twins
// ---------------------------------------------------------------------------------------------

namespace {

void compare_into(GradCheckResult& r, const torch::Tensor& fast, const torch::Tensor& slow) {
  TORCH_CHECK(fast.sizes().equals(slow.sizes()), "fast path check: shapes differ, ", fast.sizes(), " vs ",
              slow.sizes());
  auto f = fast.detach().to(torch::kDouble), s = slow.detach().to(torch::kDouble);
  r.max_error = std::max(r.max_error, ((f - s).abs() / s.abs().clamp_min(1.0)).max().item<double>());
  r.max_abs_grad = std::max(r.max_abs_grad, s.abs().max().item<double>());
  r.checked += s.numel();
}

PolicyConfig small_config(uint64_t seed) {
  PolicyConfig c;
  c.vocab_size = 23;
  c.frames = 4;
  c.image_size = 8;
  c.patch_size = 2;
  c.temporal_patch = 2;
  c.merge_size = 2;
  c.vision_dim = 16;
  c.vision_layers = 1;
  c.vision_heads = 2;
  c.vision_mlp = 24;
  c.lm_dim = 48;
  c.lm_layers = 2;
  c.lm_heads = 4;
  c.lm_kv_heads = 2;
  c.lm_mlp = 40;
  c.max_seq_len = 96;
  c.seed = seed;
  c.vision_clip_attention = true;
  return c;
}

PromptBatch small_batch(at::Generator& gen, int64_t group) {
  PromptBatch b;
  b.frames = torch::randint(0, 256, {2, 4, 8, 8, 3}, gen, torch::kByte);
  b.video = {0, 1, 0, 1};
  b.op = {FrameOp::None, FrameOp::HFlip, FrameOp::Reverse, FrameOp::None};
  b.ids = {{2, 5, 6, 7, 8}, {2, 7}, {2, 8, 9, 10, 11, 12, 13}, {3}};
  b.group = group;
  return b;
}

}  // namespace

GradCheckResult fast_path_check(const std::string& name, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  GradCheckResult r;
  if (name == "attention_decode" || name == "attention_decode_f32") {
    // Decode steps (L = 1) and short chunks (L = 3, 16) against a cache with earlier columns, some
    // keys masked and one row with every key masked; head sizes with and without a tail of 8.
    torch::NoGradGuard ng;
    const auto dtype = name == "attention_decode" ? torch::kDouble : torch::kFloat;
    {
      for (int64_t hd : {24, 12, 6}) {  // 8-wide blocks only, blocks + a tail, a tail only (rotary needs an even size)
        for (int64_t L : {1, 3, 16}) {
          const int64_t N = 3, H = 4, Hkv = 2, D = H * hd, start = 7, cap = start + L + 4;
          Attention m(D, H, Hkv);
          m->to(dtype);
          randomize(*m, gen);
          auto x = at::randn({N, L, D}, gen, dtype);
          LayerCache c{at::randn({N, Hkv, cap, hd}, gen, dtype), at::randn({N, Hkv, cap, hd}, gen, dtype)};
          LayerCache c2{c.k.clone(), c.v.clone()};
          auto pos = torch::arange(start, start + L).repeat({N, 1});
          auto [cs, sn] = rotary_tables(pos, hd, 10000.0, dtype);
          auto valid = torch::ones({N, start + L}, torch::kBool);
          valid[0][2] = false;
          valid[1].narrow(0, 0, start).fill_(false);
          valid[1][start] = false;  // row 1, query 0: no key at all (uniform softmax on both paths)
          auto causal = torch::arange(start + L).unsqueeze(0) <= torch::arange(start, start + L).unsqueeze(1);
          auto allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(valid.view({N, 1, 1, start + L}));
          auto fast = m->forward(x, cs, sn, allowed, &c, start);
          torch::Tensor slow;
          {
            ReferencePaths ref;
            slow = m->forward(x, cs, sn, allowed, &c2, start);
          }
          compare_into(r, fast, slow);
        }
      }
    }
    return r;
  }
  if (name == "attention_grouped") {
    // With autograd (training): grouped-KV attention reading keys/values in place vs repeating them
    // per query head; outputs and the gradients of the input and every weight, float64.
    for (int64_t L : {1, 6}) {
      const int64_t N = 3, H = 6, Hkv = 2, hd = 4, D = H * hd;
      Attention m(D, H, Hkv);
      m->to(torch::kDouble);
      randomize(*m, gen);
      auto x = randn({N, L, D}, gen), w = randn({N, L, D}, gen, false);
      auto pos = torch::arange(L).repeat({N, 1});
      auto [cs, sn] = rotary_tables(pos, hd, 10000.0, torch::kDouble);
      auto allowed = test_allowed(N, L);
      auto leaves = leaves_of(*m, {x});
      std::vector<torch::Tensor> outs, grads;
      for (int pass = 0; pass < 2; pass++) {
        for (auto& l : leaves) l.mutable_grad() = torch::Tensor();
        std::unique_ptr<ReferencePaths> rp;
        if (pass == 1) rp = std::make_unique<ReferencePaths>();
        auto y = m->forward(x, cs, sn, allowed, nullptr, 0);
        (y * w).sum().backward();
        outs.push_back(y.detach());
        for (auto& l : leaves) grads.push_back(l.grad().clone());
      }
      compare_into(r, outs[0], outs[1]);
      const size_t n = leaves.size();
      for (size_t i = 0; i < n; i++) compare_into(r, grads[i], grads[n + i]);
    }
    return r;
  }
  if (name == "generate") {
    // Greedy and sampled decoding of a small policy with every fast path vs every slow twin: the
    // same tokens (sampling from the same generator state), log-probs equal up to rounding.
    Policy p(small_config(seed));
    auto b = small_batch(gen, 3);
    for (bool greedy : {true, false}) {
      SamplingOptions o;
      o.max_new_tokens = 12;
      o.greedy = greedy;
      o.temperature = 0.9;
      o.stop = {4};
      auto state = p.rng_state();
      auto fast = p.generate(b, o);
      p.set_rng_state(state);
      Generation slow;
      {
        ReferencePaths ref;
        slow = p.generate(b, o);
      }
      const int64_t differ =
          fast.tokens.ne(slow.tokens).sum().item<int64_t>() + fast.lengths.ne(slow.lengths).sum().item<int64_t>();
      compare_into(r, fast.logprobs, slow.logprobs);
      if (differ) r.max_error = std::max(r.max_error, 1e9 + static_cast<double>(differ));  // any token difference fails
    }
    return r;
  }
  if (name == "logprobs") {
    // Scoring given completions (some of length 0 and of full width), with entropy, both prefix
    // modes: the decode kernel and the packed head vs the matmuls and the head at every position.
    Policy p(small_config(seed));
    auto b = small_batch(gen, 3);
    const int64_t N = b.prompts() * b.group, C = 7;
    Completions comp;
    comp.ids = torch::randint(4, 23, {N, C}, gen, torch::kLong);
    comp.lengths = torch::randint(0, C + 1, {N}, gen, torch::kLong);
    comp.lengths[0] = 0;
    comp.lengths[1] = C;
    for (bool full : {false, true}) {
      auto fast = p.logprobs(b, comp, 0.8, true, full);
      std::pair<torch::Tensor, torch::Tensor> slow;
      {
        ReferencePaths rp;
        slow = p.logprobs(b, comp, 0.8, true, full);
      }
      compare_into(r, fast.first, slow.first);
      compare_into(r, fast.second, slow.second);
    }
    return r;
  }
  if (name == "train_step") {
    // Three RL steps (clipping active on the first, weight decay on) of two copies of a small
    // policy: fast paths vs slow twins; the weights and both AdamW moments after them, and the stats.
    Policy fast(small_config(seed));
    Policy slow(fast, false);
    auto b = small_batch(gen, 2);
    const int64_t N = b.prompts() * b.group, C = 5;
    Completions comp;
    comp.ids = torch::randint(4, 23, {N, C}, gen, torch::kLong);
    comp.lengths = torch::randint(1, C + 1, {N}, gen, torch::kLong);
    auto adv = at::randn({N}, gen, torch::kFloat);
    LossOptions lo;
    OptimOptions oo;
    oo.lr = 1e-3;
    oo.weight_decay = 0.1;
    for (int s = 0; s < 3; s++) {
      oo.max_grad_norm = s == 0 ? 1e-3 : 0.0;
      auto old = fast.logprobs(b, comp, 1.0, false).first + 0.05 * at::randn({N, C}, gen, torch::kFloat);
      auto ref = old + 0.05 * at::randn({N, C}, gen, torch::kFloat);
      auto a = fast.train_step(b, comp, adv, old, ref, lo, oo, false, -1);
      StepStats z;
      {
        ReferencePaths rp;
        z = slow.train_step(b, comp, adv, old, ref, lo, oo, false, -1);
      }
      compare_into(r, torch::tensor({a.loss, a.grad_norm}, torch::kDouble),
                   torch::tensor({z.loss, z.grad_norm}, torch::kDouble));
    }
    auto fw = fast.get_parameters(), sw = slow.get_parameters();
    for (size_t i = 0; i < fw.size(); i++) compare_into(r, fw[i].value, sw[i].value);
    auto fo = fast.get_optimizer_state(), so = slow.get_optimizer_state();
    for (size_t i = 0; i < fo.size(); i++) {  // each moment relative to its tensor's largest entry
      const double scale = std::max(so[i].value.abs().max().item<double>(), 1e-30);
      compare_into(r, fo[i].value / scale, so[i].value / scale);
    }
    return r;
  }
  if (name == "adamw") {
    // The fused clip + AdamW pass vs torch::optim::AdamW (two groups: decay on matrices only) after
    // torch::nn::utils::clip_grad_norm_, over four steps with fresh random gradients.
    std::vector<torch::Tensor> a, b2;
    for (auto shape : std::vector<std::vector<int64_t>>{{7, 5}, {13}, {3, 4, 6}, {1}, {33, 9}}) {
      auto t = at::randn(shape, gen, torch::kFloat);
      a.push_back(t.clone());
      b2.push_back(t.clone().set_requires_grad(true));
    }
    std::vector<torch::Tensor> m, v;
    for (auto& t : a) {
      m.push_back(torch::zeros_like(t));
      v.push_back(torch::zeros_like(t));
    }
    OptimOptions oo;
    oo.lr = 3e-2;
    oo.weight_decay = 0.05;
    oo.max_grad_norm = 2.0;
    std::vector<torch::Tensor> decay, no_decay;
    std::vector<bool> mask;
    for (auto& t : b2) {
      (t.dim() >= 2 ? decay : no_decay).push_back(t);
      mask.push_back(t.dim() >= 2);
    }
    auto opts = torch::optim::AdamWOptions(oo.lr).betas({oo.beta1, oo.beta2}).eps(oo.eps);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(opts).weight_decay(oo.weight_decay)));
    groups.emplace_back(
        no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(0.0)));
    torch::optim::AdamW ref(std::move(groups), opts);
    for (int64_t step = 1; step <= 4; step++) {
      std::vector<torch::Tensor> g;
      for (auto& t : a)
        g.push_back(at::randn(t.sizes(), gen, torch::kFloat) * (step == 1 ? 3.0 : 0.2));  // clipped, then not
      for (size_t i = 0; i < b2.size(); i++) b2[i].mutable_grad() = g[i].clone();
      TORCH_CHECK(fused_adamw_applies(a, g, m, v),
                  "fast path check: the fused AdamW does not apply to its own test tensors");
      const double norm = fused_grad_norm(g);
      const double torch_norm = torch::nn::utils::clip_grad_norm_(b2, oo.max_grad_norm);
      compare_into(r, torch::tensor({norm}, torch::kDouble), torch::tensor({torch_norm}, torch::kDouble));
      const double clip = norm > oo.max_grad_norm ? oo.max_grad_norm / (norm + 1e-6) : 1.0;
      fused_adamw_step(a, g, m, v, mask, step, clip, oo);
      ref.step();
      for (size_t i = 0; i < a.size(); i++) compare_into(r, a[i], b2[i]);
    }
    return r;
  }
  throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                "policy fast path check: unknown name '" + name +
                    "' (known: attention_decode, attention_decode_f32, attention_grouped, generate, logprobs, "
                    "train_step, adamw)");
}

// ---------------------------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------------------------

namespace {
std::mutex g_mu;
std::unordered_map<int64_t, std::shared_ptr<Policy>> g_policies;
int64_t g_next = 1;
}  // namespace

int64_t register_policy(std::shared_ptr<Policy> p) {
  std::lock_guard<std::mutex> l(g_mu);
  const int64_t id = g_next++;
  g_policies[id] = std::move(p);
  return id;
}

std::shared_ptr<Policy> find_policy(int64_t id, const std::string& op) {
  std::lock_guard<std::mutex> l(g_mu);
  auto it = g_policies.find(id);
  if (it == g_policies.end()) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED",
                  op + ": policy " + std::to_string(id) + " does not exist (disposed?)");
  }
  return it->second;
}

bool dispose_policy(int64_t id) {
  std::lock_guard<std::mutex> l(g_mu);
  return g_policies.erase(id) > 0;
}

int64_t live_policies() {
  std::lock_guard<std::mutex> l(g_mu);
  return static_cast<int64_t>(g_policies.size());
}

}  // namespace policy
}  // namespace crpo
