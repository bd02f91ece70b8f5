// The GGUF container (llama.cpp's model file, versions 2 and 3): the metadata value model, an
// untrusting reader and a writer of the layout llama.cpp requires. Rules and reasons: docs/gguf.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "infer/quant/ggml_blocks.h"
#include "model/file_io.h"

namespace st {

// ---- Constants of the container (upstream: ggml docs/gguf.md, ggml/include/gguf.h) ----
constexpr char kGgufMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kGgufVersion = 3;  // what the writer writes; the reader reads 2 and 3
constexpr char kGgufAlignmentKey[] = "general.alignment";  // UINT32, optional
constexpr uint32_t kGgufDefaultAlignment = 32;             // without general.alignment
constexpr uint32_t kGgufMaxAlignment = 1u << 20;           // ours: a power of two up to 1 MiB
constexpr size_t kGgufMaxKeyBytes = 65535;                 // the spec's key limit
constexpr size_t kGgufMaxTensorNameBytes = 63;             // ggml's GGML_MAX_NAME (64) less the NUL
constexpr int kGgufMaxDims = 4;                            // ggml's GGML_MAX_DIMS
constexpr int kGgufMaxArrayDepth = 4;  // an ARRAY inside 3 ARRAYs is the deepest read

// ---- ggml tensor types ----
// The ids are ggml's (GgmlType, infer/quant/ggml_blocks.h). Q8_1 (id 9: 32 elements, 36 bytes) is
// sized here although it cannot be dequantised.
constexpr uint32_t kGgmlTypeQ8_1 = 9;

// The geometry of ggml type id `id` for sizing tensors: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q8_1 and Q2_K..Q8_K. Any other id gives block_bytes = 0 and a name that says why:
// ggml's name for a type this reader does not size ("iq2_xxs", "i32", ...), "removed" for a
// retired id, "unknown" past ggml's last id. Safe on any id.
GgmlTypeInfo GgmlTypeLayout(uint32_t id);

// ---- Metadata values ----
// Value type ids, fixed by the format.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
// The spec's name ("UINT32", "STRING", ...); "type <id>" for an id outside 0..12.
std::string GgufTypeName(GgufType type);

// One metadata value: a scalar, a string, or an array of one element type (scalars, strings,
// or, when read from a file, arrays nested up to kGgufMaxArrayDepth). Strings are bytes as
// stored (the format says UTF-8; not checked). A value type, copyable.
class GgufValue {
 public:
  GgufValue() = default;  // UINT8 0

  static GgufValue U8(uint8_t v);
  static GgufValue I8(int8_t v);
  static GgufValue U16(uint16_t v);
  static GgufValue I16(int16_t v);
  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue U64(uint64_t v);
  static GgufValue I64(int64_t v);
  static GgufValue F32(float v);
  static GgufValue F64(double v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  // An array of T: uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, uint64_t, int64_t,
  // float, double, bool or std::string (ARRAY of the matching type).
  template <typename T>
  static GgufValue Array(const std::vector<T>& values);

  GgufType type() const { return type_; }
  // For an ARRAY: the element type and count.
  GgufType element_type() const { return element_type_; }
  uint64_t array_size() const { return count_; }
  // "UINT32", "ARRAY[STRING]", "ARRAY[ARRAY[INT32]]" (nested types from the first element).
  std::string TypeName() const;

  // The value as T (the types of Array, T = std::string for STRING): InvalidArgument "has type
  // INT32, expected UINT32" unless type() is exactly T's. No conversions, as in llama.cpp.
  template <typename T>
  absl::StatusOr<T> As() const;
  // The elements of an ARRAY of T, likewise exact.
  template <typename T>
  absl::StatusOr<std::vector<T>> AsArray() const;
  // The elements of an ARRAY of ARRAY (empty for any other value).
  const std::vector<GgufValue>& nested() const { return arrays_; }

  // For listings (st-inspect): "UINT32 32", "STRING \"gpt2\"", "ARRAY[STRING] (151936) [...]";
  // at most `max_elements` elements and 64 bytes of each string, escaped.
  std::string DebugString(size_t max_elements = 4) const;

  bool operator==(const GgufValue& o) const;
  bool operator!=(const GgufValue& o) const { return !(*this == o); }

 private:
  friend class GgufValueCodec;  // gguf.cpp: decoding and encoding

  GgufType type_ = GgufType::kUint8;
  GgufType element_type_ = GgufType::kUint8;  // ARRAY only
  uint64_t count_ = 0;                        // ARRAY only
  uint64_t bits_ = 0;  // a scalar's bytes, little-endian, zero-extended (floats: their bits)
  std::string bytes_;  // STRING; ARRAY of scalars: the elements packed as in the file
  std::vector<std::string> strings_;  // ARRAY of STRING
  std::vector<GgufValue> arrays_;     // ARRAY of ARRAY
};

// Key-value pairs in file (insertion) order with lookup by key. Keys are unique.
class GgufMetadata {
 public:
  // Appends `key`; AlreadyExists if it is there, InvalidArgument if empty or over
  // kGgufMaxKeyBytes.
  absl::Status Add(std::string key, GgufValue value);

