// Tests for data/: the byte tokenizer, H5File (chunked datasets, atomic writes), the split,
// token shard datasets, PrepareDataset (inputs, JSONL, resume) and the DataLoader
// (determinism, epoch coverage, rank disjointness, exact resume).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "data/hdf5.h"
#include "data/prepare.h"
#include "data/token_dataset.h"
#include "infer/tokenizer/tokenizer.h"
#include "model/check.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace st {
namespace {

namespace fs = std::filesystem;

using test_util::Contains;
using test_util::TestDir;
using test_util::WriteFile;

// ---------------------------------------------------------------------------------------------
// ByteTokenizer

TEST(ByteTokenizerTest, EncodesBytesIncludingUtf8) {
  ByteTokenizer tok;
  // "é" is C3 A9, "世" is E4 B8 96; bytes are ids, read as unsigned.
  const std::string text = "a\xC3\xA9\xE4\xB8\x96\n";
  const std::vector<int32_t> expected = {97, 0xC3, 0xA9, 0xE4, 0xB8, 0x96, 10};
  EXPECT_EQ(tok.Encode(text), expected);
  EXPECT_TRUE(tok.Encode("").empty());
}

TEST(ByteTokenizerTest, RoundTripsEveryByte) {
  ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::string text = all + "héllo, 世界 🙂\n" + std::string("\0x", 2);
  std::vector<int32_t> ids = tok.Encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 256);
  }
  EXPECT_EQ(tok.Decode(ids), text);
}

TEST(ByteTokenizerTest, DecodesSpecialAndOutOfRangeIds) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eos_id(), 256);
  EXPECT_EQ(tok.name(), "byte");
  EXPECT_EQ(tok.Decode({72, 256, 105}), "H<|endoftext|>i");
  EXPECT_EQ(tok.Decode({-1, 257, 100000}), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok.Decode({}), "");
}

TEST(ByteTokenizerTest, MakeTokenizerByNameAndUnknownName) {
  auto tok = MakeTokenizer("byte");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->name(), "byte");
  EXPECT_EQ((*tok)->vocab_size(), 257);
  auto bad = MakeTokenizer("x");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status().message(), "unknown tokenizer 'x'")) << bad.status();
}

// ---------------------------------------------------------------------------------------------
// H5File

template <typename T>
void RoundTripOne(H5File& f, H5Type type, const std::vector<T>& values) {
  SCOPED_TRACE(testing::Message() << "type " << static_cast<int>(type));
  ASSERT_EQ(H5TypeSize(type), sizeof(T));
  ASSERT_EQ(values.size(), 6u);
  const std::string path = "/types/t" + std::to_string(static_cast<int>(type));
  ASSERT_TRUE(f.WriteDataset(path, type, {2, 3}, values.data()).ok());
  auto info = f.Info(path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->type, type);
  EXPECT_EQ(info->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(info->num_elements(), 6);
  std::vector<T> back(6);
  ASSERT_TRUE(f.ReadDataset(path, type, back.data(), back.size() * sizeof(T)).ok());
  EXPECT_EQ(back, values);
}

// Regressions of the manifest parser (fuzz_token_manifest): a float or out-of-range integer
// where an int is expected was converted by nlohmann's get<int>() (undefined behaviour:
// "vocab_size": 2.5e87), or silently narrowed (2^32 + 257 read as 257); a shard list that is
// an object was iterated as one. Each is now an error naming the field.
TEST(ManifestTest, RejectsFloatsHugeIntegersAndNonArrays) {
  const nlohmann::json good = nlohmann::json::parse(R"({
    "format": "smallthinker.token_shards", "version": 2,
    "tokenizer": {"name": "byte", "fingerprint": "byte", "vocab_size": 257, "eos_id": 256},
    "train": [{"file": "train-00000.h5", "tokens": 10, "docs_end": 2}],
    "val": [{"file": "val-00000.h5", "tokens": 3}],
    "sources": [{"path": "a.txt", "bytes": 13}], "complete": true})");
  absl::StatusOr<Manifest> m = ParseManifest(good.dump(), "m.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->val[0].docs_end, -1);
  auto reject = [&](const nlohmann::json::json_pointer& at, const nlohmann::json& value,
                    const std::string& needle) {
    nlohmann::json j = good;
    j[at] = value;
    absl::StatusOr<Manifest> r = ParseManifest(j.dump(), "m.json");
    ASSERT_FALSE(r.ok()) << j.dump();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find("m.json: "), std::string::npos) << r.status();
  };
  using P = nlohmann::json::json_pointer;
  reject(P("/tokenizer/vocab_size"), 2.5e87, "field 'vocab_size' = 2.5e+87 is not an integer");
  reject(P("/tokenizer/vocab_size"), 4294967553LL, "field 'vocab_size' = 4294967553");
  reject(P("/tokenizer/vocab_size"), 0, "field 'vocab_size' = 0");
  reject(P("/tokenizer/eos_id"), 1.5, "field 'eos_id' = 1.5");
  reject(P("/tokenizer/eos_id"), 257, "bad vocab_size 257 / eos_id 257");
  reject(P("/version"), 2.0, "field 'version' = 2.0");
  reject(P("/version"), 18446744073709551615ULL, "field 'version'");
  reject(P("/train/0/tokens"), -1, "field 'tokens' = -1");
  reject(P("/train/0/tokens"), 1e300, "field 'tokens'");
  reject(P("/train/0/docs_end"), "x", "field 'docs_end' = \"x\"");
  reject(P("/sources/0/bytes"), 9.0, "field 'bytes' = 9.0");
  reject(P("/train"), nlohmann::json{{"x", good["train"][0]}},
         "field 'train' is missing or not an array");
  reject(P("/sources"), 3, "field 'sources' is missing or not an array");
}

TEST(H5FileTest, RoundTripsEveryType) {
  const std::string file = TestDir() + "/types.h5";
  {
    auto f = H5File::Create(file);
    ASSERT_TRUE(f.ok()) << f.status();
    RoundTripOne<float>(*f, H5Type::kF32, {0.f, -1.5f, 3.25f, 1e-30f, 3e38f, -0.f});
    RoundTripOne<double>(*f, H5Type::kF64, {3.141592653589793, -2.0, 1e-300, 1e300, 0.1, 7});
    RoundTripOne<int32_t>(*f, H5Type::kI32, {INT32_MIN, -1, 0, 1, 123456789, INT32_MAX});
    RoundTripOne<int64_t>(*f, H5Type::kI64, {INT64_MIN, -1, 0, 1, 1LL << 40, INT64_MAX});
    RoundTripOne<uint8_t>(*f, H5Type::kU8, {0, 1, 127, 128, 200, 255});
    RoundTripOne<uint16_t>(*f, H5Type::kU16, {0, 1, 256, 32768, 65534, 65535});
    RoundTripOne<uint32_t>(*f, H5Type::kU32, {0, 1, 65536, 2147483648u, 4000000000u, UINT32_MAX});
    ASSERT_TRUE(f->Close().ok());
  }
  // Everything is still there after reopening.
  auto f = H5File::Open(file);
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<int64_t> back(6);
  ASSERT_TRUE(f->ReadDataset("/types/t3", H5Type::kI64, back.data(), 48).ok());
  EXPECT_EQ(back[0], INT64_MIN);
  EXPECT_EQ(back[5], INT64_MAX);
}

