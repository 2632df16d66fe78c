// Grad-norm and AdamW passes over raw float32 CPU buffers: one pass over a tensor's memory for the
// norm's sum of squares and one for the update. Dependency-free C++17. The torch side
// (native/torch/model/policy_train.cpp) runs them over every parameter tensor when all are CPU
// float32 and contiguous; its slow twin is the ATen form of torch.optim.AdamW after
// clip_grad_norm_, and policyGradCheck('fast:adamw') compares with torch::optim::AdamW.
#pragma once

#include <cstdint>

namespace crpo {

// sum_i x[i]^2 in float64 (four partial sums).
double sum_squares_f32(const float* x, int64_t n);

// One AdamW update of n elements in place, per element the reference's float32 operations in its
// order: g *= clip (when scale_grad); p *= decay (when apply_decay); m = m*b1 + omb1*g;
// v = v*b2 + omb2*g*g; p += step_size * m / (sqrt(v) / sqrt_bc2 + eps).
void adamw_f32(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
               float clip, bool scale_grad, float decay, bool apply_decay, float b1, float omb1, float b2, float omb2,
               float sqrt_bc2, float eps, float step_size);

}  // namespace crpo
