// Implementation of the shared argument parsing (see ops_binding.h). Options are read with
// napi_util's args:: (undefined / null = absent, any other wrong type throws).
#include "ops_binding.h"

#include <limits>
#include <utility>

namespace crpo {
namespace {

const int64_t kMaxDim = std::numeric_limits<int32_t>::max();

AdvantageNorm read_norm(const Napi::Object& obj, const std::string& op) {
  std::string s = args::optional_string(obj, "norm", op, "per-branch");
  if (s == "per-branch") return AdvantageNorm::PerBranch;
  if (s == "joint") return AdvantageNorm::Joint;
  if (s == "none") return AdvantageNorm::None;
  throw_range_error(op, "norm", "one of 'per-branch', 'joint', 'none'", "'" + s + "'");
}

Napi::Float32Array new_f32(Napi::Env env, size_t n, float** ptr) {
  auto a = Napi::Float32Array::New(env, n);
  *ptr = a.Data();
  return a;
}

Napi::Uint8Array new_u8(Napi::Env env, size_t n, uint8_t** ptr) {
  auto a = Napi::Uint8Array::New(env, n);
  *ptr = a.Data();
  return a;
}

}  // namespace

VideoTransformCall parse_video_transform(const Napi::CallbackInfo& info, const std::string& op) {
  Napi::Env env = info.Env();
  VideoTransformCall call;
  if (info.Length() < 1) throw_type_error(op, "input", "a Uint8Array or Float32Array", env.Undefined());
  Napi::Value input = info[0];
  if (!input.IsTypedArray()) throw_type_error(op, "input", "a Uint8Array or Float32Array", input);
  call.input = read_typed_array(input, op, "input");
  if (call.input.type != napi_uint8_array && call.input.type != napi_float32_array) {
    throw_type_error(op, "input", "a Uint8Array or Float32Array", input);
  }
  call.is_float = call.input.type == napi_float32_array;
  Napi::Object opts = args::object(info, 1, op, "options");

  std::string layout = args::optional_string(opts, "layout", op, "BTHWC");
  if (layout == "BTHWC")
    call.shape.layout = FrameLayout::BTHWC;
  else if (layout == "BTCHW")
    call.shape.layout = FrameLayout::BTCHW;
  else
    throw_range_error(op, "layout", "'BTHWC' or 'BTCHW'", "'" + layout + "'");

  Napi::Value shape_v = opts.Get("shape");
  if (!shape_v.IsArray()) throw_type_error(op, "shape", "an array of 5 integers", shape_v);
  Napi::Array shape = shape_v.As<Napi::Array>();
  if (shape.Length() != 5) {
    throw_range_error(op, "shape", "an array of 5 integers", "length " + std::to_string(shape.Length()));
  }
  int64_t dims[5];
  for (uint32_t i = 0; i < 5; ++i) dims[i] = read_int(shape.Get(i), op, "shape[" + std::to_string(i) + "]", 0, kMaxDim);
  call.shape.batch = dims[0];
  call.shape.frames = dims[1];
  if (call.shape.layout == FrameLayout::BTHWC) {
    call.shape.height = dims[2];
    call.shape.width = dims[3];
    call.shape.channels = dims[4];
  } else {
    call.shape.channels = dims[2];
    call.shape.height = dims[3];
    call.shape.width = dims[4];
  }
  call.shape.element_bytes = static_cast<int64_t>(call.input.element_bytes);
  // Element count with overflow detection.
  unsigned __int128 elements = 1;
  for (int64_t d : dims) elements *= static_cast<unsigned __int128>(d);
  if (elements != static_cast<unsigned __int128>(call.input.length)) {
    std::string s = "[";
    for (int i = 0; i < 5; ++i) s += std::to_string(dims[i]) + (i < 4 ? "," : "]");
    throw_range_error(op, "shape", "dimensions whose product equals input length " + std::to_string(call.input.length),
                      s);
  }

  std::string t = args::optional_string(opts, "transform", op, "");
  if (t == "hflip")
    call.transform = VideoTransform::HFlip;
  else if (t == "reverse")
    call.transform = VideoTransform::Reverse;
  else if (t == "hflip+reverse")
    call.transform = VideoTransform::HFlipReverse;
  else if (t == "swap")
    call.transform = VideoTransform::Swap;
  else
    throw_range_error(op, "transform", "one of 'hflip', 'reverse', 'hflip+reverse', 'swap'", "'" + t + "'");

  if (call.transform == VideoTransform::Swap) {
    Napi::Value s = opts.Get("swapAt");
    if (call.shape.frames < 2) {
      throw_range_error(op, "shape[1]", "at least 2 frames for 'swap'", std::to_string(call.shape.frames));
    }
    call.swap_at = read_int(s, op, "swapAt", 1, call.shape.frames - 1);
  }

  Napi::Value out_v = opts.Get("output");
  if (out_v.IsUndefined() || out_v.IsNull()) {
    if (call.is_float) {
      auto a = Napi::Float32Array::New(env, call.input.length);
      call.output_value = a;
    } else {
      auto a = Napi::Uint8Array::New(env, call.input.length);
      call.output_value = a;
    }
  } else {
    if (!out_v.IsTypedArray() || out_v.As<Napi::TypedArray>().TypedArrayType() != call.input.type) {
      throw_type_error(op, "output", call.is_float ? "a Float32Array like input" : "a Uint8Array like input", out_v);
    }
    call.output_value = out_v;
  }
  call.output = read_typed_array(call.output_value, op, "output");
  if (call.output.length != call.input.length) {
    throw_range_error(op, "output", "length " + std::to_string(call.input.length),
                      "length " + std::to_string(call.output.length));
  }
  const uint8_t* a0 = call.input.data;
  const uint8_t* a1 = a0 + call.input.byte_length;
  const uint8_t* b0 = call.output.data;
  const uint8_t* b1 = b0 + call.output.byte_length;
  if (call.input.byte_length > 0 && a0 < b1 && b0 < a1) {
    throw OpError(ErrorKind::Range, "ERR_CRPO_OVERLAP",
                  op + ": expected output not to overlap input but they share memory");
  }
  return call;
}

CrrCall parse_crr(const Napi::CallbackInfo& info, const std::string& op) {
  Napi::Env env = info.Env();
  Napi::Object o = args::object(info, 0, op, "inputs");
  CrrCall call;
  CrrInputs& in = call.in;
  in.groups = read_int(o.Get("groups"), op, "groups", 0, kMaxDim);
  in.orig_size = read_int(o.Get("origSize"), op, "origSize", 1, 1 << 20);
  in.cf_size = read_int(o.Get("cfSize"), op, "cfSize", 1, 1 << 20);
  const size_t B = static_cast<size_t>(in.groups);
  const size_t BG = B * static_cast<size_t>(in.orig_size), BH = B * static_cast<size_t>(in.cf_size);
  in.orig_answers =
      reinterpret_cast<const int32_t*>(read_array_of(o, "origAnswers", napi_int32_array, BG, op, false).data);
  in.cf_answers = reinterpret_cast<const int32_t*>(read_array_of(o, "cfAnswers", napi_int32_array, BH, op, false).data);
  in.truth = reinterpret_cast<const int32_t*>(read_array_of(o, "truth", napi_int32_array, B, op, false).data);
  in.relation = reinterpret_cast<const int32_t*>(read_array_of(o, "relation", napi_int32_array, B, op, false).data);
  in.cf_label = reinterpret_cast<const int32_t*>(read_array_of(o, "cfLabel", napi_int32_array, B, op, true).data);
  in.num_options =
      reinterpret_cast<const int32_t*>(read_array_of(o, "numOptions", napi_int32_array, B, op, false).data);
  in.orig_format =
      reinterpret_cast<const float*>(read_array_of(o, "origFormat", napi_float32_array, BG, op, true).data);
  in.cf_format = reinterpret_cast<const float*>(read_array_of(o, "cfFormat", napi_float32_array, BH, op, true).data);
  if (args::present(o, "weights")) {
    Napi::Object w = args::object(o.Get("weights"), op, "weights");
    in.weights.accuracy = args::optional_number(w, "accuracy", op, 1.0);
    in.weights.format = args::optional_number(w, "format", op, 1.0);
    in.weights.crr = args::optional_number(w, "crr", op, 1.0);
    in.weights.behave = args::optional_number(w, "behave", op, 1.0);
  }
  in.norm = read_norm(o, op);
  in.eps = args::optional_number(o, "eps", op, 1e-6);
  if (in.eps < 0) throw_range_error(op, "eps", "a number >= 0", std::to_string(in.eps));

  CrrOutputs& out = call.out;
  Napi::Value out_v = o.Get("out");
  if (out_v.IsUndefined() || out_v.IsNull()) {
    // One buffer for all ten outputs (float arrays first, 4-byte aligned), then views. A Node
    // Buffer is allocated without zero-filling (an ArrayBuffer is zeroed, which costs more than
    // the kernel at 1,024 groups); the kernel writes every element of every output.
    const size_t total = (2 * BG + 2 * BH + BG + BH + 2 * B) * sizeof(float) + 2 * B;
    Napi::Buffer<uint8_t> storage = Napi::Buffer<uint8_t>::New(env, total);
    Napi::ArrayBuffer ab = storage.ArrayBuffer();
    size_t offset = storage.ByteOffset();
    if (offset % alignof(float) != 0) {
      ab = Napi::ArrayBuffer::New(env, total);
      offset = 0;
    }
    auto f32 = [&](size_t n, float** ptr) {
      auto a = Napi::Float32Array::New(env, n, ab, offset);
      *ptr = a.Data();
      offset += n * sizeof(float);
      return a;
    };
    auto u8 = [&](size_t n, uint8_t** ptr) {
      auto a = Napi::Uint8Array::New(env, n, ab, offset);
      *ptr = a.Data();
      offset += n;
      return a;
    };
    Napi::Object r = Napi::Object::New(env);
    r.Set("origReward", f32(BG, &out.orig_reward));
    r.Set("cfReward", f32(BH, &out.cf_reward));
    r.Set("origAdvantage", f32(BG, &out.orig_advantage));
    r.Set("cfAdvantage", f32(BH, &out.cf_advantage));
    r.Set("correct", f32(BG, &out.correct));
    r.Set("expected", f32(BH, &out.expected));
    r.Set("pOrig", f32(B, &out.p_orig));
    r.Set("pCf", f32(B, &out.p_cf));
    r.Set("origFlat", u8(B, &out.orig_flat));
    r.Set("cfFlat", u8(B, &out.cf_flat));
    call.result = r;
    return call;
  }
  // Caller-provided outputs (reused across calls): the four reward/advantage arrays are
  // required, the others optional (skipped when absent). None may overlap an input.
  if (!out_v.IsObject() || out_v.IsArray()) throw_type_error(op, "out", "an object of Float32Arrays", out_v);
  Napi::Object w = out_v.As<Napi::Object>();
  std::vector<ByteView> views;
  auto f32 = [&](const char* key, size_t n, bool optional) {
    ByteView v = read_array_of(w, key, napi_float32_array, n, op, optional, std::string("out.") + key);
    if (v.data) views.push_back(v);
    return reinterpret_cast<float*>(v.data);
  };
  out.orig_reward = f32("origReward", BG, false);
  out.cf_reward = f32("cfReward", BH, false);
  out.orig_advantage = f32("origAdvantage", BG, false);
  out.cf_advantage = f32("cfAdvantage", BH, false);
  out.correct = f32("correct", BG, true);
  out.expected = f32("expected", BH, true);
  out.p_orig = f32("pOrig", B, true);
  out.p_cf = f32("pCf", B, true);
  for (const char* key : {"origFlat", "cfFlat"}) {
    ByteView v = read_array_of(w, key, napi_uint8_array, B, op, true, std::string("out.") + key);
    if (v.data) views.push_back(v);
    (key[0] == 'o' ? out.orig_flat : out.cf_flat) = v.data;
  }
  const std::vector<ByteView> inputs = {
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.orig_answers)), BG * 4},
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.cf_answers)), BH * 4},
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.truth)), B * 4},
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.relation)), B * 4},
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.cf_label)), in.cf_label ? B * 4 : 0},
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.num_options)), B * 4},
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.orig_format)), in.orig_format ? BG * 4 : 0},
      ByteView{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.cf_format)), in.cf_format ? BH * 4 : 0},
  };
  auto overlap = [](const ByteView& a, const ByteView& b) {
    return a.byte_length > 0 && b.byte_length > 0 && a.data < b.data + b.byte_length && b.data < a.data + a.byte_length;
  };
  for (size_t i = 0; i < views.size(); ++i) {
    for (const ByteView& x : inputs) {
      if (overlap(views[i], x))
        throw OpError(ErrorKind::Range, "ERR_CRPO_OVERLAP",
                      op + ": expected out arrays not to overlap the inputs but they share memory");
    }
    for (size_t j = i + 1; j < views.size(); ++j) {
      if (overlap(views[i], views[j]))
        throw OpError(ErrorKind::Range, "ERR_CRPO_OVERLAP",
                      op + ": expected out arrays not to share memory with each other");
    }
  }
  call.result = out_v;
  return call;
}

