// The scalar dequantisers of ggml's block types (ggml_blocks.h), bit-exact with ggml's own.
#include "infer/quant/ggml_blocks.h"

#include <cstring>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "infer/quant/codec.h"

namespace st {
namespace {

// Each dequantiser does ggml's float operations in ggml's order. FMA contraction cannot change a
// result, so no -ffp-contract flag is needed: every product that feeds an addition is exact in
// float (fp16 scale, 11 significant bits, times a 6-bit sub-scale times a quant of at most 5
// bits: at most 22 bits, and multiples of 2^-24 never underflow), so fused and unfused give the
// one rounding of the sum.

constexpr GgmlTypeInfo kTypes[] = {
    {GgmlType::kF32, "f32", 1, 4},
    {GgmlType::kF16, "f16", 1, 2},
    {GgmlType::kQ4_0, "q4_0", kGgmlQK, sizeof(GgmlBlockQ4_0)},
    {GgmlType::kQ4_1, "q4_1", kGgmlQK, sizeof(GgmlBlockQ4_1)},
    {GgmlType::kQ5_0, "q5_0", kGgmlQK, sizeof(GgmlBlockQ5_0)},
    {GgmlType::kQ5_1, "q5_1", kGgmlQK, sizeof(GgmlBlockQ5_1)},
    {GgmlType::kQ8_0, "q8_0", kGgmlQK, sizeof(GgmlBlockQ8_0)},
    {GgmlType::kQ2_K, "q2_K", kGgmlQK_K, sizeof(GgmlBlockQ2_K)},
    {GgmlType::kQ3_K, "q3_K", kGgmlQK_K, sizeof(GgmlBlockQ3_K)},
    {GgmlType::kQ4_K, "q4_K", kGgmlQK_K, sizeof(GgmlBlockQ4_K)},
    {GgmlType::kQ5_K, "q5_K", kGgmlQK_K, sizeof(GgmlBlockQ5_K)},
    {GgmlType::kQ6_K, "q6_K", kGgmlQK_K, sizeof(GgmlBlockQ6_K)},
    {GgmlType::kQ8_K, "q8_K", kGgmlQK_K, sizeof(GgmlBlockQ8_K)},
    {GgmlType::kBF16, "bf16", 1, 2},
};

// Block `i` of `src`, copied out (the input may be unaligned and is only bytes to us). The
// multi-byte fields are read in host order: the project assumes a little-endian host.
template <typename Block>
Block LoadBlock(const void* src, int64_t i) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(src) + i * static_cast<int64_t>(sizeof(Block)),
              sizeof(Block));
  return b;
}

// Element j < 16 of a 32-element block: the low nibble of byte j; j >= 16: the high nibble of
// byte j - 16.
int Nibble(const uint8_t* qs, int j) {
  return j < kGgmlQK / 2 ? (qs[j] & 0xF) : (qs[j - kGgmlQK / 2] >> 4);
}

uint32_t LoadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// The 5-bit quant j of a Q5_0 / Q5_1 block: bit j of qh is its bit 4.
int Q5Quant(const uint8_t* qs, uint32_t qh, int j) {
  return Nibble(qs, j) | static_cast<int>(((qh >> j) & 1u) << 4);
}

// Scale and min k < 8 of a Q4_K / Q5_K block (6 bits each, packed in 12 bytes).
void ScaleMinK4(const uint8_t* s, int k, int* sc, int* m) {
  if (k < 4) {
    *sc = s[k] & 63;
    *m = s[k + 4] & 63;
  } else {
    *sc = (s[k + 4] & 0xF) | ((s[k - 4] >> 6) << 4);
    *m = (s[k + 4] >> 4) | ((s[k] >> 6) << 4);
  }
}

// Scale g < 16 of a Q3_K block, 6 bits offset by 32 (so in [-32, 31]).
int ScaleQ3K(const uint8_t* s, int g) {
  const int low = g < 8 ? (s[g] & 0xF) : (s[g - 8] >> 4);
  const int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
  return (low | (high << 4)) - 32;
}

void DequantQ4_1(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kGgmlQK) {
    const auto b = LoadBlock<GgmlBlockQ4_1>(src, i);
    const float d = F16ToF32(b.d);
    const float m = F16ToF32(b.m);
    for (int j = 0; j < kGgmlQK; ++j) y[j] = static_cast<float>(Nibble(b.qs, j)) * d + m;
  }
}

