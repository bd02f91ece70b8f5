// Tests of the scalar reference codec (infer/quant): fp16/bf16 conversions, Q8_0/Q4_0 blocks
// computed by hand, error bounds on random data, and DType names and checked byte sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "infer/quant/codec.h"
#include "infer/quant/types.h"
#include "tests/test_util.h"

namespace st {
namespace {

float Bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// ---------------------------------------------------------------------------------------------
// DType names and sizes.

TEST(QuantTypes, NamesRoundTrip) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
    EXPECT_TRUE(IsKnownDType(static_cast<uint32_t>(t)));
    DType parsed;
    ASSERT_TRUE(ParseDTypeName(DTypeName(t), &parsed)) << DTypeName(t);
    EXPECT_EQ(parsed, t);
  }
  EXPECT_STREQ(DTypeName(DType::kQ4_0), "q4_0");
  EXPECT_STREQ(DTypeName(DType::kBF16), "bf16");
  for (uint32_t raw : {3u, 4u, 7u, 10u, 0xffffffffu}) EXPECT_FALSE(IsKnownDType(raw)) << raw;
  DType out = DType::kF32;
  EXPECT_FALSE(ParseDTypeName("q4_1", &out));
  EXPECT_FALSE(ParseDTypeName("", &out));
  EXPECT_FALSE(ParseDTypeName("F32", &out));
  EXPECT_FALSE(ParseDTypeName(nullptr, &out));
  EXPECT_EQ(out, DType::kF32);
}

TEST(QuantTypes, BlockElemsAndBytes) {
  EXPECT_EQ(DTypeBlockElems(DType::kF32), 1);
  EXPECT_EQ(DTypeBlockElems(DType::kBF16), 1);
  EXPECT_EQ(DTypeBlockElems(DType::kQ8_0), 32);
  EXPECT_EQ(DTypeBlockElems(DType::kQ4_0), 32);
  EXPECT_EQ(DTypeBytes(DType::kF32, 10), 40);
  EXPECT_EQ(DTypeBytes(DType::kF16, 3), 6);
  EXPECT_EQ(DTypeBytes(DType::kBF16, 0), 0);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 64), 68);
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, 32), 18);
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, 0), 0);
}

TEST(QuantTypes, BytesRejectsBadCountsAndOverflow) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(DTypeBytes(DType::kF32, -1), -1);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, -32), -1);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 33), -1);
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, 16), -1);
  EXPECT_EQ(DTypeBytes(static_cast<DType>(5), 32), -1);
  EXPECT_EQ(DTypeBytes(DType::kF32, kMax / 4), (kMax / 4) * 4);
  EXPECT_EQ(DTypeBytes(DType::kF32, kMax / 4 + 1), -1);
  EXPECT_EQ(DTypeBytes(DType::kF16, kMax / 2 + 1), -1);
  EXPECT_EQ(DTypeBytes(DType::kF32, kMax), -1);
  const int64_t max_blocks = kMax / 34;
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, max_blocks * 32), max_blocks * 34);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, (max_blocks + 1) * 32), -1);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, kMax - kMax % 32), -1);
  // Q4_0 is smaller than its element count: the largest row fits.
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, kMax - kMax % 32), kMax / 32 * 18);
}

// ---------------------------------------------------------------------------------------------
// fp16.

TEST(F16, SpecialValues) {
  EXPECT_EQ(F32ToF16(0.0f), 0x0000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToF16(0.5f), 0x3800);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);  // largest finite
  EXPECT_EQ(F32ToF16(65519.99f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);  // halfway to 2^16: ties to even = inf
  EXPECT_EQ(F32ToF16(-65520.0f), 0xFC00);
  EXPECT_EQ(F32ToF16(1e10f), 0x7C00);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(F16ToF32(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(0x7C00)));
  EXPECT_EQ(F16ToF32(0xC000), -2.0f);
  EXPECT_TRUE(std::signbit(F16ToF32(0x8000)));
  EXPECT_EQ(F16ToF32(0x8000), 0.0f);
}

