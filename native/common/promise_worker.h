// The one promise worker of both addons: `work` runs off the JS thread and never touches JS
// values; `done` builds the resolved value on the JS thread from C++ data after the work ran;
// `keep` holds the JS buffers the work reads or writes alive until the promise settles. An
// exception from `work` rejects the promise with its code (OpError's, else ERR_CRPO_NATIVE /
// ERR_CRPO_OUT_OF_MEMORY: CapturedError). The torch addon's workers add libtorch's thread setup
// and the c10::Error -> ERR_CRPO_TORCH translation around `work` (torch/torch_worker.h).
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "napi_util.h"

namespace crpo {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::string op, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done,
                std::vector<Napi::Value> keep = {})
      : Napi::AsyncWorker(env, op.c_str()),
        op_(std::move(op)),
        work_(std::move(work)),
        done_(std::move(done)),
        deferred_(Napi::Promise::Deferred::New(env)) {
    for (auto& v : keep) keep_.push_back(Napi::Persistent(v));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (...) {
      error_.capture(op_, std::current_exception());
      SetError(error_.message);
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(done_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(make_js_error(env, ErrorKind::Generic, "ERR_CRPO_NATIVE", op_, op_ + ": " + e.what()).Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    if (error_.set)
      deferred_.Reject(make_js_error(env, error_.kind, error_.code, op_, error_.message).Value());
    else
      deferred_.Reject(e.Value());
  }

 private:
  std::string op_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
  CapturedError error_;
};

// Starts `work` on a PromiseWorker and returns its promise, which resolves to what `done` builds.
inline Napi::Promise queue_promise(Napi::Env env, const std::string& op, std::function<void()> work,
                                   std::function<Napi::Value(Napi::Env)> done, std::vector<Napi::Value> keep = {}) {
  auto* w = new PromiseWorker(env, op, std::move(work), std::move(done), std::move(keep));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// A `done` that resolves to `result`, a JS value built before the work started (kept alive until then).
inline std::function<Napi::Value(Napi::Env)> resolve_with(Napi::Value result) {
  auto ref = std::make_shared<Napi::Reference<Napi::Value>>(Napi::Persistent(result));
  return [ref](Napi::Env) -> Napi::Value { return ref->Value(); };
}

}  // namespace crpo