namespace {

// The fields of every one-branch group kernel (GRPO, T-GRPO, ArrowRL): { groups, groupSize,
// answers, truth, numOptions, format?, wAccuracy?, wFormat?, norm?, eps? } into `in`, and the
// outputs they share (reward, advantage, correct) into `r` / `out`.
template <typename Inputs>
void parse_group_fields(const Napi::Object& o, const std::string& op, Inputs& in) {
  in.groups = read_int(o.Get("groups"), op, "groups", 0, kMaxDim);
  in.group_size = read_int(o.Get("groupSize"), op, "groupSize", 1, 1 << 20);
  const size_t B = static_cast<size_t>(in.groups), BG = B * static_cast<size_t>(in.group_size);
  in.answers = reinterpret_cast<const int32_t*>(read_array_of(o, "answers", napi_int32_array, BG, op, false).data);
  in.truth = reinterpret_cast<const int32_t*>(read_array_of(o, "truth", napi_int32_array, B, op, false).data);
  in.num_options =
      reinterpret_cast<const int32_t*>(read_array_of(o, "numOptions", napi_int32_array, B, op, false).data);
  in.format = reinterpret_cast<const float*>(read_array_of(o, "format", napi_float32_array, BG, op, true).data);
  in.w_accuracy = args::optional_number(o, "wAccuracy", op, 1.0);
  in.w_format = args::optional_number(o, "wFormat", op, 1.0);
  in.norm = read_norm(o, op);
  in.eps = args::optional_number(o, "eps", op, 1e-6);
  if (in.eps < 0) throw_range_error(op, "eps", "a number >= 0", std::to_string(in.eps));
}

template <typename Outputs>
Napi::Object group_outputs(Napi::Env env, size_t BG, Outputs& out) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("reward", new_f32(env, BG, &out.reward));
  r.Set("advantage", new_f32(env, BG, &out.advantage));
  r.Set("correct", new_f32(env, BG, &out.correct));
  return r;
}

