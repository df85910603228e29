// llama.cpp (through node-llama-cpp, pinned in package.json) as the
// independent reference for the engine's parity tests and benchmarks.
//
//   node llama.mjs logits MODEL            stdin: {"tokens":[...], "threads":1, "sequential":false}
//       prints {"logits":[[...],...]}: the raw logits at every position, from
//       one batched evaluation (prefill kernels) or, with sequential, one
//       evaluation per token (decode kernels)
//   node llama.mjs tokenize MODEL          stdin: {"texts":["...", ...]}
//       prints {"tokens":[[...],...]}: llama.cpp's ids (no BOS, no special parsing)
//   node llama.mjs bench MODEL             stdin: {"promptTokens":N, "genTokens":M, "threads":T}
//       prints {"prefillTokensPerSecond":x, "decodeTokensPerSecond":y}
//
// The KV cache is kept in F32 and flash attention off, so the reference
// computes attention in float32 like the engine.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [cmd, modelPath] = process.argv.slice(2);
if (!cmd || !modelPath) {
  console.error("usage: node llama.mjs logits|tokenize|bench MODEL < request.json");
  process.exit(2);
}
const input = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (c) => (data += c));
  process.stdin.on("end", () => resolve(data || "{}"));
}));

const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });

async function context(size, threads) {
  return model.createContext({
    contextSize: size,
    batchSize: Math.min(size, 512),
    threads: threads ?? 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
  });
}

function logitsArray(map, vocab) {
  const out = new Array(vocab);
  for (const [tok, v] of map) out[tok] = v;
  return out;
}

if (cmd === "logits") {
  const tokens = input.tokens;
  const ctx = await context(Math.max(32, tokens.length + 1), input.threads);
  const seq = ctx.getSequence();
  let res;
  if (input.sequential) {
    // One token per evaluation: llama.cpp's decode path (matrix-vector kernels).
    res = [];
    for (const t of tokens) res.push(...(await seq.controlledEvaluate([[t, { generateNext: { logits: true } }]])));
  } else {
    res = await seq.controlledEvaluate(tokens.map((t) => [t, { generateNext: { logits: true } }]));
  }
  const size = res[0].next.logits.size;
  console.log(JSON.stringify({ logits: res.map((r) => logitsArray(r.next.logits, size)) }));
} else if (cmd === "tokenize") {
  console.log(JSON.stringify({ tokens: input.texts.map((t) => model.tokenize(t, false)) }));
} else if (cmd === "bench") {
  const threads = input.threads ?? 1;
  const promptTokens = input.promptTokens ?? 128, genTokens = input.genTokens ?? 32;
  const ctx = await context(promptTokens + genTokens + 8, threads);
  const seq = ctx.getSequence();
  // A deterministic prompt of ordinary tokens (ids above the byte tokens).
  const prompt = Array.from({ length: promptTokens }, (_, i) => 1000 + ((i * 7919) % 20000));
  let t0 = performance.now();
  let res = await seq.controlledEvaluate(prompt.map((t, i) => [t, i === prompt.length - 1 ? { generateNext: { token: true } } : {}]));
  const prefill = (performance.now() - t0) / 1000;
  let next = res[prompt.length - 1].next.token;
  t0 = performance.now();
  for (let i = 0; i < genTokens; i++) {
    res = await seq.controlledEvaluate([[next, { generateNext: { token: true } }]]);
    next = res[0].next.token;
  }
  const decode = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ prefillTokensPerSecond: promptTokens / prefill, decodeTokensPerSecond: genTokens / decode }));
} else {
  console.error(`unknown command ${cmd}`);
  process.exit(2);
}
await model.dispose();
await llama.dispose();
