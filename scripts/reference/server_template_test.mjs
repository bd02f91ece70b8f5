// st-server renders chat requests as Hugging Face does: for each conversation below, the prompt
// POST /apply-template returns must equal byte for byte what Hugging Face's JavaScript Jinja
// renderer (@huggingface/jinja, the oracle of tests/data/chat/golden.json) renders from the same
// template with the variables transformers' apply_chat_template passes.
//
//   node scripts/reference/server_template_test.mjs --base URL --config TOKENIZER_CONFIG_JSON
//        [--api_key KEY]
// --config: the tokenizer_config.json whose chat_template the server was started with
// (st-server --chat_template_file). Prints ok/FAIL per conversation; exit 1 on any failure.
import { readFileSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { parseArgs } from './cli_args.mjs';

let args;
try {
  args = parseArgs(process.argv.slice(2), ['base', 'config']);
} catch (e) {
  console.error(`server_template_test: ${e.message}`);
  console.error('usage: node server_template_test.mjs --base URL --config TOKENIZER_CONFIG_JSON [--api_key KEY]');
  process.exit(2);
}
const config = JSON.parse(readFileSync(args.config, 'utf8'));
const template = new Template(config.chat_template);
const headers = { 'Content-Type': 'application/json' };
if (args.api_key) headers.Authorization = `Bearer ${args.api_key}`;

const tool = {
  type: 'function',
  function: {
    name: 'get_verse', description: 'Look up a Bible verse',
    parameters: { type: 'object', properties: { ref: { type: 'string' } }, required: ['ref'] },
  },
};
const conversations = [
  { name: 'user only', body: { messages: [{ role: 'user', content: 'Who divided the waters?' }] } },
  {
    name: 'system, two turns',
    body: {
      messages: [
        { role: 'system', content: 'Answer briefly.' },
        { role: 'user', content: 'Hello!' },
        { role: 'assistant', content: 'Hi. How can I help?' },
        { role: 'user', content: 'Name a river in Eden.' },
      ],
    },
  },
  {
    name: 'thinking off',
    body: {
      messages: [{ role: 'user', content: 'Quick: 2 + 2?' }],
      chat_template_kwargs: { enable_thinking: false },
    },
  },
  {
    name: 'past reasoning and tools',
    body: {
      messages: [
        { role: 'user', content: 'Find Genesis 1:3.' },
        { role: 'assistant', content: '<think>\nI should look it up.\n</think>\n\nIt says: Let there be light.' },
        { role: 'user', content: 'And 1:4? 日本語 émoji 🦙' },
      ],
      tools: [tool],
    },
  },
];

let failed = 0;
for (const c of conversations) {
  const res = await fetch(`${args.base}/apply-template`, { method: 'POST', headers, body: JSON.stringify(c.body) });
  const got = res.ok ? (await res.json()).prompt : `HTTP ${res.status}: ${await res.text()}`;
  const ctx = {
    messages: c.body.messages, tools: c.body.tools ?? null, documents: null,
    add_generation_prompt: true, ...(c.body.chat_template_kwargs ?? {}),
  };
  // The special tokens transformers passes (those the tokenizer config names).
  for (const k of ['bos_token', 'eos_token']) {
    const v = config[k];
    const text = typeof v === 'string' ? v : v?.content;
    if (text) ctx[k] = text;
  }
  const want = template.render(ctx);
  if (got === want) {
    console.log(`ok - ${c.name} (${want.length} chars)`);
  } else {
    failed++;
    let i = 0;
    while (i < Math.min(got.length, want.length) && got[i] === want[i]) i++;
    console.log(`FAIL - ${c.name}: differs at char ${i}: server ${JSON.stringify(got.slice(i, i + 60))}, ` +
      `@huggingface/jinja ${JSON.stringify(want.slice(i, i + 60))}`);
  }
}
process.exit(failed ? 1 : 0);
