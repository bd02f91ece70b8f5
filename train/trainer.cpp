// The pretraining loop (see trainer.h).
#include "train/trainer.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/check.h"
#include "model/file_io.h"
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
  return WriteFileAtomic(path.string(), text + "\n");
}

}  // namespace

AutocastGuard::AutocastGuard(const std::string& precision, const torch::Device& device)
    : on_(precision == "bf16"), cuda_(device.is_cuda()) {
  if (!on_) return;
  if (cuda_) {
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
}

AutocastGuard::~AutocastGuard() {
  if (!on_) return;
  if (cuda_) {
    at::autocast::set_enabled(false);
  } else {
    at::autocast::set_cpu_enabled(false);
  }
  at::autocast::clear_cache();
}

void KeepFreedMemory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);              // large blocks from the heap, reused
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // the heap's top kept up to 1 GiB
#endif
}

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

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& opts) {
  std::unique_ptr<Trainer> t(new Trainer());
  t->opts_ = opts;
  const TrainerOptions& o = t->opts_;
  ST_RETURN_IF_ERROR(ValidateTrainConfig(o.train));
  ST_ASSIGN_OR_RETURN(t->device_, ParseDevice(o.device));
  const int threads =
      o.train.threads > 0 ? o.train.threads : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(threads);
  ST_ASSIGN_OR_RETURN(const CheckpointState resumed, t->OpenRunDirectory());
  ST_RETURN_IF_ERROR(t->OpenData(resumed));
  ST_RETURN_IF_ERROR(t->JoinJob());
  t->BuildModel();
  if (o.resume) ST_RETURN_IF_ERROR(t->Restore(resumed));
  ST_RETURN_IF_ERROR(t->SyncParameters());
  if (t->dist_->rank() == 0) {
    ST_RETURN_IF_ERROR(WriteTextFile(fs::path(o.run_dir) / "model.json", o.model.ToJson()));
    ST_RETURN_IF_ERROR(WriteTextFile(fs::path(o.run_dir) / "train.json", o.train.ToJson()));
  }
  return t;
}

absl::StatusOr<CheckpointState> Trainer::OpenRunDirectory() {
  TrainerOptions& o = opts_;
  if (o.run_dir.empty()) return absl::InvalidArgumentError("no run directory given (--run_dir)");
  std::error_code ec;
  fs::create_directories(o.run_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create run directory '", o.run_dir, "': ", ec.message()));
  }
  const std::string ckpt = checkpoint_path();
  CheckpointState resumed;
  if (o.resume) {
    if (!fs::exists(ckpt)) {
      return absl::NotFoundError(
          absl::StrCat("--resume: no checkpoint at ", ckpt, "; drop --resume to start a new run"));
    }
    ST_ASSIGN_OR_RETURN(resumed, ReadCheckpointState(ckpt));
    ST_ASSIGN_OR_RETURN(o.model, ParseModelConfig(resumed.model_config_json));
    if (o.new_stage) {
      if (o.stage_rope_theta > 0) o.model.rope_theta = o.stage_rope_theta;
      if (o.stage_max_position_embeddings > 0) {
        o.model.max_position_embeddings = o.stage_max_position_embeddings;
      }
    }
  } else if (fs::exists(ckpt)) {
    return absl::AlreadyExistsError(
        absl::StrCat(o.run_dir, " already holds a checkpoint (", ckpt,
                     "); pass --resume to continue it, or choose another --run_dir"));
  }
  ST_RETURN_IF_ERROR(ValidateModelConfig(o.model));
  if (o.train.seq_len > o.model.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train config seq_len ", o.train.seq_len, " exceeds the model's max_position_embeddings ",
        o.model.max_position_embeddings,
        o.new_stage ? "; raise it for the stage with --max_position_embeddings" : ""));
  }
  return resumed;
}

absl::Status Trainer::OpenData(const CheckpointState& resumed) {
  const TrainerOptions& o = opts_;
  ST_ASSIGN_OR_RETURN(tokenizer_, LoadDatasetTokenizer(o.train.data));
  const Tokenizer& tok = *tokenizer_;
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
  train_data_ = std::make_unique<TokenDataset>(std::move(train));
  val_data_ = std::make_unique<TokenDataset>(std::move(val));
  if (val_data_->NumWindows(o.train.seq_len) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.train.data, " has too little validation data for seq_len ", o.train.seq_len,
                     "; re-run st-data prepare with a larger --val_fraction"));
  }
  return absl::OkStatus();
}

