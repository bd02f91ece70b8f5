// The SmallThinker model file (.stmf, spec in FORMAT.md): the streaming writer used by the
// exporter and the one reader shared by st-inspect and the runtime. The reader trusts nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "infer/format/tensors.h"
#include "infer/quant/types.h"
#include "infer/tokenizer/hf_configs.h"
#include "model/config.h"
#include "model/file_io.h"

namespace st {

// ---- Constants of format version 1 (FORMAT.md) ----
constexpr char kModelFileMagic[4] = {'S', 'T', 'M', 'F'};
constexpr uint32_t kModelFileVersion = 1;
constexpr uint64_t kModelFileHeaderSize = 64;
constexpr uint64_t kTensorAlignment = 64;    // every tensor and every expert part
constexpr uint64_t kExpertAlignment = 4096;  // every (layer, expert) extent
// Reader bounds on untrusted counts.
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxMetadataEntries = 4096;
constexpr uint64_t kMaxStringBytes = 64u << 20;  // any string, bytes value or array payload
constexpr uint64_t kMaxTensorNameBytes = 256;
constexpr uint64_t kMaxMetadataKeyBytes = 256;
constexpr int kMaxTensorDims = 4;

// Metadata keys the writer requires and the reader checks (types in FORMAT.md).
constexpr char kMetaConfig[] = "model.config";                   // string: ModelConfig JSON
constexpr char kMetaTokenizerName[] = "tokenizer.name";          // string: MakeTokenizer name
constexpr char kMetaTokenizerJson[] = "tokenizer.json";          // bytes ("" for "byte")
constexpr char kMetaChatTemplate[] = "tokenizer.chat_template";  // string, may be empty
constexpr char kMetaBosTokenId[] = "tokenizer.bos_token_id";     // i64, -1 = none
constexpr char kMetaEosTokenIds[] = "tokenizer.eos_token_ids";   // i64 array, may be empty
constexpr char kMetaExportSource[] = "export.source";            // string
constexpr char kMetaExportRecipe[] = "export.recipe";            // string
// Optional keys (absent in files written before them; a wrong type or value is an error).
// The tokenizer policy of tokenizer_config.json (TokenizerPolicy):
constexpr char kMetaAddBosToken[] = "tokenizer.add_bos_token";          // i64 0/1 (absent: 0)
constexpr char kMetaAddEosToken[] = "tokenizer.add_eos_token";          // i64 0/1 (absent: 0)
constexpr char kMetaBosToken[] = "tokenizer.bos_token";                 // string (token text)
constexpr char kMetaEosToken[] = "tokenizer.eos_token";                 // string
constexpr char kMetaPadToken[] = "tokenizer.pad_token";                 // string
constexpr char kMetaUnkToken[] = "tokenizer.unk_token";                 // string
constexpr char kMetaSpecialTokenIds[] = "tokenizer.special_token_ids";  // i64[]
constexpr char kMetaTokenizerClass[] = "tokenizer.class";               // string
// The generation defaults of generation_config.json (GenerationDefaults):
constexpr char kMetaGenDoSample[] = "generation.do_sample";                    // i64 0/1
constexpr char kMetaGenTemperature[] = "generation.temperature";               // f64 >= 0
constexpr char kMetaGenTopP[] = "generation.top_p";                            // f64 (0, 1]
constexpr char kMetaGenTopK[] = "generation.top_k";                            // i64 >= 0
constexpr char kMetaGenMinP[] = "generation.min_p";                            // f64 [0, 1]
constexpr char kMetaGenRepetitionPenalty[] = "generation.repetition_penalty";  // f64 > 0
constexpr char kMetaGenMaxNewTokens[] = "generation.max_new_tokens";           // i64 >= 0
constexpr char kMetaGenEosTokenIds[] = "generation.eos_token_ids";             // i64[]

// ---- Metadata values ----
enum class MetaType : uint32_t {
  kString = 0,
  kBytes = 1,
  kI64 = 2,
  kF64 = 3,
  kI64Array = 4,
};
const char* MetaTypeName(MetaType t);

struct MetaValue {
  MetaType type = MetaType::kString;
  std::string str;  // kString and kBytes
  int64_t i64 = 0;
  double f64 = 0;
  std::vector<int64_t> i64s;  // kI64Array

