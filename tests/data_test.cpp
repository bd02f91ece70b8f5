// Tests for data/: the byte tokenizer, H5File, atomic HDF5 writes, token files, the split,
// and the BatchSampler (determinism, epoch coverage, exact resume).
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
#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "model/check.h"

namespace st {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test under the gtest temp dir.
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::path(::testing::TempDir()) / "st_data_test" /
                 (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

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
  EXPECT_EQ(bad.status().message(), "unknown tokenizer 'x'; known: byte");
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
  EXPECT_FALSE(fs::exists(file + ".tmp"));

  absl::Status s = write_version(2, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "writer gave up");
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  {
    auto f = H5File::Open(file);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(*f->ReadIntAttr("/", "version"), 1);
  }

  ASSERT_TRUE(write_version(3, false).ok());
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  auto f = H5File::Open(file);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f->ReadIntAttr("/", "version"), 3);
  float w = 0;
  ASSERT_TRUE(f->ReadDataset("/params/w", H5Type::kF32, &w, 4).ok());
  EXPECT_EQ(w, 3.0f);
}

TEST(H5FileTest, RenameOverReportsErrno) {
  const std::string dir = TestDir();
  absl::Status s = RenameOver(dir + "/missing", dir + "/target");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.message(), "missing")) << s;
  EXPECT_TRUE(Contains(s.message(), "No such file")) << s;
  RemoveQuietly(dir + "/missing");  // no error, no crash
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
// Token files

TEST(TokenDatasetTest, WriteAndOpenRoundTrip) {
  const std::string file = TestDir() + "/tokens.h5";
  const std::vector<int32_t> train = {1, 2, 3, 256, 0, 255};
  const std::vector<int32_t> val = {9, 8};
  TokenFileMeta meta{"byte", 257, 256, "unit test"};
  ASSERT_TRUE(WriteTokenFile(file, meta, train, val).ok());
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  {
    auto f = H5File::Open(file);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->Info("/train/tokens")->type, H5Type::kU16);
    EXPECT_EQ(*f->ReadStringAttr("/", "format"), "smallthinker.tokens");
    EXPECT_EQ(*f->ReadIntAttr("/", "version"), 1);
  }
  auto t = TokenDataset::Open(file, "train");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(std::vector<int32_t>(t->data(), t->data() + t->size()), train);
  EXPECT_EQ(t->meta().tokenizer, "byte");
  EXPECT_EQ(t->meta().vocab_size, 257);
  EXPECT_EQ(t->meta().eos_id, 256);
  EXPECT_EQ(t->meta().source, "unit test");
  auto v = TokenDataset::Open(file, "val");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(std::vector<int32_t>(v->data(), v->data() + v->size()), val);
  auto bad_split = TokenDataset::Open(file, "test");
  ASSERT_FALSE(bad_split.ok());
  EXPECT_TRUE(Contains(bad_split.status().message(), "'test'")) << bad_split.status();
}

TEST(TokenDatasetTest, LargeVocabularyUsesUint32AndEmptyVal) {
  const std::string file = TestDir() + "/big.h5";
  const std::vector<int32_t> train = {0, 65535, 65536, 69999};
  TokenFileMeta meta{"bpe70k", 70000, -1, ""};
  ASSERT_TRUE(WriteTokenFile(file, meta, train, {}).ok());
  {
    auto f = H5File::Open(file);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->Info("/train/tokens")->type, H5Type::kU32);
  }
  auto t = TokenDataset::Open(file, "train");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(std::vector<int32_t>(t->data(), t->data() + t->size()), train);
  EXPECT_EQ(t->meta().eos_id, -1);
  auto v = TokenDataset::Open(file, "val");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->size(), 0);
}

TEST(TokenDatasetTest, WriteRejectsIdsOutsideTheVocabulary) {
  const std::string file = TestDir() + "/bad.h5";
  TokenFileMeta meta{"byte", 257, 256, ""};
  const std::vector<int32_t> bad = {1, 257};
  absl::Status s = WriteTokenFile(file, meta, bad, {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.message(), "257")) << s;
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(file + ".tmp"));
}

// Writes a token-like file by hand, with attributes the caller can corrupt.
void WriteRawTokenFile(const std::string& file, const std::string& format, int64_t version,
                       int64_t vocab, const std::vector<uint16_t>& train) {
  auto f = H5File::Create(file);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE(f->WriteDataset("/train/tokens", H5Type::kU16, {static_cast<int64_t>(train.size())},
                              train.data())
                  .ok());
  ASSERT_TRUE(f->WriteDataset("/val/tokens", H5Type::kU16, {0}, nullptr).ok());
  if (!format.empty()) {
    ASSERT_TRUE(f->WriteAttr("/", "format", absl::string_view(format)).ok());
  }
  ASSERT_TRUE(f->WriteAttr("/", "version", version).ok());
  ASSERT_TRUE(f->WriteAttr("/", "tokenizer", absl::string_view("byte")).ok());
  ASSERT_TRUE(f->WriteAttr("/", "vocab_size", vocab).ok());
  ASSERT_TRUE(f->WriteAttr("/", "eos_id", int64_t{-1}).ok());
  ASSERT_TRUE(f->Close().ok());
}

