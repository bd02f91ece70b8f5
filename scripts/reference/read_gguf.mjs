// read_gguf.mjs FILE.gguf [--expect EXPECTED.json]: reads a GGUF file with Hugging Face's
// independent parser (@huggingface/gguf, pinned in package.json) and prints what it sees as one
// JSON document, in the form tests/gguf_dump.cpp prints our reader's view:
//   {"version", "tensor_count", "kv_count", "tensor_data_offset",
//    "metadata": [[key, {"type", ["subType",] "value"}], ...]  (file order),
//    "tensors": [{"name", "n_dims", "shape", "dtype", "offset"}, ...]}
// (BigInts as decimal strings). With --expect, compares instead: exit 0 when the two documents
// are equal, else 1 naming the first differences. Used by tests/gguf_npm_test.sh.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { gguf } from "@huggingface/gguf";

const usage = "usage: node read_gguf.mjs FILE.gguf [--expect EXPECTED.json]";
const args = process.argv.slice(2);
if (args.length !== 1 && !(args.length === 3 && args[1] === "--expect")) {
  console.error(usage);
  process.exit(2);
}

// BigInts (recursively, in arrays too) as decimal strings.
function plain(v) {
  if (typeof v === "bigint") return v.toString();
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

const path = resolve(args[0]);
const parsed = await gguf(path, { allowLocalFile: true, typedMetadata: true });
const { metadata, typedMetadata, tensorInfos, tensorDataOffset } = parsed;
const seen = {
  version: metadata.version,
  tensor_count: plain(metadata.tensor_count),
  kv_count: plain(metadata.kv_count),
  tensor_data_offset: plain(tensorDataOffset),
  metadata: Object.entries(typedMetadata)
    .filter(([key]) => !["version", "tensor_count", "kv_count"].includes(key))
    .map(([key, t]) => {
      const typed = { type: t.type };
      if (t.subType !== undefined) typed.subType = t.subType;
      typed.value = plain(t.value);
      return [key, typed];
    }),
  tensors: tensorInfos.map((t) => ({
    name: t.name,
    n_dims: t.n_dims,
    shape: plain(t.shape),
    dtype: t.dtype,
    offset: plain(t.offset),
  })),
};

if (args.length === 1) {
  console.log(JSON.stringify(seen));
  process.exit(0);
}

// Differences between `a` (ours) and `b` (theirs) under `where`, at most `limit` of them.
function diff(a, b, where, out, limit = 10) {
  if (out.length >= limit) return;
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) out.push(`${where}: length ${a.length} (ours) vs ${b.length} (@huggingface/gguf)`);
    for (let i = 0; i < Math.min(a.length, b.length); i++) diff(a[i], b[i], `${where}[${i}]`, out, limit);
    return;
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) diff(a[k], b[k], `${where}.${k}`, out, limit);
    return;
  }
  if (!Object.is(a, b)) out.push(`${where}: ${JSON.stringify(a)} (ours) vs ${JSON.stringify(b)} (@huggingface/gguf)`);
}

const expected = JSON.parse(readFileSync(args[2], "utf8"));
const differences = [];
diff(expected, seen, "$", differences);
if (differences.length > 0) {
  console.error(`read_gguf: ${args[0]}: our reader and @huggingface/gguf disagree:`);
  for (const d of differences) console.error(`  ${d}`);
  process.exit(1);
}
console.log(
  `read_gguf: ${args[0]}: @huggingface/gguf reads the same ${seen.metadata.length} keys and ` +
    `${seen.tensors.length} tensors (data at ${seen.tensor_data_offset})`,
);