  static MetaValue String(std::string s);
  static MetaValue Bytes(std::string b);
  static MetaValue I64(int64_t v);
  static MetaValue F64(double v);
  static MetaValue I64Array(std::vector<int64_t> v);
};

// ---- Tensor directory ----
// TensorGroup, ExpertPart and the tensor names come from the registry (tensors.h).

// One directory entry. dims are outermost first (row-major, torch order): a matrix is
// [rows, cols] and rows are contiguous; the last dim is a multiple of DTypeBlockElems.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> dims;
  uint64_t offset = 0;  // absolute file offset
  uint64_t size = 0;    // bytes == DTypeBytes(dtype, product of dims)
  uint32_t crc32c = 0;  // CRC32C of the data bytes
  TensorGroup group = TensorGroup::kResident;
  // Valid when group == kExpert.
  uint32_t layer = 0;
  uint32_t expert = 0;
  ExpertPart part = ExpertPart::kGate;

  int64_t num_elements() const;  // product of dims (validated not to overflow by the reader)
};

// One (layer, expert): a single 4096-aligned extent [offset, offset + size) holding gate
// [F,H], up [F,H] and down_t [F,H] in that order (each part 64-aligned inside the extent).
struct ExpertExtent {
  uint64_t offset = 0;
  uint64_t size = 0;
  const TensorInfo* gate = nullptr;
  const TensorInfo* up = nullptr;
  const TensorInfo* down_t = nullptr;
};

// ---- Names ----
// File names, Hugging Face names and shapes: the registry, infer/format/tensors.h
// (TensorId::FileName, ExpertTensorName, HfToFileName, FileToHfName, ForEachTensor).

// CRC32C (Castagnoli), hardware-accelerated where available. `crc` chains calls:
// Crc32c(b, n2, Crc32c(a, n1)) == Crc32c(a ++ b).
uint32_t Crc32c(const void* data, size_t size, uint32_t crc = 0);

// ---- Writer ----
// Streams tensor data to a temp file next to `path` (AtomicFileWriter); Finish() appends
// metadata and directory, patches the header, re-opens the result with ModelFile (structure
// check), fsyncs and renames over `path`. On any error (or without Finish) the temp file is
// removed and `path` is untouched.
// Order: every resident tensor (AddTensor) before the first expert. Not thread-safe.
class ModelFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFileWriter>> Create(const std::string& path);
  ~ModelFileWriter();  // removes the temp file if Finish() did not succeed
  ModelFileWriter(const ModelFileWriter&) = delete;
  ModelFileWriter& operator=(const ModelFileWriter&) = delete;

  // Metadata (may be called any time before Finish; a key set twice keeps the last value).
  void SetMetadata(const std::string& key, MetaValue value);
  void SetString(const std::string& key, std::string value);
  void SetBytes(const std::string& key, std::string value);
  void SetI64(const std::string& key, int64_t value);
  void SetF64(const std::string& key, double value);
  void SetI64Array(const std::string& key, std::vector<int64_t> value);
  // Sets kMetaConfig to cfg.ToJson() (and remembers cfg for Finish's checks).
  void SetConfig(const ModelConfig& cfg);
  // The tokenizer.* policy keys and the generation.* keys (only what is set).
  void SetTokenizerPolicy(const TokenizerPolicy& policy);
  void SetGenerationDefaults(const GenerationDefaults& g);

  // A resident (non-expert) tensor; `size` must equal DTypeBytes(dtype, product of dims).
  absl::Status AddTensor(const std::string& name, DType dtype, const std::vector<int64_t>& dims,
                         const void* data, size_t size);

  // An expert: BeginExpert, then exactly gate, up, down_t (down stored TRANSPOSED: [F,H]),
  // then EndExpert. Or the one-call form.
  absl::Status BeginExpert(int layer, int expert);
  absl::Status AddExpertPart(ExpertPart part, DType dtype, const std::vector<int64_t>& dims,
                             const void* data, size_t size);
  absl::Status EndExpert();
  struct Part {
    DType dtype;
    std::vector<int64_t> dims;
    const void* data;
    size_t size;
  };
  absl::Status AddExpert(int layer, int expert, const Part& gate, const Part& up,
                         const Part& down_t);

  // Writes metadata and directory, patches the header, validates, fsyncs, renames.
  absl::Status Finish();

  uint64_t bytes_written() const { return pos_; }

 private:
  ModelFileWriter() = default;
  absl::Status WriteAll(const void* data, size_t size);
  absl::Status PadTo(uint64_t alignment);
  absl::Status AddEntry(TensorInfo info, const void* data, size_t size);
  absl::Status Fail(absl::Status s);

  std::string path_;
  std::optional<AtomicFileWriter> file_;  // the temp file; set by Create
  uint64_t pos_ = 0;
  bool finished_ = false;
  bool failed_ = false;
  bool in_expert_ = false;
  bool any_expert_ = false;
  int expert_layer_ = 0, expert_index_ = 0, next_part_ = 0;
  std::map<std::string, MetaValue> metadata_;
  std::vector<TensorInfo> tensors_;
};

