// BpeTokenizer: Hugging Face byte-level BPE from a tokenizer.json (parsing and validation, added
// tokens, NFC, PCRE2 pre-tokenizer, ByteLevel mapping, merges by rank, word cache, decoding).
#include "infer/tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/check.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

namespace st {

const char kQwen2Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

// The pattern of Hugging Face's ByteLevel pre-tokenizer with use_regex: true (GPT-2).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD
constexpr char kEndOfText[] = "<|endoftext|>";

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

// ---- UTF-8

// Length of the valid UTF-8 character at p[0..n) (1-4), or 0 with *bad set to the length of
// the maximal invalid subpart there (at least 1), as the Unicode "maximal subpart" practice
// (WHATWG TextDecoder, Python's errors="replace") defines it.
int Utf8Step(const unsigned char* p, size_t n, int* bad) {
  if (p[0] < 0x80) return 1;
  unsigned char lo, hi;
  const int need = Utf8LeadByte(p[0], &lo, &hi) - 1;
  if (need < 1) {
    *bad = 1;
    return 0;
  }
  for (int k = 1; k <= need; ++k) {
    const bool ok = static_cast<size_t>(k) < n &&
                    (k == 1 ? (p[k] >= lo && p[k] <= hi) : (p[k] >= 0x80 && p[k] <= 0xBF));
    if (!ok) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}

bool IsValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // Fast path over ASCII, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    int bad = 0;
    const int len = Utf8Step(p + i, n - i, &bad);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

bool IsAscii(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// ---- GPT-2 bytes_to_unicode

struct ByteLevelTables {
  std::array<uint16_t, 256> byte_to_cp;
  std::array<std::string, 256> byte_to_utf8;
  absl::flat_hash_map<uint32_t, unsigned char> cp_to_byte;
  ByteLevelTables() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      byte_to_cp[b] = static_cast<uint16_t>(printable ? b : 256 + extra++);
      AppendUtf8(byte_to_cp[b], &byte_to_utf8[b]);
      cp_to_byte[byte_to_cp[b]] = static_cast<unsigned char>(b);
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables* t = new ByteLevelTables();
  return *t;
}

// ---- PCRE2 JIT stack, one per thread (the default 32 KiB can be too small for long runs).

struct JitStack {
  pcre2_jit_stack* stack = nullptr;
  JitStack() { stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr); }
  ~JitStack() {
    if (stack != nullptr) pcre2_jit_stack_free(stack);
  }
};

// ---- added tokens: leftmost-longest literal matching (as Hugging Face's Aho-Corasick with
// MatchKind::LeftmostLongest).

class LiteralMatcher {
 public:
  void Add(const std::string& text, int32_t id) {
    if (text.empty()) return;
    by_first_[static_cast<unsigned char>(text[0])].push_back({text, id});
    empty_ = false;
  }
  void Finish() {
    for (auto& bucket : by_first_) {
      std::stable_sort(bucket.begin(), bucket.end(), [](const Entry& a, const Entry& b) {
        return a.text.size() > b.text.size();
      });
    }
  }
  bool empty() const { return empty_; }
  // Calls gap(text between matches) for non-empty gaps and match(id) for each match, in order.
  template <typename Gap, typename Match>
  void Split(absl::string_view s, Gap&& gap, Match&& match) const {
    if (empty_) {
      if (!s.empty()) gap(s);
      return;
    }
    size_t last = 0;
    for (size_t i = 0; i < s.size();) {
      const auto& bucket = by_first_[static_cast<unsigned char>(s[i])];
      const Entry* hit = nullptr;
      for (const Entry& e : bucket) {
        if (s.size() - i >= e.text.size() && s.compare(i, e.text.size(), e.text) == 0) {
          hit = &e;
          break;
        }
      }
      if (hit == nullptr) {
        ++i;
        continue;
      }
      if (i > last) gap(s.substr(last, i - last));
      match(hit->id);
      i += hit->text.size();
      last = i;
    }
    if (last < s.size()) gap(s.substr(last));
  }

 private:
  struct Entry {
    std::string text;
    int32_t id;
  };
  std::array<std::vector<Entry>, 256> by_first_;
  bool empty_ = true;
};

// ---- JSON helpers

std::string TypeOf(const json& j) {
  if (j.is_object()) {
    auto it = j.find("type");
    if (it != j.end() && it->is_string()) return it->get<std::string>();
    return "(object without \"type\")";
  }
  return j.type_name();
}

bool GetBool(const json& obj, const char* key, bool dflt) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return dflt;
  return it->is_boolean() ? it->get<bool>() : dflt;
}

bool IsNullOrEmptyString(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty());
}

