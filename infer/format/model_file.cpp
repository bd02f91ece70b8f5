// The model file's writer, its one reader (every field validated before use, 64-bit checked
// arithmetic throughout), the CRC32C and the tensor-name mapping. Spec: FORMAT.md.
#include "infer/format/model_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "model/check.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the model file code assumes a "
              "little-endian host");

namespace st {
namespace {

// Header field offsets (FORMAT.md, "Fixed header").
constexpr size_t kOffVersion = 4;
constexpr size_t kOffFileSize = 8;
constexpr size_t kOffMetaOffset = 16;
constexpr size_t kOffMetaSize = 24;
constexpr size_t kOffDirOffset = 32;
constexpr size_t kOffDirSize = 40;
constexpr size_t kOffTensorAlign = 48;
constexpr size_t kOffExpertAlign = 52;
constexpr size_t kOffChecksum = 56;
constexpr size_t kOffReserved = 60;

// Smallest encodings, used to bound counts by section sizes before reserving memory.
constexpr uint64_t kMinDirEntryBytes = 2 + 1 + 4 + 4 + 8 + 8 + 8 + 4 + 1 + 1 + 2 + 4 + 4;
constexpr uint64_t kMinMetaEntryBytes = 2 + 1 + 4 + 8;

// ---------------------------------------------------------------- CRC32C
struct Crc32cTables {
  uint32_t t[8][256];
  Crc32cTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
    }
  }
};

const Crc32cTables& Tables() {
  static const Crc32cTables* tables = new Crc32cTables();
  return *tables;
}

// Slicing-by-8 on the pre-inverted state.
uint32_t Crc32cSoftware(const uint8_t* p, size_t n, uint32_t crc) {
  const Crc32cTables& T = Tables();
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    v ^= crc;
    crc = T.t[7][v & 0xff] ^ T.t[6][(v >> 8) & 0xff] ^ T.t[5][(v >> 16) & 0xff] ^
          T.t[4][(v >> 24) & 0xff] ^ T.t[3][(v >> 32) & 0xff] ^ T.t[2][(v >> 40) & 0xff] ^
          T.t[1][(v >> 48) & 0xff] ^ T.t[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = T.t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// One stream of crc32 instructions, 8 bytes each (several GB/s).
__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(const uint8_t* p, size_t n,
                                                          uint32_t crc) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}
#endif

// ---------------------------------------------------------------- little-endian encoding
void PutU16(std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
void PutU32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void PutU8(std::string& s, uint8_t v) { s.push_back(static_cast<char>(v)); }

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A bounds-checked cursor over an untrusted section. Every read checks the remaining length.
class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t n, const char* section) : p_(p), n_(n), section_(section) {}
  uint64_t remaining() const { return n_ - pos_; }
  uint64_t pos() const { return pos_; }

  template <typename T>
  absl::Status Read(T* out, const char* what) {
    if (remaining() < sizeof(T)) return Truncated(what, sizeof(T));
    *out = Load<T>(p_ + pos_);
    pos_ += sizeof(T);
    return absl::OkStatus();
  }
  absl::Status ReadBytes(uint64_t len, std::string* out, const char* what) {
    if (remaining() < len) return Truncated(what, len);
    out->assign(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return absl::OkStatus();
  }
  // Reads a section's leading entry count: over `limit`, or over the entries of at least
  // `min_entry_bytes` the rest of the section can hold, is an error (so nothing is reserved for
  // entries that cannot be there). `what` ("tensor") and `size_name` ("directory size") name
  // them in messages.
  absl::StatusOr<uint64_t> ReadCount(const char* what, const char* size_name, uint64_t limit,
                                     uint64_t min_entry_bytes) {
    uint64_t count = 0;
    ST_RETURN_IF_ERROR(Read(&count, absl::StrCat("the ", what, " count").c_str()));
    if (count > limit || count > remaining() / min_entry_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(what, " count ", count, " exceeds the limit (",
                                                     limit, ") or the ", size_name, " (", n_,
                                                     " bytes)"));
    }
    return count;
  }
  // An error unless the entries used every byte of the section (`name` in the message).
  absl::Status ExpectEnd(const char* name) const {
    if (remaining() == 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has ", remaining(), " unused bytes after its entries"));
  }

 private:
  absl::Status Truncated(const char* what, uint64_t need) const {
    return absl::InvalidArgumentError(absl::StrCat(section_, " section ends inside ", what,
                                                   " at section offset ", pos_, " (needs ", need,
                                                   " bytes, ", remaining(), " left)"));
  }
  const uint8_t* p_;
  uint64_t n_;
  uint64_t pos_ = 0;
  const char* section_;
};

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Rounds up to a power-of-two alignment; false on overflow.
bool AlignUp(uint64_t v, uint64_t alignment, uint64_t* out) {
  uint64_t sum;
  if (__builtin_add_overflow(v, alignment - 1, &sum)) return false;
  *out = sum & ~(alignment - 1);
  return true;
}

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

// ---------------------------------------------------------------- metadata checks
struct RequiredKey {
  const char* key;
  MetaType type;
};
constexpr RequiredKey kRequiredKeys[] = {
    {kMetaConfig, MetaType::kString},       {kMetaTokenizerName, MetaType::kString},
    {kMetaTokenizerJson, MetaType::kBytes}, {kMetaChatTemplate, MetaType::kString},
    {kMetaBosTokenId, MetaType::kI64},      {kMetaEosTokenIds, MetaType::kI64Array},
    {kMetaExportSource, MetaType::kString}, {kMetaExportRecipe, MetaType::kString},
};

constexpr RequiredKey kOptionalKeys[] = {
    {kMetaAddBosToken, MetaType::kI64},
    {kMetaAddEosToken, MetaType::kI64},
    {kMetaBosToken, MetaType::kString},
    {kMetaEosToken, MetaType::kString},
    {kMetaPadToken, MetaType::kString},
    {kMetaUnkToken, MetaType::kString},
    {kMetaSpecialTokenIds, MetaType::kI64Array},
    {kMetaTokenizerClass, MetaType::kString},
    {kMetaGenDoSample, MetaType::kI64},
    {kMetaGenTemperature, MetaType::kF64},
    {kMetaGenTopP, MetaType::kF64},
    {kMetaGenTopK, MetaType::kI64},
    {kMetaGenMinP, MetaType::kF64},
    {kMetaGenRepetitionPenalty, MetaType::kF64},
    {kMetaGenMaxNewTokens, MetaType::kI64},
    {kMetaGenEosTokenIds, MetaType::kI64Array},
};

absl::Status CheckRequiredMetadata(const std::map<std::string, MetaValue>& md) {
  for (const RequiredKey& r : kOptionalKeys) {
    auto it = md.find(r.key);
    if (it != md.end() && it->second.type != r.type) {
      return absl::InvalidArgumentError(absl::StrCat("metadata key '", r.key, "' has type ",
                                                     MetaTypeName(it->second.type), "; expected ",
                                                     MetaTypeName(r.type)));
    }
  }
  for (const RequiredKey& r : kRequiredKeys) {
    auto it = md.find(r.key);
    if (it == md.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata key '", r.key, "' is missing (required, type ", MetaTypeName(r.type), ")"));
    }
    if (it->second.type != r.type) {
      return absl::InvalidArgumentError(absl::StrCat("metadata key '", r.key, "' has type ",
                                                     MetaTypeName(it->second.type), "; expected ",
                                                     MetaTypeName(r.type)));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- tensor checks
// Validates one entry on its own (dtype, dims, size, name/group agreement). Offsets are
// checked by the caller, against the file.
absl::Status CheckTensorShape(const TensorInfo& t) {
  const std::string q = absl::StrCat("tensor '", t.name, "'");
  if (!IsKnownDType(static_cast<uint32_t>(t.dtype))) {
    return absl::InvalidArgumentError(absl::StrCat(
        q, " has unknown data type ", static_cast<uint32_t>(t.dtype),
        " (known: f32=0, f16=1, bf16=2, q8_0=8, q4_0=9); the file needs a newer reader"));
  }
  if (t.dims.empty() || t.dims.size() > static_cast<size_t>(kMaxTensorDims)) {
    return absl::InvalidArgumentError(
        absl::StrCat(q, " has ", t.dims.size(), " dimensions; must be 1 to ", kMaxTensorDims));
  }
  int64_t n = 1;
  for (size_t i = 0; i < t.dims.size(); ++i) {
    if (t.dims[i] <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(q, " has dimension ", i, " = ", t.dims[i], "; every dimension must be > 0"));
    }
    if (__builtin_mul_overflow(n, t.dims[i], &n)) {
      return absl::InvalidArgumentError(absl::StrCat(q, " has shape ", ShapeString(t.dims),
                                                     " whose element count overflows 64 bits"));
    }
  }
  const int64_t block = DTypeBlockElems(t.dtype);
  if (block <= 0 || t.dims.back() % block != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(q, " has last dimension ", t.dims.back(), ", not a multiple of ", block,
                     " as ", DTypeName(t.dtype), " requires (rows are whole blocks)"));
  }
  const int64_t bytes = DTypeBytes(t.dtype, n);
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(q, " of shape ", ShapeString(t.dims), " in ",
                                                   DTypeName(t.dtype),
                                                   " has a byte size that overflows 64 bits"));
  }
  if (static_cast<uint64_t>(bytes) != t.size) {
    return absl::InvalidArgumentError(absl::StrCat(q, " has size ", t.size, " bytes but shape ",
                                                   ShapeString(t.dims), " in ", DTypeName(t.dtype),
                                                   " needs ", bytes));
  }
  return absl::OkStatus();
}

