// Decode attention on raw CPU buffers: causal grouped-KV attention of a few query rows against
// keys and values already in place (a KV cache), float32 and float64. Dependency-free C++17. The
// torch entry point (crpo::policy::decode_attention, native/torch/model/language_model.cpp) checks
// shapes and strides and splits the items over threads; its slow twin is the ATen matmul path of
// AttentionImpl::forward, and policyGradCheck('fast:attention_decode') compares the two.
#pragma once

#include <cstdint>

namespace crpo {

// Items [begin, end) of the N * Hkv (row n = i / Hkv, kv head g = i % Hkv) items. q (N, H, L, hd)
// contiguous; key j of row n, kv head g at k + n * k_row + g * k_head + j * hd (hd contiguous
// values; v alike); allowed (N, L, Lk) contiguous; out (N, L, H * hd). Query head h reads kv head
// h / (H / Hkv); masked scores are -1e9 before the softmax.
void decode_attention_f32(const float* q, const float* k, const float* v, const bool* allowed, float* out,
                          int64_t begin, int64_t end, int64_t H, int64_t Hkv, int64_t L, int64_t Lk, int64_t hd,
                          int64_t k_row, int64_t k_head, float scale);
void decode_attention_f64(const double* q, const double* k, const double* v, const bool* allowed, double* out,
                          int64_t begin, int64_t end, int64_t H, int64_t Hkv, int64_t L, int64_t Lk, int64_t hd,
                          int64_t k_row, int64_t k_head, double scale);

}  // namespace crpo
