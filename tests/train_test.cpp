// Trainer tests: checkpoint round trip, exact resume, learning on the KJV text, bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "data/hdf5.h"
#include "data/token_dataset.h"
#include "model/config.h"
#include "model/file_io.h"
#include "tests/test_util.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/losses.h"
#include "train/trainer.h"

namespace st {
namespace {

namespace fs = std::filesystem;

using test_util::FreshDir;

ModelConfig TestModel() {
  ModelConfig m = test_util::ShippedConfig("tiny");
  m.num_hidden_layers = 2;  // keep it quick; same layout pattern (NoPE-global, RoPE-sliding)
  m.rope_layout = {0, 1};
  m.sliding_window_layout = {0, 1};
  EXPECT_TRUE(ValidateModelConfig(m).ok());
  return m;
}

// A byte-level dataset directory from synthetic sentences (deterministic).
std::string SyntheticTokenFile(const std::string& dir) {
  const char* words[] = {"the", "lord",   "said", "unto",  "moses",  "and",   "behold", "land",
                         "of",  "israel", "went", "forth", "people", "house", "day"};
  std::mt19937 rng(42);
  std::string text;
  for (int line = 0; line < 2000; ++line) {
    const int n = 4 + rng() % 8;
    for (int w = 0; w < n; ++w) text += std::string(w ? " " : "") + words[rng() % 15];
    text += ".\n";
  }
  ByteTokenizer tok;
  SplitTokens split = TokenizeAndSplit(tok, text, 0.1);
  const std::string path = dir + "/tokens";
  EXPECT_TRUE(WriteTokenDataset(path, tok, split.train, split.val, /*shard_tokens=*/20000,
                                {{"synthetic", static_cast<int64_t>(text.size())}})
                  .ok());
  return path;
}

TrainerOptions BaseOptions(const std::string& data, const std::string& run_dir) {
  TrainerOptions o;
  o.model = TestModel();
  o.train.data = data;
  o.train.seq_len = 32;
  o.train.micro_batch_size = 4;
  o.train.grad_accum_steps = 2;
  o.train.max_steps = 12;
  o.train.warmup_steps = 3;
  o.train.lr = 2e-3;
  o.train.lbl_window = 3;
  o.train.z_loss_coef = 1e-3;
  o.train.log_interval = 4;
  o.train.eval_interval = 6;
  o.train.eval_batches = 2;
  o.train.checkpoint_interval = 0;
  o.train.threads = 1;
  o.run_dir = run_dir;
  o.quiet = true;
  return o;
}

TEST(CheckpointTest, SaveLoadRoundTripIsBitExact) {
  const std::string dir = FreshDir("ckpt_roundtrip");
  for (bool tied : {true, false}) {
    ModelConfig c = TestModel();
    c.tie_word_embeddings = tied;
    torch::manual_seed(1);
    SmallThinkerForCausalLM a(c);
    std::vector<std::pair<std::string, torch::Tensor>> named;
    for (const auto& it : a->named_parameters()) named.emplace_back(it.key(), it.value());
    AdamW opt(named, AdamWOptions{});
    for (auto& p : opt.params()) {  // non-trivial optimizer state
      p.exp_avg.normal_();
      p.exp_avg_sq.uniform_();
    }
    opt.set_step(17);
    CheckpointState s;
    s.step = 17;
    s.sampler = {99, 3, 41, 1, 4};
    s.lbl_history =
        torch::randint(0, 100, {2, c.num_hidden_layers, c.moe_num_primary_experts}, torch::kInt64);
    s.rng_cpu = torch::randint(0, 255, {64}, torch::kUInt8);
    s.model_config_json = c.ToJson();
    s.train_config_json = TrainConfig{}.ToJson();
    s.tokenizer = "bpe";
    s.tokenizer_json = std::string(100000, 'j');  // more than an HDF5 attribute holds
    const std::string path = dir + "/ckpt.h5";
    ASSERT_TRUE(SaveCheckpoint(path, a, &opt, s).ok());
    EXPECT_FALSE(fs::exists(TempPathFor(path)));

    torch::manual_seed(2);
    SmallThinkerForCausalLM b(c);
    std::vector<std::pair<std::string, torch::Tensor>> named_b;
    for (const auto& it : b->named_parameters()) named_b.emplace_back(it.key(), it.value());
    AdamW opt_b(named_b, AdamWOptions{});
    absl::Status st = LoadCheckpoint(path, b, &opt_b);
    ASSERT_TRUE(st.ok()) << st;
    auto pa = a->named_parameters(), pb = b->named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (const auto& it : pa) EXPECT_TRUE(torch::equal(it.value(), pb[it.key()])) << it.key();
    for (size_t i = 0; i < opt.params().size(); ++i) {
      EXPECT_TRUE(torch::equal(opt.params()[i].exp_avg, opt_b.params()[i].exp_avg));
      EXPECT_TRUE(torch::equal(opt.params()[i].exp_avg_sq, opt_b.params()[i].exp_avg_sq));
    }
    EXPECT_EQ(opt_b.step(), 17);
    auto rs = ReadCheckpointState(path);
    ASSERT_TRUE(rs.ok()) << rs.status();
    EXPECT_EQ(rs->step, 17);
    EXPECT_EQ(rs->sampler.seed, 99u);
    EXPECT_EQ(rs->sampler.epoch, 3);
    EXPECT_EQ(rs->sampler.cursor, 41);
    EXPECT_EQ(rs->sampler.rank, 1);
    EXPECT_EQ(rs->sampler.world, 4);
    EXPECT_EQ(rs->tokenizer_json, s.tokenizer_json);
    EXPECT_TRUE(torch::equal(rs->lbl_history, s.lbl_history));
    EXPECT_TRUE(torch::equal(rs->rng_cpu, s.rng_cpu));
    EXPECT_EQ(rs->model_config_json, s.model_config_json);
    EXPECT_EQ(rs->tokenizer, "bpe");
    // Parameters are stored under their Hugging Face names.
    auto f = H5File::Open(path);
    ASSERT_TRUE(f.ok());
    EXPECT_TRUE(f->Exists("/params/model.layers.1.block_sparse_moe.experts.3.down.weight"));
    EXPECT_EQ(f->Exists("/params/lm_head.weight"), !tied);
  }
}

TEST(CheckpointTest, WrongShapeAndNonCheckpointGiveClearErrors) {
  const std::string dir = FreshDir("ckpt_errors");
  ModelConfig c = TestModel();
  SmallThinkerForCausalLM a(c);
  CheckpointState s;
  s.model_config_json = c.ToJson();
  s.train_config_json = "{}";
  s.tokenizer = "byte";
  ASSERT_TRUE(SaveCheckpoint(dir + "/a.h5", a, nullptr, s).ok());
  ModelConfig bigger = c;
  bigger.hidden_size = 64;
  SmallThinkerForCausalLM b(bigger);
  absl::Status st = LoadCheckpoint(dir + "/a.h5", b, nullptr);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("different model config"), std::string::npos) << st;
  std::ofstream(dir + "/junk.h5") << "not hdf5";
  EXPECT_FALSE(ReadCheckpointState(dir + "/junk.h5").ok());
  EXPECT_FALSE(ReadCheckpointState(dir + "/missing.h5").ok());
}

// st-ckpt-merge's core: the weighted mean of every parameter (weights normalised), the history
// naming the inputs, a weights-only result, and clear refusals.
TEST(CheckpointTest, MergeIsTheWeightedMeanAndRecordsItsInputs) {
  const std::string dir = FreshDir("ckpt_merge");
  ModelConfig c = TestModel();
  CheckpointState s;
  s.model_config_json = c.ToJson();
  s.train_config_json = "{}";
  s.tokenizer = "byte";
  torch::manual_seed(1);
  SmallThinkerForCausalLM a(c);
  torch::manual_seed(2);
  SmallThinkerForCausalLM b(c);
  s.step = 10;
  ASSERT_TRUE(SaveCheckpoint(dir + "/a.h5", a, nullptr, s).ok());
  s.step = 20;
  ASSERT_TRUE(SaveCheckpoint(dir + "/b.h5", b, nullptr, s).ok());
  ASSERT_TRUE(MergeCheckpoints({{dir + "/a.h5", 3.0}, {dir + "/b.h5", 1.0}}, dir + "/m.h5").ok());
  SmallThinkerForCausalLM m(c);
  ASSERT_TRUE(LoadCheckpoint(dir + "/m.h5", m, nullptr).ok());
  auto pa = a->named_parameters(), pb = b->named_parameters();
  int64_t checked = 0;
  for (const auto& item : m->named_parameters()) {
    const torch::Tensor want = 0.75 * pa[item.key()] + 0.25 * pb[item.key()];
    ASSERT_TRUE(torch::allclose(item.value(), want, 1e-6, 1e-7)) << item.key();
    checked += item.value().numel();
  }
  EXPECT_EQ(checked, c.NumParams());
  auto ms = ReadCheckpointState(dir + "/m.h5");
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_NE(ms->history_json.find("\"event\":\"merge\""), std::string::npos) << ms->history_json;
  EXPECT_NE(ms->history_json.find("\"weight\":0.75"), std::string::npos) << ms->history_json;
  EXPECT_NE(ms->history_json.find("\"step\":20"), std::string::npos) << ms->history_json;
  // A merge of a merge keeps the first merge in its history.
  ASSERT_TRUE(MergeCheckpoints({{dir + "/m.h5", 1}, {dir + "/b.h5", 1}}, dir + "/m2.h5").ok());
  auto m2 = ReadCheckpointState(dir + "/m2.h5");
  ASSERT_TRUE(m2.ok());
  EXPECT_NE(m2->history_json.find("m.h5"), std::string::npos);
  EXPECT_NE(m2->history_json.find("a.h5"), std::string::npos);  // the first merge's inputs
  // Weights only: it cannot resume training.
  AdamW opt({}, AdamWOptions{});
  EXPECT_FALSE(LoadCheckpoint(dir + "/m.h5", m, &opt).ok());
  // Refusals.
  ModelConfig other = c;
  other.moe_ffn_hidden_size = 64;
  SmallThinkerForCausalLM o(other);
  s.model_config_json = other.ToJson();
  ASSERT_TRUE(SaveCheckpoint(dir + "/o.h5", o, nullptr, s).ok());
  absl::Status st = MergeCheckpoints({{dir + "/a.h5", 1}, {dir + "/o.h5", 1}}, dir + "/x.h5");
  EXPECT_NE(st.message().find("another model config"), std::string::npos) << st;
  st = MergeCheckpoints({{dir + "/a.h5", 1}, {dir + "/b.h5", -1}}, dir + "/x.h5");
  EXPECT_NE(st.message().find("sum to 0"), std::string::npos) << st;
  st = MergeCheckpoints({{dir + "/a.h5", 1}, {dir + "/b.h5", 1}}, dir + "/a.h5");
  EXPECT_NE(st.message().find("also an input"), std::string::npos) << st;
  EXPECT_FALSE(MergeCheckpoints({{dir + "/a.h5", 1}}, dir + "/x.h5").ok());
  EXPECT_FALSE(fs::exists(dir + "/x.h5"));
}

TEST(TrainerTest, InterruptedAndResumedRunMatchesUninterruptedRun) {
  const std::string dir = FreshDir("resume");
  const std::string data = SyntheticTokenFile(dir);
  std::vector<StepRecord> full;
  std::vector<torch::Tensor> full_params;
  {
    auto t = Trainer::Create(BaseOptions(data, dir + "/full"));
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Run().ok());
    full = (*t)->history();
    for (const auto& p : (*t)->model()->parameters()) full_params.push_back(p.detach().clone());
  }
  ASSERT_EQ(full.size(), 12u);
  {
    TrainerOptions o = BaseOptions(data, dir + "/split");
    o.stop_at_step = 5;  // not a multiple of anything in the cadence
    auto t = Trainer::Create(o);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Run().ok());
    ASSERT_EQ((*t)->history().size(), 5u);
    for (size_t i = 0; i < 5; ++i) EXPECT_EQ((*t)->history()[i].loss, full[i].loss);
  }
  // Scramble the global RNG, as a new process would have it.
  torch::manual_seed(987);
  TrainerOptions o = BaseOptions(data, dir + "/split");
  o.resume = true;
  o.model = ModelConfig{};  // comes from the checkpoint
  auto t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->step(), 5);
  ASSERT_TRUE((*t)->Run().ok());
  const auto& resumed = (*t)->history();
  ASSERT_EQ(resumed.size(), 7u);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].step, full[5 + i].step);
    EXPECT_EQ(resumed[i].loss, full[5 + i].loss) << "step " << resumed[i].step;
    EXPECT_EQ(resumed[i].lr, full[5 + i].lr);
  }
  // The final weights are identical too.
  auto params = (*t)->model()->parameters();
  ASSERT_EQ(params.size(), full_params.size());
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i], full_params[i]));
}

