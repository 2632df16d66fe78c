// Fused reward + advantage kernels of the two published baselines the CRPO trainer compares
// against (crpo-method.md section 7). One pass per prompt group, same GRPO normalisation as the
// CRR kernel (normalise_group, group_normalise.h).
//
// T-GRPO (Video-R1): G rollouts on the ordered frames (trained), S on shuffled frames (scored only).
//   correct_i = [a_i valid and a_i == y],  p = mean_i correct_i,  q = mean_k [s_k valid and s_k == y]
//   r_i = w_acc*correct_i + w_fmt*f_i + (p >= mu*q ? bonus*correct_i : 0)      mu = 0.8, bonus = 0.3
// ArrowRL (Xue et al., arXiv 2506.03340; this project's reading): G rollouts on the forward video
// (trained), G' on the reversed video (scored only).
//   r_i = w_acc*correct_i + w_fmt*f_i + w_rev*[a_i valid] * mean_j [c_j valid and a_i != c_j]
//   (an invalid reversed answer never counts as a change, as in section 5).
#pragma once

#include <cstdint>

#include "crr_kernel.h"

namespace crpo {

struct TgrpoInputs {
  int64_t groups = 0;                         // B
  int64_t group_size = 0;                     // G   ordered rollouts
  int64_t shuffled_size = 0;                  // S   shuffled-frame rollouts
  const int32_t* answers = nullptr;           // (B, G)
  const int32_t* shuffled_answers = nullptr;  // (B, S)
  const int32_t* truth = nullptr;             // (B,)
  const int32_t* num_options = nullptr;       // (B,)
  const float* format = nullptr;              // (B, G) optional
  double w_accuracy = 1.0;
  double w_format = 1.0;
  double bonus = 0.3;                             // added to each correct ordered rollout when the condition holds
  double mu = 0.8;                                // condition p >= mu * q
  AdvantageNorm norm = AdvantageNorm::PerBranch;  // Joint acts as PerBranch (one trained branch)
  double eps = 1e-6;
};

struct TgrpoOutputs {
  float* reward = nullptr;      // (B, G)
  float* advantage = nullptr;   // (B, G)
  float* correct = nullptr;     // (B, G)
  float* p_ordered = nullptr;   // (B,)
  float* p_shuffled = nullptr;  // (B,)
  uint8_t* bonus_on = nullptr;  // (B,) 1 when p >= mu*q
  uint8_t* flat = nullptr;      // (B,)
};

void tgrpo_group_advantages(const TgrpoInputs& in, const TgrpoOutputs& out);

struct ArrowInputs {
  int64_t groups = 0;                        // B
  int64_t group_size = 0;                    // G   forward rollouts
  int64_t reverse_size = 0;                  // G'  reversed-video rollouts
  const int32_t* answers = nullptr;          // (B, G)
  const int32_t* reverse_answers = nullptr;  // (B, G')
  const int32_t* truth = nullptr;            // (B,)
  const int32_t* num_options = nullptr;      // (B,)
  const float* format = nullptr;             // (B, G) optional
  double w_accuracy = 1.0;
  double w_format = 1.0;
  double w_reverse = 0.5;
  AdvantageNorm norm = AdvantageNorm::PerBranch;
  double eps = 1e-6;
};

struct ArrowOutputs {
  float* reward = nullptr;     // (B, G)
  float* advantage = nullptr;  // (B, G)
  float* correct = nullptr;    // (B, G)
  float* differ = nullptr;     // (B, G) [a_i valid] * mean_j [c_j valid and a_i != c_j]
  uint8_t* flat = nullptr;     // (B,)
};

void arrow_group_advantages(const ArrowInputs& in, const ArrowOutputs& out);

// CUDA twins (native/kernels/cuda/baseline_rewards_kernel.cu), built only with CUDA: pointers in
// `in` / `out` are device pointers, `stream` is a cudaStream_t.
namespace cuda {
void tgrpo_group_advantages(const TgrpoInputs& in, const TgrpoOutputs& out, void* stream);
void arrow_group_advantages(const ArrowInputs& in, const ArrowOutputs& out, void* stream);
}  // namespace cuda

}  // namespace crpo
