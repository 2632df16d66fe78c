// Counterfactual video transforms on raw frame buffers (crpo-method.md section 1):
// horizontal flip (mirror the width axis), temporal reversal, both, and segment swap
// (two segments of a clip concatenated in the other order). Dependency-free C++17:
// the core addon and the torch addon's CPU path both call these.
#pragma once

#include <cstddef>
#include <cstdint>

namespace crpo {

// Memory layout of a batch of clips. Both are dense and row-major.
enum class FrameLayout { BTHWC = 0, BTCHW = 1 };

enum class VideoTransform { HFlip = 0, Reverse = 1, HFlipReverse = 2, Swap = 3 };

struct VideoShape {
  int64_t batch = 0;     // B
  int64_t frames = 0;    // T
  int64_t height = 0;    // H
  int64_t width = 0;     // W
  int64_t channels = 0;  // C
  FrameLayout layout = FrameLayout::BTHWC;
  int64_t element_bytes = 1;  // 1 (uint8) or 4 (float32); the kernels only move bytes

  int64_t frame_bytes() const { return height * width * channels * element_bytes; }
  int64_t total_bytes() const { return batch * frames * frame_bytes(); }
};

// Applies `transform` from `in` to `out` (distinct, non-overlapping buffers of total_bytes()).
// `swap_at` is the first frame of the second segment for Swap (0 < swap_at < T); ignored otherwise.
// Output of Swap: frames [swap_at, T) followed by frames [0, swap_at).
// Preconditions (checked by the callers, not here): shape sizes >= 0, element_bytes in {1, 4}.
void apply_video_transform(const uint8_t* in, uint8_t* out, const VideoShape& shape, VideoTransform transform,
                           int64_t swap_at);

// Per-op entry points, same contract.
void hflip_frames(const uint8_t* in, uint8_t* out, const VideoShape& shape);
void reverse_frames(const uint8_t* in, uint8_t* out, const VideoShape& shape);
void hflip_reverse_frames(const uint8_t* in, uint8_t* out, const VideoShape& shape);
void swap_segments(const uint8_t* in, uint8_t* out, const VideoShape& shape, int64_t swap_at);

}  // namespace crpo
