// Tests of the GGUF container (infer/format/gguf): writer -> reader round trips, the exact byte
// layout, the writer's refusals and atomicity, and one test per class of malformed file.
#include "infer/format/gguf.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "tests/test_util.h"

namespace st {
namespace {

using test_util::FileContents;
using test_util::ListDir;
using test_util::TestDir;
using test_util::WriteFile;

// ---------------------------------------------------------------- crafting bytes

// Little-endian bytes, field by field.
struct Bytes {
  std::string s;
  Bytes& U8(uint8_t v) { return Raw(&v, 1); }
  Bytes& U32(uint32_t v) { return Raw(&v, 4); }
  Bytes& U64(uint64_t v) { return Raw(&v, 8); }
  Bytes& Str(absl::string_view v) {
    U64(v.size());
    s.append(v.data(), v.size());
    return *this;
  }
  Bytes& Raw(const void* p, size_t n) {
    s.append(static_cast<const char*>(p), n);
    return *this;
  }
  Bytes& Raw(absl::string_view v) { return Raw(v.data(), v.size()); }
};

constexpr uint32_t kU32 = static_cast<uint32_t>(GgufType::kUint32);
constexpr uint32_t kStr = static_cast<uint32_t>(GgufType::kString);
constexpr uint32_t kArr = static_cast<uint32_t>(GgufType::kArray);
constexpr uint32_t kF32 = static_cast<uint32_t>(GgmlType::kF32);
constexpr uint32_t kQ4_0 = static_cast<uint32_t>(GgmlType::kQ4_0);

// magic, version, n_tensors, n_kv.
Bytes Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  Bytes b;
  b.Raw("GGUF").U32(version).U64(n_tensors).U64(n_kv);
  return b;
}

// One key-value pair with a UINT32 value.
std::string KvU32(absl::string_view key, uint32_t v) { return Bytes().Str(key).U32(kU32).U32(v).s; }

// One tensor info.
std::string Info(absl::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
  Bytes b;
  b.Str(name).U32(static_cast<uint32_t>(ne.size()));
  for (uint64_t d : ne) b.U64(d);
  b.U32(type).U64(offset);
  return b.s;
}

// `header` zero-padded to `alignment`, then `data`.
std::string WithData(std::string header, absl::string_view data, size_t alignment = 32) {
  header.resize((header.size() + alignment - 1) / alignment * alignment, '\0');
  return header + std::string(data);
}

// A file of the given key-value pairs and tensor infos (already encoded) and `data_bytes` zero
// bytes of tensor data.
std::string File(const std::vector<std::string>& kvs, const std::vector<std::string>& infos,
                 size_t data_bytes, size_t alignment = 32) {
  Bytes b = Header(infos.size(), kvs.size());
  for (const std::string& kv : kvs) b.Raw(kv);
  for (const std::string& i : infos) b.Raw(i);
  return WithData(b.s, std::string(data_bytes, '\0'), alignment);
}

// Parses `bytes`, which must be refused with a message containing every one of `parts`.
void ExpectRefused(const std::string& bytes, std::vector<absl::string_view> parts) {
  absl::StatusOr<GgufFile> f = GgufFile::Parse(bytes, "crafted.gguf");
  ASSERT_FALSE(f.ok()) << "accepted a malformed file";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_TRUE(test_util::Contains(f.status(), "crafted.gguf: ")) << f.status();
  for (absl::string_view p : parts) {
    EXPECT_TRUE(test_util::Contains(f.status(), p)) << "no '" << p << "' in: " << f.status();
  }
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// A tensor to write: name, type, ne and its (random) bytes.
struct TestTensor {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
  std::string data;
};

TestTensor MakeTensor(std::string name, GgmlType type, std::vector<int64_t> ne, uint32_t seed) {
  const GgmlTypeInfo l = GgmlTypeLayout(static_cast<uint32_t>(type));
  int64_t bytes = ne[0] / l.block_elems * l.block_bytes;
  for (size_t i = 1; i < ne.size(); ++i) bytes *= ne[i];
  return TestTensor{std::move(name), type, std::move(ne),
                    RandomBytes(static_cast<size_t>(bytes), seed)};
}

// Writes a GGUF file of `metadata` and `tensors`; a failure is a test failure.
void WriteGguf(const std::string& path, const GgufMetadata& metadata,
               const std::vector<TestTensor>& tensors) {
  absl::StatusOr<GgufWriter> w = GgufWriter::Create(path);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [key, value] : metadata.entries()) {
    ASSERT_TRUE(w->AddMetadata(key, value).ok());
  }
  for (const TestTensor& t : tensors) {
    ASSERT_TRUE(w->AddTensorInfo(t.name, t.type, t.ne, t.data.size()).ok()) << t.name;
  }
  for (const TestTensor& t : tensors) {
    ASSERT_TRUE(w->WriteTensorData(t.name, t.data.data(), t.data.size()).ok()) << t.name;
  }
  absl::Status s = w->Finish();
  ASSERT_TRUE(s.ok()) << s;
}

// A small valid file: two keys (one an array of strings), two tensors.
std::string SmallValidFile() {
  const std::string path = TestDir() + "/small.gguf";
  GgufMetadata md;
  EXPECT_TRUE(md.Add("general.architecture", GgufValue::String("smallthinker")).ok());
  EXPECT_TRUE(md.Add("tokenizer.ggml.tokens", GgufValue::Array<std::string>({"a", "bc", ""})).ok());
  WriteGguf(path, md,
            {MakeTensor("a.weight", GgmlType::kF32, {3, 2}, 1),
             MakeTensor("b.weight", GgmlType::kQ8_0, {32, 2}, 2)});
  return FileContents(path);
}

// ---------------------------------------------------------------- types and values

TEST(GgufTypes, LayoutOfEverySizedType) {
  struct Want {
    uint32_t id;
    const char* name;
    int64_t block, bytes;
  };
  for (const Want& w : std::vector<Want>{{0, "f32", 1, 4},
                                         {1, "f16", 1, 2},
                                         {2, "q4_0", 32, 18},
                                         {3, "q4_1", 32, 20},
                                         {6, "q5_0", 32, 22},
                                         {7, "q5_1", 32, 24},
                                         {8, "q8_0", 32, 34},
                                         {9, "q8_1", 32, 36},
                                         {10, "q2_K", 256, 84},
                                         {11, "q3_K", 256, 110},
                                         {12, "q4_K", 256, 144},
                                         {13, "q5_K", 256, 176},
                                         {14, "q6_K", 256, 210},
                                         {15, "q8_K", 256, 292},
                                         {30, "bf16", 1, 2}}) {
    const GgmlTypeInfo l = GgmlTypeLayout(w.id);
    EXPECT_STREQ(l.name, w.name) << w.id;
    EXPECT_EQ(l.block_elems, w.block) << w.name;
    EXPECT_EQ(l.block_bytes, w.bytes) << w.name;
  }
  EXPECT_EQ(GgmlTypeLayout(4).block_bytes, 0);
  EXPECT_STREQ(GgmlTypeLayout(4).name, "removed");
  EXPECT_EQ(GgmlTypeLayout(16).block_bytes, 0);
  EXPECT_STREQ(GgmlTypeLayout(16).name, "iq2_xxs");
  EXPECT_STREQ(GgmlTypeLayout(43).name, "unknown");
  EXPECT_STREQ(GgmlTypeLayout(0xffffffffu).name, "unknown");
}

TEST(GgufValue, TypedGettersAreExact) {
  GgufMetadata md;
  ASSERT_TRUE(md.Add("smallthinker.block_count", GgufValue::I32(32)).ok());
  ASSERT_TRUE(md.Add("tokenizer.ggml.token_type", GgufValue::Array<int32_t>({1, 3})).ok());
  absl::StatusOr<uint32_t> u = md.Get<uint32_t>("smallthinker.block_count");
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.status().message(), "key smallthinker.block_count has type INT32, expected UINT32");
  EXPECT_EQ(*md.Get<int32_t>("smallthinker.block_count"), 32);
  absl::StatusOr<std::vector<uint32_t>> a = md.GetArray<uint32_t>("tokenizer.ggml.token_type");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(),
            "key tokenizer.ggml.token_type has type ARRAY[INT32], expected ARRAY[UINT32]");
  EXPECT_EQ(md.Get<std::string>("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(md.Get<std::string>("nope").status().message(), "key nope is absent");
  EXPECT_EQ(md.Add("smallthinker.block_count", GgufValue::U32(1)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(md.entries()[1].first, "tokenizer.ggml.token_type");  // insertion order
}

TEST(GgufValue, DebugString) {
  EXPECT_EQ(GgufValue::U32(32).DebugString(), "UINT32 32");
  EXPECT_EQ(GgufValue::I8(-3).DebugString(), "INT8 -3");
  EXPECT_EQ(GgufValue::Bool(true).DebugString(), "BOOL true");
  EXPECT_EQ(GgufValue::String("gpt2").DebugString(), "STRING \"gpt2\"");
  EXPECT_EQ(GgufValue::Array<int32_t>({1, -2, 3}).DebugString(2), "ARRAY[INT32] (3) [1, -2, ...]");
}

// ---------------------------------------------------------------- round trips

TEST(GgufRoundTrip, EveryMetadataType) {
  GgufMetadata md;
  const float nan_bits = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(md.Add("u8", GgufValue::U8(255)).ok());
  ASSERT_TRUE(md.Add("i8", GgufValue::I8(-128)).ok());
  ASSERT_TRUE(md.Add("u16", GgufValue::U16(65535)).ok());
  ASSERT_TRUE(md.Add("i16", GgufValue::I16(-32768)).ok());
  ASSERT_TRUE(md.Add("u32", GgufValue::U32(4000000000u)).ok());
  ASSERT_TRUE(md.Add("i32", GgufValue::I32(-2000000000)).ok());
  ASSERT_TRUE(md.Add("u64", GgufValue::U64(std::numeric_limits<uint64_t>::max())).ok());
  ASSERT_TRUE(md.Add("i64", GgufValue::I64(std::numeric_limits<int64_t>::min())).ok());
  ASSERT_TRUE(md.Add("f32", GgufValue::F32(1e-6f)).ok());
  ASSERT_TRUE(md.Add("f32.nan", GgufValue::F32(nan_bits)).ok());
  ASSERT_TRUE(md.Add("f64", GgufValue::F64(-1.5e300)).ok());
  ASSERT_TRUE(md.Add("bool.t", GgufValue::Bool(true)).ok());
  ASSERT_TRUE(md.Add("bool.f", GgufValue::Bool(false)).ok());
  ASSERT_TRUE(md.Add("str", GgufValue::String(std::string("h\xc3\xa9llo\n\0x", 9))).ok());
  ASSERT_TRUE(md.Add("str.empty", GgufValue::String("")).ok());
  ASSERT_TRUE(md.Add("a.u8", GgufValue::Array<uint8_t>({0, 7, 255})).ok());
  ASSERT_TRUE(md.Add("a.i8", GgufValue::Array<int8_t>({-1, 1})).ok());
  ASSERT_TRUE(md.Add("a.u16", GgufValue::Array<uint16_t>({1, 65535})).ok());
  ASSERT_TRUE(md.Add("a.i16", GgufValue::Array<int16_t>({-7})).ok());
  ASSERT_TRUE(md.Add("a.u32", GgufValue::Array<uint32_t>({151643, 151645})).ok());
  ASSERT_TRUE(md.Add("a.i32", GgufValue::Array<int32_t>({1, 1, 3, 5, 6})).ok());
  ASSERT_TRUE(md.Add("a.u64", GgufValue::Array<uint64_t>({1ull << 63})).ok());
  ASSERT_TRUE(md.Add("a.i64", GgufValue::Array<int64_t>({-1, 0, 1})).ok());
  ASSERT_TRUE(md.Add("a.f32", GgufValue::Array<float>({0.5f, -0.f})).ok());
  ASSERT_TRUE(md.Add("a.f64", GgufValue::Array<double>({3.25})).ok());
  ASSERT_TRUE(md.Add("a.bool", GgufValue::Array<bool>({true, false, true})).ok());
  ASSERT_TRUE(md.Add("a.str", GgufValue::Array<std::string>({"\xc4\xa0the", "a b", ""})).ok());
  ASSERT_TRUE(md.Add("a.empty", GgufValue::Array<int32_t>({})).ok());
  const std::string path = TestDir() + "/meta.gguf";
  WriteGguf(path, md, {});

  absl::StatusOr<GgufFile> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_TRUE(f->tensors().empty());
  ASSERT_EQ(f->metadata().size(), md.size());
  for (size_t i = 0; i < md.size(); ++i) {
    EXPECT_EQ(f->metadata().entries()[i].first, md.entries()[i].first);  // file order kept
    EXPECT_TRUE(f->metadata().entries()[i].second == md.entries()[i].second)
        << md.entries()[i].first << ": " << f->metadata().entries()[i].second.DebugString();
  }
  const GgufMetadata& m = f->metadata();
  EXPECT_EQ(*m.Get<uint8_t>("u8"), 255);
  EXPECT_EQ(*m.Get<int8_t>("i8"), -128);
  EXPECT_EQ(*m.Get<uint16_t>("u16"), 65535);
  EXPECT_EQ(*m.Get<int16_t>("i16"), -32768);
  EXPECT_EQ(*m.Get<uint32_t>("u32"), 4000000000u);
  EXPECT_EQ(*m.Get<int32_t>("i32"), -2000000000);
  EXPECT_EQ(*m.Get<uint64_t>("u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*m.Get<int64_t>("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(*m.Get<float>("f32"), 1e-6f);
  EXPECT_TRUE(std::isnan(*m.Get<float>("f32.nan")));
  EXPECT_EQ(*m.Get<double>("f64"), -1.5e300);
  EXPECT_TRUE(*m.Get<bool>("bool.t"));
  EXPECT_FALSE(*m.Get<bool>("bool.f"));
  EXPECT_EQ(*m.Get<std::string>("str"), std::string("h\xc3\xa9llo\n\0x", 9));
  EXPECT_EQ(*m.Get<std::string>("str.empty"), "");
  EXPECT_EQ(*m.GetArray<uint8_t>("a.u8"), (std::vector<uint8_t>{0, 7, 255}));
  EXPECT_EQ(*m.GetArray<int8_t>("a.i8"), (std::vector<int8_t>{-1, 1}));
  EXPECT_EQ(*m.GetArray<uint16_t>("a.u16"), (std::vector<uint16_t>{1, 65535}));
  EXPECT_EQ(*m.GetArray<int16_t>("a.i16"), (std::vector<int16_t>{-7}));
  EXPECT_EQ(*m.GetArray<uint32_t>("a.u32"), (std::vector<uint32_t>{151643, 151645}));
  EXPECT_EQ(*m.GetArray<int32_t>("a.i32"), (std::vector<int32_t>{1, 1, 3, 5, 6}));
  EXPECT_EQ(*m.GetArray<uint64_t>("a.u64"), (std::vector<uint64_t>{1ull << 63}));
  EXPECT_EQ(*m.GetArray<int64_t>("a.i64"), (std::vector<int64_t>{-1, 0, 1}));
  EXPECT_EQ(*m.GetArray<float>("a.f32"), (std::vector<float>{0.5f, -0.f}));
  EXPECT_EQ(*m.GetArray<double>("a.f64"), (std::vector<double>{3.25}));
  EXPECT_EQ(*m.GetArray<bool>("a.bool"), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(*m.GetArray<std::string>("a.str"),
            (std::vector<std::string>{"\xc4\xa0the", "a b", ""}));
  EXPECT_TRUE(m.GetArray<int32_t>("a.empty")->empty());
}

TEST(GgufRoundTrip, TensorsOfSeveralTypes) {
  for (uint32_t alignment : {0u, 64u, 1u}) {  // 0: no general.alignment key (32)
    SCOPED_TRACE(alignment);
    GgufMetadata md;
    if (alignment != 0) {
      ASSERT_TRUE(md.Add(kGgufAlignmentKey, GgufValue::U32(alignment)).ok());
    }
    const std::vector<TestTensor> tensors = {
        MakeTensor("token_embd.weight", GgmlType::kF16, {64, 5}, 1),
        MakeTensor("output_norm.weight", GgmlType::kF32, {7}, 2),
        MakeTensor("blk.0.attn_q.weight", GgmlType::kQ4_0, {64, 3}, 3),
        MakeTensor("blk.0.ffn_gate_exps.weight", GgmlType::kQ8_0, {32, 2, 3}, 4),
        MakeTensor("blk.0.ffn_down_exps.weight", GgmlType::kQ6_K, {256, 1, 2}, 5),
        MakeTensor("blk.0.ffn_up_exps.weight", GgmlType::kQ4_K, {256, 2, 1, 2}, 6),
        MakeTensor("bf", GgmlType::kBF16, {3}, 7),
        MakeTensor("q8_1", static_cast<GgmlType>(kGgmlTypeQ8_1), {32}, 8),
    };
    const std::string path = TestDir() + "/tensors.gguf";
    WriteGguf(path, md, tensors);
    absl::StatusOr<GgufFile> f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    const uint64_t a = alignment == 0 ? 32 : alignment;
    EXPECT_EQ(f->alignment(), a);
    EXPECT_EQ(f->data_offset() % a, 0u);
    ASSERT_EQ(f->tensors().size(), tensors.size());
    uint64_t offset = 0;  // llama.cpp's rule: the running sum of padded sizes
    for (size_t i = 0; i < tensors.size(); ++i) {
      const GgufTensorInfo& t = f->tensors()[i];
      EXPECT_EQ(t.name, tensors[i].name);
      EXPECT_EQ(t.type, tensors[i].type);
      EXPECT_EQ(t.ne, tensors[i].ne);
      EXPECT_EQ(t.nbytes, tensors[i].data.size());
      EXPECT_EQ(t.offset, offset) << t.name;
      offset += (t.nbytes + a - 1) / a * a;
      absl::StatusOr<std::string> raw = f->ReadRaw(t);
      ASSERT_TRUE(raw.ok()) << raw.status();
      EXPECT_EQ(*raw, tensors[i].data) << t.name;
      EXPECT_EQ(f->FindTensor(t.name), &t);
    }
    EXPECT_EQ(f->file_size(), f->data_offset() + offset);  // the last tensor is padded too
    EXPECT_EQ(f->FindTensor("absent"), nullptr);
    // Padding bytes are zero.
    const std::string bytes = FileContents(path);
    for (size_t i = 0; i + 1 < f->tensors().size(); ++i) {
      const GgufTensorInfo& t = f->tensors()[i];
      const uint64_t end = f->data_offset() + t.offset + t.nbytes;
      const uint64_t next = f->data_offset() + f->tensors()[i + 1].offset;
      EXPECT_EQ(bytes.substr(end, next - end), std::string(next - end, '\0'));
    }
    // The same bytes parse from memory alike.
    absl::StatusOr<GgufFile> m = GgufFile::Parse(bytes);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(*m->ReadRaw(m->tensors()[3]), tensors[3].data);
  }
}

TEST(GgufRoundTrip, ChunkedTensorWrites) {
  const TestTensor t = MakeTensor("x", GgmlType::kQ4_0, {32, 4}, 9);
  const std::string path = TestDir() + "/chunked.gguf";
  absl::StatusOr<GgufWriter> w = GgufWriter::Create(path);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->AddTensorInfo(t.name, t.type, t.ne, t.data.size()).ok());
  for (size_t at = 0; at < t.data.size(); at += 10) {
    const size_t n = std::min<size_t>(10, t.data.size() - at);
    ASSERT_TRUE(w->WriteTensorData("x", t.data.data() + at, n).ok());
  }
  ASSERT_TRUE(w->Finish().ok());
  absl::StatusOr<GgufFile> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f->ReadRaw(f->tensors()[0]), t.data);
}

// A header of about 2.5 MB: Open reads it through its 1 MiB pread window (refilled many times,
// elements straddling its end) and reads a 700 KB string past the window; Parse agrees.
TEST(GgufRoundTrip, LargeHeaderCrossesReadWindows) {
  std::vector<std::string> tokens;
  for (int i = 0; i < 150000; ++i) tokens.push_back(absl::StrCat("tok", i * 7919));
  const std::string big(700000, 'j');
  GgufMetadata md;
  ASSERT_TRUE(md.Add("tokenizer.ggml.tokens", GgufValue::Array<std::string>(tokens)).ok());
  ASSERT_TRUE(md.Add("tokenizer.chat_template", GgufValue::String(big)).ok());
  ASSERT_TRUE(md.Add("after", GgufValue::U16(9)).ok());
  const std::string path = TestDir() + "/large.gguf";
  WriteGguf(path, md, {MakeTensor("t", GgmlType::kF32, {5}, 3)});
  absl::StatusOr<GgufFile> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_GT(f->data_offset(), 2u << 20);
  EXPECT_EQ(*f->metadata().GetArray<std::string>("tokenizer.ggml.tokens"), tokens);
  EXPECT_EQ(*f->metadata().Get<std::string>("tokenizer.chat_template"), big);
  EXPECT_EQ(*f->metadata().Get<uint16_t>("after"), 9);
  const std::string bytes = FileContents(path);
  absl::StatusOr<GgufFile> m = GgufFile::Parse(bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->data_offset(), f->data_offset());
  EXPECT_EQ(*m->ReadRaw(m->tensors()[0]), *f->ReadRaw(f->tensors()[0]));
}

// The whole file of one UINT32 key and one F32 tensor of 2 elements, byte by byte.
TEST(GgufLayout, ByteExactTinyFile) {
  const std::string path = TestDir() + "/tiny.gguf";
  absl::StatusOr<GgufWriter> w = GgufWriter::Create(path);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->AddMetadata("a", GgufValue::U32(7)).ok());
  ASSERT_TRUE(w->AddTensorInfo("t", GgmlType::kF32, {2}, 8).ok());
  const float data[2] = {1.0f, -2.0f};
  ASSERT_TRUE(w->WriteTensorData("t", data, 8).ok());
  ASSERT_TRUE(w->Finish().ok());

  Bytes want;
  want.Raw("GGUF").U32(3).U64(1).U64(1);  // magic, version 3, n_tensors 1, n_kv 1
  ASSERT_EQ(want.s.size(), 24u);
  want.Str("a").U32(4).U32(7);  // the pair: key "a", type UINT32 (4), value 7
  ASSERT_EQ(want.s.size(), 41u);
  want.Str("t").U32(1).U64(2).U32(0).U64(0);  // name "t", n_dims 1, ne[0] 2, F32 (0), offset 0
  ASSERT_EQ(want.s.size(), 74u);
  want.Raw(std::string(96 - 74, '\0'));                          // the header padded to 32
  want.Raw(std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));  // 1.0f, -2.0f at 96
  want.Raw(std::string(128 - 104, '\0'));                        // the last tensor padded too
  EXPECT_EQ(FileContents(path), want.s);

  absl::StatusOr<GgufFile> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data_offset(), 96u);
  EXPECT_EQ(f->tensors()[0].offset, 0u);
}

TEST(GgufRoundTrip, Version2IsRead) {
  std::string bytes = File({KvU32("a", 1)}, {Info("t", {4}, kF32, 0)}, 16);
  bytes[4] = 2;
  absl::StatusOr<GgufFile> f = GgufFile::Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), 2u);
}

