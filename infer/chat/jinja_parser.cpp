// Jinja parser: tokens -> syntax tree, with the oracle's grammar and operator precedence
// (ternary < or < and < not < comparison/in < + - ~ < * / // % < ** < is < | < unary sign <
// call/member), bounded nesting, and errors that point at the offending token.
#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "infer/chat/jinja_internal.h"

namespace st::jinja::internal {
namespace {

using NodePtr = std::unique_ptr<Node>;

NodePtr MakeNode(N type, int64_t pos) {
  auto n = std::make_unique<Node>();
  n->type = type;
  n->pos = pos;
  return n;
}

// Sets n->depth from its children and enforces the tree-depth limit.
NodePtr Finish(NodePtr n) {
  int d = 0;
  auto take = [&](const NodePtr& c) {
    if (c) d = std::max(d, c->depth);
  };
  take(n->a);
  take(n->b);
  take(n->c);
  for (const auto* list : {&n->args, &n->args2, &n->body, &n->body2, &n->conds}) {
    for (const auto& c : *list) take(c);
  }
  for (const auto& list : n->bodies) {
    for (const auto& c : list) take(c);
  }
  n->depth = d + 1;
  if (n->depth > kMaxTreeDepth) {
    Fail(n->pos, absl::StrCat("template nested too deeply (more than ", kMaxTreeDepth,
                              " levels of expressions and blocks)"));
  }
  return n;
}

// Where an expression starts: a.b(c).d starts at a.
int64_t StartPos(const Node* n) {
  while ((n->type == N::kMember || n->type == N::kCall) && n->a) n = n->a.get();
  return n->pos;
}

bool IsSpecialName(const std::string& s) {
  return s == "caller" || s == "kwargs" || s == "varargs";
}
int SpecialBit(const std::string& s) {
  return s == "caller" ? kUsesCaller : s == "kwargs" ? kUsesKwargs : kUsesVarargs;
}

// Which of caller / kwargs / varargs a macro (or call block) body reads without declaring them,
// visiting in the oracle's order.
class SpecialNames {
 public:
  int Run(const std::vector<NodePtr>& params, const std::vector<NodePtr>& body) {
    for (const auto& p : params) DeclareParam(*p);
    for (const auto& s : body) Visit(s.get());
    return accessed_;
  }

 private:
  std::set<std::string> declared_;
  int accessed_ = 0;

  void Declare(const std::string& name) {
    if (IsSpecialName(name)) declared_.insert(name);
  }
  void DeclareTarget(const Node* t) {
    if (!t) return;
    if (t->type == N::kIdent) {
      Declare(t->str);
    } else if (t->type == N::kTuple) {
      for (const auto& e : t->args) DeclareTarget(e.get());
    }
  }
  void DeclareParam(const Node& p) { Declare(p.str); }
  void VisitDefaults(const std::vector<NodePtr>& params) {
    for (const auto& p : params) {
      if (p->type == N::kKwArg) Visit(p->a.get());
    }
  }
  void VisitList(const std::vector<NodePtr>& list) {
    for (const auto& n : list) Visit(n.get());
  }
  void VisitFilter(const Node* f) {
    if (f && f->type == N::kCall) VisitList(f->args);
  }
  void Visit(const Node* n) {
    if (!n) return;
    switch (n->type) {
      case N::kFor:
        DeclareTarget(n->a.get());
        Visit(n->b.get());
        VisitList(n->body);
        VisitList(n->body2);
        Visit(n->c.get());
        return;
      case N::kSet:
        DeclareTarget(n->a.get());
        Visit(n->b.get());
        VisitList(n->body);
        return;
      case N::kMacro:
        for (const auto& p : n->args) DeclareParam(*p);
        VisitDefaults(n->args);
        VisitList(n->body);
        return;
      case N::kCallBlock:
        Visit(n->a.get());
        for (const auto& p : n->args) DeclareParam(*p);
        VisitDefaults(n->args);
        VisitList(n->body);
        return;
      case N::kFilterBlock:
        VisitList(n->body);
        VisitFilter(n->a.get());
        return;
      case N::kIdent:
        if (IsSpecialName(n->str) && !declared_.count(n->str)) accessed_ |= SpecialBit(n->str);
        return;
      case N::kMember:
        Visit(n->a.get());
        if (n->flag) Visit(n->b.get());
        return;
      case N::kFilter:
        Visit(n->a.get());
        VisitFilter(n->b.get());
        return;
      case N::kTest:
        Visit(n->a.get());
        return;
      case N::kSelect:
        Visit(n->b.get());
        Visit(n->a.get());
        return;
      case N::kKwArg:
        Visit(n->a.get());
        return;
      case N::kIf:
        for (size_t i = 0; i < n->conds.size(); ++i) {
          Visit(n->conds[i].get());
          VisitList(n->bodies[i]);
        }
        VisitList(n->body2);
        return;
      default:
        Visit(n->a.get());
        Visit(n->b.get());
        Visit(n->c.get());
        VisitList(n->args);
        VisitList(n->args2);
        VisitList(n->body);
        VisitList(n->body2);
        return;
    }
  }
};

class Parser {
 public:
  Parser(std::vector<Token> tokens, int64_t end_pos) : t_(std::move(tokens)), end_pos_(end_pos) {}

