// Load client for scripts/bench_server.sh: for each concurrency C, C streamed chat completions
// sent to st-server at once (greedy, max_tokens each, usage counts the tokens), and what they
// give together: aggregate decode tokens/s, end-to-end tokens/s, time to first token.
//   node scripts/reference/bench_server.mjs URL [--concurrency 1,2,4,8] [--max_tokens 64]
//        [--prompt_chars 96] [--reps 3] [--json OUT.jsonl] [--label TEXT] [--meta JSON_OBJECT]
// URL is the server's root (http://127.0.0.1:PORT). Node >= 18 (built-in fetch). Every request
// has a prompt of its own (a different first line), so no request reuses another's cached
// prompt. Definitions, per concurrency, in the rep whose decode rate is the median of --reps:
//   decode tok/s     the aggregate while all C streams decode: content chunks (one per token)
//                    that arrive between the last stream's first token and the first stream's
//                    end, over that time; the ratio of 4 streams to 1 is taken of this
//   all tok/s        sum over streams of (generated - 1) / (last stream's end - first stream's
//                    first token): the whole decode phase, ramps (prefills of others) included
//   e2e tok/s        all generated tokens / (last end - the moment the requests were sent)
//   TTFT p50 / max   time from sending to the stream's first content token
//   stream tok/s     median over streams of one stream's (generated - 1) / (end - first token)
// Prints a table; --json appends one JSON line per concurrency, with the fields of --meta (e.g.
// the CPU and the model) first. Exit 1 when a request fails.
import { appendFileSync } from "node:fs";

const args = process.argv.slice(2);
const opts = { concurrency: "1,2,4,8", max_tokens: "64", prompt_chars: "96", reps: "3", json: "", label: "", meta: "{}" };
const pos = [];
for (let i = 0; i < args.length; i++) {
  const m = /^--(concurrency|max_tokens|prompt_chars|reps|json|label|meta)(?:=(.*))?$/.exec(args[i]);
  if (m) opts[m[1]] = m[2] !== undefined ? m[2] : args[++i];
  else pos.push(args[i]);
}
if (pos.length !== 1) {
  console.error("usage: node bench_server.mjs URL [--concurrency 1,2,4,8] [--max_tokens 64] " +
    "[--prompt_chars 96] [--reps 3] [--json OUT.jsonl] [--label TEXT] [--meta JSON_OBJECT]");
  process.exit(2);
}
let meta;
try { meta = JSON.parse(opts.meta); } catch (e) { meta = null; }
if (!meta || typeof meta !== "object" || Array.isArray(meta)) {
  console.error("bench_server: --meta takes a JSON object");
  process.exit(2);
}
const base = pos[0].replace(/\/+$/, "");
const levels = opts.concurrency.split(",").map(Number);
const maxTokens = Number(opts.max_tokens), reps = Number(opts.reps), promptChars = Number(opts.prompt_chars);
if (levels.some((c) => !(c >= 1)) || !(maxTokens >= 2) || !(reps >= 1) || !(promptChars >= 1)) {
  console.error("bench_server: --concurrency takes counts >= 1, --max_tokens >= 2, --reps >= 1");
  process.exit(2);
}

const text = "In the beginning God created the heaven and the earth. And the earth was without form, " +
  "and void; and darkness was upon the face of the deep. ";
// Request n's prompt: the same length for every request, its own first words (no cached prefix).
let requests = 0;
const prompt = () => (`Request ${++requests} of ${process.pid}. ` +
  text.repeat(Math.ceil(promptChars / text.length) + 1)).slice(0, promptChars);
const now = () => performance.now() / 1000;
const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};

// One streamed completion: when it was sent, its first content token, its end, the tokens.
async function stream(nTokens) {
  const r = { sent: now(), first: 0, end: 0, tokens: 0, chunks: 0, times: [], finish: null, error: null };
  try {
    const res = await fetch(base + "/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: prompt() }], stream: true,
        temperature: 0, max_tokens: nTokens }),
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
    const decoder = new TextDecoder();
    let buf = "", usage = null;
    for await (const part of res.body) {
      buf += decoder.decode(part, { stream: true });
      let k;
      while ((k = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, k).replace(/\r$/, "");
        buf = buf.slice(k + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error("error in the stream: " + JSON.stringify(j.error));
        if (j.usage) usage = j.usage;
        const c = j.choices && j.choices[0];
        if (c && c.delta && c.delta.content) {
          const t = now();
          r.chunks++;
          r.times.push(t);
          if (!r.first) r.first = t;
        }
        if (c && c.finish_reason) r.finish = c.finish_reason;
      }
    }
    r.end = now();
    r.tokens = usage && Number.isFinite(usage.completion_tokens) ? usage.completion_tokens : r.chunks;
    if (!usage) r.error = "no usage in the stream (counted content chunks)";
    if (!r.first) r.first = r.end;
  } catch (e) {
    r.end = now();
    r.error = String(e.message || e);
  }
  return r;
}

