// JS exports of the process groups (the "dist" module of the torch addon): distInit, collectives on
// Float32Array / Float64Array, barrier, abort, failure, info, shutdown, the reducer's check, and
// an immediate exit. Collectives run off the JS thread on the addon's one promise worker
// (TorchWorker: a libtorch failure rejects with ERR_CRPO_TORCH, as in every other module);
// lib/distributed/process-group.ts is their typed wrapper.
#include "torch/dist/group.h"

#include <napi.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "common/napi_util.h"
#include "torch/exports.h"
#include "torch/torch_worker.h"

namespace crpo {
namespace dist {
namespace {

// -- N-API ------------------------------------------------------------------------------------------

// Collectives and rendezvous run on the torch addon's one promise worker (torch_worker.h).
Napi::Value queue(const Napi::CallbackInfo& info, const std::string& op, std::function<void()> work,
                  std::function<Napi::Value(Napi::Env)> result, std::vector<Napi::Value> keep = {}) {
  return queue_torch(info.Env(), op, std::move(work), std::move(result), std::move(keep));
}

Napi::Value undefined_result(Napi::Env env) { return env.Undefined(); }

int64_t read_id(const Napi::CallbackInfo& info, const std::string& op) {
  return read_int(info.Length() > 0 ? info[0] : info.Env().Undefined(), op, "group", 1, INT64_C(1) << 52);
}

// JS typed arrays as CPU tensors over their memory (Float32Array or Float64Array).
std::vector<at::Tensor> read_arrays(const Napi::CallbackInfo& info, size_t idx, const std::string& op,
                                    std::vector<Napi::Value>& keep) {
  Napi::Value v = info.Length() > idx ? info[idx] : info.Env().Undefined();
  if (!v.IsArray()) throw_type_error(op, "arrays", "an array of Float32Array or Float64Array", v);
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value e = arr.Get(i);
    std::string name = "arrays[" + std::to_string(i) + "]";
    ByteView b = read_typed_array(e, op, name);
    at::ScalarType st;
    if (b.type == napi_float32_array)
      st = at::kFloat;
    else if (b.type == napi_float64_array)
      st = at::kDouble;
    else
      throw_type_error(op, name, "a Float32Array or Float64Array", e);
    out.push_back(torch::from_blob(b.data, {static_cast<int64_t>(b.length)}, at::TensorOptions().dtype(st)));
    keep.push_back(e);
  }
  keep.push_back(v);
  return out;
}

Napi::Value DistInit(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distInit", [&]() -> Napi::Value {
    const std::string op = "distInit";
    Napi::Object o = args::object(info, 0, op, "options");
    ProcessGroupOptions po;
    po.master_addr = args::optional_string(o, "masterAddr", op, po.master_addr);
    po.master_port = static_cast<int>(read_int(o.Get("masterPort"), op, "masterPort", 1, 65535));
    po.world_size = static_cast<int>(read_int(o.Get("worldSize"), op, "worldSize", 1, 1 << 20));
    po.rank = static_cast<int>(read_int(o.Get("rank"), op, "rank", 0, po.world_size - 1));
    po.local_rank = static_cast<int>(args::optional_number(o, "localRank", op, 0, 0, 1 << 20));
    po.backend = args::optional_string(o, "backend", op, po.backend);
    po.timeout_seconds = args::optional_number(o, "timeoutSeconds", op, po.timeout_seconds, 0.1, 1e7);
    po.bucket_mb = args::optional_number(o, "bucketMb", op, po.bucket_mb, 0, 1 << 16);
    po.heartbeat_interval_seconds =
        args::optional_number(o, "heartbeatIntervalSeconds", op, po.heartbeat_interval_seconds, 0.01, 3600);
    po.heartbeat_timeout_seconds =
        args::optional_number(o, "heartbeatTimeoutSeconds", op, po.heartbeat_timeout_seconds, 0.1, 1e7);
    po.agent_store = args::optional_bool(o, "agentStore", op, false);
    po.restart_count = static_cast<int>(args::optional_number(o, "restartCount", op, 0, 0, 1 << 20));
    auto id = std::make_shared<int64_t>(0);
    return queue(
        info, op, [po, id]() { *id = add_group(std::make_shared<Group>(po)); },
        [id](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*id)); });
  });
}

