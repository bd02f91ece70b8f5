// OpenAI request parsing and response objects for st-server (openai_api.h).
#include "infer/server/openai_api.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace st {
namespace openai {

Json ApiError::ToJson() const {
  Json e = Json::object();
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? Json(nullptr) : Json(param);
  e["code"] = code.empty() ? Json(nullptr) : Json(code);
  return Json{{"error", e}};
}

ApiError BadRequest(std::string message, std::string param, std::string code) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

namespace {

const char* TypeName(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

// Reads optional field `name` of `body` when present and not null. Each returns false (and
// fills *err) when the value has the wrong type or range.
class Fields {
 public:
  Fields(const Json& body, ApiError* err) : body_(body), err_(err) {}

  const Json* Get(const char* name) const {
    auto it = body_.find(name);
    if (it == body_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Number(const char* name, double lo, double hi, bool lo_open, double* out) {
    const Json* v = Get(name);
    if (v == nullptr) return true;
    if (!v->is_number()) return Fail(name, absl::StrCat("must be a number, got ", TypeName(*v)));
    const double x = v->get<double>();
    if (!std::isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo)) {
      return Fail(name, absl::StrCat("must be in ", lo_open ? "(" : "[", lo, ", ", hi, "], got ",
                                     v->dump()));
    }
    *out = x;
    return true;
  }
  bool Int(const char* name, int64_t lo, int64_t hi, int64_t* out) {
    const Json* v = Get(name);
    if (v == nullptr) return true;
    if (!v->is_number_integer() &&
        !(v->is_number_float() && v->get<double>() == std::floor(v->get<double>()))) {
      return Fail(name, absl::StrCat("must be an integer, got ", v->dump()));
    }
    const double x = v->get<double>();
    if (x < static_cast<double>(lo) || x > static_cast<double>(hi)) {
      return Fail(name, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v->dump()));
    }
    *out = v->is_number_unsigned() ? static_cast<int64_t>(v->get<uint64_t>()) : v->get<int64_t>();
    return true;
  }
  bool Bool(const char* name, bool* out) {
    const Json* v = Get(name);
    if (v == nullptr) return true;
    if (!v->is_boolean()) return Fail(name, absl::StrCat("must be true or false, got ", v->dump()));
    *out = v->get<bool>();
    return true;
  }
  bool Fail(const std::string& name, const std::string& what) {
    *err_ = BadRequest(absl::StrCat("'", name, "' ", what), name);
    return false;
  }

 private:
  const Json& body_;
  ApiError* err_;
};

// A message's content as one string: a string, null (""), or a list of {"type": "text"} parts
// joined. Other part types are refused.
bool ContentText(const Json& content, size_t index, std::string* out, ApiError* err) {
  const std::string where = absl::StrCat("messages[", index, "].content");
  if (content.is_null()) return true;
  if (content.is_string()) {
    *out = content.get<std::string>();
    return true;
  }
  if (!content.is_array()) {
    *err = BadRequest(absl::StrCat("'", where, "' must be a string or a list of text parts, got ",
                                   TypeName(content)),
                      "messages");
    return false;
  }
  for (const Json& part : content) {
    const auto type = part.is_object() ? part.find("type") : part.end();
    if (!part.is_object() || type == part.end() || *type != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      *err = BadRequest(absl::StrCat("'", where,
                                     "' parts must be {\"type\": \"text\", \"text\": ...}: this "
                                     "server runs a text-only model"),
                        "messages");
      return false;
    }
    *out += part["text"].get<std::string>();
  }
  return true;
}

bool ParseMessages(const Json& body, Request* r, ApiError* err) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) {
    *err = BadRequest("'messages' is required: a non-empty list of {\"role\", \"content\"}",
                      "messages");
    return false;
  }
  r->messages = Json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      *err = BadRequest(absl::StrCat("'messages[", i, "]' must be an object with a string 'role'"),
                        "messages");
      return false;
    }
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" &&
        role != "developer") {
      *err = BadRequest(absl::StrCat("'messages[", i,
                                     "].role' must be system, developer, user, "
                                     "assistant or tool, got '",
                                     role, "'"),
                        "messages");
      return false;
    }
    Json out = m;  // tool_calls, name, reasoning_content etc. pass through to the template
    std::string text;
    if (!ContentText(m.contains("content") ? m["content"] : Json(nullptr), i, &text, err)) {
      return false;
    }
    out["role"] = role == "developer" ? "system" : role;
    out["content"] = text;
    r->messages.push_back(std::move(out));
  }
  return true;
}

