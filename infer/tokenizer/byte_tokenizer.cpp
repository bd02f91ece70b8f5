// ByteTokenizer: one id a byte, plus <|endoftext|>.
#include "infer/tokenizer/tokenizer.h"

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

int ByteTokenizer::TokenId(absl::string_view token) const {
  if (token == kEndOfTextText) return kEndOfText;
  if (token.size() == 1) return static_cast<unsigned char>(token[0]);
  return -1;
}

}  // namespace st
