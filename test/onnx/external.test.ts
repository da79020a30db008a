// External data: a model saved by onnx.save(..., save_as_external_data=True) loads its tensors
// from the side file, and round-trips both inlined and re-externalised with onnxruntime giving
// identical outputs. Missing or short data files give an InputError naming model, tensor and file.
import { equals } from '@bufbuild/protobuf';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../../src/util/errors.js';
import { ModelProtoSchema } from '../../src/onnx/gen/onnx_pb.js';
import {
  OnnxGraph,
  allTensors,
  decodeModel,
  encodeModel,
  isExternal,
  readModel,
  tensorToArray,
  writeModel,
} from '../../src/onnx/index.js';
import { runCli } from '../cli/helpers.js';
import { fixture, plain, randomFeeds, runFile, tempDir } from './helpers.js';

const MODEL = fixture('external-data.onnx');
const DATA = fixture('external-data.bin');
const expected = JSON.parse(await fsp.readFile(fixture('external-data.expected.json'), 'utf8')) as Record<
  string,
  { dims: number[]; sum: number; first: number[]; last: number }
>;

let tmp: string;
beforeAll(async () => {
  tmp = await tempDir();
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function sameOutputs(a: string, b: string): Promise<void> {
  const model = await readModel(a);
  const feeds = randomFeeds(model, 3);
  const [x, y] = [await runFile(a, feeds), await runFile(b, feeds)];
  for (const k of Object.keys(x)) expect(plain(y[k]!)).toEqual(plain(x[k]!));
}

describe('external data', () => {
  it('loads tensors from the data file with the values onnx.load reads', async () => {
    const model = await readModel(MODEL);
    expect(model.externalTensors.map((t) => [t.name, t.location, t.offset, t.length])).toEqual([
      ['conv.weight', 'external-data.bin', 0, 576],
      ['fc.weight', 'external-data.bin', 576, 4608],
    ]);
    const inits = OnnxGraph.of(model).initializers;
    expect([...inits.keys()].sort()).toEqual(Object.keys(expected).sort());
    for (const [name, want] of Object.entries(expected)) {
      const t = inits.get(name)!;
      expect(isExternal(t)).toBe(false);
      const a = tensorToArray(t, 'float32');
      expect(t.dims.map(Number)).toEqual(want.dims);
      expect([...a.subarray(0, 4)].map((v) => Math.fround(v))).toEqual(want.first.map((v) => Math.fround(v)));
      expect(a[a.length - 1]).toBe(Math.fround(want.last));
      expect(a.reduce((s, v) => s + v, 0)).toBeCloseTo(want.sum, 4);
    }
  });

  it('writes everything inline by default, and onnxruntime agrees', async () => {
    const model = await readModel(MODEL);
    const out = path.join(tmp, 'inline', 'model.onnx');
    await writeModel(model, out);
    expect(await fsp.readdir(path.dirname(out))).toEqual(['model.onnx']);
    const raw = decodeModel(await fsp.readFile(out));
    expect(allTensors(raw.proto).some(({ tensor }) => isExternal(tensor))).toBe(false);
    await sameOutputs(MODEL, out);
  });

  it('re-externalises to a side file with 4096-aligned offsets, and onnxruntime agrees', async () => {
    const model = await readModel(MODEL);
    const out = path.join(tmp, 'ext', 'model.onnx');
    await writeModel(model, out, { externalData: { sizeThreshold: 256 } });
    expect((await fsp.readdir(path.dirname(out))).sort()).toEqual(['model.onnx', 'model.onnx.data']);
    // The in-memory model is untouched by the external write.
    expect(allTensors(model.proto).some(({ tensor }) => isExternal(tensor))).toBe(false);

    const unloaded = decodeModel(await fsp.readFile(out));
    const refs = allTensors(unloaded.proto).filter(({ tensor }) => isExternal(tensor));
    expect(refs.map(({ tensor }) => tensor.name)).toEqual(['conv.weight', 'fc.weight']);
    for (const { tensor } of refs) {
      const kv = Object.fromEntries(tensor.externalData.map((e) => [e.key, e.value]));
      expect(kv.location).toBe('model.onnx.data');
      expect(Number(kv.offset) % 4096).toBe(0);
    }
    const back = await readModel(out);
    expect(equals(ModelProtoSchema, back.proto, model.proto)).toBe(true);
    await sameOutputs(MODEL, out);
  });

  it('keeps references when decoded without baseDir, and says why tensors cannot be read', async () => {
    const bytes = await fsp.readFile(MODEL);
    const model = decodeModel(bytes, { source: 'external-data.onnx' });
    const w = OnnxGraph.of(model).initializers.get('fc.weight')!;
    expect(isExternal(w)).toBe(true);
    expect(() => tensorToArray(w)).toThrow(InputError);
    expect(() => tensorToArray(w)).toThrow(/fc\.weight.*external-data\.bin.*baseDir/);
    // Encoding keeps the references as they were.
    expect(Buffer.compare(Buffer.from(encodeModel(model)), bytes)).toBe(0);
    // Writing elsewhere would leave dangling references: refused.
    await expect(writeModel(model, path.join(tmp, 'dangling.onnx'))).rejects.toThrow(/not loaded/);
  });

  it('names the model, the tensor and the file when the data file is missing', async () => {
    const dir = path.join(tmp, 'missing');
    await fsp.mkdir(dir);
    await fsp.copyFile(MODEL, path.join(dir, 'm.onnx'));
    const err = await readModel(path.join(dir, 'm.onnx')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    const msg = (err as Error).message;
    expect(msg).toContain(path.join(dir, 'm.onnx'));
    expect(msg).toContain("tensor 'conv.weight'");
    expect(msg).toContain('external-data.bin');
    expect(msg).toContain('does not exist');
  });

  it('says the data file is too short when it is truncated', async () => {
    const dir = path.join(tmp, 'short');
    await fsp.mkdir(dir);
    await fsp.copyFile(MODEL, path.join(dir, 'm.onnx'));
    const data = await fsp.readFile(DATA);
    await fsp.writeFile(path.join(dir, 'external-data.bin'), data.subarray(0, 1000));
    const err = await readModel(path.join(dir, 'm.onnx')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/m\.onnx: tensor 'fc\.weight'.*needs bytes 576\.\.5184 of 'external-data\.bin'.*only 1000 bytes/);
  });

  it('refuses locations outside the model folder', async () => {
    const model = decodeModel(await fsp.readFile(MODEL));
    const w = OnnxGraph.of(model).initializers.get('conv.weight')!;
    w.externalData.find((e) => e.key === 'location')!.value = '../../etc/passwd';
    const err = (() => {
      try {
        decodeModel(encodeModel(model), { baseDir: tmp, source: 'evil.onnx' });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/evil\.onnx: .*outside the model's folder/);
  });
});

// Finding 6 of issue 12: a location that stays inside the folder by name but is a symlink out of
// it must be refused like '../x' (onnxruntime refuses it too), by readModel and so by compile.
describe('external data behind a symlink', () => {
  let dir: string;
  let outside: string;
  beforeAll(async () => {
    dir = await tempDir();
    outside = await tempDir();
    await fsp.copyFile(MODEL, path.join(dir, 'm.onnx'));
    await fsp.copyFile(DATA, path.join(outside, 'secret.bin'));
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rm(outside, { recursive: true, force: true });
  });

  it('refuses a data file that links out of the model folder, in readModel and in compile (exit 2)', async () => {
    await fsp.symlink(path.join(outside, 'secret.bin'), path.join(dir, 'external-data.bin'));
    const err = await readModel(path.join(dir, 'm.onnx')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/m\.onnx: tensor 'conv\.weight'.*'external-data\.bin', a link to .*secret\.bin, outside the model's folder.*fix: copy the file/);
    const cli = await runCli('compile', path.join(dir, 'm.onnx'), '--device', 'rpi4', '--out', path.join(dir, 'bundle'));
    expect(cli.code).toBe(2);
    expect(cli.err).toMatch(/a link to .*secret\.bin, outside the model's folder/);
    expect(existsSync(path.join(dir, 'bundle'))).toBe(false);
  });

  it('still follows a link that stays inside the folder', async () => {
    await fsp.rm(path.join(dir, 'external-data.bin'), { force: true });
    await fsp.copyFile(DATA, path.join(dir, 'real.bin'));
    await fsp.symlink('real.bin', path.join(dir, 'external-data.bin'));
    const model = await readModel(path.join(dir, 'm.onnx'));
    expect(model.externalTensors.map((t) => t.name)).toEqual(['conv.weight', 'fc.weight']);
  });
});
