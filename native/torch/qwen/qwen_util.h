// Small shared helpers of the Qwen model files (qwen_model, qwen_vision, qwen_train, qwen_lora).
#pragma once

#include <torch/torch.h>

#include <array>
#include <string>
#include <vector>

namespace crpo {
namespace qwen {
namespace detail {

// (n, 3) grid rows (t, h, w) of images / videos as plain integers.
inline std::vector<std::array<int64_t, 3>> grid_rows(const at::Tensor& grid) {
  at::Tensor g = grid.to(at::kCPU, at::kLong).contiguous().view({-1, 3});
  std::vector<std::array<int64_t, 3>> out;
  const int64_t* p = g.data_ptr<int64_t>();
  for (int64_t i = 0; i < g.size(0); ++i) out.push_back({p[3 * i], p[3 * i + 1], p[3 * i + 2]});
  return out;
}

inline at::Tensor rotate_half(const at::Tensor& x) {
  int64_t d = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, d, d), x.narrow(-1, 0, d)}, -1);
}

// Accumulation type: fp32 as transformers does, fp64 when the model runs in fp64 (numerical checks).
inline at::ScalarType acc(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace detail
}  // namespace qwen
}  // namespace crpo