absl::Status Trainer::JoinJob() {
  TrainerOptions& o = opts_;
  DistOptions dopt = o.dist;
  if (dopt.lbl_group_size == 0) dopt.lbl_group_size = o.train.lbl_group_size;
  dopt.cuda = device_.is_cuda();
  // "--device cuda" in a data-parallel job: each rank takes the GPU of its local rank.
  if (dopt.cuda && dopt.world > 1 && !device_.has_index()) {
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(dopt.local_rank));
  }
  ST_ASSIGN_OR_RETURN(dist_, Distributed::Create(dopt));
  const int rank = dist_->rank(), world = dist_->world();
  if (rank != 0) o.quiet = true;  // rank 0 speaks for the job
  ST_ASSIGN_OR_RETURN(DataLoader sampler,
                      DataLoader::Create(train_data_.get(), o.train.seq_len,
                                         o.train.micro_batch_size, o.train.seed, rank, world));
  sampler_ = std::make_unique<DataLoader>(std::move(sampler));
  return absl::OkStatus();
}

void Trainer::BuildModel() {
  const TrainerOptions& o = opts_;
  torch::manual_seed(o.train.seed);
  model_ = SmallThinkerForCausalLM(o.model);
  model_->model->checkpoint_layers = o.train.grad_checkpoint;
  model_->to(device_);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model_->named_parameters()) named.emplace_back(item.key(), item.value());
  AdamWOptions adam;
  adam.beta1 = o.train.beta1;
  adam.beta2 = o.train.beta2;
  adam.eps = o.train.adam_eps;
  adam.weight_decay = o.train.weight_decay;
  optimizer_ = std::make_unique<AdamW>(named, adam);
  // The DP-group load-balance loss: the token fractions are summed over this rank's group.
  LoadBalancePool::Reducer reducer = nullptr;
  if (dist_->lbl_group_size() > 1) {
    Distributed* d = dist_.get();
    reducer = [d](const torch::Tensor& counts) {
      torch::Tensor c = counts.clone();
      d->AllReduceSumLblGroup(c);
      return c;
    };
  }
  lbl_pool_ = std::make_unique<LoadBalancePool>(
      o.model.num_hidden_layers, o.model.moe_num_primary_experts, o.train.lbl_window, reducer);
  schedule_.kind = o.train.schedule;
  schedule_.peak = o.train.lr;
  schedule_.warmup_steps = o.train.warmup_steps;
  schedule_.total_steps = o.train.max_steps;
  schedule_.min_lr_ratio = o.train.min_lr_ratio;
  schedule_.wsd_decay_fraction = o.train.wsd_decay_fraction;
}

absl::Status Trainer::Restore(const CheckpointState& resumed) {
  const std::string ckpt = checkpoint_path();
  ST_RETURN_IF_ERROR(LoadCheckpoint(ckpt, model_, optimizer_.get()));
  // A new stage reads its own data from the start; otherwise the data position carries on.
  if (!opts_.new_stage) ST_RETURN_IF_ERROR(sampler_->Restore(resumed.sampler));
  if (resumed.lbl_history.defined()) lbl_pool_->Restore(resumed.lbl_history);
  if (resumed.rng_cpu.defined()) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(resumed.rng_cpu);
  }
  step_ = resumed.step;
  ckpt_history_ = resumed.history_json;
  nlohmann::json history = nlohmann::json::array();
  if (!ckpt_history_.empty()) {
    history = nlohmann::json::parse(ckpt_history_, nullptr, /*allow_exceptions=*/false);
    if (!history.is_array()) history = nlohmann::json::array();
  }
  for (const nlohmann::json& e : history) {  // the current stage: the last one begun
    if (e.is_object() && e.value("event", "") == "stage")
      stage_start_ = e.value("step", int64_t{0});
  }
  if (opts_.new_stage) {
    stage_start_ = step_;
    nlohmann::json stage = {{"event", "stage"},
                            {"step", step_},
                            {"train_config", nlohmann::json::parse(opts_.train.ToJson())},
                            {"rope_theta", opts_.model.rope_theta},
                            {"max_position_embeddings", opts_.model.max_position_embeddings}};
    history.push_back(stage);
    ckpt_history_ = history.dump();
    if (!opts_.quiet) {
      std::printf("new stage from step %lld: data %s, seq_len %d, %lld steps, rope_theta %g\n",
                  (long long)step_, opts_.train.data.c_str(), opts_.train.seq_len,
                  (long long)opts_.train.max_steps, opts_.model.rope_theta);
    }
  }
  if (!opts_.quiet) std::printf("resumed %s at step %lld\n", ckpt.c_str(), (long long)step_);
  if (dist_->rank() == 0) ST_RETURN_IF_ERROR(TidyRunDirectory());
  return absl::OkStatus();
}

