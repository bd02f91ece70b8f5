// The pretraining loop (see trainer.h).
#include "train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/check.h"
#include "nlohmann/json.hpp"
#include "train/checkpoint.h"

namespace st {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

absl::Status WriteTextFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text << "\n";
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<torch::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device ", name,
          ": this LibTorch build or machine has no CUDA device; use "
          "--device cpu, or build against a CUDA LibTorch (cmake -DCMAKE_PREFIX_PATH=...)"));
    }
    try {
      return torch::Device(name);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--device ", name, ": ", e.what()));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device '", name, "' is not a device; use cpu, cuda or cuda:N"));
}

std::string Trainer::checkpoint_path() const {
  return (fs::path(opts_.run_dir) / "checkpoint.h5").string();
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& opts_in) {
  std::unique_ptr<Trainer> t(new Trainer());
  t->opts_ = opts_in;
  TrainerOptions& o = t->opts_;
  ST_RETURN_IF_ERROR(ValidateTrainConfig(o.train));
  ST_ASSIGN_OR_RETURN(t->device_, ParseDevice(o.device));
  const int threads =
      o.train.threads > 0 ? o.train.threads : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(threads);

  if (o.run_dir.empty()) return absl::InvalidArgumentError("no run directory given (--run_dir)");
  std::error_code ec;
  fs::create_directories(o.run_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create run directory '", o.run_dir, "': ", ec.message()));
  }
  const std::string ckpt = t->checkpoint_path();
  CheckpointState resumed;
  if (o.resume) {
    if (!fs::exists(ckpt)) {
      return absl::NotFoundError(
          absl::StrCat("--resume: no checkpoint at ", ckpt, "; drop --resume to start a new run"));
    }
    ST_ASSIGN_OR_RETURN(resumed, ReadCheckpointState(ckpt));
    ST_ASSIGN_OR_RETURN(o.model, ParseModelConfig(resumed.model_config_json));
  } else if (fs::exists(ckpt)) {
    return absl::AlreadyExistsError(
        absl::StrCat(o.run_dir, " already holds a checkpoint (", ckpt,
                     "); pass --resume to continue it, or choose another --run_dir"));
  }
  ST_RETURN_IF_ERROR(ValidateModelConfig(o.model));
  if (o.train.seq_len > o.model.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("train config seq_len ", o.train.seq_len,
                                                   " exceeds the model's max_position_embeddings ",
                                                   o.model.max_position_embeddings));
  }

  // Data: a dataset directory; the tokenizer comes with it.
  ST_ASSIGN_OR_RETURN(t->tokenizer_, LoadDatasetTokenizer(o.train.data));
  const Tokenizer& tok = *t->tokenizer_;
  if (tok.vocab_size() > o.model.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.train.data, " was tokenized with a vocabulary of ", tok.vocab_size(),
                     " ids but the model's vocab_size is ", o.model.vocab_size,
                     "; use a model config with vocab_size >= ", tok.vocab_size()));
  }
  if (o.resume && (resumed.tokenizer != tok.name() || resumed.tokenizer_json != tok.ToJson())) {
    return absl::InvalidArgumentError(
        absl::StrCat("the checkpoint was trained with another tokenizer (", resumed.tokenizer,
                     ") than the one of ", o.train.data, " (", tok.name(), ", fingerprint ",
                     tok.Fingerprint(), "); resume with the dataset it was trained on"));
  }
  ST_ASSIGN_OR_RETURN(TokenDataset train, TokenDataset::Open(o.train.data, "train"));
  ST_ASSIGN_OR_RETURN(TokenDataset val, TokenDataset::Open(o.train.data, "val"));
  t->train_data_ = std::make_unique<TokenDataset>(std::move(train));
  t->val_data_ = std::make_unique<TokenDataset>(std::move(val));
  if (t->val_data_->NumWindows(o.train.seq_len) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.train.data, " has too little validation data for seq_len ", o.train.seq_len,
                     "; re-run st-data prepare with a larger --val_fraction"));
  }
  DistOptions dopt = o.dist;
  if (dopt.lbl_group_size == 0) dopt.lbl_group_size = o.train.lbl_group_size;
  dopt.cuda = t->device_.is_cuda();
  // "--device cuda" in a data-parallel job: each rank takes the GPU of its local rank.
  if (dopt.cuda && dopt.world > 1 && !t->device_.has_index()) {
    t->device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(dopt.local_rank));
  }
  ST_ASSIGN_OR_RETURN(t->dist_, Distributed::Create(dopt));
  const int rank = t->dist_->rank(), world = t->dist_->world();
  if (rank != 0) o.quiet = true;  // rank 0 speaks for the job
  ST_ASSIGN_OR_RETURN(DataLoader sampler,
                      DataLoader::Create(t->train_data_.get(), o.train.seq_len,
                                         o.train.micro_batch_size, o.train.seed, rank, world));
  t->sampler_ = std::make_unique<DataLoader>(std::move(sampler));

  // Model and optimizer.
  torch::manual_seed(o.train.seed);
  t->model_ = SmallThinkerForCausalLM(o.model);
  t->model_->to(t->device_);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : t->model_->named_parameters())
    named.emplace_back(item.key(), item.value());
  AdamWOptions adam;
  adam.beta1 = o.train.beta1;
  adam.beta2 = o.train.beta2;
  adam.eps = o.train.adam_eps;
  adam.weight_decay = o.train.weight_decay;
  t->optimizer_ = std::make_unique<AdamW>(named, adam);
  // The DP-group load-balance loss: the token fractions are summed over this rank's group.
  LoadBalancePool::Reducer reducer = nullptr;
  if (t->dist_->lbl_group_size() > 1) {
    Distributed* d = t->dist_.get();
    reducer = [d](const torch::Tensor& counts) {
      torch::Tensor c = counts.clone();
      d->AllReduceSumLblGroup(c);
      return c;
    };
  }
  t->lbl_pool_ = std::make_unique<LoadBalancePool>(
      o.model.num_hidden_layers, o.model.moe_num_primary_experts, o.train.lbl_window, reducer);
  t->schedule_.kind = o.train.schedule;
  t->schedule_.peak = o.train.lr;
  t->schedule_.warmup_steps = o.train.warmup_steps;
  t->schedule_.total_steps = o.train.max_steps;
  t->schedule_.min_lr_ratio = o.train.min_lr_ratio;
  t->schedule_.wsd_decay_fraction = o.train.wsd_decay_fraction;

  if (o.resume) {
    ST_RETURN_IF_ERROR(LoadCheckpoint(ckpt, t->model_, t->optimizer_.get()));
    ST_RETURN_IF_ERROR(t->sampler_->Restore(resumed.sampler));
    if (resumed.lbl_history.defined()) t->lbl_pool_->Restore(resumed.lbl_history);
    if (resumed.rng_cpu.defined()) {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(resumed.rng_cpu);
    }
    t->step_ = resumed.step;
    if (!o.quiet) std::printf("resumed %s at step %lld\n", ckpt.c_str(), (long long)t->step_);
  }
  // Identical starting parameters everywhere (rank 0's), then the gradient buckets.
  try {
    t->dist_->Broadcast(t->model_->parameters());
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", rank,
                                               ": broadcasting the initial "
                                               "parameters failed: ",
                                               e.what()));
  }
  t->dist_->AttachGradients(t->model_->parameters());
  if (!o.quiet && world > 1) {
    std::printf("data parallel: %d ranks, load-balance groups of %d, %d gradient buckets\n", world,
                t->dist_->lbl_group_size(), t->dist_->buckets());
  }
  if (rank == 0) {
    ST_RETURN_IF_ERROR(WriteTextFile(fs::path(o.run_dir) / "model.json", o.model.ToJson()));
    ST_RETURN_IF_ERROR(WriteTextFile(fs::path(o.run_dir) / "train.json", o.train.ToJson()));
  }
  return t;
}

