// The AVX2+FMA+F16C kernel table. This file is compiled with -mavx2 -mfma -mf16c; nothing in it
// runs unless kernels.cpp has checked the CPU (Avx2Kernels). It uses no std templates, so no
// AVX-compiled copy of a shared inline function can leak into scalar code.
#include "infer/quant/kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include "infer/quant/codec.h"

namespace st {
namespace {

const BlockQ8_0* Q8(const uint8_t* p) { return reinterpret_cast<const BlockQ8_0*>(p); }
const BlockQ4_0* Q4(const uint8_t* p) { return reinterpret_cast<const BlockQ4_0*>(p); }

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float Half(uint16_t h) { return _cvtsh_ss(h); }

constexpr int64_t kPrefetchAhead = 1024;  // bytes

// 16 bytes of Q4_0 nibbles -> 32 signed bytes q - 8 in element order (low nibbles are
// elements 0..15, high nibbles 16..31).
inline __m256i UnpackQ4(const uint8_t* qs) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i v = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

inline __m256i LoadQ8(const int8_t* qs) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
}

// Sum of w[i] * y[i] over 32 signed bytes as 8 int32 lanes converted to float. |w|, |y| <= 128
// with y from the quantizer (|y| <= 127): pairs stay below 2^15, no saturation.
inline __m256 DotBytes(__m256i abs_w, __m256i w, __m256i y) {
  const __m256i p16 = _mm256_maddubs_epi16(abs_w, _mm256_sign_epi8(y, w));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

template <bool kQ4>
inline __m256i WeightBlock(const uint8_t* base, int64_t b) {
  if (kQ4) return UnpackQ4(Q4(base)[b].qs);
  return LoadQ8(Q8(base)[b].qs);
}
template <bool kQ4>
inline float WeightScale(const uint8_t* base, int64_t b) {
  return kQ4 ? Half(Q4(base)[b].d) : Half(Q8(base)[b].d);
}

// Q4_0 / Q8_0 weight row . prepared Q8_0 activation rows, tiled 1 row x 4 tokens so each
// weight block is unpacked once per four tokens; activation scales come pre-converted.
template <bool kQ4>
void RowDotsQuant(const uint8_t* w, const uint8_t* X, size_t xs, int T, int64_t nb, float* y,
                  int64_t ys) {
  int t = 0;
  for (; t + 4 <= T; t += 4) {
    const uint8_t* r0 = X + (t + 0) * xs;
    const uint8_t* r1 = X + (t + 1) * xs;
    const uint8_t* r2 = X + (t + 2) * xs;
    const uint8_t* r3 = X + (t + 3) * xs;
    const BlockQ8_0 *x0 = Q8ActBlocks(r0, nb), *x1 = Q8ActBlocks(r1, nb), *x2 = Q8ActBlocks(r2, nb),
                    *x3 = Q8ActBlocks(r3, nb);
    const float *d0 = Q8ActScales(r0), *d1 = Q8ActScales(r1), *d2 = Q8ActScales(r2),
                *d3 = Q8ActScales(r3);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i q = WeightBlock<kQ4>(w, b);
      const __m256i aq = _mm256_sign_epi8(q, q);
      const __m256 dw = _mm256_set1_ps(WeightScale<kQ4>(w, b));
      a0 = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(d0 + b)),
                           DotBytes(aq, q, LoadQ8(x0[b].qs)), a0);
      a1 = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(d1 + b)),
                           DotBytes(aq, q, LoadQ8(x1[b].qs)), a1);
      a2 = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(d2 + b)),
                           DotBytes(aq, q, LoadQ8(x2[b].qs)), a2);
      a3 = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(d3 + b)),
                           DotBytes(aq, q, LoadQ8(x3[b].qs)), a3);
    }
    y[(t + 0) * ys] = Hsum(a0);
    y[(t + 1) * ys] = Hsum(a1);
    y[(t + 2) * ys] = Hsum(a2);
    y[(t + 3) * ys] = Hsum(a3);
  }
  for (; t < T; ++t) {
    // One token (decode): two blocks a step into two accumulators to hide FMA latency.
    const BlockQ8_0* x = Q8ActBlocks(X + t * xs, nb);
    const float* xd = Q8ActScales(X + t * xs);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t b = 0;
    // Decode streams each weight once: prefetch ~1 KiB ahead (into the next row when rows are
    // contiguous) so the loads below find their lines in cache.
    const char* pf = reinterpret_cast<const char*>(w) + kPrefetchAhead;
    const int64_t block_bytes = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
    for (; b + 2 <= nb; b += 2) {
      _mm_prefetch(pf + b * block_bytes, _MM_HINT_T0);
      _mm_prefetch(pf + b * block_bytes + 32, _MM_HINT_T0);
      const __m256i q0 = WeightBlock<kQ4>(w, b), q1 = WeightBlock<kQ4>(w, b + 1);
      const __m256 s0 = _mm256_set1_ps(WeightScale<kQ4>(w, b) * xd[b]);
      const __m256 s1 = _mm256_set1_ps(WeightScale<kQ4>(w, b + 1) * xd[b + 1]);
      a0 = _mm256_fmadd_ps(s0, DotBytes(_mm256_sign_epi8(q0, q0), q0, LoadQ8(x[b].qs)), a0);
      a1 = _mm256_fmadd_ps(s1, DotBytes(_mm256_sign_epi8(q1, q1), q1, LoadQ8(x[b + 1].qs)), a1);
    }
    for (; b < nb; ++b) {
      const __m256i q = WeightBlock<kQ4>(w, b);
      const __m256 s = _mm256_set1_ps(WeightScale<kQ4>(w, b) * xd[b]);
      a0 = _mm256_fmadd_ps(s, DotBytes(_mm256_sign_epi8(q, q), q, LoadQ8(x[b].qs)), a0);
    }
    y[t * ys] = Hsum(_mm256_add_ps(a0, a1));
  }
}

