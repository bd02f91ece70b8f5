// st-data: the data tool. Subcommands: prepare (text -> token shard directory), encode /
// decode (debug tokenization), train-tokenizer (BPE), info (dataset summary), render-chat (a chat
// template rendered for a conversation, as Hugging Face renders it).
#include <gflags/gflags.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "data/hdf5.h"
#include "data/prepare.h"
#include "data/token_dataset.h"
#include "infer/chat/chat_template.h"
#include "infer/format/model_file.h"
#include "infer/tokenizer/bpe_trainer.h"
#include "infer/tokenizer/hf_configs.h"
#include "infer/tokenizer/tokenizer.h"
#include "infer/tools/cli.h"
#include "model/check.h"
#include "model/config.h"
#include "model/file_io.h"
#include "nlohmann/json.hpp"

DEFINE_string(tokenizer, "byte",
              "\"byte\", a Hugging Face tokenizer.json, or a Hugging Face checkpoint directory "
              "(its tokenizer.json and tokenizer_config.json: BOS/EOS policy, chat template)");
DEFINE_string(input, "", "input path(s), comma separated");
DEFINE_string(output, "", "output path");
DEFINE_double(val_fraction, 0.01, "fraction held out for validation, in [0, 0.5]");
DEFINE_int64(shard_tokens, 50000000, "tokens a shard (closed at the next document end)");
DEFINE_bool(overwrite, false, "replace an existing dataset");
DEFINE_string(model_config, "", "model config JSON: check that the vocabulary fits it");
DEFINE_string(text, "", "text to encode");
DEFINE_bool(bench, false, "print encoding speed instead of the ids");
DEFINE_string(ids, "", "ids to decode, comma separated");
DEFINE_int32(vocab_size, 0, "vocabulary size of the tokenizer to train");
DEFINE_int32(min_frequency, 2, "pairs seen fewer times are never merged");
DEFINE_string(template, "",
              "render-chat: a tokenizer_config.json, a .jinja chat template, or a model file");
DEFINE_string(messages, "", "render-chat: the conversation, a JSON array of messages");
DEFINE_bool(add_generation_prompt, false,
            "render-chat: end with the template's generation prompt (the assistant's turn)");
DEFINE_string(bos_token, "", "render-chat: the bos_token variable (default: PATH's)");
DEFINE_string(eos_token, "", "render-chat: the eos_token variable (default: PATH's)");
DEFINE_string(kwargs, "", "render-chat: extra template variables, a JSON object");

namespace {

struct Command {
  const char* name;
  const char* usage;  // usage lines
  const char* about;  // what it does
  std::vector<std::string> flags;
};

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"prepare",
       "st-data prepare --tokenizer {byte|PATH/tokenizer.json} --input PATH[,PATH...] --output "
       "DIR\n        [--val_fraction 0.01] [--shard_tokens 50000000] [--overwrite] "
       "[--model_config configs/model/x.json] [--threads N]",
       "Tokenizes text files, directories (*.txt, *.jsonl, recursively) and JSONL files "
       "(\"text\" field) into a dataset directory of HDF5 token shards; an interrupted run "
       "resumes when re-run with the same arguments.",
       {"tokenizer", "input", "output", "val_fraction", "shard_tokens", "overwrite", "model_config",
        "threads"}},
      {"encode",
       "st-data encode --tokenizer T (--text STR | --input FILE) [--bench]",
       "Prints the ids as a JSON array; --bench prints the encoding speed instead.",
       {"tokenizer", "text", "input", "bench"}},
      {"decode",
       "st-data decode --tokenizer T (--ids 1,2,3 | --input FILE)",
       "Prints the text of ids (FILE: a JSON array or ids separated by spaces or commas).",
       {"tokenizer", "ids", "input"}},
      {"train-tokenizer",
       "st-data train-tokenizer --input PATH[,PATH...] --vocab_size N --output tokenizer.json "
       "[--min_frequency 2]",
       "Trains a byte-level BPE tokenizer (Hugging Face tokenizer.json).",
       {"input", "vocab_size", "output", "min_frequency"}},
      {"info",
       "st-data info DIR",
       "Prints a dataset's manifest: tokens per split, tokenizer, sources.",
       {}},
      {"render-chat",
       "st-data render-chat --template PATH --messages conv.json [--add_generation_prompt]\n"
       "        [--bos_token S] [--eos_token S] [--kwargs JSON]",
       "Prints exactly the string a chat template renders for a conversation, as Hugging "
       "Face's apply_chat_template does, byte for byte, nothing appended. PATH: a "
       "tokenizer_config.json, a .jinja file or a model file (.stmf); conv.json: a JSON array "
       "of {\"role\", \"content\", ...} messages, or {\"messages\": [...], \"tools\": [...]}. "
       "bos/eos default to the tokens PATH names; --kwargs adds template variables, e.g. "
       "'{\"enable_thinking\": false}'.",
       {"template", "messages", "add_generation_prompt", "bos_token", "eos_token", "kwargs"}},
  };
  return commands;
}

