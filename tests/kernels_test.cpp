// Kernel tables (scalar and AVX2) against independent computations built from the reference
// codec, and the thread pool's fork-join contract.
#include "infer/quant/kernels.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "infer/quant/codec.h"
#include "infer/runtime/int8_peak.h"
#include "infer/runtime/thread_pool.h"
#include "tests/test_util.h"

namespace st {
namespace {

std::vector<const Kernels*> Tables() {
  std::vector<const Kernels*> t = {&ScalarKernels()};
  if (const Kernels* a = Avx2Kernels()) t.push_back(a);
  if (const Kernels* a = Avx512Kernels()) t.push_back(a);
  return t;
}

using test_util::RandomNormals;

std::vector<uint8_t> Encode(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> b(DTypeBytes(t, static_cast<int64_t>(x.size())));
  QuantizeRow(t, x.data(), static_cast<int64_t>(x.size()), b.data());
  return b;
}

TEST(Kernels, Q8QuantizerIsByteIdenticalToTheReference) {
  for (const Kernels* k : Tables()) {
    const int64_t n = 32 * 40;
    std::vector<float> x = RandomNormals(n, 7, 3.0f);
    // Ties: blocks whose values land exactly on q + 0.5 after scaling (amax 127 -> id 1).
    for (int j = 0; j < 32; ++j)
      x[32 + j] = (j == 0) ? 127.0f : (j % 2 ? -1.0f : 1.0f) * (j + 0.5f);
    for (int j = 0; j < 32; ++j) x[64 + j] = 0.0f;  // all-zero block
    x[96] = 1e-30f;                                 // tiny amax
    std::vector<BlockQ8_0> ref(n / 32), got(n / 32);
    QuantizeRowQ8_0(x.data(), n, ref.data());
    k->quantize_q8(x.data(), n, got.data());
    // The prepared activation row holds the same blocks and their scales as f32.
    std::vector<uint8_t> row(Q8ActRowBytes(n));
    k->prepare_q8_row(x.data(), n, row.data());
    for (int64_t b = 0; b < n / 32; ++b) {
      ASSERT_EQ(0, std::memcmp(&ref[b], Q8ActBlocks(row.data(), n / 32) + b, sizeof(BlockQ8_0)));
      ASSERT_EQ(Q8ActScales(row.data())[b], F16ToF32(ref[b].d));
    }
    // The four-block groups (kernels.h): halves of each block, its scale and 2 d sum(q) per lane.
    const uint8_t* groups = Q8ActGroups(row.data(), n / 32);
    for (int64_t b = 0; b < (n / 32) / 4 * 4; ++b) {
      const uint8_t* g = groups + (b / 4) * kQ8GroupBytes;
      const int k4 = static_cast<int>(b % 4);
      int32_t sum = 0;
      for (int j = 0; j < 32; ++j) {
        sum += ref[b].qs[j];
        const int8_t* half = reinterpret_cast<const int8_t*>(g) + (j < 16 ? 0 : 64);
        ASSERT_EQ(ref[b].qs[j], half[16 * k4 + j % 16]) << k->name << " group block " << b;
      }
      const float* dx = reinterpret_cast<const float*>(g + 128);
      for (int l = 0; l < 4; ++l) {
        ASSERT_EQ(dx[4 * k4 + l], F16ToF32(ref[b].d));
        ASSERT_EQ(dx[16 + 4 * k4 + l], 2.0f * F16ToF32(ref[b].d) * static_cast<float>(sum));
      }
    }
    for (int64_t b = 0; b < n / 32; ++b) {
      EXPECT_EQ(ref[b].d, got[b].d) << k->name << " block " << b;
      for (int j = 0; j < 32; ++j) {
        ASSERT_EQ(ref[b].qs[j], got[b].qs[j]) << k->name << " block " << b << " elem " << j;
      }
    }
  }
}

// y = w . x from dequantized weights and activations, in double: independent of the kernels.
double RefDot(DType wt, const std::vector<uint8_t>& w, const std::vector<float>& x, int64_t n,
              double* abs_sum) {
  std::vector<float> wf(n), xf(n);
  DequantizeRow(wt, w.data(), n, wf.data());
  if (UsesQ8Activations(wt)) {
    std::vector<BlockQ8_0> xq(n / 32);
    QuantizeRowQ8_0(x.data(), n, xq.data());
    DequantizeRowQ8_0(xq.data(), n, xf.data());
  } else {
    xf = x;
  }
  double s = 0;
  *abs_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += static_cast<double>(wf[i]) * xf[i];
    *abs_sum += std::abs(static_cast<double>(wf[i]) * xf[i]);
  }
  return s;
}

TEST(Kernels, RowDotsMatchDequantizedReferenceForEveryTypeAndTokenCount) {
  const DType types[] = {DType::kQ4_0, DType::kQ8_0, DType::kF16, DType::kBF16, DType::kF32};
  const int64_t n = 32 * 26;  // 26 blocks: six groups of four and a tail of two
  for (const Kernels* k : Tables()) {
    for (DType wt : types) {
      const std::vector<uint8_t> w = Encode(wt, RandomNormals(n, 11, 0.05f));
      for (int T : {1, 2, 3, 4, 5, 8, 9}) {
        // T activation rows in the format the weight type takes.
        std::vector<std::vector<float>> xs;
        const size_t stride = ActivationRowBytes(wt, n);
        std::vector<uint8_t> X(stride * T);
        for (int t = 0; t < T; ++t) {
          xs.push_back(RandomNormals(n, 100 + t, 2.0f));
          if (UsesQ8Activations(wt)) {
            k->prepare_q8_row(xs[t].data(), n, X.data() + t * stride);
          } else {
            std::memcpy(X.data() + t * stride, xs[t].data(), n * sizeof(float));
          }
        }
        std::vector<float> y(T * 3, -1.f);
        k->row_dots(wt, w.data(), X.data(), stride, T, n, y.data(), 3);
        for (int t = 0; t < T; ++t) {
          double abs_sum;
          const double ref = RefDot(wt, w, xs[t], n, &abs_sum);
          EXPECT_NEAR(y[t * 3], ref, 1e-5 * abs_sum + 1e-6)
              << k->name << " " << DTypeName(wt) << " T=" << T << " t=" << t;
        }
      }
    }
  }
}

TEST(Kernels, GemvAndAxpyRowsMatchTheRowKernels) {
  const DType types[] = {DType::kQ4_0, DType::kQ8_0, DType::kF16, DType::kBF16, DType::kF32};
  const int64_t n = 32 * 21;  // five four-block groups and a one-block tail
  for (const Kernels* k : Tables()) {
    for (DType wt : types) {
      const int64_t rows = 7;  // odd: the two-row GEMV's tail
      std::vector<uint8_t> W;
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<uint8_t> row = Encode(wt, RandomNormals(n, 40 + r, 0.1f));
        W.insert(W.end(), row.begin(), row.end());
      }
      const size_t rb = W.size() / rows;
      const std::vector<float> xf = RandomNormals(n, 77, 1.5f);
      std::vector<uint8_t> x(ActivationRowBytes(wt, n));
      if (UsesQ8Activations(wt)) {
        k->prepare_q8_row(xf.data(), n, x.data());
      } else {
        std::memcpy(x.data(), xf.data(), n * sizeof(float));
      }
      std::vector<float> y(rows);
      k->gemv(wt, W.data(), rb, rows, x.data(), n, y.data());
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<uint8_t> row(W.begin() + r * rb, W.begin() + (r + 1) * rb);
        double abs_sum;
        const double ref = RefDot(wt, row, xf, n, &abs_sum);
        EXPECT_NEAR(y[r], ref, 1e-5 * abs_sum + 1e-6) << k->name << " " << DTypeName(wt) << r;
      }
      // The same rows scattered (reversed) through gemv_rows.
      std::vector<const uint8_t*> up;
      for (int64_t r = rows - 1; r >= 0; --r) up.push_back(W.data() + r * rb);
      std::vector<float> ys(rows, -7.f);
      k->gemv_rows(wt, up.data(), rows, x.data(), n, ys.data());
      for (int64_t j = 0; j < rows; ++j) {
        const int64_t r = rows - 1 - j;
        const std::vector<uint8_t> row(W.begin() + r * rb, W.begin() + (r + 1) * rb);
        double abs_sum;
        const double ref = RefDot(wt, row, xf, n, &abs_sum);
        EXPECT_NEAR(ys[j], ref, 1e-5 * abs_sum + 1e-6) << k->name << " rows " << DTypeName(wt) << r;
      }
      // y += sum_j a_j row_j over 7 rows (a group of four and a tail), in any order.
      std::vector<const uint8_t*> ptrs;
      std::vector<float> a;
      for (int64_t r = rows - 1; r >= 0; --r) {
        ptrs.push_back(W.data() + r * rb);
        a.push_back(0.1f * (r + 1) * (r % 2 ? -1.f : 1.f));
      }
      const std::vector<float> y0 = RandomNormals(n, 3);
      std::vector<float> got = y0;
      k->axpy_rows(wt, ptrs.data(), a.data(), rows, n, got.data());
      std::vector<float> deq(n);
      std::vector<double> want(y0.begin(), y0.end());
      for (size_t j = 0; j < ptrs.size(); ++j) {
        DequantizeRow(wt, ptrs[j], n, deq.data());
        for (int64_t i = 0; i < n; ++i) want[i] += static_cast<double>(a[j]) * deq[i];
      }
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::abs(want[i])))
            << k->name << " " << DTypeName(wt) << " " << i;
      }
    }
  }
}

