// The server's generation core (torch-free, no HTTP): up to `parallel` conversations decoded
// together by one engine, each in a slot with its own KV cache (Sequence), new requests joining
// between steps (continuous batching), a bounded queue before the slots, cancellation, and the
// KV of a shared prompt prefix kept across requests.
//
// One step of the loop: admit queued jobs into idle slots (each keeps the prefix its last
// conversation shares with the new prompt), prefill up to prefill_budget prompt tokens (first
// come, first served), sample one token for every generating slot from its logits and hand the
// text to its job, then one Engine::DecodeBatch for the slots still generating: each weight row
// is read once for all of them, and slots routed to the same expert share its read.
//
// Threads: the scheduler's own thread owns the engine and every slot. Submit, Cancel (through
// Job::Cancel), Stats and Stop may be called from any thread; a Job's channel (Wait) from the
// thread that submitted it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "infer/runtime/engine.h"
#include "infer/runtime/sampler.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {

// What one request asks of the generation (OpenAI's parameters, validated by the API layer).
struct GenerationParams {
  SamplerOptions sampler;         // temperature, top_k, top_p, min_p, seed (repeat_penalty 1)
  int max_tokens = -1;            // -1 = until end of text or the context is full
  std::vector<std::string> stop;  // stop strings (not returned)
  double presence_penalty = 0;    // OpenAI: logit -= presence * (count > 0) + frequency * count
  double frequency_penalty = 0;   //   over the tokens generated so far
  int top_logprobs = -1;          // -1 = no logprobs; else log-probabilities of the chosen token
                                  //   and of the top n alternatives (n <= 20)
};

// One generated token's log-probability under the model (log-softmax of its logits, before
// penalties and sampling filters) and the n most likely alternatives, most likely first.
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

// What a job hands its reader: text safe to show (complete UTF-8, never part of a stop
// string) and the log-probabilities of the tokens sampled since the last event.
struct GenerationEvent {
  std::string text;
  std::vector<TokenLogprob> logprobs;
};

// One request on its way through the scheduler. The submitter fills prompt and params, Submits,
// then reads events with Wait until it returns false (finished). Cancel frees the slot at the
// next step.
class Job {
 public:
  std::vector<int32_t> prompt;  // at least one token; prompt.size() < the engine's context
  GenerationParams params;

  // Waits up to `timeout_ms` for events: appends them to `out`; false once the job has
  // finished and every event was delivered (then finish_reason() / error() are final).
  bool Wait(int timeout_ms, std::vector<GenerationEvent>* out);
  void Cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  // Final once Wait returned false.
  const std::string& finish_reason() const { return finish_reason_; }  // "stop" or "length"
  const absl::Status& error() const { return error_; }
  int prompt_tokens() const { return static_cast<int>(prompt.size()); }
  int cached_tokens() const { return cached_tokens_; }  // prompt tokens whose KV was reused
  int completion_tokens() const { return completion_tokens_; }
  double seconds_to_first_token() const { return ttft_; }

 private:
  friend class Scheduler;
  void Push(GenerationEvent e);
  void Finish(std::string reason, absl::Status error);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> events_;
  bool done_ = false;
  std::atomic<bool> cancelled_{false};
  std::string finish_reason_;
  absl::Status error_;
  int cached_tokens_ = 0, completion_tokens_ = 0;
  double ttft_ = 0;
};

struct SchedulerOptions {
  int parallel = 4;  // slots: conversations decoded together (<= engine max_batch())
  int queue = 64;    // jobs waiting for a slot beyond which Submit refuses
  // Prompt tokens prefilled per step while other conversations decode (prompts in arrival
  // order); 0 = every admitted prompt whole before the next decode step.
  int prefill_budget = 256;
};

struct SchedulerStats {
  int slots = 0, busy = 0, queued = 0;
  int64_t jobs_done = 0, steps = 0, tokens = 0;
};

class Scheduler {
 public:
  // Starts the loop thread. `engine` and `tok` must outlive the scheduler; `end_ids` are the
  // ids that end a generation (StopCondition::EndOfTextIds).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Engine* engine, const Tokenizer* tok,
                                                           std::vector<int32_t> end_ids,
                                                           const SchedulerOptions& options);
  ~Scheduler();  // Stop()

  // Queues a job. ResourceExhausted when `queue` jobs already wait; FailedPrecondition after
  // Stop; InvalidArgument for an empty prompt or one that leaves no room in the context.
  absl::Status Submit(std::shared_ptr<Job> job);
  SchedulerStats Stats() const;
  // Finishes every job (running ones with their text so far, queued ones with Unavailable) and
  // joins the loop.
  void Stop();

 private:
  struct Slot;
  Scheduler(Engine* engine, const Tokenizer* tok, std::vector<int32_t> end_ids,
            const SchedulerOptions& options);
  void Loop();
  void Admit(Slot& slot, std::shared_ptr<Job> job);
  // Prefills up to max_tokens more of the slot's prompt; true when the prompt is all in (its
  // logits then in the slot). On an engine error the job ends with it.
  bool PrefillSome(Slot& slot, int max_tokens);
  // Samples the slot's next token from its logits and hands the text on; true while the slot
  // keeps generating (the token then goes into the next batch).
  bool SampleNext(Slot& slot, int32_t* token);
  void Release(Slot& slot, const std::string& reason, absl::Status error);
  Slot* PickSlot(const std::vector<int32_t>& prompt);

  Engine* engine_;
  const Tokenizer* tok_;
  std::vector<int32_t> end_ids_;
  SchedulerOptions opt_;
  std::vector<std::unique_ptr<Slot>> slots_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  int busy_ = 0;
  int64_t jobs_done_ = 0, steps_ = 0, tokens_ = 0;
  uint64_t clock_ = 0;  // admissions, for least-recently-used slot choice
  std::thread thread_;
};

}  // namespace st