// ---- Q4_0 four blocks a step against the activation groups (kernels.h) ----
// One group of four Q4_0 blocks (72 bytes at p): unsigned nibbles of blocks 0-1 and 2-3 in
// the activation groups' layout (16 low-nibble bytes of block k at 16k of lo, the high ones
// in hi), and the block scales, each over its four int32 lanes.
struct GroupQ4 {
  __m256i lo01, hi01, lo23, hi23;
  __m256 d01, d23;
};

inline uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  __builtin_memcpy(&v, p, 2);
  return v;
}

inline GroupQ4 LoadGroupQ4(const uint8_t* p) {
  const __m256i a = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 20)),
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2)));
  const __m256i b = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 56)),
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 38)));
  const __m256i m = _mm256_set1_epi8(0x0F);
  GroupQ4 g;
  g.lo01 = _mm256_and_si256(a, m);
  g.hi01 = _mm256_and_si256(_mm256_srli_epi16(a, 4), m);
  g.lo23 = _mm256_and_si256(b, m);
  g.hi23 = _mm256_and_si256(_mm256_srli_epi16(b, 4), m);
  const __m128i h = _mm_setr_epi16(
      static_cast<int16_t>(Load16(p)), static_cast<int16_t>(Load16(p + 18)),
      static_cast<int16_t>(Load16(p + 36)), static_cast<int16_t>(Load16(p + 54)), 0, 0, 0, 0);
  const __m256 d = _mm256_castps128_ps256(_mm_cvtph_ps(h));
  g.d01 = _mm256_permutevar8x32_ps(d, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  g.d23 = _mm256_permutevar8x32_ps(d, _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3));
  return g;
}

// acc += the group's contribution (8 lanes; their sum is the dot product). xg: the group.
inline __m256 GroupDot(const GroupQ4& w, const uint8_t* xg, __m256 acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  auto ld = [](const uint8_t* q) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  };
  const __m256i s01 = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w.lo01, ld(xg)),
                                                         _mm256_maddubs_epi16(w.hi01, ld(xg + 64))),
                                        ones);
  const __m256i s23 = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w.lo23, ld(xg + 32)),
                                                         _mm256_maddubs_epi16(w.hi23, ld(xg + 96))),
                                        ones);
  const float* dx = reinterpret_cast<const float*>(xg + 128);
  const float* cx = dx + 16;
  acc = _mm256_fmadd_ps(
      w.d01, _mm256_fmsub_ps(_mm256_cvtepi32_ps(s01), _mm256_loadu_ps(dx), _mm256_loadu_ps(cx)),
      acc);
  return _mm256_fmadd_ps(
      w.d23,
      _mm256_fmsub_ps(_mm256_cvtepi32_ps(s23), _mm256_loadu_ps(dx + 8), _mm256_loadu_ps(cx + 8)),
      acc);
}

constexpr int64_t kGroupBytes = 4 * sizeof(BlockQ4_0);  // 72

// Decode GEMV, two rows a step sharing the activation loads. The two rows after the next pair
// are prefetched as one address-ordered stream (step bytes of them per group, every line): two
// interleaved per-row streams reach about half the bandwidth on Zen 2 (st-bench-kernels
// BM_GemvStream: 7.6 against 13.5 GB/s on one core).
void GemvQ4Grouped(const uint8_t* W, size_t rb, int64_t rows, const uint8_t* x, int64_t nb,
                   float* y) {
  const int64_t ng = nb / 4;
  const uint8_t* xg = Q8ActGroups(x, nb);
  const int64_t step = ng > 0 ? (2 * static_cast<int64_t>(rb) + ng - 1) / ng : 0;
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    const uint8_t* p0 = W + r * rb;
    const uint8_t* p1 = p0 + rb;
    const char* pf = reinterpret_cast<const char*>(p0 + 4 * rb);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (int64_t g = 0; g < ng; ++g) {
      for (int64_t o = 0; o < step; o += 64) _mm_prefetch(pf + g * step + o, _MM_HINT_T0);
      const uint8_t* xgg = xg + g * kQ8GroupBytes;
      a0 = GroupDot(LoadGroupQ4(p0 + g * kGroupBytes), xgg, a0);
      a1 = GroupDot(LoadGroupQ4(p1 + g * kGroupBytes), xgg, a1);
    }
    y[r] = Hsum(a0) + ((nb & 3) ? Q4DotGroupTail(p0, x, nb) : 0.f);
    y[r + 1] = Hsum(a1) + ((nb & 3) ? Q4DotGroupTail(p1, x, nb) : 0.f);
  }
  for (; r < rows; ++r) {
    const uint8_t* p0 = W + r * rb;
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      a0 = GroupDot(LoadGroupQ4(p0 + g * kGroupBytes), xg + g * kQ8GroupBytes, a0);
    }
    y[r] = Hsum(a0) + ((nb & 3) ? Q4DotGroupTail(p0, x, nb) : 0.f);
  }
}

