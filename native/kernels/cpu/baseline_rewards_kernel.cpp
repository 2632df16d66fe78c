// CPU implementation of the T-GRPO and ArrowRL fused reward kernels; see
// baseline_rewards_kernel.h for the maths. Arithmetic in double, outputs in float, one small
// buffer per call.
#include "baseline_rewards_kernel.h"

#include <cstddef>
#include <vector>

#include "group_normalise.h"

namespace crpo {
namespace {
inline bool valid_answer(int32_t a, int32_t k) { return a >= 0 && a < k; }
}  // namespace

void tgrpo_group_advantages(const TgrpoInputs& in, const TgrpoOutputs& out) {
  const int64_t G = in.group_size, S = in.shuffled_size;
  std::vector<double> correct(static_cast<size_t>(G)), rewards(static_cast<size_t>(G)), adv(static_cast<size_t>(G));
  for (int64_t b = 0; b < in.groups; ++b) {
    const int32_t y = in.truth[b], k = in.num_options[b];
    const int32_t* a = in.answers + b * G;
    const int32_t* s = in.shuffled_answers + b * S;
    double p = 0.0, q = 0.0;
    for (int64_t i = 0; i < G; ++i) {
      correct[i] = (valid_answer(a[i], k) && a[i] == y) ? 1.0 : 0.0;
      p += correct[i];
    }
    for (int64_t j = 0; j < S; ++j) q += (valid_answer(s[j], k) && s[j] == y) ? 1.0 : 0.0;
    p /= static_cast<double>(G);
    q = S > 0 ? q / static_cast<double>(S) : 0.0;
    const bool on = p >= in.mu * q;
    for (int64_t i = 0; i < G; ++i) {
      const double f = in.format ? in.format[b * G + i] : 0.0;
      rewards[i] = in.w_accuracy * correct[i] + in.w_format * f + (on ? in.bonus * correct[i] : 0.0);
    }
    const bool flat = normalise_group(rewards.data(), G, in.norm, in.eps, adv.data());
    for (int64_t i = 0; i < G; ++i) {
      out.reward[b * G + i] = static_cast<float>(rewards[i]);
      out.advantage[b * G + i] = static_cast<float>(adv[i]);
      if (out.correct) out.correct[b * G + i] = static_cast<float>(correct[i]);
    }
    if (out.p_ordered) out.p_ordered[b] = static_cast<float>(p);
    if (out.p_shuffled) out.p_shuffled[b] = static_cast<float>(q);
    if (out.bonus_on) out.bonus_on[b] = on ? 1 : 0;
    if (out.flat) out.flat[b] = flat ? 1 : 0;
  }
}

void arrow_group_advantages(const ArrowInputs& in, const ArrowOutputs& out) {
  const int64_t G = in.group_size, H = in.reverse_size;
  std::vector<double> rewards(static_cast<size_t>(G)), adv(static_cast<size_t>(G));
  for (int64_t b = 0; b < in.groups; ++b) {
    const int32_t y = in.truth[b], k = in.num_options[b];
    const int32_t* a = in.answers + b * G;
    const int32_t* c = in.reverse_answers + b * H;
    for (int64_t i = 0; i < G; ++i) {
      const bool valid = valid_answer(a[i], k);
      const double correct = (valid && a[i] == y) ? 1.0 : 0.0;
      double differ = 0.0;
      if (valid && H > 0) {
        for (int64_t j = 0; j < H; ++j) differ += (valid_answer(c[j], k) && c[j] != a[i]) ? 1.0 : 0.0;
        differ /= static_cast<double>(H);
      }
      const double f = in.format ? in.format[b * G + i] : 0.0;
      rewards[i] = in.w_accuracy * correct + in.w_format * f + in.w_reverse * differ;
      if (out.correct) out.correct[b * G + i] = static_cast<float>(correct);
      if (out.differ) out.differ[b * G + i] = static_cast<float>(differ);
    }
    const bool flat = normalise_group(rewards.data(), G, in.norm, in.eps, adv.data());
    for (int64_t i = 0; i < G; ++i) {
      out.reward[b * G + i] = static_cast<float>(rewards[i]);
      out.advantage[b * G + i] = static_cast<float>(adv[i]);
    }
    if (out.flat) out.flat[b] = flat ? 1 : 0;
  }
}

}  // namespace crpo
