// The bundle runner on real bundles and real onnxruntime: predictions and exits against the
// original (unsplit) model's per-exit outputs, batch 1 against batched dropping, the three
// metrics and temperatures, a tensor carried past a stage that does not read it (the resnet
// fixture), refusal of tampered or wrongly signed bundles, and per-item image failures.
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { compileModel } from '../../src/compiler/index.js';
import { BundleIntegrityError, generateKeyPair, packBundle } from '../../src/bundle/index.js';
import { availableExecutionProviders } from '../../src/backends/onnxruntime.js';
import { loadBundle, type BundleRunner, type ClassifyResult, type Prediction } from '../../src/runtime/bundle-runner.js';
import { prepareBatch, type TensorData } from '../../src/backends/image.js';
import { InputError } from '../../src/util/errors.js';
import {
  FIXTURES,
  ZOO,
  argmax,
  fmnistImages,
  marginOf,
  maxProb,
  normEntropy,
  randomTensor,
  referenceExit,
  referenceLogits,
  scratch,
  splitThreshold,
} from './helpers.js';

let dir: string;
let bundle: string;
let keys: { privateKey: string; publicKey: string };
let otherKeys: { privateKey: string; publicKey: string };
let runner: BundleRunner;
let images: string[];
/** exits[k][i]: the original model's logits of image i at exit k. */
let exits: number[][][];

// Most tests load edited, unsigned copies: they opt out of the signature check explicitly.
const quiet = { threads: 1, onWarning: () => {}, allowUnsigned: true };

/** The error `p` rejects with (fails the test when it resolves). */
async function failure(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );
}

function preds(r: ClassifyResult): Prediction[] {
  const ok = r.items.filter((i): i is Prediction => i.ok);
  expect(ok).toHaveLength(r.items.length);
  return ok;
}

beforeAll(async () => {
  dir = await scratch('runner');
  keys = await generateKeyPair(path.join(dir, 'keys', 'fleet'));
  otherKeys = await generateKeyPair(path.join(dir, 'keys', 'other'));
  const model = path.join(dir, 'fmnist-branchy.onnx');
  await fsp.copyFile(ZOO, model); // the zoo model may be retrained while tests run
  bundle = path.join(dir, 'branchy');
  const r = await compileModel({ model, device: 'rpi4', precision: 'fp32', out: bundle, key: keys.privateKey });
  runner = await loadBundle(bundle, { ...quiet, publicKey: keys.publicKey });
  images = await fmnistImages(4);
  const batch = await prepareBatch(images, r.manifest.input.preprocess);
  expect(batch.failures).toEqual([]);
  const ref = await referenceLogits(model, r.manifest.input.name, batch.tensor);
  exits = r.manifest.stages.map((s) => ref[s.exit]!);
}, 120_000);

afterAll(async () => {
  await runner?.close();
});