// Scattered rows (the live up rows of the sparse ReGLU). Each row is its own stream the
// hardware prefetcher cannot guess: the rows kRowsAhead on are prefetched as the groups go by,
// far enough ahead to cover a DRAM miss (one row computes in ~60 ns).
constexpr int64_t kRowsAhead = 4;
void GemvRowsQ4Grouped(const uint8_t* const* rows, int64_t m, const uint8_t* x, int64_t nb,
                       float* y) {
  const int64_t ng = nb / 4;
  const int64_t row_bytes = nb * static_cast<int64_t>(sizeof(BlockQ4_0));
  const uint8_t* xg = Q8ActGroups(x, nb);
  for (int64_t j = 0; j < (m < kRowsAhead ? m : kRowsAhead); ++j) {
    for (int64_t o = 0; o < row_bytes; o += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(rows[j] + o), _MM_HINT_T0);
    }
  }
  for (int64_t j = 0; j < m; ++j) {
    const uint8_t* p = rows[j];
    const uint8_t* pn = j + kRowsAhead < m ? rows[j + kRowsAhead] : nullptr;
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      if (pn != nullptr) {
        _mm_prefetch(reinterpret_cast<const char*>(pn + g * kGroupBytes), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(pn + g * kGroupBytes + 64), _MM_HINT_T0);
      }
      a0 = GroupDot(LoadGroupQ4(p + g * kGroupBytes), xg + g * kQ8GroupBytes, a0);
    }
    y[j] = Hsum(a0) + ((nb & 3) ? Q4DotGroupTail(p, x, nb) : 0.f);
  }
}

// Prefill and batched decode: one row against T activation rows, each group unpacked once for
// four tokens (then two, then one). The lines kRowAhead bytes on (the rows after this one when
// rows are contiguous) are prefetched as the groups go by, as the GEMV does. Each token's sum
// runs over the groups in the GEMV's order: the same result as GemvQ4Grouped for that token.
constexpr int64_t kRowAhead = 2048;
void RowDotsQ4Grouped(const uint8_t* w, const uint8_t* X, size_t xs, int T, int64_t nb, float* y,
                      int64_t ys) {
  const int64_t ng = nb / 4;
  const size_t go = Q8ActBaseBytes(nb);
  const char* pf = reinterpret_cast<const char*>(w) + kRowAhead;
  int t = 0;
  for (; t + 4 <= T; t += 4) {
    const uint8_t* x0 = X + (t + 0) * xs + go;
    const uint8_t* x1 = X + (t + 1) * xs + go;
    const uint8_t* x2 = X + (t + 2) * xs + go;
    const uint8_t* x3 = X + (t + 3) * xs + go;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t g = 0; g < ng; ++g) {
      if (t == 0) _mm_prefetch(pf + g * kGroupBytes, _MM_HINT_T0);
      const GroupQ4 wg = LoadGroupQ4(w + g * kGroupBytes);
      const int64_t o = g * static_cast<int64_t>(kQ8GroupBytes);
      a0 = GroupDot(wg, x0 + o, a0);
      a1 = GroupDot(wg, x1 + o, a1);
      a2 = GroupDot(wg, x2 + o, a2);
      a3 = GroupDot(wg, x3 + o, a3);
    }
    y[(t + 0) * ys] = Hsum(a0);
    y[(t + 1) * ys] = Hsum(a1);
    y[(t + 2) * ys] = Hsum(a2);
    y[(t + 3) * ys] = Hsum(a3);
    if (nb & 3) {
      for (int k = 0; k < 4; ++k) y[(t + k) * ys] += Q4DotGroupTail(w, X + (t + k) * xs, nb);
    }
  }
  for (; t + 2 <= T; t += 2) {
    const uint8_t* x0 = X + (t + 0) * xs + go;
    const uint8_t* x1 = X + (t + 1) * xs + go;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (int64_t g = 0; g < ng; ++g) {
      if (t == 0) _mm_prefetch(pf + g * kGroupBytes, _MM_HINT_T0);
      const GroupQ4 wg = LoadGroupQ4(w + g * kGroupBytes);
      const int64_t o = g * static_cast<int64_t>(kQ8GroupBytes);
      a0 = GroupDot(wg, x0 + o, a0);
      a1 = GroupDot(wg, x1 + o, a1);
    }
    y[(t + 0) * ys] = Hsum(a0) + ((nb & 3) ? Q4DotGroupTail(w, X + (t + 0) * xs, nb) : 0.f);
    y[(t + 1) * ys] = Hsum(a1) + ((nb & 3) ? Q4DotGroupTail(w, X + (t + 1) * xs, nb) : 0.f);
  }
  for (; t < T; ++t) {
    const uint8_t* x0 = X + t * xs + go;
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      if (t == 0) _mm_prefetch(pf + g * kGroupBytes, _MM_HINT_T0);
      a0 = GroupDot(LoadGroupQ4(w + g * kGroupBytes), x0 + g * kQ8GroupBytes, a0);
    }
    y[t * ys] = Hsum(a0) + ((nb & 3) ? Q4DotGroupTail(w, X + t * xs, nb) : 0.f);
  }
}