TEST(H5FileTest, ScalarDatasetAndTypeConversion) {
  const std::string file = TestDir() + "/scalar.h5";
  auto f = H5File::Create(file);
  ASSERT_TRUE(f.ok()) << f.status();
  const double pi = 3.5;
  ASSERT_TRUE(f->WriteDataset("/s", H5Type::kF64, {}, &pi).ok());
  auto info = f->Info("/s");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->shape.empty());
  EXPECT_EQ(info->num_elements(), 1);
  float as_float = 0;
  ASSERT_TRUE(f->ReadDataset("/s", H5Type::kF32, &as_float, sizeof(float)).ok());
  EXPECT_EQ(as_float, 3.5f);

  const std::vector<uint16_t> u16 = {0, 7, 65535};
  ASSERT_TRUE(f->WriteDataset("/u", H5Type::kU16, {3}, u16.data()).ok());
  std::vector<int32_t> as_i32(3);
  ASSERT_TRUE(f->ReadDataset("/u", H5Type::kI32, as_i32.data(), 12).ok());
  EXPECT_EQ(as_i32, (std::vector<int32_t>{0, 7, 65535}));
  // Wrong buffer size is an error, not an overflow.
  auto s = f->ReadDataset("/u", H5Type::kI32, as_i32.data(), 8);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.message(), "/u")) << s;
}

TEST(H5FileTest, AttributesOfAllKinds) {
  const std::string file = TestDir() + "/attrs.h5";
  {
    auto f = H5File::Create(file);
    ASSERT_TRUE(f.ok()) << f.status();
    const int32_t x = 1;
    ASSERT_TRUE(f->WriteDataset("/g/d", H5Type::kI32, {1}, &x).ok());
    ASSERT_TRUE(f->WriteAttr("/", "name", absl::string_view("héllo 世界")).ok());
    ASSERT_TRUE(f->WriteAttr("/", "empty", absl::string_view("")).ok());
    ASSERT_TRUE(f->WriteAttr("/", "count", int64_t{-1234567890123}).ok());
    ASSERT_TRUE(f->WriteAttr("/", "lr", 3e-4).ok());
    ASSERT_TRUE(f->WriteAttr("/g", "on_group", int64_t{5}).ok());
    ASSERT_TRUE(f->WriteAttr("/g/d", "on_dataset", absl::string_view("yes")).ok());
    // Overwriting replaces, also with another kind.
    ASSERT_TRUE(f->WriteAttr("/", "count", int64_t{42}).ok());
    ASSERT_TRUE(f->WriteAttr("/g", "on_group", absl::string_view("now a string")).ok());
    auto missing_obj = f->WriteAttr("/nope", "a", int64_t{1});
    EXPECT_FALSE(missing_obj.ok());
    EXPECT_TRUE(Contains(missing_obj.message(), "/nope")) << missing_obj;
    ASSERT_TRUE(f->Close().ok());
  }
  auto f = H5File::Open(file);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f->ReadStringAttr("/", "name"), "héllo 世界");
  EXPECT_EQ(*f->ReadStringAttr("/", "empty"), "");
  EXPECT_EQ(*f->ReadIntAttr("/", "count"), 42);
  EXPECT_EQ(*f->ReadDoubleAttr("/", "lr"), 3e-4);
  EXPECT_EQ(*f->ReadDoubleAttr("/", "count"), 42.0);  // ints read as doubles
  EXPECT_EQ(*f->ReadStringAttr("/g", "on_group"), "now a string");
  EXPECT_EQ(*f->ReadStringAttr("/g/d", "on_dataset"), "yes");
  EXPECT_TRUE(f->HasAttr("/", "lr"));
  EXPECT_FALSE(f->HasAttr("/", "nope"));
  EXPECT_FALSE(f->HasAttr("/missing/object", "lr"));

  auto wrong_kind = f->ReadIntAttr("/", "name");
  ASSERT_FALSE(wrong_kind.ok());
  EXPECT_TRUE(Contains(wrong_kind.status().message(), "name")) << wrong_kind.status();
  EXPECT_FALSE(f->ReadStringAttr("/", "lr").ok());
  EXPECT_FALSE(f->ReadIntAttr("/", "lr").ok());  // no silent float -> int truncation
  auto missing = f->ReadStringAttr("/", "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status().message(), file)) << missing.status();
  EXPECT_TRUE(Contains(missing.status().message(), "'nope'")) << missing.status();
}

TEST(H5FileTest, ListExistsAndCreateGroup) {
  const std::string file = TestDir() + "/tree.h5";
  auto f = H5File::Create(file);
  ASSERT_TRUE(f.ok()) << f.status();
  const float v = 1;
  ASSERT_TRUE(f->WriteDataset("/params/layers.0/w", H5Type::kF32, {1}, &v).ok());
  ASSERT_TRUE(f->WriteDataset("/params/b", H5Type::kF32, {1}, &v).ok());
  ASSERT_TRUE(f->WriteDataset("/params/a", H5Type::kF32, {1}, &v).ok());
  ASSERT_TRUE(f->WriteDataset("/zeta", H5Type::kF32, {1}, &v).ok());
  ASSERT_TRUE(f->CreateGroup("/opt/state/m").ok());
  ASSERT_TRUE(f->CreateGroup("/opt/state").ok());  // exists: fine

  EXPECT_EQ(*f->List("/"), (std::vector<std::string>{"opt", "params", "zeta"}));
  EXPECT_EQ(*f->List("/params"), (std::vector<std::string>{"a", "b", "layers.0"}));
  EXPECT_EQ(*f->List("/opt/state/m"), std::vector<std::string>{});
  EXPECT_FALSE(f->List("/nope").ok());
  EXPECT_FALSE(f->List("/zeta").ok());  // a dataset is not a group

  EXPECT_TRUE(f->Exists("/"));
  EXPECT_TRUE(f->Exists("/params"));
  EXPECT_TRUE(f->Exists("/params/layers.0/w"));
  EXPECT_TRUE(f->Exists("/opt/state/m"));
  EXPECT_FALSE(f->Exists("/params/c"));
  EXPECT_FALSE(f->Exists("/no/such/deep/path"));
  EXPECT_FALSE(f->Exists("/zeta/under_a_dataset"));

  EXPECT_FALSE(f->CreateGroup("/zeta").ok());  // exists as a dataset
  // Writing a dataset again replaces it.
  const std::vector<float> two = {5, 6};
  ASSERT_TRUE(f->WriteDataset("/params/a", H5Type::kF32, {2}, two.data()).ok());
  std::vector<float> back(2);
  ASSERT_TRUE(f->ReadDataset("/params/a", H5Type::kF32, back.data(), 8).ok());
  EXPECT_EQ(back, two);
}

TEST(H5FileTest, ReadSlab1D) {
  const std::string file = TestDir() + "/slab.h5";
  auto f = H5File::Create(file);
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<uint16_t> data(1000);
  for (int i = 0; i < 1000; ++i) data[i] = static_cast<uint16_t>(i * 7 % 65536);
  ASSERT_TRUE(f->WriteDataset("/x", H5Type::kU16, {1000}, data.data()).ok());
  std::vector<int32_t> out(25, -1);
  ASSERT_TRUE(f->ReadSlab1D("/x", H5Type::kI32, 10, 25, out.data()).ok());
  for (int i = 0; i < 25; ++i) EXPECT_EQ(out[i], (10 + i) * 7);
  ASSERT_TRUE(f->ReadSlab1D("/x", H5Type::kI32, 995, 5, out.data()).ok());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[i], (995 + i) * 7);
  EXPECT_TRUE(f->ReadSlab1D("/x", H5Type::kI32, 1000, 0, out.data()).ok());
  auto past = f->ReadSlab1D("/x", H5Type::kI32, 996, 5, out.data());
  EXPECT_FALSE(past.ok());
  EXPECT_TRUE(Contains(past.message(), "/x")) << past;
  EXPECT_FALSE(f->ReadSlab1D("/x", H5Type::kI32, -1, 2, out.data()).ok());
  const std::vector<float> m(4, 0.f);
  ASSERT_TRUE(f->WriteDataset("/m", H5Type::kF32, {2, 2}, m.data()).ok());
  EXPECT_FALSE(f->ReadSlab1D("/m", H5Type::kF32, 0, 1, out.data()).ok());  // rank 2
}

