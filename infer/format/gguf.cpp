// The GGUF value model, the untrusting reader (every count and length bounded by the bytes left,
// 64-bit checked arithmetic) and the llama.cpp-layout writer. Rules: docs/gguf.md.
#include "infer/format/gguf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/check.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the GGUF code assumes a little-endian host");

namespace st {
namespace {

using absl::InvalidArgumentError;
using absl::StrCat;

constexpr uint32_t kGgmlTypeCount = 43;  // ggml's GGML_TYPE_COUNT
// ggml's names by id; nullptr for the ids ggml removed (4, 5, 31-33, 36-38).
constexpr const char* kGgmlNames[kGgmlTypeCount] = {
    "f32",     "f16",   "q4_0",   "q4_1",  nullptr, nullptr,  "q5_0",  "q5_1",    "q8_0",
    "q8_1",    "q2_K",  "q3_K",   "q4_K",  "q5_K",  "q6_K",   "q8_K",  "iq2_xxs", "iq2_xs",
    "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8",    "i16",     "i32",
    "i64",     "f64",   "iq1_m",  "bf16",  nullptr, nullptr,  nullptr, "tq1_0",   "tq2_0",
    nullptr,   nullptr, nullptr,  "mxfp4", "nvfp4", "q1_0",   "q2_0"};

constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;  // magic, version, n_tensors, n_kv
// The fewest bytes one key-value pair / tensor info can take (used to bound counts by the bytes
// left before anything is allocated): a 1-byte key, a type and a 1-byte value; a 1-byte name,
// n_dims, one ne, the type and the offset.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// v rounded up to a power-of-two alignment; false on overflow.
bool AlignUp(uint64_t v, uint64_t alignment, uint64_t* out) {
  uint64_t sum;
  if (__builtin_add_overflow(v, alignment - 1, &sum)) return false;
  *out = sum & ~(alignment - 1);
  return true;
}

// Names in messages: printable ASCII as is, anything else hex-escaped.
std::string Printable(absl::string_view s) { return absl::CHexEscape(s); }

bool IsValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

// By value type id: the spec's name, and the bytes of a scalar (the fewest bytes of a STRING,
// its length, and of an ARRAY, its element type and count).
constexpr const char* kValueTypeNames[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                           "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                           "UINT64", "INT64",   "FLOAT64"};
constexpr uint64_t kValueTypeBytes[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};

// For a valid value type (IsValueType).
uint64_t EncodedSize(GgufType t) { return kValueTypeBytes[static_cast<uint32_t>(t)]; }

bool IsScalar(GgufType t) { return t != GgufType::kString && t != GgufType::kArray; }

void PutU32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void PutString(std::string& s, absl::string_view v) {
  PutU64(s, v.size());
  s.append(v.data(), v.size());
}

// The GGUF element type of a C++ type (GgufValue::Array / As).
template <typename T>
struct Elem;
template <>
struct Elem<uint8_t> {
  static constexpr GgufType kType = GgufType::kUint8;
};
template <>
struct Elem<int8_t> {
  static constexpr GgufType kType = GgufType::kInt8;
};
template <>
struct Elem<uint16_t> {
  static constexpr GgufType kType = GgufType::kUint16;
};
template <>
struct Elem<int16_t> {
  static constexpr GgufType kType = GgufType::kInt16;
};
template <>
struct Elem<uint32_t> {
  static constexpr GgufType kType = GgufType::kUint32;
};
template <>
struct Elem<int32_t> {
  static constexpr GgufType kType = GgufType::kInt32;
};
template <>
struct Elem<uint64_t> {
  static constexpr GgufType kType = GgufType::kUint64;
};
template <>
struct Elem<int64_t> {
  static constexpr GgufType kType = GgufType::kInt64;
};
template <>
struct Elem<float> {
  static constexpr GgufType kType = GgufType::kFloat32;
};
template <>
struct Elem<double> {
  static constexpr GgufType kType = GgufType::kFloat64;
};
template <>
struct Elem<bool> {
  static constexpr GgufType kType = GgufType::kBool;
};
template <>
struct Elem<std::string> {
  static constexpr GgufType kType = GgufType::kString;
};

// ---------------------------------------------------------------- tensor checks
// Shared by the reader and the writer.

absl::Status CheckTensorName(absl::string_view name) {
  if (name.empty()) return InvalidArgumentError("a tensor has an empty name");
  if (name.size() > kGgufMaxTensorNameBytes) {
    return InvalidArgumentError(StrCat("tensor name '", Printable(name.substr(0, 80)), "...' is ",
                                       name.size(), " bytes; ggml allows at most ",
                                       kGgufMaxTensorNameBytes));
  }
  return absl::OkStatus();
}

// Checks type and shape of tensor `name` and gives its byte size.
absl::StatusOr<uint64_t> TensorBytes(absl::string_view name, uint32_t type,
                                     const std::vector<int64_t>& ne) {
  const std::string q = StrCat("tensor ", Printable(name));
  if (ne.empty() || ne.size() > static_cast<size_t>(kGgufMaxDims)) {
    return InvalidArgumentError(
        StrCat(q, " has n_dims ", ne.size(), "; ggml tensors have 1 to ", kGgufMaxDims));
  }
  int64_t elements = 1;
  for (size_t i = 0; i < ne.size(); ++i) {
    if (ne[i] <= 0) {
      return InvalidArgumentError(StrCat(q, " has ne[", i, "] = ", ne[i],
                                         "; every dimension must be at least 1 (no empty "
                                         "weights)"));
    }
    if (__builtin_mul_overflow(elements, ne[i], &elements)) {
      return InvalidArgumentError(
          StrCat(q, " has ne [", absl::StrJoin(ne, ", "), "] whose element count overflows int64"));
    }
  }
  const GgmlTypeInfo layout = GgmlTypeLayout(type);
  if (layout.block_bytes == 0) {
    if (type >= kGgmlTypeCount) {
      return InvalidArgumentError(StrCat(q, " has type id ", type, ", not a ggml type (ids 0 to ",
                                         kGgmlTypeCount - 1, ")"));
    }
    return InvalidArgumentError(
        StrCat(q, " has type ", type, " (", layout.name,
               "), which this reader cannot size (it reads f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, "
               "q8_0, q8_1, q2_K, q3_K, q4_K, q5_K, q6_K, q8_K)"));
  }
  if (ne[0] % layout.block_elems != 0) {
    return InvalidArgumentError(StrCat(q, " has ne[0] = ", ne[0], ", not a multiple of ",
                                       layout.name, "'s block of ", layout.block_elems,
                                       " elements"));
  }
  int64_t bytes = ne[0] / layout.block_elems;
  bool overflow = __builtin_mul_overflow(bytes, layout.block_bytes, &bytes);
  for (size_t i = 1; i < ne.size() && !overflow; ++i) {
    overflow = __builtin_mul_overflow(bytes, ne[i], &bytes);
  }
  if (overflow) {
    return InvalidArgumentError(StrCat(q, " of ne [", absl::StrJoin(ne, ", "), "] in ", layout.name,
                                       " has a byte size that overflows int64"));
  }
  return static_cast<uint64_t>(bytes);
}

// ---------------------------------------------------------------- byte source
// Sequential bounds-checked reads of an untrusted header from memory or from a file (pread
// through a window). Errors say what was being read, where, and what the file has left.
class ByteReader {
 public:
  explicit ByteReader(absl::string_view memory) : memory_(memory), size_(memory.size()) {}
  ByteReader(int fd, uint64_t size) : fd_(fd), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }

  // Reads `n` bytes into `dst`; `what` names them.
  absl::Status Read(void* dst, uint64_t n, absl::string_view what) {
    if (n > remaining()) {
      return InvalidArgumentError(StrCat("the file ends inside ", what, " at offset ", pos_,
                                         " (needs ", n, " bytes, ", remaining(),
                                         " left): truncated or not a complete GGUF file"));
    }
    if (fd_ < 0) {
      std::memcpy(dst, memory_.data() + pos_, n);
    } else if (n >= kWindow / 2) {
      ST_RETURN_IF_ERROR(PreadAll(static_cast<char*>(dst), pos_, n));
    } else {
      if (pos_ < window_start_ || pos_ + n > window_start_ + window_.size()) {
        window_.resize(static_cast<size_t>(std::min<uint64_t>(kWindow, remaining())));
        window_start_ = pos_;
        ST_RETURN_IF_ERROR(PreadAll(window_.data(), pos_, window_.size()));
      }
      std::memcpy(dst, window_.data() + (pos_ - window_start_), n);
    }
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Read(T* out, absl::string_view what) {
    return Read(out, sizeof(T), what);
  }
  // A string: a u64 length, then that many bytes. A length over `max_len` is refused before
  // anything is read: "<what> of N bytes at offset X is too long (<limit>)".
  absl::Status ReadString(std::string* out, uint64_t max_len = UINT64_MAX,
                          absl::string_view what = "", absl::string_view limit = "") {
    uint64_t len = 0;
    ST_RETURN_IF_ERROR(Read(&len, "a string's length"));
    if (len > max_len) {
      return InvalidArgumentError(
          StrCat(what, " of ", len, " bytes at offset ", pos_ - 8, " is too long (", limit, ")"));
    }
    if (len > remaining()) {
      return InvalidArgumentError(StrCat("a string at offset ", pos_ - 8, " has length ", len,
                                         ", past the end of the file (", remaining(),
                                         " bytes left)"));
    }
    out->resize(static_cast<size_t>(len));
    return Read(out->data(), len, "a string");
  }

 private:
  static constexpr uint64_t kWindow = 1 << 20;

  absl::Status PreadAll(char* dst, uint64_t offset, uint64_t n) const {
    while (n > 0) {
      const ssize_t got = pread(fd_, dst, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        return absl::DataLossError(
            StrCat("read error at offset ", offset, ": ", std::strerror(errno)));
      }
      if (got == 0) {
        return absl::DataLossError(
            StrCat("the file ended at offset ", offset, " while being read: it shrank"));
      }
      dst += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
    return absl::OkStatus();
  }

  absl::string_view memory_;
  int fd_ = -1;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string window_;
  uint64_t window_start_ = 0;
};

// The status with "<prefix>: " before its message, same code.
absl::Status Prefixed(const absl::Status& s, absl::string_view prefix) {
  if (s.ok()) return s;
  return absl::Status(s.code(), StrCat(prefix, ": ", s.message()));
}

}  // namespace

// ================================================================ types

GgmlTypeInfo GgmlTypeLayout(uint32_t id) {
  if (const GgmlTypeInfo* t = FindGgmlType(id)) return *t;
  const GgmlType type = static_cast<GgmlType>(id);
  if (id == kGgmlTypeQ8_1) return GgmlTypeInfo{type, "q8_1", 32, 36};
  if (id >= kGgmlTypeCount) return GgmlTypeInfo{type, "unknown", 0, 0};
  return GgmlTypeInfo{type, kGgmlNames[id] ? kGgmlNames[id] : "removed", 0, 0};
}

std::string GgufTypeName(GgufType type) {
  const uint32_t id = static_cast<uint32_t>(type);
  return IsValueType(id) ? kValueTypeNames[id] : StrCat("type ", id);
}

// ================================================================ GgufValue

// Decoding from and encoding to the file's bytes (the friend of GgufValue).
class GgufValueCodec {
 public:
  // Reads a value of `type` whose enclosing arrays are `depth` deep (0 at the top).
  static absl::Status Decode(ByteReader& r, GgufType type, int depth, GgufValue* out) {
    out->type_ = type;
    if (IsScalar(type)) {
      ST_RETURN_IF_ERROR(r.Read(&out->bits_, EncodedSize(type), StrCat("a ", GgufTypeName(type))));
      return CheckBool(type, out->bits_);
    }
    if (type == GgufType::kString) return r.ReadString(&out->bytes_);
    if (depth + 1 > kGgufMaxArrayDepth) {
      return InvalidArgumentError(StrCat("arrays are nested more than ", kGgufMaxArrayDepth,
                                         " deep (at offset ", r.pos(), ")"));
    }
    uint32_t elem = 0;
    ST_RETURN_IF_ERROR(r.Read(&elem, "an array's element type"));
    if (!IsValueType(elem)) {
      return InvalidArgumentError(StrCat("an array at offset ", r.pos() - 4,
                                         " has unknown element type ", elem,
                                         " (GGUF value types are 0 to 12)"));
    }
    out->element_type_ = static_cast<GgufType>(elem);
    ST_RETURN_IF_ERROR(r.Read(&out->count_, "an array's element count"));
    const uint64_t min = EncodedSize(out->element_type_);
    if (out->count_ > r.remaining() / min) {
      return InvalidArgumentError(
          StrCat("an array at offset ", r.pos() - 12, " says it has ", out->count_,
                 " elements of type ", GgufTypeName(out->element_type_), ", but the ",
                 r.remaining(), " bytes left in the file hold at most ", r.remaining() / min));
    }
    const size_t count = static_cast<size_t>(out->count_);
    if (IsScalar(out->element_type_)) {
      out->bytes_.resize(count * min);
      ST_RETURN_IF_ERROR(r.Read(out->bytes_.data(), out->bytes_.size(), "an array's elements"));
      if (out->element_type_ == GgufType::kBool) {
        for (char c : out->bytes_) ST_RETURN_IF_ERROR(CheckBool(GgufType::kBool, c));
      }
      return absl::OkStatus();
    }
    // Strings and arrays grow as they are read: the count bounds the bytes, not the memory.
    for (size_t i = 0; i < count; ++i) {
      absl::Status s;
      if (out->element_type_ == GgufType::kString) {
        out->strings_.emplace_back();
        s = r.ReadString(&out->strings_.back());
      } else {
        out->arrays_.emplace_back();
        s = Decode(r, GgufType::kArray, depth + 1, &out->arrays_.back());
      }
      if (!s.ok()) return Prefixed(s, StrCat("array element ", i));
    }
    return absl::OkStatus();
  }

  // Appends the value's bytes (without its type tag).
  static void Encode(const GgufValue& v, std::string& out) {
    if (IsScalar(v.type_)) {
      out.append(reinterpret_cast<const char*>(&v.bits_), EncodedSize(v.type_));
    } else if (v.type_ == GgufType::kString) {
      PutString(out, v.bytes_);
    } else {
      PutU32(out, static_cast<uint32_t>(v.element_type_));
      PutU64(out, v.count_);
      out += v.bytes_;
      for (const std::string& s : v.strings_) PutString(out, s);
      for (const GgufValue& a : v.arrays_) Encode(a, out);
    }
  }

  template <typename T>
  static GgufValue MakeScalar(T x) {
    GgufValue v;
    v.type_ = Elem<T>::kType;
    if constexpr (std::is_same_v<T, bool>) {
      v.bits_ = x ? 1 : 0;
    } else {
      std::memcpy(&v.bits_, &x, sizeof(T));
    }
    return v;
  }

  template <typename T>
  static GgufValue MakeArray(const std::vector<T>& xs) {
    GgufValue v;
    v.type_ = GgufType::kArray;
    v.element_type_ = Elem<T>::kType;
    v.count_ = xs.size();
    if constexpr (std::is_same_v<T, std::string>) {
      v.strings_ = xs;
    } else if constexpr (std::is_same_v<T, bool>) {
      for (bool x : xs) v.bytes_.push_back(x ? 1 : 0);
    } else {
      v.bytes_.assign(reinterpret_cast<const char*>(xs.data()), xs.size() * sizeof(T));
    }
    return v;
  }

 private:
  static absl::Status CheckBool(GgufType type, uint64_t bits) {
    if (type != GgufType::kBool || bits <= 1) return absl::OkStatus();
    return InvalidArgumentError(
        StrCat("a BOOL has the byte ", bits & 0xff, "; only 0 and 1 are valid"));
  }
};

GgufValue GgufValue::U8(uint8_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::I8(int8_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::U16(uint16_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::I16(int16_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::U32(uint32_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::I32(int32_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::U64(uint64_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::I64(int64_t v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::F32(float v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::F64(double v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::Bool(bool v) { return GgufValueCodec::MakeScalar(v); }
GgufValue GgufValue::String(std::string v) {
  GgufValue out;
  out.type_ = GgufType::kString;
  out.bytes_ = std::move(v);
  return out;
}

template <typename T>
GgufValue GgufValue::Array(const std::vector<T>& values) {
  return GgufValueCodec::MakeArray(values);
}

std::string GgufValue::TypeName() const {
  if (type_ != GgufType::kArray) return GgufTypeName(type_);
  if (element_type_ == GgufType::kArray && !arrays_.empty()) {
    return StrCat("ARRAY[", arrays_[0].TypeName(), "]");
  }
  return StrCat("ARRAY[", GgufTypeName(element_type_), "]");
}

template <typename T>
absl::StatusOr<T> GgufValue::As() const {
  if (type_ != Elem<T>::kType) {
    return InvalidArgumentError(
        StrCat("has type ", TypeName(), ", expected ", GgufTypeName(Elem<T>::kType)));
  }
  if constexpr (std::is_same_v<T, std::string>) {
    return bytes_;
  } else if constexpr (std::is_same_v<T, bool>) {
    return bits_ != 0;
  } else {
    T x;
    std::memcpy(&x, &bits_, sizeof(T));
    return x;
  }
}

template <typename T>
absl::StatusOr<std::vector<T>> GgufValue::AsArray() const {
  if (type_ != GgufType::kArray || element_type_ != Elem<T>::kType) {
    return InvalidArgumentError(
        StrCat("has type ", TypeName(), ", expected ARRAY[", GgufTypeName(Elem<T>::kType), "]"));
  }
  if constexpr (std::is_same_v<T, std::string>) {
    return strings_;
  } else if constexpr (std::is_same_v<T, bool>) {
    std::vector<bool> out;
    for (char c : bytes_) out.push_back(c != 0);
    return out;
  } else {
    std::vector<T> out(static_cast<size_t>(count_));
    std::memcpy(out.data(), bytes_.data(), out.size() * sizeof(T));
    return out;
  }
}

std::string GgufValue::DebugString(size_t max_elements) const {
  auto quoted = [](absl::string_view s) {
    const bool cut = s.size() > 64;
    return StrCat("\"", absl::CHexEscape(s.substr(0, 64)), cut ? "...\"" : "\"");
  };
  auto scalar = [](GgufType t, uint64_t bits) -> std::string {
    switch (t) {
      case GgufType::kInt8:
        return StrCat(static_cast<int8_t>(bits));
      case GgufType::kInt16:
        return StrCat(static_cast<int16_t>(bits));
      case GgufType::kInt32:
        return StrCat(static_cast<int32_t>(bits));
      case GgufType::kInt64:
        return StrCat(static_cast<int64_t>(bits));
      case GgufType::kFloat32: {
        float f;
        const uint32_t b = static_cast<uint32_t>(bits);
        std::memcpy(&f, &b, 4);
        return StrCat(f);
      }
      case GgufType::kFloat64: {
        double d;
        std::memcpy(&d, &bits, 8);
        return StrCat(d);
      }
      case GgufType::kBool:
        return bits ? "true" : "false";
      default:
        return StrCat(bits);
    }
  };
  if (IsScalar(type_)) return StrCat(TypeName(), " ", scalar(type_, bits_));
  if (type_ == GgufType::kString) return StrCat("STRING ", quoted(bytes_));
  std::vector<std::string> shown;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(count_, max_elements));
  for (size_t i = 0; i < n; ++i) {
    if (IsScalar(element_type_)) {
      const uint64_t size = EncodedSize(element_type_);
      uint64_t bits = 0;
      std::memcpy(&bits, bytes_.data() + i * size, size);
      shown.push_back(scalar(element_type_, bits));
    } else if (element_type_ == GgufType::kString) {
      shown.push_back(quoted(strings_[i]));
    } else {
      shown.push_back(StrCat("(", arrays_[i].count_, ")"));
    }
  }
  return StrCat(TypeName(), " (", count_, ") [", absl::StrJoin(shown, ", "),
                count_ > n ? ", ...]" : "]");
}

bool GgufValue::operator==(const GgufValue& o) const {
  return type_ == o.type_ && element_type_ == o.element_type_ && count_ == o.count_ &&
         bits_ == o.bits_ && bytes_ == o.bytes_ && strings_ == o.strings_ && arrays_ == o.arrays_;
}

#define ST_GGUF_INSTANTIATE(T)                                              \
  template GgufValue GgufValue::Array<T>(const std::vector<T>&);            \
  template absl::StatusOr<T> GgufValue::As<T>() const;                      \
  template absl::StatusOr<std::vector<T>> GgufValue::AsArray<T>() const;    \
  template absl::StatusOr<T> GgufMetadata::Get<T>(absl::string_view) const; \
  template absl::StatusOr<std::vector<T>> GgufMetadata::GetArray<T>(absl::string_view) const;

// ================================================================ GgufMetadata

absl::Status GgufMetadata::Add(std::string key, GgufValue value) {
  if (key.empty()) return InvalidArgumentError("a metadata key is empty");
  if (key.size() > kGgufMaxKeyBytes) {
    return InvalidArgumentError(StrCat("key ", Printable(key.substr(0, 80)), "... is ", key.size(),
                                       " bytes; GGUF allows at most ", kGgufMaxKeyBytes));
  }
  if (index_.count(key)) {
    return absl::AlreadyExistsError(StrCat("key ", Printable(key), " appears twice"));
  }
  index_.emplace(key, entries_.size());
  entries_.emplace_back(std::move(key), std::move(value));
  return absl::OkStatus();
}

const GgufValue* GgufMetadata::Find(absl::string_view key) const {
  auto it = index_.find(std::string(key));
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

namespace {
absl::StatusOr<const GgufValue*> FindOrError(const GgufMetadata& m, absl::string_view key) {
  const GgufValue* v = m.Find(key);
  if (v == nullptr) return absl::NotFoundError(StrCat("key ", Printable(key), " is absent"));
  return v;
}
}  // namespace

template <typename T>
absl::StatusOr<T> GgufMetadata::Get(absl::string_view key) const {
  ST_ASSIGN_OR_RETURN(const GgufValue* v, FindOrError(*this, key));
  absl::StatusOr<T> x = v->As<T>();
  if (!x.ok()) {
    return absl::InvalidArgumentError(StrCat("key ", Printable(key), " ", x.status().message()));
  }
  return x;
}

template <typename T>
absl::StatusOr<std::vector<T>> GgufMetadata::GetArray(absl::string_view key) const {
  ST_ASSIGN_OR_RETURN(const GgufValue* v, FindOrError(*this, key));
  absl::StatusOr<std::vector<T>> x = v->AsArray<T>();
  if (!x.ok()) {
    return absl::InvalidArgumentError(StrCat("key ", Printable(key), " ", x.status().message()));
  }
  return x;
}

ST_GGUF_INSTANTIATE(uint8_t)
ST_GGUF_INSTANTIATE(int8_t)
ST_GGUF_INSTANTIATE(uint16_t)
ST_GGUF_INSTANTIATE(int16_t)
ST_GGUF_INSTANTIATE(uint32_t)
ST_GGUF_INSTANTIATE(int32_t)
ST_GGUF_INSTANTIATE(uint64_t)
ST_GGUF_INSTANTIATE(int64_t)
ST_GGUF_INSTANTIATE(float)
ST_GGUF_INSTANTIATE(double)
ST_GGUF_INSTANTIATE(bool)
ST_GGUF_INSTANTIATE(std::string)
#undef ST_GGUF_INSTANTIATE

// ================================================================ GgufTensorInfo

int64_t GgufTensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) {
    if (__builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// ================================================================ GgufFile

GgufFile::OwnedFd& GgufFile::OwnedFd::operator=(OwnedFd&& o) noexcept {
  if (this != &o) reset(std::exchange(o.fd_, -1));
  return *this;
}

GgufFile::OwnedFd::~OwnedFd() { reset(-1); }

void GgufFile::OwnedFd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

absl::StatusOr<GgufFile> GgufFile::Open(const std::string& path) {
  GgufFile f;
  f.path_ = path;
  int fd;
  do {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return FileError("cannot open GGUF file", path, errno);
  f.fd_.reset(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return FileError("cannot stat GGUF file", path, errno);
  if (S_ISDIR(st.st_mode)) {
    return InvalidArgumentError(StrCat("'", path, "' is a directory; give a .gguf file"));
  }
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError(StrCat("'", path, "' is not a regular file; give a .gguf file"));
  }
  f.file_size_ = static_cast<uint64_t>(st.st_size);
  ST_RETURN_IF_ERROR(Prefixed(f.ParseAll(), path));
  return f;
}

absl::StatusOr<GgufFile> GgufFile::Parse(absl::string_view bytes, const std::string& name) {
  GgufFile f;
  f.path_ = name;
  f.memory_ = bytes;
  f.file_size_ = bytes.size();
  ST_RETURN_IF_ERROR(Prefixed(f.ParseAll(), name));
  return f;
}

absl::Status GgufFile::ParseAll() {
  ByteReader r = fd_.get() >= 0 ? ByteReader(fd_.get(), file_size_) : ByteReader(memory_);
  // ---- fixed header
  if (file_size_ < kHeaderBytes) {
    return InvalidArgumentError(StrCat("the file is ", file_size_, " bytes, shorter than the ",
                                       kHeaderBytes, "-byte GGUF header (truncated?)"));
  }
  char magic[4];
  ST_RETURN_IF_ERROR(r.Read(magic, 4, "the magic"));
  if (std::memcmp(magic, kGgufMagic, 4) != 0) {
    return InvalidArgumentError(StrCat("bad magic '", absl::CHexEscape(absl::string_view(magic, 4)),
                                       "': not a GGUF file (expected 'GGUF')"));
  }
  ST_RETURN_IF_ERROR(r.Read(&version_, "the version"));
  if ((version_ & 0xffff) == 0 && version_ != 0) {
    return InvalidArgumentError(
        StrCat("the version word reads 0x", absl::Hex(version_, absl::kZeroPad8),
               ", which is version ", __builtin_bswap32(version_),
               " byte-swapped: this is a big-endian GGUF file; only little-endian files are read"));
  }
  if (version_ == 1) {
    return InvalidArgumentError(
        "GGUF version 1 is not supported (it had 32-bit counts and lengths): re-convert the model "
        "with a current llama.cpp");
  }
  if (version_ != 2 && version_ != 3) {
    return InvalidArgumentError(
        StrCat("GGUF version ", version_, " is not supported (this reader reads 2 and 3)"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  ST_RETURN_IF_ERROR(r.Read(&n_tensors, "the tensor count"));
  ST_RETURN_IF_ERROR(r.Read(&n_kv, "the key-value count"));
  // Both counts fit in the bytes left before anything is allocated for them.
  if (n_tensors > r.remaining() / kMinTensorInfoBytes) {
    return InvalidArgumentError(StrCat("n_tensors = ", n_tensors, " cannot fit: the ",
                                       r.remaining(), " bytes after the header hold at most ",
                                       r.remaining() / kMinTensorInfoBytes, " tensor infos"));
  }
  if (n_kv > (r.remaining() - n_tensors * kMinTensorInfoBytes) / kMinKvBytes) {
    return InvalidArgumentError(StrCat(
        "n_kv = ", n_kv, " cannot fit: the ", r.remaining(), " bytes after the header (with ",
        n_tensors, " tensor infos) hold at most ",
        (r.remaining() - n_tensors * kMinTensorInfoBytes) / kMinKvBytes, " key-value pairs"));
  }

  // ---- key-value pairs
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    ST_RETURN_IF_ERROR(Prefixed(r.ReadString(&key, kGgufMaxKeyBytes, "a key",
                                             StrCat("at most ", kGgufMaxKeyBytes, " bytes")),
                                StrCat("key-value pair ", i)));
    if (key.empty() || key.size() > kGgufMaxKeyBytes) {
      return InvalidArgumentError(StrCat("key-value pair ", i, " has a key of ", key.size(),
                                         " bytes; keys are 1 to ", kGgufMaxKeyBytes));
    }
    const std::string q = StrCat("key ", Printable(key));
    if (metadata_.Find(key) != nullptr) {
      return InvalidArgumentError(StrCat(q, " appears twice (the second time as pair ", i, ")"));
    }
    uint32_t type = 0;
    ST_RETURN_IF_ERROR(Prefixed(r.Read(&type, "the value type"), q));
    if (!IsValueType(type)) {
      return InvalidArgumentError(
          StrCat(q, " has unknown value type ", type, " (GGUF value types are 0 to 12)"));
    }
    GgufValue value;
    ST_RETURN_IF_ERROR(
        Prefixed(GgufValueCodec::Decode(r, static_cast<GgufType>(type), 0, &value), q));
    ST_RETURN_IF_ERROR(metadata_.Add(std::move(key), std::move(value)));
  }
  if (metadata_.Find(kGgufAlignmentKey) != nullptr) {
    ST_ASSIGN_OR_RETURN(alignment_, metadata_.Get<uint32_t>(kGgufAlignmentKey));
    if (!IsPowerOfTwo(alignment_) || alignment_ > kGgufMaxAlignment) {
      return InvalidArgumentError(StrCat("key ", kGgufAlignmentKey, " = ", alignment_,
                                         " is not a power of two from 1 to ", kGgufMaxAlignment));
    }
  }

  // ---- tensor infos
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    const std::string at = StrCat("tensor info ", i);
    ST_RETURN_IF_ERROR(Prefixed(
        r.ReadString(&t.name, kGgufMaxTensorNameBytes, "a name", "ggml allows at most 63 bytes"),
        at));
    ST_RETURN_IF_ERROR(Prefixed(CheckTensorName(t.name), at));
    const std::string q = StrCat("tensor ", Printable(t.name));
    if (tensor_index_.count(t.name)) {
      return InvalidArgumentError(
          StrCat(q, " appears twice (the second time as tensor info ", i, ")"));
    }
    uint32_t n_dims = 0;
    ST_RETURN_IF_ERROR(Prefixed(r.Read(&n_dims, "n_dims"), q));
    if (n_dims < 1 || n_dims > static_cast<uint32_t>(kGgufMaxDims)) {
      return InvalidArgumentError(
          StrCat(q, " has n_dims ", n_dims, "; ggml tensors have 1 to ", kGgufMaxDims));
    }
    t.ne.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      ST_RETURN_IF_ERROR(Prefixed(r.Read(&t.ne[d], StrCat("ne[", d, "]")), q));
    }
    uint32_t type = 0;
    ST_RETURN_IF_ERROR(Prefixed(r.Read(&type, "the type"), q));
    ST_RETURN_IF_ERROR(Prefixed(r.Read(&t.offset, "the offset"), q));
    ST_ASSIGN_OR_RETURN(t.nbytes, TensorBytes(t.name, type, t.ne));
    t.type = static_cast<GgmlType>(type);
    if (t.offset % alignment_ != 0) {
      return InvalidArgumentError(StrCat(q, " has offset ", t.offset, ", not a multiple of the ",
                                         "alignment ", alignment_));
    }
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // ---- tensor data: inside the file, no overlaps
  ST_CHECK(AlignUp(r.pos(), alignment_, &data_offset_)) << "a position inside the file";
  if (tensors_.empty()) return absl::OkStatus();
  const uint64_t data_size = file_size_ >= data_offset_ ? file_size_ - data_offset_ : 0;
  if (file_size_ < data_offset_) {
    return InvalidArgumentError(StrCat("the tensor data would start at offset ", data_offset_,
                                       ", past the end of the file (", file_size_,
                                       " bytes): truncated file?"));
  }
  for (const GgufTensorInfo& t : tensors_) {
    const std::string q = StrCat("tensor ", Printable(t.name));
    if (t.offset >= data_size) {
      return InvalidArgumentError(StrCat(q, " has offset ", t.offset,
                                         ", past the end of the file (", data_size,
                                         " bytes of tensor data from offset ", data_offset_, ")"));
    }
    if (t.nbytes > data_size - t.offset) {
      return InvalidArgumentError(StrCat(
          q, "'s data [", t.offset, ", ", t.offset + t.nbytes, ") runs past the end of the file (",
          data_size, " bytes of tensor data from offset ", data_offset_, "): truncated file?"));
    }
  }
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& a = *by_offset[i - 1];
    const GgufTensorInfo& b = *by_offset[i];
    if (a.offset + a.nbytes > b.offset) {  // both ends checked inside the file above
      return InvalidArgumentError(StrCat("tensors ", Printable(a.name), " [", a.offset, ", ",
                                         a.offset + a.nbytes, ") and ", Printable(b.name), " [",
                                         b.offset, ", ", b.offset + b.nbytes,
                                         ") overlap (offsets in the tensor data)"));
    }
  }
  return absl::OkStatus();
}

const GgufTensorInfo* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status GgufFile::ReadRaw(const GgufTensorInfo& t, void* out) const {
  ST_CHECK(data_offset_ <= file_size_ && t.offset <= file_size_ - data_offset_ &&
           t.nbytes <= file_size_ - data_offset_ - t.offset)
      << "tensor " << t.name << " is not one of this file's";
  const uint64_t at = data_offset_ + t.offset;
  if (fd_.get() < 0) {
    std::memcpy(out, memory_.data() + at, t.nbytes);
    return absl::OkStatus();
  }
  char* dst = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < t.nbytes) {
    const ssize_t got =
        pread(fd_.get(), dst + done, t.nbytes - done, static_cast<off_t>(at + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      return absl::DataLossError(StrCat(
          path_, ": reading tensor ", Printable(t.name), " at offset ", at + done, ": ",
          got < 0 ? std::strerror(errno) : "the file ended early (it shrank since it was opened)"));
    }
    done += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GgufFile::ReadRaw(const GgufTensorInfo& t) const {
  std::string out(static_cast<size_t>(t.nbytes), '\0');
  ST_RETURN_IF_ERROR(ReadRaw(t, out.data()));
  return out;
}

// ================================================================ GgufWriter

absl::StatusOr<GgufWriter> GgufWriter::Create(const std::string& path) {
  ST_ASSIGN_OR_RETURN(AtomicFileWriter file, AtomicFileWriter::Begin(path));
  ST_RETURN_IF_ERROR(file.Open());
  return GgufWriter(std::move(file));
}

absl::Status GgufWriter::Usable() const {
  if (!error_.ok()) {
    return absl::Status(error_.code(),
                        StrCat("an earlier error stopped this GGUF writer: ", error_.message()));
  }
  if (finished_) {
    return absl::FailedPreconditionError(
        StrCat("GGUF writer for '", file_.path(), "' is finished"));
  }
  return absl::OkStatus();
}

absl::Status GgufWriter::Fail(absl::Status s) {
  error_ = s;
  file_.Discard();
  return s;
}

absl::Status GgufWriter::AddMetadata(std::string key, GgufValue value) {
  ST_RETURN_IF_ERROR(Usable());
  const std::string q = StrCat("key ", Printable(key));
  if (header_written_) {
    return absl::FailedPreconditionError(
        StrCat(q, " comes after tensor data: add every key before the first WriteTensorData"));
  }
  if (value.type() == GgufType::kArray && value.element_type() == GgufType::kArray) {
    return InvalidArgumentError(
        StrCat(q,
               " is a nested array; GGUF writers must not write them (llama.cpp cannot read "
               "them)"));
  }
  if (key == kGgufAlignmentKey) {
    absl::StatusOr<uint32_t> a = value.As<uint32_t>();
    if (!a.ok()) return InvalidArgumentError(StrCat(q, " ", a.status().message()));
    if (!IsPowerOfTwo(*a) || *a > kGgufMaxAlignment) {
      return InvalidArgumentError(
          StrCat(q, " = ", *a, " is not a power of two from 1 to ", kGgufMaxAlignment));
    }
    alignment_ = *a;
  }
  return metadata_.Add(std::move(key), std::move(value));
}

absl::Status GgufWriter::AddTensorInfo(std::string name, GgmlType type, std::vector<int64_t> ne,
                                       uint64_t nbytes) {
  ST_RETURN_IF_ERROR(Usable());
  ST_RETURN_IF_ERROR(CheckTensorName(name));
  const std::string q = StrCat("tensor ", Printable(name));
  if (header_written_) {
    return absl::FailedPreconditionError(StrCat(
        q, " comes after tensor data: add every tensor info before the first WriteTensorData"));
  }
  if (tensor_index_.count(name)) return absl::AlreadyExistsError(StrCat(q, " appears twice"));
  ST_ASSIGN_OR_RETURN(const uint64_t want, TensorBytes(name, static_cast<uint32_t>(type), ne));
  if (nbytes != want) {
    return InvalidArgumentError(
        StrCat(q, " is given as ", nbytes, " bytes but ne [", absl::StrJoin(ne, ", "), "] in ",
               GgmlTypeLayout(static_cast<uint32_t>(type)).name, " is ", want));
  }
  GgufTensorInfo t;
  t.name = std::move(name);
  t.type = type;
  t.ne = std::move(ne);
  t.nbytes = nbytes;
  tensor_index_.emplace(t.name, tensors_.size());
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status GgufWriter::WriteHeader() {
  std::string h;
  h.append(kGgufMagic, 4);
  PutU32(h, kGgufVersion);
  PutU64(h, tensors_.size());
  PutU64(h, metadata_.size());
  for (const auto& [key, value] : metadata_.entries()) {
    PutString(h, key);
    PutU32(h, static_cast<uint32_t>(value.type()));
    GgufValueCodec::Encode(value, h);
  }
  uint64_t offset = 0;
  for (GgufTensorInfo& t : tensors_) {
    t.offset = offset;
    uint64_t padded;
    if (!AlignUp(t.nbytes, alignment_, &padded) ||
        __builtin_add_overflow(offset, padded, &offset)) {
      return InvalidArgumentError(
          StrCat("the tensors' total size overflows 64 bits at tensor ", Printable(t.name)));
    }
    PutString(h, t.name);
    PutU32(h, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) PutU64(h, static_cast<uint64_t>(d));
    PutU32(h, static_cast<uint32_t>(t.type));
    PutU64(h, t.offset);
  }
  absl::Status s = file_.Write(h);
  if (!s.ok()) return Fail(s);
  ST_RETURN_IF_ERROR(Pad(h.size()));
  header_written_ = true;
  return absl::OkStatus();
}

absl::Status GgufWriter::Pad(uint64_t size) {
  uint64_t padded;
  ST_CHECK(AlignUp(size, alignment_, &padded)) << "sizes were checked";
  if (padded == size) return absl::OkStatus();
  const std::string zeros(static_cast<size_t>(padded - size), '\0');
  absl::Status s = file_.Write(zeros);
  return s.ok() ? s : Fail(s);
}

absl::Status GgufWriter::WriteTensorData(absl::string_view name, const void* data, size_t size) {
  ST_RETURN_IF_ERROR(Usable());
  const std::string q = StrCat("tensor ", Printable(name));
  auto it = tensor_index_.find(std::string(name));
  if (it == tensor_index_.end()) {
    return absl::NotFoundError(StrCat(q, " has no tensor info (AddTensorInfo it first)"));
  }
  if (it->second < current_) return absl::FailedPreconditionError(StrCat(q, " is complete"));
  if (it->second > current_) {
    const GgufTensorInfo& c = tensors_[current_];
    return absl::FailedPreconditionError(
        current_bytes_ > 0 ? StrCat(q, " starts before tensor ", Printable(c.name),
                                    " is complete (", current_bytes_, " of ", c.nbytes, " bytes)")
                           : StrCat(q, " comes before tensor ", Printable(c.name),
                                    ": tensor data goes in the order of AddTensorInfo"));
  }
  const GgufTensorInfo& t = tensors_[current_];
  if (size > t.nbytes - current_bytes_) {
    return InvalidArgumentError(StrCat(q, ": ", size, " more bytes after ", current_bytes_,
                                       " would pass its size of ", t.nbytes, " bytes"));
  }
  if (!header_written_) ST_RETURN_IF_ERROR(WriteHeader());
  absl::Status s = file_.Write(data, size);
  if (!s.ok()) return Fail(s);
  current_bytes_ += size;
  if (current_bytes_ == t.nbytes) {
    ST_RETURN_IF_ERROR(Pad(t.nbytes));
    ++current_;
    current_bytes_ = 0;
  }
  return absl::OkStatus();
}

absl::Status GgufWriter::Finish() {
  ST_RETURN_IF_ERROR(Usable());
  if (current_ < tensors_.size()) {
    const GgufTensorInfo& t = tensors_[current_];
    return absl::FailedPreconditionError(StrCat(
        "tensor ", Printable(t.name), " has ", current_bytes_, " of its ", t.nbytes, " bytes; ",
        tensors_.size() - current_, " of ", tensors_.size(), " tensors are incomplete"));
  }
  if (!header_written_) ST_RETURN_IF_ERROR(WriteHeader());
  absl::Status s = file_.Sync();
  if (s.ok()) s = file_.Close();
  if (!s.ok()) return Fail(s);
  absl::StatusOr<GgufFile> check = GgufFile::Open(file_.temp_path());
  if (!check.ok()) {
    return Fail(absl::InternalError(
        StrCat("the GGUF file written for '", file_.path(),
               "' does not read back (a bug in the writer): ", check.status().message())));
  }
  s = file_.Commit();
  if (!s.ok()) return Fail(s);
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace st
