// c10d process groups in the torch addon: TCPStore rendezvous, ProcessGroupGloo (CPU) or
// ProcessGroupNCCL (CUDA builds only), DDP-style bucketed all-reduce, broadcast and barrier, and a
// heartbeat thread on its own store connection that names a failed rank (PyTorch's
// torch.distributed semantics; no protocol of our own on the data path). JS exports: dist*.
//
// Libtorch is built with USE_C10D_GLOO but does not export the define; the Gloo headers only
// declare ProcessGroupGloo under it, so it is defined here, for this translation unit alone.
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

#include "process_group.h"

#include <napi.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef CRPO_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/napi_util.h"
#include "../exports.h"

namespace crpo {
namespace dist {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

milliseconds to_ms(double seconds) { return milliseconds(static_cast<int64_t>(seconds * 1000.0)); }

std::string c10_message(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string fmt_seconds(double s) {
  std::ostringstream o;
  o.precision(1);
  o << std::fixed << s << " s";
  return o.str();
}

bool is_loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1"; }

std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  // Like torch.distributed: GLOO_SOCKET_IFNAME names the interface; otherwise the hostname's
  // address, which is loopback when the whole job runs on this machine.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname && *ifname) {
    std::string first = ifname;
    first = first.substr(0, first.find(','));
    return c10d::ProcessGroupGloo::createDeviceForInterface(first);
  }
  if (is_loopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

class Group : public ProcessGroupHandle, public std::enable_shared_from_this<Group> {
 public:
  explicit Group(const ProcessGroupOptions& o) : o_(o), device_(at::kCPU) {
    const bool nccl = o.backend == "nccl";
#ifndef CRPO_WITH_NCCL
    if (nccl) {
      throw OpError(ErrorKind::Range, "ERR_CRPO_DIST_BACKEND",
                    "backend 'nccl' needs a CUDA build of libtorch with NCCL; this addon has only 'gloo'");
    }
#endif
    if (o.backend != "gloo" && !nccl) {
      throw OpError(ErrorKind::Range, "ERR_CRPO_DIST_BACKEND",
                    "unknown backend '" + o.backend + "' (known: gloo, nccl)");
    }
    const std::string where = o.master_addr + ":" + std::to_string(o.master_port);
    store_lost_ = o.agent_store ? "the torchrun agent's rendezvous store at " + where + " is unreachable"
                                : "the rendezvous store it hosts at " + where + " is unreachable";
    try {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(o.master_port);
      so.isServer = o.rank == 0 && !o.agent_store;
      so.numWorkers = static_cast<size_t>(o.world_size);
      so.waitWorkers = true;
      so.timeout = to_ms(o.timeout_seconds);
      so.multiTenant = true;
      tcp_ = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
      root_ = o.agent_store ? c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::PrefixStore>(
                                  "/worker/attempt_" + std::to_string(o.restart_count), tcp_))
                            : c10::intrusive_ptr<c10d::Store>(tcp_);
      crpo_ = c10::make_intrusive<c10d::PrefixStore>("crpo", root_);
      // Every rank's heartbeat key exists before the group forms, so readers never block on it.
      crpo_->set(hb_key(o.rank), to_bytes("0 0"));
      auto pg_store = c10::make_intrusive<c10d::PrefixStore>("pg", root_);
      if (nccl) {
#ifdef CRPO_WITH_NCCL
        const int64_t n = torch::cuda::device_count();
        if (n <= 0)
          throw OpError(ErrorKind::Generic, "ERR_CRPO_NO_CUDA",
                        "backend 'nccl' requested but no CUDA device is visible");
        device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(o.local_rank % n));
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = to_ms(o.timeout_seconds);
        pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, o.rank, o.world_size, opts);
#endif
      } else {
        auto opts = c10d::ProcessGroupGloo::Options::create(to_ms(o.timeout_seconds));
        opts->devices.push_back(gloo_device(o.master_addr));
        pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, o.rank, o.world_size, opts);
      }
    } catch (const OpError&) {
      throw;
    } catch (const std::exception& e) {
      throw OpError(ErrorKind::Generic, "ERR_CRPO_DIST_RENDEZVOUS",
                    "rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size) + ": rendezvous at " +
                        o.master_addr + ":" + std::to_string(o.master_port) + " failed: " + c10_message(e));
    }
    monitor_ = std::thread([this]() { monitor_loop(); });
  }

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
  void allreduce(std::vector<at::Tensor>& tensors, const std::string& op, double bucket_mb, bool alias_ok = true) {
    const bool mean = op == "mean";
    check_live("allreduce");
    if (bucket_mb < 0) bucket_mb = o_.bucket_mb;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const at::Tensor& t = tensors[i];
      if (!t.defined()) throw invalid("allreduce", i, "is undefined");
      if (mean && !at::isFloatingType(t.scalar_type())) {
        throw invalid("allreduce", i,
                      std::string("has dtype ") + c10::toString(t.scalar_type()) + "; a mean needs a floating dtype");
      }
    }
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == "max" ? c10d::ReduceOp::MAX : op == "min" ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
    run_bucketed(
        "allreduce", tensors, bucket_mb, -1, alias_ok,
        [&](std::vector<at::Tensor>& flat) { return pg_->allreduce(flat, opts); },
        [&](at::Tensor& flat) {
          if (mean) flat.div_(o_.world_size);
        });
  }

  void broadcast(std::vector<at::Tensor>& tensors, int root) override { broadcast(tensors, root, -1); }

  void broadcast(std::vector<at::Tensor>& tensors, int root, double bucket_mb, bool alias_ok = true) {
    check_live("broadcast");
    if (bucket_mb < 0) bucket_mb = o_.bucket_mb;
    if (root < 0 || root >= o_.world_size) {
      throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                    "broadcast: expected a root rank in [0, " + std::to_string(o_.world_size - 1) + "] but received " +
                        std::to_string(root));
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (!tensors[i].defined()) throw invalid("broadcast", i, "is undefined");
    }
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    run_bucketed(
        "broadcast", tensors, bucket_mb, root, alias_ok,
        [&](std::vector<at::Tensor>& flat) { return pg_->broadcast(flat, opts); }, [](at::Tensor&) {});
  }

  void barrier() override {
    check_live("barrier");
    seq_++;
    c10d::BarrierOptions opts;
    auto work = start("barrier", [&]() { return pg_->barrier(opts); });
    wait_work("barrier", work);
  }

  void abort(const std::string& message) override { announce(o_.rank, message); }

  PeerFailure failure() const override {
    std::lock_guard<std::mutex> lock(fail_mu_);
    return failure_;
  }

  void shutdown() override {
    if (shut_.exchange(true)) return;
    try {
      if (failure().message.empty()) {
        if (o_.rank == 0 && !o_.agent_store) {
          // Rank 0 hosts the store: it stays until every rank has said it is done, so no rank loses
          // the store while finishing. Its heartbeat monitor keeps running meanwhile, so a rank that
          // dies instead of finishing ends the wait (as a failure) rather than blocking it.
          crpo_->set(done_key(0), to_bytes("1"));
          for (;;) {
            bool all = true;
            for (int r = 1; r < o_.world_size && all; ++r) all = crpo_->check({done_key(r)});
            if (all || !failure().message.empty()) break;
            std::this_thread::sleep_for(milliseconds(50));
          }
        } else {
          stop_monitor();  // first, so that losing the store after "done" is not taken for a failure
          crpo_->set(done_key(o_.rank), to_bytes("1"));
        }
      }
    } catch (const std::exception&) {
      // A peer that is gone cannot say goodbye; the group is being torn down either way.
    }
    stop_monitor();
    pg_.reset();
    crpo_.reset();
    root_.reset();
    tcp_.reset();
  }

 private:
  // For GradReducer: one all-reduce (sum) of a flat buffer started now, and its failure-aware wait.
 public:
  c10::intrusive_ptr<c10d::Work> start_allreduce_sum(at::Tensor& flat) {
    check_live("allreduce");
    seq_++;
    comm_calls_ += 1;
    comm_bytes_ += static_cast<int64_t>(flat.nbytes());
    std::vector<at::Tensor> arg{flat};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    return start("allreduce", [&]() { return pg_->allreduce(arg, opts); });
  }
  void wait_allreduce(const c10::intrusive_ptr<c10d::Work>& work) {
    const auto t0 = Clock::now();
    wait_work("allreduce", work);
    comm_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }

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
                    Collective collective, After after) {
    if (tensors.empty()) return;
    const auto t_start = Clock::now();
    struct Account {
      Group* g;
      Clock::time_point t0;
      int64_t bytes = 0;
      ~Account() {
        g->comm_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
        g->comm_bytes_ += bytes;
        g->comm_calls_ += 1;
      }
    } account{this, t_start};
    for (const auto& t : tensors) account.bytes += static_cast<int64_t>(t.nbytes());
    const int64_t cap = bucket_mb <= 0 ? 0 : static_cast<int64_t>(bucket_mb * 1024.0 * 1024.0);
    std::vector<Bucket> buckets;
    // Group by dtype (a flat buffer has one dtype), keep the callers' order inside a dtype.
    std::map<int, std::vector<size_t>> by_dtype;
    for (size_t i = 0; i < tensors.size(); ++i) by_dtype[static_cast<int>(tensors[i].scalar_type())].push_back(i);
    for (auto& kv : by_dtype) {
      Bucket cur;
      int64_t bytes = 0;
      for (size_t i : kv.second) {
        const int64_t b = static_cast<int64_t>(tensors[i].nbytes());
        if (!cur.members.empty() && (cap == 0 || bytes + b > cap)) {
          buckets.push_back(std::move(cur));
          cur = Bucket();
          bytes = 0;
        }
        cur.members.push_back(i);
        cur.numel += tensors[i].numel();
        bytes += b;
      }
      if (!cur.members.empty()) buckets.push_back(std::move(cur));
    }
    const bool sends = root < 0 || root == o_.rank;  // broadcast: only the root's values matter
    for (Bucket& bk : buckets) {
      seq_++;
      at::Tensor& first = tensors[bk.members[0]];
      if (alias_ok && bk.members.size() == 1 && first.is_contiguous() && first.device() == device_) {
        bk.flat = first;  // one tensor already in place: no copy
        bk.in_place = true;
      } else {
        bk.flat = at::empty({bk.numel}, first.options().device(device_));
        if (sends) {
          int64_t off = 0;
          for (size_t i : bk.members) {
            const at::Tensor& t = tensors[i];
            bk.flat.narrow(0, off, t.numel()).copy_(t.reshape({-1}));
            off += t.numel();
          }
        }
      }
      std::vector<at::Tensor> arg{bk.flat};
      bk.work = start(what, [&]() { return collective(arg); });
    }
    for (Bucket& bk : buckets) {
      wait_work(what, bk.work);
      after(bk.flat);
      if (bk.in_place) continue;
      int64_t off = 0;
      for (size_t i : bk.members) {
        at::Tensor& t = tensors[i];
        t.copy_(bk.flat.narrow(0, off, t.numel()).view(t.sizes()));
        off += t.numel();
      }
    }
  }

  // -- waiting, with failures attributed to a rank ------------------------------------------------

  template <typename F>
  c10::intrusive_ptr<c10d::Work> start(const char* what, F f) {
    try {
      return f();
    } catch (const std::exception& e) {
      fail_collective(what, c10_message(e));
    }
  }

  void wait_work(const char* what, const c10::intrusive_ptr<c10d::Work>& work) {
    // Wake on completion, and every 50 ms to see whether the monitor has named a failed rank.
    struct State {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
    };
    auto st = std::make_shared<State>();
    work->getFuture()->addCallback([st](c10::ivalue::Future&) {
      std::lock_guard<std::mutex> lock(st->mu);
      st->done = true;
      st->cv.notify_all();
    });
    {
      std::unique_lock<std::mutex> lock(st->mu);
      while (!st->done) {
        st->cv.wait_for(lock, milliseconds(50));
        if (st->done) break;
        PeerFailure f = failure();
        if (!f.message.empty()) {
          lock.unlock();
          throw peer_failed(what, f, "");
        }
      }
    }
    try {
      work->wait();
    } catch (const std::exception& e) {
      fail_collective(what, c10_message(e));
    }
  }

  [[noreturn]] void fail_collective(const char* what, const std::string& cause) {
    // A dead peer usually shows up first as a closed connection; give the heartbeat time to name
    // it (at most the heartbeat timeout plus two intervals), then report what is known.
    const auto deadline = Clock::now() + to_ms(o_.heartbeat_timeout_seconds + 2 * o_.heartbeat_interval_seconds);
    PeerFailure f = failure();
    while (f.message.empty() && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(50));
      f = failure();
    }
    if (f.message.empty()) f = laggards();
    throw peer_failed(what, f, cause);
  }

  // After a timeout with every rank alive: the ranks whose collective count is behind ours.
  PeerFailure laggards() {
    PeerFailure f;
    try {
      std::string behind;
      for (int r = 0; r < o_.world_size; ++r) {
        if (r == o_.rank) continue;
        std::string v = from_bytes(crpo_->get(hb_key(r)));
        uint64_t count = 0, seq = 0;
        std::istringstream(v) >> count >> seq;
        if (seq < seq_.load()) {
          if (f.rank < 0) f.rank = r;
          behind += (behind.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " is at collective #" +
                    std::to_string(seq);
        }
      }
      if (!behind.empty())
        f.message =
            "did not join in time (this rank is at collective #" + std::to_string(seq_.load()) + "; " + behind + ")";
    } catch (const std::exception&) {
    }
    return f;
  }

  OpError peer_failed(const char* what, const PeerFailure& f, const std::string& cause) const {
    std::string msg =
        "rank " + std::to_string(o_.rank) + " of " + std::to_string(o_.world_size) + ": " + what + " failed";
    if (!f.message.empty()) {
      msg += ": " + (f.rank >= 0 ? "rank " + std::to_string(f.rank) + " failed: " : std::string()) + f.message;
    } else {
      msg += " (no rank reported a failure)";
    }
    if (!cause.empty()) msg += " [" + o_.backend + ": " + cause + "]";
    return OpError(ErrorKind::Generic,
                   f.rank >= 0 || !f.message.empty() ? "ERR_CRPO_DIST_PEER_FAILED" : "ERR_CRPO_DIST_COLLECTIVE", msg);
  }

  OpError invalid(const char* what, size_t i, const std::string& why) const {
    return OpError(ErrorKind::Type, "ERR_CRPO_INVALID_ARG",
                   std::string(what) + ": tensor " + std::to_string(i) + " " + why);
  }

  void check_live(const char* what) const {
    if (shut_.load() || !pg_)
      throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED", std::string(what) + ": the process group was shut down");
    PeerFailure f = failure();
    if (!f.message.empty()) throw peer_failed(what, f, "");
  }

  // -- heartbeat ----------------------------------------------------------------------------------

  static std::vector<uint8_t> to_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
  static std::string from_bytes(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
  static std::string hb_key(int r) { return "hb/" + std::to_string(r); }
  static std::string done_key(int r) { return "done/" + std::to_string(r); }

  void set_failure(int rank, const std::string& message) {
    std::lock_guard<std::mutex> lock(fail_mu_);
    if (!failure_.message.empty()) return;
    failure_.rank = rank;
    failure_.message = message;
  }

  // Publishes "rank\nmessage" once for the whole group (the first failure wins).
  void announce(int rank, const std::string& message) {
    set_failure(rank, message);
    try {
      c10::intrusive_ptr<c10d::Store> s = crpo_;
      if (!s) return;
      if (s->add("abort/count", 1) == 1) s->set("abort", to_bytes(std::to_string(rank) + "\n" + message));
    } catch (const std::exception&) {
      // The store may be gone already (its host failed); peers will see that instead.
    }
  }

  void monitor_loop() {
    c10::intrusive_ptr<c10d::Store> store;
    try {
      // Its own connection: heartbeats never queue behind a collective's rendezvous traffic.
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(o_.master_port);
      so.isServer = false;
      so.waitWorkers = false;
      so.timeout = to_ms(std::max(o_.heartbeat_timeout_seconds, 1.0));
      auto tcp = c10::make_intrusive<c10d::TCPStore>(o_.master_addr, so);
      c10::intrusive_ptr<c10d::Store> root =
          o_.agent_store ? c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::PrefixStore>(
                               "/worker/attempt_" + std::to_string(o_.restart_count), tcp))
                         : c10::intrusive_ptr<c10d::Store>(tcp);
      store = c10::make_intrusive<c10d::PrefixStore>("crpo", root);
    } catch (const std::exception& e) {
      set_failure(o_.agent_store ? -1 : 0, store_lost_ + " (" + c10_message(e) + ")");
      return;
    }
    const auto interval = to_ms(o_.heartbeat_interval_seconds);
    std::vector<std::string> last(o_.world_size);
    std::vector<Clock::time_point> changed(o_.world_size, Clock::now());
    uint64_t beats = 0;
    while (!stop_.load()) {
      try {
        beats++;
        store->set(hb_key(o_.rank), to_bytes(std::to_string(beats) + " " + std::to_string(seq_.load())));
        if (store->check({"abort"})) {
          std::string v = from_bytes(store->get("abort"));
          const size_t nl = v.find('\n');
          int who = -1;
          try {
            who = std::stoi(v.substr(0, nl));
          } catch (const std::exception&) {
          }
          set_failure(who, nl == std::string::npos ? v : v.substr(nl + 1));
        }
        if (o_.rank == 0) {
          const auto now = Clock::now();
          for (int r = 1; r < o_.world_size; ++r) {
            std::string v = from_bytes(store->get(hb_key(r)));
            std::string count = v.substr(0, v.find(' '));
            if (count != last[r]) {
              last[r] = count;
              changed[r] = now;
              continue;
            }
            const double silent = std::chrono::duration<double>(now - changed[r]).count();
            if (silent > o_.heartbeat_timeout_seconds && !store->check({done_key(r)})) {
              announce(r, "no heartbeat for " + fmt_seconds(silent) +
                              " (the process was killed, crashed or is unreachable)");
            }
          }
        }
      } catch (const std::exception& e) {
        if (stop_.load()) break;
        set_failure(o_.agent_store ? -1 : 0, store_lost_ + " (" + c10_message(e) + ")");
      }
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, interval, [this]() { return stop_.load(); });
    }
  }

  void stop_monitor() {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      stop_.store(true);
    }
    stop_cv_.notify_all();
    if (monitor_.joinable()) monitor_.join();
  }

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

 private:
  std::atomic<bool> shut_{false};
  std::thread monitor_;
  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  mutable std::mutex fail_mu_;
  PeerFailure failure_;
};

