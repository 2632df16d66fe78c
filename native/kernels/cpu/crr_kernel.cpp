// CPU implementation of the fused CRR group-advantage kernel; see crr_kernel.h for the maths.
// Per group everything stays in small stack buffers: one read of the answers, one write of
// each output, no allocation (groups are at most a few hundred rollouts).
#include "crr_kernel.h"

#include <cmath>
#include <vector>

namespace crpo {

bool normalise_group(const double* r, int64_t n, AdvantageNorm norm, double eps, double* adv) {
  bool flat = true;
  for (int64_t i = 1; i < n; ++i) {
    if (r[i] != r[0]) { flat = false; break; }
  }
  if (flat) {
    for (int64_t i = 0; i < n; ++i) adv[i] = 0.0;
    return true;
  }
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) mean += r[i];
  mean /= static_cast<double>(n);
  if (norm == AdvantageNorm::None) {
    for (int64_t i = 0; i < n; ++i) adv[i] = r[i] - mean;
    return false;
  }
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += (r[i] - mean) * (r[i] - mean);
  const double sd = std::sqrt(ss / static_cast<double>(n - 1));  // n >= 2 here (not flat)
  const double inv = 1.0 / (sd + eps);  // one division per group, not per rollout
  for (int64_t i = 0; i < n; ++i) adv[i] = (r[i] - mean) * inv;
  return false;
}

namespace {
inline bool valid_answer(int32_t a, int32_t num_options) { return a >= 0 && a < num_options; }
}  // namespace

void crr_group_advantages(const CrrInputs& in, const CrrOutputs& out) {
  const int64_t G = in.orig_size, H = in.cf_size;
  const RewardWeights& w = in.weights;
  std::vector<double> rewards(static_cast<size_t>(G + H)), adv(static_cast<size_t>(G + H));
  std::vector<double> correct(static_cast<size_t>(G)), expected(static_cast<size_t>(H));
  for (int64_t b = 0; b < in.groups; ++b) {
    const int32_t y = in.truth[b];
    const int32_t k = in.num_options[b];
    const bool change = in.relation[b] != 0;
    const int32_t y_cf = in.cf_label ? in.cf_label[b] : -1;
    const int32_t* a = in.orig_answers + b * G;
    const int32_t* c = in.cf_answers + b * H;

    double p_o = 0.0, p_c = 0.0;
    for (int64_t i = 0; i < G; ++i) {
      correct[i] = (valid_answer(a[i], k) && a[i] == y) ? 1.0 : 0.0;
      p_o += correct[i];
    }
    for (int64_t j = 0; j < H; ++j) {
      const bool valid = valid_answer(c[j], k);
      bool ok;
      if (!change) ok = valid && c[j] == y;
      else if (y_cf >= 0) ok = valid && c[j] == y_cf;
      else ok = valid && c[j] != y;  // the null option is a valid change
      expected[j] = ok ? 1.0 : 0.0;
      p_c += expected[j];
    }
    p_o = G > 0 ? p_o / static_cast<double>(G) : 0.0;
    p_c = H > 0 ? p_c / static_cast<double>(H) : 0.0;

    for (int64_t i = 0; i < G; ++i) {
      const double f = in.orig_format ? in.orig_format[b * G + i] : 0.0;
      rewards[i] = w.accuracy * correct[i] + w.format * f + w.crr * correct[i] * p_c;
    }
    for (int64_t j = 0; j < H; ++j) {
      const double g = in.cf_format ? in.cf_format[b * H + j] : 0.0;
      rewards[G + j] = w.behave * expected[j] + w.format * g + w.crr * expected[j] * p_o;
    }

    bool flat_o, flat_c;
    if (in.norm == AdvantageNorm::Joint) {
      flat_o = flat_c = normalise_group(rewards.data(), G + H, in.norm, in.eps, adv.data());
    } else {
      flat_o = normalise_group(rewards.data(), G, in.norm, in.eps, adv.data());
      flat_c = normalise_group(rewards.data() + G, H, in.norm, in.eps, adv.data() + G);
    }

    for (int64_t i = 0; i < G; ++i) {
      out.orig_reward[b * G + i] = static_cast<float>(rewards[i]);
      out.orig_advantage[b * G + i] = static_cast<float>(adv[i]);
      if (out.correct) out.correct[b * G + i] = static_cast<float>(correct[i]);
    }
    for (int64_t j = 0; j < H; ++j) {
      out.cf_reward[b * H + j] = static_cast<float>(rewards[G + j]);
      out.cf_advantage[b * H + j] = static_cast<float>(adv[G + j]);
      if (out.expected) out.expected[b * H + j] = static_cast<float>(expected[j]);
    }
    if (out.p_orig) out.p_orig[b] = static_cast<float>(p_o);
    if (out.p_cf) out.p_cf[b] = static_cast<float>(p_c);
    if (out.orig_flat) out.orig_flat[b] = flat_o ? 1 : 0;
    if (out.cf_flat) out.cf_flat[b] = flat_c ? 1 : 0;
  }
}

void grpo_group_advantages(const GrpoInputs& in, const GrpoOutputs& out) {
  const int64_t G = in.group_size;
  std::vector<double> rewards(static_cast<size_t>(G)), adv(static_cast<size_t>(G));
  for (int64_t b = 0; b < in.groups; ++b) {
    const int32_t y = in.truth[b], k = in.num_options[b];
    const int32_t* a = in.answers + b * G;
    for (int64_t i = 0; i < G; ++i) {
      const double correct = (valid_answer(a[i], k) && a[i] == y) ? 1.0 : 0.0;
      const double f = in.format ? in.format[b * G + i] : 0.0;
      rewards[i] = in.w_accuracy * correct + in.w_format * f;
      if (out.correct) out.correct[b * G + i] = static_cast<float>(correct);
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
