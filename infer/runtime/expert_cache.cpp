// ExpertCache: slot table and replacement policy (engine thread), reads through io_uring or
// pread threads (completions under the cache mutex), routing profiles.
#include "infer/runtime/expert_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "model/check.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

#if defined(ST_HAVE_LIBURING)
#include <liburing.h>
#endif

namespace st {
namespace {

constexpr size_t kIoAlign = 4096;
size_t RoundUp(size_t n, size_t a) { return (n + a - 1) / a * a; }
std::string Errno(int e) { return std::strerror(e); }

enum SlotState : int { kFree = 0, kLoading, kReady, kFailed };

}  // namespace

absl::StatusOr<CachePolicy> ParseCachePolicy(const std::string& name) {
  if (name == "lru") return CachePolicy::kLru;
  if (name == "lfu") return CachePolicy::kLfu;
  if (name == "lrfu") return CachePolicy::kLrfu;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown cache policy '", name, "' (expected lru, lfu or lrfu)"));
}
const char* CachePolicyName(CachePolicy p) {
  return p == CachePolicy::kLru ? "lru" : p == CachePolicy::kLfu ? "lfu" : "lrfu";
}

absl::StatusOr<IoBackend> ParseIoBackend(const std::string& name) {
  if (name == "auto") return IoBackend::kAuto;
  if (name == "uring") return IoBackend::kUring;
  if (name == "pread") return IoBackend::kPread;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown I/O backend '", name, "' (expected auto, uring or pread)"));
}

struct ExpertCache::Impl {
  struct Slot {
    int key = -1;           // layer * E + expert; -1 when free
    int state = kFree;      // guarded by mu (written by I/O completions)
    int parts_pending = 0;  // guarded by mu
    std::string error;      // guarded by mu
    int in_use = 0;
    bool pinned = false;
    bool prefetched = false;  // read by Prefetch and not used yet
    bool announced = false;   // counted by Prefetch for the current step
    uint64_t last_use = 0;
    double freq = 0;
    int64_t last_pass = -1;  // LRFU: the forward pass (token or chunk) of the last use
    double crf = 0;          // LRFU: decayed use count as of last_use
    double order = 0;        // LRFU: log2(crf) + last_use / half_life (the eviction order, fixed
                             // between uses: the score at time t is order - t / half_life)
    uint8_t* data = nullptr;
  };
  struct Req {  // one chunk read
    int slot;
    uint64_t offset;
    size_t len, need;  // bytes asked (aligned) and bytes that must arrive
    uint8_t* dst;
  };

  int L = 0, E = 0;
  std::vector<ExpertExtent> extents;  // [L * E]
  std::vector<int> slot_of;           // [L * E] -> slot, -1 when not cached
  std::vector<Slot> slots;
  std::vector<int> free_slots;
  size_t slot_bytes = 0;
  uint8_t* arena = nullptr;
  size_t arena_bytes = 0;
  CachePolicy policy = CachePolicy::kLfu;
  ExpertCacheStats* stats = nullptr;  // the owner's (evictions)
  uint64_t tick = 0;
  int64_t pass = 0;  // forward passes begun (NewPass)
  int64_t since_ageing = 0;
  int64_t n_pinned = 0;
  int64_t chunk = 1 << 20;

  int fd = -1;
  bool direct = false;
  std::string path;
  std::string backend_name;

  std::mutex mu;
  std::condition_variable done_cv;  // a slot left kLoading
  int in_flight = 0;                // slots loading (guarded by mu)

  // pread backend
  std::deque<Req> queue;  // guarded by mu
  std::condition_variable queue_cv;
  std::vector<std::thread> readers;
  bool stop = false;  // guarded by mu

#if defined(ST_HAVE_LIBURING)
  bool uring = false;
  io_uring ring;
  std::thread reaper;
  std::vector<Req> uring_reqs;  // by request id (user_data), reused
  std::vector<int> uring_free;  // free request ids (engine thread only)
  std::mutex uring_ids_mu;      // uring_free is returned to by the reaper
#endif

