// Scheduler: the slots, the queue and the continuous-batching loop of st-server (scheduler.h).
#include "infer/server/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "model/check.h"

namespace st {

// ---- Job ------------------------------------------------------------------------------------

bool Job::Wait(int timeout_ms, std::vector<GenerationEvent>* out) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
               [&] { return done_ || !events_.empty(); });
  while (!events_.empty()) {
    out->push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return !done_;
}

void Job::Push(GenerationEvent e) {
  if (e.text.empty() && e.logprobs.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
  cv_.notify_all();
}

void Job::Finish(std::string reason, absl::Status error) {
  std::lock_guard<std::mutex> lock(mu_);
  finish_reason_ = std::move(reason);
  error_ = std::move(error);
  done_ = true;
  cv_.notify_all();
}

// ---- Slots ----------------------------------------------------------------------------------

struct Scheduler::Slot {
  std::unique_ptr<Sequence> seq;
  std::vector<int32_t> tokens;  // what the sequence's KV cache holds, position by position
  uint64_t last_used = 0;
  // The job in the slot (null when idle) and its generation state.
  std::shared_ptr<Job> job;
  std::optional<Sampler> sampler;
  std::optional<StopCondition> stop;
  std::optional<StreamDecoder> decoder;
  std::vector<float> logits;     // [V] predicting the next token
  std::vector<int32_t> counts;   // [V] times each token was generated (penalties); sparse reset
  std::vector<int32_t> touched;  // ids with counts > 0
  std::vector<float> penalised;  // [V] the logits with OpenAI's penalties, for sampling
  std::chrono::steady_clock::time_point start;
  bool first = true;
  bool prefilling = false;  // the prompt is not all in the KV cache yet (tokens: what is)
  bool sampled = false;     // `next` was sampled after the prefill and still goes into the batch
  int32_t next = 0;
};

Scheduler::Scheduler(Engine* engine, const Tokenizer* tok, std::vector<int32_t> end_ids,
                     const SchedulerOptions& options)
    : engine_(engine), tok_(tok), end_ids_(std::move(end_ids)), opt_(options) {}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Engine* engine, const Tokenizer* tok,
                                                             std::vector<int32_t> end_ids,
                                                             const SchedulerOptions& options) {
  if (options.parallel < 1 || options.parallel > engine->max_batch()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel must be in [1, ", engine->max_batch(),
        "] (the engine's batch: its prefill chunk and context), got ", options.parallel));
  }
  if (options.queue < 0) {
    return absl::InvalidArgumentError(absl::StrCat("queue must be >= 0, got ", options.queue));
  }
  std::unique_ptr<Scheduler> s(new Scheduler(engine, tok, std::move(end_ids), options));
  for (int i = 0; i < options.parallel; ++i) {
    auto slot = std::make_unique<Slot>();
    slot->seq = engine->NewSequence();
    slot->counts.assign(engine->config().vocab_size, 0);
    s->slots_.push_back(std::move(slot));
  }
  s->thread_ = std::thread([p = s.get()] { p->Loop(); });
  return s;
}

Scheduler::~Scheduler() { Stop(); }

