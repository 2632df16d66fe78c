// JS bindings of the native policy (native/torch/model/policy_model.h): argument parsing on the
// JS thread into plain C++ structs (frames wrapped without a copy and kept alive until the promise
// settles), one AsyncWorker per heavy call (prepare_thread first, c10::Error -> ERR_CRPO_TORCH),
// and conversion of results to typed arrays in OnOK. Typed wrappers: lib/model/policy.ts.
#include <napi.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/napi_util.h"
#include "torch/torch_worker.h"
#include "torch/exports.h"
#include "torch/model/policy_model.h"
#include "torch/ops.h"

namespace crpo {
namespace policy {
namespace {

constexpr int64_t kMaxInt = (int64_t{1} << 40);

using PolicyWorker = TorchWorker;  // native/torch/torch_worker.h

Napi::Value run(Napi::Env env, const std::string& op, std::function<void()> work,
                std::function<Napi::Value(Napi::Env)> done, std::vector<Napi::Value> keep = {}) {
  auto* w = new PolicyWorker(env, op, std::move(work), std::move(done), std::move(keep));
  auto p = w->Promise();
  w->Queue();
  return p;
}

int64_t id_arg(const Napi::CallbackInfo& info, const std::string& op) {
  return read_int(info.Length() > 0 ? info[0] : info.Env().Undefined(), op, "policy", 1, kMaxInt);
}

const int32_t* int32_array(const Napi::Object& o, const char* key, size_t length, const std::string& op,
                           bool optional = false) {
  return reinterpret_cast<const int32_t*>(read_array_of(o, key, napi_int32_array, length, op, optional).data);
}

ByteView int32_any(const Napi::Object& o, const char* key, const std::string& op) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw_type_error(op, key, "an Int32Array", v);
  return read_typed_array(v, op, key);
}

PolicyConfig parse_config(const Napi::Object& o, const std::string& op) {
  PolicyConfig c;
  c.vocab_size = read_int(o.Get("vocabSize"), op, "vocabSize", 4, 1 << 24);
  c.frames = args::optional_int(o, "frames", op, c.frames, 1, 4096);
  c.image_size = args::optional_int(o, "imageSize", op, c.image_size, 1, 8192);
  c.channels = args::optional_int(o, "channels", op, c.channels, 1, 4);
  c.patch_size = args::optional_int(o, "patchSize", op, c.patch_size, 1, 1024);
  c.temporal_patch = args::optional_int(o, "temporalPatch", op, c.temporal_patch, 1, 64);
  c.merge_size = args::optional_int(o, "mergeSize", op, c.merge_size, 1, 16);
  c.vision_dim = args::optional_int(o, "visionDim", op, c.vision_dim, 1, 1 << 16);
  c.vision_layers = args::optional_int(o, "visionLayers", op, c.vision_layers, 1, 256);
  c.vision_heads = args::optional_int(o, "visionHeads", op, c.vision_heads, 1, 256);
  c.vision_mlp = args::optional_int(o, "visionMlp", op, c.vision_mlp, 1, 1 << 18);
  c.vision_stem = args::optional_int(o, "visionStem", op, c.vision_stem, 0, 256);
  c.vision_stem_down = args::optional_int(o, "visionStemDown", op, c.vision_stem_down, 0, 256);
  c.vision_clip_attention = args::optional_bool(o, "visionClipAttention", op, c.vision_clip_attention);
  c.lm_dim = args::optional_int(o, "lmDim", op, c.lm_dim, 1, 1 << 16);
  c.lm_layers = args::optional_int(o, "lmLayers", op, c.lm_layers, 1, 256);
  c.lm_heads = args::optional_int(o, "lmHeads", op, c.lm_heads, 1, 256);
  c.lm_kv_heads = args::optional_int(o, "lmKvHeads", op, c.lm_kv_heads, 1, 256);
  c.lm_mlp = args::optional_int(o, "lmMlp", op, c.lm_mlp, 1, 1 << 18);
  c.max_seq_len = args::optional_int(o, "maxSeqLen", op, c.max_seq_len, 1, 1 << 20);
  c.rope_theta = args::optional_number(o, "ropeTheta", op, c.rope_theta);
  c.norm_eps = args::optional_number(o, "normEps", op, c.norm_eps);
  c.init_std = args::optional_number(o, "initStd", op, c.init_std);
  c.pos_init_std = args::optional_number(o, "posInitStd", op, c.pos_init_std);
  c.pos_init = args::optional_string(o, "posInit", op, c.pos_init);
  c.option_slots = args::optional_int(o, "optionSlots", op, c.option_slots, 0, 26);
  c.vision_aux_classes = args::optional_int(o, "visionAuxClasses", op, c.vision_aux_classes, 0, 4096);
  c.pad_id = args::optional_int(o, "padId", op, c.pad_id, 0, 1 << 24);
  c.seed = static_cast<uint64_t>(args::optional_int(o, "seed", op, 0, 0, (int64_t{1} << 53)));
  c.dtype = args::optional_string(o, "dtype", op, c.dtype);
  c.device = args::optional_string(o, "device", op, c.device);
  c.validate();
  return c;
}

FrameOp parse_op(const std::string& s, const std::string& op, size_t i) {
  if (s == "none") return FrameOp::None;
  if (s == "hflip") return FrameOp::HFlip;
  if (s == "reverse") return FrameOp::Reverse;
  if (s == "hflip+reverse") return FrameOp::HFlipReverse;
  if (s == "swap") return FrameOp::Swap;
  throw_range_error(op, "promptTransform[" + std::to_string(i) + "]",
                    "'none', 'hflip', 'reverse', 'hflip+reverse' or 'swap'", "'" + s + "'");
}

void check_ids(const int32_t* ids, size_t n, int64_t vocab, const std::string& op, const std::string& what) {
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      throw_range_error(op, what + "[" + std::to_string(i) + "]", "a token id in [0, " + std::to_string(vocab) + ")",
                        std::to_string(ids[i]));
    }
  }
}

