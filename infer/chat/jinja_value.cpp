// Jinja run-time values and the JavaScript-compatible helpers they need: number formatting as
// Number.prototype.toString, loose/strict equality, JSON.stringify-style output, UTF-8/UTF-16
// string handling and case mapping.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "infer/chat/jinja_internal.h"

namespace st::jinja::internal {

void Fail(int64_t pos, std::string message) { throw JinjaError{pos, std::move(message)}; }

// ---- values

Value Value::Number(double x) {
  return (std::isfinite(x) && std::trunc(x) == x) ? Int(x) : Float(x);
}

Value Value::Str(std::string s) {
  Value v;
  v.kind = Kind::kString;
  v.p = std::make_shared<std::string>(std::move(s));
  return v;
}

Value Value::MakeArray(std::vector<Value> items, bool tuple) {
  Value v;
  v.kind = Kind::kArray;
  auto a = std::make_shared<Array>();
  a->items = std::move(items);
  a->tuple = tuple;
  v.p = std::move(a);
  return v;
}

Value Value::MakeObject(bool kwargs) {
  Value v;
  v.kind = Kind::kObject;
  auto o = std::make_shared<Object>();
  o->kwargs = kwargs;
  v.p = std::move(o);
  return v;
}

Value Value::MakeNamespace() {
  Value v;
  v.kind = Kind::kNamespace;
  v.p = std::make_shared<Object>();
  return v;
}

Value Value::MakeFunction(std::string name,
                          std::function<Value(std::vector<Value>& args, void* call_env)> fn) {
  Value v;
  v.kind = Kind::kFunction;
  auto f = std::make_shared<Function>();
  f->name = std::move(name);
  f->call = std::move(fn);
  v.p = std::move(f);
  return v;
}

bool Value::IsTuple() const { return kind == Kind::kArray && arr().tuple; }
bool Value::IsKwargs() const { return kind == Kind::kObject && obj().kwargs; }

const Value* Object::Find(absl::string_view key) const {
  if (!index_.empty()) {
    auto it = index_.find(std::string(key));
    return it == index_.end() ? nullptr : &entries[it->second].second;
  }
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Object::Reindex() {
  index_.clear();
  if (entries.size() < 16) return;
  for (size_t i = 0; i < entries.size(); ++i) index_[entries[i].first] = i;
}

void Object::Set(const std::string& key, Value v) {
  if (const Value* found = Find(key)) {
    *const_cast<Value*>(found) = std::move(v);
    return;
  }
  entries.emplace_back(key, std::move(v));
  if (!index_.empty()) {
    index_[key] = entries.size() - 1;
  } else if (entries.size() == 16) {
    Reindex();
  }
}

bool Object::Erase(absl::string_view key) {
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].first == key) {
      entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(i));
      Reindex();
      return true;
    }
  }
  return false;
}

const char* TypeName(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
      return "UndefinedValue";
    case Kind::kNull:
      return "NullValue";
    case Kind::kBool:
      return "BooleanValue";
    case Kind::kInt:
      return "IntegerValue";
    case Kind::kFloat:
      return "FloatValue";
    case Kind::kString:
      return "StringValue";
    case Kind::kArray:
      return v.arr().tuple ? "TupleValue" : "ArrayValue";
    case Kind::kObject:
      return v.obj().kwargs ? "KeywordArgumentsValue" : "ObjectValue";
    case Kind::kNamespace:
      return "NamespaceValue";
    case Kind::kFunction:
      return "FunctionValue";
  }
  return "RuntimeValue";
}

bool Truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return false;
    case Kind::kBool:
      return v.b;
    case Kind::kInt:
    case Kind::kFloat:
      return v.num != 0 && !std::isnan(v.num);
    case Kind::kString:
      return !v.s().empty();
    case Kind::kArray:
      return !v.arr().items.empty();
    case Kind::kObject:
      return !v.obj().entries.empty();
    case Kind::kNamespace:
    case Kind::kFunction:
      return true;
  }
  return false;
}

// ---- numbers