TEST(Kernels, AxpyAndDequantMatchTheReferenceCodec) {
  const DType types[] = {DType::kQ4_0, DType::kQ8_0, DType::kF16, DType::kBF16, DType::kF32};
  const int64_t n = 32 * 10;
  for (const Kernels* k : Tables()) {
    for (DType wt : types) {
      const std::vector<uint8_t> w = Encode(wt, RandomNormals(n, 5, 0.3f));
      std::vector<float> ref(n), got(n, 123.f);
      DequantizeRow(wt, w.data(), n, ref.data());
      k->dequant_row(wt, w.data(), n, got.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(ref[i], got[i]) << k->name << DTypeName(wt) << i;
      // AXPY over a block-aligned column range only touches that range.
      const std::vector<float> y0 = RandomNormals(n, 9);
      std::vector<float> y = y0;
      const float a = -0.75f;
      k->axpy_row(wt, w.data(), 64, 224, a, y.data());
      for (int64_t i = 0; i < n; ++i) {
        const float want = (i >= 64 && i < 224) ? y0[i] + a * ref[i] : y0[i];
        ASSERT_NEAR(y[i], want, 1e-6f * (1 + std::abs(want))) << k->name << DTypeName(wt) << i;
      }
    }
  }
}

TEST(Kernels, AttentionHelpersMatchScalarMath) {
  for (const Kernels* k : Tables()) {
    for (int64_t n : {1, 7, 8, 31, 128, 133}) {
      const std::vector<float> a = RandomNormals(n, 1), b = RandomNormals(n, 2);
      std::vector<uint16_t> bh(n), bh2(n);
      for (int64_t i = 0; i < n; ++i) bh[i] = F32ToF16(b[i]);
      k->f32_to_f16(b.data(), bh2.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bh[i], bh2[i]) << k->name << " f16 " << i;
      double dot = 0, dot_h = 0, abs = 0;
      for (int64_t i = 0; i < n; ++i) {
        dot += static_cast<double>(a[i]) * b[i];
        dot_h += static_cast<double>(a[i]) * F16ToF32(bh[i]);
        abs += std::abs(static_cast<double>(a[i]) * b[i]);
      }
      EXPECT_NEAR(k->dot_f32(a.data(), b.data(), n), dot, 1e-5 * abs + 1e-6) << k->name;
      EXPECT_NEAR(k->dot_f32_f16(a.data(), bh.data(), n), dot_h, 1e-5 * abs + 1e-6) << k->name;
      std::vector<float> y(n, 1.f), yh(n, 1.f);
      k->axpy_f32(0.5f, a.data(), y.data(), n);
      k->axpy_f16(0.5f, bh.data(), yh.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(y[i], 1.f + 0.5f * a[i], 1e-6f * (1 + std::abs(a[i])));
        ASSERT_NEAR(yh[i], 1.f + 0.5f * F16ToF32(bh[i]), 1e-6f * (1 + std::abs(b[i])));
      }
    }
  }
}

// The int8 peak probe: every table's loop does 64 products a lane group per round, in
// proportion to the rounds, and the probe reports a rate for 1 and 2 threads (and refuses
// nonsense).
TEST(Kernels, Int8PeakLoopCountsItsProducts) {
  for (const Kernels* k : Tables()) {
    int32_t sink = 0;
    const int64_t a = k->int8_mac_loop(10, &sink), b = k->int8_mac_loop(20, &sink);
    EXPECT_GT(a, 0) << k->name;
    EXPECT_EQ(a % 64, 0) << k->name;
    EXPECT_EQ(b, 2 * a) << k->name;
    for (int threads : {1, 2}) {
      auto p = MeasureInt8Peak(*k, threads, 1, 0.01);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_GT(p->gmac_per_s, 0.0);
      EXPECT_EQ(p->threads, threads);
      EXPECT_STREQ(p->kernel, k->name);
    }
  }
  EXPECT_FALSE(MeasureInt8Peak(ScalarKernels(), 0).ok());
  EXPECT_FALSE(MeasureInt8Peak(ScalarKernels(), 1, 0).ok());
  EXPECT_FALSE(MeasureInt8Peak(ScalarKernels(), 1, 1, 0.0).ok());
}

// The small f32 product (prefill's down projection): every table gives the scalar table's bits
// (ascending u, one FMA a step), and the scalar table is within float rounding of double sums.
TEST(Kernels, GemmF32AccMatchesTheScalarOrder) {
  const Kernels& ref = ScalarKernels();
  for (const Kernels* k : Tables()) {
    for (int M : {1, 3, 4, 7, 33}) {
      for (int N : {5, 16, 32}) {
        for (int U : {0, 1, 63, 64, 65, 130}) {
          const int64_t lda = M + 2, ldb = 37, ldc = N + 3;
          const std::vector<float> A = RandomNormals(std::max<int64_t>(1, U * lda), 21 + M);
          const std::vector<float> B = RandomNormals(std::max<int64_t>(1, U * ldb), 22 + N);
          const std::vector<float> C0 = RandomNormals(M * ldc, 23);
          std::vector<float> want = C0, got = C0;
          ref.gemm_f32_acc(A.data(), lda, M, B.data(), ldb, U, N, want.data(), ldc);
          k->gemm_f32_acc(A.data(), lda, M, B.data(), ldb, U, N, got.data(), ldc);
          for (int j = 0; j < M; ++j) {
            for (int64_t c = 0; c < ldc; ++c) {
              const int64_t i = j * ldc + c;
              if (c >= N) {
                ASSERT_EQ(got[i], C0[i]) << "wrote past N";
                continue;
              }
              ASSERT_EQ(got[i], want[i]) << k->name << " M " << M << " N " << N << " U " << U;
              double sum = C0[i], abs = std::abs(sum);
              for (int u = 0; u < U; ++u) {
                const double t = static_cast<double>(A[u * lda + j]) * B[u * ldb + c];
                sum += t, abs += std::abs(t);
              }
              ASSERT_NEAR(want[i], sum, 1e-6 * abs + 1e-7) << "M " << M << " N " << N;
            }
          }
        }
      }
    }
  }
}

// Softmax. Scores are multiples of 2^-10 in [-100, 0] with the maximum 0 first, so every
// x - max is exact and exp(0) = 1: then x[i] / x[0] is exp(x[i]) with only exp's and the
// scaling's rounding (4 ulp allowed), and the outputs sum to 1 within the float sum's n x
// 2^-24. Every table, lengths around the 8-lane tail, weights down to underflow.
TEST(Kernels, SoftmaxMatchesDoublePrecision) {
  std::mt19937 rng(5);
  for (const Kernels* k : Tables()) {
    for (int64_t n : {1, 2, 7, 8, 9, 31, 64, 1000}) {
      std::vector<float> x(n);
      for (int64_t i = 1; i < n; ++i) x[i] = -static_cast<float>(rng() % 102400) / 1024.f;
      const std::vector<float> x0 = x;
      k->softmax_f32(x.data(), n);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double want = std::exp(static_cast<double>(x0[i]));
        if (want < 1e-37) {  // below float's normal range: any value down to 0
          ASSERT_LE(x[i] / x[0], 1e-36) << k->name << " n " << n << " i " << i;
        } else {
          ASSERT_NEAR(x[i] / x[0], want, std::ldexp(want, -21))
              << k->name << " n " << n << " i " << i << " x " << x0[i];
        }
        total += x[i];
      }
      EXPECT_NEAR(total, 1.0, std::ldexp(static_cast<double>(n), -24) + 1e-7) << k->name;
    }
  }
}

