// Launchers of the CUDA variants of the CPU kernels (same contracts as ../cpu/*.h). Built only
// when libtorch has CUDA. Pointers are device pointers; `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "../cpu/crr_kernel.h"
#include "../cpu/video_transform_kernel.h"

namespace crpo {
namespace cuda {

void apply_video_transform(const uint8_t* in, uint8_t* out, const VideoShape& shape, VideoTransform transform,
                           int64_t swap_at, void* stream);

// `in` and `out` hold device pointers; scalar fields as in the CPU version.
void crr_group_advantages(const CrrInputs& in, const CrrOutputs& out, void* stream);
void grpo_group_advantages(const GrpoInputs& in, const GrpoOutputs& out, void* stream);

}  // namespace cuda
}  // namespace crpo