void PrintList(FILE* out) {
  std::fprintf(out, "st-data: the smallthinker.cpp data tool\nusage: st-data COMMAND [flags]\n\n");
  for (const Command& c : Commands()) {
    std::fprintf(out, "  %s\n%s\n", c.usage, st::cli::WrapText(c.about, 4).c_str());
  }
  std::fprintf(out,
               "st-data COMMAND --help shows one command and its flags; st-data --version the "
               "version.\n");
}

using st::cli::UsageError;
int Failure(const std::string& msg) { return st::cli::Fail(msg); }
int Failure(const absl::Status& s) { return st::cli::Fail(s); }

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipWhitespace())) out.emplace_back(p);
  return out;
}

using st::ReadFile;

// The tokenizer policy of --tokenizer: a Hugging Face directory's tokenizer_config.json (as
// AutoTokenizer.from_pretrained reads it); a bare tokenizer.json or "byte" adds nothing.
st::TokenizerPolicy g_policy;

absl::StatusOr<std::unique_ptr<st::Tokenizer>> LoadTok() {
  auto fail = [](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("--tokenizer ", FLAGS_tokenizer, ": ", s.message()));
  };
  std::string path = FLAGS_tokenizer;
  std::error_code ec;
  const bool dir = std::filesystem::is_directory(path, ec);
  if (dir) {
    path = (std::filesystem::path(path) / "tokenizer.json").string();
    if (!std::filesystem::exists(path, ec)) {
      return fail(absl::NotFoundError(
          "is a directory without a tokenizer.json (give a Hugging Face checkpoint directory, a "
          "tokenizer.json, or byte)"));
    }
  }
  auto tok = st::LoadTokenizer(path);
  if (!tok.ok()) return fail(tok.status());
  const std::string config_path =
      (std::filesystem::path(FLAGS_tokenizer) / "tokenizer_config.json").string();
  if (dir && std::filesystem::exists(config_path, ec)) {
    auto text = ReadFile(config_path);
    if (!text.ok()) return fail(text.status());
    auto policy = st::ParseTokenizerConfig(*text, tok->get());
    if (!policy.ok()) return fail(policy.status());
    g_policy = *std::move(policy);
  }
  return tok;
}

// Unigram entropy in nats per token (the loss of the best context-free model).
double UnigramEntropyNats(const std::vector<int64_t>& counts) {
  double n = 0, h = 0;
  for (int64_t c : counts) n += static_cast<double>(c);
  for (int64_t c : counts) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / n;
    h -= p * std::log(p);
  }
  return h;
}