TEST(GgufRoundTrip, NestedArraysAreReadUpToDepthFour) {
  // ARRAY[ARRAY[ARRAY[ARRAY[UINT32]]]] with one element at each level.
  Bytes v;
  v.Str("nest").U32(kArr);
  for (int level = 0; level < 3; ++level) v.U32(kArr).U64(1);
  v.U32(kU32).U64(2).U32(5).U32(6);
  absl::StatusOr<GgufFile> f = GgufFile::Parse((Header(0, 1).Raw(v.s)).s);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufValue* n = f->metadata().Find("nest");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->TypeName(), "ARRAY[ARRAY[ARRAY[ARRAY[UINT32]]]]");
  EXPECT_EQ(*n->nested()[0].nested()[0].nested()[0].AsArray<uint32_t>(),
            (std::vector<uint32_t>{5, 6}));
}

// ---------------------------------------------------------------- the writer's refusals

TEST(GgufWriter, RefusesMisuse) {
  const std::string path = TestDir() + "/misuse.gguf";
  absl::StatusOr<GgufWriter> w = GgufWriter::Create(path);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->AddMetadata("k", GgufValue::U8(1)).ok());
  EXPECT_EQ(w->AddMetadata("k", GgufValue::U8(2)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(w->AddMetadata("", GgufValue::U8(2)).code(), absl::StatusCode::kInvalidArgument);
  const std::string with_nested = Header(0, 1).Str("n").U32(kArr).U32(kArr).U64(0).s;
  absl::StatusOr<GgufFile> read = GgufFile::Parse(with_nested);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(
      test_util::Contains(w->AddMetadata("n", *read->metadata().Find("n")), "nested array"));
  EXPECT_TRUE(test_util::Contains(w->AddMetadata(kGgufAlignmentKey, GgufValue::I32(64)),
                                  "key general.alignment has type INT32, expected UINT32"));
  EXPECT_TRUE(test_util::Contains(w->AddMetadata(kGgufAlignmentKey, GgufValue::U32(48)),
                                  "not a power of two"));
  EXPECT_TRUE(test_util::Contains(w->AddTensorInfo(std::string(64, 'n'), GgmlType::kF32, {1}, 4),
                                  "at most 63"));
  EXPECT_TRUE(test_util::Contains(w->AddTensorInfo("z", GgmlType::kF32, {0}, 0), "ne[0] = 0"));
  EXPECT_TRUE(
      test_util::Contains(w->AddTensorInfo("z", GgmlType::kQ4_0, {33}, 18), "not a multiple"));
  EXPECT_TRUE(test_util::Contains(w->AddTensorInfo("z", GgmlType::kF32, {3}, 11),
                                  "is given as 11 bytes but ne [3] in f32 is 12"));
  ASSERT_TRUE(w->AddTensorInfo("a", GgmlType::kF32, {2}, 8).ok());
  ASSERT_TRUE(w->AddTensorInfo("b", GgmlType::kF32, {1}, 4).ok());
  EXPECT_EQ(w->AddTensorInfo("a", GgmlType::kF32, {2}, 8).code(), absl::StatusCode::kAlreadyExists);
  const char data[8] = {};
  EXPECT_TRUE(test_util::Contains(w->WriteTensorData("b", data, 4), "comes before tensor a"));
  EXPECT_TRUE(test_util::Contains(w->WriteTensorData("c", data, 4), "has no tensor info"));
  EXPECT_TRUE(test_util::Contains(w->WriteTensorData("a", data, 9), "would pass its size of 8"));
  ASSERT_TRUE(w->WriteTensorData("a", data, 4).ok());
  EXPECT_TRUE(test_util::Contains(w->WriteTensorData("b", data, 4),
                                  "starts before tensor a is complete (4 of 8 bytes)"));
  EXPECT_TRUE(test_util::Contains(w->Finish(), "tensor a has 4 of its 8 bytes"));
  EXPECT_EQ(w->AddMetadata("late", GgufValue::U8(1)).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(w->WriteTensorData("a", data, 4).ok());
  EXPECT_TRUE(test_util::Contains(w->WriteTensorData("a", data, 1), "is complete"));
  EXPECT_TRUE(test_util::Contains(w->Finish(), "tensor b has 0 of its 4 bytes"));
  ASSERT_TRUE(w->WriteTensorData("b", data, 4).ok());
  ASSERT_TRUE(w->Finish().ok());
  EXPECT_EQ(w->Finish().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(GgufFile::Open(path).ok());
}

TEST(GgufWriter, AtomicReplaceAndAbandon) {
  const std::string dir = TestDir();
  const std::string path = dir + "/out.gguf";
  WriteFile(path, "the user's file");
  {
    absl::StatusOr<GgufWriter> w = GgufWriter::Create(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->AddTensorInfo("a", GgmlType::kF32, {2}, 8).ok());
    const char data[8] = {};
    ASSERT_TRUE(w->WriteTensorData("a", data, 8).ok());
    EXPECT_EQ(FileContents(path), "the user's file");  // untouched until Finish
  }  // abandoned: the temp file goes, the old file stays
  EXPECT_EQ(FileContents(path), "the user's file");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"out.gguf"});
  GgufMetadata md;
  ASSERT_TRUE(md.Add("x", GgufValue::Bool(true)).ok());
  WriteGguf(path, md, {});
  EXPECT_TRUE(GgufFile::Open(path).ok());
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"out.gguf"});
}