// Escapes a literal so that PCRE2 matches it verbatim.
std::string QuoteRegex(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::strchr("\\^$.|?*+()[]{}-/#", c) != nullptr && c != '\0') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Unicode White_Space, what \s means to Oniguruma (Hugging Face's regex engine). PCRE2's \s
// (with UCP) also matches U+180E, which left White_Space in Unicode 6.3.
constexpr char kWhiteSpaceItems[] =
    R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// Rewrites a pattern so that PCRE2 matches as Oniguruma does where the two differ on
// tokenizer patterns: \s and \S become explicit White_Space classes (\S inside a character
// class is left alone). Case folding needs nothing: both fold U+017F to s (checked against
// Hugging Face).
std::string OnigCompatible(const std::string& p) {
  std::string out;
  const size_t n = p.size();
  bool in_class = false;
  auto copy_through = [&](size_t* i, absl::string_view end) {
    const size_t e = p.find(std::string(end), *i);
    const size_t stop = e == std::string::npos ? n : e + end.size();
    out.append(p, *i, stop - *i);
    *i = stop - 1;
  };
  for (size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < n) {
      const char e = p[i + 1];
      if (e == 'Q') {
        copy_through(&i, "\\E");
      } else if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceItems) : absl::StrCat("[", kWhiteSpaceItems, "]");
        ++i;
      } else if (e == 'S' && !in_class) {
        out += absl::StrCat("[^", kWhiteSpaceItems, "]");
        ++i;
      } else {
        out.append(p, i, 2);
        ++i;
      }
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < n && p[i + 1] == ':') {
        copy_through(&i, ":]");
        continue;
      }
      if (c == ']') in_class = false;
      out.push_back(c);
      continue;
    }
    if (c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < n && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < n && p[i + 1] == ']') out.push_back(p[++i]);  // a leading ] is literal
      continue;
    }
    out.push_back(c);
  }
  return out;
}

constexpr int kCacheShards = 16;
constexpr size_t kCacheShardCap = 16384;  // entries a shard holds before it is cleared
constexpr size_t kMaxCachedWord = 128;    // longer pre-tokens are not cached

}  // namespace

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // a lone surrogate cannot be UTF-8
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// ---------------------------------------------------------------------------------------------
// Free functions

std::string BytesToByteLevel(absl::string_view bytes) {
  const ByteLevelTables& t = Tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.byte_to_utf8[static_cast<unsigned char>(c)];
  return out;
}

bool ByteLevelToBytes(absl::string_view mapped, std::string* bytes) {
  const ByteLevelTables& t = Tables();
  const auto* p = reinterpret_cast<const unsigned char*>(mapped.data());
  const size_t n = mapped.size();
  for (size_t i = 0; i < n;) {
    int bad = 0;
    const int len = Utf8Step(p + i, n - i, &bad);
    if (len == 0) return false;
    uint32_t cp;
    if (len == 1) {
      cp = p[i];
    } else if (len == 2) {
      cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
    } else {
      return false;  // every mapped code point is below U+0800
    }
    auto it = t.cp_to_byte.find(cp);
    if (it == t.cp_to_byte.end()) return false;
    bytes->push_back(static_cast<char>(it->second));
    i += len;
  }
  return true;
}

int Utf8LeadByte(unsigned char lead, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (lead == 0xE0) *lo = 0xA0;
    if (lead == 0xED) *hi = 0x9F;
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (lead == 0xF0) *lo = 0x90;
    if (lead == 0xF4) *hi = 0x8F;
    return 4;
  }
  return 0;
}

std::string SanitizeUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    int bad = 0;
    const int len = Utf8Step(p + i, n - i, &bad);
    if (len > 0) {
      out.append(text.data() + i, len);
      i += len;
    } else {
      out += kReplacementChar;
      i += bad;
    }
  }
  return out;
}