int Prepare() {
  if (FLAGS_input.empty()) return UsageError("prepare: --input is required (text, dir or JSONL)");
  if (FLAGS_output.empty()) return UsageError("prepare: --output DIR is required");
  if (!(FLAGS_val_fraction >= 0.0 && FLAGS_val_fraction <= 0.5)) {
    return UsageError(absl::StrCat("--val_fraction must be in [0, 0.5], got ", FLAGS_val_fraction));
  }
  if (FLAGS_shard_tokens <= 0) return UsageError("--shard_tokens must be positive");
  auto tok = LoadTok();
  if (!tok.ok()) return Failure(tok.status());
  if (!FLAGS_model_config.empty()) {
    auto model = st::LoadModelConfig(FLAGS_model_config);
    if (!model.ok()) return Failure(model.status());
    if ((*tok)->vocab_size() > model->vocab_size) {
      return Failure(absl::StrCat("the tokenizer has ", (*tok)->vocab_size(),
                                  " ids but the model config ", FLAGS_model_config,
                                  " has vocab_size ", model->vocab_size,
                                  "; train a smaller tokenizer or use a model config with "
                                  "vocab_size >= ",
                                  (*tok)->vocab_size()));
    }
  }
  st::PrepareOptions opt;
  opt.inputs = SplitList(FLAGS_input);
  opt.output = FLAGS_output;
  opt.val_fraction = FLAGS_val_fraction;
  opt.shard_tokens = FLAGS_shard_tokens;
  opt.overwrite = FLAGS_overwrite;
  opt.threads = st::cli::Threads();
  opt.progress = true;
  opt.policy = g_policy;
  auto r = st::PrepareDataset(**tok, opt);
  if (!r.ok()) return Failure(r.status());
  const st::Manifest& m = r->manifest;
  const int64_t train = m.Tokens("train"), val = m.Tokens("val");
  std::printf("st-data prepare: %lld documents, %.2f MB from %zu file(s)%s\n",
              static_cast<long long>(r->documents), r->bytes / 1e6, m.sources.size(),
              r->resumed_shards > 0
                  ? absl::StrCat(" (resumed after ", r->resumed_shards, " shard(s))").c_str()
                  : "");
  std::printf("tokenizer: %s (vocab_size %d, eos_id %d, fingerprint %s)\n", m.tokenizer.c_str(),
              m.vocab_size, m.eos_id, m.fingerprint.c_str());
  std::printf("train: %lld tokens in %zu shard(s), val: %lld tokens in %zu shard(s) (%.2f%% val)\n",
              static_cast<long long>(train), m.train.size(), static_cast<long long>(val),
              m.val.size(), train + val > 0 ? 100.0 * val / (train + val) : 0.0);
  std::printf("%.2f bytes/token; %.3f s: %.1f MB/s, %.2f M tokens/s\n",
              static_cast<double>(r->bytes) / std::max<int64_t>(1, train + val), r->seconds,
              r->bytes / 1e6 / std::max(r->seconds, 1e-9),
              (train + val) / 1e6 / std::max(r->seconds, 1e-9));
  const double nats = UnigramEntropyNats(r->train_counts);
  std::printf("train unigram entropy: %.4f bits/token = %.4f nats/token\n", nats / std::log(2.0),
              nats);
  std::printf("wrote %s\n", FLAGS_output.c_str());
  return 0;
}

