// st-run: text generation and interactive chat with the torch-free runtime.
//   st-run --model m.stmf --prompt "And God said" --max_new_tokens 100
//   st-run --model m.stmf --chat --system "You answer in one sentence."
// Sampling is llama.cpp's chain (infer/runtime/sampler.h): repetition penalty -> top-k ->
// top-p -> min-p -> temperature. Generated text goes to stdout; notes, statistics and
// --top_logits rows go to stderr (or --logits_out).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gflags/gflags.h"
#include "infer/chat/chat_template.h"
#include "infer/chat/jinja.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/sampler.h"
#include "infer/tokenizer/tokenizer.h"
#include "infer/tools/cli.h"
#include "infer/tools/engine_flags.h"
#include "infer/tools/tool_util.h"
#include "nlohmann/json.hpp"

DEFINE_string(prompt, "", "prompt text (with --chat: the first user message)");
DEFINE_string(prompt_file, "", "read the prompt from this file instead of --prompt");
DEFINE_int32(max_new_tokens, 128,
             "tokens to generate at most (per reply with --chat); -1 = until an end-of-text "
             "token, a stop string or a full context");
DEFINE_double(temperature, 0.8, "sampling temperature; 0 = greedy");
DEFINE_int32(top_k, 40, "sample among the k most likely tokens; 0 = all");
DEFINE_double(top_p, 0.95,
              "sample among the smallest set of tokens whose probability reaches p; 1 = off");
DEFINE_double(min_p, 0.05, "drop tokens less likely than min_p times the most likely; 0 = off");
DEFINE_double(repeat_penalty, 1.0,
              "divide positive (multiply negative) logits of tokens among the last "
              "--repeat_last_n by this; 1 = off");
DEFINE_int32(repeat_last_n, 64,
             "tokens (prompt included) the repeat penalty looks back on; 0 = off, -1 = all");
DEFINE_uint64(seed, 1, "sampling seed: the same seed, flags and model give the same text");
DEFINE_string(stop, "",
              "stop strings, comma-separated (\\, is a comma, \\n a newline): the output ends "
              "before the first one and never shows it");
DEFINE_string(record_routing, "",
              "write how often each (layer, expert) was chosen in this run to this JSON file (a "
              "routing profile for --pin_profile with --memory_budget)");
DEFINE_bool(chat, false,
            "interactive chat: one user message a line on stdin; /reset clears the "
            "conversation, /exit or the end of input quits");
DEFINE_string(system, "", "system prompt for --chat");
DEFINE_bool(raw, false, "with --chat: send each line as it is, without the chat template");
DEFINE_string(chat_template_file, "",
              "with --chat: render this Jinja chat template instead of the model file's");
DEFINE_string(chat_template_kwargs, "",
              "with --chat: extra template variables as a JSON object, e.g. "
              "'{\"enable_thinking\": false}' (as apply_chat_template's keyword arguments)");
DEFINE_bool(echo, true, "print the prompt before the generated text (without --chat)");
DEFINE_int32(top_logits, 0,
             "print the N largest logits after every prompt token and generated token, as "
             "JSON lines, to stderr or --logits_out (for comparisons with other engines)");
DEFINE_string(logits_out, "", "file for the --top_logits lines (default: stderr)");

