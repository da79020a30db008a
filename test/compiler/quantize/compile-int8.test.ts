// `compile --precision int8` end to end: the zoo model for rpi4 on 500 calibration images (every
// exit within 1 pp of float, stages ≤ 35% of the float bytes, provenance recorded), bad inputs
// (empty calibration folder, no calibration for a non-Fashion-MNIST model), fp16's fallback, and
// the accuracy budget: a model int8 cannot represent fails cleanly without mixed precision and
// compiles with the offending node kept float with it.
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { InputError } from '../../../src/util/errors.js';
import { encodeModel, readModel, tensorToArray } from '../../../src/onnx/index.js';
import { AccuracyDropError, compileModel, type CompileOptions, type CompileReport } from '../../../src/compiler/index.js';
import { verifyBundle } from '../../../src/bundle/index.js';
import { runCli } from '../../cli/helpers.js';
import { RESNET, RESNET_LABELS, RESNET_PRE, entries, fingerprint, scratch, zooCopy } from '../helpers.js';
import { CLASSES, SIZE, convGemmModel, selfLabels } from './helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await scratch('int8');
});

async function expectNoBundle(opts: CompileOptions, cls: new (...a: never[]) => Error, message: RegExp): Promise<Error> {
  const parent = path.dirname(path.resolve(opts.out));
  await fsp.mkdir(parent, { recursive: true });
  const before = await fingerprint(parent);
  const beforeEntries = await entries(parent);
  const err = await compileModel(opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(cls);
  expect((err as Error).message).toMatch(message);
  expect(await entries(parent)).toEqual(beforeEntries);
  expect(await fingerprint(parent)).toEqual(before);
  return err as Error;
}

describe('compile --precision int8', () => {
  it('zoo model for rpi4 (s8s8): every exit within 1 pp of float on 500 images, stages ≤ 35% of float', async () => {
    const model = await zooCopy(await scratch('int8-zoo'));
    const out = path.join(dir, 'zoo-int8');
    const r = await runCli('compile', model, '--device', 'rpi4', '--out', out, '--calibration-limit', '500');
    expect(r.code, r.err + r.out).toBe(0);
    expect(r.out).toMatch(/compiled .*fmnist-branchy\.onnx .* for rpi4 .*int8/);
    expect(r.out).toMatch(/int8\s+scheme s8s8-qdq, percentile calibration on 500 images of .*calibration\/fashion-mnist/);
    expect(r.out).toMatch(/^\s*exit_0\s+\d+\.\d+%\s+\d+\.\d+%/m);
    expect(r.err).toMatch(/calibrating on/);
    const v = await verifyBundle(out);
    expect(v.manifest.target).toEqual({ device: 'rpi4', precision: 'int8' });
    expect(v.manifest.provenance.quantization).toMatchObject({ scheme: 's8s8-qdq', calibrationMethod: 'percentile', calibrationImages: 500, calibrationSource: 'calibration/fashion-mnist' });
    const report = JSON.parse(await fsp.readFile(path.join(out, 'report.json'), 'utf8')) as CompileReport;
    const q = report.quantization!;
    expect(q.verify).toHaveLength(3);
    for (const e of q.verify) {
      expect(e.samples).toBe(500);
      expect(e.dropPp, `${e.exit}: ${e.floatTop1} → ${e.compiledTop1}`).toBeLessThanOrEqual(1);
      expect(e.agreement).toBeGreaterThan(0.95);
    }
    const float = report.stages.reduce((a, s) => a + s.floatBytes, 0);
    const int8 = report.stages.reduce((a, s) => a + s.bytes, 0);
    expect(int8).toBeLessThanOrEqual(0.35 * float);
    for (const s of report.stages) expect(s.bytes).toBeLessThan(s.floatBytes);
    expect(q.warnings).toEqual([]);
    // The float split is still proven exact against the source.
    expect(report.check.passed).toBe(true);
    // A carried tensor is re-quantised by the next stage with the parameters its producer used.
    const scaleOf = async (file: string, name: string) => {
      const m = await readModel(path.join(out, file));
      const t = m.graph.initializer.find((i) => i.name === name)!;
      return [tensorToArray(t, 'float32')[0], tensorToArray(m.graph.initializer.find((i) => i.name === name.replace(/scale$/, 'zero_point'))!)[0]];
    };
    // (stage 0's trunk is recomputed by stage 1 by default, so the first hand-over is stage 1's)
    expect(report.recompute).toEqual([0]);
    expect(await scaleOf('stage-2.onnx', 'stage1/carry0/scale')).toEqual(await scaleOf('stage-1.onnx', 'stage1/carry0/scale'));
  });

  it('an empty calibration folder is an InputError naming it, and leaves no bundle', async () => {
    const empty = path.join(dir, 'empty-calib');
    await fsp.mkdir(empty, { recursive: true });
    const model = await zooCopy(await scratch('int8-empty'));
    await expectNoBundle({ model, device: 'rpi4', out: path.join(dir, 'bad-empty', 'b'), precision: 'int8', calibration: empty }, InputError, new RegExp(`${empty.replace(/[/.]/g, '\\$&')}: no class subfolders`));
  });

  it('int8 for a model whose labels are not Fashion-MNIST needs --calibration', async () => {
    await expectNoBundle({ model: RESNET, device: 'rpi4', out: path.join(dir, 'bad-nocal', 'b'), precision: 'int8', preprocess: RESNET_PRE, labels: RESNET_LABELS }, InputError, /--precision int8 needs calibration images: .*pass --calibration <ImageFolder>/);
  });

  it('fp16 for Jetson: half-size stages that pass the fp16 check, float32 at stage boundaries', async () => {
    const r = await compileModel({ model: RESNET, device: 'jetson-nano', out: path.join(dir, 'fp16'), precision: 'fp16', preprocess: RESNET_PRE, labels: RESNET_LABELS });
    expect(r.manifest.target.precision).toBe('fp16');
    expect(r.report.fp16!.converted).toBeGreaterThan(0);
    expect(r.report.fp16!.check.passed).toBe(true);
    for (const e of r.report.fp16!.check.random.exits) expect(e.maxAbsDiff).toBeLessThanOrEqual(0.1);
    const floatBytes = r.report.stages.reduce((a, s) => a + s.floatBytes, 0);
    const bytes = r.report.stages.reduce((a, s) => a + s.bytes, 0);
    expect(bytes / floatBytes).toBeLessThan(0.7);
  });

  describe('accuracy budget on a model int8 cannot represent', () => {
    let model: string;
    let calib: string;
    const pre = JSON.stringify({ colorspace: 'gray', size: [SIZE, SIZE], scale: 1 / 255, mean: [0.5], std: [0.5] });
    let labelsFile: string;
    beforeAll(async () => {
      const m = convGemmModel({ outlier: true });
      model = path.join(dir, 'outlier.onnx');
      await fsp.writeFile(model, encodeModel(m));
      labelsFile = path.join(dir, 'outlier.labels.txt');
      await fsp.writeFile(labelsFile, Array.from({ length: CLASSES }, (_, c) => `c${c}`).join('\n') + '\n');
      // Random grey images labelled by the float model itself, so float top-1 is 100%.
      calib = path.join(dir, 'outlier-calib');
      let seed = 5;
      const next = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
      const pixels = Array.from({ length: 120 }, () => Uint8Array.from({ length: SIZE * SIZE }, () => Math.floor(next() * 256)));
      const x = new Float32Array(pixels.length * SIZE * SIZE);
      pixels.forEach((p, i) => p.forEach((v, j) => (x[i * SIZE * SIZE + j] = (v / 255 - 0.5) / 0.5)));
      const labels = await selfLabels(m, [{ data: x, dims: [pixels.length, 1, SIZE, SIZE] }]);
      for (const [i, p] of pixels.entries()) {
        const folder = path.join(calib, `c${labels[i]}`);
        await fsp.mkdir(folder, { recursive: true });
        await sharp(Buffer.from(p), { raw: { width: SIZE, height: SIZE, channels: 1 } }).png().toFile(path.join(folder, `${String(i).padStart(3, '0')}.png`));
      }
    });

    it('without mixed precision: AccuracyDropError with the per-exit numbers, no bundle', async () => {
      const err = await expectNoBundle(
        { model, device: 'rpi4', out: path.join(dir, 'drop', 'b'), precision: 'int8', preprocess: pre, labels: labelsFile, calibration: calib, mixedPrecision: false, calibrationMethod: 'minmax' },
        AccuracyDropError,
        /int8 \(s8s8-qdq, minmax calibration\) loses more than 1 pp top-1 on 120 images .*\n  - stage 0 exit 'logits': float 100\.00% → int8 \d+\.\d+% .*\nno bundle was written/,
      );
      expect(err.message).toMatch(/--max-accuracy-drop/);
    });

    it('with mixed precision: the Gemm stays float, the bundle says so', async () => {
      const r = await compileModel({ model, device: 'x86-host', out: path.join(dir, 'mixed'), precision: 'int8', preprocess: pre, labels: labelsFile, calibration: calib, calibrationMethod: 'minmax' });
      const q = r.report.quantization!;
      expect(q.scheme).toBe('u8s8-qdq');
      expect(q.keptFloat.map((k) => k.node)).toEqual(['gemm']);
      expect(q.verify[0]!.dropPp).toBeLessThanOrEqual(1);
      expect(r.manifest.provenance.quantization?.keptFloat).toEqual(['gemm']);
      expect(r.report.notes.some((n) => /kept 'gemm' \(Gemm, stage 0\) float: costliest to quantise/.test(n))).toBe(true);
    });
  });
});
