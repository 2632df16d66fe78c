// The libtorch-free addon: counterfactual video transforms and CRR / GRPO group advantages on
// plain typed arrays, over the shared CPU kernels. Built by node-gyp on every install.
#include <napi.h>

#include "../common/napi_util.h"
#include "../common/ops_binding.h"
#include "../common/promise_worker.h"

namespace crpo {
namespace {

Napi::Value VideoTransformSync(const Napi::CallbackInfo& info) {
  return guarded(info, "videoTransformSync", [&]() -> Napi::Value {
    VideoTransformCall c = parse_video_transform(info, "videoTransformSync");
    apply_video_transform(c.input.data, c.output.data, c.shape, c.transform, c.swap_at);
    return c.output_value;
  });
}

Napi::Value VideoTransform(const Napi::CallbackInfo& info) {
  return guarded(info, "videoTransform", [&]() -> Napi::Value {
    VideoTransformCall c = parse_video_transform(info, "videoTransform");
    return queue_promise(info.Env(), "videoTransform",
                         [c]() { apply_video_transform(c.input.data, c.output.data, c.shape, c.transform, c.swap_at); },
                         resolve_with(c.output_value), {info[0], c.output_value});
  });
}

Napi::Value CrrAdvantagesSync(const Napi::CallbackInfo& info) {
  return guarded(info, "crrAdvantagesSync", [&]() -> Napi::Value {
    CrrCall c = parse_crr(info, "crrAdvantagesSync");
    crr_group_advantages(c.in, c.out);
    return c.result;
  });
}

Napi::Value CrrAdvantages(const Napi::CallbackInfo& info) {
  return guarded(info, "crrAdvantages", [&]() -> Napi::Value {
    CrrCall c = parse_crr(info, "crrAdvantages");
    return queue_promise(
        info.Env(), "crrAdvantages", [c]() { crr_group_advantages(c.in, c.out); }, resolve_with(c.result),
        crr_input_arrays(info[0].As<Napi::Object>()));
  });
}

Napi::Value GrpoAdvantagesSync(const Napi::CallbackInfo& info) {
  return guarded(info, "grpoAdvantagesSync", [&]() -> Napi::Value {
    GrpoCall c = parse_grpo(info, "grpoAdvantagesSync");
    grpo_group_advantages(c.in, c.out);
    return c.result;
  });
}

Napi::Value GrpoAdvantages(const Napi::CallbackInfo& info) {
  return guarded(info, "grpoAdvantages", [&]() -> Napi::Value {
    GrpoCall c = parse_grpo(info, "grpoAdvantages");
    return queue_promise(
        info.Env(), "grpoAdvantages", [c]() { grpo_group_advantages(c.in, c.out); }, resolve_with(c.result),
        grpo_input_arrays(info[0].As<Napi::Object>()));
  });
}

Napi::Value TgrpoAdvantagesSync(const Napi::CallbackInfo& info) {
  return guarded(info, "tgrpoAdvantagesSync", [&]() -> Napi::Value {
    TgrpoCall c = parse_tgrpo(info, "tgrpoAdvantagesSync");
    tgrpo_group_advantages(c.in, c.out);
    return c.result;
  });
}

Napi::Value ArrowAdvantagesSync(const Napi::CallbackInfo& info) {
  return guarded(info, "arrowAdvantagesSync", [&]() -> Napi::Value {
    ArrowCall c = parse_arrow(info, "arrowAdvantagesSync");
    arrow_group_advantages(c.in, c.out);
    return c.result;
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("kind", Napi::String::New(env, "core"));
  exports.Set("videoTransform", Napi::Function::New(env, VideoTransform, "videoTransform"));
  exports.Set("videoTransformSync", Napi::Function::New(env, VideoTransformSync, "videoTransformSync"));
  exports.Set("crrAdvantages", Napi::Function::New(env, CrrAdvantages, "crrAdvantages"));
  exports.Set("crrAdvantagesSync", Napi::Function::New(env, CrrAdvantagesSync, "crrAdvantagesSync"));
  exports.Set("grpoAdvantages", Napi::Function::New(env, GrpoAdvantages, "grpoAdvantages"));
  exports.Set("grpoAdvantagesSync", Napi::Function::New(env, GrpoAdvantagesSync, "grpoAdvantagesSync"));
  exports.Set("tgrpoAdvantagesSync", Napi::Function::New(env, TgrpoAdvantagesSync, "tgrpoAdvantagesSync"));
  exports.Set("arrowAdvantagesSync", Napi::Function::New(env, ArrowAdvantagesSync, "arrowAdvantagesSync"));
  return exports;
}

}  // namespace
}  // namespace crpo

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return crpo::Init(env, exports); }

NODE_API_MODULE(crpo_core, InitAddon)