std::string NormalizeNfc(absl::string_view text) {
  if (IsAscii(text)) return std::string(text);
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  ST_CHECK(U_SUCCESS(status)) << "ICU NFC normalizer unavailable: " << u_errorName(status);
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  if (nfc->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  nfc->normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) return std::string(text);  // only on invalid UTF-8 input
  return out;
}

// ---------------------------------------------------------------------------------------------
// PreTokenizer

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const std::string& pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  const std::string compiled = OnigCompatible(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(
        absl::StrCat("pre-tokenizer regex does not compile at offset ", offset, ": ",
                     reinterpret_cast<char*>(message), " (pattern: ", pattern, ")"));
  }
  // Without JIT (e.g. a platform PCRE2 has no JIT for) pcre2_match interprets: slower, correct.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->pattern_ = pattern;
  p->code_ = code;
  return p;
}

PreTokenizer::~PreTokenizer() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void PreTokenizer::Split(absl::string_view text, std::vector<absl::string_view>* out) const {
  ForEach(text, [out](absl::string_view piece) { out->push_back(piece); });
}

void PreTokenizer::ForEach(absl::string_view text,
                           absl::FunctionRef<void(absl::string_view)> fn) const {
  if (text.empty()) return;
  thread_local JitStack jit_stack;
  const auto* code = static_cast<const pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* mc = pcre2_match_context_create(nullptr);
  ST_CHECK(md != nullptr && mc != nullptr) << "out of memory";
  if (jit_stack.stack != nullptr) pcre2_jit_stack_assign(mc, nullptr, jit_stack.stack);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t last = 0;  // end of the last piece handed out
  size_t pos = 0;   // where the next search starts
  while (pos < n) {
    const int rc = pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, mc);
    if (rc < 0) break;  // no match (or a matching error): the rest is one piece
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (end == start) {  // empty match: skip one character, it is part of the next gap
      pos = start + 1;
      while (pos < n && (subject[pos] & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (start > last) fn(text.substr(last, start - last));
    fn(text.substr(start, end - start));
    last = pos = end;
  }
  if (last < n) fn(text.substr(last));
  pcre2_match_context_free(mc);
  pcre2_match_data_free(md);
}

// ---------------------------------------------------------------------------------------------
// BpeTokenizer

struct BpeTokenizer::Impl {
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  struct CacheShard {
    std::mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> words;
  };

  std::string json_text;
  absl::flat_hash_map<std::string, int32_t> vocab;  // byte-level token string -> id
  absl::flat_hash_map<uint64_t, Merge> merges;      // (left id << 32 | right id) -> merge
  std::array<int32_t, 256> byte_ids;                // byte -> id of its one-char token, or -1
  std::vector<std::string> decoded;                 // id -> bytes
  std::vector<bool> decodable;                      // id -> has a token
  absl::flat_hash_map<std::string, int32_t> added;  // added token content -> id
  LiteralMatcher raw_added;                         // "normalized": false added tokens
  LiteralMatcher normalized_added;                  // "normalized": true (matched after NFC)
  std::unique_ptr<PreTokenizer> pre;                // nullptr: no splitting
  bool nfc = false;
  bool prefix_space_per_segment = false;  // ByteLevel add_prefix_space, before its own regex
  bool prefix_space_per_piece = false;    // ByteLevel add_prefix_space after a Split
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  int vocab_size = 0;
  int eos_id = -1;
  mutable std::array<CacheShard, kCacheShards> cache;

  uint64_t PairKey(int32_t a, int32_t b) const {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void EncodeSegment(absl::string_view segment, std::vector<int32_t>* ids) const;
  void EncodeNormalized(absl::string_view text, std::vector<int32_t>* ids) const;
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const;
  void EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const;
  void Bpe(absl::string_view word, std::vector<int32_t>* ids) const;
};

namespace {

absl::Status Unsupported(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported tokenizer.json: ", what,
                   " (supported: Hugging Face byte-level BPE as Qwen2/GPT-2 use it)"));
}

absl::Status ParseNormalizer(const json& j, bool* nfc) {
  *nfc = false;
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "NFC") {
    *nfc = true;
    return absl::OkStatus();
  }
  if (type == "Sequence" && j.contains("normalizers") && j["normalizers"].is_array()) {
    for (const json& n : j["normalizers"]) {
      if (TypeOf(n) != "NFC") {
        return Unsupported(absl::StrCat("normalizer '", TypeOf(n), "' (only NFC or null)"));
      }
      *nfc = true;
    }
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat("normalizer '", type, "' (only NFC or null)"));
}

absl::Status CheckByteLevel(const json& j, const char* where) {
  if (TypeOf(j) != "ByteLevel") {
    return Unsupported(absl::StrCat(where, " '", TypeOf(j), "' (only ByteLevel)"));
  }
  return absl::OkStatus();
}

}  // namespace

