// The c10d process group behind ProcessGroupHandle, shared by the files of native/torch/dist (not
// a public header: the rest of the addon uses process_group.h). process_group.cpp defines the
// group (TCPStore rendezvous, Gloo / NCCL, bucketed collectives, heartbeat and failure naming),
// grad_reducer.cpp the DDP-style reducer over it, dist_binding.cpp the JS exports and the registry
// of live groups by id.
//
// Libtorch is built with USE_C10D_GLOO but does not export the define; the Gloo headers only
// declare ProcessGroupGloo under it, so it is defined here, for the translation units of dist/.
#pragma once

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#if defined(CRPO_WITH_CUDA) && __has_include(<nccl.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#define CRPO_WITH_NCCL 1
#endif

#include "torch/dist/process_group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef CRPO_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/op_error.h"

namespace crpo {
namespace dist {

class Group : public ProcessGroupHandle, public std::enable_shared_from_this<Group> {
 public:
  explicit Group(const ProcessGroupOptions& o);

  ~Group() override { stop_monitor(); }

  int rank() const override { return o_.rank; }
  int world_size() const override { return o_.world_size; }
  int local_rank() const override { return o_.local_rank; }
  std::string backend() const override { return o_.backend; }
  at::Device device() const override { return device_; }

  void allreduce_mean(std::vector<at::Tensor>& tensors) override { allreduce(tensors, "mean", -1); }
  void allreduce_sum(std::vector<at::Tensor>& tensors) override { allreduce(tensors, "sum", -1); }

  // Sum or mean in place. Tensors are grouped by dtype into buckets of ~bucket_mb MiB, each
  // flattened into one contiguous buffer on the comm device; every bucket's collective is started
  // before the first is awaited, so copying later buckets overlaps communicating earlier ones.
  // bucket_mb < 0: the group's default. op: "sum", "mean", "max" or "min".
  // alias_ok: a lone contiguous tensor may be reduced in place. JS memory passes false: a collective
  // abandoned after a peer failure may still write into its buffer after the promise rejected.
  void allreduce(std::vector<at::Tensor>& tensors, const std::string& op, double bucket_mb, bool alias_ok = true);

  void broadcast(std::vector<at::Tensor>& tensors, int root) override { broadcast(tensors, root, -1); }

  void broadcast(std::vector<at::Tensor>& tensors, int root, double bucket_mb, bool alias_ok = true);

  void barrier() override;

  void abort(const std::string& message) override { announce(o_.rank, message); }

  PeerFailure failure() const override {
    std::lock_guard<std::mutex> lock(fail_mu_);
    return failure_;
  }

  void shutdown() override;

  // For GradReducer: one all-reduce (sum) of a flat buffer started now, and its failure-aware wait.
  c10::intrusive_ptr<c10d::Work> start_allreduce_sum(at::Tensor& flat);
  void wait_allreduce(const c10::intrusive_ptr<c10d::Work>& work);

 private:
  // -- bucketing --------------------------------------------------------------------------------

  struct Bucket {
    std::vector<size_t> members;
    int64_t numel = 0;
    at::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
    bool in_place = false;
  };

  template <typename Collective, typename After>
  void run_bucketed(const char* what, std::vector<at::Tensor>& tensors, double bucket_mb, int root, bool alias_ok,
                    Collective collective, After after);

  // -- waiting, with failures attributed to a rank ------------------------------------------------

  template <typename F>
  c10::intrusive_ptr<c10d::Work> start(const char* what, F f);

  void wait_work(const char* what, const c10::intrusive_ptr<c10d::Work>& work);

  [[noreturn]] void fail_collective(const char* what, const std::string& cause);

  // After a timeout with every rank alive: the ranks whose collective count is behind ours.
  PeerFailure laggards();

  OpError peer_failed(const char* what, const PeerFailure& f, const std::string& cause) const;

  OpError invalid(const char* what, size_t i, const std::string& why) const;

  void check_live(const char* what) const;

  // -- heartbeat ----------------------------------------------------------------------------------

  static std::vector<uint8_t> to_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
  static std::string from_bytes(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
  static std::string hb_key(int r) { return "hb/" + std::to_string(r); }
  static std::string done_key(int r) { return "done/" + std::to_string(r); }

  void set_failure(int rank, const std::string& message);

  // Publishes "rank\nmessage" once for the whole group (the first failure wins).
  void announce(int rank, const std::string& message);

  void monitor_loop();

  void stop_monitor();

  ProcessGroupOptions o_;
  at::Device device_;
  std::string store_lost_;  // the failure message when the store goes away
  c10::intrusive_ptr<c10d::TCPStore> tcp_;
  c10::intrusive_ptr<c10d::Store> root_;
  c10::intrusive_ptr<c10d::Store> crpo_;
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  std::atomic<uint64_t> seq_{0};  // collectives started by this rank

 public:
  // Time spent inside collective calls (copies, communication, waiting for peers), for metrics.
  std::atomic<int64_t> comm_ns_{0};
  std::atomic<int64_t> comm_bytes_{0};
  std::atomic<int64_t> comm_calls_{0};
  // GradReducer rounds and the time their finish() waited after backward (the exposed part).
  std::atomic<int64_t> overlap_wait_ns_{0};
  std::atomic<int64_t> overlap_rounds_{0};
  std::atomic<int64_t> overlap_buckets_{0};        // buckets reduced in those rounds
  std::atomic<int64_t> overlap_early_buckets_{0};  // of which started during backward

 private:
  std::atomic<bool> shut_{false};
  std::thread monitor_;
  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  mutable std::mutex fail_mu_;
  PeerFailure failure_;
};

// Live groups by id (the id JS holds, ProcessGroup.nativeId). Leaked on purpose: nothing here may
// be destroyed by static destructors at exit while a heartbeat thread is still running.
int64_t add_group(std::shared_ptr<Group> group);
// The live group with this id; throws ERR_CRPO_DISPOSED naming `op` when there is none.
std::shared_ptr<Group> find_group(int64_t id, const std::string& op);
// Removes the group from the registry and returns it (null when there is none).
std::shared_ptr<Group> take_group(int64_t id);
size_t live_groups();

}  // namespace dist
}  // namespace crpo
