// Generation of the native policy (see policy_model.h): sampling (temperature, top-k, top-p,
// greedy; one uniform per row from the per-prompt seeds' counter-based streams or the policy's
// generator, inverted through the row's CDF) and KV-cached decoding (prefill once per prompt, its
// keys and values shared by the prompt's G samples), with the no-cache slow twin.
#include <ATen/ATen.h>

#include <limits>
#include <string>

#include "common/op_error.h"
#include "torch/model/policy_internal.h"
#include "torch/model/policy_model.h"

namespace crpo {
namespace policy {

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

}  // namespace policy
}  // namespace crpo