  size_t size() const { return entries_.size(); }
  const std::vector<std::pair<std::string, GgufValue>>& entries() const { return entries_; }
  const GgufValue* Find(absl::string_view key) const;  // nullptr if absent

  // Typed getters (T as in GgufValue::As): NotFound "key K is absent", InvalidArgument "key K
  // has type INT32, expected UINT32".
  template <typename T>
  absl::StatusOr<T> Get(absl::string_view key) const;
  template <typename T>
  absl::StatusOr<std::vector<T>> GetArray(absl::string_view key) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// ---- Reader ----
// One tensor info, validated: the type is sized (GgmlTypeLayout), 1..4 dims each >= 1,
// ne[0] a whole number of blocks, the data aligned, inside the file and overlapping no other.
struct GgufTensorInfo {
  std::string name;  // 1..63 bytes, unique
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> ne;       // ggml order: ne[0] varies fastest (the row length)
  uint64_t offset = 0;           // relative to GgufFile::data_offset()
  uint64_t nbytes = 0;           // ne[0] / block * block_bytes * ne[1] * ne[2] * ne[3]
  int64_t num_elements() const;  // the product of ne (validated not to overflow)
};

// A GGUF file whose header (magic, version, counts, every key-value pair and tensor info) was
// read and checked whole before any tensor is read (docs/gguf.md, "What the reader checks");
// tensor data is read on demand. Movable, not copyable; const methods are thread-safe.
class GgufFile {
 public:
  // Reads the header of `path` with pread (never mapped: a file shrinking under us gives an
  // error, not SIGBUS). Errors name the path and the offending key or tensor.
  static absl::StatusOr<GgufFile> Open(const std::string& path);
  // The same checks over bytes in memory (tests, the fuzzer); `bytes` must outlive the result.
  // `name` stands for the path in errors.
  static absl::StatusOr<GgufFile> Parse(absl::string_view bytes,
                                        const std::string& name = "GGUF buffer");

  GgufFile(GgufFile&&) = default;
  GgufFile& operator=(GgufFile&&) = default;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return file_size_; }
  uint32_t alignment() const { return alignment_; }
  // Where tensor data starts: the end of the tensor infos rounded up to alignment().
  uint64_t data_offset() const { return data_offset_; }

  const GgufMetadata& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // in file order
  const GgufTensorInfo* FindTensor(absl::string_view name) const;          // nullptr if absent

  // The tensor's nbytes data bytes (`t` from tensors() / FindTensor). DataLoss if the file
  // shrank since Open.
  absl::StatusOr<std::string> ReadRaw(const GgufTensorInfo& t) const;
  // The same into `out`, which holds t.nbytes bytes.
  absl::Status ReadRaw(const GgufTensorInfo& t, void* out) const;

