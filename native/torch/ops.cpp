// Device dispatch for the counterfactual video ops and the CRR kernel (see ops.h).
#include "ops.h"

#include "common/napi_util.h"
#ifdef CRPO_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/cuda_kernels.h"
#endif

namespace crpo {

bool cuda_kernels_built() {
#ifdef CRPO_WITH_CUDA
  return true;
#else
  return false;
#endif
}

namespace {

VideoShape shape_of(const at::Tensor& t, FrameLayout layout) {
  VideoShape s;
  s.layout = layout;
  s.batch = t.size(0);
  s.frames = t.size(1);
  if (layout == FrameLayout::BTHWC) {
    s.height = t.size(2);
    s.width = t.size(3);
    s.channels = t.size(4);
  } else {
    s.channels = t.size(2);
    s.height = t.size(3);
    s.width = t.size(4);
  }
  s.element_bytes = static_cast<int64_t>(t.element_size());
  return s;
}

}  // namespace

at::Tensor video_transform(const at::Tensor& frames, FrameLayout layout, VideoTransform transform, int64_t swap_at,
                           at::Tensor out) {
  TORCH_CHECK(frames.dim() == 5, "video_transform: expected a 5-D frames tensor but got ", frames.dim(), " dims");
  TORCH_CHECK(frames.scalar_type() == at::kByte || frames.scalar_type() == at::kFloat,
              "video_transform: expected uint8 or float32 frames but got ", frames.scalar_type());
  at::Tensor in = frames.contiguous();
  if (!out.defined()) out = at::empty_like(in);
  TORCH_CHECK(out.sizes() == in.sizes() && out.scalar_type() == in.scalar_type() && out.device() == in.device() &&
                  out.is_contiguous(),
              "video_transform: output must match the input's shape, dtype and device and be contiguous");
  if (transform == VideoTransform::Swap) {
    TORCH_CHECK(swap_at > 0 && swap_at < in.size(1), "video_transform: swap_at must be in [1, T-1], got ", swap_at);
  }
  VideoShape s = shape_of(in, layout);
  const uint8_t* src = static_cast<const uint8_t*>(in.data_ptr());
  uint8_t* dst = static_cast<uint8_t*>(out.data_ptr());
  if (in.is_cuda()) {
#ifdef CRPO_WITH_CUDA
    cuda::apply_video_transform(src, dst, s, transform, swap_at, at::cuda::getCurrentCUDAStream().stream());
#else
    TORCH_CHECK(false, "video_transform: CUDA tensor given but crpo was built without CUDA kernels");
#endif
  } else {
    apply_video_transform(src, dst, s, transform, swap_at);
  }
  return out;
}

CrrResultTensors crr_advantages(const CrrTensors& t, const RewardWeights& w, AdvantageNorm norm, double eps) {
  TORCH_CHECK(t.orig_answers.dim() == 2 && t.cf_answers.dim() == 2, "crr_advantages: answers must be (B, G)");
  const int64_t B = t.orig_answers.size(0), G = t.orig_answers.size(1), H = t.cf_answers.size(1);
  auto dev = t.orig_answers.device();
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  auto u8 = at::TensorOptions().dtype(at::kByte).device(dev);
  CrrResultTensors r;
  r.orig_reward = at::empty({B, G}, f32);
  r.cf_reward = at::empty({B, H}, f32);
  r.orig_advantage = at::empty({B, G}, f32);
  r.cf_advantage = at::empty({B, H}, f32);
  r.correct = at::empty({B, G}, f32);
  r.expected = at::empty({B, H}, f32);
  r.p_orig = at::empty({B}, f32);
  r.p_cf = at::empty({B}, f32);
  r.orig_flat = at::empty({B}, u8);
  r.cf_flat = at::empty({B}, u8);
  // Inputs must already be contiguous on `dev` (a .contiguous() temporary would dangle here).
  auto i32 = [&](const at::Tensor& x) -> const int32_t* {
    if (!x.defined()) return nullptr;
    TORCH_CHECK(x.is_contiguous() && x.scalar_type() == at::kInt && x.device() == dev,
                "crr_advantages: integer inputs must be contiguous int32 on ", dev);
    return x.data_ptr<int32_t>();
  };
  auto fp = [&](const at::Tensor& x) -> const float* {
    if (!x.defined()) return nullptr;
    TORCH_CHECK(x.is_contiguous() && x.scalar_type() == at::kFloat && x.device() == dev,
                "crr_advantages: format flags must be contiguous float32 on ", dev);
    return x.data_ptr<float>();
  };
  CrrInputs in;
  in.groups = B;
  in.orig_size = G;
  in.cf_size = H;
  in.orig_answers = i32(t.orig_answers);
  in.cf_answers = i32(t.cf_answers);
  in.truth = i32(t.truth);
  in.relation = i32(t.relation);
  in.cf_label = i32(t.cf_label);
  in.num_options = i32(t.num_options);
  in.orig_format = fp(t.orig_format);
  in.cf_format = fp(t.cf_format);
  in.weights = w;
  in.norm = norm;
  in.eps = eps;
  CrrOutputs out;
  out.orig_reward = r.orig_reward.data_ptr<float>();
  out.cf_reward = r.cf_reward.data_ptr<float>();
  out.orig_advantage = r.orig_advantage.data_ptr<float>();
  out.cf_advantage = r.cf_advantage.data_ptr<float>();
  out.correct = r.correct.data_ptr<float>();
  out.expected = r.expected.data_ptr<float>();
  out.p_orig = r.p_orig.data_ptr<float>();
  out.p_cf = r.p_cf.data_ptr<float>();
  out.orig_flat = r.orig_flat.data_ptr<uint8_t>();
  out.cf_flat = r.cf_flat.data_ptr<uint8_t>();
  if (dev.is_cuda()) {
#ifdef CRPO_WITH_CUDA
    cuda::crr_group_advantages(in, out, at::cuda::getCurrentCUDAStream().stream());
#else
    TORCH_CHECK(false, "crr_advantages: CUDA tensors given but crpo was built without CUDA kernels");
#endif
  } else {
    crr_group_advantages(in, out);
  }
  return r;
}

}  // namespace crpo
