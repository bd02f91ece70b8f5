// The portable scalar kernel table (the reference every SIMD table is tested against) and the
// run-time selection between tables.
#include "infer/quant/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "infer/quant/codec.h"

namespace st {
namespace {

const BlockQ8_0* Q8(const uint8_t* p) { return reinterpret_cast<const BlockQ8_0*>(p); }
const BlockQ4_0* Q4(const uint8_t* p) { return reinterpret_cast<const BlockQ4_0*>(p); }

float DotQ4Q8(const BlockQ4_0* w, const BlockQ8_0* x, int64_t nb) {
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQBlock / 2; ++j) {
      isum += ((w[b].qs[j] & 0x0F) - 8) * x[b].qs[j];
      isum += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + kQBlock / 2];
    }
    sum += F16ToF32(w[b].d) * F16ToF32(x[b].d) * static_cast<float>(isum);
  }
  return sum;
}

float DotQ8Q8(const BlockQ8_0* w, const BlockQ8_0* x, int64_t nb) {
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQBlock; ++j) isum += w[b].qs[j] * x[b].qs[j];
    sum += F16ToF32(w[b].d) * F16ToF32(x[b].d) * static_cast<float>(isum);
  }
  return sum;
}

template <typename Conv>
float DotConv(const uint16_t* w, const float* x, int64_t n, Conv conv) {
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) sum += conv(w[i]) * x[i];
  return sum;
}

float DotF32(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float RowDot(DType wt, const uint8_t* w, const uint8_t* x, int64_t n) {
  switch (wt) {
    case DType::kQ4_0:
      return DotQ4Q8(Q4(w), Q8ActBlocks(x, n / kQBlock), n / kQBlock);
    case DType::kQ8_0:
      return DotQ8Q8(Q8(w), Q8ActBlocks(x, n / kQBlock), n / kQBlock);
    case DType::kF16:
      return DotConv(reinterpret_cast<const uint16_t*>(w), reinterpret_cast<const float*>(x), n,
                     F16ToF32);
    case DType::kBF16:
      return DotConv(reinterpret_cast<const uint16_t*>(w), reinterpret_cast<const float*>(x), n,
                     BF16ToF32);
    case DType::kF32:
      return DotF32(reinterpret_cast<const float*>(w), reinterpret_cast<const float*>(x), n);
  }
  return 0.f;
}

void ScalarRowDots(DType wt, const uint8_t* w_row, const uint8_t* X, size_t x_stride, int T,
                   int64_t n, float* y, int64_t y_stride) {
  for (int t = 0; t < T; ++t) y[t * y_stride] = RowDot(wt, w_row, X + t * x_stride, n);
}

void ScalarGemv(DType wt, const uint8_t* W, size_t row_bytes, int64_t rows, const uint8_t* x,
                int64_t n, float* y) {
  for (int64_t r = 0; r < rows; ++r) y[r] = RowDot(wt, W + r * row_bytes, x, n);
}

void ScalarGemvRows(DType wt, const uint8_t* const* rows, int64_t m, const uint8_t* x, int64_t n,
                    float* y) {
  for (int64_t j = 0; j < m; ++j) y[j] = RowDot(wt, rows[j], x, n);
}

void ScalarAxpyRowsImpl(DType wt, const uint8_t* const* rows, const float* a, int64_t m, int64_t n,
                        float* y);

void ScalarPrepareQ8Row(const float* x, int64_t n, uint8_t* row) {
  const int64_t nb = n / kQBlock;
  BlockQ8_0* q = const_cast<BlockQ8_0*>(Q8ActBlocks(row, nb));
  QuantizeRowQ8_0(x, n, q);
  float* d = reinterpret_cast<float*>(row);
  for (int64_t b = 0; b < nb; ++b) d[b] = F16ToF32(q[b].d);
  FillQ8ActGroups(row, nb);
}

void ScalarDequantRow(DType wt, const uint8_t* w_row, int64_t n, float* out) {
  DequantizeRow(wt, w_row, n, out);
}

void ScalarAxpyRow(DType wt, const uint8_t* w_row, int64_t c0, int64_t c1, float a, float* y) {
  float buf[kQBlock];
  const int64_t step = kQBlock;
  for (int64_t c = c0; c < c1; c += step) {
    const int64_t len = c1 - c < step ? c1 - c : step;
    const uint8_t* src = w_row + DTypeBytes(wt, c);
    DequantizeRow(wt, src, len, buf);
    for (int64_t i = 0; i < len; ++i) y[c + i] += a * buf[i];
  }
}

void ScalarAxpyRowsImpl(DType wt, const uint8_t* const* rows, const float* a, int64_t m, int64_t n,
                        float* y) {
  for (int64_t j = 0; j < m; ++j) ScalarAxpyRow(wt, rows[j], 0, n, a[j], y);
}

float ScalarDotF32F16(const float* a, const uint16_t* b, int64_t n) {
  return DotConv(b, a, n, F16ToF32);
}
void ScalarAxpyF32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}
void ScalarAxpyF16(float a, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * F16ToF32(x[i]);
}
void ScalarF32ToF16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = F32ToF16(x[i]);
}

