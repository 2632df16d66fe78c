// The vision towers of Qwen2.5-VL (window attention) and Qwen3-VL (interpolated position
// embeddings, DeepStack): patch embedding, 2D rotary positions, blocks and the merger, after
// transformers' Qwen2_5_VisionTransformerPretrainedModel / Qwen3VLVisionModel.
#include "qwen_model.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "qwen_util.h"

namespace crpo {
namespace qwen {

using detail::acc;
using detail::grid_rows;
using detail::rotate_half;

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
}  // namespace qwen
}  // namespace crpo