// batch = { frames: Uint8Array (V*T*H*W*C), numVideos, promptVideo: Int32Array(P), promptTransform?: string[P],
//           promptSwapAt?: Int32Array(P) (the first frame of the second segment of each 'swap' prompt),
//           promptIds: Int32Array, promptLengths: Int32Array(P), groupSize,
//           promptAuxLabels?: Int32Array(3P) ((start, size, class) of each prompt's vision attribute label) }
// allow_empty: V = P = 0 is a valid batch (the train step of a rank with no sequences).
PromptBatch parse_batch(const Napi::Object& o, const PolicyConfig& c, const std::string& op,
                        std::vector<Napi::Value>& keep, bool allow_empty = false) {
  PromptBatch b;
  const int64_t V = read_int(o.Get("numVideos"), op, "numVideos", allow_empty ? 0 : 1, 1 << 20);
  const size_t frame_len = static_cast<size_t>(V * c.frames * c.image_size * c.image_size * c.channels);
  Napi::Value fv = o.Get("frames");
  ByteView fr = read_array_of(o, "frames", napi_uint8_array, frame_len, op, false);
  keep.push_back(fv);
  b.frames = V > 0 ? torch::from_blob(fr.data, {V, c.frames, c.image_size, c.image_size, c.channels}, torch::kByte)
                   : torch::empty({0, c.frames, c.image_size, c.image_size, c.channels}, torch::kByte);
  ByteView lens_view = int32_any(o, "promptLengths", op);
  const size_t P = lens_view.length;
  if (P == 0 && !allow_empty) throw_range_error(op, "promptLengths", "at least one prompt", "0 prompts");
  const int32_t* lens = reinterpret_cast<const int32_t*>(lens_view.data);
  const int32_t* vid = int32_array(o, "promptVideo", P, op);
  size_t total = 0;
  for (size_t i = 0; i < P; i++) {
    if (lens[i] < 1)
      throw_range_error(op, "promptLengths[" + std::to_string(i) + "]", "an integer >= 1", std::to_string(lens[i]));
    if (vid[i] < 0 || vid[i] >= V)
      throw_range_error(op, "promptVideo[" + std::to_string(i) + "]", "a video index in [0, " + std::to_string(V) + ")",
                        std::to_string(vid[i]));
    total += static_cast<size_t>(lens[i]);
  }
  const int32_t* ids = int32_array(o, "promptIds", total, op);
  check_ids(ids, total, c.vocab_size, op, "promptIds");
  b.group = read_int(o.Get("groupSize"), op, "groupSize", 1, 1 << 16);
  Napi::Value tv = o.Get("promptTransform");
  std::vector<FrameOp> ops(P, FrameOp::None);
  if (!tv.IsUndefined() && !tv.IsNull()) {
    if (!tv.IsArray() || tv.As<Napi::Array>().Length() != P)
      throw_type_error(op, "promptTransform", "an array of " + std::to_string(P) + " transform names", tv);
    auto arr = tv.As<Napi::Array>();
    for (size_t i = 0; i < P; i++) {
      Napi::Value s = arr.Get(static_cast<uint32_t>(i));
      if (!s.IsString()) throw_type_error(op, "promptTransform[" + std::to_string(i) + "]", "a transform name", s);
      ops[i] = parse_op(s.As<Napi::String>().Utf8Value(), op, i);
    }
  }
  // 'swap' prompts: the first frame of the second segment, in [1, T - 1].
  std::vector<int64_t> swap_at(P, 0);
  Napi::Value swv = o.Get("promptSwapAt");
  const int32_t* sw = swv.IsUndefined() || swv.IsNull() ? nullptr : int32_array(o, "promptSwapAt", P, op);
  for (size_t i = 0; i < P; i++) {
    if (ops[i] != FrameOp::Swap) continue;
    const int64_t at = sw ? sw[i] : 0;
    if (at < 1 || at >= c.frames)
      throw_range_error(op, "promptSwapAt[" + std::to_string(i) + "]",
                        "a frame index in [1, " + std::to_string(c.frames - 1) + "] for a 'swap' prompt",
                        sw ? std::to_string(at) : "none");
    swap_at[i] = at;
  }
  // Optional option slots, one per prompt token, in [0, optionSlots].
  const int32_t* slots = nullptr;
  Napi::Value sv = o.Get("promptSlots");
  if (!sv.IsUndefined() && !sv.IsNull()) {
    slots = int32_array(o, "promptSlots", total, op);
    for (size_t k = 0; k < total; k++) {
      if (slots[k] < 0 || slots[k] > c.option_slots) {
        throw_range_error(op, "promptSlots[" + std::to_string(k) + "]",
                          "an option slot in [0, " + std::to_string(c.option_slots) + "]", std::to_string(slots[k]));
      }
    }
  }
  // Optional vision attribute labels, (start, size, class) per prompt; size 0 = no label.
  Napi::Value av = o.Get("promptAuxLabels");
  if (!av.IsUndefined() && !av.IsNull()) {
    const int32_t* aux = int32_array(o, "promptAuxLabels", 3 * P, op);
    for (size_t i = 0; i < P; i++) {
      const int64_t start = aux[3 * i], size = aux[3 * i + 1], cls = aux[3 * i + 2];
      if (size != 0 && (start < 0 || size < 1 || start + size > c.vision_aux_classes || cls < 0 || cls >= size)) {
        throw_range_error(op, "promptAuxLabels[" + std::to_string(i) + "]",
                          "(start, size, class) with a group inside the vision attribute head's " +
                              std::to_string(c.vision_aux_classes) + " logits and class < size, or size 0",
                          "(" + std::to_string(start) + ", " + std::to_string(size) + ", " + std::to_string(cls) + ")");
      }
      b.aux_start.push_back(start);
      b.aux_size.push_back(size);
      b.aux_class.push_back(cls);
    }
  }
  size_t at = 0;
  for (size_t i = 0; i < P; i++) {
    b.video.push_back(vid[i]);
    b.op.push_back(ops[i]);
    b.swap_at.push_back(swap_at[i]);
    b.ids.emplace_back(ids + at, ids + at + lens[i]);
    if (slots) b.slots.emplace_back(slots + at, slots + at + lens[i]);
    at += static_cast<size_t>(lens[i]);
  }
  return b;
}

