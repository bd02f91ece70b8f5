// tokenizer_config.json and generation_config.json: untrusting parsers and the writers that give
// Hugging Face the same files back (see hf_configs.h).
#include "infer/tokenizer/hf_configs.h"

#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/check.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

absl::Status Bad(absl::string_view file, absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": '", key, "' ", what));
}

// Parses a JSON object, reporting a duplicate top-level key (it would silently keep the last).
absl::StatusOr<json> ParseObject(absl::string_view text, absl::string_view file) {
  std::string duplicate;
  std::set<std::string> seen;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string() &&
        !seen.insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, " is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, " must be a JSON object, got ", j.type_name()));
  }
  if (!duplicate.empty()) return Bad(file, duplicate, "appears more than once; give it once");
  return j;
}

bool Given(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

absl::Status GetBool(const json& j, absl::string_view file, const char* key, bool* out) {
  if (!Given(j, key)) return absl::OkStatus();
  if (!j[key].is_boolean()) {
    return Bad(file, key, absl::StrCat("must be true or false, got ", j[key].dump()));
  }
  *out = j[key].get<bool>();
  return absl::OkStatus();
}

// A token id in [0, bound) (bound 0: any id >= 0).
absl::Status ToId(const json& v, absl::string_view file, const std::string& what, int bound,
                  int* out) {
  if (!v.is_number_integer()) {
    return Bad(file, what, absl::StrCat("must be a token id (an integer), got ", v.dump()));
  }
  const int64_t id = v.get<int64_t>();
  const int64_t hi = bound > 0 ? bound : std::numeric_limits<int>::max();
  if (id < 0 || id >= hi) {
    return Bad(file, what,
               absl::StrCat("= ", id, " is outside the vocabulary (0 <= id < ", hi, ")"));
  }
  *out = static_cast<int>(id);
  return absl::OkStatus();
}

// A special token as tokenizer_config.json writes it: a string, {"content": "..."} (transformers'
// AddedToken), or null.
absl::Status GetTokenText(const json& j, absl::string_view file, const char* key,
                          std::string* out) {
  if (!Given(j, key)) return absl::OkStatus();
  const json& v = j[key];
  if (v.is_string()) {
    *out = v.get<std::string>();
  } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    *out = v["content"].get<std::string>();
  } else {
    return Bad(file, key,
               absl::StrCat("must be a token text, {\"content\": text} or null, got ", v.dump()));
  }
  return absl::OkStatus();
}

absl::Status ResolveToken(const Tokenizer* tok, absl::string_view file, const char* key,
                          const std::string& text, int* id) {
  if (text.empty() || tok == nullptr) return absl::OkStatus();
  *id = tok->TokenId(text);
  if (*id < 0) {
    return Bad(file, key,
               absl::StrCat("= \"", text,
                            "\" is not a token of the tokenizer (tokenizer.json); the two files "
                            "come from different models: use the pair the checkpoint was saved "
                            "with"));
  }
  return absl::OkStatus();
}

// tokenizer_config.json's "chat_template": a string, or a list of {"name", "template"}.
absl::Status GetChatTemplates(const json& j, absl::string_view file, ChatTemplates* out) {
  if (!Given(j, "chat_template")) return absl::OkStatus();
  const json& ct = j["chat_template"];
  if (ct.is_string()) {
    out->default_template = ct.get<std::string>();
    return absl::OkStatus();
  }
  if (!ct.is_array()) {
    return Bad(file, "chat_template",
               absl::StrCat("must be a string or a list of {\"name\", \"template\"}, got ",
                            ct.type_name()));
  }
  for (size_t i = 0; i < ct.size(); ++i) {
    const json& item = ct[i];
    if (!item.is_object() || !item.contains("name") || !item["name"].is_string() ||
        !item.contains("template") || !item["template"].is_string()) {
      return Bad(file, absl::StrCat("chat_template[", i, "]"),
                 "must be {\"name\": string, \"template\": string}");
    }
    const std::string name = item["name"].get<std::string>();
    for (const auto& [other, unused] : out->named) {
      if (other == name) {
        return Bad(file, "chat_template",
                   absl::StrCat("names the template \"", name, "\" twice; keep one"));
      }
    }
    out->named.emplace_back(name, item["template"].get<std::string>());
    if (name == "default") out->default_template = item["template"].get<std::string>();
  }
  return absl::OkStatus();
}