TEST(F16, Subnormals) {
  const float tiny = std::ldexp(1.0f, -24);  // smallest subnormal
  EXPECT_EQ(F32ToF16(tiny), 0x0001);
  EXPECT_EQ(F16ToF32(0x0001), tiny);
  EXPECT_EQ(F32ToF16(-tiny), 0x8001);
  EXPECT_EQ(F16ToF32(0x03FF), 1023.0f * tiny);         // largest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // half of tiny: tie to even (0)
  EXPECT_EQ(F32ToF16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(F32ToF16(3.0f * std::ldexp(1.0f, -25)), 0x0002);  // 1.5 tiny: tie to even (2)
  EXPECT_EQ(F32ToF16(5.0f * std::ldexp(1.0f, -25)), 0x0002);  // 2.5 tiny: tie to even (2)
  EXPECT_EQ(F32ToF16(1023.5f * tiny), 0x0400);                // tie between 0x3FF and 0x400: even
  EXPECT_EQ(F32ToF16(1022.5f * tiny), 0x03FE);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(F32ToF16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(F16, TiesToEven) {
  const float ulp = std::ldexp(1.0f, -10);         // ulp of 1.0 in fp16
  EXPECT_EQ(F32ToF16(1.0f + 0.5f * ulp), 0x3C00);  // halfway: down to even
  EXPECT_EQ(F32ToF16(1.0f + 1.5f * ulp), 0x3C02);  // halfway: up to even
  EXPECT_EQ(F32ToF16(std::nextafter(1.0f + 0.5f * ulp, 2.0f)), 0x3C01);
  EXPECT_EQ(F32ToF16(std::nextafter(1.0f + 1.5f * ulp, 0.0f)), 0x3C01);
  EXPECT_EQ(F32ToF16(2048.0f + 1.0f), 0x6800);              // 2049: tie, 2048 is even
  EXPECT_EQ(F32ToF16(2048.0f + 3.0f), 0x6802);              // 2051: tie, up to 2052
  EXPECT_EQ(F32ToF16(std::nextafter(2.0f, 0.0f)), 0x4000);  // carry into the exponent
}

TEST(F16, NaNStaysNaN) {
  for (uint32_t bits : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0x7FA00000u, 0xFF800001u}) {
    const uint16_t h = F32ToF16(Bits(bits));
    EXPECT_EQ(h & 0x7C00, 0x7C00) << std::hex << bits;
    EXPECT_NE(h & 0x03FF, 0) << std::hex << bits;
    EXPECT_EQ(h >> 15, bits >> 31);
    EXPECT_TRUE(std::isnan(F16ToF32(h)));
  }
}

TEST(F16, AllHalvesRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE((h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0);
      continue;
    }
    ASSERT_EQ(F32ToF16(f), h) << std::hex << h;
  }
}

// Nearest-even by search: the reference the bit-twiddling must agree with.
uint16_t SlowF32ToF16(float f) {
  const double x = f;
  if (std::fabs(x) >= 65520.0) return std::signbit(f) ? 0xFC00 : 0x7C00;
  uint16_t best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const double err = std::fabs(std::fabs(x) - F16ToF32(static_cast<uint16_t>(h)));
    if (err < best_err || (err == best_err && (h & 1) == 0)) {
      best_err = err;
      best = static_cast<uint16_t>(h);
    }
  }
  return static_cast<uint16_t>(best | (std::signbit(f) ? 0x8000 : 0));
}

TEST(F16, RandomFloatsMatchNearestEven) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> exp_dist(-28, 17);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < 300; ++i) {
    float f = std::ldexp(mant(rng), exp_dist(rng));
    if (i % 2) f = -f;
    ASSERT_EQ(F32ToF16(f), SlowF32ToF16(f)) << f;
  }
#ifdef __FLT16_MAX__
  // The compiler's own conversion (round to nearest even) over many more values.
  for (int i = 0; i < 200000; ++i) {
    const float f = Bits(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, sizeof(ref_bits));
    ASSERT_EQ(F32ToF16(f), ref_bits) << std::hex << BitsOf(f);
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// bf16.

TEST(BF16, ValuesAndTies) {
  EXPECT_EQ(F32ToBF16(0.0f), 0x0000);
  EXPECT_EQ(F32ToBF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  EXPECT_EQ(F32ToBF16(-2.0f), 0xC000);
  EXPECT_EQ(BF16ToF32(0x3F80), 1.0f);
  EXPECT_EQ(BitsOf(BF16ToF32(0xBF81)), 0xBF810000u);  // exactly the top half of the float
  const float ulp = std::ldexp(1.0f, -7);             // ulp of 1.0 in bf16
  EXPECT_EQ(F32ToBF16(1.0f + 0.5f * ulp), 0x3F80);    // tie: down to even
  EXPECT_EQ(F32ToBF16(1.0f + 1.5f * ulp), 0x3F82);    // tie: up to even
  EXPECT_EQ(F32ToBF16(std::nextafter(1.0f + 0.5f * ulp, 2.0f)), 0x3F81);
  EXPECT_EQ(F32ToBF16(std::nextafter(1.0f + 0.5f * ulp, 0.0f)), 0x3F80);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()), 0x7F80);  // rounds to inf
  EXPECT_EQ(F32ToBF16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::denorm_min()), 0x0000);  // tie to even
  EXPECT_EQ(F32ToBF16(Bits(0x00008001u)), 0x0001);
}

