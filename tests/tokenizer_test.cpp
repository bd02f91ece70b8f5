// Tests of the tokenizer library: BPE golden ids against Hugging Face on the real Qwen vocabulary,
// round trips, special tokens, invalid UTF-8, rejection of other tokenizers, streaming decode.
#include "infer/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "infer/tokenizer/bpe.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace st {
namespace {

using json = nlohmann::json;

const char kQwenPath[] = ST_BINARY_DIR "/tokenizers/qwen3/tokenizer.json";
const char kGoldenPath[] = ST_SOURCE_DIR "/tests/data/qwen_golden.json";

using test_util::FileContents;
using test_util::kKjvPath;

// True when `s` is valid UTF-8 (sanitizing leaves it as it is).
bool ValidUtf8(const std::string& s) { return SanitizeUtf8(s) == s; }

// ---- a small synthetic byte-level BPE, independent of any download

// All 256 byte tokens (ids 0..255 in mapped-code-point order) plus merges of the given pairs.
json SmallTokenizerJson(const std::vector<std::pair<std::string, std::string>>& merges,
                        bool merges_as_strings) {
  json vocab = json::object();
  int next = 0;
  for (int b = 0; b < 256; ++b)
    vocab[BytesToByteLevel(std::string(1, static_cast<char>(b)))] = next++;
  json m = json::array();
  for (const auto& [a, b] : merges) {
    const std::string la = BytesToByteLevel(a), lb = BytesToByteLevel(b);
    if (!vocab.contains(la + lb)) vocab[la + lb] = next++;
    if (merges_as_strings) {
      m.push_back(la + " " + lb);
    } else {
      m.push_back(json::array({la, lb}));
    }
  }
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = json::array({{{"id", next},
                                    {"content", "<|endoftext|>"},
                                    {"single_word", false},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", false},
                                    {"special", true}}});
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "Split"},
                                      {"pattern", {{"Regex", std::string(kQwen2Pattern)}}},
                                      {"behavior", "Isolated"},
                                      {"invert", false}},
                                     {{"type", "ByteLevel"},
                                      {"add_prefix_space", false},
                                      {"trim_offsets", false},
                                      {"use_regex", false}}})}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", false},
                  {"trim_offsets", false},
                  {"use_regex", false}};
  json& model = j["model"];
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = "";
  model["end_of_word_suffix"] = "";
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  model["vocab"] = vocab;
  model["merges"] = m;
  return j;
}

