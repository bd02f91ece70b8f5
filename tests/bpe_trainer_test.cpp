// Tests of BPE training (TrainBpe, BpeWordCounter): the tokenizer.json it writes loads in
// BpeTokenizer, has the requested vocabulary, learns frequent words, and is deterministic.
#include "infer/tokenizer/bpe_trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "infer/tokenizer/bpe.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace st {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// The KJV corpus (a ctest fixture writes it), one verse a line.
std::string ReadKjv() {
  std::string text = test_util::FileContents(test_util::kKjvPath);
  EXPECT_FALSE(text.empty()) << "missing " << test_util::kKjvPath
                             << " (the prepare_kjv_corpus ctest fixture makes it)";
  return text;
}

// Lines of text[begin, end), each one a document (lines keep their '\n').
std::vector<std::string> Lines(const std::string& text, size_t begin, size_t end) {
  std::vector<std::string> docs;
  end = std::min(end, text.size());
  while (begin < end) {
    size_t nl = text.find('\n', begin);
    nl = nl == std::string::npos || nl >= end ? end : nl + 1;
    docs.push_back(text.substr(begin, nl - begin));
    begin = nl;
  }
  return docs;
}

// A few KB of generated English-like text (deterministic).
std::vector<std::string> GeneratedCorpus() {
  const std::vector<std::string> words = {
      "the",     "quick", "brown",   "fox",     "jumps",    "over",   "lazy",      "dog",
      "and",     "then",  "runs",    "away",    "from",     "hunter", "who",       "was",
      "waiting", "in",    "forest",  "near",    "river",    "bank",   "while",     "birds",
      "sang",    "their", "morning", "songs",   "children", "played", "games",     "outside",
      "school",  "house", "garden",  "flowers", "bloomed",  "spring", "tokenizer", "learns"};
  std::vector<std::string> docs;
  uint32_t state = 12345;
  auto next = [&state]() {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  };
  for (int d = 0; d < 60; ++d) {
    std::string doc;
    const int n = 10 + static_cast<int>(next() % 20);
    for (int i = 0; i < n; ++i) {
      std::string w = words[next() % words.size()];
      if (i == 0) w[0] = static_cast<char>(w[0] - 'a' + 'A');
      if (i > 0) doc += ' ';
      doc += w;
      if (next() % 9 == 0) doc += ',';
    }
    doc += ". It costs " + std::to_string(next() % 1000) + " coins.\n";
    docs.push_back(doc);
  }
  return docs;
}

std::unique_ptr<BpeTokenizer> Load(const std::string& json) {
  auto tok = BpeTokenizer::FromJson(json);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

std::string MustTrain(const std::vector<std::string>& texts, const BpeTrainOptions& opt) {
  auto json = TrainBpe(texts, opt);
  EXPECT_TRUE(json.ok()) << json.status();
  return json.ok() ? *json : "";
}

BpeTrainOptions Options(int vocab_size) {
  BpeTrainOptions opt;
  opt.vocab_size = vocab_size;
  return opt;
}

// Shared trainings on the first MiB of KJV (each takes well under a second, but several tests
// use them).
const std::string& KjvJson(int vocab_size) {
  static auto* cache = new std::map<int, std::string>();
  auto it = cache->find(vocab_size);
  if (it == cache->end()) {
    const std::string kjv = ReadKjv();
    it = cache->emplace(vocab_size, MustTrain(Lines(kjv, 0, kMiB), Options(vocab_size))).first;
  }
  return it->second;
}

TEST(BpeTrainerTest, SmallCorpusGivesLoadableTokenizerOfTheRequestedSize) {
  const std::string json = MustTrain(GeneratedCorpus(), Options(320));
  auto tok = Load(json);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 320);
  EXPECT_EQ(tok->name(), "bpe");
  // The most frequent words of the corpus (once in every document) became tokens.
  EXPECT_EQ(tok->Encode(" coins").size(), 1u);
  EXPECT_EQ(tok->Encode(" costs").size(), 1u);
}

