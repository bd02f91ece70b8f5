// encode.mjs: Hugging Face's reference tokenization of a file, to compare with ours.
//
//   node scripts/reference/encode.mjs TOKENIZER_JSON TEXT_FILE           # prints the ids
//   node scripts/reference/encode.mjs TOKENIZER_JSON TEXT_FILE --bench   # prints MB/s
//
// The reference is Hugging Face's Rust `tokenizers` crate through the native Node bindings
// @anush008/tokenizers (see README.md). Ids: one JSON array on one line, as HF's encode gives
// them (add_special_tokens as HF does by default; special tokens in the text are matched).
// The file's bytes are decoded as UTF-8 with each maximal invalid subsequence replaced by
// U+FFFD (the reference takes strings), as our tokenizer does.
//
// --bench: times only the encoding (not reading, decoding or loading), best of 3 runs, and
// prints one line "reference: X.XX MB/s ..." (MB = 10^6 bytes of the file). The text is
// encoded one call per ~64 KB piece cut at line ends, sequentially on one thread: HF's encode
// of a single input is single-threaded, and one 40 MB string would make the reference build
// a huge Encoding (tokens, offsets) for nothing. (The piece size barely changes the speed.)

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function die(msg) {
  process.stderr.write(`encode.mjs: ${msg}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
const bench = args.includes('--bench');
const pos = args.filter((a) => a !== '--bench');
if (pos.length !== 2 || pos.some((a) => a.startsWith('--'))) {
  die('usage: node scripts/reference/encode.mjs TOKENIZER_JSON TEXT_FILE [--bench]');
}
const [tokPath, textPath] = pos;

let hf;
try {
  hf = require('@anush008/tokenizers');
} catch (e) {
  die(`cannot load @anush008/tokenizers (${e.message.split('\n')[0]});` +
      ` run scripts/fetch_tokenizers.sh BUILD/tokenizers first (installs ${here}/node_modules)`);
}
let tokText;
try {
  tokText = readFileSync(tokPath, 'utf8');
} catch (e) {
  die(`cannot read tokenizer ${tokPath}: ${e.message}`);
}
let tok;
try {
  tok = hf.Tokenizer.fromString(tokText);
} catch (e) {
  die(`Hugging Face tokenizers rejects ${tokPath}: ${e.message}`);
}
let bytes;
try {
  bytes = readFileSync(textPath);
} catch (e) {
  die(`cannot read text ${textPath}: ${e.message}`);
}
const text = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(bytes);

if (!bench) {
  let ids;
  try {
    ids = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
  } catch (e) {
    die(`encoding failed: ${e.message}`);
  }
  // No process.exit() here: it would cut a long write to a pipe short.
  process.stdout.write('[' + Array.from(ids).join(',') + ']\n');
} else {
  const pieces = [];
  const target = 1 << 16;
  for (let start = 0; start < text.length;) {
    let end = Math.min(text.length, start + target);
    if (end < text.length) {
      const nl = text.indexOf('\n', end);
      end = nl < 0 ? text.length : nl + 1;
    }
    pieces.push(text.slice(start, end));
    start = end;
  }
  let best = Infinity;
  let nids = 0;
  for (let run = 0; run < 3; run++) {
    let count = 0;
    const t0 = process.hrtime.bigint();
    for (const p of pieces) {
      count += (await tok.encode(p, null, { addSpecialTokens: true })).getIds().length;
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.min(best, s);
    nids = count;
  }
  const mbs = bytes.length / 1e6 / best;
  console.log(`reference: ${mbs.toFixed(2)} MB/s (Hugging Face tokenizers via @anush008/tokenizers,` +
    ` best of 3, ${bytes.length} bytes, ${nids} ids, ${pieces.length} pieces, ${best.toFixed(3)} s)`);
}
