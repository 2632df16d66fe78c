// JS bindings of the Qwen2.5-VL / Qwen3-VL models (registered as the "qwen" module of the torch
// addon): load weights from memory-mapped safetensors shards, forward with named intermediate
// outputs, objective gradients, greedy generation, LoRA and weight read-back for export. Inputs
// are copied into tensors on the JS thread; every heavy call runs in an AsyncWorker that calls
// crpo::prepare_thread() first and maps c10::Error to ERR_CRPO_TORCH through torch_guard.
#include <napi.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "common/napi_util.h"
#include "torch/torch_worker.h"
#include "torch/exports.h"
#include "torch/ops.h"
#include "torch/qwen/qwen_model.h"

namespace crpo {
namespace {

using qwen::Model;

std::mutex g_models_mu;
std::map<int64_t, std::shared_ptr<Model>> g_models;
std::atomic<int64_t> g_next_id{1};

std::shared_ptr<Model> find_model(const Napi::Value& v, const std::string& op) {
  int64_t id = read_int(v, op, "model", 1, INT64_C(1) << 52);
  std::lock_guard<std::mutex> lock(g_models_mu);
  auto it = g_models.find(id);
  if (it == g_models.end())
    throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED",
                  op + ": model " + std::to_string(id) + " was disposed or never loaded");
  return it->second;
}

// A promise worker whose result is built on the JS thread from C++ data after the work ran.
using QwenWorker = TorchWorker;  // native/torch/torch_worker.h

// ---- argument readers ------------------------------------------------------------------------

Napi::Object read_object(const Napi::Value& v, const std::string& op, const std::string& param) {
  if (!v.IsObject() || v.IsArray()) throw_type_error(op, param, "an object", v);
  return v.As<Napi::Object>();
}

int64_t get_int(const Napi::Object& o, const char* key, const std::string& op, int64_t dflt, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) throw_type_error(op, key, "an integer", v);
    return dflt;
  }
  return read_int(v, op, key, INT64_MIN / 2, INT64_MAX / 2);
}

double get_num(const Napi::Object& o, const char* key, const std::string& op, double dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  return read_number(v, op, key);
}

bool get_bool(const Napi::Object& o, const char* key, bool dflt) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) return dflt;
  return v.As<Napi::Boolean>().Value();
}

std::string get_str(const Napi::Object& o, const char* key, const std::string& op, const std::string& dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsString()) throw_type_error(op, key, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

std::vector<int64_t> get_ints(const Napi::Object& o, const char* key, const std::string& op) {
  std::vector<int64_t> out;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) throw_type_error(op, key, "an array of integers", v);
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(read_int(a.Get(i), op, key, INT64_MIN / 2, INT64_MAX / 2));
  return out;
}

std::vector<std::string> get_strs(const Napi::Object& o, const char* key, const std::string& op) {
  std::vector<std::string> out;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) throw_type_error(op, key, "an array of strings", v);
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) throw_type_error(op, key, "an array of strings", v);
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

