// Each fast path of the native policy against its slow twin (see policy_checks.h): the fast run
// as the policy runs it, the slow one under a ReferencePaths guard, on random inputs.
#include "torch/model/checks/policy_checks.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "common/op_error.h"
#include "torch/model/checks/check_helpers.h"
#include "torch/model/policy_internal.h"
#include "torch/model/policy_model.h"

namespace crpo {
namespace policy {

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
  if (name == "stem_gelu") {
    // The stride-2 front's GELUs on the NHWC view vs the plain call on the channels-last map: the
    // vision encoder's output and the gradients of its input and of both convolutions.
    auto c = small_config(seed);
    c.vision_stem = 6;
    c.vision_stem_down = 8;
    VisionEncoder enc(c);
    auto pixels = (at::rand({3, c.frames, c.image_size, c.image_size, c.channels}, gen) * 2 - 1);
    auto weight = at::randn({3, c.tubelets(), c.patches_per_group(), c.vision_dim}, gen);
    auto run = [&](bool reference) {
      std::unique_ptr<ReferencePaths> rp;
      if (reference) rp = std::make_unique<ReferencePaths>();
      for (auto& p : enc->parameters()) p.mutable_grad() = torch::Tensor();
      auto x = pixels.clone().set_requires_grad(true);
      auto out = enc->forward(x);
      (out * weight).sum().backward();
      return std::vector<torch::Tensor>{out.detach(), x.grad(), enc->stem->weight.grad().clone(),
                                        enc->stem_down->weight.grad().clone()};
    };
    {
      // The fast path applies to a channels-last map only: make sure this check reaches it.
      torch::NoGradGuard ng;
      auto map = enc->stem->forward(pixels.reshape({-1, c.image_size, c.image_size, c.channels}).permute({0, 3, 1, 2}));
      TORCH_CHECK(
          map.is_contiguous(at::MemoryFormat::ChannelsLast),
          "fast path check stem_gelu: the stem's output is not channels-last here, so the fast path is not taken");
    }
    auto fast = run(false), slow = run(true);
    for (size_t i = 0; i < fast.size(); i++) compare_into(r, fast[i], slow[i]);
    return r;
  }
  throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                "policy fast path check: unknown name '" + name +
                    "' (known: attention_decode, attention_decode_f32, attention_grouped, generate, logprobs, "
                    "train_step, adamw, stem_gelu)");
}

}  // namespace policy
}  // namespace crpo
