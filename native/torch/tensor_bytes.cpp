// A byte counter on libtorch's CPU allocator, for memory measurements (`crpo bench plan`'s check
// against measured peaks, test/e2e/bench-plan-memory.test.ts). Installed on request (never by
// default): it wraps the allocator c10::GetCPUAllocator() returns, so every CPU tensor allocated
// after that adds its bytes to a live count and the peak of that count, and its deleter subtracts
// them. Tensors allocated before the install are not counted, before or after they are freed.
// Cost: a hash-map insert and erase under a mutex per tensor allocation. This is the CPU analogue of CUDA's "max
// allocated": tensor bytes asked for, without the C library's own overhead or fragmentation.
#include <c10/core/CPUAllocator.h>
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "exports.h"

namespace crpo {
namespace {

std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_allocations{0};
std::atomic<bool> g_installed{false};

// Block sizes by address. The DataPtr handed out keeps the block's address as its context, as the
// default allocator's does: some callers (raw_allocate) require that, so the size cannot ride in
// the context.
std::mutex g_mutex;
std::unordered_map<void*, int64_t> g_sizes;
c10::DeleterFnPtr g_base_delete = nullptr;

void counted_delete(void* ptr) {
  if (!ptr) return;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_sizes.find(ptr);
    if (it != g_sizes.end()) {
      g_live.fetch_sub(it->second);
      g_sizes.erase(it);
    }
  }
  g_base_delete(ptr);
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) const override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    // The default CPU allocator's blocks are their own context and freed by its raw deleter.
    TORCH_CHECK(data == inner.get_context() && inner.get_deleter() == g_base_delete,
                "tensorBytes: the CPU allocator in place does not free blocks by address; cannot count it");
    inner.release_context();
    if (data) {
      std::lock_guard<std::mutex> lock(g_mutex);
      g_sizes[data] = static_cast<int64_t>(n);
      const int64_t live = g_live.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
      if (live > g_peak.load()) g_peak.store(live);
      g_allocations.fetch_add(1);
    }
    return {data, data, &counted_delete, device};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &counted_delete; }

 private:
  c10::Allocator* base_;
};

Napi::Object stats(Napi::Env env) {
  auto o = Napi::Object::New(env);
  o.Set("installed", Napi::Boolean::New(env, g_installed.load()));
  o.Set("liveBytes", Napi::Number::New(env, static_cast<double>(g_live.load())));
  o.Set("peakBytes", Napi::Number::New(env, static_cast<double>(g_peak.load())));
  o.Set("allocations", Napi::Number::New(env, static_cast<double>(g_allocations.load())));
  return o;
}

// tensorBytes({ install?: boolean, resetPeak?: boolean }) -> { installed, liveBytes, peakBytes, allocations }.
// Call it with install: true before any torch work runs (the allocator slot is a plain pointer).
Napi::Value TensorBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info.Length() > 0 && info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(env);
  if (o.Get("install").ToBoolean().Value() && !g_installed.exchange(true)) {
    // Leaked on purpose: tensors freed at process exit still call into it.
    c10::Allocator* base = c10::GetCPUAllocator();
    g_base_delete = base->raw_deleter();
    if (!g_base_delete) {
      g_installed = false;
      Napi::Error::New(env, "tensorBytes: the CPU allocator in place has no raw deleter; cannot count it")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    static auto* counting = new CountingAllocator(base);
    c10::SetCPUAllocator(counting, /*priority=*/UINT8_MAX);
  }
  if (o.Get("resetPeak").ToBoolean().Value()) g_peak.store(g_live.load());
  return stats(env);
}

ExportRegistrar reg("tensor_bytes", [](Napi::Env env, Napi::Object exports) {
  exports.Set("tensorBytes", Napi::Function::New(env, TensorBytes, "tensorBytes"));
});

}  // namespace
}  // namespace crpo