void DequantQ5_0(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kGgmlQK) {
    const auto b = LoadBlock<GgmlBlockQ5_0>(src, i);
    const float d = F16ToF32(b.d);
    const uint32_t qh = LoadU32(b.qh);
    for (int j = 0; j < kGgmlQK; ++j) y[j] = static_cast<float>(Q5Quant(b.qs, qh, j) - 16) * d;
  }
}

void DequantQ5_1(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kGgmlQK) {
    const auto b = LoadBlock<GgmlBlockQ5_1>(src, i);
    const float d = F16ToF32(b.d);
    const float m = F16ToF32(b.m);
    const uint32_t qh = LoadU32(b.qh);
    for (int j = 0; j < kGgmlQK; ++j) y[j] = static_cast<float>(Q5Quant(b.qs, qh, j)) * d + m;
  }
}

// Q2_K and Q3_K share their 2-bit layout: element 128h + 32s + 16t + l is bits 2s..2s+1 of
// qs[32h + 16t + l], in group 8h + 2s + t.
void DequantQ2_K(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = LoadBlock<GgmlBlockQ2_K>(src, i);
    const float d = F16ToF32(b.d);
    const float dmin = F16ToF32(b.dmin);
    for (int h = 0; h < 2; ++h) {
      for (int s = 0; s < 4; ++s) {
        for (int t = 0; t < 2; ++t) {
          const int sc = b.scales[8 * h + 2 * s + t];
          const float dl = d * static_cast<float>(sc & 0xF);
          const float ml = dmin * static_cast<float>(sc >> 4);
          const uint8_t* q = b.qs + 32 * h + 16 * t;
          for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l] >> (2 * s)) & 3) - ml;
        }
      }
    }
  }
}

void DequantQ3_K(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = LoadBlock<GgmlBlockQ3_K>(src, i);
    const float d = F16ToF32(b.d);
    for (int h = 0; h < 2; ++h) {
      for (int s = 0; s < 4; ++s) {
        const int hbit = 4 * h + s;
        for (int t = 0; t < 2; ++t) {
          const float dl = d * static_cast<float>(ScaleQ3K(b.scales, 8 * h + 2 * s + t));
          const uint8_t* q = b.qs + 32 * h + 16 * t;
          const uint8_t* hm = b.hmask + 16 * t;
          for (int l = 0; l < 16; ++l) {
            const int lowered = ((hm[l] >> hbit) & 1) ? 0 : 4;
            *y++ = dl * static_cast<float>(((q[l] >> (2 * s)) & 3) - lowered);
          }
        }
      }
    }
  }
}

// Q4_K and Q5_K: chunk c < 4 of 64 elements; sub-blocks 2c (low nibbles) and 2c+1 (high).
// `qh` is null for Q4_K.
void DequantChunksK(const uint8_t* scales, const uint8_t* qs, const uint8_t* qh, float d,
                    float dmin, float* y) {
  for (int c = 0; c < 4; ++c) {
    const uint8_t* q = qs + 32 * c;
    for (int half = 0; half < 2; ++half) {
      int sc;
      int m;
      ScaleMinK4(scales, 2 * c + half, &sc, &m);
      const float dl = d * static_cast<float>(sc);
      const float ml = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        int v = half == 0 ? (q[l] & 0xF) : (q[l] >> 4);
        if (qh != nullptr && ((qh[l] >> (2 * c + half)) & 1)) v += 16;
        *y++ = dl * static_cast<float>(v) - ml;
      }
    }
  }
}

void DequantQ4_K(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kGgmlQK_K) {
    const auto b = LoadBlock<GgmlBlockQ4_K>(src, i);
    DequantChunksK(b.scales, b.qs, nullptr, F16ToF32(b.d), F16ToF32(b.dmin), y);
  }
}

void DequantQ5_K(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kGgmlQK_K) {
    const auto b = LoadBlock<GgmlBlockQ5_K>(src, i);
    DequantChunksK(b.scales, b.qs, b.qh, F16ToF32(b.d), F16ToF32(b.dmin), y);
  }
}

