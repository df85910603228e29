// The official openai client against a real `moe serve` on loopback.
// openai_test.go starts the server and runs this file with
//   MOE_URL      the server's base URL (http://127.0.0.1:PORT)
//   MOE_MODEL    its --served-model-name
//   MOE_API_KEY  its --api-key
// The server runs with --max-num-seqs 2 --max-queue 2, so the 429 case can
// fill it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.MOE_URL;
const model = process.env.MOE_MODEL;
const apiKey = process.env.MOE_API_KEY;
assert.ok(baseURL && model && apiKey, 'MOE_URL, MOE_MODEL and MOE_API_KEY must be set (run through openai_test.go)');

const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

// A random-weights model may end early on EOS; ignore_eos (a vLLM extension
// the server supports) keeps lengths exact where a test needs them.
const greedy = { temperature: 0, ignore_eos: true };

test('models lists the served model', async () => {
  const page = await client.models.list();
  assert.deepEqual(page.data.map((m) => m.id), [model]);
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  assert.equal(one.object, 'model');
});

test('completions return text, usage and finish_reason', async () => {
  const r = await client.completions.create({ model, prompt: 'The experts said', max_tokens: 12, ...greedy });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.model, model);
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 12);
  assert.ok(r.usage.prompt_tokens >= 3);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('chat completions use the chat template and report usage', async () => {
  const messages = [
    { role: 'system', content: 'Answer briefly.' },
    { role: 'user', content: 'What is a mixture of experts?' },
  ];
  const r = await client.chat.completions.create({ model, messages, max_tokens: 10, ...greedy });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 10);
  // The system prompt is part of the prompt.
  const without = await client.chat.completions.create({ model, messages: messages.slice(1), max_tokens: 1, ...greedy });
  assert.ok(r.usage.prompt_tokens > without.usage.prompt_tokens);
});

test('streaming chat yields the same text as the whole response, then usage', async () => {
  const req = { model, messages: [{ role: 'user', content: 'Stream a story.' }], max_tokens: 24, ...greedy };
  const whole = await client.chat.completions.create(req);
  const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finishes = 0;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) {
      usage = chunk.usage;
      assert.equal(chunk.choices.length, 0);
      continue;
    }
    const c = chunk.choices[0];
    text += c.delta.content ?? '';
    if (c.finish_reason) {
      finishes++;
      assert.equal(c.finish_reason, 'length');
    }
  }
  assert.ok(chunks > 3, `only ${chunks} chunks`);
  assert.equal(finishes, 1);
  assert.equal(text, whole.choices[0].message.content);
  assert.deepEqual(usage, whole.usage);
});

test('streaming completions end with finish_reason', async () => {
  const stream = await client.completions.create({ model, prompt: 'Once', max_tokens: 8, stream: true, ...greedy });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0].text;
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.equal(finish, 'length');
  assert.ok(text.length > 0);
});

test('stop sequences end the output where they first appear, across tokens', async () => {
  const req = { model, prompt: 'List some words:', max_tokens: 40, ...greedy };
  const full = (await client.completions.create(req)).choices[0].text;
  // A stop string from the middle of the output: it usually spans tokens.
  const at = Math.floor(full.length / 2);
  const stop = full.slice(at, at + 3);
  assert.equal(stop.length, 3, `output too short: ${JSON.stringify(full)}`);
  const want = full.slice(0, full.indexOf(stop));
  for (const s of [stop, ['never-in-output-xyz', stop]]) {
    const r = await client.completions.create({ ...req, stop: s });
    assert.equal(r.choices[0].text, want);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.ok(r.usage.completion_tokens < 40);
  }
  // Streamed, the stop string is never sent, even in part at the end.
  const stream = await client.completions.create({ ...req, stop, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0].text;
  assert.equal(text, want);
});

test('a seed makes sampling reproducible', async () => {
  const req = { model, messages: [{ role: 'user', content: 'Pick random words.' }], max_tokens: 16, temperature: 1, top_p: 0.95, ignore_eos: true };
  const a = await client.chat.completions.create({ ...req, seed: 1234 });
  const b = await client.chat.completions.create({ ...req, seed: 1234 });
  const c = await client.chat.completions.create({ ...req, seed: 4321 });
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
});

test('n and logprobs', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, n: 2, temperature: 1, seed: 5,
    logprobs: true, top_logprobs: 2, ignore_eos: true,
  });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  assert.equal(r.usage.completion_tokens, 8);
  for (const c of r.choices) {
    assert.equal(c.logprobs.content.length, 4);
    for (const t of c.logprobs.content) {
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
    }
  }
});