void Trainer::AppendMetrics(const std::string& line) {
  std::ofstream out(fs::path(opts_.run_dir) / "metrics.jsonl", std::ios::app);
  out << line << "\n";
}

absl::Status Trainer::SaveCheckpointNow() {
  CheckpointState s;
  s.step = step_;
  s.sampler = sampler_->state();
  s.lbl_history = lbl_pool_->History();
  s.rng_cpu = at::detail::getDefaultCPUGenerator().get_state();
  s.model_config_json = opts_.model.ToJson();
  s.train_config_json = opts_.train.ToJson();
  s.tokenizer = tokenizer_->name();
  s.tokenizer_json = tokenizer_->ToJson();
  absl::Status st = SaveCheckpoint(checkpoint_path(), model_, optimizer_.get(), s);
  if (!st.ok()) {
    return absl::Status(st.code(), absl::StrCat("saving the checkpoint failed (the previous one is "
                                                "intact): ",
                                                st.message()));
  }
  return absl::OkStatus();
}

double Trainer::Evaluate() {
  torch::NoGradGuard no_grad;
  const TrainConfig& c = opts_.train;
  const int S = c.seq_len, B = c.micro_batch_size;
  const int64_t windows = val_data_->NumWindows(S);
  std::vector<int32_t> buf(static_cast<size_t>(B) * (S + 1));
  double loss_sum = 0;
  int64_t count = 0;
  for (int b = 0; b < c.eval_batches; ++b) {
    const int64_t first = static_cast<int64_t>(b) * B;
    if (first >= windows) break;
    const int rows = static_cast<int>(std::min<int64_t>(B, windows - first));
    for (int r = 0; r < rows; ++r) {
      absl::Status read =
          val_data_->ReadWindow(S, first + r, buf.data() + static_cast<size_t>(r) * (S + 1));
      if (!read.ok()) {
        std::fprintf(stderr, "validation data: %s\n", std::string(read.message()).c_str());
        return std::nan("");
      }
    }
    torch::Tensor batch =
        torch::from_blob(buf.data(), {rows, S + 1}, torch::kInt32).to(device_, torch::kInt64);
    ForwardOutput out = model_->forward(batch.narrow(1, 0, S));
    torch::Tensor ce = torch::nn::functional::cross_entropy(
        out.logits_BSV.reshape({-1, out.logits_BSV.size(-1)}).to(torch::kFloat32),
        batch.narrow(1, 1, S).reshape({-1}));
    loss_sum += ce.item<double>() * rows;
    count += rows;
  }
  return count > 0 ? loss_sum / count : std::nan("");
}