namespace st {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

using cli::Fail;

void Note(const std::string& msg) { std::fprintf(stderr, "[st-run] %s\n", msg.c_str()); }

void Emit(const std::string& text) {
  if (text.empty()) return;
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

SamplerOptions SamplerFlags() {
  SamplerOptions o;
  o.temperature = FLAGS_temperature;
  o.top_k = FLAGS_top_k;
  o.top_p = FLAGS_top_p;
  o.min_p = FLAGS_min_p;
  o.repeat_penalty = FLAGS_repeat_penalty;
  o.repeat_last_n = FLAGS_repeat_last_n;
  o.seed = FLAGS_seed;
  return o;
}

using cli::FlagGiven;

// The sampling settings of this run: a flag the user gave wins; else the model's
// generation_config.json (stored at export) as Hugging Face applies it (do_sample false or
// absent = greedy; a repetition penalty looks at the whole context); else the flag's default.
// `*note` says where each setting came from when the model file had any.
SamplerOptions SamplerSettings(const GenerationDefaults& g, std::string* note) {
  SamplerOptions o = SamplerFlags();
  if (g.empty()) return o;
  std::vector<std::string> from_file;
  auto take = [&](const char* flag, const auto& value, auto* field) {
    if (!value || FlagGiven(flag)) return;
    *field = *value;
    from_file.push_back(absl::StrCat(flag, " ", *value));
  };
  take("top_k", g.top_k, &o.top_k);
  take("top_p", g.top_p, &o.top_p);
  take("min_p", g.min_p, &o.min_p);
  if (g.repetition_penalty && !FlagGiven("repeat_penalty")) {
    o.repeat_penalty = *g.repetition_penalty;
    from_file.push_back(absl::StrCat("repeat_penalty ", o.repeat_penalty));
    if (!FlagGiven("repeat_last_n")) o.repeat_last_n = -1;
  }
  if (!FlagGiven("temperature")) {
    if (!g.do_sample.value_or(false)) {
      o.temperature = 0;
      from_file.push_back("greedy (do_sample false)");
    } else {
      take("temperature", g.temperature, &o.temperature);
    }
  }
  if (g.max_new_tokens && !FlagGiven("max_new_tokens")) {
    FLAGS_max_new_tokens = *g.max_new_tokens;
    from_file.push_back(absl::StrCat("max_new_tokens ", *g.max_new_tokens));
  }
  if (!from_file.empty()) {
    *note = absl::StrCat("sampling from the model's generation_config: ",
                         absl::StrJoin(from_file, ", "), " (flags override)");
  }
  return o;
}

// Every check that needs no model file.
absl::Status CheckFlags() {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError(m); };
  if (FLAGS_model.empty()) return bad("--model is required");
  if (!FLAGS_prompt.empty() && !FLAGS_prompt_file.empty()) {
    return bad("give --prompt or --prompt_file, not both");
  }
  if (!FLAGS_chat && FLAGS_prompt.empty() && FLAGS_prompt_file.empty()) {
    return bad("--prompt is required (or --prompt_file, or --chat for a conversation)");
  }
  if (!FLAGS_chat && (FLAGS_raw || !FLAGS_system.empty() || !FLAGS_chat_template_file.empty() ||
                      !FLAGS_chat_template_kwargs.empty())) {
    return bad(
        "--raw, --system, --chat_template_file and --chat_template_kwargs go with --chat "
        "(without --chat the prompt is always raw)");
  }
  if (FLAGS_raw && (!FLAGS_chat_template_file.empty() || !FLAGS_system.empty())) {
    return bad(
        "--raw sends lines without a template: --system and --chat_template_file do not "
        "apply");
  }
  if (FLAGS_max_new_tokens < -1) {
    return bad(
        absl::StrCat("--max_new_tokens must be >= -1 (-1 = no limit), got ", FLAGS_max_new_tokens));
  }
  if (FLAGS_top_logits < 0) {
    return bad(absl::StrCat("--top_logits must be >= 0, got ", FLAGS_top_logits));
  }
  if (!FLAGS_logits_out.empty() && FLAGS_top_logits == 0) {
    return bad("--logits_out needs --top_logits N");
  }
  absl::Status s = ValidateSamplerOptions(SamplerFlags());
  if (!s.ok()) return bad(absl::StrCat("--", s.message()));
  return absl::OkStatus();
}

// Writes one JSON line per position: the input token and the N largest logits after it.
//   {"pos":3,"token":1234,"text":" God","top":[[553,12.25," said"],...]}
class LogitDump {
 public:
  // 7 significant digits: what a float holds, without the noise of printing it as a double.
  static double Round7(float x) { return std::strtod(absl::StrFormat("%.7g", x).c_str(), nullptr); }

  LogitDump(const Tokenizer& tok, int n, FILE* out) : tok_(tok), n_(n), out_(out) {}
  bool on() const { return n_ > 0; }

