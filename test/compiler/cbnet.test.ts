// `compile` of a CBNet folder (converter.onnx + classifier.onnx) into one bundle of kind cbnet:
// at fp32 each stage reproduces its source file and the manifest carries the pipeline; int8 for
// rpi4 keeps both paths (classifier on the image, converter → classifier) within 1 pp of float on
// 300 calibration images with smaller stages; a folder missing a file fails naming what a CBNet
// folder must hold and leaves nothing behind; latency columns appear when asked for.
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { InputError } from '../../src/util/errors.js';
import { createSession, type PlainTensor } from '../../src/backends/onnxruntime.js';
import { prepareBatch } from '../../src/backends/image.js';
import { scanImageFolder } from '../../src/data/imagefolder.js';
import { compileModel, type CompileReport } from '../../src/compiler/index.js';
import { validateManifest, verifyBundle, type Manifest } from '../../src/bundle/index.js';
import { randomImages } from '../../src/compiler/check.js';
import { runCli } from '../cli/helpers.js';
import { REPO, entries, fingerprint, scratch } from './helpers.js';

const CBNET = path.join(REPO, 'models', 'fmnist-cbnet');
const CALIB = path.join(REPO, 'calibration', 'fashion-mnist');

/** A private copy of the pair, so a retraining run rewriting the zoo cannot change it mid-test. */
async function cbnetCopy(dir: string): Promise<string> {
  const to = path.join(dir, 'fmnist-cbnet');
  await fsp.mkdir(to);
  for (const f of ['converter.onnx', 'classifier.onnx']) await fsp.copyFile(path.join(CBNET, f), path.join(to, f));
  return to;
}

async function maxAbsDiff(a: Uint8Array | string, b: Uint8Array | string, feeds: Record<string, PlainTensor>): Promise<number> {
  const sa = await createSession(a);
  const sb = await createSession(b);
  try {
    const ra = await sa.run(feeds);
    const rb = await sb.run(feeds);
    expect(Object.keys(rb).sort()).toEqual(Object.keys(ra).sort());
    let m = 0;
    for (const k of Object.keys(ra)) {
      const x = ra[k]!.data as Float32Array;
      const y = rb[k]!.data as Float32Array;
      expect(rb[k]!.dims).toEqual(ra[k]!.dims);
      for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
    }
    return m;
  } finally {
    await sa.close();
    await sb.close();
  }
}

let dir: string;
let model: string;
beforeAll(async () => {
  dir = await scratch('cbnet');
  model = await cbnetCopy(dir);
});

