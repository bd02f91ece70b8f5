// Jinja lexer: the oracle's source preprocessing (trailing newline, lstrip_blocks, trim_blocks,
// {% generation %} tags) and tokenization, keeping for every token its offset in the original
// source so that errors can name a line and column.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "infer/chat/jinja_internal.h"

namespace st::jinja::internal {

const char* TokName(Tok t) {
  switch (t) {
    case Tok::kText:
      return "text";
    case Tok::kNumber:
      return "number";
    case Tok::kString:
      return "string";
    case Tok::kIdent:
      return "name";
    case Tok::kEquals:
      return "'='";
    case Tok::kOpenParen:
      return "'('";
    case Tok::kCloseParen:
      return "')'";
    case Tok::kOpenStmt:
      return "'{%'";
    case Tok::kCloseStmt:
      return "'%}'";
    case Tok::kOpenExpr:
      return "'{{'";
    case Tok::kCloseExpr:
      return "'}}'";
    case Tok::kOpenSquare:
      return "'['";
    case Tok::kCloseSquare:
      return "']'";
    case Tok::kOpenCurly:
      return "'{'";
    case Tok::kCloseCurly:
      return "'}'";
    case Tok::kComma:
      return "','";
    case Tok::kDot:
      return "'.'";
    case Tok::kColon:
      return "':'";
    case Tok::kPipe:
      return "'|'";
    case Tok::kAdditive:
    case Tok::kMultiplicative:
    case Tok::kPower:
    case Tok::kComparison:
    case Tok::kUnary:
      return "operator";
    case Tok::kComment:
      return "comment";
  }
  return "token";
}

namespace {

// Text with, for every byte, its offset in the original source (pos.size() == s.size() + 1).
struct Mapped {
  std::string s;
  std::vector<int64_t> pos;
  void Add(const Mapped& from, size_t i) {
    s.push_back(from.s[i]);
    pos.push_back(from.pos[i]);
  }
  void AddRange(const Mapped& from, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) Add(from, i);
  }
  void Close(const Mapped& from, size_t end_index) { pos.push_back(from.pos[end_index]); }
};

// Length of a line terminator (\n, \r, U+2028, U+2029) at s[i], 0 when none.
size_t LineTerminatorLen(const std::string& s, size_t i) {
  if (s[i] == '\n' || s[i] == '\r') return 1;
  if (i + 2 < s.size() && s[i] == '\xE2' && s[i + 1] == '\x80' &&
      (s[i + 2] == '\xA8' || s[i + 2] == '\xA9')) {
    return 3;
  }
  return 0;
}

// lstrip_blocks: /^[ \t]*({[#%-])/gm -> "$1".
Mapped LstripBlocks(const Mapped& in) {
  Mapped out;
  const std::string& s = in.s;
  bool line_start = true;
  for (size_t i = 0; i < s.size();) {
    if (line_start) {
      line_start = false;
      size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      if (j + 1 < s.size() && s[j] == '{' &&
          (s[j + 1] == '#' || s[j + 1] == '%' || s[j + 1] == '-')) {
        i = j;
      }
      continue;
    }
    const size_t t = LineTerminatorLen(s, i);
    if (t > 0) {
      out.AddRange(in, i, i + t);
      i += t;
      line_start = true;
    } else {
      out.Add(in, i++);
    }
  }
  out.Close(in, s.size());
  return out;
}

// trim_blocks: /([#%-]})\n/g -> "$1".
Mapped TrimBlocks(const Mapped& in) {
  Mapped out;
  const std::string& s = in.s;
  for (size_t i = 0; i < s.size();) {
    if (i + 2 < s.size() && (s[i] == '#' || s[i] == '%' || s[i] == '-') && s[i + 1] == '}' &&
        s[i + 2] == '\n') {
      out.AddRange(in, i, i + 2);
      i += 3;
    } else {
      out.Add(in, i++);
    }
  }
  out.Close(in, s.size());
  return out;
}

// {% generation %} / {% endgeneration %} (transformers' assistant-mask markers) are removed
// before tokenizing, with their whitespace control, as the oracle does:
// /{%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs.
Mapped StripGenerationTags(const Mapped& in) {
  const std::string& s = in.s;
  Mapped out;
  size_t last = 0;
  size_t i = 0;
  while ((i = s.find("{%", i)) != std::string::npos) {
    size_t k = i + 2;
    const bool lstrip = k < s.size() && s[k] == '-';
    if (lstrip) ++k;
    for (size_t n; (n = WhitespaceLenAt(s, k)) > 0;) k += n;
    absl::string_view rest(s.data() + k, s.size() - k);
    if (absl::StartsWith(rest, "endgeneration")) {
      k += 13;
    } else if (absl::StartsWith(rest, "generation")) {
      k += 10;
    } else {
      i += 1;
      continue;
    }
    for (size_t n; (n = WhitespaceLenAt(s, k)) > 0;) k += n;
    const bool rstrip = k < s.size() && s[k] == '-';
    if (rstrip) ++k;
    if (k + 1 >= s.size() || s[k] != '%' || s[k + 1] != '}') {
      i += 1;
      continue;
    }
    k += 2;
    const size_t after_begin = k;
    for (size_t n; (n = WhitespaceLenAt(s, k)) > 0;) k += n;
    size_t end = i;
    if (lstrip) {
      absl::string_view before(s.data() + last, end - last);
      end = last + TrimJs(before, false, true).size();
    }
    out.AddRange(in, last, end);
    if (!rstrip) out.AddRange(in, after_begin, k);
    last = k;
    i = k;
  }
  out.AddRange(in, last, s.size());
  out.Close(in, s.size());
  return out;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) || c == '_';
}
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(Mapped m) : m_(std::move(m)), src_(m_.s), n_(src_.size()) {}

  std::vector<Token> Run() {
    while (cur_ < n_) Step();
    return std::move(tokens_);
  }

 private:
  Mapped m_;
  const std::string& src_;
  const size_t n_;
  size_t cur_ = 0;
  int curly_depth_ = 0;
  std::vector<Token> tokens_;

  char At(size_t i) const { return i < n_ ? src_[i] : '\0'; }
  int64_t Pos(size_t i) const { return m_.pos[i < n_ ? i : n_]; }
  [[noreturn]] void FailAt(size_t i, std::string msg) const { Fail(Pos(i), std::move(msg)); }

  void Push(Tok t, std::string value, size_t at) {
    tokens_.push_back({t, std::move(value), Pos(at)});
  }

  // The oracle's consumeWhile: running into the end of the input is an error.
  template <typename Pred>
  std::string ConsumeWhile(Pred pred) {
    const size_t start = cur_;
    while (cur_ < n_ && pred(src_[cur_])) {
      if (++cur_ >= n_) FailAt(cur_, "unexpected end of template inside a tag");
    }
    return src_.substr(start, cur_ - start);
  }
  void ConsumeWhitespace() {
    for (size_t len; (len = WhitespaceLenAt(src_, cur_)) > 0;) {
      cur_ += len;
      if (cur_ >= n_) FailAt(cur_, "unexpected end of template inside a tag");
    }
  }
  void SkipLeadingWhitespace() {
    for (size_t len; cur_ < n_ && (len = WhitespaceLenAt(src_, cur_)) > 0;) cur_ += len;
  }
  void StripTrailingWhitespace() {
    if (!tokens_.empty() && tokens_.back().type == Tok::kText) {
      Token& t = tokens_.back();
      t.value.resize(TrimJs(t.value, false, true).size());
      if (t.value.empty()) tokens_.pop_back();
    }
  }

  std::string ConsumeString(char quote, size_t open_at) {
    std::string str;
    uint32_t pending_high = 0;  // a \uD800-\uDBFF escape waiting for its low half
    auto flush = [&] {
      if (pending_high) AppendUtf8(0xFFFD, &str);
      pending_high = 0;
    };
    size_t start = cur_;
    while (true) {
      if (cur_ >= n_) FailAt(open_at, "unterminated string literal");
      const char c = src_[cur_];
      if (c == quote) break;
      ++cur_;
      if (c != '\\') continue;
      if (cur_ - 1 > start) flush();
      str.append(src_, start, cur_ - 1 - start);
      if (cur_ >= n_) FailAt(open_at, "unterminated string literal");
      const size_t esc_at = cur_;
      const char e = src_[cur_++];
      if (e == 'x' || e == 'u') {
        const size_t len = e == 'x' ? 2 : 4;
        uint32_t unit = 0;
        bool ok = cur_ + len <= n_;
        for (size_t k = 0; ok && k < len; ++k) {
          const int h = HexValue(src_[cur_ + k]);
          ok = h >= 0;
          unit = unit * 16 + static_cast<uint32_t>(h < 0 ? 0 : h);
        }
        if (!ok) {
          FailAt(esc_at - 1, absl::StrCat("invalid escape sequence '\\", std::string(1, e),
                                          src_.substr(cur_, std::min(len, n_ - cur_)),
                                          "' (expected ", len, " hex digits)"));
        }
        cur_ += len;
        if (unit >= 0xD800 && unit <= 0xDBFF) {
          flush();
          pending_high = unit;
        } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
          if (pending_high) {
            AppendUtf8(0x10000 + ((pending_high - 0xD800) << 10) + (unit - 0xDC00), &str);
            pending_high = 0;
          } else {
            AppendUtf8(0xFFFD, &str);
          }
        } else {
          flush();
          AppendUtf8(unit, &str);
        }
      } else {
        flush();
        switch (e) {
          case 'n':
            str.push_back('\n');
            break;
          case 't':
            str.push_back('\t');
            break;
          case 'r':
            str.push_back('\r');
            break;
          case 'b':
            str.push_back('\b');
            break;
          case 'f':
            str.push_back('\f');
            break;
          case 'v':
            str.push_back('\v');
            break;
          case '\'':
          case '"':
          case '\\':
            str.push_back(e);
            break;
          default:
            FailAt(esc_at - 1, absl::StrCat("unknown escape sequence '\\", std::string(1, e),
                                            "' in a string literal"));
        }
      }
      start = cur_;
    }
    if (cur_ > start) flush();
    str.append(src_, start, cur_ - start);
    flush();
    return str;
  }

  void Step() {
    const bool have_last = !tokens_.empty();
    const Tok last = have_last ? tokens_.back().type : Tok::kText;
    if (!have_last || last == Tok::kCloseStmt || last == Tok::kCloseExpr || last == Tok::kComment) {
      size_t end = cur_;
      while (true) {
        end = src_.find('{', end);
        if (end == std::string::npos) {
          end = n_;
          break;
        }
        const char next = At(end + 1);
        if (next == '%' || next == '{' || next == '#') break;
        ++end;
      }
      if (end > cur_) {
        Push(Tok::kText, src_.substr(cur_, end - cur_), cur_);
        cur_ = end;
        return;
      }
    }
    if (src_[cur_] == '{') {
      const char next = At(cur_ + 1);
      if (next == '#') {
        const size_t open_at = cur_;
        cur_ += 2;
        const bool strip_before = At(cur_) == '-';
        if (strip_before) ++cur_;
        const size_t end = src_.find("#}", cur_);
        if (end == std::string::npos) FailAt(open_at, "comment '{#' is never closed with '#}'");
        std::string comment = src_.substr(cur_, end - cur_);
        const bool strip_after = !comment.empty() && comment.back() == '-';
        if (strip_after) comment.pop_back();
        if (strip_before) StripTrailingWhitespace();
        Push(Tok::kComment, std::move(comment), open_at);
        cur_ = end + 2;
        if (strip_after) SkipLeadingWhitespace();
        return;
      }
      if (At(cur_ + 2) == '-') {
        if (next == '%') {
          StripTrailingWhitespace();
          Push(Tok::kOpenStmt, "{%", cur_);
          cur_ += 3;
          return;
        }
        if (next == '{') {
          StripTrailingWhitespace();
          Push(Tok::kOpenExpr, "{{", cur_);
          curly_depth_ = 0;
          cur_ += 3;
          return;
        }
      }
    }
    ConsumeWhitespace();
    const char ch = src_[cur_];
    if (ch == '-' && At(cur_ + 2) == '}') {
      const char next = At(cur_ + 1);
      if (next == '%') {
        Push(Tok::kCloseStmt, "%}", cur_);
        cur_ += 3;
        SkipLeadingWhitespace();
        return;
      }
      if (next == '}') {
        Push(Tok::kCloseExpr, "}}", cur_);
        cur_ += 3;
        SkipLeadingWhitespace();
        return;
      }
    }
    if (ch == '-' || ch == '+') {
      if (!have_last || last == Tok::kText) {
        FailAt(cur_, absl::StrCat("unexpected character '", std::string(1, ch), "'"));
      }
      if (last != Tok::kIdent && last != Tok::kNumber && last != Tok::kString &&
          last != Tok::kCloseParen && last != Tok::kCloseSquare) {
        const size_t at = cur_;
        ++cur_;
        std::string num = ConsumeWhile(IsDigit);
        if (!num.empty() && At(cur_) == '.' && IsDigit(At(cur_ + 1))) {
          ++cur_;
          num += "." + ConsumeWhile(IsDigit);
        }
        if (num.empty()) {
          Push(Tok::kUnary, std::string(1, ch), at);
        } else {
          Push(Tok::kNumber, std::string(1, ch) + num, at);
        }
        return;
      }
    }
    if (MatchOperator()) return;
    if (ch == '\'' || ch == '"') {
      const size_t at = cur_;
      ++cur_;
      std::string s = ConsumeString(ch, at);
      Push(Tok::kString, std::move(s), at);
      ++cur_;
      return;
    }
    if (IsDigit(ch)) {
      const size_t at = cur_;
      std::string num = ConsumeWhile(IsDigit);
      if (last != Tok::kDot && At(cur_) == '.' && IsDigit(At(cur_ + 1))) {
        ++cur_;
        num += "." + ConsumeWhile(IsDigit);
      }
      Push(Tok::kNumber, std::move(num), at);
      return;
    }
    if (IsWordChar(ch)) {
      const size_t at = cur_;
      std::string word = ConsumeWhile(IsWordChar);
      Push(Tok::kIdent, std::move(word), at);
      return;
    }
    size_t j = cur_;
    const uint32_t cp = DecodeUtf8(src_, &j);
    std::string shown;
    AppendUtf8(cp, &shown);
    FailAt(cur_, absl::StrCat("unexpected character '", shown, "' inside a tag"));
  }

  bool Match(const char* seq, Tok type) {
    const size_t len = std::char_traits<char>::length(seq);
    if (src_.compare(cur_, len, seq) != 0) return false;
    Push(type, seq, cur_);
    if (type == Tok::kOpenExpr) {
      curly_depth_ = 0;
    } else if (type == Tok::kOpenCurly) {
      ++curly_depth_;
    } else if (type == Tok::kCloseCurly) {
      --curly_depth_;
    }
    cur_ += len;
    return true;
  }

  // The oracle's ordered operator table.
  bool MatchOperator() {
    switch (src_[cur_]) {
      case '{':
        return Match("{%", Tok::kOpenStmt) || Match("{{", Tok::kOpenExpr) ||
               Match("{", Tok::kOpenCurly);
      case '%':
        return Match("%}", Tok::kCloseStmt) || Match("%", Tok::kMultiplicative);
      case '}':
        return (curly_depth_ <= 0 && Match("}}", Tok::kCloseExpr)) || Match("}", Tok::kCloseCurly);
      case '(':
        return Match("(", Tok::kOpenParen);
      case ')':
        return Match(")", Tok::kCloseParen);
      case '[':
        return Match("[", Tok::kOpenSquare);
      case ']':
        return Match("]", Tok::kCloseSquare);
      case ',':
        return Match(",", Tok::kComma);
      case '.':
        return Match(".", Tok::kDot);
      case ':':
        return Match(":", Tok::kColon);
      case '|':
        return Match("|", Tok::kPipe);
      case '<':
        return Match("<=", Tok::kComparison) || Match("<", Tok::kComparison);
      case '>':
        return Match(">=", Tok::kComparison) || Match(">", Tok::kComparison);
      case '=':
        return Match("==", Tok::kComparison) || Match("=", Tok::kEquals);
      case '!':
        return Match("!=", Tok::kComparison);
      case '+':
        return Match("+", Tok::kAdditive);
      case '-':
        return Match("-", Tok::kAdditive);
      case '~':
        return Match("~", Tok::kAdditive);
      case '*':
        return Match("**", Tok::kPower) || Match("*", Tok::kMultiplicative);
      case '/':
        return Match("//", Tok::kMultiplicative) || Match("/", Tok::kMultiplicative);
      default:
        return false;
    }
  }
};

}  // namespace

std::vector<Token> Tokenize(absl::string_view source, const Options& options) {
  Mapped m;
  m.s.assign(source.data(), source.size());
  m.pos.resize(source.size() + 1);
  for (size_t i = 0; i <= source.size(); ++i) m.pos[i] = static_cast<int64_t>(i);
  if (!m.s.empty() && m.s.back() == '\n') {
    m.s.pop_back();
    m.pos.pop_back();
  }
  if (options.lstrip_blocks) m = LstripBlocks(m);
  if (options.trim_blocks) m = TrimBlocks(m);
  m = StripGenerationTags(m);
  return Lexer(std::move(m)).Run();
}

}  // namespace st::jinja::internal