// Live groups by id. Leaked on purpose: nothing here may be destroyed by static destructors at
// exit while a heartbeat thread is still running.
std::mutex& registry_mu() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::map<int64_t, std::shared_ptr<Group>>& registry() {
  static auto* m = new std::map<int64_t, std::shared_ptr<Group>>();
  return *m;
}
int64_t g_next_id = 1;

std::shared_ptr<Group> find_group(int64_t id, const std::string& op) {
  std::lock_guard<std::mutex> lock(registry_mu());
  auto it = registry().find(id);
  if (it == registry().end()) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED",
                  op + ": process group " + std::to_string(id) + " does not exist or was disposed");
  }
  return it->second;
}

}  // namespace

std::shared_ptr<ProcessGroupHandle> create_process_group(const ProcessGroupOptions& options) {
  return std::make_shared<Group>(options);
}

std::shared_ptr<ProcessGroupHandle> find_process_group(int64_t id) { return find_group(id, "find_process_group"); }

// -- GradReducer ------------------------------------------------------------------------------------

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
      Impl::Slot& s = im->slots[k];
      Impl::Bucket& b = im->buckets[s.bucket];
      at::NoGradGuard ng;
      b.flat.narrow(0, s.offset, grad.numel()).copy_(grad.reshape({-1}));
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
  std::lock_guard<std::mutex> lock(impl_->mu);
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
    // Parameters that got no gradient (unused this step) contribute zeros, on every rank alike.
    for (size_t k = 0; k < impl_->slots.size(); ++k) {
      auto& s = impl_->slots[k];
      if (s.filled) continue;
      auto& b = impl_->buckets[s.bucket];
      b.flat.narrow(0, s.offset, impl_->params[k].numel()).zero_();
      s.filled = true;
      b.pending--;
    }
    impl_->start_ready();
  }
  at::NoGradGuard ng;
  const double world = impl_->group->world_size();
  for (auto& b : impl_->buckets) {
    impl_->group->wait_allreduce(b.work);
    b.flat.div_(world);
    for (size_t k : b.members) {
      at::Tensor& p = impl_->params[k];
      at::Tensor v = b.flat.narrow(0, impl_->slots[k].offset, p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(v);
      else
        p.mutable_grad() = v.to(p.device()).clone();
    }
  }
}

