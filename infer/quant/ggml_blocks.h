// The ggml block types of GGUF files (layouts, type ids) and their scalar dequantisers.
#pragma once

// GGUF import dequantises these types and requantises to ours (types.h). Layouts as in ggml's
// ggml-common.h; results bit for bit as ggml's reference (tests/data/ggml holds its output).

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "infer/quant/types.h"

namespace st {

// ggml's type ids (ggml.h `enum ggml_type`): values fixed by the GGUF format. Only the types
// this file can dequantise are listed.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

constexpr int kGgmlQK = kQBlock;  // elements of a Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 block
constexpr int kGgmlQK_K = 256;    // elements of a K-quant super-block

// Field order is byte order; every multi-byte field is little-endian. "f16" fields are IEEE
// binary16 bit patterns (F16ToF32 in codec.h). Element j of block i is element i*QK + j.

// Q4_0 and Q8_0 are our model file's own blocks (types.h), which have ggml's layout.
using GgmlBlockQ4_0 = BlockQ4_0;
using GgmlBlockQ8_0 = BlockQ8_0;

#pragma pack(push, 1)
// x_j = (qs[j] & 0xF) * d + m, x_{j+16} = (qs[j] >> 4) * d + m.
struct GgmlBlockQ4_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qs[kGgmlQK / 2];
};
// As Q4_0 with a fifth bit per element: bit j of qh (a little-endian u32) is the bit 4 of q_j,
// for j < 32; x_j = d * (q_j - 16).
struct GgmlBlockQ5_0 {
  uint16_t d;  // f16
  uint8_t qh[4];
  uint8_t qs[kGgmlQK / 2];
};
// As Q5_0 without the -16 and with + m: x_j = q_j * d + m.
struct GgmlBlockQ5_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qh[4];
  uint8_t qs[kGgmlQK / 2];
};
// 16 groups of 16; group g has scale byte scales[g] (low nibble: scale, high nibble: min) and
// 2-bit quants. x = d * (sc & 0xF) * q - dmin * (sc >> 4). Half h (128 elements) reads
// qs[32h .. 32h+31]: element 128h + 32s + 16t + l (shift s < 4, t < 2, l < 16) is bits 2s..2s+1
// of qs[32h + 16t + l], and its group is 8h + 2s + t.
struct GgmlBlockQ2_K {
  uint8_t scales[kGgmlQK_K / 16];
  uint8_t qs[kGgmlQK_K / 4];
  uint16_t d;     // f16
  uint16_t dmin;  // f16
};
// 16 groups of 16 with 6-bit scales (stored 12 bytes, offset by 32): group g's low 4 bits are
// scales[g] & 0xF for g < 8 and scales[g - 8] >> 4 otherwise; its high 2 bits are bits
// 2(g/4)..2(g/4)+1 of scales[8 + g%4]. 2-bit quants as in Q2_K plus a third bit in hmask: element
// 128h + 32s + 16t + l has bit (4h + s) of hmask[16t + l]; if that bit is clear the quant is
// lowered by 4. x = d * (scale - 32) * (q - (hbit ? 0 : 4)).
struct GgmlBlockQ3_K {
  uint8_t hmask[kGgmlQK_K / 8];
  uint8_t qs[kGgmlQK_K / 4];
  uint8_t scales[12];
  uint16_t d;  // f16
};
// 8 sub-blocks of 32 with a 6-bit scale sc[k] and min m[k] packed in 12 bytes s: for k < 4
// sc = s[k] & 63, m = s[k+4] & 63; for k >= 4 sc = (s[k+4] & 0xF) | ((s[k-4] >> 6) << 4),
// m = (s[k+4] >> 4) | ((s[k] >> 6) << 4). Chunk c < 4 reads qs[32c .. 32c+31]: element
// 64c + l is the low nibble (sub-block 2c), 64c + 32 + l the high nibble (sub-block 2c+1).
// x = d * sc * q - dmin * m.
struct GgmlBlockQ4_K {
  uint16_t d;     // f16
  uint16_t dmin;  // f16
  uint8_t scales[12];
  uint8_t qs[kGgmlQK_K / 2];
};
// As Q4_K with a fifth bit: element 64c + l has bit 2c of qh[l], element 64c + 32 + l has bit
// 2c+1 of qh[l]; that bit adds 16 to the quant.
struct GgmlBlockQ5_K {
  uint16_t d;     // f16
  uint16_t dmin;  // f16
  uint8_t scales[12];
  uint8_t qh[kGgmlQK_K / 8];
  uint8_t qs[kGgmlQK_K / 2];
};
// 16 groups of 16 with signed 8-bit scales; 6-bit quants offset by 32. Half h, l < 32:
// element 128h + 32r + l (r < 4) takes its low 4 bits from ql[64h + l + 32(r&1)] (low nibble
// for r < 2, high nibble otherwise) and its high 2 bits from bits 2r..2r+1 of qh[32h + l];
// its group is 8h + 2r + l/16. x = d * scales[group] * (q - 32).
struct GgmlBlockQ6_K {
  uint8_t ql[kGgmlQK_K / 2];
  uint8_t qh[kGgmlQK_K / 4];
  int8_t scales[kGgmlQK_K / 16];
  uint16_t d;  // f16
};
// ggml's intermediate type (activations): x_j = d * qs[j]; bsums are not needed to dequantise.
struct GgmlBlockQ8_K {
  float d;
  int8_t qs[kGgmlQK_K];
  int16_t bsums[kGgmlQK_K / 16];
};
#pragma pack(pop)
static_assert(sizeof(GgmlBlockQ4_0) == 18, "Q4_0 block must be 18 bytes");
static_assert(sizeof(GgmlBlockQ4_1) == 20, "Q4_1 block must be 20 bytes");
static_assert(sizeof(GgmlBlockQ5_0) == 22, "Q5_0 block must be 22 bytes");
static_assert(sizeof(GgmlBlockQ5_1) == 24, "Q5_1 block must be 24 bytes");
static_assert(sizeof(GgmlBlockQ8_0) == 34, "Q8_0 block must be 34 bytes");
static_assert(sizeof(GgmlBlockQ2_K) == 84, "Q2_K block must be 84 bytes");
static_assert(sizeof(GgmlBlockQ3_K) == 110, "Q3_K block must be 110 bytes");
static_assert(sizeof(GgmlBlockQ4_K) == 144, "Q4_K block must be 144 bytes");
static_assert(sizeof(GgmlBlockQ5_K) == 176, "Q5_K block must be 176 bytes");
static_assert(sizeof(GgmlBlockQ6_K) == 210, "Q6_K block must be 210 bytes");
static_assert(sizeof(GgmlBlockQ8_K) == 292, "Q8_K block must be 292 bytes");