  ~Impl() {
    {  // no read may land in freed memory: wait for every slot in flight
      std::unique_lock<std::mutex> lock(mu);
      done_cv.wait(lock, [&] { return in_flight == 0; });
      stop = true;
    }
    queue_cv.notify_all();
    for (std::thread& t : readers) t.join();
#if defined(ST_HAVE_LIBURING)
    if (uring) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (sqe == nullptr) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
      }
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, ~uint64_t{0});  // tells the reaper to stop
      io_uring_submit(&ring);
      reaper.join();
      io_uring_queue_exit(&ring);
    }
#endif
    if (fd >= 0) ::close(fd);
    if (arena != nullptr) ::munmap(arena, arena_bytes);
  }

  // A chunk finished with `got` bytes (or -errno). Called with mu held.
  void CompleteLocked(const Req& r, ssize_t got) {
    Slot& s = slots[r.slot];
    if (got < 0) {
      if (s.error.empty()) {
        s.error = absl::StrCat("read of ", r.len, " bytes at offset ", r.offset, " of '", path,
                               "' failed: ", Errno(static_cast<int>(-got)));
      }
    } else if (static_cast<size_t>(got) < r.need) {
      if (s.error.empty()) {
        s.error = absl::StrCat("short read at offset ", r.offset, " of '", path, "': ", got, " of ",
                               r.need, " bytes (was the file truncated or replaced?)");
      }
    }
    if (--s.parts_pending == 0) {
      s.state = s.error.empty() ? kReady : kFailed;
      --in_flight;
      done_cv.notify_all();
    }
  }

  void ReaderLoop() {
    for (;;) {
      Req r;
      {
        std::unique_lock<std::mutex> lock(mu);
        queue_cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;  // stop
        r = queue.front();
        queue.pop_front();
      }
      size_t got = 0;
      int err = 0;
      while (got < r.need) {
        const ssize_t n = ::pread(fd, r.dst + got, r.len - got, static_cast<off_t>(r.offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          err = errno;
          break;
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
        if (direct && got % kIoAlign != 0) break;  // O_DIRECT: a ragged count means end of file
      }
      if (!direct) ::posix_fadvise(fd, static_cast<off_t>(r.offset), r.len, POSIX_FADV_DONTNEED);
      std::lock_guard<std::mutex> lock(mu);
      CompleteLocked(r, err != 0 ? -err : static_cast<ssize_t>(got));
    }
  }

#if defined(ST_HAVE_LIBURING)
  void ReaperLoop() {
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe(&ring, &cqe);
      if (rc == -EINTR) continue;
      ST_CHECK(rc == 0) << "io_uring_wait_cqe: " << Errno(-rc);
      const uint64_t id = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      io_uring_cqe_seen(&ring, cqe);
      if (id == ~uint64_t{0}) return;
      Req r = uring_reqs[id];
      {
        std::lock_guard<std::mutex> lock(uring_ids_mu);
        uring_free.push_back(static_cast<int>(id));
      }
      std::lock_guard<std::mutex> lock(mu);
      CompleteLocked(r, res);
    }
  }
#endif

  // Queues the reads of extent `key` into slot `s` (engine thread).
  void StartRead(int s, int key) {
    Slot& sl = slots[s];
    const ExpertExtent& x = extents[key];
    std::vector<Req> reqs;
    const size_t total = direct ? RoundUp(x.size, kIoAlign) : x.size;
    for (size_t off = 0; off < total; off += chunk) {
      const size_t len = std::min<size_t>(chunk, total - off);
      const size_t need = off >= x.size ? 0 : std::min<size_t>(len, x.size - off);
      reqs.push_back({s, x.offset + off, len, need, sl.data + off});
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      sl.state = kLoading;
      sl.error.clear();
      sl.parts_pending = static_cast<int>(reqs.size());
      ++in_flight;
#if defined(ST_HAVE_LIBURING)
      if (!uring)
#endif
      {
        for (const Req& r : reqs) queue.push_back(r);
      }
    }
#if defined(ST_HAVE_LIBURING)
    if (uring) {
      for (const Req& r : reqs) {
        int id;
        for (;;) {
          {
            std::lock_guard<std::mutex> lock(uring_ids_mu);
            if (!uring_free.empty()) {
              id = uring_free.back();
              uring_free.pop_back();
              break;
            }
          }
          std::this_thread::yield();  // every request id in flight: wait for completions
        }
        uring_reqs[id] = r;
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        while (sqe == nullptr) {
          io_uring_submit(&ring);
          sqe = io_uring_get_sqe(&ring);
        }
        io_uring_prep_read(sqe, fd, r.dst, static_cast<unsigned>(r.len), r.offset);
        io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(id));
      }
      io_uring_submit(&ring);
      return;
    }
#endif
    queue_cv.notify_all();
  }

  // A slot for a new entry: a free one, else the policy's victim among the evictable ones
  // (ready or failed, not in use, not pinned); -1 when none.
  int TakeSlot() {
    if (!free_slots.empty()) {
      const int s = free_slots.back();
      free_slots.pop_back();
      return s;
    }
    int best = -1;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (int s = 0; s < static_cast<int>(slots.size()); ++s) {
        const Slot& c = slots[s];
        if (c.pinned || c.in_use > 0 || c.announced || c.state == kLoading || c.state == kFree) {
          continue;
        }
        if (best < 0) {
          best = s;
          continue;
        }
        const Slot& b = slots[best];
        bool better;
        switch (policy) {
          case CachePolicy::kLru:
            better = c.last_use < b.last_use;
            break;
          case CachePolicy::kLfu:
            better = c.freq < b.freq || (c.freq == b.freq && c.last_use < b.last_use);
            break;
          default:  // least recent pass first; within a pass, the lowest decayed count
            better = c.last_pass < b.last_pass ||
                     (c.last_pass == b.last_pass &&
                      (c.order < b.order || (c.order == b.order && c.last_use < b.last_use)));
            break;
        }
        if (better) best = s;
      }
    }
    if (best >= 0) {
      ++stats->evictions;
      Slot& v = slots[best];
      slot_of[v.key] = -1;
      v.key = -1;
      v.prefetched = false;
      v.announced = false;
      v.freq = 0;
      v.crf = 0;
    }
    return best;
  }

  int StateOf(int s) {
    std::lock_guard<std::mutex> lock(mu);
    return slots[s].state;
  }
};

