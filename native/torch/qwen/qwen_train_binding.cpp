// JS bindings of the Qwen models' training (registered as the "qwen-train" module of the torch
// addon): which weights train, gradient checkpointing, the train step (with the gradient all-reduce
// of data-parallel training when given a process group id), the step of a rank with nothing to
// train, and the AdamW state. Arguments are validated and copied on the JS thread (qwen_args.h).
#include <napi.h>

#include <memory>
#include <mutex>

#include "common/napi_util.h"
#include "torch/dist/process_group.h"
#include "torch/torch_worker.h"
#include "torch/exports.h"
#include "torch/ops.h"
#include "torch/qwen/qwen_args.h"
#include "torch/qwen/qwen_model.h"

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

Napi::Object stats_to_js(Napi::Env env, const qwen::TrainStats& st) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("loss", st.loss);
  r.Set("pgLoss", st.pg_loss);
  r.Set("kl", st.kl);
  r.Set("clipFraction", st.clip_frac);
  r.Set("gradNorm", st.grad_norm);
  r.Set("tokens", Napi::Number::New(env, static_cast<double>(st.tokens)));
  r.Set("entropy", st.entropy);
  r.Set("skipped", Napi::Boolean::New(env, st.skipped));
  return r;
}

// The step options shared by qwenTrainStep and qwenSyncStep (`batch` object); processGroup: the id
// of a live process group (lib/dist ProcessGroup.nativeId) whose ranks average their gradients.
qwen::TrainOptions read_train_options(const Napi::Object& o, const std::string& op) {
  qwen::TrainOptions to;
  to.objective = args::optional_string(o, "objective", op, "grpo");
  to.lr = args::optional_number(o, "lr", op, 1e-4);
  to.weight_decay = args::optional_number(o, "weightDecay", op, 0.0);
  to.max_grad_norm = args::optional_number(o, "maxGradNorm", op, 1.0);
  to.clip_low = args::optional_number(o, "clipLow", op, 0.2);
  to.clip_high = args::optional_number(o, "clipHigh", op, 0.2);
  to.kl_beta = args::optional_number(o, "klBeta", op, 0.0);
  to.aggregation = args::optional_string(o, "aggregation", op, "token-mean");
  to.max_new_tokens = args::optional_number(o, "maxNewTokens", op, 1.0);
  to.temperature = args::optional_number(o, "temperature", op, 1.0);
  to.norm_tokens = args::optional_int(o, "normTokens", op, 0, kAnyIntMin, kAnyIntMax);
  to.norm_seqs = args::optional_int(o, "normSequences", op, 0, kAnyIntMin, kAnyIntMax);
  to.apply = args::optional_bool(o, "apply", op, true);
  to.seed = args::optional_int(o, "seed", op, -1, kAnyIntMin, kAnyIntMax);
  if (!(to.temperature > 0)) throw_range_error(op, "batch.temperature", "a number > 0", std::to_string(to.temperature));
  if (to.aggregation != "token-mean" && to.aggregation != "seq-mean-token-mean" &&
      to.aggregation != "seq-mean-token-sum-norm")
    throw_range_error(op, "batch.aggregation", "'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum-norm'",
                      "'" + to.aggregation + "'");
  if (args::present(o, "processGroup")) {
    const int64_t id = read_int(o.Get("processGroup"), op, "batch.processGroup", 1, INT64_C(1) << 52);
    to.group = dist::find_process_group(id);
  }
  to.overlap_grads = args::optional_bool(o, "overlapGrads", op, true);
  to.grad_bucket_mb = args::optional_number(o, "gradBucketMb", op, 25.0);
  if (!(to.grad_bucket_mb >= 0))
    throw_range_error(op, "batch.gradBucketMb", "a number >= 0 (MiB)", std::to_string(to.grad_bucket_mb));
  to.zero = static_cast<int>(args::optional_int(o, "zero", op, 0, kAnyIntMin, kAnyIntMax));
  if (to.zero != 0 && to.zero != 1) throw_range_error(op, "batch.zero", "0 or 1", std::to_string(to.zero));
  return to;
}

// qwenTrainStep(model, inputs, { completionMask: Int32Array (B*L), advantages?: Float32Array (B),
//   oldLogprobs?, refLogprobs?: Float32Array (B*(L-1)), objective?, lr?, weightDecay?, maxGradNorm?,
//   clipLow?, clipHigh?, klBeta?, aggregation?, normTokens?, normSequences?, apply?, processGroup?,
//   overlapGrads? (true), gradBucketMb? (25), zero? (0 | 1) })
//   -> { loss, pgLoss, kl, clipFraction, gradNorm, tokens, entropy, skipped }
Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenTrainStep", [&]() -> Napi::Value {
    const std::string op = "qwenTrainStep";
    auto model = find_model(info[0], op);
    qwen::Inputs in = parse_inputs(info[1], model->config(), op);
    const int64_t B = in.input_ids.size(0), L = in.input_ids.size(1);
    if (L < 2) throw_range_error(op, "inputs.seqLen", "at least 2", std::to_string(L));
    Napi::Object o = args::object(info[2], op, "batch");
    qwen::TrainBatch b;
    b.completion_mask = copy_array(o.Get("completionMask"), op, "batch.completionMask", {B, L}, napi_int32_array);
    if (args::present(o, "advantages"))
      b.advantages = copy_array(o.Get("advantages"), op, "batch.advantages", {B}, napi_float32_array);
    if (args::present(o, "oldLogprobs"))
      b.old_logprobs = copy_array(o.Get("oldLogprobs"), op, "batch.oldLogprobs", {B, L - 1}, napi_float32_array);
    if (args::present(o, "refLogprobs"))
      b.ref_logprobs = copy_array(o.Get("refLogprobs"), op, "batch.refLogprobs", {B, L - 1}, napi_float32_array);
    qwen::TrainOptions to = read_train_options(o, op);
    if (to.kl_beta > 0 && !b.ref_logprobs.defined())
      throw_type_error(op, "batch.refLogprobs", "a Float32Array (klBeta > 0)", o.Get("refLogprobs"));
    if (to.objective != "grpo" && to.objective != "sft")
      throw_range_error(op, "batch.objective", "'grpo' or 'sft'", "'" + to.objective + "'");
    if (to.objective == "grpo" && !b.advantages.defined())
      throw_type_error(op, "batch.advantages", "a Float32Array of one advantage per row", o.Get("advantages"));
    auto out = std::make_shared<qwen::TrainStats>();
    return queue_torch(
        info.Env(), op,
        [model, in, b, to, out]() {
          std::lock_guard<std::mutex> lock(model->mu);
          *out = model->train_step(in, b, to);
        },
        [out](Napi::Env env) -> Napi::Value { return stats_to_js(env, *out); });
  });
}