TEST(BpeTrainerTest, WritesHuggingFaceShape) {
  const std::string text = MustTrain(GeneratedCorpus(), Options(300));
  const auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["version"], "1.0");
  EXPECT_EQ(j["normalizer"]["type"], "NFC");
  EXPECT_EQ(j["pre_tokenizer"]["type"], "Sequence");
  const auto& pre = j["pre_tokenizer"]["pretokenizers"];
  ASSERT_EQ(pre.size(), 2u);
  EXPECT_EQ(pre[0]["type"], "Split");
  EXPECT_EQ(pre[0]["pattern"]["Regex"], std::string(kQwen2Pattern));
  EXPECT_EQ(pre[0]["behavior"], "Isolated");
  EXPECT_EQ(pre[1]["type"], "ByteLevel");
  EXPECT_EQ(pre[1]["use_regex"], false);
  EXPECT_EQ(j["decoder"]["type"], "ByteLevel");
  const auto& model = j["model"];
  EXPECT_EQ(model["type"], "BPE");
  EXPECT_TRUE(model["dropout"].is_null());
  EXPECT_EQ(model["byte_fallback"], false);
  EXPECT_EQ(model["ignore_merges"], false);
  // Every merge adds one token here, and each merge is a pair of tokens of the vocabulary.
  EXPECT_EQ(model["vocab"].size() + j["added_tokens"].size(), 300u);
  EXPECT_EQ(model["merges"].size(), model["vocab"].size() - 256);
  for (const auto& m : model["merges"]) {
    ASSERT_EQ(m.size(), 2u);
    EXPECT_TRUE(model["vocab"].contains(m[0].get<std::string>())) << m;
    EXPECT_TRUE(model["vocab"].contains(m[1].get<std::string>())) << m;
    EXPECT_TRUE(model["vocab"].contains(m[0].get<std::string>() + m[1].get<std::string>())) << m;
  }
  for (const auto& t : j["added_tokens"]) {
    EXPECT_EQ(t["special"], true);
    EXPECT_EQ(t["normalized"], false);
  }
}

TEST(BpeTrainerTest, AllByteTokensComeFirst) {
  auto tok = Load(MustTrain(GeneratedCorpus(), Options(300)));
  ASSERT_NE(tok, nullptr);
  std::set<int> ids;
  for (int b = 0; b < 256; ++b) {
    const int id = tok->TokenId(BytesToByteLevel(std::string(1, static_cast<char>(b))));
    EXPECT_GE(id, 0) << "byte " << b;
    EXPECT_LT(id, 256) << "byte " << b;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 256u);
  // GPT-2's byte-to-unicode order (as Qwen2's vocabulary): '!' is 0, space (U+0120) is 220.
  EXPECT_EQ(tok->TokenId("!"), 0);
  EXPECT_EQ(tok->TokenId(BytesToByteLevel(" ")), 220);
}

TEST(BpeTrainerTest, SpecialTokensGetTheLastIdsAndMatchInRunningText) {
  auto tok = Load(MustTrain(GeneratedCorpus(), Options(320)));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->TokenId("<|endoftext|>"), 317);
  EXPECT_EQ(tok->TokenId("<|im_start|>"), 318);
  EXPECT_EQ(tok->TokenId("<|im_end|>"), 319);
  EXPECT_EQ(tok->eos_id(), 317);
  const std::string text = "<|im_start|>user\nThe fox<|im_end|>\nruns<|endoftext|>";
  const std::vector<int32_t> ids = tok->Encode(text);
  EXPECT_EQ(ids.front(), 318);
  EXPECT_EQ(ids.back(), 317);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 319), 1);
  EXPECT_EQ(tok->Decode(ids), text);
}

