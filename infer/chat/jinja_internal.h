// Jinja internals shared by the lexer, parser and interpreter: tokens, the syntax tree, run-time
// values, the JavaScript-compatible string/number/JSON helpers, and the private error type that
// unwinds to Template::Parse / Template::Render (it never leaves the library).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "infer/chat/jinja.h"
#include "infer/tokenizer/bpe.h"

namespace st::jinja::internal {

// ---- errors: thrown inside the library, caught by Parse / Render and turned into a Status.

struct JinjaError {
  int64_t pos;  // byte offset in the original source, -1 = unknown
  std::string message;
};
[[noreturn]] void Fail(int64_t pos, std::string message);

// ---- lexer

enum class Tok : uint8_t {
  kText,
  kNumber,
  kString,
  kIdent,
  kEquals,
  kOpenParen,
  kCloseParen,
  kOpenStmt,
  kCloseStmt,
  kOpenExpr,
  kCloseExpr,
  kOpenSquare,
  kCloseSquare,
  kOpenCurly,
  kCloseCurly,
  kComma,
  kDot,
  kColon,
  kPipe,
  kAdditive,        // + - ~
  kMultiplicative,  // * / // %
  kPower,           // **
  kComparison,      // < > <= >= == !=
  kUnary,           // + - before an operand
  kComment,
};
const char* TokName(Tok t);

struct Token {
  Tok type;
  std::string value;
  int64_t pos;  // byte offset in the original source
};

// The oracle's preprocessing (trailing newline, lstrip_blocks, trim_blocks, generation tags)
// followed by tokenization. Throws JinjaError.
std::vector<Token> Tokenize(absl::string_view source, const Options& options);

// ---- syntax tree

enum class N : uint8_t {
  // statements
  kText,
  kComment,
  kIf,   // clauses: conds[i] -> bodies[i]; else body in `body2`
  kFor,  // a: target, b: iterable, c: filter (or null); body, body2 (else)
  kBreak,
  kContinue,
  kSet,          // a: target, b: value (or null: block set, body)
  kMacro,        // str: name; args: parameters; body
  kCallBlock,    // a: call expression; args: caller parameters; body
  kFilterBlock,  // a: filter (identifier or call); body
  // expressions
  kIdent,
  kInt,
  kFloat,
  kString,
  kArray,     // args
  kTuple,     // args
  kObject,    // args: keys, body-less pairs in args2 (values)
  kBinary,    // str: operator; a, b
  kUnary,     // str: operator; a
  kMember,    // a: object; b: property; flag: computed
  kCall,      // a: callee; args
  kFilter,    // a: operand; b: filter (identifier or call)
  kTest,      // a: operand; str: test name; flag: negated
  kSelect,    // a: value; b: condition (`a if b` without else)
  kTernary,   // a: condition; b: true; c: false
  kSlice,     // a, b, c: start, stop, step (each may be null)
  kKwArg,     // str: name; a: value
  kSpread,    // a
  kKwSpread,  // a
};

struct Node {
  N type;
  int64_t pos = -1;
  std::string str;
  double num = 0;
  bool flag = false;
  int depth = 1;
  int special = 0;  // kMacro, kCallBlock: kUses* bits of the special names the body reads
  std::unique_ptr<Node> a, b, c;
  std::vector<std::unique_ptr<Node>> args, args2;
  std::vector<std::unique_ptr<Node>> body, body2;
  std::vector<std::unique_ptr<Node>> conds;                // kIf
  std::vector<std::vector<std::unique_ptr<Node>>> bodies;  // kIf
};

constexpr int kUsesCaller = 1, kUsesKwargs = 2, kUsesVarargs = 4;

struct Program {
  std::string source;  // the original text (line/column of errors)
  Options options;
  std::vector<std::unique_ptr<Node>> body;
};

// Throws JinjaError.
std::vector<std::unique_ptr<Node>> ParseTokens(std::vector<Token> tokens, int64_t end_pos);

// Nesting limits (syntax tree depth; evaluation depth including macro calls).
constexpr int kMaxTreeDepth = 200;
constexpr int kMaxParseRecursion = 400;
constexpr int kMaxEvalDepth = 600;

// ---- run-time values

enum class Kind : uint8_t {
  kUndefined,
  kNull,
  kBool,
  kInt,
  kFloat,
  kString,
  kArray,
  kObject,
  kNamespace,
  kFunction,
};

struct Value;
struct Array;
struct Object;
struct Function;

struct Value {
  Kind kind = Kind::kUndefined;
  bool b = false;           // kBool
  double num = 0;           // kInt, kFloat (integers are doubles, as in JavaScript)
  std::shared_ptr<void> p;  // std::string (kString), Array, Object (kObject, kNamespace), Function