describe('loadBundle + classify (fmnist-branchy, fp32)', () => {
  it('verifies the signature and opens one session per stage', () => {
    expect(runner.signature.status).toBe('valid');
    expect(runner.manifest.stages).toHaveLength(3);
    expect(runner.device).toBe('rpi4');
    expect(runner.executionProviders).toEqual(['cpu']);
  });

  it('with thresholds null runs everything to the last exit and equals the original exit_2 argmax', async () => {
    const r = await runner.classify(images, { thresholds: null });
    const p = preds(r);
    expect(p.map((x) => x.exit)).toEqual(images.map(() => 2));
    expect(p.map((x) => x.classIndex)).toEqual(exits[2]!.map(argmax));
    p.forEach((x, i) => {
      expect(x.confidence).toBeCloseTo(maxProb(exits[2]![i]!), 5);
      expect(x.label).toBe(runner.manifest.labels[x.classIndex]);
      expect(x.exitName).toBe('exit_2');
      expect(x.name).toBe(images[i]);
      // The stages ran joined into one session (loadBundle's `chain`): no time per stage.
      expect(x.stageLatencyMs).toEqual([]);
      expect(x.latencyMs).toBeGreaterThan(0);
    });
    expect(r.exitCounts).toEqual([0, 0, images.length]);
    expect(r.timing.batches).toBe(1);
  });

  it('with a max-prob threshold of 0 everything leaves at exit 0 and equals the original exit_0 argmax', async () => {
    const r = await runner.classify(images, { thresholds: [0, 0], batchSize: 7 });
    const p = preds(r);
    expect(p.every((x) => x.exit === 0 && x.stageLatencyMs.length === 1)).toBe(true);
    expect(p.map((x) => x.classIndex)).toEqual(exits[0]!.map(argmax));
    expect(r.timing.stageMs.slice(1)).toEqual([0, 0]);
  });

  it('an intermediate threshold picks the exit the rule gives, identically at batch 1, 16 and all', async () => {
    const t = [splitThreshold(exits[0]!.map((l) => maxProb(l)), 0.4), splitThreshold(exits[1]!.map((l) => maxProb(l)), 0.5)];
    const want = images.map((_, i) => referenceExit(exits, i, t, (l) => maxProb(l)));
    expect(new Set(want)).toEqual(new Set([0, 1, 2])); // every exit is exercised
    const results: Prediction[][] = [];
    for (const batchSize of [1, 16, undefined]) {
      const p = preds(await runner.classify(images, { thresholds: t, ...(batchSize ? { batchSize } : {}) }));
      expect(p.map((x) => x.exit)).toEqual(want);
      expect(p.map((x) => x.classIndex)).toEqual(want.map((k, i) => argmax(exits[k]![i]!)));
      p.forEach((x, i) => expect(x.confidence).toBeCloseTo(maxProb(exits[want[i]!]![i]!), 5));
      results.push(p);
    }
    for (const p of results.slice(1)) {
      expect(p.map((x) => [x.exit, x.classIndex, x.name])).toEqual(results[0]!.map((x) => [x.exit, x.classIndex, x.name]));
      p.forEach((x, i) => expect(x.confidence).toBeCloseTo(results[0]![i]!.confidence, 6));
    }
  });

  it('entropy (normalised, exit when ≤ t) and margin (exit when ≥ t) follow their rules', async () => {
    const te = [splitThreshold(exits[0]!.map((l) => normEntropy(l)), 0.5), splitThreshold(exits[1]!.map((l) => normEntropy(l)), 0.5)];
    const pe = preds(await runner.classify(images, { metric: 'entropy', thresholds: te, batchSize: 16 }));
    const wantE = images.map((_, i) => referenceExit(exits, i, te, (l) => normEntropy(l), true));
    expect(new Set(wantE).size).toBeGreaterThan(1);
    expect(pe.map((x) => x.exit)).toEqual(wantE);
    pe.forEach((x, i) => expect(x.score).toBeCloseTo(normEntropy(exits[x.exit]![i]!), 5));

    const tm = [splitThreshold(exits[0]!.map((l) => marginOf(l)), 0.3), splitThreshold(exits[1]!.map((l) => marginOf(l)), 0.3)];
    const pm = preds(await runner.classify(images, { metric: 'margin', thresholds: tm, batchSize: 16 }));
    const wantM = images.map((_, i) => referenceExit(exits, i, tm, (l) => marginOf(l)));
    expect(new Set(wantM).size).toBeGreaterThan(1);
    expect(pm.map((x) => x.exit)).toEqual(wantM);
    pm.forEach((x, i) => expect(x.score).toBeCloseTo(marginOf(exits[x.exit]![i]!), 5));
  });

  it('a temperature scales the softmax: confidence = max softmax(logits / T)', async () => {
    const base = preds(await runner.classify(images, { thresholds: null }));
    const hot = preds(await runner.classify(images, { thresholds: null, temperatures: [1, 1, 3] }));
    hot.forEach((x, i) => {
      expect(x.classIndex).toBe(base[i]!.classIndex); // T > 0 never changes the argmax
      expect(x.confidence).toBeCloseTo(maxProb(exits[2]![i]!, 3), 5);
      expect(x.confidence).toBeLessThanOrEqual(base[i]!.confidence + 1e-12);
    });
    expect(hot.some((x, i) => x.confidence < base[i]!.confidence - 0.01)).toBe(true);
    // A temperature on an early exit changes which samples leave there.
    const t = [0.9, 0.9];
    const cold = preds(await runner.classify(images, { thresholds: t, temperatures: [0.25, 1, 1] }));
    expect(cold.map((x) => x.exit)).toEqual(images.map((_, i) => referenceExit(exits.map((e, k) => e.map((l) => l.map((v) => v / [0.25, 1, 1][k]!))), i, t, (l) => maxProb(l))));
  });

  it('reports a corrupt image by name and classifies the others', async () => {
    const broken = path.join(dir, 'broken.png');
    await fsp.writeFile(broken, Buffer.from('\x89PNG\r\n\x1a\nthis is not really a png'));
    const missing = path.join(dir, 'missing.png');
    const list = [images[0]!, broken, images[1]!, missing, images[2]!];
    for (const batchSize of [1, 2, undefined]) {
      const r = await runner.classify(list, { thresholds: null, ...(batchSize ? { batchSize } : {}) });
      expect(r.items.map((i) => i.index)).toEqual([0, 1, 2, 3, 4]);
      expect(r.items.map((i) => i.ok)).toEqual([true, false, true, false, true]);
      const bad = r.items[1]!;
      if (bad.ok) throw new Error('unreachable');
      expect(bad.name).toBe(broken);
      expect(bad.error.message).toContain('broken.png');
      expect(bad.error).toBeInstanceOf(InputError);
      const ok = r.items.filter((i): i is Prediction => i.ok);
      expect(ok.map((x) => x.classIndex)).toEqual([0, 1, 2].map((i) => argmax(exits[2]![i]!)));
    }
  });

  it('refuses thresholds outside the metric range, naming the exit and the range', async () => {
    await expect(runner.classify(images.slice(0, 1), { thresholds: [0.5, 1.2] })).rejects.toThrow(/threshold for exit 1 \(exit_1\): expected a number in \[0, 1\] for max-prob/);
    await expect(runner.classify(images.slice(0, 1), { metric: 'entropy', thresholds: [-1, 0.5] })).rejects.toThrow(/exit 0 \(exit_0\).*entropy/);
    await expect(runner.classify(images.slice(0, 1), { thresholds: [0.5] })).rejects.toThrow(/expected 2 values/);
    await expect(runner.classify(images.slice(0, 1), { batchSize: 0 })).rejects.toThrow(/batch size/);
    await expect(runner.classify({ data: new Float32Array(10), dims: [1, 10] })).rejects.toThrow(/NCHW dims \[N,1,28,28\]/);
  });

  it('refuses a tampered stage, naming the file, and a bundle signed with another key', async () => {
    const copy = path.join(dir, 'tampered');
    await fsp.cp(bundle, copy, { recursive: true });
    const stage = path.join(copy, 'stage-1.onnx');
    const bytes = await fsp.readFile(stage);
    bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0xff;
    await fsp.writeFile(stage, bytes);
    const err = await loadBundle(copy, quiet).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleIntegrityError);
    expect((err as Error).message).toMatch(/stage-1\.onnx: content does not match the manifest/);
    await expect(loadBundle(bundle, { ...quiet, publicKey: otherKeys.publicKey })).rejects.toThrow(BundleIntegrityError);
    await expect(loadBundle(bundle, { ...quiet, requireSignature: true })).rejects.toThrow(/manifest\.sig: signature NOT checked: signed with key sha256:[0-9a-f]+, which is not in the trust store/);
  });
});