// ---- Reader ----
class ModelFile {
 public:
  struct Options {
    bool verify_checksums = false;  // CRC32C of every tensor (reads the whole file)
    bool populate = false;          // map with MAP_POPULATE (prefault the whole file)
    // Instead of mapping the file, read it whole into anonymous memory advised for transparent
    // huge pages (MADV_HUGEPAGE) and drop the file's page cache afterwards. Decode streams the
    // weights: 2 MiB pages cut the TLB misses that cap a 4 KiB-page stream well below memory
    // bandwidth (most of all inside a VM). The process holds the whole file; implies populate.
    bool huge_pages = false;
    // false: read only what is not an expert (header, resident tensors, metadata, directory)
    // into huge-page memory; expert bytes are not in memory (their range is mapped PROT_NONE)
    // and must be read from fd()/the path (the memory-budget mode's expert cache).
    // verify_checksums then covers the resident tensors only.
    bool experts_in_memory = true;
  };
  // Maps `path` read-only and validates everything (FORMAT.md, "Reader checks").
  static absl::StatusOr<std::unique_ptr<ModelFile>> Open(const std::string& path,
                                                         const Options& options);
  static absl::StatusOr<std::unique_ptr<ModelFile>> Open(const std::string& path) {
    return Open(path, Options());
  }
  // Same checks over bytes in memory (the fuzzer, tests). `bytes` must outlive the result.
  static absl::StatusOr<std::unique_ptr<ModelFile>> OpenFromMemory(absl::string_view bytes,
                                                                   const Options& options);
  ~ModelFile();
  ModelFile(const ModelFile&) = delete;
  ModelFile& operator=(const ModelFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t metadata_offset() const { return metadata_offset_; }
  uint64_t metadata_size() const { return metadata_size_; }
  uint64_t directory_offset() const { return directory_offset_; }
  uint64_t directory_size() const { return directory_size_; }
  uint32_t header_checksum() const { return header_crc_; }

  const ModelConfig& config() const { return config_; }

  // Metadata, sorted by key.
  const std::map<std::string, MetaValue>& metadata() const { return metadata_; }
  const MetaValue* FindMetadata(const std::string& key) const;  // nullptr if absent
  // Typed getters: NotFound if absent, InvalidArgument if of another type.
  absl::StatusOr<std::string> GetString(const std::string& key) const;
  absl::StatusOr<std::string> GetBytes(const std::string& key) const;
  absl::StatusOr<int64_t> GetI64(const std::string& key) const;
  absl::StatusOr<double> GetF64(const std::string& key) const;
  absl::StatusOr<std::vector<int64_t>> GetI64Array(const std::string& key) const;
  // The required keys (validated at Open).
  const std::string& tokenizer_name() const { return metadata_.at(kMetaTokenizerName).str; }
  const std::string& tokenizer_json() const { return metadata_.at(kMetaTokenizerJson).str; }
  const std::string& chat_template() const { return metadata_.at(kMetaChatTemplate).str; }
  int64_t bos_token_id() const { return metadata_.at(kMetaBosTokenId).i64; }
  const std::vector<int64_t>& eos_token_ids() const { return metadata_.at(kMetaEosTokenIds).i64s; }
  // The optional policy and generation keys, validated at Open (defaults where absent: no BOS
  // or EOS added, no generation defaults). Token ids are resolved by the caller's tokenizer.
  const TokenizerPolicy& tokenizer_policy() const { return policy_; }
  const GenerationDefaults& generation_defaults() const { return generation_; }

  // The directory in file order (sorted by offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* Find(const std::string& name) const;  // nullptr if absent
  // Every (layer, expert) exists after a successful Open; out-of-range arguments give
  // OutOfRange.
  absl::StatusOr<ExpertExtent> GetExpertExtent(int layer, int expert) const;
  // Pointer to the tensor's bytes inside the mapping (info must come from tensors()/Find()).
  const uint8_t* TensorData(const TensorInfo& info) const { return base_ + info.offset; }
  const uint8_t* data() const { return base_; }  // the whole file
  // Recomputes the CRC32C of one tensor (or all) and compares with the directory.
  absl::Status VerifyTensor(const TensorInfo& info) const;
  absl::Status VerifyAllTensors() const;
  // Open file descriptor for pread of expert extents; -1 for OpenFromMemory.
  int fd() const { return fd_; }
  // False when opened with experts_in_memory = false (TensorData of an expert is not readable).
  bool experts_in_memory() const { return experts_in_memory_; }
  // Bytes of anonymous memory this object holds (the copy made for huge_pages or for the
  // residents-only mode; 0 when the file is mapped).
  uint64_t memory_bytes() const { return memory_bytes_; }

 private:
  ModelFile() = default;
  absl::Status Parse(const Options& options);
  // Parse's steps, in order; each validates what it reads and trusts only earlier steps:
  // ParseHeader: magic, version, size, alignments, section bounds. VerifyHeaderChecksum: the
  // header fields, metadata and directory. ParseMetadata: metadata_, required keys and types.
  // ParseDirectory: tensors_, each entry on its own and inside the data region. IndexTensors:
  // sorted by offset, by_name_, no overlap, residents first. ParseConfig: config_, policy_,
  // generation_, layers present. MatchTensorsToConfig: exactly the config's tensors and
  // shapes, experts contiguous; expert_index_.
  absl::Status ParseHeader();
  absl::Status VerifyHeaderChecksum() const;
  absl::Status ParseMetadata();
  absl::Status ParseDirectory();
  absl::Status IndexTensors();
  absl::Status ParseConfig();
  absl::Status MatchTensorsToConfig();
  absl::Status DecodePolicy();  // policy_ and generation_ from the optional metadata keys
  absl::Status AllocateCopy(const std::string& path);  // virtual, 2 MiB aligned, THP-advised
  absl::Status ReadRange(const std::string& path, uint64_t offset, uint64_t size);
  absl::Status ReadResidentsOnly(const std::string& path, const Options& options);

  int fd_ = -1;
  void* map_ = nullptr;
  size_t map_size_ = 0;  // bytes mapped at map_ (the file, or the huge-page-aligned copy)
  bool experts_in_memory_ = true;
  uint64_t memory_bytes_ = 0;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t header_crc_ = 0;
  uint64_t metadata_offset_ = 0, metadata_size_ = 0;
  uint64_t directory_offset_ = 0, directory_size_ = 0;
  ModelConfig config_;
  TokenizerPolicy policy_;
  GenerationDefaults generation_;
  std::map<std::string, MetaValue> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
  std::vector<size_t> expert_index_;  // [(layer * E + expert) * 3 + part] -> tensors_ index
};

// ---- Low-level encoding, exposed for tests that craft bad files and for st-inspect ----
namespace format_internal {
// Encodes sections exactly as the writer does (no validation: any dtype value, any ndim).
std::string EncodeMetadata(const std::map<std::string, MetaValue>& metadata);
std::string EncodeDirectory(const std::vector<TensorInfo>& tensors);
// A complete file: header + `data` (placed at offset kModelFileHeaderSize; offsets in the
// directory are absolute) + metadata + directory, with a correct header checksum.
std::string AssembleFile(absl::string_view data, absl::string_view metadata,
                         absl::string_view directory, uint32_t version = kModelFileVersion);
}  // namespace format_internal

}  // namespace st