  std::vector<NodePtr> Run() {
    std::vector<NodePtr> body;
    while (cur_ < t_.size()) body.push_back(ParseAny());
    return body;
  }

 private:
  std::vector<Token> t_;
  int64_t end_pos_;
  size_t cur_ = 0;
  int recursion_ = 0;

  struct Guard {
    explicit Guard(Parser* p) : p(p) {
      if (++p->recursion_ > kMaxParseRecursion) {
        p->FailHere(absl::StrCat("template nested too deeply (more than ", kMaxParseRecursion,
                                 " levels of parentheses, brackets or operators)"));
      }
    }
    ~Guard() { --p->recursion_; }
    Parser* p;
  };

  bool AtEnd() const { return cur_ >= t_.size(); }
  int64_t PosHere() const { return AtEnd() ? end_pos_ : t_[cur_].pos; }
  std::string Describe(size_t i) const {
    if (i >= t_.size()) return "the end of the template";
    const Token& t = t_[i];
    switch (t.type) {
      case Tok::kText:
        return "text";
      case Tok::kComment:
        return "a comment";
      case Tok::kIdent:
        return absl::StrCat("'", t.value, "'");
      case Tok::kString:
        return "a string";
      case Tok::kNumber:
        return absl::StrCat("number ", t.value);
      default:
        return absl::StrCat("'", t.value, "'");
    }
  }
  [[noreturn]] void FailHere(std::string msg) const { Fail(PosHere(), std::move(msg)); }

  bool Is(Tok type, size_t k = 0) const {
    return cur_ + k < t_.size() && t_[cur_ + k].type == type;
  }
  bool IsIdent(const char* name, size_t k = 0) const {
    return Is(Tok::kIdent, k) && t_[cur_ + k].value == name;
  }
  bool IsStatement(std::initializer_list<const char*> names) const {
    if (!Is(Tok::kOpenStmt) || !Is(Tok::kIdent, 1)) return false;
    for (const char* n : names) {
      if (t_[cur_ + 1].value == n) return true;
    }
    return false;
  }
  const Token& Expect(Tok type, const std::string& what) {
    if (!Is(type)) FailHere(absl::StrCat("expected ", what, ", got ", Describe(cur_)));
    return t_[cur_++];
  }
  void ExpectIdent(const char* name, const std::string& context) {
    if (!IsIdent(name)) {
      FailHere(absl::StrCat("expected '", name, "' ", context, ", got ", Describe(cur_)));
    }
    ++cur_;
  }
  // Statements up to (not including) one of `end` statements.
  std::vector<NodePtr> ParseBodyUntil(std::initializer_list<const char*> end, const char* block,
                                      int64_t open_pos, const char* closer) {
    std::vector<NodePtr> body;
    while (!IsStatement(end)) {
      if (AtEnd()) {
        Fail(open_pos,
             absl::StrCat("'", block, "' block is never closed: missing '{% ", closer, " %}'"));
      }
      body.push_back(ParseAny());
    }
    return body;
  }
  // Consumes "{% name %}".
  void ExpectEndTag(const char* name) {
    Expect(Tok::kOpenStmt, absl::StrCat("'{% ", name, " %}'"));
    ExpectIdent(name, "");
    Expect(Tok::kCloseStmt, absl::StrCat("'%}' after '", name, "'"));
  }

