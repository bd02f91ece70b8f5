// Jinja interpreter: scopes, statements, operators, filters, tests, the methods of strings /
// lists / dicts, and the globals (namespace, range, raise_exception, strftime_now), following
// the oracle @huggingface/jinja 0.5.13 operation by operation. Work, nesting and sizes are
// bounded (Options), so no template can hang or exhaust memory.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <deque>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "infer/chat/jinja_internal.h"

namespace st::jinja::internal {

// Defined here, used by jinja.cpp.
std::string RenderProgram(const Program& prog, const nlohmann::ordered_json& context);

namespace {

// An iteration (loop object, bindings) costs about as much as this many expressions.
constexpr int64_t kLoopIterationSteps = 20;

struct BreakSignal {
  int64_t pos;
};
struct ContinueSignal {
  int64_t pos;
};

struct Env {
  Env* parent = nullptr;
  bool call_block = false;  // the scope a {% call %} block passes to the macro it calls
  std::vector<std::pair<std::string, Value>> vars;

  Value* FindLocal(absl::string_view name) {
    for (auto& [k, v] : vars) {
      if (k == name) return &v;
    }
    return nullptr;
  }
  void Set(const std::string& name, Value v) {
    if (Value* found = FindLocal(name)) {
      *found = std::move(v);
    } else {
      vars.emplace_back(name, std::move(v));
    }
  }
};

using Args = std::vector<Value>;

// positional argument i, or the keyword argument `name`, or null.
const Value* ArgOr(const Args& positional, size_t i, const Object& kwargs, const char* name) {
  if (i < positional.size()) return &positional[i];
  return kwargs.Find(name);
}

class Interp {
 public:
  explicit Interp(const Program& prog) : prog_(prog), opt_(prog.options) {}
  // Namespaces are the only mutable values, so the only way to a reference cycle
  // ({% set ns.self = ns %}): emptying them frees everything.
  ~Interp() {
    for (const auto& p : namespaces_) static_cast<Object*>(p.get())->entries.clear();
  }
  Interp(const Interp&) = delete;
  Interp& operator=(const Interp&) = delete;

  std::string Run(const nlohmann::ordered_json& context) {
    Env* global = NewEnv(nullptr);
    SetupGlobals(global);
    if (!context.is_object()) {
      Fail(-1, absl::StrCat("the context must be a JSON object of variables, got ",
                            context.type_name()));
    }
    Value ctx = FromJson(context, 0);
    for (auto& [key, value] : ctx.obj().entries) {
      if (global->FindLocal(key)) {
        Fail(-1, absl::StrCat("context variable '", key,
                              "' clashes with a built-in global of the same name"));
      }
      global->vars.emplace_back(key, value);
    }
    std::string out;
    try {
      RenderBody(prog_.body, global, &out);
    } catch (const BreakSignal& b) {
      Fail(b.pos, "'break' outside a loop");
    } catch (const ContinueSignal& c) {
      Fail(c.pos, "'continue' outside a loop");
    }
    return out;
  }

 private:
  const Program& prog_;
  const Options& opt_;
  int64_t steps_ = 0;
  int depth_ = 0;
  std::deque<Env> envs_;
  std::vector<std::shared_ptr<void>> namespaces_;

  struct DepthGuard {
    DepthGuard(Interp* in, int64_t pos) : in(in) {
      if (++in->depth_ > kMaxEvalDepth) {
        Fail(pos, absl::StrCat("template nested too deeply while rendering (more than ",
                               kMaxEvalDepth, " levels; endless macro recursion?)"));
      }
    }
    ~DepthGuard() { --in->depth_; }
    Interp* in;
  };

  Env* NewEnv(Env* parent) {
    envs_.emplace_back();
    envs_.back().parent = parent;
    return &envs_.back();
  }

  void Step(int64_t n, int64_t pos) {
    steps_ += n;
    if (steps_ > opt_.max_steps) {
      Fail(pos, absl::StrCat("template does too much work (more than ", opt_.max_steps,
                             " steps); an endless or huge loop?"));
    }
  }
  void CheckSize(size_t bytes, int64_t pos) const {
    if (static_cast<int64_t>(bytes) > opt_.max_output_bytes) {
      Fail(pos, absl::StrCat("output or string larger than the limit of ", opt_.max_output_bytes,
                             " bytes"));
    }
  }
  void Append(std::string* out, absl::string_view s, int64_t pos) const {
    CheckSize(out->size() + s.size(), pos);
    out->append(s.data(), s.size());
  }
  Value MakeString(std::string s, int64_t pos) {
    CheckSize(s.size(), pos);
    Step(static_cast<int64_t>(s.size() / 256), pos);
    return Value::Str(std::move(s));
  }
  Value MakeList(std::vector<Value> items, int64_t pos, bool tuple = false) {
    Step(static_cast<int64_t>(items.size()), pos);
    return Value::MakeArray(std::move(items), tuple);
  }

  static Value Lookup(Env* env, absl::string_view name) {
    for (Env* e = env; e; e = e->parent) {
      if (Value* v = e->FindLocal(name)) return *v;
    }
    return Value::Undefined();
  }

  // ---- context