absl::Status Trainer::SyncParameters() {
  try {
    dist_->Broadcast(model_->parameters());
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", dist_->rank(), ": broadcasting the initial parameters failed: ", e.what()));
  }
  dist_->AttachGradients(model_->parameters());
  if (!opts_.quiet && dist_->world() > 1) {
    std::printf("data parallel: %d ranks, load-balance groups of %d, %d gradient buckets\n",
                dist_->world(), dist_->lbl_group_size(), dist_->buckets());
  }
  return absl::OkStatus();
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
  s.history_json = ckpt_history_;
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

// The training loop's state between log lines.
struct Trainer::LoopState {
  LoopState(int layers, int experts) : stats(layers, experts) {}
  int64_t end = 0;         // the step this run stops at
  int64_t first_step = 0;  // step_ when the run started
  int64_t tokens_per_step = 0;
  std::vector<torch::Tensor> params;  // clipped together
  std::vector<int32_t> batch;         // one micro-batch of windows, B x (S + 1)
  RouterStats stats;                  // since the last log line
  Clock::time_point run_start, interval_start;
  int64_t interval_steps = 0;
  double allreduce_s = 0;  // waiting for gradient reductions after backward, this interval
};

// An optimizer step's losses: summed over micro-batches, then (MeanOverJob) the job's mean.
struct Trainer::StepLosses {
  double loss = 0, ce = 0, lbl = 0, z = 0;
};

// Timing of the interval since the last log line.
struct Trainer::IntervalTiming {
  double elapsed_s, tokens_per_s, eta_s, allreduce_ms_per_step;
};

absl::Status Trainer::RunSteps() {
  const TrainConfig& c = opts_.train;
  LoopState s = StartLoop();
  model_->train();
  while (step_ < s.end) {
    const double lr = schedule_.At(step_ - stage_start_);
    ST_ASSIGN_OR_RETURN(const StepLosses m, AccumulateGradients(s));
    const double max_norm = c.grad_clip > 0 ? c.grad_clip : std::numeric_limits<double>::infinity();
    const double grad_norm = torch::nn::utils::clip_grad_norm_(s.params, max_norm);
    if (!std::isfinite(m.loss) || !std::isfinite(grad_norm)) {
      return absl::InternalError(absl::StrFormat(
          "training diverged at step %d (loss %g, grad norm %g); the last checkpoint is intact: "
          "lower lr or raise warmup_steps and --resume",
          step_ + 1, m.loss, grad_norm));
    }
    optimizer_->Step(lr);
    ++step_;
    ++s.interval_steps;
    history_.push_back({step_, m.loss, m.ce, m.lbl, lr, grad_norm});
    if (step_ % c.log_interval == 0 || step_ == s.end) LogInterval(s, m, lr, grad_norm);
    const int rank = dist_->rank();
    if (rank == 0 && ((c.eval_interval > 0 && step_ % c.eval_interval == 0) ||
                      step_ == stage_start_ + c.max_steps)) {
      EvaluateAndLog();
    }
    const bool saved =
        (c.checkpoint_interval > 0 && step_ % c.checkpoint_interval == 0) || step_ == s.end;
    if (rank == 0 && saved) {
      ST_RETURN_IF_ERROR(SaveCheckpointNow());
      if (!opts_.quiet) {
        std::printf("saved %s (step %lld)\n", checkpoint_path().c_str(), (long long)step_);
        std::fflush(stdout);
      }
    }
    if (step_ < s.end && StopRequested()) {
      if (rank == 0 && !saved) ST_RETURN_IF_ERROR(SaveCheckpointNow());
      interrupted_ = true;
      if (rank == 0) {
        std::printf(
            "stopped by a signal after step %lld; checkpoint %s holds it: resume with "
            "--resume\n",
            (long long)step_, checkpoint_path().c_str());
        std::fflush(stdout);
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

bool Trainer::StopRequested() {
  const bool local = opts_.stop_signals != nullptr && opts_.stop_signals->load() > 0;
  if (dist_->world() == 1) return local;
  torch::Tensor flag = torch::full({1}, local ? 1.0f : 0.0f);
  dist_->AllReduceSum(flag);
  return flag.item<float>() > 0;
}

absl::Status Trainer::TidyRunDirectory() {
  const fs::path dir(opts_.run_dir);
  const std::string temp_prefix = fs::path(checkpoint_path()).filename().string() + ".tmp.";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(temp_prefix, 0) == 0 && entry.is_regular_file()) {
      fs::remove(entry.path(), ec);
      if (!opts_.quiet)
        std::printf("removed %s (a killed run's unfinished checkpoint)\n", name.c_str());
    }
  }
  const fs::path metrics = dir / "metrics.jsonl";
  if (!fs::exists(metrics)) return absl::OkStatus();
  std::ifstream in(metrics, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string kept;
  size_t dropped = 0;
  for (size_t b = 0; b < text.size();) {
    const size_t e = text.find('\n', b);
    if (e == std::string::npos) {  // a line the kill cut short
      ++dropped;
      break;
    }
    const std::string line = text.substr(b, e - b);
    b = e + 1;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("step") || !j["step"].is_number_integer() ||
        j["step"].get<int64_t>() > step_) {
      ++dropped;
      continue;
    }
    kept += line + "\n";
  }
  if (dropped == 0) return absl::OkStatus();
  ST_RETURN_IF_ERROR(WriteFileAtomic(metrics.string(), kept));
  if (!opts_.quiet) {
    std::printf("metrics.jsonl: dropped %zu record(s) past step %lld (the checkpoint's)\n", dropped,
                (long long)step_);
  }
  return absl::OkStatus();
}

Trainer::LoopState Trainer::StartLoop() {
  const TrainConfig& c = opts_.train;
  const int S = c.seq_len, B = c.micro_batch_size;
  LoopState s(opts_.model.num_hidden_layers, opts_.model.moe_num_primary_experts);
  const int64_t last = stage_start_ + c.max_steps;  // max_steps counts the stage's steps
  s.end = opts_.stop_at_step > 0 ? std::min(opts_.stop_at_step, last) : last;
  s.first_step = step_;
  s.tokens_per_step = static_cast<int64_t>(c.grad_accum_steps) * B * S * dist_->world();
  s.params = model_->parameters();
  s.batch.resize(static_cast<size_t>(B) * (S + 1));
  s.run_start = s.interval_start = Clock::now();
  if (!opts_.quiet) {
    std::printf("training %s: %.2fM params (%.2fM active), %lld tokens/step, steps %lld -> %lld\n",
                opts_.model.model_type.c_str(), opts_.model.NumParams() / 1e6,
                opts_.model.NumActiveParams() / 1e6, (long long)s.tokens_per_step, (long long)step_,
                (long long)s.end);
    std::fflush(stdout);
  }
  return s;
}

absl::StatusOr<Trainer::StepLosses> Trainer::AccumulateGradients(LoopState& s) {
  const TrainConfig& c = opts_.train;
  const int S = c.seq_len, B = c.micro_batch_size;
  const LossOptions loss_opt{c.lbl_coef, c.z_loss_coef};
  optimizer_->ZeroGrad();
  StepLosses sum;
  for (int m = 0; m < c.grad_accum_steps; ++m) {
    // Only the last micro-batch's backward synchronises (accumulation needs no traffic).
    if (m + 1 == c.grad_accum_steps) dist_->ArmGradientSync();
    ST_RETURN_IF_ERROR(sampler_->Next(s.batch.data()));
    torch::Tensor batch =
        torch::from_blob(s.batch.data(), {B, S + 1}, torch::kInt32).to(device_, torch::kInt64);
    torch::Tensor targets = batch.narrow(1, 1, S);
    ForwardOutput out{};
    LossTerms terms;
    {
      AutocastGuard amp(c.precision, device_);
      out = model_->forward(batch.narrow(1, 0, S));
      terms = ComputeLosses(out, targets, opts_.model, loss_opt, lbl_pool_.get());
    }
    (terms.total / c.grad_accum_steps).backward();
    sum.loss += terms.total.item<double>();
    sum.ce += terms.ce.item<double>();
    sum.lbl += terms.lbl.item<double>();
    sum.z += terms.z.item<double>();
    s.stats.Add(out.routing, terms.router_probs_LTE);
  }
  s.allreduce_s += dist_->FinishGradientSync();
  return MeanOverJob(sum);
}

Trainer::StepLosses Trainer::MeanOverJob(StepLosses sum) {
  const int world = dist_->world();
  if (world > 1) {  // the job's loss, not this rank's
    torch::Tensor sums = torch::tensor({sum.loss, sum.ce, sum.lbl, sum.z}, torch::kFloat64);
    dist_->AllReduceSum(sums);
    sums.div_(world);
    sum = {sums[0].item<double>(), sums[1].item<double>(), sums[2].item<double>(),
           sums[3].item<double>()};
  }
  const double inv = 1.0 / opts_.train.grad_accum_steps;
  return {sum.loss * inv, sum.ce * inv, sum.lbl * inv, sum.z * inv};
}

void Trainer::LogInterval(LoopState& s, const StepLosses& m, double lr, double grad_norm) {
  const auto now = Clock::now();
  IntervalTiming time;
  const double interval_s = std::chrono::duration<double>(now - s.interval_start).count();
  time.elapsed_s = std::chrono::duration<double>(now - s.run_start).count();
  time.tokens_per_s = s.interval_steps * s.tokens_per_step / std::max(interval_s, 1e-9);
  time.eta_s = time.elapsed_s / (step_ - s.first_step) * (s.end - step_);
  time.allreduce_ms_per_step = 1e3 * s.allreduce_s / std::max<int64_t>(s.interval_steps, 1);
  const std::vector<double> sparsity = s.stats.ReGLUSparsity();
  std::vector<std::vector<std::vector<double>>> group_load;       // [G][L][E]
  if (dist_->world() > 1) group_load = GroupExpertLoad(s.stats);  // a collective: all ranks
  if (!opts_.quiet) {
    double mean_sparsity = 0;
    for (size_t l = 0; l < sparsity.size(); ++l) mean_sparsity += sparsity[l] / sparsity.size();
    PrintProgress(s.end, m, lr, grad_norm, time, mean_sparsity);
  }
  if (dist_->rank() == 0) {
    AppendMetrics(TrainRecord(s.tokens_per_step, m, lr, grad_norm, time));
    nlohmann::json r = {{"type", "router"},
                        {"step", step_},
                        {"expert_load", s.stats.ExpertLoad()},
                        {"router_entropy", s.stats.RouterEntropy()},
                        {"reglu_sparsity", sparsity}};
    if (dist_->world() > 1) {
      r["lbl_group_size"] = dist_->lbl_group_size();
      r["group_expert_load"] = group_load;
    }
    AppendMetrics(r.dump());
  }
  s.stats.Reset();
  s.interval_start = now;
  s.interval_steps = 0;
  s.allreduce_s = 0;
}

std::vector<std::vector<std::vector<double>>> Trainer::GroupExpertLoad(const RouterStats& stats) {
  const int G = dist_->world() / dist_->lbl_group_size();
  const int L = opts_.model.num_hidden_layers, E = opts_.model.moe_num_primary_experts;
  torch::Tensor t = torch::zeros({G, L, E}, torch::kFloat64);
  const std::vector<std::vector<double>> load = stats.ExpertLoad();
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) t[dist_->lbl_group()][l][e] = load[l][e] / dist_->lbl_group_size();
  }
  dist_->AllReduceSum(t);
  std::vector<std::vector<std::vector<double>>> group_load;
  for (int g = 0; g < G; ++g) {
    std::vector<std::vector<double>> gl(L, std::vector<double>(E));
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) gl[l][e] = t[g][l][e].item<double>();
    }
    group_load.push_back(gl);
  }
  return group_load;
}