// completions = { ids: Int32Array(N*C), lengths: Int32Array(N), width: C }
Completions parse_completions(const Napi::Object& o, const PolicyConfig& c, int64_t N, const std::string& op) {
  const int64_t C = read_int(o.Get("width"), op, "width", 1, 1 << 20);
  const int32_t* ids = int32_array(o, "ids", static_cast<size_t>(N * C), op);
  const int32_t* lens = int32_array(o, "lengths", static_cast<size_t>(N), op);
  check_ids(ids, static_cast<size_t>(N * C), c.vocab_size, op, "completions.ids");
  Completions out;
  out.ids = torch::empty({N, C}, torch::kLong);
  out.lengths = torch::empty({N}, torch::kLong);
  auto ia = out.ids.data_ptr<int64_t>();
  auto la = out.lengths.data_ptr<int64_t>();
  for (int64_t i = 0; i < N * C; i++) ia[i] = ids[i];
  for (int64_t i = 0; i < N; i++) {
    if (lens[i] < 0 || lens[i] > C)
      throw_range_error(op, "completions.lengths[" + std::to_string(i) + "]",
                        "an integer in [0, " + std::to_string(C) + "]", std::to_string(lens[i]));
    la[i] = lens[i];
  }
  return out;
}

torch::Tensor float_tensor(const Napi::Object& o, const char* key, std::vector<int64_t> shape, const std::string& op,
                           bool optional) {
  size_t n = 1;
  for (auto s : shape) n *= static_cast<size_t>(s);
  ByteView v = read_array_of(o, key, napi_float32_array, n, op, optional);
  if (!v.data && optional) return torch::Tensor();
  if (n == 0) return torch::empty(shape, torch::kFloat);
  return torch::from_blob(v.data, shape, torch::kFloat).clone();
}

