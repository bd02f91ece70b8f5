// Checkpoint dataset paths, format/version checks, tokenizer read (see checkpoint_layout.h).
#include "data/checkpoint_layout.h"

#include "absl/strings/str_cat.h"
#include "model/check.h"

namespace st::ckpt {

std::string ParamPath(absl::string_view hf_name) {
  return absl::StrCat(kParamsGroup, "/", hf_name);
}
std::string ExpAvgPath(absl::string_view hf_name) {
  return absl::StrCat(kExpAvgGroup, "/", hf_name);
}
std::string ExpAvgSqPath(absl::string_view hf_name) {
  return absl::StrCat(kExpAvgSqGroup, "/", hf_name);
}

absl::Status CheckFormat(const H5File& f) {
  absl::StatusOr<std::string> format = f.ReadStringAttr(kRoot, kAttrFormat);
  if (!format.ok() || *format != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), " is not a smallthinker.cpp checkpoint (attribute '", kAttrFormat,
                     "' is missing or not '", kFormat, "')"));
  }
  return absl::OkStatus();
}

absl::Status CheckVersion(const H5File& f) {
  ST_ASSIGN_OR_RETURN(int64_t version, f.ReadIntAttr(kRoot, kAttrVersion));
  if (version != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat(f.path(), ": checkpoint version ", version,
                                                   " is not supported (this build reads ", kVersion,
                                                   ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenizerJson(const H5File& f, absl::string_view tokenizer,
                                              absl::string_view use) {
  std::string json;
  if (!f.Exists(kTokenizerJson)) {
    if (tokenizer == kByteTokenizer) return json;
    return absl::InvalidArgumentError(absl::StrCat(f.path(), ": the checkpoint names the '",
                                                   tokenizer, "' tokenizer but does not store its ",
                                                   kTokenizerJson, "; it cannot be ", use));
  }
  ST_ASSIGN_OR_RETURN(H5DatasetInfo info, f.Info(kTokenizerJson));
  if (info.shape.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": ", kTokenizerJson, " must be a 1-D uint8 dataset"));
  }
  json.resize(static_cast<size_t>(info.num_elements()));
  if (!json.empty()) {
    ST_RETURN_IF_ERROR(f.ReadDataset(kTokenizerJson, kTokenizerJsonType, json.data(), json.size()));
  }
  return json;
}

}  // namespace st::ckpt
