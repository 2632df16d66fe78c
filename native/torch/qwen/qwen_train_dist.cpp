// Data-parallel pieces of the Qwen train step (Model methods, qwen_model.h): the all-reduce of the
// ranks' loss denominators and bad flags, the gradient all-reduce overlapped with backward
// (crpo::dist::GradReducer, each rank's gradient scaled by its share w_r / W as it enters a bucket),
// and sharded AdamW state after ZeRO stage 1 (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations
// Toward Training Trillion Parameter Models", P_os): the trainable weights are flattened in
// optimizer order (N values) and rank r owns [r*S, min((r+1)*S, N)), S = ceil(N / W). Every rank
// still receives the whole reduced gradient (Gloo in libtorch 1.13 has no reduce-scatter: the
// overlapped all-reduce, then each rank reads its slice), updates its slice with the moments it
// alone keeps (exactly torch::optim::AdamW's arithmetic), then the owners' slices are broadcast to
// every rank (an all-gather: the same bytes). Per-rank AdamW state: 2 * N / W values instead of 2 * N.
#include <cmath>

#include "qwen_model.h"
#include "torch/dist/process_group.h"

namespace crpo {
namespace qwen {

struct Model::ZeroState {
  std::shared_ptr<dist::ProcessGroupHandle> group;
  int64_t numel = 0, shard = 0;
  // A contiguous run of one trainable tensor (flattened) owned by `rank`; `at`: its offset in the
  // owner's shard.
  struct Piece {
    size_t param;
    int64_t lo, len, at;
    int rank;
  };
  std::vector<Piece> pieces;       // every rank's, in flat order
  at::Tensor exp_avg, exp_avg_sq;  // (own,) this rank's moments, the weights' dtype
  int64_t own = 0;
  int64_t step = 0;
};

Model::Reduced Model::allreduce_weights(double weight, bool bad, const TrainOptions& o) {
  at::Tensor meta = at::tensor({weight, bad ? 1.0 : 0.0}, at::TensorOptions().dtype(at::kDouble));
  std::vector<at::Tensor> m{meta};
  o.group->allreduce_sum(m);
  return Reduced{meta[0].item<double>(), meta[1].item<double>() > 0};
}

struct Model::ReducerCache {
  std::shared_ptr<dist::ProcessGroupHandle> group;
  double bucket_mb = 0;
  std::vector<const void*> params;  // the trainable tensors the hooks are on
  std::unique_ptr<dist::GradReducer> reducer;
};

void Model::reduce_grads_overlapped(const at::Tensor& loss, double share, const TrainOptions& o) {
  // Buckets in reverse parameter order (the order backward produces them). Kept across steps:
  // re-registering hooks every step would grow each weight's hook list (removal leaves a slot).
  std::vector<const void*> ids;
  for (const auto& p : opt_params_) ids.push_back(p.unsafeGetTensorImpl());
  if (!reducer_ || reducer_->group != o.group || reducer_->bucket_mb != o.grad_bucket_mb || reducer_->params != ids) {
    reducer_.reset();  // the old hooks go first
    auto rc = std::make_shared<ReducerCache>();
    rc->group = o.group;
    rc->bucket_mb = o.grad_bucket_mb;
    rc->params = ids;
    rc->reducer = std::make_unique<dist::GradReducer>(o.group, opt_params_, o.grad_bucket_mb);
    reducer_ = rc;
  }
  dist::GradReducer& reducer = *reducer_->reducer;
  reducer.prepare_weighted(share);
  if (loss.defined()) loss.backward();
  reducer.finish();
}

namespace {

// Views of every piece owned by `rank`, into the flattened tensors `of` (one per trainable tensor).
template <typename Piece>
std::vector<at::Tensor> views_of(const std::vector<Piece>& pieces, int rank, const std::vector<at::Tensor>& of) {
  std::vector<at::Tensor> out;
  for (const auto& pc : pieces)
    if (pc.rank == rank) out.push_back(of[pc.param].view({-1}).narrow(0, pc.lo, pc.len));
  return out;
}

std::string state_key(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

}  // namespace

void Model::zero_step(const TrainOptions& o) {
  at::NoGradGuard ng;
  if (zero_) TORCH_CHECK(zero_->group == o.group, "qwen: zero 1 state belongs to another process group");
  if (!zero_) {
    auto z = std::make_shared<ZeroState>();
    z->group = o.group;
    const int W = o.group->world_size(), me = o.group->rank();
    for (const auto& p : opt_params_) {
      TORCH_CHECK(p.is_contiguous() && p.scalar_type() == opt_params_[0].scalar_type(),
                  "qwen: zero 1 needs contiguous trainable weights of one dtype");
      z->numel += p.numel();
    }
    z->shard = (z->numel + W - 1) / W;
    int64_t off = 0;
    std::vector<int64_t> filled(W, 0);
    for (size_t i = 0; i < opt_params_.size(); ++i) {
      const int64_t n = opt_params_[i].numel();
      for (int64_t lo = 0; lo < n;) {
        const int r = static_cast<int>((off + lo) / z->shard);
        const int64_t len = std::min(n - lo, (r + 1) * z->shard - (off + lo));
        z->pieces.push_back({i, lo, len, filled[r], r});
        filled[r] += len;
        lo += len;
      }
      off += n;
    }
    z->own = filled[me];
    z->exp_avg = at::zeros({z->own}, opt_params_[0].options().requires_grad(false));
    z->exp_avg_sq = at::zeros({z->own}, opt_params_[0].options().requires_grad(false));
    // Loaded (or plain) optimizer state: this rank keeps its slice of it, the rest is dropped.
    bool any = false;
    for (const auto& pc : z->pieces) {
      auto it = opt_->state().find(state_key(opt_params_[pc.param]));
      if (it == opt_->state().end()) continue;
      auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
      TORCH_CHECK(!any || st.step() == z->step, "qwen: zero 1: the loaded AdamW state has different step counts (",
                  st.step(), " and ", z->step, ")");
      z->step = st.step();
      any = true;
      if (pc.rank != me) continue;
      z->exp_avg.narrow(0, pc.at, pc.len).copy_(st.exp_avg().view({-1}).narrow(0, pc.lo, pc.len));
      z->exp_avg_sq.narrow(0, pc.at, pc.len).copy_(st.exp_avg_sq().view({-1}).narrow(0, pc.lo, pc.len));
    }
    opt_->state().clear();
    zero_ = z;
  }
  ZeroState& z = *zero_;
  const auto& go = static_cast<const torch::optim::AdamWOptions&>(opt_->param_groups()[0].options());
  const double lr = go.lr(), wd = go.weight_decay(), eps = go.eps();
  const double b1 = std::get<0>(go.betas()), b2 = std::get<1>(go.betas());
  z.step += 1;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(z.step));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(z.step));
  const int me = z.group->rank();
  // torch::optim::AdamW, operation for operation, on this rank's slices of the weights.
  for (const auto& pc : z.pieces) {
    if (pc.rank != me) continue;
    const at::Tensor& full = opt_params_[pc.param];
    at::Tensor p = full.view({-1}).narrow(0, pc.lo, pc.len);
    at::Tensor g = full.grad().view({-1}).narrow(0, pc.lo, pc.len);
    at::Tensor m = z.exp_avg.narrow(0, pc.at, pc.len), v = z.exp_avg_sq.narrow(0, pc.at, pc.len);
    if (wd != 0) p.mul_(1 - lr * wd);
    m.mul_(b1).add_(g, 1 - b1);
    v.mul_(b2).addcmul_(g, g, 1 - b2);
    at::Tensor denom = (v.sqrt() / std::sqrt(bc2)).add_(eps);
    p.addcdiv_(m, denom, -lr / bc1);
  }
  // The all-gather: every owner's updated slices to every rank, one (bucketed) broadcast per owner.
  for (int r = 0; r < z.group->world_size(); ++r) {
    std::vector<at::Tensor> views = views_of(z.pieces, r, opt_params_);
    if (!views.empty()) z.group->broadcast(views, r);
  }
}

void Model::zero_gather_into_optimizer() {
  at::NoGradGuard ng;
  ZeroState& z = *zero_;
  std::vector<at::Tensor> m, v;
  for (const auto& p : opt_params_) {
    m.push_back(at::zeros_like(p).set_requires_grad(false));
    v.push_back(at::zeros_like(p).set_requires_grad(false));
  }
  const int me = z.group->rank();
  for (const auto& pc : z.pieces) {
    if (pc.rank != me) continue;
    m[pc.param].view({-1}).narrow(0, pc.lo, pc.len).copy_(z.exp_avg.narrow(0, pc.at, pc.len));
    v[pc.param].view({-1}).narrow(0, pc.lo, pc.len).copy_(z.exp_avg_sq.narrow(0, pc.at, pc.len));
  }
  for (int r = 0; r < z.group->world_size(); ++r) {
    std::vector<at::Tensor> views = views_of(z.pieces, r, m), vv = views_of(z.pieces, r, v);
    views.insert(views.end(), vv.begin(), vv.end());
    if (!views.empty()) z.group->broadcast(views, r);
  }
  opt_->state().clear();
  if (z.step == 0) return;  // no step yet: as torch::optim::AdamW, no state
  for (size_t i = 0; i < opt_params_.size(); ++i) {
    auto st = std::make_unique<torch::optim::AdamWParamState>();
    st->step(z.step);
    st->exp_avg(m[i]);
    st->exp_avg_sq(v[i]);
    opt_->state()[state_key(opt_params_[i])] = std::move(st);
  }
}

int64_t Model::optimizer_state_bytes() const {
  int64_t n = 0;
  if (zero_) n += static_cast<int64_t>(zero_->exp_avg.nbytes() + zero_->exp_avg_sq.nbytes());
  if (opt_) {
    for (const auto& kv : opt_->state()) {
      const auto& st = static_cast<const torch::optim::AdamWParamState&>(*kv.second);
      if (st.exp_avg().defined()) n += static_cast<int64_t>(st.exp_avg().nbytes());
      if (st.exp_avg_sq().defined()) n += static_cast<int64_t>(st.exp_avg_sq().nbytes());
      if (st.max_exp_avg_sq().defined()) n += static_cast<int64_t>(st.max_exp_avg_sq().nbytes());
    }
  }
  return n;
}

}  // namespace qwen
}  // namespace crpo
