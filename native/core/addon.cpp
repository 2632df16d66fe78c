// The libtorch-free addon: counterfactual video transforms and CRR / GRPO group advantages on
// plain typed arrays, over the shared CPU kernels (the JS functions shared with the torch addon
// are common/ops_binding's *_js over the CPU plans). Built by node-gyp on every install.
#include <napi.h>

#include "../common/napi_util.h"
#include "../common/ops_binding.h"

namespace crpo {
namespace {

Napi::Value VideoTransformSync(const Napi::CallbackInfo& info) {
  return video_transform_js(info, "videoTransformSync", cpu_video_transform, nullptr);
}

Napi::Value VideoTransform(const Napi::CallbackInfo& info) {
  return video_transform_js(info, "videoTransform", cpu_video_transform, queue_promise);
}

Napi::Value CrrAdvantagesSync(const Napi::CallbackInfo& info) {
  return crr_advantages_js(info, "crrAdvantagesSync", cpu_crr, nullptr);
}

Napi::Value CrrAdvantages(const Napi::CallbackInfo& info) {
  return crr_advantages_js(info, "crrAdvantages", cpu_crr, queue_promise);
}

Napi::Value GrpoAdvantagesSync(const Napi::CallbackInfo& info) {
  return grpo_advantages_js(info, "grpoAdvantagesSync", nullptr);
}

Napi::Value GrpoAdvantages(const Napi::CallbackInfo& info) {
  return grpo_advantages_js(info, "grpoAdvantages", queue_promise);
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