// assertAPIError checks the status, the error class and OpenAI's shape.
async function assertAPIError(promise, Class, status, { param = null, code } = {}) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof Class, `got ${err.constructor.name}: ${err.message}`);
    assert.equal(err.status, status);
    assert.deepEqual(Object.keys(err.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(typeof err.error.message, 'string');
    assert.ok(err.error.message.length > 0);
    assert.equal(typeof err.type, 'string');
    assert.equal(err.param, param);
    if (code !== undefined) assert.equal(err.code, code);
    return true;
  });
}

test('a missing or wrong API key is a 401', async () => {
  const bad = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'wrong-key', maxRetries: 0 });
  await assertAPIError(bad.models.list(), OpenAI.AuthenticationError, 401, { code: 'invalid_api_key' });
});

test('an unknown model is a 404', async () => {
  await assertAPIError(
    client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
    OpenAI.NotFoundError, 404, { param: 'model', code: 'model_not_found' });
});

test('bad parameters are 400s that name the parameter', async () => {
  const messages = [{ role: 'user', content: 'x' }];
  await assertAPIError(client.chat.completions.create({ model, messages, temperature: 5 }), OpenAI.BadRequestError, 400, { param: 'temperature' });
  await assertAPIError(client.chat.completions.create({ model, messages, n: 100 }), OpenAI.BadRequestError, 400, { param: 'n' });
  await assertAPIError(client.chat.completions.create({ model, messages: [{ role: 'assistant', content: 'x' }] }), OpenAI.BadRequestError, 400, { param: 'messages' });
});

test('a prompt plus max_tokens over the context is a 400', async () => {
  await assertAPIError(
    client.completions.create({ model, prompt: 'hello', max_tokens: 1_000_000 }),
    OpenAI.BadRequestError, 400, { param: 'prompt', code: 'context_length_exceeded' });
});

test('response_format json_schema: the output parses and validates, and ends with stop', async () => {
  const schema = {
    type: 'object',
    properties: {
      city: { type: 'string', maxLength: 12 },
      population: { type: 'integer', minimum: 0 },
      coastal: { type: 'boolean' },
      districts: { type: 'array', items: { enum: ['north', 'south'] }, maxItems: 3 },
    },
    required: ['city', 'population', 'coastal'],
    additionalProperties: false,
  };
  for (const seed of [1, 2, 3]) {
    const r = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'Describe a city as JSON.' }], max_tokens: 300, seed, temperature: 1,
      response_format: { type: 'json_schema', json_schema: { name: 'city', schema, strict: true } },
    });
    assert.equal(r.choices[0].finish_reason, 'stop');
    const city = JSON.parse(r.choices[0].message.content);
    assert.equal(typeof city.city, 'string');
    assert.ok([...city.city].length <= 12);
    assert.ok(Number.isInteger(city.population) && city.population >= 0);
    assert.equal(typeof city.coastal, 'boolean');
    for (const d of city.districts ?? []) assert.ok(['north', 'south'].includes(d));
    assert.deepEqual(Object.keys(city).filter((k) => !(k in schema.properties)), []);
  }
});

test('response_format json_object: a JSON object, whole unless cut by max_tokens', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Reply in JSON.' }], max_tokens: 200, seed: 7, temperature: 1,
    response_format: { type: 'json_object' },
  });
  const out = r.choices[0].message.content;
  assert.ok(out.startsWith('{'), out);
  if (r.choices[0].finish_reason === 'stop') assert.equal(typeof JSON.parse(out), 'object');
  else assert.equal(r.choices[0].finish_reason, 'length');
});

test('an unsupported schema is a 400 naming the feature', async () => {
  await assertAPIError(client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'x' }],
    response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', format: 'email' } } },
  }), OpenAI.BadRequestError, 400, { param: 'response_format' });
});

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 20 }, unit: { enum: ['celsius', 'fahrenheit'] } },
      required: ['city'],
    },
  },
}];