TEST(H5FileTest, ZeroLengthDataset) {
  const std::string file = TestDir() + "/empty.h5";
  {
    auto f = H5File::Create(file);
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(f->WriteDataset("/val/tokens", H5Type::kU16, {0}, nullptr).ok());
    ASSERT_TRUE(f->WriteDataset("/m", H5Type::kF32, {3, 0}, nullptr).ok());
    ASSERT_TRUE(f->Close().ok());
  }
  auto f = H5File::Open(file);
  ASSERT_TRUE(f.ok()) << f.status();
  auto info = f->Info("/val/tokens");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->shape, std::vector<int64_t>{0});
  EXPECT_EQ(info->num_elements(), 0);
  EXPECT_EQ(info->type, H5Type::kU16);
  EXPECT_EQ(f->Info("/m")->num_elements(), 0);
  int32_t dummy = 0;
  EXPECT_TRUE(f->ReadDataset("/val/tokens", H5Type::kI32, &dummy, 0).ok());
  EXPECT_TRUE(f->ReadSlab1D("/val/tokens", H5Type::kI32, 0, 0, &dummy).ok());
  EXPECT_FALSE(f->ReadSlab1D("/val/tokens", H5Type::kI32, 0, 1, &dummy).ok());
}

TEST(H5FileTest, ClearErrorsForMissingAndBadFiles) {
  const std::string dir = TestDir();
  const std::string missing = dir + "/does_not_exist.h5";
  auto m = H5File::Open(missing);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(Contains(m.status().message(), missing)) << m.status();
  EXPECT_TRUE(Contains(m.status().message(), "no such file")) << m.status();

  const std::string garbage = dir + "/garbage.h5";
  {
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>((i * 31 + 7) & 0xFF));
  }
  testing::internal::CaptureStderr();
  auto g = H5File::Open(garbage);
  const std::string printed = testing::internal::GetCapturedStderr();
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(Contains(g.status().message(), garbage)) << g.status();
  EXPECT_TRUE(Contains(g.status().message(), "not an HDF5 file")) << g.status();
  EXPECT_EQ(printed, "") << "HDF5 printed its error stack";

  testing::internal::CaptureStderr();
  auto bad_dir = H5File::Create(dir + "/no/such/dir/x.h5");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "") << "HDF5 printed its error stack";
  ASSERT_FALSE(bad_dir.ok());
  EXPECT_TRUE(Contains(bad_dir.status().message(), "no/such/dir/x.h5")) << bad_dir.status();

  const std::string file = dir + "/ok.h5";
  auto f = H5File::Create(file);
  ASSERT_TRUE(f.ok()) << f.status();
  testing::internal::CaptureStderr();
  auto info = f->Info("/params/x");
  std::vector<float> buf(1);
  auto read = f->ReadDataset("/params/x", H5Type::kF32, buf.data(), 4);
  const std::string printed2 = testing::internal::GetCapturedStderr();
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().message(), file + ": dataset '/params/x' not found");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.message(), file + ": dataset '/params/x' not found");
  EXPECT_EQ(printed2, "");
}

TEST(H5FileTest, MoveKeepsTheFileOpen) {
  const std::string file = TestDir() + "/move.h5";
  auto created = H5File::Create(file);
  ASSERT_TRUE(created.ok());
  H5File a = std::move(*created);
  H5File b = std::move(a);
  const int64_t v = 9;
  ASSERT_TRUE(b.WriteDataset("/v", H5Type::kI64, {}, &v).ok());
  EXPECT_EQ(b.path(), file);
  ASSERT_TRUE(b.Close().ok());
  EXPECT_TRUE(b.Close().ok());  // closing twice is harmless
  auto writable = H5File::Open(file, /*writable=*/true);
  ASSERT_TRUE(writable.ok()) << writable.status();
  ASSERT_TRUE(writable->WriteAttr("/v", "note", absl::string_view("added later")).ok());
  ASSERT_TRUE(writable->Close().ok());
  auto ro = H5File::Open(file);
  ASSERT_TRUE(ro.ok());
  EXPECT_EQ(*ro->ReadStringAttr("/v", "note"), "added later");
  EXPECT_FALSE(ro->WriteAttr("/v", "x", int64_t{1}).ok());  // read-only
}

TEST(H5FileTest, WriteH5AtomicallyKeepsOldFileOnError) {
  const std::string dir = TestDir();
  const std::string file = dir + "/ckpt.h5";
  const std::vector<std::string> only_the_file = {"ckpt.h5"};
  auto write_version = [&](int64_t version, bool fail) {
    return WriteH5Atomically(file, [&](H5File& f) -> absl::Status {
      const float w = static_cast<float>(version);
      ST_RETURN_IF_ERROR(f.WriteDataset("/params/w", H5Type::kF32, {}, &w));
      ST_RETURN_IF_ERROR(f.WriteAttr("/", "version", version));
      if (fail) return absl::DataLossError("writer gave up");
      return absl::OkStatus();
    });
  };
  ASSERT_TRUE(write_version(1, false).ok());
  EXPECT_EQ(test_util::ListDir(dir), only_the_file);  // no temp file left

  absl::Status s = write_version(2, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "writer gave up");
  EXPECT_EQ(test_util::ListDir(dir), only_the_file);  // no temp file left
  {
    auto f = H5File::Open(file);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(*f->ReadIntAttr("/", "version"), 1);
  }

  ASSERT_TRUE(write_version(3, false).ok());
  EXPECT_EQ(test_util::ListDir(dir), only_the_file);  // no temp file left
  auto f = H5File::Open(file);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f->ReadIntAttr("/", "version"), 3);
  float w = 0;
  ASSERT_TRUE(f->ReadDataset("/params/w", H5Type::kF32, &w, 4).ok());
  EXPECT_EQ(w, 3.0f);
}

// ---------------------------------------------------------------------------------------------
// TokenizeAndSplit

TEST(TokenizeAndSplitTest, ZeroFractionKeepsEverythingInTrain) {
  ByteTokenizer tok;
  SplitTokens s = TokenizeAndSplit(tok, "one\ntwo\nthree\n", 0.0);
  EXPECT_EQ(tok.Decode(s.train), "one\ntwo\nthree\n");
  EXPECT_TRUE(s.val.empty());
}

TEST(TokenizeAndSplitTest, SplitsAtTheLineBreakNearestTheTarget) {
  ByteTokenizer tok;
  std::string text;
  for (int i = 0; i < 10; ++i) text += "line" + std::to_string(i) + "\n";  // 6 bytes each
  SplitTokens s = TokenizeAndSplit(tok, text, 0.2);  // target byte 48 is a line start
  EXPECT_EQ(tok.Decode(s.train), text.substr(0, 48));
  EXPECT_EQ(tok.Decode(s.val), "line8\nline9\n");

  // 100 bytes of 'a' then lines: the nearest break to byte 90 is after the long line.
  const std::string uneven = std::string(99, 'a') + "\nb\nc\n";  // 105 bytes
  SplitTokens u = TokenizeAndSplit(tok, uneven, 0.1);            // target ~94.5
  EXPECT_EQ(tok.Decode(u.train), std::string(99, 'a') + "\n");
  EXPECT_EQ(tok.Decode(u.val), "b\nc\n");
}