absl::Status Scheduler::Submit(std::shared_ptr<Job> job) {
  if (job->prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (static_cast<int64_t>(job->prompt.size()) >= engine_->max_context()) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", job->prompt.size(),
                                              " tokens; the context holds ", engine_->max_context(),
                                              " with the reply"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::FailedPreconditionError("the server is shutting down");
  const int idle = static_cast<int>(slots_.size()) - busy_;
  if (static_cast<int>(queue_.size()) >= idle + opt_.queue) {
    return absl::ResourceExhaustedError(absl::StrCat("all ", slots_.size(), " slots are busy and ",
                                                     opt_.queue,
                                                     " requests already wait; retry later"));
  }
  queue_.push_back(std::move(job));
  cv_.notify_all();
  return absl::OkStatus();
}

SchedulerStats Scheduler::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerStats s;
  s.slots = static_cast<int>(slots_.size());
  s.busy = busy_;
  s.queued = static_cast<int>(queue_.size());
  s.jobs_done = jobs_done_;
  s.steps = steps_;
  s.tokens = tokens_;
  return s;
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

// The idle slot whose cache shares the longest prefix with `prompt` (ties: least recently
// used); null when every slot is busy. Called on the loop thread.
Scheduler::Slot* Scheduler::PickSlot(const std::vector<int32_t>& prompt) {
  Slot* best = nullptr;
  size_t best_common = 0;
  for (auto& s : slots_) {
    if (s->job) continue;
    const size_t n = std::min(s->tokens.size(), prompt.size());
    size_t common = 0;
    while (common < n && s->tokens[common] == prompt[common]) ++common;
    if (best == nullptr || common > best_common ||
        (common == best_common && s->last_used < best->last_used)) {
      best = s.get();
      best_common = common;
    }
  }
  return best;
}

// Puts `job` in `slot`: keeps the KV of the prefix the slot's last conversation shares with the
// prompt (at least one prompt token is always computed, for its logits) and prefills the rest.
void Scheduler::Admit(Slot& slot, std::shared_ptr<Job> job) {
  slot.job = std::move(job);
  Job& j = *slot.job;
  slot.last_used = ++clock_;
  slot.start = std::chrono::steady_clock::now();
  slot.first = true;
  size_t common = 0;
  const size_t n = std::min(slot.tokens.size(), j.prompt.size() - 1);
  while (common < n && slot.tokens[common] == j.prompt[common]) ++common;
  const int kept = engine_->Truncate(slot.seq.get(), static_cast<int>(common));
  slot.tokens.resize(kept);
  j.cached_tokens_ = kept;
  auto sampler = Sampler::Create(j.params.sampler);
  if (!sampler.ok()) {
    Release(slot, "", sampler.status());
    return;
  }
  slot.sampler.emplace(*std::move(sampler));
  slot.stop.emplace(end_ids_, j.params.stop);
  slot.decoder.emplace(tok_);
  for (int32_t id : slot.touched) slot.counts[id] = 0;
  slot.touched.clear();
  slot.prefilling = true;  // the rest of the prompt goes in by PrefillSome, chunk by chunk
}

bool Scheduler::PrefillSome(Slot& slot, int max_tokens) {
  Job& j = *slot.job;
  const size_t done = slot.tokens.size();
  const size_t n = std::min(j.prompt.size() - done, static_cast<size_t>(max_tokens));
  const absl::Span<const int32_t> part = absl::MakeConstSpan(j.prompt).subspan(done, n);
  auto logits = engine_->Prefill(slot.seq.get(), part);
  if (!logits.ok()) {
    engine_->Truncate(slot.seq.get(), 0);
    slot.tokens.clear();
    slot.prefilling = false;
    Release(slot, "", logits.status());
    return false;
  }
  slot.tokens.insert(slot.tokens.end(), part.begin(), part.end());
  if (slot.tokens.size() < j.prompt.size()) return false;
  slot.prefilling = false;
  slot.logits = *std::move(logits);
  return true;
}

namespace {

// log-softmax of logits[id] and the top n (id, log-probability) pairs, most likely first.
TokenLogprob LogprobOf(const std::vector<float>& logits, int32_t id, int n) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  const double log_z = mx + std::log(sum);
  TokenLogprob lp;
  lp.id = id;
  lp.logprob = static_cast<float>(logits[id] - log_z);
  std::vector<int32_t> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  n = std::min<int>(n, static_cast<int>(order.size()));
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int i = 0; i < n; ++i) {
    lp.top.emplace_back(order[i], static_cast<float>(logits[order[i]] - log_z));
  }
  return lp;
}

}  // namespace

bool Scheduler::SampleNext(Slot& slot, int32_t* token) {
  Job& j = *slot.job;
  const GenerationParams& p = j.params;
  std::vector<float>& logits = slot.logits;
  TokenLogprob lp;
  // Log-probabilities of the model's distribution, before penalties and filters.
  const bool want_lp = p.top_logprobs >= 0;
  if (p.presence_penalty != 0 || p.frequency_penalty != 0) {
    std::vector<float>& penalised = slot.penalised;  // reused: no allocation per token
    penalised.assign(logits.begin(), logits.end());
    for (int32_t id : slot.touched) {
      penalised[id] -=
          static_cast<float>(p.presence_penalty + p.frequency_penalty * slot.counts[id]);
    }
    *token = slot.sampler->Sample(penalised);
  } else {
    *token = slot.sampler->Sample(logits);
  }
  const int32_t id = *token;
  if (slot.first) {
    j.ttft_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - slot.start).count();
    slot.first = false;
  }
  StopCondition& stop = *slot.stop;
  if (stop.IsEndOfText(id)) {
    GenerationEvent e;
    e.text = stop.Push(slot.decoder->Flush());
    if (!stop.stopped()) e.text += stop.Flush();
    j.Push(std::move(e));
    Release(slot, "stop", absl::OkStatus());
    return false;
  }
  ++j.completion_tokens_;
  if (slot.counts[id]++ == 0) slot.touched.push_back(id);
  GenerationEvent e;
  if (want_lp) e.logprobs.push_back(LogprobOf(logits, id, p.top_logprobs));
  e.text = stop.Push(slot.decoder->Push(id));
  if (stop.stopped()) {
    j.Push(std::move(e));
    Release(slot, "stop", absl::OkStatus());
    return false;
  }
  const bool hit_max = p.max_tokens >= 0 && j.completion_tokens_ >= p.max_tokens;
  const bool context_full = slot.seq->position() + 1 > engine_->max_context();
  if (hit_max || context_full) {
    e.text += stop.Push(slot.decoder->Flush());
    if (!stop.stopped()) e.text += stop.Flush();
    j.Push(std::move(e));
    Release(slot, stop.stopped() ? "stop" : "length", absl::OkStatus());
    return false;
  }
  j.Push(std::move(e));
  return true;
}

