// libFuzzer target for the tokenizer.json loader (BpeTokenizer::FromJson): any byte string
// gives a tokenizer or an error, never a crash or a hang; a tokenizer that loads encodes and
// decodes a short text (ASCII, accents, CJK, an emoji, special tokens, invalid UTF-8) and every
// id it knows. Seeds: generated at start-up into $ST_FUZZ_SEED_DIR (the minimal byte-level
// tokenizer, one with merges, one with a normalizer) and tests/data/fuzz_tokenizer_json.
// Build: scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "infer/tokenizer/bpe.h"
#include "nlohmann/json.hpp"
#include "tests/test_tokenizers.h"

namespace {

void WriteSeeds() {
  const char* dir = std::getenv("ST_FUZZ_SEED_DIR");
  if (dir == nullptr) return;
  using json = nlohmann::json;
  const std::string minimal = st::test_util::MinimalTokenizerJson();
  json merges = json::parse(minimal);
  json& model = merges["model"];
  const std::string a = st::BytesToByteLevel("a"), b = st::BytesToByteLevel("b"),
                    sp = st::BytesToByteLevel(" ");
  model["vocab"][a + b] = 259;
  model["vocab"][sp + a] = 260;
  model["vocab"][a + b + a + b] = 261;
  model["merges"] = {a + " " + b, sp + " " + a, a + b + " " + a + b};
  json normalized = merges;
  normalized["normalizer"] = {{"type", "NFC"}};
  normalized["model"]["ignore_merges"] = true;
  const std::pair<const char*, std::string> seeds[] = {
      {"minimal.json", minimal}, {"merges.json", merges.dump()}, {"nfc.json", normalized.dump(1)}};
  for (const auto& [name, text] : seeds) {
    std::ofstream(std::string(dir) + "/" + name, std::ios::binary) << text;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  WriteSeeds();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto tok = st::BpeTokenizer::FromJson(text);
  if (!tok.ok()) return 0;
  const std::string sample =
      "Hello, world! abab  ab\n\tcaf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 "
      "<|endoftext|><|im_start|>x<|im_end|> \xff\xfe 123";
  const std::vector<int32_t> ids = (*tok)->Encode(sample);
  (void)(*tok)->Decode(ids);
  const int vocab = (*tok)->vocab_size();
  std::vector<int32_t> all;
  for (int32_t id = 0; id < vocab && id < 4096; ++id) all.push_back(id);
  (void)(*tok)->Decode(all);
  (void)(*tok)->Decode(std::vector<int32_t>{-1, vocab, vocab + 7});  // ids outside the vocab
  (void)(*tok)->TokenId("ab");
  (void)(*tok)->eos_id();
  return 0;
}
