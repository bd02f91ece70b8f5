// Byte-level BPE training (TrainBpe, BpeWordCounter): counts pre-token words, learns merges with
// incremental pair counts and a lazy priority queue, and writes a Hugging Face tokenizer.json.
#include "infer/tokenizer/bpe_trainer.h"

#include <algorithm>
#include <memory>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "infer/tokenizer/bpe.h"

namespace st {
namespace {

constexpr int kNumBytes = 256;
constexpr int64_t kProgressBytes = int64_t{1} << 20;  // progress while reading: every ~1 MB
constexpr int kProgressMerges = 100;                  // and while learning: every 100 merges

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t PairLeft(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t PairRight(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }

// First code point of a (valid) UTF-8 string.
uint32_t FirstCodePoint(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  if (p[0] < 0x80) return p[0];
  if (p[0] < 0xE0) return ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
  if (p[0] < 0xF0) return ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
  return ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
}

// A candidate merge in the queue. The queue pops the highest count first; among equal counts,
// the smallest (left id, right id): ids are assigned deterministically, so training is too.
struct QueueEntry {
  int64_t count;
  int32_t left;
  int32_t right;
};
struct QueueLess {
  bool operator()(const QueueEntry& x, const QueueEntry& y) const {
    if (x.count != y.count) return x.count < y.count;
    if (x.left != y.left) return x.left > y.left;
    return x.right > y.right;
  }
};

// Checks the options before any work is done.
absl::Status ValidateOptions(const BpeTrainOptions& opt) {
  const int num_special = static_cast<int>(opt.special_tokens.size());
  if (opt.vocab_size < kNumBytes + num_special) {
    return absl::InvalidArgumentError(
        absl::StrCat("BPE training: vocab_size ", opt.vocab_size,
                     " is too small: it must be at least ", kNumBytes + num_special, " (the ",
                     kNumBytes, " byte tokens plus ", num_special, " special tokens)"));
  }
  if (opt.min_frequency < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("BPE training: min_frequency must be at least 1, got ", opt.min_frequency));
  }
  absl::flat_hash_set<std::string> seen;
  for (const std::string& s : opt.special_tokens) {
    if (s.empty()) return absl::InvalidArgumentError("BPE training: a special token is empty");
    if (SanitizeUtf8(s) != s) {
      return absl::InvalidArgumentError(
          absl::StrCat("BPE training: special token '", s, "' is not valid UTF-8"));
    }
    if (!seen.insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("BPE training: special token '", s, "' is given twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct BpeWordCounter::Impl {
  std::vector<std::string> special_tokens;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  absl::Status pre_tokenizer_status;
  int64_t bytes = 0;
  // Pre-token words as raw bytes (the byte-level mapping is a bijection, applied in Train).
  absl::flat_hash_map<std::string, int64_t> counts;
  std::vector<absl::string_view> pieces;  // scratch

  void CountSegment(absl::string_view segment) {
    if (segment.empty()) return;
    const std::string normalized = NormalizeNfc(segment);
    pieces.clear();
    pre_tokenizer->Split(normalized, &pieces);
    for (absl::string_view p : pieces) {
      if (p.empty()) continue;
      auto it = counts.find(p);
      if (it == counts.end()) {
        counts.emplace(std::string(p), 1);
      } else {
        ++it->second;
      }
    }
  }
};

BpeWordCounter::BpeWordCounter() : BpeWordCounter(BpeTrainOptions().special_tokens) {}

BpeWordCounter::BpeWordCounter(const std::vector<std::string>& special_tokens) : impl_(new Impl) {
  for (const std::string& s : special_tokens) {
    if (!s.empty()) impl_->special_tokens.push_back(s);
  }
  auto pre = PreTokenizer::Create(kQwen2Pattern);
  if (pre.ok()) {
    impl_->pre_tokenizer = std::move(*pre);
  } else {
    impl_->pre_tokenizer_status = pre.status();
  }
}

BpeWordCounter::~BpeWordCounter() { delete impl_; }

int64_t BpeWordCounter::bytes() const { return impl_->bytes; }

void BpeWordCounter::Add(absl::string_view document) {
  Impl& m = *impl_;
  m.bytes += static_cast<int64_t>(document.size());
  if (m.pre_tokenizer == nullptr || document.empty()) return;
  const std::string text = SanitizeUtf8(document);
  const absl::string_view view(text);
  // Special tokens are matched before normalization, leftmost first and longest at a position
  // (as Hugging Face's added-vocabulary matching). next[i]: next start of special i at or after
  // the cursor (npos: none left).
  const size_t num_special = m.special_tokens.size();
  std::vector<size_t> next(num_special);
  for (size_t i = 0; i < num_special; ++i) next[i] = view.find(m.special_tokens[i]);
  size_t cursor = 0;
  while (true) {
    size_t best = absl::string_view::npos;
    size_t best_len = 0;
    for (size_t i = 0; i < num_special; ++i) {
      if (next[i] != absl::string_view::npos && next[i] < cursor) {
        next[i] = view.find(m.special_tokens[i], cursor);
      }
      const size_t len = m.special_tokens[i].size();
      if (next[i] < best ||
          (next[i] == best && next[i] != absl::string_view::npos && len > best_len)) {
        best = next[i];
        best_len = len;
      }
    }
    if (best == absl::string_view::npos) {
      m.CountSegment(view.substr(cursor));
      return;
    }
    m.CountSegment(view.substr(cursor, best - cursor));
    cursor = best + best_len;
  }
}

absl::StatusOr<std::string> BpeWordCounter::Train(const BpeTrainOptions& opt) const {
  const Impl& m = *impl_;
  if (absl::Status s = ValidateOptions(opt); !s.ok()) return s;
  if (!m.pre_tokenizer_status.ok()) return m.pre_tokenizer_status;
  if (m.bytes == 0) {
    return absl::InvalidArgumentError("BPE training: the input is empty (no text to learn from)");
  }
  const int num_special = static_cast<int>(opt.special_tokens.size());
  const int target_vocab = opt.vocab_size - num_special;

  // The 256 byte tokens: ids in the order of their byte-level code points, which is the order
  // of GPT-2's byte-to-unicode table (printable bytes first) and of Qwen2's vocabulary.
  std::vector<std::string> tokens(kNumBytes);
  std::vector<int32_t> byte_to_id(kNumBytes);
  {
    std::vector<std::pair<uint32_t, int>> order;
    std::vector<std::string> mapped(kNumBytes);
    for (int b = 0; b < kNumBytes; ++b) {
      mapped[b] = BytesToByteLevel(std::string(1, static_cast<char>(b)));
      if (mapped[b].empty()) {
        return absl::InternalError("BPE training: the byte-level mapping is unavailable");
      }
      order.emplace_back(FirstCodePoint(mapped[b]), b);
    }
    std::sort(order.begin(), order.end());
    for (int id = 0; id < kNumBytes; ++id) {
      byte_to_id[order[id].second] = id;
      tokens[id] = mapped[order[id].second];
    }
  }
  absl::flat_hash_map<std::string, int32_t> token_ids;
  for (int id = 0; id < kNumBytes; ++id) token_ids.emplace(tokens[id], id);
  if (static_cast<int>(token_ids.size()) != kNumBytes) {
    return absl::InternalError("BPE training: the byte-level mapping is not one-to-one");
  }

  // Words of two or more bytes, sorted so that nothing depends on hash-map order.
  std::vector<std::pair<absl::string_view, int64_t>> sorted;
  sorted.reserve(m.counts.size());
  for (const auto& [word, count] : m.counts) {
    if (word.size() >= 2) sorted.emplace_back(word, count);
  }
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> word_counts(sorted.size());
  absl::flat_hash_map<uint64_t, int64_t> pair_counts;
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> pair_words;  // may hold stale entries
  for (size_t w = 0; w < sorted.size(); ++w) {
    const absl::string_view word = sorted[w].first;
    word_counts[w] = sorted[w].second;
    std::vector<int32_t>& sym = words[w];
    sym.reserve(word.size());
    for (char c : word) sym.push_back(byte_to_id[static_cast<unsigned char>(c)]);
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const uint64_t key = PairKey(sym[i], sym[i + 1]);
      pair_counts[key] += word_counts[w];
      std::vector<int32_t>& list = pair_words[key];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) {
        list.push_back(static_cast<int32_t>(w));
      }
    }
  }
  sorted.clear();

  std::priority_queue<QueueEntry, std::vector<QueueEntry>, QueueLess> queue;
  for (const auto& [key, count] : pair_counts) {
    if (count >= opt.min_frequency) queue.push({count, PairLeft(key), PairRight(key)});
  }

  std::vector<std::pair<int32_t, int32_t>> merges;
  std::vector<int32_t> new_sym;
  std::vector<uint64_t> touched;  // pairs with the new token, whose counts may have grown
  int vocab = kNumBytes;
  while (vocab < target_vocab && !queue.empty()) {
    const QueueEntry top = queue.top();
    queue.pop();
    const uint64_t key = PairKey(top.left, top.right);
    auto count_it = pair_counts.find(key);
    const int64_t current = count_it == pair_counts.end() ? 0 : count_it->second;
    if (current != top.count) {
      // Counts of existing pairs only shrink; a pair whose count grew was pushed again.
      if (current < top.count && current >= opt.min_frequency) {
        queue.push({current, top.left, top.right});
      }
      continue;
    }
    if (current < opt.min_frequency) break;

    // The merged token; two merges can make the same string ("a"+"bc", "ab"+"c"): one token.
    const std::string merged = tokens[top.left] + tokens[top.right];
    int32_t new_id;
    if (auto it = token_ids.find(merged); it != token_ids.end()) {
      new_id = it->second;
    } else {
      new_id = static_cast<int32_t>(tokens.size());
      tokens.push_back(merged);
      token_ids.emplace(merged, new_id);
      ++vocab;
    }
    merges.emplace_back(top.left, top.right);

    std::vector<int32_t> where;
    if (auto node = pair_words.extract(key); !node.empty()) where = std::move(node.mapped());
    std::sort(where.begin(), where.end());
    where.erase(std::unique(where.begin(), where.end()), where.end());
    touched.clear();
    for (int32_t w : where) {
      std::vector<int32_t>& sym = words[w];
      const int64_t wc = word_counts[w];
      bool found = false;
      for (size_t i = 0; i + 1 < sym.size() && !found; ++i) {
        found = sym[i] == top.left && sym[i + 1] == top.right;
      }
      if (!found) continue;  // stale index entry
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        const uint64_t k = PairKey(sym[i], sym[i + 1]);
        auto it = pair_counts.find(k);
        if ((it->second -= wc) == 0) pair_counts.erase(it);
      }
      new_sym.clear();
      for (size_t i = 0; i < sym.size();) {
        if (i + 1 < sym.size() && sym[i] == top.left && sym[i + 1] == top.right) {
          new_sym.push_back(new_id);
          i += 2;
        } else {
          new_sym.push_back(sym[i]);
          ++i;
        }
      }
      sym.swap(new_sym);
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        const uint64_t k = PairKey(sym[i], sym[i + 1]);
        pair_counts[k] += wc;
        if (sym[i] == new_id || sym[i + 1] == new_id) {
          // Pairs without the new token were in the old word already, so indexed.
          std::vector<int32_t>& list = pair_words[k];
          if (list.empty() || list.back() != w) list.push_back(w);
          touched.push_back(k);
        }
      }
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t k : touched) {
      auto it = pair_counts.find(k);
      if (it != pair_counts.end() && it->second >= opt.min_frequency) {
        queue.push({it->second, PairLeft(k), PairRight(k)});
      }
    }
    if (opt.progress && merges.size() % kProgressMerges == 0) {
      opt.progress(m.bytes, static_cast<int>(merges.size()));
    }
  }
  if (opt.progress) opt.progress(m.bytes, static_cast<int>(merges.size()));