// 8 weights of type F32 / F16 / BF16 as floats.
enum class Wide { kF32, kF16, kBF16 };
template <Wide kW>
inline __m256 Load8(const uint8_t* w, int64_t i) {
  if (kW == Wide::kF32) return _mm256_loadu_ps(reinterpret_cast<const float*>(w) + i);
  const __m128i h =
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(w) + i));
  if (kW == Wide::kF16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
template <Wide kW>
inline float Load1(const uint8_t* w, int64_t i) {
  if (kW == Wide::kF32) return reinterpret_cast<const float*>(w)[i];
  const uint16_t h = reinterpret_cast<const uint16_t*>(w)[i];
  return kW == Wide::kF16 ? Half(h) : BF16ToF32(h);
}

template <Wide kW>
float DotWide(const uint8_t* w, const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(Load8<kW>(w, i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(Load8<kW>(w, i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(Load8<kW>(w, i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(Load8<kW>(w, i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(Load8<kW>(w, i), _mm256_loadu_ps(x + i), a0);
  float s = Hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += Load1<kW>(w, i) * x[i];
  return s;
}

template <Wide kW>
void RowDotsWide(const uint8_t* w, const uint8_t* X, size_t xs, int T, int64_t n, float* y,
                 int64_t ys) {
  for (int t = 0; t < T; ++t) {
    y[t * ys] = DotWide<kW>(w, reinterpret_cast<const float*>(X + t * xs), n);
  }
}

void RowDots(DType wt, const uint8_t* w, const uint8_t* X, size_t xs, int T, int64_t n, float* y,
             int64_t ys) {
  switch (wt) {
    case DType::kQ4_0:
      return RowDotsQ4Grouped(w, X, xs, T, n / kQBlock, y, ys);
    case DType::kQ8_0:
      return RowDotsQuant<false>(w, X, xs, T, n / kQBlock, y, ys);
    case DType::kF32:
      return RowDotsWide<Wide::kF32>(w, X, xs, T, n, y, ys);
    case DType::kF16:
      return RowDotsWide<Wide::kF16>(w, X, xs, T, n, y, ys);
    case DType::kBF16:
      return RowDotsWide<Wide::kBF16>(w, X, xs, T, n, y, ys);
  }
}

// Signed bytes (8 of them, starting at byte 8 * k of q) as floats.
inline __m256 BytesToFloat(__m256i q, int k) {
  const __m128i half = k < 2 ? _mm256_castsi256_si128(q) : _mm256_extracti128_si256(q, 1);
  const __m128i part = (k & 1) ? _mm_srli_si128(half, 8) : half;
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part));
}

// y[c0, c1) += a * w[c0, c1) (kAdd) or out = w (dequantize).
template <bool kAdd>
void RowApply(DType wt, const uint8_t* w, int64_t c0, int64_t c1, float a, float* y) {
  switch (wt) {
    case DType::kQ4_0:
    case DType::kQ8_0: {
      const bool q4 = wt == DType::kQ4_0;
      for (int64_t b = c0 / kQBlock; b < c1 / kQBlock; ++b) {
        const __m256i q = q4 ? WeightBlock<true>(w, b) : WeightBlock<false>(w, b);
        const float d = q4 ? WeightScale<true>(w, b) : WeightScale<false>(w, b);
        const __m256 s = _mm256_set1_ps(kAdd ? a * d : d);
        float* yb = y + b * kQBlock;
        for (int k = 0; k < 4; ++k) {
          const __m256 f = BytesToFloat(q, k);
          if (kAdd) {
            _mm256_storeu_ps(yb + 8 * k, _mm256_fmadd_ps(s, f, _mm256_loadu_ps(yb + 8 * k)));
          } else {
            _mm256_storeu_ps(yb + 8 * k, _mm256_mul_ps(s, f));
          }
        }
      }
      return;
    }
    default: {
      const __m256 s = _mm256_set1_ps(a);
      int64_t i = c0;
      for (; i + 8 <= c1; i += 8) {
        const __m256 f = wt == DType::kF32   ? Load8<Wide::kF32>(w, i)
                         : wt == DType::kF16 ? Load8<Wide::kF16>(w, i)
                                             : Load8<Wide::kBF16>(w, i);
        _mm256_storeu_ps(y + i, kAdd ? _mm256_fmadd_ps(s, f, _mm256_loadu_ps(y + i)) : f);
      }
      for (; i < c1; ++i) {
        const float f = wt == DType::kF32   ? Load1<Wide::kF32>(w, i)
                        : wt == DType::kF16 ? Load1<Wide::kF16>(w, i)
                                            : Load1<Wide::kBF16>(w, i);
        y[i] = kAdd ? y[i] + a * f : f;
      }
      return;
    }
  }
}

void Gemv(DType wt, const uint8_t* W, size_t rb, int64_t rows, const uint8_t* x, int64_t n,
          float* y) {
  if (wt == DType::kQ4_0) return GemvQ4Grouped(W, rb, rows, x, n / kQBlock, y);
  for (int64_t r = 0; r < rows; ++r) RowDots(wt, W + r * rb, x, 0, 1, n, y + r, 0);
}

// Scattered rows: the row after next is prefetched whole while this one computes.
void GemvRows(DType wt, const uint8_t* const* rows, int64_t m, const uint8_t* x, int64_t n,
              float* y) {
  if (wt == DType::kQ4_0) return GemvRowsQ4Grouped(rows, m, x, n / kQBlock, y);
  const int64_t rb = DTypeBytes(wt, n);
  for (int64_t j = 0; j < m; ++j) {
    if (j + 2 < m) {
      for (int64_t o = 0; o < rb; o += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(rows[j + 2]) + o, _MM_HINT_T0);
      }
    }
    RowDots(wt, rows[j], x, 0, 1, n, y + j, 0);
  }
}

// Sparse down projection, four rows at a time so y is loaded and stored once per four rows.
template <bool kQ4>
void AxpyRowsQuant(const uint8_t* const* rows, const float* a, int64_t m, int64_t nb, float* y) {
  int64_t j = 0;
  const int64_t block_bytes = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  for (; j + 4 <= m; j += 4) {
    const uint8_t *r0 = rows[j], *r1 = rows[j + 1], *r2 = rows[j + 2], *r3 = rows[j + 3];
    const int64_t nn = m - (j + 4) < 4 ? m - (j + 4) : 4;  // the next four rows, prefetched
    for (int64_t b = 0; b < nb; ++b) {
      if (!kQ4 || (b & 1) == 0) {  // every 64-byte line of the next rows gets one
        for (int64_t k = 0; k < nn; ++k) {
          _mm_prefetch(reinterpret_cast<const char*>(rows[j + 4 + k]) + b * block_bytes + 32,
                       _MM_HINT_T0);
        }
      }
      const __m256i q0 = WeightBlock<kQ4>(r0, b), q1 = WeightBlock<kQ4>(r1, b),
                    q2 = WeightBlock<kQ4>(r2, b), q3 = WeightBlock<kQ4>(r3, b);
      const __m256 s0 = _mm256_set1_ps(a[j] * WeightScale<kQ4>(r0, b));
      const __m256 s1 = _mm256_set1_ps(a[j + 1] * WeightScale<kQ4>(r1, b));
      const __m256 s2 = _mm256_set1_ps(a[j + 2] * WeightScale<kQ4>(r2, b));
      const __m256 s3 = _mm256_set1_ps(a[j + 3] * WeightScale<kQ4>(r3, b));
      float* yb = y + b * kQBlock;
      for (int k = 0; k < 4; ++k) {
        __m256 acc = _mm256_loadu_ps(yb + 8 * k);
        acc = _mm256_fmadd_ps(s0, BytesToFloat(q0, k), acc);
        acc = _mm256_fmadd_ps(s1, BytesToFloat(q1, k), acc);
        acc = _mm256_fmadd_ps(s2, BytesToFloat(q2, k), acc);
        acc = _mm256_fmadd_ps(s3, BytesToFloat(q3, k), acc);
        _mm256_storeu_ps(yb + 8 * k, acc);
      }
    }
  }
  for (; j < m; ++j) {
    RowApply<true>(kQ4 ? DType::kQ4_0 : DType::kQ8_0, rows[j], 0, nb * kQBlock, a[j], y);
  }
}

// Sparse down projection for Q4_0, four rows at a time. The -8 offset is folded out of the
// element loop: y += sum_k s_k (u_k - 8) = sum_k s_k u_k - 8 sum_k s_k with u the unsigned
// nibble, so each eight elements of a row cost a zero-extension, a mask or shift, a conversion
// and an FMA (the signed form costs an extra lane extraction per eight).
inline __m256 Nibbles8(__m128i b8, bool high) {
  const __m256i u = _mm256_cvtepu8_epi32(b8);
  return _mm256_cvtepi32_ps(high ? _mm256_srli_epi32(u, 4)
                                 : _mm256_and_si256(u, _mm256_set1_epi32(0x0F)));
}
void AxpyRowsQ4(const uint8_t* const* rows, const float* a, int64_t m, int64_t nb, float* y) {
  int64_t j = 0;
  for (; j + 4 <= m; j += 4) {
    const uint8_t* r[4] = {rows[j], rows[j + 1], rows[j + 2], rows[j + 3]};
    const int64_t nn = m - (j + 4) < 4 ? m - (j + 4) : 4;  // the next four rows, prefetched
    for (int64_t b = 0; b < nb; ++b) {
      if ((b & 1) == 0) {  // 36 bytes a block pair: every 64-byte line of the next rows
        for (int64_t k = 0; k < nn; ++k) {
          _mm_prefetch(reinterpret_cast<const char*>(rows[j + 4 + k]) + b * 18 + 32, _MM_HINT_T0);
        }
      }
      float* yb = y + b * kQBlock;
      __m256 y0 = _mm256_loadu_ps(yb), y1 = _mm256_loadu_ps(yb + 8);
      __m256 y2 = _mm256_loadu_ps(yb + 16), y3 = _mm256_loadu_ps(yb + 24);
      float off = 0.f;
      for (int k = 0; k < 4; ++k) {
        const BlockQ4_0& blk = Q4(r[k])[b];
        const float sk = a[j + k] * Half(blk.d);
        off += sk;
        const __m256 s = _mm256_set1_ps(sk);
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
        const __m128i qh = _mm_srli_si128(q, 8);
        y0 = _mm256_fmadd_ps(s, Nibbles8(q, false), y0);
        y1 = _mm256_fmadd_ps(s, Nibbles8(qh, false), y1);
        y2 = _mm256_fmadd_ps(s, Nibbles8(q, true), y2);
        y3 = _mm256_fmadd_ps(s, Nibbles8(qh, true), y3);
      }
      const __m256 o = _mm256_set1_ps(8.f * off);
      _mm256_storeu_ps(yb, _mm256_sub_ps(y0, o));
      _mm256_storeu_ps(yb + 8, _mm256_sub_ps(y1, o));
      _mm256_storeu_ps(yb + 16, _mm256_sub_ps(y2, o));
      _mm256_storeu_ps(yb + 24, _mm256_sub_ps(y3, o));
    }
  }
  for (; j < m; ++j) RowApply<true>(DType::kQ4_0, rows[j], 0, nb * kQBlock, a[j], y);
}

void AxpyRows(DType wt, const uint8_t* const* rows, const float* a, int64_t m, int64_t n,
              float* y) {
  if (wt == DType::kQ4_0) return AxpyRowsQ4(rows, a, m, n / kQBlock, y);
  if (wt == DType::kQ8_0) return AxpyRowsQuant<false>(rows, a, m, n / kQBlock, y);
  for (int64_t j = 0; j < m; ++j) RowApply<true>(wt, rows[j], 0, n, a[j], y);
}

void AxpyRow(DType wt, const uint8_t* w, int64_t c0, int64_t c1, float a, float* y) {
  RowApply<true>(wt, w, c0, c1, a, y);
}
void DequantRow(DType wt, const uint8_t* w, int64_t n, float* out) {
  RowApply<false>(wt, w, 0, n, 1.0f, out);
}

// Q8_0 quantization, byte-identical to QuantizeRowQ8_0: d = amax / 127 in float, id = 1/d,
// q = roundf(x * id) (half away from zero) clamped to [-127, 127], d stored via F32ToF16.
void QuantizeQ8(const float* x, int64_t n, BlockQ8_0* out) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  const __m256 lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
  for (int64_t b = 0; b < n / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(xb + 8 * k);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_mask, v[k]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = F32ToF16(d);
    const __m256 mul = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      const __m256 s = _mm256_mul_ps(v[k], mul);
      const __m256 t = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 frac = _mm256_andnot_ps(sign_mask, _mm256_sub_ps(s, t));
      const __m256 bump = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ),
                                        _mm256_or_ps(one, _mm256_and_ps(sign_mask, s)));
      const __m256 r = _mm256_min_ps(lim, _mm256_max_ps(nlim, _mm256_add_ps(t, bump)));
      q[k] = _mm256_cvtps_epi32(r);
    }
    const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
    const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i p = _mm256_packs_epi16(p01, p23);
    const __m256i perm = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), perm);
  }
}

