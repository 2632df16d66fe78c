// Qwen2.5-VL / Qwen3-VL forward, decoding and LoRA (see qwen_model.h). Each function mirrors the
// transformers module of the same role; comments name it and give shapes.
#include "qwen_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <sstream>

namespace crpo {
namespace qwen {
namespace {

std::vector<std::array<int64_t, 3>> grid_rows(const at::Tensor& grid) {
  at::Tensor g = grid.to(at::kCPU, at::kLong).contiguous().view({-1, 3});
  std::vector<std::array<int64_t, 3>> out;
  const int64_t* p = g.data_ptr<int64_t>();
  for (int64_t i = 0; i < g.size(0); ++i) out.push_back({p[3 * i], p[3 * i + 1], p[3 * i + 2]});
  return out;
}

at::Tensor rotate_half(const at::Tensor& x) {
  int64_t d = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, d, d), x.narrow(-1, 0, d)}, -1);
}

// Accumulation type: fp32 as transformers does, fp64 when the model runs in fp64 (numerical checks).
at::ScalarType acc(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Model::Model(Config cfg, at::ScalarType dtype, at::Device device)
    : cfg_(std::move(cfg)), dtype_(dtype), device_(device) {}

void Model::set_param(const std::string& name, const at::Tensor& value) {
  // copy=true: `value` may view a memory map that is closed after loading
  params_[name] = value.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
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
// Vision tower
// ---------------------------------------------------------------------------------------------

// Qwen2_5_VLVisionBlock / Qwen3VLVisionBlock: pre-norm attention within the segments `cu`
// (cumulative boundaries), then pre-norm MLP. x: (N, hv); cos/sin: (N, head_dim).
at::Tensor Model::vision_block(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                               const std::vector<int64_t>& cu) const {
  const auto& v = cfg_.vision;
  const bool q3 = cfg_.arch == Arch::Qwen3VL;
  const std::string P = vpre() + "blocks." + std::to_string(i) + ".";
  const int64_t N = x.size(0), hd = v.hidden / v.heads;
  at::Tensor h = q3 ? layer_norm(x, P + "norm1", v.hidden) : rms_norm(x, P + "norm1.weight", 1e-6);
  at::Tensor qkv = linear(h, P + "attn.qkv", true).reshape({N, 3, v.heads, hd}).permute({1, 0, 2, 3});
  at::Tensor q = qkv[0], k = qkv[1], val = qkv[2];  // (N, nh, hd)
  // apply_rotary_pos_emb_vision: in fp32
  at::Tensor c = cos.unsqueeze(-2).to(acc(x)), s = sin.unsqueeze(-2).to(acc(x));
  at::Tensor qf = q.to(acc(x)), kf = k.to(acc(x));
  q = (qf * c + rotate_half(qf) * s).to(x.scalar_type()).transpose(0, 1);  // (nh, N, hd)
  k = (kf * c + rotate_half(kf) * s).to(x.scalar_type()).transpose(0, 1);
  val = val.transpose(0, 1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<at::Tensor> outs;
  for (size_t j = 0; j + 1 < cu.size(); ++j) {
    int64_t a = cu[j], b = cu[j + 1];
    if (b <= a) continue;
    at::Tensor qs = q.narrow(1, a, b - a), ks = k.narrow(1, a, b - a), vs = val.narrow(1, a, b - a);
    at::Tensor w = at::matmul(qs, ks.transpose(1, 2)) * scale;
    w = at::softmax(w, -1, acc(w)).to(qs.scalar_type());
    outs.push_back(at::matmul(w, vs).transpose(0, 1));  // (n, nh, hd)
  }
  at::Tensor o = at::cat(outs, 0).reshape({N, -1});
  o = linear(o, P + "attn.proj", true);
  at::Tensor y = x + o;
  at::Tensor h2 = q3 ? layer_norm(y, P + "norm2", v.hidden) : rms_norm(y, P + "norm2.weight", 1e-6);
  at::Tensor m;
  if (q3) {
    m = linear(act(linear(h2, P + "mlp.linear_fc1", true), v.act), P + "mlp.linear_fc2", true);
  } else {
    m = linear(act(linear(h2, P + "mlp.gate_proj", true), v.act) * linear(h2, P + "mlp.up_proj", true),
               P + "mlp.down_proj", true);
  }
  return y + m;
}

VisionResult Model::vision(const at::Tensor& pixels, const at::Tensor& grid, Capture* cap, const std::string& call) {
  const auto& v = cfg_.vision;
  const bool q3 = cfg_.arch == Arch::Qwen3VL;
  const std::string P = vpre();
  const int64_t m = v.merge, mu = m * m, hd = v.hidden / v.heads;
  auto rows = grid_rows(grid);
  int64_t expect = 0;
  for (auto& g : rows) {
    TORCH_CHECK(g[0] > 0 && g[1] > 0 && g[2] > 0 && g[1] % m == 0 && g[2] % m == 0, "qwen: grid (", g[0], ",", g[1],
                ",", g[2], ") must be positive with h and w divisible by ", m);
    expect += g[0] * g[1] * g[2];
  }
  const int64_t patch_dim = v.in_ch * v.temporal_patch * v.patch * v.patch;
  TORCH_CHECK(pixels.dim() == 2 && pixels.size(0) == expect && pixels.size(1) == patch_dim, "qwen: pixel rows of ",
              call, " must be (", expect, ", ", patch_dim, ") for the grids given but are ", pixels.sizes());

  // Qwen*VisionPatchEmbed: Conv3d with stride == kernel over each row.  (N, C*tp*p*p) -> (N, hv)
  at::Tensor x = pixels.to(device_, dtype_).view({-1, v.in_ch, v.temporal_patch, v.patch, v.patch});
  at::Tensor pb = q3 ? param(P + "patch_embed.proj.bias") : at::Tensor();
  x = at::conv3d(x, param(P + "patch_embed.proj.weight"), pb, {v.temporal_patch, v.patch, v.patch})
          .view({-1, v.hidden});
  const int64_t N = x.size(0);
  if (cap) cap->add("vis_patch_embed_out_" + call, x);

  if (q3) {
    // Qwen3VLVisionModel.fast_pos_embed_interpolate: bilinear blend of the learned grid.
    const int64_t side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(v.num_pos))));
    const at::Tensor& table = param(P + "pos_embed.weight");  // (side*side, hv)
    std::vector<at::Tensor> parts;
    for (auto& g : rows) {
      int64_t t = g[0], h = g[1], w = g[2];
      at::Tensor hi = at::linspace(0, static_cast<double>(side - 1), h, at::kFloat);
      at::Tensor wi = at::linspace(0, static_cast<double>(side - 1), w, at::kFloat);
      at::Tensor hf = hi.to(at::kInt), wf = wi.to(at::kInt);
      at::Tensor hc = (hf + 1).clamp_max(side - 1), wc = (wf + 1).clamp_max(side - 1);
      at::Tensor dh = hi - hf, dw = wi - wf;
      at::Tensor bh = hf * side, bhc = hc * side;
      std::array<at::Tensor, 4> idx = {
          (bh.unsqueeze(1) + wf.unsqueeze(0)).flatten(), (bh.unsqueeze(1) + wc.unsqueeze(0)).flatten(),
          (bhc.unsqueeze(1) + wf.unsqueeze(0)).flatten(), (bhc.unsqueeze(1) + wc.unsqueeze(0)).flatten()};
      std::array<at::Tensor, 4> wt = {((1 - dh).unsqueeze(1) * (1 - dw).unsqueeze(0)).flatten(),
                                      ((1 - dh).unsqueeze(1) * dw.unsqueeze(0)).flatten(),
                                      (dh.unsqueeze(1) * (1 - dw).unsqueeze(0)).flatten(),
                                      (dh.unsqueeze(1) * dw.unsqueeze(0)).flatten()};
      at::Tensor pe;
      for (int j = 0; j < 4; ++j) {
        at::Tensor e =
            at::embedding(table, idx[j].to(device_, at::kLong)) * wt[j].to(device_, table.scalar_type()).unsqueeze(1);
        pe = j == 0 ? e : pe + e;
      }
      pe = pe.repeat({t, 1}).view({t, h / m, m, w / m, m, -1}).permute({0, 1, 3, 2, 4, 5}).flatten(0, 4);
      parts.push_back(pe);
    }
    x = (x + at::cat(parts, 0)).to(dtype_);
  }

  // rot_pos_emb: (h, w) of each patch in merge-block order, through the 2D rotary table.
  std::vector<at::Tensor> pos;
  int64_t max_hw = 0;
  for (auto& g : rows) {
    int64_t t = g[0], h = g[1], w = g[2];
    max_hw = std::max({max_hw, h, w});
    at::Tensor hp = at::arange(h, at::kLong)
                        .unsqueeze(1)
                        .expand({h, w})
                        .reshape({h / m, m, w / m, m})
                        .permute({0, 2, 1, 3})
                        .flatten();
    at::Tensor wp = at::arange(w, at::kLong)
                        .unsqueeze(0)
                        .expand({h, w})
                        .reshape({h / m, m, w / m, m})
                        .permute({0, 2, 1, 3})
                        .flatten();
    pos.push_back(at::stack({hp, wp}, -1).repeat({t, 1}));
  }
  at::Tensor pos_ids = at::cat(pos, 0);  // (N, 2)
  const int64_t rdim = hd / 2;
  at::Tensor inv_freq = 1.0 / at::pow(10000.0, at::arange(0, rdim, 2, at::kFloat) / static_cast<double>(rdim));
  at::Tensor table = at::outer(at::arange(max_hw, at::kFloat), inv_freq);  // (max_hw, hd/4)
  at::Tensor rot = table.index({pos_ids}).flatten(1);                      // (N, hd/2)

  // Full attention runs within each frame (t slice) of each grid.
  std::vector<int64_t> cu_full = {0};
  for (auto& g : rows)
    for (int64_t t = 0; t < g[0]; ++t) cu_full.push_back(cu_full.back() + g[1] * g[2]);

  at::Tensor window_index;
  std::vector<int64_t> cu_window = {0};
  if (!q3) {
    // get_window_index: merge units regrouped window by window (windows of `ws` merged tokens).
    const int64_t ws = v.window_size / m / v.patch;
    TORCH_CHECK(ws > 0, "qwen: window_size ", v.window_size, " is smaller than one merged patch");
    std::vector<at::Tensor> wi;
    int64_t base = 0;
    for (auto& g : rows) {
      int64_t t = g[0], lh = g[1] / m, lw = g[2] / m;
      at::Tensor index = at::arange(t * lh * lw, at::kLong).reshape({t, lh, lw});
      int64_t ph = ws - lh % ws, pw = ws - lw % ws;
      int64_t nh = (lh + ph) / ws, nw = (lw + pw) / ws;
      at::Tensor padded = at::constant_pad_nd(index, {0, pw, 0, ph}, -100);
      padded = padded.reshape({t, nh, ws, nw, ws}).permute({0, 1, 3, 2, 4}).reshape({t, nh * nw, ws, ws});
      at::Tensor seqlens = padded.ne(-100).sum({2, 3}).reshape({-1});
      at::Tensor flat = padded.reshape({-1});
      wi.push_back(flat.masked_select(flat.ne(-100)) + base);
      at::Tensor cs = seqlens.cumsum(0) * mu + cu_window.back();
      const int64_t* cp = cs.data_ptr<int64_t>();
      for (int64_t j = 0; j < cs.numel(); ++j) cu_window.push_back(cp[j]);
      base += t * lh * lw;
    }
    window_index = at::cat(wi, 0);
    at::Tensor widx = window_index.to(device_);
    x = x.reshape({N / mu, mu, -1}).index_select(0, widx).reshape({N, -1});
    rot = rot.reshape({N / mu, mu, -1}).index_select(0, window_index).reshape({N, -1});
  }
  at::Tensor emb = at::cat({rot, rot}, -1).to(device_);
  at::Tensor cos = emb.cos(), sin = emb.sin();

  VisionResult out;
  for (int64_t i = 0; i < v.depth; ++i) {
    bool full = q3 || std::find(v.fullatt_blocks.begin(), v.fullatt_blocks.end(), i) != v.fullatt_blocks.end();
    x = vision_block(x, i, cos, sin, full ? cu_full : cu_window);
    if (cap) cap->add("vis_block" + std::to_string(i) + "_out_" + call, x);
    if (q3) {
      auto it = std::find(v.deepstack.begin(), v.deepstack.end(), i);
      if (it != v.deepstack.end()) {
        const std::string D = P + "deepstack_merger_list." + std::to_string(it - v.deepstack.begin()) + ".";
        at::Tensor d = layer_norm(x.view({-1, v.hidden * mu}), D + "norm", v.hidden * mu);
        d = linear(at::gelu(linear(d, D + "linear_fc1", true)), D + "linear_fc2", true);
        if (cap) cap->add("vis_deepstack" + std::to_string(it - v.deepstack.begin()) + "_" + call, d);
        out.deepstack.push_back(d);
      }
    }
  }
  if (q3) {
    at::Tensor h = layer_norm(x, P + "merger.norm", v.hidden).view({-1, v.hidden * mu});
    out.embeds = linear(at::gelu(linear(h, P + "merger.linear_fc1", true)), P + "merger.linear_fc2", true);
  } else {
    at::Tensor h = rms_norm(x, P + "merger.ln_q.weight", 1e-6).view({-1, v.hidden * mu});
    h = linear(at::gelu(linear(h, P + "merger.mlp.0", true)), P + "merger.mlp.2", true);
    out.embeds = h.index_select(0, at::argsort(window_index).to(device_));
  }
  if (cap) cap->add("vis_out_" + call, out.embeds);
  return out;
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
  if (cache) {
    if (cache->k.size() > static_cast<size_t>(i) && cache->k[i].defined()) {
      k = at::cat({cache->k[i], k}, 2);
      v = at::cat({cache->v[i], v}, 2);
    }
    if (cache->k.size() <= static_cast<size_t>(i)) {
      cache->k.resize(i + 1);
      cache->v.resize(i + 1);
    }
    cache->k[i] = k.detach();
    cache->v[i] = v.detach();
  }
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
  std::vector<at::Tensor> ds;
  at::Tensor embeds = embed(in, nullptr, &ds);
  at::Tensor pos = in.position_ids.to(device_, at::kLong);
  at::Tensor mask = in.attention_mask.defined()
                        ? in.attention_mask.to(device_, at::kLong)
                        : at::ones({B, L}, at::TensorOptions().dtype(at::kLong).device(device_));
  // rope deltas (get_rope_index): max position + 1 - L per row; new tokens continue from there.
  at::Tensor delta = std::get<0>(pos.amax(0).max(-1)) + 1 - L;  // (B,)
  const at::Tensor& table = param(tpre() + "embed_tokens.weight");
  auto gen = at::detail::createCPUGenerator(o.seed);
  GenerateResult out;
  out.tokens.assign(B, {});
  out.logprobs.assign(B, {});
  std::vector<bool> done(B, false);
  KVCache cache;
  ForwardResult r = decode(embeds, pos, mask, ds, o.use_cache ? &cache : nullptr, nullptr);
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

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

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
  opt_.reset();
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
  opt_.reset(new torch::optim::AdamW(
      opt_params_,
      torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(o.weight_decay)));
}