Napi::Value to_js(Napi::Env env, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).contiguous();
  if (c.scalar_type() == torch::kLong || c.scalar_type() == torch::kInt) {
    auto ci = c.to(torch::kInt);
    auto arr = Napi::Int32Array::New(env, static_cast<size_t>(ci.numel()));
    std::memcpy(arr.Data(), ci.data_ptr<int32_t>(), static_cast<size_t>(ci.numel()) * 4);
    return arr;
  }
  if (c.scalar_type() == torch::kByte) {
    auto arr = Napi::Uint8Array::New(env, static_cast<size_t>(c.numel()));
    std::memcpy(arr.Data(), c.data_ptr<uint8_t>(), static_cast<size_t>(c.numel()));
    return arr;
  }
  auto cf = c.to(torch::kFloat);
  auto arr = Napi::Float32Array::New(env, static_cast<size_t>(cf.numel()));
  std::memcpy(arr.Data(), cf.data_ptr<float>(), static_cast<size_t>(cf.numel()) * 4);
  return arr;
}

Napi::Array shape_js(Napi::Env env, at::IntArrayRef s) {
  auto a = Napi::Array::New(env, s.size());
  for (size_t i = 0; i < s.size(); i++)
    a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(s[i])));
  return a;
}

Napi::Value stats_js(Napi::Env env, const StepStats& s) {
  auto r = Napi::Object::New(env);
  r.Set("loss", s.loss);
  r.Set("pgLoss", s.pg_loss);
  r.Set("klLoss", s.kl_loss);
  r.Set("meanKl", s.mean_kl);
  r.Set("clipFrac", s.clip_frac);
  r.Set("ratioMean", s.ratio_mean);
  r.Set("entropy", s.entropy);
  r.Set("visionAuxLoss", s.vision_aux_loss);
  r.Set("tokens", s.tokens);
  r.Set("gradNorm", s.grad_norm);
  r.Set("skipped", s.skipped);
  r.Set("skipReason", s.skip_reason);
  r.Set("step", static_cast<double>(s.step));
  return r;
}

LossOptions parse_loss(const Napi::Object& o, const std::string& op) {
  LossOptions l;
  l.eps_low = args::optional_number(o, "clipLow", op, l.eps_low);
  l.eps_high = args::optional_number(o, "clipHigh", op, l.eps_high);
  l.beta = args::optional_number(o, "beta", op, l.beta);
  l.temperature = args::optional_number(o, "temperature", op, 1.0);
  if (!(l.temperature > 0)) throw_range_error(op, "temperature", "a number > 0", std::to_string(l.temperature));
  if (l.eps_low < 0 || l.eps_high < 0)
    throw_range_error(op, "clipLow/clipHigh", "numbers >= 0",
                      std::to_string(l.eps_low) + "/" + std::to_string(l.eps_high));
  l.max_new_tokens = args::optional_int(o, "maxNewTokens", op, 0, 0, 1 << 20);
  l.full_sequence = args::optional_bool(o, "fullSequence", op, false);
  l.prompt_lm = args::optional_number(o, "promptLmWeight", op, 0.0);
  if (!(l.prompt_lm >= 0)) throw_range_error(op, "promptLmWeight", "a number >= 0", std::to_string(l.prompt_lm));
  l.vision_aux = args::optional_number(o, "visionAuxWeight", op, 0.0);
  if (!(l.vision_aux >= 0)) throw_range_error(op, "visionAuxWeight", "a number >= 0", std::to_string(l.vision_aux));
  const std::string agg = args::optional_string(o, "aggregation", op, "seq-mean-token-mean");
  if (agg == "seq-mean-token-mean")
    l.agg = Aggregation::SeqMeanTokenMean;
  else if (agg == "token-mean")
    l.agg = Aggregation::TokenMean;
  else if (agg == "seq-mean-token-sum-norm")
    l.agg = Aggregation::SeqMeanTokenSumNorm;
  else
    throw_range_error(op, "aggregation", "'seq-mean-token-mean', 'token-mean' or 'seq-mean-token-sum-norm'",
                      "'" + agg + "'");
  return l;
}