absl::Status CheckNameAndGroup(const TensorInfo& t) {
  const std::string q = absl::StrCat("tensor '", t.name, "'");
  const std::optional<TensorId> id = ParseFileTensorName(t.name);
  if (!id) {
    return absl::InvalidArgumentError(
        absl::StrCat(q, " is not a known tensor name (see FORMAT.md, \"Tensor names\")"));
  }
  const bool expert = id->is_expert();
  if (t.group != id->group()) {
    return absl::InvalidArgumentError(
        absl::StrCat(q, " has group ", static_cast<int>(t.group), " but its name makes it ",
                     expert ? "an expert part (group 1)" : "resident (group 0)"));
  }
  if (expert && (t.layer != static_cast<uint32_t>(id->layer) ||
                 t.expert != static_cast<uint32_t>(id->expert) || t.part != id->part())) {
    return absl::InvalidArgumentError(absl::StrCat(q, " is tagged (layer ", t.layer, ", expert ",
                                                   t.expert, ", part ", static_cast<int>(t.part),
                                                   ") which disagrees with its name"));
  }
  if (!expert && (t.layer != 0 || t.expert != 0 || t.part != ExpertPart::kGate)) {
    return absl::InvalidArgumentError(
        absl::StrCat(q, " is resident but has nonzero layer/expert/part fields"));
  }
  return absl::OkStatus();
}

absl::Status CheckIndexName(const std::string& name, uint64_t max_len, const char* what) {
  if (name.empty() || name.size() > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " of ", name.size(), " bytes; must be 1 to ", max_len));
  }
  for (unsigned char c : name) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", absl::CEscape(name),
                                                     "' contains a byte outside printable ASCII"));
    }
  }
  return absl::OkStatus();
}

std::string ErrnoText(int err) { return std::strerror(err); }

}  // namespace

// ================================================================ public helpers

uint32_t Crc32c(const void* data, size_t size, uint32_t crc) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  if (HaveSse42()) return ~Crc32cHardware(p, size, crc);
#endif
  return ~Crc32cSoftware(p, size, crc);
}

const char* MetaTypeName(MetaType t) {
  switch (t) {
    case MetaType::kString:
      return "string";
    case MetaType::kBytes:
      return "bytes";
    case MetaType::kI64:
      return "i64";
    case MetaType::kF64:
      return "f64";
    case MetaType::kI64Array:
      return "i64[]";
  }
  return "unknown";
}

MetaValue MetaValue::String(std::string s) {
  MetaValue v;
  v.type = MetaType::kString;
  v.str = std::move(s);
  return v;
}
MetaValue MetaValue::Bytes(std::string b) {
  MetaValue v;
  v.type = MetaType::kBytes;
  v.str = std::move(b);
  return v;
}
MetaValue MetaValue::I64(int64_t x) {
  MetaValue v;
  v.type = MetaType::kI64;
  v.i64 = x;
  return v;
}
MetaValue MetaValue::F64(double x) {
  MetaValue v;
  v.type = MetaType::kF64;
  v.f64 = x;
  return v;
}
MetaValue MetaValue::I64Array(std::vector<int64_t> x) {
  MetaValue v;
  v.type = MetaType::kI64Array;
  v.i64s = std::move(x);
  return v;
}

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// ================================================================ encoding

namespace format_internal {

std::string EncodeMetadata(const std::map<std::string, MetaValue>& metadata) {
  std::string s;
  PutU64(s, metadata.size());
  for (const auto& [key, v] : metadata) {
    PutU16(s, static_cast<uint16_t>(key.size()));
    s += key;
    PutU32(s, static_cast<uint32_t>(v.type));
    switch (v.type) {
      case MetaType::kString:
      case MetaType::kBytes:
        PutU64(s, v.str.size());
        s += v.str;
        break;
      case MetaType::kI64:
        PutU64(s, static_cast<uint64_t>(v.i64));
        break;
      case MetaType::kF64: {
        uint64_t bits;
        std::memcpy(&bits, &v.f64, 8);
        PutU64(s, bits);
        break;
      }
      case MetaType::kI64Array:
        PutU64(s, v.i64s.size());
        for (int64_t x : v.i64s) PutU64(s, static_cast<uint64_t>(x));
        break;
    }
  }
  return s;
}

std::string EncodeDirectory(const std::vector<TensorInfo>& tensors) {
  std::string s;
  PutU64(s, tensors.size());
  for (const TensorInfo& t : tensors) {
    PutU16(s, static_cast<uint16_t>(t.name.size()));
    s += t.name;
    PutU32(s, static_cast<uint32_t>(t.dtype));
    PutU32(s, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) PutU64(s, static_cast<uint64_t>(d));
    PutU64(s, t.offset);
    PutU64(s, t.size);
    PutU32(s, t.crc32c);
    PutU8(s, static_cast<uint8_t>(t.group));
    PutU8(s, static_cast<uint8_t>(t.part));
    PutU16(s, 0);
    PutU32(s, t.layer);
    PutU32(s, t.expert);
  }
  return s;
}

namespace {
std::string EncodeHeader(uint32_t version, uint64_t file_size, uint64_t meta_off,
                         uint64_t meta_size, uint64_t dir_off, uint64_t dir_size,
                         absl::string_view metadata, absl::string_view directory) {
  std::string h(kModelFileMagic, 4);
  PutU32(h, version);
  PutU64(h, file_size);
  PutU64(h, meta_off);
  PutU64(h, meta_size);
  PutU64(h, dir_off);
  PutU64(h, dir_size);
  PutU32(h, static_cast<uint32_t>(kTensorAlignment));
  PutU32(h, static_cast<uint32_t>(kExpertAlignment));
  uint32_t crc = Crc32c(h.data(), h.size());
  crc = Crc32c(metadata.data(), metadata.size(), crc);
  crc = Crc32c(directory.data(), directory.size(), crc);
  PutU32(h, crc);
  PutU32(h, 0);
  return h;
}
}  // namespace

std::string AssembleFile(absl::string_view data, absl::string_view metadata,
                         absl::string_view directory, uint32_t version) {
  const uint64_t meta_off = kModelFileHeaderSize + data.size();
  const uint64_t dir_off = meta_off + metadata.size();
  const uint64_t file_size = dir_off + directory.size();
  std::string out = EncodeHeader(version, file_size, meta_off, metadata.size(), dir_off,
                                 directory.size(), metadata, directory);
  out.append(data.data(), data.size());
  out.append(metadata.data(), metadata.size());
  out.append(directory.data(), directory.size());
  return out;
}

}  // namespace format_internal