void ScalarSoftmaxF32(float* x, int64_t n) {
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void ScalarAttnScoresF16(const float* q, int R, int D, const uint16_t* K, int64_t ks, int64_t n,
                         float scale, float* s, int64_t ss) {
  for (int h = 0; h < R; ++h) {
    for (int64_t j = 0; j < n; ++j)
      s[h * ss + j] = scale * ScalarDotF32F16(q + h * D, K + j * ks, D);
  }
}
void ScalarAttnValuesF16(const float* w, int R, int64_t ws, const uint16_t* V, int64_t vs,
                         int64_t n, int D, float* out) {
  for (int h = 0; h < R; ++h) {
    for (int64_t j = 0; j < n; ++j) ScalarAxpyF16(w[h * ws + j], V + j * vs, out + h * D, D);
  }
}

int64_t ScalarInt8MacLoop(int64_t iters, int32_t* sink) {
  uint8_t u[64];
  int8_t x[64];
  for (int i = 0; i < 64; ++i)
    u[i] = static_cast<uint8_t>(i * 7), x[i] = static_cast<int8_t>(i - 31);
  int32_t acc[8] = {};
  for (int64_t it = 0; it < iters; ++it) {
    asm volatile("" : : "r"(u), "r"(x) : "memory");  // the operands change as far as it knows
    for (int i = 0; i < 64; ++i) acc[i & 7] += u[i] * x[i];
  }
  int32_t s = 0;
  for (int32_t a : acc) s += a;
  *sink = s;
  return iters * 64;
}

void ScalarGemmF32Acc(const float* A, int64_t lda, int M, const float* B, int64_t ldb, int U, int N,
                      float* C, int64_t ldc) {
  for (int j = 0; j < M; ++j) {
    for (int c = 0; c < N; ++c) {
      float acc = C[j * ldc + c];
      for (int u = 0; u < U; ++u) acc = std::fma(A[u * lda + j], B[u * ldb + c], acc);
      C[j * ldc + c] = acc;
    }
  }
}

// clang-format off
const Kernels kScalar = {
    "scalar",
    QuantizeRowQ8_0,
    ScalarPrepareQ8Row,
    ScalarRowDots,
    ScalarGemv,
    ScalarGemvRows,
    ScalarAxpyRowsImpl,
    ScalarAxpyRow,
    ScalarDequantRow,
    DotF32,
    ScalarDotF32F16,
    ScalarAxpyF32,
    ScalarAxpyF16,
    ScalarF32ToF16,
    ScalarInt8MacLoop,
    ScalarGemmF32Acc,
    ScalarSoftmaxF32,
    ScalarAttnScoresF16,
    ScalarAttnValuesF16,
};
// clang-format on

}  // namespace

namespace kernels_internal {
const Kernels* Avx2Table();  // kernels_avx2.cpp; nullptr when built without the x86 path
// kernels_avx512.cpp: `base` with the AVX-512 entries swapped in; nullptr without that path.
const Kernels* Avx512Table(const Kernels* base);
}  // namespace kernels_internal

float Q4DotGroupTail(const uint8_t* w_row, const uint8_t* x_row, int64_t nb) {
  const int64_t b0 = nb & ~int64_t{3};
  return DotQ4Q8(Q4(w_row) + b0, Q8ActBlocks(x_row, nb) + b0, nb - b0);
}

void FillQ8ActGroups(uint8_t* row, int64_t nb) {
  const float* d = Q8ActScales(row);
  const BlockQ8_0* q = Q8ActBlocks(row, nb);
  uint8_t* g = row + Q8ActBaseBytes(nb);
  for (int64_t b0 = 0; b0 + 4 <= nb; b0 += 4, g += kQ8GroupBytes) {
    int8_t* lo = reinterpret_cast<int8_t*>(g);
    int8_t* hi = lo + 64;
    float* dx = reinterpret_cast<float*>(g + 128);
    float* cx = dx + 16;
    for (int k = 0; k < 4; ++k) {
      const BlockQ8_0& x = q[b0 + k];
      std::memcpy(lo + 16 * k, x.qs, 16);
      std::memcpy(hi + 16 * k, x.qs + 16, 16);
      int32_t sum = 0;
      for (int i = 0; i < kQBlock; ++i) sum += x.qs[i];
      for (int j = 0; j < 4; ++j) {
        dx[4 * k + j] = d[b0 + k];
        cx[4 * k + j] = 2.0f * d[b0 + k] * static_cast<float>(sum);
      }
    }
  }
}

const Kernels& ScalarKernels() { return kScalar; }

const Kernels* Avx2Kernels() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                __builtin_cpu_supports("f16c");
  return supported ? kernels_internal::Avx2Table() : nullptr;
#else
  return nullptr;
#endif
}

const Kernels* Avx512Kernels() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const Kernels* table = [] {
    const Kernels* base = Avx2Kernels();
    const bool ok = base != nullptr && __builtin_cpu_supports("avx512f") &&
                    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                    __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
    return ok ? kernels_internal::Avx512Table(base) : nullptr;
  }();
  return table;
#else
  return nullptr;
#endif
}

const Kernels& SelectKernels(bool simd) {
  if (simd) {
    if (const Kernels* k = Avx512Kernels()) return *k;
    if (const Kernels* k = Avx2Kernels()) return *k;
  }
  return kScalar;
}

}  // namespace st