Napi::Value Create(const Napi::CallbackInfo& info) {
  const std::string op = "policyCreate";
  return guarded(info, op, [&]() -> Napi::Value {
    PolicyConfig c = parse_config(args::object(info, 0, op, "config"), op);
    auto id = std::make_shared<int64_t>(0);
    return run(
        info.Env(), op, [c, id]() { *id = register_policy(std::make_shared<Policy>(c)); },
        [id](Napi::Env env) { return Napi::Number::New(env, static_cast<double>(*id)); });
  });
}

Napi::Value Clone(const Napi::CallbackInfo& info) {
  const std::string op = "policyClone";
  return guarded(info, op, [&]() -> Napi::Value {
    auto src = find_policy(id_arg(info, op), op);
    const bool frozen = args::optional_bool(args::optional_object(info, 1, op, "options"), "frozen", op, true);
    auto id = std::make_shared<int64_t>(0);
    return run(
        info.Env(), op, [src, frozen, id]() { *id = register_policy(std::make_shared<Policy>(*src, frozen)); },
        [id](Napi::Env env) { return Napi::Number::New(env, static_cast<double>(*id)); });
  });
}

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  return guarded(info, "policyDispose", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), dispose_policy(id_arg(info, "policyDispose")));
  });
}

Napi::Value Live(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live_policies()));
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  const std::string op = "policyInfo";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    Napi::Env env = info.Env();
    auto r = Napi::Object::New(env);
    r.Set("parameters", static_cast<double>(p->parameter_count()));
    r.Set("step", static_cast<double>(p->step()));
    r.Set("frozen", p->frozen());
    r.Set("visualTokens", static_cast<double>(p->config().visual_tokens()));
    auto names = p->parameter_names();
    auto params = p->net_params();
    auto n = Napi::Array::New(env, names.size());
    auto s = Napi::Array::New(env, names.size());
    for (size_t i = 0; i < names.size(); i++) {
      n.Set(static_cast<uint32_t>(i), names[i]);
      s.Set(static_cast<uint32_t>(i), shape_js(env, params[i].sizes()));
    }
    r.Set("names", n);
    r.Set("shapes", s);
    return r;
  });
}

Napi::Value Generate(const Napi::CallbackInfo& info) {
  const std::string op = "policyGenerate";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    std::vector<Napi::Value> keep;
    auto b = std::make_shared<PromptBatch>(parse_batch(args::object(info, 1, op, "batch"), p->config(), op, keep));
    Napi::Object o = args::optional_object(info, 2, op, "options");
    SamplingOptions s;
    s.max_new_tokens = args::optional_int(o, "maxNewTokens", op, s.max_new_tokens, 1, 1 << 16);
    s.temperature = args::optional_number(o, "temperature", op, 1.0);
    if (!(s.temperature > 0)) throw_range_error(op, "temperature", "a number > 0", std::to_string(s.temperature));
    s.top_p = args::optional_number(o, "topP", op, 1.0);
    if (!(s.top_p > 0 && s.top_p <= 1)) throw_range_error(op, "topP", "a number in (0, 1]", std::to_string(s.top_p));
    s.top_k = args::optional_int(o, "topK", op, 0, 0, 1 << 24);
    s.greedy = args::optional_bool(o, "greedy", op, false);
    s.use_cache = args::optional_bool(o, "useCache", op, true);
    Napi::Value seeds = o.Get("promptSeeds");
    if (!seeds.IsUndefined() && !seeds.IsNull()) {
      ByteView sv = read_array_of(o, "promptSeeds", napi_uint32_array, static_cast<size_t>(b->prompts()), op, false);
      const uint32_t* sd = reinterpret_cast<const uint32_t*>(sv.data);
      s.seeds.assign(sd, sd + sv.length);
    }
    Napi::Value stop = o.Get("stop");
    if (!stop.IsUndefined() && !stop.IsNull()) {
      ByteView sv = read_typed_array(stop, op, "stop");
      if (sv.type != napi_int32_array) throw_type_error(op, "stop", "an Int32Array", stop);
      const int32_t* st = reinterpret_cast<const int32_t*>(sv.data);
      check_ids(st, sv.length, p->config().vocab_size, op, "stop");
      s.stop.assign(st, st + sv.length);
    }
    auto out = std::make_shared<Generation>();
    return run(
        info.Env(), op, [p, b, s, out]() { *out = p->generate(*b, s); },
        [out, s](Napi::Env env) {
          auto r = Napi::Object::New(env);
          r.Set("tokens", to_js(env, out->tokens));
          r.Set("logprobs", to_js(env, out->logprobs));
          r.Set("lengths", to_js(env, out->lengths));
          r.Set("width", static_cast<double>(s.max_new_tokens));
          return r;
        },
        keep);
  });
}