qwen::Config parse_config(const Napi::Object& o, const std::string& op) {
  qwen::Config c;
  std::string arch = get_str(o, "arch", op, "");
  if (arch == "qwen2_5_vl")
    c.arch = qwen::Arch::Qwen25VL;
  else if (arch == "qwen3_vl")
    c.arch = qwen::Arch::Qwen3VL;
  else
    throw_range_error(op, "config.arch", "'qwen2_5_vl' or 'qwen3_vl'", "'" + arch + "'");
  Napi::Object t = read_object(o.Get("text"), op, "config.text");
  c.text.hidden = get_int(t, "hiddenSize", op, 0, true);
  c.text.intermediate = get_int(t, "intermediateSize", op, 0, true);
  c.text.layers = get_int(t, "numLayers", op, 0, true);
  c.text.heads = get_int(t, "numHeads", op, 0, true);
  c.text.kv_heads = get_int(t, "numKvHeads", op, 0, true);
  c.text.head_dim = get_int(t, "headDim", op, 0, true);
  c.text.vocab = get_int(t, "vocabSize", op, 0, true);
  c.text.eps = get_num(t, "rmsNormEps", op, 1e-6);
  c.text.theta = get_num(t, "ropeTheta", op, 10000.0);
  c.text.mrope_section = get_ints(t, "mropeSection", op);
  c.text.interleaved = get_bool(t, "mropeInterleaved", false);
  c.text.attn_bias = get_bool(t, "attentionBias", false);
  c.text.qk_norm = get_bool(t, "qkNorm", false);
  c.text.tie = get_bool(t, "tieWordEmbeddings", false);
  c.text.act = get_str(t, "hiddenAct", op, "silu");
  Napi::Object v = read_object(o.Get("vision"), op, "config.vision");
  c.vision.depth = get_int(v, "depth", op, 0, true);
  c.vision.hidden = get_int(v, "hiddenSize", op, 0, true);
  c.vision.intermediate = get_int(v, "intermediateSize", op, 0, true);
  c.vision.heads = get_int(v, "numHeads", op, 0, true);
  c.vision.patch = get_int(v, "patchSize", op, 0, true);
  c.vision.temporal_patch = get_int(v, "temporalPatchSize", op, 2, false);
  c.vision.merge = get_int(v, "spatialMergeSize", op, 2, false);
  c.vision.in_ch = get_int(v, "inChannels", op, 3, false);
  c.vision.out_hidden = get_int(v, "outHiddenSize", op, 0, true);
  c.vision.act = get_str(v, "hiddenAct", op, "silu");
  c.vision.window_size = get_int(v, "windowSize", op, 0, false);
  c.vision.fullatt_blocks = get_ints(v, "fullattBlockIndexes", op);
  c.vision.num_pos = get_int(v, "numPositionEmbeddings", op, 0, false);
  c.vision.deepstack = get_ints(v, "deepstackVisualIndexes", op);
  c.image_token = get_int(o, "imageTokenId", op, -1, true);
  c.video_token = get_int(o, "videoTokenId", op, -1, true);
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

bool present(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

qwen::Inputs parse_inputs(const Napi::Value& v, const qwen::Config& cfg, const std::string& op) {
  Napi::Object o = read_object(v, op, "inputs");
  qwen::Inputs in;
  int64_t B = get_int(o, "batch", op, 1, true), L = get_int(o, "seqLen", op, 0, true);
  if (B < 1 || L < 1)
    throw_range_error(op, "inputs.batch/seqLen", "positive integers", std::to_string(B) + "/" + std::to_string(L));
  in.input_ids = copy_array(o.Get("inputIds"), op, "inputs.inputIds", {B, L}, napi_int32_array);
  if (present(o, "attentionMask"))
    in.attention_mask = copy_array(o.Get("attentionMask"), op, "inputs.attentionMask", {B, L}, napi_int32_array);
  in.position_ids = copy_array(o.Get("positionIds"), op, "inputs.positionIds", {3, B, L}, napi_int32_array);
  const int64_t pd = cfg.vision.in_ch * cfg.vision.temporal_patch * cfg.vision.patch * cfg.vision.patch;
  auto vis = [&](const char* pk, const char* gk, at::Tensor* px, at::Tensor* grid) {
    if (!present(o, pk)) return;
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
  in.share_vision = get_bool(o, "shareVision", false);
  in.image_repeats = get_ints(o, "imageRepeats", op);
  in.video_repeats = get_ints(o, "videoRepeats", op);
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

// ---- load ------------------------------------------------------------------------------------

struct TensorRef {
  std::string name, file, dtype;
  int64_t offset = 0, nbytes = 0;
  std::vector<int64_t> shape;
};

struct Mapped {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapped() {
    if (addr != MAP_FAILED) munmap(addr, size);
  }
};

void load_weights(Model& m, const std::vector<TensorRef>& refs) {
  std::map<std::string, std::unique_ptr<Mapped>> maps;
  for (const auto& r : refs) {
    auto& mp = maps[r.file];
    if (!mp) {
      mp.reset(new Mapped());
      int fd = open(r.file.c_str(), O_RDONLY);
      if (fd < 0) throw OpError(ErrorKind::Generic, "ERR_CRPO_MODEL_LOAD", "qwenLoad: cannot open " + r.file);
      struct stat st;
      fstat(fd, &st);
      mp->size = static_cast<size_t>(st.st_size);
      mp->addr = mmap(nullptr, mp->size, PROT_READ, MAP_PRIVATE, fd, 0);
      close(fd);
      if (mp->addr == MAP_FAILED)
        throw OpError(ErrorKind::Generic, "ERR_CRPO_MODEL_LOAD", "qwenLoad: cannot map " + r.file);
    }
    if (r.offset < 0 || static_cast<size_t>(r.offset + r.nbytes) > mp->size)
      throw OpError(ErrorKind::Generic, "ERR_CRPO_MODEL_LOAD",
                    "qwenLoad: " + r.file + ": tensor '" + r.name + "' lies outside the file (truncated download?)");
    at::ScalarType st = parse_dtype(r.dtype, "qwenLoad", "dtype of " + r.name);
    int64_t n = 1;
    for (auto s : r.shape) n *= s;
    if (n * static_cast<int64_t>(c10::elementSize(st)) != r.nbytes)
      throw OpError(ErrorKind::Generic, "ERR_CRPO_MODEL_LOAD",
                    "qwenLoad: " + r.file + ": tensor '" + r.name + "' has " + std::to_string(r.nbytes) +
                        " bytes, not the size of its shape");
    at::Tensor t = torch::from_blob(static_cast<uint8_t*>(mp->addr) + r.offset, r.shape, st);
    m.set_param(r.name, t);  // copies (and converts) before the mapping goes away
  }
}

Napi::Value Load(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenLoad", [&]() -> Napi::Value {
    const std::string op = "qwenLoad";
    Napi::Object spec = read_object(info[0], op, "spec");
    qwen::Config cfg = parse_config(read_object(spec.Get("config"), op, "spec.config"), op);
    at::ScalarType dtype = parse_dtype(get_str(spec, "dtype", op, "float32"), op, "spec.dtype");
    at::Device device = parse_device(get_str(spec, "device", op, "cpu"), op);
    Napi::Value tv = spec.Get("tensors");
    if (!tv.IsArray()) throw_type_error(op, "spec.tensors", "an array", tv);
    Napi::Array ta = tv.As<Napi::Array>();
    std::vector<TensorRef> refs;
    for (uint32_t i = 0; i < ta.Length(); ++i) {
      Napi::Object e = read_object(ta.Get(i), op, "spec.tensors[" + std::to_string(i) + "]");
      TensorRef r;
      r.name = get_str(e, "name", op, "");
      r.file = get_str(e, "file", op, "");
      r.dtype = get_str(e, "dtype", op, "F32");
      r.offset = get_int(e, "offset", op, 0, true);
      r.nbytes = get_int(e, "nbytes", op, 0, true);
      r.shape = get_ints(e, "shape", op);
      refs.push_back(std::move(r));
    }
    auto model = std::make_shared<Model>(cfg, dtype, device);
    auto id = std::make_shared<int64_t>(0);
    auto* w = new QwenWorker(
        info.Env(), op,
        [model, refs, id]() {
          load_weights(*model, refs);
          std::lock_guard<std::mutex> lock(g_models_mu);
          *id = g_next_id++;
          g_models[*id] = model;
        },
        [id](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*id)); });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  });
}

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenDispose", [&]() -> Napi::Value {
    int64_t id = read_int(info[0], "qwenDispose", "model", 1, INT64_C(1) << 52);
    std::lock_guard<std::mutex> lock(g_models_mu);
    g_models.erase(id);  // a running worker keeps its own reference
    return info.Env().Undefined();
  });
}