// Mixed precision: 200 steps of the test model in bf16 (autocast) against fp32 from the same
// initial weights and data. The bf16 run must learn (its last 50 losses well below its first)
// and stay within the noise of the fp32 curve: the mean of its last 50 losses within 2 standard
// deviations of the fp32 run's last 50 (their step-to-step spread). A bf16 path that broke the
// products (or dropped gradients) fails one or the other.
TEST(TrainerTest, Bf16LossCurveIsWithinTheNoiseOfFp32) {
  const std::string dir = FreshDir("bf16");
  const std::string data = SyntheticTokenFile(dir);
  std::vector<double> loss[2];
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    TrainerOptions o = BaseOptions(data, dir + (bf16 ? "/bf16" : "/fp32"));
    o.train.seq_len = 16;
    o.train.micro_batch_size = 2;
    o.train.grad_accum_steps = 1;
    o.train.max_steps = 200;
    o.train.warmup_steps = 10;
    o.train.eval_interval = 0;
    o.train.log_interval = 50;
    o.train.precision = bf16 ? "bf16" : "fp32";
    auto t = Trainer::Create(o);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Run().ok());
    for (const StepRecord& r : (*t)->history()) loss[bf16].push_back(r.loss);
  }
  ASSERT_EQ(loss[0].size(), 200u);
  ASSERT_EQ(loss[1].size(), 200u);
  auto mean = [](const std::vector<double>& v, size_t b, size_t e) {
    double s = 0;
    for (size_t i = b; i < e; ++i) s += v[i];
    return s / static_cast<double>(e - b);
  };
  const double fp32_tail = mean(loss[0], 150, 200), bf16_tail = mean(loss[1], 150, 200);
  double var = 0;
  for (size_t i = 150; i < 200; ++i) var += (loss[0][i] - fp32_tail) * (loss[0][i] - fp32_tail);
  const double sd = std::sqrt(var / 49.0);
  std::printf("fp32 last 50: %.4f (sd %.4f), bf16 last 50: %.4f, bf16 first 10: %.4f\n", fp32_tail,
              sd, bf16_tail, mean(loss[1], 0, 10));
  EXPECT_LT(bf16_tail, mean(loss[1], 0, 10) - 1.0) << "bf16 did not learn";
  EXPECT_LT(std::abs(bf16_tail - fp32_tail), 2.0 * sd);
  EXPECT_NE(loss[0][199], loss[1][199]);  // bf16 really ran in another precision
}