size_t ExpertCache::SlotBytes(const ModelFile& file) {
  const ModelConfig& c = file.config();
  size_t m = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (int e = 0; e < c.moe_num_primary_experts; ++e) {
      absl::StatusOr<ExpertExtent> x = file.GetExpertExtent(l, e);
      if (x.ok()) m = std::max<size_t>(m, x->size);
    }
  }
  return RoundUp(m, kIoAlign);
}

absl::StatusOr<std::unique_ptr<ExpertCache>> ExpertCache::Create(
    const ModelFile& file, const std::string& path, const ExpertCacheOptions& options) {
  if (options.slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert cache needs >= 1 slot, got ", options.slots));
  }
  if (options.io_chunk < static_cast<int64_t>(kIoAlign) || options.io_chunk % kIoAlign != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("io_chunk must be a positive multiple of 4096, got ", options.io_chunk));
  }
  std::unique_ptr<ExpertCache> c(new ExpertCache());
  c->impl_ = std::make_unique<Impl>();
  Impl& m = *c->impl_;
  const ModelConfig& cfg = file.config();
  m.L = cfg.num_hidden_layers;
  m.E = cfg.moe_num_primary_experts;
  m.policy = options.policy;
  m.stats = &c->stats_;
  m.chunk = options.io_chunk;
  m.path = path;
  for (int l = 0; l < m.L; ++l) {
    for (int e = 0; e < m.E; ++e) {
      ST_ASSIGN_OR_RETURN(ExpertExtent x, file.GetExpertExtent(l, e));
      m.extents.push_back(x);
    }
  }
  m.slot_of.assign(static_cast<size_t>(m.L) * m.E, -1);
  m.slot_bytes = SlotBytes(file);

  // Slot memory: one arena, 2 MiB aligned and advised for huge pages, touched now so the
  // budget is taken up front.
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t want = m.slot_bytes * static_cast<size_t>(options.slots);
  m.arena_bytes = RoundUp(want, kHuge) + kHuge;
  void* a =
      ::mmap(nullptr, m.arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the expert cache (", want >> 20, " MiB): ", Errno(errno)));
  }
  m.arena = static_cast<uint8_t*>(a);
  uint8_t* base = reinterpret_cast<uint8_t*>(RoundUp(reinterpret_cast<uintptr_t>(m.arena), kHuge));
  ::madvise(base, RoundUp(want, kHuge), MADV_HUGEPAGE);
  std::memset(base, 0, want);
  m.slots.resize(options.slots);
  for (int64_t s = 0; s < options.slots; ++s) {
    m.slots[s].data = base + static_cast<size_t>(s) * m.slot_bytes;
    m.free_slots.push_back(static_cast<int>(options.slots - 1 - s));
  }

  // The file, for direct reads when the filesystem allows them.
  if (options.direct) {
    m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    m.direct = m.fd >= 0;
  }
  if (m.fd < 0) {
    m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (m.fd < 0) {
      return absl::NotFoundError(
          absl::StrCat("cannot open '", path, "' for expert reads: ", Errno(errno)));
    }
  }
  const char* mode = m.direct ? "O_DIRECT" : "buffered, page cache dropped";
