// The promise worker of the torch addon (ops, policy, Qwen models, process groups): common/
// promise_worker.h's PromiseWorker with `work` run after crpo::prepare_thread() and inside
// torch_guard, so a libtorch failure (c10::Error) rejects with ERR_CRPO_TORCH from every module.
// `done` builds the resolved value on the JS thread from C++ data; `keep` holds JS buffers the
// work reads alive until the promise settles. `guarded_torch` gives the synchronous functions of
// the addon's own bindings (ops, Qwen, dist) the same code for a libtorch failure.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/promise_worker.h"
#include "torch/exports.h"
#include "torch/ops.h"

namespace crpo {

// `work` with libtorch's per-thread setup first and c10::Error mapped to ERR_CRPO_TORCH.
inline std::function<void()> torch_work(const std::string& op, std::function<void()> work) {
  return [op, work = std::move(work)]() {
    prepare_thread();
    torch_guard(op, work);
  };
}

class TorchWorker : public PromiseWorker {
 public:
  TorchWorker(Napi::Env env, const std::string& op, std::function<void()> work,
              std::function<Napi::Value(Napi::Env)> done, std::vector<Napi::Value> keep = {})
      : PromiseWorker(env, op, torch_work(op, std::move(work)), std::move(done), std::move(keep)) {}
};

// `guarded` (common/napi_util.h) for the torch addon's synchronous functions: a libtorch failure in
// `body` is ERR_CRPO_TORCH, as in its workers, never the generic ERR_CRPO_NATIVE.
template <typename F>
Napi::Value guarded_torch(const Napi::CallbackInfo& info, const std::string& op, F body) {
  return guarded(info, op, [&]() -> Napi::Value { return torch_guard(op, body); });
}

// Starts `work` on a TorchWorker and returns its promise, which resolves to what `done` builds.
inline Napi::Promise queue_torch(Napi::Env env, const std::string& op, std::function<void()> work,
                                 std::function<Napi::Value(Napi::Env)> done, std::vector<Napi::Value> keep = {}) {
  return queue_promise(env, op, torch_work(op, std::move(work)), std::move(done), std::move(keep));
}

}  // namespace crpo
