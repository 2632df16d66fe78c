// The native video-language policy (see policy_model.h): config checks, construction and init,
// the prefix of visual tokens (each counterfactual transform run once on the model's device) and
// prompt tokens, the completions' hidden states (prefix shared by the G samples of a prompt),
// the prompt language-model loss, and per-token log-probs with entropy.
#include "torch/model/policy_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "common/op_error.h"
#include "torch/model/policy_internal.h"
#include "torch/ops.h"

namespace crpo {
namespace policy {

namespace {

[[noreturn]] void config_error(const std::string& field, const std::string& what) {
  throw OpError(ErrorKind::Range, "ERR_CRPO_POLICY_CONFIG", "policy config: " + field + " " + what);
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
  if (pos_init != "random" && pos_init != "sincos")
    config_error("posInit", "must be 'random' or 'sincos', got '" + pos_init + "'");
  if (pos_init == "sincos" && vision_dim % 4)
    config_error("posInit", "'sincos' needs a visionDim divisible by 4 (sine and cosine per axis)");
  if (option_slots < 0 || option_slots > 26) config_error("optionSlots", "must be in [0, 26]");
  if (vision_aux_classes < 0 || vision_aux_classes > 4096) config_error("visionAuxClasses", "must be in [0, 4096]");
  if (vision_stem < 0 || vision_stem > 256) config_error("visionStem", "must be in [0, 256]");
  if (vision_stem_down < 0 || vision_stem_down > 256) config_error("visionStemDown", "must be in [0, 256]");
  if (vision_stem_down > 0 && vision_stem == 0) config_error("visionStemDown", "needs the stem (visionStem > 0)");
  if (vision_stem_down > 0 && patch_size % 2)
    config_error("visionStemDown", "needs an even patchSize (the tubelets are cut at half resolution)");
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
// Policy
// ---------------------------------------------------------------------------------------------

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

namespace {

// Sine-cosine features of the integer positions `pos` over `width` columns (width even): column
// 2k holds sin(pos * w_k), 2k + 1 cos(pos * w_k), w_k = 10000^(-2k / width) (as in the Transformer).
torch::Tensor sincos(const torch::Tensor& pos, int64_t width) {
  auto k = torch::arange(width / 2, torch::kDouble);
  auto w = torch::pow(10000.0, -2.0 * k / static_cast<double>(width));
  auto a = pos.to(torch::kDouble).unsqueeze(1) * w.unsqueeze(0);  // (n, width / 2)
  return torch::stack({torch::sin(a), torch::cos(a)}, 2).reshape({pos.size(0), width});
}

// The "sincos" start of a position table: (row, column) features for the spatial one (grid x grid
// rows, row-major), frame-group features for the temporal one; scaled to standard deviation `std`.
torch::Tensor sincos_positions(const std::string& name, int64_t rows, int64_t dim, int64_t grid, double std) {
  torch::Tensor t;
  if (name == "vision.spatial_pos") {
    auto i = torch::arange(rows, torch::kLong);
    t = torch::cat({sincos(torch::div(i, grid, "floor"), dim / 2), sincos(i.remainder(grid), dim / 2)}, 1);
  } else {
    t = sincos(torch::arange(rows, torch::kLong), dim);
  }
  return t * (std / std::max(t.std().item<double>(), 1e-12));
}

}  // namespace

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
      if (c.pos_init == "sincos")
        p.copy_(sincos_positions(n, p.size(0), p.size(1), c.grid(), c.pos_init_std));
      else
        p.normal_(0.0, c.pos_init_std, gen);
    } else if (n == "vision.stem.weight" || n == "vision.stem_down.weight") {
      // He init (fan-in 9 x channels), so that the GELU after the stem is not near-linear at the start.
      p.normal_(0.0, std::sqrt(2.0 / static_cast<double>(p.size(1) * p.size(2) * p.size(3))), gen);
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
    case FrameOp::Swap:
      return VideoTransform::Swap;
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

torch::Tensor Policy::encode_prompts_visual(const PromptBatch& b, torch::Tensor* vision_pooled) {
  const int64_t P = b.prompts();
  // One clip per unique (video, transform, swap_at), in the order of first appearance: the
  // vision encoder sees the clips in the order a caller that packed transformed copies would pack them.
  using Key = std::tuple<int64_t, int, int64_t>;
  std::map<Key, int64_t> slot;
  std::vector<Key> keys;
  std::vector<int64_t> which(P);
  for (int64_t p = 0; p < P; p++) {
    const int op = static_cast<int>(b.op[p]);
    const int64_t swap_at = op == static_cast<int>(FrameOp::Swap) && !b.swap_at.empty() ? b.swap_at[p] : 0;
    Key key{b.video[p], op, swap_at};
    auto it = slot.find(key);
    if (it == slot.end()) {
      it = slot.emplace(key, static_cast<int64_t>(keys.size())).first;
      keys.push_back(key);
    }
    which[p] = it->second;
  }
  // Frames of each unique (video, transform), grouped by (transform, swap_at) so that each
  // transform runs once over all its clips (crpo::video_transform on the model's device).
  const int64_t M = static_cast<int64_t>(keys.size());
  std::map<std::pair<int, int64_t>, std::vector<int64_t>> groups;  // (op, swap_at) -> slots
  for (int64_t m = 0; m < M; m++) groups[{std::get<1>(keys[m]), std::get<2>(keys[m])}].push_back(m);
  auto frames = b.frames;
  std::vector<torch::Tensor> clips(M);
  for (auto& [g, slots] : groups) {
    std::vector<int64_t> vids;
    for (int64_t m : slots) vids.push_back(std::get<0>(keys[m]));
    auto sel =
        frames.index_select(0, torch::tensor(vids, torch::kLong)).to(device_).contiguous();  // (m, T, H, W, C) uint8
    if (g.first != 0)
      sel = video_transform(sel, FrameLayout::BTHWC, to_kernel(static_cast<FrameOp>(g.first)), g.second);
    for (size_t i = 0; i < slots.size(); i++) clips[slots[i]] = sel[static_cast<int64_t>(i)];
  }
  auto pixels = torch::stack(clips).to(dtype_).div_(127.5).sub_(1.0);  // (M, T, H, W, C) in [-1, 1]
  auto encoded = net_->vision->forward(pixels);                        // (M, T', P, vision_dim)
  auto vis = net_->projector->forward(encoded);                        // (M, Nv, D)
  auto rows = torch::tensor(which, torch::kLong).to(device_);
  if (vision_pooled) *vision_pooled = encoded.mean({1, 2}).index_select(0, rows);
  return vis.index_select(0, rows);
}

Policy::Prefix Policy::build_prefix(const PromptBatch& b, torch::Tensor* vision_pooled) {
  const int64_t P = b.prompts();
  auto vis = encode_prompts_visual(b, vision_pooled);  // (P, Nv, D)
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
                                        torch::Tensor* prefix_hidden, torch::Tensor* vision_pooled) {
  const int64_t G = b.group, C = c.ids.size(1);
  auto pre = build_prefix(b, vision_pooled);
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

int64_t prompt_lm_targets(const PromptBatch& b) {
  int64_t n = 0;
  for (const auto& ids : b.ids) n += std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - 1);
  return n;
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

int64_t vision_aux_labels(const PromptBatch& b) {
  int64_t n = 0;
  for (int64_t s : b.aux_size) n += s > 0 ? 1 : 0;
  return n;
}

torch::Tensor Policy::vision_aux_loss(const PromptBatch& b, const torch::Tensor& vision_pooled) {
  TORCH_CHECK(!net_->vision_aux.is_empty(), "vision attribute loss: the policy has no vision attribute head");
  // Logits of the whole head per labelled prompt, then each prompt's group: the groups outside it
  // are masked to -inf, so the log-softmax runs over the group alone.
  const int64_t K = cfg_.vision_aux_classes;
  std::vector<int64_t> rows, targets;
  std::vector<uint8_t> inside;
  for (int64_t p = 0; p < static_cast<int64_t>(b.aux_size.size()); p++) {
    if (b.aux_size[p] <= 0) continue;
    rows.push_back(p);
    targets.push_back(b.aux_start[p] + b.aux_class[p]);
    for (int64_t k = 0; k < K; k++) inside.push_back(k >= b.aux_start[p] && k < b.aux_start[p] + b.aux_size[p]);
  }
  if (rows.empty()) return torch::zeros({}, vision_pooled.options().dtype(torch::kFloat));
  const int64_t R = static_cast<int64_t>(rows.size());
  auto h = vision_pooled.index_select(0, torch::tensor(rows, torch::kLong).to(device_));  // (R, vision_dim)
  auto logits = upcast(net_->vision_aux->forward(h)).to(torch::kFloat);                   // (R, K)
  auto keep = torch::from_blob(inside.data(), {R, K}, torch::kUInt8).to(torch::kBool).to(device_);
  auto lsm = torch::log_softmax(logits.masked_fill(keep.logical_not(), -INFINITY), -1);
  auto tgt = torch::tensor(targets, torch::kLong).to(device_);
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

torch::Tensor completion_mask(const Completions& c, const torch::Device& d) {
  const int64_t C = c.ids.size(1);
  auto lens = c.lengths.to(d);
  return (torch::arange(C, lens.options()).unsqueeze(0) < lens.unsqueeze(1)).to(torch::kFloat);  // (N, C)
}

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

}  // namespace policy
}  // namespace crpo
