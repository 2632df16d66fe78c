// CUDA variant of the fused CRR / GRPO group-advantage kernel: one thread per prompt group,
// the same arithmetic (in double) as ../cpu/crr_kernel.cpp. Groups are small (G <= 64 here
// per branch), so per-thread local arrays hold one group's rewards.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_kernels.h"
#include "group_normalise.cuh"

namespace crpo {
namespace cuda {
namespace {

constexpr int kMaxGroup = 256;  // G + G' per group handled by one thread

__global__ void crr_kernel(CrrInputs in, CrrOutputs out) {
  int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= in.groups) return;
  const int64_t G = in.orig_size, H = in.cf_size;
  double r[kMaxGroup], adv[kMaxGroup];
  const int32_t y = in.truth[b], k = in.num_options[b];
  const bool change = in.relation[b] != 0;
  const int32_t y_cf = in.cf_label ? in.cf_label[b] : -1;
  double p_o = 0.0, p_c = 0.0;
  for (int64_t i = 0; i < G; ++i) {
    int32_t a = in.orig_answers[b * G + i];
    p_o += (a >= 0 && a < k && a == y) ? 1.0 : 0.0;
  }
  for (int64_t j = 0; j < H; ++j) {
    int32_t c = in.cf_answers[b * H + j];
    bool valid = c >= 0 && c < k;
    bool ok = !change ? (valid && c == y) : (y_cf >= 0 ? (valid && c == y_cf) : (valid && c != y));
    p_c += ok ? 1.0 : 0.0;
  }
  p_o /= static_cast<double>(G);
  p_c /= static_cast<double>(H);
  const RewardWeights& w = in.weights;
  for (int64_t i = 0; i < G; ++i) {
    int32_t a = in.orig_answers[b * G + i];
    double correct = (a >= 0 && a < k && a == y) ? 1.0 : 0.0;
    double f = in.orig_format ? in.orig_format[b * G + i] : 0.0;
    r[i] = w.accuracy * correct + w.format * f + w.crr * correct * p_c;
    if (out.correct) out.correct[b * G + i] = static_cast<float>(correct);
  }
  for (int64_t j = 0; j < H; ++j) {
    int32_t c = in.cf_answers[b * H + j];
    bool valid = c >= 0 && c < k;
    bool ok = !change ? (valid && c == y) : (y_cf >= 0 ? (valid && c == y_cf) : (valid && c != y));
    double e = ok ? 1.0 : 0.0;
    double g = in.cf_format ? in.cf_format[b * H + j] : 0.0;
    r[G + j] = w.behave * e + w.format * g + w.crr * e * p_o;
    if (out.expected) out.expected[b * H + j] = static_cast<float>(e);
  }
  int norm = static_cast<int>(in.norm);
  bool flat_o, flat_c;
  if (norm == 1) {
    flat_o = flat_c = normalise_group(r, G + H, norm, in.eps, adv);
  } else {
    flat_o = normalise_group(r, G, norm, in.eps, adv);
    flat_c = normalise_group(r + G, H, norm, in.eps, adv + G);
  }
  for (int64_t i = 0; i < G; ++i) {
    out.orig_reward[b * G + i] = static_cast<float>(r[i]);
    out.orig_advantage[b * G + i] = static_cast<float>(adv[i]);
  }
  for (int64_t j = 0; j < H; ++j) {
    out.cf_reward[b * H + j] = static_cast<float>(r[G + j]);
    out.cf_advantage[b * H + j] = static_cast<float>(adv[G + j]);
  }
  if (out.p_orig) out.p_orig[b] = static_cast<float>(p_o);
  if (out.p_cf) out.p_cf[b] = static_cast<float>(p_c);
  if (out.orig_flat) out.orig_flat[b] = flat_o ? 1 : 0;
  if (out.cf_flat) out.cf_flat[b] = flat_c ? 1 : 0;
}

__global__ void grpo_kernel(GrpoInputs in, GrpoOutputs out) {
  int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= in.groups) return;
  const int64_t G = in.group_size;
  double r[kMaxGroup], adv[kMaxGroup];
  const int32_t y = in.truth[b], k = in.num_options[b];
  for (int64_t i = 0; i < G; ++i) {
    int32_t a = in.answers[b * G + i];
    double correct = (a >= 0 && a < k && a == y) ? 1.0 : 0.0;
    double f = in.format ? in.format[b * G + i] : 0.0;
    r[i] = in.w_accuracy * correct + in.w_format * f;
    if (out.correct) out.correct[b * G + i] = static_cast<float>(correct);
  }
  bool flat = normalise_group(r, G, static_cast<int>(in.norm), in.eps, adv);
  for (int64_t i = 0; i < G; ++i) {
    out.reward[b * G + i] = static_cast<float>(r[i]);
    out.advantage[b * G + i] = static_cast<float>(adv[i]);
  }
  if (out.flat) out.flat[b] = flat ? 1 : 0;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

void crr_group_advantages(const CrrInputs& in, const CrrOutputs& out, void* stream) {
  if (in.orig_size + in.cf_size > kMaxGroup) {
    throw std::runtime_error("crr kernel (cuda): G + G' = " + std::to_string(in.orig_size + in.cf_size) + " exceeds " +
                             std::to_string(kMaxGroup));
  }
  if (in.groups == 0) return;
  int threads = 128;
  int64_t blocks = (in.groups + threads - 1) / threads;
  crr_kernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(in, out);
  check(cudaGetLastError(), "crr kernel launch");
}

void grpo_group_advantages(const GrpoInputs& in, const GrpoOutputs& out, void* stream) {
  if (in.group_size > kMaxGroup) {
    throw std::runtime_error("grpo kernel (cuda): G = " + std::to_string(in.group_size) + " exceeds " +
                             std::to_string(kMaxGroup));
  }
  if (in.groups == 0) return;
  int threads = 128;
  int64_t blocks = (in.groups + threads - 1) / threads;
  grpo_kernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(in, out);
  check(cudaGetLastError(), "grpo kernel launch");
}

}  // namespace cuda
}  // namespace crpo