int Encode() {
  if (FLAGS_text.empty() == FLAGS_input.empty()) {
    return UsageError("encode: give exactly one of --text STR or --input FILE");
  }
  auto text = FLAGS_text.empty() ? ReadFile(FLAGS_input, "--input")
                                 : absl::StatusOr<std::string>(FLAGS_text);
  if (!text.ok()) return Failure(text.status());
  auto tok = LoadTok();
  if (!tok.ok()) return Failure(tok.status());
  if (FLAGS_bench) {
    double best = 1e300;
    size_t n = 0;
    for (int run = 0; run < 3; ++run) {
      const auto t0 = std::chrono::steady_clock::now();
      n = g_policy.Encode(**tok, *text).size();
      best = std::min(best,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("encoded %zu bytes in %.4f s: %.2f MB/s (%zu tokens)\n", text->size(), best,
                text->size() / 1e6 / std::max(best, 1e-12), n);
    return 0;
  }
  std::vector<int32_t> ids = g_policy.Encode(**tok, *text);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&out, i ? "," : "", ids[i]);
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int Decode() {
  if (FLAGS_ids.empty() == FLAGS_input.empty()) {
    return UsageError("decode: give exactly one of --ids 1,2,3 or --input FILE");
  }
  std::string spec = FLAGS_ids;
  if (!FLAGS_input.empty()) {
    auto t = ReadFile(FLAGS_input, "--input");
    if (!t.ok()) return Failure(t.status());
    spec = *t;
  }
  // A JSON array or ids separated by commas / whitespace: brackets become separators.
  for (char& c : spec) {
    if (c == '[' || c == ']' || c == ',' || c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  std::vector<int32_t> ids;
  for (absl::string_view p : absl::StrSplit(spec, ' ', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(p, &id)) {
      return UsageError(absl::StrCat("decode: '", p, "' is not an integer id"));
    }
    ids.push_back(id);
  }
  auto tok = LoadTok();
  if (!tok.ok()) return Failure(tok.status());
  int bad = 0;
  for (int32_t id : ids) bad += id < 0 || id >= (*tok)->vocab_size();
  if (bad > 0) {
    st::cli::Warn(
        absl::StrCat(bad, " id(s) outside [0, ", (*tok)->vocab_size(), ") decode to U+FFFD"));
  }
  const std::string text = (*tok)->Decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int TrainTokenizer() {
  if (FLAGS_input.empty()) return UsageError("train-tokenizer: --input is required");
  if (FLAGS_output.empty())
    return UsageError("train-tokenizer: --output tokenizer.json is required");
  if (FLAGS_vocab_size <= 0) return UsageError("train-tokenizer: --vocab_size N is required");
  if (FLAGS_min_frequency < 1) return UsageError("--min_frequency must be >= 1");
  auto files = st::ListInputs(SplitList(FLAGS_input));
  if (!files.ok()) return Failure(files.status());
  int64_t total = 0;
  for (const st::InputFile& f : *files) total += f.bytes;
  const auto t0 = std::chrono::steady_clock::now();
  st::BpeWordCounter counter;
  {
    st::DocumentReader reader(*files);
    st::Document doc;
    auto last = t0;
    for (;;) {
      auto got = reader.Next(&doc);
      if (!got.ok()) return Failure(got.status());
      if (!*got) break;
      counter.Add(doc.text);
      const auto now = std::chrono::steady_clock::now();
      if (now - last > std::chrono::seconds(1)) {
        last = now;
        std::fprintf(stderr, "train-tokenizer: counted %.1f/%.1f MB\n", reader.bytes_read() / 1e6,
                     total / 1e6);
      }
    }
  }
  if (counter.bytes() == 0) return Failure("the input holds no text; nothing to train on");
  st::BpeTrainOptions opt;
  opt.vocab_size = FLAGS_vocab_size;
  opt.min_frequency = FLAGS_min_frequency;
  auto last = std::chrono::steady_clock::now();
  opt.progress = [&](int64_t, int merges) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::seconds(1)) return;
    last = now;
    std::fprintf(stderr, "train-tokenizer: %d merges learned\n", merges);
  };
  auto json_text = counter.Train(opt);
  if (!json_text.ok()) return Failure(json_text.status());
  const double train_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto tok = st::MakeTokenizer("bpe", *json_text);
  if (!tok.ok()) {
    return Failure(
        absl::StrCat("the trained tokenizer does not load back: ", tok.status().message()));
  }
  absl::Status s = st::WriteFileAtomic(FLAGS_output, *json_text);
  if (!s.ok()) return Failure(s);
  // Bytes per token of the new tokenizer on the training input.
  int64_t bytes = 0, tokens = 0;
  st::DocumentReader reader(*files);
  st::Document doc;
  for (;;) {
    auto got = reader.Next(&doc);
    if (!got.ok() || !*got) break;
    bytes += static_cast<int64_t>(doc.text.size());
    tokens += static_cast<int64_t>((*tok)->Encode(doc.text).size());
  }
  size_t merges = 0;
  nlohmann::json j = nlohmann::json::parse(*json_text, nullptr, false);
  if (!j.is_discarded() && j.contains("model") && j["model"].contains("merges")) {
    merges = j["model"]["merges"].size();
  }
  std::printf(
      "st-data train-tokenizer: vocab %d, %zu merges, %.2f s, %.3f bytes/token on the "
      "input (%.2f MB)\nwrote %s\n",
      (*tok)->vocab_size(), merges, train_s,
      static_cast<double>(bytes) / std::max<int64_t>(1, tokens), bytes / 1e6, FLAGS_output.c_str());
  return 0;
}

// The chat template and the bos/eos texts PATH holds (render-chat).
struct TemplateSource {
  std::string text;
  std::string bos_token, eos_token;
};

absl::StatusOr<TemplateSource> ReadTemplateSource(const std::string& path) {
  TemplateSource t;
  ST_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, "--template"));
  auto where = [&path](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("--template ", path, ": ", s.message()));
  };
  if (bytes.rfind("STMF", 0) == 0) {  // a model file
    auto f = st::ModelFile::Open(path);
    if (!f.ok()) return where(f.status());
    t.text = (*f)->chat_template();
    t.bos_token = (*f)->tokenizer_policy().bos_token;
    t.eos_token = (*f)->tokenizer_policy().eos_token;
    if (t.text.empty()) return where(absl::NotFoundError("the model file has no chat template"));
    return t;
  }
  if (absl::EndsWith(path, ".jinja")) {
    t.text = std::move(bytes);
    return t;
  }
  st::ChatTemplates templates;
  auto policy = st::ParseTokenizerConfig(bytes, nullptr, &templates);
  if (!policy.ok()) {
    return where(absl::InvalidArgumentError(absl::StrCat(
        policy.status().message(),
        " (PATH is read as a tokenizer_config.json unless it ends in .jinja or is a model file)")));
  }
  t.text = templates.default_template;
  if (t.text.empty() && !templates.named.empty()) t.text = templates.named.front().second;
  if (t.text.empty()) return where(absl::NotFoundError("there is no \"chat_template\" in it"));
  t.bos_token = policy->bos_token;
  t.eos_token = policy->eos_token;
  return t;
}

