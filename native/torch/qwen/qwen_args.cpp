// The Qwen bindings' model registry and argument readers (see qwen_args.h).
#include "torch/qwen/qwen_args.h"

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>

#include "common/napi_util.h"
#include "torch/ops.h"

namespace crpo {
namespace qwen_js {

using qwen::Model;

namespace {

std::mutex g_models_mu;
std::map<int64_t, std::shared_ptr<Model>> g_models;
int64_t g_next_id = 1;

}  // namespace

int64_t add_model(std::shared_ptr<Model> model) {
  std::lock_guard<std::mutex> lock(g_models_mu);
  const int64_t id = g_next_id++;
  g_models[id] = std::move(model);
  return id;
}

void erase_model(int64_t id) {
  std::lock_guard<std::mutex> lock(g_models_mu);
  g_models.erase(id);
}

size_t live_models() {
  std::lock_guard<std::mutex> lock(g_models_mu);
  return g_models.size();
}

std::shared_ptr<Model> find_model(const Napi::Value& v, const std::string& op) {
  int64_t id = read_int(v, op, "model", 1, INT64_C(1) << 52);
  std::lock_guard<std::mutex> lock(g_models_mu);
  auto it = g_models.find(id);
  if (it == g_models.end())
    throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED",
                  op + ": model " + std::to_string(id) + " was disposed or never loaded");
  return it->second;
}

qwen::Config parse_config(const Napi::Object& o, const std::string& op) {
  qwen::Config c;
  std::string arch = args::optional_string(o, "arch", op, "");
  if (arch == "qwen2_5_vl")
    c.arch = qwen::Arch::Qwen25VL;
  else if (arch == "qwen3_vl")
    c.arch = qwen::Arch::Qwen3VL;
  else
    throw_range_error(op, "config.arch", "'qwen2_5_vl' or 'qwen3_vl'", "'" + arch + "'");
  Napi::Object t = args::object(o.Get("text"), op, "config.text");
  c.text.hidden = args::required_int(t, "hiddenSize", op, kAnyIntMin, kAnyIntMax);
  c.text.intermediate = args::required_int(t, "intermediateSize", op, kAnyIntMin, kAnyIntMax);
  c.text.layers = args::required_int(t, "numLayers", op, kAnyIntMin, kAnyIntMax);
  c.text.heads = args::required_int(t, "numHeads", op, kAnyIntMin, kAnyIntMax);
  c.text.kv_heads = args::required_int(t, "numKvHeads", op, kAnyIntMin, kAnyIntMax);
  c.text.head_dim = args::required_int(t, "headDim", op, kAnyIntMin, kAnyIntMax);
  c.text.vocab = args::required_int(t, "vocabSize", op, kAnyIntMin, kAnyIntMax);
  c.text.eps = args::optional_number(t, "rmsNormEps", op, 1e-6);
  c.text.theta = args::optional_number(t, "ropeTheta", op, 10000.0);
  c.text.mrope_section = args::optional_ints(t, "mropeSection", op, kAnyIntMin, kAnyIntMax);
  c.text.interleaved = args::optional_bool(t, "mropeInterleaved", op, false);
  c.text.attn_bias = args::optional_bool(t, "attentionBias", op, false);
  c.text.qk_norm = args::optional_bool(t, "qkNorm", op, false);
  c.text.tie = args::optional_bool(t, "tieWordEmbeddings", op, false);
  c.text.act = args::optional_string(t, "hiddenAct", op, "silu");
  Napi::Object v = args::object(o.Get("vision"), op, "config.vision");
  c.vision.depth = args::required_int(v, "depth", op, kAnyIntMin, kAnyIntMax);
  c.vision.hidden = args::required_int(v, "hiddenSize", op, kAnyIntMin, kAnyIntMax);
  c.vision.intermediate = args::required_int(v, "intermediateSize", op, kAnyIntMin, kAnyIntMax);
  c.vision.heads = args::required_int(v, "numHeads", op, kAnyIntMin, kAnyIntMax);
  c.vision.patch = args::required_int(v, "patchSize", op, kAnyIntMin, kAnyIntMax);
  c.vision.temporal_patch = args::optional_int(v, "temporalPatchSize", op, 2, kAnyIntMin, kAnyIntMax);
  c.vision.merge = args::optional_int(v, "spatialMergeSize", op, 2, kAnyIntMin, kAnyIntMax);
  c.vision.in_ch = args::optional_int(v, "inChannels", op, 3, kAnyIntMin, kAnyIntMax);
  c.vision.out_hidden = args::required_int(v, "outHiddenSize", op, kAnyIntMin, kAnyIntMax);
  c.vision.act = args::optional_string(v, "hiddenAct", op, "silu");
  c.vision.window_size = args::optional_int(v, "windowSize", op, 0, kAnyIntMin, kAnyIntMax);
  c.vision.fullatt_blocks = args::optional_ints(v, "fullattBlockIndexes", op, kAnyIntMin, kAnyIntMax);
  c.vision.num_pos = args::optional_int(v, "numPositionEmbeddings", op, 0, kAnyIntMin, kAnyIntMax);
  c.vision.deepstack = args::optional_ints(v, "deepstackVisualIndexes", op, kAnyIntMin, kAnyIntMax);
  c.image_token = args::required_int(o, "imageTokenId", op, kAnyIntMin, kAnyIntMax);
  c.video_token = args::required_int(o, "videoTokenId", op, kAnyIntMin, kAnyIntMax);
  if (c.text.mrope_section.size() != 3)
    throw_range_error(op, "config.text.mropeSection", "3 integers",
                      std::to_string(c.text.mrope_section.size()) + " values");
  return c;
}

at::ScalarType parse_dtype(const std::string& s, const std::string& op, const std::string& param) {
  if (s == "float32" || s == "F32") return at::kFloat;
  if (s == "bfloat16" || s == "BF16") return at::kBFloat16;
  if (s == "float16" || s == "F16") return at::kHalf;
  if (s == "float64" || s == "F64") return at::kDouble;
  throw_range_error(op, param, "'float32', 'bfloat16' or 'float16'", "'" + s + "'");
}

at::Device parse_device(const std::string& s, const std::string& op) {
  try {
    at::Device d(s);
    if (d.is_cuda() && !torch::cuda::is_available())
      throw OpError(ErrorKind::Generic, "ERR_CRPO_NO_CUDA",
                    op + ": device '" + s + "' requested but CUDA is not available");
    return d;
  } catch (const c10::Error&) {
    throw_range_error(op, "device", "'cpu' or 'cuda[:N]'", "'" + s + "'");
  }
}

// Copies a typed array into a new CPU tensor of `sizes` (checked element count).
at::Tensor copy_array(const Napi::Value& v, const std::string& op, const std::string& param, std::vector<int64_t> sizes,
                      napi_typedarray_type type) {
  ByteView b = read_typed_array(v, op, param);
  int64_t n = 1;
  for (auto s : sizes) n *= s;
  if (b.type != type) throw_type_error(op, param, type == napi_float32_array ? "a Float32Array" : "an Int32Array", v);
  if (static_cast<int64_t>(b.length) != n)
    throw_range_error(op, param, std::to_string(n) + " elements", std::to_string(b.length) + " elements");
  at::Tensor t = torch::from_blob(b.data, sizes, type == napi_float32_array ? at::kFloat : at::kInt).clone();
  return type == napi_int32_array ? t.to(at::kLong) : t;
}

qwen::Inputs parse_inputs(const Napi::Value& v, const qwen::Config& cfg, const std::string& op) {
  Napi::Object o = args::object(v, op, "inputs");
  qwen::Inputs in;
  int64_t B = args::required_int(o, "batch", op, kAnyIntMin, kAnyIntMax),
          L = args::required_int(o, "seqLen", op, kAnyIntMin, kAnyIntMax);
  if (B < 1 || L < 1)
    throw_range_error(op, "inputs.batch/seqLen", "positive integers", std::to_string(B) + "/" + std::to_string(L));
  in.input_ids = copy_array(o.Get("inputIds"), op, "inputs.inputIds", {B, L}, napi_int32_array);
  if (args::present(o, "attentionMask"))
    in.attention_mask = copy_array(o.Get("attentionMask"), op, "inputs.attentionMask", {B, L}, napi_int32_array);
  in.position_ids = copy_array(o.Get("positionIds"), op, "inputs.positionIds", {3, B, L}, napi_int32_array);
  const int64_t pd = cfg.vision.in_ch * cfg.vision.temporal_patch * cfg.vision.patch * cfg.vision.patch;
  auto vis = [&](const char* pk, const char* gk, at::Tensor* px, at::Tensor* grid) {
    if (!args::present(o, pk)) return;
    ByteView g = read_typed_array(o.Get(gk), op, std::string("inputs.") + gk);
    if (g.length % 3 != 0 || g.length == 0)
      throw_range_error(op, std::string("inputs.") + gk, "3 integers per grid", std::to_string(g.length) + " values");
    *grid = copy_array(o.Get(gk), op, std::string("inputs.") + gk, {static_cast<int64_t>(g.length / 3), 3},
                       napi_int32_array);
    ByteView p = read_typed_array(o.Get(pk), op, std::string("inputs.") + pk);
    if (p.length % pd != 0)
      throw_range_error(op, std::string("inputs.") + pk, "a multiple of " + std::to_string(pd) + " values",
                        std::to_string(p.length));
    *px = copy_array(o.Get(pk), op, std::string("inputs.") + pk, {static_cast<int64_t>(p.length / pd), pd},
                     napi_float32_array);
  };
  vis("pixelValues", "imageGridThw", &in.pixel_values, &in.image_grid);
  vis("pixelValuesVideos", "videoGridThw", &in.pixel_values_videos, &in.video_grid);
  in.share_vision = args::optional_bool(o, "shareVision", op, false);
  in.image_repeats = args::optional_ints(o, "imageRepeats", op, kAnyIntMin, kAnyIntMax);
  in.video_repeats = args::optional_ints(o, "videoRepeats", op, kAnyIntMin, kAnyIntMax);
  if (args::present(o, "prefixGroups")) {
    // (rows, prefix length) per group, consecutive rows (lib/hf/model.ts checks them first)
    ByteView g = read_typed_array(o.Get("prefixGroups"), op, "inputs.prefixGroups");
    if (g.length % 2 != 0 || g.length == 0)
      throw_range_error(op, "inputs.prefixGroups", "2 integers (rows, prefix length) per group",
                        std::to_string(g.length) + " values");
    at::Tensor t = copy_array(o.Get("prefixGroups"), op, "inputs.prefixGroups", {static_cast<int64_t>(g.length / 2), 2},
                              napi_int32_array);
    int64_t rows = 0;
    for (int64_t i = 0; i < t.size(0); ++i) {
      const int64_t n = t[i][0].item<int64_t>(), p = t[i][1].item<int64_t>();
      if (n < 1 || p < 1 || p > L)
        throw_range_error(op, "inputs.prefixGroups[" + std::to_string(i) + "]",
                          "rows >= 1 and a prefix length in [1, " + std::to_string(L) + "]",
                          std::to_string(n) + " rows, prefix length " + std::to_string(p));
      rows += n;
      in.prefix_groups.emplace_back(n, p);
    }
    if (rows != B)
      throw_range_error(op, "inputs.prefixGroups", "groups holding the batch's " + std::to_string(B) + " rows",
                        std::to_string(rows) + " rows");
  }
  return in;
}

Napi::Object tensor_to_js(Napi::Env env, const at::Tensor& t0) {
  at::Tensor t = t0.detach().to(at::kCPU, at::kFloat).contiguous();
  Napi::Float32Array a = Napi::Float32Array::New(env, t.numel());
  if (t.numel() > 0) std::memcpy(a.Data(), t.data_ptr<float>(), t.numel() * sizeof(float));
  Napi::Array shape = Napi::Array::New(env, t.dim());
  for (int64_t i = 0; i < t.dim(); ++i)
    shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(t.size(i))));
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", a);
  o.Set("shape", shape);
  return o;
}
}  // namespace qwen_js
}  // namespace crpo
