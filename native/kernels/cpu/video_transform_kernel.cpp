// CPU kernels for the counterfactual video transforms. Temporal ops are one block copy per
// frame (memcpy bandwidth). The horizontal flip reverses each row in units of one "pixel"
// (C * element bytes for BTHWC, element bytes for BTCHW); the common pixel sizes get
// fixed-size copies the compiler can unroll, 3-byte RGB rows get an SSSE3 shuffle path.
#include "video_transform_kernel.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CRPO_HAVE_X86 1
#endif

namespace crpo {
namespace {

// Reverse one row of `count` pixels of compile-time size N bytes.
template <int N>
inline void reverse_row_fixed(const uint8_t* in, uint8_t* out, int64_t count) {
  const uint8_t* src = in + (count - 1) * N;
  for (int64_t x = 0; x < count; ++x) {
    std::memcpy(out + x * N, src - x * N, N);
  }
}

inline void reverse_row_generic(const uint8_t* in, uint8_t* out, int64_t count, int64_t pixel) {
  const uint8_t* src = in + (count - 1) * pixel;
  for (int64_t x = 0; x < count; ++x) {
    std::memcpy(out + x * pixel, src - x * pixel, static_cast<size_t>(pixel));
  }
}

#ifdef CRPO_HAVE_X86
// 16 RGB pixels (48 bytes) reversed with byte shuffles. Output vector v holds bytes
// [16v, 16v+16) of the reversed block; each byte comes from one of the three input vectors.
struct RgbShuffleMasks {
  alignas(16) int8_t m[3][3][16];  // [output vector][input vector][byte]
  RgbShuffleMasks() {
    for (int v = 0; v < 3; ++v)
      for (int s = 0; s < 3; ++s)
        for (int b = 0; b < 16; ++b) m[v][s][b] = -128;  // -128 = write zero
    for (int o = 0; o < 48; ++o) {
      int pixel = o / 3, c = o % 3;
      int i = (15 - pixel) * 3 + c;  // source byte in the 48-byte block
      m[o / 16][i / 16][o % 16] = static_cast<int8_t>(i % 16);
    }
  }
};
const RgbShuffleMasks kRgbMasks;

// `stream`: write with non-temporal stores (output 16-byte aligned; for buffers larger than the cache).
__attribute__((target("ssse3"))) void reverse_row_rgb_ssse3(const uint8_t* in, uint8_t* out, int64_t count,
                                                            bool stream) {
  __m128i masks[3][3];
  for (int v = 0; v < 3; ++v)
    for (int s = 0; s < 3; ++s) masks[v][s] = _mm_load_si128(reinterpret_cast<const __m128i*>(kRgbMasks.m[v][s]));
  // Input is read front to back (prefetch-friendly): input pixels [x, x+16) land reversed at
  // output pixels [count-16-x, count-x).
  int64_t x = 0;
  for (; x + 16 <= count; x += 16) {
    const uint8_t* src = in + x * 3;
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32));
    uint8_t* dst_block = out + (count - 16 - x) * 3;
    for (int v = 0; v < 3; ++v) {
      __m128i r = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(a, masks[v][0]), _mm_shuffle_epi8(b, masks[v][1])),
                               _mm_shuffle_epi8(c, masks[v][2]));
      uint8_t* dst = dst_block + v * 16;
      if (stream)
        _mm_stream_si128(reinterpret_cast<__m128i*>(dst), r);
      else
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), r);
    }
  }
  // Tail: the last (count - x) input pixels go to the first output pixels.
  for (; x < count; ++x) std::memcpy(out + (count - 1 - x) * 3, in + x * 3, 3);
}

// 4-byte pixels (float32 BTCHW rows, RGBA uint8): four per vector, reversed with one SSE2 shuffle.
void reverse_row_u32_sse2(const uint8_t* in, uint8_t* out, int64_t count) {
  int64_t x = 0;
  for (; x + 4 <= count; x += 4) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + x * 4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (count - 4 - x) * 4), _mm_shuffle_epi32(v, 0x1B));
  }
  for (; x < count; ++x) std::memcpy(out + (count - 1 - x) * 4, in + x * 4, 4);
}

bool cpu_has_ssse3() {
  static const bool has = __builtin_cpu_supports("ssse3");
  return has;
}
#endif

