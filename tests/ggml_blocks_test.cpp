// Tests of the ggml block dequantisers (ggml_blocks.h) against ggml's own output, bit for bit.
#include "infer/quant/ggml_blocks.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace st {
namespace {

// The golden files are made by llama.cpp's ggml (tests/data/ggml/README.md): quantiser output and
// random block bytes, each with ggml's dequantised floats.

// One golden file: header (6 little-endian u32: magic "STGG", version 1, ggml type id, element
// count n, block byte count, elements made by ggml's quantiser (the rest are random blocks)),
// the block bytes, then ggml's n dequantised floats.
struct Golden {
  uint32_t type = 0;
  int64_t n = 0;
  int64_t n_quantised = 0;
  std::string blocks;
  std::vector<float> floats;
};

bool LoadGolden(const std::string& name, Golden* g) {
  const std::string path = ST_SOURCE_DIR "/tests/data/ggml/" + name + ".bin";
  const std::string bytes = test_util::FileContents(path);
  uint32_t hdr[6];
  if (bytes.size() < sizeof(hdr)) {
    ADD_FAILURE() << path << ": missing or shorter than its header";
    return false;
  }
  std::memcpy(hdr, bytes.data(), sizeof(hdr));
  const uint64_t n = hdr[3], n_bytes = hdr[4];
  if (hdr[0] != 0x47475453u || hdr[1] != 1u || bytes.size() != sizeof(hdr) + n_bytes + 4 * n) {
    ADD_FAILURE() << path << ": bad header or size";
    return false;
  }
  g->type = hdr[2];
  g->n = static_cast<int64_t>(n);
  g->n_quantised = hdr[5];
  g->blocks = bytes.substr(sizeof(hdr), n_bytes);
  g->floats.resize(n);
  std::memcpy(g->floats.data(), bytes.data() + sizeof(hdr) + n_bytes, 4 * n);
  return true;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

struct GoldenCase {
  const char* file;
  GgmlType type;
};

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.file; }

class GgmlGolden : public testing::TestWithParam<GoldenCase> {};

TEST_P(GgmlGolden, MatchesGgmlBitForBit) {
  Golden g;
  ASSERT_TRUE(LoadGolden(GetParam().file, &g));
  ASSERT_EQ(g.type, static_cast<uint32_t>(GetParam().type));
  const GgmlTypeInfo* info = FindGgmlType(g.type);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(*GgmlRowBytes(g.type, g.n), static_cast<int64_t>(g.blocks.size()));
  // The golden data is not degenerate: many distinct non-zero values, both kinds of block.
  int nonzero = 0;
  for (float f : g.floats) nonzero += f != 0.0f;
  EXPECT_GT(nonzero, g.n / 2);
  EXPECT_LT(g.n_quantised, g.n);

  std::vector<float> out(g.n, -1.0f);
  ASSERT_TRUE(DequantizeRowGgml(g.type, g.blocks.data(), g.n, out.data()).ok());
  int mismatches = 0;
  for (int64_t i = 0; i < g.n; ++i) {
    if (Bits(out[i]) != Bits(g.floats[i]) && ++mismatches <= 5) {
      ADD_FAILURE() << info->name << " element " << i << " (block " << i / info->block_elems
                    << (i < g.n_quantised ? ", quantiser output" : ", random bytes") << "): ours "
                    << out[i] << " ggml " << g.floats[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << info->name;

  // Unaligned input gives the same result.
  std::string shifted = "x" + g.blocks;
  std::vector<float> out2(g.n);
  ASSERT_TRUE(DequantizeRowGgml(g.type, shifted.data() + 1, g.n, out2.data()).ok());
  EXPECT_EQ(std::memcmp(out.data(), out2.data(), 4 * g.n), 0);
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, GgmlGolden,
    testing::Values(GoldenCase{"f16", GgmlType::kF16}, GoldenCase{"bf16", GgmlType::kBF16},
                    GoldenCase{"q4_0", GgmlType::kQ4_0}, GoldenCase{"q4_1", GgmlType::kQ4_1},
                    GoldenCase{"q5_0", GgmlType::kQ5_0}, GoldenCase{"q5_1", GgmlType::kQ5_1},
                    GoldenCase{"q8_0", GgmlType::kQ8_0}, GoldenCase{"q2_K", GgmlType::kQ2_K},
                    GoldenCase{"q3_K", GgmlType::kQ3_K}, GoldenCase{"q4_K", GgmlType::kQ4_K},
                    GoldenCase{"q5_K", GgmlType::kQ5_K}, GoldenCase{"q6_K", GgmlType::kQ6_K},
                    GoldenCase{"q8_K", GgmlType::kQ8_K}),
    [](const testing::TestParamInfo<GoldenCase>& p) { return std::string(p.param.file); });

TEST(GgmlBlocks, Geometry) {
  const struct {
    uint32_t id;
    const char* name;
    int64_t elems, bytes;
  } kWant[] = {{0, "f32", 1, 4},       {1, "f16", 1, 2},       {2, "q4_0", 32, 18},
               {3, "q4_1", 32, 20},    {6, "q5_0", 32, 22},    {7, "q5_1", 32, 24},
               {8, "q8_0", 32, 34},    {10, "q2_K", 256, 84},  {11, "q3_K", 256, 110},
               {12, "q4_K", 256, 144}, {13, "q5_K", 256, 176}, {14, "q6_K", 256, 210},
               {15, "q8_K", 256, 292}, {30, "bf16", 1, 2}};
  for (const auto& w : kWant) {
    const GgmlTypeInfo* t = FindGgmlType(w.id);
    ASSERT_NE(t, nullptr) << w.id;
    EXPECT_EQ(static_cast<uint32_t>(t->type), w.id);
    EXPECT_STREQ(t->name, w.name);
    EXPECT_EQ(t->block_elems, w.elems) << w.name;
    EXPECT_EQ(t->block_bytes, w.bytes) << w.name;
    EXPECT_EQ(*GgmlRowBytes(w.id, 3 * w.elems), 3 * w.bytes) << w.name;
    EXPECT_EQ(*GgmlRowBytes(w.id, 0), 0) << w.name;
  }
}

TEST(GgmlBlocks, RejectsUnsupportedTypes) {
  // Removed ids (4, 5), Q8_1 (9), IQ*/integer types (16-29), removed 31-33, TQ* (34, 35),
  // MXFP4 (39) and beyond.
  for (uint32_t id : {4u, 5u, 9u, 16u, 20u, 24u, 28u, 29u, 31u, 34u, 35u, 39u, 42u, 43u, 1000u,
                      std::numeric_limits<uint32_t>::max()}) {
    EXPECT_EQ(FindGgmlType(id), nullptr) << id;
    float out = 7.0f;
    const uint8_t bytes[64] = {};
    const absl::Status s = DequantizeRowGgml(id, bytes, 0, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_TRUE(test_util::Contains(s, "unsupported ggml type " + std::to_string(id))) << s;
    EXPECT_EQ(out, 7.0f);
    EXPECT_FALSE(GgmlRowBytes(id, 32).ok());
  }
}

TEST(GgmlBlocks, RejectsBadLengths) {
  const std::vector<uint8_t> bytes(2 * 292, 0x11);
  std::vector<float> out(512, 7.0f);
  const struct {
    GgmlType type;
    int64_t n;
  } kBad[] = {{GgmlType::kQ4_0, 31},  {GgmlType::kQ8_0, 33},  {GgmlType::kQ4_K, 255},
              {GgmlType::kQ6_K, 257}, {GgmlType::kQ8_K, 128}, {GgmlType::kQ2_K, -256},
              {GgmlType::kF16, -1}};
  for (const auto& b : kBad) {
    const uint32_t id = static_cast<uint32_t>(b.type);
    const absl::Status s = DequantizeRowGgml(id, bytes.data(), b.n, out.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << FindGgmlType(id)->name << " " << b.n;
    EXPECT_TRUE(test_util::Contains(s, "not a multiple of its block")) << s;
    for (float f : out) ASSERT_EQ(f, 7.0f);
  }
  // A size past int64_t.
  const int64_t huge = std::numeric_limits<int64_t>::max() / 256 * 256;
  EXPECT_FALSE(GgmlRowBytes(static_cast<uint32_t>(GgmlType::kQ8_K), huge).ok());
  EXPECT_EQ(*GgmlRowBytes(static_cast<uint32_t>(GgmlType::kQ8_K), 256 * 1000), 292 * 1000);
}

TEST(GgmlBlocks, F32IsACopy) {
  const float in[3] = {1.5f, -0.0f, std::numeric_limits<float>::infinity()};
  float out[3] = {};
  ASSERT_TRUE(DequantizeRowGgml(0, in, 3, out).ok());
  EXPECT_EQ(std::memcmp(in, out, sizeof(in)), 0);
}

// Every bit pattern, NaN and infinite scales included, dequantises without undefined behaviour
// (a sanitizer build checks that).
TEST(GgmlBlocks, AnyBytesAreSafe) {
  std::mt19937 rng(7);
  std::vector<uint8_t> bytes(8 * 292);
  std::vector<float> out(8 * 256);
  for (const uint32_t id : {1u, 2u, 3u, 6u, 7u, 8u, 10u, 11u, 12u, 13u, 14u, 15u, 30u}) {
    const int64_t n = 8 * FindGgmlType(id)->block_elems;
    for (int fill : {0x00, 0xff, -1}) {
      for (auto& b : bytes) b = static_cast<uint8_t>(fill >= 0 ? fill : rng());
      ASSERT_TRUE(DequantizeRowGgml(id, bytes.data(), n, out.data()).ok()) << id;
    }
  }
  // All-0xff blocks carry NaN fp16 scales: NaN propagates.
  std::fill(bytes.begin(), bytes.end(), 0xff);
  ASSERT_TRUE(DequantizeRowGgml(2, bytes.data(), 32, out.data()).ok());
  EXPECT_TRUE(std::isnan(out[0]));
}

}  // namespace
}  // namespace st
