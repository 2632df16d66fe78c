// Finite-difference gradient checks of the native policy's modules (see policy_checks.h): central
// differences in float64 on tiny shapes against autograd, per module and for the whole network.
#include "torch/model/checks/policy_checks.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "common/op_error.h"
#include "torch/model/checks/check_helpers.h"
#include "torch/model/policy_internal.h"
#include "torch/model/policy_model.h"

namespace crpo {
namespace policy {

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
  if (name == "vision_encoder" || name == "vision_encoder_clip" || name == "vision_encoder_stem" ||
      name == "vision_encoder_stem_down") {
    c.vision_clip_attention = name != "vision_encoder";
    if (name == "vision_encoder_stem" || name == "vision_encoder_stem_down") c.vision_stem = 3;
    if (name == "vision_encoder_stem_down") c.vision_stem_down = 2;
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
  throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                "policy gradCheck: unknown module '" + name +
                    "' (known: rmsnorm, rotary, attention, swiglu, decoder_layer, language_model, vision_encoder, "
                    "vision_encoder_clip, vision_encoder_stem, vision_encoder_stem_down, projector, policy_loss, "
                    "policy; fast:<name> compares a "
                    "fast path with its slow twin)");
}

}  // namespace policy
}  // namespace crpo