int RenderChat() {
  if (FLAGS_template.empty()) return UsageError("render-chat: --template PATH is required");
  if (FLAGS_messages.empty()) return UsageError("render-chat: --messages conv.json is required");
  auto source = ReadTemplateSource(FLAGS_template);
  if (!source.ok()) return Failure(source.status());
  auto conv_text = ReadFile(FLAGS_messages, "--messages");
  if (!conv_text.ok()) return Failure(conv_text.status());
  using ojson = nlohmann::ordered_json;
  const ojson conv = ojson::parse(*conv_text, nullptr, false);
  st::ChatRenderInput in;
  if (conv.is_array()) {
    in.messages = conv;
  } else if (conv.is_object() && conv.contains("messages") && conv["messages"].is_array()) {
    in.messages = conv["messages"];
    if (conv.contains("tools")) in.tools = conv["tools"];
  } else {
    return Failure(absl::StrCat("--messages ", FLAGS_messages,
                                ": expected a JSON array of {\"role\", \"content\"} messages (or "
                                "{\"messages\": [...], \"tools\": [...]})",
                                conv.is_discarded() ? "; the file is not valid JSON" : ""));
  }
  for (size_t i = 0; i < in.messages.size(); ++i) {
    const ojson& msg = in.messages[i];
    if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string()) {
      return Failure(absl::StrCat("--messages ", FLAGS_messages, ": message ", i,
                                  " is not an object with a \"role\" string"));
    }
  }
  if (!FLAGS_kwargs.empty()) {
    in.kwargs = ojson::parse(FLAGS_kwargs, nullptr, false);
    if (in.kwargs.is_discarded() || !in.kwargs.is_object()) {
      return UsageError(
          absl::StrCat("render-chat: --kwargs must be a JSON object, got '", FLAGS_kwargs, "'"));
    }
  }
  in.add_generation_prompt = FLAGS_add_generation_prompt;
  auto given = [](const char* flag) { return st::cli::FlagGiven(flag); };
  in.bos_token = given("bos_token") ? FLAGS_bos_token : source->bos_token;
  in.eos_token = given("eos_token") ? FLAGS_eos_token : source->eos_token;
  auto text = st::RenderChatTemplate(source->text, in);
  if (!text.ok()) return Failure(absl::StrCat(FLAGS_template, ": ", text.status().message()));
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}

