// st-data: tokenizes a text corpus into a token file (train/val splits) for the trainer, and
// prints a summary with the unigram entropy of the train split as a baseline loss.
#include <gflags/gflags.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "data/token_dataset.h"
#include "data/tokenizer.h"

DEFINE_string(input, "", "UTF-8 text file to tokenize (required)");
DEFINE_string(output, "", "token file (HDF5) to write (required)");
DEFINE_string(tokenizer, "byte", "tokenizer name (known: byte)");
DEFINE_double(val_fraction, 0.01,
              "fraction of the text, taken from the end at a line break, for validation; "
              "in [0, 0.5]");
DEFINE_string(source, "",
              "free text stored in the file: where the text came from "
              "(default: the input path)");

namespace {

// Unigram entropy of `ids` in nats per token (the loss of the best context-free model).
double UnigramEntropyNats(const std::vector<int32_t>& ids, int vocab_size) {
  if (ids.empty()) return 0.0;
  std::vector<int64_t> counts(static_cast<size_t>(vocab_size), 0);
  for (int32_t id : ids) ++counts[static_cast<size_t>(id)];
  const double n = static_cast<double>(ids.size());
  double h = 0.0;
  for (int64_t c : counts) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / n;
    h -= p * std::log(p);
  }
  return h;
}

int Run() {
  std::ifstream in(FLAGS_input, std::ios::binary);
  if (!in) {
    std::cerr << "st-data: cannot open --input '" << FLAGS_input << "': " << std::strerror(errno)
              << "\n";
    return 1;
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    std::cerr << "st-data: error reading '" << FLAGS_input << "'\n";
    return 1;
  }
  const std::string text = buf.str();
  if (text.empty()) {
    std::cerr << "st-data: --input '" << FLAGS_input << "' is empty; nothing to tokenize\n";
    return 1;
  }

  auto tok = st::MakeTokenizer(FLAGS_tokenizer);
  if (!tok.ok()) {
    std::cerr << "st-data: --tokenizer: " << tok.status().message() << "\n";
    return 2;
  }

  const auto t0 = std::chrono::steady_clock::now();
  st::SplitTokens split = st::TokenizeAndSplit(**tok, text, FLAGS_val_fraction);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  st::TokenFileMeta meta;
  meta.tokenizer = (*tok)->name();
  meta.vocab_size = (*tok)->vocab_size();
  meta.eos_id = (*tok)->eos_id();
  meta.source = FLAGS_source.empty() ? FLAGS_input : FLAGS_source;
  absl::Status s = st::WriteTokenFile(FLAGS_output, meta, split.train, split.val);
  if (!s.ok()) {
    std::cerr << "st-data: " << s.message() << "\n";
    return 1;
  }

  const int64_t total = static_cast<int64_t>(split.train.size() + split.val.size());
  const double nats = UnigramEntropyNats(split.train, meta.vocab_size);
  std::printf("st-data: read %zu bytes from %s\n", text.size(), FLAGS_input.c_str());
  std::printf("tokenizer: %s (vocab_size %d, eos_id %d)\n", meta.tokenizer.c_str(), meta.vocab_size,
              meta.eos_id);
  std::printf("train: %zu tokens, val: %zu tokens (%.2f%% val)\n", split.train.size(),
              split.val.size(), total > 0 ? 100.0 * split.val.size() / total : 0.0);
  std::printf("tokenized %lld tokens in %.3f s (%.1f M tokens/s)\n", static_cast<long long>(total),
              secs, secs > 0 ? total / secs / 1e6 : 0.0);
  std::printf("train unigram entropy: %.4f bits/token = %.4f nats/token\n", nats / std::log(2.0),
              nats);
  std::printf("wrote %s\n", FLAGS_output.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "tokenizes a text corpus into a token file for training\n"
      "usage: st-data --input corpus.txt --output tokens.h5 [--tokenizer byte] "
      "[--val_fraction 0.01] [--source \"...\"]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_input.empty()) {
    std::cerr << "st-data: --input is required (the text file to tokenize); see --help\n";
    return 2;
  }
  if (FLAGS_output.empty()) {
    std::cerr << "st-data: --output is required (the token file to write); see --help\n";
    return 2;
  }
  if (!(FLAGS_val_fraction >= 0.0 && FLAGS_val_fraction <= 0.5)) {
    std::cerr << "st-data: --val_fraction must be in [0, 0.5], got " << FLAGS_val_fraction << "\n";
    return 2;
  }
  if (argc > 1) {
    std::cerr << "st-data: unexpected argument '" << argv[1] << "'; all options are flags\n";
    return 2;
  }
  return Run();
}
