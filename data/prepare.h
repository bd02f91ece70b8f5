// Data preparation: input documents (text files, directories, JSONL) streamed in a fixed order,
// and PrepareDataset, which tokenizes them into a resumable token shard directory.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/token_dataset.h"
#include "infer/tokenizer/hf_configs.h"
#include "infer/tokenizer/tokenizer.h"

namespace st {

struct InputFile {
  std::string path;
  bool jsonl = false;  // one document per line, from the "text" field
  int64_t bytes = 0;
};

// Expands inputs: a directory contributes its *.txt and *.jsonl files (recursively, sorted by
// path); a file ending in .jsonl is JSONL; any other file is one text document. Errors name
// missing or unreadable paths and directories without usable files.
absl::StatusOr<std::vector<InputFile>> ListInputs(const std::vector<std::string>& inputs);

struct Document {
  std::string text;
  int source = 0;  // index into the file list
};

// Streams the documents of `files` in order (empty documents are skipped). JSONL errors give
// file:line. Single-threaded.
class DocumentReader {
 public:
  explicit DocumentReader(std::vector<InputFile> files);
  // Reads the next document into *doc; false at the end.
  absl::StatusOr<bool> Next(Document* doc);
  int64_t bytes_read() const { return bytes_read_; }  // input bytes consumed so far
  const std::vector<InputFile>& files() const { return files_; }

 private:
  std::vector<InputFile> files_;
  size_t file_ = 0;
  std::unique_ptr<std::ifstream> jsonl_;  // open JSONL file
  int64_t line_ = 0;
  int64_t bytes_read_ = 0;
};

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string output;                 // dataset directory
  double val_fraction = 0.01;         // in [0, 0.5]
  int64_t shard_tokens = 50'000'000;  // a shard is closed at the first document end past this
  bool overwrite = false;
  int threads = 0;        // encoding threads; 0 = hardware concurrency
  bool progress = false;  // progress line on stderr about once a second
  // tokenizer_config.json's policy: each document is encoded as policy.Encode does (a BOS in
  // front where add_bos_token says so), then ends with the tokenizer's end-of-text separator.
  TokenizerPolicy policy;
};

struct PrepareResult {
  Manifest manifest;
  int64_t documents = 0;
  int64_t bytes = 0;                  // input bytes
  int resumed_shards = 0;             // train shards kept from an interrupted run
  std::vector<int64_t> train_counts;  // occurrences of each id in the train split
  double seconds = 0;
};

// Tokenizes the inputs into opt.output. Documents are read in ListInputs order; each one's ids
// are followed by tok.eos_id() (required). Validation: a document goes to val when the hash
// of its text falls under val_fraction; when that leaves val (or train) empty, the tail of the
// last document, cut at a line break, becomes val (a single big file still gets a val split).
// Train shards are closed at document ends (manifest records docs_end), so a re-run on an
// interrupted directory (manifest "complete": false) keeps the intact shards and continues
// exactly where they end; a complete directory is refused unless opt.overwrite. Output is
// deterministic for any thread count.
absl::StatusOr<PrepareResult> PrepareDataset(const Tokenizer& tok, const PrepareOptions& opt);

// Whether a document goes to the validation split by hash (exposed for tests).
bool IsValDocument(const std::string& text, double val_fraction);

}  // namespace st
