// Tokenizers for tests: the smallest tokenizer.json our BPE loader takes, with the added tokens
// a chat model names. Header-only, shared by the torch-free test files.
#pragma once

#include <string>

#include "infer/tokenizer/bpe.h"
#include "nlohmann/json.hpp"

namespace st::test_util {

// The 256 byte tokens (id = byte), no merges, and the added special tokens <|endoftext|> 256,
// <|im_start|> 257, <|im_end|> 258.
inline std::string MinimalTokenizerJson() {
  using json = nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[BytesToByteLevel(std::string(1, static_cast<char>(b)))] = b;
  json added = json::array();
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", 256 + i},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", true}};
  return json{{"version", "1.0"},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer", byte_level},
              {"post_processor", nullptr},
              {"decoder", byte_level},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}}
      .dump();
}

}  // namespace st::test_util