Napi::Value Logprobs(const Napi::CallbackInfo& info) {
  const std::string op = "policyLogprobs";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    std::vector<Napi::Value> keep;
    auto b = std::make_shared<PromptBatch>(parse_batch(args::object(info, 1, op, "batch"), p->config(), op, keep));
    auto c = std::make_shared<Completions>(
        parse_completions(args::object(info, 2, op, "completions"), p->config(), b->prompts() * b->group, op));
    Napi::Object o = args::optional_object(info, 3, op, "options");
    const double temperature = args::optional_number(o, "temperature", op, 1.0);
    if (!(temperature > 0)) throw_range_error(op, "temperature", "a number > 0", std::to_string(temperature));
    const bool entropy = args::optional_bool(o, "entropy", op, false);
    const bool full_sequence = args::optional_bool(o, "fullSequence", op, false);
    auto out = std::make_shared<std::pair<torch::Tensor, torch::Tensor>>();
    return run(
        info.Env(), op,
        [p, b, c, temperature, entropy, full_sequence, out]() {
          *out = p->logprobs(*b, *c, temperature, entropy, full_sequence);
        },
        [out](Napi::Env env) {
          auto r = Napi::Object::New(env);
          r.Set("logprobs", to_js(env, out->first));
          if (out->second.defined()) r.Set("entropy", to_js(env, out->second));
          return r;
        },
        keep);
  });
}

Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  const std::string op = "policyTrainStep";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    std::vector<Napi::Value> keep;
    auto b = std::make_shared<PromptBatch>(
        parse_batch(args::object(info, 1, op, "batch"), p->config(), op, keep, /*allow_empty=*/true));
    const int64_t N = b->prompts() * b->group;
    Napi::Object co = args::object(info, 2, op, "completions");
    auto c = std::make_shared<Completions>(parse_completions(co, p->config(), N, op));
    const int64_t C = c->ids.size(1);
    Napi::Object o = args::optional_object(info, 3, op, "options");
    const std::string mode = args::optional_string(o, "mode", op, "rl");
    if (mode != "rl" && mode != "sft") throw_range_error(op, "mode", "'rl' or 'sft'", "'" + mode + "'");
    const bool sft = mode == "sft";
    LossOptions lo = parse_loss(o, op);
    OptimOptions oo;
    oo.lr = args::optional_number(o, "lr", op, oo.lr);
    oo.beta1 = args::optional_number(o, "beta1", op, oo.beta1);
    oo.beta2 = args::optional_number(o, "beta2", op, oo.beta2);
    oo.eps = args::optional_number(o, "adamEps", op, oo.eps);
    oo.weight_decay = args::optional_number(o, "weightDecay", op, oo.weight_decay);
    oo.max_grad_norm = args::optional_number(o, "maxGradNorm", op, oo.max_grad_norm);
    if (oo.lr < 0) throw_range_error(op, "lr", "a number >= 0", std::to_string(oo.lr));
    if (oo.beta1 < 0 || oo.beta1 >= 1 || oo.beta2 < 0 || oo.beta2 >= 1)
      throw_range_error(op, "beta1/beta2", "numbers in [0, 1)",
                        std::to_string(oo.beta1) + "/" + std::to_string(oo.beta2));
    const int64_t pg = args::optional_int(o, "processGroup", op, -1, -1, kMaxInt);
    oo.overlap_grads = args::optional_bool(o, "overlapGrads", op, oo.overlap_grads);
    oo.grad_bucket_mb = args::optional_number(o, "gradBucketMb", op, oo.grad_bucket_mb);
    if (!(oo.grad_bucket_mb >= 0))
      throw_range_error(op, "gradBucketMb", "a number >= 0 (MiB)", std::to_string(oo.grad_bucket_mb));
    torch::Tensor adv, old_lp, ref_lp;
    if (!sft) {
      adv = float_tensor(co, "advantages", {N}, op, false);
      old_lp = float_tensor(co, "oldLogprobs", {N, C}, op, true);
      ref_lp = float_tensor(co, "refLogprobs", {N, C}, op, true);
    }
    auto out = std::make_shared<StepStats>();
    return run(
        info.Env(), op, [=]() { *out = p->train_step(*b, *c, adv, old_lp, ref_lp, lo, oo, sft, pg); },
        [out](Napi::Env env) { return stats_js(env, *out); }, keep);
  });
}