  for (const std::string& s : opt.special_tokens) {
    if (token_ids.contains(s)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BPE training: special token '", s, "' is also a byte or learned token; choose another"));
    }
  }

  // The tokenizer.json, in the shape of Qwen2's.
  ByteLevelBpeSpec spec;
  spec.vocab.reserve(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) spec.vocab.emplace_back(tokens[id], id);
  for (const auto& [a, b] : merges) spec.merges.emplace_back(tokens[a], tokens[b]);
  for (int i = 0; i < num_special; ++i) {
    spec.added.push_back({static_cast<int>(tokens.size()) + i, opt.special_tokens[i], true});
  }
  return ByteLevelBpeJson(spec, /*indent=*/2) + "\n";
}

absl::StatusOr<std::string> TrainBpe(const std::vector<std::string>& texts,
                                     const BpeTrainOptions& opt) {
  // Check the options first: a bad vocab_size should not cost a pass over the corpus.
  if (absl::Status s = ValidateOptions(opt); !s.ok()) return s;
  BpeWordCounter counter(opt.special_tokens);
  int64_t next_report = kProgressBytes;
  for (const std::string& text : texts) {
    counter.Add(text);
    if (opt.progress && counter.bytes() >= next_report) {
      opt.progress(counter.bytes(), 0);
      next_report = (counter.bytes() / kProgressBytes + 1) * kProgressBytes;
    }
  }
  return counter.Train(opt);
}

}  // namespace st