// Keys in the order Hugging Face writes them.
std::string ByteLevelBpeJson(const ByteLevelBpeSpec& spec, int indent) {
  const bool qwen2 = spec.pre == ByteLevelBpeSpec::Pre::kQwen2;
  // Qwen's ByteLevel steps follow a Split and use no regex; GPT-2's is the regex.
  const ojson byte_level = {{"type", "ByteLevel"},
                            {"add_prefix_space", false},
                            {"trim_offsets", !qwen2},
                            {"use_regex", !qwen2}};
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  ojson added = ojson::array();
  for (const ByteLevelBpeSpec::Added& a : spec.added) {
    added.push_back({{"id", a.id},
                     {"content", a.content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", a.special}});
  }
  j["added_tokens"] = std::move(added);
  if (qwen2) {
    j["normalizer"] = {{"type", "NFC"}};
    ojson split = ojson::object();
    split["type"] = "Split";
    split["pattern"] = {{"Regex", std::string(kQwen2Pattern)}};
    split["behavior"] = "Isolated";
    split["invert"] = false;
    ojson pre_tokenizer = ojson::object();
    pre_tokenizer["type"] = "Sequence";
    pre_tokenizer["pretokenizers"] = ojson::array();
    pre_tokenizer["pretokenizers"].push_back(std::move(split));
    pre_tokenizer["pretokenizers"].push_back(byte_level);
    j["pre_tokenizer"] = std::move(pre_tokenizer);
  } else {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = byte_level;
  }
  j["post_processor"] = byte_level;
  j["decoder"] = byte_level;
  // In id order, as Hugging Face writes it. Appended to the ordered map's vector directly: its
  // own insert looks for the key first, quadratic on a 150k vocabulary (tokens are unique).
  ojson vocab = ojson::object();
  auto& entries = static_cast<ojson::object_t::Container&>(vocab.get_ref<ojson::object_t&>());
  entries.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) entries.emplace_back(token, id);
  ojson merges = ojson::array();
  for (const auto& [a, b] : spec.merges) merges.push_back(ojson::array({a, b}));
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", std::move(vocab)},
                {"merges", std::move(merges)}};
  return j.dump(indent, ' ', /*ensure_ascii=*/false);
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(absl::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        "tokenizer.json is not a JSON object (not valid JSON, or empty); expected a Hugging Face "
        "tokenizer.json");
  }
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  tok->impl_ = std::make_unique<Impl>();
  Impl& im = *tok->impl_;
  im.json_text = std::string(text);

  for (const char* key : {"truncation", "padding"}) {
    if (j.contains(key) && !j[key].is_null()) {
      return Unsupported(absl::StrCat("\"", key, "\" is set (must be null)"));
    }
  }

  // ---- model
  if (!j.contains("model") || !j["model"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json has no \"model\" object");
  }
  const json& model = j["model"];
  std::string model_type = "BPE";
  if (model.contains("type")) {
    if (!model["type"].is_string()) return absl::InvalidArgumentError("model.type is not a string");
    model_type = model["type"].get<std::string>();
  }
  if (model_type != "BPE") {
    return Unsupported(absl::StrCat("model type '", model_type, "' (only BPE)"));
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0)) {
    return Unsupported("BPE dropout (must be null)");
  }
  if (!IsNullOrEmptyString(model, "continuing_subword_prefix")) {
    return Unsupported("BPE continuing_subword_prefix (must be empty)");
  }
  if (!IsNullOrEmptyString(model, "end_of_word_suffix")) {
    return Unsupported("BPE end_of_word_suffix (must be empty)");
  }
  if (GetBool(model, "byte_fallback", false)) return Unsupported("BPE byte_fallback: true");
  im.ignore_merges = GetBool(model, "ignore_merges", false);
  im.fuse_unk = GetBool(model, "fuse_unk", false);
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("model.vocab is missing or not an object");
  }
  int32_t max_id = -1;
  im.vocab.reserve(model["vocab"].size());
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > (1 << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab['", it.key(), "'] is not a valid id"));
    }
    const int32_t id = it.value().get<int32_t>();
    im.vocab[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = im.vocab.find(model["unk_token"].get<std::string>());
    if (it != im.vocab.end()) im.unk_id = it->second;
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return absl::InvalidArgumentError("model.merges is missing or not an array");
  }
  const json& merges = model["merges"];
  im.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("model.merges[", r, "] = '", s,
                                                       "' is not two tokens separated by a space"));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("model.merges[", r, "] is neither \"a b\" nor [\"a\", \"b\"]"));
    }
    auto ia = im.vocab.find(a), ib = im.vocab.find(b), iab = im.vocab.find(a + b);
    if (ia == im.vocab.end() || ib == im.vocab.end() || iab == im.vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.merges[", r, "] ('", a, "', '", b,
                                                     "') uses a token missing from model.vocab"));
    }
    // A repeated pair takes its last rank, as in Hugging Face's map build.
    im.merges.insert_or_assign(im.PairKey(ia->second, ib->second),
                               Impl::Merge{static_cast<int32_t>(r), iab->second});
  }
  const ByteLevelTables& t = Tables();
  for (int b = 0; b < 256; ++b) {
    auto it = im.vocab.find(t.byte_to_utf8[b]);
    im.byte_ids[b] = it == im.vocab.end() ? -1 : it->second;
  }

  // ---- added tokens
  struct Added {
    std::string content;
    int32_t id;
    bool normalized;
  };
  std::vector<Added> added;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) {
      return absl::InvalidArgumentError("added_tokens is not an array");
    }
    for (const json& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          a["id"].get<int64_t>() < 0 || a["id"].get<int64_t>() > (1 << 30) ||
          !a.contains("content") || !a["content"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("added_tokens entry ", a.dump(), " needs an integer id and a content"));
      }
      const std::string content = a["content"].get<std::string>();
      for (const char* flag : {"single_word", "lstrip", "rstrip"}) {
        if (GetBool(a, flag, false)) {
          return Unsupported(absl::StrCat("added token '", content, "' with ", flag, ": true"));
        }
      }
      const bool special = GetBool(a, "special", false);
      added.push_back({content, a["id"].get<int32_t>(), GetBool(a, "normalized", !special)});
    }
  }

  // ---- normalizer, pre-tokenizer, decoder, post-processor
  ST_RETURN_IF_ERROR(ParseNormalizer(j.value("normalizer", json()), &im.nfc));
  const json pre = j.value("pre_tokenizer", json());
  std::string pattern;
  bool split_with_regex = false;
  auto byte_level = [&](const json& bl, bool after_split) -> absl::Status {
    const bool use_regex = GetBool(bl, "use_regex", true);
    const bool prefix = GetBool(bl, "add_prefix_space", true);
    if (after_split && use_regex) {
      return Unsupported("pre_tokenizer ByteLevel with use_regex: true after a Split");
    }
    if (use_regex) {
      pattern = kGpt2Pattern;
      split_with_regex = true;
    }
    (after_split ? im.prefix_space_per_piece : im.prefix_space_per_segment) = prefix;
    return absl::OkStatus();
  };
  auto split = [&](const json& s) -> absl::Status {
    const std::string behavior = s.value("behavior", "");
    if (behavior != "Isolated") {
      return Unsupported(
          absl::StrCat("pre_tokenizer Split with behavior '", behavior, "' (only Isolated)"));
    }
    if (GetBool(s, "invert", false)) return Unsupported("pre_tokenizer Split with invert: true");
    const json p = s.value("pattern", json());
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      pattern = p["Regex"].get<std::string>();
    } else if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      pattern = QuoteRegex(p["String"].get<std::string>());
    } else {
      return absl::InvalidArgumentError("pre_tokenizer Split has no Regex or String pattern");
    }
    split_with_regex = true;
    return absl::OkStatus();
  };
  const std::string pre_type = TypeOf(pre);
  if (pre_type == "ByteLevel") {
    ST_RETURN_IF_ERROR(byte_level(pre, /*after_split=*/false));
  } else if (pre_type == "Sequence" && pre.contains("pretokenizers") &&
             pre["pretokenizers"].is_array()) {
    const json& seq = pre["pretokenizers"];
    if (seq.size() == 1 && TypeOf(seq[0]) == "ByteLevel") {
      ST_RETURN_IF_ERROR(byte_level(seq[0], false));
    } else if (seq.size() == 2 && TypeOf(seq[0]) == "Split" && TypeOf(seq[1]) == "ByteLevel") {
      ST_RETURN_IF_ERROR(split(seq[0]));
      ST_RETURN_IF_ERROR(byte_level(seq[1], true));
    } else {
      std::vector<std::string> types;
      for (const json& p : seq) types.push_back(TypeOf(p));
      return Unsupported(absl::StrCat("pre_tokenizer Sequence [", absl::StrJoin(types, ", "),
                                      "] (only [Split, ByteLevel] or [ByteLevel])"));
    }
  } else {
    return Unsupported(absl::StrCat("pre_tokenizer '", pre_type,
                                    "' (only ByteLevel or Sequence [Split, ByteLevel])"));
  }
  if (split_with_regex) {
    absl::StatusOr<std::unique_ptr<PreTokenizer>> p = PreTokenizer::Create(pattern);
    if (!p.ok()) return p.status();
    im.pre = std::move(*p);
  }
  ST_RETURN_IF_ERROR(CheckByteLevel(j.value("decoder", json()), "decoder"));
  const json post = j.value("post_processor", json());
  if (!post.is_null()) ST_RETURN_IF_ERROR(CheckByteLevel(post, "post_processor"));

  // ---- id tables
  for (const Added& a : added) max_id = std::max(max_id, a.id);
  im.vocab_size = max_id + 1;
  im.decoded.assign(im.vocab_size, std::string());
  im.decodable.assign(im.vocab_size, false);
  for (const auto& [token, id] : im.vocab) {
    std::string bytes;
    // As Hugging Face's ByteLevel decoder: a token outside the mapping decodes to itself.
    if (!ByteLevelToBytes(token, &bytes)) bytes = token;
    im.decoded[id] = std::move(bytes);
    im.decodable[id] = true;
  }
  for (const Added& a : added) {
    im.decoded[a.id] = a.content;
    im.decodable[a.id] = true;
    im.added[a.content] = a.id;
    if (a.normalized && im.nfc) {
      im.normalized_added.Add(NormalizeNfc(a.content), a.id);
    } else if (a.normalized) {
      im.normalized_added.Add(a.content, a.id);
    } else {
      im.raw_added.Add(a.content, a.id);
    }
  }
  im.raw_added.Finish();
  im.normalized_added.Finish();
  im.eos_id = tok->TokenId(kEndOfText);
  return tok;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, "tokenizer file");
  if (!text.ok()) {
    return absl::Status(
        text.status().code(),
        absl::StrCat(text.status().message(), " (expected a Hugging Face tokenizer.json)"));
  }
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = FromJson(*text);
  if (!t.ok()) {
    return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  }
  return t;
}