Napi::Value GetState(const Napi::CallbackInfo& info) {
  const std::string op = "policyGetState";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    const std::string which = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    if (which != "weights" && which != "optimizer")
      throw_type_error(op, "which", "'weights' or 'optimizer'", info.Length() > 1 ? info[1] : info.Env().Undefined());
    auto out = std::make_shared<std::vector<NamedTensor>>();
    auto step = std::make_shared<int64_t>(0);
    return run(
        info.Env(), op,
        [p, which, out, step]() {
          *out = which == "weights" ? p->get_parameters() : p->get_optimizer_state();
          *step = p->step();
        },
        [out, step](Napi::Env env) {
          auto arr = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); i++) {
            auto t = Napi::Object::New(env);
            t.Set("name", (*out)[i].name);
            t.Set("shape", shape_js(env, (*out)[i].value.sizes()));
            t.Set("data", to_js(env, (*out)[i].value));
            arr.Set(static_cast<uint32_t>(i), t);
          }
          auto r = Napi::Object::New(env);
          r.Set("tensors", arr);
          r.Set("step", static_cast<double>(*step));
          return r;
        });
  });
}

Napi::Value SetState(const Napi::CallbackInfo& info) {
  const std::string op = "policySetState";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    const std::string which = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    if (which != "weights" && which != "optimizer")
      throw_type_error(op, "which", "'weights' or 'optimizer'", info.Length() > 1 ? info[1] : info.Env().Undefined());
    if (info.Length() < 3 || !info[2].IsArray())
      throw_type_error(op, "tensors", "an array of { name, shape, data }",
                       info.Length() > 2 ? info[2] : info.Env().Undefined());
    auto arr = info[2].As<Napi::Array>();
    auto values = std::make_shared<std::vector<NamedTensor>>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      const std::string where = "tensors[" + std::to_string(i) + "]";
      if (!v.IsObject()) throw_type_error(op, where, "an object { name, shape, data }", v);
      auto t = v.As<Napi::Object>();
      Napi::Value nv = t.Get("name");
      if (!nv.IsString()) throw_type_error(op, where + ".name", "a string", nv);
      Napi::Value sv = t.Get("shape");
      if (!sv.IsArray()) throw_type_error(op, where + ".shape", "an array of integers", sv);
      std::vector<int64_t> shape;
      size_t n = 1;
      auto sa = sv.As<Napi::Array>();
      for (uint32_t k = 0; k < sa.Length(); k++) {
        shape.push_back(read_int(sa.Get(k), op, where + ".shape[" + std::to_string(k) + "]", 0, kMaxInt));
        n *= static_cast<size_t>(shape.back());
      }
      Napi::Value dv = t.Get("data");
      if (!dv.IsTypedArray() || dv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw_type_error(op, where + ".data", "a Float32Array", dv);
      ByteView d = read_typed_array(dv, op, where + ".data");
      if (d.length != n)
        throw_range_error(op, where + ".data", "a Float32Array of length " + std::to_string(n),
                          "length " + std::to_string(d.length));
      values->push_back({nv.As<Napi::String>().Utf8Value(), torch::from_blob(d.data, shape, torch::kFloat).clone()});
    }
    const int64_t step = which == "optimizer"
                             ? read_int(info.Length() > 3 ? info[3] : info.Env().Undefined(), op, "step", 0, kMaxInt)
                             : 0;
    return run(
        info.Env(), op,
        [p, which, values, step]() {
          if (which == "weights")
            p->set_parameters(*values);
          else
            p->set_optimizer_state(*values, step);
        },
        [](Napi::Env env) { return env.Undefined(); });
  });
}

