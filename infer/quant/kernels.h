// Compute kernels of the runtime: dot products of quantized weight rows with activations,
// row AXPYs, attention helpers. One table of function pointers per instruction set, chosen at
// run time (AVX-512 VNNI, else AVX2+FMA+F16C, else the portable scalar table). The scalar
// table follows the reference codec (codec.h) and is what every SIMD kernel is tested against.
//
// Activations: weights of type Q4_0 / Q8_0 are multiplied with activations quantized to Q8_0
// (integer dot products, as GGUF engines do); F32 / F16 / BF16 weights with f32 activations.
// Row lengths `n` are multiples of 32 for the block types. No kernel allocates or throws;
// all are thread-safe (they write only to their outputs).
#pragma once

#include <cstddef>
#include <cstdint>

#include "infer/quant/types.h"

namespace st {

// True when weights of type `t` take Q8_0 activations (else f32 activations).
inline bool UsesQ8Activations(DType t) { return t == DType::kQ4_0 || t == DType::kQ8_0; }

// A prepared Q8_0 activation row of n elements (nb = n / 32 blocks), made once and read by
// every weight row. Two parts:
//  1. base: the block scales as f32 (so no kernel converts them again), then the blocks;
//     padded to 64 bytes.  Layout: float d[nb]; BlockQ8_0 q[nb]; pad.
//  2. groups: the same values regrouped for kernels that take four weight blocks per step
//     (AVX-512 VNNI), one kQ8GroupBytes record per four blocks (the nb % 4 tail blocks have
//     none). Record g, blocks b = 4g + k, k in [0, 4):
//       int8  lo[64]  lo[16k + i] = q[b].qs[i]       (elements 0..15 of each block)
//       int8  hi[64]  hi[16k + i] = q[b].qs[16 + i]  (elements 16..31)
//       float dx[16]  dx[4k + j]  = d[b]              (j in [0, 4): one per int32 lane)
//       float cx[16]  cx[4k + j]  = 2 * d[b] * sum_i q[b].qs[i]
//     so that for Q4_0 weights with unsigned nibbles u, sum over the 16 lanes of
//     dw * (dot_lanes(u, lo|hi) * dx - cx) is the row's dot product (the -8 offset folded in).
// Every table's prepare_q8_row fills both parts.
constexpr size_t kQ8GroupBytes = 256;
inline size_t Q8ActBaseBytes(int64_t nb) {
  return (static_cast<size_t>(nb) * (sizeof(float) + sizeof(BlockQ8_0)) + 63) & ~size_t{63};
}
inline size_t Q8ActRowBytes(int64_t n) {
  const int64_t nb = n / kQBlock;
  return Q8ActBaseBytes(nb) + static_cast<size_t>(nb / 4) * kQ8GroupBytes;
}
inline const float* Q8ActScales(const uint8_t* row) { return reinterpret_cast<const float*>(row); }
inline const BlockQ8_0* Q8ActBlocks(const uint8_t* row, int64_t nb) {
  return reinterpret_cast<const BlockQ8_0*>(row + static_cast<size_t>(nb) * sizeof(float));
}
inline const uint8_t* Q8ActGroups(const uint8_t* row, int64_t nb) {
  return row + Q8ActBaseBytes(nb);
}
// Fills the groups part of a prepared row from its base part (portable; every table uses it).
void FillQ8ActGroups(uint8_t* row, int64_t nb);
// Q4_0 row . prepared activation row over the blocks the groups do not cover (nb % 4 of them,
// none in the released shapes); portable, shared by the SIMD tables' four-block kernels.
float Q4DotGroupTail(const uint8_t* w_row, const uint8_t* x_row, int64_t nb);
// Bytes of one activation row of n elements for weights of type `t`: a prepared Q8_0 row, or
// n floats.
inline size_t ActivationRowBytes(DType t, int64_t n) {
  return UsesQ8Activations(t) ? Q8ActRowBytes(n) : static_cast<size_t>(n) * sizeof(float);
}

struct Kernels {
  const char* name;  // "scalar", "avx2+fma+f16c" or "avx512+vnni"

  // Activations -> Q8_0 blocks; byte-identical to QuantizeRowQ8_0 (the reference codec).
  void (*quantize_q8)(const float* x, int64_t n, BlockQ8_0* y);
  // Activations -> a prepared Q8_0 activation row (Q8ActRowBytes(n) bytes at `row`).
  void (*prepare_q8_row)(const float* x, int64_t n, uint8_t* row);