void Model::save_optimizer(const std::string& path) {
  TORCH_CHECK(opt_, "qwen: no optimizer state yet (no train step was run)");
  torch::save(*opt_, path);
}

void Model::load_optimizer(const std::string& path, const TrainOptions& o) {
  ensure_optimizer(o);
  torch::load(*opt_, path);
}

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
  if (!accumulating_) opt_->zero_grad();
  if (o.seed >= 0) torch::manual_seed(static_cast<uint64_t>(o.seed));
  ForwardResult r = forward(in, nullptr);
  at::Tensor logits = r.logits.to(acc(r.logits));
  if (o.temperature != 1.0) logits = logits / o.temperature;
  at::Tensor ids = in.input_ids.to(logits.device());
  at::Tensor all_lp = at::log_softmax(logits.narrow(1, 0, L - 1), -1);  // (B, L-1, V)
  at::Tensor lp = all_lp.gather(-1, ids.narrow(1, 1, L - 1).unsqueeze(-1)).squeeze(-1);
  at::Tensor mask = b.completion_mask.narrow(1, 1, L - 1).to(lp.device()).to(lp.scalar_type());  // targets t+1
  TrainStats st;
  st.tokens = static_cast<int64_t>(mask.sum().item<double>());
  {
    at::NoGradGuard ng;
    at::Tensor ent = -(all_lp.exp() * all_lp).sum(-1);  // (B, L-1)
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
  if (!std::isfinite(st.loss)) {
    st.skipped = true;
    st.grad_norm = std::nan("");
    opt_->zero_grad();
    accumulating_ = false;
    return st;
  }
  loss.backward();
  if (!o.apply) {
    accumulating_ = true;  // the next call adds to these gradients
    st.grad_norm = std::nan("");
    return st;
  }
  accumulating_ = false;
  double sq = 0;
  for (auto& p : opt_params_)
    if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  st.grad_norm = std::sqrt(sq);  // before clipping
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
  opt_->step();
  opt_->zero_grad();
  return st;
}

