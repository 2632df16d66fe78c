// JS bindings of the Qwen2.5-VL / Qwen3-VL models (registered as the "qwen" module of the torch
// addon): load weights from memory-mapped safetensors shards, forward with named intermediate
// outputs, objective gradients (the maths: qwen_objective.cpp), greedy generation, LoRA and weight
// read-back for export (the train step and optimizer state: qwen_train_binding.cpp; argument
// readers: qwen_args.h). Inputs are copied into tensors on the JS thread; every heavy call runs on
// TorchWorker (torch_worker.h: prepare_thread first, c10::Error -> ERR_CRPO_TORCH).
#include <napi.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "common/napi_util.h"
#include "torch/torch_worker.h"
#include "torch/exports.h"
#include "torch/ops.h"
#include "torch/qwen/qwen_args.h"
#include "torch/qwen/qwen_model.h"
#include "torch/qwen/qwen_objective.h"

namespace crpo {
namespace {

using qwen::Model;
using qwen_js::copy_array;
using qwen_js::find_model;
using qwen_js::kAnyIntMax;
using qwen_js::kAnyIntMin;
using qwen_js::parse_config;
using qwen_js::parse_device;
using qwen_js::parse_dtype;
using qwen_js::parse_inputs;
using qwen_js::tensor_to_js;

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
    // Copied (and converted) slice by slice before the mapping goes away; each slice's file pages
    // are dropped once copied: mapped pages count in the RSS until unmapped, and the loading peak
    // would otherwise be the weights twice (file + copy). Re-reading a dropped page faults it in.
    const uintptr_t base = reinterpret_cast<uintptr_t>(mp->addr), end = base + mp->size;
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    m.set_param_chunked(r.name, t, [&](int64_t off, int64_t len) {
      const uintptr_t lo = (base + r.offset + off) & ~(page - 1);
      const uintptr_t hi = std::min((base + r.offset + off + len + page - 1) & ~(page - 1), end);
      if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    });
  }
}

Napi::Value Load(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenLoad", [&]() -> Napi::Value {
    const std::string op = "qwenLoad";
    Napi::Object spec = args::object(info[0], op, "spec");
    qwen::Config cfg = parse_config(args::object(spec.Get("config"), op, "spec.config"), op);
    at::ScalarType dtype = parse_dtype(args::optional_string(spec, "dtype", op, "float32"), op, "spec.dtype");
    at::Device device = parse_device(args::optional_string(spec, "device", op, "cpu"), op);
    Napi::Value tv = spec.Get("tensors");
    if (!tv.IsArray()) throw_type_error(op, "spec.tensors", "an array", tv);
    Napi::Array ta = tv.As<Napi::Array>();
    std::vector<TensorRef> refs;
    for (uint32_t i = 0; i < ta.Length(); ++i) {
      Napi::Object e = args::object(ta.Get(i), op, "spec.tensors[" + std::to_string(i) + "]");
      TensorRef r;
      r.name = args::optional_string(e, "name", op, "");
      r.file = args::optional_string(e, "file", op, "");
      r.dtype = args::optional_string(e, "dtype", op, "F32");
      r.offset = args::required_int(e, "offset", op, kAnyIntMin, kAnyIntMax);
      r.nbytes = args::required_int(e, "nbytes", op, kAnyIntMin, kAnyIntMax);
      r.shape = args::optional_ints(e, "shape", op, kAnyIntMin, kAnyIntMax);
      refs.push_back(std::move(r));
    }
    auto model = std::make_shared<Model>(cfg, dtype, device);
    auto id = std::make_shared<int64_t>(0);
    return queue_torch(
        info.Env(), op,
        [model, refs, id]() {
          load_weights(*model, refs);
          *id = qwen_js::add_model(model);
        },
        [id](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*id)); });
  });
}

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenDispose", [&]() -> Napi::Value {
    int64_t id = read_int(info[0], "qwenDispose", "model", 1, INT64_C(1) << 52);
    qwen_js::erase_model(id);  // a running worker keeps its own reference
    return info.Env().Undefined();
  });
}

Napi::Value LiveModels(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(qwen_js::live_models()));
}

// ---- forward ---------------------------------------------------------------------------------