void PrepareQ8Row(const float* x, int64_t n, uint8_t* row) {
  const int64_t nb = n / kQBlock;
  BlockQ8_0* q = const_cast<BlockQ8_0*>(Q8ActBlocks(row, nb));
  QuantizeQ8(x, n, q);
  float* d = reinterpret_cast<float*>(row);
  for (int64_t b = 0; b < nb; ++b) d[b] = Half(q[b].d);
  FillQ8ActGroups(row, nb);
}

float DotF32(const float* a, const float* b, int64_t n) {
  return DotWide<Wide::kF32>(reinterpret_cast<const uint8_t*>(b), a, n);
}
float DotF32F16(const float* a, const uint16_t* b, int64_t n) {
  return DotWide<Wide::kF16>(reinterpret_cast<const uint8_t*>(b), a, n);
}
void AxpyF32(float a, const float* x, float* y, int64_t n) {
  RowApply<true>(DType::kF32, reinterpret_cast<const uint8_t*>(x), 0, n, a, y);
}
void AxpyF16(float a, const uint16_t* x, float* y, int64_t n) {
  RowApply<true>(DType::kF16, reinterpret_cast<const uint8_t*>(x), 0, n, a, y);
}
void F32ToF16Row(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) y[i] = F32ToF16(x[i]);
}