Napi::Value LiveModels(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_models_mu);
  return Napi::Number::New(info.Env(), static_cast<double>(g_models.size()));
}

// ---- forward ---------------------------------------------------------------------------------

struct ForwardOut {
  at::Tensor logits;
  double loss = 0, objective = 0;
  std::vector<std::pair<std::string, at::Tensor>> capture, grads;
  at::Tensor token_logprobs;  // (B, L-1) log p(ids[t+1] | ..t)
};

// qwenForward(model, inputs, { capture?, grads?: string[], lora?: boolean }) ->
//   { logits, lossMeanCe, objective, tokenLogprobs, capture: {name: {data, shape}}, grads: {...} }
// objective = sum_t log_softmax(logits[t])[ids[t+1]] over attended positions; grads are d objective / d param.
Napi::Value Forward(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenForward", [&]() -> Napi::Value {
    const std::string op = "qwenForward";
    auto model = find_model(info[0], op);
    qwen::Inputs in = parse_inputs(info[1], model->config(), op);
    Napi::Object opts =
        info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(info.Env());
    bool capture = get_bool(opts, "capture", false);
    double temperature = get_num(opts, "temperature", op, 1.0);
    if (!(temperature > 0)) throw_range_error(op, "options.temperature", "a number > 0", std::to_string(temperature));
    std::vector<std::string> grad_names = get_strs(opts, "grads", op);
    // -1: keep the model's setting (setLoraEnabled); 0/1: this call only
    int use_lora = opts.Get("lora").IsBoolean() ? (opts.Get("lora").As<Napi::Boolean>().Value() ? 1 : 0) : -1;
    for (const auto& n : grad_names)
      if (!model->has_param(n) && !model->lora_params().count(n))
        throw_range_error(op, "options.grads", "names of model weights", "'" + n + "'");
    auto out = std::make_shared<ForwardOut>();
    auto* w = new QwenWorker(
        info.Env(), op,
        [model, in, capture, grad_names, use_lora, temperature, out]() {
          std::lock_guard<std::mutex> lock(model->mu);
          bool prev = model->lora_enabled();
          if (use_lora >= 0) model->set_lora_enabled(use_lora == 1);
          std::vector<at::Tensor> leaves;
          std::vector<std::string> switched;  // weights made to require grad for this call only
          for (const auto& n : grad_names) {
            at::Tensor& p = model->has_param(n) ? model->params().at(n) : model->lora_params().at(n);
            if (!p.requires_grad()) {
              p.set_requires_grad(true);
              switched.push_back(n);
            }
            leaves.push_back(p);
          }
          auto restore = [&]() {
            for (const auto& n : switched) {
              at::Tensor& p = model->has_param(n) ? model->params().at(n) : model->lora_params().at(n);
              p.set_requires_grad(false);
            }
          };
          at::AutoGradMode grad_mode(!grad_names.empty());
          qwen::Capture cap;
          cap.on = capture;
          qwen::ForwardResult r;
          try {
            r = model->forward(in, &cap);
          } catch (...) {
            model->set_lora_enabled(prev);
            restore();
            throw;
          }
          model->set_lora_enabled(prev);
          at::Tensor logits = r.logits.scalar_type() == at::kDouble ? r.logits : r.logits.to(at::kFloat);
          const int64_t L = logits.size(1);
          at::Tensor ids = in.input_ids.to(logits.device());
          at::Tensor lp = at::log_softmax(logits.narrow(1, 0, L - 1), -1)
                              .gather(-1, ids.narrow(1, 1, L - 1).unsqueeze(-1))
                              .squeeze(-1);  // (B, L-1)
          // log-probs at a sampling temperature (the objective and loss stay at temperature 1)
          at::Tensor lp_t = temperature == 1.0 ? lp
                                               : at::log_softmax(logits.narrow(1, 0, L - 1).detach() / temperature, -1)
                                                     .gather(-1, ids.narrow(1, 1, L - 1).unsqueeze(-1))
                                                     .squeeze(-1);
          at::Tensor valid = in.attention_mask.defined()
                                 ? in.attention_mask.narrow(1, 1, L - 1).to(lp.device()).to(at::kFloat)
                                 : at::ones_like(lp);
          at::Tensor objective = (lp * valid).sum();
          at::Tensor loss = -(lp * valid).sum() / valid.sum();
          if (!grad_names.empty()) {
            auto g = torch::autograd::grad({objective}, leaves, {}, false, false, true);
            for (size_t i = 0; i < g.size(); ++i)
              out->grads.emplace_back(grad_names[i], g[i].defined() ? g[i] : at::zeros_like(leaves[i]));
          }
          restore();
          out->logits = logits.detach();
          out->loss = loss.item<double>();
          out->objective = objective.item<double>();
          out->token_logprobs = lp_t.detach();
          out->capture = std::move(cap.items);
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("logits", tensor_to_js(env, out->logits));
          o.Set("tokenLogprobs", tensor_to_js(env, out->token_logprobs));
          o.Set("lossMeanCe", Napi::Number::New(env, out->loss));
          o.Set("objective", Napi::Number::New(env, out->objective));
          Napi::Object c = Napi::Object::New(env);
          for (auto& kv : out->capture) c.Set(kv.first, tensor_to_js(env, kv.second));
          o.Set("capture", c);
          Napi::Object g = Napi::Object::New(env);
          for (auto& kv : out->grads) g.Set(kv.first, tensor_to_js(env, kv.second));
          o.Set("grads", g);
          return o;
        });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  });
}

