// The scalar reference codec: fp16/bf16 conversions and the GGUF-compatible Q8_0 / Q4_0 block
// quantizers. Ground truth for the exporter, the runtime's SIMD kernels and all tests.
#pragma once

#include <cstdint>

#include "infer/quant/types.h"

namespace st {

// IEEE binary16. Round to nearest, ties to even; values >= 65520 in magnitude become inf;
// NaN stays NaN (quiet, sign and top payload bits kept); subnormals are exact.
uint16_t F32ToF16(float f);
float F16ToF32(uint16_t h);  // exact

// bfloat16 (the top 16 bits of a float). Round to nearest, ties to even; NaN stays NaN (quiet).
uint16_t F32ToBF16(float f);
float BF16ToF32(uint16_t h);  // exact

// Q8_0 as in GGUF's reference: per block of 32, amax = max|x|, d = amax / 127, id = 1/d (0 if
// d == 0), q = roundf(x * id) (half away from zero), d stored as fp16. n % 32 == 0 (checked).
void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* y);
void DequantizeRowQ8_0(const BlockQ8_0* y, int64_t n, float* x);  // x = d * q

// Q4_0 as in GGUF's reference: per block, m = the element of largest magnitude (sign kept, the
// first one on ties), d = m / -8, id = 1/d (0 if d == 0), q = min(15, trunc(x * id + 8.5)).
// Byte j holds element j in its low nibble and element j + 16 in its high nibble.
void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* y);
void DequantizeRowQ4_0(const BlockQ4_0* y, int64_t n, float* x);  // x = d * (q - 8)

// Any of the five types; `dst` / `src` hold DTypeBytes(t, n) bytes. F32 is a copy. n must be a
// non-negative multiple of DTypeBlockElems(t) and t a known type (checked: caller's invariant).
void QuantizeRow(DType t, const float* x, int64_t n, void* dst);
void DequantizeRow(DType t, const void* src, int64_t n, float* x);

// An upper bound on |x - Dequantize(Quantize(x))| over every element x of any block (a block
// is one element for F32/F16/BF16) whose largest magnitude is `block_amax` (finite, >= 0).
// It includes the fp16 rounding of the block scale and float rounding in the codec. +inf when
// the scale (or, for F16/BF16, the value) overflows: Q8_0 for amax > ~8.32e6 (d > 65504),
// Q4_0 for amax > ~5.24e5, F16 for amax >= 65520.
//   F32: 0.   F16 / BF16: half an ulp of amax's binade (2^-25 / 2^-134 below the normals).
//   Q8_0: d (1/2 + 2^-15) + 127 |d - fp16(d)| + 2^-16 fp16(d),  d = amax / 127.
//   Q4_0: d (1 + 2^-17) + 8 |d - fp16(d)| + 2^-20 fp16(d),  d = amax / 8.
// (the 2^-k terms cover float rounding of x * id, x * id + 8.5 and d * q; when fp16(d) is 0
// the bound is at least amax, since everything dequantizes to 0).
// The Q4_0 worst case is the side opposite the largest element: x = -m gives q = 16, clamped
// to 15, so it dequantizes to 7|d| instead of 8|d| (error d, not d/2).
double QuantErrorBound(DType t, float block_amax);

}  // namespace st
