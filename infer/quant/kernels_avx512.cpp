// The AVX-512 VNNI kernel table: Q4_0 weights x Q8_0 activations four blocks per step with
// vpdpbusd (decode GEMV, scattered-row GEMV, prefill row dots) and 512-bit Q4_0 AXPYs; every
// other entry is the AVX2 table's. Compiled with -mavx512{f,bw,vl,vnni,vbmi} and used only
// after kernels.cpp has checked the CPU (Avx512Kernels).
#include "infer/quant/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VNNI__) && defined(__AVX512VBMI__)
#include <immintrin.h>

#include "infer/quant/codec.h"

namespace st {
namespace {

const Kernels* g_base = nullptr;  // the AVX2 table: entries for the other types

const BlockQ4_0* Q4(const uint8_t* p) { return reinterpret_cast<const BlockQ4_0*>(p); }

constexpr int64_t kGroupBytes = 4 * sizeof(BlockQ4_0);  // 72: four Q4_0 blocks
static_assert(kGroupBytes == 72, "Q4_0 group of four blocks");

// One group of four Q4_0 blocks (72 bytes at p), unpacked for VNNI: lo / hi hold the unsigned
// nibbles of elements 0..15 / 16..31 of block k at bytes 16k..16k+15 (the layout of the
// activation groups, kernels.h), dw the four block scales, each in four f32 lanes.
struct GroupQ4 {
  __m512i lo, hi;
  __m512 dw;
};

inline GroupQ4 LoadGroupQ4(const uint8_t* p) {
  // Byte indices into the 128-byte pair (p[0, 64), p[8, 72)): qs of block k at 18k + 2.
  alignas(64) static const uint8_t kQsIdx[64] = {
      2,   3,   4,   5,   6,   7,   8,   9,   10,  11,  12,  13,  14,  15,  16,  17,
      20,  21,  22,  23,  24,  25,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,
      38,  39,  40,  41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51,  52,  53,
      112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127};
  // Word indices of the four f16 scales (bytes 0, 18, 36, 54), each repeated four times.
  alignas(64) static const uint16_t kDIdx[32] = {0,  0,  0,  0,  9,  9, 9, 9, 18, 18, 18,
                                                 18, 27, 27, 27, 27, 0, 0, 0, 0,  0,  0,
                                                 0,  0,  0,  0,  0,  0, 0, 0, 0,  0};
  const __m512i v0 = _mm512_loadu_si512(p);
  const __m512i v1 = _mm512_loadu_si512(p + 8);
  const __m512i q = _mm512_permutex2var_epi8(v0, _mm512_load_si512(kQsIdx), v1);
  const __m512i m = _mm512_set1_epi8(0x0F);
  GroupQ4 g;
  g.lo = _mm512_and_si512(q, m);
  g.hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m);
  const __m512i d = _mm512_permutexvar_epi16(_mm512_load_si512(kDIdx), v0);
  g.dw = _mm512_cvtph_ps(_mm512_castsi512_si256(d));
  return g;
}

// acc += the group's contribution to w . x (16 lanes; their sum is the dot product).
inline __m512 GroupDot(const GroupQ4& w, const uint8_t* xg, __m512 acc) {
  __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w.lo, _mm512_loadu_si512(xg));
  s = _mm512_dpbusd_epi32(s, w.hi, _mm512_loadu_si512(xg + 64));
  const __m512 dx = _mm512_loadu_ps(xg + 128), cx = _mm512_loadu_ps(xg + 192);
  return _mm512_fmadd_ps(w.dw, _mm512_fmsub_ps(_mm512_cvtepi32_ps(s), dx, cx), acc);
}

inline void Prefetch(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
}