// qwenGenerate(model, inputs, { maxNewTokens, eosTokenId?, useCache?, temperature?, topK?, topP?, seed?, keepLogits? })
//   -> { tokens: number[][], logprobs: number[][], stepLogits: {data, shape}[] }
Napi::Value Generate(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenGenerate", [&]() -> Napi::Value {
    const std::string op = "qwenGenerate";
    auto model = find_model(info[0], op);
    qwen::Inputs in = parse_inputs(info[1], model->config(), op);
    Napi::Object opts = read_object(info[2], op, "options");
    qwen::SampleOptions so;
    so.max_new_tokens = read_int(opts.Get("maxNewTokens"), op, "options.maxNewTokens", 1, 1 << 20);
    so.eos = get_int(opts, "eosTokenId", op, -1, false);
    so.use_cache = get_bool(opts, "useCache", true);
    so.temperature = get_num(opts, "temperature", op, 0);
    so.top_k = get_int(opts, "topK", op, 0, false);
    so.top_p = get_num(opts, "topP", op, 1.0);
    so.seed = static_cast<uint64_t>(get_int(opts, "seed", op, 0, false));
    so.keep_logits = get_bool(opts, "keepLogits", false);
    if (so.temperature < 0)
      throw_range_error(op, "options.temperature", "a number >= 0", std::to_string(so.temperature));
    if (!(so.top_p > 0 && so.top_p <= 1))
      throw_range_error(op, "options.topP", "a number in (0, 1]", std::to_string(so.top_p));
    auto out = std::make_shared<qwen::GenerateResult>();
    auto* w = new QwenWorker(
        info.Env(), op,
        [model, in, so, out]() {
          std::lock_guard<std::mutex> lock(model->mu);
          *out = model->generate(in, so);
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          Napi::Array rows = Napi::Array::New(env, out->tokens.size());
          Napi::Array lps = Napi::Array::New(env, out->tokens.size());
          for (size_t b = 0; b < out->tokens.size(); ++b) {
            Napi::Array r = Napi::Array::New(env, out->tokens[b].size());
            Napi::Array l = Napi::Array::New(env, out->tokens[b].size());
            for (size_t i = 0; i < out->tokens[b].size(); ++i) {
              r.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(out->tokens[b][i])));
              l.Set(static_cast<uint32_t>(i), Napi::Number::New(env, out->logprobs[b][i]));
            }
            rows.Set(static_cast<uint32_t>(b), r);
            lps.Set(static_cast<uint32_t>(b), l);
          }
          o.Set("tokens", rows);
          o.Set("logprobs", lps);
          Napi::Array sl = Napi::Array::New(env, out->step_logits.size());
          for (size_t i = 0; i < out->step_logits.size(); ++i)
            sl.Set(static_cast<uint32_t>(i), tensor_to_js(env, out->step_logits[i]));
          o.Set("stepLogits", sl);
          return o;
        });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  });
}