  Value FromJson(const nlohmann::ordered_json& j, int depth) {
    if (depth > 256) Fail(-1, "context nested too deeply (more than 256 levels)");
    switch (j.type()) {
      case nlohmann::json::value_t::null:
        return Value::Null();
      case nlohmann::json::value_t::boolean:
        return Value::Bool(j.get<bool>());
      case nlohmann::json::value_t::number_integer:
        return Value::Number(static_cast<double>(j.get<int64_t>()));
      case nlohmann::json::value_t::number_unsigned:
        return Value::Number(static_cast<double>(j.get<uint64_t>()));
      case nlohmann::json::value_t::number_float:
        return Value::Number(j.get<double>());
      case nlohmann::json::value_t::string:
        return Value::Str(j.get_ref<const std::string&>());
      case nlohmann::json::value_t::array: {
        std::vector<Value> items;
        items.reserve(j.size());
        for (const auto& e : j) items.push_back(FromJson(e, depth + 1));
        return Value::MakeArray(std::move(items));
      }
      case nlohmann::json::value_t::object: {
        // A JavaScript object lists array-index keys first, in ascending order.
        std::vector<std::pair<double, const std::string*>> index_keys;
        for (auto it = j.begin(); it != j.end(); ++it) {
          const std::string& k = it.key();
          bool is_index =
              !k.empty() && k.size() <= 10 && (k == "0" || k[0] != '0') &&
              std::all_of(k.begin(), k.end(), [](char c) { return c >= '0' && c <= '9'; });
          if (is_index) {
            const double v = std::strtod(k.c_str(), nullptr);
            if (v < 4294967295.0) index_keys.emplace_back(v, &k);
          }
        }
        std::stable_sort(index_keys.begin(), index_keys.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        Value o = Value::MakeObject();
        for (const auto& [v, k] : index_keys) o.obj().Set(*k, FromJson(j.at(*k), depth + 1));
        for (auto it = j.begin(); it != j.end(); ++it) {
          if (!o.obj().Find(it.key())) o.obj().Set(it.key(), FromJson(it.value(), depth + 1));
        }
        return o;
      }
      default:
        return Value::Undefined();  // binary / discarded: no JSON equivalent
    }
  }

  // ---- globals

  void SetupGlobals(Env* g) {
    g->Set("namespace",
           Value::MakeFunction("namespace", [this](Args& args, void*) { return Namespace(args); }));
    g->Set("false", Value::Bool(false));
    g->Set("true", Value::Bool(true));
    g->Set("none", Value::Null());
    g->Set("raise_exception",
           Value::MakeFunction("raise_exception", [](Args& args, void*) -> Value {
             std::string msg;
             if (!args.empty() && args[0].kind != Kind::kUndefined) {
               msg = args[0].kind == Kind::kNull ? "undefined" : JsRawString(args[0], -1);
             }
             throw JinjaError{-2, msg};  // -2: filled in with the call's position
           }));
    g->Set("range",
           Value::MakeFunction("range", [this](Args& args, void*) { return Range(args); }));
    g->Set("strftime_now", Value::MakeFunction("strftime_now", [](Args& args, void*) {
             return StrftimeNow(args);
           }));
    g->Set("True", Value::Bool(true));
    g->Set("False", Value::Bool(false));
    g->Set("None", Value::Null());
  }

  Value Namespace(Args& args) {
    Args positional = args;
    const Object* kwargs = nullptr;
    if (!positional.empty() && positional.back().IsKwargs()) {
      kwargs = &positional.back().obj();
    }
    Value kw_holder;
    if (kwargs) {
      kw_holder = positional.back();
      positional.pop_back();
    }
    if (positional.size() > 1) {
      Fail(-2, absl::StrCat("namespace expected at most 1 argument, got ", positional.size()));
    }
    Value ns = Value::MakeNamespace();
    namespaces_.push_back(ns.p);
    if (positional.size() == 1) {
      const Value& src = positional[0];
      if (src.IsObject()) {
        for (const auto& [k, v] : src.obj().entries) ns.obj().Set(k, v);
      } else if (src.IsArray()) {
        for (const Value& pair : src.arr().items) {
          std::vector<Value> kv;
          if (pair.IsArray()) {
            kv = pair.arr().items;
          } else if (pair.IsString()) {
            for (auto& c : CodePoints(pair.s())) kv.push_back(Value::Str(c));
          }
          if (kv.size() != 2) {
            Fail(-2, "namespace expected an object or an iterable of [key, value] pairs");
          }
          if (!kv[0].IsString()) Fail(-2, "namespace keys must be strings");
          ns.obj().Set(kv[0].s(), kv[1]);
        }
      } else {
        Fail(-2, absl::StrCat("'", TypeName(src), "' object is not iterable"));
      }
    }
    if (kwargs) {
      for (const auto& [k, v] : kwargs->entries) ns.obj().Set(k, v);
    }
    return ns;
  }

  // range(stop) / range(start, stop[, step]) on numbers, as the oracle's JavaScript loop.
  Value Range(Args& args) {
    auto num = [&](size_t i, bool* given) -> double {
      *given = false;
      if (i >= args.size()) return 0;
      const Value& v = args[i];
      if (v.kind == Kind::kUndefined || v.kind == Kind::kNull) return 0;
      if (!v.IsNumericLike()) {
        Fail(-2, absl::StrCat("range() arguments must be numbers, got ", TypeName(v)));
      }
      *given = true;
      return v.NumericValue();
    };
    bool has_start, has_stop, has_step;
    double start = num(0, &has_start);
    double stop = num(1, &has_stop);
    double step = num(2, &has_step);
    if (!has_step) step = 1;
    if (!has_stop) {
      // range(n): stop = n; range(undefined) is empty.
      stop = has_start ? start : 0;
      start = 0;
      if (!has_start) return MakeList({}, -2);
    }
    if (step == 0) Fail(-2, "range() step must not be zero");
    if (std::isnan(start) || std::isnan(stop) || std::isnan(step)) return MakeList({}, -2);
    const double count =
        step > 0 ? std::ceil((stop - start) / step) : std::ceil((start - stop) / -step);
    constexpr double kMaxRange = 1 << 20;
    if (count > kMaxRange) {
      Fail(-2, absl::StrCat("range() would make ", JsNumberToString(count), " items; the limit is ",
                            static_cast<int64_t>(kMaxRange)));
    }
    std::vector<Value> items;
    if (step > 0) {
      for (double i = start; i < stop && items.size() <= kMaxRange; i += step) {
        items.push_back(Value::Number(i));
      }
    } else {
      for (double i = start; i > stop && items.size() <= kMaxRange; i += step) {
        items.push_back(Value::Number(i));
      }
    }
    return MakeList(std::move(items), -2);
  }

  static Value StrftimeNow(Args& args) {
    if (args.empty() || !args[0].IsString()) {
      Fail(-2, "strftime_now() takes a format string");
    }
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    static const char* kShort[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const char* kLong[] = {"January",   "February", "March",    "April",
                                  "May",       "June",     "July",     "August",
                                  "September", "October",  "November", "December"};
    auto pad2 = [](int n) { return n < 10 ? absl::StrCat("0", n) : absl::StrCat(n); };
    const std::string& f = args[0].s();
    std::string out;
    for (size_t i = 0; i < f.size(); ++i) {
      if (f[i] != '%' || i + 1 >= f.size()) {
        out.push_back(f[i]);
        continue;
      }
      const char c = f[i + 1];
      std::string rep;
      switch (c) {
        case 'Y':
          rep = absl::StrCat(tm.tm_year + 1900);
          break;
        case 'm':
          rep = pad2(tm.tm_mon + 1);
          break;
        case 'd':
          rep = pad2(tm.tm_mday);
          break;
        case 'b':
          rep = kShort[tm.tm_mon];
          break;
        case 'B':
          rep = kLong[tm.tm_mon];
          break;
        case 'H':
          rep = pad2(tm.tm_hour);
          break;
        case 'M':
          rep = pad2(tm.tm_min);
          break;
        case '%':
          rep = "%";
          break;
        default:
          out.push_back('%');
          continue;
      }
      out += rep;
      ++i;
    }
    return Value::Str(out);
  }

  // ---- statements

  void RenderBody(const std::vector<std::unique_ptr<Node>>& body, Env* env, std::string* out) {
    for (const auto& stmt : body) RenderStatement(stmt.get(), env, out);
  }

  std::string RenderToString(const std::vector<std::unique_ptr<Node>>& body, Env* env) {
    std::string s;
    RenderBody(body, env, &s);
    return s;
  }

  void RenderStatement(const Node* n, Env* env, std::string* out) {
    DepthGuard guard(this, n->pos);
    Step(1, n->pos);
    try {
      RenderNode(n, env, out);
    } catch (JinjaError& e) {
      if (e.pos == -2) e.pos = n->pos;
      throw;
    }
  }

  void RenderNode(const Node* n, Env* env, std::string* out) {
    switch (n->type) {
      case N::kText:
        Append(out, n->str, n->pos);
        return;
      case N::kComment:
        return;
      case N::kIf:
        for (size_t i = 0; i < n->conds.size(); ++i) {
          if (Truthy(Eval(n->conds[i].get(), env))) {
            RenderBody(n->bodies[i], env, out);
            return;
          }
        }
        RenderBody(n->body2, env, out);
        return;
      case N::kFor:
        RenderFor(n, env, out);
        return;
      case N::kSet:
        ExecSet(n, env);
        return;
      case N::kMacro:
        DefineMacro(n, env);
        return;
      case N::kBreak:
        throw BreakSignal{n->pos};
      case N::kContinue:
        throw ContinueSignal{n->pos};
      case N::kCallBlock:
        Print(CallBlock(n, env), n->pos, out);
        return;
      case N::kFilterBlock: {
        Value body = Value::Str(RenderToString(n->body, env));
        Print(ApplyFilter(body, n->a.get(), env), n->pos, out);
        return;
      }
      default:
        Print(Eval(n, env), n->pos, out);
        return;
    }
  }

  void Print(const Value& v, int64_t pos, std::string* out) {
    if (v.kind == Kind::kNull || v.kind == Kind::kUndefined) return;
    if (v.IsString()) {
      Append(out, v.s(), pos);
    } else {
      Append(out, RenderString(v, pos), pos);
    }
  }

  void Bind(const Node* target, const Value& item, Env* scope) {
    if (target->type == N::kIdent) {
      scope->Set(target->str, item);
      return;
    }
    const std::vector<Value>* values = item.IsArray() ? &item.arr().items : nullptr;
    for (size_t j = 0; j < target->args.size(); ++j) {
      const Node* t = target->args[j].get();
      if (t->type != N::kIdent) Fail(t->pos, "cannot unpack into something that is not a name");
      scope->Set(t->str, values && j < values->size() ? (*values)[j] : Value::Undefined());
    }
  }

  void RenderFor(const Node* n, Env* env, std::string* out) {
    Env* scope = NewEnv(env);
    Value iterable = Eval(n->b.get(), scope);
    std::vector<Value> candidates;
    if (iterable.IsArray()) {
      candidates = iterable.arr().items;
    } else if (iterable.IsObject()) {
      for (const auto& [k, v] : iterable.obj().entries) candidates.push_back(Value::Str(k));
    } else {
      Fail(n->b->pos,
           absl::StrCat("'for' needs a list or a dict to iterate over, got ", TypeName(iterable)));
    }
    const Node* target = n->a.get();
    const Node* test = n->c.get();
    std::vector<Value> items;
    if (target->type == N::kIdent && !test) {
      items = std::move(candidates);
    } else {
      for (const Value& current : candidates) {
        Step(1, n->pos);
        if (target->type == N::kTuple) {
          if (!current.IsArray() || current.IsTuple()) {
            Fail(target->pos, absl::StrCat("cannot unpack non-iterable type: ", TypeName(current)));
          }
          const size_t expected = target->args.size(), actual = current.arr().items.size();
          if (expected != actual) {
            Fail(target->pos,
                 absl::StrCat("too ", expected > actual ? "few" : "many",
                              " items to unpack (expected ", expected, ", got ", actual, ")"));
          }
        }
        if (test) {
          Env* loop_scope = NewEnv(scope);
          Bind(target, current, loop_scope);
          if (!Truthy(Eval(test, loop_scope))) continue;
        }
        items.push_back(current);
      }
    }
    bool no_iteration = true;
    const size_t count = items.size();
    for (size_t i = 0; i < count; ++i) {
      Step(kLoopIterationSteps, n->pos);
      Value loop = Value::MakeObject();
      Object& lo = loop.obj();
      lo.Set("index", Value::Int(static_cast<double>(i + 1)));
      lo.Set("index0", Value::Int(static_cast<double>(i)));
      lo.Set("revindex", Value::Int(static_cast<double>(count - i)));
      lo.Set("revindex0", Value::Int(static_cast<double>(count - i - 1)));
      lo.Set("first", Value::Bool(i == 0));
      lo.Set("last", Value::Bool(i + 1 == count));
      lo.Set("length", Value::Int(static_cast<double>(count)));
      lo.Set("previtem", i > 0 ? items[i - 1] : Value::Undefined());
      lo.Set("nextitem", i + 1 < count ? items[i + 1] : Value::Undefined());
      scope->Set("loop", std::move(loop));
      Bind(target, items[i], scope);
      // As the oracle: the text of an iteration left by break/continue is dropped.
      const size_t mark = out->size();
      try {
        RenderBody(n->body, scope, out);
      } catch (const ContinueSignal&) {
        out->resize(mark);
        continue;
      } catch (const BreakSignal&) {
        out->resize(mark);
        break;
      }
      no_iteration = false;
    }
    if (no_iteration) RenderBody(n->body2, scope, out);
  }

  void ExecSet(const Node* n, Env* env) {
    Value rhs = n->b ? Eval(n->b.get(), env) : MakeString(RenderToString(n->body, env), n->pos);
    const Node* t = n->a.get();
    switch (t->type) {
      case N::kIdent:
        env->Set(t->str, std::move(rhs));
        return;
      case N::kTuple: {
        if (!rhs.IsArray()) {
          Fail(t->pos, absl::StrCat("cannot unpack non-iterable type in set: ", TypeName(rhs)));
        }
        const auto& arr = rhs.arr().items;
        if (arr.size() != t->args.size()) {
          Fail(t->pos, absl::StrCat("too ", t->args.size() > arr.size() ? "few" : "many",
                                    " items to unpack in set (expected ", t->args.size(), ", got ",
                                    arr.size(), ")"));
        }
        for (size_t i = 0; i < arr.size(); ++i) {
          const Node* e = t->args[i].get();
          if (e->type != N::kIdent) Fail(e->pos, "cannot unpack into something that is not a name");
          env->Set(e->str, arr[i]);
        }
        return;
      }
      case N::kMember: {
        Value obj = Eval(t->a.get(), env);
        if (obj.kind != Kind::kNamespace) {
          Fail(t->pos, absl::StrCat("cannot assign an attribute of ", TypeName(obj),
                                    "; only of a namespace (set ns = namespace(...))"));
        }
        if (t->b->type != N::kIdent) {
          Fail(t->b->pos, "cannot assign to a member that is not a name");
        }
        obj.obj().Set(t->b->str, std::move(rhs));
        return;
      }
      default:
        Fail(t->pos, "cannot assign to this expression (expected a name, names or ns.attr)");
    }
  }

  // ---- macros and call blocks

  void BindMacroArgs(const std::string& display, const std::vector<std::unique_ptr<Node>>& params,
                     int special, Args args, Env* scope, int64_t pos) {
    Object kwargs;
    if (!args.empty() && args.back().IsKwargs()) {
      kwargs.entries = args.back().obj().entries;
      args.pop_back();
    }
    std::vector<std::pair<std::string, const Node*>> pending;
    for (size_t i = 0; i < params.size(); ++i) {
      const Node* p = params[i].get();
      const std::string& name = p->str;
      std::optional<Value> value;
      if (i < args.size()) value = args[i];
      if (!value) {
        if (const Value* kv = kwargs.Find(name)) {
          value = *kv;
          kwargs.Erase(name);
        }
      }
      if (!value && p->type == N::kKwArg) pending.emplace_back(name, p->a.get());
      scope->Set(name, value ? *value : Value::Undefined());
    }
    if (special & kUsesKwargs) {
      Value kw = Value::MakeObject();
      kw.obj().entries = kwargs.entries;
      scope->Set("kwargs", kw);
    } else if (!kwargs.entries.empty()) {
      Fail(pos, absl::StrCat("macro ", display, " takes no keyword argument '",
                             kwargs.entries[0].first, "'"));
    }
    if (special & kUsesVarargs) {
      std::vector<Value> rest;
      for (size_t i = params.size(); i < args.size(); ++i) rest.push_back(args[i]);
      scope->Set("varargs", Value::MakeArray(std::move(rest)));
    } else if (args.size() > params.size()) {
      Fail(pos, absl::StrCat("macro ", display, " takes not more than ", params.size(),
                             " argument(s), got ", args.size()));
    }
    for (const auto& [name, def] : pending) scope->Set(name, Eval(def, scope));
  }

  void DefineMacro(const Node* n, Env* env) {
    env->Set(n->str, Value::MakeFunction(n->str, [this, n, env](Args& args, void* call_env) {
               Step(1, n->pos);
               Env* parent = env;
               if (n->special & kUsesCaller) {
                 Value caller;
                 auto* site = static_cast<Env*>(call_env);
                 if (site && site->call_block) {
                   if (Value* c = site->FindLocal("caller")) caller = *c;
                 }
                 parent = NewEnv(env);
                 parent->Set("caller", caller);
               }
               Env* scope = NewEnv(parent);
               BindMacroArgs(absl::StrCat("'", n->str, "'"), n->args, n->special, args, scope, -2);
               return MakeString(RenderToString(n->body, scope), n->pos);
             }));
  }

  Value CallBlock(const Node* n, Env* env) {
    Value caller = Value::MakeFunction("caller", [this, n, env](Args& args, void*) {
      Env* e = NewEnv(env);
      BindMacroArgs("None", n->args, n->special, args, e, -2);
      return MakeString(RenderToString(n->body, e), n->pos);
    });
    const Node* call = n->a.get();
    auto [positional, kwargs] = EvaluateArguments(call->args, env);
    positional.push_back(std::move(kwargs));
    Value fn = Eval(call->a.get(), env);
    if (fn.kind != Kind::kFunction) {
      Fail(call->pos, absl::StrCat("'", call->a->str, "' is not a macro (got ", TypeName(fn), ")"));
    }
    Env* site = NewEnv(env);
    site->call_block = true;
    site->Set("caller", caller);
    return Invoke(fn, positional, site, call->pos);
  }

  Value Invoke(const Value& fn, Args& args, Env* site, int64_t pos) {
    try {
      return fn.fn().call(args, site);
    } catch (JinjaError& e) {
      if (e.pos == -2) {
        e.pos = pos;
        if (fn.fn().name == "raise_exception") e.message = "raise_exception: " + e.message;
      }
      throw;
    }
  }

  // ---- arguments

  std::pair<Args, Value> EvaluateArguments(const std::vector<std::unique_ptr<Node>>& args,
                                           Env* env) {
    Args positional;
    Value kwargs = Value::MakeObject(/*kwargs=*/true);
    for (const auto& a : args) {
      if (a->type == N::kSpread) {
        Value v = Eval(a->a.get(), env);
        if (!v.IsArray()) {
          Fail(a->pos, absl::StrCat("cannot unpack non-iterable type: ", TypeName(v)));
        }
        for (const Value& x : v.arr().items) positional.push_back(x);
      } else if (a->type != N::kKwArg && a->type != N::kKwSpread) {
        positional.push_back(Eval(a.get(), env));
      }
    }
    auto add = [&](const std::string& k, Value v, int64_t pos) {
      if (kwargs.obj().Find(k)) {
        Fail(pos, absl::StrCat("got multiple values for keyword argument '", k, "'"));
      }
      kwargs.obj().Set(k, std::move(v));
    };
    for (const auto& a : args) {
      if (a->type == N::kKwArg) {
        add(a->str, Eval(a->a.get(), env), a->pos);
      } else if (a->type == N::kKwSpread) {
        Value v = Eval(a->a.get(), env);
        if (!v.IsObject()) {
          Fail(a->pos, absl::StrCat("argument after ** must be a mapping, not ", TypeName(v)));
        }
        for (const auto& [k, x] : v.obj().entries) add(k, x, a->pos);
      }
    }
    return {std::move(positional), std::move(kwargs)};
  }

  Args EvaluateCallArguments(const std::vector<std::unique_ptr<Node>>& args, Env* env) {
    for (const auto& a : args) {
      if (a->type == N::kKwArg || a->type == N::kSpread || a->type == N::kKwSpread) {
        auto [positional, kwargs] = EvaluateArguments(args, env);
        if (!kwargs.obj().entries.empty()) positional.push_back(std::move(kwargs));
        return std::move(positional);
      }
    }
    Args out;
    out.reserve(args.size());
    for (const auto& a : args) out.push_back(Eval(a.get(), env));
    return out;
  }

  // ---- expressions

  Value Eval(const Node* n, Env* env) {
    if (!n) return Value::Undefined();
    DepthGuard guard(this, n->pos);
    Step(1, n->pos);
    try {
      return EvalNode(n, env);
    } catch (JinjaError& e) {
      if (e.pos == -2) e.pos = n->pos;  // raised inside a built-in: blame this expression
      throw;
    }
  }

  Value EvalNode(const Node* n, Env* env) {
    switch (n->type) {
      case N::kIdent:
        return Lookup(env, n->str);
      case N::kInt:
        return Value::Int(n->num);
      case N::kFloat:
        return Value::Float(n->num);
      case N::kString:
        return Value::Str(n->str);
      case N::kBinary:
        return EvalBinary(n, env);
      case N::kUnary:
        return EvalUnary(n, env);
      case N::kMember:
        return EvalMember(n, env);
      case N::kCall: {
        Args args = EvaluateCallArguments(n->args, env);
        Value fn = Eval(n->a.get(), env);
        if (fn.kind != Kind::kFunction) {
          std::string what = n->a->type == N::kIdent ? absl::StrCat("'", n->a->str, "'")
                             : n->a->type == N::kMember && n->a->b->type == N::kIdent
                                 ? absl::StrCat("'", n->a->b->str, "'")
                                 : std::string("this");
          Fail(n->pos, absl::StrCat(what, " is not a function and cannot be called (got ",
                                    TypeName(fn), ")"));
        }
        return Invoke(fn, args, env, n->pos);
      }
      case N::kFilter:
        return ApplyFilter(Eval(n->a.get(), env), n->b.get(), env);
      case N::kTest: {
        Value operand = Eval(n->a.get(), env);
        const bool r = RunTest(n->str, operand, nullptr, n->pos);
        return Value::Bool(n->flag ? !r : r);
      }
      case N::kTernary:
        return Truthy(Eval(n->a.get(), env)) ? Eval(n->b.get(), env) : Eval(n->c.get(), env);
      case N::kSelect:
        if (!Truthy(Eval(n->b.get(), env))) return Value::Undefined();
        return Eval(n->a.get(), env);
      case N::kArray:
      case N::kTuple: {
        std::vector<Value> items;
        items.reserve(n->args.size());
        for (const auto& e : n->args) items.push_back(Eval(e.get(), env));
        return MakeList(std::move(items), n->pos, n->type == N::kTuple);
      }
      case N::kObject: {
        Value o = Value::MakeObject();
        for (size_t i = 0; i < n->args.size(); ++i) {
          Value k = Eval(n->args[i].get(), env);
          if (!k.IsString()) {
            Fail(n->args[i]->pos, absl::StrCat("dict keys must be strings, got ", TypeName(k)));
          }
          o.obj().Set(k.s(), Eval(n->args2[i].get(), env));
        }
        return o;
      }
      default:
        Fail(n->pos, "this cannot be used as a value here");
    }
  }

  Value EvalUnary(const Node* n, Env* env) {
    Value v = Eval(n->a.get(), env);
    if (n->str == "not") return Value::Bool(!Truthy(v));
    if (v.IsNumericLike()) {
      const double r = (n->str == "-" ? -1 : 1) * v.NumericValue();
      return v.kind == Kind::kFloat ? Value::Float(r) : Value::Int(r);
    }
    Fail(n->pos, absl::StrCat("unary '", n->str, "' needs a number, got ", TypeName(v)));
  }

  Value EvalBinary(const Node* n, Env* env) {
    const std::string& op = n->str;
    Value left = Eval(n->a.get(), env);
    if (op == "and") return Truthy(left) ? Eval(n->b.get(), env) : left;
    if (op == "or") return Truthy(left) ? left : Eval(n->b.get(), env);
    Value right = Eval(n->b.get(), env);
    if (op == "==") return Value::Bool(LooseEquals(left, right));
    if (op == "!=") return Value::Bool(!LooseEquals(left, right));
    const bool in_op = op == "in" || op == "not in";
    if (left.IsNumber() && right.IsNumber() && op != "~" && op != "**") {
      const double a = left.num, b = right.num;
      const bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat;
      auto num = [&](double r) { return is_float ? Value::Float(r) : Value::Int(r); };
      if (op == "+") return num(a + b);
      if (op == "-") return num(a - b);
      if (op == "*") return num(a * b);
      if (op == "/") return Value::Float(a / b);
      if (op == "//") return num(std::floor(a / b));
      if (op == "%") return num(std::fmod(a, b));
      if (op == "<") return Value::Bool(a < b);
      if (op == ">") return Value::Bool(a > b);
      if (op == ">=") return Value::Bool(a >= b);
      if (op == "<=") return Value::Bool(a <= b);
    } else if (left.kind == Kind::kUndefined || right.kind == Kind::kUndefined) {
      if (right.kind == Kind::kUndefined && in_op) return Value::Bool(op == "not in");
      if (op == "~" && left.kind != Kind::kNull && right.kind != Kind::kNull) {
        std::string l = left.kind == Kind::kUndefined ? "" : JsRawString(left, n->pos);
        std::string r = right.kind == Kind::kUndefined ? "" : JsRawString(right, n->pos);
        return MakeString(l + r, n->pos);
      }
      Fail(n->pos, absl::StrCat("cannot apply '", op, "' to an undefined value (", TypeName(left),
                                " ", op, " ", TypeName(right), ")"));
    } else if (left.kind == Kind::kNull || right.kind == Kind::kNull) {
      Fail(n->pos, absl::StrCat("cannot apply '", op, "' to none (", TypeName(left), " ", op, " ",
                                TypeName(right), ")"));
    } else if (op == "~") {
      return MakeString(JsRawString(left, n->pos) + JsRawString(right, n->pos), n->pos);
    } else if (op == "**" && left.IsNumericLike() && right.IsNumericLike()) {
      const double a = left.NumericValue(), b = right.NumericValue();
      if (a == 0 && b < 0) Fail(n->pos, "0.0 cannot be raised to a negative power");
      double r = std::pow(a, b);
      if (std::isinf(b) && std::fabs(a) == 1) r = NAN;
      if (!std::isfinite(r)) Fail(n->pos, "exponentiation result is not a finite real number");
      const bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat || b < 0;
      return is_float ? Value::Float(r) : Value::Int(r);
    } else if (left.IsArray() && right.IsArray()) {
      if (op == "+") {
        const auto& l = left.arr().items;
        const auto& r = right.arr().items;
        CheckSize((l.size() + r.size()) * 8, n->pos);
        std::vector<Value> items;
        items.reserve(l.size() + r.size());
        items.insert(items.end(), l.begin(), l.end());
        items.insert(items.end(), r.begin(), r.end());
        return MakeList(std::move(items), n->pos);
      }
    } else if (right.IsArray()) {
      if (in_op) {
        bool member = false;
        for (const Value& x : right.arr().items) {
          if (StrictEquals(x, left)) {
            member = true;
            break;
          }
        }
        return Value::Bool(op == "in" ? member : !member);
      }
    }
    if ((left.IsString() || right.IsString()) && op == "+") {
      return MakeString(JsRawString(left, n->pos) + JsRawString(right, n->pos), n->pos);
    }
    if (left.IsString() && right.IsString() && in_op) {
      const bool found = absl::StrContains(right.s(), left.s());
      return Value::Bool(op == "in" ? found : !found);
    }
    if (left.IsString() && right.IsObject() && in_op) {
      const bool found = right.obj().Find(left.s()) != nullptr;
      return Value::Bool(op == "in" ? found : !found);
    }
    Fail(n->pos, absl::StrCat("unsupported operator '", op, "' between ", TypeName(left), " and ",
                              TypeName(right)));
  }

  // The character at UTF-16 index i (negative: from the end), as JavaScript's String.at.
  static std::optional<std::string> StringAt(const std::string& s, double index) {
    const double len = static_cast<double>(Utf16Length(s));
    double i = std::trunc(index);
    if (i < 0) i += len;
    if (!(i >= 0 && i < len)) return std::nullopt;
    int64_t unit = 0;
    const auto target = static_cast<int64_t>(i);
    for (size_t k = 0; k < s.size();) {
      const size_t start = k;
      const uint32_t cp = DecodeUtf8(s, &k);
      const int w = cp >= 0x10000 ? 2 : 1;
      if (target < unit + w) {
        if (w == 2) return std::string("\xEF\xBF\xBD");  // half of a surrogate pair
        if (cp == 0xFFFD && k - start == 1) return std::string("\xEF\xBF\xBD");
        return s.substr(start, k - start);
      }
      unit += w;
    }
    return std::nullopt;
  }

  Value EvalMember(const Node* n, Env* env) {
    Value obj = Eval(n->a.get(), env);
    if (n->flag && n->b->type == N::kSlice) return EvalSlice(obj, n->b.get(), env);
    Value prop;
    if (n->flag) {
      prop = Eval(n->b.get(), env);
    } else if (n->b->type == N::kInt) {
      prop = Value::Int(n->b->num);
    } else {
      prop = Value::Str(n->b->str);
    }
    if (obj.IsAttrContainer()) {
      if (!prop.IsString()) {
        Fail(n->pos, absl::StrCat("cannot look up a key of type ", TypeName(prop), " in ",
                                  TypeName(obj), " (keys are strings)"));
      }
      if (const Value* v = obj.obj().Find(prop.s())) return *v;
      if (obj.IsObject()) return Builtin(obj, prop.s());
      return Value::Undefined();
    }
    if (obj.IsArray() || obj.IsString()) {
      if (prop.kind == Kind::kInt) {
        if (obj.IsString()) {
          auto c = StringAt(obj.s(), prop.num);
          return c ? Value::Str(*c) : Value::Undefined();
        }
        const auto& items = obj.arr().items;
        double i = std::trunc(prop.num);
        if (i < 0) i += static_cast<double>(items.size());
        if (!(i >= 0 && i < static_cast<double>(items.size()))) return Value::Undefined();
        return items[static_cast<size_t>(i)];
      }
      if (prop.IsString()) return Builtin(obj, prop.s());
      Fail(n->pos, absl::StrCat("cannot index ", TypeName(obj), " with ", TypeName(prop),
                                " (use an integer or a name)"));
    }
    if (!prop.IsString()) {
      Fail(n->pos, absl::StrCat("cannot index ", TypeName(obj), " with ", TypeName(prop)));
    }
    return Value::Undefined();
  }

  Value EvalSlice(const Value& obj, const Node* s, Env* env) {
    if (!obj.IsArray() && !obj.IsString()) {
      Fail(s->pos, absl::StrCat("only lists and strings can be sliced, got ", TypeName(obj)));
    }
    const Value start = Eval(s->a.get(), env), stop = Eval(s->b.get(), env),
                step = Eval(s->c.get(), env);
    auto check = [&](const Value& v, const char* what) {
      if (v.kind != Kind::kInt && v.kind != Kind::kUndefined) {
        Fail(s->pos, absl::StrCat("slice ", what, " must be an integer, got ", TypeName(v)));
      }
    };
    check(start, "start");
    check(stop, "stop");
    check(step, "step");
    std::vector<std::string> chars;
    const std::vector<Value>* items = nullptr;
    size_t n;
    if (obj.IsArray()) {
      items = &obj.arr().items;
      n = items->size();
    } else {
      chars = CodePoints(obj.s());
      n = chars.size();
    }
    const double len = static_cast<double>(n);
    const double st = step.kind == Kind::kUndefined ? 1 : step.num;
    const int dir = st > 0 ? 1 : st < 0 ? -1 : 0;
    double b, e;
    if (dir >= 0) {
      b = start.kind == Kind::kUndefined ? 0 : start.num;
      b = b < 0 ? std::max(len + b, 0.0) : std::min(b, len);
      e = stop.kind == Kind::kUndefined ? len : stop.num;
      e = e < 0 ? std::max(len + e, 0.0) : std::min(e, len);
    } else {
      b = start.kind == Kind::kUndefined ? len - 1 : start.num;
      b = b < 0 ? std::max(len + b, -1.0) : std::min(b, len - 1);
      e = stop.kind == Kind::kUndefined ? -1 : stop.num;
      e = e < -1 ? std::max(len + e, -1.0) : std::min(e, len - 1);
    }
    std::vector<Value> out_items;
    std::string out_str;
    for (double i = b; dir * i < dir * e; i += st) {
      const auto k = static_cast<size_t>(i);
      if (items) {
        out_items.push_back((*items)[k]);
      } else {
        out_str += chars[k];
      }
    }
    if (items) return MakeList(std::move(out_items), s->pos);
    return MakeString(std::move(out_str), s->pos);
  }

  // ---- methods of strings, lists and dicts (`x.name`)

  Value Method(const Value& self, std::string name,
               std::function<Value(const Value& self, Args& args)> fn) {
    return Value::MakeFunction(name, [self, fn](Args& args, void*) { return fn(self, args); });
  }

  Value Builtin(const Value& obj, const std::string& name) {
    if (obj.IsString()) return StringBuiltin(obj, name);
    if (obj.IsArray()) {
      if (name == "length") return Value::Int(static_cast<double>(obj.arr().items.size()));
      return Value::Undefined();
    }
    if (obj.IsObject()) return ObjectBuiltin(obj, name);
    return Value::Undefined();
  }

  static std::string TitleCase(const std::string& s) {
    // /\b\w/g -> upper case: an ASCII word character after a non-word character.
    std::string out = s;
    auto word = [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    };
    for (size_t i = 0; i < out.size(); ++i) {
      if (word(out[i]) && (i == 0 || !word(out[i - 1])) && out[i] >= 'a' && out[i] <= 'z') {
        out[i] = static_cast<char>(out[i] - 32);
      }
    }
    return out;
  }

  static std::string Capitalize(const std::string& s) {
    if (s.empty()) return s;
    size_t i = 0;
    const uint32_t cp = DecodeUtf8(s, &i);
    if (cp >= 0x10000) return s;  // charAt(0) is half a surrogate pair: unchanged
    return JsUpper(s.substr(0, i)) + s.substr(i);
  }

  static bool StartsOrEnds(const Value& self, const Args& args, bool starts, const char* name) {
    if (args.empty()) Fail(-2, absl::StrCat(name, "() requires at least one argument"));
    auto test = [&](const std::string& p) {
      return starts ? absl::StartsWith(self.s(), p) : absl::EndsWith(self.s(), p);
    };
    const Value& pat = args[0];
    if (pat.IsString()) return test(pat.s());
    if (pat.IsArray()) {
      for (const Value& item : pat.arr().items) {
        if (!item.IsString()) Fail(-2, absl::StrCat(name, "() tuple elements must be strings"));
        if (test(item.s())) return true;
      }
      return false;
    }
    Fail(-2, absl::StrCat(name, "() argument must be a string or tuple of strings"));
  }

  Value Split(const Value& self, Args& args) {
    const Value sep = args.size() > 0 ? args[0] : Value::Null();
    if (!sep.IsString() && sep.kind != Kind::kNull) {
      Fail(-2, "split() separator must be a string or none");
    }
    const Value maxsplit = args.size() > 1 ? args[1] : Value::Int(-1);
    if (maxsplit.kind != Kind::kInt) Fail(-2, "split() maxsplit must be an integer");
    const double max = maxsplit.num;
    std::vector<Value> parts;
    const std::string& s = self.s();
    if (sep.kind == Kind::kNull) {
      absl::string_view text = TrimJs(s, true, false);
      size_t i = 0;
      while (i < text.size()) {
        size_t ws;
        while (i < text.size() && (ws = WhitespaceLenAt(text, i)) > 0) i += ws;
        if (i >= text.size()) break;
        if (max >= 0 && static_cast<double>(parts.size()) >= max) {
          parts.push_back(Value::Str(std::string(text.substr(i))));
          break;
        }
        size_t j = i;
        while (j < text.size() && WhitespaceLenAt(text, j) == 0) {
          DecodeUtf8(text, &j);
        }
        parts.push_back(Value::Str(std::string(text.substr(i, j - i))));
        i = j;
      }
    } else {
      const std::string& d = sep.s();
      if (d.empty()) Fail(-2, "split(): empty separator");
      std::vector<std::string> pieces = absl::StrSplit(s, d);
      if (max >= 0 && static_cast<double>(pieces.size()) > max) {
        const auto keep = static_cast<size_t>(max);
        std::vector<std::string> rest(pieces.begin() + static_cast<std::ptrdiff_t>(keep),
                                      pieces.end());
        pieces.resize(keep);
        pieces.push_back(absl::StrJoin(rest, d));
      }
      for (auto& p : pieces) parts.push_back(Value::Str(std::move(p)));
    }
    return MakeList(std::move(parts), -2);
  }

  Value Replace(const Value& self, Args& args) {
    if (args.size() < 2) Fail(-2, "replace() requires at least two arguments");
    if (!args[0].IsString() || !args[1].IsString()) Fail(-2, "replace() arguments must be strings");
    Value count = Value::Null();
    if (args.size() > 2) {
      if (args[2].IsKwargs()) {
        const Value* c = args[2].obj().Find("count");
        if (c) count = *c;
      } else {
        count = args[2];
      }
    }
    if (count.kind != Kind::kInt && count.kind != Kind::kNull) {
      Fail(-2, "replace() count must be an integer or none");
    }
    const std::string& s = self.s();
    const std::string& from = args[0].s();
    const std::string& to = args[1].s();
    if (count.kind == Kind::kInt && count.num == 0) return self;
    double remaining = (count.kind == Kind::kNull || count.num < 0) ? INFINITY : count.num;
    std::string out;
    if (from.empty()) {
      // Matches at every code point boundary, the start and the end included.
      size_t i = 0;
      while (true) {
        if (remaining > 0) {
          out += to;
          --remaining;
          CheckSize(out.size(), -2);
        }
        if (i >= s.size()) break;
        const size_t start = i;
        DecodeUtf8(s, &i);
        out.append(s, start, i - start);
      }
    } else {
      size_t i = 0;
      while (true) {
        const size_t f = remaining > 0 ? s.find(from, i) : std::string::npos;
        if (f == std::string::npos) {
          out.append(s, i, std::string::npos);
          break;
        }
        out.append(s, i, f - i);
        out += to;
        --remaining;
        i = f + from.size();
        CheckSize(out.size(), -2);
      }
    }
    return MakeString(std::move(out), -2);
  }

  Value StringBuiltin(const Value& str, const std::string& name) {
    if (name == "length") return Value::Int(static_cast<double>(Utf16Length(str.s())));
    if (name == "upper")
      return Method(str, name, [](const Value& s, Args&) { return Value::Str(JsUpper(s.s())); });
    if (name == "lower")
      return Method(str, name, [](const Value& s, Args&) { return Value::Str(JsLower(s.s())); });
    if (name == "title")
      return Method(str, name, [](const Value& s, Args&) { return Value::Str(TitleCase(s.s())); });
    if (name == "capitalize") {
      return Method(str, name, [](const Value& s, Args&) { return Value::Str(Capitalize(s.s())); });
    }
    // As the oracle: strip/lstrip/rstrip ignore their argument and strip whitespace.
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool left = name != "rstrip", right = name != "lstrip";
      return Method(str, name, [left, right](const Value& s, Args&) {
        return Value::Str(std::string(TrimJs(s.s(), left, right)));
      });
    }
    if (name == "startswith" || name == "endswith") {
      const bool starts = name == "startswith";
      return Method(str, name, [starts](const Value& s, Args& a) {
        return Value::Bool(StartsOrEnds(s, a, starts, starts ? "startswith" : "endswith"));
      });
    }
    if (name == "split")
      return Method(str, name, [this](const Value& s, Args& a) { return Split(s, a); });
    if (name == "replace")
      return Method(str, name, [this](const Value& s, Args& a) { return Replace(s, a); });
    return Value::Undefined();
  }

  Value Items(const Value& o) {
    std::vector<Value> items;
    for (const auto& [k, v] : o.obj().entries)
      items.push_back(Value::MakeArray({Value::Str(k), v}));
    return MakeList(std::move(items), -2);
  }

  Value ObjectBuiltin(const Value& obj, const std::string& name) {
    if (name == "get") {
      return Method(obj, name, [](const Value& o, Args& a) {
        if (a.empty() || !a[0].IsString()) {
          Fail(-2, absl::StrCat("get() key must be a string, got ",
                                a.empty() ? "nothing" : TypeName(a[0])));
        }
        if (const Value* v = o.obj().Find(a[0].s())) return *v;
        return a.size() > 1 ? a[1] : Value::Null();
      });
    }
    if (name == "items")
      return Method(obj, name, [this](const Value& o, Args&) { return Items(o); });
    if (name == "keys") {
      return Method(obj, name, [this](const Value& o, Args&) {
        std::vector<Value> keys;
        for (const auto& [k, v] : o.obj().entries) keys.push_back(Value::Str(k));
        return MakeList(std::move(keys), -2);
      });
    }
    if (name == "values") {
      return Method(obj, name, [this](const Value& o, Args&) {
        std::vector<Value> values;
        for (const auto& [k, v] : o.obj().entries) values.push_back(v);
        return MakeList(std::move(values), -2);
      });
    }
    if (name == "dictsort") {
      return Method(obj, name, [this](const Value& o, Args& a) { return DictSort(o, a); });
    }
    return Value::Undefined();
  }

  // ---- comparisons for sort / dictsort

  // The oracle's compareRuntimeValues; throws for values it cannot compare.
  static int Compare(const Value& a, const Value& b, bool case_sensitive, int64_t pos) {
    const bool an = a.kind == Kind::kNull, bn = b.kind == Kind::kNull;
    if (an && bn) return 0;
    if (an || bn) Fail(pos, absl::StrCat("cannot compare ", TypeName(a), " with ", TypeName(b)));
    const bool au = a.kind == Kind::kUndefined, bu = b.kind == Kind::kUndefined;
    if (au && bu) return 0;
    if (au || bu) Fail(pos, absl::StrCat("cannot compare ", TypeName(a), " with ", TypeName(b)));
    if (a.IsNumericLike() && b.IsNumericLike()) {
      const double x = a.NumericValue(), y = b.NumericValue();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.kind != b.kind || a.IsTuple() != b.IsTuple() || a.IsKwargs() != b.IsKwargs()) {
      Fail(pos,
           absl::StrCat("cannot compare different types: ", TypeName(a), " and ", TypeName(b)));
    }
    if (a.IsString()) {
      std::string x = case_sensitive ? a.s() : JsLower(a.s());
      std::string y = case_sensitive ? b.s() : JsLower(b.s());
      return x < y ? -1 : x > y ? 1 : 0;
    }
    Fail(pos, absl::StrCat("cannot compare values of type ", TypeName(a)));
  }

  // A stable sort by Compare. Every pair is checked to be comparable first, so that the
  // comparator used by std::stable_sort never throws (a sort of two or more items of mixed
  // types always compares some mixed pair, so the oracle fails on those too).
  template <typename KeyFn>
  void SortValues(std::vector<Value>* items, KeyFn key, bool case_sensitive, bool reverse,
                  int64_t pos) {
    if (items->size() < 2) return;
    Step(static_cast<int64_t>(items->size()) * 8, pos);
    std::vector<Value> keys;
    keys.reserve(items->size());
    for (const Value& v : *items) keys.push_back(key(v));
    for (size_t i = 1; i < keys.size(); ++i) Compare(keys[0], keys[i], case_sensitive, pos);
    std::vector<size_t> order(items->size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      const int c = Compare(keys[x], keys[y], case_sensitive, pos);
      return reverse ? c > 0 : c < 0;
    });
    std::vector<Value> sorted;
    sorted.reserve(items->size());
    for (size_t i : order) sorted.push_back((*items)[i]);
    *items = std::move(sorted);
  }