describe('compile a CBNet folder', () => {
  it('fp32: one cbnet bundle whose stages reproduce converter.onnx and classifier.onnx (≤ 1e-5), with the pipeline in the manifest', async () => {
    const out = path.join(dir, 'fp32');
    const r = await compileModel({ model, device: 'rpi4', out, precision: 'fp32', calibrationLimit: 64, latency: false });
    const v = await verifyBundle(out);
    const m: Manifest = v.manifest;
    expect(m.kind).toBe('cbnet');
    expect(m.target).toEqual({ device: 'rpi4', precision: 'fp32' });
    expect(m.stages.map((s) => s.file)).toEqual(['converter.onnx', 'classifier.onnx']);
    expect(m.stages[0]).toMatchObject({ inputs: ['image'], exit: 'converted', carry: ['image', 'converted'] });
    expect(m.stages[1]).toMatchObject({ inputs: ['image'], exit: 'exit_0', carry: [] });
    expect(m.pipeline).toEqual({
      converter: { stage: 0, input: 'image', output: 'converted' },
      classifier: { stage: 1, input: 'image', exit: 'exit_0', inputFrom: ['image', 'converter'] },
      policies: { cbnet: ['classifier<-converter'], hybrid: ['classifier<-image', 'classifier<-converter'] },
      default: 'cbnet',
    });
    expect(m.exitPolicy).toEqual({ metric: 'max-prob', thresholds: null, temperatures: [1, 1] });
    expect(m.input).toMatchObject({ name: 'image', dtype: 'float32', layout: 'NCHW', preprocess: { colorspace: 'gray', size: [28, 28] } });
    const PRE = m.input.preprocess;
    expect(m.labels).toHaveLength(10);
    // Re-validating the written manifest proves the schema accepts what the compiler writes.
    expect(validateManifest(JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8'))).kind).toBe('cbnet');
    expect(r.report.check.passed).toBe(true);
    expect(r.report.latency).toBeUndefined();
    // The MACs models/train.py counted for the pair (converter + classifier), from its results.json.
    const trained = JSON.parse(await fsp.readFile(path.join(CBNET, 'results.json'), 'utf8')) as { macs: { pair: number } };
    expect(r.report.sourceMacs).toBe(trained.macs.pair);

    // Real images and random ones: each stage against its own source file.
    const folder = await scanImageFolder(CALIB);
    const imgs = await prepareBatch(folder.items.filter((_, i) => i % 300 === 0).map((it) => it.file), PRE);
    for (const t of [imgs.tensor, randomImages(PRE, 4, 3)]) {
      const feeds = { image: { data: t.data, dims: t.dims } };
      expect(await maxAbsDiff(path.join(model, 'converter.onnx'), path.join(out, 'converter.onnx'), feeds)).toBeLessThanOrEqual(1e-5);
      expect(await maxAbsDiff(path.join(model, 'classifier.onnx'), path.join(out, 'classifier.onnx'), feeds)).toBeLessThanOrEqual(1e-5);
      // The classifier stage on the converter's output: the cbnet path.
      const conv = await createSession(path.join(out, 'converter.onnx'));
      const converted = (await conv.run(feeds)).converted!;
      await conv.close();
      expect(await maxAbsDiff(path.join(model, 'classifier.onnx'), path.join(out, 'classifier.onnx'), { image: converted })).toBeLessThanOrEqual(1e-5);
    }
    // fp32 verify: both paths, identical by construction.
    const paths = r.report.cbnet!.verify!.paths;
    expect(paths.map((p) => p.exit)).toEqual(['classifier<-image', 'classifier<-converter']);
    for (const p of paths) expect(p).toMatchObject({ samples: 64, dropPp: 0, agreement: 1 });
  });

  it('int8 for rpi4 on 300 images: both paths within 1 pp of float, stages smaller; the CLI prints the per-path table and latency', async () => {
    const out = path.join(dir, 'int8');
    const r = await runCli('compile', model, '--device', 'rpi4', '--out', out, '--calibration-limit', '300');
    expect(r.code, r.err + r.out).toBe(0);
    expect(r.out).toMatch(/compiled .*fmnist-cbnet .* for rpi4 .*int8/);
    expect(r.out).toMatch(/^\s*classifier<-image\s+\d+\.\d+%\s+\d+\.\d+%/m);
    expect(r.out).toMatch(/^\s*classifier<-converter\s+\d+\.\d+%\s+\d+\.\d+%/m);
    expect(r.out).toMatch(/pipeline\s+cbnet: converter\.onnx → classifier\.onnx; hybrid: classifier<-image, then classifier<-converter/);
    expect(r.out).toMatch(/fp32 ms\s+int8 ms\s+speed-up/);
    expect(r.out).toMatch(/this machine's numbers .* not the target device's/);
    expect(r.err).toMatch(/classifier on those and their 300 converted versions/);
    const v = await verifyBundle(out);
    expect(v.manifest.kind).toBe('cbnet');
    expect(v.manifest.target).toEqual({ device: 'rpi4', precision: 'int8' });
    expect(v.manifest.provenance.quantization).toMatchObject({ scheme: 's8s8-qdq', calibrationImages: 300, calibrationSource: 'calibration/fashion-mnist' });
    const report = JSON.parse(await fsp.readFile(path.join(out, 'report.json'), 'utf8')) as CompileReport;
    const paths = report.cbnet!.verify!.paths;
    expect(paths).toHaveLength(2);
    for (const p of paths) {
      expect(p.samples).toBe(300);
      expect(p.dropPp, `${p.exit}: ${p.floatTop1} → ${p.compiledTop1}`).toBeLessThanOrEqual(1);
      expect(p.agreement).toBeGreaterThan(0.95);
    }
    // The pair is the point of CBNet: converted images classify better than raw ones.
    expect(paths[1]!.floatTop1).toBeGreaterThan(paths[0]!.floatTop1);
    expect(report.quantization!.verify).toEqual(paths);
    for (const s of report.stages) expect(s.bytes).toBeLessThan(s.floatBytes * 0.5);
    const lat = report.latency!;
    expect(lat.stages.map((s) => s.stage)).toEqual(['converter.onnx', 'classifier.onnx']);
    for (const s of lat.stages) {
      expect(s.floatMs).toBeGreaterThan(0);
      expect(s.compiledMs).toBeGreaterThan(0);
    }
  });

  it('int8 over a budget int8 alone misses: the mixed-precision fallback keeps the costliest node(s) float until both paths fit', async () => {
    // minmax on 300 images loses a fraction of a point on one path; a 0 pp budget forces the search.
    const out = path.join(dir, 'int8-mixed');
    const r = await compileModel({ model, device: 'rpi4', out, precision: 'int8', calibrationLimit: 300, calibrationMethod: 'minmax', maxAccuracyDrop: 0, latency: false });
    const q = r.report.quantization!;
    expect(q.keptFloat.length).toBeGreaterThan(0);
    expect(q.evaluations).toBeGreaterThan(1);
    expect(q.verify.map((v) => v.exit)).toEqual(['classifier<-image', 'classifier<-converter']);
    for (const v of q.verify) expect(v.dropPp, v.exit).toBeLessThanOrEqual(0);
    expect(r.report.cbnet!.verify!.paths).toEqual(q.verify);
    for (const k of q.keptFloat) {
      expect(q.stages[k.stage]!.float).toContainEqual(expect.objectContaining({ node: k.node, reason: 'kept float (mixed precision)' }));
      expect(r.report.notes).toContainEqual(expect.stringMatching(new RegExp(`^kept '${k.node}' .*float: costliest to quantise`)));
    }
    const v = await verifyBundle(out);
    expect(v.manifest.provenance.quantization!.keptFloat).toEqual(q.keptFloat.map((k) => k.node));
    // Without the fallback the same budget is missed, and nothing is written.
    const err = await compileModel({ model, device: 'rpi4', out: path.join(dir, 'int8-nomixed'), precision: 'int8', calibrationLimit: 300, calibrationMethod: 'minmax', maxAccuracyDrop: 0, mixedPrecision: false, latency: false }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/loses more than 0 pp top-1 on 300 images.*\n {2}- stage 1 exit 'classifier<-(image|converter)'/);
    expect(await entries(dir)).not.toContain('int8-nomixed');
  }, 120_000);

  it('fp16: both stages half-size, float32 at the boundaries, both paths within 1 pp', async () => {
    const r = await compileModel({ model, device: 'jetson-orin-nano', out: path.join(dir, 'fp16'), precision: 'fp16', calibrationLimit: 64, latency: false });
    expect(r.manifest).toMatchObject({ kind: 'cbnet', target: { precision: 'fp16' } });
    expect(r.report.fp16!.check.passed).toBe(true);
    for (const s of r.report.stages) expect(s.bytes).toBeLessThan(s.floatBytes * 0.6);
    for (const p of r.report.cbnet!.verify!.paths) expect(p.dropPp).toBeLessThanOrEqual(1);
  });

  it('a folder without converter.onnx → InputError naming the folder and the files a CBNet folder must hold; no bundle', async () => {
    const bad = path.join(dir, 'half-cbnet');
    await fsp.mkdir(bad);
    await fsp.copyFile(path.join(model, 'classifier.onnx'), path.join(bad, 'classifier.onnx'));
    const parent = path.join(dir, 'outs');
    await fsp.mkdir(parent);
    const before = await fingerprint(parent);
    const err = await compileModel({ model: bad, device: 'rpi4', out: path.join(parent, 'b'), precision: 'fp32', latency: false }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InputError);
    const msg = (err as Error).message;
    expect(msg).toContain(bad);
    expect(msg).toMatch(/missing converter\.onnx/);
    expect(msg).toMatch(/must contain converter\.onnx .* and classifier\.onnx/);
    expect(await entries(parent)).toEqual([]);
    expect(await fingerprint(parent)).toEqual(before);
    // Through the CLI: the input-error exit code and the same message.
    const r = await runCli('compile', bad, '--device', 'rpi4', '--out', path.join(parent, 'c'), '--no-latency');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/missing converter\.onnx/);
    expect(await entries(parent)).toEqual([]);
  });

  it('--exits does not apply to a CBNet folder', async () => {
    await expect(compileModel({ model, device: 'rpi4', out: path.join(dir, 'ex'), precision: 'fp32', exits: ['exit_0'], latency: false })).rejects.toThrow(/--exits: does not apply to a CBNet folder/);
  });

  it('swapped files are caught by their edgeexit.role metadata', async () => {
    const swapped = path.join(dir, 'swapped');
    await fsp.mkdir(swapped);
    await fsp.copyFile(path.join(model, 'classifier.onnx'), path.join(swapped, 'converter.onnx'));
    await fsp.copyFile(path.join(model, 'converter.onnx'), path.join(swapped, 'classifier.onnx'));
    await expect(compileModel({ model: swapped, device: 'rpi4', out: path.join(dir, 'sw'), precision: 'fp32', latency: false })).rejects.toThrow(/swapped/);
  });
});

describe('manifest pipeline section', () => {
  it('kind cbnet without a pipeline, a pipeline on a multi-exit bundle, and a wrong stage reference are all reported', async () => {
    const m = JSON.parse(await fsp.readFile(path.join(dir, 'fp32', 'manifest.json'), 'utf8')) as Record<string, unknown>;
    const { pipeline, ...noPipeline } = m as { pipeline: { converter: { stage: number } } };
    expect(() => validateManifest(noPipeline)).toThrow(/pipeline/);
    expect(() => validateManifest({ ...m, kind: 'multi-exit' })).toThrow(/only kind cbnet has a pipeline/);
    expect(() => validateManifest({ ...m, pipeline: { ...pipeline, converter: { ...pipeline.converter, stage: 5 } } })).toThrow(/no stage 5/);
    expect(() => validateManifest({ ...m, exitPolicy: { metric: 'max-prob', thresholds: [0.9, 0.9], temperatures: [1, 1] } })).toThrow(/expected 1 thresholds/);
  });
});

describe('--backbone: the hybrid falls through to the multi-exit model\'s deeper stages', () => {
  const BRANCHY = path.join(REPO, 'models', 'fmnist-branchy', 'fmnist-branchy.onnx');
  let out: string;
  beforeAll(async () => {
    out = path.join(dir, 'with-backbone');
    await compileModel({ model, device: 'x86-host', precision: 'fp32', out, backbone: BRANCHY, latency: false });
  }, 120_000);

  it('adds the deeper stages (the first reads the image) and lists them last in the hybrid order', async () => {
    const v = await verifyBundle(out);
    const m = v.manifest;
    expect(m.stages.map((s) => s.file)).toEqual(['converter.onnx', 'classifier.onnx', 'backbone-1.onnx', 'backbone-2.onnx']);
    expect(m.stages[2]!.inputs).toEqual(['image']);
    expect(m.stages[1]!.carry).toEqual(['image']);
    expect(m.pipeline!.backbone).toEqual([2, 3]);
    expect(m.pipeline!.policies.hybrid).toEqual(['classifier<-image', 'classifier<-converter', 'backbone:exit_1', 'backbone:exit_2']);
    expect(m.exitPolicy.temperatures).toHaveLength(4);
  });

  it('with no thresholds the hybrid answers from the backbone\'s last exit: the same classes as the branchy model', async () => {
    const { loadBundle } = await import('../../src/runtime/bundle-runner.js');
    const runner = await loadBundle(out, { threads: 1, allowUnsigned: true, onWarning: () => {} });
    const folder = await scanImageFolder(CALIB);
    const files = folder.items.filter((_, i) => i % 30 === 0).map((it) => it.file);
    const prep = await prepareBatch(files, runner.manifest.input.preprocess);
    const src = await createSession(BRANCHY);
    try {
      const r = await runner.classify(prep.tensor, { policy: 'hybrid', thresholds: null, batchSize: 16 });
      expect(r.exitCounts).toEqual([0, 0, 0, files.length]);
      const ref = (await src.run({ image: prep.tensor }, ['exit_2']))['exit_2']!;
      const refCls = Array.from({ length: files.length }, (_, i) => {
        const row = Array.from((ref.data as Float32Array).subarray(i * 10, i * 10 + 10));
        return row.indexOf(Math.max(...row));
      });
      expect(r.items.map((it) => (it.ok ? it.classIndex : -1))).toEqual(refCls);
      // Thresholds of 0 at the classifier: everyone leaves there, and no backbone stage runs.
      const early = await runner.classify(prep.tensor, { policy: 'hybrid', thresholds: [0, 0, 0], batchSize: 16 });
      expect(early.exitCounts).toEqual([files.length, 0, 0, 0]);
      expect(early.timing.stageMs[2]).toBe(0);
    } finally {
      await src.close();
      await runner.close();
    }
  }, 120_000);

  it('bad input: --backbone on a single model, a backbone with other labels, and backbone points out of order', async () => {
    const single = await runCli('compile', BRANCHY, '--device', 'x86-host', '--out', path.join(dir, 'bb-bad1'), '--backbone', BRANCHY);
    expect(single.code).toBe(2);
    expect(single.err).toMatch(/--backbone: applies to a CBNet folder/);
    const labels = path.join(dir, 'other-labels.json');
    await fsp.writeFile(labels, JSON.stringify(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j']));
    const other = await compileModel({ model, device: 'x86-host', precision: 'fp32', out: path.join(dir, 'bb-bad2'), backbone: BRANCHY, labels, latency: false }).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(InputError);
    expect((other as Error).message).toMatch(/does not fit this CBNet/);
    expect(JSON.stringify((other as InputError).problems)).toMatch(/labels/);
    await expect(fsp.stat(path.join(dir, 'bb-bad2'))).rejects.toThrow();
    const m = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8')) as Manifest;
    const swapped = { ...m, pipeline: { ...m.pipeline!, policies: { ...m.pipeline!.policies, hybrid: ['classifier<-image', 'classifier<-converter', 'backbone:exit_2', 'backbone:exit_1'] } } };
    expect(() => validateManifest(swapped)).toThrow(/expected 'backbone:exit_1' \(pipeline.backbone in order\)/);
  }, 120_000);
});
