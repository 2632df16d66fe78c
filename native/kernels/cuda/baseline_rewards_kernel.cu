// CUDA variant of the T-GRPO and ArrowRL fused reward kernels: one thread per prompt group, the
// same arithmetic (in double) as ../cpu/baseline_rewards_kernel.cpp. Built only with CUDA.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "../cpu/baseline_rewards_kernel.h"
#include "group_normalise.cuh"

namespace crpo {
namespace cuda {
namespace {

constexpr int kMaxGroup = 256;  // G per group handled by one thread

__device__ bool valid_answer(int32_t a, int32_t k) { return a >= 0 && a < k; }

__global__ void tgrpo_kernel(TgrpoInputs in, TgrpoOutputs out) {
  int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= in.groups) return;
  const int64_t G = in.group_size, S = in.shuffled_size;
  double r[kMaxGroup], adv[kMaxGroup];
  const int32_t y = in.truth[b], k = in.num_options[b];
  double p = 0.0, q = 0.0;
  for (int64_t i = 0; i < G; ++i) {
    int32_t a = in.answers[b * G + i];
    p += (valid_answer(a, k) && a == y) ? 1.0 : 0.0;
  }
  for (int64_t j = 0; j < S; ++j) {
    int32_t s = in.shuffled_answers[b * S + j];
    q += (valid_answer(s, k) && s == y) ? 1.0 : 0.0;
  }
  p /= static_cast<double>(G);
  q = S > 0 ? q / static_cast<double>(S) : 0.0;
  const bool on = p >= in.mu * q;
  for (int64_t i = 0; i < G; ++i) {
    int32_t a = in.answers[b * G + i];
    double c = (valid_answer(a, k) && a == y) ? 1.0 : 0.0;
    double f = in.format ? in.format[b * G + i] : 0.0;
    r[i] = in.w_accuracy * c + in.w_format * f + (on ? in.bonus * c : 0.0);
    if (out.correct) out.correct[b * G + i] = static_cast<float>(c);
  }
  bool flat = normalise_group(r, G, static_cast<int>(in.norm), in.eps, adv);
  for (int64_t i = 0; i < G; ++i) {
    out.reward[b * G + i] = static_cast<float>(r[i]);
    out.advantage[b * G + i] = static_cast<float>(adv[i]);
  }
  if (out.p_ordered) out.p_ordered[b] = static_cast<float>(p);
  if (out.p_shuffled) out.p_shuffled[b] = static_cast<float>(q);
  if (out.bonus_on) out.bonus_on[b] = on ? 1 : 0;
  if (out.flat) out.flat[b] = flat ? 1 : 0;
}

__global__ void arrow_kernel(ArrowInputs in, ArrowOutputs out) {
  int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= in.groups) return;
  const int64_t G = in.group_size, H = in.reverse_size;
  double r[kMaxGroup], adv[kMaxGroup];
  const int32_t y = in.truth[b], k = in.num_options[b];
  for (int64_t i = 0; i < G; ++i) {
    int32_t a = in.answers[b * G + i];
    bool valid = valid_answer(a, k);
    double c = (valid && a == y) ? 1.0 : 0.0;
    double differ = 0.0;
    if (valid && H > 0) {
      for (int64_t j = 0; j < H; ++j) {
        int32_t x = in.reverse_answers[b * H + j];
        differ += (valid_answer(x, k) && x != a) ? 1.0 : 0.0;
      }
      differ /= static_cast<double>(H);
    }
    double f = in.format ? in.format[b * G + i] : 0.0;
    r[i] = in.w_accuracy * c + in.w_format * f + in.w_reverse * differ;
    if (out.correct) out.correct[b * G + i] = static_cast<float>(c);
    if (out.differ) out.differ[b * G + i] = static_cast<float>(differ);
  }
  bool flat = normalise_group(r, G, static_cast<int>(in.norm), in.eps, adv);
  for (int64_t i = 0; i < G; ++i) {
    out.reward[b * G + i] = static_cast<float>(r[i]);
    out.advantage[b * G + i] = static_cast<float>(adv[i]);
  }
  if (out.flat) out.flat[b] = flat ? 1 : 0;
}

void check(cudaError_t e, const char* op) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(op) + ": " + cudaGetErrorString(e));
}

}  // namespace

void tgrpo_group_advantages(const TgrpoInputs& in, const TgrpoOutputs& out, void* stream) {
  if (in.group_size > kMaxGroup) throw std::invalid_argument("tgrpoAdvantages: group size above 256 on CUDA");
  if (in.groups == 0) return;
  const int threads = 128;
  const int blocks = static_cast<int>((in.groups + threads - 1) / threads);
  tgrpo_kernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(in, out);
  check(cudaGetLastError(), "tgrpoAdvantages");
}

void arrow_group_advantages(const ArrowInputs& in, const ArrowOutputs& out, void* stream) {
  if (in.group_size > kMaxGroup) throw std::invalid_argument("arrowAdvantages: group size above 256 on CUDA");
  if (in.groups == 0) return;
  const int threads = 128;
  const int blocks = static_cast<int>((in.groups + threads - 1) / threads);
  arrow_kernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(in, out);
  check(cudaGetLastError(), "arrowAdvantages");
}

}  // namespace cuda
}  // namespace crpo