TEST(TokenizeAndSplitTest, RandomTextsSplitAtTheNearestUsableBreak) {
  ByteTokenizer tok;
  std::mt19937 rng(7);  // only generates inputs; the expectation is brute force
  for (int trial = 0; trial < 200; ++trial) {
    const int len = 2 + static_cast<int>(rng() % 300);
    std::string text;
    for (int i = 0; i < len; ++i) text.push_back(rng() % 8 == 0 ? '\n' : 'a' + rng() % 26);
    const double frac = (rng() % 51) / 100.0;
    SplitTokens s = TokenizeAndSplit(tok, text, frac);
    const std::string train = tok.Decode(s.train), val = tok.Decode(s.val);
    ASSERT_EQ(train + val, text);
    if (frac == 0.0) {
      EXPECT_TRUE(val.empty());
      continue;
    }
    const double target = len * (1.0 - frac);
    // Brute force: the usable cuts follow a '\n' and leave both parts non-empty.
    double best_dist = 1e9;
    for (int c = 1; c <= len - 1; ++c) {
      if (text[c - 1] == '\n') best_dist = std::min(best_dist, std::abs(c - target));
    }
    if (best_dist < 1e9) {
      ASSERT_FALSE(train.empty());
      ASSERT_FALSE(val.empty());
      EXPECT_EQ(train.back(), '\n') << "trial " << trial;
      EXPECT_LE(std::abs(static_cast<double>(train.size()) - target), best_dist + 1.0)
          << "trial " << trial << " cut " << train.size() << " target " << target;
    }
  }
}

TEST(TokenizeAndSplitTest, WithoutLineBreaksCutsAtACharacterBoundary) {
  ByteTokenizer tok;
  SplitTokens s = TokenizeAndSplit(tok, "abcdefghij", 0.3);
  EXPECT_EQ(tok.Decode(s.train), "abcdefg");
  EXPECT_EQ(tok.Decode(s.val), "hij");
  // Five "é" (C3 A9): byte 5 is a continuation byte, so the cut backs off to byte 4.
  const std::string e5 = "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";
  SplitTokens u = TokenizeAndSplit(tok, e5, 0.5);
  EXPECT_EQ(tok.Decode(u.train), "\xC3\xA9\xC3\xA9");
  EXPECT_EQ(tok.Decode(u.val), "\xC3\xA9\xC3\xA9\xC3\xA9");
}

TEST(TokenizeAndSplitDeathTest, RejectsFractionAboveHalf) {
  ByteTokenizer tok;
  EXPECT_DEATH(TokenizeAndSplit(tok, "a\nb\n", 0.6), "val_fraction");
}

// ---------------------------------------------------------------------------------------------
// Token shard datasets

// Metadata of a made-up tokenizer whose vocabulary is [0, vocab).
Manifest Meta(int vocab, int eos = -1) {
  Manifest m;
  m.tokenizer = "pos";
  m.fingerprint = "fp-pos";
  m.vocab_size = vocab;
  m.eos_id = eos;
  return m;
}

std::vector<int32_t> Iota(int n, int start = 0) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = start + i;
  return v;
}

std::vector<int32_t> ReadAll(const TokenDataset& d) {
  std::vector<int32_t> out(static_cast<size_t>(d.size()));
  absl::Status s = d.Read(0, d.size(), out.data());
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

TEST(H5FileTest, ChunkedDatasetRoundTripAndSlabs) {
  const std::string file = TestDir() + "/c.h5";
  std::vector<uint32_t> v(1000);
  for (int i = 0; i < 1000; ++i) v[i] = 7 * i;
  {
    auto f = H5File::Create(file);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->WriteChunked1D("/tokens", H5Type::kU32, 1000, v.data(), 64).ok());
    ASSERT_TRUE(f->WriteChunked1D("/empty", H5Type::kU32, 0, nullptr, 64).ok());
    ASSERT_TRUE(f->WriteDataset("/plain", H5Type::kU32, {3}, v.data()).ok());
    ASSERT_TRUE(f->Close().ok());
  }
  auto f = H5File::Open(file);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f->ChunkLength("/tokens"), 64);
  EXPECT_EQ(*f->ChunkLength("/plain"), 0);
  auto info = f->Info("/tokens");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->shape, std::vector<int64_t>{1000});
  std::vector<int32_t> slab(100);
  ASSERT_TRUE(f->ReadSlab1D("/tokens", H5Type::kI32, 900, 100, slab.data()).ok());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(slab[i], 7 * (900 + i));
  EXPECT_EQ(f->Info("/empty")->num_elements(), 0);
}

TEST(TokenDatasetTest, WriteAndOpenRoundTripAcrossShards) {
  const std::string dir = TestDir() + "/ds";
  ByteTokenizer tok;
  std::vector<int32_t> train = Iota(250), val = {1, 2, 3};
  ASSERT_TRUE(
      WriteTokenDataset(dir, tok, train, val, /*shard_tokens=*/100, {{"corpus.txt", 253}}).ok());
  EXPECT_TRUE(fs::exists(dir + "/train-00000.h5"));
  EXPECT_TRUE(fs::exists(dir + "/train-00002.h5"));
  EXPECT_FALSE(fs::exists(dir + "/tokenizer.json"));  // "byte" needs none
  auto m = ReadManifest(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->complete);
  EXPECT_EQ(m->train.size(), 3u);
  EXPECT_EQ(m->Tokens("train"), 250);
  EXPECT_EQ(m->Tokens("val"), 3);
  EXPECT_EQ(m->fingerprint, tok.Fingerprint());
  ASSERT_EQ(m->sources.size(), 1u);
  EXPECT_EQ(m->sources[0].bytes, 253);
  // Shards: chunked uint32 with the tokenizer's attributes.
  auto f = H5File::Open(dir + "/train-00001.h5");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->Info("/tokens")->type, H5Type::kU32);
  EXPECT_GT(*f->ChunkLength("/tokens"), 0);
  EXPECT_EQ(*f->ReadStringAttr("/", "tokenizer"), "byte");
  EXPECT_EQ(*f->ReadStringAttr("/", "fingerprint"), tok.Fingerprint());
  EXPECT_EQ(*f->ReadIntAttr("/", "vocab_size"), 257);
  EXPECT_EQ(*f->ReadIntAttr("/", "eos_id"), 256);
  EXPECT_EQ(*f->ReadStringAttr("/", "sources"), "[\"corpus.txt\"]");
  ASSERT_TRUE(f->Close().ok());
  for (int64_t resident_limit : {int64_t{1} << 30, int64_t{0}}) {
    SCOPED_TRACE(resident_limit);
    OpenOptions opt;
    opt.max_resident_bytes = resident_limit;
    auto t = TokenDataset::Open(dir, "train", opt);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->resident(), resident_limit > 0);
    EXPECT_EQ(t->size(), 250);
    EXPECT_EQ(ReadAll(*t), train);
    // A read across the shard boundaries at 100 and 200.
    std::vector<int32_t> w(120);
    ASSERT_TRUE(t->Read(95, 120, w.data()).ok());
    EXPECT_EQ(w, Iota(120, 95));
    EXPECT_FALSE(t->Read(200, 51, w.data()).ok());
    auto v = TokenDataset::Open(dir, "val", opt);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(ReadAll(*v), val);
  }
  auto tok2 = LoadDatasetTokenizer(dir);
  ASSERT_TRUE(tok2.ok()) << tok2.status();
  EXPECT_EQ((*tok2)->name(), "byte");
}

