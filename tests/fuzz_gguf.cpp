// libFuzzer target for the GGUF reader (GgufFile): any byte string must give a checked file or
// an error, never a crash, a hang or an out-of-bounds read. Each input is parsed from memory and
// opened as a file (a memfd, read through pread windows); both must agree, and every tensor of
// an accepted file must read. Seeds: small files the writer makes at start-up. Build:
// scripts/fuzz.sh.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "infer/format/gguf.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

// Writes a small valid file to `path`: every metadata type and tensors of several types.
void WriteSeed(const std::string& path, uint32_t alignment, bool many_types) {
  absl::StatusOr<st::GgufWriter> w = st::GgufWriter::Create(path);
  Check(w.ok());
  using st::GgufValue;
  Check(w->AddMetadata("general.architecture", GgufValue::String("smallthinker")).ok());
  if (alignment != 0) Check(w->AddMetadata(st::kGgufAlignmentKey, GgufValue::U32(alignment)).ok());
  Check(w->AddMetadata("smallthinker.block_count", GgufValue::U32(2)).ok());
  Check(w->AddMetadata("tokenizer.ggml.tokens",
                       GgufValue::Array<std::string>({"a", "b", "\xc4\xa0the"}))
            .ok());
  Check(w->AddMetadata("tokenizer.ggml.token_type", GgufValue::Array<int32_t>({1, 1, 3})).ok());
  if (many_types) {
    Check(w->AddMetadata("u8", GgufValue::U8(1)).ok());
    Check(w->AddMetadata("i8", GgufValue::I8(-1)).ok());
    Check(w->AddMetadata("u16", GgufValue::U16(2)).ok());
    Check(w->AddMetadata("i16", GgufValue::I16(-2)).ok());
    Check(w->AddMetadata("i32", GgufValue::I32(-3)).ok());
    Check(w->AddMetadata("u64", GgufValue::U64(4)).ok());
    Check(w->AddMetadata("i64", GgufValue::I64(-4)).ok());
    Check(w->AddMetadata("f32", GgufValue::F32(1e-6f)).ok());
    Check(w->AddMetadata("f64", GgufValue::F64(0.5)).ok());
    Check(w->AddMetadata("bool", GgufValue::Bool(true)).ok());
    Check(w->AddMetadata("a.bool", GgufValue::Array<bool>({true, false})).ok());
    Check(w->AddMetadata("a.f32", GgufValue::Array<float>({1.f, 2.f})).ok());
  }
  struct T {
    const char* name;
    st::GgmlType type;
    std::vector<int64_t> ne;
  };
  std::vector<T> tensors = {{"token_embd.weight", st::GgmlType::kF16, {8, 4}},
                            {"output_norm.weight", st::GgmlType::kF32, {8}}};
  if (many_types) {
    tensors.push_back({"blk.0.attn_q.weight", st::GgmlType::kQ4_0, {32, 2}});
    tensors.push_back({"blk.0.ffn_up_exps.weight", st::GgmlType::kQ8_0, {32, 1, 2}});
    tensors.push_back({"blk.0.ffn_down_exps.weight", st::GgmlType::kQ6_K, {256, 1}});
  }
  std::vector<uint64_t> sizes;
  for (const T& t : tensors) {
    const st::GgmlTypeInfo l = st::GgmlTypeLayout(static_cast<uint32_t>(t.type));
    uint64_t bytes = static_cast<uint64_t>(t.ne[0] / l.block_elems * l.block_bytes);
    for (size_t i = 1; i < t.ne.size(); ++i) bytes *= static_cast<uint64_t>(t.ne[i]);
    Check(w->AddTensorInfo(t.name, t.type, t.ne, bytes).ok());
    sizes.push_back(bytes);
  }
  const std::string data(4096, '\x11');  // more than any seed tensor
  for (size_t i = 0; i < tensors.size(); ++i) {
    Check(w->WriteTensorData(tensors[i].name, data.data(), sizes[i]).ok());
  }
  Check(w->Finish().ok());
}

// Touches what a caller would: every value's listing and every tensor's bytes.
void Use(const st::GgufFile& f) {
  volatile size_t sink = 0;
  for (const auto& [key, value] : f.metadata().entries()) {
    sink = sink + value.DebugString().size() + value.TypeName().size();
    Check(f.metadata().Find(key) == &value);
  }
  for (const st::GgufTensorInfo& t : f.tensors()) {
    absl::StatusOr<std::string> raw = f.ReadRaw(t);
    Check(raw.ok() && raw->size() == t.nbytes && t.num_elements() > 0);
    Check(f.FindTensor(t.name) == &t);
    sink = sink + static_cast<uint8_t>(raw->back());
  }
}

}  // namespace

// With ST_FUZZ_SEED_DIR set, (re)writes the seed files there before the corpus is read.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("ST_FUZZ_SEED_DIR")) {
    WriteSeed(absl::StrCat(dir, "/seed_small.gguf"), 0, false);
    WriteSeed(absl::StrCat(dir, "/seed_types_align64.gguf"), 64, true);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<st::GgufFile> m = st::GgufFile::Parse(bytes, "in");
  if (m.ok()) Use(*m);

  static const int fd = memfd_create("fuzz_gguf", 0);
  Check(fd >= 0 && ftruncate(fd, 0) == 0);
  for (size_t done = 0; done < size;) {
    const ssize_t put = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    Check(put > 0);
    done += static_cast<size_t>(put);
  }
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  absl::StatusOr<st::GgufFile> f = st::GgufFile::Open(path);
  // The file path and the memory path run the same checks: the same verdict and message.
  Check(f.ok() == m.ok());
  if (!f.ok()) {
    Check(f.status().message().substr(path.size()) == m.status().message().substr(2));
    return 0;
  }
  Use(*f);
  Check(f->tensors().size() == m->tensors().size() && f->data_offset() == m->data_offset());
  return 0;
}
