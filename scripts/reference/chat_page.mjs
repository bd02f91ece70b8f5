// Drives st-server's chat page (infer/server/chat.html) in headless Chromium through
// puppeteer-core: types a message, clicks Send, waits for the streamed reply to finish, checks
// that it is not empty and grew over several network reads, and saves a screenshot. Then, with
// the page's requests answered by the test itself, that a server error object is shown readably
// and that model text with markup is shown as text.
//   node scripts/reference/chat_page.mjs URL OUT.png [--message TEXT] [--max_tokens N] [--timeout_s S]
// URL is the server's root (http://127.0.0.1:PORT/). Chromium: $CHROMIUM or /usr/bin/chromium
// (Debian `chromium`); puppeteer-core never downloads a browser. Prints one line per check,
// exit status 1 when one fails, 2 on a usage error.
import { existsSync } from "node:fs";
import puppeteer from "puppeteer-core";

const args = process.argv.slice(2);
const opts = { message: "Write a short story about a lighthouse.", max_tokens: 100, timeout_s: 60 };
const pos = [];
for (let i = 0; i < args.length; i++) {
  const m = /^--(message|max_tokens|timeout_s)(?:=(.*))?$/.exec(args[i]);
  if (m) opts[m[1]] = m[2] !== undefined ? m[2] : args[++i];
  else pos.push(args[i]);
}
if (pos.length !== 2) {
  console.error("usage: node chat_page.mjs URL OUT.png [--message TEXT] [--max_tokens N] [--timeout_s S]");
  process.exit(2);
}
const [url, png] = pos;
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
if (!existsSync(chromium)) {
  console.error(`chat_page: ${chromium} is missing; install it: sudo apt-get install chromium`);
  process.exit(1);
}

