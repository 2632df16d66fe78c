// The vision modules of the native policy (see policy_modules.h): pre-norm ViT blocks, the
// tubelet encoder with learned spatial + temporal positions, the projector that merges
// neighbouring patches into LM tokens, and PolicyNet (vision + projector + LM).
#include <cmath>

#include "torch/model/policy_internal.h"
#include "torch/model/policy_modules.h"

namespace crpo {
namespace policy {

VisionBlockImpl::VisionBlockImpl(int64_t dim, int64_t heads_, int64_t mlp) : heads(heads_) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  qkv = register_module("qkv", linear(dim, 3 * dim, true));
  proj = register_module("proj", linear(dim, dim, true));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  fc1 = register_module("fc1", linear(dim, mlp, true));
  fc2 = register_module("fc2", linear(mlp, dim, true));
}

torch::Tensor VisionBlockImpl::forward(const torch::Tensor& x) {
  const int64_t M = x.size(0), P = x.size(1), D = x.size(2), hd = D / heads;
  auto qkv_ = qkv->forward(norm1->forward(x)).view({M, P, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // (3, M, H, P, hd)
  auto q = qkv_[0], k = qkv_[1], v = qkv_[2];
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto attn = torch::softmax(upcast(scores), -1).to(x.scalar_type());
  auto o = torch::matmul(attn, v).transpose(1, 2).reshape({M, P, D});
  auto h = x + proj->forward(o);
  return h + fc2->forward(torch::gelu(fc1->forward(norm2->forward(h))));
}

VisionEncoderImpl::VisionEncoderImpl(const PolicyConfig& c)
    : frames(c.frames),
      image(c.image_size),
      channels(c.channels),
      patch(c.patch_size),
      tpatch(c.temporal_patch),
      dim(c.vision_dim),
      stem_channels(c.vision_stem),
      stem_down_channels(c.vision_stem_down),
      clip_attention(c.vision_clip_attention) {
  if (stem_channels > 0) {
    stem = register_module(
        "stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, stem_channels, 3).padding(1).bias(true)));
  }
  if (stem_down_channels > 0) {
    stem_down = register_module(
        "stem_down",
        torch::nn::Conv2d(
            torch::nn::Conv2dOptions(stem_channels, stem_down_channels, 3).stride(2).padding(1).bias(true)));
  }
  const int64_t per_cell = stem_down_channels > 0 ? stem_down_channels : stem_channels > 0 ? stem_channels : channels;
  const int64_t cell = stem_down_channels > 0 ? patch / 2 : patch;  // feature-map cells per patch side
  patch_embed = register_module("patch_embed", linear(tpatch * cell * cell * per_cell, dim, true));
  spatial_pos = register_parameter("spatial_pos", torch::zeros({c.patches_per_group(), dim}));
  temporal_pos = register_parameter("temporal_pos", torch::zeros({c.tubelets(), dim}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.vision_layers; i++) blocks->push_back(VisionBlock(dim, c.vision_heads, c.vision_mlp));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
}

torch::Tensor VisionEncoderImpl::forward(const torch::Tensor& pixels) {
  const int64_t M = pixels.size(0), g = image / patch, Tg = frames / tpatch, P = g * g;
  TORCH_CHECK(pixels.dim() == 5 && pixels.size(1) == frames && pixels.size(2) == image && pixels.size(3) == image &&
                  pixels.size(4) == channels,
              "vision encoder: pixels are ", pixels.sizes(), ", expected [M, ", frames, ", ", image, ", ", image, ", ",
              channels, "]");
  auto features = pixels;
  int64_t C = channels, side = image, cell = patch;
  if (stem) {
    // Every frame through the stem: (M*T, C, H, W) -> (M*T, S, H, W) [-> (M*T, S2, H/2, W/2)] -> channels last.
    // The convolutions keep the pixels' channels-last layout, and this libtorch's GELU is ~5x slower
    // on a channels-last map than on a contiguous one; the front with the stride-2 convolution
    // runs its GELUs on the (contiguous) NHWC view instead (slow twin under ReferencePaths: the
    // plain call; fast_path_check "stem_gelu"). The single stem keeps the plain call, whose last
    // bits the published demo, reproduce and CRR-study bases were trained with.
    auto gelu = [this](const torch::Tensor& f) {
      if (!stem_down || reference_paths() || !f.is_contiguous(at::MemoryFormat::ChannelsLast)) return torch::gelu(f);
      return torch::gelu(f.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
    };
    auto f = gelu(stem->forward(pixels.reshape({M * frames, image, image, channels}).permute({0, 3, 1, 2})));
    C = stem_channels;
    if (stem_down) {
      f = gelu(stem_down->forward(f));
      C = stem_down_channels;
      side = image / 2;
      cell = patch / 2;
    }
    features = f.permute({0, 2, 3, 1}).reshape({M, frames, side, side, C});
  }
  // Tubelets: (M, T', tp, gy, c, gx, c, C) -> (M*T', gy*gx, tp*c*c*C); one batch for all frame groups.
  auto x = features.reshape({M, Tg, tpatch, g, cell, g, cell, C})
               .permute({0, 1, 3, 5, 2, 4, 6, 7})
               .reshape({M * Tg, P, tpatch * cell * cell * C});
  x = patch_embed->forward(x).view({M, Tg, P, dim}) + spatial_pos.view({1, 1, P, dim}) +
      temporal_pos.view({1, Tg, 1, dim});
  x = clip_attention ? x.reshape({M, Tg * P, dim}) : x.reshape({M * Tg, P, dim});
  for (size_t i = 0; i < blocks->size(); i++) x = blocks[i]->as<VisionBlock>()->forward(x);
  return norm->forward(x).view({M, Tg, P, dim});
}

ProjectorImpl::ProjectorImpl(int64_t vision_dim, int64_t lm_dim, int64_t grid_, int64_t merge_)
    : grid(grid_), merge(merge_) {
  const int64_t in = vision_dim * merge * merge;
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({vision_dim}).eps(1e-6)));
  fc1 = register_module("fc1", linear(in, in, true));
  fc2 = register_module("fc2", linear(in, lm_dim, true));
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& x) {
  const int64_t M = x.size(0), Tg = x.size(1), D = x.size(3), gm = grid / merge;
  auto h = norm->forward(x)
               .reshape({M, Tg, gm, merge, gm, merge, D})
               .permute({0, 1, 2, 4, 3, 5, 6})
               .reshape({M, Tg * gm * gm, merge * merge * D});  // tokens in (t, row, col) order
  return fc2->forward(torch::gelu(fc1->forward(h)));
}

PolicyNetImpl::PolicyNetImpl(const PolicyConfig& c) {
  vision = register_module("vision", VisionEncoder(c));
  projector = register_module("projector", Projector(c.vision_dim, c.lm_dim, c.grid(), c.merge_size));
  lm = register_module("lm", LanguageModel(c));
  if (c.vision_aux_classes > 0)
    vision_aux = register_module("vision_aux", linear(c.vision_dim, c.vision_aux_classes, true));
}

}  // namespace policy
}  // namespace crpo
