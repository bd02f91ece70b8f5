#!/usr/bin/env node
// Bounded load test of st-server through OpenAI's official Node client (npm `openai`): a fixed
// number of streaming chat requests from concurrent clients on loopback, about one in four
// cancelled mid-stream (AbortController) after a few chunks. Stops by itself.
//
//   node scripts/reference/server_load_test.mjs --base http://127.0.0.1:PORT --model tiny.stmf \
//     --api_key KEY --pid SERVER_PID [--parallel 4] [--requests 64] [--concurrency 16] \
//     [--max_tokens 20] [--rounds 2] [--time_limit 300]
//
// Before the load, the greedy reply of each of 8 prompts is computed one request at a time (the
// reference); under load every request that is not cancelled must stream exactly that reply,
// finish_reason and usage. After each round /health must show no busy slot and nothing queued
// within 5 s (with --parallel: every slot idle). The server's VmRSS (/proc/PID/status) after the
// last round must be at most 10% + 8 MB above the one after the first round. Prints p50/p99
// latency (whole request) and time to first token, and the counts; exit status 1 on any failure.
import fs from 'node:fs';
import OpenAI from 'openai';
import { parseArgs } from './cli_args.mjs';

let args;
try {
  args = parseArgs(process.argv.slice(2), ['base', 'model', 'pid']);
} catch (e) {
  console.error(`server_load_test: ${e.message}`);
  console.error('usage: node server_load_test.mjs --base URL --model ID --pid PID [--api_key KEY] [--parallel N]' +
    ' [--requests 64] [--concurrency 16] [--max_tokens 20] [--rounds 2] [--time_limit S]');
  process.exit(2);
}
const base = args.base.replace(/\/+$/, '');
const modelId = args.model;
const apiKey = args.api_key ?? '';
const pid = Number(args.pid);
const parallel = args.parallel !== undefined ? Number(args.parallel) : undefined;
const nRequests = Number(args.requests ?? 64);
const concurrency = Number(args.concurrency ?? 16);
const maxTokens = Number(args.max_tokens ?? 20);
const rounds = Math.max(2, Number(args.rounds ?? 2));
const cancelAfterChunks = 3; // content chunks received before a cancelled request aborts
const cancelMaxTokens = 128; // cancelled requests ask for more, so that the cancel cuts real work

const timeLimitS = Number(args.time_limit ?? 300);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: apiKey || 'none', maxRetries: 0, timeout: 30_000 });
let timedOut = false; // a request timed out: the rest of the round is not sent
let phase = 'start';
// A server that stops answering (a leaked slot blocks the queue) must not hang the test.
setTimeout(() => {
  console.log(`FAIL - load: not done after ${timeLimitS} s (--time_limit), during ${phase}`);
  process.exit(1);
}, timeLimitS * 1000).unref();

const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.log(`FAIL - ${msg}`);
};
const show = (v) => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 300 ? s.slice(0, 300) + '...' : s;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssKb() {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = status.match(/^VmRSS:\s+(\d+)\s+kB/m);
  if (!m) throw new Error(`no VmRSS line in /proc/${pid}/status`);
  return Number(m[1]);
}

async function health() {
  const res = await fetch(`${base}/health`);
  const text = await res.text();
  try {
    return { status: res.status, json: JSON.parse(text), text };
  } catch {
    return { status: res.status, json: undefined, text };
  }
}

// Polls /health until no slot is busy and nothing is queued (up to 5 s); returns the wait in ms.
async function waitIdle(what) {
  const t0 = performance.now();
  let h;
  while (performance.now() - t0 < 5000) {
    h = await health();
    const j = h.json;
    if (h.status === 200 && j?.slots_processing === 0 && j?.queued === 0 &&
        (parallel === undefined || j?.slots_idle === parallel)) {
      return performance.now() - t0;
    }
    await sleep(50);
  }
  fail(`${what}: /health still shows work 5 s after the last request: HTTP ${h?.status} ${h?.text}`);
  return undefined;
}

const prompts = [
  'Tell me about the sea.',
  'What is the capital of France?',
  'Write a haiku about rain.',
  'Count from one to five.',
  'Why is the sky blue?',
  'Name three colours.',
  'Say hello in Spanish.',
  'Describe a cat in one line.',
];
const request = (p, n) => ({
  model: modelId, messages: [{ role: 'user', content: prompts[p] }], temperature: 0, max_tokens: n,
});

phase = 'the reference replies';
// The reference: each prompt's greedy reply, one request at a time (nothing else running).
const reference = [];
for (let p = 0; p < prompts.length; p++) {
  const r = await client.chat.completions.create(request(p, maxTokens));
  reference.push({ text: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage });
}
// The same again: without load the reference repeats (otherwise nothing below can hold).
for (let p = 0; p < prompts.length; p++) {
  const r = await client.chat.completions.create(request(p, maxTokens));
  if (r.choices[0].message.content !== reference[p].text) {
    fail(`reference: prompt ${p} gave ${show(r.choices[0].message.content)}, then ${show(reference[p].text)} with no load`);
  }
}
const distinct = new Set(reference.map((r) => r.text)).size;
console.log(`# reference: ${prompts.length} prompts, ${distinct} distinct greedy replies of up to ${maxTokens} tokens`);
if (distinct < 2) fail(`reference: all ${prompts.length} prompts gave the same reply ${show(reference[0].text)}; the check would be blind`);