// qwenTrainStep(model, inputs, { completionMask: Int32Array (B*L), advantages?: Float32Array (B),
//   oldLogprobs?, refLogprobs?: Float32Array (B*(L-1)), objective?, lr?, weightDecay?, maxGradNorm?,
//   clipLow?, clipHigh?, klBeta? }) -> { loss, pgLoss, kl, clipFraction, gradNorm, tokens }
Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenTrainStep", [&]() -> Napi::Value {
    const std::string op = "qwenTrainStep";
    auto model = find_model(info[0], op);
    qwen::Inputs in = parse_inputs(info[1], model->config(), op);
    const int64_t B = in.input_ids.size(0), L = in.input_ids.size(1);
    if (L < 2) throw_range_error(op, "inputs.seqLen", "at least 2", std::to_string(L));
    Napi::Object o = read_object(info[2], op, "batch");
    qwen::TrainBatch b;
    b.completion_mask = copy_array(o.Get("completionMask"), op, "batch.completionMask", {B, L}, napi_int32_array);
    if (present(o, "advantages"))
      b.advantages = copy_array(o.Get("advantages"), op, "batch.advantages", {B}, napi_float32_array);
    if (present(o, "oldLogprobs"))
      b.old_logprobs = copy_array(o.Get("oldLogprobs"), op, "batch.oldLogprobs", {B, L - 1}, napi_float32_array);
    if (present(o, "refLogprobs"))
      b.ref_logprobs = copy_array(o.Get("refLogprobs"), op, "batch.refLogprobs", {B, L - 1}, napi_float32_array);
    qwen::TrainOptions to;
    to.objective = get_str(o, "objective", op, "grpo");
    to.lr = get_num(o, "lr", op, 1e-4);
    to.weight_decay = get_num(o, "weightDecay", op, 0.0);
    to.max_grad_norm = get_num(o, "maxGradNorm", op, 1.0);
    to.clip_low = get_num(o, "clipLow", op, 0.2);
    to.clip_high = get_num(o, "clipHigh", op, 0.2);
    to.kl_beta = get_num(o, "klBeta", op, 0.0);
    to.aggregation = get_str(o, "aggregation", op, "token-mean");
    to.max_new_tokens = get_num(o, "maxNewTokens", op, 1.0);
    to.temperature = get_num(o, "temperature", op, 1.0);
    to.norm_tokens = get_int(o, "normTokens", op, 0, false);
    to.norm_seqs = get_int(o, "normSequences", op, 0, false);
    to.apply = get_bool(o, "apply", true);
    to.seed = get_int(o, "seed", op, -1, false);
    if (!(to.temperature > 0))
      throw_range_error(op, "batch.temperature", "a number > 0", std::to_string(to.temperature));
    if (to.aggregation != "token-mean" && to.aggregation != "seq-mean-token-mean" &&
        to.aggregation != "seq-mean-token-sum-norm")
      throw_range_error(op, "batch.aggregation", "'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum-norm'",
                        "'" + to.aggregation + "'");
    if (to.kl_beta > 0 && !b.ref_logprobs.defined())
      throw_type_error(op, "batch.refLogprobs", "a Float32Array (klBeta > 0)", o.Get("refLogprobs"));
    if (to.objective != "grpo" && to.objective != "sft")
      throw_range_error(op, "batch.objective", "'grpo' or 'sft'", "'" + to.objective + "'");
    if (to.objective == "grpo" && !b.advantages.defined())
      throw_type_error(op, "batch.advantages", "a Float32Array of one advantage per row", o.Get("advantages"));
    auto out = std::make_shared<qwen::TrainStats>();
    auto* w = new QwenWorker(
        info.Env(), op,
        [model, in, b, to, out]() {
          std::lock_guard<std::mutex> lock(model->mu);
          *out = model->train_step(in, b, to);
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object r = Napi::Object::New(env);
          r.Set("loss", out->loss);
          r.Set("pgLoss", out->pg_loss);
          r.Set("kl", out->kl);
          r.Set("clipFraction", out->clip_frac);
          r.Set("gradNorm", out->grad_norm);
          r.Set("tokens", Napi::Number::New(env, static_cast<double>(out->tokens)));
          r.Set("entropy", out->entropy);
          r.Set("skipped", Napi::Boolean::New(env, out->skipped));
          return r;
        });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  });
}