std::string JsNumberToString(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x == 0) return "0";
  std::string sign = x < 0 ? "-" : "";
  const double ax = std::fabs(x);
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof(buf), "%.*e", p - 1, ax);
    if (std::strtod(buf, nullptr) == ax) break;
  }
  // buf is "d.ddde+XX" or "de+XX".
  std::string digits;
  const char* e = std::strchr(buf, 'e');
  for (const char* c = buf; c < e; ++c) {
    if (*c != '.') digits.push_back(*c);
  }
  const int exp10 = std::atoi(e + 1);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;
  if (k <= n && n <= 21) return sign + digits + std::string(n - k, '0');
  if (0 < n && n <= 21) return sign + digits.substr(0, n) + "." + digits.substr(n);
  if (-6 < n && n <= 0) return sign + "0." + std::string(-n, '0') + digits;
  const std::string exp = n - 1 >= 0 ? absl::StrCat("e+", n - 1) : absl::StrCat("e-", 1 - n);
  if (k == 1) return sign + digits + exp;
  return sign + digits.substr(0, 1) + "." + digits.substr(1) + exp;
}

std::string FloatToString(double x) {
  if (x == 0 && std::signbit(x)) return "-0.0";
  if (std::isfinite(x) && std::trunc(x) == x && std::fabs(x) < 1e21) {
    char buf[400];
    std::snprintf(buf, sizeof(buf), "%.1f", x);
    return buf;
  }
  return JsNumberToString(x);
}

namespace {

absl::string_view StripJsWhitespace(absl::string_view s) { return TrimJs(s, true, true); }

bool AllDigits(absl::string_view s, int base) {
  if (s.empty()) return false;
  for (char c : s) {
    int d = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'z') ? c - 'a' + 10
            : (c >= 'A' && c <= 'Z') ? c - 'A' + 10
                                     : 99;
    if (d >= base) return false;
  }
  return true;
}

// Length of the longest prefix of s that is a StrDecimalLiteral without sign (digits, optional
// fraction, optional exponent; or "Infinity"); 0 when none.
size_t DecimalPrefix(absl::string_view s) {
  if (absl::StartsWith(s, "Infinity")) return 8;
  size_t i = 0, int_digits = 0, frac_digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++int_digits;
  if (i < s.size() && s[i] == '.') {
    size_t j = i + 1;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j, ++frac_digits;
    if (int_digits + frac_digits > 0) i = j;
  }
  if (int_digits + frac_digits == 0) return 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    size_t exp_digits = 0;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j, ++exp_digits;
    if (exp_digits > 0) i = j;
  }
  return i;
}

double ParseDecimal(absl::string_view s, bool negative) {
  double v;
  if (absl::StartsWith(s, "Infinity")) {
    v = HUGE_VAL;
  } else {
    v = std::strtod(std::string(s).c_str(), nullptr);
  }
  return negative ? -v : v;
}

}  // namespace

double JsStringToNumber(absl::string_view str) {
  absl::string_view s = StripJsWhitespace(str);
  if (s.empty()) return 0;
  if (s.size() > 2 && s[0] == '0') {
    const char p = s[1];
    const int base = (p == 'x' || p == 'X')   ? 16
                     : (p == 'o' || p == 'O') ? 8
                     : (p == 'b' || p == 'B') ? 2
                                              : 0;
    if (base != 0) {
      absl::string_view d = s.substr(2);
      if (!AllDigits(d, base)) return NAN;
      double v = 0;
      for (char c : d) {
        int x = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'z') ? c - 'a' + 10
                                         : c - 'A' + 10;
        v = v * base + x;
      }
      return v;
    }
  }
  bool negative = false;
  if (s[0] == '+' || s[0] == '-') {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  const size_t n = DecimalPrefix(s);
  if (n == 0 || n != s.size()) return NAN;
  return ParseDecimal(s, negative);
}

std::optional<double> JsParseInt(absl::string_view str) {
  absl::string_view s = TrimJs(str, true, false);
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0) return std::nullopt;
  double v = std::strtod(std::string(s.substr(0, n)).c_str(), nullptr);
  return negative ? -v : v;
}

std::optional<double> JsParseFloat(absl::string_view str) {
  absl::string_view s = TrimJs(str, true, false);
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  const size_t n = DecimalPrefix(s);
  if (n == 0) return std::nullopt;
  return ParseDecimal(s.substr(0, n), negative);
}

// ---- strings

uint32_t DecodeUtf8(absl::string_view s, size_t* i) {
  const auto b0 = static_cast<unsigned char>(s[*i]);
  if (b0 < 0x80) {
    ++*i;
    return b0;
  }
  int len = 0;
  uint32_t cp = 0, min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    ++*i;
    return 0xFFFD;
  }
  if (*i + len > s.size()) {
    ++*i;
    return 0xFFFD;
  }
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[*i + k]);
    if ((b & 0xC0) != 0x80) {
      ++*i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++*i;
    return 0xFFFD;
  }
  *i += len;
  return cp;
}

