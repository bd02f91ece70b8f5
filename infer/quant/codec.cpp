// The scalar reference codec (codec.h): bit-exact fp16/bf16 conversions and the GGUF Q8_0 /
// Q4_0 block quantizers, written for clarity; SIMD kernels must reproduce these results.
#include "infer/quant/codec.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "model/check.h"

namespace st {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Rounds `v >> shift` to nearest, ties to even (1 <= shift <= 31).
uint32_t ShiftRoundEven(uint32_t v, int shift) {
  const uint32_t q = v >> shift;
  const uint32_t rem = v & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return (rem > half || (rem == half && (q & 1))) ? q + 1 : q;
}

// roundf(v) as int8. |v| <= 127 up to float rounding for finite input, so the clamp and the
// NaN case only keep non-finite input away from undefined conversions.
int8_t RoundToQ8(float v) {
  if (std::isnan(v)) return 0;
  const float r = std::round(v);
  if (r >= 127.0f) return 127;
  if (r <= -127.0f) return -127;
  return static_cast<int8_t>(r);
}

void CheckRow(DType t, int64_t n) {
  const int64_t block = DTypeBlockElems(t);
  ST_CHECK(block > 0) << "unknown dtype " << static_cast<uint32_t>(t);
  ST_CHECK(n >= 0 && n % block == 0) << DTypeName(t) << " row of " << n << " elements";
}

}  // namespace

uint16_t F32ToF16(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t exp = (u >> 23) & 0xffu;
  const uint32_t mant = u & 0x7fffffu;
  if (exp == 0xff) {  // inf or NaN; NaN keeps its top payload bits and is made quiet
    return mant == 0 ? (sign | 0x7c00u) : (sign | 0x7e00u | (mant >> 13));
  }
  // Half exponent = exp - 112 for normals (bias 15 vs 127).
  if (exp >= 143) return sign | 0x7c00u;  // >= 65536: overflow
  if (exp >= 113) {
    // Normal half. Rounding may carry into the exponent (and up to inf, 0x7c00): correct.
    const uint32_t h = ((exp - 112) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    const bool up = rem > 0x1000u || (rem == 0x1000u && (h & 1));
    return static_cast<uint16_t>(sign | (h + (up ? 1 : 0)));
  }
  // Subnormal half (or zero): value / 2^-24 = (1.mant) * 2^(exp - 126) with the hidden bit.
  if (exp < 102) return sign;  // below 2^-25: rounds to zero
  const uint32_t full = mant | 0x800000u;
  const int shift = 126 - static_cast<int>(exp);  // 14..24
  // Rounding up to 0x400 yields the smallest normal: correct.
  return static_cast<uint16_t>(sign | ShiftRoundEven(full, shift));
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
  // Zero or subnormal: mant * 2^-24, exact in float.
  const float v = std::ldexp(static_cast<float>(mant), -24);
  return sign ? -v : v;
}

uint16_t F32ToBF16(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign and top payload, force quiet
    return static_cast<uint16_t>((u >> 16) | 0x40u);
  }
  // Round to nearest even; a carry into the exponent (and to inf) is correct.
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

float BF16ToF32(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* y) {
  CheckRow(DType::kQ8_0, n);
  for (int64_t b = 0; b < n / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    float amax = 0.0f;
    for (int j = 0; j < kQBlock; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = F32ToF16(d);
    for (int j = 0; j < kQBlock; ++j) {
      // As GGUF: q comes from the fp32 d, not the stored fp16 one (hence the scale-rounding
      // term in QuantErrorBound).
      y[b].qs[j] = RoundToQ8(xb[j] * id);
    }
  }
}

void DequantizeRowQ8_0(const BlockQ8_0* y, int64_t n, float* x) {
  CheckRow(DType::kQ8_0, n);
  for (int64_t b = 0; b < n / kQBlock; ++b) {
    const float d = F16ToF32(y[b].d);
    for (int j = 0; j < kQBlock; ++j) x[b * kQBlock + j] = d * static_cast<float>(y[b].qs[j]);
  }
}

void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* y) {
  CheckRow(DType::kQ4_0, n);
  constexpr int kHalf = kQBlock / 2;
  for (int64_t b = 0; b < n / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    float amax = 0.0f;
    float m = 0.0f;  // the first element of largest magnitude, sign kept
    for (int j = 0; j < kQBlock; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        m = xb[j];
      }
    }
    const float d = m / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = F32ToF16(d);
    auto quant = [id](float v) -> uint8_t {
      // v * id lies in [-8, 8], so t in [0.5, 16.5]; truncation is floor. NaN maps to 0.
      const float t = v * id + 8.5f;
      return static_cast<uint8_t>(t >= 15.0f ? 15 : (t > 0.0f ? static_cast<int>(t) : 0));
    };
    for (int j = 0; j < kHalf; ++j) {
      y[b].qs[j] = static_cast<uint8_t>(quant(xb[j]) | (quant(xb[j + kHalf]) << 4));
    }
  }
}

