// Names, block sizes and byte sizes of the element types declared in types.h. DTypeBytes is
// used on untrusted sizes, so every product is checked.
#include "infer/quant/types.h"

#include <cstring>
#include <limits>

namespace st {
namespace {

struct DTypeInfo {
  DType type;
  const char* name;
  int64_t block_elems;  // elements per block
  int64_t block_bytes;  // bytes per block
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, "f32", 1, 4},
    {DType::kF16, "f16", 1, 2},
    {DType::kBF16, "bf16", 1, 2},
    {DType::kQ8_0, "q8_0", kQBlock, sizeof(BlockQ8_0)},
    {DType::kQ4_0, "q4_0", kQBlock, sizeof(BlockQ4_0)},
};

const DTypeInfo* Find(DType t) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.type == t) return &info;
  }
  return nullptr;
}

}  // namespace

bool IsKnownDType(uint32_t raw) { return Find(static_cast<DType>(raw)) != nullptr; }

const char* DTypeName(DType t) {
  const DTypeInfo* info = Find(t);
  return info != nullptr ? info->name : "unknown";
}

bool ParseDTypeName(const char* name, DType* out) {
  if (name == nullptr) return false;
  for (const DTypeInfo& info : kDTypes) {
    if (std::strcmp(info.name, name) == 0) {
      if (out != nullptr) *out = info.type;
      return true;
    }
  }
  return false;
}

int64_t DTypeBlockElems(DType t) {
  const DTypeInfo* info = Find(t);
  return info != nullptr ? info->block_elems : -1;
}

int64_t DTypeBytes(DType t, int64_t n) {
  const DTypeInfo* info = Find(t);
  if (info == nullptr || n < 0 || n % info->block_elems != 0) return -1;
  const int64_t blocks = n / info->block_elems;
  if (blocks > std::numeric_limits<int64_t>::max() / info->block_bytes) return -1;
  return blocks * info->block_bytes;
}

}  // namespace st