bool IsJsWhitespace(uint32_t c) {
  if (c <= 32) return c == 32 || (c >= 9 && c <= 13);
  return c == 160 || c == 5760 || (c >= 8192 && c <= 8202) || c == 8232 || c == 8233 || c == 8239 ||
         c == 8287 || c == 12288 || c == 65279;
}

size_t WhitespaceLenAt(absl::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  size_t j = i;
  const uint32_t cp = DecodeUtf8(s, &j);
  return IsJsWhitespace(cp) && !(cp == 0xFFFD) ? j - i : 0;
}

absl::string_view TrimJs(absl::string_view s, bool left, bool right) {
  if (left) {
    size_t n;
    while ((n = WhitespaceLenAt(s, 0)) > 0) s.remove_prefix(n);
  }
  if (right) {
    while (!s.empty()) {
      // The last code point starts at most 3 bytes before the end.
      size_t start = s.size() - 1;
      while (start > 0 && s.size() - start < 4 &&
             (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) {
        --start;
      }
      size_t j = start;
      const uint32_t cp = DecodeUtf8(s, &j);
      if (j != s.size() || !IsJsWhitespace(cp)) break;
      s.remove_suffix(s.size() - start);
    }
  }
  return s;
}

int64_t Utf16Length(absl::string_view s) {
  int64_t n = 0;
  for (size_t i = 0; i < s.size();) n += DecodeUtf8(s, &i) >= 0x10000 ? 2 : 1;
  return n;
}

std::vector<std::string> CodePoints(absl::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = DecodeUtf8(s, &i);
    if (cp == 0xFFFD && i - start == 1 && static_cast<unsigned char>(s[start]) >= 0x80) {
      out.emplace_back("\xEF\xBF\xBD");
    } else {
      out.emplace_back(s.substr(start, i - start));
    }
  }
  return out;
}

namespace {

// Simple case mapping for Latin, Greek, Cyrillic, Armenian and full-width forms. Returns the
// code point unchanged when it has no mapping here.
uint32_t ToUpperCp(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (c == 0xB5) return 0x39C;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x100 && c <= 0x17F) {
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) {
      return (c & 1) ? c - 1 : c;
    }
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c : c - 1;
    return c;
  }
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c == 0x3AC) return 0x386;
  if (c >= 0x3AD && c <= 0x3AF) return c - 37;
  if (c == 0x3CC) return 0x38C;
  if (c == 0x3CD || c == 0x3CE) return c - 63;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF)) return (c & 1) ? c - 1 : c;
  if (c >= 0x561 && c <= 0x586) return c - 48;
  if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
  return c;
}

uint32_t ToLowerCp(uint32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F) {
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) {
      return (c & 1) ? c : c + 1;
    }
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c + 1 : c;
    return c;
  }
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF)) return (c & 1) ? c : c + 1;
  if (c >= 0x531 && c <= 0x556) return c + 48;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

}  // namespace

std::string JsUpper(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = DecodeUtf8(s, &i);
    if (cp == 0xDF) {
      out += "SS";
    } else if (cp == 0xFFFD && i - start == 1) {
      out.append(s.data() + start, 1);  // keep invalid bytes as they are
    } else {
      AppendUtf8(ToUpperCp(cp), &out);
    }
  }
  return out;
}

std::string JsLower(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = DecodeUtf8(s, &i);
    if (cp == 0x130) {
      out += "i\xCC\x87";
    } else if (cp == 0xFFFD && i - start == 1) {
      out.append(s.data() + start, 1);
    } else {
      AppendUtf8(ToLowerCp(cp), &out);
    }
  }
  return out;
}

// ---- string forms and equality

std::string RenderString(const Value& v, int64_t pos) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return "undefined";
    case Kind::kBool:
      return v.b ? "true" : "false";
    case Kind::kInt:
      return JsNumberToString(v.num);
    case Kind::kFloat:
      return FloatToString(v.num);
    case Kind::kString:
      return v.s();
    case Kind::kArray:
    case Kind::kObject:
    case Kind::kNamespace: {
      std::string out;
      ToJson(v, JsonOptions(), 0, /*undefined_to_null=*/false, pos, INT64_MAX, &out);
      return out;
    }
    case Kind::kFunction:
      return absl::StrCat("[function ", v.fn().name, "]");
  }
  return "";
}

