// Tests of the Jinja engine and chat templates (infer/chat/): byte-identical output with Hugging
// Face's JavaScript renderer on every pair of tests/data/chat/golden.json (Qwen3's real template
// and our own), unit tests per construct, errors with line and column, and resource limits.
#include "infer/chat/jinja.h"

#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "infer/chat/chat_template.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace st {
namespace {

using ojson = nlohmann::ordered_json;

const char kCasesPath[] = ST_SOURCE_DIR "/tests/data/chat/cases.json";
const char kGoldenPath[] = ST_SOURCE_DIR "/tests/data/chat/golden.json";
const char kChatDir[] = ST_SOURCE_DIR "/tests/data/chat";
const char kQwenConfigPath[] = ST_BINARY_DIR "/tokenizers/qwen3/tokenizer_config.json";

using test_util::FileContents;

// Renders `source` with `context` (a JSON object text); "ERROR: <message>" on failure.
std::string R(const std::string& source, const std::string& context = "{}") {
  absl::StatusOr<jinja::Template> t = jinja::Template::Parse(source);
  if (!t.ok()) return "ERROR: " + std::string(t.status().message());
  absl::StatusOr<std::string> out = t->Render(ojson::parse(context));
  if (!out.ok()) return "ERROR: " + std::string(out.status().message());
  return *out;
}

// The error message of rendering `source` ("" when it renders).
std::string Err(const std::string& source, const std::string& context = "{}") {
  const std::string r = R(source, context);
  return r.rfind("ERROR: ", 0) == 0 ? r.substr(7) : "";
}

bool HasLineColumn(const std::string& message) {
  return std::regex_search(message, std::regex("^chat template:[0-9]+:[0-9]+: "));
}

// ---- the golden pairs

class JinjaGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string cases = FileContents(kCasesPath), golden = FileContents(kGoldenPath);
    ASSERT_FALSE(cases.empty()) << "cannot read " << kCasesPath;
    ASSERT_FALSE(golden.empty()) << "cannot read " << kGoldenPath;
    cases_ = ojson::parse(cases);
    golden_ = ojson::parse(golden);
  }

  static const ojson& Find(const ojson& list, const std::string& name) {
    for (const ojson& e : list) {
      if (e.at("name") == name) return e;
    }
    ADD_FAILURE() << "no entry named " << name;
    static const ojson kEmpty = ojson::object();
    return kEmpty;
  }

  std::string Source(const ojson& t) {
    if (t.contains("file"))
      return FileContents(absl::StrCat(kChatDir, "/", t.at("file").get<std::string>()));
    if (t.contains("inline")) return t.at("inline").get<std::string>();
    EXPECT_EQ(t.value("source", ""), "qwen3");
    const std::string config = FileContents(kQwenConfigPath);
    if (config.empty()) return "";
    return ojson::parse(config).at("chat_template").get<std::string>();
  }

  // Checks every pair of the templates for which `want(name)` is true; returns how many.
  template <typename Pred>
  int CheckPairs(Pred want) {
    int checked = 0;
    for (const ojson& pair : golden_.at("pairs")) {
      const std::string tname = pair.at("template");
      if (!want(tname)) continue;
      const ojson& t = Find(cases_.at("templates"), tname);
      const ojson& conv = Find(cases_.at("conversations"), pair.at("conversation"));
      const ojson& opts = Find(cases_.at("option_sets"), pair.at("options"));
      ChatRenderInput in;
      in.messages = conv.at("messages");
      in.tools = conv.value("tools", ojson());
      in.documents = conv.value("documents", ojson());
      in.add_generation_prompt = opts.value("add_generation_prompt", false);
      in.bos_token = t.value("bos_token", "");
      in.eos_token = t.value("eos_token", "");
      in.kwargs = opts.value("kwargs", ojson::object());
      const std::string label =
          absl::StrCat(tname, " x ", pair.at("conversation").get<std::string>(), " x ",
                       pair.at("options").get<std::string>());
      const std::string source = Source(t);
      absl::StatusOr<std::string> got = RenderChatTemplate(source, in);
      if (pair.contains("output")) {
        if (!got.ok()) {
          ADD_FAILURE() << label << ": " << got.status();
        } else {
          EXPECT_EQ(*got, pair.at("output").get<std::string>()) << label;
        }
      } else {
        EXPECT_FALSE(got.ok()) << label << ": the oracle fails (" << pair.at("error")
                               << ") but we rendered:\n"
                               << *got;
        if (!got.ok()) {
          EXPECT_TRUE(HasLineColumn(std::string(got.status().message())))
              << label << ": " << got.status();
        }
      }
      ++checked;
    }
    return checked;
  }

  ojson cases_, golden_;
};