// ---------------------------------------------------------------------------------------------
// LoRA
// ---------------------------------------------------------------------------------------------

void Model::add_lora(const LoraConfig& lc) {
  TORCH_CHECK(lc.rank > 0, "qwen: LoRA rank must be positive but is ", lc.rank);
  TORCH_CHECK(lora_.rank == 0, "qwen: LoRA adapters are already attached");
  lora_ = lc;
  auto gen = at::detail::createCPUGenerator(lc.seed);
  std::vector<std::string> names = param_names();
  for (const auto& n : names) {
    if (!ends_with(n, ".weight")) continue;
    const at::Tensor& w = params_.at(n);
    if (w.dim() != 2) continue;
    std::string prefix = n.substr(0, n.size() - 7);
    if (prefix == "lm_head" || ends_with(prefix, "embed_tokens") || ends_with(prefix, "pos_embed")) continue;
    bool vis = prefix.rfind(vpre(), 0) == 0;
    if (vis && !lc.vision) continue;
    std::string last = prefix.substr(prefix.rfind('.') + 1);
    bool hit = false;
    for (const auto& tgt : lc.targets) hit = hit || tgt == last || ends_with(prefix, "." + tgt);
    if (!hit) continue;
    const int64_t out = w.size(0), in = w.size(1);
    double bound = 1.0 / std::sqrt(static_cast<double>(in));  // kaiming_uniform_(a=sqrt(5)), as PEFT
    at::Tensor A = at::empty({lc.rank, in}, at::kFloat).uniform_(-bound, bound, gen).to(device_, dtype_);
    at::Tensor Bm = at::zeros({out, lc.rank}, at::TensorOptions().dtype(dtype_).device(device_));
    lora_params_[prefix + ".lora_A"] = A.set_requires_grad(true);
    lora_params_[prefix + ".lora_B"] = Bm.set_requires_grad(true);
  }
  TORCH_CHECK(!lora_params_.empty(), "qwen: no linear layer matches the LoRA target modules");
}