// (B, B * G) of parsed group fields.
template <typename Inputs>
std::pair<size_t, size_t> group_sizes(const Inputs& in) {
  const size_t B = static_cast<size_t>(in.groups);
  return {B, B * static_cast<size_t>(in.group_size)};
}

}  // namespace

GrpoCall parse_grpo(const Napi::CallbackInfo& info, const std::string& op) {
  Napi::Env env = info.Env();
  Napi::Object o = args::object(info, 0, op, "inputs");
  GrpoCall call;
  parse_group_fields(o, op, call.in);
  const auto [B, BG] = group_sizes(call.in);
  Napi::Object r = group_outputs(env, BG, call.out);
  r.Set("flat", new_u8(env, B, &call.out.flat));
  call.result = r;
  return call;
}

TgrpoCall parse_tgrpo(const Napi::CallbackInfo& info, const std::string& op) {
  Napi::Env env = info.Env();
  Napi::Object o = args::object(info, 0, op, "inputs");
  TgrpoCall call;
  TgrpoInputs& in = call.in;
  parse_group_fields(o, op, in);
  const auto [B, BG] = group_sizes(in);
  in.shuffled_size = read_int(o.Get("shuffledSize"), op, "shuffledSize", 1, 1 << 20);
  in.shuffled_answers = reinterpret_cast<const int32_t*>(
      read_array_of(o, "shuffledAnswers", napi_int32_array, B * static_cast<size_t>(in.shuffled_size), op, false).data);
  in.bonus = args::optional_number(o, "bonus", op, 0.3);
  in.mu = args::optional_number(o, "mu", op, 0.8);
  TgrpoOutputs& out = call.out;
  Napi::Object r = group_outputs(env, BG, out);
  r.Set("pOrdered", new_f32(env, B, &out.p_ordered));
  r.Set("pShuffled", new_f32(env, B, &out.p_shuffled));
  r.Set("bonusOn", new_u8(env, B, &out.bonus_on));
  r.Set("flat", new_u8(env, B, &out.flat));
  call.result = r;
  return call;
}