// ================================================================ writer

absl::StatusOr<std::unique_ptr<ModelFileWriter>> ModelFileWriter::Create(const std::string& path) {
  std::unique_ptr<ModelFileWriter> w(new ModelFileWriter());
  w->path_ = path;
  ST_ASSIGN_OR_RETURN(AtomicFileWriter file, AtomicFileWriter::Begin(path));
  w->file_.emplace(std::move(file));
  ST_RETURN_IF_ERROR(w->file_->Open());
  const std::string zeros(kModelFileHeaderSize, '\0');
  ST_RETURN_IF_ERROR(w->WriteAll(zeros.data(), zeros.size()));
  return w;
}

ModelFileWriter::~ModelFileWriter() = default;  // file_ removes an uncommitted temp file

absl::Status ModelFileWriter::Fail(absl::Status s) {
  failed_ = true;
  file_->Discard();
  return absl::Status(s.code(), absl::StrCat(s.message(), "; '", path_, "' was not written"));
}

absl::Status ModelFileWriter::WriteAll(const void* data, size_t size) {
  absl::Status s = file_->Write(data, size);
  if (!s.ok()) {
    return Fail(absl::Status(
        s.code(), absl::StrCat(s.message(), " (", size, " bytes at offset ", pos_, ")")));
  }
  pos_ += size;
  return absl::OkStatus();
}

absl::Status ModelFileWriter::PadTo(uint64_t alignment) {
  uint64_t target;
  if (!AlignUp(pos_, alignment, &target)) return Fail(absl::InternalError("offset overflow"));
  static const std::string kZeros(kExpertAlignment, '\0');
  if (target > pos_) return WriteAll(kZeros.data(), static_cast<size_t>(target - pos_));
  return absl::OkStatus();
}

void ModelFileWriter::SetMetadata(const std::string& key, MetaValue value) {
  metadata_[key] = std::move(value);
}
void ModelFileWriter::SetString(const std::string& key, std::string value) {
  SetMetadata(key, MetaValue::String(std::move(value)));
}
void ModelFileWriter::SetBytes(const std::string& key, std::string value) {
  SetMetadata(key, MetaValue::Bytes(std::move(value)));
}
void ModelFileWriter::SetI64(const std::string& key, int64_t value) {
  SetMetadata(key, MetaValue::I64(value));
}
void ModelFileWriter::SetF64(const std::string& key, double value) {
  SetMetadata(key, MetaValue::F64(value));
}
void ModelFileWriter::SetI64Array(const std::string& key, std::vector<int64_t> value) {
  SetMetadata(key, MetaValue::I64Array(std::move(value)));
}
void ModelFileWriter::SetConfig(const ModelConfig& cfg) { SetString(kMetaConfig, cfg.ToJson()); }

void ModelFileWriter::SetTokenizerPolicy(const TokenizerPolicy& p) {
  SetI64(kMetaAddBosToken, p.add_bos_token ? 1 : 0);
  SetI64(kMetaAddEosToken, p.add_eos_token ? 1 : 0);
  const std::pair<const char*, const std::string*> texts[] = {
      {kMetaBosToken, &p.bos_token},
      {kMetaEosToken, &p.eos_token},
      {kMetaPadToken, &p.pad_token},
      {kMetaUnkToken, &p.unk_token},
      {kMetaTokenizerClass, &p.tokenizer_class}};
  for (const auto& [key, text] : texts) {
    if (!text->empty()) SetString(key, *text);
  }
  SetI64Array(kMetaSpecialTokenIds,
              std::vector<int64_t>(p.special_token_ids.begin(), p.special_token_ids.end()));
}

void ModelFileWriter::SetGenerationDefaults(const GenerationDefaults& g) {
  if (g.do_sample) SetI64(kMetaGenDoSample, *g.do_sample ? 1 : 0);
  if (g.temperature) SetF64(kMetaGenTemperature, *g.temperature);
  if (g.top_p) SetF64(kMetaGenTopP, *g.top_p);
  if (g.top_k) SetI64(kMetaGenTopK, *g.top_k);
  if (g.min_p) SetF64(kMetaGenMinP, *g.min_p);
  if (g.repetition_penalty) SetF64(kMetaGenRepetitionPenalty, *g.repetition_penalty);
  if (g.max_new_tokens) SetI64(kMetaGenMaxNewTokens, *g.max_new_tokens);
  if (!g.eos_token_id.empty()) {
    SetI64Array(kMetaGenEosTokenIds,
                std::vector<int64_t>(g.eos_token_id.begin(), g.eos_token_id.end()));
  }
}

absl::Status ModelFileWriter::AddEntry(TensorInfo info, const void* data, size_t size) {
  if (failed_ || finished_) {
    return absl::FailedPreconditionError("the writer already failed or finished");
  }
  info.size = size;
  ST_RETURN_IF_ERROR(CheckIndexName(info.name, kMaxTensorNameBytes, "tensor name"));
  ST_RETURN_IF_ERROR(CheckTensorShape(info));
  ST_RETURN_IF_ERROR(CheckNameAndGroup(info));
  if (size > 0 && data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", info.name, "' has no data"));
  }
  for (const TensorInfo& t : tensors_) {
    if (t.name == info.name) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", info.name, "' added twice"));
    }
  }
  ST_RETURN_IF_ERROR(PadTo(info.group == TensorGroup::kExpert && info.part == ExpertPart::kGate
                               ? kExpertAlignment
                               : kTensorAlignment));
  info.offset = pos_;
  info.crc32c = Crc32c(data, size);
  ST_RETURN_IF_ERROR(WriteAll(data, size));
  tensors_.push_back(std::move(info));
  return absl::OkStatus();
}

absl::Status ModelFileWriter::AddTensor(const std::string& name, DType dtype,
                                        const std::vector<int64_t>& dims, const void* data,
                                        size_t size) {
  if (in_expert_ || any_expert_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "resident tensor '", name, "' added after an expert: add every resident tensor first"));
  }
  const std::optional<TensorId> id = ParseFileTensorName(name);
  if (id && id->is_expert()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", name, "' is an expert part: add it with BeginExpert/AddExpertPart/EndExpert"));
  }
  TensorInfo info;
  info.name = name;
  info.dtype = dtype;
  info.dims = dims;
  return AddEntry(std::move(info), data, size);
}

