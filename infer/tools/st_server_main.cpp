// st-server: an OpenAI-compatible local server (cpp-httplib) over the torch-free runtime, with
// many conversations decoded together (infer/server/scheduler.h) and a chat page at /.
//   st-server --model m.stmf [--port 8080] [--parallel 4] [--api_key KEY]
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gflags/gflags.h"
#include "httplib.h"
#include "infer/chat/chat_template.h"
#include "infer/chat/jinja.h"
#include "infer/server/chat_page.h"
#include "infer/server/openai_api.h"
#include "infer/server/scheduler.h"
#include "infer/tools/cli.h"
#include "infer/tools/engine_flags.h"
#include "infer/tools/tool_util.h"
#include "model/check.h"

DEFINE_string(host, "127.0.0.1",
              "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface, "
              "then set --api_key)");
DEFINE_int32(port, 8080, "TCP port; 0 = any free port (the one chosen is printed)");
DEFINE_int32(parallel, 4,
             "conversations decoded together, each with its own KV cache of --ctx tokens");
DEFINE_int32(queue, 64, "requests that may wait for a slot; beyond them the answer is 503");
DEFINE_int32(prefill_budget, 256,
             "prompt tokens read per step while other conversations generate (prompts first "
             "come, first served); 0 = each prompt whole at once");
DEFINE_int32(ctx, 0,
             "context of each conversation in tokens (prompt + reply); 0 = the model's, or 4096 "
             "under --memory_budget");
DEFINE_string(api_key, "",
              "require 'Authorization: Bearer KEY' on every endpoint but / and /health");
DEFINE_int32(timeout, 600, "seconds a connection may stay silent while reading or writing");
DEFINE_string(chat_template_file, "",
              "render chat requests with this Jinja template instead of the model file's");
DEFINE_string(alias, "", "the model id clients see (default: the model file's name)");

namespace st {
namespace {

using openai::ApiError;
using openai::Json;
using Clock = std::chrono::steady_clock;

std::string RandomHex(std::mt19937_64& rng, int n) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < n; ++i) s += kHex[rng() % 16];
  return s;
}

// Equal strings in time that depends only on their lengths, not on where they differ.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0, y = i < b.size() ? b[i] : 0;
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

constexpr char kJson[] = "application/json; charset=utf-8";  // (not recompressed per chunk)

void SendJson(httplib::Response& res, int status, const Json& j) {
  res.status = status;
  res.set_content(openai::Dump(j), kJson);
}

// A failure of the server's own (500) with the status's message.
ApiError ServerError(const absl::Status& st) {
  ApiError e;
  e.status = 500;
  e.type = "server_error";
  e.message = std::string(st.message());
  return e;
}

void SendError(httplib::Response& res, const ApiError& e) {
  SendJson(res, e.status, e.ToJson());
  if (e.status == 503) res.set_header("Retry-After", "1");
}

class Server {
 public:
  Server(LoadedModel model, std::string chat_template, std::string model_id)
      : m_(std::move(model)), template_(std::move(chat_template)), model_id_(std::move(model_id)) {
    model_ids_ = {model_id_};
    created_ = static_cast<int64_t>(std::time(nullptr));
    defaults_ = openai::DefaultParams(m_.engine->file().generation_defaults());
  }

  absl::Status Start(const SchedulerOptions& so) {
    const std::vector<int32_t> end_ids =
        StopCondition::EndOfTextIds(m_.engine->file().eos_token_ids(), *m_.tokenizer);
    ST_ASSIGN_OR_RETURN(sched_,
                        Scheduler::Create(m_.engine.get(), m_.tokenizer.get(), end_ids, so));
    return absl::OkStatus();
  }

