// c10d process groups, launch settings and gradient buckets (see distributed.h).
#define USE_C10D_GLOO 1
#include "train/distributed.h"

#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdlib>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "model/check.h"

namespace st {
namespace {

using Clock = std::chrono::steady_clock;

// The first of `names` that is set, parsed as an int; false when none is set.
absl::StatusOr<bool> EnvInt(std::initializer_list<const char*> names, int* out) {
  for (const char* n : names) {
    const char* v = std::getenv(n);
    if (v == nullptr || *v == '\0') continue;
    if (!absl::SimpleAtoi(v, out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable ", n, "='", v, "' is not an integer"));
    }
    return true;
  }
  return false;
}

std::chrono::milliseconds Ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// A Gloo group; `host` names the interface to bind ("" = the one the hostname resolves to).
c10::intrusive_ptr<c10d::ProcessGroup> MakeGloo(const c10::intrusive_ptr<c10d::Store>& store,
                                                int rank, int size, double timeout_s,
                                                const std::string& host) {
  auto opts = c10d::ProcessGroupGloo::Options::create(Ms(timeout_s));
  opts->devices.push_back(host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                       : c10d::ProcessGroupGloo::createDeviceForHostname(host));
  opts->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
}

}  // namespace

absl::Status DistOptionsFromEnv(DistOptions* o, bool explicit_rank, bool explicit_world,
                                bool explicit_addr, bool explicit_port) {
  int v = 0;
  if (!explicit_rank) {
    ST_ASSIGN_OR_RETURN(bool got,
                        EnvInt({"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"}, &v));
    if (got) o->rank = v;
  }
  if (!explicit_world) {
    ST_ASSIGN_OR_RETURN(
        bool got, EnvInt({"WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}, &v));
    if (got) o->world = v;
  }
  ST_ASSIGN_OR_RETURN(bool got_local,
                      EnvInt({"LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"}, &v));
  if (got_local) o->local_rank = v;
  if (!explicit_addr) {
    if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') {
      o->master_addr = a;
    }
  }
  if (!explicit_port) {
    ST_ASSIGN_OR_RETURN(bool got, EnvInt({"MASTER_PORT"}, &v));
    if (got) o->master_port = v;
  }
  return absl::OkStatus();
}

absl::Status ValidateDistOptions(const DistOptions& o) {
  if (o.world < 1) {
    return absl::InvalidArgumentError(absl::StrCat("world size must be >= 1, got ", o.world));
  }
  if (o.rank < 0 || o.rank >= o.world) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", o.rank, " is outside [0, ", o.world, ") (world size ", o.world,
                     "): give each process its own --rank, or set RANK and WORLD_SIZE"));
  }
  if (o.master_port <= 0 || o.master_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("master port ", o.master_port, " is not a TCP port"));
  }
  if (!(o.timeout_s > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the collective timeout must be > 0 seconds, got ", o.timeout_s));
  }
  const int g = o.lbl_group_size == 0 ? o.world : o.lbl_group_size;
  if (g < 1 || o.world % g != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("lbl_group_size ", o.lbl_group_size, " must divide the world size ", o.world,
                     " (1 = per-rank loss, 0 or ", o.world, " = global-batch loss)"));
  }
  if (o.bucket_bytes < 1024) {
    return absl::InvalidArgumentError("gradient bucket size must be >= 1 KiB");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Distributed>> Distributed::Create(const DistOptions& o) {
  ST_RETURN_IF_ERROR(ValidateDistOptions(o));
  std::unique_ptr<Distributed> d(new Distributed());
  d->opt_ = o;
  d->lbl_size_ = o.lbl_group_size == 0 ? o.world : o.lbl_group_size;
  if (o.world == 1) return d;
  const std::string where = o.store_file.empty() ? absl::StrCat(o.master_addr, ":", o.master_port)
                                                 : absl::StrCat("file ", o.store_file);
  try {
    if (!o.store_file.empty()) {
      d->store_ = c10::make_intrusive<c10d::FileStore>(o.store_file, o.world);
    } else {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(o.master_port);
      so.isServer = o.rank == 0;
      so.numWorkers = o.world;
      so.waitWorkers = true;
      so.timeout = Ms(o.timeout_s);
      d->store_ = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    }
    d->store_->setTimeout(Ms(o.timeout_s));
    // On loopback the transport binds to 127.0.0.1; otherwise to this host's own address.
    const std::string host =
        (o.master_addr == "127.0.0.1" || o.master_addr == "localhost") ? "127.0.0.1" : "";
    auto make = [&](const c10::intrusive_ptr<c10d::Store>& st, int r, int n) {
      return MakeGloo(st, r, n, o.timeout_s, host);
    };
    d->world_pg_ =
        make(c10::make_intrusive<c10d::PrefixStore>("world", d->store_), o.rank, o.world);
    d->param_pg_ = d->world_pg_;
    if (o.cuda) {
#if defined(USE_C10D_NCCL)
      auto nopts = c10d::ProcessGroupNCCL::Options::create();
      nopts->timeout = Ms(o.timeout_s);
      d->param_pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", d->store_), o.rank, o.world, nopts);
#else
      return absl::FailedPreconditionError(
          "data-parallel training on CUDA needs a LibTorch built with NCCL; this one has none "
          "(train on --device cpu, where Gloo is used)");
#endif
    }
    if (d->lbl_size_ == o.world) {
      d->lbl_pg_ = d->world_pg_;
    } else if (d->lbl_size_ > 1) {
      const int g = o.rank / d->lbl_size_;
      d->lbl_pg_ = make(c10::make_intrusive<c10d::PrefixStore>(absl::StrCat("lbl", g), d->store_),
                        o.rank % d->lbl_size_, d->lbl_size_);
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", o.rank, " of ", o.world, ": rendezvous at ", where, " failed within ", o.timeout_s,
        " s: ", e.what(),
        " (are all ranks started, with the same --master_addr/--master_port or --store_file?)"));
  }
  return d;
}

Distributed::~Distributed() = default;

void Distributed::Broadcast(const std::vector<torch::Tensor>& tensors) {
  if (!enabled()) return;
  for (const torch::Tensor& t : tensors) {
    std::vector<at::Tensor> v = {t.is_contiguous() ? t : t.contiguous()};
    param_pg_->broadcast(v, c10d::BroadcastOptions{0})->wait();
    if (!t.is_contiguous()) t.copy_(v[0]);
  }
}

void Distributed::AllReduceSum(torch::Tensor& t) {
  if (!enabled()) return;
  std::vector<at::Tensor> v = {t};
  world_pg_->allreduce(v)->wait();
}

void Distributed::AllReduceSumLblGroup(torch::Tensor& t) {
  if (!lbl_pg_) return;
  std::vector<at::Tensor> v = {t};
  lbl_pg_->allreduce(v)->wait();
}

void Distributed::Barrier() {
  if (enabled()) world_pg_->barrier()->wait();
}

void Distributed::AttachGradients(const std::vector<torch::Tensor>& params) {
  params_ = params;
  if (!enabled()) return;
  const int n = static_cast<int>(params.size());
  bucket_of_.assign(n, -1);
  param_ready_.assign(n, false);
  // Reverse parameter order: the last layers' gradients are ready first.
  Bucket cur;
  for (int i = n - 1; i >= 0; --i) {
    const int64_t bytes = params[i].numel() * static_cast<int64_t>(params[i].element_size());
    if (!cur.params.empty() && (cur.numel * 4 + bytes) > opt_.bucket_bytes) {
      buckets_.push_back(std::move(cur));
      cur = Bucket();
    }
    cur.params.push_back(i);
    cur.numel += params[i].numel();
  }
  if (!cur.params.empty()) buckets_.push_back(std::move(cur));
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (int i : buckets_[b].params) bucket_of_[i] = static_cast<int>(b);
    buckets_[b].flat = torch::zeros({buckets_[b].numel}, params[buckets_[b].params[0]].options());
  }
  for (int i = 0; i < n; ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params[i]);
    ST_CHECK(acc != nullptr) << "parameter " << i << " is not a leaf that requires grad";
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs,
                  const torch::autograd::variable_list&) {
          OnGradReady(i);
          return outputs;
        }));
  }
}

