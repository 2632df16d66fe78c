// Device-side GRPO group normalisation shared by the CUDA reward kernels: the CUDA twin of
// crpo::normalise_group in ../cpu/group_normalise.h, with the same arithmetic (norm as an int:
// 0 per-branch, 1 joint, 2 none, AdvantageNorm's values).
#pragma once

#include <cstdint>

namespace crpo {
namespace cuda {

__device__ inline bool normalise_group(const double* r, int64_t n, int norm, double eps, double* adv) {
  bool flat = true;
  for (int64_t i = 1; i < n; ++i)
    if (r[i] != r[0]) {
      flat = false;
      break;
    }
  if (flat) {
    for (int64_t i = 0; i < n; ++i) adv[i] = 0.0;
    return true;
  }
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) mean += r[i];
  mean /= static_cast<double>(n);
  if (norm == 2) {
    for (int64_t i = 0; i < n; ++i) adv[i] = r[i] - mean;
    return false;
  }
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += (r[i] - mean) * (r[i] - mean);
  const double inv = 1.0 / (sqrt(ss / static_cast<double>(n - 1)) + eps);
  for (int64_t i = 0; i < n; ++i) adv[i] = (r[i] - mean) * inv;
  return false;
}

}  // namespace cuda
}  // namespace crpo
