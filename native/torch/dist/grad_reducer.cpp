// DDP-style gradient averaging overlapped with backward (GradReducer, declared in
// process_group.h): buckets of parameters in reverse order, a hook per parameter, each full
// bucket's all-reduce started while backward goes on, in the same bucket order on every rank.
// Weighted rounds (prepare_weighted) scale each rank's gradient by its share of the global loss
// denominator as it enters the bucket, so the sum over ranks is the global batch's gradient: the
// same float operations, in the same order, as scaling after backward and all-reducing the sum.
#include <chrono>

#include "torch/dist/group.h"

namespace crpo {
namespace dist {

struct GradReducer::Impl {
  std::shared_ptr<Group> group;
  std::vector<at::Tensor> params;
  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0;
    bool filled = false;
  };
  struct Bucket {
    std::vector<size_t> members;
    at::Tensor flat;
    size_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  std::vector<unsigned> hooks;
  size_t next = 0;  // the next bucket to start (buckets start in index order on every rank)
  bool in_backward = false;
  bool mean = true;    // divide the sum by the world size (prepare) or not (prepare_weighted)
  double scale = 1.0;  // this rank's share, applied as a gradient enters its bucket
  int started_early = 0;
  std::mutex mu;  // hooks may run on autograd worker threads (one per device)

  void start_ready() {
    while (next < buckets.size() && buckets[next].pending == 0) {
      buckets[next].work = group->start_allreduce_sum(buckets[next].flat);
      if (in_backward) started_early++;
      next++;
    }
  }
};

GradReducer::GradReducer(std::shared_ptr<ProcessGroupHandle> group, std::vector<at::Tensor> params, double bucket_mb)
    : impl_(std::make_unique<Impl>()) {
  impl_->group = std::dynamic_pointer_cast<Group>(group);
  if (!impl_->group) throw OpError(ErrorKind::Generic, "ERR_CRPO_INVALID_ARG", "GradReducer: not a crpo process group");
  impl_->params = std::move(params);
  const int64_t cap = bucket_mb <= 0 ? 0 : static_cast<int64_t>(bucket_mb * 1024.0 * 1024.0);
  impl_->slots.resize(impl_->params.size());
  // Reverse order, one dtype and device per bucket.
  int64_t bytes = 0;
  for (size_t k = impl_->params.size(); k-- > 0;) {
    const at::Tensor& p = impl_->params[k];
    auto& bs = impl_->buckets;
    const bool fresh = bs.empty() || cap == 0 || bytes + static_cast<int64_t>(p.nbytes()) > cap ||
                       impl_->params[bs.back().members[0]].scalar_type() != p.scalar_type() ||
                       impl_->params[bs.back().members[0]].device() != p.device();
    if (fresh) {
      bs.emplace_back();
      bytes = 0;
    }
    impl_->slots[k].bucket = bs.size() - 1;
    bs.back().members.push_back(k);
    bytes += static_cast<int64_t>(p.nbytes());
  }
  for (auto& b : impl_->buckets) {
    int64_t n = 0;
    for (size_t k : b.members) {
      impl_->slots[k].offset = n;
      n += impl_->params[k].numel();
    }
    const at::Tensor& p0 = impl_->params[b.members[0]];
    b.flat = at::zeros({n}, p0.options().device(impl_->group->device()).requires_grad(false));
  }
  Impl* im = impl_.get();
  for (size_t k = 0; k < impl_->params.size(); ++k) {
    impl_->hooks.push_back(impl_->params[k].register_hook([im, k](at::Tensor grad) {
      std::lock_guard<std::mutex> lock(im->mu);
      // Outside prepare() .. finish() (a reducer kept across steps sees every backward, e.g. of
      // earlier micro-batches that only accumulate): nothing to do.
      if (!im->in_backward) return;
      Impl::Slot& s = im->slots[k];
      Impl::Bucket& b = im->buckets[s.bucket];
      at::NoGradGuard ng;
      // The hook sees this backward's gradient before it is accumulated into .grad(); earlier
      // micro-batches' gradients are in .grad() (the sum in the order accumulation would use).
      const at::Tensor& held = im->params[k].grad();
      at::Tensor slot = b.flat.narrow(0, s.offset, grad.numel());
      slot.copy_(held.defined() ? (held + grad).reshape({-1}) : grad.reshape({-1}));
      if (im->scale != 1.0) slot.mul_(im->scale);
      if (!s.filled) {
        s.filled = true;
        b.pending--;
      }
      im->start_ready();
    }));
  }
}

GradReducer::~GradReducer() {
  for (size_t k = 0; k < impl_->hooks.size(); ++k) {
    try {
      impl_->params[k].remove_hook(impl_->hooks[k]);
    } catch (...) {
    }
  }
}

int GradReducer::buckets() const { return static_cast<int>(impl_->buckets.size()); }

void GradReducer::prepare() {
  prepare_weighted(1.0);
  impl_->mean = true;
}

void GradReducer::prepare_weighted(double share) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->mean = false;
  impl_->scale = share;
  for (auto& s : impl_->slots) s.filled = false;
  for (auto& b : impl_->buckets) {
    b.pending = b.members.size();
    b.work.reset();
  }
  impl_->next = 0;
  impl_->started_early = 0;
  impl_->in_backward = true;
}

void GradReducer::finish() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->in_backward = false;
    started_early_ = impl_->started_early;
    // Parameters that got no gradient this backward contribute what .grad() holds (earlier
    // micro-batches), else zeros, on every rank alike.
    at::NoGradGuard ng;
    for (size_t k = 0; k < impl_->slots.size(); ++k) {
      auto& s = impl_->slots[k];
      if (s.filled) continue;
      auto& b = impl_->buckets[s.bucket];
      const at::Tensor& held = impl_->params[k].grad();
      at::Tensor slot = b.flat.narrow(0, s.offset, impl_->params[k].numel());
      if (held.defined()) {
        slot.copy_(held.reshape({-1}));
        if (impl_->scale != 1.0) slot.mul_(impl_->scale);
      } else {
        slot.zero_();
      }
      s.filled = true;
      b.pending--;
    }
    impl_->start_ready();
  }
  at::NoGradGuard ng;
  const double world = impl_->group->world_size();
  int64_t ns = 0;
  for (auto& b : impl_->buckets) {
    const auto t0 = std::chrono::steady_clock::now();
    impl_->group->wait_allreduce(b.work);
    ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    if (impl_->mean) b.flat.div_(world);
    for (size_t k : b.members) {
      at::Tensor& p = impl_->params[k];
      at::Tensor v = b.flat.narrow(0, impl_->slots[k].offset, p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(v);
      else
        p.mutable_grad() = v.to(p.device()).clone();
    }
  }
  last_wait_s_ = static_cast<double>(ns) / 1e9;
  impl_->group->overlap_wait_ns_ += ns;
  impl_->group->overlap_rounds_ += 1;
  impl_->group->overlap_buckets_ += static_cast<int64_t>(impl_->buckets.size());
  impl_->group->overlap_early_buckets_ += started_early_;
}

}  // namespace dist
}  // namespace crpo