// In a death-test child: writes past a 4 KiB file size limit (a stand-in for a full disk) and
// exits 0 if the write failed with ResourceExhausted naming the file, the writer refuses to go
// on, and no temp file remains in `dir`.
void WritePastFileSizeLimit(const std::string& dir) {
  signal(SIGXFSZ, SIG_IGN);
  const struct rlimit lim = {4096, 4096};
  setrlimit(RLIMIT_FSIZE, &lim);
  absl::StatusOr<GgufWriter> w = GgufWriter::Create(dir + "/big.gguf");
  if (!w.ok() || !w->AddTensorInfo("a", GgmlType::kF32, {1 << 14}, 1 << 16).ok()) std::exit(2);
  const std::string data(1 << 16, '\1');
  absl::Status s = w->WriteTensorData("a", data.data(), data.size());
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  const bool clear = s.code() == absl::StatusCode::kResourceExhausted &&
                     test_util::Contains(s, "big.gguf.tmp.") &&
                     test_util::Contains(s, "free space");
  const bool sticky = test_util::Contains(w->Finish(), "an earlier error");
  std::exit(clear && sticky && ListDir(dir).empty() ? 0 : 1);
}

TEST(GgufWriterDeathTest, ShortWriteIsAClearErrorAndLeavesNothing) {
  const std::string dir = TestDir();
  EXPECT_EXIT(WritePastFileSizeLimit(dir), testing::ExitedWithCode(0), "File too large");
  EXPECT_TRUE(ListDir(dir).empty());
}