ArrowCall parse_arrow(const Napi::CallbackInfo& info, const std::string& op) {
  Napi::Env env = info.Env();
  Napi::Object o = args::object(info, 0, op, "inputs");
  ArrowCall call;
  ArrowInputs& in = call.in;
  parse_group_fields(o, op, in);
  const auto [B, BG] = group_sizes(in);
  in.reverse_size = read_int(o.Get("reverseSize"), op, "reverseSize", 1, 1 << 20);
  in.reverse_answers = reinterpret_cast<const int32_t*>(
      read_array_of(o, "reverseAnswers", napi_int32_array, B * static_cast<size_t>(in.reverse_size), op, false).data);
  in.w_reverse = args::optional_number(o, "wReverse", op, 0.5);
  ArrowOutputs& out = call.out;
  Napi::Object r = group_outputs(env, BG, out);
  r.Set("differ", new_f32(env, BG, &out.differ));
  r.Set("flat", new_u8(env, B, &out.flat));
  call.result = r;
  return call;
}

namespace {

template <size_t N>
std::vector<Napi::Value> present_arrays(const Napi::Object& o, const char* const (&keys)[N]) {
  std::vector<Napi::Value> v;
  for (const char* k : keys) {
    Napi::Value x = o.Get(k);
    if (!x.IsUndefined() && !x.IsNull()) v.push_back(x);
  }
  return v;
}

const char* const kCrrArrays[] = {"origAnswers", "cfAnswers",  "truth",      "relation",
                                  "cfLabel",     "numOptions", "origFormat", "cfFormat"};
const char* const kGrpoArrays[] = {"answers", "truth", "numOptions", "format"};

}  // namespace

