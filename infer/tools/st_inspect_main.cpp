// st-inspect: prints a model file's header, config, metadata and tensor directory, and
// verifies its checksums (torch-free).
#include <gflags/gflags.h>

#include <cstdio>

#include "infer/format/model_file.h"
#include "infer/quant/types.h"
#include "infer/tools/cli.h"
#include "infer/tools/engine_flags.h"

DEFINE_bool(verify, false, "verify the CRC32C of every tensor (reads the whole file)");
DEFINE_bool(tensors, true, "list the tensor directory");
DEFINE_bool(config, true, "print the model config");

int main(int argc, char** argv) {
  st::cli::Spec spec;
  spec.name = "st-inspect";
  spec.usage = "st-inspect model.stmf [--verify] [--notensors] [--noconfig]";
  spec.about =
      "Prints a model file's header, config, metadata, tokenizer policy and tensor directory, "
      "and verifies its checksums.";
  spec.groups = {{"st-inspect flags", "infer/tools/st_inspect_main.cpp", {}}};
  spec.min_args = spec.max_args = 1;
  spec.args_name = "model file";
  const st::cli::Parsed parsed = st::cli::Parse(spec, argc, argv);
  if (parsed.done()) return parsed.exit_code;
  const std::string& path = parsed.args[0];
  st::ModelFile::Options opt;
  opt.verify_checksums = FLAGS_verify;
  auto f = st::ModelFile::Open(path, opt);
  if (!f.ok()) {
    // A GGUF, Hugging Face directory, safetensors or HDF5 file: say what it is and what to run.
    const std::string what = st::ExplainNotAModelFile(path);
    return st::cli::Fail(what.empty() ? std::string(f.status().message()) : what);
  }
  const st::ModelFile& m = **f;
  std::printf("file %s: %llu bytes, format version %u, header checksum %08x\n", path.c_str(),
              (unsigned long long)m.file_size(), m.version(), m.header_checksum());
  std::printf("metadata at %llu (%llu bytes), directory at %llu (%llu bytes), %zu tensors\n",
              (unsigned long long)m.metadata_offset(), (unsigned long long)m.metadata_size(),
              (unsigned long long)m.directory_offset(), (unsigned long long)m.directory_size(),
              m.tensors().size());
  std::printf("metadata:\n");
  for (const auto& [key, v] : m.metadata()) {
    switch (v.type) {
      case st::MetaType::kString:
        if (key == st::kMetaConfig && FLAGS_config) {
          std::printf("  %s =\n%s\n", key.c_str(), v.str.c_str());
        } else {
          std::printf("  %s = \"%s\"\n", key.c_str(),
                      v.str.size() > 120 ? (v.str.substr(0, 117) + "...").c_str() : v.str.c_str());
        }
        break;
      case st::MetaType::kBytes:
        std::printf("  %s = <%zu bytes>\n", key.c_str(), v.str.size());
        break;
      case st::MetaType::kI64:
        std::printf("  %s = %lld\n", key.c_str(), (long long)v.i64);
        break;
      case st::MetaType::kF64:
        std::printf("  %s = %g\n", key.c_str(), v.f64);
        break;
      case st::MetaType::kI64Array: {
        std::printf("  %s = [", key.c_str());
        for (size_t i = 0; i < v.i64s.size(); ++i) {
          std::printf("%s%lld", i ? ", " : "", (long long)v.i64s[i]);
        }
        std::printf("]\n");
        break;
      }
    }
  }
  const st::TokenizerPolicy& p = m.tokenizer_policy();
  auto token = [](const std::string& t) { return t.empty() ? std::string("none") : t; };
  std::printf(
      "tokenizer policy: add_bos_token %s (bos id %lld), add_eos_token %s, bos_token %s, "
      "eos_token %s, pad_token %s; chat template: %s\n",
      p.add_bos_token ? "true" : "false", (long long)m.bos_token_id(),
      p.add_eos_token ? "true" : "false", token(p.bos_token).c_str(), token(p.eos_token).c_str(),
      token(p.pad_token).c_str(),
      m.chat_template().empty() ? "none"
                                : (std::to_string(m.chat_template().size()) + " bytes").c_str());
  std::printf("generation defaults: %s\n", m.generation_defaults().ToString().c_str());
  if (FLAGS_tensors) {
    std::printf("tensors (offset, bytes, type, dims):\n");
    for (const st::TensorInfo& t : m.tensors()) {
      std::string dims;
      for (size_t i = 0; i < t.dims.size(); ++i) dims += (i ? "x" : "") + std::to_string(t.dims[i]);
      std::printf("  %12llu %12llu  %-5s %-14s %s\n", (unsigned long long)t.offset,
                  (unsigned long long)t.size, st::DTypeName(t.dtype), dims.c_str(), t.name.c_str());
    }
  }
  std::printf(FLAGS_verify ? "checksums: all %zu tensors verified\n"
                           : "checksums: header verified (pass --verify for the %zu tensors)\n",
              m.tensors().size());
  return 0;
}