  static Value Undefined() { return Value(); }
  static Value Null() {
    Value v;
    v.kind = Kind::kNull;
    return v;
  }
  static Value Bool(bool x) {
    Value v;
    v.kind = Kind::kBool;
    v.b = x;
    return v;
  }
  static Value Int(double x) {
    Value v;
    v.kind = Kind::kInt;
    v.num = x;
    return v;
  }
  static Value Float(double x) {
    Value v;
    v.kind = Kind::kFloat;
    v.num = x;
    return v;
  }
  // Int when x is integral (as JavaScript's Number.isInteger), else Float.
  static Value Number(double x);
  static Value Str(std::string s);
  static Value MakeArray(std::vector<Value> items, bool tuple = false);
  static Value MakeObject(bool kwargs = false);
  static Value MakeNamespace();
  static Value MakeFunction(std::string name,
                            std::function<Value(std::vector<Value>& args, void* call_env)> fn);

  bool IsNumber() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  bool IsNumericLike() const { return IsNumber() || kind == Kind::kBool; }
  bool IsString() const { return kind == Kind::kString; }
  bool IsArray() const { return kind == Kind::kArray; }
  bool IsTuple() const;
  bool IsObject() const { return kind == Kind::kObject; }  // dicts, loop, keyword arguments
  bool IsKwargs() const;
  bool IsAttrContainer() const { return kind == Kind::kObject || kind == Kind::kNamespace; }
  double NumericValue() const { return kind == Kind::kBool ? (b ? 1 : 0) : num; }

  const std::string& s() const { return *static_cast<const std::string*>(p.get()); }
  Array& arr() const { return *static_cast<Array*>(p.get()); }
  Object& obj() const { return *static_cast<Object*>(p.get()); }
  Function& fn() const { return *static_cast<Function*>(p.get()); }
};

struct Array {
  std::vector<Value> items;
  bool tuple = false;
};

// An insertion-ordered map (a JavaScript Map): setting an existing key keeps its position.
struct Object {
  std::vector<std::pair<std::string, Value>> entries;
  bool kwargs = false;  // the keyword arguments passed to a function

  const Value* Find(absl::string_view key) const;
  void Set(const std::string& key, Value v);
  bool Erase(absl::string_view key);

 private:
  std::unordered_map<std::string, size_t> index_;  // built once there are many entries
  void Reindex();
};

struct Function {
  std::string name;
  // args: positional values, then (when keyword arguments were given) one kwargs Object.
  // call_env: the Env of the call site (macros look for `caller` there).
  std::function<Value(std::vector<Value>& args, void* call_env)> call;
};

// Type names in error messages, as the oracle spells them ("StringValue", ...).
const char* TypeName(const Value& v);

// JavaScript truthiness of the oracle (__bool__): empty string/list/dict, 0, NaN, none,
// undefined are false; a namespace is always true.
bool Truthy(const Value& v);

// ---- JavaScript-compatible helpers (jinja_value.cpp)

std::string JsNumberToString(double x);  // Number.prototype.toString()
std::string FloatToString(double x);     // the oracle's FloatValue.toString(): 2.0 -> "2.0"
// String(v.value) as the oracle uses it for `~` and `+` on strings.
std::string JsRawString(const Value& v, int64_t pos);
// The oracle's RuntimeValue.toString(): what `{{ v }}` prints for a non-none value.
std::string RenderString(const Value& v, int64_t pos);
// JavaScript loose equality of the values' raw .value (the oracle's == and !=).
bool LooseEquals(const Value& a, const Value& b);
// Strict equality of raw values (the oracle's `in` on lists, equalto, unique).
bool StrictEquals(const Value& a, const Value& b);

struct JsonOptions {
  int64_t indent = 0;  // 0 = compact
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_separators = false;
  std::string item_sep, key_sep;
};
// The oracle's toJSON: throws JinjaError (at pos) for functions and tuples.
void ToJson(const Value& v, const JsonOptions& o, int depth, bool undefined_to_null, int64_t pos,
            int64_t max_bytes, std::string* out);
void JsonQuote(absl::string_view s, bool ensure_ascii, std::string* out);

// UTF-8 / UTF-16 helpers. Invalid UTF-8 bytes decode as U+FFFD, one byte each.
uint32_t DecodeUtf8(absl::string_view s, size_t* i);
using ::st::AppendUtf8;  // infer/tokenizer/bpe.h (surrogates become U+FFFD)
bool IsJsWhitespace(uint32_t cp);
// Byte length of the JavaScript whitespace character at s[i], 0 when there is none.
size_t WhitespaceLenAt(absl::string_view s, size_t i);
absl::string_view TrimJs(absl::string_view s, bool left, bool right);
int64_t Utf16Length(absl::string_view s);
std::vector<std::string> CodePoints(absl::string_view s);  // Array.from(string)
std::string JsUpper(absl::string_view s);
std::string JsLower(absl::string_view s);
double JsStringToNumber(absl::string_view s);  // Number(string); NaN when not a number
std::optional<double> JsParseInt(absl::string_view s);
std::optional<double> JsParseFloat(absl::string_view s);

}  // namespace st::jinja::internal