Napi::Value GetRng(const Napi::CallbackInfo& info) {
  const std::string op = "policyGetRngState";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    return to_js(info.Env(), p->rng_state());
  });
}

Napi::Value SetRng(const Napi::CallbackInfo& info) {
  const std::string op = "policySetRngState";
  return guarded(info, op, [&]() -> Napi::Value {
    auto p = find_policy(id_arg(info, op), op);
    if (info.Length() < 2 || !info[1].IsTypedArray() ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw_type_error(op, "state", "a Uint8Array", info.Length() > 1 ? info[1] : info.Env().Undefined());
    }
    ByteView v = read_typed_array(info[1], op, "state");
    auto t = torch::from_blob(v.data, {static_cast<int64_t>(v.length)}, torch::kByte).clone();
    torch_guard(op, [&]() { p->set_rng_state(t); });
    return info.Env().Undefined();
  });
}

// policyLoss({ logprobs, oldLogprobs?, refLogprobs?, advantages, mask, rows, width }, lossOptions):
// the loss of section 6 on given log-probs (float64), with its gradient w.r.t. the log-probs.
Napi::Value Loss(const Napi::CallbackInfo& info) {
  const std::string op = "policyLoss";
  return guarded(info, op, [&]() -> Napi::Value {
    Napi::Object o = args::object(info, 0, op, "inputs");
    const int64_t N = read_int(o.Get("rows"), op, "rows", 1, 1 << 24);
    const int64_t C = read_int(o.Get("width"), op, "width", 1, 1 << 24);
    LossOptions lo = parse_loss(args::optional_object(info, 1, op, "options"), op);
    return torch_guard(op, [&]() -> Napi::Value {
      auto lp = float_tensor(o, "logprobs", {N, C}, op, false).to(torch::kDouble).set_requires_grad(true);
      auto old = float_tensor(o, "oldLogprobs", {N, C}, op, true);
      auto ref = float_tensor(o, "refLogprobs", {N, C}, op, true);
      auto adv = float_tensor(o, "advantages", {N}, op, false).to(torch::kDouble);
      auto mask = float_tensor(o, "mask", {N, C}, op, false).to(torch::kDouble);
      auto r = policy_loss(lp, old.defined() ? old.to(torch::kDouble) : old,
                           ref.defined() ? ref.to(torch::kDouble) : ref, adv, mask, lo);
      r.loss.backward();
      Napi::Env env = info.Env();
      auto res = Napi::Object::New(env);
      res.Set("loss", r.loss.item<double>());
      res.Set("pgLoss", r.pg_loss);
      res.Set("klLoss", r.kl_loss);
      res.Set("meanKl", r.mean_kl);
      res.Set("clipFrac", r.clip_frac);
      res.Set("ratioMean", r.ratio_mean);
      res.Set("tokens", r.tokens);
      res.Set("grad", to_js(env, lp.grad()));
      return res;
    });
  });
}

ExportRegistrar reg("policy", [](Napi::Env env, Napi::Object exports) {
  exports.Set("policyCreate", Napi::Function::New(env, Create, "policyCreate"));
  exports.Set("policyClone", Napi::Function::New(env, Clone, "policyClone"));
  exports.Set("policyDispose", Napi::Function::New(env, Dispose, "policyDispose"));
  exports.Set("policyLiveModels", Napi::Function::New(env, Live, "policyLiveModels"));
  exports.Set("policyInfo", Napi::Function::New(env, Info, "policyInfo"));
  exports.Set("policyGenerate", Napi::Function::New(env, Generate, "policyGenerate"));
  exports.Set("policyLogprobs", Napi::Function::New(env, Logprobs, "policyLogprobs"));
  exports.Set("policyTrainStep", Napi::Function::New(env, TrainStep, "policyTrainStep"));
  exports.Set("policyGetState", Napi::Function::New(env, GetState, "policyGetState"));
  exports.Set("policySetState", Napi::Function::New(env, SetState, "policySetState"));
  exports.Set("policyGetRngState", Napi::Function::New(env, GetRng, "policyGetRngState"));
  exports.Set("policySetRngState", Napi::Function::New(env, SetRng, "policySetRngState"));
  exports.Set("policyLoss", Napi::Function::New(env, Loss, "policyLoss"));
});

}  // namespace
}  // namespace policy
}  // namespace crpo
