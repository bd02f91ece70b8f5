// gguf_dump FILE.gguf: what our GGUF reader (GgufFile) sees in a file, as one JSON document in
// the form scripts/reference/read_gguf.mjs gives @huggingface/gguf's view, so that
// tests/gguf_npm_test.sh can compare the two. Test tool, not installed.
//   {"version", "tensor_count", "kv_count", "tensor_data_offset",
//    "metadata": [[key, {"type", ["subType",] "value"}], ...]  (file order),
//    "tensors": [{"name", "n_dims", "shape", "dtype", "offset"}, ...]}
// 64-bit integers (counts, offsets, shape, UINT64 / INT64 values) are decimal strings; FLOAT32
// values are the float's exact double (JavaScript reads them as such).
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "infer/format/gguf.h"
#include "nlohmann/json.hpp"

namespace {

using ojson = nlohmann::ordered_json;
using st::GgufType;
using st::GgufValue;

// `x` as JSON: 64-bit integers as decimal strings, a float as its exact double.
template <typename T>
ojson Scalar(const T& x) {
  if constexpr (std::is_integral_v<T> && sizeof(T) == 8) {
    return std::to_string(x);
  } else if constexpr (std::is_same_v<T, float>) {
    return static_cast<double>(x);
  } else {
    return x;
  }
}

// fn(T()) for the C++ type T of a scalar or string GGUF type; fn(GgufValue()) for ARRAY.
template <typename F>
ojson ByType(GgufType t, F fn) {
  switch (t) {
    case GgufType::kUint8:
      return fn(uint8_t());
    case GgufType::kInt8:
      return fn(int8_t());
    case GgufType::kUint16:
      return fn(uint16_t());
    case GgufType::kInt16:
      return fn(int16_t());
    case GgufType::kUint32:
      return fn(uint32_t());
    case GgufType::kInt32:
      return fn(int32_t());
    case GgufType::kFloat32:
      return fn(float());
    case GgufType::kBool:
      return fn(bool());
    case GgufType::kString:
      return fn(std::string());
    case GgufType::kUint64:
      return fn(uint64_t());
    case GgufType::kInt64:
      return fn(int64_t());
    case GgufType::kFloat64:
      return fn(double());
    case GgufType::kArray:
      return fn(GgufValue());
  }
  return nullptr;
}

ojson ValueJson(const GgufValue& v) {
  if (v.type() != GgufType::kArray) {
    return ByType(v.type(), [&v](auto tag) -> ojson {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, GgufValue>) {
        return nullptr;  // not reached: v is not an ARRAY
      } else {
        return Scalar(v.As<T>().value());
      }
    });
  }
  return ByType(v.element_type(), [&v](auto tag) {
    using T = decltype(tag);
    ojson out = ojson::array();
    if constexpr (std::is_same_v<T, GgufValue>) {
      for (const GgufValue& inner : v.nested()) out.push_back(ValueJson(inner));
    } else {
      const std::vector<T> elements = v.AsArray<T>().value();  // the element type was checked
      for (const T& x : elements) out.push_back(Scalar(x));
    }
    return out;
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_dump FILE.gguf\n");
    return 2;
  }
  absl::StatusOr<st::GgufFile> f = st::GgufFile::Open(argv[1]);
  if (!f.ok()) {
    std::fprintf(stderr, "gguf_dump: %s\n", std::string(f.status().message()).c_str());
    return 1;
  }
  ojson out;
  out["version"] = f->version();
  out["tensor_count"] = std::to_string(f->tensors().size());
  out["kv_count"] = std::to_string(f->metadata().size());
  out["tensor_data_offset"] = std::to_string(f->data_offset());
  ojson metadata = ojson::array();
  for (const auto& [key, value] : f->metadata().entries()) {
    ojson typed;
    typed["type"] = static_cast<uint32_t>(value.type());
    if (value.type() == GgufType::kArray) {
      typed["subType"] = static_cast<uint32_t>(value.element_type());
    }
    typed["value"] = ValueJson(value);
    metadata.push_back(ojson::array({key, typed}));
  }
  out["metadata"] = std::move(metadata);
  ojson tensors = ojson::array();
  for (const st::GgufTensorInfo& t : f->tensors()) {
    ojson shape = ojson::array();
    for (int64_t d : t.ne) shape.push_back(std::to_string(d));
    tensors.push_back({{"name", t.name},
                       {"n_dims", t.ne.size()},
                       {"shape", shape},
                       {"dtype", static_cast<uint32_t>(t.type)},
                       {"offset", std::to_string(t.offset)}});
  }
  out["tensors"] = std::move(tensors);
  std::printf("%s\n", out.dump(-1, ' ', false, ojson::error_handler_t::replace).c_str());
  return 0;
}