Napi::Value DistAllReduce(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distAllReduce", [&]() -> Napi::Value {
    const std::string op = "distAllReduce";
    auto g = find_group(read_id(info, op), op);
    std::vector<Napi::Value> keep;
    auto tensors = std::make_shared<std::vector<at::Tensor>>(read_arrays(info, 1, op, keep));
    std::string red = "sum";  // optional: undefined / null = 'sum'
    if (info.Length() > 2 && !args::absent(info[2])) {
      if (!info[2].IsString()) throw_type_error(op, "op", "'sum', 'mean', 'max' or 'min'", info[2]);
      red = info[2].As<Napi::String>().Utf8Value();
    }
    if (red != "sum" && red != "mean" && red != "max" && red != "min") {
      throw_range_error(op, "op", "'sum', 'mean', 'max' or 'min'", "'" + red + "'");
    }
    double bucket = -1;
    if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) bucket = read_number(info[3], op, "bucketMb");
    return queue(
        info, op, [g, tensors, red, bucket]() { g->allreduce(*tensors, red, bucket, false); }, undefined_result, keep);
  });
}

Napi::Value DistBroadcast(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distBroadcast", [&]() -> Napi::Value {
    const std::string op = "distBroadcast";
    auto g = find_group(read_id(info, op), op);
    std::vector<Napi::Value> keep;
    auto tensors = std::make_shared<std::vector<at::Tensor>>(read_arrays(info, 1, op, keep));
    int root = static_cast<int>(
        read_int(info.Length() > 2 ? info[2] : info.Env().Undefined(), op, "root", 0, g->world_size() - 1));
    return queue(
        info, op, [g, tensors, root]() { g->broadcast(*tensors, root, -1, false); }, undefined_result, keep);
  });
}

Napi::Value DistBarrier(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distBarrier", [&]() -> Napi::Value {
    auto g = find_group(read_id(info, "distBarrier"), "distBarrier");
    return queue(
        info, "distBarrier", [g]() { g->barrier(); }, undefined_result);
  });
}

Napi::Value DistAbort(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distAbort", [&]() -> Napi::Value {
    auto g = find_group(read_id(info, "distAbort"), "distAbort");
    std::string msg = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "aborted";
    g->abort(msg);
    return info.Env().Undefined();
  });
}

Napi::Value DistFailure(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distFailure", [&]() -> Napi::Value {
    auto g = find_group(read_id(info, "distFailure"), "distFailure");
    PeerFailure f = g->failure();
    if (f.message.empty()) return info.Env().Null();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("rank", f.rank >= 0 ? Napi::Value(Napi::Number::New(info.Env(), f.rank)) : info.Env().Null());
    o.Set("message", Napi::String::New(info.Env(), f.message));
    return o;
  });
}

Napi::Value DistInfo(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distInfo", [&]() -> Napi::Value {
    auto g = find_group(read_id(info, "distInfo"), "distInfo");
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("rank", Napi::Number::New(env, g->rank()));
    o.Set("worldSize", Napi::Number::New(env, g->world_size()));
    o.Set("localRank", Napi::Number::New(env, g->local_rank()));
    o.Set("backend", Napi::String::New(env, g->backend()));
    o.Set("device", Napi::String::New(env, g->device().str()));
    o.Set("commSeconds", Napi::Number::New(env, static_cast<double>(g->comm_ns_.load()) / 1e9));
    o.Set("commBytes", Napi::Number::New(env, static_cast<double>(g->comm_bytes_.load())));
    o.Set("commCalls", Napi::Number::New(env, static_cast<double>(g->comm_calls_.load())));
    o.Set("overlapWaitSeconds", Napi::Number::New(env, static_cast<double>(g->overlap_wait_ns_.load()) / 1e9));
    o.Set("overlapRounds", Napi::Number::New(env, static_cast<double>(g->overlap_rounds_.load())));
    o.Set("overlapBuckets", Napi::Number::New(env, static_cast<double>(g->overlap_buckets_.load())));
    o.Set("overlapEarlyBuckets", Napi::Number::New(env, static_cast<double>(g->overlap_early_buckets_.load())));
    return o;
  });
}

Napi::Value DistShutdown(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distShutdown", [&]() -> Napi::Value {
    const int64_t id = read_id(info, "distShutdown");
    std::shared_ptr<Group> g = take_group(id);
    if (!g) {
      auto d = Napi::Promise::Deferred::New(info.Env());
      d.Resolve(info.Env().Undefined());  // disposing twice is harmless
      return d.Promise();
    }
    return queue(
        info, "distShutdown", [g]() { g->shutdown(); }, undefined_result);
  });
}