TEST(TokenDatasetTest, SequentialWindows) {
  const std::string dir = TestDir() + "/seq";
  ASSERT_TRUE(WriteTokenDataset(dir, Meta(1000), Iota(23), {1, 2}, 10).ok());
  auto t = TokenDataset::Open(dir, "train");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->NumWindows(5), 4);  // (23 - 1) / 5
  EXPECT_EQ(t->NumWindows(22), 1);
  EXPECT_EQ(t->NumWindows(23), 0);
  std::vector<int32_t> w(6);
  for (int64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(t->ReadWindow(5, i, w.data()).ok());
    for (int k = 0; k < 6; ++k) EXPECT_EQ(w[k], i * 5 + k);
  }
  EXPECT_FALSE(t->ReadWindow(5, 4, w.data()).ok());
  auto v = TokenDataset::Open(dir, "val");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->NumWindows(1), 1);
  EXPECT_EQ(v->NumWindows(2), 0);
}

TEST(TokenDatasetTest, WriteRejectsIdsOutsideTheVocabulary) {
  const std::string dir = TestDir() + "/bad";
  absl::Status s = WriteTokenDataset(dir, Meta(10), {1, 2, 10}, {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.message(), "[2] = 10 is outside the vocabulary [0, 10)")) << s;
  EXPECT_FALSE(fs::exists(dir + "/manifest.json"));
}

TEST(TokenDatasetTest, MissingCorruptAndIncompleteDatasetsGiveClearErrors) {
  const std::string base = TestDir();
  // Not there at all.
  auto none = TokenDataset::Open(base + "/nope", "train");
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(Contains(none.status().message(), "st-data prepare")) << none.status();
  // The old single-file format.
  {
    auto f = H5File::Create(base + "/old.h5");
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->WriteAttr("/", "format", absl::string_view("smallthinker.tokens")).ok());
    ASSERT_TRUE(f->Close().ok());
  }
  auto old = TokenDataset::Open(base + "/old.h5", "train");
  ASSERT_FALSE(old.ok());
  EXPECT_TRUE(Contains(old.status().message(), "old single-file format")) << old.status();
  EXPECT_TRUE(Contains(old.status().message(), "st-data prepare")) << old.status();

  const std::string dir = base + "/ds";
  auto fresh = [&] {
    fs::remove_all(dir);
    ASSERT_TRUE(WriteTokenDataset(dir, Meta(300), Iota(250), {1, 2, 3}, 100).ok());
  };
  // A missing shard.
  fresh();
  fs::remove(dir + "/train-00001.h5");
  auto missing = TokenDataset::Open(dir, "train");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status().message(), "train-00001.h5")) << missing.status();
  EXPECT_TRUE(Contains(missing.status().message(), "missing")) << missing.status();
  EXPECT_TRUE(TokenDataset::Open(dir, "val").ok());  // the other split is fine
  // A truncated (garbage) shard.
  fresh();
  { std::ofstream(dir + "/train-00002.h5", std::ios::trunc) << "garbage"; }
  auto corrupt = TokenDataset::Open(dir, "train");
  ASSERT_FALSE(corrupt.ok());
  EXPECT_TRUE(Contains(corrupt.status().message(), "train-00002.h5")) << corrupt.status();
  // A shard of another dataset (other fingerprint / length).
  fresh();
  {
    const std::string other = base + "/other";
    ASSERT_TRUE(WriteTokenDataset(other, Meta(300), Iota(50), {}, 100).ok());
    fs::copy_file(other + "/train-00000.h5", dir + "/train-00000.h5",
                  fs::copy_options::overwrite_existing);
  }
  auto foreign = TokenDataset::Open(dir, "train");
  ASSERT_FALSE(foreign.ok());
  EXPECT_TRUE(Contains(foreign.status().message(), "train-00000.h5")) << foreign.status();
  // Ids past the vocabulary (a shard written with a bigger vocab, manifest edited).
  fresh();
  {
    Manifest big = Meta(300);
    ASSERT_TRUE(WriteTokenDataset(base + "/big", big, {1, 299, 2}, {}, 100).ok());
    auto m = ReadManifest(base + "/big");
    ASSERT_TRUE(m.ok());
    m->vocab_size = 200;
    ASSERT_TRUE(WriteManifest(base + "/big", *m).ok());
  }
  auto ids = TokenDataset::Open(base + "/big", "train");
  ASSERT_FALSE(ids.ok());  // the shard's vocab_size attribute no longer matches
  // An incomplete manifest.
  fresh();
  {
    auto m = ReadManifest(dir);
    ASSERT_TRUE(m.ok());
    m->complete = false;
    ASSERT_TRUE(WriteManifest(dir, *m).ok());
  }
  auto incomplete = TokenDataset::Open(dir, "train");
  ASSERT_FALSE(incomplete.ok());
  EXPECT_TRUE(Contains(incomplete.status().message(), "incomplete")) << incomplete.status();
  // A manifest that is not JSON.
  std::ofstream(dir + "/manifest.json", std::ios::trunc) << "{nope";
  auto bad_json = TokenDataset::Open(dir, "train");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_TRUE(Contains(bad_json.status().message(), "manifest.json")) << bad_json.status();
  EXPECT_FALSE(TokenDataset::Open(dir, "test").ok());
}

// ---------------------------------------------------------------------------------------------
// Inputs and PrepareDataset

std::vector<std::string> ReadDocs(const std::vector<std::string>& inputs) {
  auto files = ListInputs(inputs);
  EXPECT_TRUE(files.ok()) << files.status();
  DocumentReader r(*files);
  std::vector<std::string> docs;
  Document d;
  for (;;) {
    auto got = r.Next(&d);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok() || !*got) break;
    docs.push_back(d.text);
  }
  return docs;
}

TEST(PrepareTest, ListsDirectoriesRecursivelySortedAndReadsJsonl) {
  const std::string dir = TestDir();
  WriteFile(dir + "/in/b.txt", "bee");
  WriteFile(dir + "/in/a/z.txt", "zed");
  WriteFile(dir + "/in/c.jsonl", "{\"text\": \"one\"}\n\n{\"text\": \"two\", \"id\": 2}\n");
  WriteFile(dir + "/in/ignored.md", "no");
  WriteFile(dir + "/single.jsonl", "{\"text\": \"x\"}");  // no final newline
  EXPECT_EQ(ReadDocs({dir + "/in", dir + "/single.jsonl"}),
            (std::vector<std::string>{"zed", "bee", "one", "two", "x"}));
  auto missing = ListInputs({dir + "/nothere"});
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status().message(), "nothere")) << missing.status();
  fs::create_directories(dir + "/emptydir");
  EXPECT_FALSE(ListInputs({dir + "/emptydir"}).ok());
}

TEST(PrepareTest, JsonlErrorsNameFileAndLine) {
  const std::string dir = TestDir();
  WriteFile(dir + "/bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok\"\n");
  WriteFile(dir + "/nofield.jsonl", "{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n");
  WriteFile(dir + "/notstring.jsonl", "{\"text\": 5}\n");
  ByteTokenizer tok;
  struct Case {
    std::string file, expect;
  };
  for (const Case& c : {Case{"bad.jsonl", "bad.jsonl:2: invalid JSON"},
                        Case{"nofield.jsonl", "nofield.jsonl:3: no \"text\" string field"},
                        Case{"notstring.jsonl", "notstring.jsonl:1: no \"text\""}}) {
    PrepareOptions opt;
    opt.inputs = {dir + "/" + c.file};
    opt.output = dir + "/out_" + c.file;
    auto r = PrepareDataset(tok, opt);
    ASSERT_FALSE(r.ok()) << c.file;
    EXPECT_TRUE(Contains(r.status().message(), c.expect)) << r.status();
  }
}