async function level(c) {
  const t0 = now();
  const rs = await Promise.all(Array.from({ length: c }, () => stream(maxTokens)));
  const failed = rs.filter((r) => r.error && !r.error.startsWith("no usage"));
  const firstTok = Math.min(...rs.map((r) => r.first)), lastEnd = Math.max(...rs.map((r) => r.end));
  const gen = rs.reduce((s, r) => s + r.tokens, 0);
  const ttft = rs.map((r) => r.first - r.sent);
  // The window in which every stream decodes; with one stream, from its first token to its end.
  const from = Math.max(...rs.map((r) => r.first)), to = Math.min(...rs.map((r) => r.end));
  const inWindow = rs.reduce((s, r) => s + r.times.filter((t) => t > from && t <= to).length, 0);
  const perStream = rs.filter((r) => r.tokens > 1 && r.end > r.first).map((r) => (r.tokens - 1) / (r.end - r.first));
  return { concurrency: c, tokens: gen, failed: failed.map((r) => r.error),
    notes: [...new Set(rs.filter((r) => r.error && !failed.includes(r)).map((r) => r.error))],
    finish: [...new Set(rs.map((r) => r.finish))],
    decode_tok_s: to > from && inWindow >= 2 ? inWindow / (to - from) : NaN, window_s: Math.max(to - from, 0),
    all_tok_s: rs.reduce((s, r) => s + Math.max(r.tokens - 1, 0), 0) / (lastEnd - firstTok),
    e2e_tok_s: gen / (lastEnd - t0), wall_s: lastEnd - t0,
    ttft_p50_s: median(ttft), ttft_max_s: Math.max(...ttft), stream_tok_s_median: median(perStream) };
}

let health = null;
try { health = await (await fetch(base + "/health")).json(); } catch (e) { /* reported below */ }
if (!health || health.status !== "ok") {
  console.error(`bench_server: GET ${base}/health did not answer {"status":"ok",...}: ${JSON.stringify(health)}`);
  process.exit(1);
}
// Warm-up: the first request maps the weights in.
const w = await stream(8);
if (w.error && !w.error.startsWith("no usage")) {
  console.error(`bench_server: warm-up request failed: ${w.error}`);
  process.exit(1);
}

console.log(`${opts.label ? opts.label + ": " : ""}${maxTokens} tokens per stream, prompt ${promptChars} chars, ` +
  `median of ${reps} rep(s) by decode tok/s; server slots ${health.slots_idle + health.slots_processing}`);
console.log("streams  decode tok/s  all tok/s  e2e tok/s  stream tok/s  TTFT p50 s  TTFT max s  tokens  wall s  window s");
let bad = false;
const results = [];
for (const c of levels) {
  const runs = [];
  for (let k = 0; k < reps; k++) runs.push(await level(c));
  const key = (x) => (Number.isFinite(x.decode_tok_s) ? x.decode_tok_s : -1);
  const sorted = [...runs].sort((a, b) => key(a) - key(b));
  const m = sorted[(sorted.length - 1) >> 1];
  m.reps = runs.map((x) => (Number.isFinite(x.decode_tok_s) ? +x.decode_tok_s.toFixed(2) : null));
  results.push(m);
  console.log(`${String(c).padStart(7)}  ${m.decode_tok_s.toFixed(1).padStart(12)}  ${m.all_tok_s.toFixed(1).padStart(9)}  ` +
    `${m.e2e_tok_s.toFixed(1).padStart(9)}  ${m.stream_tok_s_median.toFixed(1).padStart(12)}  ` +
    `${m.ttft_p50_s.toFixed(3).padStart(10)}  ${m.ttft_max_s.toFixed(3).padStart(10)}  ${String(m.tokens).padStart(6)}  ` +
    `${m.wall_s.toFixed(2).padStart(6)}  ${m.window_s.toFixed(2).padStart(8)}`);
  if (!Number.isFinite(m.decode_tok_s)) console.log("  note: the streams never all decoded at once (one finished before another's first token)");
  for (const r of runs) {
    if (r.failed.length) { bad = true; console.log(`  FAIL: ${r.failed.length} of ${c} requests: ${r.failed[0]}`); }
    if (r.tokens !== c * maxTokens) console.log(`  note: ${r.tokens} tokens, not ${c} x ${maxTokens} (finish: ${r.finish.join(", ")})`);
    for (const n of r.notes) console.log(`  note: ${n}`);
  }
  if (opts.json) {
    appendFileSync(opts.json, JSON.stringify({ ...meta, concurrency: c, max_tokens: maxTokens,
      prompt_chars: promptChars, tokens: m.tokens,
      decode_tok_s: Number.isFinite(m.decode_tok_s) ? +m.decode_tok_s.toFixed(3) : null, window_s: +m.window_s.toFixed(3),
      all_tok_s: +m.all_tok_s.toFixed(3),
      e2e_tok_s: +m.e2e_tok_s.toFixed(3), stream_tok_s_median: +m.stream_tok_s_median.toFixed(3),
      ttft_p50_s: +m.ttft_p50_s.toFixed(4), ttft_max_s: +m.ttft_max_s.toFixed(4), wall_s: +m.wall_s.toFixed(3),
      decode_tok_s_reps: m.reps, failed: m.failed.length }) + "\n");
  }
}
const one = results.find((r) => r.concurrency === 1), four = results.find((r) => r.concurrency === 4);
if (one && four) {
  const ratio = four.decode_tok_s / one.decode_tok_s;
  console.log(Number.isFinite(ratio)
    ? `4 streams / 1 stream, aggregate decode: ${ratio.toFixed(2)}x (target >= 2.5x: ${ratio >= 2.5 ? "met" : "BELOW"})`
    : "4 streams / 1 stream: no ratio (the 4 streams never all decoded at once)");
  if (opts.json) appendFileSync(opts.json, JSON.stringify({ ...meta, ratio_4_to_1: Number.isFinite(ratio) ? +ratio.toFixed(3) : null,
    target: 2.5, met: ratio >= 2.5 }) + "\n");
}
process.exit(bad ? 1 : 0);