std::vector<Napi::Value> crr_input_arrays(const Napi::Object& inputs) { return present_arrays(inputs, kCrrArrays); }
std::vector<Napi::Value> grpo_input_arrays(const Napi::Object& inputs) { return present_arrays(inputs, kGrpoArrays); }

std::function<void()> cpu_video_transform(const Napi::CallbackInfo&, const std::string&, const VideoTransformCall& c) {
  return [c]() { apply_video_transform(c.input.data, c.output.data, c.shape, c.transform, c.swap_at); };
}

std::function<void()> cpu_crr(const Napi::CallbackInfo&, const std::string&, const CrrCall& c) {
  return [c]() { crr_group_advantages(c.in, c.out); };
}

namespace {

// Runs `work` now and returns `result` (queue null: a ...Sync function), or on a worker whose
// promise resolves to `result`, keeping `keep` (the JS buffers the work reads) alive until then.
Napi::Value run_or_queue(const Napi::CallbackInfo& info, const std::string& op, std::function<void()> work,
                         Napi::Value result, std::vector<Napi::Value> keep, QueueFn queue) {
  if (!queue) {
    work();
    return result;
  }
  return queue(info.Env(), op, std::move(work), resolve_with(result), std::move(keep));
}

}  // namespace

Napi::Value video_transform_js(const Napi::CallbackInfo& info, const std::string& op, PlanFn<VideoTransformCall> plan,
                               QueueFn queue) {
  return guarded(info, op, [&]() -> Napi::Value {
    VideoTransformCall c = parse_video_transform(info, op);
    return run_or_queue(info, op, plan(info, op, c), c.output_value, {info[0], c.output_value}, queue);
  });
}

Napi::Value crr_advantages_js(const Napi::CallbackInfo& info, const std::string& op, PlanFn<CrrCall> plan,
                              QueueFn queue) {
  return guarded(info, op, [&]() -> Napi::Value {
    CrrCall c = parse_crr(info, op);
    return run_or_queue(info, op, plan(info, op, c), c.result, crr_input_arrays(info[0].As<Napi::Object>()), queue);
  });
}

Napi::Value grpo_advantages_js(const Napi::CallbackInfo& info, const std::string& op, QueueFn queue) {
  return guarded(info, op, [&]() -> Napi::Value {
    GrpoCall c = parse_grpo(info, op);
    return run_or_queue(
        info, op, [c]() { grpo_group_advantages(c.in, c.out); }, c.result,
        grpo_input_arrays(info[0].As<Napi::Object>()), queue);
  });
}

}  // namespace crpo