  Value DictSort(const Value& o, Args& a) {
    Object none;
    Args positional = a;
    const Object* kw = &none;
    Value kw_holder;
    if (!positional.empty() && positional.back().IsKwargs()) {
      kw_holder = positional.back();
      kw = &kw_holder.obj();
      positional.pop_back();
    }
    const Value* cs = ArgOr(positional, 0, *kw, "case_sensitive");
    const Value* by = ArgOr(positional, 1, *kw, "by");
    const Value* rev = ArgOr(positional, 2, *kw, "reverse");
    if (cs && cs->kind != Kind::kBool) Fail(-2, "dictsort: case_sensitive must be a boolean");
    if (by && !by->IsString()) Fail(-2, "dictsort: by must be a string");
    if (by && by->s() != "key" && by->s() != "value") {
      Fail(-2, "dictsort: by must be either 'key' or 'value'");
    }
    if (rev && rev->kind != Kind::kBool) Fail(-2, "dictsort: reverse must be a boolean");
    const size_t index = (by && by->s() == "value") ? 1 : 0;
    std::vector<Value> items = Items(o).arr().items;
    SortValues(
        &items, [index](const Value& item) { return item.arr().items[index]; }, cs && cs->b,
        rev && rev->b, -2);
    return MakeList(std::move(items), -2);
  }

