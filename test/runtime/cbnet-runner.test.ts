// Running cbnet bundles on real onnxruntime and real Fashion-MNIST PNGs. The references are the
// zoo's own files run directly: pipeline.onnx (converter and classifier in one graph) for the
// cbnet policy, classifier.onnx on the raw image for the hybrid's first exit point, and the exit
// rule recomputed naively (helpers.ts) for intermediate thresholds. Batch 16 must give what
// batch 1 gives, since the hybrid drops exited rows before the converter.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { compileModel } from '../../src/compiler/index.js';
import { validateManifest } from '../../src/bundle/index.js';
import { loadBundle, type BundleRunner, type ClassifyResult, type Prediction } from '../../src/runtime/bundle-runner.js';
import { prepareBatch } from '../../src/backends/image.js';
import { EXIT_METRICS } from '../../src/runtime/exit-policy.js';
import { InputError, ValidationError } from '../../src/util/errors.js';
import { runCli } from '../cli/helpers.js';
import { REPO, ZOO, argmax, fmnistImages, maxProb, normEntropy, referenceExit, referenceLogits, scratch, splitThreshold } from './helpers.js';

const CBNET = path.join(REPO, 'models', 'fmnist-cbnet');
const quiet = { threads: 1, onWarning: () => {}, allowUnsigned: true }; // unsigned test bundles, by choice

let dir: string;
let bundle: string;
let runner: BundleRunner;
let images: string[];
/** Logits of pipeline.onnx (converter → classifier) and of classifier.onnx on the raw images. */
let pipe: number[][];
let raw: number[][];

function preds(r: ClassifyResult): Prediction[] {
  const ok = r.items.filter((i): i is Prediction => i.ok);
  expect(ok).toHaveLength(r.items.length);
  return ok;
}

/** Everything a sample's answer consists of, minus timings. */
const answer = (p: Prediction) => ({ exit: p.exit, exitName: p.exitName, classIndex: p.classIndex, runs: p.runs });

beforeAll(async () => {
  dir = await scratch('cbnet-run');
  // A private copy: the zoo may be retrained while tests run.
  const model = path.join(dir, 'fmnist-cbnet');
  await fsp.mkdir(model);
  for (const f of ['converter.onnx', 'classifier.onnx', 'pipeline.onnx']) await fsp.copyFile(path.join(CBNET, f), path.join(model, f));
  bundle = path.join(dir, 'bundle');
  const r = await compileModel({ model, device: 'rpi4', precision: 'fp32', out: bundle, calibrationLimit: 32, latency: false });
  expect(r.manifest.kind).toBe('cbnet');
  runner = await loadBundle(bundle, quiet);
  images = await fmnistImages(10);
  const batch = await prepareBatch(images, r.manifest.input.preprocess);
  expect(batch.failures).toEqual([]);
  pipe = (await referenceLogits(path.join(model, 'pipeline.onnx'), 'image', batch.tensor)).cbnet!;
  raw = (await referenceLogits(path.join(model, 'classifier.onnx'), 'image', batch.tensor)).exit_0!;
  expect(pipe).toHaveLength(100);
}, 180_000);

afterAll(async () => {
  await runner?.close();
});

describe('cbnet bundles: policy cbnet (converter → classifier)', () => {
  it.each([1, 16])('batch %i: is the default, and predictions equal pipeline.onnx argmax on 100 images', async (batchSize) => {
    const r = await runner.classify(images, { batchSize });
    expect(r.policy).toBe('cbnet');
    expect(r.exitNames).toEqual(['classifier<-converter']);
    expect(r.thresholds).toBeNull();
    expect(r.exitCounts).toEqual([100]);
    const p = preds(r);
    expect(p.map((x) => x.classIndex)).toEqual(pipe.map(argmax));
    p.forEach((x, i) => {
      expect(answer(x)).toEqual({ exit: 0, exitName: 'classifier<-converter', classIndex: argmax(pipe[i]!), runs: ['converter', 'classifier<-converter'] });
      expect(x.confidence).toBeCloseTo(maxProb(pipe[i]!), 4);
      expect(x.stageLatencyMs).toHaveLength(2);
      expect(x.latencyMs).toBeGreaterThanOrEqual(x.stageLatencyMs[0]! + x.stageLatencyMs[1]! - 1e-9);
    });
    expect(r.timing.runs!.map((x) => [x.name, x.rows])).toEqual([
      ['converter', 100],
      ['classifier<-converter', 100],
    ]);
    expect(r.timing.batches).toBe(Math.ceil(100 / batchSize));
    expect(r.timing.stageMs.every((ms) => ms > 0)).toBe(true);
  });

  it('refuses thresholds (its one exit point always answers), naming the hybrid', async () => {
    await expect(runner.classify(images.slice(0, 1), { policy: 'cbnet', thresholds: [0.9] })).rejects.toThrow(/policy cbnet has one exit point.*hybrid/);
  });
});