#if defined(ST_HAVE_LIBURING)
  if (options.io != IoBackend::kPread) {
    const int rc = io_uring_queue_init(256, &m.ring, 0);
    if (rc == 0) {
      m.uring = true;
      m.uring_reqs.resize(256);
      for (int i = 255; i >= 0; --i) m.uring_free.push_back(i);
      m.reaper = std::thread([&m] { m.ReaperLoop(); });
      m.backend_name = absl::StrCat("io_uring, ", mode);
    } else if (options.io == IoBackend::kUring) {
      return absl::UnavailableError(
          absl::StrCat("io_uring is unavailable here (", Errno(-rc), "); use --io pread"));
    }
  }
  if (!m.uring)
#else
  if (options.io == IoBackend::kUring) {
    return absl::UnavailableError("built without liburing; use --io pread");
  }
#endif
  {
    const int n = std::max(1, options.io_threads);
    for (int i = 0; i < n; ++i) m.readers.emplace_back([&m] { m.ReaderLoop(); });
    m.backend_name = absl::StrCat("pread x", n, ", ", mode);
  }
  return c;
}

ExpertCache::~ExpertCache() = default;

size_t ExpertCache::slot_bytes() const { return impl_->slot_bytes; }
int64_t ExpertCache::slots() const { return static_cast<int64_t>(impl_->slots.size()); }
int64_t ExpertCache::pinned() const { return impl_->n_pinned; }
std::string ExpertCache::io_name() const { return impl_->backend_name; }

void ExpertCache::Prefetch(int layer, absl::Span<const int> experts) {
  Impl& m = *impl_;
  for (int e : experts) {
    const int key = layer * m.E + e;
    int s = m.slot_of[key];
    ++stats_.requests;
    if (s >= 0) {
      ++stats_.hits;
      m.slots[s].announced = true;
      continue;
    }
    s = m.TakeSlot();
    if (s < 0) {  // nothing evictable now: counted as a miss, read at Acquire
      --stats_.requests;
      continue;
    }
    Impl::Slot& sl = m.slots[s];
    sl.key = key;
    sl.prefetched = true;
    sl.announced = true;
    m.slot_of[key] = s;
    ++stats_.reads;
    ++stats_.prefetch_reads;
    stats_.bytes_read += static_cast<int64_t>(m.extents[key].size);
    m.StartRead(s, key);
  }
}