void Scheduler::Release(Slot& slot, const std::string& reason, absl::Status error) {
  std::shared_ptr<Job> job = std::move(slot.job);
  slot.job = nullptr;
  slot.prefilling = false;
  slot.sampled = false;
  {
    std::lock_guard<std::mutex> lock(mu_);  // counted before the reader hears of the end
    --busy_;
    ++jobs_done_;
  }
  job->Finish(reason, std::move(error));
}

void Scheduler::Loop() {
  std::vector<Slot*> active;
  std::vector<Sequence*> batch;
  std::vector<int32_t> tokens;
  std::vector<float> logits_BV;
  const int V = engine_->config().vocab_size;
  for (;;) {
    // Admit what fits, waiting while there is nothing at all to do.
    std::vector<std::pair<Slot*, std::shared_ptr<Job>>> admitted;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || busy_ > 0 || !queue_.empty(); });
      if (stopping_) break;
      while (!queue_.empty() && busy_ < static_cast<int>(slots_.size())) {
        std::shared_ptr<Job> job = std::move(queue_.front());
        queue_.pop_front();
        if (job->cancelled()) {
          job->Finish("", absl::CancelledError("cancelled while queued"));
          continue;
        }
        Slot* slot = PickSlot(job->prompt);
        ST_CHECK(slot != nullptr) << "no idle slot with busy < slots";
        slot->job = job;  // reserved; Admit runs outside the lock
        ++busy_;
        admitted.emplace_back(slot, std::move(job));
      }
    }
    for (auto& [slot, job] : admitted) Admit(*slot, std::move(job));
    // Prompts go in first come, first served, at most prefill_budget tokens a step so that the
    // conversations already generating keep going; a prompt's first token goes out as soon as
    // its own prefill is done.
    int budget = opt_.prefill_budget > 0 ? opt_.prefill_budget : std::numeric_limits<int>::max();
    while (budget > 0) {
      Slot* next = nullptr;
      for (auto& s : slots_) {
        if (s->job && s->prefilling && !s->job->cancelled() &&
            (next == nullptr || s->last_used < next->last_used)) {
          next = s.get();
        }
      }
      if (next == nullptr) break;
      const int before = static_cast<int>(next->tokens.size());
      const bool done = PrefillSome(*next, budget);
      budget -= std::max(1, static_cast<int>(next->tokens.size()) - before);
      if (done) next->sampled = SampleNext(*next, &next->next);
    }
    // Sample every other active slot's next token; those still generating form the batch.
    batch.clear();
    tokens.clear();
    active.clear();
    for (auto& s : slots_) {
      Slot& slot = *s;
      if (!slot.job) continue;
      if (slot.job->cancelled()) {
        Release(slot, "", absl::CancelledError("the client went away"));
        continue;
      }
      if (slot.prefilling) continue;
      if (!slot.sampled && !SampleNext(slot, &slot.next)) continue;
      slot.sampled = false;
      active.push_back(&slot);
      batch.push_back(slot.seq.get());
      tokens.push_back(slot.next);
    }
    if (batch.empty()) continue;
    const absl::Status st = engine_->DecodeBatch(batch, tokens, &logits_BV);
    for (size_t b = 0; b < active.size(); ++b) {
      Slot& slot = *active[b];
      if (!st.ok()) {
        engine_->Truncate(slot.seq.get(), 0);
        slot.tokens.clear();
        Release(slot, "", st);
        continue;
      }
      slot.tokens.push_back(tokens[b]);
      slot.logits.assign(logits_BV.begin() + b * V, logits_BV.begin() + (b + 1) * V);
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++steps_;
    tokens_ += static_cast<int64_t>(active.size());
  }
  // Stopping: running jobs end with what they have, queued ones are refused.
  for (auto& s : slots_) {
    if (s->job) Release(*s, "stop", absl::OkStatus());
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& job : queue_) job->Finish("", absl::UnavailableError("the server is shutting down"));
  queue_.clear();
}

}  // namespace st