describe('cbnet bundles: policy hybrid (classifier on the image; converter only for the rest)', () => {
  it('threshold 0: every sample exits at the classifier on the raw image = classifier.onnx, and the converter never runs', async () => {
    for (const batchSize of [1, 16]) {
      const r = await runner.classify(images, { policy: 'hybrid', thresholds: [0], batchSize });
      expect(r.exitNames).toEqual(['classifier<-image', 'classifier<-converter']);
      expect(r.exitCounts).toEqual([100, 0]);
      const p = preds(r);
      p.forEach((x, i) => {
        expect(answer(x)).toEqual({ exit: 0, exitName: 'classifier<-image', classIndex: argmax(raw[i]!), runs: ['classifier<-image'] });
        expect(x.confidence).toBeCloseTo(maxProb(raw[i]!), 4);
      });
      expect(r.timing.runs!.map((x) => x.name)).toEqual(['classifier<-image']);
    }
  });

  it('threshold 1 (top of the max-prob range) and null thresholds: equal the cbnet policy', async () => {
    const cbnet = preds(await runner.classify(images, { policy: 'cbnet' }));
    const top = preds(await runner.classify(images, { policy: 'hybrid', thresholds: [1], batchSize: 16 }));
    top.forEach((x, i) => {
      // Only a softmax that rounds to exactly 1.0 in double clears 1; the rule decides, not luck.
      if (maxProb(raw[i]!) >= 1) expect(answer(x)).toMatchObject({ exit: 0, classIndex: argmax(raw[i]!) });
      else expect(answer(x)).toEqual({ ...answer(cbnet[i]!), exit: 1, runs: ['classifier<-image', 'converter', 'classifier<-converter'] });
    });
    const none = preds(await runner.classify(images, { policy: 'hybrid', thresholds: null, batchSize: 16 }));
    // Null thresholds skip the pointless first run: the hybrid then costs what cbnet costs.
    none.forEach((x, i) => expect(answer(x)).toEqual({ ...answer(cbnet[i]!), exit: 1 }));
    none.forEach((x, i) => expect(x.confidence).toBeCloseTo(cbnet[i]!.confidence, 6));
  });

  it('intermediate max-prob threshold: each sample takes the path the rule gives on classifier.onnx softmax; batch 16 = batch 1', async () => {
    const t = splitThreshold(raw.map((l) => maxProb(l)), 0.4);
    const b1 = preds(await runner.classify(images, { policy: 'hybrid', thresholds: [t], batchSize: 1 }));
    const r16 = await runner.classify(images, { policy: 'hybrid', thresholds: [t], batchSize: 16 });
    const b16 = preds(r16);
    const expected = images.map((_, i) => referenceExit([raw, pipe], i, [t], (l) => maxProb(l)));
    expect(new Set(expected)).toEqual(new Set([0, 1]));
    expect(b1.map((x) => x.exit)).toEqual(expected);
    b1.forEach((x, i) => {
      const ref = expected[i] === 0 ? raw[i]! : pipe[i]!;
      expect(x.classIndex).toBe(argmax(ref));
      expect(x.confidence).toBeCloseTo(maxProb(ref), 4);
      expect(x.runs).toEqual(expected[i] === 0 ? ['classifier<-image'] : ['classifier<-image', 'converter', 'classifier<-converter']);
    });
    expect(b16.map(answer)).toEqual(b1.map(answer));
    b16.forEach((x, i) => expect(x.confidence).toBeCloseTo(b1[i]!.confidence, 5));
    // Exited rows are dropped before the converter: it ran only on the samples that fell through.
    const falls = expected.filter((e) => e === 1).length;
    expect(r16.exitCounts).toEqual([100 - falls, falls]);
    expect(r16.timing.runs!.map((x) => [x.name, x.rows])).toEqual([
      ['classifier<-image', 100],
      ['converter', falls],
      ['classifier<-converter', falls],
    ]);
  });

  it('entropy metric: exits where the normalised entropy of classifier.onnx is ≤ the threshold', async () => {
    const t = splitThreshold(raw.map((l) => normEntropy(l)), 0.5);
    const r = await runner.classify(images, { policy: 'hybrid', metric: 'entropy', thresholds: [t], batchSize: 16 });
    expect(r.metric).toBe('entropy');
    expect(preds(r).map((x) => x.exit)).toEqual(images.map((_, i) => referenceExit([raw, pipe], i, [t], (l) => normEntropy(l), true)));
  });

  it('counts thresholds per exit point of the hybrid', async () => {
    await expect(runner.classify(images.slice(0, 1), { policy: 'hybrid', thresholds: [0.5, 0.5] })).rejects.toThrow(/1 value.*classifier<-image/);
  });
});