  NodePtr ParseAny() {
    Guard g(this);
    if (AtEnd()) FailHere("unexpected end of the template");
    const Token& tok = t_[cur_];
    switch (tok.type) {
      case Tok::kComment: {
        auto n = MakeNode(N::kComment, tok.pos);
        ++cur_;
        return n;
      }
      case Tok::kText: {
        auto n = MakeNode(N::kText, tok.pos);
        n->str = tok.value;
        ++cur_;
        return n;
      }
      case Tok::kOpenStmt:
        return ParseStatement();
      case Tok::kOpenExpr: {
        ++cur_;
        NodePtr e = ParseExpression();
        Expect(Tok::kCloseExpr, "'}}' to close the expression");
        return e;
      }
      default:
        FailHere(absl::StrCat("unexpected ", Describe(cur_)));
    }
  }

  NodePtr ParseStatement() {
    const int64_t open_pos = t_[cur_].pos;
    ++cur_;  // {%
    if (!Is(Tok::kIdent)) {
      FailHere(absl::StrCat("expected a statement name after '{%', got ", Describe(cur_)));
    }
    const std::string name = t_[cur_].value;
    if (name == "set") {
      ++cur_;
      return ParseSet(open_pos);
    }
    if (name == "if") {
      ++cur_;
      NodePtr n = ParseIf(open_pos);
      ExpectEndTag("endif");
      return n;
    }
    if (name == "macro") {
      ++cur_;
      NodePtr n = ParseMacro(open_pos);
      ExpectEndTag("endmacro");
      return n;
    }
    if (name == "for") {
      ++cur_;
      NodePtr n = ParseFor(open_pos);
      ExpectEndTag("endfor");
      return n;
    }
    if (name == "call") {
      ++cur_;
      auto n = MakeNode(N::kCallBlock, open_pos);
      if (Is(Tok::kOpenParen)) n->args = ParseArgs(true);
      NodePtr callee = ParsePrimary();
      if (callee->type != N::kIdent) Fail(callee->pos, "expected a macro name after 'call'");
      auto call = MakeNode(N::kCall, callee->pos);
      call->a = std::move(callee);
      call->args = ParseArgs(false);
      n->a = Finish(std::move(call));
      Expect(Tok::kCloseStmt, "'%}' to close the 'call' tag");
      n->body = ParseBodyUntil({"endcall"}, "call", open_pos, "endcall");
      ExpectEndTag("endcall");
      n->special = SpecialNames().Run(n->args, n->body);
      return Finish(std::move(n));
    }
    if (name == "break" || name == "continue") {
      ++cur_;
      Expect(Tok::kCloseStmt, absl::StrCat("'%}' after '", name, "'"));
      return MakeNode(name == "break" ? N::kBreak : N::kContinue, open_pos);
    }
    if (name == "filter") {
      ++cur_;
      auto n = MakeNode(N::kFilterBlock, open_pos);
      NodePtr f = ParsePrimary();
      if (f->type == N::kIdent && Is(Tok::kOpenParen)) f = ParseCallExpression(std::move(f));
      n->a = std::move(f);
      Expect(Tok::kCloseStmt, "'%}' to close the 'filter' tag");
      n->body = ParseBodyUntil({"endfilter"}, "filter", open_pos, "endfilter");
      ExpectEndTag("endfilter");
      return Finish(std::move(n));
    }
    if (name == "endif" || name == "endfor" || name == "endmacro" || name == "endset" ||
        name == "endcall" || name == "endfilter" || name == "else" || name == "elif") {
      FailHere(absl::StrCat("unexpected '{% ", name, " %}': no open block it could belong to"));
    }
    FailHere(absl::StrCat("unknown statement '", name,
                          "' (supported: set, if, for, macro, call, filter, break, continue)"));
  }

