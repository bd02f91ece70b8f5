// st-bench-kernels: Google Benchmark micro-benchmarks of the kernel tables on the 4B's shapes
// (H = 1536, F = 768): streaming GEMV over a matrix larger than the caches (decode), scattered
// row dots and AXPYs (sparse ReGLU), and blocked row dots over 16 tokens (prefill). Bytes/s
// counters read as weight bandwidth.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/quant/codec.h"
#include "infer/quant/kernels.h"
#include "infer/tools/cli.h"

namespace st {
namespace {

constexpr int64_t kH = 1536;

// A byte buffer on 2 MiB-aligned memory advised for transparent huge pages, as the engine
// holds its weights (EngineOptions::huge_pages).
struct Buffer {
  std::unique_ptr<uint8_t, void (*)(void*)> p{nullptr, std::free};  // owns; move-only
  size_t n = 0;
  void resize(size_t bytes) {
    n = bytes;
    const size_t cap = (bytes + (2u << 20) - 1) & ~size_t{(2u << 20) - 1};
    p.reset(static_cast<uint8_t*>(std::aligned_alloc(2u << 20, cap)));
    madvise(p.get(), cap, MADV_HUGEPAGE);
    std::memset(p.get(), 0, bytes);
  }
  uint8_t* data() { return p.get(); }
  const uint8_t* data() const { return p.get(); }
  size_t size() const { return n; }
};

struct Matrix {
  DType t;
  int64_t rows;
  size_t row_bytes;
  Buffer data;
};

Matrix MakeMatrix(DType t, int64_t rows) {
  Matrix m{t, rows, static_cast<size_t>(DTypeBytes(t, kH)), {}};
  m.data.resize(m.row_bytes * rows);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> row(kH);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = nd(rng);
    QuantizeRow(t, row.data(), kH, m.data.data() + r * m.row_bytes);
  }
  return m;
}

std::vector<uint8_t> Acts(DType wt, int T) {
  const size_t rb = ActivationRowBytes(wt, kH);
  std::vector<uint8_t> x(rb * T);
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> row(kH);
  for (int t = 0; t < T; ++t) {
    for (float& v : row) v = nd(rng);
    if (UsesQ8Activations(wt)) {
      ScalarKernels().prepare_q8_row(row.data(), kH, x.data() + t * rb);
    } else {
      std::copy(row.begin(), row.end(), reinterpret_cast<float*>(x.data() + t * rb));
    }
  }
  return x;
}

// Benchmark argument -> table: 0 scalar, 1 the best this CPU has, 2 AVX2 (when present).
const Kernels& Table(int64_t which) {
  if (which == 2 && Avx2Kernels() != nullptr) return *Avx2Kernels();
  return SelectKernels(which != 0);
}

// Decode GEMV of a `rows` x H matrix (built once per type and size).
void GemvOver(benchmark::State& state, DType t, int64_t rows) {
  static std::map<std::pair<DType, int64_t>, Matrix>* cache =
      new std::map<std::pair<DType, int64_t>, Matrix>();
  auto it = cache->find({t, rows});
  if (it == cache->end()) it = cache->emplace(std::make_pair(t, rows), MakeMatrix(t, rows)).first;
  const Matrix& m = it->second;
  const Kernels& k = Table(state.range(0));
  const std::vector<uint8_t> x = Acts(t, 1);
  std::vector<float> y(m.rows);
  for (auto _ : state) {
    k.gemv(t, m.data.data(), m.row_bytes, m.rows, x.data(), kH, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * m.data.size());
  state.SetLabel(k.name);
}

// Over 64K rows (~56 MB at Q4_0): memory streaming, like the LM head.
void BM_GemvStream(benchmark::State& state, DType t) { GemvOver(state, t, 65536); }
// Over 512 rows (~440 KB at Q4_0) that stay in L2: the kernel's compute roof.
void BM_GemvCached(benchmark::State& state, DType t) { GemvOver(state, t, 512); }

// Sparse ReGLU down projection: AXPY of 1536 rows (half the rows of 4 experts' down_t) drawn
// from `matrix_rows` rows: 32 * 768 (out of cache, scattered) or 512 (in L2: the compute roof).
void AxpyOver(benchmark::State& state, int64_t matrix_rows) {
  const Matrix m = MakeMatrix(DType::kQ4_0, matrix_rows);
  const Kernels& k = Table(state.range(0));
  std::vector<int64_t> rows;
  std::mt19937 rng(3);
  for (int i = 0; i < 4 * 384; ++i) rows.push_back(rng() % m.rows);
  std::vector<float> y(kH, 0.f);
  std::vector<const uint8_t*> ptrs;
  for (int64_t r : rows) ptrs.push_back(m.data.data() + r * m.row_bytes);
  const std::vector<float> a(ptrs.size(), 0.01f);
  for (auto _ : state) {
    k.axpy_rows(m.t, ptrs.data(), a.data(), static_cast<int64_t>(ptrs.size()), kH, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * rows.size() * m.row_bytes);
  state.SetLabel(k.name);
}
void BM_AxpyScattered(benchmark::State& state) { AxpyOver(state, 32 * 768); }
void BM_AxpyCached(benchmark::State& state) { AxpyOver(state, 512); }

// Sparse ReGLU up projection: dots of half the rows of 4 experts' up, scattered.
void BM_GemvRowsScattered(benchmark::State& state) {
  static Matrix m = MakeMatrix(DType::kQ4_0, 32 * 768);
  const Kernels& k = Table(state.range(0));
  std::mt19937 rng(4);
  std::vector<const uint8_t*> ptrs;
  for (int i = 0; i < 4 * 384; ++i) ptrs.push_back(m.data.data() + (rng() % m.rows) * m.row_bytes);
  const std::vector<uint8_t> x = Acts(m.t, 1);
  std::vector<float> y(ptrs.size());
  for (auto _ : state) {
    k.gemv_rows(m.t, ptrs.data(), static_cast<int64_t>(ptrs.size()), x.data(), kH, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * ptrs.size() * m.row_bytes);
  state.SetLabel(k.name);
}

// Prefill: one expert's gate (768 rows) against a group of 16 tokens.
void BM_RowDots16(benchmark::State& state) {
  static Matrix m = MakeMatrix(DType::kQ4_0, 768);
  const Kernels& k = Table(state.range(0));
  const int T = 16;
  const std::vector<uint8_t> x = Acts(m.t, T);
  const size_t xs = ActivationRowBytes(m.t, kH);
  std::vector<float> y(m.rows * T);
  for (auto _ : state) {
    for (int64_t r = 0; r < m.rows; ++r) {
      k.row_dots(m.t, m.data.data() + r * m.row_bytes, x.data(), xs, T, kH, &y[r], m.rows);
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GMAC/s"] = benchmark::Counter(
      static_cast<double>(m.rows) * T * kH / 1e9 * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(k.name);
}

BENCHMARK_CAPTURE(BM_GemvStream, q4_0, DType::kQ4_0)
    ->Arg(1)
    ->Arg(2)
    ->Arg(0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_GemvStream, q8_0, DType::kQ8_0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_GemvCached, q4_0, DType::kQ4_0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GemvRowsScattered)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AxpyScattered)->Arg(1)->Arg(2)->Arg(0)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AxpyCached)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RowDots16)->Arg(1)->Arg(2)->Arg(0)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace st

namespace {

void PrintHelp() {
  std::printf(
      "usage: st-bench-kernels [--benchmark_filter=REGEX] [other Google Benchmark flags]\n\n"
      "Micro-benchmarks of the kernel tables on the 4B's shapes; the argument of each benchmark\n"
      "is the table: 0 scalar, 1 AVX2, 2 AVX-512 VNNI (skipped where the CPU lacks it).\n\n"
      "Google Benchmark flags:\n");
  benchmark::PrintDefaultHelp();
  std::printf("  -h, --help\n  --version\n");
}

}  // namespace

// Google Benchmark's main, with the tools' --help, -h, --version and usage errors.
int main(int argc, char** argv) {
  st::cli::SetToolName("st-bench-kernels");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help" || a == "-help") {
      PrintHelp();
      return 0;
    }
    if (a == "--version") {
      std::printf("%s\n", st::cli::VersionLine("st-bench-kernels").c_str());
      return 0;
    }
  }
  benchmark::Initialize(&argc, argv, PrintHelp);
  if (argc > 1) {
    const std::string arg = argv[1];
    if (arg[0] != '-') return st::cli::UsageError(absl::StrCat("unexpected argument '", arg, "'"));
    return st::cli::UsageError(absl::StrCat("unknown flag ", arg.substr(0, arg.find('=')),
                                            " (Google Benchmark flags start with --benchmark_)"));
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