TEST(GgufFile, OpenErrorsNameThePath) {
  absl::StatusOr<GgufFile> f = GgufFile::Open("/nonexistent/m.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(test_util::Contains(f.status(), "/nonexistent/m.gguf"));
  f = GgufFile::Open(TestDir());
  EXPECT_TRUE(test_util::Contains(f.status(), "is a directory"));
  const std::string path = TestDir() + "/bad.gguf";
  WriteFile(path, Header(0, 0, 1).s);
  f = GgufFile::Open(path);
  EXPECT_TRUE(test_util::Contains(f.status(), path + ": GGUF version 1"));
}

// ---------------------------------------------------------------- malformed files, one per class

TEST(GgufAttack, BadMagic) {
  std::string bytes = File({}, {}, 0);
  bytes[0] = 'g';
  ExpectRefused(bytes, {"bad magic 'gGUF'", "not a GGUF file"});
  ExpectRefused("GGU", {"3 bytes, shorter than the 24-byte GGUF header"});
}

TEST(GgufAttack, Version1) {
  ExpectRefused(Header(0, 0, 1).s, {"GGUF version 1 is not supported", "re-convert"});
  ExpectRefused(Header(0, 0, 4).s, {"GGUF version 4 is not supported"});
  ExpectRefused(Header(0, 0, 0).s, {"GGUF version 0 is not supported"});
}

TEST(GgufAttack, BigEndianVersionWord) {
  ExpectRefused(Header(0, 0, 0x03000000).s,
                {"0x03000000", "version 3 byte-swapped", "big-endian GGUF file"});
}

TEST(GgufAttack, HugeKvCount) {
  ExpectRefused(Header(0, uint64_t{1} << 60).s, {"n_kv = 1152921504606846976 cannot fit"});
  ExpectRefused(Header(0, ~uint64_t{0}).s, {"n_kv = 18446744073709551615 cannot fit"});
  // Just one more than the bytes allow.
  std::string bytes = (Header(0, 2).Raw(KvU32("a", 1))).s;
  ExpectRefused(bytes, {"n_kv = 2 cannot fit", "hold at most 1 key-value pairs"});
}

TEST(GgufAttack, HugeTensorCount) {
  ExpectRefused(Header(uint64_t{1} << 62, 0).s, {"n_tensors = 4611686018427387904 cannot fit"});
  ExpectRefused((Header(2, 0).Raw(Info("t", {4}, kF32, 0))).s,
                {"n_tensors = 2 cannot fit", "hold at most 1 tensor infos"});
}

TEST(GgufAttack, StringLengthPastTheEnd) {
  ExpectRefused((Header(0, 1).U64(1000).Raw("abcdefghijklmn")).s,
                {"key-value pair 0", "length 1000, past the end of the file (14 bytes left)"});
  ExpectRefused((Header(0, 1).Str("k").U32(kStr).U64(~uint64_t{0}).Raw("x")).s,
                {"key k", "length 18446744073709551615, past the end"});
  ExpectRefused((Header(1, 0).U64(500).Raw(std::string(40, 't'))).s,
                {"tensor info 0", "a name of 500 bytes at offset 24 is too long", "at most 63"});
}

TEST(GgufAttack, HugeArrayCount) {
  ExpectRefused(
      (Header(0, 1).Str("k").U32(kArr).U32(kU32).U64(uint64_t{1} << 61).U32(1)).s,
      {"key k", "says it has 2305843009213693952 elements of type UINT32", "hold at most 1"});
  ExpectRefused((Header(0, 1).Str("k").U32(kArr).U32(kStr).U64(3).Str("a").Str("b")).s,
                {"key k", "says it has 3 elements of type STRING"});
}

TEST(GgufAttack, ArrayOfUnknownElementType) {
  ExpectRefused((Header(0, 1).Str("k").U32(kArr).U32(13).U64(0)).s,
                {"key k", "unknown element type 13"});
  ExpectRefused((Header(0, 1).Str("k").U32(13).U32(0)).s, {"key k has unknown value type 13"});
}

TEST(GgufAttack, NestedArrayTooDeep) {
  Bytes b = Header(0, 1).Str("deep").U32(kArr);
  for (int level = 0; level < 4; ++level) b.U32(kArr).U64(1);
  b.U32(kU32).U64(0);
  ExpectRefused(b.s, {"key deep", "array element 0: array element 0: array element 0",
                      "nested more than 4 deep"});
}

TEST(GgufAttack, BoolOtherThanZeroOrOne) {
  ExpectRefused((Header(0, 1).Str("b").U32(7).U8(2)).s, {"key b", "BOOL has the byte 2"});
  ExpectRefused((Header(0, 1).Str("b").U32(kArr).U32(7).U64(2).U8(1).U8(255)).s,
                {"key b", "BOOL has the byte 255"});
}

TEST(GgufAttack, DuplicateKey) {
  ExpectRefused(File({KvU32("a.b", 1), KvU32("c", 2), KvU32("a.b", 3)}, {}, 0),
                {"key a.b appears twice (the second time as pair 2)"});
}

TEST(GgufAttack, EmptyKey) {
  ExpectRefused(File({KvU32("", 1)}, {}, 0), {"key-value pair 0 has a key of 0 bytes"});
}

TEST(GgufAttack, DuplicateTensorName) {
  ExpectRefused(File({}, {Info("w", {8}, kF32, 0), Info("w", {8}, kF32, 32)}, 64),
                {"tensor w appears twice (the second time as tensor info 1)"});
}

TEST(GgufAttack, TensorNameTooLong) {
  ExpectRefused(File({}, {Info(std::string(64, 'n'), {8}, kF32, 0)}, 32),
                {"tensor info 0: a name of 64 bytes", "is too long (ggml allows at most 63"});
  EXPECT_TRUE(GgufFile::Parse(File({}, {Info(std::string(63, 'n'), {8}, kF32, 0)}, 32)).ok());
  ExpectRefused(File({}, {Info("", {8}, kF32, 0)}, 32), {"empty name"});
}

TEST(GgufAttack, NDimsZeroAndFive) {
  ExpectRefused(File({}, {Info("t", {}, kF32, 0)}, 32), {"tensor t has n_dims 0", "1 to 4"});
  ExpectRefused(File({}, {Info("t", {1, 1, 1, 1, 1}, kF32, 0)}, 32),
                {"tensor t has n_dims 5", "1 to 4"});
}

TEST(GgufAttack, NeZero) {
  ExpectRefused(File({}, {Info("t", {4, 0}, kF32, 0)}, 32),
                {"tensor t has ne[1] = 0", "at least 1"});
  ExpectRefused(File({}, {Info("t", {~uint64_t{0}}, kF32, 0)}, 32), {"tensor t has ne[0] = -1"});
}

TEST(GgufAttack, NeProductOverflowsInt64) {
  ExpectRefused(File({}, {Info("t", {uint64_t{1} << 32, uint64_t{1} << 32}, kF32, 0)}, 32),
                {"tensor t has ne [4294967296, 4294967296]", "element count overflows int64"});
}

TEST(GgufAttack, ByteSizeOverflows) {
  // 2^61 elements fit in int64, 2^61 * 4 bytes do not.
  ExpectRefused(File({}, {Info("t", {uint64_t{1} << 61}, kF32, 0)}, 32),
                {"tensor t of ne [2305843009213693952] in f32", "byte size that overflows"});
}

TEST(GgufAttack, Ne0NotABlockMultiple) {
  ExpectRefused(File({}, {Info("t", {48, 2}, kQ4_0, 0)}, 64),
                {"tensor t has ne[0] = 48, not a multiple of q4_0's block of 32"});
}

TEST(GgufAttack, UnknownTypeId) {
  ExpectRefused(File({}, {Info("t", {4}, 43, 0)}, 32),
                {"tensor t has type id 43, not a ggml type"});
  ExpectRefused(File({}, {Info("t", {4}, 4, 0)}, 32), {"tensor t has type 4 (removed)"});
  ExpectRefused(File({}, {Info("t", {256}, 16, 0)}, 128),
                {"tensor t has type 16 (iq2_xxs), which this reader cannot size"});
}

TEST(GgufAttack, AlignmentNotAPowerOfTwoOrWrongType) {
  ExpectRefused(File({KvU32(kGgufAlignmentKey, 48)}, {}, 0),
                {"key general.alignment = 48 is not a power of two"});
  ExpectRefused(File({KvU32(kGgufAlignmentKey, 0)}, {}, 0),
                {"key general.alignment = 0 is not a power of two"});
  ExpectRefused(File({KvU32(kGgufAlignmentKey, 1u << 21)}, {}, 0),
                {"key general.alignment = 2097152 is not a power of two from 1 to 1048576"});
  const std::string i32 =
      Bytes().Str(kGgufAlignmentKey).U32(static_cast<uint32_t>(GgufType::kInt32)).U32(64).s;
  ExpectRefused(File({i32}, {}, 0), {"key general.alignment has type INT32, expected UINT32"});
  // A valid custom alignment moves the data section.
  absl::StatusOr<GgufFile> f =
      GgufFile::Parse(File({KvU32(kGgufAlignmentKey, 256)}, {Info("t", {4}, kF32, 0)}, 16, 256));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data_offset(), 256u);
}