  NodePtr ParseSet(int64_t open_pos) {
    auto n = MakeNode(N::kSet, open_pos);
    n->a = ParseExpressionSequence(false);
    if (Is(Tok::kEquals)) {
      ++cur_;
      n->b = ParseExpressionSequence(false);
    } else {
      Expect(Tok::kCloseStmt, "'=' or '%}' in the 'set' tag");
      n->body = ParseBodyUntil({"endset"}, "set", open_pos, "endset");
      Expect(Tok::kOpenStmt, "'{% endset %}'");
      ExpectIdent("endset", "");
    }
    Expect(Tok::kCloseStmt, "'%}' to close the 'set' tag");
    return Finish(std::move(n));
  }

  NodePtr ParseIf(int64_t open_pos) {
    auto n = MakeNode(N::kIf, open_pos);
    while (true) {
      n->conds.push_back(ParseExpression());
      Expect(Tok::kCloseStmt, "'%}' after the condition");
      n->bodies.push_back(ParseBodyUntil({"elif", "else", "endif"}, "if", open_pos, "endif"));
      if (IsStatement({"elif"})) {
        cur_ += 2;
        continue;
      }
      if (IsStatement({"else"})) {
        cur_ += 2;
        Expect(Tok::kCloseStmt, "'%}' after 'else'");
        n->body2 = ParseBodyUntil({"endif"}, "if", open_pos, "endif");
      }
      break;
    }
    return Finish(std::move(n));
  }

  NodePtr ParseMacro(int64_t open_pos) {
    auto n = MakeNode(N::kMacro, open_pos);
    NodePtr name = ParsePrimary();
    if (name->type != N::kIdent) Fail(name->pos, "expected a macro name after 'macro'");
    n->str = name->str;
    n->args = ParseArgs(true);
    Expect(Tok::kCloseStmt, "'%}' to close the 'macro' tag");
    n->body = ParseBodyUntil({"endmacro"}, "macro", open_pos, "endmacro");
    n->special = SpecialNames().Run(n->args, n->body);
    return Finish(std::move(n));
  }

  NodePtr ParseFor(int64_t open_pos) {
    auto n = MakeNode(N::kFor, open_pos);
    NodePtr target = ParseExpressionSequence(true);
    if (target->type != N::kIdent && target->type != N::kTuple) {
      Fail(target->pos, "expected a name or names (a, b) for the loop variable");
    }
    n->a = std::move(target);
    ExpectIdent("in", "after the loop variable");
    NodePtr iterable = ParseExpression();
    if (iterable->type == N::kSelect) {  // for x in xs if cond
      n->b = std::move(iterable->a);
      n->c = std::move(iterable->b);
    } else {
      n->b = std::move(iterable);
    }
    Expect(Tok::kCloseStmt, "'%}' to close the 'for' tag");
    n->body = ParseBodyUntil({"endfor", "else"}, "for", open_pos, "endfor");
    if (IsStatement({"else"})) {
      cur_ += 2;
      Expect(Tok::kCloseStmt, "'%}' after 'else'");
      n->body2 = ParseBodyUntil({"endfor"}, "for", open_pos, "endfor");
    }
    return Finish(std::move(n));
  }

  NodePtr ParseExpressionSequence(bool primary) {
    Guard g(this);
    const int64_t pos = PosHere();
    NodePtr first = primary ? ParsePrimary() : ParseExpression();
    if (!Is(Tok::kComma)) return first;
    auto tuple = MakeNode(N::kTuple, pos);
    tuple->args.push_back(std::move(first));
    while (true) {
      ++cur_;
      tuple->args.push_back(primary ? ParsePrimary() : ParseExpression());
      if (!Is(Tok::kComma)) break;
    }
    return Finish(std::move(tuple));
  }