  // ---- tests (`x is name`, and the tests of selectattr / rejectattr)

  static bool RunTest(const std::string& name, const Value& v, const Value* arg, int64_t pos) {
    if (name == "boolean") return v.kind == Kind::kBool;
    if (name == "callable") return v.kind == Kind::kFunction;
    if (name == "odd" || name == "even") {
      if (v.kind != Kind::kInt)
        Fail(pos, absl::StrCat("cannot test '", name, "' on ", TypeName(v)));
      const bool odd = std::fmod(v.num, 2) != 0;
      return name == "odd" ? odd : !odd;
    }
    if (name == "false") return v.kind == Kind::kBool && !v.b;
    if (name == "true") return v.kind == Kind::kBool && v.b;
    if (name == "none") return v.kind == Kind::kNull;
    if (name == "string") return v.IsString();
    if (name == "number") return v.IsNumber();
    if (name == "integer") return v.kind == Kind::kInt;
    if (name == "iterable") return (v.IsArray() && !v.IsTuple()) || v.IsString();
    if (name == "mapping") return v.IsObject();
    if (name == "sequence") return v.IsArray() || v.IsObject() || v.IsString();
    if (name == "lower") return v.IsString() && v.s() == JsLower(v.s());
    if (name == "upper") return v.IsString() && v.s() == JsUpper(v.s());
    if (name == "defined") return v.kind != Kind::kUndefined;
    if (name == "undefined") return v.kind == Kind::kUndefined;
    if (name == "equalto" || name == "eq") {
      if (!arg) Fail(pos, absl::StrCat("test '", name, "' needs a value to compare with"));
      return StrictEquals(v, *arg);
    }
    Fail(pos, absl::StrCat("unknown test '", name,
                           "' (supported: defined, undefined, none, boolean, true, false, string, "
                           "number, integer, iterable, mapping, sequence, callable, odd, even, "
                           "lower, upper, equalto, eq)"));
  }