  void Row(int pos, int32_t token, const float* logits, int V) {
    const int n = std::min(n_, V);
    idx_.resize(V);
    std::iota(idx_.begin(), idx_.end(), 0);
    auto better = [&](int a, int b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(idx_.begin(), idx_.begin() + n, idx_.end(), better);
    nlohmann::ordered_json top = nlohmann::ordered_json::array();
    for (int i = 0; i < n; ++i) {
      top.push_back({idx_[i], Round7(logits[idx_[i]]), tok_.Decode({idx_[i]})});
    }
    nlohmann::ordered_json row = {
        {"pos", pos}, {"token", token}, {"text", tok_.Decode({token})}, {"top", top}};
    const std::string line =
        row.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    std::fprintf(out_, "%s\n", line.c_str());
    std::fflush(out_);
  }

 private:
  const Tokenizer& tok_;
  int n_;
  FILE* out_;
  std::vector<int> idx_;
};

struct Totals {
  int64_t prefill_tokens = 0;
  double prefill_s = 0;
  int64_t decode_forwards = 0;
  int64_t generated = 0;
  double decode_s = 0;
  double ttft_s = 0;  // summed over replies
  int replies = 0;
  std::string last_stop;
};

// The model, sampler and stop conditions of one run; Feed + Generate is one turn.
class Runner {
 public:
  Runner(Engine& eng, const Tokenizer& tok, Sampler sampler, StopCondition stop, LogitDump* dump)
      : eng_(eng), tok_(tok), sampler_(std::move(sampler)), stop_(std::move(stop)), dump_(dump) {}

  // Appends `tokens` to the context; returns the logits after the last one.
  absl::StatusOr<std::vector<float>> Feed(const std::vector<int32_t>& tokens) {
    turn_start_ = Clock::now();
    const int start = eng_.position();
    std::vector<float> last;
    if (dump_->on()) {
      std::vector<float> all;
      absl::Status s = eng_.PrefillAll(tokens, &all);
      if (!s.ok()) return s;
      const int V = eng_.config().vocab_size;
      for (size_t t = 0; t < tokens.size(); ++t) {
        dump_->Row(start + static_cast<int>(t), tokens[t], all.data() + t * V, V);
      }
      last.assign(all.end() - V, all.end());
    } else {
      auto r = eng_.Prefill(tokens);
      if (!r.ok()) return r.status();
      last = *std::move(r);
    }
    totals_.prefill_s += Since(turn_start_);
    totals_.prefill_tokens += static_cast<int64_t>(tokens.size());
    sampler_.Accept(tokens);
    context_.insert(context_.end(), tokens.begin(), tokens.end());
    return last;
  }

  // Samples up to `max_new` tokens (-1: no limit) after `logits`, streaming the text to stdout.
  // Returns why it stopped; reply() is the text shown.
  absl::StatusOr<std::string> Generate(std::vector<float> logits, int max_new) {
    stop_.Reset();
    reply_.clear();
    auto show = [this](const std::string& text) {
      reply_ += text;
      Emit(text);
    };
    StreamDecoder dec(&tok_);
    const auto t0 = Clock::now();
    std::string reason;
    int sampled = 0;
    for (;;) {
      if (max_new >= 0 && sampled >= max_new) {
        reason = "max_new_tokens";
        break;
      }
      const int32_t next = sampler_.Sample(logits);
      if (sampled++ == 0) totals_.ttft_s += Since(turn_start_);
      if (stop_.IsEndOfText(next)) {
        reason = absl::StrCat("end of text (id ", next, ")");
        break;
      }
      ++totals_.generated;
      sampler_.Accept(next);
      show(stop_.Push(dec.Push(next)));
      if (stop_.stopped()) {
        reason = absl::StrCat("stop string \"", stop_.matched(), "\"");
        break;
      }
      if (max_new >= 0 && sampled >= max_new) {
        reason = "max_new_tokens";
        break;
      }
      if (eng_.position() >= eng_.max_context()) {
        reason = "context full";
        break;
      }
      const int pos = eng_.position();
      auto r = eng_.Forward(next);
      if (!r.ok()) return r.status();
      context_.push_back(next);
      logits = *std::move(r);
      ++totals_.decode_forwards;
      if (dump_->on()) dump_->Row(pos, next, logits.data(), static_cast<int>(logits.size()));
    }
    if (!stop_.stopped()) {
      show(stop_.Push(dec.Flush()));
      show(stop_.Flush());
    }
    totals_.decode_s += Since(t0);
    ++totals_.replies;
    totals_.last_stop = reason;
    return reason;
  }