  void Routes(httplib::Server& svr) {
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (FLAGS_api_key.empty() || req.path == "/" || req.path == "/health") {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      const std::string auth = req.get_header_value("Authorization");
      const std::string want = "Bearer " + FLAGS_api_key;
      if (!ConstantTimeEquals(auth, want)) {
        ApiError e;
        e.status = 401;
        e.type = "authentication_error";
        e.code = "invalid_api_key";
        e.message = auth.empty()
                        ? "no API key: send 'Authorization: Bearer KEY' (st-server --api_key)"
                        : "the API key is not the one this server was started with";
        SendError(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      ApiError e;
      e.status = res.status;
      if (res.status == 404) {
        e.type = "invalid_request_error";
        e.code = "not_found";
        e.message = absl::StrCat("no endpoint ", req.method, " ", req.path,
                                 " (POST /v1/chat/completions, POST /v1/completions, GET "
                                 "/v1/models, GET /health, POST /tokenize, POST /detokenize, "
                                 "POST /apply-template)");
      } else if (res.status == 413) {
        e.message = "the request body is too large (16 MiB at most)";
      } else {
        e.message = absl::StrCat("HTTP ", res.status);
      }
      SendError(res, e);
    });
    svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kChatPageHtml, "text/html; charset=utf-8");
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const SchedulerStats s = sched_->Stats();
      SendJson(res, 200,
               Json{{"status", "ok"},
                    {"slots_idle", s.slots - s.busy},
                    {"slots_processing", s.busy},
                    {"queued", s.queued},
                    {"requests_done", s.jobs_done},
                    {"decode_steps", s.steps},
                    {"tokens_decoded", s.tokens}});
    });
    auto models = [this](const httplib::Request&, httplib::Response& res) {
      const Engine& e = *m_.engine;
      Json model = Json{{"id", model_id_},
                        {"object", "model"},
                        {"created", created_},
                        {"owned_by", "smallthinker.cpp"},
                        {"meta", Json{{"n_ctx", e.max_context()},
                                      {"n_vocab", e.config().vocab_size},
                                      {"parallel", FLAGS_parallel},
                                      {"kernels", e.KernelName()}}}};
      SendJson(res, 200, Json{{"object", "list"}, {"data", Json::array({model})}});
    };
    svr.Get("/v1/models", models);
    svr.Get("/models", models);
    for (const char* p : {"/v1/chat/completions", "/chat/completions"}) {
      svr.Post(p,
               [this](const httplib::Request& q, httplib::Response& r) { Complete(q, r, true); });
    }
    for (const char* p : {"/v1/completions", "/completions"}) {
      svr.Post(p,
               [this](const httplib::Request& q, httplib::Response& r) { Complete(q, r, false); });
    }
    svr.Post("/tokenize",
             [this](const httplib::Request& q, httplib::Response& r) { Tokenize(q, r); });
    svr.Post("/detokenize",
             [this](const httplib::Request& q, httplib::Response& r) { Detokenize(q, r); });
    svr.Post("/apply-template",
             [this](const httplib::Request& q, httplib::Response& r) { ApplyTemplate(q, r); });
  }

  Scheduler& scheduler() { return *sched_; }

 private:
  uint64_t NewSeed() {
    std::lock_guard<std::mutex> lock(rng_mu_);
    return rng_();
  }
  std::string NewId(const char* prefix) {
    std::lock_guard<std::mutex> lock(rng_mu_);
    return absl::StrCat(prefix, RandomHex(rng_, 24));
  }

  // The chat rendered with the model's template, as apply_chat_template renders it with
  // add_generation_prompt.
  bool RenderChat(const openai::Request& r, std::string* text, ApiError* err) {
    ChatRenderInput in;
    in.messages = r.messages;
    in.tools = r.tools;
    in.add_generation_prompt = true;
    in.bos_token = m_.policy.bos_token;
    in.eos_token = m_.policy.eos_token;
    in.kwargs = r.template_kwargs;
    auto rendered = RenderChatTemplate(template_, in);
    if (!rendered.ok()) {
      *err = openai::BadRequest(
          absl::StrCat("the chat template refused the messages: ", rendered.status().message()),
          "messages");
      return false;
    }
    *text = *std::move(rendered);
    return true;
  }

  // The prompt's tokens: the rendered chat (a template writes its own special tokens), or the
  // completion prompt encoded with the tokenizer policy.
  bool PromptTokens(const openai::Request& r, std::vector<int32_t>* out, ApiError* err) {
    if (!r.chat) {
      *out = r.prompt_ids.empty() ? m_.policy.Encode(*m_.tokenizer, r.prompt) : r.prompt_ids;
      return true;
    }
    std::string text;
    if (!RenderChat(r, &text, err)) return false;
    *out = m_.tokenizer->Encode(text);
    return true;
  }

  // POST /apply-template (as llama-server): the chat request's prompt text, not generated from.
  void ApplyTemplate(const httplib::Request& req, httplib::Response& res) {
    ApiError err;
    auto r = openai::ParseRequest(req.body, true, model_ids_, m_.engine->config().vocab_size,
                                  defaults_, &err);
    std::string text;
    if (!r || !RenderChat(*r, &text, &err)) return SendError(res, err);
    SendJson(res, 200, Json{{"prompt", text}});
  }

  void Complete(const httplib::Request& req, httplib::Response& res, bool chat) {
    ApiError err;
    const int V = m_.engine->config().vocab_size;
    GenerationParams defaults = defaults_;
    defaults.sampler.seed = NewSeed();
    auto r = openai::ParseRequest(req.body, chat, model_ids_, V, defaults, &err);
    if (!r) return SendError(res, err);
    auto job = std::make_shared<Job>();
    if (!PromptTokens(*r, &job->prompt, &err)) return SendError(res, err);
    if (job->prompt.empty()) {
      return SendError(
          res, openai::BadRequest("the prompt has no tokens", chat ? "messages" : "prompt"));
    }
    const int ctx = m_.engine->max_context();
    if (static_cast<int64_t>(job->prompt.size()) >= ctx) {
      ApiError e;
      e.status = 413;
      e.code = "context_length_exceeded";
      e.param = chat ? "messages" : "prompt";
      e.message =
          absl::StrCat("the prompt is ", job->prompt.size(), " tokens; a conversation holds ", ctx,
                       " tokens with the reply (st-server --ctx): shorten it");
      return SendError(res, e);
    }
    job->params = r->params;
    if (absl::Status st = sched_->Submit(job); !st.ok()) {
      ApiError e = ServerError(st);
      if (absl::IsResourceExhausted(st)) {
        e.status = 503;
        e.code = "server_busy";
      }
      return SendError(res, e);
    }
    auto state = std::make_shared<StreamState>();
    state->job = job;
    state->req = *std::move(r);
    state->id = NewId(chat ? "chatcmpl-" : "cmpl-");
    state->created = static_cast<int64_t>(std::time(nullptr));
    state->last_write = Clock::now();
    if (state->req.stream) {
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, state](size_t, httplib::DataSink& sink) { return StreamStep(*state, sink); },
          [state](bool) { state->job->Cancel(); });
    } else {
      res.set_chunked_content_provider(
          kJson, [this, state](size_t, httplib::DataSink& sink) { return WholeStep(*state, sink); },
          [state](bool) { state->job->Cancel(); });
    }
  }

  struct StreamState {
    std::shared_ptr<Job> job;
    openai::Request req;
    std::string id;
    int64_t created = 0;
    bool first = true;
    int64_t offset = 0;  // text bytes sent (completions' text_offset)
    std::string text;    // non-streamed: the reply so far
    std::vector<TokenLogprob> lps;
    Clock::time_point last_write;
  };

  static bool Write(StreamState& s, httplib::DataSink& sink, const std::string& data) {
    s.last_write = Clock::now();
    if (!sink.write(data.data(), data.size())) {
      s.job->Cancel();  // the client went away: the slot is freed at the next step
      return false;
    }
    return true;
  }

  // One call of the event-stream provider: the events that arrived (within a second) as
  // chunks; at the end the finish chunk with usage, the usage chunk when asked, [DONE].
  bool StreamStep(StreamState& s, httplib::DataSink& sink) {
    std::vector<GenerationEvent> events;
    const bool running = s.job->Wait(1000, &events);
    const Tokenizer& tok = *m_.tokenizer;
    for (GenerationEvent& e : events) {
      const Json c = openai::Chunk(s.req, tok, s.id, s.created, model_id_, e.text, e.logprobs,
                                   s.first, "", nullptr, s.offset);
      s.first = false;
      s.offset += static_cast<int64_t>(e.text.size());
      if (!Write(s, sink, absl::StrCat("data: ", openai::Dump(c), "\n\n"))) return false;
    }
    if (running) {
      // An SSE comment now and then while nothing comes (a long prompt, a queue): clients ignore
      // it, and a write to a closed connection tells us the client left.
      if (events.empty() && Clock::now() - s.last_write > std::chrono::seconds(2)) {
        return Write(s, sink, ": waiting\n\n");
      }
      return true;
    }
    const Job& job = *s.job;
    std::string tail;
    if (!job.error().ok()) {
      if (absl::IsCancelled(job.error())) return false;
      tail = absl::StrCat("data: ", openai::Dump(ServerError(job.error()).ToJson()), "\n\n");
    } else {
      tail = absl::StrCat("data: ",
                          openai::Dump(openai::Chunk(s.req, tok, s.id, s.created, model_id_, "", {},
                                                     s.first, job.finish_reason(), &job, s.offset)),
                          "\n\n");
      if (s.req.include_usage) {
        tail += absl::StrCat(
            "data: ", openai::Dump(openai::UsageChunk(s.req, s.id, s.created, model_id_, job)),
            "\n\n");
      }
    }
    tail += "data: [DONE]\n\n";
    if (!Write(s, sink, tail)) return false;
    sink.done();
    return true;
  }

  // One call of the whole-response provider: collects events; writes a space (JSON allows
  // leading whitespace) after two silent seconds so that a client gone is noticed; at the end
  // the response object.
  bool WholeStep(StreamState& s, httplib::DataSink& sink) {
    std::vector<GenerationEvent> events;
    const bool running = s.job->Wait(1000, &events);
    for (GenerationEvent& e : events) {
      s.text += e.text;
      for (TokenLogprob& lp : e.logprobs) s.lps.push_back(std::move(lp));
    }
    if (running) {
      if (Clock::now() - s.last_write > std::chrono::seconds(2)) return Write(s, sink, " ");
      return true;
    }
    const Job& job = *s.job;
    Json body;
    if (!job.error().ok()) {
      if (absl::IsCancelled(job.error())) return false;
      body = ServerError(job.error()).ToJson();
    } else {
      body = openai::Response(s.req, *m_.tokenizer, s.id, s.created, model_id_, s.text, s.lps, job);
    }
    if (!Write(s, sink, openai::Dump(body))) return false;
    sink.done();
    return true;
  }

  void Tokenize(const httplib::Request& req, httplib::Response& res) {
    Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("content") ||
        !body["content"].is_string()) {
      return SendError(
          res, openai::BadRequest("POST /tokenize takes {\"content\": \"text\"}", "content"));
    }
    const bool special = body.value("add_special", false);
    const std::string text = body["content"].get<std::string>();
    const std::vector<int32_t> ids =
        special ? m_.policy.Encode(*m_.tokenizer, text) : m_.tokenizer->Encode(text);
    SendJson(res, 200, Json{{"tokens", ids}});
  }

  void Detokenize(const httplib::Request& req, httplib::Response& res) {
    Json body = Json::parse(req.body, nullptr, false);
    const int V = m_.engine->config().vocab_size;
    if (body.is_discarded() || !body.is_object() || !body.contains("tokens") ||
        !body["tokens"].is_array()) {
      return SendError(res,
                       openai::BadRequest("POST /detokenize takes {\"tokens\": [ids]}", "tokens"));
    }
    std::vector<int32_t> ids;
    for (const Json& t : body["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= V) {
        return SendError(res, openai::BadRequest(absl::StrCat("'tokens' must hold integers in [0, ",
                                                              V, "), got ", t.dump()),
                                                 "tokens"));
      }
      ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    SendJson(res, 200, Json{{"content", m_.tokenizer->Decode(ids)}});
  }

  LoadedModel m_;
  std::string template_;
  std::string model_id_;
  std::vector<std::string> model_ids_;
  int64_t created_ = 0;
  GenerationParams defaults_;  // sampling for what a request leaves out
  std::unique_ptr<Scheduler> sched_;
  std::mutex rng_mu_;
  std::mt19937_64 rng_{std::random_device{}()};
};