TEST(BpeTrainerTest, SpecialTokensInTrainingTextAreNotLearned) {
  // "<|endoftext|>" between every document: left unsplit, its pieces "<|", "endoftext" and "|>"
  // would be the most frequent words.
  std::vector<std::string> docs = GeneratedCorpus();
  for (std::string& d : docs) d += "<|endoftext|>";
  auto tok = Load(MustTrain(docs, Options(400)));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->TokenId("<|"), -1);
  EXPECT_EQ(tok->TokenId("endoftext"), -1);
  EXPECT_EQ(tok->TokenId("|>"), -1);
  // The streaming counter with other special tokens.
  BpeWordCounter counter({"[SEP]"});
  for (int i = 0; i < 50; ++i) counter.Add("alpha[SEP]beta[SEP]");
  BpeTrainOptions opt = Options(300);
  opt.special_tokens = {"[SEP]"};
  auto json = counter.Train(opt);
  ASSERT_TRUE(json.ok()) << json.status();
  auto tok2 = Load(*json);
  ASSERT_NE(tok2, nullptr);
  EXPECT_EQ(tok2->TokenId("SEP"), -1);
  EXPECT_NE(tok2->TokenId("alpha"), -1);
  EXPECT_EQ(tok2->Encode("alpha[SEP]").size(), 2u);
}

TEST(BpeTrainerTest, RoundTripsTextNeverSeenInTraining) {
  auto tok = Load(MustTrain(GeneratedCorpus(), Options(320)));
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> texts = {
      "The quick brown fox.",
      "你好，世界！日本語のテキスト。",
      "Emoji: 😀🎉👍🏽 and 🏳️‍🌈 flags",
      "Привет, мир! Ελληνικά γράμματα",
      "code: for (int i = 0; i < n; ++i) { x[i] *= 2; }\n\ttabs\r\n  \n",
      "numbers 3.14159 1,000,000 0x7fff",
      "   leading and trailing spaces   ",
      "",
  };
  for (const std::string& s : texts) {
    const std::vector<int32_t> ids = tok->Encode(s);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tok->vocab_size());
    }
    EXPECT_EQ(tok->Decode(ids), s);
  }
}

TEST(BpeTrainerTest, StopsEarlyWhenNoPairIsFrequentEnough) {
  // Two distinct characters, once each in a word: no pair reaches min_frequency 2, so nothing
  // is merged and the vocabulary is the byte tokens plus the special tokens.
  auto json = TrainBpe({"ab"}, Options(4096));
  ASSERT_TRUE(json.ok()) << json.status();
  auto tok = Load(*json);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 256 + 3);
  // "ab ab ab": words "ab" once and " ab" twice; merges (a,b) (3 times), then (Ġ,ab) (twice),
  // then no pair is left.
  BpeTrainOptions opt = Options(4096);
  opt.min_frequency = 2;
  auto tok2 = Load(MustTrain({"ab ab ab"}, opt));
  ASSERT_NE(tok2, nullptr);
  EXPECT_EQ(tok2->vocab_size(), 256 + 3 + 2) << "expected the merges ab and Ġab";
  EXPECT_EQ(tok2->Encode(" ab").size(), 1u);
}

TEST(BpeTrainerTest, RejectsBadOptionsAndEmptyInput) {
  auto small = TrainBpe(GeneratedCorpus(), Options(100));
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(small.status().message().find("vocab_size 100 is too small"), std::string::npos)
      << small.status();
  EXPECT_NE(small.status().message().find("at least 259"), std::string::npos) << small.status();

  for (const std::vector<std::string>& texts :
       {std::vector<std::string>{}, std::vector<std::string>{"", ""}}) {
    auto empty = TrainBpe(texts, Options(300));
    ASSERT_FALSE(empty.ok());
    EXPECT_NE(empty.status().message().find("input is empty"), std::string::npos) << empty.status();
  }
  BpeWordCounter counter;
  EXPECT_FALSE(counter.Train(Options(300)).ok());

  BpeTrainOptions dup = Options(300);
  dup.special_tokens = {"<|a|>", "<|a|>"};
  auto d = TrainBpe(GeneratedCorpus(), dup);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("given twice"), std::string::npos) << d.status();

  BpeTrainOptions freq = Options(300);
  freq.min_frequency = 0;
  EXPECT_FALSE(TrainBpe(GeneratedCorpus(), freq).ok());

  BpeTrainOptions clash = Options(300);
  clash.special_tokens = {"a"};  // the byte token of 'a'
  auto c = TrainBpe(GeneratedCorpus(), clash);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("special token 'a'"), std::string::npos) << c.status();
}