describe('loading options', () => {
  // An unsigned copy whose manifest can be edited (only the signature covers manifest.json).
  async function editedCopy(label: string, edit: (m: Record<string, any>) => void): Promise<string> {
    const copy = path.join(dir, label);
    await fsp.cp(bundle, copy, { recursive: true });
    await fsp.rm(path.join(copy, 'manifest.sig'));
    const file = path.join(copy, 'manifest.json');
    const m = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, any>;
    edit(m);
    await fsp.writeFile(file, JSON.stringify(m, null, 2));
    return copy;
  }

  it('runs a packed .tar bundle the same as the folder', async () => {
    const tar = path.join(dir, 'branchy.tar');
    await packBundle(bundle, tar);
    const r = await loadBundle(tar, { ...quiet, publicKey: keys.publicKey });
    try {
      const p = preds(await r.classify(images.slice(0, 5), { thresholds: null }));
      expect(p.map((x) => x.classIndex)).toEqual(exits[2]!.slice(0, 5).map(argmax));
    } finally {
      await r.close();
    }
  });

  it('uses the manifest thresholds by default, and wants new ones when the metric changes', async () => {
    const copy = await editedCopy('calibrated', (m) => (m.exitPolicy.thresholds = [0.9, 0.9]));
    const r = await loadBundle(copy, quiet);
    try {
      const p = preds(await r.classify(images));
      expect(p.map((x) => x.exit)).toEqual(images.map((_, i) => referenceExit(exits, i, [0.9, 0.9], (l) => maxProb(l))));
      await expect(r.classify(images, { metric: 'entropy' })).rejects.toThrow(/calibrated for max-prob; give thresholds for entropy/);
      expect(preds(await r.classify(images, { metric: 'entropy', thresholds: null })).every((x) => x.exit === 2)).toBe(true);
    } finally {
      await r.close();
    }
  });

  it('warns once (not per stage) when a provider falls back, and when the target device is unknown', async () => {
    const lines: string[] = [];
    const cudaHere = availableExecutionProviders().find((p) => p.name === 'cuda')?.installed;
    const r = await loadBundle(bundle, { threads: 1, executionProviders: ['cuda', 'cpu'], publicKey: keys.publicKey, onWarning: (l) => lines.push(l) });
    await r.close();
    if (!cudaHere) {
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/execution provider 'cuda' skipped/);
      expect(r.executionProviders).toEqual(['cpu']);
    }
    const copy = await editedCopy('unknown-device', (m) => (m.target.device = 'mystery-board'));
    const warned: string[] = [];
    const u = await loadBundle(copy, { allowUnsigned: true, onWarning: (l) => warned.push(l) });
    await u.close();
    expect(u.device).toBeNull();
    expect(warned.join('\n')).toMatch(/device profile 'mystery-board' \(the bundle's target\) is not known here/);
    await expect(loadBundle(bundle, { device: 'no-such-board', publicKey: keys.publicKey })).rejects.toThrow(/unknown device profile "no-such-board"/);
    const x = await loadBundle(bundle, { device: 'x86-host', threads: 1, warmup: false, publicKey: keys.publicKey });
    await x.close();
    expect(x.device).toBe('x86-host');
  });

  it('bad input: a bundle of another manifest format says which side is out of date and what to do', async () => {
    const newer = await editedCopy('format-2', (m) => {
      m.formatVersion = 2;
      m.provenance.edgeexitVersion = '9.0.0';
      m.newSection = { whatever: true }; // a newer format's additions must not bury the version
    });
    const err = await failure(loadBundle(newer, quiet));
    expect(err).toBeInstanceOf(BundleIntegrityError);
    expect(err.message.split('\n')[1]).toBe(
      '  - manifest.json: formatVersion: the bundle is manifest format 2, written by edgeexit 9.0.0, newer than this edgeexit reads;' +
        ' expected format 1 got 2 (fix: re-compile the model with this version of edgeexit, or upgrade edgeexit on this device)',
    );
    const older = await editedCopy('format-0', (m) => (m.formatVersion = 0));
    const old = await failure(loadBundle(older, quiet));
    expect(old).toBeInstanceOf(BundleIntegrityError);
    expect(old.message).toMatch(/manifest\.json: formatVersion: the bundle is manifest format 0, written by edgeexit [^,]+, older than this edgeexit supports \(it reads format 1 only\); expected format 1 got 0 \(fix: re-compile the model with this version of edgeexit\)$/m);
  });

  it('bad input: an RGB raw frame or tensor given to this gray bundle names the channels expected and got', async () => {
    const fix = '(fix: convert it to one gray channel first, or pass the image encoded (PNG/JPEG), which is converted)';
    const r = await runner.classify(
      [
        { kind: 'raw', pixels: { data: new Uint8Array(28 * 28 * 3), width: 28, height: 28, channels: 3 }, name: 'cam0-frame' },
        images[0]!,
        { kind: 'tensor', tensor: { data: new Float32Array(3 * 28 * 28), dims: [1, 3, 28, 28] }, name: 'rgb-tensor' },
        { kind: 'raw', pixels: { data: new Uint8Array(64 * 48 * 3), width: 64, height: 48, channels: 3 }, name: 'cam1-frame' },
      ],
      { thresholds: null },
    );
    expect(r.items.map((i) => i.ok)).toEqual([false, true, false, false]);
    const messages = r.items.map((i) => (i.ok ? null : i.error));
    for (const e of [messages[0], messages[2], messages[3]]) expect(e).toBeInstanceOf(InputError);
    expect(messages[0]!.message).toBe(`cam0-frame: raw frame has the wrong number of channels; expected 1 (colorspace gray in the model's preprocess spec) got 3 (28×28×3 pixels) ${fix}`);
    expect(messages[2]!.message).toBe(`rgb-tensor: tensor has the wrong number of channels; expected 1 (colorspace gray in the model's preprocess spec) got 3 (dims [1,3,28,28]) ${fix}`);
    // Not silently converted by sharp on the way to being resized either.
    expect(messages[3]!.message).toBe(`cam1-frame: raw frame has the wrong number of channels; expected 1 (colorspace gray in the model's preprocess spec) got 3 (64×48×3 pixels) ${fix}`);
    const whole = await failure(runner.classify({ data: new Float32Array(2 * 3 * 28 * 28), dims: [2, 3, 28, 28] }));
    expect(whole).toBeInstanceOf(InputError);
    expect(whole.message).toBe(`input tensor for ${bundle}: tensor has the wrong number of channels; expected 1 (colorspace gray in the model's preprocess spec) got 3 (dims [2,3,28,28]) ${fix}`);
  });

  it('bad input: thresholds out of range, of the wrong type or count are refused with the range and the fix', async () => {
    const e1 = await failure(runner.classify(images.slice(0, 1), { thresholds: [90, 0.5] }));
    expect(e1).toBeInstanceOf(InputError);
    expect(e1.message).toBe(
      'exit policy: 1 problem\n  - threshold for exit 0 (exit_0): expected a number in [0, 1] for max-prob (largest softmax probability; exit when ≥ threshold), got 90' +
        ' (fix: pick one inside the range (1 lets only certain samples leave, 0 lets all); 90 looks like a percentage: write 0.9)',
    );
    const e2 = await failure(runner.classify(images.slice(0, 1), { metric: 'entropy', thresholds: [0.2, Number.NaN] }));
    expect(e2).toBeInstanceOf(InputError);
    expect(e2.message).toContain('threshold for exit 1 (exit_1): expected a number in [0, 1] for entropy (softmax entropy / ln(classes), 0 = certain; exit when ≤ threshold), got null (fix: pick one inside the range (0 lets only certain samples leave, 1 lets all))');
    const e3 = await failure(runner.classify(images.slice(0, 1), { thresholds: 0.5 as unknown as number[] }));
    expect(e3).toBeInstanceOf(InputError);
    expect(e3.message).toContain('thresholds: expected an array of 2 numbers, or null, got 0.5 (fix: give one threshold per exit but the last, or null (CLI: leave --threshold out) to run every sample to the last exit)');
    const e4 = await failure(runner.classify(images.slice(0, 1), { thresholds: [0.5] }));
    expect(e4).toBeInstanceOf(InputError);
    expect(e4.message).toContain('thresholds: expected 2 values, one per exit but the last (exit_0, exit_1); the last exit always answers, got 1 ([0.5]) (fix: give one threshold per exit but the last');
  });
});

describe('a tensor carried past a stage that does not read it (resnet fixture, RGB)', () => {
  let rr: BundleRunner;
  let input: TensorData;
  let ref: number[][][];

  beforeAll(async () => {
    const out = path.join(await scratch('runner-resnet'), 'b');
    const r = await compileModel({
      model: path.join(FIXTURES, 'resnet-exits.onnx'),
      device: 'rpi4',
      precision: 'fp32',
      out,
      preprocess: path.join(FIXTURES, 'resnet-exits.preprocess.json'),
      labels: path.join(FIXTURES, 'resnet-exits.labels.txt'),
    });
    // The point of this fixture: stage 1 does not read a tensor stage 2 needs.
    const [s0, s1, s2] = r.manifest.stages;
    const skipped = s0!.carry.find((t) => !s1!.inputs.includes(t) && s2!.inputs.includes(t));
    expect(skipped).toBeDefined();
    expect(s1!.carry).toContain(skipped);
    rr = await loadBundle(out, quiet);
    input = randomTensor([40, 3, 16, 16], 7);
    const logits = await referenceLogits(path.join(FIXTURES, 'resnet-exits.onnx'), r.manifest.input.name, input);
    ref = r.manifest.stages.map((s) => logits[s.exit]!);
  }, 120_000);

  afterAll(async () => {
    await rr?.close();
  });

  it('batched dropping gives the exits and classes of the rule and of batch 1', async () => {
    const t = [splitThreshold(ref[0]!.map((l) => maxProb(l)), 0.3), splitThreshold(ref[1]!.map((l) => maxProb(l)), 0.4)];
    const want = ref[0]!.map((_, i) => referenceExit(ref, i, t, (l) => maxProb(l)));
    expect(new Set(want)).toEqual(new Set([0, 1, 2]));
    for (const batchSize of [1, 16, undefined]) {
      const r = await rr.classify(input, { thresholds: t, ...(batchSize ? { batchSize } : {}) });
      const p = preds(r);
      expect(p.map((x) => x.exit)).toEqual(want);
      expect(p.map((x) => x.classIndex)).toEqual(want.map((k, i) => argmax(ref[k]![i]!)));
      expect(p[3]!.name).toBe('row #3');
    }
  });

  it('bad input: a gray raw frame or tensor given to this RGB bundle names the channels expected and got', async () => {
    const r = await rr.classify([
      { kind: 'raw', pixels: { data: new Uint8Array(16 * 16), width: 16, height: 16, channels: 1 }, name: 'gray-frame' },
      { kind: 'tensor', tensor: { data: new Float32Array(16 * 16), dims: [1, 16, 16] }, name: 'gray-tensor' },
    ]);
    const fix = '(fix: give 3 channels (rgb) in that order, or pass the image encoded (PNG/JPEG), which is converted)';
    const errs = r.items.map((i) => (i.ok ? null : i.error));
    for (const e of errs) expect(e).toBeInstanceOf(InputError);
    expect(errs[0]!.message).toBe(`gray-frame: raw frame has the wrong number of channels; expected 3 (colorspace rgb in the model's preprocess spec) got 1 (16×16×1 pixels) ${fix}`);
    expect(errs[1]!.message).toBe(`gray-tensor: tensor has the wrong number of channels; expected 3 (colorspace rgb in the model's preprocess spec) got 1 (dims [1,16,16]) ${fix}`);
  });
});