absl::Status GetNumber(const json& j, absl::string_view file, const char* key, double lo, double hi,
                       bool lo_open, std::optional<double>* out) {
  if (!Given(j, key)) return absl::OkStatus();
  const json& v = j[key];
  const double x = v.is_number() ? v.get<double>() : std::nan("");
  if (!v.is_number() || !std::isfinite(x) || x < lo || (lo_open && x == lo) || x > hi) {
    return Bad(file, key,
               absl::StrCat("= ", v.dump(), " is not a number in ", lo_open ? "(" : "[", lo, ", ",
                            hi, "]"));
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status GetCount(const json& j, absl::string_view file, const char* key,
                      std::optional<int>* out) {
  if (!Given(j, key)) return absl::OkStatus();
  const json& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
      v.get<int64_t>() > std::numeric_limits<int>::max()) {
    return Bad(file, key, absl::StrCat("= ", v.dump(), " is not a count (an integer >= 0)"));
  }
  *out = static_cast<int>(v.get<int64_t>());
  return absl::OkStatus();
}

// The added tokens of a tokenizer: from its tokenizer.json, or the byte tokenizer's end-of-text.
ojson AddedTokensDecoder(const Tokenizer& tok) {
  ojson out = ojson::object();
  auto entry = [](const std::string& content, bool special, bool normalized, bool lstrip,
                  bool rstrip, bool single_word) {
    return ojson{{"content", content}, {"lstrip", lstrip},           {"normalized", normalized},
                 {"rstrip", rstrip},   {"single_word", single_word}, {"special", special}};
  };
  const std::string text = tok.ToJson();
  if (text.empty()) {
    if (tok.eos_id() >= 0) {
      out[std::to_string(tok.eos_id())] =
          entry(tok.Decode({tok.eos_id()}), true, false, false, false, false);
    }
    return out;
  }
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.contains("added_tokens") || !j["added_tokens"].is_array()) return out;
  for (const json& a : j["added_tokens"]) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
        !a.contains("content") || !a["content"].is_string()) {
      continue;
    }
    const bool special = a.value("special", false);
    out[std::to_string(a["id"].get<int64_t>())] =
        entry(a["content"].get<std::string>(), special, a.value("normalized", !special),
              a.value("lstrip", false), a.value("rstrip", false), a.value("single_word", false));
  }
  return out;
}

}  // namespace

void TokenizerPolicy::ResolveIds(const Tokenizer& tok) {
  const std::pair<const std::string*, int*> named[] = {
      {&eos_token, &eos_token_id}, {&pad_token, &pad_token_id}, {&unk_token, &unk_token_id}};
  for (const auto& [text, id] : named) {
    if (!text->empty()) *id = tok.TokenId(*text);
  }
  if (bos_token_id < 0 && !bos_token.empty()) bos_token_id = tok.TokenId(bos_token);
}

std::vector<int32_t> TokenizerPolicy::Encode(const Tokenizer& tok, absl::string_view text) const {
  std::vector<int32_t> ids;
  if (add_bos_token && bos_token_id >= 0) ids.push_back(bos_token_id);
  std::vector<int32_t> body = tok.Encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_eos_token && eos_token_id >= 0) ids.push_back(eos_token_id);
  return ids;
}

