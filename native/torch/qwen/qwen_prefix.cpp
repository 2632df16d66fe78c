// Shared-prefix scoring and training of the Qwen models. The G completions of a prompt share its
// prefix (vision + prompt tokens): the prefix runs once per group, keeping every layer's keys and
// values with their autograd history, and the completions run as a second, shorter batch whose
// queries attend to their group's prefix keys/values (picked per row) and to their own earlier
// tokens. This is exact: a prefix token never attends to a completion, so the prefix's hidden
// states are those of the whole row, and the completions' gradients flow back through the shared
// keys/values into the prefix. The same design as the tiny native policy (docs/model.md, "The
// train step"); the per-row path of scored_logits (every row whole, as transformers runs it) is its
// slow twin in the tests. Costs per group of G rows with prefix P and completions C: linear layers
// over P + G*C tokens instead of G*(P + C), attention P^2 + G*C*(P + C) instead of G*(P + C)^2,
// and the vocabulary projection over the G*C completion predictions only.
#include <limits>

#include "qwen_model.h"
#include "qwen_util.h"

namespace crpo {
namespace qwen {

using detail::grid_rows;

at::Tensor ScoredLogits::to_rows(const at::Tensor& x, double fill) const {
  if (full.defined()) return x;  // per-row path: already the (B, L-1) layout
  const int64_t B = x.size(0), T = x.size(1), W = seq_len - 1;
  // column of every (b, t); unscored entries go to a spare column W that is cut off afterwards
  std::vector<int64_t> cols(B * T);
  at::Tensor ok = valid.to(at::kCPU).gt(0).contiguous();
  const bool* v = ok.data_ptr<bool>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) cols[b * T + t] = v[b * T + t] ? offset[b] + t : W;
  at::Tensor idx = at::tensor(cols, at::kLong).view({B, T}).to(x.device());
  at::Tensor base = at::full({B, W + 1}, fill, x.options());
  return base.scatter(1, idx, x.masked_fill(valid.to(x.device()).eq(0), fill)).narrow(1, 0, W);
}

std::vector<at::Tensor> Model::layer_trainables(int64_t i) const {
  const std::string P = tpre() + "layers." + std::to_string(i) + ".";
  std::vector<at::Tensor> ps;
  for (const auto& kv : params_)
    if (kv.second.requires_grad() && kv.first.rfind(P, 0) == 0) ps.push_back(kv.second);
  for (const auto& kv : lora_params_)
    if (kv.second.requires_grad() && kv.first.rfind(P, 0) == 0) ps.push_back(kv.second);
  return ps;
}

at::Tensor Model::shared_layer(const at::Tensor& x, int64_t i, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& bias, const at::Tensor& pk, const at::Tensor& pv,
                               const at::Tensor& rows, at::Tensor* k_out, at::Tensor* v_out) const {
  if (!pk.defined()) return decoder_layer_kv(x, i, cos, sin, bias, at::Tensor(), at::Tensor(), k_out, v_out);
  // (B, kv_heads, P, hd): each row's copy of its group's keys/values; the backward of
  // index_select sums the rows' gradients into the group's
  return decoder_layer_kv(x, i, cos, sin, bias, pk.index_select(0, rows), pv.index_select(0, rows), k_out, v_out);
}

namespace {

// Gradient checkpointing of one shared-prefix layer (as LayerCheckpoint in qwen_model.cpp): keeps
// the layer input and, for a completion chunk, the groups' prefix keys/values (not the per-row
// copies); backward recomputes the layer and returns the gradients of x, of the prefix keys/values
// and of the layer's trainable weights. A prefix chunk (pk, pv, rows empty placeholders: autograd
// functions take no undefined tensors) also outputs its keys/values.
struct SharedLayerCheckpoint : public torch::autograd::Function<SharedLayerCheckpoint> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor cos,
                                                at::Tensor sin, at::Tensor bias, at::Tensor pk, at::Tensor pv,
                                                at::Tensor rows, at::TensorList params, const Model* m, int64_t layer) {
    std::vector<at::Tensor> save = {x, cos, sin, bias, pk, pv, rows};
    for (const auto& p : params) save.push_back(p);
    ctx->save_for_backward(save);
    ctx->saved_data["model"] = reinterpret_cast<int64_t>(m);
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["rng"] = at::globalContext().defaultGenerator(m->device()).get_state();
    if (pk.numel() > 0) return {m->shared_layer(x, layer, cos, sin, bias, pk, pv, rows, nullptr, nullptr)};
    at::Tensor k, v;
    at::Tensor y = m->shared_layer(x, layer, cos, sin, bias, at::Tensor(), at::Tensor(), at::Tensor(), &k, &v);
    return {y, k, v};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const Model* m = reinterpret_cast<const Model*>(ctx->saved_data["model"].toInt());
    const int64_t layer = ctx->saved_data["layer"].toInt();
    auto gen = at::globalContext().defaultGenerator(m->device());
    at::Tensor now = gen.get_state();
    gen.set_state(ctx->saved_data["rng"].toTensor());
    const bool completion = saved[4].numel() > 0;
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor pk = completion ? saved[4].detach().requires_grad_(true) : at::Tensor();
    at::Tensor pv = completion ? saved[5].detach().requires_grad_(true) : at::Tensor();
    std::vector<at::Tensor> outs(1);
    {
      at::AutoGradMode g(true);
      if (completion) {
        outs[0] = m->shared_layer(x, layer, saved[1], saved[2], saved[3], pk, pv, saved[6], nullptr, nullptr);
      } else {
        outs.resize(3);
        outs[0] = m->shared_layer(x, layer, saved[1], saved[2], saved[3], at::Tensor(), at::Tensor(), at::Tensor(),
                                  &outs[1], &outs[2]);
      }
    }
    gen.set_state(now);
    std::vector<at::Tensor> inputs = {x};
    if (completion) {
      inputs.push_back(pk);
      inputs.push_back(pv);
    }
    for (size_t i = 7; i < saved.size(); ++i) inputs.push_back(saved[i]);
    std::vector<at::Tensor> go(grad_out.begin(), grad_out.begin() + static_cast<int64_t>(outs.size()));
    for (size_t i = 0; i < go.size(); ++i)
      if (!go[i].defined()) go[i] = at::zeros_like(outs[i]);
    auto g = torch::autograd::grad(outs, inputs, go, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    size_t j = 0;
    torch::autograd::variable_list out = {g[j++], at::Tensor(), at::Tensor(), at::Tensor()};
    out.push_back(completion ? g[j++] : at::Tensor());
    out.push_back(completion ? g[j++] : at::Tensor());
    out.push_back(at::Tensor());  // rows
    for (; j < g.size(); ++j) out.push_back(g[j]);
    out.push_back(at::Tensor());
    out.push_back(at::Tensor());
    return out;
  }
};

// Additive attention mask (fp32, the dtype's minimum where not allowed) from a bool (B, Lq, Lk).
at::Tensor additive(const at::Tensor& allowed) {
  return at::zeros(allowed.sizes(), allowed.options().dtype(at::kFloat))
      .masked_fill(allowed.logical_not(), std::numeric_limits<float>::lowest())
      .unsqueeze(1);
}

}  // namespace