  // ---- filters

  [[noreturn]] static void UnknownFilter(const std::string& name, const Value& v, int64_t pos) {
    Fail(pos, absl::StrCat("unknown filter '", name, "' for ", TypeName(v)));
  }

  static std::string Indent(const std::string& s, const std::string& indent, bool first,
                            bool blank) {
    std::vector<std::string> lines = absl::StrSplit(s, '\n');
    for (size_t i = 0; i < lines.size(); ++i) {
      if ((!first && i == 0) || (!blank && lines[i].empty())) continue;
      lines[i] = indent + lines[i];
    }
    return absl::StrJoin(lines, "\n");
  }

  static std::string JoinRaw(const std::vector<Value>& items, const std::string& sep, int64_t pos) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += sep;
      const Value& x = items[i];
      if (x.kind != Kind::kUndefined && x.kind != Kind::kNull) out += JsRawString(x, pos);
    }
    return out;
  }

  Value FilterByName(const Value& v, const std::string& f, int64_t pos) {
    if (f == "safe") return v;
    if (f == "tojson") {
      std::string out;
      ToJson(v, JsonOptions(), 0, true, pos, opt_.max_output_bytes, &out);
      return MakeString(std::move(out), pos);
    }
    if (v.IsArray()) {
      const auto& items = v.arr().items;
      if (f == "list") return v;
      if (f == "first") return items.empty() ? Value::Undefined() : items.front();
      if (f == "last") return items.empty() ? Value::Undefined() : items.back();
      if (f == "length") return Value::Int(static_cast<double>(items.size()));
      if (f == "reverse") return MakeList(std::vector<Value>(items.rbegin(), items.rend()), pos);
      if (f == "sort") {
        std::vector<Value> sorted = items;
        SortValues(
            &sorted, [](const Value& x) { return x; }, false, false, pos);
        return MakeList(std::move(sorted), pos);
      }
      if (f == "join") return MakeString(JoinRaw(items, "", pos), pos);
      if (f == "string") return MakeString(RenderString(v, pos), pos);
      if (f == "unique") {
        std::vector<Value> out;
        for (const Value& x : items) {
          Step(static_cast<int64_t>(out.size()), pos);
          bool seen = false;
          for (const Value& y : out) {
            const bool nan = x.IsNumber() && y.IsNumber() && std::isnan(x.num) && std::isnan(y.num);
            if (nan || StrictEquals(x, y)) {
              seen = true;
              break;
            }
          }
          if (!seen) out.push_back(x);
        }
        return MakeList(std::move(out), pos);
      }
      UnknownFilter(f, v, pos);
    }
    if (v.IsString()) {
      const std::string& s = v.s();
      if (f == "length") return Value::Int(static_cast<double>(Utf16Length(s)));
      if (f == "upper") return MakeString(JsUpper(s), pos);
      if (f == "lower") return MakeString(JsLower(s), pos);
      if (f == "title") return MakeString(TitleCase(s), pos);
      if (f == "capitalize") return MakeString(Capitalize(s), pos);
      if (f == "trim") return MakeString(std::string(TrimJs(s, true, true)), pos);
      if (f == "indent") return MakeString(Indent(s, "    ", false, false), pos);
      if (f == "join" || f == "string") return v;
      if (f == "int") {
        auto x = JsParseInt(s);
        return Value::Int(x ? *x + 0.0 : 0);
      }
      if (f == "float") {
        auto x = JsParseFloat(s);
        return Value::Float(x ? *x : 0);
      }
      UnknownFilter(f, v, pos);
    }
    if (v.IsNumber()) {
      if (f == "abs")
        return v.kind == Kind::kInt ? Value::Int(std::fabs(v.num)) : Value::Float(std::fabs(v.num));
      if (f == "int") return Value::Int(std::trunc(v.num) + 0.0);
      if (f == "float") return Value::Float(v.num);
      if (f == "string") return Value::Str(RenderString(v, pos));
      UnknownFilter(f, v, pos);
    }
    if (v.IsObject()) {
      if (f == "items") return Items(v);
      if (f == "length") return Value::Int(static_cast<double>(v.obj().entries.size()));
      Value b = ObjectBuiltin(v, f);
      if (b.kind == Kind::kFunction) {
        Args none;
        return Invoke(b, none, nullptr, pos);
      }
      UnknownFilter(f, v, pos);
    }
    if (v.kind == Kind::kBool) {
      if (f == "bool") return v;
      if (f == "int") return Value::Int(v.b ? 1 : 0);
      if (f == "float") return Value::Float(v.b ? 1 : 0);
      if (f == "string") return Value::Str(v.b ? "true" : "false");
      UnknownFilter(f, v, pos);
    }
    Fail(pos, absl::StrCat("cannot apply filter '", f, "' to ", TypeName(v),
                           v.kind == Kind::kUndefined
                               ? " (use x | default('...') for values that may be missing)"
                               : ""));
  }