TEST_F(JinjaGolden, OwnTemplatesMatchTheOracle) {
  const int n = CheckPairs([](const std::string& name) { return name != "qwen3"; });
  EXPECT_GT(n, 100);
}

TEST_F(JinjaGolden, Qwen3TemplateMatchesTheOracle) {
  ASSERT_FALSE(FileContents(kQwenConfigPath).empty())
      << "missing " << kQwenConfigPath
      << "\n(the ctest fixture fetch_tokenizers writes it; by hand: bash "
         "scripts/fetch_tokenizers.sh BUILD/tokenizers)";
  const int n = CheckPairs([](const std::string& name) { return name == "qwen3"; });
  EXPECT_GE(n, 40);
}

TEST_F(JinjaGolden, RaiseExceptionCarriesTheMessage) {
  const ojson& t = Find(cases_.at("templates"), "mistral_style");
  ChatRenderInput in;
  in.messages =
      ojson::parse(R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  absl::StatusOr<std::string> got = RenderChatTemplate(Source(t), in);
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(got.status()));
  EXPECT_NE(got.status().message().find(
                "raise_exception: After the optional system message, conversation roles must "
                "alternate user/assistant/user/assistant/..."),
            std::string::npos)
      << got.status();
  EXPECT_TRUE(HasLineColumn(std::string(got.status().message()))) << got.status();
}

// ---- constructs

TEST(JinjaTest, TextAndExpressions) {
  EXPECT_EQ(R("hello"), "hello");
  EXPECT_EQ(R("hello\n"), "hello");  // one trailing newline is dropped
  EXPECT_EQ(R("{{ 1 + 2 }}|{{ 'a' ~ 1 }}|{{ x }}", R"({"x": "v"})"), "3|a1|v");
  EXPECT_EQ(R("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 6 / 3 }}"),
            "3 -4 -1 3.5 1024 2.0");
  EXPECT_EQ(R("{{ 2.0 }} {{ 1.5 + 1.5 }} {{ 0.1 + 0.2 }} {{ 2 ** 70 }} {{ -0.0 }}"),
            "2.0 3.0 0.30000000000000004 1.1805916207174113e+21 -0.0");
  EXPECT_EQ(R("{{ true }} {{ none }}|{{ undefined }}|{{ [1, 'a', none] }} {{ {'k': 1} }}"),
            "true ||[1, \"a\", null] {\"k\": 1}");
  EXPECT_EQ(R("{{ 'a' if x else 'b' }} {{ 'a' if not x }}|{{ 1 if false else 2 if true else 3 }}"),
            "b a|2");
  EXPECT_EQ(R("{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'x' not in y }}"),
            "true true true true");
  EXPECT_EQ(R("{{ '1' == 1 }} {{ none == undefined }} {{ [1] == [1] }}"), "true true false");
  EXPECT_EQ(R("{{ 'a' \"b\" }} {{ '\\u00e9\\x41\\n' }}"), "ab éA\n");
  EXPECT_EQ(R("{{ -x|abs }}", R"({"x": 3})"), "3");  // the oracle: unary minus binds tighter
}