TEST(TokenDatasetTest, OpenValidatesTheFile) {
  const std::string dir = TestDir();
  const std::vector<uint16_t> ok_ids = {1, 2, 3, 9};

  WriteRawTokenFile(dir + "/good.h5", "smallthinker.tokens", 1, 10, ok_ids);
  auto good = TokenDataset::Open(dir + "/good.h5", "train");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->size(), 4);
  EXPECT_EQ(good->meta().source, "");  // absent source attribute is tolerated

  WriteRawTokenFile(dir + "/format.h5", "numpy.tokens", 1, 10, ok_ids);
  auto f = TokenDataset::Open(dir + "/format.h5", "train");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(Contains(f.status().message(), "not a smallthinker token file")) << f.status();
  EXPECT_TRUE(Contains(f.status().message(), "numpy.tokens")) << f.status();

  WriteRawTokenFile(dir + "/noformat.h5", "", 1, 10, ok_ids);
  auto nf = TokenDataset::Open(dir + "/noformat.h5", "train");
  ASSERT_FALSE(nf.ok());
  EXPECT_TRUE(Contains(nf.status().message(), "not a smallthinker token file")) << nf.status();

  WriteRawTokenFile(dir + "/version.h5", "smallthinker.tokens", 2, 10, ok_ids);
  auto v = TokenDataset::Open(dir + "/version.h5", "train");
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Contains(v.status().message(), "version 2")) << v.status();

  WriteRawTokenFile(dir + "/ids.h5", "smallthinker.tokens", 1, 10, {1, 2, 10, 3});
  auto ids = TokenDataset::Open(dir + "/ids.h5", "train");
  ASSERT_FALSE(ids.ok());
  EXPECT_TRUE(Contains(ids.status().message(), "/train/tokens[2] = 10")) << ids.status();
  EXPECT_TRUE(Contains(ids.status().message(), dir + "/ids.h5")) << ids.status();

  auto missing = TokenDataset::Open(dir + "/none.h5", "train");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status().message(), "none.h5")) << missing.status();
}

TEST(TokenDatasetTest, SequentialWindows) {
  const std::string file = TestDir() + "/seq.h5";
  std::vector<int32_t> ids(23);
  for (int i = 0; i < 23; ++i) ids[i] = i;
  ASSERT_TRUE(WriteTokenFile(file, {"pos", 1000, -1, ""}, ids, {1, 2}).ok());
  auto t = TokenDataset::Open(file, "train");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(NumSequentialWindows(*t, 5), 4);  // (23 - 1) / 5
  EXPECT_EQ(NumSequentialWindows(*t, 22), 1);
  EXPECT_EQ(NumSequentialWindows(*t, 23), 0);
  std::vector<int32_t> w(6);
  for (int64_t i = 0; i < 4; ++i) {
    ReadSequentialWindow(*t, 5, i, w.data());
    for (int k = 0; k < 6; ++k) EXPECT_EQ(w[k], i * 5 + k);
  }
  auto v = TokenDataset::Open(file, "val");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(NumSequentialWindows(*v, 1), 1);
  EXPECT_EQ(NumSequentialWindows(*v, 2), 0);
}

// ---------------------------------------------------------------------------------------------
// BatchSampler