TEST(GgufAttack, OffsetMisaligned) {
  ExpectRefused(File({}, {Info("t", {4}, kF32, 8)}, 64),
                {"tensor t has offset 8, not a multiple of the alignment 32"});
}

TEST(GgufAttack, OffsetPastTheEnd) {
  ExpectRefused(File({}, {Info("t", {4}, kF32, 64)}, 64),
                {"tensor t has offset 64, past the end of the file"});
  ExpectRefused(File({}, {Info("t", {4}, kF32, ~uint64_t{31})}, 64),
                {"tensor t has offset 18446744073709551584, past the end"});
}

TEST(GgufAttack, TensorDataPastTheEnd) {
  ExpectRefused(File({}, {Info("t", {32}, kF32, 32)}, 64),
                {"tensor t's data [32, 160) runs past the end of the file", "truncated file?"});
  // A data section that would start past the end (header padding cut off).
  const std::string header = (Header(1, 0).Raw(Info("t", {4}, kF32, 0))).s;
  ExpectRefused(header, {"the tensor data would start at offset 64, past the end"});
}

TEST(GgufAttack, OverlappingTensors) {
  ExpectRefused(File({}, {Info("a", {16}, kF32, 0), Info("b", {8}, kF32, 32)}, 64),
                {"tensors a [0, 64) and b [32, 64) overlap"});
  // Order in the file does not matter; two tensors at one offset overlap too.
  ExpectRefused(File({}, {Info("a", {8}, kF32, 32), Info("b", {8}, kF32, 32)}, 64), {"overlap"});
}

// Every prefix of a valid file that cuts into its header or its tensor data is refused
// cleanly; cutting only the padding after the last tensor is allowed (llama.cpp does not need
// it either).
TEST(GgufAttack, TruncatedAtEveryPosition) {
  const std::string bytes = SmallValidFile();
  absl::StatusOr<GgufFile> whole = GgufFile::Parse(bytes);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const GgufTensorInfo& last = whole->tensors().back();
  const size_t data_end = whole->data_offset() + last.offset + last.nbytes;
  for (size_t n = 0; n < data_end; ++n) {
    const std::string prefix = bytes.substr(0, n);
    absl::StatusOr<GgufFile> f = GgufFile::Parse(prefix);
    ASSERT_FALSE(f.ok()) << "a prefix of " << n << " bytes was accepted";
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  }
  for (size_t n = data_end; n <= bytes.size(); ++n) {
    EXPECT_TRUE(GgufFile::Parse(bytes.substr(0, n)).ok()) << n;
  }
}

}  // namespace
}  // namespace st