TEST(JinjaTest, MembersAndSlices) {
  const std::string ctx = R"({"l": [1, 2, 3, 4, 5], "s": "héllo", "d": {"a": {"b": [7, 8]}}})";
  EXPECT_EQ(R("{{ l[0] }} {{ l[-1] }} {{ d.a.b[1] }} {{ d['a']['b'].0 }} {{ s[1] }}", ctx),
            "1 5 8 7 é");
  EXPECT_EQ(R("{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[1:4:2] }} {{ s[::-1] }}", ctx),
            "[2, 3, 4, 5] [1, 2, 3, 4] [5, 4, 3, 2, 1] [2, 4] olléh");
  EXPECT_EQ(R("[{{ l[9] }}] [{{ d.x }}] [{{ d.x.y }}] {{ d.x is defined }}", ctx),
            "[] [] [] false");
}

TEST(JinjaTest, Whitespace) {
  EXPECT_EQ(R("a  {%- if true %} b {% endif -%}  c"), "a b c");
  EXPECT_EQ(R("{% if true %}\nx\n{% endif %}\ny"), "x\ny");  // trim_blocks
  EXPECT_EQ(R("  {% if true %}x{% endif %}"), "x");          // lstrip_blocks
  EXPECT_EQ(R("  {{ 'x' }}"), "  x");                        // not for expressions
  EXPECT_EQ(R("a {#- c -#} b {# c #}\nd"), "ab d");
  EXPECT_EQ(R("{% generation %}g{% endgeneration %}"), "g");
  jinja::Options raw;
  raw.trim_blocks = false;
  raw.lstrip_blocks = false;
  absl::StatusOr<jinja::Template> t = jinja::Template::Parse("  {% if true %}\nx{% endif %}", raw);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->Render(ojson::object()), "  \nx");
}

TEST(JinjaTest, StatementsAndLoops) {
  EXPECT_EQ(
      R("{% for x in [1, 2, 3] %}{{ loop.index }}{{ x }}{{ ',' if not loop.last }}{% endfor %}"),
      "11,22,33");
  EXPECT_EQ(R("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}"), "a1b2");
  EXPECT_EQ(R("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for x in range(5) if x is odd %}{{ x }}{% endfor %}"), "13");
  EXPECT_EQ(R("{% for x in range(9) %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "012");
  EXPECT_EQ(R("{% for x in range(3) %}<{% if x == 1 %}{% continue %}{% endif %}>{% endfor %}"),
            "<><>");  // as the oracle, the text of an iteration left by continue is dropped
  EXPECT_EQ(R("{% set ns = namespace(n=0) %}{% for x in range(4) %}{% set ns.n = ns.n + x %}"
              "{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(R("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c %}[{{ a }}]{% endset %}{{ c }}"),
            "12[1]");
  EXPECT_EQ(R("{% if x %}1{% elif y %}2{% else %}3{% endif %}", R"({"y": true})"), "2");
  EXPECT_EQ(R("{% macro m(a, b=2) %}{{ a }}+{{ b }}{% endmacro %}{{ m(1) }} {{ m(1, b=5) }}"),
            "1+2 1+5");
  EXPECT_EQ(R("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}"),
            "<in>");
  EXPECT_EQ(R("{% filter upper %}abc{% endfilter %}"), "ABC");
}

TEST(JinjaTest, Filters) {
  EXPECT_EQ(R("{{ ' x ' | trim }} {{ [1, 2] | length }} {{ ['a', 'b'] | join(', ') }}"),
            "x 2 a, b");
  EXPECT_EQ(R("{{ x | default('d') }} {{ '' | default('e', true) }} {{ 'AbC' | lower }}"),
            "d e abc");
  EXPECT_EQ(R("{{ 'a-b' | replace('-', '+') }} {{ [3, 1] | first }} {{ [3, 1] | last }}"),
            "a+b 3 1");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 2} | tojson }} {{ 'ü\"' | tojson }} {{ [1] | tojson(indent=2) }}"),
            "{\"b\": 1, \"a\": 2} \"ü\\\"\" [\n  1\n]");
  EXPECT_EQ(R("{{ xs | selectattr('on') | map(attribute='n') | list }} "
              "{{ xs | rejectattr('on') | map(attribute='n') | join }}",
              R"({"xs": [{"n": "a", "on": true}, {"n": "b"}]})"),
            "[\"a\"] b");
  EXPECT_EQ(R("{% for k, v in {'x': 1} | items %}{{ k }}={{ v }}{% endfor %}"), "x=1");
  EXPECT_EQ(R("{{ [3, 1, 2] | sort }} {{ [1, 1, 2] | unique }} {{ 'abc' | upper }}"),
            "[1, 2, 3] [1, 2] ABC");
}