void Model::merge_lora() {
  TORCH_CHECK(lora_.rank > 0, "qwen: no LoRA adapters to merge");
  at::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(lora_.seed + 1);
  for (auto& kv : lora_params_) {
    const std::string& n = kv.first;
    if (!ends_with(n, ".lora_A")) continue;
    std::string prefix = n.substr(0, n.size() - 7);
    at::Tensor& w = params_.at(prefix + ".weight");
    at::Tensor merged = merged_weight(prefix + ".weight");
    w.copy_(merged);
    at::Tensor& A = kv.second;
    double bound = 1.0 / std::sqrt(static_cast<double>(A.size(1)));
    A.copy_(at::empty(A.sizes(), at::kFloat).uniform_(-bound, bound, gen));
    lora_params_.at(prefix + ".lora_B").zero_();
  }
  opt_.reset();
  opt_params_.clear();
  accumulating_ = false;
}

at::Tensor Model::merged_weight(const std::string& name) const {
  at::NoGradGuard ng;
  const at::Tensor& w = param(name);
  if (lora_.rank > 0 && ends_with(name, ".weight")) {
    std::string prefix = name.substr(0, name.size() - 7);
    auto a = lora_params_.find(prefix + ".lora_A");
    if (a != lora_params_.end()) {
      at::Tensor d = at::matmul(lora_params_.at(prefix + ".lora_B").to(at::kFloat), a->second.to(at::kFloat));
      return (w.to(at::kFloat) + d * (lora_.alpha / static_cast<double>(lora_.rank))).to(w.scalar_type());
    }
  }
  return w;
}

}  // namespace qwen
}  // namespace crpo