test('a tool call round trip: forced call, parsed arguments, the result sent back', async () => {
  const messages = [{ role: 'user', content: 'What is the weather in Lyon?' }];
  const r = await client.chat.completions.create({
    model, messages, tools, max_tokens: 200, seed: 11, temperature: 1,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  const choice = r.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  const args = JSON.parse(call.function.arguments);
  assert.equal(typeof args.city, 'string');
  assert.ok([...args.city].length <= 20);
  if (args.unit !== undefined) assert.ok(['celsius', 'fahrenheit'].includes(args.unit));

  const next = await client.chat.completions.create({
    model, tools, max_tokens: 8, ...greedy,
    messages: [...messages, choice.message, { role: 'tool', tool_call_id: call.id, content: '{"temperature": 18}' }],
  });
  assert.equal(typeof next.choices[0].message.content, 'string');
});

test('a streamed tool call arrives as tool_calls deltas', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Weather in Oslo?' }], tools, tool_choice: 'required',
    parallel_tool_calls: false, max_tokens: 200, seed: 12, temperature: 1, stream: true,
  });
  let name = '';
  let args = '';
  let finish = null;
  let content = '';
  for await (const c of stream) {
    const d = c.choices[0]?.delta;
    for (const tc of d?.tool_calls ?? []) {
      name += tc.function?.name ?? '';
      args += tc.function?.arguments ?? '';
    }
    content += d?.content ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(name, 'get_weather');
  assert.equal(typeof JSON.parse(args).city, 'string');
  assert.equal(content, '');
});

async function post(path, body) {
  const res = await fetch(`${baseURL}${path}`, {
    method: 'POST', headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

test('/tokenize and /detokenize round-trip, and count what a chat completion bills', async () => {
  const text = 'Mixtral routes each token to two of eight experts.';
  const t = await post('/tokenize', { model, prompt: text });
  assert.equal(t.status, 200);
  assert.equal(t.body.count, t.body.tokens.length);
  const d = await post('/detokenize', { model, tokens: t.body.tokens });
  assert.equal(d.body.prompt, text);
  const messages = [{ role: 'user', content: text }];
  const chat = await post('/tokenize', { model, messages });
  const r = await client.chat.completions.create({ model, messages, max_tokens: 1 });
  assert.equal(chat.body.count, r.usage.prompt_tokens);
});

test('a shared system prompt is found in the prefix cache', async () => {
  const system = 'You are a careful assistant who explains mixture-of-experts models. '.repeat(12);
  const ask = (q) => client.chat.completions.create({
    model, messages: [{ role: 'system', content: system }, { role: 'user', content: q }], max_tokens: 2, ...greedy,
  });
  await ask('What is a router?');
  const [hits, queries] = [await metric('vllm:prefix_cache_hits_total'), await metric('vllm:prefix_cache_queries_total')];
  const r = await ask('What is an expert?');
  const gained = (await metric('vllm:prefix_cache_hits_total')) - hits;
  assert.equal((await metric('vllm:prefix_cache_queries_total')) - queries, r.usage.prompt_tokens);
  // The system prompt's whole blocks of 16 tokens, all but the last partial one.
  assert.ok(gained >= 16 * Math.floor((r.usage.prompt_tokens - 24) / 16), `only ${gained} of ${r.usage.prompt_tokens} prompt tokens were cached`);
});

async function metric(name) {
  const text = await (await fetch(`${baseURL}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`));
  return Number(line.split(' ').pop());
}

test('a full queue is a 429 with Retry-After', async () => {
  const controller = new AbortController();
  const long = () => client.completions.create(
    { model, prompt: 'fill', max_tokens: 1900, ...greedy }, { signal: controller.signal }).catch(() => {}); // aborted below
  const pending = [long(), long(), long(), long()]; // two run, two wait
  try {
    for (let i = 0; (await metric('vllm:num_requests_waiting')) < 2; i++) {
      assert.ok(i < 500, 'the queue never filled');
      await new Promise((r) => setTimeout(r, 10));
    }
    await assert.rejects(client.completions.create({ model, prompt: 'one more', max_tokens: 2 }), (err) => {
      assert.ok(err instanceof OpenAI.RateLimitError, `got ${err.constructor.name}: ${err.message}`);
      assert.equal(err.status, 429);
      assert.ok(Number(err.headers.get('retry-after')) >= 1);
      assert.equal(err.code, 'queue_full');
      return true;
    });
  } finally {
    controller.abort();
    await Promise.all(pending);
  }
  // Aborting the requests frees their KV blocks.
  for (let i = 0; (await metric('vllm:kv_cache_usage_perc')) > 0; i++) {
    assert.ok(i < 500, 'cancelled requests kept their KV blocks');
    await new Promise((r) => setTimeout(r, 10));
  }
});