// Grouped-query attention kernels against double-precision sums: R heads sharing one f16 KV
// head, keys strided as in the cache (other KV heads between rows), D with and without the
// 16-element chunks, head counts across the SIMD tables' 6- and 8-head tiles.
TEST(Kernels, GroupedAttentionMatchesPerHeadMath) {
  for (const Kernels* k : Tables()) {
    for (int D : {8, 24, 128, 12}) {
      for (int R : {1, 3, 6, 7, 13}) {
        for (int64_t n : {0, 1, 5, 64, 131}) {
          const int64_t stride = 3 * D + 5;  // elements between consecutive keys
          const std::vector<float> q = RandomNormals(static_cast<int64_t>(R) * D, 11 + R);
          const std::vector<float> kf = RandomNormals(std::max<int64_t>(1, n * stride), 12 + D);
          const std::vector<float> vf = RandomNormals(std::max<int64_t>(1, n * stride), 13 + D);
          std::vector<uint16_t> K(kf.size()), V(vf.size());
          for (size_t i = 0; i < kf.size(); ++i) K[i] = F32ToF16(kf[i]), V[i] = F32ToF16(vf[i]);
          const int64_t ss = n + 3;
          std::vector<float> s(static_cast<size_t>(R) * ss, -9.f);
          k->attn_scores_f16(q.data(), R, D, K.data(), stride, n, 0.25f, s.data(), ss);
          std::vector<float> w(static_cast<size_t>(R) * ss);
          for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i % 17);
          std::vector<float> out = RandomNormals(static_cast<int64_t>(R) * D, 5);
          const std::vector<float> out0 = out;
          k->attn_values_f16(w.data(), R, ss, V.data(), stride, n, D, out.data());
          for (int h = 0; h < R; ++h) {
            for (int64_t j = 0; j < n; ++j) {
              double dot = 0, abs = 0;
              for (int d = 0; d < D; ++d) {
                const double t = static_cast<double>(q[h * D + d]) * F16ToF32(K[j * stride + d]);
                dot += t, abs += std::abs(t);
              }
              ASSERT_NEAR(s[h * ss + j], 0.25 * dot, 0.25 * (1e-5 * abs + 1e-6))
                  << k->name << " D " << D << " R " << R << " n " << n << " h " << h << " j " << j;
            }
            for (int64_t j = n; j < ss; ++j) ASSERT_EQ(s[h * ss + j], -9.f) << "wrote past n";
            for (int d = 0; d < D; ++d) {
              double want = out0[h * D + d], abs = std::abs(want);
              for (int64_t j = 0; j < n; ++j) {
                const double t = static_cast<double>(w[h * ss + j]) * F16ToF32(V[j * stride + d]);
                want += t, abs += std::abs(t);
              }
              ASSERT_NEAR(out[h * D + d], want, 1e-5 * abs + 1e-6)
                  << k->name << " D " << D << " R " << R << " n " << n << " h " << h << " d " << d;
            }
          }
        }
      }
    }
  }
}

TEST(ThreadPool, EveryTaskRunsExactlyOnceAcrossManyJobs) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    std::vector<std::atomic<int>> hits(257);
    for (int job = 0; job < 2000; ++job) {
      const int n = 1 + job % 257;
      for (int i = 0; i < n; ++i) hits[i].store(0);
      std::atomic<bool> bad_thread{false};
      pool.Run(n, [&](int64_t t, int thread) {
        if (thread < 0 || thread >= threads) bad_thread = true;
        hits[t].fetch_add(1);
      });
      ASSERT_FALSE(bad_thread.load());
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "job " << job << " task " << i;
    }
  }
}

TEST(ThreadPool, WakesSleepingWorkersAndSplitsRanges) {
  ThreadPool pool(3);
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // workers go to sleep
    std::vector<int> seen(1000, 0);
    pool.For(1000, 7, [&](int64_t b, int64_t e, int) {
      ASSERT_GE(e - b, 1);
      for (int64_t i = b; i < e; ++i) seen[i]++;
    });
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(seen[i], 1) << i;
  }
}

}  // namespace
}  // namespace st