  // Dots of one weight row with T activation rows:
  //   y[t * y_stride] = w_row . X_t,  X_t = X + t * x_stride (bytes), t in [0, T).
  // X rows are prepared Q8_0 activation rows when UsesQ8Activations(wt), else f32 rows.
  void (*row_dots)(DType wt, const uint8_t* w_row, const uint8_t* X, size_t x_stride, int T,
                   int64_t n, float* y, int64_t y_stride);

  // Decode GEMV: y[r] = W[r] . x for r in [0, rows), W rows `row_bytes` apart, x one
  // activation row as for row_dots (T = 1).
  void (*gemv)(DType wt, const uint8_t* W, size_t row_bytes, int64_t rows, const uint8_t* x,
               int64_t n, float* y);
  // Sparse up projection: y[j] = rows[j] . x for j in [0, m), rows scattered (x as for gemv).
  void (*gemv_rows)(DType wt, const uint8_t* const* rows, int64_t m, const uint8_t* x, int64_t n,
                    float* y);
  // Sparse down projection: y[0, n) += sum_j a[j] * rows[j][0, n) for j in [0, m).
  void (*axpy_rows)(DType wt, const uint8_t* const* rows, const float* a, int64_t m, int64_t n,
                    float* y);
  // y[c] += a * w_row[c] for c in [c0, c1) (c0, c1 multiples of the block size).
  void (*axpy_row)(DType wt, const uint8_t* w_row, int64_t c0, int64_t c1, float a, float* y);
  // out[0, n) = dequantized w_row.
  void (*dequant_row)(DType wt, const uint8_t* w_row, int64_t n, float* out);

  // Attention and vector helpers (n any length).
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  float (*dot_f32_f16)(const float* a, const uint16_t* b, int64_t n);
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);     // y += a x
  void (*axpy_f16)(float a, const uint16_t* x, float* y, int64_t n);  // y += a f32(x)
  void (*f32_to_f16)(const float* x, uint16_t* y, int64_t n);         // round to nearest even

  // The int8 peak of this table's dot-product idiom, for the compute probe (st-bench): `iters`
  // rounds of independent in-register multiply-adds of unsigned by signed bytes, as the Q4_0 x
  // Q8_0 kernels issue them (AVX2: two vpmaddubsw, vpaddw, vpmaddwd, vpaddd per 64 products;
  // AVX-512: vpdpbusd; scalar: plain C). Returns the multiply-adds done; *sink defeats
  // dead-code elimination.
  int64_t (*int8_mac_loop)(int64_t iters, int32_t* sink);

  // Small f32 product accumulated into C (prefill's expert down projection):
  //   C[j * ldc + c] += sum_u A[u * lda + j] * B[u * ldb + c], j in [0, M), c in [0, N), u in
  //   [0, U), the sum in ascending u, one fused multiply-add a step (as axpy_f32 would).
  void (*gemm_f32_acc)(const float* A, int64_t lda, int M, const float* B, int64_t ldb, int U,
                       int N, float* C, int64_t ldc);

  // Softmax in place over n >= 1 floats: x[i] = exp(x[i] - max) / sum. The scalar table uses
  // std::exp; the SIMD ones a degree-6 polynomial exp (within 2 ulp of it), the sum in float.
  void (*softmax_f32)(float* x, int64_t n);

  // Grouped-query attention over an f16 KV cache: the R query heads that share one KV head
  // take each key and value once, converted once for all of them.
  //   attn_scores_f16: s[h * s_stride + j] = scale * (q_h . K_j), q_h = q + h * D,
  //                    K_j = K + j * k_stride (elements), h in [0, R), j in [0, n).
  //   attn_values_f16: out[h * D + d] += sum_j w[h * w_stride + j] * V_j[d], V_j = V + j *
  //   v_stride.
  // Any R >= 1, D >= 1 and n >= 0; SIMD tables take D % 8 == 0 in vector registers.
  void (*attn_scores_f16)(const float* q, int R, int D, const uint16_t* K, int64_t k_stride,
                          int64_t n, float scale, float* s, int64_t s_stride);
  void (*attn_values_f16)(const float* w, int R, int64_t w_stride, const uint16_t* V,
                          int64_t v_stride, int64_t n, int D, float* out);
};

const Kernels& ScalarKernels();
// nullptr when this CPU lacks AVX2, FMA or F16C, or the build has no x86 SIMD path.
const Kernels* Avx2Kernels();
// nullptr when this CPU lacks AVX-512 F/BW/VL/VNNI/VBMI (or AVX2), or the build has no such
// path. Q4_0 GEMVs, row dots and AXPYs in 512-bit VNNI; every other entry is the AVX2 one.
const Kernels* Avx512Kernels();
// The fastest table this CPU supports (or the scalar one when simd is false).
const Kernels& SelectKernels(bool simd);

}  // namespace st
