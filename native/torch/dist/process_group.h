// c10d process groups for data-parallel training (Gloo on CPU, NCCL with CUDA builds), after
// PyTorch's torch.distributed: a TCPStore rendezvous (hosted by rank 0, or by torchrun's agent),
// bucketed all-reduce like DDP's gradient buckets, and a store-based heartbeat that names a failed
// rank. The model's train step takes an optional ProcessGroupHandle and calls allreduce_mean on
// its gradients; the trainer broadcasts initial weights from rank 0 with broadcast().
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace crpo {
namespace dist {

struct ProcessGroupOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string backend = "gloo";  // "gloo" | "nccl"
  // Collective and store timeout: a collective that has not finished by then fails.
  double timeout_seconds = 60.0;
  // All-reduce bucket size: tensors are flattened into buffers of about this many MiB
  // (DDP's default is 25). 0 = one collective per tensor (the slow, obviously correct twin).
  double bucket_mb = 25.0;
  // The store-based heartbeat: every rank bumps its counter every interval; rank 0 declares a rank
  // failed when its counter has not moved for heartbeat_timeout_seconds.
  double heartbeat_interval_seconds = 1.0;
  double heartbeat_timeout_seconds = 30.0;
  // torchrun hosts the TCPStore in its agent (TORCHELASTIC_USE_AGENT_STORE=True): every rank is a
  // client and keys live under "/worker/attempt_<restart_count>", as torch.distributed does.
  bool agent_store = false;
  int restart_count = 0;
};

// A rank known to have failed, and why.
struct PeerFailure {
  int rank = -1;  // -1: unknown (e.g. the torchrun agent's store went away)
  std::string message;
};

class ProcessGroupHandle {
 public:
  virtual ~ProcessGroupHandle() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;
  virtual std::string backend() const = 0;
  // The device collectives run on: cpu for gloo, cuda:<local_rank % devices> for nccl.
  virtual at::Device device() const = 0;
  // Averages the tensors across ranks in place (bucketed: flattened into a few large buffers).
  virtual void allreduce_mean(std::vector<at::Tensor>& tensors) = 0;
  // Sums in place.
  virtual void allreduce_sum(std::vector<at::Tensor>& tensors) = 0;
  // Copies root's tensors into every rank's tensors in place.
  virtual void broadcast(std::vector<at::Tensor>& tensors, int root) = 0;
  virtual void barrier() = 0;
  // Tells every rank that this rank is failing (they stop with a message naming it).
  virtual void abort(const std::string& message) = 0;
  // A failure seen by the heartbeat monitor or announced by a peer; rank -1 and empty when none.
  virtual PeerFailure failure() const = 0;
  // Orderly end: waits (up to the timeout) for every rank to finish before the store goes away.
  virtual void shutdown() = 0;
};

std::shared_ptr<ProcessGroupHandle> create_process_group(const ProcessGroupOptions& options);

// DDP-style gradient averaging overlapped with backward: parameters are assigned to buckets of
// about bucket_mb MiB in reverse order (backward produces late layers' gradients first); a hook on
// each parameter copies its gradient into its bucket, and a full bucket's all-reduce starts while
// backward goes on (buckets start in index order on every rank, as c10d requires). finish() starts
// what is left, waits, and sets every parameter's .grad() to the result. What a rank contributes
// for a parameter is its whole gradient: what .grad() held before this backward (earlier
// micro-batches) plus what this backward brings; a parameter that gets nothing contributes .grad()
// (zeros when undefined).
//   prepare():                the mean over ranks (DDP)
//   prepare_weighted(share):  sum_r share_r * grad_r (share_r = w_r / W, weights of the ranks' losses)
//   GradReducer r(pg, params, 25);  r.prepare();  loss.backward();  r.finish();
class GradReducer {
 public:
  GradReducer(std::shared_ptr<ProcessGroupHandle> group, std::vector<at::Tensor> params, double bucket_mb);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;
  void prepare();
  void prepare_weighted(double share);
  void finish();
  // Seconds finish() waited for collectives after backward in the last round (communication not
  // hidden behind backward); also summed in the group's commStats (overlapWaitSeconds).
  double last_wait_seconds() const { return last_wait_s_; }
  // Buckets whose all-reduce started during backward in the last round (the overlap achieved).
  int started_during_backward() const { return started_early_; }
  int buckets() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int started_early_ = 0;
  double last_wait_s_ = 0;
};

// The live group with the id that JS holds (lib/dist/process-group.ts `nativeId`), for native
// functions such as the train step that receive the id as an argument. Throws when unknown.
std::shared_ptr<ProcessGroupHandle> find_process_group(int64_t id);

}  // namespace dist
}  // namespace crpo