 private:
  // A file descriptor closed on destruction; moves leave -1 behind.
  class OwnedFd {
   public:
    OwnedFd() = default;
    OwnedFd(OwnedFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    OwnedFd& operator=(OwnedFd&& o) noexcept;
    ~OwnedFd();
    void reset(int fd);
    int get() const { return fd_; }

   private:
    int fd_ = -1;
  };

  GgufFile() = default;
  absl::Status ParseAll();  // every check, in file order

  std::string path_;
  OwnedFd fd_;                // Open: the file, for pread; -1 for Parse
  absl::string_view memory_;  // Parse: the caller's bytes
  uint64_t file_size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  GgufMetadata metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// ---- Writer ----
// Writes a GGUF version 3 file in the layout llama.cpp requires: the header (magic, version,
// counts, key-value pairs, tensor infos) zero-padded to the alignment, then every tensor's data
// in info order, each followed by zero padding to the alignment (the last too); tensor i's
// offset is the sum of the padded sizes before it (the first is 0). The alignment is that of a
// general.alignment key (UINT32, power of two <= 1 MiB) or 32.
//   ST_ASSIGN_OR_RETURN(GgufWriter w, GgufWriter::Create(path));
//   ST_RETURN_IF_ERROR(w.AddMetadata("general.architecture", GgufValue::String("...")));
//   ST_RETURN_IF_ERROR(w.AddTensorInfo("token_embd.weight", GgmlType::kF16, {H, V}, nbytes));
//   ST_RETURN_IF_ERROR(w.WriteTensorData("token_embd.weight", data, nbytes));  // may be chunked
//   ST_RETURN_IF_ERROR(w.Finish());
// The file is written under a temp name (AtomicFileWriter) and renamed over `path` by Finish
// after the reader accepted it: until then `path` is untouched, and on any error (or without
// Finish) the temp file is removed. A write error (full disk: ResourceExhausted) names the file.
// After any error the writer refuses further calls. Not thread-safe; movable.
class GgufWriter {
 public:
  static absl::StatusOr<GgufWriter> Create(const std::string& path);

  // Before the first WriteTensorData. Refuses duplicate, empty or over-long keys, nested arrays
  // (llama.cpp cannot read them) and a general.alignment that is not a UINT32 power of two up
  // to 1 MiB.
  absl::Status AddMetadata(std::string key, GgufValue value);
  // Before the first WriteTensorData. `ne` in ggml order (1..4 dims, each >= 1, ne[0] a whole
  // number of blocks of a type GgmlTypeLayout sizes); `nbytes` must be the size they imply.
  absl::Status AddTensorInfo(std::string name, GgmlType type, std::vector<int64_t> ne,
                             uint64_t nbytes);
  // Appends `size` bytes of tensor `name`, which must be the current tensor in info order (the
  // first call writes the header). A tensor may come in several calls; it must be complete
  // before the next one starts, and no call may pass its end.
  absl::Status WriteTensorData(absl::string_view name, const void* data, size_t size);
  // Writes the header if no data came yet (a file of metadata only), requires every tensor
  // complete, fsyncs, re-reads the temp file with GgufFile::Open and renames it over `path`.
  absl::Status Finish();

  // The alignment so far: general.alignment's value once added, else 32.
  uint32_t alignment() const { return alignment_; }

 private:
  explicit GgufWriter(AtomicFileWriter file) : file_(std::move(file)) {}
  absl::Status Usable() const;  // the sticky error, or FailedPrecondition after Finish
  absl::Status Fail(absl::Status s);
  absl::Status WriteHeader();
  absl::Status Pad(uint64_t size);  // zeros after `size` bytes up to the alignment

  AtomicFileWriter file_;
  absl::Status error_;
  bool header_written_ = false;
  bool finished_ = false;
  uint32_t alignment_ = kGgufDefaultAlignment;
  GgufMetadata metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  size_t current_ = 0;          // the tensor WriteTensorData is on
  uint64_t current_bytes_ = 0;  // its bytes written so far
};

}  // namespace st
