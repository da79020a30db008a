// Every ONNX model in the repository (the zoo under models/, once trained, and our fixtures)
// must survive read → write with identical semantics: same decoded message, and onnxruntime
// computes bit-identical outputs from the original and the rewritten file.
import { equals } from '@bufbuild/protobuf';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelProtoSchema } from '../../src/onnx/gen/onnx_pb.js';
import { decodeModel, encodeModel, readModel, writeModel } from '../../src/onnx/index.js';
import { FIXTURES, REPO, findFiles, plain, randomFeeds, runFile, tempDir } from './helpers.js';

const zoo = await findFiles(path.join(REPO, 'models'), '.onnx');
const fixtures = await findFiles(FIXTURES, '.onnx');
const files = [...zoo, ...fixtures];

let tmp: string;
beforeAll(async () => {
  tmp = await tempDir();
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe('read → write round trip', () => {
  it('finds the fixtures (and the zoo models when they exist)', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(4);
  });

  it.each(files.map((f) => [path.relative(REPO, f), f]))('%s', async (_rel, file) => {
    const model = await readModel(file);
    const out = path.join(tmp, path.basename(path.dirname(file)) + '-' + path.basename(file));
    await writeModel(model, out);

    // Same message after decoding the rewritten file (external data comes back inlined).
    const again = await readModel(out);
    expect(equals(ModelProtoSchema, again.proto, model.proto)).toBe(true);

    // Our fixtures (written by onnx.save) come back byte for byte. Not required of every model:
    // another writer may, say, pack a field onnx.save leaves unpacked, which is equally valid.
    if (file.startsWith(FIXTURES) && model.externalTensors.length === 0) {
      const original = await fsp.readFile(file);
      expect(Buffer.compare(Buffer.from(encodeModel(decodeModel(original))), original)).toBe(0);
    }

    const feeds = randomFeeds(model, 7);
    const [a, b] = [await runFile(file, feeds), await runFile(out, feeds)];
    expect(Object.keys(b)).toEqual(Object.keys(a));
    for (const k of Object.keys(a)) expect(plain(b[k]!)).toEqual(plain(a[k]!));
  });
});