absl::Status ModelFileWriter::BeginExpert(int layer, int expert) {
  if (in_expert_) {
    return absl::FailedPreconditionError(absl::StrCat("BeginExpert(", layer, ", ", expert,
                                                      ") inside expert (", expert_layer_, ", ",
                                                      expert_index_, "): call EndExpert first"));
  }
  if (layer < 0 || expert < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("BeginExpert(", layer, ", ", expert, "): indices must be >= 0"));
  }
  in_expert_ = true;
  any_expert_ = true;
  expert_layer_ = layer;
  expert_index_ = expert;
  next_part_ = 0;
  return absl::OkStatus();
}

absl::Status ModelFileWriter::AddExpertPart(ExpertPart part, DType dtype,
                                            const std::vector<int64_t>& dims, const void* data,
                                            size_t size) {
  if (!in_expert_) {
    return absl::FailedPreconditionError("AddExpertPart outside BeginExpert/EndExpert");
  }
  if (static_cast<int>(part) != next_part_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "expert (", expert_layer_, ", ", expert_index_, "): got part ", ExpertPartName(part),
        ", expected ", ExpertPartName(static_cast<ExpertPart>(next_part_)),
        " (order: gate, up, down_t)"));
  }
  TensorInfo info;
  info.name = ExpertTensorName(expert_layer_, expert_index_, part);
  info.dtype = dtype;
  info.dims = dims;
  info.group = TensorGroup::kExpert;
  info.layer = static_cast<uint32_t>(expert_layer_);
  info.expert = static_cast<uint32_t>(expert_index_);
  info.part = part;
  ST_RETURN_IF_ERROR(AddEntry(std::move(info), data, size));
  ++next_part_;
  return absl::OkStatus();
}

absl::Status ModelFileWriter::EndExpert() {
  if (!in_expert_ || next_part_ != 3) {
    return absl::FailedPreconditionError(absl::StrCat("EndExpert: expert (", expert_layer_, ", ",
                                                      expert_index_, ") has ", next_part_,
                                                      " of its 3 parts (gate, up, down_t)"));
  }
  in_expert_ = false;
  return absl::OkStatus();
}

absl::Status ModelFileWriter::AddExpert(int layer, int expert, const Part& gate, const Part& up,
                                        const Part& down_t) {
  ST_RETURN_IF_ERROR(BeginExpert(layer, expert));
  ST_RETURN_IF_ERROR(AddExpertPart(ExpertPart::kGate, gate.dtype, gate.dims, gate.data, gate.size));
  ST_RETURN_IF_ERROR(AddExpertPart(ExpertPart::kUp, up.dtype, up.dims, up.data, up.size));
  ST_RETURN_IF_ERROR(
      AddExpertPart(ExpertPart::kDownT, down_t.dtype, down_t.dims, down_t.data, down_t.size));
  return EndExpert();
}

absl::Status ModelFileWriter::Finish() {
  if (failed_ || finished_) {
    return absl::FailedPreconditionError("the writer already failed or finished");
  }
  if (in_expert_) {
    return Fail(absl::FailedPreconditionError("Finish inside BeginExpert: call EndExpert"));
  }
  absl::Status s = CheckRequiredMetadata(metadata_);
  if (!s.ok()) return Fail(s);
  for (const auto& [key, v] : metadata_) {
    s = CheckIndexName(key, kMaxMetadataKeyBytes, "metadata key");
    if (!s.ok()) return Fail(s);
    if (v.str.size() > kMaxStringBytes || v.i64s.size() * 8 > kMaxStringBytes) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "metadata '", key, "' is larger than the ", kMaxStringBytes, "-byte limit")));
    }
  }
  if (metadata_.size() > kMaxMetadataEntries) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(metadata_.size(), " metadata entries; the limit is ", kMaxMetadataEntries)));
  }
  const std::string meta = format_internal::EncodeMetadata(metadata_);
  const std::string dir = format_internal::EncodeDirectory(tensors_);
  const uint64_t meta_off = pos_;
  ST_RETURN_IF_ERROR(WriteAll(meta.data(), meta.size()));
  const uint64_t dir_off = pos_;
  ST_RETURN_IF_ERROR(WriteAll(dir.data(), dir.size()));
  const std::string header = format_internal::EncodeHeader(
      kModelFileVersion, pos_, meta_off, meta.size(), dir_off, dir.size(), meta, dir);
  if (::pwrite(file_->fd(), header.data(), header.size(), 0) !=
      static_cast<ssize_t>(header.size())) {
    return Fail(FileError("cannot patch the header of", file_->temp_path(), errno));
  }
  s = file_->Sync();
  if (!s.ok()) return Fail(s);
  // The result must pass the reader's structural checks before it may replace anything.
  {
    absl::StatusOr<std::unique_ptr<ModelFile>> check = ModelFile::Open(file_->temp_path());
    if (!check.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("the written file fails validation: ", check.status().message())));
    }
  }
  s = file_->Commit();
  if (!s.ok()) return Fail(s);
  finished_ = true;
  // Make the rename durable.
  const size_t slash = path_.rfind('/');
  const std::string dir_path = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  const int dfd = ::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

// ================================================================ reader

ModelFile::~ModelFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<ModelFile>> ModelFile::Open(const std::string& path,
                                                           const Options& options) {
  std::unique_ptr<ModelFile> f(new ModelFile());
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open model file '", path, "': ", ErrnoText(errno)));
  }
  struct stat st;
  if (::fstat(f->fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ < kModelFileHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "': file is ", f->size_, " bytes, smaller than the ",
                     kModelFileHeaderSize, "-byte header (truncated or not a model file)"));
  }
  absl::Status s;
  if (!options.experts_in_memory) {
    s = f->ReadResidentsOnly(path, options);
  } else if (options.huge_pages) {
    s = f->AllocateCopy(path);
    if (s.ok()) s = f->ReadRange(path, 0, f->size_);
    f->memory_bytes_ = f->size_;
    if (s.ok()) s = f->Parse(options);
  } else {
    // MAP_POPULATE on request: page-table entries for the whole file up front (reads it into
    // the page cache), so the first forward passes take no page faults.
    const int flags = MAP_SHARED | (options.populate ? MAP_POPULATE : 0);
    void* m = ::mmap(nullptr, static_cast<size_t>(f->size_), PROT_READ, flags, f->fd_, 0);
    if (m == MAP_FAILED) {
      return absl::InternalError(absl::StrCat("mmap of '", path, "' failed: ", ErrnoText(errno)));
    }
    f->map_ = m;
    f->map_size_ = static_cast<size_t>(f->size_);
    f->base_ = static_cast<const uint8_t*>(m);
    s = f->Parse(options);
  }
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("'", path, "': ", s.message()));
  return f;
}

absl::Status ModelFile::AllocateCopy(const std::string& path) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t n = static_cast<size_t>(size_);
  map_size_ = (n + kHuge - 1) / kHuge * kHuge + kHuge;  // room to align the start to 2 MiB
  void* m = ::mmap(nullptr, map_size_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    map_size_ = 0;
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", n >> 20, " MiB to hold '", path, "' in memory: ", ErrnoText(errno),
        " (free memory, or run without huge pages to map the file instead)"));
  }
  map_ = m;
  const uintptr_t a = (reinterpret_cast<uintptr_t>(m) + kHuge - 1) & ~uintptr_t{kHuge - 1};
  ::madvise(reinterpret_cast<void*>(a), map_size_ - (a - reinterpret_cast<uintptr_t>(m)),
            MADV_HUGEPAGE);  // a hint: no error when transparent huge pages are off
  base_ = reinterpret_cast<const uint8_t*>(a);
  return absl::OkStatus();
}