TEST(JinjaTest, ContextKeepsKeyOrderLikeJavaScript) {
  EXPECT_EQ(R("{{ d | tojson }}", R"({"d": {"b": 1, "a": 2, "10": 3, "2": 4}})"),
            "{\"2\": 4, \"10\": 3, \"b\": 1, \"a\": 2}");
  EXPECT_EQ(R("{{ x }} {{ x is integer }}", R"({"x": 2.0})"), "2 true");
}

TEST(JinjaTest, Globals) {
  EXPECT_EQ(R("{{ range(3) }} {{ range(1, 7, 2) }}"), "[0, 1, 2] [1, 3, 5]");
  const std::string year = R("{{ strftime_now('%Y') }}");
  EXPECT_TRUE(std::regex_match(year, std::regex("[0-9]{4}"))) << year;
  const std::string e = Err("{{ raise_exception('bad role') }}");
  EXPECT_EQ(e, "chat template:1:4: raise_exception: bad role");
}

TEST(JinjaTest, ChatTemplateContext) {
  ChatRenderInput in;
  in.messages = ojson::parse(R"([{"role": "user", "content": "hi"}])");
  in.eos_token = "</s>";
  in.kwargs = {{"enable_thinking", false}};
  absl::StatusOr<std::string> out = RenderChatTemplate(
      "{{ messages[0].content }} {{ tools is none }} {{ bos_token is defined }} {{ eos_token }} "
      "{{ enable_thinking }} {{ add_generation_prompt }}",
      in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "hi true false </s> false false");
  in.kwargs = {{"messages", 1}};
  EXPECT_FALSE(RenderChatTemplate("x", in).ok());
  in.kwargs = ojson::array();
  EXPECT_FALSE(RenderChatTemplate("x", in).ok());
}

// ---- errors name a line and a column

TEST(JinjaTest, ParseErrorsHaveLineAndColumn) {
  EXPECT_EQ(Err("line one\n{{ 1 + }}"), "chat template:2:8: expected an expression, got '}}'");
  EXPECT_EQ(Err("a\n\n  {% if x %}b"),
            "chat template:3:3: 'if' block is never closed: missing '{% endif %}'");
  EXPECT_EQ(Err("{% for x in y %}"),
            "chat template:1:1: 'for' block is never closed: missing '{% endfor %}'");
  EXPECT_EQ(Err("x {{ 'abc }}"), "chat template:1:6: unterminated string literal");
  EXPECT_EQ(Err("x\n {# never closed"),
            "chat template:2:2: comment '{#' is never closed with '#}'");
  EXPECT_EQ(Err("{% include 'x' %}"),
            "chat template:1:4: unknown statement 'include' (supported: set, if, for, macro, "
            "call, filter, break, continue)");
  EXPECT_EQ(Err("é {% endif %}"),
            "chat template:1:6: unexpected '{% endif %}': no open block it could belong to");
  EXPECT_TRUE(HasLineColumn(Err("{%+ if true %}{% endif %}")));
  EXPECT_TRUE(HasLineColumn(Err("{{ x ! y }}")));
  EXPECT_TRUE(HasLineColumn(Err("{{ 'a\\qb' }}")));
}