std::unique_ptr<BpeTokenizer> MustLoad(const std::string& text) {
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::FromJson(text);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

// ---- byte-level mapping, UTF-8 helpers, pre-tokenizer

TEST(BpeByteLevel, MapsEveryByteAndBack) {
  EXPECT_EQ(BytesToByteLevel(" "), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(BytesToByteLevel("\n"), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(BytesToByteLevel("az~"), "az~");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string back;
  ASSERT_TRUE(ByteLevelToBytes(BytesToByteLevel(all), &back));
  EXPECT_EQ(back, all);
  std::string junk;
  EXPECT_FALSE(ByteLevelToBytes(" ", &junk));             // a space is not a mapped code point
  EXPECT_FALSE(ByteLevelToBytes("\xE4\xB8\xAD", &junk));  // nor is U+4E2D
}

TEST(TokenizerUtf8, SanitizeReplacesMaximalInvalidSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(SanitizeUtf8("abc"), "abc");
  EXPECT_EQ(SanitizeUtf8("a\x80z"), "a" + r + "z");  // lone continuation
  EXPECT_EQ(SanitizeUtf8("\xE4\xB8"), r);            // truncated 3-byte
  EXPECT_EQ(SanitizeUtf8("\xE4\xB8x"), r + "x");
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98"), r);                  // truncated 4-byte
  EXPECT_EQ(SanitizeUtf8("\xC0\x80"), r + r);                  // overlong NUL
  EXPECT_EQ(SanitizeUtf8("\xE0\x80\xAF"), r + r + r);          // overlong '/'
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(SanitizeUtf8("\xFF\xFE"), r + r);
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // valid emoji
}

TEST(TokenizerUtf8, NormalizeNfcComposes) {
  EXPECT_EQ(NormalizeNfc("Cafe\xCC\x81"), "Caf\xC3\xA9");
  EXPECT_EQ(NormalizeNfc("\xE2\x84\xAB"), "\xC3\x85");  // Angstrom sign -> A with ring
  EXPECT_EQ(NormalizeNfc("plain ascii"), "plain ascii");
}

TEST(BpePreTokenizer, SplitsLikeQwen2) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> p = PreTokenizer::Create(kQwen2Pattern);
  ASSERT_TRUE(p.ok()) << p.status();
  auto split = [&](const std::string& s) {
    std::vector<absl::string_view> out;
    (*p)->Split(s, &out);
    return std::vector<std::string>(out.begin(), out.end());
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(split("don't I'LL"), (V{"don", "'t", " I", "'LL"}));
  EXPECT_EQ(split("x123"), (V{"x", "1", "2", "3"}));
  EXPECT_EQ(split("hi!!\n\nyo"), (V{"hi", "!!\n\n", "yo"}));
  EXPECT_EQ(split("a \n\n b"), (V{"a", " \n\n", " b"}));
  EXPECT_EQ(split("end   "), (V{"end", "   "}));
  EXPECT_EQ(split(""), V{});
  // \s is Unicode White_Space, as in Oniguruma: U+00A0 is, U+180E is not (PCRE2 alone says it is).
  EXPECT_EQ(split("a\xC2\xA0\xC2\xA0\xE1\xA0\x8Ex"),
            (V{"a", "\xC2\xA0", "\xC2\xA0", "\xE1\xA0\x8Ex"}));
  EXPECT_EQ(split("x\xE3\x80\x80\xE3\x80\x80y"), (V{"x", "\xE3\x80\x80", "\xE3\x80\x80y"}));
  EXPECT_FALSE(PreTokenizer::Create("(unclosed").ok());
}

// ---- the synthetic tokenizer

TEST(BpeSmall, MergesByRankAndRoundTrips) {
  // "l o" before "lo w" before "h e"; "e l" would compete with "l o" for "hello".
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"l", "o"}, {"lo", "w"}, {"h", "e"}, {"e", "l"}, {"l", "l"}, {" ", "low"}};
  for (bool as_strings : {true, false}) {
    std::unique_ptr<BpeTokenizer> tok = MustLoad(SmallTokenizerJson(merges, as_strings).dump());
    ASSERT_NE(tok, nullptr);
    const int lo = tok->TokenId("lo"), he = tok->TokenId("he"), l = tok->TokenId("l");
    ASSERT_GE(lo, 256);
    // "hello": l-o (rank 0) first -> h e l lo; then h-e (rank 2) -> he l lo; "l lo" has no merge.
    EXPECT_EQ(tok->Encode("hello"), (std::vector<int32_t>{he, l, lo}));
    EXPECT_EQ(tok->Encode(" low"), (std::vector<int32_t>{tok->TokenId(" low")}));
    EXPECT_EQ(tok->TokenId("\xC4\xA0low"), tok->TokenId(" low"));  // byte-level form too
    const std::string text = "hello low, yellow <|endoftext|>\xE4\xB8\xAD\xF0\x9F\x98\x80";
    EXPECT_EQ(tok->Decode(tok->Encode(text)), text);
    EXPECT_EQ(tok->eos_id(), tok->vocab_size() - 1);
    EXPECT_EQ(tok->Encode("a<|endoftext|>b").at(1), tok->eos_id());
    EXPECT_EQ(tok->Decode({-1, tok->vocab_size()}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  }
}

TEST(BpeSmall, RejectsUnsupportedComponentsByName) {
  const json base = SmallTokenizerJson({{"a", "b"}}, true);
  auto expect_error = [&](json j, const std::string& name) {
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::FromJson(j.dump());
    ASSERT_FALSE(t.ok()) << "accepted a tokenizer with " << name;
    EXPECT_NE(std::string(t.status().message()).find(name), std::string::npos)
        << t.status().message();
  };
  json j = base;
  j["model"]["type"] = "WordPiece";
  expect_error(j, "WordPiece");
  j = base;
  j["model"] = {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", json::array({{"a", -1.0}})}};
  expect_error(j, "Unigram");
  j = base;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  expect_error(j, "Metaspace");
  j = base;
  j["pre_tokenizer"]["pretokenizers"][0]["type"] = "Whitespace";
  expect_error(j, "Whitespace");
  j = base;
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error(j, "Lowercase");
  j = base;
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, "decoder 'WordPiece'");
  j = base;
  j["post_processor"] = {{"type", "TemplateProcessing"}};
  expect_error(j, "TemplateProcessing");
  j = base;
  j["model"]["byte_fallback"] = true;
  expect_error(j, "byte_fallback");
  j = base;
  j["model"]["merges"].push_back("zz qq");
  expect_error(j, "missing from model.vocab");
  EXPECT_FALSE(BpeTokenizer::FromJson("not json").ok());
  EXPECT_FALSE(BpeTokenizer::Load("/nonexistent/tokenizer.json").ok());
}

TEST(TokenizerFingerprint, StableForSameJsonAndDistinct) {
  const std::string a = SmallTokenizerJson({{"a", "b"}}, true).dump();
  const std::string b = SmallTokenizerJson({{"a", "c"}}, true).dump();
  std::unique_ptr<BpeTokenizer> ta = MustLoad(a), ta2 = MustLoad(a), tb = MustLoad(b);
  ASSERT_TRUE(ta && ta2 && tb);
  EXPECT_EQ(ta->ToJson(), a);
  EXPECT_EQ(ta->Fingerprint(), ta2->Fingerprint());
  EXPECT_NE(ta->Fingerprint(), tb->Fingerprint());
  EXPECT_NE(ta->Fingerprint(), ByteTokenizer().Fingerprint());
  absl::StatusOr<std::unique_ptr<Tokenizer>> made = MakeTokenizer("bpe", ta->ToJson());
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ((*made)->Fingerprint(), ta->Fingerprint());
  EXPECT_EQ(ByteTokenizer().Fingerprint(), ByteTokenizer().Fingerprint());
  EXPECT_FALSE(MakeTokenizer("sentencepiece").ok());
}

TEST(TokenizerByte, TokenIdAndRoundTrip) {
  ByteTokenizer t;
  EXPECT_EQ(t.TokenId("<|endoftext|>"), 256);
  EXPECT_EQ(t.TokenId("a"), 97);
  EXPECT_EQ(t.TokenId("ab"), -1);
  EXPECT_EQ(t.Decode(t.Encode("h\xC3\xA9")), "h\xC3\xA9");
}

TEST(StreamDecoderTest, ByteTokensEmitOnlyCompleteCharacters) {
  ByteTokenizer t;
  StreamDecoder d(&t);
  std::string all;
  const std::string text = "a\xE4\xB8\xAD\xF0\x9F\x98\x80z";
  for (int32_t id : t.Encode(text)) {
    const std::string piece = d.Push(id);
    EXPECT_TRUE(ValidUtf8(piece));
    all += piece;
  }
  all += d.Flush();
  EXPECT_EQ(all, text);
  // An invalid byte comes out as U+FFFD; an unfinished character is flushed as U+FFFD.
  StreamDecoder d2(&t);
  EXPECT_EQ(d2.Push(0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(d2.Push(0xE4), "");
  EXPECT_EQ(d2.Flush(), "\xEF\xBF\xBD");
}

// Whatever bytes a model samples, the stream is valid UTF-8 and equals the sanitized whole.
TEST(StreamDecoderTest, ArbitraryBytesGiveSanitizedText) {
  ByteTokenizer t;
  const std::vector<std::string> streams = {"\xE0\x80\x80",     "\xED\xA0\x80",
                                            "\xF4\x90\x80\x80", "\xF0\x9F\x98",
                                            "\xC0\xAF",         "a\xE4\xB8\xE4\xB8\xADz"};
  uint32_t seed = 12345;
  std::vector<std::string> all = streams;
  for (int n = 0; n < 200; ++n) {
    std::string s;
    for (int k = 0; k < 12; ++k) {
      seed = seed * 1664525u + 1013904223u;
      const uint32_t r = seed >> 24;
      // Mostly lead and continuation bytes, so that characters often span pushes.
      s.push_back(static_cast<char>(r < 96 ? 0x80 + (r & 0x3F) : r < 192 ? 0xC0 + (r & 0x3F) : r));
    }
    all.push_back(s);
  }
  for (const std::string& s : all) {
    StreamDecoder d(&t);
    std::string out;
    for (int32_t id : t.Encode(s)) {
      const std::string piece = d.Push(id);
      EXPECT_TRUE(ValidUtf8(piece)) << absl::CHexEscape(s);
      out += piece;
    }
    out += d.Flush();
    EXPECT_EQ(out, SanitizeUtf8(s)) << absl::CHexEscape(s);
  }
}

// ---- the real Qwen vocabulary

class BpeQwen : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::Load(kQwenPath);
    if (t.ok()) {
      tok_ = std::move(*t).release();
    } else {
      load_error_ = new std::string(std::string(t.status().message()));
    }
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
    delete load_error_;
    load_error_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(tok_, nullptr) << *load_error_
                             << "\n(the ctest fixture fetch_tokenizers writes it; by hand: bash "
                                "scripts/fetch_tokenizers.sh BUILD/tokenizers)";
  }
  struct Case {
    std::string name;
    std::string text;
    std::vector<int32_t> ids;
    bool sanitized = false;
  };
  static std::vector<Case> Golden() {
    std::vector<Case> cases;
    const std::string text = FileContents(kGoldenPath);
    EXPECT_FALSE(text.empty()) << "cannot read " << kGoldenPath;
    if (text.empty()) return cases;
    const json j = json::parse(text);
    for (const json& c : j.at("cases")) {
      Case k;
      k.name = c.at("name").get<std::string>();
      EXPECT_TRUE(absl::Base64Unescape(c.at("text_b64").get<std::string>(), &k.text)) << k.name;
      k.ids = c.at("ids").get<std::vector<int32_t>>();
      k.sanitized = c.value("sanitized", false);
      cases.push_back(std::move(k));
    }
    return cases;
  }
  static BpeTokenizer* tok_;
  static std::string* load_error_;
};
BpeTokenizer* BpeQwen::tok_ = nullptr;
std::string* BpeQwen::load_error_ = nullptr;

TEST_F(BpeQwen, MatchesHuggingFaceGoldenIds) {
  const std::vector<Case> cases = Golden();
  ASSERT_GE(cases.size(), 30u);
  int passed = 0;
  for (const Case& c : cases) {
    const std::vector<int32_t> got = tok_->Encode(c.text);
    if (got == c.ids) {
      ++passed;
      continue;
    }
    size_t i = 0;
    while (i < got.size() && i < c.ids.size() && got[i] == c.ids[i]) ++i;
    ADD_FAILURE() << "case '" << c.name << "': first difference at id position " << i << " (got "
                  << (i < got.size() ? std::to_string(got[i]) : "end") << ", want "
                  << (i < c.ids.size() ? std::to_string(c.ids[i]) : "end") << "); got "
                  << got.size() << " ids, want " << c.ids.size() << "\n  got:  ["
                  << absl::StrJoin(got, ",") << "]\n  want: [" << absl::StrJoin(c.ids, ",") << "]";
  }
  std::printf("[ golden   ] %d/%zu Hugging Face golden cases match\n", passed, cases.size());
}

TEST_F(BpeQwen, DecodeEncodeRoundTripsGoldenTexts) {
  for (const Case& c : Golden()) {
    // Decoding gives the text as the tokenizer saw it: sanitized, then NFC.
    const std::string want = NormalizeNfc(SanitizeUtf8(c.text));
    EXPECT_EQ(tok_->Decode(tok_->Encode(c.text)), want) << "case '" << c.name << "'";
    if (!c.sanitized) {
      EXPECT_TRUE(ValidUtf8(c.text)) << c.name;
    }
  }
}

TEST_F(BpeQwen, InvalidUtf8EncodesAsSanitizedText) {
  const std::vector<std::string> bad = {
      "abc \x80 def",   "\xE4\xB8\xAD\xE4\xB8",    "\xC0\x80 overlong",         "\xE0\x80\xAF",
      "hello\xFFworld", "\xED\xA0\x80 surrogate",  "\xF4\x90\x80\x80",          "\xF0\x9F\x98",
      "\x80\x80\x80",   std::string("nul\0in", 6), "<|im_end|>\xFE<|im_start|>"};
  for (const std::string& s : bad) {
    const std::vector<int32_t> ids = tok_->Encode(s);
    EXPECT_EQ(ids, tok_->Encode(SanitizeUtf8(s))) << absl::CHexEscape(s);
    EXPECT_EQ(tok_->Decode(ids), SanitizeUtf8(s)) << absl::CHexEscape(s);
  }
}

TEST_F(BpeQwen, SpecialTokensInRunningText) {
  const int start = tok_->TokenId("<|im_start|>"), end = tok_->TokenId("<|im_end|>");
  EXPECT_EQ(start, 151644);
  EXPECT_EQ(end, 151645);
  EXPECT_EQ(tok_->eos_id(), 151643);
  EXPECT_EQ(tok_->TokenId("<|endoftext|>"), 151643);
  EXPECT_EQ(tok_->TokenId("<think>"), 151667);  // a non-special added token
  EXPECT_EQ(tok_->vocab_size(), 151669);
  EXPECT_EQ(tok_->TokenId("no such token"), -1);
  std::vector<int32_t> want = {start};
  for (int32_t id : tok_->Encode("user\nhi")) want.push_back(id);
  want.push_back(end);
  const std::string text = "<|im_start|>user\nhi<|im_end|>";
  EXPECT_EQ(tok_->Encode(text), want);
  EXPECT_EQ(tok_->Encode(text), (std::vector<int32_t>{151644, 872, 198, 6023, 151645}));
  EXPECT_EQ(tok_->Decode(tok_->Encode(text)), text);
}

// Where PCRE2 and Oniguruma (Hugging Face's regex engine) could differ: U+180E is not \s to
// Oniguruma (it is to PCRE2), and both fold U+017F to s in (?i:'s). Ids from Hugging Face
// tokenizers 0.22.2 (@anush008/tokenizers 0.6.0).
TEST_F(BpeQwen, RegexFollowsOnigurumaSemantics) {
  EXPECT_EQ(tok_->Encode("\xC2\xA0\xC2\xA0\xE1\xA0\x8Ex"),
            (std::vector<int32_t>{4102, 4102, 123970, 236, 87}));
  EXPECT_EQ(tok_->Encode("a\xC2\x85"
                         "b\xE2\x80\xA8"
                         "c\xE2\x80\x8B"
                         "d \xEF\xBB\xBF e"),
            (std::vector<int32_t>{64, 126, 227, 65, 378, 101, 66, 15692, 67, 75780, 384}));
  // With an extra merge of U+017F + t, "x'\u017Ft" shows where the pre-token ends: Hugging Face
  // splits "'\u017F" | "t" (the contraction matched case-insensitively), so no merge applies.
  json j = json::parse(tok_->ToJson());
  const std::string long_s = BytesToByteLevel("\xC5\xBF");  // U+017F
  j["model"]["vocab"][long_s + "t"] = 200000;
  j["model"]["merges"].push_back(json::array({long_s, "t"}));
  std::unique_ptr<BpeTokenizer> modified = MustLoad(j.dump());
  ASSERT_NE(modified, nullptr);
  EXPECT_EQ(modified->Encode("x'\xC5\xBFt"), (std::vector<int32_t>{87, 6, 144815, 83}));
  EXPECT_EQ(modified->Encode("\xC5\xBFt"), (std::vector<int32_t>{200000}));
}

TEST_F(BpeQwen, ConcurrentEncodesAgree) {
  const std::vector<Case> cases = Golden();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (const Case& c : cases) mismatches[t] += tok_->Encode(c.text) != c.ids;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST_F(BpeQwen, PatternMatchesTokenizerJson) {
  const json j = json::parse(tok_->ToJson());
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"].get<std::string>(),
            kQwen2Pattern);
  EXPECT_EQ(tok_->ToJson(), FileContents(kQwenPath));
}

TEST_F(BpeQwen, StreamDecoderEmitsCompleteUtf8) {
  const std::string text =
      "Emoji \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 "
      "\xF0\x9F\x8D\x95\xF0\x9F\x98\xBA and CJK \xE6\x88\x91\xE4\xBB\xAC\xE6\xAD\xA3\xE5\x9C\xA8"
      "\xE6\xB5\x8B\xE8\xAF\x95\xE3\x80\x82\xEC\x95\x88\xEB\x85\x95 "
      "\xF0\x9F\x87\xAF\xF0\x9F\x87\xB5";
  const std::vector<int32_t> ids = tok_->Encode(text);
  // The test only means something if some token holds part of a character.
  bool partial = false;
  for (int32_t id : ids) partial |= !ValidUtf8(tok_->Decode({id}));
  EXPECT_TRUE(partial);
  StreamDecoder d(tok_);
  std::string all;
  for (int32_t id : ids) {
    const std::string piece = d.Push(id);
    EXPECT_TRUE(ValidUtf8(piece)) << absl::CHexEscape(piece);
    all += piece;
  }
  all += d.Flush();
  EXPECT_EQ(all, text);
}

TEST_F(BpeQwen, EncodesKjvCorpusSpeed) {
  const std::string text = FileContents(kKjvPath);
  if (text.empty()) GTEST_SKIP() << "no " << kKjvPath << " (the prepare_kjv_corpus fixture)";
  // A fresh tokenizer: the word cache starts empty, as in data preparation.
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> fresh = BpeTokenizer::Load(kQwenPath);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = (*fresh)->Encode(text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ speed    ] BPE encode of %s: %.1f MB in %.3f s = %.1f MB/s, %zu ids\n", kKjvPath,
              text.size() / 1e6, s, text.size() / 1e6 / s, ids.size());
  EXPECT_EQ((*fresh)->Decode(ids), NormalizeNfc(SanitizeUtf8(text)));
}

}  // namespace
}  // namespace st