// ---- The int8 peak probe ----
// Four independent accumulators, each taking 64 products a round as GroupDot does (two
// vpmaddubsw summed in 16 bits, vpmaddwd to 32, one add); the eight weight operands are made
// opaque every round (no instruction) so nothing is hoisted or shared between the chains.
int64_t Int8MacLoop(int64_t iters, int32_t* sink) {
  __m256i u[8];
  for (int k = 0; k < 8; ++k) u[k] = _mm256_set1_epi8(static_cast<char>(3 + k));
  const __m256i x0 = _mm256_set1_epi8(-5), x1 = _mm256_set1_epi8(7);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[4];
  for (int k = 0; k < 4; ++k) acc[k] = _mm256_setzero_si256();
  for (int64_t it = 0; it < iters; ++it) {
    for (int k = 0; k < 8; ++k) asm volatile("" : "+x"(u[k]));
    for (int k = 0; k < 4; ++k) {
      const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(u[2 * k], x0),
                                         _mm256_maddubs_epi16(u[2 * k + 1], x1));
      acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(p, ones));
    }
  }
  const __m256i a =
      _mm256_add_epi32(_mm256_add_epi32(acc[0], acc[1]), _mm256_add_epi32(acc[2], acc[3]));
  *sink = _mm256_extract_epi32(a, 0);
  return iters * 4 * 64;
}