TEST(BF16, NaNStaysNaN) {
  // 0x7F800001 would round to inf with a naive add-and-shift.
  for (uint32_t bits : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF80FFFFu, 0x7FFFFFFFu}) {
    const uint16_t h = F32ToBF16(Bits(bits));
    EXPECT_TRUE(std::isnan(BF16ToF32(h))) << std::hex << bits;
    EXPECT_EQ(h >> 15, bits >> 31);
  }
}

TEST(BF16, AllValuesRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = BF16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToBF16(f), h) << std::hex << h;
  }
}

// ---------------------------------------------------------------------------------------------
// Q8_0 blocks by hand.

TEST(QuantQ8_0, HandComputedBlock) {
  // amax = 127, so d = 1 (fp16 0x3C00), id = 1 and q = roundf(x).
  float x[32] = {127, -127, 0, 0.5f, -0.5f, 2.5f, -2.5f, 1.49f, 100.6f, -63.2f};
  for (int j = 10; j < 32; ++j) x[j] = static_cast<float>(j - 20);
  const int8_t expected[32] = {127, -127, 0,  1,  -1, 3, -3, 1, 101, -63, -10, -9, -8, -7, -6, -5,
                               -4,  -3,   -2, -1, 0,  1, 2,  3, 4,   5,   6,   7,  8,  9,  10, 11};
  BlockQ8_0 b;
  QuantizeRowQ8_0(x, 32, &b);
  EXPECT_EQ(b.d, 0x3C00);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], expected[j]) << j;
  float y[32];
  DequantizeRowQ8_0(&b, 32, y);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], expected[j]) << j;
}

TEST(QuantQ8_0, NegativeDominantBlock) {
  // amax = 254 from -254: d = 2 (0x4000), id = 0.5.
  float x[32] = {-254, 3, -5, 1, -1, 100, 0.9f, -0.9f, 253, 127};
  const int8_t expected[32] = {-127, 2, -3, 1, -1, 50, 0, 0, 127, 64};  // 253/2 = 126.5 -> 127
  BlockQ8_0 b;
  QuantizeRowQ8_0(x, 32, &b);
  EXPECT_EQ(b.d, 0x4000);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], expected[j]) << j;
}

TEST(QuantQ8_0, OneHugeValue) {
  // d = 10000 / 127 = 78.740...: fp16 rounds it to 64 * (1 + 236/1024) = 78.75 = 0x54EC.
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = (j % 2 ? 1.0f : -1.0f) * 0.25f * j;
  x[5] = 10000.0f;
  BlockQ8_0 b;
  QuantizeRowQ8_0(x, 32, &b);
  EXPECT_EQ(b.d, 0x54EC);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], j == 5 ? 127 : 0) << j;  // |x| <= 7.75 < d/2
  float y[32];
  DequantizeRowQ8_0(&b, 32, y);
  EXPECT_EQ(y[5], 78.75f * 127);
  EXPECT_LE(std::fabs(y[5] - x[5]), QuantErrorBound(DType::kQ8_0, 10000.0f));
}