namespace {

// -- N-API ------------------------------------------------------------------------------------------

// A worker that runs `work` off the main thread and resolves with what `result` builds.
class DistWorker : public Napi::AsyncWorker {
 public:
  DistWorker(Napi::Env env, std::string op, std::function<void()> work, std::function<Napi::Value(Napi::Env)> result,
             std::vector<Napi::Value> keep)
      : Napi::AsyncWorker(env), op_(std::move(op)), work_(std::move(work)), result_(std::move(result)), deferred_(env) {
    for (auto& v : keep) keep_.push_back(Napi::Persistent(v));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      prepare_thread();
      work_();
    } catch (const c10::Error& e) {
      error_.set = true;
      error_.code = "ERR_CRPO_NATIVE";
      error_.message = op_ + ": " + e.what_without_backtrace();
    } catch (...) {
      error_.capture(op_, std::current_exception());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (error_.set) {
      deferred_.Reject(make_js_error(env, error_.kind, error_.code, op_, error_.message).Value());
      return;
    }
    try {
      deferred_.Resolve(result_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::string op_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
  CapturedError error_;
};

Napi::Value queue(const Napi::CallbackInfo& info, const std::string& op, std::function<void()> work,
                  std::function<Napi::Value(Napi::Env)> result, std::vector<Napi::Value> keep = {}) {
  auto* w = new DistWorker(info.Env(), op, std::move(work), std::move(result), std::move(keep));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value undefined_result(Napi::Env env) { return env.Undefined(); }

std::string read_string(const Napi::Object& o, const char* key, const std::string& op, const std::string& fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsString()) throw_type_error(op, key, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

double read_opt_number(const Napi::Object& o, const char* key, const std::string& op, double fallback, double lo,
                       double hi) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  double x = read_number(v, op, key);
  if (!(x >= lo && x <= hi)) {
    throw_range_error(op, key, "a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                      std::to_string(x));
  }
  return x;
}

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
  return guarded(info, "distInit", [&]() -> Napi::Value {
    const std::string op = "distInit";
    if (info.Length() < 1 || !info[0].IsObject())
      throw_type_error(op, "options", "an object", info.Length() ? info[0] : info.Env().Undefined());
    Napi::Object o = info[0].As<Napi::Object>();
    ProcessGroupOptions po;
    po.master_addr = read_string(o, "masterAddr", op, po.master_addr);
    po.master_port = static_cast<int>(read_int(o.Get("masterPort"), op, "masterPort", 1, 65535));
    po.world_size = static_cast<int>(read_int(o.Get("worldSize"), op, "worldSize", 1, 1 << 20));
    po.rank = static_cast<int>(read_int(o.Get("rank"), op, "rank", 0, po.world_size - 1));
    po.local_rank = static_cast<int>(read_opt_number(o, "localRank", op, 0, 0, 1 << 20));
    po.backend = read_string(o, "backend", op, po.backend);
    po.timeout_seconds = read_opt_number(o, "timeoutSeconds", op, po.timeout_seconds, 0.1, 1e7);
    po.bucket_mb = read_opt_number(o, "bucketMb", op, po.bucket_mb, 0, 1 << 16);
    po.heartbeat_interval_seconds =
        read_opt_number(o, "heartbeatIntervalSeconds", op, po.heartbeat_interval_seconds, 0.01, 3600);
    po.heartbeat_timeout_seconds =
        read_opt_number(o, "heartbeatTimeoutSeconds", op, po.heartbeat_timeout_seconds, 0.1, 1e7);
    Napi::Value as = o.Get("agentStore");
    po.agent_store = as.IsBoolean() && as.As<Napi::Boolean>().Value();
    po.restart_count = static_cast<int>(read_opt_number(o, "restartCount", op, 0, 0, 1 << 20));
    auto id = std::make_shared<int64_t>(0);
    return queue(
        info, op,
        [po, id]() {
          auto g = std::make_shared<Group>(po);
          std::lock_guard<std::mutex> lock(registry_mu());
          *id = g_next_id++;
          registry()[*id] = g;
        },
        [id](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*id)); });
  });
}

Napi::Value DistAllReduce(const Napi::CallbackInfo& info) {
  return guarded(info, "distAllReduce", [&]() -> Napi::Value {
    const std::string op = "distAllReduce";
    auto g = find_group(read_id(info, op), op);
    std::vector<Napi::Value> keep;
    auto tensors = std::make_shared<std::vector<at::Tensor>>(read_arrays(info, 1, op, keep));
    std::string red = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "sum";
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
  return guarded(info, "distBroadcast", [&]() -> Napi::Value {
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
  return guarded(info, "distBarrier", [&]() -> Napi::Value {
    auto g = find_group(read_id(info, "distBarrier"), "distBarrier");
    return queue(
        info, "distBarrier", [g]() { g->barrier(); }, undefined_result);
  });
}

Napi::Value DistAbort(const Napi::CallbackInfo& info) {
  return guarded(info, "distAbort", [&]() -> Napi::Value {
    auto g = find_group(read_id(info, "distAbort"), "distAbort");
    std::string msg = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "aborted";
    g->abort(msg);
    return info.Env().Undefined();
  });
}

Napi::Value DistFailure(const Napi::CallbackInfo& info) {
  return guarded(info, "distFailure", [&]() -> Napi::Value {
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
  return guarded(info, "distInfo", [&]() -> Napi::Value {
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
    return o;
  });
}

Napi::Value DistShutdown(const Napi::CallbackInfo& info) {
  return guarded(info, "distShutdown", [&]() -> Napi::Value {
    const int64_t id = read_id(info, "distShutdown");
    std::shared_ptr<Group> g;
    {
      std::lock_guard<std::mutex> lock(registry_mu());
      auto it = registry().find(id);
      if (it == registry().end()) {
        auto d = Napi::Promise::Deferred::New(info.Env());
        d.Resolve(info.Env().Undefined());  // disposing twice is harmless
        return d.Promise();
      }
      g = it->second;
      registry().erase(it);
    }
    return queue(
        info, "distShutdown", [g]() { g->shutdown(); }, undefined_result);
  });
}

Napi::Value DistLiveGroups(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(registry_mu());
  return Napi::Number::New(info.Env(), static_cast<double>(registry().size()));
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
  return guarded(info, "distReducerCheck", [&]() -> Napi::Value {
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