TEST(TrainerTest, RefusesToOverwriteAndExplainsResume) {
  const std::string dir = FreshDir("overwrite");
  const std::string data = SyntheticTokenFile(dir);
  TrainerOptions o = BaseOptions(data, dir + "/run");
  o.train.max_steps = 1;
  {
    auto t = Trainer::Create(o);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Run().ok());
  }
  auto again = Trainer::Create(o);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("--resume"), std::string::npos) << again.status();
  TrainerOptions r = BaseOptions(data, dir + "/empty");
  r.resume = true;
  auto none = Trainer::Create(r);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no checkpoint"), std::string::npos) << none.status();
}

TEST(TrainerTest, BadInputsGiveClearErrors) {
  const std::string dir = FreshDir("bad_inputs");
  const std::string data = SyntheticTokenFile(dir);
  {
    TrainerOptions o = BaseOptions(data, dir + "/vocab");
    o.model.vocab_size = 200;  // byte tokenizer needs 257
    o.model.eos_token_id = {};
    auto t = Trainer::Create(o);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("vocab_size"), std::string::npos) << t.status();
  }
  {
    TrainerOptions o = BaseOptions(dir + "/missing.h5", dir + "/nodata");
    auto t = Trainer::Create(o);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("missing.h5"), std::string::npos) << t.status();
  }
  {
    TrainerOptions o = BaseOptions(data, dir + "/seq");
    o.train.seq_len = 100000;
    auto t = Trainer::Create(o);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("max_position_embeddings"), std::string::npos);
  }
  if (!torch::cuda::is_available()) {
    auto cuda = ParseDevice("cuda");
    ASSERT_FALSE(cuda.ok());
    EXPECT_NE(cuda.status().message().find("no CUDA"), std::string::npos) << cuda.status();
  }
  EXPECT_FALSE(ParseDevice("gpu").ok());
  EXPECT_NE(ParseDevice("gpu").status().message().find("cpu, cuda"), std::string::npos);
  auto tc = ParseTrainConfig(R"({"seq_len": 64, "learning_rate": 0.1})");
  ASSERT_FALSE(tc.ok());
  EXPECT_NE(tc.status().message().find("learning_rate"), std::string::npos) << tc.status();
  auto tc2 = ParseTrainConfig(R"({"seq_len": "long"})");
  ASSERT_FALSE(tc2.ok());
  EXPECT_NE(tc2.status().message().find("seq_len"), std::string::npos) << tc2.status();
  auto tc3 = ParseTrainConfig(R"({"schedule": "linear"})");
  ASSERT_FALSE(tc3.ok());
  EXPECT_NE(tc3.status().message().find("schedule"), std::string::npos) << tc3.status();
  auto tc4 = ParseTrainConfig(R"({"precision": "fp16"})");
  ASSERT_FALSE(tc4.ok());
  EXPECT_NE(tc4.status().message().find("must be fp32 or bf16"), std::string::npos) << tc4.status();
  auto tc5 = ParseTrainConfig(R"({"grad_checkpoint": 1})");
  ASSERT_FALSE(tc5.ok());
  EXPECT_NE(tc5.status().message().find("must be true or false"), std::string::npos)
      << tc5.status();
  auto tc6 = ParseTrainConfig(R"({"grad_checkpoint": true, "precision": "bf16"})");
  ASSERT_TRUE(tc6.ok()) << tc6.status();
  EXPECT_TRUE(tc6->grad_checkpoint);
  EXPECT_EQ(tc6->precision, "bf16");
  EXPECT_TRUE(ParseTrainConfig(tc6->ToJson()).ok());  // written back as it reads
  for (const char* name : {"tiny", "small"}) {
    auto shipped = LoadTrainConfig(std::string(ST_SOURCE_DIR) + "/configs/train/" + name + ".json");
    EXPECT_TRUE(shipped.ok()) << shipped.status();
  }
}