TEST(JinjaTest, RuntimeErrorsHaveLineAndColumn) {
  EXPECT_EQ(Err("ok\n  {{ [1] | frobnicate }}"),
            "chat template:2:12: unknown filter 'frobnicate' for ArrayValue");
  EXPECT_EQ(Err("{{ 'a' + none }}"),
            "chat template:1:8: cannot apply '+' to none (StringValue + NullValue)");
  EXPECT_EQ(Err("{{ x.append(1) }}", R"({"x": []})"),
            "chat template:1:4: 'append' is not a function and cannot be called (got "
            "UndefinedValue)");
  EXPECT_TRUE(HasLineColumn(Err("{{ 1 is divisibleby }}")));
  EXPECT_TRUE(HasLineColumn(Err("{% break %}")));
  EXPECT_TRUE(HasLineColumn(Err("{{ (1, 2) }}")));
  EXPECT_TRUE(HasLineColumn(Err("{{ x | default }}")));
}

// ---- limits: errors, never a crash or a hang

TEST(JinjaTest, DeepNestingIsAnError) {
  const std::string parens = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_TRUE(HasLineColumn(Err("{{ " + parens + " }}")));
  std::string ifs;
  for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
  for (int i = 0; i < 1000; ++i) ifs += "{% endif %}";
  EXPECT_TRUE(HasLineColumn(Err(ifs)));
  std::string sum = "{{ 1";
  for (int i = 0; i < 5000; ++i) sum += " + 1";
  EXPECT_TRUE(HasLineColumn(Err(sum + " }}")));
  EXPECT_TRUE(HasLineColumn(Err("{{ " + std::string(5000, '-') + "1 }}")));
  EXPECT_TRUE(HasLineColumn(Err("{{ " + std::string(3000, '[') + std::string(3000, ']') + " }}")));
  // Deep input is refused too.
  const std::string deep = std::string(1000, '[') + std::string(1000, ']');
  EXPECT_FALSE(Err("{{ x }}", R"({"x": )" + deep + "}").empty());
}

TEST(JinjaTest, MacroRecursionIsAnError) {
  const std::string e = Err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_TRUE(HasLineColumn(e)) << e;
  EXPECT_NE(e.find("nested too deeply"), std::string::npos) << e;
}

TEST(JinjaTest, HugeWorkIsAnError) {
  EXPECT_NE(Err("{{ range(10 ** 9) | length }}").find("range() would make 1000000000 items"),
            std::string::npos);
  EXPECT_NE(Err("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
                .find("too much work"),
            std::string::npos);
  EXPECT_NE(Err("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(100) %}"
                "{% set ns.s = ns.s ~ ns.s %}{% endfor %}")
                .find("larger than the limit"),
            std::string::npos);
  EXPECT_NE(Err("{% set ns = namespace(l=[1]) %}{% for i in range(100) %}"
                "{% set ns.l = ns.l + ns.l %}{% endfor %}"),
            "");
  jinja::Options small;
  small.max_output_bytes = 100;
  absl::StatusOr<jinja::Template> t =
      jinja::Template::Parse("{% for i in range(1000) %}xx{% endfor %}", small);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->Render(ojson::object()).ok());
  EXPECT_FALSE(Err("{{ 'x' | indent(1000000000000) }}").empty());
  EXPECT_FALSE(Err("{{ [1] | tojson(indent=100000) }}").empty());
}

TEST(JinjaTest, RenderIsConstAndReusable) {
  absl::StatusOr<jinja::Template> t = jinja::Template::Parse("{{ x }}{% set x = 2 %}{{ x }}");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t->Render(ojson{{"x", 1}}), "12");
  EXPECT_EQ(*t->Render(ojson{{"x", 5}}), "52");
  EXPECT_FALSE(t->Render(ojson::array()).ok());
}

}  // namespace
}  // namespace st
