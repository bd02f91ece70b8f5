// Data-parallel training on PyTorch's c10d: the process groups (Gloo over TCP on CPUs, NCCL for
// CUDA parameters when LibTorch is built with it; found through a TCPStore or a FileStore), launch
// settings from flags or the usual environment variables (torchrun, Slurm, Open MPI), parameter
// broadcast, bucketed gradient all-reduce overlapped with the backward pass, and the sub-groups of
// the DP-group load-balance loss.
//
// Threads: one Distributed per process, used from the training thread; c10d runs the
// collectives on its own threads. Every collective is issued in the same order on every rank.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace c10d {
class ProcessGroup;
class Store;
class Work;
}  // namespace c10d

namespace st {

struct DistOptions {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string store_file;  // rendezvous through this file (shared filesystem) instead of TCP
  double timeout_s = 300;  // a collective (or the rendezvous) waiting longer fails the run
  int lbl_group_size = 0;  // ranks per load-balance-loss group; 0 = the whole world
  int64_t bucket_bytes = 8 << 20;  // gradient all-reduce bucket size
  // Parameters live on a CUDA device: broadcast and gradient buckets go through NCCL (when
  // this LibTorch has it); CPU-side reductions (load-balance counts, logged sums) stay on Gloo.
  bool cuda = false;
};

// Fills rank / world / local rank / master address and port from the environment, in this
// order of precedence: RANK/WORLD_SIZE/LOCAL_RANK (torchrun), SLURM_PROCID/SLURM_NTASKS/
// SLURM_LOCALID, OMPI_COMM_WORLD_RANK/_SIZE/_LOCAL_RANK, PMI_RANK/PMI_SIZE; MASTER_ADDR and
// MASTER_PORT. Fields already set away from their defaults by flags are kept (`explicit_*`).
absl::Status DistOptionsFromEnv(DistOptions* o, bool explicit_rank, bool explicit_world,
                                bool explicit_addr, bool explicit_port);
absl::Status ValidateDistOptions(const DistOptions& o);

class Distributed {
 public:
  // world == 1: no process group, every call is local. Otherwise rendezvous (rank 0 hosts the
  // TCPStore) and the Gloo process groups (world, and this rank's load-balance group).
  static absl::StatusOr<std::unique_ptr<Distributed>> Create(const DistOptions& o);
  ~Distributed();

  int rank() const { return opt_.rank; }
  int world() const { return opt_.world; }
  int lbl_group_size() const { return lbl_size_; }
  int lbl_group() const { return opt_.rank / lbl_size_; }
  bool enabled() const { return opt_.world > 1; }
  const DistOptions& options() const { return opt_; }

  // Copies rank 0's tensors into everyone's (in place).
  void Broadcast(const std::vector<torch::Tensor>& tensors);
  // In place sum over the world / over this rank's load-balance group.
  void AllReduceSum(torch::Tensor& t);
  void AllReduceSumLblGroup(torch::Tensor& t);
  void Barrier();

  // Gradient averaging. Attach once with the parameters (buckets follow the reverse
  // parameter order, roughly the order backward produces gradients). Arm before the backward
  // of the micro-batch that ends an accumulation: as gradients accumulate, each full bucket
  // is all-reduced asynchronously while backward goes on; buckets are launched strictly in
  // order, so every rank issues the same collectives. Finish waits, fills in what backward
  // did not reach (parameters without gradient this step count as zero) and divides by the
  // world size. Returns the seconds spent waiting for the reductions after backward ended.
  void AttachGradients(const std::vector<torch::Tensor>& params);
  void ArmGradientSync();
  double FinishGradientSync();
  int buckets() const { return static_cast<int>(buckets_.size()); }

 private:
  Distributed() = default;
  struct Bucket {
    std::vector<int> params;  // indices into params_
    int64_t numel = 0;
    torch::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
    int ready = 0;
    bool launched = false;
  };
  void OnGradReady(int param);
  void LaunchReady();  // launches the next buckets in order while they are complete
  void Launch(Bucket& b);

  DistOptions opt_;
  int lbl_size_ = 1;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> world_pg_, lbl_pg_;  // Gloo: CPU tensors
  c10::intrusive_ptr<c10d::ProcessGroup> param_pg_;  // parameters and gradients (Gloo or NCCL)
  std::vector<torch::Tensor> params_;
  std::vector<int> bucket_of_;  // param -> bucket
  std::vector<bool> param_ready_;
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  bool armed_ = false;
};

}  // namespace st
