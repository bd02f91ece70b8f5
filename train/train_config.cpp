// TrainConfig JSON parsing and validation.
#include "train/train_config.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

namespace st {
namespace {

using nlohmann::json;

// Field table: one entry a key, binding JSON to the struct in both directions.
template <typename Fn>
void ForEachField(TrainConfig& c, Fn&& f) {
  f("model_config", c.model_config);
  f("data", c.data);
  f("seq_len", c.seq_len);
  f("micro_batch_size", c.micro_batch_size);
  f("grad_accum_steps", c.grad_accum_steps);
  f("max_steps", c.max_steps);
  f("lr", c.lr);
  f("min_lr_ratio", c.min_lr_ratio);
  f("warmup_steps", c.warmup_steps);
  f("schedule", c.schedule);
  f("wsd_decay_fraction", c.wsd_decay_fraction);
  f("beta1", c.beta1);
  f("beta2", c.beta2);
  f("adam_eps", c.adam_eps);
  f("weight_decay", c.weight_decay);
  f("grad_clip", c.grad_clip);
  f("lbl_coef", c.lbl_coef);
  f("lbl_window", c.lbl_window);
  f("lbl_group_size", c.lbl_group_size);
  f("z_loss_coef", c.z_loss_coef);
  f("log_interval", c.log_interval);
  f("eval_interval", c.eval_interval);
  f("eval_batches", c.eval_batches);
  f("checkpoint_interval", c.checkpoint_interval);
  f("seed", c.seed);
  f("threads", c.threads);
  f("precision", c.precision);
  f("grad_checkpoint", c.grad_checkpoint);
}

template <typename T>
absl::Status Read(const json& v, const std::string& key, T& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string())
      return absl::InvalidArgumentError(
          absl::StrCat("train config key '", key, "' must be a string, got ", v.dump()));
    out = v.get<std::string>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean())
      return absl::InvalidArgumentError(
          absl::StrCat("train config key '", key, "' must be true or false, got ", v.dump()));
    out = v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer())
      return absl::InvalidArgumentError(
          absl::StrCat("train config key '", key, "' must be an integer, got ", v.dump()));
    if (std::is_unsigned_v<T> && v.get<int64_t>() < 0 && !v.is_number_unsigned())
      return absl::InvalidArgumentError(
          absl::StrCat("train config key '", key, "' must be >= 0, got ", v.dump()));
    out = v.get<T>();
  } else {
    if (!v.is_number())
      return absl::InvalidArgumentError(
          absl::StrCat("train config key '", key, "' must be a number, got ", v.dump()));
    out = v.get<T>();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TrainConfig> ParseTrainConfig(absl::string_view text) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // e.byte is 1 past the last character the parser read, which may be the whitespace after
    // the offending token: point at the last non-blank character up to there (1-based line and
    // column). e.what() reads "[json.exception.parse_error.101] parse error at line L, column
    // C: REASON"; only the reason is kept.
    size_t at = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.empty() ? 0 : text.size() - 1);
    while (at > 0 &&
           (text[at] == ' ' || text[at] == '\n' || text[at] == '\r' || text[at] == '\t')) {
      --at;
    }
    int line = 1, column = 1;
    for (size_t i = 0; i < at && i < text.size(); ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    std::string reason = e.what();
    const size_t colon = reason.find(": ");
    if (colon != std::string::npos) reason = reason.substr(colon + 2);
    return absl::InvalidArgumentError(absl::StrCat("train config is not valid JSON at line ", line,
                                                   ", column ", column, ": ", reason));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("train config is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("train config must be a JSON object");
  TrainConfig c;
  std::vector<std::string> known;
  absl::Status status;
  ForEachField(c, [&](const char* key, auto& field) {
    known.push_back(key);
    if (!status.ok() || !j.contains(key)) return;
    status = Read(j[key], key, field);
  });
  if (!status.ok()) return status;
  for (const auto& [key, value] : j.items()) {
    if (key.rfind("_comment", 0) == 0) continue;
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown key '", key, "' in train config; known keys: ", absl::StrJoin(known, ", ")));
    }
  }
  absl::Status v = ValidateTrainConfig(c);
  if (!v.ok()) return v;
  return c;
}