describe('manifest exitPolicy.metric', () => {
  it('accepts the runtime registry\'s metrics; a bundle with entropy thresholds and default hybrid validates and runs as the rule says', async () => {
    const manifestPath = path.join(bundle, 'manifest.json');
    const m = JSON.parse(await fsp.readFile(manifestPath, 'utf8'));
    for (const metric of EXIT_METRICS) expect(validateManifest({ ...m, exitPolicy: { ...m.exitPolicy, metric } }).exitPolicy.metric).toBe(metric);
    let err: unknown;
    try {
      validateManifest({ ...m, exitPolicy: { ...m.exitPolicy, metric: 'variance' } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(/exitPolicy\.metric.*"max-prob", "entropy", "margin"/);

    // The manifest is not among the hashed files and this bundle is unsigned, so editing it in a copy is enough.
    const copy = path.join(dir, 'entropy-bundle');
    await fsp.cp(bundle, copy, { recursive: true });
    const t = splitThreshold(raw.map((l) => normEntropy(l)), 0.3);
    const edited = { ...m, exitPolicy: { metric: 'entropy', thresholds: [t], temperatures: [1, 1] }, pipeline: { ...m.pipeline, default: 'hybrid' } };
    expect(validateManifest(edited).exitPolicy.metric).toBe('entropy');
    await fsp.writeFile(path.join(copy, 'manifest.json'), JSON.stringify(edited, null, 2) + '\n');
    const r2 = await loadBundle(copy, quiet);
    try {
      const r = await r2.classify(images, { batchSize: 16 });
      expect([r.policy, r.metric, r.thresholds]).toEqual(['hybrid', 'entropy', [t]]);
      expect(preds(r).map((x) => x.exit)).toEqual(images.map((_, i) => referenceExit([raw, pipe], i, [t], (l) => normEntropy(l), true)));
      // A different metric without thresholds would misread the entropy thresholds.
      await expect(r2.classify(images.slice(0, 1), { metric: 'max-prob' })).rejects.toThrow(/calibrated for entropy/);
    } finally {
      await r2.close();
    }
  });
});

describe('edgeexit run --policy', () => {
  it('cbnet bundle: --policy hybrid --threshold prints the exit point per image and the runs', async () => {
    const shirts = path.join(REPO, 'calibration', 'fashion-mnist', 'shirt');
    const files = (await fsp.readdir(shirts)).sort().slice(0, 5).map((f) => path.join(shirts, f));
    const r = await runCli('run', bundle, '--allow-unsigned', ...files, '--policy', 'hybrid', '--threshold', '0.9', '--threads', '1', '--json');
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(5);
    for (const l of lines) {
      expect(l.policy).toBe('hybrid');
      expect(l.exitName).toBe(['classifier<-image', 'classifier<-converter'][l.exit as number]);
      expect((l.runs as string[]).length).toBe((l.stageLatencyMs as number[]).length);
    }
    const table = await runCli('run', bundle, '--allow-unsigned', ...files, '--policy', 'hybrid', '--threshold', '0.9', '--threads', '1');
    expect(table.code).toBe(0);
    expect(table.out).toContain('run order hybrid');
    expect(table.out).toMatch(/runs {6}classifier<-image [\d.]+ ms on 5 images/);
  });

  it('multi-exit bundle: --policy is refused, saying only cbnet bundles take it and what to use instead', async () => {
    const multi = path.join(dir, 'multi');
    await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: multi, latency: false });
    const img = images[0]!;
    const r = await runCli('run', multi, '--allow-unsigned', img, '--policy', 'hybrid', '--threads', '1');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--policy hybrid: only cbnet bundles take --policy \(cbnet or hybrid\).*multi-exit.*exit_0, exit_1, exit_2.*drop --policy/);
    const m = await loadBundle(multi, quiet);
    try {
      await expect(m.classify([img], { policy: 'cbnet' })).rejects.toThrow(InputError);
      await expect(m.classify([img], { policy: 'cbnet' })).rejects.toThrow(/only cbnet bundles have run-order policies/);
    } finally {
      await m.close();
    }
  }, 120_000);
});