void Trainer::PrintProgress(int64_t end, const StepLosses& m, double lr, double grad_norm,
                            const IntervalTiming& time, double mean_sparsity) const {
  std::string dp;
  if (dist_->world() > 1) {
    dp = absl::StrFormat(" | allreduce wait %.1f ms/step", time.allreduce_ms_per_step);
  }
  std::printf(
      "step %6lld/%lld | loss %.4f | ce %.4f | lbl %.3f | lr %.2e | gnorm %.2f | "
      "%.0f tok/s | sparsity %.2f%s | ETA %s\n",
      (long long)step_, (long long)end, m.loss, m.ce, m.lbl, lr, grad_norm, time.tokens_per_s,
      mean_sparsity, dp.c_str(), FormatDuration(time.eta_s).c_str());
  std::fflush(stdout);
}

std::string Trainer::TrainRecord(int64_t tokens_per_step, const StepLosses& m, double lr,
                                 double grad_norm, const IntervalTiming& time) const {
  nlohmann::json j = {{"type", "train"},
                      {"step", step_},
                      {"loss", m.loss},
                      {"ce", m.ce},
                      {"lbl", m.lbl},
                      {"z", m.z},
                      {"lr", lr},
                      {"grad_norm", grad_norm},
                      {"tokens", step_ * tokens_per_step},
                      {"tokens_per_s", time.tokens_per_s},
                      {"elapsed_s", time.elapsed_s}};
  if (dist_->world() > 1) {
    j["world"] = dist_->world();
    j["allreduce_wait_ms_per_step"] = time.allreduce_ms_per_step;
  }
  return j.dump();
}

void Trainer::EvaluateAndLog() {
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

}  // namespace st