let failed = false;
function check(what, ok, detail) {
  console.log(`${ok ? "ok" : "FAIL"}: ${what}${detail !== undefined ? ` (${detail})` : ""}`);
  if (!ok) failed = true;
}

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,  // puppeteer passes --headless=new
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--no-default-browser-check"],
  defaultViewport: { width: 1000, height: 760 },
});
try {
  const page = await browser.newPage();
  const jsErrors = [];
  page.on("pageerror", (e) => jsErrors.push(String(e.message || e)));
  page.on("console", (m) => {
    // The page logs nothing itself; a failed resource load (e.g. a favicon) is not a script error.
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) jsErrors.push(m.text());
  });
  page.setDefaultTimeout(opts.timeout_s * 1000);

  // ---- 1. the real server
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("#input");
  await page.$eval("#temperature", (el) => { el.value = "0"; });  // greedy: the same reply each run
  await page.$eval("#max_tokens", (el, n) => { el.value = String(n); }, opts.max_tokens);
  // Record the reply's length at each DOM change (callbacks run after each network read the page
  // renders), so a reply that arrives in one piece shows up as one length.
  await page.evaluate(() => {
    window.__lens = [];
    new MutationObserver(() => {
      const c = document.querySelector("#messages .msg.assistant .content");
      if (c) window.__lens.push(c.textContent.length);
    }).observe(document.getElementById("messages"), { childList: true, characterData: true, subtree: true });
  });
  await page.type("#input", opts.message);
  const t0 = Date.now();
  await page.click("#send");
  await page.waitForSelector('#messages .msg.assistant[data-done="1"]');
  const ms = Date.now() - t0;
  const r = await page.evaluate(() => {
    const el = document.querySelector("#messages .msg.assistant");
    return { text: el.querySelector(".content").textContent, note: el.querySelector(".note").textContent,
      error: el.classList.contains("error"), chunks: Number(el.dataset.chunks || 0),
      status: document.getElementById("status").textContent, lens: window.__lens,
      user: document.querySelector("#messages .msg.user .content").textContent,
      sendEnabled: !document.getElementById("send").disabled,
      stopDisabled: document.getElementById("stop").disabled };
  });
  const partial = [...new Set(r.lens.filter((n) => n > 0 && n < r.text.length))];
  console.log(`reply after ${ms} ms: ${r.text.length} chars, ${r.chunks} streamed chunks, ` +
    `${partial.length} partial lengths seen; status: ${r.status}`);
  check("the user's message is shown", r.user === opts.message);
  check("no error shown", !r.error, r.note);
  check("reply is not empty", r.text.length > 0);
  check("reply streamed in several chunks", r.chunks >= 2, `${r.chunks} chunks`);
  check("reply grew on the page (2 or more partial lengths before the end)", partial.length >= 2,
    `lengths ${partial.slice(0, 8).join(", ")}${partial.length > 8 ? ", ..." : ""} then ${r.text.length}`);
  check("status line has tokens/s", /[0-9.]+ tok\/s/.test(r.status), r.status);
  check("Send enabled and Stop disabled after the reply", r.sendEnabled && r.stopDisabled);
  await page.screenshot({ path: png, fullPage: false });

  // A second turn: the conversation goes back with both earlier messages. Few tokens: a tiny
  // model's context is 512 tokens, and with the byte tokenizer each U+FFFD of the first reply
  // comes back as 3 tokens.
  await page.$eval("#max_tokens", (el) => { el.value = "16"; });
  let sent = null;
  page.on("request", (q) => {
    if (q.url().endsWith("/v1/chat/completions")) sent = JSON.parse(q.postData() || "{}");
  });
  await page.type("#input", "And then?");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll('#messages .msg.assistant[data-done="1"]').length === 2);
  check("second turn sends the whole conversation",
    sent && sent.stream === true && sent.temperature === 0 && sent.max_tokens === 16 &&
    sent.messages.length === 3 && sent.messages[0].content === opts.message &&
    sent.messages[1].role === "assistant" && sent.messages[1].content === r.text &&
    sent.messages[2].content === "And then?",
    sent ? JSON.stringify(sent.messages.map((m) => m.role)) : "no request seen");

  // ---- 2. answers made up here: an OpenAI error object, then a stream with markup in it
  await page.click("#new_chat");
  check("New chat empties the conversation", await page.$$eval("#messages .msg", (a) => a.length) === 0);
  await page.setRequestInterception(true);
  let reply = null;
  page.on("request", (q) => {
    if (!q.url().endsWith("/v1/chat/completions") || !reply) return q.continue();
    q.respond(reply);
  });
  reply = { status: 401, contentType: "application/json",
    body: JSON.stringify({ error: { message: "Invalid API key", type: "invalid_request_error", code: "invalid_api_key" } }) };
  await page.type("#input", "hello");
  await page.click("#send");
  await page.waitForSelector('#messages .msg.assistant[data-done="1"]');
  const e = await page.evaluate(() => ({
    note: document.querySelector("#messages .msg.assistant .note").textContent,
    error: document.querySelector("#messages .msg.assistant").classList.contains("error"),
    status: document.getElementById("status").textContent,
    input: document.getElementById("input").value }));
  check("error object shown readably", e.error && /HTTP 401.*Invalid API key/.test(e.note) && /Invalid API key/.test(e.status), e.note);
  check("failed message goes back into the input", e.input === "hello");

  await page.click("#new_chat");
  const evil = '<b id="bold">x</b><img src=x onerror="window.__pwned=1">';
  const chunk = (delta, finish, usage) => "data: " + JSON.stringify({ id: "c", object: "chat.completion.chunk",
    created: 0, model: "mock", choices: [{ index: 0, delta, finish_reason: finish || null }], ...(usage ? { usage } : {}) }) + "\n\n";
  reply = { status: 200, contentType: "text/event-stream",
    body: chunk({ role: "assistant", content: "" }) + chunk({ content: evil.slice(0, 9) }) + ": keep-alive\n\n" +
      chunk({ content: evil.slice(9) }) + chunk({}, "stop", { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 }) +
      "data: [DONE]\n\n" };
  await page.click("#send");  // the input still holds "hello"
  await page.waitForSelector('#messages .msg.assistant[data-done="1"]');
  const x = await page.evaluate(() => ({
    text: document.querySelector("#messages .msg.assistant .content").textContent,
    bold: !!document.getElementById("bold"), img: !!document.querySelector("#messages img"),
    pwned: !!window.__pwned, status: document.getElementById("status").textContent }));
  check("markup in the reply is shown as text", x.text === evil && !x.bold && !x.img && !x.pwned, x.text);
  check("usage from the stream in the status line", /5 prompt tokens/.test(x.status) && /2 generated/.test(x.status), x.status);
  check("no JavaScript errors", jsErrors.length === 0, jsErrors.join(" | "));
} catch (e) {
  check("page run", false, e.stack || String(e));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