// ---- Small f32 products (prefill's expert down projection) ----
// Tile: R <= 4 rows of C by 16 columns in 2R accumulators; each step broadcasts R values of A
// and loads two B vectors. Columns past the last 16: the scalar order (ascending u, one FMA a
// step).
template <int R>
void GemmF32Tile(const float* A, int64_t lda, const float* B, int64_t ldb, int U, float* C,
                 int64_t ldc) {
  __m256 c0[R], c1[R];
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm256_loadu_ps(C + r * ldc), c1[r] = _mm256_loadu_ps(C + r * ldc + 8);
  }
  for (int u = 0; u < U; ++u) {
    const __m256 b0 = _mm256_loadu_ps(B + u * ldb), b1 = _mm256_loadu_ps(B + u * ldb + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(A + u * lda + r);
      c0[r] = _mm256_fmadd_ps(x, b0, c0[r]), c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(C + r * ldc, c0[r]), _mm256_storeu_ps(C + r * ldc + 8, c1[r]);
  }
}
using GemmTileFn = void (*)(const float*, int64_t, const float*, int64_t, int, float*, int64_t);
constexpr GemmTileFn kGemmTiles[4] = {GemmF32Tile<1>, GemmF32Tile<2>, GemmF32Tile<3>,
                                      GemmF32Tile<4>};

void GemmF32Acc(const float* A, int64_t lda, int M, const float* B, int64_t ldb, int U, int N,
                float* C, int64_t ldc) {
  const int N16 = N & ~15;
  // kSpan rows of A and B at a time (16 KiB of each at most for M, N <= 32) stay in L1 while
  // every tile passes over them; C goes back to memory between spans, so the order of the sum
  // is unchanged.
  constexpr int kSpan = 64;
  for (int u0 = 0; u0 < U; u0 += kSpan) {
    const int us = U - u0 < kSpan ? U - u0 : kSpan;
    for (int j = 0; j < M; j += 4) {
      const int rows = M - j < 4 ? M - j : 4;
      for (int c = 0; c < N16; c += 16) {
        kGemmTiles[rows - 1](A + u0 * lda + j, lda, B + u0 * ldb + c, ldb, us, C + j * ldc + c,
                             ldc);
      }
    }
  }
  for (int j = 0; j < M; ++j) {
    for (int c = N16; c < N; ++c) {
      float acc = C[j * ldc + c];
      for (int u = 0; u < U; ++u) {
        acc = _mm_cvtss_f32(
            _mm_fmadd_ss(_mm_set_ss(A[u * lda + j]), _mm_set_ss(B[u * ldb + c]), _mm_set_ss(acc)));
      }
      C[j * ldc + c] = acc;
    }
  }
}

// ---- Softmax ----
// exp(x) for x <= 0 (softmax's shifted scores): x = k ln2 + r with |r| <= ln2 / 2 (ln2 split in
// two parts so r is exact), exp(r) by the degree-6 minimax polynomial of the Cephes library's
// expf, times 2^k built in the exponent bits. Below -87.3 the result flushes to 2^-126 x exp(r)
// (a weight of ~1e-38 next to the maximum's 1).
inline __m256 ExpNonPositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 k = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void SoftmaxF32(float* x, int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  __m256 vmx = _mm256_set1_ps(x[0]);
  for (int64_t i = 0; i < n8; i += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + i));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmx), _mm256_extractf128_ps(vmx, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float mx = _mm_cvtss_f32(m4);
  for (int64_t i = n8; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const __m256 m = _mm256_set1_ps(mx);
  __m256 vsum = _mm256_setzero_ps();
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 e = ExpNonPositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(x + i, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = Hsum(vsum);
  if (n8 < n) {  // the tail through the same polynomial, in a padded vector
    float t[8];
    for (int i = 0; i < 8; ++i) t[i] = n8 + i < n ? x[n8 + i] - mx : -100.f;
    _mm256_storeu_ps(t, ExpNonPositive(_mm256_loadu_ps(t)));
    for (int64_t i = n8; i < n; ++i) sum += (x[i] = t[i - n8]);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (int64_t i = 0; i < n8; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (int64_t i = n8; i < n; ++i) x[i] *= 1.0f / sum;
}

// ---- Grouped-query attention over the f16 KV cache ----
// Scores: per key, its eight-element chunks are converted once and multiplied into HP <= 8
// query heads' accumulators (the queries stay in L1); one horizontal sum per head and key.
// Keys prefetched this many ahead: one key's dots take ~50 cycles for 6 heads, so 16 keys
// (~250 ns) cover a DRAM miss (4 ahead left decode at depth 4096 latency-bound).
constexpr int64_t kKeysAhead = 16;
template <int HP>
void AttnScoresHeads(const float* q, int D, const uint16_t* K, int64_t ks, int64_t n, float scale,
                     float* s, int64_t ss) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* kj = K + j * ks;
    if (j + kKeysAhead < n) {  // keys are rows ks apart (other KV heads between them)
      for (int c = 0; c < D; c += 32)
        _mm_prefetch(reinterpret_cast<const char*>(kj + kKeysAhead * ks + c), _MM_HINT_T0);
    }
    __m256 acc[HP];
    for (int h = 0; h < HP; ++h) acc[h] = _mm256_setzero_ps();
    for (int c = 0; c < D; c += 8) {
      const __m256 kv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kj + c)));
      for (int h = 0; h < HP; ++h)
        acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * D + c), kv, acc[h]);
    }
    for (int h = 0; h < HP; ++h) s[h * ss + j] = scale * Hsum(acc[h]);
  }
}

// The tile for 1..8 heads.
using ScoresHeadsFn = void (*)(const float*, int, const uint16_t*, int64_t, int64_t, float, float*,
                               int64_t);