// Decode GEMV over contiguous rows, two at a time sharing the activation loads; the rows two
// ahead are prefetched as the groups go by.
#ifndef KPAIRS
#define KPAIRS 0
#define KAHEAD 4096
#endif
constexpr bool kPairs = KPAIRS;
constexpr int64_t kAhead = KAHEAD;
void GemvQ4(const uint8_t* W, size_t rb, int64_t rows, const uint8_t* x, int64_t nb, float* y) {
  const int64_t ng = nb / 4;
  const uint8_t* xg = Q8ActGroups(x, nb);
  int64_t r = 0;
  for (; kPairs && r + 2 <= rows; r += 2) {
    const uint8_t* p0 = W + r * rb;
    const uint8_t* p1 = p0 + rb;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (int64_t g = 0; g < ng; ++g) {
      Prefetch(p0 + kAhead + g * kGroupBytes);
      Prefetch(p0 + kAhead + g * kGroupBytes + 64);
      Prefetch(p1 + kAhead + g * kGroupBytes);
      Prefetch(p1 + kAhead + g * kGroupBytes + 64);
      const uint8_t* xgg = xg + g * kQ8GroupBytes;
      a0 = GroupDot(LoadGroupQ4(p0 + g * kGroupBytes), xgg, a0);
      a1 = GroupDot(LoadGroupQ4(p1 + g * kGroupBytes), xgg, a1);
    }
    y[r] = _mm512_reduce_add_ps(a0);
    y[r + 1] = _mm512_reduce_add_ps(a1);
    if (nb & 3) {
      y[r] += Q4DotGroupTail(p0, x, nb);
      y[r + 1] += Q4DotGroupTail(p1, x, nb);
    }
  }
  for (; r < rows; ++r) {
    const uint8_t* p0 = W + r * rb;
    __m512 a0 = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      Prefetch(p0 + kAhead + g * kGroupBytes);
      Prefetch(p0 + kAhead + g * kGroupBytes + 64);
      a0 = GroupDot(LoadGroupQ4(p0 + g * kGroupBytes), xg + g * kQ8GroupBytes, a0);
    }
    y[r] = _mm512_reduce_add_ps(a0) + ((nb & 3) ? Q4DotGroupTail(p0, x, nb) : 0.f);
  }
}

void Gemv(DType wt, const uint8_t* W, size_t rb, int64_t rows, const uint8_t* x, int64_t n,
          float* y) {
  if (wt != DType::kQ4_0) return g_base->gemv(wt, W, rb, rows, x, n, y);
  GemvQ4(W, rb, rows, x, n / kQBlock, y);
}

// Scattered rows (the active up rows of the sparse ReGLU): each row's lines are prefetched
// two rows ahead, spread over the group loop.
void GemvRows(DType wt, const uint8_t* const* rows, int64_t m, const uint8_t* x, int64_t n,
              float* y) {
  if (wt != DType::kQ4_0) return g_base->gemv_rows(wt, rows, m, x, n, y);
  const int64_t nb = n / kQBlock, ng = nb / 4;
  const int64_t row_bytes = nb * static_cast<int64_t>(sizeof(BlockQ4_0));
  const uint8_t* xg = Q8ActGroups(x, nb);
  if (m > 0) {
    for (int64_t o = 0; o < row_bytes; o += 64) Prefetch(rows[0] + o);
  }
  if (m > 1) {
    for (int64_t o = 0; o < row_bytes; o += 64) Prefetch(rows[1] + o);
  }
  for (int64_t j = 0; j < m; ++j) {
    const uint8_t* p = rows[j];
    const uint8_t* pn = j + 2 < m ? rows[j + 2] : nullptr;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int64_t g = 0;
    for (; g + 2 <= ng; g += 2) {
      if (pn != nullptr) {  // 144 bytes of the row after next per step: lines at +0, +64, +128
        Prefetch(pn + g * kGroupBytes);
        Prefetch(pn + g * kGroupBytes + 64);
        Prefetch(pn + g * kGroupBytes + 128);
      }
      a0 = GroupDot(LoadGroupQ4(p + g * kGroupBytes), xg + g * kQ8GroupBytes, a0);
      a1 = GroupDot(LoadGroupQ4(p + (g + 1) * kGroupBytes), xg + (g + 1) * kQ8GroupBytes, a1);
    }
    for (; g < ng; ++g) {
      if (pn != nullptr) Prefetch(pn + g * kGroupBytes + 64);
      a0 = GroupDot(LoadGroupQ4(p + g * kGroupBytes), xg + g * kQ8GroupBytes, a0);
    }
    y[j] =
        _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + ((nb & 3) ? Q4DotGroupTail(p, x, nb) : 0.f);
  }
}