int Info(const std::string& dir) {
  auto m = st::ReadManifest(dir);
  if (!m.ok()) return Failure(m.status());
  std::printf("dataset %s (%s, version %d)%s\n", dir.c_str(), st::kTokenShardsFormat,
              st::kTokenShardsVersion,
              m->complete ? "" : "  INCOMPLETE: re-run the st-data prepare command to finish");
  std::printf("tokenizer: %s (vocab_size %d, eos_id %d, fingerprint %s)\n", m->tokenizer.c_str(),
              m->vocab_size, m->eos_id, m->fingerprint.c_str());
  for (const char* split : {"train", "val"}) {
    const auto& shards = std::string(split) == "val" ? m->val : m->train;
    std::printf("%s: %lld tokens in %zu shard(s)\n", split,
                static_cast<long long>(m->Tokens(split)), shards.size());
    for (const st::ShardInfo& s : shards) {
      std::printf("  %s  %lld tokens\n", s.file.c_str(), static_cast<long long>(s.tokens));
    }
  }
  int64_t bytes = 0;
  for (const st::SourceInfo& s : m->sources) bytes += s.bytes;
  std::printf("sources: %zu file(s), %.2f MB\n", m->sources.size(), bytes / 1e6);
  for (size_t i = 0; i < m->sources.size() && i < 20; ++i) {
    std::printf("  %s  %lld bytes\n", m->sources[i].path.c_str(),
                static_cast<long long>(m->sources[i].bytes));
  }
  if (m->sources.size() > 20) std::printf("  ... and %zu more\n", m->sources.size() - 20);
  return 0;
}

// Every flag of st-data and the shared --threads: the flags some command takes.
std::vector<std::string> AllFlags() {
  std::vector<std::string> all;
  for (const Command& c : Commands()) {
    for (const std::string& f : c.flags) {
      if (std::find(all.begin(), all.end(), f) == all.end()) all.push_back(f);
    }
  }
  return all;
}

std::string CommandNames() {
  std::vector<std::string> names;
  for (const Command& c : Commands()) names.push_back(c.name);
  return absl::StrJoin(names, ", ");
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = st::cli;
  cli::SetToolName("st-data");
  if (argc >= 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
                    !std::strcmp(argv[1], "-help") || !std::strcmp(argv[1], "help"))) {
    PrintList(stdout);
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') {
    // Flags without a command: unknown flags and bad values are reported first.
    cli::Spec spec;
    spec.name = "st-data";
    spec.usage = "st-data COMMAND [flags]";
    spec.groups = {{"st-data flags", "", AllFlags()}};
    const cli::Parsed parsed = cli::Parse(spec, argc, argv);
    if (parsed.done()) return parsed.exit_code;
    return UsageError(absl::StrCat("give a command first: ", CommandNames()));
  }
  const std::string name = argv[1];
  const Command* cmd = nullptr;
  for (const Command& c : Commands()) {
    if (name == c.name) cmd = &c;
  }
  if (cmd == nullptr) {
    std::string near;
    for (const Command& c : Commands()) {
      if (cli::EditDistance(name, c.name) <= 2) near = c.name;
    }
    return UsageError(absl::StrCat("unknown command '", name, "'",
                                   near.empty() ? "" : absl::StrCat("; did you mean '", near, "'?"),
                                   " (known: ", CommandNames(), ")"));
  }
  cli::Spec spec;
  spec.name = "st-data";
  spec.usage = cmd->usage;
  spec.about = cmd->about;
  spec.groups = {{absl::StrCat("st-data ", name, " flags"), "", cmd->flags}};
  spec.help_command = absl::StrCat("st-data ", name, " --help");
  for (const std::string& f : AllFlags()) {
    if (std::find(cmd->flags.begin(), cmd->flags.end(), f) == cmd->flags.end()) {
      spec.inapplicable.push_back(f);
    }
  }
  if (name == "info") {
    spec.min_args = spec.max_args = 1;
    spec.args_name = "dataset directory";
  }
  // The flags after the command (argv[1] is dropped).
  std::vector<char*> args = {argv[0]};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  const cli::Parsed parsed = cli::Parse(spec, static_cast<int>(args.size()), args.data());
  if (parsed.done()) return parsed.exit_code;
  if (name == "info") return Info(parsed.args[0]);
  if (name == "prepare") return Prepare();
  if (name == "encode") return Encode();
  if (name == "decode") return Decode();
  if (name == "render-chat") return RenderChat();
  return TrainTokenizer();
}
