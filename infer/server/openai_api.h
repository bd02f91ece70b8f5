// The OpenAI API as st-server speaks it (no HTTP, no engine): requests of /v1/chat/completions
// and /v1/completions parsed and validated into GenerationParams, the response, chunk, usage
// and logprobs objects, and error objects with their HTTP status. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "infer/server/scheduler.h"
#include "infer/tokenizer/hf_configs.h"
#include "infer/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace st {
namespace openai {

using Json = nlohmann::ordered_json;

// An OpenAI error object and the HTTP status it goes with.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;    // "" = null
  std::string code;     // "" = null
  Json ToJson() const;  // {"error": {"message", "type", "param", "code"}}
};
ApiError BadRequest(std::string message, std::string param = "", std::string code = "");

// A parsed /v1/chat/completions or /v1/completions request.
struct Request {
  bool chat = true;
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage
  Json messages;                    // chat: [{role, content (a string)}...], content parts joined
  Json tools;                       // chat: passed to the template (null = none)
  Json template_kwargs;             // chat: chat_template_kwargs (object or null)
  std::string prompt;               // completions: the prompt text ...
  std::vector<int32_t> prompt_ids;  // ... or token ids (then prompt is empty)
  GenerationParams params;
  bool logprobs = false;  // chat: logprobs; completions: logprobs given (params.top_logprobs)
};

// Parses a request body. `model_ids` are the names the served model answers to (a different
// "model" is 404 model_not_found); `vocab_size` bounds token-id prompts; `defaults` give what
// the request leaves out (the server's sampling defaults, its seed for this request). On error
// returns nullopt and fills *error (400 naming the parameter).
std::optional<Request> ParseRequest(const std::string& body, bool chat,
                                    const std::vector<std::string>& model_ids, int vocab_size,
                                    const GenerationParams& defaults, ApiError* error);

// The sampling a request gets for what it leaves out: llama-server's defaults (temperature 0.8,
// top_k 40, top_p 0.95, min_p 0.05), replaced by the model's generation_config where it has one
// (do_sample false: greedy; its repetition_penalty over the whole context).
GenerationParams DefaultParams(const GenerationDefaults& model_defaults);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details":
// {"cached_tokens"}}
Json Usage(const Job& job);

// The logprobs object of tokens: chat {"content": [{token, logprob, bytes, top_logprobs}]};
// completions {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}], "text_offset"}
// (text_offset counted from `offset0`).
Json ChatLogprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& lps);
Json CompletionLogprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& lps,
                        int64_t offset0);

// The whole response of a finished job.
Json Response(const Request& req, const Tokenizer& tok, const std::string& id, int64_t created,
              const std::string& model, const std::string& text,
              const std::vector<TokenLogprob>& lps, const Job& job);
// One streamed chunk: a delta of `text` (and its logprobs); with finish_reason (non-empty) the
// last choice chunk, which also carries usage. first: the chat chunk that opens with the role.
Json Chunk(const Request& req, const Tokenizer& tok, const std::string& id, int64_t created,
           const std::string& model, const std::string& text, const std::vector<TokenLogprob>& lps,
           bool first, const std::string& finish_reason, const Job* job_for_usage,
           int64_t text_offset);
// The trailing chunk of stream_options.include_usage: empty choices and usage.
Json UsageChunk(const Request& req, const std::string& id, int64_t created,
                const std::string& model, const Job& job);

// JSON text; invalid UTF-8 (a token that splits a character) becomes U+FFFD.
std::string Dump(const Json& j);

}  // namespace openai
}  // namespace st