BpeTokenizer::~BpeTokenizer() = default;

int BpeTokenizer::vocab_size() const { return impl_->vocab_size; }
int BpeTokenizer::eos_id() const { return impl_->eos_id; }
std::string BpeTokenizer::ToJson() const { return impl_->json_text; }

int BpeTokenizer::TokenId(absl::string_view token) const {
  auto a = impl_->added.find(token);
  if (a != impl_->added.end()) return a->second;
  auto v = impl_->vocab.find(token);
  if (v != impl_->vocab.end()) return v->second;
  v = impl_->vocab.find(BytesToByteLevel(token));
  return v == impl_->vocab.end() ? -1 : v->second;
}

std::vector<int32_t> BpeTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 8);
  std::string sanitized;
  if (!IsValidUtf8(text)) {
    sanitized = SanitizeUtf8(text);
    text = sanitized;
  }
  impl_->raw_added.Split(
      text, [&](absl::string_view seg) { impl_->EncodeSegment(seg, &ids); },
      [&](int32_t id) { ids.push_back(id); });
  return ids;
}

void BpeTokenizer::Impl::EncodeSegment(absl::string_view segment, std::vector<int32_t>* ids) const {
  if (!nfc || IsAscii(segment)) {
    EncodeNormalized(segment, ids);
    return;
  }
  const std::string normalized = NormalizeNfc(segment);
  EncodeNormalized(normalized, ids);
}

