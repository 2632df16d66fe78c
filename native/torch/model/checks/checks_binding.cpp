// The test-only addon crpo_torch_checks.node (CMakeLists.txt): the JS function `policyGradCheck`
// over the harnesses of this folder (grad_check.cpp, fast_path_check.cpp). It links against the
// production addon crpo_torch.node (which must be loaded first; lib/native.ts torchChecksAddon
// does it) for the model code, so the production addon carries no test harness.
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/napi_util.h"
#include "torch/model/checks/policy_checks.h"
#include "torch/torch_worker.h"

namespace crpo {
namespace policy {
namespace {

constexpr int64_t kMaxInt = (int64_t{1} << 40);

// policyGradCheck(name, seed?): `name` a module (finite differences) or 'fast:<path>' (a fast
// path against its slow twin); resolves to { maxError, maxAbsGrad, checked }.
Napi::Value GradCheck(const Napi::CallbackInfo& info) {
  const std::string op = "policyGradCheck";
  return guarded(info, op, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsString())
      throw_type_error(op, "module", "a module name", info.Length() ? info[0] : info.Env().Undefined());
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    const uint64_t seed = static_cast<uint64_t>(
        read_int(info.Length() > 1 ? info[1] : Napi::Number::New(info.Env(), 0), op, "seed", 0, kMaxInt));
    auto out = std::make_shared<GradCheckResult>();
    return queue_torch(
        info.Env(), op, [name, seed, out]() { *out = grad_check(name, seed); },
        [out](Napi::Env env) {
          auto r = Napi::Object::New(env);
          r.Set("maxError", out->max_error);
          r.Set("maxAbsGrad", out->max_abs_grad);
          r.Set("checked", static_cast<double>(out->checked));
          return r;
        });
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("kind", Napi::String::New(env, "torch-checks"));
  exports.Set("policyGradCheck", Napi::Function::New(env, GradCheck, "policyGradCheck"));
  return exports;
}

}  // namespace
}  // namespace policy
}  // namespace crpo

static Napi::Object InitChecks(Napi::Env env, Napi::Object exports) { return crpo::policy::Init(env, exports); }

NODE_API_MODULE(crpo_torch_checks, InitChecks)