TEST(BpeTrainerTest, IsDeterministicAndCounterMatchesTrainBpe) {
  const std::vector<std::string> docs = GeneratedCorpus();
  const std::string a = MustTrain(docs, Options(350));
  const std::string b = MustTrain(docs, Options(350));
  EXPECT_EQ(a, b);
  BpeWordCounter counter;
  for (const std::string& d : docs) counter.Add(d);
  int64_t total = 0;
  for (const std::string& d : docs) total += static_cast<int64_t>(d.size());
  EXPECT_EQ(counter.bytes(), total);
  auto c = counter.Train(Options(350));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, a);
}

TEST(BpeTrainerKjvTest, LearnsFrequentWordsAsSingleTokens) {
  auto tok = Load(KjvJson(2048));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 2048);
  for (const char* word : {" the", " LORD", " and", " unto", " God"}) {
    EXPECT_EQ(tok->Encode(word).size(), 1u) << "'" << word << "'";
  }
  EXPECT_NE(tok->TokenId(BytesToByteLevel(" LORD")), -1);
  EXPECT_EQ(KjvJson(2048), MustTrain(Lines(ReadKjv(), 0, kMiB), Options(2048)))
      << "training is not deterministic";
}

TEST(BpeTrainerKjvTest, LargerVocabularyCompressesHeldOutTextBetter) {
  const std::string kjv = ReadKjv();
  ASSERT_GT(kjv.size(), static_cast<size_t>(kMiB + 200000));
  // Held out: text after the training MiB, cut at a line end.
  const size_t begin = kjv.find('\n', kMiB) + 1;
  const std::string held_out = kjv.substr(begin, kjv.find('\n', begin + 200000) - begin + 1);
  double bytes_per_token[2];
  int i = 0;
  for (int vocab : {512, 2048}) {
    auto tok = Load(KjvJson(vocab));
    ASSERT_NE(tok, nullptr);
    const std::vector<int32_t> ids = tok->Encode(held_out);
    EXPECT_EQ(tok->Decode(ids), held_out);
    bytes_per_token[i++] = static_cast<double>(held_out.size()) / ids.size();
    std::printf("[ info ] KJV vocab %d: %.3f bytes per token on %zu held-out bytes\n", vocab,
                bytes_per_token[i - 1], held_out.size());
  }
  // Measured: 2.39 and 3.50 bytes per token.
  EXPECT_GT(bytes_per_token[0], 2.0);
  EXPECT_GT(bytes_per_token[1], bytes_per_token[0] * 1.3);
}

TEST(BpeTrainerKjvTest, Trains4096On4MiBQuicklyWithProgress) {
  const std::string kjv = ReadKjv();
  const std::vector<std::string> docs = Lines(kjv, 0, 4 * kMiB);
  int64_t input_bytes = 0;
  for (const std::string& d : docs) input_bytes += static_cast<int64_t>(d.size());
  std::vector<std::pair<int64_t, int>> calls;
  BpeTrainOptions opt = Options(4096);
  opt.progress = [&calls](int64_t bytes, int merges) { calls.emplace_back(bytes, merges); };
  const auto t0 = std::chrono::steady_clock::now();
  const std::string json = MustTrain(docs, opt);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "[ info ] BPE training: vocab 4096 on %.2f MB of KJV in %.2f s (%zu progress calls)\n",
      input_bytes / 1e6, seconds, calls.size());
  auto tok = Load(json);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 4096);
  // Reading reports about every MiB, learning every 100 merges, and the last call has it all.
  ASSERT_GE(calls.size(), 3u + 30u);
  EXPECT_EQ(calls.front().second, 0);
  EXPECT_GE(calls.front().first, kMiB);
  EXPECT_EQ(calls.back().first, input_bytes);
  EXPECT_EQ(calls.back().second, 4096 - 256 - 3);
  for (size_t k = 1; k < calls.size(); ++k) {
    EXPECT_GE(calls[k].first, calls[k - 1].first);
    EXPECT_GE(calls[k].second, calls[k - 1].second);
  }
}

}  // namespace
}  // namespace st