TEST(QuantQ8_0, AllZeroBlock) {
  float x[64] = {};
  x[40] = -0.0f;
  BlockQ8_0 b[2];
  std::memset(b, 0xAB, sizeof(b));
  QuantizeRowQ8_0(x, 64, b);
  for (const BlockQ8_0& blk : b) {
    EXPECT_EQ(blk.d, 0);
    for (int8_t q : blk.qs) EXPECT_EQ(q, 0);
  }
  float y[64];
  DequantizeRowQ8_0(b, 64, y);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(QuantErrorBound(DType::kQ8_0, 0.0f), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Q4_0 blocks by hand.

TEST(QuantQ4_0, HandComputedBlock) {
  // m = -8 (the first of -8 and 8): d = -8 / -8 = 1 (0x3C00), id = 1, q = min(15, trunc(x + 8.5)).
  const float x[32] = {-8, 7,     0,     0.5f,   -0.5f, 1.49f,  2.5f, -3.7f, 8,    6.6f, -7.4f,
                       3,  -1,    4.2f,  -6,     5,     1,      -2,   3,     -4,   5,    -6,
                       7,  -7.9f, 0.25f, -0.25f, 0.75f, -0.75f, 2,    -2.6f, 6.4f, -5.5f};
  // q_0..15  = 0 15 8 9 8 9 11 4 15 15 1 11 7 12 2 13
  // q_16..31 = 9 6 11 4 13 2 15 0 8 8 9 7 10 5 14 3; byte j = q_j | q_{j+16} << 4.
  const uint8_t expected[16] = {0x90, 0x6F, 0xB8, 0x49, 0xD8, 0x29, 0xFB, 0x04,
                                0x8F, 0x8F, 0x91, 0x7B, 0xA7, 0x5C, 0xE2, 0x3D};
  BlockQ4_0 b;
  QuantizeRowQ4_0(x, 32, &b);
  EXPECT_EQ(b.d, 0x3C00);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], expected[j]) << j;
  float y[32];
  DequantizeRowQ4_0(&b, 32, y);
  EXPECT_EQ(y[0], -8.0f);  // the largest magnitude is exact
  EXPECT_EQ(y[8], 7.0f);   // +8 on the other side clamps to 7: error d
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[6], 3.0f);  // 2.5 rounds half up
  EXPECT_EQ(y[23], -8.0f);
  EXPECT_EQ(y[31], -5.0f);  // -5.5 + 8.5 = 3 exactly
}

TEST(QuantQ4_0, PositiveDominantBlock) {
  // m = 16: d = -2 (0xC000), id = -0.5, q = min(15, trunc(-x/2 + 8.5)).
  float x[32] = {0, 16, -16, 4, -4, 1, -1, 3};
  x[16] = 10;
  x[17] = -10;
  x[18] = 15;
  // q_0..7 = 8 0 15 6 10 8 9 7 (1 -> 8.0 -> 8, -1 -> 9.0 -> 9), q_16..18 = 3 13 1, the rest 8.
  const uint8_t expected[16] = {0x38, 0xD0, 0x1F, 0x86, 0x8A, 0x88, 0x89, 0x87,
                                0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88};
  BlockQ4_0 b;
  QuantizeRowQ4_0(x, 32, &b);
  EXPECT_EQ(b.d, 0xC000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], expected[j]) << j;
  float y[32];
  DequantizeRowQ4_0(&b, 32, y);
  const float want[19] = {0, 16, -14, 4, -4, 0, -2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 10, -10, 14};
  for (int j = 0; j < 19; ++j) EXPECT_EQ(y[j], want[j]) << j;
}

TEST(QuantQ4_0, NegativeDominantHugeValue) {
  // m = -1000: d = 125 = 64 * (1 + 976/1024) (0x57D0); |x| = 1 gives 8.508 -> q = 8.
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = j % 2 ? 1.0f : -1.0f;
  x[3] = -1000.0f;
  BlockQ4_0 b;
  QuantizeRowQ4_0(x, 32, &b);
  EXPECT_EQ(b.d, 0x57D0);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], j == 3 ? 0x80 : 0x88) << j;
  float y[32];
  DequantizeRowQ4_0(&b, 32, y);
  EXPECT_EQ(y[3], -1000.0f);
  EXPECT_EQ(y[4], 0.0f);
}

TEST(QuantQ4_0, AllZeroBlock) {
  float x[32] = {};
  BlockQ4_0 b;
  std::memset(&b, 0xAB, sizeof(b));
  QuantizeRowQ4_0(x, 32, &b);
  EXPECT_EQ(b.d, 0x8000);                     // d = 0 / -8 = -0, as GGUF's reference stores it
  for (uint8_t q : b.qs) EXPECT_EQ(q, 0x88);  // q = 8 everywhere (x * 0 + 8.5)
  float y[32];
  DequantizeRowQ4_0(&b, 32, y);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Generic entry points and error bounds.

constexpr DType kAllTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0};