// Reads [offset, offset + size) of the file to the same offset of the copy, dropping the page
// cache behind it (64 MiB at a time, so the cache never holds much of it).
absl::Status ModelFile::ReadRange(const std::string& path, uint64_t offset, uint64_t size) {
  uint8_t* dst = const_cast<uint8_t*>(base_);
  constexpr uint64_t kChunk = uint64_t{64} << 20;
  const uint64_t end = offset + size;
  for (uint64_t off = offset; off < end;) {
    const ssize_t got = ::pread(fd_, dst + off, static_cast<size_t>(std::min(kChunk, end - off)),
                                static_cast<off_t>(off));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      return absl::DataLossError(absl::StrCat("reading '", path, "' at byte ", off, " failed: ",
                                              got < 0 ? ErrnoText(errno) : "unexpected end of file",
                                              " (is the file being rewritten?)"));
    }
    ::posix_fadvise(fd_, static_cast<off_t>(off), got, POSIX_FADV_DONTNEED);
    off += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

absl::Status ModelFile::ReadResidentsOnly(const std::string& path, const Options& options) {
  ST_RETURN_IF_ERROR(AllocateCopy(path));
  ST_RETURN_IF_ERROR(ReadRange(path, 0, kModelFileHeaderSize));
  // Metadata and directory (the tail); Parse checks the offsets, so a bad one only limits
  // what is read here.
  const uint64_t meta = Load<uint64_t>(base_ + kOffMetaOffset);
  const uint64_t tail = meta >= kModelFileHeaderSize && meta < size_ ? meta : size_;
  ST_RETURN_IF_ERROR(ReadRange(path, tail, size_ - tail));
  Options po = options;
  po.verify_checksums = false;
  ST_RETURN_IF_ERROR(Parse(po));
  uint64_t resident_end = metadata_offset_;
  for (const TensorInfo& t : tensors_) {
    if (t.group == TensorGroup::kExpert) resident_end = std::min(resident_end, t.offset);
  }
  ST_RETURN_IF_ERROR(ReadRange(path, kModelFileHeaderSize, resident_end - kModelFileHeaderSize));
  // The expert bytes were never read: make a stray access fault instead of reading zeros.
  const uint64_t lo = (resident_end + 4095) / 4096 * 4096, hi = metadata_offset_ / 4096 * 4096;
  if (hi > lo) ::mprotect(const_cast<uint8_t*>(base_) + lo, hi - lo, PROT_NONE);
  experts_in_memory_ = false;
  memory_bytes_ = resident_end + (size_ - metadata_offset_);
  if (options.verify_checksums) {
    for (const TensorInfo& t : tensors_) {
      if (t.group == TensorGroup::kResident) ST_RETURN_IF_ERROR(VerifyTensor(t));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ModelFile>> ModelFile::OpenFromMemory(absl::string_view bytes,
                                                                     const Options& options) {
  std::unique_ptr<ModelFile> f(new ModelFile());
  f->base_ = reinterpret_cast<const uint8_t*>(bytes.data());
  f->size_ = bytes.size();
  ST_RETURN_IF_ERROR(f->Parse(options));
  return f;
}

absl::Status ModelFile::DecodePolicy() {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  const int64_t V = config_.vocab_size;
  auto flag = [&](const char* key, bool* out) -> absl::Status {
    const MetaValue* v = FindMetadata(key);
    if (v == nullptr) return absl::OkStatus();
    if (v->i64 != 0 && v->i64 != 1) {
      return InvalidArgumentError(StrCat("metadata '", key, "' = ", v->i64, "; expected 0 or 1"));
    }
    *out = v->i64 == 1;
    return absl::OkStatus();
  };
  auto text = [&](const char* key, std::string* out) {
    if (const MetaValue* v = FindMetadata(key)) *out = v->str;
  };
  auto ids = [&](const char* key, std::vector<int>* out) -> absl::Status {
    const MetaValue* v = FindMetadata(key);
    if (v == nullptr) return absl::OkStatus();
    for (int64_t id : v->i64s) {
      if (id < 0 || id >= V) {
        return InvalidArgumentError(
            StrCat("metadata '", key, "' holds the id ", id, ", outside the vocabulary of ", V));
      }
      out->push_back(static_cast<int>(id));
    }
    return absl::OkStatus();
  };
  auto number = [&](const char* key, double lo, double hi, bool lo_open,
                    std::optional<double>* out) -> absl::Status {
    const MetaValue* v = FindMetadata(key);
    if (v == nullptr) return absl::OkStatus();
    const double x = v->f64;
    if (!std::isfinite(x) || x < lo || (lo_open && x == lo) || x > hi) {
      return InvalidArgumentError(StrCat("metadata '", key, "' = ", x, " is out of range"));
    }
    *out = x;
    return absl::OkStatus();
  };
  auto count = [&](const char* key, std::optional<int>* out) -> absl::Status {
    const MetaValue* v = FindMetadata(key);
    if (v == nullptr) return absl::OkStatus();
    if (v->i64 < 0 || v->i64 > std::numeric_limits<int>::max()) {
      return InvalidArgumentError(StrCat("metadata '", key, "' = ", v->i64, " is out of range"));
    }
    *out = static_cast<int>(v->i64);
    return absl::OkStatus();
  };
  TokenizerPolicy& p = policy_;
  ST_RETURN_IF_ERROR(flag(kMetaAddBosToken, &p.add_bos_token));
  ST_RETURN_IF_ERROR(flag(kMetaAddEosToken, &p.add_eos_token));
  text(kMetaBosToken, &p.bos_token);
  text(kMetaEosToken, &p.eos_token);
  text(kMetaPadToken, &p.pad_token);
  text(kMetaUnkToken, &p.unk_token);
  text(kMetaTokenizerClass, &p.tokenizer_class);
  ST_RETURN_IF_ERROR(ids(kMetaSpecialTokenIds, &p.special_token_ids));
  GenerationDefaults& g = generation_;
  if (const MetaValue* v = FindMetadata(kMetaGenDoSample)) {
    bool b = false;
    ST_RETURN_IF_ERROR(flag(kMetaGenDoSample, &b));
    g.do_sample = b;
    (void)v;
  }
  constexpr double kBig = std::numeric_limits<double>::max();
  ST_RETURN_IF_ERROR(number(kMetaGenTemperature, 0, kBig, false, &g.temperature));
  ST_RETURN_IF_ERROR(number(kMetaGenTopP, 0, 1, true, &g.top_p));
  ST_RETURN_IF_ERROR(number(kMetaGenMinP, 0, 1, false, &g.min_p));
  ST_RETURN_IF_ERROR(number(kMetaGenRepetitionPenalty, 0, kBig, true, &g.repetition_penalty));
  ST_RETURN_IF_ERROR(count(kMetaGenTopK, &g.top_k));
  ST_RETURN_IF_ERROR(count(kMetaGenMaxNewTokens, &g.max_new_tokens));
  ST_RETURN_IF_ERROR(ids(kMetaGenEosTokenIds, &g.eos_token_id));
  const int64_t bos = bos_token_id();
  if (bos < -1 || bos >= V) {
    return InvalidArgumentError(StrCat("metadata '", kMetaBosTokenId, "' = ", bos,
                                       " is outside the vocabulary of ", V, " (-1 = none)"));
  }
  for (int64_t id : eos_token_ids()) {
    if (id < 0 || id >= V) {
      return InvalidArgumentError(StrCat("metadata '", kMetaEosTokenIds, "' holds the id ", id,
                                         ", outside the vocabulary of ", V));
    }
  }
  p.bos_token_id = static_cast<int>(bos);
  if ((p.add_bos_token) && bos < 0) {
    return InvalidArgumentError(StrCat("metadata '", kMetaAddBosToken, "' is 1 but '",
                                       kMetaBosTokenId, "' is -1: there is no BOS to add"));
  }
  return absl::OkStatus();
}

namespace {

// One metadata value (its type tag already read), checked against the format's limits.
absl::Status ReadMetaValue(Cursor& c, const std::string& key, uint32_t type, MetaValue* v) {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  switch (type) {
    case static_cast<uint32_t>(MetaType::kString):
    case static_cast<uint32_t>(MetaType::kBytes): {
      v->type = static_cast<MetaType>(type);
      uint64_t len = 0;
      ST_RETURN_IF_ERROR(c.Read(&len, "a string length"));
      if (len > kMaxStringBytes) {
        return InvalidArgumentError(StrCat("metadata '", key, "' has length ", len, ", over the ",
                                           kMaxStringBytes, "-byte limit"));
      }
      return c.ReadBytes(len, &v->str, "a string value");
    }
    case static_cast<uint32_t>(MetaType::kI64):
      v->type = MetaType::kI64;
      return c.Read(&v->i64, "an i64 value");
    case static_cast<uint32_t>(MetaType::kF64):
      v->type = MetaType::kF64;
      return c.Read(&v->f64, "an f64 value");
    case static_cast<uint32_t>(MetaType::kI64Array): {
      v->type = MetaType::kI64Array;
      uint64_t n = 0;
      ST_RETURN_IF_ERROR(c.Read(&n, "an array length"));
      if (n > kMaxStringBytes / 8 || n > c.remaining() / 8) {
        return InvalidArgumentError(StrCat("metadata '", key, "' has ", n,
                                           " array elements: over the limit (", kMaxStringBytes / 8,
                                           ") or past the end of the section"));
      }
      v->i64s.resize(static_cast<size_t>(n));
      for (uint64_t j = 0; j < n; ++j) ST_RETURN_IF_ERROR(c.Read(&v->i64s[j], "an element"));
      return absl::OkStatus();
    }
    default:
      return InvalidArgumentError(StrCat("metadata '", key, "' has unknown value type ", type,
                                         " (known: 0 string .. 4 i64[])"));
  }
}

// Directory entry `i`, validated on its own (fields, shape, name/group agreement); where it
// lies in the file is CheckTensorExtent's.
absl::Status ReadTensorEntry(Cursor& c, uint64_t i, TensorInfo* t) {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  uint16_t name_len = 0;
  ST_RETURN_IF_ERROR(c.Read(&name_len, "a name length"));
  if (name_len == 0 || name_len > kMaxTensorNameBytes) {
    return InvalidArgumentError(StrCat("tensor ", i, " has a name of ", name_len,
                                       " bytes; must be 1 to ", kMaxTensorNameBytes));
  }
  ST_RETURN_IF_ERROR(c.ReadBytes(name_len, &t->name, "a tensor name"));
  ST_RETURN_IF_ERROR(CheckIndexName(t->name, kMaxTensorNameBytes, "tensor name"));
  const std::string q = StrCat("tensor '", t->name, "'");
  uint32_t dtype = 0, ndim = 0;
  ST_RETURN_IF_ERROR(c.Read(&dtype, "a data type"));
  if (!IsKnownDType(dtype)) {
    return InvalidArgumentError(
        StrCat(q, " has unknown data type ", dtype,
               " (known: f32=0, f16=1, bf16=2, q8_0=8, q4_0=9); the file needs a newer reader"));
  }
  t->dtype = static_cast<DType>(dtype);
  ST_RETURN_IF_ERROR(c.Read(&ndim, "a dimension count"));
  if (ndim == 0 || ndim > static_cast<uint32_t>(kMaxTensorDims)) {
    return InvalidArgumentError(
        StrCat(q, " has ", ndim, " dimensions; must be 1 to ", kMaxTensorDims));
  }
  for (uint32_t d = 0; d < ndim; ++d) {
    uint64_t dim = 0;
    ST_RETURN_IF_ERROR(c.Read(&dim, "a dimension"));
    if (dim == 0 || dim > static_cast<uint64_t>(INT64_MAX)) {
      return InvalidArgumentError(
          StrCat(q, " has dimension ", d, " = ", dim, "; must be 1 to 2^63-1"));
    }
    t->dims.push_back(static_cast<int64_t>(dim));
  }
  uint8_t group = 0, part = 0;
  uint16_t reserved = 0;
  ST_RETURN_IF_ERROR(c.Read(&t->offset, "an offset"));
  ST_RETURN_IF_ERROR(c.Read(&t->size, "a size"));
  ST_RETURN_IF_ERROR(c.Read(&t->crc32c, "a checksum"));
  ST_RETURN_IF_ERROR(c.Read(&group, "a group"));
  ST_RETURN_IF_ERROR(c.Read(&part, "a part"));
  ST_RETURN_IF_ERROR(c.Read(&reserved, "a reserved field"));
  ST_RETURN_IF_ERROR(c.Read(&t->layer, "a layer"));
  ST_RETURN_IF_ERROR(c.Read(&t->expert, "an expert index"));
  if (group > 1 || part > 2 || reserved != 0) {
    return InvalidArgumentError(StrCat(q, " has group ", static_cast<int>(group), ", part ",
                                       static_cast<int>(part), ", reserved ", reserved,
                                       "; expected group 0..1, part 0..2, reserved 0"));
  }
  t->group = static_cast<TensorGroup>(group);
  t->part = static_cast<ExpertPart>(part);
  ST_RETURN_IF_ERROR(CheckTensorShape(*t));
  return CheckNameAndGroup(*t);
}

// The tensor's bytes lie in the data region [header end, data_end) at the alignment its
// group and part require.
absl::Status CheckTensorExtent(const TensorInfo& t, uint64_t data_end, uint64_t file_size) {
  using absl::StrCat;
  const std::string q = StrCat("tensor '", t.name, "'");
  uint64_t end;
  if (__builtin_add_overflow(t.offset, t.size, &end) || t.offset < kModelFileHeaderSize ||
      end > data_end) {
    return absl::InvalidArgumentError(
        StrCat(q, " extends past the data region (offset ", t.offset, " + size ", t.size,
               end > file_size || end < t.offset ? StrCat(" > file size ", file_size)
                                                 : StrCat(" > metadata offset ", data_end),
               "; data lies in [", kModelFileHeaderSize, ", ", data_end, "))"));
  }
  const uint64_t align = t.group == TensorGroup::kExpert && t.part == ExpertPart::kGate
                             ? kExpertAlignment
                             : kTensorAlignment;
  if (t.offset % align != 0) {
    return absl::InvalidArgumentError(StrCat(q, " is at offset ", t.offset, ", not a multiple of ",
                                             align, " as the format requires"));
  }
  return absl::OkStatus();
}

// An expert's gate, up and down_t follow each other at the next tensor alignment (one extent).
absl::Status CheckExpertContiguous(const TensorId& id, const TensorInfo& g, const TensorInfo& u,
                                   const TensorInfo& d) {
  uint64_t want_up, want_down;
  if (!AlignUp(g.offset + g.size, kTensorAlignment, &want_up) ||
      !AlignUp(u.offset + u.size, kTensorAlignment, &want_down) || u.offset != want_up ||
      d.offset != want_down) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert (", id.layer, ", ", id.expert, ") is not one contiguous extent: gate at ", g.offset,
        " (", g.size, " bytes), up at ", u.offset, ", down_t at ", d.offset,
        "; each part must start at the next ", kTensorAlignment,
        "-byte boundary after the previous one"));
  }
  return absl::OkStatus();
}

}  // namespace

// Every check on an untrusted file, in dependency order: each step reads only what the ones
// before it validated.
absl::Status ModelFile::Parse(const Options& options) {
  ST_RETURN_IF_ERROR(ParseHeader());
  ST_RETURN_IF_ERROR(VerifyHeaderChecksum());
  ST_RETURN_IF_ERROR(ParseMetadata());
  ST_RETURN_IF_ERROR(ParseDirectory());
  ST_RETURN_IF_ERROR(IndexTensors());
  ST_RETURN_IF_ERROR(ParseConfig());
  ST_RETURN_IF_ERROR(MatchTensorsToConfig());
  if (options.verify_checksums) ST_RETURN_IF_ERROR(VerifyAllTensors());
  return absl::OkStatus();
}

absl::Status ModelFile::ParseHeader() {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  if (size_ < kModelFileHeaderSize) {
    return InvalidArgumentError(StrCat("file is ", size_, " bytes, smaller than the ",
                                       kModelFileHeaderSize,
                                       "-byte header (truncated or not a model file)"));
  }
  if (std::memcmp(base_, kModelFileMagic, 4) != 0) {
    return InvalidArgumentError(StrCat(
        "bad magic '", absl::CEscape(absl::string_view(reinterpret_cast<const char*>(base_), 4)),
        "': not a SmallThinker model file (expected 'STMF')"));
  }
  version_ = Load<uint32_t>(base_ + kOffVersion);
  if (version_ != kModelFileVersion) {
    return InvalidArgumentError(StrCat("file format version ", version_,
                                       " is not supported (this reader reads version ",
                                       kModelFileVersion, "): re-export the model or update"));
  }
  const uint64_t stated_size = Load<uint64_t>(base_ + kOffFileSize);
  if (stated_size != size_) {
    return InvalidArgumentError(StrCat(
        "file is ", size_, " bytes but its header says ", stated_size, ": ",
        size_ < stated_size ? "truncated" : "trailing bytes", " (incomplete copy or download?)"));
  }
  metadata_offset_ = Load<uint64_t>(base_ + kOffMetaOffset);
  metadata_size_ = Load<uint64_t>(base_ + kOffMetaSize);
  directory_offset_ = Load<uint64_t>(base_ + kOffDirOffset);
  directory_size_ = Load<uint64_t>(base_ + kOffDirSize);
  const uint32_t tensor_align = Load<uint32_t>(base_ + kOffTensorAlign);
  const uint32_t expert_align = Load<uint32_t>(base_ + kOffExpertAlign);
  header_crc_ = Load<uint32_t>(base_ + kOffChecksum);
  if (Load<uint32_t>(base_ + kOffReserved) != 0) {
    return InvalidArgumentError("header reserved field is not zero");
  }
  if (tensor_align != kTensorAlignment || expert_align != kExpertAlignment) {
    return InvalidArgumentError(StrCat(
        "header alignments (tensor ", tensor_align, ", expert ", expert_align,
        ") differ from version 1's (", kTensorAlignment, ", ", kExpertAlignment, ")",
        IsPowerOfTwo(tensor_align) && IsPowerOfTwo(expert_align) ? "" : "; not powers of two"));
  }
  uint64_t meta_end, dir_end;
  if (__builtin_add_overflow(metadata_offset_, metadata_size_, &meta_end) ||
      __builtin_add_overflow(directory_offset_, directory_size_, &dir_end)) {
    return InvalidArgumentError(StrCat("section offsets overflow (metadata ", metadata_offset_,
                                       " + ", metadata_size_, ", directory ", directory_offset_,
                                       " + ", directory_size_, ")"));
  }
  if (metadata_offset_ < kModelFileHeaderSize || meta_end > directory_offset_ || dir_end != size_) {
    return InvalidArgumentError(
        StrCat("sections out of place: metadata [", metadata_offset_, ", +", metadata_size_,
               "), directory [", directory_offset_, ", +", directory_size_, "), file size ", size_,
               "; expected header < data <= metadata <= directory ending at the end of the file"));
  }
  return absl::OkStatus();
}

absl::Status ModelFile::VerifyHeaderChecksum() const {
  uint32_t crc = Crc32c(base_, kOffChecksum);
  crc = Crc32c(base_ + metadata_offset_, static_cast<size_t>(metadata_size_), crc);
  crc = Crc32c(base_ + directory_offset_, static_cast<size_t>(directory_size_), crc);
  if (crc != header_crc_) {
    return absl::DataLossError(absl::StrCat(
        "header checksum mismatch (stored ", absl::Hex(header_crc_, absl::kZeroPad8), ", computed ",
        absl::Hex(crc, absl::kZeroPad8),
        "): the header, metadata or directory is corrupt; re-copy or re-export the file"));
  }
  return absl::OkStatus();
}

absl::Status ModelFile::ParseMetadata() {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  Cursor c(base_ + metadata_offset_, metadata_size_, "metadata");
  ST_ASSIGN_OR_RETURN(const uint64_t count, c.ReadCount("metadata entry", "section size",
                                                        kMaxMetadataEntries, kMinMetaEntryBytes));
  for (uint64_t i = 0; i < count; ++i) {
    uint16_t key_len = 0;
    std::string key;
    ST_RETURN_IF_ERROR(c.Read(&key_len, "a key length"));
    ST_RETURN_IF_ERROR(c.ReadBytes(key_len, &key, "a key"));
    ST_RETURN_IF_ERROR(CheckIndexName(key, kMaxMetadataKeyBytes, "metadata key"));
    uint32_t type = 0;
    ST_RETURN_IF_ERROR(c.Read(&type, "a value type"));
    MetaValue v;
    ST_RETURN_IF_ERROR(ReadMetaValue(c, key, type, &v));
    if (!metadata_.emplace(key, std::move(v)).second) {
      return InvalidArgumentError(StrCat("metadata key '", key, "' appears twice"));
    }
  }
  ST_RETURN_IF_ERROR(c.ExpectEnd("metadata section"));
  return CheckRequiredMetadata(metadata_);
}

absl::Status ModelFile::ParseDirectory() {
  Cursor c(base_ + directory_offset_, directory_size_, "directory");
  ST_ASSIGN_OR_RETURN(const uint64_t count,
                      c.ReadCount("tensor", "directory size", kMaxTensors, kMinDirEntryBytes));
  tensors_.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    TensorInfo t;
    ST_RETURN_IF_ERROR(ReadTensorEntry(c, i, &t));
    ST_RETURN_IF_ERROR(CheckTensorExtent(t, metadata_offset_, size_));
    tensors_.push_back(std::move(t));
  }
  return c.ExpectEnd("directory");
}