TEST(PrepareTest, EmptyInputAndTokenizerWithoutEosAreErrors) {
  const std::string dir = TestDir();
  WriteFile(dir + "/empty.txt", "");
  WriteFile(dir + "/empty.jsonl", "{\"text\": \"\"}\n");
  ByteTokenizer tok;
  PrepareOptions opt;
  opt.inputs = {dir + "/empty.txt", dir + "/empty.jsonl"};
  opt.output = dir + "/out";
  auto r = PrepareDataset(tok, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), "no text")) << r.status();
  // Nothing is left that looks like an interrupted preparation: the same input into an existing
  // directory leaves it as it was, and real text afterwards prepares normally.
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
  std::filesystem::create_directories(dir + "/kept");
  WriteFile(dir + "/kept/notes.txt", "mine");
  opt.output = dir + "/kept";
  r = PrepareDataset(tok, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir + "/kept"),
                          std::filesystem::directory_iterator()),
            1);
  WriteFile(dir + "/text.txt", "In the beginning\n");
  opt.inputs = {dir + "/text.txt"};
  opt.val_fraction = 0;
  r = PrepareDataset(tok, opt);
  EXPECT_TRUE(r.ok()) << r.status();
  opt.output = dir + "/out";
  opt.inputs = {dir + "/missing.txt"};
  r = PrepareDataset(tok, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), "missing.txt")) << r.status();
}

// Text of n documents of varied length.
std::vector<std::string> MakeDocs(int n) {
  std::mt19937 rng(7);
  std::vector<std::string> docs;
  for (int d = 0; d < n; ++d) {
    std::string t = "doc " + std::to_string(d) + ":";
    const int lines = 1 + rng() % 6;
    for (int l = 0; l < lines; ++l) {
      t += " line";
      for (int w = 0, nw = rng() % 12; w < nw; ++w) t += " w" + std::to_string(rng() % 100);
      t += "\n";
    }
    docs.push_back(t);
  }
  return docs;
}

std::string JsonlOf(const std::vector<std::string>& docs) {
  std::string out;
  for (const std::string& d : docs) out += nlohmann::json({{"text", d}}).dump() + "\n";
  return out;
}

TEST(PrepareTest, RoundTripPacksDocumentsWithEosAndHoldsOutValByHash) {
  const std::string dir = TestDir();
  const std::vector<std::string> docs = MakeDocs(400);
  WriteFile(dir + "/docs.jsonl", JsonlOf(docs));
  ByteTokenizer tok;
  PrepareOptions opt;
  opt.inputs = {dir + "/docs.jsonl"};
  opt.output = dir + "/out";
  opt.val_fraction = 0.1;
  opt.shard_tokens = 3000;
  opt.threads = 3;
  auto r = PrepareDataset(tok, opt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->documents, 400);
  EXPECT_GT(r->manifest.train.size(), 3u);
  // Expected streams: documents in order, each followed by eos, val chosen by hash.
  std::vector<int32_t> train, val;
  int nval = 0;
  for (const std::string& d : docs) {
    const bool is_val = IsValDocument(d, 0.1);
    nval += is_val;
    std::vector<int32_t>& dst = is_val ? val : train;
    for (int32_t id : tok.Encode(d)) dst.push_back(id);
    dst.push_back(tok.eos_id());
  }
  EXPECT_GT(nval, 20);
  EXPECT_LT(nval, 70);
  auto t = TokenDataset::Open(dir + "/out", "train");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(ReadAll(*t), train);
  auto v = TokenDataset::Open(dir + "/out", "val");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(ReadAll(*v), val);
  // Shards end at document ends (an eos) and record how many documents they hold.
  int64_t prev_docs = 0;
  for (const ShardInfo& s : r->manifest.train) {
    EXPECT_GT(s.docs_end, prev_docs);
    prev_docs = s.docs_end;
  }
  EXPECT_EQ(prev_docs, 400);
  // Same output with one thread (determinism), and a re-run is refused without --overwrite.
  auto again = PrepareDataset(tok, opt);
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(Contains(again.status().message(), "--overwrite")) << again.status();
  opt.overwrite = true;
  opt.threads = 1;
  auto over = PrepareDataset(tok, opt);
  ASSERT_TRUE(over.ok()) << over.status();
  auto t1 = TokenDataset::Open(dir + "/out", "train");
  ASSERT_TRUE(t1.ok());
  EXPECT_EQ(ReadAll(*t1), train);
  EXPECT_EQ(over->manifest.ToJson(), r->manifest.ToJson());
}

TEST(PrepareTest, SingleBigDocumentGetsATailValSplitAtALineBreak) {
  const std::string dir = TestDir();
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "verse " + std::to_string(i) + " and so on\n";
  WriteFile(dir + "/kjv.txt", text);
  ByteTokenizer tok;
  PrepareOptions opt;
  opt.inputs = {dir + "/kjv.txt"};
  opt.output = dir + "/out";
  opt.val_fraction = 0.05;
  opt.shard_tokens = 10000;
  auto r = PrepareDataset(tok, opt);
  ASSERT_TRUE(r.ok()) << r.status();
  const size_t cut = ValCut(text, 0.05);
  EXPECT_EQ(text[cut - 1], '\n');
  auto t = TokenDataset::Open(dir + "/out", "train");
  auto v = TokenDataset::Open(dir + "/out", "val");
  ASSERT_TRUE(t.ok() && v.ok());
  std::vector<int32_t> train = tok.Encode(text.substr(0, cut)), val = tok.Encode(text.substr(cut));
  train.push_back(256);
  val.push_back(256);
  EXPECT_EQ(ReadAll(*t), train);
  EXPECT_EQ(ReadAll(*v), val);
  EXPECT_NEAR(static_cast<double>(val.size()) / text.size(), 0.05, 0.01);
}