// qwenSyncStep(model, { processGroup, lr?, weightDecay?, maxGradNorm?, ... }): the applying step
// of a rank with no sequences this step (or after a micro-batch with a non-finite loss): joins
// the group's gradient all-reduce with weight 0 and steps as every rank does. Same result shape.
Napi::Value SyncStep(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenSyncStep", [&]() -> Napi::Value {
    const std::string op = "qwenSyncStep";
    auto model = find_model(info[0], op);
    Napi::Object o = args::object(info[1], op, "batch");
    qwen::TrainOptions to = read_train_options(o, op);
    if (!to.group)
      throw_type_error(op, "batch.processGroup",
                       "a process group id (a step without sequences only joins the gradient all-reduce)",
                       o.Get("processGroup"));
    auto out = std::make_shared<qwen::TrainStats>();
    return queue_torch(
        info.Env(), op,
        [model, to, out]() {
          std::lock_guard<std::mutex> lock(model->mu);
          *out = model->sync_step(to);
        },
        [out](Napi::Env env) -> Napi::Value { return stats_to_js(env, *out); });
  });
}

Napi::Value SetTrainable(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenSetTrainable", [&]() -> Napi::Value {
    const std::string op = "qwenSetTrainable";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "mode", "'lora', 'lm' or 'all'", info[1]);
    std::string mode = info[1].As<Napi::String>().Utf8Value();
    std::lock_guard<std::mutex> lock(model->mu);
    torch_guard(op, [&]() { model->set_trainable(mode); });
    Napi::Array names = Napi::Array::New(info.Env());
    uint32_t i = 0;
    for (auto& n : model->trainable_names()) names.Set(i++, Napi::String::New(info.Env(), n));
    return names;
  });
}

Napi::Value SetCheckpointing(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenSetCheckpointing", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenSetCheckpointing");
    if (!info[1].IsBoolean()) throw_type_error("qwenSetCheckpointing", "enabled", "a boolean", info[1]);
    std::lock_guard<std::mutex> lock(model->mu);
    model->set_checkpointing(info[1].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}
// (the caller writes to a temp path and renames).
Napi::Value SaveOptimizer(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenSaveOptimizer", [&]() -> Napi::Value {
    const std::string op = "qwenSaveOptimizer";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "path", "a file path", info[1]);
    std::string path = info[1].As<Napi::String>().Utf8Value();
    return queue_torch(
        info.Env(), op,
        [model, path]() {
          std::lock_guard<std::mutex> lock(model->mu);
          model->save_optimizer(path);
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  });
}

Napi::Value LoadOptimizer(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenLoadOptimizer", [&]() -> Napi::Value {
    const std::string op = "qwenLoadOptimizer";
    auto model = find_model(info[0], op);
    if (!info[1].IsString()) throw_type_error(op, "path", "a file path", info[1]);
    std::string path = info[1].As<Napi::String>().Utf8Value();
    return queue_torch(
        info.Env(), op,
        [model, path]() {
          std::lock_guard<std::mutex> lock(model->mu);
          model->load_optimizer(path, qwen::TrainOptions());
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  });
}
// qwenOptimizerStateBytes(model) -> bytes of AdamW moments this rank holds (its shard with zero 1).
Napi::Value OptimizerStateBytes(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "qwenOptimizerStateBytes", [&]() -> Napi::Value {
    auto model = find_model(info[0], "qwenOptimizerStateBytes");
    std::lock_guard<std::mutex> lock(model->mu);
    return Napi::Number::New(info.Env(), static_cast<double>(model->optimizer_state_bytes()));
  });
}

ExportRegistrar reg("qwen-train", [](Napi::Env env, Napi::Object exports) {
  exports.Set("qwenOptimizerStateBytes", Napi::Function::New(env, OptimizerStateBytes, "qwenOptimizerStateBytes"));
  exports.Set("qwenTrainStep", Napi::Function::New(env, TrainStep, "qwenTrainStep"));
  exports.Set("qwenSyncStep", Napi::Function::New(env, SyncStep, "qwenSyncStep"));
  exports.Set("qwenSetTrainable", Napi::Function::New(env, SetTrainable, "qwenSetTrainable"));
  exports.Set("qwenSetCheckpointing", Napi::Function::New(env, SetCheckpointing, "qwenSetCheckpointing"));
  exports.Set("qwenSaveOptimizer", Napi::Function::New(env, SaveOptimizer, "qwenSaveOptimizer"));
  exports.Set("qwenLoadOptimizer", Napi::Function::New(env, LoadOptimizer, "qwenLoadOptimizer"));
});

}  // namespace
}  // namespace crpo