// Block geometry of a ggml type this file supports.
struct GgmlTypeInfo {
  GgmlType type;
  const char* name;     // ggml's name: "f32", "q4_0", "q4_K", "bf16", ...
  int64_t block_elems;  // 1 for F32 / F16 / BF16
  int64_t block_bytes;
};

// The geometry of ggml type id `id`; nullptr if this file cannot dequantise it (IQ*, TQ*, Q8_1,
// integer types, ...). Safe on any id.
const GgmlTypeInfo* FindGgmlType(uint32_t id);

// The supported type whose ggml name is `name`, compared ignoring case ("q6_K", "Q6_K"), or
// nullptr.
const GgmlTypeInfo* FindGgmlTypeByName(absl::string_view name);

// The model file's type that stores ggml type `t` block for block (F32, F16, BF16, Q8_0, Q4_0
// have ggml's layouts), or nullopt; and the inverse, which every DType has.
std::optional<DType> DTypeOfGgml(GgmlType t);
GgmlType GgmlTypeForDType(DType t);

// Bytes of `n` elements of type `id`: InvalidArgument for an unsupported id, a negative n, n not
// a multiple of the block size, or a size past int64_t.
absl::StatusOr<int64_t> GgmlRowBytes(uint32_t id, int64_t n);

// Dequantises `n` elements of ggml type `id` from `blocks` (GgmlRowBytes(id, n) bytes, any
// alignment) into `out` (n floats), bit for bit as ggml's own scalar reference (ggml-quants.c
// dequantize_row_*, ggml_fp16_to_fp32_row, ggml_bf16_to_fp32_row); the one exception is the
// payload of a signalling-NaN F16 element, which ggml makes quiet and we keep. Defined for every
// bit pattern: NaN or infinite scales propagate as IEEE arithmetic says. Host is little-endian.
// InvalidArgument (and `out` untouched) for an unsupported id or a bad n.
absl::Status DequantizeRowGgml(uint32_t id, const void* blocks, int64_t n, float* out);

}  // namespace st