  Value ApplyFilter(const Value& v, const Node* filter, Env* env) {
    if (filter->type == N::kIdent) return FilterByName(v, filter->str, filter->pos);
    if (filter->type != N::kCall || filter->a->type != N::kIdent) {
      Fail(filter->pos, "a filter must be a name or a call like name(args)");
    }
    const std::string& f = filter->a->str;
    const int64_t pos = filter->pos;
    if (f == "tojson") {
      auto [args, kwv] = EvaluateArguments(filter->args, env);
      const Object& kw = kwv.obj();
      JsonOptions o;
      if (const Value* x = kw.Find("indent")) {
        if (x->kind != Kind::kInt && x->kind != Kind::kNull)
          Fail(pos, "tojson: indent must be an integer");
        if (x->kind == Kind::kInt) {
          if (x->num < 0 || x->num > 1024) Fail(pos, "tojson: indent must be between 0 and 1024");
          o.indent = static_cast<int64_t>(x->num);
        }
      }
      if (const Value* x = kw.Find("ensure_ascii")) {
        if (x->kind != Kind::kBool) Fail(pos, "tojson: ensure_ascii must be a boolean");
        o.ensure_ascii = x->b;
      }
      if (const Value* x = kw.Find("sort_keys")) {
        if (x->kind != Kind::kBool) Fail(pos, "tojson: sort_keys must be a boolean");
        o.sort_keys = x->b;
      }
      if (const Value* x = kw.Find("separators")) {
        if (x->IsArray()) {
          const auto& sep = x->arr().items;
          if (sep.size() != 2 || !sep[0].IsString() || !sep[1].IsString()) {
            Fail(pos, "tojson: separators must be a tuple of two strings");
          }
          o.has_separators = true;
          o.item_sep = sep[0].s();
          o.key_sep = sep[1].s();
        } else if (x->kind != Kind::kNull) {
          Fail(pos, "tojson: separators must be a tuple of two strings");
        }
      }
      std::string out;
      ToJson(v, o, 0, true, pos, opt_.max_output_bytes, &out);
      return MakeString(std::move(out), pos);
    }
    if (f == "join") {
      std::vector<Value> raw;
      if (v.IsString()) {
        for (auto& c : CodePoints(v.s())) raw.push_back(Value::Str(c));
      } else if (v.IsArray()) {
        raw = v.arr().items;
      } else {
        Fail(pos, absl::StrCat("cannot apply filter 'join' to ", TypeName(v)));
      }
      auto [args, kwv] = EvaluateArguments(filter->args, env);
      const Value* sep = ArgOr(args, 0, kwv.obj(), "separator");
      if (sep && !sep->IsString()) Fail(pos, "join: separator must be a string");
      return MakeString(JoinRaw(raw, sep ? sep->s() : "", pos), pos);
    }
    if (f == "int" || f == "float") {
      auto [args, kwv] = EvaluateArguments(filter->args, env);
      const Value* def = ArgOr(args, 0, kwv.obj(), "default");
      const bool is_int = f == "int";
      Value fallback = def ? *def : (is_int ? Value::Int(0) : Value::Float(0));
      if (v.IsString()) {
        auto x = is_int ? JsParseInt(v.s()) : JsParseFloat(v.s());
        if (!x) return fallback;
        return is_int ? Value::Int(*x) : Value::Float(*x);
      }
      if (v.IsNumber()) return is_int ? Value::Int(std::trunc(v.num) + 0.0) : Value::Float(v.num);
      if (v.kind == Kind::kBool)
        return is_int ? Value::Int(v.b ? 1 : 0) : Value::Float(v.b ? 1 : 0);
      Fail(pos, absl::StrCat("cannot apply filter '", f, "' to ", TypeName(v)));
    }
    if (f == "default") {
      auto [args, kwv] = EvaluateArguments(filter->args, env);
      Value def = args.size() > 0 ? args[0] : Value::Str("");
      const Value* boolean = args.size() > 1 ? &args[1] : kwv.obj().Find("boolean");
      if (boolean && boolean->kind != Kind::kBool) Fail(pos, "default: the flag must be a boolean");
      if (v.kind == Kind::kUndefined || (boolean && boolean->b && !Truthy(v))) return def;
      return v;
    }
    if (v.IsArray()) {
      const auto& items = v.arr().items;
      if (f == "sort") {
        auto [args, kwv] = EvaluateArguments(filter->args, env);
        const Value* rev = ArgOr(args, 0, kwv.obj(), "reverse");
        const Value* cs = ArgOr(args, 1, kwv.obj(), "case_sensitive");
        const Value* attr = ArgOr(args, 2, kwv.obj(), "attribute");
        if (rev && rev->kind != Kind::kBool) Fail(pos, "sort: reverse must be a boolean");
        if (cs && cs->kind != Kind::kBool) Fail(pos, "sort: case_sensitive must be a boolean");
        if (attr && !attr->IsString() && attr->kind != Kind::kInt && attr->kind != Kind::kNull) {
          Fail(pos, "sort: attribute must be a string, an integer or none");
        }
        std::string path;
        const bool by_attr = attr && attr->kind != Kind::kNull;
        if (by_attr) path = attr->IsString() ? attr->s() : JsNumberToString(attr->num);
        std::vector<Value> sorted = items;
        SortValues(
            &sorted, [&](const Value& x) { return by_attr ? AttributePath(x, path) : x; },
            cs && cs->b, rev && rev->b, pos);
        return MakeList(std::move(sorted), pos);
      }
      if (f == "selectattr" || f == "rejectattr") {
        const bool select = f == "selectattr";
        for (const Value& item : items) {
          if (!item.IsAttrContainer()) {
            Fail(pos, absl::StrCat(f, " can only be applied to a list of dicts"));
          }
        }
        for (const auto& a : filter->args) {
          if (a->type != N::kString) {
            Fail(a->pos, absl::StrCat("the arguments of ", f, " must be string literals"));
          }
        }
        std::vector<Value> args;
        for (const auto& a : filter->args) args.push_back(Eval(a.get(), env));
        if (args.empty()) Fail(pos, absl::StrCat(f, " needs an attribute name"));
        const std::string& attr = args[0].s();
        std::vector<Value> out;
        for (const Value& item : items) {
          Step(1, pos);
          const Value* a = item.obj().Find(attr);
          bool r = false;
          if (a) {
            r = args.size() > 1
                    ? RunTest(args[1].s(), *a, args.size() > 2 ? &args[2] : nullptr, pos)
                    : Truthy(*a);
          }
          if (select ? r : !r) out.push_back(item);
        }
        return MakeList(std::move(out), pos);
      }
      if (f == "map") {
        auto [args, kwv] = EvaluateArguments(filter->args, env);
        const Value* attr = kwv.obj().Find("attribute");
        if (!attr) {
          Fail(pos, "map is only supported with attribute='name' (map('filter') is not)");
        }
        if (!attr->IsString()) Fail(pos, "map: attribute must be a string");
        const Value* def = kwv.obj().Find("default");
        std::vector<Value> out;
        for (const Value& item : items) {
          if (!item.IsAttrContainer()) Fail(pos, "map: the items must be dicts");
          Value x = AttributePath(item, attr->s());
          out.push_back(x.kind == Kind::kUndefined && def ? *def : x);
        }
        return MakeList(std::move(out), pos);
      }
      UnknownFilter(f, v, pos);
    }
    if (v.IsString()) {
      if (f == "indent") {
        auto [args, kwv] = EvaluateArguments(filter->args, env);
        const Value* width = ArgOr(args, 0, kwv.obj(), "width");
        const Value* first = ArgOr(args, 1, kwv.obj(), "first");
        const Value* blank = ArgOr(args, 2, kwv.obj(), "blank");
        std::string indent = "    ";
        if (width) {
          if (width->IsString()) {
            indent = width->s();
          } else if (width->kind == Kind::kInt) {
            const double w = std::max(0.0, width->num);
            CheckSize(static_cast<size_t>(std::min(w, 1e12)), pos);
            indent = std::string(static_cast<size_t>(w), ' ');
          } else {
            Fail(pos, "indent: width must be an integer or a string");
          }
        }
        std::string out = Indent(v.s(), indent, first && Truthy(*first), blank && Truthy(*blank));
        return MakeString(std::move(out), pos);
      }
      if (f == "replace") {
        auto [args, kwv] = EvaluateArguments(filter->args, env);
        args.push_back(kwv);
        return Invoke(StringBuiltin(v, "replace"), args, env, pos);
      }
      UnknownFilter(f, v, pos);
    }
    if (v.IsObject()) {
      Value b = ObjectBuiltin(v, f);
      if (b.kind == Kind::kFunction) {
        Args args = EvaluateCallArguments(filter->args, env);
        return Invoke(b, args, env, pos);
      }
      UnknownFilter(f, v, pos);
    }
    Fail(pos, absl::StrCat("cannot apply filter '", f, "' to ", TypeName(v)));
  }

  // a.b.0.c on dicts, namespaces and lists (map / sort attribute=).
  static Value AttributePath(const Value& item, const std::string& path) {
    Value v = item;
    for (absl::string_view part : absl::StrSplit(path, '.')) {
      if (v.IsAttrContainer()) {
        const Value* x = v.obj().Find(part);
        v = x ? *x : Value::Undefined();
      } else if (v.IsArray()) {
        auto idx = JsParseInt(part);
        const auto& items = v.arr().items;
        if (idx && *idx >= 0 && *idx < static_cast<double>(items.size())) {
          v = items[static_cast<size_t>(*idx)];
        } else {
          return Value::Undefined();
        }
      } else {
        return Value::Undefined();
      }
    }
    return v;
  }
};

}  // namespace

std::string RenderProgram(const Program& prog, const nlohmann::ordered_json& context) {
  Interp interp(prog);
  return interp.Run(context);
}

}  // namespace st::jinja::internal