// Reverses `rows` consecutive rows, each of `count` pixels of `pixel` bytes.
void reverse_rows(const uint8_t* in, uint8_t* out, int64_t rows, int64_t count, int64_t pixel, bool stream) {
  const int64_t row_bytes = count * pixel;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* i = in + r * row_bytes;
    uint8_t* o = out + r * row_bytes;
    switch (pixel) {
      case 1:
        reverse_row_fixed<1>(i, o, count);
        break;
      case 3:
#ifdef CRPO_HAVE_X86
        if (cpu_has_ssse3()) {
          // Full 48-byte blocks start at o + 3 * (count % 16) + 48k: stream only when those are aligned.
          const bool aligned = (reinterpret_cast<uintptr_t>(o) + 3 * (count % 16)) % 16 == 0;
          reverse_row_rgb_ssse3(i, o, count, stream && aligned);
          break;
        }
#endif
        reverse_row_fixed<3>(i, o, count);
        break;
      case 4:
#ifdef CRPO_HAVE_X86
        reverse_row_u32_sse2(i, o, count);
#else
        reverse_row_fixed<4>(i, o, count);
#endif
        break;
      case 8:
        reverse_row_fixed<8>(i, o, count);
        break;
      case 12:
        reverse_row_fixed<12>(i, o, count);
        break;
      case 16:
        reverse_row_fixed<16>(i, o, count);
        break;
      default:
        reverse_row_generic(i, o, count, pixel);
        break;
    }
  }
}

// Outputs larger than this are written with non-temporal stores where the kernel can: they
// would not stay in cache anyway, and streaming skips the read-for-ownership of every line.
constexpr int64_t kStreamBytes = 8 << 20;

// Flips one frame (all channels) from `in` to `out`.
void hflip_frame(const uint8_t* in, uint8_t* out, const VideoShape& s, bool stream) {
  if (s.layout == FrameLayout::BTHWC) {
    reverse_rows(in, out, s.height, s.width, s.channels * s.element_bytes, stream);
  } else {
    reverse_rows(in, out, s.channels * s.height, s.width, s.element_bytes, stream);
  }
}

void store_fence() {
#ifdef CRPO_HAVE_X86
  _mm_sfence();
#endif
}

}  // namespace

void hflip_frames(const uint8_t* in, uint8_t* out, const VideoShape& s) {
  const int64_t fb = s.frame_bytes();
  const int64_t n = s.batch * s.frames;
  const bool stream = s.total_bytes() >= kStreamBytes;
  for (int64_t f = 0; f < n; ++f) hflip_frame(in + f * fb, out + f * fb, s, stream);
  if (stream) store_fence();
}

void reverse_frames(const uint8_t* in, uint8_t* out, const VideoShape& s) {
  const int64_t fb = s.frame_bytes();
  for (int64_t b = 0; b < s.batch; ++b) {
    const uint8_t* clip_in = in + b * s.frames * fb;
    uint8_t* clip_out = out + b * s.frames * fb;
    for (int64_t t = 0; t < s.frames; ++t) {
      std::memcpy(clip_out + t * fb, clip_in + (s.frames - 1 - t) * fb, static_cast<size_t>(fb));
    }
  }
}

void hflip_reverse_frames(const uint8_t* in, uint8_t* out, const VideoShape& s) {
  const int64_t fb = s.frame_bytes();
  const bool stream = s.total_bytes() >= kStreamBytes;
  for (int64_t b = 0; b < s.batch; ++b) {
    const uint8_t* clip_in = in + b * s.frames * fb;
    uint8_t* clip_out = out + b * s.frames * fb;
    for (int64_t t = 0; t < s.frames; ++t) {
      hflip_frame(clip_in + (s.frames - 1 - t) * fb, clip_out + t * fb, s, stream);
    }
  }
  if (stream) store_fence();
}

void swap_segments(const uint8_t* in, uint8_t* out, const VideoShape& s, int64_t swap_at) {
  const int64_t fb = s.frame_bytes();
  const int64_t tail = s.frames - swap_at;  // frames in the second segment
  for (int64_t b = 0; b < s.batch; ++b) {
    const uint8_t* clip_in = in + b * s.frames * fb;
    uint8_t* clip_out = out + b * s.frames * fb;
    std::memcpy(clip_out, clip_in + swap_at * fb, static_cast<size_t>(tail * fb));
    std::memcpy(clip_out + tail * fb, clip_in, static_cast<size_t>(swap_at * fb));
  }
}

void apply_video_transform(const uint8_t* in, uint8_t* out, const VideoShape& shape, VideoTransform transform,
                           int64_t swap_at) {
  if (shape.total_bytes() == 0) return;
  switch (transform) {
    case VideoTransform::HFlip:
      hflip_frames(in, out, shape);
      break;
    case VideoTransform::Reverse:
      reverse_frames(in, out, shape);
      break;
    case VideoTransform::HFlipReverse:
      hflip_reverse_frames(in, out, shape);
      break;
    case VideoTransform::Swap:
      swap_segments(in, out, shape, swap_at);
      break;
  }
}

}  // namespace crpo
