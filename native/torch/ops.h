// Tensor-level entry points of the foundation ops, with device dispatch (torchvision style):
// checks, then the shared CPU kernel or, when built with CUDA, the CUDA kernel. The model and
// trainer call these on device tensors; the JS bindings in addon.cpp wrap JS buffers first.
#pragma once

#include <torch/torch.h>

#include <string>

#include "common/op_error.h"
#include "kernels/cpu/crr_kernel.h"
#include "kernels/cpu/video_transform_kernel.h"

namespace crpo {

// frames: uint8 or float32, 5-D in `layout`, contiguous. Writes into `out` (same shape, dtype,
// device) when defined, else allocates. Returns the output.
at::Tensor video_transform(const at::Tensor& frames, FrameLayout layout, VideoTransform transform, int64_t swap_at,
                           at::Tensor out = at::Tensor());

// Runs the CRR kernel on tensors that live on one device. Tensors as named in CrrInputs /
// CrrOutputs; optional ones may be undefined.
struct CrrTensors {
  at::Tensor orig_answers, cf_answers, truth, relation, cf_label, num_options, orig_format, cf_format;
};
struct CrrResultTensors {
  at::Tensor orig_reward, cf_reward, orig_advantage, cf_advantage, correct, expected, p_orig, p_cf, orig_flat, cf_flat;
};
CrrResultTensors crr_advantages(const CrrTensors& t, const RewardWeights& w, AdvantageNorm norm, double eps);

bool cuda_kernels_built();

// Converts a c10::Error (or anything else) thrown by `body` into an OpError with a stable code.
template <typename F>
auto torch_guard(const std::string& op, F body) -> decltype(body()) {
  try {
    return body();
  } catch (const c10::Error& e) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_TORCH", op + ": " + e.what_without_backtrace());
  }
}

}  // namespace crpo