std::string Basename(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

int Main() {
  using cli::Fail;
  using cli::UsageError;
  if (FLAGS_model.empty()) return UsageError("--model is required");
  if (FLAGS_port < 0 || FLAGS_port > 65535) {
    return UsageError(
        absl::StrCat("--port must be in [0, 65535] (0 = any free port), got ", FLAGS_port));
  }
  if (FLAGS_parallel < 1 || FLAGS_parallel > 256) {
    return UsageError(absl::StrCat("--parallel must be in [1, 256], got ", FLAGS_parallel));
  }
  if (FLAGS_queue < 0 || FLAGS_queue > 4096) {
    return UsageError(absl::StrCat("--queue must be in [0, 4096], got ", FLAGS_queue));
  }
  if (FLAGS_ctx < 0) return UsageError(absl::StrCat("--ctx must be >= 0, got ", FLAGS_ctx));
  if (FLAGS_prefill_budget < 0) {
    return UsageError(
        absl::StrCat("--prefill_budget must be >= 0 (0 = no limit), got ", FLAGS_prefill_budget));
  }
  if (FLAGS_timeout < 1) {
    return UsageError(absl::StrCat("--timeout must be >= 1 second, got ", FLAGS_timeout));
  }
  if (cli::FlagGiven("ctx") && cli::FlagGiven("max_context")) {
    return UsageError("give --ctx or --max_context, not both (they are the same limit)");
  }
  // Signals go to one thread that stops the server (block them before any thread starts).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  EngineOptions opt;
  opt.threads = cli::Threads();
  if (absl::Status fs = ApplyEngineFlags(&opt); !fs.ok()) return UsageError(fs.message());
  if (FLAGS_ctx > 0) opt.max_context = FLAGS_ctx;
  opt.sequences = FLAGS_parallel;
  opt.prefill_chunk = std::max(opt.prefill_chunk, FLAGS_parallel);
  auto loaded = LoadModel(FLAGS_model, opt);
  if (!loaded.ok()) return Fail(loaded.status().message());
  std::string tmpl;
  if (!FLAGS_chat_template_file.empty()) {
    auto t = cli::ReadFile(FLAGS_chat_template_file, "--chat_template_file");
    if (!t.ok()) return Fail(t.status().message());
    tmpl = *t;
  } else if (!loaded->engine->file().chat_template().empty()) {
    tmpl = loaded->engine->file().chat_template();
  } else {
    cli::Warn("the model file has no chat template; chat requests use ChatML");
    tmpl = kChatMlTemplate;
  }
  if (auto parsed = jinja::Template::Parse(tmpl); !parsed.ok()) {
    return Fail(parsed.status().message());
  }
  const Engine& eng = *loaded->engine;
  if (eng.expert_cache() != nullptr) {
    std::fprintf(stderr, "st-server: %s\n", BudgetPlanText(eng).c_str());
  }
  std::fprintf(stderr,
               "st-server: %s: %d layers, %d experts (%d active), context %d tokens per "
               "conversation, %d conversations at once, %d threads, %s kernels, loaded in %.2f s\n",
               FLAGS_model.c_str(), eng.config().num_hidden_layers,
               eng.config().moe_num_primary_experts, eng.config().moe_num_active_primary_experts,
               eng.max_context(), FLAGS_parallel, eng.threads(), eng.KernelName().c_str(),
               loaded->load_seconds);
  const std::string model_id = FLAGS_alias.empty() ? Basename(FLAGS_model) : FLAGS_alias;
  Server server(*std::move(loaded), tmpl, model_id);
  SchedulerOptions so;
  so.parallel = FLAGS_parallel;
  so.queue = FLAGS_queue;
  so.prefill_budget = FLAGS_prefill_budget;
  if (absl::Status st = server.Start(so); !st.ok()) return Fail(st.message());

  httplib::Server svr;
  // One HTTP thread per connection that may be waiting or streaming, and a few more.
  const int http_threads = std::min(1024, FLAGS_parallel + FLAGS_queue + 8);
  svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  svr.set_read_timeout(FLAGS_timeout);
  svr.set_write_timeout(FLAGS_timeout);
  svr.set_payload_max_length(size_t{16} << 20);
  server.Routes(svr);
  int port = FLAGS_port;
  if (port == 0) {
    port = svr.bind_to_any_port(FLAGS_host);
    if (port < 0) port = 0;
  } else if (!svr.bind_to_port(FLAGS_host, port)) {
    port = 0;
  }
  if (port == 0) {
    return Fail(absl::StrCat("cannot listen on ", FLAGS_host, ":", FLAGS_port,
                             ": the port is in use or the address is not on this machine "
                             "(pick another --port, or --port 0 for any free one)"));
  }
  std::atomic<bool> quitting{false};
  std::thread stopper([&svr, &signals, &quitting] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (quitting) return;
    std::fprintf(stderr, "st-server: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    svr.stop();
  });
  std::fprintf(stderr, "st-server: listening on http://%s:%d\n", FLAGS_host.c_str(), port);
  std::fflush(stderr);
  const bool ok = svr.listen_after_bind();
  quitting = true;
  server.scheduler().Stop();
  pthread_kill(stopper.native_handle(), SIGTERM);  // wakes sigwait if no signal came
  stopper.join();
  if (!ok) return Fail("the server stopped with an error");
  return 0;
}

}  // namespace
}  // namespace st

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-server";
  spec.usage =
      "st-server --model m.stmf [--port 8080] [--parallel 4] [--ctx N] [--api_key KEY]\n"
      "st-server -m m.stmf --port 8080 -np 4 -c 4096   (llama-server spellings)";
  spec.about =
      "An OpenAI-compatible server: POST /v1/chat/completions and /v1/completions (streamed as "
      "server-sent events with \"stream\": true), GET /v1/models, GET /health, POST /tokenize, "
      "POST /detokenize, and a chat page at /. Up to --parallel conversations are decoded "
      "together (one pass over the weights serves all of them); more wait in a queue of "
      "--queue. Stop with Ctrl-C.";
  spec.groups = {{"st-server flags", "infer/tools/st_server_main.cpp", {"threads"}},
                 st::EngineFlagGroup()};
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  return st::Main();
}