absl::StatusOr<TrainConfig> LoadTrainConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, "train config");
  if (!text.ok()) {
    const absl::Status& s = text.status();
    return absl::Status(
        s.code(), absl::StrCat(s.message(), s.code() == absl::StatusCode::kInvalidArgument
                                                ? " (a JSON file with --config, see configs/train/)"
                                                : "; pass an existing file with --config (see "
                                                  "configs/train/)"));
  }
  absl::StatusOr<TrainConfig> c = ParseTrainConfig(*text);
  if (!c.ok())
    return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  // Relative paths inside a config file are relative to that file, so a run does not depend
  // on the directory it was started from.
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  for (std::string* p : {&c->model_config, &c->data}) {
    if (!p->empty() && std::filesystem::path(*p).is_relative()) {
      *p = (dir / *p).lexically_normal().string();
    }
  }
  return c;
}

absl::Status ValidateTrainConfig(const TrainConfig& c) {
  auto bad = [](const std::string& key, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("train config: '", key, "' ", what));
  };
  if (c.seq_len < 2) return bad("seq_len", "must be >= 2");
  if (c.micro_batch_size < 1) return bad("micro_batch_size", "must be >= 1");
  if (c.grad_accum_steps < 1) return bad("grad_accum_steps", "must be >= 1");
  if (c.max_steps < 1) return bad("max_steps", "must be >= 1");
  if (!(c.lr > 0)) return bad("lr", "must be > 0");
  if (c.min_lr_ratio < 0 || c.min_lr_ratio > 1) return bad("min_lr_ratio", "must be in [0, 1]");
  if (c.warmup_steps < 0) return bad("warmup_steps", "must be >= 0");
  if (c.schedule != "cosine" && c.schedule != "wsd" && c.schedule != "constant")
    return bad("schedule", absl::StrCat("must be cosine, wsd or constant, got '", c.schedule, "'"));
  if (c.wsd_decay_fraction <= 0 || c.wsd_decay_fraction > 1)
    return bad("wsd_decay_fraction", "must be in (0, 1]");
  if (c.beta1 < 0 || c.beta1 >= 1) return bad("beta1", "must be in [0, 1)");
  if (c.beta2 < 0 || c.beta2 >= 1) return bad("beta2", "must be in [0, 1)");
  if (!(c.adam_eps > 0)) return bad("adam_eps", "must be > 0");
  if (c.weight_decay < 0) return bad("weight_decay", "must be >= 0");
  if (c.grad_clip < 0) return bad("grad_clip", "must be >= 0 (0 disables clipping)");
  if (c.lbl_coef < 0) return bad("lbl_coef", "must be >= 0");
  if (c.lbl_window < 1) return bad("lbl_window", "must be >= 1 micro-batch");
  if (c.lbl_group_size < 0) {
    return bad("lbl_group_size", "must be >= 0 (0 = all ranks, 1 = per rank)");
  }
  if (c.z_loss_coef < 0) return bad("z_loss_coef", "must be >= 0");
  if (c.log_interval < 1) return bad("log_interval", "must be >= 1");
  if (c.eval_interval < 0) return bad("eval_interval", "must be >= 0");
  if (c.eval_batches < 1) return bad("eval_batches", "must be >= 1");
  if (c.checkpoint_interval < 0) return bad("checkpoint_interval", "must be >= 0");
  if (c.threads < 0) return bad("threads", "must be >= 0 (0 = all cores)");
  if (c.precision != "fp32" && c.precision != "bf16") {
    return bad("precision", absl::StrCat("must be fp32 or bf16, got '", c.precision, "'"));
  }
  return absl::OkStatus();
}

std::string TrainConfig::ToJson() const {
  json j = json::object();
  TrainConfig copy = *this;
  ForEachField(copy, [&](const char* key, auto& field) { j[key] = field; });
  return j.dump(2);
}

}  // namespace st