absl::StatusOr<TokenizerPolicy> ParseTokenizerConfig(absl::string_view text, const Tokenizer* tok,
                                                     ChatTemplates* templates) {
  constexpr absl::string_view kFile = "tokenizer_config.json";
  ST_ASSIGN_OR_RETURN(json j, ParseObject(text, kFile));
  TokenizerPolicy p;
  ST_RETURN_IF_ERROR(GetBool(j, kFile, "add_bos_token", &p.add_bos_token));
  ST_RETURN_IF_ERROR(GetBool(j, kFile, "add_eos_token", &p.add_eos_token));
  ST_RETURN_IF_ERROR(GetTokenText(j, kFile, "bos_token", &p.bos_token));
  ST_RETURN_IF_ERROR(GetTokenText(j, kFile, "eos_token", &p.eos_token));
  ST_RETURN_IF_ERROR(GetTokenText(j, kFile, "pad_token", &p.pad_token));
  ST_RETURN_IF_ERROR(GetTokenText(j, kFile, "unk_token", &p.unk_token));
  ST_RETURN_IF_ERROR(ResolveToken(tok, kFile, "bos_token", p.bos_token, &p.bos_token_id));
  ST_RETURN_IF_ERROR(ResolveToken(tok, kFile, "eos_token", p.eos_token, &p.eos_token_id));
  ST_RETURN_IF_ERROR(ResolveToken(tok, kFile, "pad_token", p.pad_token, &p.pad_token_id));
  ST_RETURN_IF_ERROR(ResolveToken(tok, kFile, "unk_token", p.unk_token, &p.unk_token_id));
  if (p.add_bos_token && p.bos_token.empty()) {
    return Bad(kFile, "add_bos_token",
               "is true but no bos_token is named: name the token to add or set it false");
  }
  if (p.add_eos_token && p.eos_token.empty()) {
    return Bad(kFile, "add_eos_token",
               "is true but no eos_token is named: name the token to add or set it false");
  }

  std::set<int> special;
  if (Given(j, "added_tokens_decoder")) {
    const json& d = j["added_tokens_decoder"];
    if (!d.is_object()) {
      return Bad(kFile, "added_tokens_decoder",
                 "must be an object {\"id\": {\"content\": ...}, ...}");
    }
    for (const auto& [key, entry] : d.items()) {
      const std::string what = absl::StrCat("added_tokens_decoder[\"", key, "\"]");
      int id = -1;
      const json parsed = json::parse(key, nullptr, false);
      ST_RETURN_IF_ERROR(ToId(parsed.is_discarded() ? json(key) : parsed, kFile, what,
                              tok != nullptr ? tok->vocab_size() : 0, &id));
      if (!entry.is_object() || !entry.contains("content") || !entry["content"].is_string()) {
        return Bad(kFile, what, "must be an object with a \"content\" string");
      }
      const std::string content = entry["content"].get<std::string>();
      if (tok != nullptr && tok->TokenId(content) != id) {
        return Bad(
            kFile, what,
            absl::StrCat("says id ", id, " is \"", content,
                         "\", but tokenizer.json gives that text the id ", tok->TokenId(content),
                         "; the two files come from different models"));
      }
      if (entry.contains("special") && !entry["special"].is_boolean()) {
        return Bad(kFile, what + ".special", "must be true or false");
      }
      if (entry.value("special", false)) special.insert(id);
    }
  }
  if (Given(j, "additional_special_tokens")) {
    const json& a = j["additional_special_tokens"];
    if (!a.is_array()) return Bad(kFile, "additional_special_tokens", "must be a list of tokens");
    for (size_t i = 0; i < a.size(); ++i) {
      const json holder = {{"t", a[i]}};
      const std::string what = absl::StrCat("additional_special_tokens[", i, "]");
      std::string t;
      if (!GetTokenText(holder, kFile, "t", &t).ok()) {
        return Bad(kFile, what, "must be a token text or {\"content\": text}");
      }
      int id = -1;
      ST_RETURN_IF_ERROR(ResolveToken(tok, kFile, what.c_str(), t, &id));
      if (id >= 0) special.insert(id);
    }
  }
  for (int id : {p.bos_token_id, p.eos_token_id, p.pad_token_id, p.unk_token_id}) {
    if (id >= 0) special.insert(id);
  }
  p.special_token_ids.assign(special.begin(), special.end());

  if (Given(j, "tokenizer_class")) {
    if (!j["tokenizer_class"].is_string()) {
      return Bad(kFile, "tokenizer_class", "must be a string");
    }
    p.tokenizer_class = j["tokenizer_class"].get<std::string>();
  }
  if (Given(j, "model_max_length")) {
    const json& v = j["model_max_length"];
    if (!v.is_number() || !(v.get<double>() > 0)) {
      return Bad(kFile, "model_max_length", absl::StrCat("= ", v.dump(), " must be a number > 0"));
    }
    // transformers writes 1e30 for "no limit".
    const double x = v.get<double>();
    p.model_max_length = x < 1e15 ? static_cast<int64_t>(x) : 0;
  }
  ChatTemplates local;
  ST_RETURN_IF_ERROR(GetChatTemplates(j, kFile, templates != nullptr ? templates : &local));
  return p;
}

std::string TokenizerConfigJson(const TokenizerPolicy& p, const Tokenizer& tok,
                                const std::string& chat_template) {
  auto token = [](const std::string& t) { return t.empty() ? ojson(nullptr) : ojson(t); };
  ojson j = ojson::object();
  j["add_bos_token"] = p.add_bos_token;
  j["add_eos_token"] = p.add_eos_token;
  j["add_prefix_space"] = false;
  j["added_tokens_decoder"] = AddedTokensDecoder(tok);
  j["bos_token"] = token(p.bos_token);
  if (!chat_template.empty()) j["chat_template"] = chat_template;
  j["clean_up_tokenization_spaces"] = false;
  j["eos_token"] = token(p.eos_token);
  j["errors"] = "replace";
  j["model_max_length"] = p.model_max_length > 0 ? p.model_max_length : 131072;
  j["pad_token"] = token(p.pad_token);
  j["split_special_tokens"] = false;
  j["tokenizer_class"] = p.tokenizer_class.empty() ? "PreTrainedTokenizerFast" : p.tokenizer_class;
  j["unk_token"] = token(p.unk_token);
  return j.dump(2, ' ', false, ojson::error_handler_t::replace) + "\n";
}

