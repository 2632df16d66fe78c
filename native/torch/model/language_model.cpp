// The language-model modules of the native policy (see policy_modules.h): RMSNorm, rotary
// positions, causal grouped-KV attention with its fast paths (the decode-attention kernel of
// native/kernels/cpu/decode_attention_kernel.h; grouped matmuls without copying keys and values per
// query head) and their slow twin, SwiGLU, the decoder layer, and the LM with its KV cache.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/decode_attention_kernel.h"
#include "torch/model/policy_internal.h"
#include "torch/model/policy_modules.h"

namespace crpo {
namespace policy {

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

namespace {
thread_local bool t_reference_paths = false;
}  // namespace

bool reference_paths() { return t_reference_paths; }
ReferencePaths::ReferencePaths() : previous_(t_reference_paths) { t_reference_paths = true; }
ReferencePaths::~ReferencePaths() { t_reference_paths = previous_; }

namespace {

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

}  // namespace policy
}  // namespace crpo