// Prefill and batched decode: one weight row against T prepared activation rows, each group
// unpacked once for four tokens (then two, then one); the lines kAhead bytes on are prefetched
// as the GEMV does.
void RowDots(DType wt, const uint8_t* w, const uint8_t* X, size_t xs, int T, int64_t n, float* y,
             int64_t ys) {
  if (wt != DType::kQ4_0) return g_base->row_dots(wt, w, X, xs, T, n, y, ys);
  const int64_t nb = n / kQBlock, ng = nb / 4;
  const size_t go = Q8ActBaseBytes(nb);
  int t = 0;
  for (; t + 4 <= T; t += 4) {
    const uint8_t* x0 = X + (t + 0) * xs + go;
    const uint8_t* x1 = X + (t + 1) * xs + go;
    const uint8_t* x2 = X + (t + 2) * xs + go;
    const uint8_t* x3 = X + (t + 3) * xs + go;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t g = 0; g < ng; ++g) {
      if (t == 0) {
        Prefetch(w + kAhead + g * kGroupBytes);
        Prefetch(w + kAhead + g * kGroupBytes + 64);
      }
      const GroupQ4 wg = LoadGroupQ4(w + g * kGroupBytes);
      const int64_t o = g * static_cast<int64_t>(kQ8GroupBytes);
      a0 = GroupDot(wg, x0 + o, a0);
      a1 = GroupDot(wg, x1 + o, a1);
      a2 = GroupDot(wg, x2 + o, a2);
      a3 = GroupDot(wg, x3 + o, a3);
    }
    y[(t + 0) * ys] = _mm512_reduce_add_ps(a0);
    y[(t + 1) * ys] = _mm512_reduce_add_ps(a1);
    y[(t + 2) * ys] = _mm512_reduce_add_ps(a2);
    y[(t + 3) * ys] = _mm512_reduce_add_ps(a3);
    if (nb & 3) {
      for (int k = 0; k < 4; ++k) y[(t + k) * ys] += Q4DotGroupTail(w, X + (t + k) * xs, nb);
    }
  }
  for (; t + 2 <= T; t += 2) {
    const uint8_t* x0 = X + (t + 0) * xs + go;
    const uint8_t* x1 = X + (t + 1) * xs + go;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (int64_t g = 0; g < ng; ++g) {
      if (t == 0) {
        Prefetch(w + kAhead + g * kGroupBytes);
        Prefetch(w + kAhead + g * kGroupBytes + 64);
      }
      const GroupQ4 wg = LoadGroupQ4(w + g * kGroupBytes);
      const int64_t o = g * static_cast<int64_t>(kQ8GroupBytes);
      a0 = GroupDot(wg, x0 + o, a0);
      a1 = GroupDot(wg, x1 + o, a1);
    }
    y[(t + 0) * ys] =
        _mm512_reduce_add_ps(a0) + ((nb & 3) ? Q4DotGroupTail(w, X + (t + 0) * xs, nb) : 0.f);
    y[(t + 1) * ys] =
        _mm512_reduce_add_ps(a1) + ((nb & 3) ? Q4DotGroupTail(w, X + (t + 1) * xs, nb) : 0.f);
  }
  for (; t < T; ++t) {
    const uint8_t* x0 = X + t * xs + go;
    __m512 a0 = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      if (t == 0) {
        Prefetch(w + kAhead + g * kGroupBytes);
        Prefetch(w + kAhead + g * kGroupBytes + 64);
      }
      a0 = GroupDot(LoadGroupQ4(w + g * kGroupBytes), x0 + g * kQ8GroupBytes, a0);
    }
    y[t * ys] = _mm512_reduce_add_ps(a0) + ((nb & 3) ? Q4DotGroupTail(w, X + t * xs, nb) : 0.f);
  }
}

// 16 bytes of Q4_0 nibbles -> the block's 32 values q - 8 as floats (elements 0..15, 16..31).
inline void BlockFloats(const uint8_t* qs, __m512* f_lo, __m512* f_hi) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), eight);
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
  *f_lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo));
  *f_hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi));
}