Napi::Value DistLiveGroups(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live_groups()));
}

Napi::Value DistBackends(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env());
  a.Set(uint32_t(0), "gloo");
#ifdef CRPO_WITH_NCCL
  a.Set(uint32_t(1), "nccl");
#endif
  return a;
}

// Test twin: a small MLP on rank-dependent inputs; gradients averaged (a) by GradReducer during
// backward and (b) by allreduce_mean after backward. Returns the largest difference and the overlap.
Napi::Value DistReducerCheck(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "distReducerCheck", [&]() -> Napi::Value {
    const std::string op = "distReducerCheck";
    auto g = find_group(read_id(info, op), op);
    const double bucket = info.Length() > 1 ? read_number(info[1], op, "bucketMb") : 0.01;
    auto out = std::make_shared<std::array<double, 3>>();
    return queue(
        info, op,
        [g, bucket, out]() {
          torch::manual_seed(3);
          // params[0] is unused (no gradient: zeros, in the last bucket); the rest form y = W2 relu(W1 x + b1) + b2.
          std::vector<at::Tensor> params = {torch::randn({5}), torch::randn({64, 32}), torch::randn({64}),
                                            torch::randn({10, 64}), torch::randn({10})};
          for (auto& p : params) p.set_requires_grad(true);
          torch::manual_seed(100 + g->rank());
          at::Tensor x = torch::randn({8, 32});
          auto loss_of = [&]() {
            auto h = torch::relu(torch::matmul(x, params[1].t()) + params[2]);
            return (torch::matmul(h, params[3].t()) + params[4]).pow(2).mean();
          };
          GradReducer reducer(g, params, bucket);
          reducer.prepare();
          loss_of().backward();
          reducer.finish();
          std::vector<at::Tensor> overlapped;
          for (auto& p : params) overlapped.push_back(p.grad().clone());
          for (auto& p : params) p.mutable_grad() = at::Tensor();
          loss_of().backward();
          std::vector<at::Tensor> grads;
          for (auto& p : params) grads.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
          g->allreduce_mean(grads);
          double gap = 0;
          for (size_t i = 0; i < grads.size(); ++i)
            gap = std::max(gap, (overlapped[i] - grads[i]).abs().max().item<double>());
          (*out)[0] = gap;
          (*out)[1] = reducer.started_during_backward();
          (*out)[2] = reducer.buckets();
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("maxDiff", Napi::Number::New(env, (*out)[0]));
          o.Set("startedDuringBackward", Napi::Number::New(env, (*out)[1]));
          o.Set("buckets", Napi::Number::New(env, (*out)[2]));
          return o;
        });
  });
}

// Ends the process at once, without running static destructors while collective or heartbeat
// threads are still inside libtorch (used after a peer failure has been reported).
Napi::Value DistExitNow(const Napi::CallbackInfo& info) {
  int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

ExportRegistrar reg("dist", [](Napi::Env env, Napi::Object exports) {
  exports.Set("distInit", Napi::Function::New(env, DistInit, "distInit"));
  exports.Set("distAllReduce", Napi::Function::New(env, DistAllReduce, "distAllReduce"));
  exports.Set("distBroadcast", Napi::Function::New(env, DistBroadcast, "distBroadcast"));
  exports.Set("distBarrier", Napi::Function::New(env, DistBarrier, "distBarrier"));
  exports.Set("distAbort", Napi::Function::New(env, DistAbort, "distAbort"));
  exports.Set("distFailure", Napi::Function::New(env, DistFailure, "distFailure"));
  exports.Set("distInfo", Napi::Function::New(env, DistInfo, "distInfo"));
  exports.Set("distShutdown", Napi::Function::New(env, DistShutdown, "distShutdown"));
  exports.Set("distLiveGroups", Napi::Function::New(env, DistLiveGroups, "distLiveGroups"));
  exports.Set("distBackends", Napi::Function::New(env, DistBackends, "distBackends"));
  exports.Set("distExitNow", Napi::Function::New(env, DistExitNow, "distExitNow"));
  exports.Set("distReducerCheck", Napi::Function::New(env, DistReducerCheck, "distReducerCheck"));
});

}  // namespace
}  // namespace dist
}  // namespace crpo
