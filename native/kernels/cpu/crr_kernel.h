// Fused CRR group-advantage kernel (crpo-method.md section 5). One pass per prompt group
// computes every reward component of both branches and their GRPO advantages:
//   correct_i  = [a_i valid and a_i == y]
//   expected_j = same:   [c_j valid and c_j == y]
//                change: y' known ? [c_j valid and c_j == y'] : [c_j valid and c_j != y]
//   p_o = mean_i correct_i,  p_c = mean_j expected_j
//   r_i = w_acc*correct_i + w_fmt*f_i + w_crr*correct_i*p_c
//   s_j = w_beh*expected_j + w_fmt*g_j + w_crr*expected_j*p_o
//   A = (x - mean) / (std + eps), sample std (N-1); a group whose rewards are all equal gets 0.
// An answer is valid when 0 <= a < num_options (num_options counts the null option if shown).
// Plain GRPO (one branch, correctness + format) shares the same normalisation (group_normalise.h).
#pragma once

#include <cstdint>

#include "group_normalise.h"

namespace crpo {

struct RewardWeights {
  double accuracy = 1.0;  // w_acc
  double format = 1.0;    // w_fmt
  double crr = 1.0;       // w_crr
  double behave = 1.0;    // w_beh
};

// Inputs of B groups, row-major. Pointers marked optional may be null.
struct CrrInputs {
  int64_t groups = 0;                     // B
  int64_t orig_size = 0;                  // G
  int64_t cf_size = 0;                    // G'
  const int32_t* orig_answers = nullptr;  // (B, G)  option index, -1 = unparseable
  const int32_t* cf_answers = nullptr;    // (B, G')
  const int32_t* truth = nullptr;         // (B,)    y
  const int32_t* relation = nullptr;      // (B,)    0 = same, 1 = change
  const int32_t* cf_label = nullptr;      // (B,)    y', -1 = unknown; optional
  const int32_t* num_options = nullptr;   // (B,)
  const float* orig_format = nullptr;     // (B, G)  f_i; optional (treated as 0)
  const float* cf_format = nullptr;       // (B, G') g_j; optional (treated as 0)
  RewardWeights weights;
  AdvantageNorm norm = AdvantageNorm::PerBranch;
  double eps = 1e-6;
};

struct CrrOutputs {
  float* orig_reward = nullptr;     // (B, G)   r_i
  float* cf_reward = nullptr;       // (B, G')  s_j
  float* orig_advantage = nullptr;  // (B, G)
  float* cf_advantage = nullptr;    // (B, G')
  float* correct = nullptr;         // (B, G)   correct_i
  float* expected = nullptr;        // (B, G')  expected_j
  float* p_orig = nullptr;          // (B,)     p_o
  float* p_cf = nullptr;            // (B,)     p_c
  uint8_t* orig_flat = nullptr;     // (B,)     1 when the advantage group of branch o is all-equal
  uint8_t* cf_flat = nullptr;       // (B,)     same for branch c (joint: both flags equal)
};

// Dispatches to a vectorised path for G = G' = 8 and to the scalar loop otherwise.
void crr_group_advantages(const CrrInputs& in, const CrrOutputs& out);
// The plain per-rollout loop for any G, G' (the fast path's twin).
void crr_group_advantages_scalar(const CrrInputs& in, const CrrOutputs& out);

struct GrpoInputs {
  int64_t groups = 0;                    // B
  int64_t group_size = 0;                // G
  const int32_t* answers = nullptr;      // (B, G)
  const int32_t* truth = nullptr;        // (B,)
  const int32_t* num_options = nullptr;  // (B,)
  const float* format = nullptr;         // (B, G) optional
  double w_accuracy = 1.0;
  double w_format = 1.0;
  AdvantageNorm norm = AdvantageNorm::PerBranch;  // Joint is the same as PerBranch here
  double eps = 1e-6;
};

struct GrpoOutputs {
  float* reward = nullptr;     // (B, G)
  float* advantage = nullptr;  // (B, G)
  float* correct = nullptr;    // (B, G)
  uint8_t* flat = nullptr;     // (B,)
};

void grpo_group_advantages(const GrpoInputs& in, const GrpoOutputs& out);

}  // namespace crpo
