// Qwen2.5-VL / Qwen3-VL weights, building blocks, embeddings, decoder and decoding (see
// qwen_model.h); the vision tower is in qwen_vision.cpp, training in qwen_train.cpp and LoRA in
// qwen_lora.cpp. Each function mirrors the transformers module of the same role; comments name it
// and give shapes.
#include "qwen_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "qwen_util.h"

namespace crpo {
namespace qwen {

using detail::acc;
using detail::grid_rows;
using detail::rotate_half;

Model::Model(Config cfg, at::ScalarType dtype, at::Device device)
    : cfg_(std::move(cfg)), dtype_(dtype), device_(device) {}

void Model::set_param(const std::string& name, const at::Tensor& value) {
  // copy=true: `value` may view a memory map that is closed after loading
  params_[name] = value.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

void Model::set_param_chunked(const std::string& name, const at::Tensor& src,
                              const std::function<void(int64_t, int64_t)>& release) {
  TORCH_CHECK(src.is_contiguous() && src.device().is_cpu(), "qwen: set_param_chunked needs a contiguous CPU source");
  at::Tensor dst = at::empty(src.sizes(), at::TensorOptions().dtype(dtype_));  // host, the model dtype
  at::Tensor s = src.reshape({-1}), d = dst.view({-1});
  const int64_t n = s.numel(), es = static_cast<int64_t>(src.element_size());
  const int64_t step = std::max<int64_t>(1, (int64_t{64} << 20) / es);
  for (int64_t off = 0; off < n; off += step) {
    const int64_t len = std::min(step, n - off);
    d.narrow(0, off, len).copy_(s.narrow(0, off, len));
    release(off * es, len * es);
  }
  params_[name] = device_.is_cpu() ? dst : dst.to(device_);
}

const at::Tensor& Model::param(const std::string& name) const {
  auto it = params_.find(name);
  TORCH_CHECK(it != params_.end(), "qwen: the model has no weight '", name, "'");
  return it->second;
}

std::vector<std::string> Model::param_names() const {
  std::vector<std::string> out;
  for (const auto& kv : params_) out.push_back(kv.first);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

// nn.Linear with an optional LoRA branch: y = x W^T + b + (alpha / r) * dropout(x) A^T B^T.
at::Tensor Model::linear(const at::Tensor& x, const std::string& prefix, bool bias) const {
  const at::Tensor& w = param(prefix + ".weight");
  at::Tensor b = bias ? param(prefix + ".bias") : at::Tensor();
  at::Tensor y = at::linear(x, w, b);
  if (lora_enabled_ && lora_.rank > 0) {
    auto a = lora_params_.find(prefix + ".lora_A");
    if (a != lora_params_.end()) {
      const at::Tensor& B = lora_params_.at(prefix + ".lora_B");
      at::Tensor xd = lora_.dropout > 0 ? at::dropout(x, lora_.dropout, training_) : x;
      double scale = lora_.alpha / static_cast<double>(lora_.rank);
      y = y + at::linear(at::linear(xd, a->second), B) * scale;
    }
  }
  return y;
}

// Qwen2RMSNorm / Qwen3VLTextRMSNorm: weight * (x * rsqrt(mean(x^2) + eps)) computed in fp32.
at::Tensor Model::rms_norm(const at::Tensor& x, const std::string& weight, double eps) const {
  at::Tensor h = x.to(acc(x));
  at::Tensor var = h.pow(2).mean(-1, true);
  h = h * at::rsqrt(var + eps);
  return param(weight) * h.to(x.scalar_type());
}

// nn.LayerNorm(dim, eps=1e-6) with weight and bias (Qwen3-VL vision).
at::Tensor Model::layer_norm(const at::Tensor& x, const std::string& prefix, int64_t dim) const {
  return at::layer_norm(x, {dim}, param(prefix + ".weight"), param(prefix + ".bias"), 1e-6);
}

at::Tensor Model::act(const at::Tensor& x, const std::string& name) const {
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast") return at::gelu(x, "tanh");
  if (name == "quick_gelu") return x * at::sigmoid(1.702 * x);
  TORCH_CHECK(false, "qwen: unsupported activation '", name,
              "' (supported: silu, gelu, gelu_pytorch_tanh, quick_gelu)");
}

// ---------------------------------------------------------------------------------------------
// Embeddings and decoder
// ---------------------------------------------------------------------------------------------

at::Tensor Model::embed(const Inputs& in, Capture* cap, std::vector<at::Tensor>* deepstack_full) {
  at::Tensor ids = in.input_ids.to(device_, at::kLong);
  const int64_t vocab = param(tpre() + "embed_tokens.weight").size(0);
  if (ids.numel() > 0) {
    int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < vocab, "qwen: token ids must be in [0, ", vocab, ") but range over [", lo, ", ", hi,
                "]");
  }
  at::Tensor x = at::embedding(param(tpre() + "embed_tokens.weight"), ids);  // (B, L, H)
  int call = 0;
  at::Tensor img_mask, vid_mask;
  std::vector<at::Tensor> img_ds, vid_ds;
  auto scatter = [&](const at::Tensor& pixels, const at::Tensor& grid, int64_t token, const char* what,
                     at::Tensor* mask_out, std::vector<at::Tensor>* ds_out, const std::vector<int64_t>& reps) {
    VisionResult r = vision(pixels, grid, cap, "call" + std::to_string(call++));
    at::Tensor mask = ids.eq(token);
    int64_t n = mask.sum().item<int64_t>();
    if (!reps.empty()) {
      auto rows = grid_rows(grid);
      TORCH_CHECK(reps.size() == rows.size(), "qwen: ", reps.size(), " ", what, " repeat counts for ", rows.size(),
                  " grids");
      const int64_t mu = cfg_.vision.merge * cfg_.vision.merge;
      auto expand = [&](const at::Tensor& feats) {
        std::vector<at::Tensor> parts;
        int64_t off = 0;
        for (size_t i = 0; i < rows.size(); ++i) {
          int64_t len = rows[i][0] * rows[i][1] * rows[i][2] / mu;
          TORCH_CHECK(reps[i] >= 1, "qwen: repeat counts must be positive");
          at::Tensor part = feats.narrow(0, off, len);
          parts.push_back(reps[i] > 1 ? part.repeat({reps[i], 1}) : part);
          off += len;
        }
        return at::cat(parts, 0);
      };
      r.embeds = expand(r.embeds);
      for (auto& d : r.deepstack) d = expand(d);
    } else if (in.share_vision && ids.size(0) > 1) {
      // one encoding, scattered into every row of the group
      const int64_t B = ids.size(0);
      r.embeds = r.embeds.repeat({B, 1});
      for (auto& d : r.deepstack) d = d.repeat({B, 1});
    }
    TORCH_CHECK(n == r.embeds.size(0), "qwen: ", what, " features and ", what, " tokens do not match: tokens: ", n,
                ", features ", r.embeds.size(0));
    x = x.masked_scatter(mask.unsqueeze(-1).expand_as(x), r.embeds.to(x.scalar_type()));
    *mask_out = mask;
    *ds_out = r.deepstack;
  };
  if (in.pixel_values.defined() && in.pixel_values.numel() > 0)
    scatter(in.pixel_values, in.image_grid, cfg_.image_token, "Image", &img_mask, &img_ds, in.image_repeats);
  if (in.pixel_values_videos.defined() && in.pixel_values_videos.numel() > 0)
    scatter(in.pixel_values_videos, in.video_grid, cfg_.video_token, "Video", &vid_mask, &vid_ds, in.video_repeats);
  if (deepstack_full) {
    deepstack_full->clear();
    size_t n = std::max(img_ds.size(), vid_ds.size());
    for (size_t j = 0; j < n; ++j) {
      // zero outside visual positions, so adding it leaves text positions bit-identical
      at::Tensor z = at::zeros_like(x);
      if (j < img_ds.size()) z = z.masked_scatter(img_mask.unsqueeze(-1).expand_as(z), img_ds[j].to(z.scalar_type()));
      if (j < vid_ds.size()) z = z.masked_scatter(vid_mask.unsqueeze(-1).expand_as(z), vid_ds[j].to(z.scalar_type()));
      deepstack_full->push_back(z);
    }
  }
  if (cap) cap->add("inputs_embeds_merged", x);
  return x;
}

// Qwen2_5_VLRotaryEmbedding / Qwen3VLTextRotaryEmbedding + the mrope section selection:
// position ids (3, B, L) -> cos, sin (B, L, head_dim).
std::pair<at::Tensor, at::Tensor> Model::rope_cos_sin(const at::Tensor& position_ids) const {
  const auto& t = cfg_.text;
  const int64_t hd = t.head_dim;
  at::Tensor inv_freq =
      1.0 / at::pow(t.theta, at::arange(0, hd, 2, at::kLong).to(at::kFloat) / static_cast<double>(hd));
  inv_freq = inv_freq.to(device_);
  at::Tensor freqs = position_ids.to(device_).to(at::kFloat).unsqueeze(-1) * inv_freq;  // (3, B, L, hd/2)
  at::Tensor emb;
  if (t.interleaved) {
    at::Tensor ft = freqs[0].clone();
    for (int64_t dim = 1; dim <= 2; ++dim) {
      int64_t length = t.mrope_section[dim] * 3;
      at::Tensor idx = at::arange(dim, length, 3, at::TensorOptions().dtype(at::kLong).device(device_));
      ft.index_copy_(-1, idx, freqs[dim].index_select(-1, idx));
    }
    emb = at::cat({ft, ft}, -1);
  } else {
    at::Tensor full = at::cat({freqs, freqs}, -1);  // (3, B, L, hd)
    std::vector<at::Tensor> chunks;
    int64_t off = 0;
    for (int rep = 0; rep < 2; ++rep)
      for (int64_t i = 0; i < 3; ++i) {
        int64_t len = t.mrope_section[i];
        chunks.push_back(full[(rep * 3 + i) % 3].narrow(-1, off, len));
        off += len;
      }
    emb = at::cat(chunks, -1);
  }
  return {emb.cos().to(dtype_), emb.sin().to(dtype_)};
}

// Qwen2_5_VLDecoderLayer / Qwen3VLTextDecoderLayer (eager attention). x: (B, L, H);
// cos/sin: (B, L, hd); bias: (B, 1, L, T) additive mask.
at::Tensor Model::decoder_layer(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                                const at::Tensor& bias, KVCache* cache) const {
  const bool past = cache && cache->k.size() > static_cast<size_t>(i) && cache->k[i].defined();
  at::Tensor k, v;
  at::Tensor y = decoder_layer_kv(x, i, cos, sin, bias, past ? cache->k[i] : at::Tensor(),
                                  past ? cache->v[i] : at::Tensor(), cache ? &k : nullptr, cache ? &v : nullptr);
  if (cache) {
    if (cache->k.size() <= static_cast<size_t>(i)) {
      cache->k.resize(i + 1);
      cache->v.resize(i + 1);
    }
    cache->k[i] = k.detach();
    cache->v[i] = v.detach();
  }
  return y;
}

at::Tensor Model::decoder_layer_kv(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                                   const at::Tensor& bias, const at::Tensor& past_k, const at::Tensor& past_v,
                                   at::Tensor* k_out, at::Tensor* v_out) const {
  const auto& t = cfg_.text;
  const std::string P = tpre() + "layers." + std::to_string(i) + ".";
  const int64_t B = x.size(0), L = x.size(1), hd = t.head_dim;
  at::Tensor h = rms_norm(x, P + "input_layernorm.weight", t.eps);
  at::Tensor q = linear(h, P + "self_attn.q_proj", t.attn_bias).view({B, L, -1, hd});
  at::Tensor k = linear(h, P + "self_attn.k_proj", t.attn_bias).view({B, L, -1, hd});
  at::Tensor v = linear(h, P + "self_attn.v_proj", t.attn_bias).view({B, L, -1, hd}).transpose(1, 2);
  if (t.qk_norm) {
    q = rms_norm(q, P + "self_attn.q_norm.weight", t.eps);
    k = rms_norm(k, P + "self_attn.k_norm.weight", t.eps);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  q = q * c + rotate_half(q) * s;
  k = k * c + rotate_half(k) * s;
  if (past_k.defined()) {
    k = at::cat({past_k, k}, 2);
    v = at::cat({past_v, v}, 2);
  }
  if (k_out) *k_out = k;
  if (v_out) *v_out = v;
  const int64_t rep = t.heads / t.kv_heads, T = k.size(2);
  if (rep > 1) {
    k = k.unsqueeze(2).expand({B, t.kv_heads, rep, T, hd}).reshape({B, t.heads, T, hd});
    v = v.unsqueeze(2).expand({B, t.kv_heads, rep, T, hd}).reshape({B, t.heads, T, hd});
  }
  at::Tensor w = at::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(hd)));
  w = w.to(acc(w)) + bias;
  w = at::softmax(w, -1, acc(w)).to(q.scalar_type());
  at::Tensor o = at::matmul(w, v).transpose(1, 2).reshape({B, L, -1});
  at::Tensor y = x + linear(o, P + "self_attn.o_proj", false);
  at::Tensor h2 = rms_norm(y, P + "post_attention_layernorm.weight", t.eps);
  at::Tensor m = linear(act(linear(h2, P + "mlp.gate_proj", false), t.act) * linear(h2, P + "mlp.up_proj", false),
                        P + "mlp.down_proj", false);
  return y + m;
}

namespace {

// Gradient checkpointing of one decoder layer (torch.utils.checkpoint, reentrant variant): the
// forward keeps only the layer input; backward recomputes the layer with grad enabled (same RNG
// state for LoRA dropout) and back-propagates into the input and the trainable weights given.
struct LayerCheckpoint : public torch::autograd::Function<LayerCheckpoint> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor cos,
                                                at::Tensor sin, at::Tensor bias, at::TensorList params, const Model* m,
                                                int64_t layer) {
    std::vector<at::Tensor> save = {x, cos, sin, bias};
    for (const auto& p : params) save.push_back(p);
    ctx->save_for_backward(save);
    ctx->saved_data["model"] = reinterpret_cast<int64_t>(m);
    ctx->saved_data["layer"] = layer;
    // RNG of the device the dropout masks come from (CPU or CUDA), replayed in backward
    ctx->saved_data["rng"] = at::globalContext().defaultGenerator(m->device()).get_state();
    return {m->decoder_layer(x, layer, cos, sin, bias, nullptr)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const Model* m = reinterpret_cast<const Model*>(ctx->saved_data["model"].toInt());
    int64_t layer = ctx->saved_data["layer"].toInt();
    auto gen = at::globalContext().defaultGenerator(m->device());
    at::Tensor now = gen.get_state();
    gen.set_state(ctx->saved_data["rng"].toTensor());
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode g(true);
      y = m->decoder_layer(x, layer, saved[1], saved[2], saved[3], nullptr);
    }
    gen.set_state(now);
    std::vector<at::Tensor> inputs = {x};
    for (size_t i = 4; i < saved.size(); ++i) inputs.push_back(saved[i]);
    auto g = torch::autograd::grad({y}, inputs, {grad_out[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    torch::autograd::variable_list out = {g[0], at::Tensor(), at::Tensor(), at::Tensor()};
    for (size_t i = 1; i < g.size(); ++i) out.push_back(g[i]);
    out.push_back(at::Tensor());
    out.push_back(at::Tensor());
    return out;
  }
};

}  // namespace

ForwardResult Model::decode(const at::Tensor& embeds, const at::Tensor& position_ids, const at::Tensor& mask,
                            const std::vector<at::Tensor>& deepstack_full, KVCache* cache, Capture* cap) {
  const auto& t = cfg_.text;
  const int64_t B = embeds.size(0), L = embeds.size(1);
  const int64_t past = cache ? cache->len : 0;
  at::Tensor m = mask.defined() ? mask.to(device_, at::kLong)
                                : at::ones({B, L}, at::TensorOptions().dtype(at::kLong).device(device_));
  at::Tensor keys = (cache && cache->mask.defined()) ? at::cat({cache->mask, m}, 1) : m;  // (B, T)
  const int64_t T = keys.size(1);
  // causal + key padding, additive with the dtype's minimum (create_causal_mask, eager)
  at::Tensor qpos = at::arange(past, past + L, at::TensorOptions().dtype(at::kLong).device(device_)).view({L, 1});
  at::Tensor kpos = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device_)).view({1, T});
  at::Tensor allowed = kpos.le(qpos).unsqueeze(0) & keys.ne(0).unsqueeze(1);  // (B, L, T)
  // fp32 always: scores are promoted to fp32 before the mask (the same as eager in fp32; a
  // little more precise than eager in bf16, where the minimum of bf16 would be added).
  at::Tensor bias = at::zeros({B, 1, L, T}, at::TensorOptions().dtype(at::kFloat).device(device_))
                        .masked_fill(allowed.logical_not().unsqueeze(1), std::numeric_limits<float>::lowest());
  auto cs = rope_cos_sin(position_ids);
  at::Tensor x = embeds;
  for (int64_t i = 0; i < t.layers; ++i) {
    if (checkpointing_ && !cache && at::GradMode::is_enabled()) {
      // trainable weights of this layer, so their gradients flow through the checkpoint
      const std::string P = tpre() + "layers." + std::to_string(i) + ".";
      std::vector<at::Tensor> ps;
      for (const auto& kv : params_)
        if (kv.second.requires_grad() && kv.first.rfind(P, 0) == 0) ps.push_back(kv.second);
      for (const auto& kv : lora_params_)
        if (kv.second.requires_grad() && kv.first.rfind(P, 0) == 0) ps.push_back(kv.second);
      if (x.requires_grad() || !ps.empty()) {
        x = LayerCheckpoint::apply(x, cs.first, cs.second, bias, at::TensorList(ps), static_cast<const Model*>(this),
                                   i)[0];
      } else {
        x = decoder_layer(x, i, cs.first, cs.second, bias, cache);
      }
    } else {
      x = decoder_layer(x, i, cs.first, cs.second, bias, cache);
    }
    if (cap) cap->add("dec_layer" + std::to_string(i) + "_out", x);
    if (i < static_cast<int64_t>(deepstack_full.size()) && deepstack_full[i].defined()) x = x + deepstack_full[i];
  }
  if (cache) {
    cache->len += L;
    cache->mask = keys;
  }
  at::Tensor h = rms_norm(x, tpre() + "norm.weight", t.eps);
  if (cap) cap->add("final_norm_out", h);
  const at::Tensor& head = t.tie ? param(tpre() + "embed_tokens.weight") : param("lm_head.weight");
  ForwardResult r;
  r.hidden = h;
  r.logits = at::linear(h, head);
  return r;
}

ForwardResult Model::forward(const Inputs& in, Capture* cap, KVCache* cache) {
  TORCH_CHECK(in.input_ids.dim() == 2, "qwen: input_ids must be (B, L) but are ", in.input_ids.sizes());
  TORCH_CHECK(in.position_ids.dim() == 3 && in.position_ids.size(0) == 3 &&
                  in.position_ids.size(1) == in.input_ids.size(0) && in.position_ids.size(2) == in.input_ids.size(1),
              "qwen: position_ids must be (3, B, L) = (3, ", in.input_ids.size(0), ", ", in.input_ids.size(1),
              ") but are ", in.position_ids.sizes());
  std::vector<at::Tensor> ds;
  at::Tensor x = embed(in, cap, &ds);
  return decode(x, in.position_ids, in.attention_mask, ds, cache, cap);
}

at::Tensor text_positions(int64_t start, int64_t len, int64_t batch) {
  return at::arange(start, start + len, at::kLong).view({1, 1, len}).expand({3, batch, len}).contiguous();
}

GenerateResult Model::generate(const Inputs& in, const SampleOptions& o) {
  at::NoGradGuard ng;
  const int64_t B = in.input_ids.size(0), L = in.input_ids.size(1);
  at::Tensor pos = in.position_ids.to(device_, at::kLong);
  at::Tensor mask = in.attention_mask.defined()
                        ? in.attention_mask.to(device_, at::kLong)
                        : at::ones({B, L}, at::TensorOptions().dtype(at::kLong).device(device_));
  // The G samples of one prompt (identical rows, the vision shared): the prompt runs once and its
  // keys/values are copied to every row; exact, since rows never attend to each other. The
  // single-row call is its twin in the tests.
  const bool vision = (in.pixel_values.defined() && in.pixel_values.numel() > 0) ||
                      (in.pixel_values_videos.defined() && in.pixel_values_videos.numel() > 0);
  const bool one_prompt = o.use_cache && B > 1 && (in.share_vision || !vision) &&
                          in.input_ids.eq(in.input_ids.narrow(0, 0, 1)).all().item<bool>() &&
                          pos.eq(pos.narrow(1, 0, 1)).all().item<bool>() &&
                          mask.eq(mask.narrow(0, 0, 1)).all().item<bool>();
  std::vector<at::Tensor> ds;
  Inputs first = in;
  if (one_prompt) {
    first.input_ids = in.input_ids.narrow(0, 0, 1);
    first.position_ids = in.position_ids.narrow(1, 0, 1);
    if (in.attention_mask.defined()) first.attention_mask = in.attention_mask.narrow(0, 0, 1);
  }
  at::Tensor embeds = embed(first, nullptr, &ds);  // (B, L, H), or (1, L, H) for one prompt
  // rope deltas (get_rope_index): max position + 1 - L per row; new tokens continue from there.
  at::Tensor delta = std::get<0>(pos.amax(0).max(-1)) + 1 - L;  // (B,)
  const at::Tensor& table = param(tpre() + "embed_tokens.weight");
  auto gen = at::detail::createCPUGenerator(o.seed);
  GenerateResult out;
  out.tokens.assign(B, {});
  out.logprobs.assign(B, {});
  std::vector<bool> done(B, false);
  KVCache cache;
  ForwardResult r;
  if (one_prompt) {
    r = decode(embeds, pos.narrow(1, 0, 1), mask.narrow(0, 0, 1), ds, &cache, nullptr);
    for (auto* kv : {&cache.k, &cache.v})
      for (auto& t : *kv) t = t.expand({B, -1, -1, -1}).contiguous();  // (B, kv_heads, L, hd)
    cache.mask = cache.mask.expand({B, -1}).contiguous();
    r.logits = r.logits.expand({B, -1, -1});
  } else {
    r = decode(embeds, pos, mask, ds, o.use_cache ? &cache : nullptr, nullptr);
  }
  at::Tensor all_embeds = embeds, all_pos = pos, all_mask = mask;
  int64_t cur = L;
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    at::Tensor last = r.logits.select(1, r.logits.size(1) - 1).to(at::kFloat).to(at::kCPU);  // (B, V)
    if (o.keep_logits) out.step_logits.push_back(last.contiguous());
    at::Tensor logp = at::log_softmax(o.temperature > 0 ? last / o.temperature : last, -1);
    at::Tensor next;
    if (o.temperature <= 0) {
      next = last.argmax(-1);
    } else {
      at::Tensor z = last / o.temperature;
      // Never sample a vision placeholder: scored again, the completion would hold one more visual
      // position than there are features (small random models sample them; real ones rarely).
      for (int64_t t : {cfg_.image_token, cfg_.video_token})
        if (t >= 0 && t < z.size(-1)) z.select(-1, t).fill_(-std::numeric_limits<float>::infinity());
      if (o.top_k > 0 && o.top_k < z.size(-1)) {
        at::Tensor kth = std::get<0>(z.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
        z = z.masked_fill(z < kth, -std::numeric_limits<float>::infinity());
      }
      if (o.top_p < 1.0) {
        auto sorted = z.sort(-1, /*descending=*/true);
        at::Tensor probs = at::softmax(std::get<0>(sorted), -1);
        at::Tensor cum = probs.cumsum(-1);
        at::Tensor drop = (cum - probs) > o.top_p;  // keep the smallest prefix reaching top_p
        at::Tensor dropped = at::zeros_like(drop).scatter(-1, std::get<1>(sorted), drop);
        z = z.masked_fill(dropped, -std::numeric_limits<float>::infinity());
      }
      next = at::multinomial(at::softmax(z, -1), 1, false, gen).squeeze(-1);
    }
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      int64_t tok = next[b].item<int64_t>();
      if (!done[b]) {
        out.tokens[b].push_back(tok);
        out.logprobs[b].push_back(logp[b][tok].item<float>());
        if (tok == o.eos) done[b] = true;
      }
      all_done = all_done && done[b];
    }
    if (all_done || step + 1 == o.max_new_tokens) break;
    at::Tensor ne = at::embedding(table, next.to(device_).view({B, 1}));
    at::Tensor np = (delta + cur).view({1, B, 1}).expand({3, B, 1});
    at::Tensor nm = at::ones({B, 1}, at::TensorOptions().dtype(at::kLong).device(device_));
    if (o.use_cache) {
      r = decode(ne, np, nm, {}, &cache, nullptr);
    } else {
      all_embeds = at::cat({all_embeds, ne}, 1);
      all_pos = at::cat({all_pos, np}, 2);
      all_mask = at::cat({all_mask, nm}, 1);
      std::vector<at::Tensor> ds_full;
      for (auto& d : ds) ds_full.push_back(at::cat({d, at::zeros_like(ne)}, 1));
      ds = ds_full;
      r = decode(all_embeds, all_pos, all_mask, ds, nullptr, nullptr);
    }
    ++cur;
  }
  return out;
}

}  // namespace qwen
}  // namespace crpo