TEST(PrepareTest, ResumesAnInterruptedRunExactly) {
  const std::string dir = TestDir();
  const std::vector<std::string> docs = MakeDocs(300);
  // Two inputs: a directory of text files and a JSONL file.
  for (int i = 0; i < 100; ++i) {
    WriteFile(dir + "/in/" + std::to_string(1000 + i) + ".txt", docs[i]);
  }
  WriteFile(dir + "/more.jsonl", JsonlOf(std::vector<std::string>(docs.begin() + 100, docs.end())));
  ByteTokenizer tok;
  PrepareOptions opt;
  opt.inputs = {dir + "/in", dir + "/more.jsonl"};
  opt.output = dir + "/ref";
  opt.val_fraction = 0.1;
  opt.shard_tokens = 2500;
  auto ref = PrepareDataset(tok, opt);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_GE(ref->manifest.train.size(), 5u);
  const std::string ref_json = ref->manifest.ToJson();

  // Simulate interruptions: drop the complete flag and the last k shards (plus a stray temp
  // file and a half-written val shard), then re-run the same command.
  // k = 0: only the val shards and the complete flag are missing (the final document was
  // already in the last train shard).
  for (int k : {0, 1, 3, static_cast<int>(ref->manifest.train.size())}) {
    SCOPED_TRACE(k);
    const std::string out = dir + "/run" + std::to_string(k);
    fs::remove_all(out);
    fs::create_directories(out);
    for (const auto& e : fs::directory_iterator(dir + "/ref")) {
      fs::copy_file(e.path(), out + "/" + e.path().filename().string());
    }
    Manifest m = ref->manifest;
    m.complete = false;
    m.val.clear();
    // The last k shard files are gone; the manifest lists all but the last of them.
    for (int i = 0; i < k; ++i) fs::remove(out + "/" + m.train[m.train.size() - 1 - i].file);
    if (k > 0) m.train.pop_back();
    for (const ShardInfo& v : ref->manifest.val) fs::remove(out + "/" + v.file);
    ASSERT_TRUE(WriteManifest(out, m).ok());
    WriteFile(out + "/train-00099.h5.tmp", "partial");      // an older build's temp name
    WriteFile(out + "/manifest.json.tmp.4242", "partial");  // AtomicFileWriter's
    opt.output = out;
    auto r = PrepareDataset(tok, opt);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->resumed_shards, static_cast<int>(ref->manifest.train.size()) - k);
    EXPECT_EQ(r->manifest.ToJson(), ref_json);
    EXPECT_FALSE(fs::exists(out + "/train-00099.h5.tmp"));
    EXPECT_FALSE(fs::exists(out + "/manifest.json.tmp.4242"));
    auto a = TokenDataset::Open(dir + "/ref", "train");
    auto b = TokenDataset::Open(out, "train");
    ASSERT_TRUE(a.ok() && b.ok()) << b.status();
    EXPECT_EQ(ReadAll(*a), ReadAll(*b));
    auto va = TokenDataset::Open(dir + "/ref", "val");
    auto vb = TokenDataset::Open(out, "val");
    ASSERT_TRUE(va.ok() && vb.ok()) << vb.status();
    EXPECT_EQ(ReadAll(*va), ReadAll(*vb));
  }
  // Resuming with other settings is refused.
  {
    const std::string out = dir + "/run1";
    auto m = ReadManifest(out);
    ASSERT_TRUE(m.ok());
    m->complete = false;
    ASSERT_TRUE(WriteManifest(out, *m).ok());
    PrepareOptions other = opt;
    other.output = out;
    other.shard_tokens = 999;
    auto r = PrepareDataset(tok, other);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(Contains(r.status().message(), "--overwrite")) << r.status();
  }
}

// ---------------------------------------------------------------------------------------------
// DataLoader

// A dataset whose token i is i, so a window's first token names its start.
class DataLoaderTest : public ::testing::Test {
 protected:
  void Make(int n, int64_t shard_tokens = 1 << 20) {
    const std::string dir = TestDir() + "/pos";
    ASSERT_TRUE(WriteTokenDataset(dir, Meta(n + 1), Iota(n), {}, shard_tokens).ok());
    auto t = TokenDataset::Open(dir, "train");
    ASSERT_TRUE(t.ok()) << t.status();
    data_ = std::make_unique<TokenDataset>(std::move(*t));
  }
  DataLoader Loader(int seq_len, int batch, uint64_t seed, int rank = 0, int world = 1) {
    auto s = DataLoader::Create(data_.get(), seq_len, batch, seed, rank, world);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  static std::vector<int32_t> Draw(DataLoader& s) {
    std::vector<int32_t> out(static_cast<size_t>(s.batch_size()) * (s.seq_len() + 1));
    absl::Status st = s.Next(out.data());
    EXPECT_TRUE(st.ok()) << st;
    return out;
  }
  std::unique_ptr<TokenDataset> data_;
};

TEST_F(DataLoaderTest, SameSeedSameBatchesDifferentSeedDifferent) {
  Make(300);
  DataLoader a = Loader(8, 4, 123), b = Loader(8, 4, 123), c = Loader(8, 4, 124);
  bool any_difference = false;
  for (int i = 0; i < 30; ++i) {  // ~3 epochs of 37 windows
    std::vector<int32_t> ba = Draw(a), bb = Draw(b), bc = Draw(c);
    EXPECT_EQ(ba, bb) << "batch " << i;
    any_difference |= ba != bc;
  }
  EXPECT_TRUE(any_difference);
}

TEST_F(DataLoaderTest, EachEpochCoversEveryWindowOnce) {
  Make(300);
  const int S = 8;
  DataLoader s = Loader(S, 5, 99);  // 5 does not divide 37: batches straddle epochs
  const int64_t nw = (300 - 1) / S;
  ASSERT_EQ(s.windows_per_epoch(), nw);
  std::vector<int64_t> starts;
  while (starts.size() < static_cast<size_t>(3 * nw)) {
    std::vector<int32_t> batch = Draw(s);
    for (int b = 0; b < 5; ++b) starts.push_back(batch[b * (S + 1)]);
  }
  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 3; ++e) {
    std::vector<int64_t> order(starts.begin() + e * nw, starts.begin() + (e + 1) * nw);
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < nw; ++i) ASSERT_EQ(sorted[i], i * S) << "epoch " << e;
    epochs.push_back(order);
  }
  EXPECT_NE(epochs[0], epochs[1]);  // reshuffled each epoch
  std::vector<int64_t> identity(nw);
  for (int64_t i = 0; i < nw; ++i) identity[i] = i * S;
  EXPECT_NE(epochs[0], identity);
  EXPECT_EQ(s.state().seed, 99u);
  // 23 batches = 115 windows: three whole epochs and 4 windows of the fourth.
  ASSERT_EQ(starts.size(), 115u);
  EXPECT_EQ(s.state().epoch, 3);
  EXPECT_EQ(s.state().cursor, 4);
}

TEST_F(DataLoaderTest, WindowsPackAcrossDocumentsAndShards) {
  // Shards of 7 tokens: most windows of 10 straddle a shard boundary; read lazily too.
  Make(200, /*shard_tokens=*/7);
  const int S = 16;
  for (bool lazy : {false, true}) {
    if (lazy) {
      OpenOptions o;
      o.max_resident_bytes = 0;
      auto t = TokenDataset::Open(data_->dir(), "train", o);
      ASSERT_TRUE(t.ok());
      ASSERT_FALSE(t->resident());
      data_ = std::make_unique<TokenDataset>(std::move(*t));
    }
    DataLoader s = Loader(S, 3, 5);
    for (int i = 0; i < 10; ++i) {
      std::vector<int32_t> batch = Draw(s);
      for (int b = 0; b < 3; ++b) {
        const int32_t* row = batch.data() + b * (S + 1);
        EXPECT_EQ(row[0] % S, 0);
        for (int k = 0; k < S; ++k) EXPECT_EQ(row[k + 1], row[k] + 1);  // targets = shifted
      }
    }
  }
  // Real documents: a window holds the end of one document, eos, and the next one.
  const std::string dir = TestDir() + "/docs";
  ByteTokenizer tok;
  std::vector<int32_t> stream;
  for (const char* d : {"abc", "defgh", "ij"}) {
    for (int32_t id : tok.Encode(d)) stream.push_back(id);
    stream.push_back(256);
  }
  ASSERT_TRUE(WriteTokenDataset(dir, tok, stream, {}, 4).ok());
  auto t = TokenDataset::Open(dir, "train");
  ASSERT_TRUE(t.ok());
  std::vector<int32_t> w(7);
  ASSERT_TRUE(t->ReadWindow(6, 0, w.data()).ok());
  EXPECT_EQ(tok.Decode(w), "abc<|endoftext|>def");
}