bool ParsePrompt(const Json& body, int vocab_size, Request* r, ApiError* err) {
  auto it = body.find("prompt");
  const Json* p = it == body.end() ? nullptr : &*it;
  if (p != nullptr && p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
  if (p != nullptr && p->is_string()) {
    r->prompt = p->get<std::string>();
    if (r->prompt.empty()) {
      *err = BadRequest("'prompt' is empty", "prompt");
      return false;
    }
    return true;
  }
  if (p != nullptr && p->is_array() && !p->empty()) {
    for (const Json& t : *p) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab_size) {
        *err = BadRequest(absl::StrCat("'prompt' token ids must be integers in [0, ", vocab_size,
                                       "), got ", t.dump()),
                          "prompt");
        return false;
      }
      r->prompt_ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    return true;
  }
  *err = BadRequest(
      "'prompt' is required: a string (one prompt per request; lists of several prompts are not "
      "supported) or a list of token ids",
      "prompt");
  return false;
}

}  // namespace

GenerationParams DefaultParams(const GenerationDefaults& g) {
  GenerationParams p;
  SamplerOptions& o = p.sampler;
  o.temperature = 0.8;
  o.top_k = 40;
  o.top_p = 0.95;
  o.min_p = 0.05;
  o.repeat_penalty = 1.0;
  if (g.empty()) return p;
  if (g.top_k) o.top_k = *g.top_k;
  if (g.top_p) o.top_p = *g.top_p;
  if (g.min_p) o.min_p = *g.min_p;
  if (g.repetition_penalty) {
    o.repeat_penalty = *g.repetition_penalty;
    o.repeat_last_n = -1;
  }
  if (!g.do_sample.value_or(false)) {
    o.temperature = 0;
  } else if (g.temperature) {
    o.temperature = *g.temperature;
  }
  return p;
}

