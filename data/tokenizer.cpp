// ByteTokenizer (one id a byte, plus <|endoftext|>) and MakeTokenizer, the factory that maps
// the tokenizer name stored in token files and checkpoints back to an implementation.
#include "data/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace st {

namespace {
constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD in UTF-8
constexpr char kEndOfTextText[] = "<|endoftext|>";
}  // namespace

std::vector<int32_t> ByteTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string ByteTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) {
      out.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    } else if (id == kEndOfText) {
      out += kEndOfTextText;
    } else {
      out += kReplacementChar;
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(absl::string_view name) {
  if (name == "byte") return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  return absl::InvalidArgumentError(absl::StrCat("unknown tokenizer '", name, "'; known: byte"));
}

}  // namespace st
