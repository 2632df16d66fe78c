// CPU implementation of the fused CRR group-advantage kernel; see crr_kernel.h for the maths.
// Per group everything stays in small stack buffers: one read of the answers, one write of
// each output, no allocation (groups are at most a few hundred rollouts).
#include "crr_kernel.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "group_normalise.h"

namespace crpo {

namespace {
inline bool valid_answer(int32_t a, int32_t num_options) { return a >= 0 && a < num_options; }
}  // namespace

namespace {

// ---- Fast path for G = G' = 8 (the common group size) -----------------------------------------
// The same maths as the scalar loop below, on GCC/Clang vector types (SSE2 / NEON / AVX, whatever
// the target has): each branch's 8 rollouts are two vectors of 4 doubles, every comparison is a
// lane mask instead of a branch, and sums are pairwise (they differ from left-to-right sums by
// rounding only). The scalar loop is its twin; tests compare both with the TS reference.
// The helpers below pass 32-byte vectors by value; they are internal and inlined, so the ABI
// note GCC gives for that without AVX enabled does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef int64_t v4l __attribute__((vector_size(32)));

inline v4i load4i(const int32_t* p) {
  v4i v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v4f load4f(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4f(float* p, v4d v) {
  const v4f f = __builtin_convertvector(v, v4f);
  std::memcpy(p, &f, sizeof f);
}
inline double hsum(v4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }
inline v4d splat(double x) { return v4d{x, x, x, x}; }
// True when any lane of a comparison mask is set (an OR folded within the vector).
inline bool any_lane(v4l m) {
  m |= __builtin_shufflevector(m, m, 2, 3, 0, 1);
  m |= __builtin_shufflevector(m, m, 1, 0, 3, 2);
  return m[0] != 0;
}

// 1.0 where the lane's mask is set (masks are 0 / -1), else 0.0.
inline v4d mask_to_unit(v4i m) { return __builtin_convertvector(-m, v4d); }

// Groups are done in chunks, stage by stage: (1) per group, rewards, flat flags, deviations from
// the mean and their sum of squares; (2) for the whole chunk, the sqrt and division of every
// branch (independent of each other, so they pipeline instead of stalling one group at a time);
// (3) per group, advantages and stores. A flat branch (all rewards equal) gets advantage 0.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// An AVX2 clone is chosen at load time where the CPU has it (one vector op per 4 doubles instead
// of two); the default clone is plain SSE2.
__attribute__((target_clones("avx2", "default")))
#endif
void crr_groups_8x8(const CrrInputs& in, const CrrOutputs& out) {
  constexpr int64_t kChunk = 16;
  const RewardWeights& w = in.weights;
  const v4d w_acc = splat(w.accuracy), w_fmt = splat(w.format), w_crr = splat(w.crr), w_beh = splat(w.behave);
  const v4i zero = {0, 0, 0, 0};
  const bool joint = in.norm == AdvantageNorm::Joint, centre_only = in.norm == AdvantageNorm::None;
  // Per group of the chunk: [orig lo, orig hi, cf lo, cf hi] for rewards, hits, deviations.
  v4d rew[kChunk][4], hit[kChunk][4], dev[kChunk][4];
  double ss[kChunk][2], p[kChunk][2];
  bool flat[kChunk][2];

  for (int64_t b0 = 0; b0 < in.groups; b0 += kChunk) {
    const int64_t count = std::min(kChunk, in.groups - b0);
    for (int64_t q = 0; q < count; ++q) {  // stage 1
      const int64_t b = b0 + q;
      const int32_t y = in.truth[b], k = in.num_options[b];
      const bool change = in.relation[b] != 0;
      const int32_t y_cf = in.cf_label ? in.cf_label[b] : -1;
      // same: c == y; change with y' known: c == y'; change, y' unknown: c != y (null is a change)
      const int32_t target = (change && y_cf >= 0) ? y_cf : y;
      const v4i flip = (change && y_cf < 0) ? v4i{-1, -1, -1, -1} : zero;
      const v4i vy = {y, y, y, y}, vk = {k, k, k, k}, vt = {target, target, target, target};
      const int32_t* a = in.orig_answers + b * 8;
      const int32_t* c = in.cf_answers + b * 8;
      const v4i a0 = load4i(a), a1 = load4i(a + 4), c0 = load4i(c), c1 = load4i(c + 4);
      v4d* h = hit[q];
      h[0] = mask_to_unit((a0 >= zero) & (a0 < vk) & (a0 == vy));
      h[1] = mask_to_unit((a1 >= zero) & (a1 < vk) & (a1 == vy));
      h[2] = mask_to_unit((c0 >= zero) & (c0 < vk) & ((c0 == vt) ^ flip));
      h[3] = mask_to_unit((c1 >= zero) & (c1 < vk) & ((c1 == vt) ^ flip));
      const double p_o = hsum(h[0] + h[1]) * 0.125, p_c = hsum(h[2] + h[3]) * 0.125;
      p[q][0] = p_o;
      p[q][1] = p_c;
      v4d f[4] = {splat(0.0), splat(0.0), splat(0.0), splat(0.0)};
      if (in.orig_format) {
        f[0] = __builtin_convertvector(load4f(in.orig_format + b * 8), v4d);
        f[1] = __builtin_convertvector(load4f(in.orig_format + b * 8 + 4), v4d);
      }
      if (in.cf_format) {
        f[2] = __builtin_convertvector(load4f(in.cf_format + b * 8), v4d);
        f[3] = __builtin_convertvector(load4f(in.cf_format + b * 8 + 4), v4d);
      }
      v4d* r = rew[q];
      const v4d vp_o = splat(p_o), vp_c = splat(p_c);
      // r_i = (w_acc + w_crr p_c) correct_i + w_fmt f_i;  s_j = (w_beh + w_crr p_o) expected_j + w_fmt g_j
      const v4d gain_o = w_acc + w_crr * vp_c, gain_c = w_beh + w_crr * vp_o;
      for (int u = 0; u < 2; ++u) r[u] = gain_o * h[u] + w_fmt * f[u];
      for (int u = 2; u < 4; ++u) r[u] = gain_c * h[u] + w_fmt * f[u];
      v4d* d = dev[q];
      if (joint) {
        const v4d r0 = splat(r[0][0]);
        flat[q][0] = flat[q][1] = !any_lane((r[0] != r0) | (r[1] != r0) | (r[2] != r0) | (r[3] != r0));
        const v4d mean = splat(hsum((r[0] + r[1]) + (r[2] + r[3])) * 0.0625);
        for (int u = 0; u < 4; ++u) d[u] = r[u] - mean;
        ss[q][0] = ss[q][1] = hsum((d[0] * d[0] + d[1] * d[1]) + (d[2] * d[2] + d[3] * d[3])) / 15.0;
      } else {
        for (int br = 0; br < 2; ++br) {
          const v4d lo = r[2 * br], hi = r[2 * br + 1];
          const v4d r0 = splat(lo[0]);
          flat[q][br] = !any_lane((lo != r0) | (hi != r0));
          const v4d mean = splat(hsum(lo + hi) * 0.125);
          d[2 * br] = lo - mean;
          d[2 * br + 1] = hi - mean;
          ss[q][br] = hsum(d[2 * br] * d[2 * br] + d[2 * br + 1] * d[2 * br + 1]) / 7.0;
        }
      }
    }
    double scale[kChunk][2];  // stage 2
    for (int64_t q = 0; q < count; ++q) {
      for (int br = 0; br < 2; ++br) scale[q][br] = centre_only ? 1.0 : 1.0 / (std::sqrt(ss[q][br]) + in.eps);
    }
    for (int64_t q = 0; q < count; ++q) {  // stage 3
      const int64_t b = b0 + q, o = b * 8;
      const v4d so = splat(flat[q][0] ? 0.0 : scale[q][0]), sc = splat(flat[q][1] ? 0.0 : scale[q][1]);
      const v4d* r = rew[q];
      const v4d* d = dev[q];
      const v4d* h = hit[q];
      store4f(out.orig_reward + o, r[0]);
      store4f(out.orig_reward + o + 4, r[1]);
      store4f(out.cf_reward + o, r[2]);
      store4f(out.cf_reward + o + 4, r[3]);
      store4f(out.orig_advantage + o, d[0] * so);
      store4f(out.orig_advantage + o + 4, d[1] * so);
      store4f(out.cf_advantage + o, d[2] * sc);
      store4f(out.cf_advantage + o + 4, d[3] * sc);
      if (out.correct) {
        store4f(out.correct + o, h[0]);
        store4f(out.correct + o + 4, h[1]);
      }
      if (out.expected) {
        store4f(out.expected + o, h[2]);
        store4f(out.expected + o + 4, h[3]);
      }
      if (out.p_orig) out.p_orig[b] = static_cast<float>(p[q][0]);
      if (out.p_cf) out.p_cf[b] = static_cast<float>(p[q][1]);
      if (out.orig_flat) out.orig_flat[b] = flat[q][0] ? 1 : 0;
      if (out.cf_flat) out.cf_flat[b] = flat[q][1] ? 1 : 0;
    }
  }
}

}  // namespace

void crr_group_advantages_scalar(const CrrInputs& in, const CrrOutputs& out);

void crr_group_advantages(const CrrInputs& in, const CrrOutputs& out) {
  if (in.orig_size == 8 && in.cf_size == 8)
    crr_groups_8x8(in, out);
  else
    crr_group_advantages_scalar(in, out);
}

void crr_group_advantages_scalar(const CrrInputs& in, const CrrOutputs& out) {
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
      if (!change)
        ok = valid && c[j] == y;
      else if (y_cf >= 0)
        ok = valid && c[j] == y_cf;
      else
        ok = valid && c[j] != y;  // the null option is a valid change
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
