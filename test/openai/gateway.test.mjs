// The official openai client through `moe gateway` in front of two MixtralDeployments on the
// local cluster. test/e2e/gateway_test.go runs this file with
//   GATEWAY_URL  the gateway Service's base URL (http://CLUSTER-IP:80)
//   MODELS       the two served model names, comma-separated
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.GATEWAY_URL;
const models = (process.env.MODELS ?? '').split(',').filter(Boolean);
assert.ok(baseURL && models.length === 2, 'GATEWAY_URL and two MODELS must be set (run through test/e2e)');

const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });
const greedy = { temperature: 0, ignore_eos: true };

test('models lists both MixtralDeployments', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  for (const m of models) assert.ok(ids.includes(m), `${m} in ${ids}`);
});

test('each model answers a chat through the one endpoint', async () => {
  for (const model of models) {
    const r = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'What is a mixture of experts?' }], max_tokens: 6, ...greedy,
    });
    assert.equal(r.model, model);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.usage.completion_tokens, 6);
  }
});

test('a stream passes through the gateway chunk by chunk', async () => {
  const req = { model: models[0], messages: [{ role: 'user', content: 'Count.' }], max_tokens: 5, ...greedy };
  const stream = await client.chat.completions.create({ ...req, stream: true });
  let chunks = 0;
  let text = '';
  for await (const c of stream) {
    const piece = c.choices[0]?.delta?.content;
    if (piece) { chunks++; text += piece; }
  }
  // The engine sends a chunk per step, or fewer when the reader falls behind (it
  // coalesces what is pending), so the count is at most the tokens; more than one
  // means the gateway did not hold the answer back to the end.
  assert.ok(chunks > 1 && chunks <= 5, `${chunks} content chunks`);
  const whole = await client.chat.completions.create(req);
  assert.equal(text, whole.choices[0].message.content);
});

test('an unknown model is a 404 in OpenAI shape', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    (err) => err.status === 404 && err.code === 'model_not_found',
  );
});