// A dataset whose token i is i, so a window's first token names its start.
class BatchSamplerTest : public ::testing::Test {
 protected:
  void Make(int n) {
    const std::string file = TestDir() + "/pos.h5";
    std::vector<int32_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = i;
    ASSERT_TRUE(WriteTokenFile(file, {"pos", n + 1, -1, ""}, ids, {}).ok());
    auto t = TokenDataset::Open(file, "train");
    ASSERT_TRUE(t.ok()) << t.status();
    data_ = std::move(*t);
  }
  BatchSampler Sampler(int seq_len, int batch, uint64_t seed) {
    auto s = BatchSampler::Create(&data_, seq_len, batch, seed);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  static std::vector<int32_t> Draw(BatchSampler& s) {
    std::vector<int32_t> out(static_cast<size_t>(s.batch_size()) * (s.seq_len() + 1));
    s.Next(out.data());
    return out;
  }
  TokenDataset data_;
};

TEST_F(BatchSamplerTest, SameSeedSameBatchesDifferentSeedDifferent) {
  Make(300);
  BatchSampler a = Sampler(8, 4, 123), b = Sampler(8, 4, 123), c = Sampler(8, 4, 124);
  bool any_difference = false;
  for (int i = 0; i < 30; ++i) {  // ~3 epochs of 37 windows
    std::vector<int32_t> ba = Draw(a), bb = Draw(b), bc = Draw(c);
    EXPECT_EQ(ba, bb) << "batch " << i;
    any_difference |= ba != bc;
  }
  EXPECT_TRUE(any_difference);
}

TEST_F(BatchSamplerTest, EachEpochCoversEveryWindowOnce) {
  Make(300);
  const int S = 8;
  BatchSampler s = Sampler(S, 5, 99);  // 5 does not divide 37: batches straddle epochs
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

TEST_F(BatchSamplerTest, TargetsAreInputsShiftedByOne) {
  Make(200);
  const int S = 16;
  BatchSampler s = Sampler(S, 3, 5);
  for (int i = 0; i < 10; ++i) {
    std::vector<int32_t> batch = Draw(s);
    for (int b = 0; b < 3; ++b) {
      const int32_t* row = batch.data() + b * (S + 1);
      EXPECT_EQ(row[0] % S, 0);
      for (int k = 0; k < S; ++k) {
        EXPECT_EQ(row[k + 1], row[k] + 1);  // target k == input k + 1 == next token
        EXPECT_EQ(row[k], data_.data()[row[0] + k]);
      }
    }
  }
}

TEST_F(BatchSamplerTest, ShuffleMatchesThePortableReference) {
  // Reference orders computed independently (splitmix64 + Fisher-Yates with rejection
  // sampling, seed ^ epoch * 0x9E3779B97F4A7C15) in a separate Python implementation.
  Make(11);  // 10 windows of seq_len 1
  BatchSampler s = Sampler(1, 10, 20240607);
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

TEST_F(BatchSamplerTest, RestoreContinuesExactly) {
  Make(120);
  const int S = 10, B = 3;  // 11 windows an epoch
  // Resume after every prefix length, including ones ending exactly at an epoch boundary
  // (cursor == windows_per_epoch) and inside a batch that straddles one.
  for (int prefix = 0; prefix < 12; ++prefix) {
    BatchSampler original = Sampler(S, B, 77);
    for (int i = 0; i < prefix; ++i) Draw(original);
    const BatchSampler::State saved = original.state();
    BatchSampler resumed = Sampler(S, B, /*seed=*/1);  // the seed comes from the state
    ASSERT_TRUE(resumed.Restore(saved).ok());
    EXPECT_EQ(resumed.state().seed, 77u);
    for (int i = 0; i < 12; ++i) {
      ASSERT_EQ(Draw(resumed), Draw(original)) << "prefix " << prefix << " batch " << i;
    }
    EXPECT_EQ(resumed.state().epoch, original.state().epoch);
    EXPECT_EQ(resumed.state().cursor, original.state().cursor);
  }
  // A state saved exactly at the end of an epoch.
  BatchSampler a = Sampler(S, 11, 5);
  Draw(a);
  EXPECT_EQ(a.state().epoch, 0);
  EXPECT_EQ(a.state().cursor, 11);
  BatchSampler b = Sampler(S, 11, 0);
  ASSERT_TRUE(b.Restore(a.state()).ok());
  EXPECT_EQ(Draw(b), Draw(a));
  EXPECT_EQ(a.state().epoch, 1);
}

TEST_F(BatchSamplerTest, RestoreRejectsACursorPastTheEpoch) {
  Make(120);
  BatchSampler s = Sampler(10, 2, 1);
  absl::Status past = s.Restore({1, 0, 12});
  ASSERT_FALSE(past.ok());
  EXPECT_TRUE(Contains(past.message(), "cursor 12")) << past;
  EXPECT_FALSE(s.Restore({1, -1, 0}).ok());
  EXPECT_FALSE(s.Restore({1, 0, -1}).ok());
  EXPECT_TRUE(s.Restore({1, 4, 11}).ok());
  EXPECT_EQ(s.state().epoch, 4);
}

TEST_F(BatchSamplerTest, ErrorWhenTheDatasetIsTooSmall) {
  Make(8);
  auto small = BatchSampler::Create(&data_, 8, 1, 0);
  ASSERT_FALSE(small.ok());
  EXPECT_TRUE(Contains(small.status().message(), "8 tokens")) << small.status();
  auto fits = BatchSampler::Create(&data_, 7, 2, 0);
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(fits->windows_per_epoch(), 1);
  std::vector<int32_t> out(16);
  fits->Next(out.data());  // the one window, twice (two epochs)
  for (int k = 0; k < 8; ++k) {
    EXPECT_EQ(out[k], k);
    EXPECT_EQ(out[8 + k], k);
  }
  EXPECT_FALSE(BatchSampler::Create(&data_, 0, 1, 0).ok());
  EXPECT_FALSE(BatchSampler::Create(&data_, 4, 0, 0).ok());
}

}  // namespace
}  // namespace st
