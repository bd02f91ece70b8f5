// Element types of the model file and their block layouts, declared once. Q8_0 and Q4_0 are
// laid out exactly as in GGUF (blocks of 32 weights, one fp16 scale) so numbers can be
// compared across engines. The scalar reference codec (codec.h) is the ground truth.
#pragma once

#include <cstddef>
#include <cstdint>

namespace st {

// Values are part of the file format: never renumber, only append.
enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kQ8_0 = 8,
  kQ4_0 = 9,
};

constexpr int kQBlock = 32;  // weights a Q8_0 / Q4_0 block

#pragma pack(push, 1)
// Q8_0: x_i = d * qs[i].
struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQBlock];
};
// Q4_0: x_i = d * (q_i - 8); byte j holds q_j (low nibble) and q_{j+16} (high nibble).
struct BlockQ4_0 {
  uint16_t d;  // fp16 scale
  uint8_t qs[kQBlock / 2];
};
#pragma pack(pop)
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes");

// True for the types this build knows (a file's type field must pass this before any use).
bool IsKnownDType(uint32_t raw);
const char* DTypeName(DType t);  // "f32", "f16", "bf16", "q8_0", "q4_0"
// Parses a DTypeName; false if unknown.
bool ParseDTypeName(const char* name, DType* out);
// Row length granularity: 32 for the block types, 1 otherwise.
int64_t DTypeBlockElems(DType t);
// Bytes of `n` elements (n must be a multiple of DTypeBlockElems). Returns -1 on overflow or a
// bad n, so that callers validating untrusted sizes can reject them.
int64_t DTypeBytes(DType t, int64_t n);

}  // namespace st
