// GRPO group normalisation, the one CPU version: the advantages of one group's rewards,
//   A_i = (r_i - mean) / (std + eps)  (sample std, N-1),  or r_i - mean with AdvantageNorm::None,
// and 0 for every member of a group whose rewards are all equal (returns true then). Used by the
// CRR / GRPO kernels (crr_kernel.cpp; its G = G' = 8 fast path inlines the same arithmetic on
// vectors) and the T-GRPO / ArrowRL kernels (baseline_rewards_kernel.cpp). Its CUDA twin is
// ../cuda/group_normalise.cuh (norm as an int there: 0 per-branch, 1 joint, 2 none).
#pragma once

#include <cmath>
#include <cstdint>

namespace crpo {

enum class AdvantageNorm { PerBranch = 0, Joint = 1, None = 2 };

// Normalises `n` rewards (in double) into advantages; returns true when the group is all-equal.
// PerBranch and Joint normalise alike here (the caller decides which rewards form the group).
inline bool normalise_group(const double* r, int64_t n, AdvantageNorm norm, double eps, double* adv) {
  bool flat = true;
  for (int64_t i = 1; i < n; ++i) {
    if (r[i] != r[0]) {
      flat = false;
      break;
    }
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
  const double inv = 1.0 / (sd + eps);                           // one division per group, not per rollout
  for (int64_t i = 0; i < n; ++i) adv[i] = (r[i] - mean) * inv;
  return false;
}

}  // namespace crpo