Napi::Value SetTrainable(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenSetTrainable", [&]() -> Napi::Value {
    const std::string op = "qwenSetTrainable";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "mode", "'lora', 'lm' or 'all'", info[1]);
    std::string mode = info[1].As<Napi::String>().Utf8Value();
    std::lock_guard<std::mutex> lock(model->mu);
    torch_guard(op, [&]() { model->set_trainable(mode); });
    Napi::Array names = Napi::Array::New(info.Env());
    uint32_t i = 0;
    for (auto& n : model->trainable_names()) names.Set(i++, Napi::String::New(info.Env(), n));
    return names;
  });
}

Napi::Value SetCheckpointing(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenSetCheckpointing", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenSetCheckpointing");
    if (!info[1].IsBoolean()) throw_type_error("qwenSetCheckpointing", "enabled", "a boolean", info[1]);
    std::lock_guard<std::mutex> lock(model->mu);
    model->set_checkpointing(info[1].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}

// ---- LoRA and weights ------------------------------------------------------------------------

Napi::Value AddLora(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenAddLora", [&]() -> Napi::Value {
    const std::string op = "qwenAddLora";
    auto model = find_model(info[0], op);
    Napi::Object o = read_object(info[1], op, "lora");
    qwen::LoraConfig lc;
    lc.rank = get_int(o, "rank", op, 8, true);
    lc.alpha = get_num(o, "alpha", op, 16);
    lc.dropout = get_num(o, "dropout", op, 0);
    lc.targets = get_strs(o, "targetModules", op);
    lc.vision = get_bool(o, "vision", false);
    lc.seed = static_cast<uint64_t>(get_int(o, "seed", op, 0, false));
    std::lock_guard<std::mutex> lock(model->mu);
    torch_guard(op, [&]() { model->add_lora(lc); });
    Napi::Array names = Napi::Array::New(info.Env());
    uint32_t i = 0;
    for (auto& kv : model->lora_params()) names.Set(i++, Napi::String::New(info.Env(), kv.first));
    return names;
  });
}