bool ExpertCache::Ready(int layer, int expert) const {
  Impl& m = *impl_;
  const int s = m.slot_of[layer * m.E + expert];
  return s >= 0 && m.StateOf(s) == kReady;
}

void ExpertCache::NewPass() { ++impl_->pass; }

void ExpertCache::EndStep() {
  for (Impl::Slot& s : impl_->slots) s.announced = false;
}

bool ExpertCache::Contains(int layer, int expert) const {
  return impl_->slot_of[layer * impl_->E + expert] >= 0;
}

absl::StatusOr<const uint8_t*> ExpertCache::Acquire(int layer, int expert) {
  Impl& m = *impl_;
  if (layer < 0 || layer >= m.L || expert < 0 || expert >= m.E) {
    return absl::OutOfRangeError(absl::StrCat("no expert (", layer, ", ", expert, ")"));
  }
  const int key = layer * m.E + expert;
  int s = m.slot_of[key];
  if (s >= 0 && m.slots[s].announced) {
    m.slots[s].announced = false;  // counted by Prefetch
  } else {
    ++stats_.requests;
    if (s >= 0) ++stats_.hits;
  }
  if (s < 0) {
    s = m.TakeSlot();
    if (s < 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "expert cache: all ", m.slots.size(),
          " slots are in use, pinned or being read; raise the memory budget or pin fewer"));
    }
    m.slots[s].key = key;
    m.slot_of[key] = s;
    ++stats_.reads;
    stats_.bytes_read += static_cast<int64_t>(m.extents[key].size);
    m.StartRead(s, key);
  }
  Impl::Slot& sl = m.slots[s];
  {
    std::unique_lock<std::mutex> lock(m.mu);
    if (sl.state == kLoading) {
      const auto t0 = std::chrono::steady_clock::now();
      m.done_cv.wait(lock, [&] { return sl.state != kLoading; });
      stats_.stall_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (sl.state == kFailed) {
      const std::string err = sl.error;
      sl.state = kFree;
      lock.unlock();
      m.slot_of[key] = -1;
      sl.key = -1;
      sl.prefetched = false;
      m.free_slots.push_back(s);
      return absl::DataLossError(
          absl::StrCat("expert (layer ", layer, ", expert ", expert, "): ", err));
    }
  }
  if (sl.prefetched) {
    sl.prefetched = false;
    ++stats_.prefetch_used;
  }
  ++sl.in_use;
  const uint64_t now = ++m.tick;
  const double half_life = static_cast<double>(m.slots.size());
  sl.crf = sl.crf * std::exp2(-static_cast<double>(now - sl.last_use) / half_life) + 1.0;
  sl.order = std::log2(sl.crf) + static_cast<double>(now) / half_life;
  sl.last_use = now;
  sl.last_pass = m.pass;
  sl.freq += 1.0;
  // Ageing: every 4 x slots uses, halve every count, so yesterday's favourites fade.
  if (++m.since_ageing >= 4 * static_cast<int64_t>(m.slots.size())) {
    m.since_ageing = 0;
    for (Impl::Slot& x : m.slots) x.freq *= 0.5;
  }
  return sl.data;
}

void ExpertCache::Release(int layer, int expert) {
  Impl& m = *impl_;
  const int s = m.slot_of[layer * m.E + expert];
  ST_CHECK(s >= 0 && m.slots[s].in_use > 0)
      << "Release without Acquire: " << layer << "," << expert;
  --m.slots[s].in_use;
}

absl::StatusOr<int64_t> ExpertCache::Pin(absl::Span<const std::pair<int, int>> experts,
                                         int64_t max_pinned) {
  Impl& m = *impl_;
  for (const auto& [l, e] : experts) {
    if (m.n_pinned >= max_pinned) break;
    ST_ASSIGN_OR_RETURN(const uint8_t* p, Acquire(l, e));
    (void)p;
    Impl::Slot& sl = m.slots[m.slot_of[l * m.E + e]];
    if (!sl.pinned) {
      sl.pinned = true;
      ++m.n_pinned;
    }
    Release(l, e);
  }
  return m.n_pinned;
}