void Distributed::ArmGradientSync() {
  if (!enabled()) return;
  armed_ = true;
  next_launch_ = 0;
  std::fill(param_ready_.begin(), param_ready_.end(), false);
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.launched = false;
    b.work.reset();
  }
}

void Distributed::OnGradReady(int i) {
  if (!armed_ || param_ready_[i]) return;
  param_ready_[i] = true;
  ++buckets_[bucket_of_[i]].ready;
  LaunchReady();
}

void Distributed::LaunchReady() {
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].ready == static_cast<int>(buckets_[next_launch_].params.size())) {
    Launch(buckets_[next_launch_++]);
  }
}

void Distributed::Launch(Bucket& b) {
  int64_t off = 0;
  for (int i : b.params) {
    torch::Tensor& p = params_[i];
    const int64_t n = p.numel();
    torch::Tensor dst = b.flat.narrow(0, off, n);
    if (p.grad().defined()) {
      dst.copy_(p.grad().reshape({-1}));
    } else {
      dst.zero_();
    }
    off += n;
  }
  std::vector<at::Tensor> v = {b.flat};
  b.work = param_pg_->allreduce(v);
  b.launched = true;
}

double Distributed::FinishGradientSync() {
  if (!enabled()) return 0.0;
  const auto t0 = Clock::now();
  // Parameters backward did not reach this step: their buckets go now, in order.
  for (; next_launch_ < buckets_.size(); ++next_launch_) Launch(buckets_[next_launch_]);
  armed_ = false;
  const double inv = 1.0 / opt_.world;
  for (Bucket& b : buckets_) {
    b.work->wait();
    b.flat.mul_(inv);
    int64_t off = 0;
    for (int i : b.params) {
      torch::Tensor& p = params_[i];
      const int64_t n = p.numel();
      torch::Tensor src = b.flat.narrow(0, off, n).view_as(p);
      if (p.grad().defined()) {
        p.mutable_grad().copy_(src);
      } else {
        p.mutable_grad() = src.clone();
      }
      off += n;
    }
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace st