Napi::Value SetLoraEnabled(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenSetLoraEnabled", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenSetLoraEnabled");
    if (!info[1].IsBoolean()) throw_type_error("qwenSetLoraEnabled", "enabled", "a boolean", info[1]);
    std::lock_guard<std::mutex> lock(model->mu);
    model->set_lora_enabled(info[1].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}

Napi::Value ParamNames(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenParamNames", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenParamNames");
    bool lora = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    std::lock_guard<std::mutex> lock(model->mu);
    Napi::Array names = Napi::Array::New(info.Env());
    uint32_t i = 0;
    if (lora)
      for (auto& kv : model->lora_params()) names.Set(i++, Napi::String::New(info.Env(), kv.first));
    else
      for (auto& n : model->param_names()) names.Set(i++, Napi::String::New(info.Env(), n));
    return names;
  });
}

// qwenGetParam(model, name, { merged? }) -> { data: Float32Array, shape } (LoRA merged when asked)
Napi::Value GetParam(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenGetParam", [&]() -> Napi::Value {
    const std::string op = "qwenGetParam";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "name", "a string", info[1]);
    std::string name = info[1].As<Napi::String>().Utf8Value();
    bool merged = info.Length() > 2 && info[2].IsObject() && get_bool(info[2].As<Napi::Object>(), "merged", false);
    std::lock_guard<std::mutex> lock(model->mu);
    at::Tensor t;
    if (model->lora_params().count(name))
      t = model->lora_params().at(name);
    else if (model->has_param(name))
      t = merged ? torch_guard(op, [&]() { return model->merged_weight(name); }) : model->param(name);
    else
      throw_range_error(op, "name", "the name of a model weight", "'" + name + "'");
    return tensor_to_js(info.Env(), t);
  });
}