// qwenForward(model, inputs, { capture?, grads?: string[], lora?: boolean }) ->
//   { logits, lossMeanCe, objective, tokenLogprobs, capture: {name: {data, shape}}, grads: {...} }
// objective = sum_t log_softmax(logits[t])[ids[t+1]] over attended positions; grads are d objective / d param.
// With inputs.prefixGroups only completion targets are scored: tokenLogprobs is NaN elsewhere, the
// objective and loss cover the completions, logits are empty.
Napi::Value Forward(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenForward", [&]() -> Napi::Value {
    const std::string op = "qwenForward";
    auto model = find_model(info[0], op);
    qwen::Inputs in = parse_inputs(info[1], model->config(), op);
    Napi::Object opts = args::optional_object(info, 2, op, "options");
    qwen::ObjectiveOptions oo;
    oo.capture = args::optional_bool(opts, "capture", op, false);
    oo.temperature = args::optional_number(opts, "temperature", op, 1.0);
    if (!(oo.temperature > 0))
      throw_range_error(op, "options.temperature", "a number > 0", std::to_string(oo.temperature));
    oo.grads = args::optional_strings(opts, "grads", op);
    // -1: keep the model's setting (setLoraEnabled); 0/1: this call only
    oo.lora = args::present(opts, "lora") ? (args::optional_bool(opts, "lora", op, false) ? 1 : 0) : -1;
    for (const auto& n : oo.grads)
      if (!model->has_param(n) && !model->lora_params().count(n))
        throw_range_error(op, "options.grads", "names of model weights", "'" + n + "'");
    auto out = std::make_shared<qwen::ObjectiveResult>();
    return queue_torch(
        info.Env(), op,
        [model, in, oo, out]() {
          std::lock_guard<std::mutex> lock(model->mu);
          *out = qwen::forward_objective(*model, in, oo);
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
  });
}

// qwenGenerate(model, inputs, { maxNewTokens, eosTokenId?, useCache?, temperature?, topK?, topP?, seed?, keepLogits? })
//   -> { tokens: number[][], logprobs: number[][], stepLogits: {data, shape}[] }
Napi::Value Generate(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenGenerate", [&]() -> Napi::Value {
    const std::string op = "qwenGenerate";
    auto model = find_model(info[0], op);
    qwen::Inputs in = parse_inputs(info[1], model->config(), op);
    Napi::Object opts = args::object(info[2], op, "options");
    qwen::SampleOptions so;
    so.max_new_tokens = read_int(opts.Get("maxNewTokens"), op, "options.maxNewTokens", 1, 1 << 20);
    so.eos = args::optional_int(opts, "eosTokenId", op, -1, kAnyIntMin, kAnyIntMax);
    so.use_cache = args::optional_bool(opts, "useCache", op, true);
    so.temperature = args::optional_number(opts, "temperature", op, 0);
    so.top_k = args::optional_int(opts, "topK", op, 0, kAnyIntMin, kAnyIntMax);
    so.top_p = args::optional_number(opts, "topP", op, 1.0);
    so.seed = static_cast<uint64_t>(args::optional_int(opts, "seed", op, 0, kAnyIntMin, kAnyIntMax));
    so.keep_logits = args::optional_bool(opts, "keepLogits", op, false);
    if (so.temperature < 0)
      throw_range_error(op, "options.temperature", "a number >= 0", std::to_string(so.temperature));
    if (!(so.top_p > 0 && so.top_p <= 1))
      throw_range_error(op, "options.topP", "a number in (0, 1]", std::to_string(so.top_p));
    auto out = std::make_shared<qwen::GenerateResult>();
    return queue_torch(
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
  });
}
// ---- LoRA and weights ------------------------------------------------------------------------

Napi::Value AddLora(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenAddLora", [&]() -> Napi::Value {
    const std::string op = "qwenAddLora";
    auto model = find_model(info[0], op);
    Napi::Object o = args::object(info[1], op, "lora");
    qwen::LoraConfig lc;
    lc.rank = args::required_int(o, "rank", op, kAnyIntMin, kAnyIntMax);
    lc.alpha = args::optional_number(o, "alpha", op, 16);
    lc.dropout = args::optional_number(o, "dropout", op, 0);
    lc.targets = args::optional_strings(o, "targetModules", op);
    lc.vision = args::optional_bool(o, "vision", op, false);
    lc.seed = static_cast<uint64_t>(args::optional_int(o, "seed", op, 0, kAnyIntMin, kAnyIntMax));
    std::lock_guard<std::mutex> lock(model->mu);
    torch_guard(op, [&]() { model->add_lora(lc); });
    Napi::Array names = Napi::Array::New(info.Env());
    uint32_t i = 0;
    for (auto& kv : model->lora_params()) names.Set(i++, Napi::String::New(info.Env(), kv.first));
    return names;
  });
}