std::optional<Request> ParseRequest(const std::string& body_text, bool chat,
                                    const std::vector<std::string>& model_ids, int vocab_size,
                                    const GenerationParams& defaults, ApiError* err) {
  Json body = Json::parse(body_text, nullptr, false);
  if (body.is_discarded()) {
    *err = BadRequest("the request body is not valid JSON", "", "invalid_json");
    return std::nullopt;
  }
  if (!body.is_object()) {
    *err = BadRequest(absl::StrCat("the request body must be a JSON object, got ", TypeName(body)),
                      "", "invalid_json");
    return std::nullopt;
  }
  Request r;
  r.chat = chat;
  if (auto m = body.find("model"); m != body.end() && !m->is_null()) {
    if (!m->is_string()) {
      *err = BadRequest("'model' must be a string", "model");
      return std::nullopt;
    }
    const std::string name = m->get<std::string>();
    bool known = name.empty();
    for (const std::string& id : model_ids) known = known || name == id;
    if (!known) {
      ApiError e;
      e.status = 404;
      e.type = "invalid_request_error";
      e.param = "model";
      e.code = "model_not_found";
      e.message = absl::StrCat("The model '", name, "' does not exist; this server runs '",
                               model_ids.empty() ? "" : model_ids[0], "' (see GET /v1/models)");
      *err = e;
      return std::nullopt;
    }
  }
  if (chat ? !ParseMessages(body, &r, err) : !ParsePrompt(body, vocab_size, &r, err)) {
    return std::nullopt;
  }
  Fields f(body, err);
  GenerationParams& p = r.params;
  p = defaults;
  int64_t i64 = 0;
  if (!f.Number("temperature", 0, 2, false, &p.sampler.temperature) ||
      !f.Number("top_p", 0, 1, true, &p.sampler.top_p) ||
      !f.Number("min_p", 0, 1, false, &p.sampler.min_p) ||
      !f.Number("presence_penalty", -2, 2, false, &p.presence_penalty) ||
      !f.Number("frequency_penalty", -2, 2, false, &p.frequency_penalty) ||
      !f.Bool("stream", &r.stream)) {
    return std::nullopt;
  }
  if (p.sampler.min_p >= 1) {
    f.Fail("min_p", "must be in [0, 1)");
    return std::nullopt;
  }
  i64 = p.sampler.top_k;
  if (!f.Int("top_k", 0, std::numeric_limits<int32_t>::max(), &i64)) return std::nullopt;
  p.sampler.top_k = static_cast<int>(i64);
  i64 = -1;
  if (!f.Int("max_tokens", 1, std::numeric_limits<int32_t>::max(), &i64)) return std::nullopt;
  if (!f.Int("max_completion_tokens", 1, std::numeric_limits<int32_t>::max(), &i64)) {
    return std::nullopt;
  }
  p.max_tokens = static_cast<int>(i64);
  i64 = 0;
  if (!f.Int("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
             &i64)) {
    return std::nullopt;
  }
  if (f.Get("seed") != nullptr) p.sampler.seed = static_cast<uint64_t>(i64);
  i64 = 1;
  if (!f.Int("n", 1, 1, &i64)) {
    *err = BadRequest("'n' must be 1: one choice per request", "n");
    return std::nullopt;
  }
  if (const Json* s = f.Get("stop")) {
    if (s->is_string()) {
      if (!s->get<std::string>().empty()) p.stop.push_back(s->get<std::string>());
    } else if (s->is_array() && s->size() <= 16) {
      for (const Json& x : *s) {
        if (!x.is_string()) {
          f.Fail("stop", "must be a string or a list of at most 16 strings");
          return std::nullopt;
        }
        if (!x.get<std::string>().empty()) p.stop.push_back(x.get<std::string>());
      }
    } else {
      f.Fail("stop", "must be a string or a list of at most 16 strings");
      return std::nullopt;
    }
  }
  if (const Json* rf = f.Get("response_format")) {
    if (!rf->is_object() || !rf->contains("type") || (*rf)["type"] != "text") {
      *err = BadRequest(
          "'response_format' other than {\"type\": \"text\"} is not supported (no constrained "
          "decoding): ask for JSON in the prompt instead",
          "response_format", "unsupported_parameter");
      return std::nullopt;
    }
  }
  if (const Json* so = f.Get("stream_options")) {
    if (!so->is_object()) {
      f.Fail("stream_options", "must be an object such as {\"include_usage\": true}");
      return std::nullopt;
    }
    auto iu = so->find("include_usage");
    if (iu != so->end() && !iu->is_null()) {
      if (!iu->is_boolean()) {
        f.Fail("stream_options", "include_usage must be true or false");
        return std::nullopt;
      }
      r.include_usage = iu->get<bool>();
    }
  }
  if (chat) {
    bool lp = false;
    if (!f.Bool("logprobs", &lp)) return std::nullopt;
    i64 = 0;
    if (!f.Int("top_logprobs", 0, 20, &i64)) return std::nullopt;
    if (f.Get("top_logprobs") != nullptr && !lp) {
      f.Fail("top_logprobs", "needs 'logprobs': true");
      return std::nullopt;
    }
    r.logprobs = lp;
    p.top_logprobs = lp ? static_cast<int>(i64) : -1;
    if (const Json* t = f.Get("tools")) {
      if (!t->is_array()) {
        f.Fail("tools", "must be a list of tool definitions");
        return std::nullopt;
      }
      r.tools = *t;
    }
    if (const Json* k = f.Get("chat_template_kwargs")) {
      if (!k->is_object()) {
        f.Fail("chat_template_kwargs", "must be an object such as {\"enable_thinking\": false}");
        return std::nullopt;
      }
      r.template_kwargs = *k;
    }
  } else {
    i64 = -1;
    if (!f.Int("logprobs", 0, 20, &i64)) return std::nullopt;
    r.logprobs = i64 >= 0;
    p.top_logprobs = static_cast<int>(i64);
    bool echo = false;
    if (!f.Bool("echo", &echo)) return std::nullopt;
    if (echo) {
      *err = BadRequest("'echo' is not supported", "echo", "unsupported_parameter");
      return std::nullopt;
    }
  }
  return r;
}