// qwenSetParam(model, name, Float32Array) (LoRA or base weight; same element count)
Napi::Value SetParam(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenSetParam", [&]() -> Napi::Value {
    const std::string op = "qwenSetParam";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "name", "a string", info[1]);
    std::string name = info[1].As<Napi::String>().Utf8Value();
    std::lock_guard<std::mutex> lock(model->mu);
    at::Tensor* dst = model->lora_params().count(name) ? &model->lora_params().at(name)
                      : model->has_param(name)         ? &model->params().at(name)
                                                       : nullptr;
    if (!dst) throw_range_error(op, "name", "the name of a model weight", "'" + name + "'");
    at::Tensor src = copy_array(info[2], op, "value", dst->sizes().vec(), napi_float32_array);
    torch_guard(op, [&]() {
      at::NoGradGuard ng;
      dst->copy_(src);
    });
    return info.Env().Undefined();
  });
}

Napi::Value MergeLora(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenMergeLora", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenMergeLora");
    std::lock_guard<std::mutex> lock(model->mu);
    torch_guard("qwenMergeLora", [&]() { model->merge_lora(); });
    return info.Env().Undefined();
  });
}

// qwenSaveOptimizer(model, path) / qwenLoadOptimizer(model, path): AdamW state via torch::save
// (the caller writes to a temp path and renames).
Napi::Value SaveOptimizer(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenSaveOptimizer", [&]() -> Napi::Value {
    const std::string op = "qwenSaveOptimizer";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "path", "a file path", info[1]);
    std::string path = info[1].As<Napi::String>().Utf8Value();
    auto* w = new QwenWorker(
        info.Env(), op,
        [model, path]() {
          std::lock_guard<std::mutex> lock(model->mu);
          model->save_optimizer(path);
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  });
}

Napi::Value LoadOptimizer(const Napi::CallbackInfo& info) {
  return guarded(info, "qwenLoadOptimizer", [&]() -> Napi::Value {
    const std::string op = "qwenLoadOptimizer";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "path", "a file path", info[1]);
    std::string path = info[1].As<Napi::String>().Utf8Value();
    auto* w = new QwenWorker(
        info.Env(), op,
        [model, path]() {
          std::lock_guard<std::mutex> lock(model->mu);
          model->load_optimizer(path, qwen::TrainOptions());
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  });
}

ExportRegistrar reg("qwen", [](Napi::Env env, Napi::Object exports) {
  exports.Set("qwenLoad", Napi::Function::New(env, Load, "qwenLoad"));
  exports.Set("qwenDispose", Napi::Function::New(env, Dispose, "qwenDispose"));
  exports.Set("qwenLiveModels", Napi::Function::New(env, LiveModels, "qwenLiveModels"));
  exports.Set("qwenForward", Napi::Function::New(env, Forward, "qwenForward"));
  exports.Set("qwenGenerate", Napi::Function::New(env, Generate, "qwenGenerate"));
  exports.Set("qwenTrainStep", Napi::Function::New(env, TrainStep, "qwenTrainStep"));
  exports.Set("qwenSetTrainable", Napi::Function::New(env, SetTrainable, "qwenSetTrainable"));
  exports.Set("qwenSetCheckpointing", Napi::Function::New(env, SetCheckpointing, "qwenSetCheckpointing"));
  exports.Set("qwenAddLora", Napi::Function::New(env, AddLora, "qwenAddLora"));
  exports.Set("qwenSetLoraEnabled", Napi::Function::New(env, SetLoraEnabled, "qwenSetLoraEnabled"));
  exports.Set("qwenParamNames", Napi::Function::New(env, ParamNames, "qwenParamNames"));
  exports.Set("qwenGetParam", Napi::Function::New(env, GetParam, "qwenGetParam"));
  exports.Set("qwenSetParam", Napi::Function::New(env, SetParam, "qwenSetParam"));
  exports.Set("qwenMergeLora", Napi::Function::New(env, MergeLora, "qwenMergeLora"));
  exports.Set("qwenSaveOptimizer", Napi::Function::New(env, SaveOptimizer, "qwenSaveOptimizer"));
  exports.Set("qwenLoadOptimizer", Napi::Function::New(env, LoadOptimizer, "qwenLoadOptimizer"));
});

}  // namespace
}  // namespace crpo
