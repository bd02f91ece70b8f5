// st-server's core without HTTP: the Scheduler (continuous batching, queue, cancellation, prefix
// reuse) against one-at-a-time generation through Engine::Forward, and the OpenAI request
// parser's error classes (infer/server/).
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "infer/export/exporter.h"
#include "infer/export/random_source.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/sampler.h"
#include "infer/server/openai_api.h"
#include "infer/server/scheduler.h"
#include "infer/tokenizer/tokenizer.h"
#include "tests/test_util.h"

namespace st {
namespace {

// A random tiny model (byte tokenizer, 257 ids, 128 positions unless said) written once per
// test.
std::unique_ptr<Engine> TinyEngine(int max_position = 128) {
  ModelConfig c = test_util::TinyEngineConfig();
  c.max_position_embeddings = max_position;
  auto src = MakeRandomSource(c, 5);
  EXPECT_TRUE(src.ok()) << src.status();
  auto recipe = RecipePreset("q8_0");
  EXPECT_TRUE(recipe.ok());
  ExportOptions options;
  options.recipe = *recipe;
  const std::string path = test_util::TestDir() + "/server.stmf";
  EXPECT_TRUE(ExportModel(**src, path, options).ok());
  EngineOptions eo;
  eo.threads = 2;
  auto eng = Engine::Load(path, eo);
  EXPECT_TRUE(eng.ok()) << eng.status();
  return *std::move(eng);
}

std::shared_ptr<Job> NewJob(const std::string& prompt, int max_tokens, double temperature = 0,
                            uint64_t seed = 1) {
  ByteTokenizer tok;
  auto job = std::make_shared<Job>();
  job->prompt = tok.Encode(prompt);
  job->params.max_tokens = max_tokens;
  job->params.sampler.temperature = temperature;
  job->params.sampler.top_k = 0;
  job->params.sampler.seed = seed;
  job->params.top_logprobs = 2;
  return job;
}

// Reads a job to its end: its text and its tokens' ids.
std::string Drain(Job& job, std::vector<int32_t>* ids = nullptr) {
  std::string text;
  std::vector<GenerationEvent> events;
  while (job.Wait(10000, &events)) {
  }
  for (const GenerationEvent& e : events) {
    text += e.text;
    for (const TokenLogprob& lp : e.logprobs) {
      if (ids != nullptr) ids->push_back(lp.id);
    }
  }
  return text;
}

// Greedy ids for `prompt` through Forward alone (the oracle), up to max_tokens or end of text.
std::vector<int32_t> GreedyAlone(Engine& e, const std::vector<int32_t>& prompt, int max_tokens,
                                 int32_t eos) {
  e.Reset();
  auto l = e.Prefill(prompt);
  std::vector<int32_t> out;
  while (l.ok() && static_cast<int>(out.size()) < max_tokens) {
    const int32_t id = static_cast<int32_t>(std::max_element(l->begin(), l->end()) - l->begin());
    if (id == eos) break;
    out.push_back(id);
    l = e.Forward(id);
  }
  return out;
}

// Eight requests of different lengths submitted at once to 4 slots (so they batch, queue and
// join as others finish): each gets the greedy tokens it gets alone.
TEST(SchedulerTest, ConcurrentRequestsEqualOneAtATime) {
  auto engine = TinyEngine();
  ByteTokenizer tok;
  const std::vector<std::string> prompts = {"In the beginning",
                                            "God",
                                            "And the earth was without form",
                                            "Let there be light",
                                            "a",
                                            "and it was so",
                                            "the evening and the morning were the first day",
                                            "x y"};
  const std::vector<int> lengths = {20, 9, 31, 14, 25, 6, 17, 12};
  std::vector<std::vector<int32_t>> want;
  for (size_t i = 0; i < prompts.size(); ++i) {
    want.push_back(GreedyAlone(*engine, tok.Encode(prompts[i]), lengths[i], tok.eos_id()));
  }
  SchedulerOptions so;
  so.parallel = 4;
  so.queue = 16;
  auto sched = Scheduler::Create(engine.get(), &tok, {tok.eos_id()}, so);
  ASSERT_TRUE(sched.ok()) << sched.status();
  std::vector<std::shared_ptr<Job>> jobs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    jobs.push_back(NewJob(prompts[i], lengths[i]));
    ASSERT_TRUE((*sched)->Submit(jobs.back()).ok());
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    std::vector<int32_t> ids;
    Drain(*jobs[i], &ids);
    EXPECT_TRUE(jobs[i]->error().ok()) << jobs[i]->error();
    EXPECT_EQ(ids, want[i]) << "request " << i;
    EXPECT_EQ(jobs[i]->completion_tokens(), static_cast<int>(want[i].size()));
    EXPECT_EQ(jobs[i]->finish_reason(),
              static_cast<int>(want[i].size()) == lengths[i] ? "length" : "stop");
  }
  const SchedulerStats st = (*sched)->Stats();
  EXPECT_EQ(st.busy, 0);
  EXPECT_EQ(st.jobs_done, 8);
  // Batching happened: fewer decode steps than tokens decoded.
  EXPECT_LT(st.steps, st.tokens);
}

// The queue is bounded: a burst of long requests at one slot and one place in the queue is
// partly refused, and every accepted one completes.
TEST(SchedulerTest, QueueIsBounded) {
  auto engine = TinyEngine();
  ByteTokenizer tok;
  SchedulerOptions so;
  so.parallel = 1;
  so.queue = 1;
  auto sched = Scheduler::Create(engine.get(), &tok, {}, so);  // no end of text: runs to max
  ASSERT_TRUE(sched.ok());
  std::vector<std::shared_ptr<Job>> accepted;
  int refused = 0;
  for (int i = 0; i < 10; ++i) {
    auto job = NewJob("burst", 100);
    const absl::Status st = (*sched)->Submit(job);
    if (st.ok()) {
      accepted.push_back(job);
    } else {
      EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
      ++refused;
    }
  }
  EXPECT_GE(refused, 1);
  for (auto& job : accepted) {
    Drain(*job);
    EXPECT_TRUE(job->error().ok()) << job->error();
    EXPECT_EQ(job->completion_tokens(), 100);
  }
  EXPECT_EQ((*sched)->Stats().busy, 0);
  // Prompts that leave no room in the context are refused before queueing.
  auto too_long = std::make_shared<Job>();
  too_long->prompt.assign(engine->max_context(), 'a');
  EXPECT_TRUE(absl::IsOutOfRange((*sched)->Submit(too_long)));
}

// A cancelled request frees its slot at the next step (the one queued behind it then runs); the
// next turn of a conversation reuses the KV of the prefix it shares with the last one.
TEST(SchedulerTest, CancellationFreesTheSlotAndPrefixesAreReused) {
  auto engine = TinyEngine(/*max_position=*/4096);
  ByteTokenizer tok;
  SchedulerOptions so;
  so.parallel = 1;
  auto sched = Scheduler::Create(engine.get(), &tok, {}, so);
  ASSERT_TRUE(sched.ok());
  auto running = NewJob("a long one", -1);  // until the context is full: 4086 tokens
  auto waiting = NewJob("second", 5);
  ASSERT_TRUE((*sched)->Submit(running).ok());
  ASSERT_TRUE((*sched)->Submit(waiting).ok());
  std::vector<GenerationEvent> events;
  running->Wait(10000, &events);  // generating
  running->Cancel();
  Drain(*running);
  EXPECT_TRUE(absl::IsCancelled(running->error())) << running->error();
  EXPECT_GT(running->completion_tokens(), 0);
  EXPECT_LT(running->completion_tokens(), 4000);
  Drain(*waiting);
  EXPECT_TRUE(waiting->error().ok());
  EXPECT_EQ(waiting->completion_tokens(), 5);
  EXPECT_EQ(waiting->cached_tokens(), 0);
  // "second" and 4 of its generated tokens are in the slot's cache; a prompt extending
  // "second" keeps those 6 positions (the reply differs from " plus more").
  auto again = NewJob("second plus more", 3);
  ASSERT_TRUE((*sched)->Submit(again).ok());
  Drain(*again);
  EXPECT_EQ(again->cached_tokens(), 6);
  // The same prompt again: everything but its last token comes from the cache.
  auto same = NewJob("second plus more", 3);
  ASSERT_TRUE((*sched)->Submit(same).ok());
  Drain(*same);
  EXPECT_EQ(same->cached_tokens(), 15);
  EXPECT_EQ((*sched)->Stats().busy, 0);
}

// A long prompt arriving while another conversation generates goes in a chunk per step: the
// other keeps receiving tokens meanwhile (1000 prompt tokens at 64 a step: about 16 steps,
// each with a token for the first conversation, before the long prompt's first token).
TEST(SchedulerTest, LongPromptsDoNotStallOtherConversations) {
  auto engine = TinyEngine(/*max_position=*/4096);
  ByteTokenizer tok;
  SchedulerOptions so;
  so.parallel = 2;
  so.prefill_budget = 64;
  auto sched = Scheduler::Create(engine.get(), &tok, {}, so);
  ASSERT_TRUE(sched.ok());
  auto talking = NewJob("keeps talking", 2000);
  ASSERT_TRUE((*sched)->Submit(talking).ok());
  std::vector<GenerationEvent> before;
  talking->Wait(10000, &before);  // it is generating
  ASSERT_FALSE(before.empty());
  auto long_prompt = std::make_shared<Job>();
  long_prompt->prompt.assign(1000, 'a');
  long_prompt->params.max_tokens = 1;
  ASSERT_TRUE((*sched)->Submit(long_prompt).ok());
  std::vector<GenerationEvent> first;
  while (first.empty() && long_prompt->Wait(10000, &first)) {
  }
  std::vector<GenerationEvent> during;
  talking->Wait(0, &during);
  size_t tokens_during = 0;
  for (const GenerationEvent& e : during) tokens_during += e.logprobs.size();
  EXPECT_GE(tokens_during, 14u) << "tokens the first conversation got while 1000 tokens went in";
  talking->Cancel();
  Drain(*talking);
  Drain(*long_prompt);
  EXPECT_TRUE(long_prompt->error().ok()) << long_prompt->error();
  EXPECT_EQ(long_prompt->completion_tokens(), 1);
}

// Seeded sampling repeats; stop strings end the text before them.
TEST(SchedulerTest, SeedsRepeatAndStopStringsCut) {
  auto engine = TinyEngine();
  ByteTokenizer tok;
  SchedulerOptions so;
  so.parallel = 2;
  auto sched = Scheduler::Create(engine.get(), &tok, {}, so);
  ASSERT_TRUE(sched.ok());
  auto run = [&](std::shared_ptr<Job> j) {
    EXPECT_TRUE((*sched)->Submit(j).ok());
    return Drain(*j);
  };
  const std::string a = run(NewJob("seed test", 24, 1.0, 42));
  const std::string b = run(NewJob("seed test", 24, 1.0, 42));
  const std::string c = run(NewJob("seed test", 24, 1.0, 43));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // A stop string from the middle of the greedy text.
  const std::string greedy = run(NewJob("stop test", 24));
  ASSERT_GE(greedy.size(), 8u);
  const std::string stop = greedy.substr(greedy.size() / 2, 2);
  auto j = NewJob("stop test", 24);
  j->params.stop = {stop};
  const std::string cut = run(j);
  EXPECT_EQ(cut, greedy.substr(0, greedy.find(stop)));
  EXPECT_EQ(j->finish_reason(), "stop");
}

// ---- The OpenAI request parser ----

openai::ApiError ParseError(const std::string& body, bool chat = true) {
  openai::ApiError err;
  auto r = openai::ParseRequest(body, chat, {"tiny.stmf"}, 257, openai::DefaultParams({}), &err);
  EXPECT_FALSE(r.has_value()) << body;
  return err;
}

TEST(OpenAiRequest, ErrorsNameTheParameter) {
  EXPECT_EQ(ParseError("{not json").code, "invalid_json");
  EXPECT_EQ(ParseError("[1, 2]").status, 400);
  const auto no_messages = ParseError(R"({"model": "tiny.stmf"})");
  EXPECT_EQ(no_messages.param, "messages");
  const auto model =
      ParseError(R"({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_EQ(model.status, 404);
  EXPECT_EQ(model.code, "model_not_found");
  struct Case {
    const char* field;
    const char* json;
  };
  for (const Case& c :
       {Case{"temperature", "-1"}, Case{"temperature", "\"hot\""}, Case{"top_p", "0"},
        Case{"top_p", "1.5"}, Case{"max_tokens", "0"}, Case{"max_tokens", "2.5"},
        Case{"presence_penalty", "3"}, Case{"top_logprobs", "30"}, Case{"n", "2"},
        Case{"stop", "5"}, Case{"logprobs", "\"yes\""},
        Case{"response_format", R"({"type": "json_object"})"}}) {
    const std::string body = std::string(R"({"messages": [{"role": "user", "content": "hi"}], ")") +
                             c.field + "\": " + c.json + "}";
    const auto e = ParseError(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, c.field) << body;
    EXPECT_NE(e.message.find(c.field), std::string::npos) << e.message;
  }
  EXPECT_EQ(ParseError(R"({"messages": [{"role": "wizard", "content": "hi"}]})").param, "messages");
  EXPECT_EQ(
      ParseError(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})").param,
      "messages");
  EXPECT_EQ(ParseError(R"({"prompt": [1, 999]})", false).param, "prompt");
  EXPECT_EQ(ParseError(R"({"prompt": ["a", "b"]})", false).param, "prompt");
}

TEST(OpenAiRequest, ParsesWhatClientsSend) {
  openai::ApiError err;
  auto r = openai::ParseRequest(
      R"({"model": "tiny.stmf", "messages": [{"role": "developer", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}],
          "temperature": 0.5, "top_p": 0.9, "max_completion_tokens": 7, "stop": ["\n\n", "END"],
          "seed": 12, "logprobs": true, "top_logprobs": 3, "stream": true,
          "stream_options": {"include_usage": true}, "frequency_penalty": 0.5, "user": "x"})",
      true, {"tiny.stmf"}, 257, openai::DefaultParams({}), &err);
  ASSERT_TRUE(r.has_value()) << err.message;
  EXPECT_EQ(r->messages[0]["role"], "system");
  EXPECT_EQ(r->messages[1]["content"], "Hello there");
  EXPECT_EQ(r->params.sampler.temperature, 0.5);
  EXPECT_EQ(r->params.max_tokens, 7);
  EXPECT_EQ(r->params.stop.size(), 2u);
  EXPECT_EQ(r->params.sampler.seed, 12u);
  EXPECT_EQ(r->params.top_logprobs, 3);
  EXPECT_TRUE(r->stream && r->include_usage);
  EXPECT_EQ(r->params.frequency_penalty, 0.5);
  GenerationParams defaults = openai::DefaultParams({});
  defaults.sampler.seed = 5;
  auto p = openai::ParseRequest(R"({"prompt": [72, 105], "logprobs": 2})", false, {"m"}, 257,
                                defaults, &err);
  ASSERT_TRUE(p.has_value()) << err.message;
  EXPECT_EQ(p->prompt_ids, (std::vector<int32_t>{72, 105}));
  EXPECT_EQ(p->params.top_logprobs, 2);
  EXPECT_EQ(p->params.sampler.seed, 5u);     // the server's seed when the request has none
  EXPECT_EQ(p->params.sampler.top_p, 0.95);  // and its defaults
  EXPECT_EQ(p->params.sampler.temperature, 0.8);
  // The model's generation_config replaces them; do_sample false means greedy.
  GenerationDefaults g;
  g.do_sample = false;
  g.top_k = 20;
  EXPECT_EQ(openai::DefaultParams(g).sampler.temperature, 0);
  EXPECT_EQ(openai::DefaultParams(g).sampler.top_k, 20);
}

}  // namespace
}  // namespace st