std::vector<float> RoundTrip(DType t, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> buf(static_cast<size_t>(DTypeBytes(t, n)));
  QuantizeRow(t, x.data(), n, buf.data());
  std::vector<float> y(x.size());
  DequantizeRow(t, buf.data(), n, y.data());
  return y;
}

TEST(QuantGeneric, MatchesTypedCodecs) {
  const std::vector<float> x = test_util::RandomNormals(96, 3);
  EXPECT_EQ(RoundTrip(DType::kF32, x), x);
  std::vector<BlockQ8_0> q8(3);
  std::vector<uint8_t> g8(static_cast<size_t>(DTypeBytes(DType::kQ8_0, 96)));
  QuantizeRowQ8_0(x.data(), 96, q8.data());
  QuantizeRow(DType::kQ8_0, x.data(), 96, g8.data());
  EXPECT_EQ(std::memcmp(q8.data(), g8.data(), g8.size()), 0);
  std::vector<BlockQ4_0> q4(3);
  std::vector<uint8_t> g4(static_cast<size_t>(DTypeBytes(DType::kQ4_0, 96)));
  QuantizeRowQ4_0(x.data(), 96, q4.data());
  QuantizeRow(DType::kQ4_0, x.data(), 96, g4.data());
  EXPECT_EQ(std::memcmp(q4.data(), g4.data(), g4.size()), 0);
  std::vector<uint16_t> h(96);
  QuantizeRow(DType::kF16, x.data(), 96, h.data());
  for (int i = 0; i < 96; ++i) EXPECT_EQ(h[i], F32ToF16(x[i]));
  QuantizeRow(DType::kBF16, x.data(), 96, h.data());
  for (int i = 0; i < 96; ++i) EXPECT_EQ(h[i], F32ToBF16(x[i]));
  EXPECT_EQ(RoundTrip(DType::kQ8_0, {}).size(), 0u);
}

TEST(QuantGenericDeathTest, RejectsRaggedRows) {
  std::vector<float> x(33, 1.0f);
  std::vector<uint8_t> buf(64);
  EXPECT_DEATH(QuantizeRow(DType::kQ8_0, x.data(), 33, buf.data()), "check failed");
  EXPECT_DEATH(DequantizeRow(DType::kQ4_0, buf.data(), 16, x.data()), "check failed");
  EXPECT_DEATH(QuantizeRow(static_cast<DType>(4), x.data(), 1, buf.data()), "check failed");
}

TEST(QuantErrorBound, ExactCasesAndOverflow) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(QuantErrorBound(DType::kF32, 123.0f), 0.0);
  EXPECT_EQ(QuantErrorBound(DType::kF16, 1.5f), std::ldexp(1.0, -11));
  EXPECT_EQ(QuantErrorBound(DType::kF16, 1e-7f), std::ldexp(1.0, -25));
  EXPECT_EQ(QuantErrorBound(DType::kF16, 65520.0f), kInf);
  EXPECT_EQ(QuantErrorBound(DType::kBF16, 3.0f), std::ldexp(1.0, -7));
  // d = 1 is exact in fp16, so the bounds are d/2 (Q8_0) and d (Q4_0) up to float slack.
  EXPECT_NEAR(QuantErrorBound(DType::kQ8_0, 127.0f), 0.5, 1e-3);
  EXPECT_NEAR(QuantErrorBound(DType::kQ4_0, 8.0f), 1.0, 1e-3);
  EXPECT_EQ(QuantErrorBound(DType::kQ8_0, 1e7f), kInf);  // d = 78740 > 65504
  EXPECT_LT(QuantErrorBound(DType::kQ8_0, 8e6f), kInf);
  EXPECT_EQ(QuantErrorBound(DType::kQ4_0, 6e5f), kInf);  // d = 75000 > 65504
  EXPECT_EQ(QuantErrorBound(DType::kQ8_0, std::nanf("")), kInf);
}

