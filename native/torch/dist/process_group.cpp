// c10d process groups in the torch addon: TCPStore rendezvous, ProcessGroupGloo (CPU) or
// ProcessGroupNCCL (CUDA builds only), DDP-style bucketed all-reduce, broadcast and barrier, and a
// heartbeat thread on its own store connection that names a failed rank (PyTorch's
// torch.distributed semantics; no protocol of our own on the data path). The class is declared
// in group.h; the JS exports are in dist_binding.cpp, the gradient reducer in grad_reducer.cpp.
#include "torch/dist/group.h"

#include <chrono>
#include <map>
#include <sstream>

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

}  // namespace

// -- collectives (templates first: the members below instantiate them) -----------------------------

template <typename Collective, typename After>
void Group::run_bucketed(const char* what, std::vector<at::Tensor>& tensors, double bucket_mb, int root, bool alias_ok,
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

template <typename F>
c10::intrusive_ptr<c10d::Work> Group::start(const char* what, F f) {
  try {
    return f();
  } catch (const std::exception& e) {
    fail_collective(what, c10_message(e));
  }
}

// -- the group --------------------------------------------------------------------------------------

Group::Group(const ProcessGroupOptions& o) : o_(o), device_(at::kCPU) {
  const bool nccl = o.backend == "nccl";
#ifndef CRPO_WITH_NCCL
  if (nccl) {
    throw OpError(ErrorKind::Range, "ERR_CRPO_DIST_BACKEND",
                  "backend 'nccl' needs a CUDA build of libtorch with NCCL; this addon has only 'gloo'");
  }
#endif
  if (o.backend != "gloo" && !nccl) {
    throw OpError(ErrorKind::Range, "ERR_CRPO_DIST_BACKEND", "unknown backend '" + o.backend + "' (known: gloo, nccl)");
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
        throw OpError(ErrorKind::Generic, "ERR_CRPO_NO_CUDA", "backend 'nccl' requested but no CUDA device is visible");
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

void Group::allreduce(std::vector<at::Tensor>& tensors, const std::string& op, double bucket_mb, bool alias_ok) {
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

void Group::broadcast(std::vector<at::Tensor>& tensors, int root, double bucket_mb, bool alias_ok) {
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

void Group::barrier() {
  check_live("barrier");
  seq_++;
  c10d::BarrierOptions opts;
  auto work = start("barrier", [&]() { return pg_->barrier(opts); });
  wait_work("barrier", work);
}

void Group::shutdown() {
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

c10::intrusive_ptr<c10d::Work> Group::start_allreduce_sum(at::Tensor& flat) {
  check_live("allreduce");
  seq_++;
  comm_calls_ += 1;
  comm_bytes_ += static_cast<int64_t>(flat.nbytes());
  std::vector<at::Tensor> arg{flat};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  return start("allreduce", [&]() { return pg_->allreduce(arg, opts); });
}

void Group::wait_allreduce(const c10::intrusive_ptr<c10d::Work>& work) {
  const auto t0 = Clock::now();
  wait_work("allreduce", work);
  comm_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

void Group::wait_work(const char* what, const c10::intrusive_ptr<c10d::Work>& work) {
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

void Group::fail_collective(const char* what, const std::string& cause) {
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

PeerFailure Group::laggards() {
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

OpError Group::peer_failed(const char* what, const PeerFailure& f, const std::string& cause) const {
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

OpError Group::invalid(const char* what, size_t i, const std::string& why) const {
  return OpError(ErrorKind::Type, "ERR_CRPO_INVALID_ARG",
                 std::string(what) + ": tensor " + std::to_string(i) + " " + why);
}

void Group::check_live(const char* what) const {
  if (shut_.load() || !pg_)
    throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED", std::string(what) + ": the process group was shut down");
  PeerFailure f = failure();
  if (!f.message.empty()) throw peer_failed(what, f, "");
}

void Group::set_failure(int rank, const std::string& message) {
  std::lock_guard<std::mutex> lock(fail_mu_);
  if (!failure_.message.empty()) return;
  failure_.rank = rank;
  failure_.message = message;
}

void Group::announce(int rank, const std::string& message) {
  set_failure(rank, message);
  try {
    c10::intrusive_ptr<c10d::Store> s = crpo_;
    if (!s) return;
    if (s->add("abort/count", 1) == 1) s->set("abort", to_bytes(std::to_string(rank) + "\n" + message));
  } catch (const std::exception&) {
    // The store may be gone already (its host failed); peers will see that instead.
  }
}

void Group::monitor_loop() {
  c10::intrusive_ptr<c10d::Store> store;
  try {
    // Its own connection: heartbeats never queue behind a collective's rendezvous traffic.
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o_.master_port);
    so.isServer = false;
    so.waitWorkers = false;
    so.timeout = to_ms(std::max(o_.heartbeat_timeout_seconds, 1.0));
    auto tcp = c10::make_intrusive<c10d::TCPStore>(o_.master_addr, so);
    c10::intrusive_ptr<c10d::Store> root = o_.agent_store
                                               ? c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::PrefixStore>(
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
            announce(
                r, "no heartbeat for " + fmt_seconds(silent) + " (the process was killed, crashed or is unreachable)");
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

void Group::stop_monitor() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_.store(true);
  }
  stop_cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
}

// -- live groups by id ------------------------------------------------------------------------------

namespace {

std::mutex& registry_mu() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::map<int64_t, std::shared_ptr<Group>>& registry() {
  static auto* m = new std::map<int64_t, std::shared_ptr<Group>>();
  return *m;
}
int64_t g_next_id = 1;

}  // namespace

int64_t add_group(std::shared_ptr<Group> group) {
  std::lock_guard<std::mutex> lock(registry_mu());
  const int64_t id = g_next_id++;
  registry()[id] = std::move(group);
  return id;
}

std::shared_ptr<Group> find_group(int64_t id, const std::string& op) {
  std::lock_guard<std::mutex> lock(registry_mu());
  auto it = registry().find(id);
  if (it == registry().end()) {
    throw OpError(ErrorKind::Generic, "ERR_CRPO_DISPOSED",
                  op + ": process group " + std::to_string(id) + " does not exist or was disposed");
  }
  return it->second;
}

std::shared_ptr<Group> take_group(int64_t id) {
  std::lock_guard<std::mutex> lock(registry_mu());
  auto it = registry().find(id);
  if (it == registry().end()) return nullptr;
  std::shared_ptr<Group> g = it->second;
  registry().erase(it);
  return g;
}

size_t live_groups() {
  std::lock_guard<std::mutex> lock(registry_mu());
  return registry().size();
}

std::shared_ptr<ProcessGroupHandle> create_process_group(const ProcessGroupOptions& options) {
  return std::make_shared<Group>(options);
}

std::shared_ptr<ProcessGroupHandle> find_process_group(int64_t id) { return find_group(id, "find_process_group"); }

}  // namespace dist
}  // namespace crpo