std::string JsRawString(const Value& v, int64_t pos) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return "undefined";
    case Kind::kBool:
      return v.b ? "true" : "false";
    case Kind::kInt:
    case Kind::kFloat:
      return JsNumberToString(v.num);
    case Kind::kString:
      return v.s();
    case Kind::kArray: {
      std::string out;
      const auto& items = v.arr().items;
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        out += RenderString(items[i], pos);
      }
      return out;
    }
    case Kind::kObject:
    case Kind::kNamespace:
      return "[object Map]";
    case Kind::kFunction:
      return absl::StrCat("[function ", v.fn().name, "]");
  }
  return "";
}

namespace {
bool IsRawUndefined(const Value& v) { return v.kind == Kind::kUndefined || v.kind == Kind::kNull; }
bool IsHeap(const Value& v) {
  return v.kind == Kind::kArray || v.kind == Kind::kObject || v.kind == Kind::kNamespace ||
         v.kind == Kind::kFunction;
}
double ToNumberLoose(const Value& v) {
  if (v.kind == Kind::kBool) return v.b ? 1 : 0;
  if (v.kind == Kind::kString) return JsStringToNumber(v.s());
  return v.num;
}
}  // namespace

bool LooseEquals(const Value& a, const Value& b) {
  if (IsRawUndefined(a) || IsRawUndefined(b)) return IsRawUndefined(a) && IsRawUndefined(b);
  if (IsHeap(a) && IsHeap(b)) return a.p == b.p;
  if (IsHeap(a) || IsHeap(b)) {
    const Value& o = IsHeap(a) ? a : b;
    const Value& prim = IsHeap(a) ? b : a;
    if (o.kind == Kind::kFunction) return false;
    std::string os;
    try {
      os = JsRawString(o, -1);
    } catch (const JinjaError&) {
      return false;
    }
    return LooseEquals(Value::Str(std::move(os)), prim);
  }
  if (a.kind == Kind::kBool && b.kind == Kind::kBool) return a.b == b.b;
  if (a.IsString() && b.IsString()) return a.s() == b.s();
  return ToNumberLoose(a) == ToNumberLoose(b);
}

bool StrictEquals(const Value& a, const Value& b) {
  if (IsRawUndefined(a) || IsRawUndefined(b)) return IsRawUndefined(a) && IsRawUndefined(b);
  if (a.IsNumber() && b.IsNumber()) return a.num == b.num;
  if (a.kind != b.kind) return IsHeap(a) && IsHeap(b) && a.p == b.p;
  switch (a.kind) {
    case Kind::kBool:
      return a.b == b.b;
    case Kind::kString:
      return a.s() == b.s();
    default:
      return a.p == b.p;
  }
}

// ---- JSON

void JsonQuote(absl::string_view s, bool ensure_ascii, std::string* out) {
  static const char kHex[] = "0123456789abcdef";
  auto unicode_escape = [&](uint32_t unit) {
    out->append("\\u");
    out->push_back(kHex[(unit >> 12) & 15]);
    out->push_back(kHex[(unit >> 8) & 15]);
    out->push_back(kHex[(unit >> 4) & 15]);
    out->push_back(kHex[unit & 15]);
  };
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      switch (c) {
        case '"':
          out->append("\\\"");
          break;
        case '\\':
          out->append("\\\\");
          break;
        case '\b':
          out->append("\\b");
          break;
        case '\f':
          out->append("\\f");
          break;
        case '\n':
          out->append("\\n");
          break;
        case '\r':
          out->append("\\r");
          break;
        case '\t':
          out->append("\\t");
          break;
        default:
          if (c < 0x20 || (ensure_ascii && c == 0x7F)) {
            unicode_escape(c);
          } else {
            out->push_back(static_cast<char>(c));
          }
      }
      continue;
    }
    const size_t start = i;
    const uint32_t cp = DecodeUtf8(s, &i);
    if (!ensure_ascii) {
      out->append(s.data() + start, i - start);
    } else if (cp >= 0x10000) {
      unicode_escape(0xD800 + ((cp - 0x10000) >> 10));
      unicode_escape(0xDC00 + ((cp - 0x10000) & 0x3FF));
    } else {
      unicode_escape(cp);
    }
  }
  out->push_back('"');
}