absl::Status Trainer::Run() {
  try {
    return RunSteps();
  } catch (const std::exception& e) {
    if (!dist_->enabled()) throw;
    return absl::UnavailableError(absl::StrCat(
        "rank ", dist_->rank(), " of ", dist_->world(), " at step ", step_ + 1,
        ": a collective failed (another rank died, or none answered within ",
        dist_->options().timeout_s, " s): ", e.what(),
        ". The last checkpoint is intact: restart every rank with --resume (any world size)"));
  }
}

absl::Status Trainer::RunSteps() {
  const TrainConfig& c = opts_.train;
  const int S = c.seq_len, B = c.micro_batch_size;
  const int64_t end =
      opts_.stop_at_step > 0 ? std::min(opts_.stop_at_step, c.max_steps) : c.max_steps;
  const int world = dist_->world(), rank = dist_->rank();
  const int64_t tokens_per_step = static_cast<int64_t>(c.grad_accum_steps) * B * S * world;
  double allreduce_s = 0;  // waiting for gradient reductions after backward, this interval
  LossOptions loss_opt{c.lbl_coef, c.z_loss_coef};
  RouterStats stats(opts_.model.num_hidden_layers, opts_.model.moe_num_primary_experts);
  std::vector<torch::Tensor> params = model_->parameters();
  std::vector<int32_t> buf(static_cast<size_t>(B) * (S + 1));
  const auto run_start = Clock::now();
  auto interval_start = run_start;
  int64_t interval_steps = 0;
  const int64_t first_step = step_;
  if (!opts_.quiet) {
    std::printf("training %s: %.2fM params (%.2fM active), %lld tokens/step, steps %lld -> %lld\n",
                opts_.model.model_type.c_str(), opts_.model.NumParams() / 1e6,
                opts_.model.NumActiveParams() / 1e6, (long long)tokens_per_step, (long long)step_,
                (long long)end);
    std::fflush(stdout);
  }
  model_->train();
  while (step_ < end) {
    const double lr = schedule_.At(step_);
    optimizer_->ZeroGrad();
    double ce_sum = 0, lbl_sum = 0, z_sum = 0, loss_sum = 0;
    for (int m = 0; m < c.grad_accum_steps; ++m) {
      // Only the last micro-batch's backward synchronises (accumulation needs no traffic).
      if (m + 1 == c.grad_accum_steps) dist_->ArmGradientSync();
      ST_RETURN_IF_ERROR(sampler_->Next(buf.data()));
      torch::Tensor batch =
          torch::from_blob(buf.data(), {B, S + 1}, torch::kInt32).to(device_, torch::kInt64);
      torch::Tensor targets = batch.narrow(1, 1, S);
      ForwardOutput out = model_->forward(batch.narrow(1, 0, S));
      LossTerms terms = ComputeLosses(out, targets, opts_.model, loss_opt, lbl_pool_.get());
      (terms.total / c.grad_accum_steps).backward();
      loss_sum += terms.total.item<double>();
      ce_sum += terms.ce.item<double>();
      lbl_sum += terms.lbl.item<double>();
      z_sum += terms.z.item<double>();
      stats.Add(out.routing, terms.router_probs_LTE);
    }
    allreduce_s += dist_->FinishGradientSync();
    if (world > 1) {  // the job's loss, not this rank's
      torch::Tensor sums = torch::tensor({loss_sum, ce_sum, lbl_sum, z_sum}, torch::kFloat64);
      dist_->AllReduceSum(sums);
      sums.div_(world);
      loss_sum = sums[0].item<double>();
      ce_sum = sums[1].item<double>();
      lbl_sum = sums[2].item<double>();
      z_sum = sums[3].item<double>();
    }
    const double max_norm = c.grad_clip > 0 ? c.grad_clip : std::numeric_limits<double>::infinity();
    const double grad_norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
    const double inv = 1.0 / c.grad_accum_steps;
    if (!std::isfinite(loss_sum) || !std::isfinite(grad_norm)) {
      return absl::InternalError(absl::StrFormat(
          "training diverged at step %d (loss %g, grad norm %g); the last checkpoint is intact: "
          "lower lr or raise warmup_steps and --resume",
          step_ + 1, loss_sum * inv, grad_norm));
    }
    optimizer_->Step(lr);
    ++step_;
    ++interval_steps;
    history_.push_back({step_, loss_sum * inv, ce_sum * inv, lbl_sum * inv, lr, grad_norm});

    if (step_ % c.log_interval == 0 || step_ == end) {
      const auto now = Clock::now();
      const double interval_s = std::chrono::duration<double>(now - interval_start).count();
      const double elapsed = std::chrono::duration<double>(now - run_start).count();
      const double tok_s = interval_steps * tokens_per_step / std::max(interval_s, 1e-9);
      const double eta = elapsed / (step_ - first_step) * (end - step_);
      const std::vector<double> sparsity = stats.ReGLUSparsity();
      const std::vector<double> entropy = stats.RouterEntropy();
      // Expert load per load-balance group: each group's mean of its ranks' fractions.
      nlohmann::json group_load;
      if (world > 1) {
        const int G = world / dist_->lbl_group_size();
        const int L = opts_.model.num_hidden_layers, E = opts_.model.moe_num_primary_experts;
        torch::Tensor t = torch::zeros({G, L, E}, torch::kFloat64);
        const std::vector<std::vector<double>> load = stats.ExpertLoad();
        for (int l = 0; l < L; ++l) {
          for (int e = 0; e < E; ++e) {
            t[dist_->lbl_group()][l][e] = load[l][e] / dist_->lbl_group_size();
          }
        }
        dist_->AllReduceSum(t);
        for (int g = 0; g < G; ++g) {
          std::vector<std::vector<double>> gl(L, std::vector<double>(E));
          for (int l = 0; l < L; ++l) {
            for (int e = 0; e < E; ++e) gl[l][e] = t[g][l][e].item<double>();
          }
          group_load.push_back(gl);
        }
      }
      double mean_sparsity = 0, mean_entropy = 0;
      for (size_t l = 0; l < sparsity.size(); ++l) {
        mean_sparsity += sparsity[l] / sparsity.size();
        mean_entropy += entropy[l] / entropy.size();
      }
      if (!opts_.quiet) {
        std::string dp;
        if (world > 1) {
          dp = absl::StrFormat(" | allreduce wait %.1f ms/step",
                               1e3 * allreduce_s / std::max<int64_t>(interval_steps, 1));
        }
        std::printf(
            "step %6lld/%lld | loss %.4f | ce %.4f | lbl %.3f | lr %.2e | gnorm %.2f | "
            "%.0f tok/s | sparsity %.2f%s | ETA %s\n",
            (long long)step_, (long long)end, loss_sum * inv, ce_sum * inv, lbl_sum * inv, lr,
            grad_norm, tok_s, mean_sparsity, dp.c_str(), FormatDuration(eta).c_str());
        std::fflush(stdout);
      }
      nlohmann::json j = {{"type", "train"},
                          {"step", step_},
                          {"loss", loss_sum * inv},
                          {"ce", ce_sum * inv},
                          {"lbl", lbl_sum * inv},
                          {"z", z_sum * inv},
                          {"lr", lr},
                          {"grad_norm", grad_norm},
                          {"tokens", step_ * tokens_per_step},
                          {"tokens_per_s", tok_s},
                          {"elapsed_s", elapsed}};
      if (world > 1) {
        j["world"] = world;
        j["allreduce_wait_ms_per_step"] = 1e3 * allreduce_s / std::max<int64_t>(interval_steps, 1);
      }
      if (rank == 0) AppendMetrics(j.dump());
      nlohmann::json r = {{"type", "router"},
                          {"step", step_},
                          {"expert_load", stats.ExpertLoad()},
                          {"router_entropy", entropy},
                          {"reglu_sparsity", sparsity}};
      if (world > 1) {
        r["lbl_group_size"] = dist_->lbl_group_size();
        r["group_expert_load"] = group_load;
      }
      if (rank == 0) AppendMetrics(r.dump());
      stats.Reset();
      interval_start = now;
      interval_steps = 0;
      allreduce_s = 0;
    }
    if (rank == 0 &&
        ((c.eval_interval > 0 && step_ % c.eval_interval == 0) || step_ == c.max_steps)) {
      const double val = Evaluate();
      model_->train();
      if (!opts_.quiet) {
        std::printf("step %6lld | val loss %.4f | val ppl %.2f\n", (long long)step_, val,
                    std::exp(val));
        std::fflush(stdout);
      }
      AppendMetrics(
          nlohmann::json(
              {{"type", "eval"}, {"step", step_}, {"val_loss", val}, {"val_ppl", std::exp(val)}})
              .dump());
    }
    if (rank == 0 &&
        ((c.checkpoint_interval > 0 && step_ % c.checkpoint_interval == 0) || step_ == end)) {
      ST_RETURN_IF_ERROR(SaveCheckpointNow());
      if (!opts_.quiet) {
        std::printf("saved %s (step %lld)\n", checkpoint_path().c_str(), (long long)step_);
        std::fflush(stdout);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace st
