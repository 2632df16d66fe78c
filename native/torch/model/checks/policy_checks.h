// Test harnesses of the native policy, reached from JS through policyGradCheck(name) only (the
// tests in test/numerics/policy-gradcheck.test.ts and policy-fast-paths.test.ts): finite-difference
// gradient checks of every module (grad_check.cpp) and each fast path against its slow twin
// (fast_path_check.cpp). Nothing in the policy itself calls them.
#pragma once

#include <cstdint>
#include <string>

namespace crpo {
namespace policy {

// Finite-difference gradient check of one module in double precision on tiny shapes.
// name: rmsnorm | rotary | attention | swiglu | decoder_layer | language_model | vision_encoder |
// projector | policy_loss | policy. Returns max |analytic - numeric| / max(1, |numeric|) and count.
struct GradCheckResult {
  double max_error = 0;
  double max_abs_grad = 0;
  int64_t checked = 0;
};
GradCheckResult grad_check(const std::string& name, uint64_t seed);
// Fast path vs its slow twin (ReferencePaths) on random inputs; max_error = max |fast - slow| /
// max(1, |slow|), max_abs_grad = max |slow| (scale of what was compared), checked = entries.
// name: attention_decode (float64) | attention_decode_f32 | attention_grouped | generate | logprobs | train_step |
// adamw (more as fast paths are added). grad_check("fast:<name>") runs it.
GradCheckResult fast_path_check(const std::string& name, uint64_t seed);

}  // namespace policy
}  // namespace crpo