namespace {

// An approximation of String.prototype.localeCompare (ICU root collation) for sort_keys:
// punctuation and symbols < digits < letters; letters compare case-insensitively first, then
// lower case before upper case.
int CollationClass(uint32_t c) {
  if (c < 0x80) {
    if (c >= '0' && c <= '9') return 1;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 2;
    return 0;
  }
  return 3;
}

int LocaleCompare(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  int tertiary = 0;
  while (i < a.size() && j < b.size()) {
    const uint32_t ca = DecodeUtf8(a, &i), cb = DecodeUtf8(b, &j);
    const int ka = CollationClass(ca), kb = CollationClass(cb);
    if (ka != kb) return ka < kb ? -1 : 1;
    const uint32_t la = ToLowerCp(ca), lb = ToLowerCp(cb);
    if (la != lb) return la < lb ? -1 : 1;
    if (tertiary == 0 && ca != cb) tertiary = (ca == la) ? -1 : 1;  // lower case first
  }
  if (i < a.size()) return 1;
  if (j < b.size()) return -1;
  return tertiary;
}

constexpr int kMaxJsonDepth = 256;

}  // namespace

void ToJson(const Value& v, const JsonOptions& o, int depth, bool undefined_to_null, int64_t pos,
            int64_t max_bytes, std::string* out) {
  if (depth > kMaxJsonDepth) Fail(pos, "value nested too deeply to convert to JSON (a cycle?)");
  if (static_cast<int64_t>(out->size()) > max_bytes) {
    Fail(pos, absl::StrCat("output larger than the limit of ", max_bytes, " bytes"));
  }
  switch (v.kind) {
    case Kind::kNull:
      out->append("null");
      return;
    case Kind::kUndefined:
      out->append(undefined_to_null ? "null" : "undefined");
      return;
    case Kind::kBool:
      out->append(v.b ? "true" : "false");
      return;
    case Kind::kInt:
    case Kind::kFloat:
      out->append(std::isfinite(v.num) ? JsNumberToString(v.num) : "null");
      return;
    case Kind::kString:
      JsonQuote(v.s(), o.ensure_ascii, out);
      return;
    case Kind::kFunction:
      Fail(pos, "a function (macro or method) cannot be printed or converted to JSON; call it");
    case Kind::kArray:
    case Kind::kObject:
    case Kind::kNamespace:
      break;
  }
  if (v.IsTuple()) {
    Fail(pos,
         "a tuple (a, b) cannot be printed or converted to JSON (as in the oracle); use a list [a, "
         "b]");
  }
  if (v.IsKwargs()) Fail(pos, "keyword arguments cannot be printed or converted to JSON");
  std::string item_sep = ", ", key_sep = ": ";
  if (o.has_separators) {
    item_sep = o.item_sep;
    key_sep = o.key_sep;
  } else if (o.indent > 0) {
    item_sep = ",";
  }
  std::string base_padding, child_padding;
  if (o.indent > 0) {
    if ((depth + 1) * o.indent > max_bytes) {
      Fail(pos, absl::StrCat("output larger than the limit of ", max_bytes, " bytes"));
    }
    base_padding = "\n" + std::string(static_cast<size_t>(depth * o.indent), ' ');
    child_padding = base_padding + std::string(static_cast<size_t>(o.indent), ' ');
  }
  if (v.kind == Kind::kArray) {
    const auto& items = v.arr().items;
    out->push_back('[');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out->append(item_sep);
      if (o.indent > 0) out->append(child_padding);
      ToJson(items[i], o, depth + 1, undefined_to_null, pos, max_bytes, out);
    }
    if (o.indent > 0 && !items.empty()) out->append(base_padding);
    out->push_back(']');
    return;
  }
  const auto& entries = v.obj().entries;
  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (o.sort_keys) {
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      return LocaleCompare(entries[x].first, entries[y].first) < 0;
    });
  }
  out->push_back('{');
  for (size_t i = 0; i < order.size(); ++i) {
    if (i) out->append(item_sep);
    if (o.indent > 0) out->append(child_padding);
    JsonQuote(entries[order[i]].first, o.ensure_ascii, out);
    out->append(key_sep);
    ToJson(entries[order[i]].second, o, depth + 1, undefined_to_null, pos, max_bytes, out);
  }
  if (o.indent > 0 && !order.empty()) out->append(base_padding);
  out->push_back('}');
}

}  // namespace st::jinja::internal
