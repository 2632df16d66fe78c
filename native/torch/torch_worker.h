// The promise worker of every torch module (policy, Qwen models): runs `work` off the JS thread
// after crpo::prepare_thread(), turns c10::Error into OpError (torch_guard), and resolves with
// the value `done` builds on the JS thread from C++ data. `keep` holds JS buffers the work reads
// alive until the promise settles.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "common/napi_util.h"
#include "torch/exports.h"
#include "torch/ops.h"

namespace crpo {

class TorchWorker : public Napi::AsyncWorker {
 public:
  TorchWorker(Napi::Env env, std::string op, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done,
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
      prepare_thread();
      torch_guard(op_, [&]() { work_(); });
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

}  // namespace crpo