ScoredLogits Model::scored_logits(const Inputs& in, Capture* cap) {
  const int64_t B = in.input_ids.size(0), L = in.input_ids.size(1);
  if (!in.prefix_groups.empty()) {
    TORCH_CHECK(!cap || !cap->on, "qwen: capturing intermediate outputs needs the per-row path (no prefixGroups)");
    return shared_prefix_logits(in);
  }
  ForwardResult r = forward(in, cap);
  ScoredLogits s;
  s.full = r.logits;
  s.seq_len = L;
  s.logits = r.logits.narrow(1, 0, L - 1);
  s.targets = in.input_ids.to(device_, at::kLong).narrow(1, 1, L - 1);
  s.valid = in.attention_mask.defined() ? in.attention_mask.narrow(1, 1, L - 1).to(device_, at::kFloat)
                                        : at::ones({B, L - 1}, at::TensorOptions().dtype(at::kFloat).device(device_));
  s.offset.assign(B, 0);
  return s;
}

ScoredLogits Model::shared_prefix_logits(const Inputs& in) {
  const auto& t = cfg_.text;
  const int64_t B = in.input_ids.size(0), L = in.input_ids.size(1), NG = in.prefix_groups.size();
  at::Tensor ids = in.input_ids.to(at::kCPU, at::kLong).contiguous();
  at::Tensor am = in.attention_mask.defined() ? in.attention_mask.to(at::kCPU, at::kLong).contiguous()
                                              : at::ones({B, L}, at::kLong);
  at::Tensor pos = in.position_ids.to(at::kCPU, at::kLong).contiguous();  // (3, B, L)

  // ---- the groups: rows, prefix lengths, completion lengths (rows right-padded) -------------
  std::vector<int64_t> group_of(B), first(NG), plen(NG), nrows(NG), clen(B);
  int64_t b = 0, Pmax = 0, Cmax = 0;
  for (int64_t g = 0; g < NG; ++g) {
    const int64_t n = in.prefix_groups[g].first, P = in.prefix_groups[g].second;
    TORCH_CHECK(n >= 1 && P >= 1 && P <= L, "qwen: prefix group ", g,
                " must have >= 1 rows and a prefix length in [1, ", L, "] but has ", n, " rows and prefix length ", P);
    TORCH_CHECK(b + n <= B, "qwen: the prefix groups hold more rows than the batch (", B, ")");
    first[g] = b;
    plen[g] = P;
    nrows[g] = n;
    Pmax = std::max(Pmax, P);
    for (int64_t r = 0; r < n; ++r) group_of[b++] = g;
  }
  TORCH_CHECK(b == B, "qwen: the prefix groups hold ", b, " rows but the batch has ", B);
  const int64_t* idp = ids.data_ptr<int64_t>();
  const int64_t* amp = am.data_ptr<int64_t>();
  for (b = 0; b < B; ++b) {
    const int64_t g = group_of[b], P = plen[g];
    int64_t len = 0;
    while (len < L && amp[b * L + len] != 0) ++len;
    for (int64_t j = len; j < L; ++j)
      TORCH_CHECK(amp[b * L + j] == 0, "qwen: prefix groups need right-padded rows, but row ", b,
                  " has a token after padding (column ", j, ")");
    TORCH_CHECK(len >= P, "qwen: row ", b, " has ", len, " tokens, fewer than its group's prefix of ", P);
    TORCH_CHECK(at::equal(ids[b].narrow(0, 0, P), ids[first[g]].narrow(0, 0, P)) &&
                    at::equal(pos.select(1, b).narrow(1, 0, P), pos.select(1, first[g]).narrow(1, 0, P)),
                "qwen: row ", b, " does not share the first ", P, " tokens (ids and positions) of its group's row ",
                first[g]);
    clen[b] = len - P;
    Cmax = std::max(Cmax, clen[b]);
    for (int64_t j = P; j < len; ++j)
      TORCH_CHECK(idp[b * L + j] != cfg_.image_token && idp[b * L + j] != cfg_.video_token, "qwen: row ", b,
                  " has a vision placeholder in its completion (column ", j, "); vision belongs in the prefix");
  }
  int64_t pad = 0;  // a padding token that is no vision placeholder
  while (pad == cfg_.image_token || pad == cfg_.video_token) ++pad;

  // ---- the prefix batch: one row per group ---------------------------------------------------
  Inputs pin;
  pin.input_ids = at::full({NG, Pmax}, pad, at::kLong);
  pin.attention_mask = at::zeros({NG, Pmax}, at::kLong);
  pin.position_ids = at::zeros({3, NG, Pmax}, at::kLong);
  for (int64_t g = 0; g < NG; ++g) {
    pin.input_ids[g].narrow(0, 0, plen[g]).copy_(ids[first[g]].narrow(0, 0, plen[g]));
    pin.attention_mask[g].narrow(0, 0, plen[g]).fill_(1);
    pin.position_ids.select(1, g).narrow(1, 0, plen[g]).copy_(pos.select(1, first[g]).narrow(1, 0, plen[g]));
  }
  pin.pixel_values = in.pixel_values;
  pin.image_grid = in.image_grid;
  pin.pixel_values_videos = in.pixel_values_videos;
  pin.video_grid = in.video_grid;
  pin.share_vision = in.share_vision;
  // Each image/video must belong to one group (repeated over its rows): the prefix row uses it once.
  auto check_repeats = [&](const at::Tensor& pixels, const at::Tensor& grid, const std::vector<int64_t>& reps,
                           int64_t token, const char* what) {
    if (!pixels.defined() || pixels.numel() == 0 || in.share_vision) return;
    if (reps.empty()) {
      for (int64_t g = 0; g < NG; ++g)
        TORCH_CHECK(nrows[g] == 1 || !pin.input_ids[g].eq(token).any().item<bool>(), "qwen: prefix group ", g, " has ",
                    nrows[g], " rows; its ", what, " must be given once with ", what,
                    "Repeats (or shareVision), not once per row");
      return;
    }
    auto items = grid_rows(grid);
    const int64_t mu = cfg_.vision.merge * cfg_.vision.merge;
    size_t item = 0;
    for (int64_t g = 0; g < NG; ++g) {
      int64_t need = pin.input_ids[g].eq(token).sum().item<int64_t>();
      while (need > 0 && item < items.size()) {
        TORCH_CHECK(reps[item] == nrows[g], "qwen: ", what, " ", item, " is repeated ", reps[item],
                    " times but the prefix group holding it (", g, ") has ", nrows[g], " rows");
        need -= items[item][0] * items[item][1] * items[item][2] / mu;
        ++item;
      }
      TORCH_CHECK(need == 0, "qwen: the ", what, " placeholders of prefix group ", g, " do not match the ", what,
                  " features given");
    }
  };
  check_repeats(in.pixel_values, in.image_grid, in.image_repeats, cfg_.image_token, "image");
  check_repeats(in.pixel_values_videos, in.video_grid, in.video_repeats, cfg_.video_token, "video");

  const auto lopt = at::TensorOptions().dtype(at::kLong).device(device_);
  std::vector<at::Tensor> ds;
  at::Tensor x = embed(pin, nullptr, &ds);  // (NG, Pmax, H)
  auto cs = rope_cos_sin(pin.position_ids);
  at::Tensor pvalid = pin.attention_mask.to(device_).ne(0);
  at::Tensor causal = at::arange(Pmax, lopt).view({1, Pmax}).le(at::arange(Pmax, lopt).view({Pmax, 1}));
  at::Tensor bias = additive(causal.unsqueeze(0) & pvalid.unsqueeze(1));  // (NG, 1, Pmax, Pmax)
  const bool ckpt = checkpointing_ && at::GradMode::is_enabled();
  std::vector<at::Tensor> pk(t.layers), pv(t.layers);
  for (int64_t i = 0; i < t.layers; ++i) {
    auto ps = ckpt ? layer_trainables(i) : std::vector<at::Tensor>();
    if (ckpt && (x.requires_grad() || !ps.empty())) {
      at::Tensor none = at::empty({0}, x.options().requires_grad(false));
      auto o = SharedLayerCheckpoint::apply(x, cs.first, cs.second, bias, none, none, none.to(at::kLong),
                                            at::TensorList(ps), static_cast<const Model*>(this), i);
      x = o[0];
      pk[i] = o[1];
      pv[i] = o[2];
    } else {
      x = shared_layer(x, i, cs.first, cs.second, bias, at::Tensor(), at::Tensor(), at::Tensor(), &pk[i], &pv[i]);
    }
    if (i < static_cast<int64_t>(ds.size()) && ds[i].defined()) x = x + ds[i];
  }
  // the last prefix token predicts each row's first completion token
  std::vector<int64_t> last(NG);
  for (int64_t g = 0; g < NG; ++g) last[g] = plen[g] - 1;
  at::Tensor x_last = x.index({at::arange(NG, lopt), at::tensor(last, at::kLong).to(device_)});  // (NG, H)
  at::Tensor h_last = rms_norm(x_last, tpre() + "norm.weight", t.eps);
  at::Tensor rows = at::tensor(group_of, at::kLong).to(device_);  // (B,) group of each row

  ScoredLogits s;
  s.seq_len = L;
  s.offset.resize(B);
  for (b = 0; b < B; ++b) s.offset[b] = plen[group_of[b]] - 1;
  const at::Tensor& head = t.tie ? param(tpre() + "embed_tokens.weight") : param("lm_head.weight");
  if (Cmax == 0) {
    s.logits = at::linear(h_last.index_select(0, rows).unsqueeze(1).narrow(1, 0, 0), head);  // (B, 0, V)
    s.targets = at::zeros({B, 0}, lopt);
    s.valid = at::zeros({B, 0}, at::TensorOptions().dtype(at::kFloat).device(device_));
    return s;
  }

  // ---- the completion batch: one row per sequence, attending to its group's prefix ----------
  at::Tensor cids = at::full({B, Cmax}, pad, at::kLong);
  at::Tensor cmask = at::zeros({B, Cmax}, at::kLong);
  at::Tensor cpos = at::zeros({3, B, Cmax}, at::kLong);
  std::vector<int64_t> plen_row(B);
  for (b = 0; b < B; ++b) {
    const int64_t P = plen[group_of[b]], n = clen[b];
    plen_row[b] = P;
    if (n == 0) continue;
    cids[b].narrow(0, 0, n).copy_(ids[b].narrow(0, P, n));
    cmask[b].narrow(0, 0, n).fill_(1);
    cpos.select(1, b).narrow(1, 0, n).copy_(pos.select(1, b).narrow(1, P, n));  // mrope continues after the prefix
  }
  cids = cids.to(device_);
  at::Tensor cvalid = cmask.to(device_).ne(0);
  at::Tensor xc = at::embedding(param(tpre() + "embed_tokens.weight"), cids);  // (B, Cmax, H)
  auto csc = rope_cos_sin(cpos);
  // keys: the group's prefix (its first P tokens), then this row's completion (causal, real tokens)
  at::Tensor pre_ok = at::arange(Pmax, lopt)
                          .view({1, 1, Pmax})
                          .lt(at::tensor(plen_row, at::kLong).to(device_).view({B, 1, 1}))
                          .expand({B, Cmax, Pmax});
  at::Tensor c_causal = at::arange(Cmax, lopt).view({1, Cmax}).le(at::arange(Cmax, lopt).view({Cmax, 1}));
  at::Tensor comp_ok = c_causal.unsqueeze(0) & cvalid.unsqueeze(1);
  at::Tensor cbias = additive(at::cat({pre_ok, comp_ok}, 2));  // (B, 1, Cmax, Pmax + Cmax)
  for (int64_t i = 0; i < t.layers; ++i) {
    auto ps = ckpt ? layer_trainables(i) : std::vector<at::Tensor>();
    if (ckpt && (xc.requires_grad() || pk[i].requires_grad() || !ps.empty())) {
      xc = SharedLayerCheckpoint::apply(xc, csc.first, csc.second, cbias, pk[i], pv[i], rows, at::TensorList(ps),
                                        static_cast<const Model*>(this), i)[0];
    } else {
      xc = shared_layer(xc, i, csc.first, csc.second, cbias, pk[i], pv[i], rows, nullptr, nullptr);
    }
  }
  at::Tensor hc = rms_norm(xc, tpre() + "norm.weight", t.eps);  // (B, Cmax, H)
  // column t predicts completion token t: the prefix's last state, then completion states 0..Cmax-2
  at::Tensor hpred = at::cat({h_last.index_select(0, rows).unsqueeze(1), hc.narrow(1, 0, Cmax - 1)}, 1);
  s.logits = at::linear(hpred, head);  // (B, Cmax, V)
  s.targets = cids;
  s.valid = cmask.to(device_, at::kFloat);
  return s;
}

}  // namespace qwen
}  // namespace crpo