  void Reset() {
    eng_.Reset();
    sampler_.ClearHistory();
    context_.clear();
  }
  const Totals& totals() const { return totals_; }
  // The tokens in the engine's context, in order (prompt turns and the replies' fed tokens).
  const std::vector<int32_t>& context() const { return context_; }
  const std::string& reply() const { return reply_; }

 private:
  Engine& eng_;
  const Tokenizer& tok_;
  Sampler sampler_;
  StopCondition stop_;
  LogitDump* dump_;
  Totals totals_;
  Clock::time_point turn_start_;
  std::vector<int32_t> context_;
  std::string reply_;
};

void PrintStats(const LoadedModel& m, const Totals& t) {
  const Engine& e = *m.engine;
  const double decode_tps = t.decode_forwards / std::max(t.decode_s, 1e-9);
  std::string ttft = absl::StrFormat("%.3f s", t.ttft_s / std::max(t.replies, 1));
  if (t.replies > 1) absl::StrAppend(&ttft, " (mean of ", t.replies, " replies)");
  std::fprintf(stderr,
               "[st-run] load %.2f s | prefill %lld tokens in %.3f s (%.1f tok/s) | time to first "
               "token %s | generated %lld tokens, decode %.3f s (%.1f tok/s) | stop: %s\n"
               "[st-run] %s | %d threads, %s kernels\n",
               m.load_seconds, static_cast<long long>(t.prefill_tokens), t.prefill_s,
               t.prefill_tokens / std::max(t.prefill_s, 1e-9), ttft.c_str(),
               static_cast<long long>(t.generated), t.decode_s, decode_tps,
               t.last_stop.empty() ? "-" : t.last_stop.c_str(), SparsityText(e.stats()).c_str(),
               e.threads(), e.KernelName().c_str());
  if (e.expert_cache() != nullptr) {
    std::fprintf(stderr, "[st-run] %s\n", CacheStatsText(e, e.stats().tokens).c_str());
  }
  if (!FLAGS_record_routing.empty()) {
    absl::Status s = WriteRoutingProfile(FLAGS_record_routing, e.routing());
    if (s.ok()) {
      std::fprintf(stderr, "[st-run] routing profile of %lld tokens written to %s\n",
                   static_cast<long long>(e.routing().tokens), FLAGS_record_routing.c_str());
    } else {
      cli::Warn(s.message());
    }
  }
}

std::string ContextFullNote(const Engine& e) {
  return absl::StrCat("the context is full (", e.position(), " of ", e.max_context(),
                      " tokens): the reply was cut off");
}

int RunPrompt(const LoadedModel& m, Runner& run, const std::string& prompt) {
  Engine& e = *m.engine;
  // As Hugging Face's tokenizer(prompt): BOS/EOS only where the model's policy adds them.
  std::vector<int32_t> tokens = m.policy.Encode(*m.tokenizer, prompt);
  if (tokens.empty()) return Fail("the prompt encodes to no tokens");
  if (static_cast<int64_t>(tokens.size()) > e.max_context()) {
    return Fail(absl::StrCat("the prompt is ", tokens.size(),
                             " tokens, longer than the model's context of ", e.max_context(),
                             " tokens: shorten it"));
  }
  if (FLAGS_echo) Emit(prompt);
  auto logits = run.Feed(tokens);
  if (!logits.ok()) return Fail(logits.status().message());
  auto reason = run.Generate(*std::move(logits), FLAGS_max_new_tokens);
  if (!reason.ok()) return Fail(reason.status().message());
  Emit("\n");
  if (*reason == "context full") Note(ContextFullNote(e));
  PrintStats(m, run.totals());
  return 0;
}

// The chat template this run renders: --chat_template_file, else the model file's, else ChatML.
absl::StatusOr<std::string> ChatTemplateSource(const Engine& e) {
  if (!FLAGS_chat_template_file.empty()) {
    return cli::ReadFile(FLAGS_chat_template_file, "--chat_template_file");
  }
  if (!e.file().chat_template().empty()) return e.file().chat_template();
  Note(
      "chat: the model file has no chat template; turns use ChatML (<|im_start|>role ... "
      "<|im_end|>)");
  return std::string(kChatMlTemplate);
}

int RunChat(const LoadedModel& m, Runner& run) {
  Engine& e = *m.engine;
  const Tokenizer& tok = *m.tokenizer;
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
  if (!FLAGS_chat_template_kwargs.empty()) {
    kwargs = nlohmann::ordered_json::parse(FLAGS_chat_template_kwargs, nullptr, false);
    if (kwargs.is_discarded() || !kwargs.is_object()) {
      return cli::UsageError(
          absl::StrCat("--chat_template_kwargs must be a JSON object such as "
                       "'{\"enable_thinking\": false}', got '",
                       FLAGS_chat_template_kwargs, "'"));
    }
  }
  std::string tmpl;
  if (FLAGS_raw) {
    Note("chat: --raw, each line goes to the model as it is (no chat template)");
  } else {
    auto source = ChatTemplateSource(e);
    if (!source.ok()) return Fail(source.status().message());
    tmpl = *std::move(source);
    // A template that does not parse is reported now, not after the first message.
    auto parsed = jinja::Template::Parse(tmpl);
    // Messages read "chat template:LINE:COLUMN: ...".
    if (!parsed.ok()) return Fail(parsed.status().message());
  }
  const bool tty = ::isatty(0);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  auto start_conversation = [&] {
    messages = nlohmann::ordered_json::array();
    if (!FLAGS_system.empty()) messages.push_back({{"role", "system"}, {"content", FLAGS_system}});
  };
  start_conversation();
  bool noted_rerender = false;

  auto turn = [&](const std::string& line) -> absl::Status {
    std::vector<int32_t> tokens;
    if (FLAGS_raw) {
      tokens = tok.Encode(line + "\n");
    } else {
      // The whole conversation, rendered as Hugging Face's apply_chat_template renders it, and
      // tokenized as it does (no BOS/EOS added: a template writes its own special tokens).
      messages.push_back({{"role", "user"}, {"content", line}});
      ChatRenderInput in;
      in.messages = messages;
      in.add_generation_prompt = true;
      in.bos_token = m.policy.bos_token;
      in.eos_token = m.policy.eos_token;
      in.kwargs = kwargs;
      auto text = RenderChatTemplate(tmpl, in);
      if (!text.ok()) {
        messages.erase(messages.end() - 1);
        return text.status();
      }
      std::vector<int32_t> all = tok.Encode(*text);
      // Feed only what follows the context already computed. When the template renders the
      // earlier turns differently from the tokens the model produced (Qwen3 drops the
      // reasoning of past turns), the conversation is read again from the start.
      const std::vector<int32_t>& ctx = run.context();
      const bool extends =
          all.size() >= ctx.size() && std::equal(ctx.begin(), ctx.end(), all.begin());
      if (!extends) {
        if (!noted_rerender) {
          Note(
              "chat: the template renders earlier turns differently from what the model wrote; "
              "the conversation is read again from its start each turn");
          noted_rerender = true;
        }
        run.Reset();
        tokens = std::move(all);
      } else {
        tokens.assign(all.begin() + static_cast<std::ptrdiff_t>(ctx.size()), all.end());
      }
    }
    if (tokens.empty()) return absl::OkStatus();
    if (e.position() + static_cast<int64_t>(tokens.size()) > e.max_context()) {
      if (!FLAGS_raw) messages.erase(messages.end() - 1);
      Note(absl::StrCat("the context is full: ", e.position(), " of ", e.max_context(),
                        " tokens used and this message needs ", tokens.size(),
                        "; type /reset to start a new conversation"));
      return absl::OkStatus();
    }
    auto logits = run.Feed(tokens);
    if (!logits.ok()) return logits.status();
    auto reason = run.Generate(*std::move(logits), FLAGS_max_new_tokens);
    if (!reason.ok()) return reason.status();
    Emit("\n");
    if (!FLAGS_raw) messages.push_back({{"role", "assistant"}, {"content", run.reply()}});
    if (*reason == "context full") Note(ContextFullNote(e) + "; type /reset to start over");
    return absl::OkStatus();
  };

  if (!FLAGS_prompt.empty()) {
    absl::Status s = turn(FLAGS_prompt);
    if (!s.ok()) return Fail(s.message());
  }
  std::string line;
  for (;;) {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "/exit") break;
    if (line == "/reset") {
      run.Reset();
      start_conversation();
      Note("context cleared");
      continue;
    }
    if (line.empty()) continue;
    absl::Status s = turn(line);
    if (!s.ok()) return Fail(s.message());
  }
  PrintStats(m, run.totals());
  return 0;
}

int Main() {
  absl::Status s = CheckFlags();
  if (!s.ok()) return cli::UsageError(s.message());
  std::string prompt = FLAGS_prompt;
  if (!FLAGS_prompt_file.empty()) {
    auto text = cli::ReadFile(FLAGS_prompt_file, "--prompt_file");
    if (!text.ok()) return Fail(text.status().message());
    prompt = *std::move(text);
    if (prompt.empty() && !FLAGS_chat)
      return Fail("--prompt_file '" + FLAGS_prompt_file + "' is empty");
  }

  EngineOptions opt;
  opt.threads = cli::Threads();
  if (absl::Status fs = ApplyEngineFlags(&opt); !fs.ok()) return cli::UsageError(fs.message());
  auto loaded = LoadModel(FLAGS_model, opt);
  if (!loaded.ok()) return Fail(loaded.status().message());
  LoadedModel& m = *loaded;
  if (m.engine->expert_cache() != nullptr) {
    std::fprintf(stderr, "[st-run] %s\n", BudgetPlanText(*m.engine).c_str());
  }

  FILE* logits_out = stderr;
  if (!FLAGS_logits_out.empty()) {
    logits_out = std::fopen(FLAGS_logits_out.c_str(), "w");
    if (logits_out == nullptr) return Fail("cannot write --logits_out '" + FLAGS_logits_out + "'");
  }
  LogitDump dump(*m.tokenizer, FLAGS_top_logits, logits_out);
  std::string sampling_note;
  auto sampler =
      Sampler::Create(SamplerSettings(m.engine->file().generation_defaults(), &sampling_note));
  if (!sampling_note.empty()) Note(sampling_note);
  if (!sampler.ok()) return Fail(sampler.status().message());
  StopCondition stop(StopCondition::EndOfTextIds(m.engine->file().eos_token_ids(), *m.tokenizer),
                     ParseStopStrings(FLAGS_stop));
  Runner run(*m.engine, *m.tokenizer, *std::move(sampler), std::move(stop), &dump);
  FLAGS_prompt = prompt;
  const int rc = FLAGS_chat ? RunChat(m, run) : RunPrompt(m, run, prompt);
  if (logits_out != stderr) std::fclose(logits_out);
  return rc;
}

}  // namespace
}  // namespace st

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-run";
  spec.usage =
      "st-run --model m.stmf --prompt TEXT [--max_new_tokens N] [sampling flags]\n"
      "st-run --model m.stmf --chat [--system TEXT]   (one message a line on stdin)\n"
      "st-run -m m.stmf -p TEXT -n N -t THREADS --temp 0.7 -s SEED   (llama.cpp spellings)";
  spec.about =
      "Text generation and chat with the torch-free runtime. Sampling is llama.cpp's chain: "
      "repetition penalty, top-k, top-p, min-p, temperature; the model's generation_config "
      "settings apply unless a flag is given. Text goes to stdout, notes and statistics to "
      "stderr.";
  spec.groups = {{"st-run flags", "infer/tools/st_run_main.cpp", {"threads"}},
                 st::EngineFlagGroup()};
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  return st::Main();
}