  NodePtr ParseExpression() {
    Guard g(this);
    NodePtr a = ParseOr();
    if (IsIdent("if")) {
      const int64_t pos = t_[cur_].pos;
      ++cur_;
      NodePtr test = ParseOr();
      if (IsIdent("else")) {
        ++cur_;
        auto n = MakeNode(N::kTernary, pos);
        n->a = std::move(test);
        n->b = std::move(a);
        n->c = ParseExpression();
        return Finish(std::move(n));
      }
      auto n = MakeNode(N::kSelect, pos);
      n->a = std::move(a);
      n->b = std::move(test);
      return Finish(std::move(n));
    }
    return a;
  }

  NodePtr Binary(std::string op, int64_t pos, NodePtr l, NodePtr r) {
    auto n = MakeNode(N::kBinary, pos);
    n->str = std::move(op);
    n->a = std::move(l);
    n->b = std::move(r);
    return Finish(std::move(n));
  }

  NodePtr ParseOr() {
    NodePtr left = ParseAnd();
    while (IsIdent("or")) {
      const int64_t pos = t_[cur_++].pos;
      left = Binary("or", pos, std::move(left), ParseAnd());
    }
    return left;
  }
  NodePtr ParseAnd() {
    NodePtr left = ParseNot();
    while (IsIdent("and")) {
      const int64_t pos = t_[cur_++].pos;
      left = Binary("and", pos, std::move(left), ParseNot());
    }
    return left;
  }
  NodePtr ParseNot() {
    Guard g(this);
    NodePtr right;
    while (IsIdent("not")) {
      const int64_t pos = t_[cur_++].pos;
      auto n = MakeNode(N::kUnary, pos);
      n->str = "not";
      n->a = ParseNot();
      right = Finish(std::move(n));
    }
    return right ? std::move(right) : ParseComparison();
  }
  NodePtr ParseComparison() {
    NodePtr left = ParseAdditive();
    while (true) {
      std::string op;
      const int64_t pos = PosHere();
      if (IsIdent("not") && IsIdent("in", 1)) {
        op = "not in";
        cur_ += 2;
      } else if (IsIdent("in")) {
        op = "in";
        ++cur_;
      } else if (Is(Tok::kComparison)) {
        op = t_[cur_++].value;
      } else {
        break;
      }
      left = Binary(op, pos, std::move(left), ParseAdditive());
    }
    return left;
  }
  NodePtr ParseAdditive() {
    NodePtr left = ParseMultiplicative();
    while (Is(Tok::kAdditive)) {
      const Token& op = t_[cur_++];
      left = Binary(op.value, op.pos, std::move(left), ParseMultiplicative());
    }
    return left;
  }
  NodePtr ParseMultiplicative() {
    NodePtr left = ParsePower();
    while (Is(Tok::kMultiplicative)) {
      const Token& op = t_[cur_++];
      left = Binary(op.value, op.pos, std::move(left), ParsePower());
    }
    return left;
  }
  NodePtr ParsePower() {
    NodePtr left = ParseTest();
    while (Is(Tok::kPower)) {
      const Token& op = t_[cur_++];
      left = Binary(op.value, op.pos, std::move(left), ParseTest());
    }
    return left;
  }
  NodePtr ParseTest() {
    NodePtr operand = ParseFilter();
    while (IsIdent("is")) {
      ++cur_;
      const bool negate = IsIdent("not");
      if (negate) ++cur_;
      NodePtr test = ParsePrimary();
      if (test->type != N::kIdent) Fail(test->pos, "expected a test name after 'is'");
      auto n = MakeNode(N::kTest, test->pos);
      n->str = test->str;
      n->flag = negate;
      n->a = std::move(operand);
      operand = Finish(std::move(n));
    }
    return operand;
  }
  NodePtr ParseFilter() {
    NodePtr operand = ParseUnarySign();
    while (Is(Tok::kPipe)) {
      ++cur_;
      NodePtr filter = ParsePrimary();
      if (filter->type != N::kIdent) Fail(filter->pos, "expected a filter name after '|'");
      if (Is(Tok::kOpenParen)) filter = ParseCallExpression(std::move(filter));
      auto n = MakeNode(N::kFilter, filter->pos);
      n->a = std::move(operand);
      n->b = std::move(filter);
      operand = Finish(std::move(n));
    }
    return operand;
  }
  NodePtr ParseUnarySign() {
    Guard g(this);
    if ((Is(Tok::kUnary) || Is(Tok::kAdditive)) &&
        (t_[cur_].value == "-" || t_[cur_].value == "+")) {
      const Token& op = t_[cur_++];
      auto n = MakeNode(N::kUnary, op.pos);
      n->str = op.value;
      n->a = ParseUnarySign();
      return Finish(std::move(n));
    }
    NodePtr member = ParseMember(ParsePrimary());
    if (Is(Tok::kOpenParen)) return ParseCallExpression(std::move(member));
    return member;
  }
  NodePtr ParseCallExpression(NodePtr callee) {
    while (true) {
      auto call = MakeNode(N::kCall, StartPos(callee.get()));
      call->a = std::move(callee);
      call->args = ParseArgs(false);
      callee = ParseMember(Finish(std::move(call)));
      if (!Is(Tok::kOpenParen)) return callee;
    }
  }
  // "(" arguments ")"; parameters = macro / caller parameter declarations.
  std::vector<NodePtr> ParseArgs(bool parameters) {
    Guard g(this);
    Expect(Tok::kOpenParen, "'(' to start the argument list");
    std::vector<NodePtr> args;
    std::set<std::string> names;
    bool saw_keyword = false, saw_spread = false;
    while (!Is(Tok::kCloseParen)) {
      if (AtEnd()) FailHere("expected ')' to close the argument list, got the end of the template");
      const int64_t pos = PosHere();
      const bool kw_spread = Is(Tok::kPower);
      const bool spread = Is(Tok::kMultiplicative) && t_[cur_].value == "*";
      if (parameters && (kw_spread || spread)) {
        FailHere("argument unpacking (* or **) is not allowed in parameter declarations");
      }
      if (kw_spread) {
        ++cur_;
        auto n = MakeNode(N::kKwSpread, pos);
        n->a = ParseExpression();
        args.push_back(Finish(std::move(n)));
        if (Is(Tok::kComma)) ++cur_;
        if (!Is(Tok::kCloseParen)) FailHere("'**' must be applied to the last argument");
        break;
      }
      NodePtr arg;
      if (spread) {
        if (saw_spread) FailHere("only one '*' argument unpacking is allowed");
        saw_spread = true;
        ++cur_;
        auto n = MakeNode(N::kSpread, pos);
        n->a = ParseExpression();
        arg = Finish(std::move(n));
      } else {
        arg = ParseExpression();
        if (Is(Tok::kEquals)) {
          ++cur_;
          if (arg->type != N::kIdent) {
            Fail(arg->pos, parameters ? "expected a parameter name before '='"
                                      : "expected a keyword argument name before '='");
          }
          auto kw = MakeNode(N::kKwArg, arg->pos);
          kw->str = arg->str;
          kw->a = ParseExpression();
          arg = Finish(std::move(kw));
        }
        if (parameters) {
          if (arg->type != N::kIdent && arg->type != N::kKwArg) {
            Fail(arg->pos, "expected a parameter name");
          }
          if (!names.insert(arg->str).second) {
            Fail(arg->pos, absl::StrCat("duplicate parameter name '", arg->str, "'"));
          }
        }
        if (arg->type == N::kKwArg) {
          saw_keyword = true;
        } else if (saw_keyword) {
          Fail(arg->pos, parameters ? "a parameter without default follows one with a default"
                                    : "positional arguments must come before keyword arguments");
        } else if (saw_spread) {
          Fail(arg->pos, "positional arguments must not follow '*' argument unpacking");
        }
      }
      args.push_back(std::move(arg));
      if (Is(Tok::kComma)) ++cur_;
    }
    ++cur_;  // )
    return args;
  }
  // The inside of "[...]": an index or a slice start:stop:step.
  NodePtr ParseSubscript(int64_t pos) {
    std::vector<NodePtr> parts;
    bool is_slice = false;
    while (!Is(Tok::kCloseSquare)) {
      if (AtEnd()) FailHere("expected ']', got the end of the template");
      if (Is(Tok::kColon)) {
        parts.push_back(nullptr);
        ++cur_;
        is_slice = true;
      } else {
        parts.push_back(ParseExpression());
        if (Is(Tok::kColon)) {
          ++cur_;
          is_slice = true;
        }
      }
    }
    if (parts.empty()) Fail(pos, "expected an index or a slice inside '[]'");
    if (!is_slice) return std::move(parts[0]);
    if (parts.size() > 3) Fail(pos, "a slice has at most 3 parts (start:stop:step)");
    auto n = MakeNode(N::kSlice, pos);
    n->a = std::move(parts[0]);
    if (parts.size() > 1) n->b = std::move(parts[1]);
    if (parts.size() > 2) n->c = std::move(parts[2]);
    return Finish(std::move(n));
  }
  NodePtr ParseMember(NodePtr object) {
    while (Is(Tok::kDot) || Is(Tok::kOpenSquare)) {
      const Token& op = t_[cur_++];
      auto n = MakeNode(N::kMember, op.pos);
      n->flag = op.type == Tok::kOpenSquare;
      if (n->flag) {
        n->b = ParseSubscript(op.pos);
        Expect(Tok::kCloseSquare, "']'");
      } else {
        NodePtr prop = ParsePrimary();
        if (prop->type != N::kIdent && prop->type != N::kInt) {
          Fail(prop->pos, "expected an attribute name or an integer after '.'");
        }
        n->b = std::move(prop);
      }
      n->a = std::move(object);
      object = Finish(std::move(n));
    }
    return object;
  }
  NodePtr ParsePrimary() {
    Guard g(this);
    if (AtEnd()) FailHere("expected an expression, got the end of the template");
    const Token& tok = t_[cur_++];
    switch (tok.type) {
      case Tok::kNumber: {
        const bool is_float = tok.value.find('.') != std::string::npos;
        auto n = MakeNode(is_float ? N::kFloat : N::kInt, tok.pos);
        n->num = std::strtod(tok.value.c_str(), nullptr);
        return n;
      }
      case Tok::kString: {
        auto n = MakeNode(N::kString, tok.pos);
        n->str = tok.value;
        while (Is(Tok::kString)) n->str += t_[cur_++].value;
        return n;
      }
      case Tok::kIdent: {
        auto n = MakeNode(N::kIdent, tok.pos);
        n->str = tok.value;
        return n;
      }
      case Tok::kOpenParen: {
        NodePtr e = ParseExpressionSequence(false);
        Expect(Tok::kCloseParen, "')'");
        return e;
      }
      case Tok::kOpenSquare: {
        auto n = MakeNode(N::kArray, tok.pos);
        while (!Is(Tok::kCloseSquare)) {
          if (AtEnd()) Fail(tok.pos, "'[' is never closed with ']'");
          n->args.push_back(ParseExpression());
          if (Is(Tok::kComma)) ++cur_;
        }
        ++cur_;
        return Finish(std::move(n));
      }
      case Tok::kOpenCurly: {
        auto n = MakeNode(N::kObject, tok.pos);
        while (!Is(Tok::kCloseCurly)) {
          if (AtEnd()) Fail(tok.pos, "'{' is never closed with '}'");
          n->args.push_back(ParseExpression());
          Expect(Tok::kColon, "':' between a key and its value");
          n->args2.push_back(ParseExpression());
          if (Is(Tok::kComma)) ++cur_;
        }
        ++cur_;
        return Finish(std::move(n));
      }
      default:
        --cur_;
        FailHere(absl::StrCat("expected an expression, got ", Describe(cur_)));
    }
  }
};

}  // namespace

std::vector<std::unique_ptr<Node>> ParseTokens(std::vector<Token> tokens, int64_t end_pos) {
  return Parser(std::move(tokens), end_pos).Run();
}

}  // namespace st::jinja::internal