// Unigram entropy (nats/token) of a token sequence: the loss of the best model that ignores
// context, computed directly from counts.
double UnigramEntropy(const TokenDataset& d) {
  std::vector<int32_t> ids(static_cast<size_t>(d.size()));
  EXPECT_TRUE(d.Read(0, d.size(), ids.data()).ok());
  std::map<int32_t, int64_t> counts;
  for (int32_t id : ids) counts[id]++;
  double h = 0;
  for (const auto& [id, n] : counts) {
    const double p = static_cast<double>(n) / d.size();
    h -= p * std::log(p);
  }
  return h;
}

TEST(TrainerTest, TinyModelLearnsTheKingJamesBible) {
  const std::string kjv = test_util::kKjvPath;
  const std::string text = test_util::FileContents(kjv);
  ASSERT_FALSE(text.empty()) << kjv << " is missing: run scripts/test.sh (or ctest, whose "
                             << "prepare_kjv_corpus fixture makes it; needs Debian's bible-kjv)";
  const std::string dir = FreshDir("kjv_learning");
  ByteTokenizer tok;
  SplitTokens split = TokenizeAndSplit(tok, text, 0.01);
  const std::string data = dir + "/kjv";
  ASSERT_TRUE(WriteTokenDataset(data, tok, split.train, split.val, /*shard_tokens=*/1 << 20,
                                {{kjv, static_cast<int64_t>(text.size())}})
                  .ok());
  auto cfg = LoadTrainConfig(std::string(ST_SOURCE_DIR) + "/configs/train/tiny.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TrainerOptions o;
  o.train = *cfg;
  o.train.data = data;
  o.train.max_steps = 300;
  o.train.warmup_steps = 20;
  o.train.threads = 1;
  o.train.checkpoint_interval = 0;
  o.train.eval_interval = 0;
  o.model = test_util::ShippedConfig("tiny");
  o.run_dir = dir + "/run";
  o.quiet = true;
  auto t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  auto train_data = TokenDataset::Open(data, "train");
  ASSERT_TRUE(train_data.ok());
  const double unigram = UnigramEntropy(*train_data);
  const double before = (*t)->Evaluate();
  ASSERT_TRUE((*t)->Run().ok());
  const double after = (*t)->Evaluate();
  std::printf("unigram entropy %.3f nats, val loss %.3f -> %.3f after 300 steps\n", unigram, before,
              after);
  // Untrained (N(0, 0.02) weights), the model predicts almost uniformly over its vocabulary: a
  // broken initialisation, loss or evaluation moves this away from log V.
  EXPECT_NEAR(before, std::log(static_cast<double>(o.model.vocab_size)), 0.05);
  EXPECT_LT(after, 0.75 * unigram);  // and 300 steps take it well below counting bytes
}

// The DP-group load-balance loss on 4 ranks (threads of this process, Gloo over loopback,
// rendezvous through a FileStore): with groups of 1, 2 and 4 ranks every rank's loss equals
// E * sum_i f_i * p_i computed here in one process, with f_i pooled over the ranks of its group.
TEST(DistributedTest, LoadBalanceLossOverGroupsMatchesOneProcess) {
  constexpr int kWorld = 4, L = 2, E = 4, T = 6;
  // Every rank's routing counts and router probabilities, fixed up front.
  std::vector<torch::Tensor> counts(kWorld), probs(kWorld);
  torch::manual_seed(7);
  for (int r = 0; r < kWorld; ++r) {
    counts[r] = torch::randint(0, 20, {L, E}, torch::kInt64);
    probs[r] = torch::softmax(torch::randn({L, T, E}), -1);
  }
  for (int group : {1, 2, 4}) {
    SCOPED_TRACE("lbl_group_size " + std::to_string(group));
    const std::string store = test_util::TestDir() + "/lbl_store_" + std::to_string(group);
    std::remove(store.c_str());
    std::vector<double> got(kWorld * L, -1.0);
    std::vector<std::string> errors(kWorld);
    std::vector<std::thread> ranks;
    for (int r = 0; r < kWorld; ++r) {
      ranks.emplace_back([&, r] {
        DistOptions o;
        o.rank = r;
        o.world = kWorld;
        o.store_file = store;
        o.lbl_group_size = group;
        o.timeout_s = 60;
        auto d = Distributed::Create(o);
        if (!d.ok()) {
          errors[r] = std::string(d.status().message());
          return;
        }
        Distributed* dist = d->get();
        LoadBalancePool pool(L, E, /*window=*/1, [dist](const torch::Tensor& c) {
          torch::Tensor x = c.clone();
          dist->AllReduceSumLblGroup(x);
          return x;
        });
        const torch::Tensor f = pool.Push(counts[r]);
        for (int l = 0; l < L; ++l) {
          got[r * L + l] = LoadBalanceLoss(probs[r][l], f[l]).item<double>();
        }
        dist->Barrier();
      });
    }
    for (std::thread& t : ranks) t.join();
    for (int r = 0; r < kWorld; ++r) ASSERT_EQ(errors[r], "") << "rank " << r;
    for (int r = 0; r < kWorld; ++r) {
      const int g0 = r / group * group;
      torch::Tensor sum = torch::zeros({L, E}, torch::kFloat64);
      for (int q = g0; q < g0 + group; ++q) sum += counts[q].to(torch::kFloat64);
      for (int l = 0; l < L; ++l) {
        const torch::Tensor f = sum[l] / sum[l].sum();
        const double want = E * (f * probs[r][l].to(torch::kFloat64).mean(0)).sum().item<double>();
        EXPECT_NEAR(got[r * L + l], want, 1e-5) << "rank " << r << " layer " << l;
      }
    }
    std::remove(store.c_str());
  }
}

TEST(DistributedTest, BadLaunchSettingsGiveClearErrors) {
  DistOptions o;
  o.world = 2;
  o.rank = 2;
  EXPECT_NE(ValidateDistOptions(o).message().find("outside [0, 2)"), std::string::npos);
  o.rank = 0;
  o.lbl_group_size = 3;
  EXPECT_NE(ValidateDistOptions(o).message().find("must divide the world size 2"),
            std::string::npos);
  o.lbl_group_size = 0;
  o.timeout_s = 0;
  EXPECT_FALSE(ValidateDistOptions(o).ok());
  // The environment of torchrun, then Slurm's when torchrun's is absent.
  DistOptions e;
  ::setenv("SLURM_PROCID", "3", 1);
  ::setenv("SLURM_NTASKS", "4", 1);
  ::setenv("MASTER_PORT", "29999", 1);
  ASSERT_TRUE(DistOptionsFromEnv(&e, false, false, false, false).ok());
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world, 4);
  EXPECT_EQ(e.master_port, 29999);
  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  DistOptions t;
  t.rank = 0;
  ASSERT_TRUE(DistOptionsFromEnv(&t, /*explicit_rank=*/true, false, false, false).ok());
  EXPECT_EQ(t.rank, 0);  // a flag wins over the environment
  EXPECT_EQ(t.world, 2);
  ::setenv("WORLD_SIZE", "two", 1);
  EXPECT_FALSE(DistOptionsFromEnv(&t, false, false, false, false).ok());
  for (const char* v : {"SLURM_PROCID", "SLURM_NTASKS", "MASTER_PORT", "RANK", "WORLD_SIZE"}) {
    ::unsetenv(v);
  }
}

}  // namespace
}  // namespace st