void BpeTokenizer::Impl::EncodeNormalized(absl::string_view text, std::vector<int32_t>* ids) const {
  normalized_added.Split(
      text,
      [&](absl::string_view piece) {
        if (prefix_space_per_segment && piece[0] != ' ') {
          EncodePiece(absl::StrCat(" ", piece), ids);
        } else {
          EncodePiece(piece, ids);
        }
      },
      [&](int32_t id) { ids->push_back(id); });
}

void BpeTokenizer::Impl::EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const {
  if (pre == nullptr) {
    EncodeWord(piece, ids);
    return;
  }
  pre->ForEach(piece, [&](absl::string_view word) {
    if (prefix_space_per_piece && word[0] != ' ') {
      EncodeWord(absl::StrCat(" ", word), ids);
    } else {
      EncodeWord(word, ids);
    }
  });
}

void BpeTokenizer::Impl::EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.size() == 1 && !ignore_merges) {
    const int32_t id = byte_ids[static_cast<unsigned char>(word[0])];
    if (id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  if (word.size() > kMaxCachedWord) {
    Bpe(word, ids);
    return;
  }
  const size_t h = absl::Hash<absl::string_view>{}(word);
  CacheShard& shard = cache[(h >> 20) % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.words.find(word);
    if (it != shard.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = ids->size();
  Bpe(word, ids);
  std::vector<int32_t> result(ids->begin() + before, ids->end());
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.words.size() >= kCacheShardCap) shard.words.clear();
  shard.words.try_emplace(word, std::move(result));
}

// Hugging Face's BPE::merge_word: symbols in a linked list, a heap of candidate merges ordered
// by (rank, position), stale candidates skipped when popped.
void BpeTokenizer::Impl::Bpe(absl::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges) {
    auto it = vocab.find(BytesToByteLevel(word));
    if (it != vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    int32_t len;  // 0: merged away
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // std heap is a max-heap: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  auto add = [&](int32_t id, int32_t len) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1, len});
    if (n > 0) symbols[n - 1].next = n;
  };
  int32_t pending_unk_len = 0;
  for (char c : word) {
    const int32_t id = byte_ids[static_cast<unsigned char>(c)];
    if (id >= 0) {
      if (pending_unk_len > 0) add(unk_id, pending_unk_len);
      pending_unk_len = 0;
      add(id, 1);
    } else if (unk_id >= 0) {
      if (pending_unk_len > 0 && !fuse_unk) {
        add(unk_id, pending_unk_len);
        pending_unk_len = 0;
      }
      pending_unk_len += 1;
    }  // no unk token: the byte is dropped, as Hugging Face does
  }
  if (pending_unk_len > 0) add(unk_id, pending_unk_len);

  auto push = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it == merges.end()) return;
    heap.push_back({it->second.rank, pos, it->second.new_id});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& s = symbols[top.pos];
    if (s.len == 0 || s.next < 0) continue;
    Symbol& right = symbols[s.next];
    auto it = merges.find(PairKey(s.id, right.id));
    if (it == merges.end() || it->second.new_id != top.new_id) continue;
    s.id = top.new_id;
    s.len += right.len;
    right.len = 0;
    s.next = right.next;
    if (s.next >= 0) symbols[s.next].prev = top.pos;
    if (s.prev >= 0) push(s.prev);
    push(top.pos);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    ids->push_back(symbols[i].id);
  }
}

std::string BpeTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && id < impl_->vocab_size && impl_->decodable[id]) {
      out += impl_->decoded[id];
    } else {
      out += kReplacementChar;
    }
  }
  return out;
}

}  // namespace st