Napi::Value SetLoraEnabled(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenSetLoraEnabled", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenSetLoraEnabled");
    if (!info[1].IsBoolean()) throw_type_error("qwenSetLoraEnabled", "enabled", "a boolean", info[1]);
    std::lock_guard<std::mutex> lock(model->mu);
    model->set_lora_enabled(info[1].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}

Napi::Value ParamNames(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenParamNames", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenParamNames");
    bool lora = false;  // optional: the LoRA adapters' names instead of the base weights'
    if (info.Length() > 1 && !args::absent(info[1])) {
      if (!info[1].IsBoolean()) throw_type_error("qwenParamNames", "lora", "a boolean", info[1]);
      lora = info[1].As<Napi::Boolean>().Value();
    }
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

// qwenGetParamSync(model, name, { merged? }) -> { data: Float32Array, shape } (LoRA merged when
// asked). Synchronous, under the model's mutex: merged, it computes W + scale * B A on the JS
// thread (the weight export reads weights one by one from a synchronous writer).
Napi::Value GetParamSync(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenGetParamSync", [&]() -> Napi::Value {
    const std::string op = "qwenGetParamSync";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "name", "a string", info[1]);
    std::string name = info[1].As<Napi::String>().Utf8Value();
    bool merged = args::optional_bool(args::optional_object(info, 2, op, "options"), "merged", op, false);
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
  return guarded_torch(info, "qwenSetParam", [&]() -> Napi::Value {
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

// qwenMergeLoraSync(model): folds the adapters into the base weights. Synchronous, on the JS
// thread under the model's mutex (its callers, the policy's reference refresh, are synchronous).
Napi::Value MergeLoraSync(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenMergeLoraSync", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenMergeLoraSync");
    std::lock_guard<std::mutex> lock(model->mu);
    torch_guard("qwenMergeLoraSync", [&]() { model->merge_lora(); });
    return info.Env().Undefined();
  });
}

// qwenGrads(model, names: string[]) -> { name: {data, shape} }: the gradients a train step with
// apply: false accumulated (zeros for a weight without one); nothing is copied unless asked.
Napi::Value Grads(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenGrads", [&]() -> Napi::Value {
    const std::string op = "qwenGrads";
    auto model = find_model(info[0], op);
    if (!info[1].IsArray()) throw_type_error(op, "names", "an array of weight names", info[1]);
    Napi::Array names = info[1].As<Napi::Array>();
    std::lock_guard<std::mutex> lock(model->mu);
    Napi::Object o = Napi::Object::New(info.Env());
    for (uint32_t i = 0; i < names.Length(); ++i) {
      if (!names.Get(i).IsString()) throw_type_error(op, "names[" + std::to_string(i) + "]", "a string", names.Get(i));
      const std::string n = names.Get(i).As<Napi::String>().Utf8Value();
      const at::Tensor* p = model->lora_params().count(n) ? &model->lora_params().at(n)
                            : model->has_param(n)         ? &model->param(n)
                                                          : nullptr;
      if (!p) throw_range_error(op, "names[" + std::to_string(i) + "]", "the name of a model weight", "'" + n + "'");
      o.Set(n, tensor_to_js(info.Env(), p->grad().defined() ? p->grad() : at::zeros_like(*p)));
    }
    return o;
  });
}

ExportRegistrar reg("qwen", [](Napi::Env env, Napi::Object exports) {
  exports.Set("qwenGrads", Napi::Function::New(env, Grads, "qwenGrads"));
  exports.Set("qwenLoad", Napi::Function::New(env, Load, "qwenLoad"));
  exports.Set("qwenDispose", Napi::Function::New(env, Dispose, "qwenDispose"));
  exports.Set("qwenLiveModels", Napi::Function::New(env, LiveModels, "qwenLiveModels"));
  exports.Set("qwenForward", Napi::Function::New(env, Forward, "qwenForward"));
  exports.Set("qwenGenerate", Napi::Function::New(env, Generate, "qwenGenerate"));
  exports.Set("qwenAddLora", Napi::Function::New(env, AddLora, "qwenAddLora"));
  exports.Set("qwenSetLoraEnabled", Napi::Function::New(env, SetLoraEnabled, "qwenSetLoraEnabled"));
  exports.Set("qwenParamNames", Napi::Function::New(env, ParamNames, "qwenParamNames"));
  exports.Set("qwenGetParamSync", Napi::Function::New(env, GetParamSync, "qwenGetParamSync"));
  exports.Set("qwenSetParam", Napi::Function::New(env, SetParam, "qwenSetParam"));
  exports.Set("qwenMergeLoraSync", Napi::Function::New(env, MergeLoraSync, "qwenMergeLoraSync"));
});

}  // namespace
}  // namespace crpo