bool GenerationDefaults::empty() const {
  return !do_sample && !temperature && !top_p && !min_p && !repetition_penalty && !top_k &&
         !max_new_tokens && eos_token_id.empty() && bos_token_id < 0 && pad_token_id < 0;
}

std::string GenerationDefaults::ToString() const {
  std::vector<std::string> parts;
  if (do_sample) parts.push_back(absl::StrCat("do_sample ", *do_sample ? "true" : "false"));
  if (temperature) parts.push_back(absl::StrCat("temperature ", *temperature));
  if (top_k) parts.push_back(absl::StrCat("top_k ", *top_k));
  if (top_p) parts.push_back(absl::StrCat("top_p ", *top_p));
  if (min_p) parts.push_back(absl::StrCat("min_p ", *min_p));
  if (repetition_penalty) parts.push_back(absl::StrCat("repetition_penalty ", *repetition_penalty));
  if (max_new_tokens) parts.push_back(absl::StrCat("max_new_tokens ", *max_new_tokens));
  if (!eos_token_id.empty()) {
    parts.push_back(absl::StrCat("eos [", absl::StrJoin(eos_token_id, ", "), "]"));
  }
  if (bos_token_id >= 0) parts.push_back(absl::StrCat("bos ", bos_token_id));
  if (pad_token_id >= 0) parts.push_back(absl::StrCat("pad ", pad_token_id));
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

absl::StatusOr<GenerationDefaults> ParseGenerationConfig(absl::string_view text, int vocab_size) {
  constexpr absl::string_view kFile = "generation_config.json";
  ST_ASSIGN_OR_RETURN(json j, ParseObject(text, kFile));
  GenerationDefaults g;
  if (Given(j, "do_sample")) {
    bool b = false;
    ST_RETURN_IF_ERROR(GetBool(j, kFile, "do_sample", &b));
    g.do_sample = b;
  }
  constexpr double kInf = std::numeric_limits<double>::max();
  ST_RETURN_IF_ERROR(GetNumber(j, kFile, "temperature", 0, kInf, false, &g.temperature));
  ST_RETURN_IF_ERROR(GetNumber(j, kFile, "top_p", 0, 1, true, &g.top_p));
  ST_RETURN_IF_ERROR(GetNumber(j, kFile, "min_p", 0, 1, false, &g.min_p));
  ST_RETURN_IF_ERROR(
      GetNumber(j, kFile, "repetition_penalty", 0, kInf, true, &g.repetition_penalty));
  ST_RETURN_IF_ERROR(GetCount(j, kFile, "top_k", &g.top_k));
  ST_RETURN_IF_ERROR(GetCount(j, kFile, "max_new_tokens", &g.max_new_tokens));
  if (Given(j, "eos_token_id")) {
    const json& v = j["eos_token_id"];
    const json list = v.is_array() ? v : json::array({v});
    for (size_t i = 0; i < list.size(); ++i) {
      int id = -1;
      ST_RETURN_IF_ERROR(
          ToId(list[i], kFile, absl::StrCat("eos_token_id[", i, "]"), vocab_size, &id));
      g.eos_token_id.push_back(id);
    }
  }
  if (Given(j, "bos_token_id")) {
    ST_RETURN_IF_ERROR(ToId(j["bos_token_id"], kFile, "bos_token_id", vocab_size, &g.bos_token_id));
  }
  if (Given(j, "pad_token_id")) {
    ST_RETURN_IF_ERROR(ToId(j["pad_token_id"], kFile, "pad_token_id", vocab_size, &g.pad_token_id));
  }
  return g;
}

std::string GenerationConfigJson(const GenerationDefaults& g) {
  ojson j = ojson::object();
  if (g.bos_token_id >= 0) j["bos_token_id"] = g.bos_token_id;
  if (g.do_sample) j["do_sample"] = *g.do_sample;
  if (!g.eos_token_id.empty()) {
    j["eos_token_id"] =
        g.eos_token_id.size() == 1 ? ojson(g.eos_token_id[0]) : ojson(g.eos_token_id);
  }
  if (g.max_new_tokens) j["max_new_tokens"] = *g.max_new_tokens;
  if (g.min_p) j["min_p"] = *g.min_p;
  if (g.pad_token_id >= 0) j["pad_token_id"] = g.pad_token_id;
  if (g.repetition_penalty) j["repetition_penalty"] = *g.repetition_penalty;
  if (g.temperature) j["temperature"] = *g.temperature;
  if (g.top_k) j["top_k"] = *g.top_k;
  if (g.top_p) j["top_p"] = *g.top_p;
  j["transformers_version"] = "4.53.3";
  return j.dump(2) + "\n";
}

}  // namespace st