absl::Status ModelFile::IndexTensors() {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& t = tensors_[i];
    if (!by_name_.emplace(t.name, i).second) {
      return InvalidArgumentError(StrCat("tensor '", t.name, "' appears twice"));
    }
    if (i == 0) continue;
    const TensorInfo& p = tensors_[i - 1];
    if (p.offset + p.size > t.offset) {  // both ends validated inside the file by ParseDirectory
      return InvalidArgumentError(StrCat("tensors '", p.name, "' [", p.offset, ", ",
                                         p.offset + p.size, ") and '", t.name, "' [", t.offset,
                                         ", ", t.offset + t.size, ") overlap"));
    }
    if (p.group == TensorGroup::kExpert && t.group == TensorGroup::kResident) {
      return InvalidArgumentError(StrCat("resident tensor '", t.name,
                                         "' lies after expert tensor '", p.name,
                                         "': all resident tensors must precede the experts"));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelFile::ParseConfig() {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  absl::StatusOr<ModelConfig> cfg = ParseModelConfig(metadata_.at(kMetaConfig).str);
  if (!cfg.ok()) {
    return InvalidArgumentError(StrCat("metadata 'model.config': ", cfg.status().message()));
  }
  config_ = *std::move(cfg);
  ST_RETURN_IF_ERROR(DecodePolicy());
  const int64_t L = config_.num_hidden_layers;
  int64_t layers_present = 0;
  for (const TensorInfo& t : tensors_) {
    const std::optional<TensorId> id = ParseFileTensorName(t.name);
    if (id && id->layer >= 0) layers_present = std::max<int64_t>(layers_present, id->layer + 1LL);
  }
  if (L > layers_present) {
    return InvalidArgumentError(StrCat("config says num_hidden_layers = ", L,
                                       " but the file has tensors for only ", layers_present,
                                       " layers"));
  }
  return absl::OkStatus();
}

absl::Status ModelFile::MatchTensorsToConfig() {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  const int64_t L = config_.num_hidden_layers, E = config_.moe_num_primary_experts;
  size_t seen = 0;
  size_t part_index[3] = {0, 0, 0};  // the current expert's gate, up, down_t in tensors_
  auto expect = [&](const TensorId& id) -> absl::Status {
    const std::string name = id.FileName();
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      return InvalidArgumentError(StrCat("tensor '", name, "' is missing (the config has ", L,
                                         " layers, ", E, " experts)"));
    }
    const TensorInfo& t = tensors_[it->second];
    const std::vector<int64_t> dims = id.Shape(config_);
    if (t.dims != dims) {
      return InvalidArgumentError(StrCat("tensor '", name, "' has shape ", ShapeString(t.dims),
                                         " but the config implies ", ShapeString(dims)));
    }
    ++seen;  // names are unique (IndexTensors) and the walk names each tensor once
    if (!id.is_expert()) return absl::OkStatus();
    part_index[static_cast<int>(id.part())] = it->second;
    expert_index_.push_back(it->second);
    if (id.part() != ExpertPart::kDownT) return absl::OkStatus();
    return CheckExpertContiguous(id, tensors_[part_index[0]], tensors_[part_index[1]],
                                 tensors_[part_index[2]]);
  };
  // The walk stops at the first missing tensor, so a huge L x E costs at most (tensors
  // present + 1) lookups and the index grows with real entries only.
  absl::Status status;
  ForEachTensor(config_, [&](const TensorId& id) {
    status = expect(id);
    return status.ok();
  });
  ST_RETURN_IF_ERROR(status);
  if (seen == tensors_.size()) return absl::OkStatus();
  std::set<std::string> expected;
  ForEachTensor(config_, [&](const TensorId& id) {
    expected.insert(id.FileName());
    return true;
  });
  for (const TensorInfo& t : tensors_) {
    if (!expected.count(t.name)) {
      return InvalidArgumentError(StrCat(
          "unexpected tensor '", t.name, "' for a config with ", L, " layers, ", E, " experts",
          config_.tie_word_embeddings && t.name == "output" ? " and tie_word_embeddings = true"
                                                            : ""));
    }
  }
  return absl::OkStatus();
}

const MetaValue* ModelFile::FindMetadata(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {
absl::StatusOr<const MetaValue*> GetTyped(const ModelFile& f, const std::string& key,
                                          MetaType type) {
  const MetaValue* v = f.FindMetadata(key);
  if (v == nullptr) {
    return absl::NotFoundError(absl::StrCat("metadata key '", key, "' is absent"));
  }
  if (v->type != type) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metadata key '", key, "' has type ", MetaTypeName(v->type), ", not ", MetaTypeName(type)));
  }
  return v;
}
}  // namespace

absl::StatusOr<std::string> ModelFile::GetString(const std::string& key) const {
  absl::StatusOr<const MetaValue*> v = GetTyped(*this, key, MetaType::kString);
  if (!v.ok()) return v.status();
  return (*v)->str;
}
absl::StatusOr<std::string> ModelFile::GetBytes(const std::string& key) const {
  absl::StatusOr<const MetaValue*> v = GetTyped(*this, key, MetaType::kBytes);
  if (!v.ok()) return v.status();
  return (*v)->str;
}
absl::StatusOr<int64_t> ModelFile::GetI64(const std::string& key) const {
  absl::StatusOr<const MetaValue*> v = GetTyped(*this, key, MetaType::kI64);
  if (!v.ok()) return v.status();
  return (*v)->i64;
}
absl::StatusOr<double> ModelFile::GetF64(const std::string& key) const {
  absl::StatusOr<const MetaValue*> v = GetTyped(*this, key, MetaType::kF64);
  if (!v.ok()) return v.status();
  return (*v)->f64;
}
absl::StatusOr<std::vector<int64_t>> ModelFile::GetI64Array(const std::string& key) const {
  absl::StatusOr<const MetaValue*> v = GetTyped(*this, key, MetaType::kI64Array);
  if (!v.ok()) return v.status();
  return (*v)->i64s;
}

const TensorInfo* ModelFile::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<ExpertExtent> ModelFile::GetExpertExtent(int layer, int expert) const {
  const int L = config_.num_hidden_layers, E = config_.moe_num_primary_experts;
  if (layer < 0 || layer >= L || expert < 0 || expert >= E) {
    return absl::OutOfRangeError(absl::StrCat("expert (", layer, ", ", expert,
                                              ") out of range: ", L, " layers, ", E, " experts"));
  }
  const size_t base = (static_cast<size_t>(layer) * E + expert) * 3;
  ExpertExtent x;
  x.gate = &tensors_[expert_index_[base]];
  x.up = &tensors_[expert_index_[base + 1]];
  x.down_t = &tensors_[expert_index_[base + 2]];
  x.offset = x.gate->offset;
  x.size = x.down_t->offset + x.down_t->size - x.offset;
  return x;
}

absl::Status ModelFile::VerifyTensor(const TensorInfo& t) const {
  const uint32_t crc = Crc32c(base_ + t.offset, static_cast<size_t>(t.size));
  if (crc != t.crc32c) {
    return absl::DataLossError(absl::StrCat(
        "tensor '", t.name, "' checksum mismatch (stored ", absl::Hex(t.crc32c, absl::kZeroPad8),
        ", computed ", absl::Hex(crc, absl::kZeroPad8), "): its data at offset ", t.offset,
        " is corrupt; re-copy or re-export the file"));
  }
  return absl::OkStatus();
}

absl::Status ModelFile::VerifyAllTensors() const {
  for (const TensorInfo& t : tensors_) ST_RETURN_IF_ERROR(VerifyTensor(t));
  return absl::OkStatus();
}

}  // namespace st