// ---- routing profiles ----

std::vector<std::pair<int, int>> RoutingProfile::Hottest() const {
  std::vector<std::pair<int, int>> v;
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) v.emplace_back(l, e);
  }
  std::stable_sort(v.begin(), v.end(), [&](const auto& a, const auto& b) {
    return counts[a.first * experts + a.second] > counts[b.first * experts + b.second];
  });
  return v;
}

absl::Status WriteRoutingProfile(const std::string& path, const RoutingProfile& p) {
  nlohmann::json j;
  j["layers"] = p.layers;
  j["experts"] = p.experts;
  j["tokens"] = p.tokens;
  nlohmann::json rows = nlohmann::json::array();
  for (int l = 0; l < p.layers; ++l) {
    rows.push_back(std::vector<int64_t>(p.counts.begin() + static_cast<size_t>(l) * p.experts,
                                        p.counts.begin() + static_cast<size_t>(l + 1) * p.experts));
  }
  j["counts"] = rows;
  return WriteFileAtomic(path, j.dump() + "\n");
}

absl::StatusOr<RoutingProfile> ReadRoutingProfile(const std::string& path) {
  ST_ASSIGN_OR_RETURN(std::string text, ReadFile(path, "routing profile"));
  return ParseRoutingProfile(text, path);
}

absl::StatusOr<RoutingProfile> ParseRoutingProfile(absl::string_view text,
                                                   const std::string& path) {
  const nlohmann::json j =
      nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing profile '", path, "': ", why,
                     " (expected {\"layers\", \"experts\", \"tokens\", \"counts\"} as written by "
                     "st-run --record_routing)"));
  };
  if (!j.is_object()) return bad("not a JSON object");
  for (const auto& [k, v] : j.items()) {
    if (k != "layers" && k != "experts" && k != "tokens" && k != "counts") {
      return bad("unknown key '" + k + "'");
    }
  }
  // An integer in [lo, hi] (JSON numbers may be unsigned, negative or beyond int64).
  auto in_range = [](const nlohmann::json& v, int64_t lo, int64_t hi) {
    if (v.is_number_unsigned()) {  // nlohmann types every non-negative integer as unsigned
      const uint64_t u = v.get<uint64_t>();
      return u <= static_cast<uint64_t>(hi) && (lo <= 0 || u >= static_cast<uint64_t>(lo));
    }
    return v.is_number_integer() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  };
  if (!j.contains("layers") || !j["layers"].is_number_integer() || !j.contains("experts") ||
      !j["experts"].is_number_integer() || !j.contains("counts") || !j["counts"].is_array()) {
    return bad("missing or mistyped layers / experts / counts");
  }
  if (!in_range(j["layers"], 1, 4096) || !in_range(j["experts"], 1, 4096)) {
    return bad("layers and experts must be in [1, 4096]");
  }
  RoutingProfile p;
  p.layers = j["layers"].get<int>();
  p.experts = j["experts"].get<int>();
  if (j.contains("tokens")) {
    if (!in_range(j["tokens"], 0, INT64_MAX)) return bad("tokens must be an integer >= 0");
    p.tokens = j["tokens"].get<int64_t>();
  }
  if (j["counts"].size() != static_cast<size_t>(p.layers)) return bad("counts has wrong length");
  for (const auto& row : j["counts"]) {
    if (!row.is_array() || row.size() != static_cast<size_t>(p.experts)) {
      return bad("a counts row has the wrong length");
    }
    for (const auto& v : row) {
      if (!in_range(v, 0, INT64_MAX)) return bad("counts must be integers >= 0");
      p.counts.push_back(v.get<int64_t>());
    }
  }
  return p;
}

}  // namespace st