// Request i: prompt (i + floor(i / 8)) % 8, so that each prompt is both completed and cancelled;
// every fourth request (i % 4 == 3) is cancelled.
async function one(i, stats) {
  const p = (i + Math.floor(i / prompts.length)) % prompts.length;
  const cancel = i % 4 === 3;
  const ac = new AbortController();
  const t0 = performance.now();
  let ttft;
  let text = '';
  let finish;
  let usage;
  let contentChunks = 0;
  try {
    const stream = await client.chat.completions.create(
      { ...request(p, cancel ? cancelMaxTokens : maxTokens), stream: true, stream_options: { include_usage: true } },
      { signal: ac.signal });
    for await (const c of stream) {
      if (c.usage) usage = c.usage;
      const ch = c.choices?.[0];
      if (!ch) continue;
      const piece = ch.delta?.content;
      if (typeof piece === 'string' && piece.length > 0) {
        if (ttft === undefined) ttft = performance.now() - t0;
        text += piece;
        contentChunks++;
      }
      if (ch.finish_reason) finish = ch.finish_reason;
      if (cancel && contentChunks >= cancelAfterChunks) {
        ac.abort();
        break;
      }
    }
  } catch (e) {
    if (!(cancel && (e instanceof OpenAI.APIUserAbortError || ac.signal.aborted))) {
      if (e instanceof OpenAI.APIConnectionTimeoutError) timedOut = true;
      stats.errors++;
      fail(`request ${i} (prompt ${p}${cancel ? ', to be cancelled' : ''}): ${e?.constructor?.name}: ${e?.message}`);
      return;
    }
  }
  const ms = performance.now() - t0;
  if (ttft !== undefined) stats.ttft.push(ttft);
  if (cancel && ac.signal.aborted) {
    stats.cancelled++;
    return;
  }
  if (finish === undefined) {
    stats.errors++;
    fail(`request ${i} (prompt ${p}): the stream ended without a finish_reason after ${show(text)}`);
    return;
  }
  stats.completed++;
  stats.latency.push(ms);
  if (cancel) return; // it ended before the cancel point; asked for more tokens: no reference
  const ref = reference[p];
  const counts = (u) => show([u?.prompt_tokens, u?.completion_tokens, u?.total_tokens]);
  if (text !== ref.text || finish !== ref.finish || counts(usage) !== counts(ref.usage)) {
    stats.mismatches++;
    fail(`request ${i} (prompt ${p}) under load: ${show({ text, finish, usage })}, reference ${show(ref)}`);
  }
}

function pct(xs, q) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
const fmt = (ms) => (Number.isFinite(ms) ? `${ms.toFixed(1)} ms` : 'n/a');

async function round(r) {
  const stats = { completed: 0, cancelled: 0, errors: 0, mismatches: 0, latency: [], ttft: [] };
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < nRequests && !timedOut) await one(next++, stats);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wall = performance.now() - t0;
  const idleMs = await waitIdle(`round ${r}`);
  console.log(`# round ${r}: ${nRequests} requests from ${concurrency} clients in ${(wall / 1000).toFixed(2)} s:` +
    ` ${stats.completed} completed, ${stats.cancelled} cancelled, ${stats.errors} errors, ${stats.mismatches} differ from the reference`);
  console.log(`#   latency p50 ${fmt(pct(stats.latency, 0.5))} p99 ${fmt(pct(stats.latency, 0.99))} |` +
    ` time to first token p50 ${fmt(pct(stats.ttft, 0.5))} p99 ${fmt(pct(stats.ttft, 0.99))}` +
    ` | idle ${idleMs === undefined ? 'not within 5 s' : `${idleMs.toFixed(0)} ms`} after the last request`);
  const expectCancelled = Math.floor(nRequests / 4);
  if (stats.cancelled + stats.errors === 0 && expectCancelled > 0) fail(`round ${r}: no request was cancelled`);
  if (timedOut) {
    console.log(`FAIL - load: a request of round ${r} timed out after 30 s; ${nRequests - next} requests not sent`);
    process.exit(1);
  }
  if (stats.completed + stats.cancelled + stats.errors !== nRequests) {
    fail(`round ${r}: ${stats.completed} + ${stats.cancelled} + ${stats.errors} != ${nRequests} requests`);
  }
  return stats;
}

const rssStart = rssKb();
const rss = [];
for (let r = 1; r <= rounds; r++) {
  phase = `round ${r}`;
  const before = failures.length;
  await round(r);
  rss.push(rssKb());
  if (failures.some((f, i) => i >= before && f.includes('/health still shows work'))) {
    console.log(`FAIL - load: stopped after round ${r}; the server did not go idle`);
    process.exit(1);
  }
}
phase = 'the check after the load';
console.log(`# VmRSS: ${rssStart} kB before the load, ${rss.map((k, i) => `${k} kB after round ${i + 1}`).join(', ')}`);
const limit = rss[0] * 1.10 + 8 * 1024;
if (rss[rss.length - 1] > limit) {
  fail(`memory grew: VmRSS ${rss[rss.length - 1]} kB after round ${rss.length} > ${Math.round(limit)} kB` +
    ` (10% + 8 MB over ${rss[0]} kB after round 1)`);
}

// After the load (and its cancellations) the server answers as before.
for (let p = 0; p < prompts.length; p++) {
  const r = await client.chat.completions.create(request(p, maxTokens));
  if (r.choices[0].message.content !== reference[p].text) {
    fail(`after the load: prompt ${p} gave ${show(r.choices[0].message.content)}, reference ${show(reference[p].text)}`);
  }
}

if (failures.length === 0) console.log(`ok - load: ${rounds} rounds of ${nRequests} requests`);
process.exit(failures.length ? 1 : 0);