constexpr ScoresHeadsFn kScoresHeads[8] = {
    AttnScoresHeads<1>, AttnScoresHeads<2>, AttnScoresHeads<3>, AttnScoresHeads<4>,
    AttnScoresHeads<5>, AttnScoresHeads<6>, AttnScoresHeads<7>, AttnScoresHeads<8>};

void AttnScoresF16(const float* q, int R, int D, const uint16_t* K, int64_t ks, int64_t n,
                   float scale, float* s, int64_t ss) {
  if (D % 8 != 0) {
    for (int h = 0; h < R; ++h) {
      for (int64_t j = 0; j < n; ++j) s[h * ss + j] = scale * DotF32F16(q + h * D, K + j * ks, D);
    }
    return;
  }
  for (int h0 = 0; h0 < R; h0 += 8) {
    const float* qh = q + static_cast<int64_t>(h0) * D;
    float* sh = s + h0 * ss;
    kScoresHeads[(R - h0 < 8 ? R - h0 : 8) - 1](qh, D, K, ks, n, scale, sh, ss);
  }
}

// Values: NC eight-element chunks of HP heads' outputs stay in registers while a block of
// keys goes by; each chunk of a value is converted once for the HP heads. Keys go in blocks of
// kValueBlock so the block's values stay in L1 across the D / (8 NC) chunk passes; the next
// block's lines are prefetched during the passes.
constexpr int64_t kValueBlock = 64;
template <int HP, int NC>
void AttnValuesHeads(const float* w, int64_t ws, const uint16_t* V, int64_t vs, int64_t n, int D,
                     float* out) {
  for (int64_t j0 = 0; j0 < n; j0 += kValueBlock) {
    const int64_t j1 = j0 + kValueBlock < n ? j0 + kValueBlock : n;
    const int64_t pf_end = j1 + kValueBlock < n ? j1 + kValueBlock : n;
    for (int c = 0; c < D; c += 8 * NC) {
      __m256 acc[HP][NC];
      for (int h = 0; h < HP; ++h) {
        for (int u = 0; u < NC; ++u) acc[h][u] = _mm256_loadu_ps(out + h * D + c + 8 * u);
      }
      for (int64_t j = j0; j < j1; ++j) {
        if (j - j0 + j1 < pf_end && (c % 32) == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(V + (j - j0 + j1) * vs + c), _MM_HINT_T0);
        }
        __m256 v[NC];
        for (int u = 0; u < NC; ++u) {
          v[u] = _mm256_cvtph_ps(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(V + j * vs + c + 8 * u)));
        }
        for (int h = 0; h < HP; ++h) {
          const __m256 a = _mm256_broadcast_ss(w + h * ws + j);
          for (int u = 0; u < NC; ++u) acc[h][u] = _mm256_fmadd_ps(a, v[u], acc[h][u]);
        }
      }
      for (int h = 0; h < HP; ++h) {
        for (int u = 0; u < NC; ++u) _mm256_storeu_ps(out + h * D + c + 8 * u, acc[h][u]);
      }
    }
  }
}

// The tile for 1..6 heads, 1 or 2 chunks.
using ValuesHeadsFn = void (*)(const float*, int64_t, const uint16_t*, int64_t, int64_t, int,
                               float*);
constexpr ValuesHeadsFn kValuesHeads[2][6] = {
    {AttnValuesHeads<1, 1>, AttnValuesHeads<2, 1>, AttnValuesHeads<3, 1>, AttnValuesHeads<4, 1>,
     AttnValuesHeads<5, 1>, AttnValuesHeads<6, 1>},
    {AttnValuesHeads<1, 2>, AttnValuesHeads<2, 2>, AttnValuesHeads<3, 2>, AttnValuesHeads<4, 2>,
     AttnValuesHeads<5, 2>, AttnValuesHeads<6, 2>}};

void AttnValuesF16(const float* w, int R, int64_t ws, const uint16_t* V, int64_t vs, int64_t n,
                   int D, float* out) {
  if (D % 8 != 0) {
    for (int h = 0; h < R; ++h) {
      for (int64_t j = 0; j < n; ++j) AxpyF16(w[h * ws + j], V + j * vs, out + h * D, D);
    }
    return;
  }
  for (int h0 = 0; h0 < R; h0 += 6) {  // 6 heads x 2 chunks: 12 accumulators, 2 values, 1 weight
    const int hp = R - h0 < 6 ? R - h0 : 6;
    kValuesHeads[D % 16 == 0 ? 1 : 0][hp - 1](w + h0 * ws, ws, V, vs, n, D,
                                              out + static_cast<int64_t>(h0) * D);
  }
}

// clang-format off
const Kernels kAvx2 = {
    "avx2+fma+f16c",
    QuantizeQ8,
    PrepareQ8Row,
    RowDots,
    Gemv,
    GemvRows,
    AxpyRows,
    AxpyRow,
    DequantRow,
    DotF32,
    DotF32F16,
    AxpyF32,
    AxpyF16,
    F32ToF16Row,
    Int8MacLoop,
    GemmF32Acc,
    SoftmaxF32,
    AttnScoresF16,
    AttnValuesF16,
};
// clang-format on

}  // namespace

namespace kernels_internal {
const Kernels* Avx2Table() { return &kAvx2; }
}  // namespace kernels_internal
}  // namespace st

#else
namespace st::kernels_internal {
const Kernels* Avx2Table() { return nullptr; }
}  // namespace st::kernels_internal
#endif