void DequantizeRowQ4_0(const BlockQ4_0* y, int64_t n, float* x) {
  CheckRow(DType::kQ4_0, n);
  constexpr int kHalf = kQBlock / 2;
  for (int64_t b = 0; b < n / kQBlock; ++b) {
    const float d = F16ToF32(y[b].d);
    float* xb = x + b * kQBlock;
    for (int j = 0; j < kHalf; ++j) {
      xb[j] = d * static_cast<float>(static_cast<int>(y[b].qs[j] & 0x0f) - 8);
      xb[j + kHalf] = d * static_cast<float>(static_cast<int>(y[b].qs[j] >> 4) - 8);
    }
  }
}

void QuantizeRow(DType t, const float* x, int64_t n, void* dst) {
  CheckRow(t, n);
  switch (t) {
    case DType::kF32:
      if (n > 0) std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = F32ToF16(x[i]);
      return;
    }
    case DType::kBF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = F32ToBF16(x[i]);
      return;
    }
    case DType::kQ8_0:
      QuantizeRowQ8_0(x, n, static_cast<BlockQ8_0*>(dst));
      return;
    case DType::kQ4_0:
      QuantizeRowQ4_0(x, n, static_cast<BlockQ4_0*>(dst));
      return;
  }
}

void DequantizeRow(DType t, const void* src, int64_t n, float* x) {
  CheckRow(t, n);
  switch (t) {
    case DType::kF32:
      if (n > 0) std::memcpy(x, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) x[i] = F16ToF32(in[i]);
      return;
    }
    case DType::kBF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) x[i] = BF16ToF32(in[i]);
      return;
    }
    case DType::kQ8_0:
      DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(src), n, x);
      return;
    case DType::kQ4_0:
      DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(src), n, x);
      return;
  }
}

namespace {

// Half an ulp of the binade holding `amax` for a format with `mant_bits` stored mantissa bits
// and smallest normal exponent `min_exp` (amax > 0 finite).
double HalfUlp(double amax, int mant_bits, int min_exp) {
  int e;
  std::frexp(amax, &e);  // amax in [2^(e-1), 2^e)
  const int binade = e - 1 < min_exp ? min_exp : e - 1;
  return std::ldexp(1.0, binade - mant_bits - 1);
}

// The block-scale part of the bound: error of x vs d*q (in units of d: `q_err`), the fp16
// rounding of d times the largest |q| (`q_max`), and float rounding of the final product.
double BlockBound(float d, double q_err, double q_max, double prod_rel, float amax) {
  const double dd = std::fabs(static_cast<double>(d));
  const float stored = F16ToF32(F32ToF16(d));
  if (std::isinf(stored)) return std::numeric_limits<double>::infinity();
  const double ds = std::fabs(static_cast<double>(stored));
  double bound = dd * q_err + q_max * std::fabs(dd - ds) + prod_rel * ds;
  if (stored == 0.0f && bound < amax) bound = amax;  // everything dequantizes to 0
  return bound;
}

}  // namespace

double QuantErrorBound(DType t, float block_amax) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (!(block_amax >= 0.0f) || std::isinf(block_amax)) return kInf;
  if (block_amax == 0.0f) return 0.0;
  switch (t) {
    case DType::kF32:
      return 0.0;
    case DType::kF16:
      if ((F32ToF16(block_amax) & 0x7fffu) == 0x7c00u) return kInf;
      return HalfUlp(block_amax, 10, -14);
    case DType::kBF16:
      if ((F32ToBF16(block_amax) & 0x7fffu) == 0x7f80u) return kInf;
      return HalfUlp(block_amax, 7, -126);
    case DType::kQ8_0:
      // |x/d - q| <= 1/2 plus 127 * 2^-23 for x * id in float; |q| <= 127; d*q rounds once.
      return BlockBound(block_amax / 127.0f, 0.5 + std::ldexp(1.0, -15), 127.0,
                        std::ldexp(1.0, -16), block_amax);
    case DType::kQ4_0:
      // |x/d - (q-8)| <= 1 (clamp of q = 16 to 15), plus float rounding of x * id + 8.5;
      // |q - 8| <= 8; d*(q-8) rounds once.
      return BlockBound(block_amax / 8.0f, 1.0 + std::ldexp(1.0, -17), 8.0, std::ldexp(1.0, -20),
                        block_amax);
  }
  return kInf;
}

}  // namespace st
