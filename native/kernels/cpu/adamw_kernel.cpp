// Grad-norm and AdamW passes over raw float32 CPU buffers (see adamw_kernel.h).
#include "kernels/cpu/adamw_kernel.h"

#include <cmath>

#include "kernels/cpu/target_clones.h"

namespace crpo {

CRPO_AVX2_CLONE double sum_squares_f32(const float* x, int64_t n) {
  double a[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int u = 0; u < 4; u++) a[u] += static_cast<double>(x[i + u]) * static_cast<double>(x[i + u]);
  }
  for (; i < n; i++) a[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return (a[0] + a[1]) + (a[2] + a[3]);
}

// Per element, the reference's float32 operations in its order: g *= clip; p *= 1 - lr*wd;
// m = m*b1 + (1-b1)*g; v = v*b2 + (1-b2)*g*g; p += step_size * m / (sqrt(v) / sqrt(bc2) + eps).
CRPO_AVX2_CLONE void adamw_f32(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                               int64_t n, float clip, bool scale_grad, float decay, bool apply_decay, float b1,
                               float omb1, float b2, float omb2, float sqrt_bc2, float eps, float step_size) {
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i];
    if (scale_grad) gi = gi * clip;
    float pi = p[i];
    if (apply_decay) pi = pi * decay;
    const float mi = m[i] * b1 + omb1 * gi;
    const float vi = v[i] * b2 + omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + step_size * (mi / (std::sqrt(vi) / sqrt_bc2 + eps));
  }
}

}  // namespace crpo
