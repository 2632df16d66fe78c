// Decode attention on raw CPU buffers (see decode_attention_kernel.h).
#include "kernels/cpu/decode_attention_kernel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/target_clones.h"

namespace crpo {

namespace {

// One (row n, kv head g) item of decode_attention: the rep = H / Hkv query heads that read kv head
// g, each of L rows, against Lk keys; scores go into `s` (rep * L * Lk). Eight partial sums per dot
// product so that the compiler vectorises over the head dimension.
template <typename T>
__attribute__((always_inline)) inline void decode_attention_item(const T* q, const T* k, const T* v,
                                                                 const bool* allowed, T* out, int64_t n, int64_t g,
                                                                 int64_t H, int64_t Hkv, int64_t L, int64_t Lk,
                                                                 int64_t hd, int64_t k_row, int64_t k_head, T scale,
                                                                 T* s) {
  const int64_t rep = H / Hkv;
  const T* kb = k + n * k_row + g * k_head;
  const T* vb = v + n * k_row + g * k_head;
  for (int64_t r = 0; r < rep; r++) {
    const int64_t h = g * rep + r;
    for (int64_t l = 0; l < L; l++) {
      const T* qr = q + ((n * H + h) * L + l) * hd;
      const bool* al = allowed + (n * L + l) * Lk;
      T* sr = s + (r * L + l) * Lk;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < Lk; j++) {
        const T* kj = kb + j * hd;
        T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t d = 0;
        for (; d + 8 <= hd; d += 8) {
          for (int u = 0; u < 8; u++) acc[u] += qr[d + u] * kj[d + u];
        }
        T dot = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; d < hd; d++) dot += qr[d] * kj[d];
        const T x = al[j] ? dot * scale : static_cast<T>(-1e9);
        sr[j] = x;
        mx = std::max(mx, x);
      }
      T* o = out + ((n * L + l) * H + h) * hd;
      for (int64_t d = 0; d < hd; d++) o[d] = 0;
      T sum = 0;
      for (int64_t j = 0; j < Lk; j++) {
        const T e = std::exp(sr[j] - mx);
        sum += e;
        if (e == 0) continue;  // masked keys: exp(-1e9 - max) underflows to 0
        const T* vj = vb + j * hd;
        for (int64_t d = 0; d < hd; d++) o[d] += e * vj[d];
      }
      const T inv = static_cast<T>(1) / sum;
      for (int64_t d = 0; d < hd; d++) o[d] *= inv;
    }
  }
}

template <typename T>
__attribute__((always_inline)) inline void decode_attention_range(const T* q, const T* k, const T* v,
                                                                  const bool* allowed, T* out, int64_t begin,
                                                                  int64_t end, int64_t H, int64_t Hkv, int64_t L,
                                                                  int64_t Lk, int64_t hd, int64_t k_row, int64_t k_head,
                                                                  T scale) {
  std::vector<T> s(static_cast<size_t>((H / Hkv) * L * Lk));
  for (int64_t i = begin; i < end; i++)
    decode_attention_item(q, k, v, allowed, out, i / Hkv, i % Hkv, H, Hkv, L, Lk, hd, k_row, k_head, scale, s.data());
}

}  // namespace

CRPO_AVX2_CLONE void decode_attention_f32(const float* q, const float* k, const float* v, const bool* allowed,
                                          float* out, int64_t begin, int64_t end, int64_t H, int64_t Hkv, int64_t L,
                                          int64_t Lk, int64_t hd, int64_t k_row, int64_t k_head, float scale) {
  decode_attention_range<float>(q, k, v, allowed, out, begin, end, H, Hkv, L, Lk, hd, k_row, k_head, scale);
}

void decode_attention_f64(const double* q, const double* k, const double* v, const bool* allowed, double* out,
                          int64_t begin, int64_t end, int64_t H, int64_t Hkv, int64_t L, int64_t Lk, int64_t hd,
                          int64_t k_row, int64_t k_head, double scale) {
  decode_attention_range<double>(q, k, v, allowed, out, begin, end, H, Hkv, L, Lk, hd, k_row, k_head, scale);
}

}  // namespace crpo
