#!/usr/bin/env python3
# An independent reader (Python standard library only: json + struct) of a Hugging Face
# SmallThinker directory written by `st-export --format hf`: config.json keys, every safetensors
# header (length, 8-byte padding, offsets contiguous and covering the file), the shard index,
# the tensor names the config implies, and optionally the bf16 rounding against an f32 export.
#   check_hf_dir.py DIR --dtype BF16|F32 [--min_shards N] [--f32_reference DIR]
import argparse
import json
import math
import os
import struct
import sys

ELEM = {"F32": 4, "BF16": 2, "F16": 2}


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def expected_names(cfg):
    names = ["model.embed_tokens.weight"]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        names += [p + "input_layernorm.weight", p + "self_attn.q_proj.weight",
                  p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
                  p + "self_attn.o_proj.weight", p + "post_attention_layernorm.weight",
                  p + "block_sparse_moe.primary_router.weight"]
        for x in range(cfg["moe_num_primary_experts"]):
            e = p + "block_sparse_moe.experts.%d." % x
            names += [e + "gate.weight", e + "up.weight", e + "down.weight"]
    names.append("model.norm.weight")
    if not cfg["tie_word_embeddings"]:
        names.append("lm_head.weight")
    return names


def read_header(path):
    """(entries in header order, data start, file size); checks the layout rules."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            fail("%s: shorter than 8 bytes" % path)
        (n,) = struct.unpack("<Q", raw)
        if n % 8 != 0:
            fail("%s: header length %d is not a multiple of 8" % (path, n))
        text = f.read(n).decode("utf-8")
    stripped = text.rstrip(" ")
    if len(text) - len(stripped) >= 8 or not stripped.endswith("}"):
        fail("%s: header padding is not 0-7 spaces after the JSON" % path)
    header = json.loads(text)  # dicts keep the file's key order
    if header.get("__metadata__") != {"format": "pt"}:
        fail("%s: __metadata__ is %r" % (path, header.get("__metadata__")))
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    offset = 0
    for name, e in entries:
        if set(e) != {"dtype", "shape", "data_offsets"}:
            fail("%s: %s has keys %s" % (path, name, sorted(e)))
        begin, end = e["data_offsets"]
        if begin != offset:
            fail("%s: %s begins at %d, expected %d (not contiguous)" % (path, name, begin, offset))
        if end - begin != math.prod(e["shape"]) * ELEM[e["dtype"]]:
            fail("%s: %s spans %d bytes for shape %s" % (path, name, end - begin, e["shape"]))
        offset = end
    if 8 + n + offset != size:
        fail("%s: data ends at %d but the file has %d bytes" % (path, 8 + n + offset, size))
    return entries, 8 + n, size


def bf16_of(u):
    """Round-to-nearest-even of float32 bits to bfloat16 bits; NaN stays a quiet NaN."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 0x40
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def tensors_of(d):
    """name -> (file path, entry, data start)."""
    out = {}
    index_path = os.path.join(d, "model.safetensors.index.json")
    single = os.path.join(d, "model.safetensors")
    files = [single] if os.path.exists(single) else None
    if files is None:
        index = json.load(open(index_path))
        files = sorted({os.path.join(d, f) for f in index["weight_map"].values()})
    for path in files:
        entries, start, _ = read_header(path)
        for name, e in entries:
            if name in out:
                fail("%s in two files" % name)
            out[name] = (path, e, start)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--dtype", required=True)
    ap.add_argument("--min_shards", type=int, default=1)
    ap.add_argument("--f32_reference", default="")
    a = ap.parse_args()
    d = a.dir
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        if not os.path.exists(os.path.join(d, f)):
            fail("missing " + f)
    leftovers = [f for f in os.listdir(d) if f.endswith(".tmp")]
    if leftovers:
        fail("temp files left: %s" % leftovers)
    cfg = json.load(open(os.path.join(d, "config.json")))
    for key in ["architectures", "model_type", "hidden_size", "num_hidden_layers", "head_dim",
                "num_attention_heads", "num_key_value_heads", "vocab_size", "rms_norm_eps",
                "rope_theta", "rope_layout", "sliding_window_layout", "moe_ffn_hidden_size",
                "moe_num_primary_experts", "moe_num_active_primary_experts",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "torch_dtype",
                "transformers_version", "rope_scaling", "norm_topk_prob"]:
        if key not in cfg:
            fail("config.json has no " + key)
    if cfg["architectures"] != ["SmallThinkerForCausalLM"] or cfg["model_type"] != "smallthinker":
        fail("config.json architectures/model_type: %r %r" % (cfg["architectures"],
                                                              cfg["model_type"]))
    if "auto_map" in cfg:
        fail("config.json has auto_map (remote code we do not ship)")
    want_torch = {"BF16": "bfloat16", "F32": "float32"}[a.dtype]
    if cfg["torch_dtype"] != want_torch:
        fail("torch_dtype %r, expected %r" % (cfg["torch_dtype"], want_torch))

    tensors = tensors_of(d)
    names = expected_names(cfg)
    if sorted(tensors) != sorted(names):
        fail("tensor names differ from what config.json implies: extra %s missing %s" % (
            sorted(set(tensors) - set(names))[:3], sorted(set(names) - set(tensors))[:3]))
    for name, (_, e, _) in tensors.items():
        if e["dtype"] != a.dtype:
            fail("%s has dtype %s" % (name, e["dtype"]))
    shard_files = {p for p, _, _ in tensors.values()}
    if len(shard_files) < a.min_shards:
        fail("%d safetensors files, expected at least %d" % (len(shard_files), a.min_shards))
    if len(shard_files) > 1:
        index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
        total = sum(e["data_offsets"][1] - e["data_offsets"][0] for _, e, _ in tensors.values())
        if index["metadata"]["total_size"] != total:
            fail("index total_size %d != %d" % (index["metadata"]["total_size"], total))
        for name, (path, _, _) in tensors.items():
            if index["weight_map"].get(name) != os.path.basename(path):
                fail("index maps %s to %r, it is in %s" % (name, index["weight_map"].get(name),
                                                           path))
        if len(index["weight_map"]) != len(tensors):
            fail("index lists %d tensors, the shards hold %d" % (len(index["weight_map"]),
                                                                 len(tensors)))

    checked = 0
    if a.f32_reference:
        ref = tensors_of(a.f32_reference)
        for name, (path, e, start) in tensors.items():
            rpath, re_, rstart = ref[name]
            count = min(4096, math.prod(e["shape"]))
            with open(rpath, "rb") as f:
                f.seek(rstart + re_["data_offsets"][0])
                want = [bf16_of(u) for u in struct.unpack("<%dI" % count, f.read(4 * count))]
            with open(path, "rb") as f:
                f.seek(start + e["data_offsets"][0])
                got = list(struct.unpack("<%dH" % count, f.read(2 * count)))
            if got != want:
                i = next(k for k in range(count) if got[k] != want[k])
                fail("%s[%d] is %#06x, bf16 rounding of the f32 reference is %#06x" % (
                    name, i, got[i], want[i]))
            checked += count
    tok = json.load(open(os.path.join(d, "tokenizer.json")))
    if tok.get("model", {}).get("type") != "BPE":
        fail("tokenizer.json is not a BPE tokenizer")
    print("ok: %s: %d tensors in %d file(s), %s%s" % (
        d, len(tensors), len(shard_files), a.dtype,
        ", %d values checked against bf16 rounding" % checked if checked else ""))


if __name__ == "__main__":
    main()
