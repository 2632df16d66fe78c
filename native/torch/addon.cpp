// The libtorch addon (crpo_torch): the foundation ops on CPU or CUDA tensors, run information
// for `crpo doctor`, and (later) the model, train step and process groups. Every heavy call is
// an AsyncWorker; the TS layer serialises them on one queue (lib/native.ts), and each worker
// sets libtorch's per-thread intra-op thread count first (native-notes: it is per OS thread).
#include <napi.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <ATen/Parallel.h>

#include <atomic>

#include "malloc_tuning.h"
#include "common/napi_util.h"
#include "common/ops_binding.h"
#include "exports.h"
#include "ops.h"
#include "torch_worker.h"

namespace crpo {
namespace {

std::atomic<int> g_threads{0};  // 0 = libtorch's default
}  // namespace

void prepare_thread() {
  // Once per OS thread and thread-count change: at::set_num_threads also resizes libtorch's
  // pthreadpool, which costs milliseconds, so it must not run on every call.
  thread_local int configured = -1;
  const int n = g_threads.load();
  if (configured == n) return;
  at::init_num_threads();
  if (n > 0) at::set_num_threads(n);
  configured = n;
}

namespace {

at::Device parse_device(const Napi::Object& o, const std::string& op) {
  const std::string s = args::optional_string(o, "device", op, "cpu");
  try {
    at::Device d(s);
    if (d.is_cuda() && !torch::cuda::is_available()) {
      throw OpError(ErrorKind::Generic, "ERR_CRPO_NO_CUDA",
                    op + ": device '" + s + "' requested but CUDA is not available");
    }
    if (!d.is_cpu() && !d.is_cuda()) throw_range_error(op, "device", "'cpu' or 'cuda[:N]'", "'" + s + "'");
    return d;
  } catch (const c10::Error&) {
    throw_range_error(op, "device", "'cpu' or 'cuda[:N]'", "'" + s + "'");
  }
}

at::Tensor wrap_frames(const ByteView& v, const VideoShape& s, bool is_float) {
  std::vector<int64_t> sizes = s.layout == FrameLayout::BTHWC
                                   ? std::vector<int64_t>{s.batch, s.frames, s.height, s.width, s.channels}
                                   : std::vector<int64_t>{s.batch, s.frames, s.channels, s.height, s.width};
  return torch::from_blob(v.data, sizes, at::TensorOptions().dtype(is_float ? at::kFloat : at::kByte));
}

// Runs the transform: directly on the JS buffers for CPU, through a device copy otherwise.
void run_video_transform(const VideoTransformCall& c, const at::Device& device) {
  if (device.is_cpu()) {
    apply_video_transform(c.input.data, c.output.data, c.shape, c.transform, c.swap_at);
    return;
  }
  torch_guard("videoTransform", [&]() {
    at::Tensor in = wrap_frames(c.input, c.shape, c.is_float).to(device);
    at::Tensor out = video_transform(in, c.shape.layout, c.transform, c.swap_at);
    wrap_frames(c.output, c.shape, c.is_float).copy_(out.cpu());
  });
}

void run_crr(const CrrCall& c, const at::Device& device) {
  if (device.is_cpu()) {
    crr_group_advantages(c.in, c.out);
    return;
  }
  torch_guard("crrAdvantages", [&]() {
    const int64_t B = c.in.groups, G = c.in.orig_size, H = c.in.cf_size;
    auto i32 = at::TensorOptions().dtype(at::kInt);
    auto f32 = at::TensorOptions().dtype(at::kFloat);
    auto dev = [&](const void* p, std::vector<int64_t> sizes, at::TensorOptions o) {
      return p ? torch::from_blob(const_cast<void*>(p), sizes, o).to(device).contiguous() : at::Tensor();
    };
    CrrTensors t;
    t.orig_answers = dev(c.in.orig_answers, {B, G}, i32);
    t.cf_answers = dev(c.in.cf_answers, {B, H}, i32);
    t.truth = dev(c.in.truth, {B}, i32);
    t.relation = dev(c.in.relation, {B}, i32);
    t.cf_label = dev(c.in.cf_label, {B}, i32);
    t.num_options = dev(c.in.num_options, {B}, i32);
    t.orig_format = dev(c.in.orig_format, {B, G}, f32);
    t.cf_format = dev(c.in.cf_format, {B, H}, f32);
    CrrResultTensors r = crr_advantages(t, c.in.weights, c.in.norm, c.in.eps);
    auto back = [](void* p, const at::Tensor& x) {
      if (!p) return;  // an optional output the caller did not ask for
      at::Tensor cpu = x.cpu();
      std::memcpy(p, cpu.data_ptr(), cpu.nbytes());
    };
    back(c.out.orig_reward, r.orig_reward);
    back(c.out.cf_reward, r.cf_reward);
    back(c.out.orig_advantage, r.orig_advantage);
    back(c.out.cf_advantage, r.cf_advantage);
    back(c.out.correct, r.correct);
    back(c.out.expected, r.expected);
    back(c.out.p_orig, r.p_orig);
    back(c.out.p_cf, r.p_cf);
    back(c.out.orig_flat, r.orig_flat);
    back(c.out.cf_flat, r.cf_flat);
  });
}

// Plans for common/ops_binding's JS functions: the kernel on options.device (CPU: the shared
// kernel on the JS buffers; else through a device copy).
std::function<void()> device_video_transform(const Napi::CallbackInfo& info, const std::string& op,
                                             const VideoTransformCall& c) {
  at::Device d = parse_device(args::optional_object(info, 1, op, "options"), op);
  return [c, d]() {
    prepare_thread();
    run_video_transform(c, d);
  };
}

std::function<void()> device_crr(const Napi::CallbackInfo& info, const std::string& op, const CrrCall& c) {
  at::Device d = parse_device(info[0].As<Napi::Object>(), op);
  return [c, d]() { run_crr(c, d); };
}

Napi::Value VideoTransformSync(const Napi::CallbackInfo& info) {
  return video_transform_js(info, "videoTransformSync", device_video_transform, nullptr);
}

Napi::Value VideoTransform(const Napi::CallbackInfo& info) {
  return video_transform_js(info, "videoTransform", device_video_transform, queue_torch);
}

Napi::Value CrrAdvantagesSync(const Napi::CallbackInfo& info) {
  return crr_advantages_js(info, "crrAdvantagesSync", device_crr, nullptr);
}

Napi::Value CrrAdvantages(const Napi::CallbackInfo& info) {
  return crr_advantages_js(info, "crrAdvantages", device_crr, queue_torch);
}

Napi::Value GrpoAdvantagesSync(const Napi::CallbackInfo& info) {
  return grpo_advantages_js(info, "grpoAdvantagesSync", nullptr);
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "setNumThreads", [&]() -> Napi::Value {
    int64_t n = read_int(info.Length() > 0 ? info[0] : info.Env().Undefined(), "setNumThreads", "threads", 1, 1024);
    g_threads.store(static_cast<int>(n));
    prepare_thread();
    return info.Env().Undefined();
  });
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  return guarded_torch(info, "info", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("torchVersion", Napi::String::New(env, TORCH_VERSION));
    o.Set("cudaAvailable", Napi::Boolean::New(env, torch::cuda::is_available()));
    o.Set("cudaDeviceCount", Napi::Number::New(env, static_cast<double>(torch::cuda::device_count())));
    o.Set("cudaKernelsBuilt", Napi::Boolean::New(env, cuda_kernels_built()));
    prepare_thread();
    o.Set("intraOpThreads", Napi::Number::New(env, at::get_num_threads()));
    o.Set("interOpThreads", Napi::Number::New(env, at::get_num_interop_threads()));
    o.Set("parallelInfo", Napi::String::New(env, at::get_parallel_info()));
    o.Set("malloc", Napi::String::New(env, tune_malloc_once()));
    o.Set("buildConfig", Napi::String::New(env, torch_guard("info", []() { return at::show_config(); })));
    return o;
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  tune_malloc_once();
  exports.Set("kind", Napi::String::New(env, "torch"));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
  exports.Set("videoTransform", Napi::Function::New(env, VideoTransform, "videoTransform"));
  exports.Set("videoTransformSync", Napi::Function::New(env, VideoTransformSync, "videoTransformSync"));
  exports.Set("crrAdvantages", Napi::Function::New(env, CrrAdvantages, "crrAdvantages"));
  exports.Set("crrAdvantagesSync", Napi::Function::New(env, CrrAdvantagesSync, "crrAdvantagesSync"));
  exports.Set("grpoAdvantagesSync", Napi::Function::New(env, GrpoAdvantagesSync, "grpoAdvantagesSync"));
  Napi::Array modules = Napi::Array::New(env);
  uint32_t i = 0;
  for (const ExportEntry& e : export_registry()) {
    e.fn(env, exports);
    modules.Set(i++, Napi::String::New(env, e.module));
  }
  exports.Set("modules", modules);
  return exports;
}

}  // namespace
}  // namespace crpo

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return crpo::Init(env, exports); }

NODE_API_MODULE(crpo_torch, InitAddon)
