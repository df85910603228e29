// Builds engine/modelgen/vocab/mistral-v1.tsv.gz, the Mistral / Mixtral-8x7B
// SentencePiece vocabulary that `moe gen-model --vocab mistral` embeds.
//
// Source: the npm package mistral-tokenizer-js@1.0.0 (MIT, belladore.ai),
// installed under test/reference by `make reference`. The package ships the
// 32000 pieces but no scores, so scores are rebuilt by the rule llama.cpp's
// own SPM test vocabulary follows: -(id - 259) for normal pieces, -1e9 for
// pieces made only of "▁", 0 for the special and byte tokens.
//
// Usage: node hack/build-mistral-vocab.mjs [OUT]
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const pkg = path.join(root, "test/reference/node_modules/mistral-tokenizer-js/mistral-tokenizer.js");
const out = process.argv[2] ?? path.join(root, "engine/modelgen/vocab/mistral-v1.tsv.gz");

const src = fs.readFileSync(pkg, "utf8");
const m = src.match(/const vocab_base64 = "([^"]+)"/);
if (!m) throw new Error(`no vocab_base64 in ${pkg}`);
const pieces = Buffer.from(m[1], "base64").toString("utf8").split("\n");
if (pieces.length !== 32000) throw new Error(`expected 32000 pieces, got ${pieces.length}`);

const NORMAL = 1, UNKNOWN = 2, CONTROL = 3, BYTE = 6;
const lines = pieces.map((p, id) => {
  let type = NORMAL, score;
  if (id === 0) type = UNKNOWN;
  else if (id === 1 || id === 2) type = CONTROL;
  else if (id >= 3 && id <= 258) type = BYTE;
  if (type !== NORMAL) score = 0;
  else if (/^▁+$/u.test(p)) score = -1e9;
  else score = -(id - 259);
  if (p.includes("\t") || p.includes("\n")) throw new Error(`piece ${id} has a tab or newline`);
  return `${p}\t${score}\t${type}`;
});
const data = zlib.gzipSync(Buffer.from(lines.join("\n") + "\n", "utf8"), { level: 9, mtime: 0 });
fs.writeFileSync(out, data);
console.log(`wrote ${out}: ${pieces.length} pieces, ${data.length} bytes`);