TEST_F(DataLoaderTest, ShuffleMatchesThePortableReference) {
  // Reference orders computed independently (splitmix64 + Fisher-Yates with rejection
  // sampling, seed ^ epoch * 0x9E3779B97F4A7C15) in a separate Python implementation.
  Make(11);  // 10 windows of seq_len 1
  DataLoader s = Loader(1, 10, 20240607);
  const std::vector<std::vector<int32_t>> expected = {{0, 1, 8, 6, 4, 3, 2, 7, 5, 9},
                                                      {1, 8, 5, 9, 6, 2, 4, 3, 0, 7},
                                                      {6, 4, 7, 9, 0, 3, 8, 2, 5, 1}};
  for (int e = 0; e < 3; ++e) {
    std::vector<int32_t> batch = Draw(s);
    std::vector<int32_t> order;
    for (int b = 0; b < 10; ++b) order.push_back(batch[b * 2]);
    EXPECT_EQ(order, expected[e]) << "epoch " << e;
  }
}

TEST_F(DataLoaderTest, RanksAreDisjointAndTogetherCoverTheEpoch) {
  Make(241);  // 60 windows of 4
  const int S = 4;
  for (int world : {1, 2, 3, 4, 6}) {
    SCOPED_TRACE(world);
    DataLoader single = Loader(S, 1, 11);
    std::vector<int64_t> shuffled;
    for (int i = 0; i < 60; ++i) shuffled.push_back(single.NextWindow());
    std::vector<std::vector<int64_t>> per_rank(world);
    for (int r = 0; r < world; ++r) {
      DataLoader l = Loader(S, 2, 11, r, world);
      for (int i = 0; i < 60 / world; ++i) per_rank[r].push_back(l.NextWindow());
      EXPECT_EQ(l.state().cursor, 60);
      EXPECT_EQ(l.state().epoch, 0);
      l.NextWindow();
      EXPECT_EQ(l.state().epoch, 1);
    }
    std::vector<int64_t> all;
    for (int r = 0; r < world; ++r) {
      // Rank r takes positions r, r + w, ... of the shared shuffled order.
      for (size_t i = 0; i < per_rank[r].size(); ++i) {
        EXPECT_EQ(per_rank[r][i], shuffled[i * world + r]);
      }
      all.insert(all.end(), per_rank[r].begin(), per_rank[r].end());
    }
    std::sort(all.begin(), all.end());
    for (int64_t i = 0; i < 60; ++i) ASSERT_EQ(all[i], i);  // no overlap, nothing missing
  }
  // 7 ranks over 60 windows: 8 rounds; the 4 leftover windows are skipped this epoch.
  DataLoader l = Loader(S, 1, 11, 6, 7);
  EXPECT_EQ(l.rounds_per_epoch(), 8);
  EXPECT_FALSE(DataLoader::Create(data_.get(), S, 1, 0, 2, 2).ok());
  EXPECT_FALSE(DataLoader::Create(data_.get(), S, 1, 0, 0, 61).ok());
}

TEST_F(DataLoaderTest, RestoreContinuesExactly) {
  Make(120);
  const int S = 10, B = 3;  // 11 windows an epoch
  // Resume after every prefix length, including ones ending exactly at an epoch boundary
  // (cursor == windows_per_epoch) and inside a batch that straddles one.
  for (int prefix = 0; prefix < 12; ++prefix) {
    DataLoader original = Loader(S, B, 77);
    for (int i = 0; i < prefix; ++i) Draw(original);
    const DataLoader::State saved = original.state();
    DataLoader resumed = Loader(S, B, /*seed=*/1);  // the seed comes from the state
    ASSERT_TRUE(resumed.Restore(saved).ok());
    EXPECT_EQ(resumed.state().seed, 77u);
    for (int i = 0; i < 12; ++i) {
      ASSERT_EQ(Draw(resumed), Draw(original)) << "prefix " << prefix << " batch " << i;
    }
    EXPECT_EQ(resumed.state().epoch, original.state().epoch);
    EXPECT_EQ(resumed.state().cursor, original.state().cursor);
  }
  // A state saved exactly at the end of an epoch.
  DataLoader a = Loader(S, 11, 5);
  Draw(a);
  EXPECT_EQ(a.state().epoch, 0);
  EXPECT_EQ(a.state().cursor, 11);
  DataLoader b = Loader(S, 11, 0);
  ASSERT_TRUE(b.Restore(a.state()).ok());
  EXPECT_EQ(Draw(b), Draw(a));
  EXPECT_EQ(a.state().epoch, 1);
}

TEST_F(DataLoaderTest, ResumeMidEpochWithRanksAndWithAnotherWorldSize) {
  Make(241);  // 60 windows of 4
  const int S = 4;
  // Two ranks run 7 rounds and checkpoint; both resume and continue exactly.
  std::vector<DataLoader> ranks;
  for (int r = 0; r < 2; ++r) ranks.push_back(Loader(S, 1, 3, r, 2));
  for (int i = 0; i < 7; ++i)
    for (auto& l : ranks) l.NextWindow();
  const DataLoader::State saved = ranks[0].state();
  EXPECT_EQ(saved.cursor, 14);
  EXPECT_EQ(saved.world, 2);
  for (int r = 0; r < 2; ++r) {
    DataLoader resumed = Loader(S, 1, 0, r, 2);
    ASSERT_TRUE(resumed.Restore(saved).ok());
    for (int i = 0; i < 40; ++i) ASSERT_EQ(resumed.NextWindow(), ranks[r].NextWindow());
  }
  // The same position on one rank: the rest of the epoch is exactly what neither took yet.
  DataLoader one = Loader(S, 1, 0);
  ASSERT_TRUE(one.Restore(saved).ok());
  DataLoader ref = Loader(S, 1, 3);
  std::vector<int64_t> order;
  for (int i = 0; i < 60; ++i) order.push_back(ref.NextWindow());
  for (int i = 14; i < 60; ++i) EXPECT_EQ(one.NextWindow(), order[i]);
  EXPECT_EQ(one.state().epoch, 0);
}

TEST_F(DataLoaderTest, RestoreRejectsACursorPastTheEpoch) {
  Make(120);
  DataLoader s = Loader(10, 2, 1);
  absl::Status past = s.Restore({1, 0, 12});
  ASSERT_FALSE(past.ok());
  EXPECT_TRUE(Contains(past.message(), "cursor 12")) << past;
  EXPECT_FALSE(s.Restore({1, -1, 0}).ok());
  EXPECT_FALSE(s.Restore({1, 0, -1}).ok());
  EXPECT_TRUE(s.Restore({1, 4, 11}).ok());
  EXPECT_EQ(s.state().epoch, 4);
}

TEST_F(DataLoaderTest, ErrorWhenTheDatasetIsTooSmall) {
  Make(8);
  auto small = DataLoader::Create(data_.get(), 8, 1, 0);
  ASSERT_FALSE(small.ok());
  EXPECT_TRUE(Contains(small.status().message(), "8 tokens")) << small.status();
  auto fits = DataLoader::Create(data_.get(), 7, 2, 0);
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(fits->windows_per_epoch(), 1);
  std::vector<int32_t> out(16);
  ASSERT_TRUE(fits->Next(out.data()).ok());  // the one window, twice (two epochs)
  for (int k = 0; k < 8; ++k) {
    EXPECT_EQ(out[k], k);
    EXPECT_EQ(out[8 + k], k);
  }
  EXPECT_FALSE(DataLoader::Create(data_.get(), 0, 1, 0).ok());
  EXPECT_FALSE(DataLoader::Create(data_.get(), 4, 0, 0).ok());
}

}  // namespace
}  // namespace st