void DequantQ6_K(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = LoadBlock<GgmlBlockQ6_K>(src, i);
    const float d = F16ToF32(b.d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b.ql + 64 * h;
      const uint8_t* qh = b.qh + 32 * h;
      for (int r = 0; r < 4; ++r) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t lbyte = ql[l + 32 * (r & 1)];
          const int low = r < 2 ? (lbyte & 0xF) : (lbyte >> 4);
          const int q = (low | (((qh[l] >> (2 * r)) & 3) << 4)) - 32;
          const float dl = d * static_cast<float>(b.scales[8 * h + 2 * r + l / 16]);
          *y++ = dl * static_cast<float>(q);
        }
      }
    }
  }
}

void DequantQ8_K(const void* src, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = LoadBlock<GgmlBlockQ8_K>(src, i);
    for (int j = 0; j < kGgmlQK_K; ++j) *y++ = b.d * static_cast<float>(b.qs[j]);
  }
}

// F16 / BF16: one 16-bit pattern per element.
template <float (*kConvert)(uint16_t)>
void DequantHalf(const void* src, int64_t n, float* y) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, sizeof(h));
    y[i] = kConvert(h);
  }
}

}  // namespace

const GgmlTypeInfo* FindGgmlType(uint32_t id) {
  for (const GgmlTypeInfo& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == id) return &t;
  }
  return nullptr;
}

const GgmlTypeInfo* FindGgmlTypeByName(absl::string_view name) {
  for (const GgmlTypeInfo& t : kTypes) {
    if (absl::EqualsIgnoreCase(t.name, name)) return &t;
  }
  return nullptr;
}

std::optional<DType> DTypeOfGgml(GgmlType t) {
  for (const DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
    if (GgmlTypeForDType(d) == t) return d;
  }
  return std::nullopt;
}

GgmlType GgmlTypeForDType(DType t) {
  switch (t) {
    case DType::kF32:
      return GgmlType::kF32;
    case DType::kF16:
      return GgmlType::kF16;
    case DType::kBF16:
      return GgmlType::kBF16;
    case DType::kQ8_0:
      return GgmlType::kQ8_0;
    case DType::kQ4_0:
      return GgmlType::kQ4_0;
  }
  return GgmlType::kF32;  // unreachable for a valid DType
}

absl::StatusOr<int64_t> GgmlRowBytes(uint32_t id, int64_t n) {
  const GgmlTypeInfo* t = FindGgmlType(id);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("unsupported ggml type ", id));
  if (n < 0 || n % t->block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        t->name, ": ", n, " elements is not a multiple of its block of ", t->block_elems));
  }
  const int64_t blocks = n / t->block_elems;
  if (blocks > std::numeric_limits<int64_t>::max() / t->block_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(t->name, ": ", n, " elements overflow a size"));
  }
  return blocks * t->block_bytes;
}

absl::Status DequantizeRowGgml(uint32_t id, const void* blocks, int64_t n, float* out) {
  const absl::StatusOr<int64_t> bytes = GgmlRowBytes(id, n);
  if (!bytes.ok()) return bytes.status();
  const int64_t nb = n / FindGgmlType(id)->block_elems;
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(out, blocks, static_cast<size_t>(*bytes));
      break;
    case GgmlType::kF16:
      DequantHalf<F16ToF32>(blocks, n, out);
      break;
    case GgmlType::kBF16:
      DequantHalf<BF16ToF32>(blocks, n, out);
      break;
    case GgmlType::kQ4_0:  // the model file's codec: the same blocks (packed, any alignment)
      DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(blocks), n, out);
      break;
    case GgmlType::kQ4_1:
      DequantQ4_1(blocks, nb, out);
      break;
    case GgmlType::kQ5_0:
      DequantQ5_0(blocks, nb, out);
      break;
    case GgmlType::kQ5_1:
      DequantQ5_1(blocks, nb, out);
      break;
    case GgmlType::kQ8_0:
      DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(blocks), n, out);
      break;
    case GgmlType::kQ2_K:
      DequantQ2_K(blocks, nb, out);
      break;
    case GgmlType::kQ3_K:
      DequantQ3_K(blocks, nb, out);
      break;
    case GgmlType::kQ4_K:
      DequantQ4_K(blocks, nb, out);
      break;
    case GgmlType::kQ5_K:
      DequantQ5_K(blocks, nb, out);
      break;
    case GgmlType::kQ6_K:
      DequantQ6_K(blocks, nb, out);
      break;
    case GgmlType::kQ8_K:
      DequantQ8_K(blocks, nb, out);
      break;
  }
  return absl::OkStatus();
}

}  // namespace st