// Max |x| of each block of the row (one element per block for the float types).
double BlockAmax(const std::vector<float>& x, size_t begin, size_t len) {
  double amax = 0.0;
  for (size_t i = begin; i < begin + len; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  return amax;
}

// Checks every element against the bound of its block; returns the largest error / bound.
double CheckWithinBound(DType t, const std::vector<float>& x) {
  const std::vector<float> y = RoundTrip(t, x);
  const size_t block = static_cast<size_t>(DTypeBlockElems(t));
  double worst_ratio = 0.0;
  for (size_t b = 0; b < x.size(); b += block) {
    const float amax = static_cast<float>(BlockAmax(x, b, block));
    const double bound = QuantErrorBound(t, amax);
    for (size_t i = b; i < b + block; ++i) {
      const double err = std::fabs(static_cast<double>(x[i]) - static_cast<double>(y[i]));
      EXPECT_LE(err, bound) << DTypeName(t) << " x=" << x[i] << " y=" << y[i] << " amax=" << amax;
      if (bound > 0) worst_ratio = std::fmax(worst_ratio, err / bound);
    }
  }
  return worst_ratio;
}

TEST(QuantErrorBound, HoldsOnRandomDistributions) {
  std::mt19937 rng(12345);
  constexpr int kN = 32 * 2000;
  std::vector<std::vector<float>> rows;
  for (float scale : {1.0f, 0.02f, 1e-6f, 3e-9f, 1e3f, 1e4f}) {
    std::vector<float> uni(kN), gauss(kN), heavy(kN), outlier(kN), positive(kN), grid(kN);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::cauchy_distribution<float> c(0.0f, 1.0f);
    for (int i = 0; i < kN; ++i) {
      uni[i] = scale * u(rng);
      gauss[i] = scale * g(rng);
      heavy[i] = scale * std::fmax(-50.0f, std::fmin(50.0f, c(rng)));
      outlier[i] = scale * (i % 32 == (i / 32) % 32 ? 40.0f * (g(rng) > 0 ? 1 : -1) : g(rng));
      positive[i] = scale * std::fabs(u(rng));
      // Q8_0's rounding worst case: the block max sets d = scale / 127, the rest sit at
      // (k + 1/2) d.
      grid[i] =
          i % 32 == 0
              ? scale
              : scale * (static_cast<float>(static_cast<int>(rng() % 254) - 127) + 0.5f) / 127.0f;
    }
    for (auto* row : {&uni, &gauss, &heavy, &outlier, &positive, &grid}) rows.push_back(*row);
  }
  double worst[5] = {};
  for (const std::vector<float>& x : rows) {
    for (int k = 0; k < 5; ++k) worst[k] = std::fmax(worst[k], CheckWithinBound(kAllTypes[k], x));
  }
  // The bounds are not loose: random data gets close to them (Q4_0 via the clamp side).
  EXPECT_GT(worst[1], 0.95) << "f16";
  EXPECT_GT(worst[2], 0.95) << "bf16";
  EXPECT_GT(worst[3], 0.8) << "q8_0";
  EXPECT_GT(worst[4], 0.8) << "q4_0";
}

TEST(QuantErrorBound, Q4_0WorstCaseIsTheClampSide) {
  // m = -8 and +8 in one block: +8 has q = 16, clamped to 15 -> 7: error exactly d = 1.
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f;
  x[1] = 8.0f;
  x[2] = 7.4999995f;  // just under the 7.5 rounding boundary: q = 15, error ~0.5
  const std::vector<float> y = RoundTrip(DType::kQ4_0, x);
  EXPECT_EQ(y[1], 7.0f);
  const double bound = QuantErrorBound(DType::kQ4_0, 8.0f);
  EXPECT_LE(1.0, bound);
  EXPECT_LT(bound, 1.001);
  EXPECT_LE(CheckWithinBound(DType::kQ4_0, x), 1.0);
}

TEST(QuantErrorBound, ScaleRoundingWorstCases) {
  // Scales just off fp16 values: amax sweeps across many binades so that |d - fp16(d)| is
  // near half an fp16 ulp, which the bound must include (127x for Q8_0, 8x for Q4_0).
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    std::vector<float> x;
    for (int b = 0; b < 4000; ++b) {
      const float amax = std::ldexp(1.0f + static_cast<float>(b % 1000) / 1000.0f, b % 40 - 25);
      std::vector<float> blk(32);
      for (float& v : blk) v = amax * u(rng);
      // The block max (q = +-127, or Q4_0's q = 0) and its opposite (q = -127, or Q4_0's
      // clamped q = 15) amplify the scale's rounding error the most.
      const float sign = rng() % 2 ? 1.0f : -1.0f;
      blk[rng() % 16] = sign * amax;
      blk[16 + rng() % 16] = -sign * amax;
      x.insert(x.end(), blk.begin(), blk.end());
    }
    CheckWithinBound(t, x);
  }
}

}  // namespace
}  // namespace st
