// Tokenizer factory, fingerprint and the streaming UTF-8 decoder.
#include "infer/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "infer/tokenizer/bpe.h"

namespace st {
namespace {

// FNV-1a, 64 bit, with a chosen offset basis: two of them make a 128-bit identity (not a
// cryptographic hash; it only has to tell tokenizers apart).
uint64_t Fnv1a(absl::string_view s, uint64_t basis) {
  uint64_t h = basis;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Length of the tail of `s` that validly starts a UTF-8 character without finishing it (0 when
// `s` ends on a character boundary or in bytes that can never become valid).
size_t IncompleteTail(absl::string_view s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: the lead is further back
    unsigned char lo, hi;
    const size_t need = static_cast<size_t>(Utf8LeadByte(c, &lo, &hi));
    if (need <= back) return 0;  // complete, or not a lead byte at all
    if (back >= 2) {
      const auto c1 = static_cast<unsigned char>(s[s.size() - back + 1]);
      if (c1 < lo || c1 > hi) return 0;
    }
    return back;
  }
  return 0;
}

}  // namespace

std::string Tokenizer::Fingerprint() const {
  const std::string s = absl::StrCat(name(), "\n", ToJson());
  return absl::StrFormat("%016x%016x", Fnv1a(s, 0xcbf29ce484222325ULL),
                         Fnv1a(s, 0x84222325cbf29ce4ULL));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(absl::string_view name,
                                                         absl::string_view json) {
  if (name == "byte") return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  if (name == "bpe") {
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::FromJson(json);
    if (!t.ok()) return t.status();
    return std::unique_ptr<Tokenizer>(std::move(*t));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tokenizer '", name, "'; known: byte, bpe"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& spec) {
  if (spec == "byte") return MakeTokenizer("byte");
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> t = BpeTokenizer::Load(spec);
  if (!t.ok()) return t.status();
  return std::unique_ptr<Tokenizer>(std::move(*t));
}

std::string StreamDecoder::Push(int32_t id) {
  pending_ += tok_->Decode({id});
  // Emit all but an unfinished character at the end; invalid bytes go out as U+FFFD at once
  // (waiting would never complete them), exactly as SanitizeUtf8 of the whole stream would.
  const size_t keep = IncompleteTail(pending_);
  std::string out = SanitizeUtf8(absl::string_view(pending_).substr(0, pending_.size() - keep));
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out = pending_.empty() ? "" : SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace st