// Sparse down projection: y += sum_j a[j] rows[j], four rows per pass over y, the next four
// rows prefetched as the blocks go by.
void AxpyRowsQ4(const uint8_t* const* rows, const float* a, int64_t m, int64_t nb, float* y) {
  int64_t j = 0;
  for (; j + 4 <= m; j += 4) {
    const uint8_t* r[4] = {rows[j], rows[j + 1], rows[j + 2], rows[j + 3]};
    const uint8_t* nx[4];
    const int nn = static_cast<int>(m - (j + 4) < 4 ? m - (j + 4) : 4);
    for (int k = 0; k < nn; ++k) nx[k] = rows[j + 4 + k];
    for (int64_t b = 0; b < nb; ++b) {
      if ((b & 1) == 0) {  // 36 bytes a block pair: every line of the next rows gets a prefetch
        for (int k = 0; k < nn; ++k) Prefetch(nx[k] + b * 18 + 32);
      }
      __m512 y_lo = _mm512_loadu_ps(y + b * kQBlock);
      __m512 y_hi = _mm512_loadu_ps(y + b * kQBlock + 16);
      for (int k = 0; k < 4; ++k) {
        const BlockQ4_0& blk = Q4(r[k])[b];
        const __m512 s = _mm512_set1_ps(a[j + k] * _cvtsh_ss(blk.d));
        __m512 f_lo, f_hi;
        BlockFloats(blk.qs, &f_lo, &f_hi);
        y_lo = _mm512_fmadd_ps(s, f_lo, y_lo);
        y_hi = _mm512_fmadd_ps(s, f_hi, y_hi);
      }
      _mm512_storeu_ps(y + b * kQBlock, y_lo);
      _mm512_storeu_ps(y + b * kQBlock + 16, y_hi);
    }
  }
  for (; j < m; ++j) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ4_0& blk = Q4(rows[j])[b];
      const __m512 s = _mm512_set1_ps(a[j] * _cvtsh_ss(blk.d));
      __m512 f_lo, f_hi;
      BlockFloats(blk.qs, &f_lo, &f_hi);
      _mm512_storeu_ps(y + b * kQBlock, _mm512_fmadd_ps(s, f_lo, _mm512_loadu_ps(y + b * kQBlock)));
      _mm512_storeu_ps(y + b * kQBlock + 16,
                       _mm512_fmadd_ps(s, f_hi, _mm512_loadu_ps(y + b * kQBlock + 16)));
    }
  }
}

void AxpyRows(DType wt, const uint8_t* const* rows, const float* a, int64_t m, int64_t n,
              float* y) {
  if (wt != DType::kQ4_0) return g_base->axpy_rows(wt, rows, a, m, n, y);
  AxpyRowsQ4(rows, a, m, n / kQBlock, y);
}

// The int8 peak probe: eight independent vpdpbusd chains (64 products each a round; the
// instruction's latency is covered), weight operands made opaque every round.
int64_t Int8MacLoop(int64_t iters, int32_t* sink) {
  __m512i u[8], acc[8];
  for (int k = 0; k < 8; ++k) {
    u[k] = _mm512_set1_epi8(static_cast<char>(3 + k));
    acc[k] = _mm512_setzero_si512();
  }
  const __m512i x = _mm512_set1_epi8(-5);
  for (int64_t it = 0; it < iters; ++it) {
    for (int k = 0; k < 8; ++k) asm volatile("" : "+v"(u[k]));
    for (int k = 0; k < 8; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], u[k], x);
  }
  __m512i a = acc[0];
  for (int k = 1; k < 8; ++k) a = _mm512_add_epi32(a, acc[k]);
  *sink = _mm512_reduce_add_epi32(a);
  return iters * 8 * 64;
}

}  // namespace

namespace kernels_internal {
const Kernels* Avx512Table(const Kernels* base) {
  static const Kernels table = [base] {
    g_base = base;
    Kernels k = *base;
    k.name = "avx512+vnni";
    k.row_dots = RowDots;
    k.int8_mac_loop = Int8MacLoop;
    k.gemv = Gemv;
    k.gemv_rows = GemvRows;
    k.axpy_rows = AxpyRows;
    return k;
  }();
  return &table;
}
}  // namespace kernels_internal
}  // namespace st

#else
namespace st::kernels_internal {
const Kernels* Avx512Table(const Kernels*) { return nullptr; }
}  // namespace st::kernels_internal
#endif