Json Usage(const Job& job) {
  return Json{{"prompt_tokens", job.prompt_tokens()},
              {"completion_tokens", job.completion_tokens()},
              {"total_tokens", job.prompt_tokens() + job.completion_tokens()},
              {"prompt_tokens_details", Json{{"cached_tokens", job.cached_tokens()}}}};
}

namespace {

Json Bytes(const std::string& s) {
  Json b = Json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

std::string TokenText(const Tokenizer& tok, int32_t id) {
  return tok.Decode(absl::MakeConstSpan(&id, 1));
}

}  // namespace

Json ChatLogprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& lps) {
  Json content = Json::array();
  for (const TokenLogprob& lp : lps) {
    const std::string text = TokenText(tok, lp.id);
    Json top = Json::array();
    for (const auto& [id, l] : lp.top) {
      const std::string t = TokenText(tok, id);
      top.push_back(Json{{"token", t}, {"logprob", l}, {"bytes", Bytes(t)}});
    }
    content.push_back(Json{
        {"token", text}, {"logprob", lp.logprob}, {"bytes", Bytes(text)}, {"top_logprobs", top}});
  }
  return Json{{"content", content}};
}

Json CompletionLogprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& lps,
                        int64_t offset0) {
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(),
       offsets = Json::array();
  int64_t offset = offset0;
  for (const TokenLogprob& lp : lps) {
    const std::string text = TokenText(tok, lp.id);
    tokens.push_back(text);
    token_logprobs.push_back(lp.logprob);
    Json alts = Json::object();
    for (const auto& [id, l] : lp.top) alts[TokenText(tok, id)] = l;
    top.push_back(alts);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(text.size());
  }
  return Json{{"tokens", tokens},
              {"token_logprobs", token_logprobs},
              {"top_logprobs", top},
              {"text_offset", offsets}};
}

Json Response(const Request& req, const Tokenizer& tok, const std::string& id, int64_t created,
              const std::string& model, const std::string& text,
              const std::vector<TokenLogprob>& lps, const Job& job) {
  Json choice = Json::object();
  choice["index"] = 0;
  if (req.chat) {
    choice["message"] = Json{{"role", "assistant"}, {"content", text}};
    choice["logprobs"] = req.logprobs ? ChatLogprobs(tok, lps) : Json(nullptr);
  } else {
    choice["text"] = text;
    choice["logprobs"] = req.logprobs ? CompletionLogprobs(tok, lps, 0) : Json(nullptr);
  }
  choice["finish_reason"] = job.finish_reason();
  return Json{{"id", id},
              {"object", req.chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", model},
              {"system_fingerprint", "smallthinker.cpp"},
              {"choices", Json::array({choice})},
              {"usage", Usage(job)}};
}

Json Chunk(const Request& req, const Tokenizer& tok, const std::string& id, int64_t created,
           const std::string& model, const std::string& text, const std::vector<TokenLogprob>& lps,
           bool first, const std::string& finish_reason, const Job* job_for_usage,
           int64_t text_offset) {
  Json choice = Json::object();
  choice["index"] = 0;
  if (req.chat) {
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || finish_reason.empty()) delta["content"] = text;
    choice["delta"] = delta;
    choice["logprobs"] = req.logprobs && !lps.empty() ? ChatLogprobs(tok, lps) : Json(nullptr);
  } else {
    choice["text"] = text;
    choice["logprobs"] =
        req.logprobs && !lps.empty() ? CompletionLogprobs(tok, lps, text_offset) : Json(nullptr);
  }
  choice["finish_reason"] = finish_reason.empty() ? Json(nullptr) : Json(finish_reason);
  Json c = Json{{"id", id},
                {"object", req.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"system_fingerprint", "smallthinker.cpp"},
                {"choices", Json::array({choice})}};
  if (job_for_usage != nullptr) c["usage"] = Usage(*job_for_usage);
  return c;
}

Json UsageChunk(const Request& req, const std::string& id, int64_t created,
                const std::string& model, const Job& job) {
  return Json{{"id", id},
              {"object", req.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"system_fingerprint", "smallthinker.cpp"},
              {"choices", Json::array()},
              {"usage", Usage(job)}};
}

}  // namespace openai
}  // namespace st
