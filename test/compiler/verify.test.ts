// What a compile verifies and says about it, beyond the fp32 check: fp16 is verified on labelled
// images per exit like int8 (both families) with one check line naming both tolerances; a CBNet
// with --backbone reports every exit point of the bundle; a converter that makes the pair worse
// than the classifier alone draws a warning with the numbers; and the CBNet contract (classifier
// logits, converter output dims and range, pair cheaper than the backbone's next exit) is checked
// at compile time. Small calibration limits keep the compiles quick.
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { arrayToTensor, encodeModel, readModel, writeModel } from '../../src/onnx/index.js';
import { DataType } from '../../src/onnx/dtype.js';
import { cbnetContractNotes, compileModel, type CompileResult } from '../../src/compiler/index.js';
import { parsePreprocessSpec } from '../../src/backends/image.js';
import { renderCompile } from '../../src/cli/commands/compile.js';
import { buildModel, node, rng, tensorValueInfo } from '../onnx/helpers.js';
import { REPO, scratch } from './helpers.js';

const BRANCHY = path.join(REPO, 'models', 'fmnist-branchy', 'fmnist-branchy.onnx');
const CBNET = path.join(REPO, 'models', 'fmnist-cbnet');

let dir: string;
beforeAll(async () => {
  dir = await scratch('verify');
});

/** Lines of the console output that mention a tolerance. */
const toleranceLines = (text: string): string[] => text.split('\n').filter((l) => /toleran/i.test(l));

describe('fp16 is verified like int8', () => {
  let branchy: CompileResult;
  beforeAll(async () => {
    branchy = await compileModel({ model: BRANCHY, device: 'jetson-orin-nano', precision: 'fp16', calibrationLimit: 32, latency: false, out: path.join(dir, 'branchy-fp16') });
  });

  it('multi-exit: per-exit fp32 vs fp16 top-1 on the calibration images in report.fp16.verify', () => {
    const v = branchy.report.fp16!.verify!;
    expect(v.images).toBe(32);
    expect(v.source).toMatch(/fashion-mnist$/);
    expect(v.paths.map((p) => p.exit)).toEqual(['exit_0', 'exit_1', 'exit_2']);
    for (const p of v.paths) {
      expect(p.samples).toBe(32);
      expect(p.floatTop1).toBeGreaterThan(0.5);
      expect(p.dropPp).toBeLessThanOrEqual(v.maxAccuracyDropPp);
      // fp16 changes the logits a little, never to zero.
      expect(p.maxLogitError).toBeGreaterThan(0);
    }
  });

  it('one check line names both tolerances and the fp16 differences the table shows; no note contradicts it', () => {
    const text = renderCompile(branchy);
    const f = branchy.report.fp16!.check;
    const lines = toleranceLines(text);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^check {5}passed: fp32 split within tolerance 1e-5 of the source; fp16 stages within tolerance 1e-1 \(max \|fp16 − source\| .* per exit\)/);
    expect(lines[0]).toContain(f.random.exits.map((e) => e.maxAbsDiff.toExponential(2)).join(' / '));
    // The table's diff column is the fp16 check's, not the fp32 split's zeros.
    const row0 = text.split('\n').find((l) => /^\s+0\s+stage-0\.onnx/.test(l))!;
    expect(row0).toContain(f.random.exits[0]!.maxAbsDiff.toExponential(1));
    expect(row0).not.toMatch(/\s0$/);
    expect(text).toMatch(/^exit\s+fp32 top-1\s+fp16 top-1\s+drop \(pp\)/m);
    expect(text).toMatch(/^verify {4}every exit within 1 pp of fp32 on 32 images of /m);
    expect(branchy.report.notes.join('\n')).not.toMatch(/max \|diff\||tolerance/);
  });

  it('CBNet: the fp16 report carries the two paths verified, as cbnet.verify does', async () => {
    const r = await compileModel({ model: CBNET, device: 'jetson-orin-nano', precision: 'fp16', calibrationLimit: 32, latency: false, out: path.join(dir, 'cbnet-fp16') });
    const v = r.report.fp16!.verify!;
    expect(v.paths.map((p) => p.exit)).toEqual(['classifier<-image', 'classifier<-converter']);
    expect(v).toEqual(r.report.cbnet!.verify);
    expect(toleranceLines(renderCompile(r))).toHaveLength(1);
  });

  it('without labelled images for its labels, an fp16 compile says the exits were not verified', async () => {
    const labels = path.join(dir, 'other-labels.txt');
    await fsp.writeFile(labels, Array.from({ length: 10 }, (_, i) => `thing${i}`).join('\n'));
    const r = await compileModel({ model: BRANCHY, device: 'jetson-orin-nano', precision: 'fp16', labels, latency: false, out: path.join(dir, 'branchy-fp16-nolab') });
    expect(r.report.fp16!.verify).toBeUndefined();
    expect(r.report.notes).toContain('no labelled images for these labels (pass --calibration <ImageFolder>), so the fp16 exits were not verified on images');
  });
});

describe('CBNet --backbone: every exit point of the bundle is verified', () => {
  for (const precision of ['int8', 'fp16'] as const) {
    it(`${precision}: the two paths and each backbone exit, numbered as bundle stages, in the report and the console`, async () => {
      const r = await compileModel({
        model: CBNET,
        backbone: BRANCHY,
        device: precision === 'int8' ? 'rpi4' : 'jetson-orin-nano',
        precision,
        calibrationLimit: 32,
        latency: false,
        out: path.join(dir, `hybrid-${precision}`),
      });
      const v = r.report.cbnet!.verify!;
      expect(v.paths.map((p) => [p.stage, p.exit])).toEqual([
        [1, 'classifier<-image'],
        [1, 'classifier<-converter'],
        [2, 'backbone:exit_1'],
        [3, 'backbone:exit_2'],
      ]);
      expect(v.paths.map((p) => p.exit)).toEqual(r.manifest.pipeline!.policies.hybrid);
      for (const p of v.paths) {
        expect(p.samples).toBe(32);
        expect(p.dropPp).toBeLessThanOrEqual(1);
      }
      const text = renderCompile(r);
      expect(text).toMatch(new RegExp(`^backbone:exit_2\\s+[\\d.]+%\\s+[\\d.]+%`, 'm'));
      expect(text).toMatch(/^verify {4}all 4 exit points within 1 pp of fp32 on 32 images/m);
    });
  }
});

/** The real classifier beside a converter that multiplies the image by `factor` (0: a blank image). */
async function pairWithScalingConverter(name: string, factor: number): Promise<string> {
  const folder = path.join(dir, name);
  await fsp.mkdir(folder);
  await fsp.copyFile(path.join(CBNET, 'classifier.onnx'), path.join(folder, 'classifier.onnx'));
  const dims = ['batch', 1, 28, 28];
  const converter = buildModel({
    inputs: [tensorValueInfo('image', DataType.FLOAT, dims)],
    outputs: [tensorValueInfo('converted', DataType.FLOAT, dims)],
    nodes: [node('Mul', ['image', 'factor'], ['converted'])],
    initializers: [arrayToTensor('factor', [1], 'float32', Float32Array.of(factor))],
  });
  await writeModel(converter, path.join(folder, 'converter.onnx'));
  return folder;
}

describe('a converter that makes the pair worse than the classifier alone', () => {
  it('draws a warning naming both accuracies and the fix; the console shows it as a warn line', async () => {
    const model = await pairWithScalingConverter('blank-converter', 0);
    const r = await compileModel({ model, device: 'x86-host', precision: 'fp32', calibrationLimit: 64, latency: false, out: path.join(dir, 'blank-bundle') });
    const [alone, pair] = r.report.cbnet!.verify!.paths;
    expect(pair!.compiledTop1).toBeLessThan(alone!.compiledTop1);
    const warnings = r.report.notes.filter((n) => n.startsWith('warning: ') && n.includes('less accurate than the classifier alone'));
    expect(warnings).toHaveLength(1);
    const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
    expect(warnings[0]).toContain(`${pct(pair!.compiledTop1)} vs ${pct(alone!.compiledTop1)} top-1 at fp32`);
    expect(warnings[0]).toContain('on 64 images of');
    expect(warnings[0]).toMatch(/fix: check that the converter ends with the classifier's normalisation/);
    expect(renderCompile(r)).toMatch(/^warn {6}.*converter → classifier is less accurate than the classifier alone/m);
  });

  it('the zoo pair, which gains over the classifier, compiles without it or any contract warning', async () => {
    const r = await compileModel({ model: CBNET, device: 'x86-host', precision: 'fp32', calibrationLimit: 64, latency: false, out: path.join(dir, 'zoo-pair') });
    expect(r.report.notes.filter((n) => n.startsWith('warning: '))).toEqual([]);
  });
});

describe('the CBNet contract at compile time', () => {
  let pre: string;
  let labels: string;
  beforeAll(async () => {
    pre = path.join(dir, 'tiny-pre.json');
    labels = path.join(dir, 'tiny-labels.txt');
    await fsp.writeFile(pre, JSON.stringify({ colorspace: 'gray', size: [4, 4], scale: 1 / 255, mean: [0.5], std: [0.25] }));
    await fsp.writeFile(labels, 'a\nb\nc\n');
  });

  /** A 4×4 pair: converter = input × factor (or a flattening one), classifier = Gemm(16→3), optionally softmaxed. */
  async function tinyPair(name: string, o: { factor?: number; flatten?: boolean; softmax?: boolean }): Promise<string> {
    const folder = path.join(dir, name);
    await fsp.mkdir(folder);
    const img = ['batch', 1, 4, 4];
    const next = rng(3);
    const converter = buildModel({
      inputs: [tensorValueInfo('input', DataType.FLOAT, img)],
      outputs: [tensorValueInfo('converted', DataType.FLOAT, o.flatten ? ['batch', 16] : img)],
      nodes: o.flatten ? [node('Flatten', ['input'], ['converted'], { axis: 1 })] : [node('Mul', ['input', 'factor'], ['converted'])],
      initializers: o.flatten ? [] : [arrayToTensor('factor', [1], 'float32', Float32Array.of(o.factor ?? 0.9))],
    });
    const classifier = buildModel({
      inputs: [tensorValueInfo('input', DataType.FLOAT, img)],
      outputs: [tensorValueInfo('logits', DataType.FLOAT, ['batch', 3])],
      nodes: [
        node('Flatten', ['input'], ['flat'], { axis: 1 }),
        node('Gemm', ['flat', 'w', 'b'], [o.softmax ? 'raw' : 'logits']),
        ...(o.softmax ? [node('Softmax', ['raw'], ['logits'], { axis: 1 })] : []),
      ],
      initializers: [
        arrayToTensor('w', [16, 3], 'float32', Float32Array.from({ length: 48 }, () => next() * 2 - 1)),
        arrayToTensor('b', [3], 'float32', Float32Array.from({ length: 3 }, () => next() * 2 - 1)),
      ],
    });
    await writeModel(converter, path.join(folder, 'converter.onnx'));
    await writeModel(classifier, path.join(folder, 'classifier.onnx'));
    return folder;
  }

  const compileTiny = (model: string) => compileModel({ model, device: 'x86-host', precision: 'fp32', preprocess: pre, labels, latency: false, out: `${model}-bundle` });
  const warningsOf = (r: CompileResult) => r.report.notes.filter((n) => n.startsWith('warning: '));

  it('a pair that keeps the contract compiles without a warning', async () => {
    expect(warningsOf(await compileTiny(await tinyPair('tiny-clean', {})))).toEqual([]);
  });

  it('warns when the classifier returns softmax probabilities', async () => {
    const w = warningsOf(await compileTiny(await tinyPair('tiny-softmax', { softmax: true })));
    expect(w).toHaveLength(1);
    expect(w[0]).toMatch(/classifier\.onnx: exit 'logits'.*looks like softmax probabilities.*fix: return the last layer's output before softmax/);
  });

  it('warns when the converter output is not normalised like the input, with both ranges', async () => {
    const w = warningsOf(await compileTiny(await tinyPair('tiny-range', { factor: 255 })));
    expect(w).toHaveLength(1);
    // (0/255 − 0.5)/0.25 = −2 and (255/255 − 0.5)/0.25 = 2: the range preprocessed images take.
    expect(w[0]).toMatch(/converter\.onnx: output 'converted'.* lie outside \[-2\.00, 2\.00\], the range preprocessed images take/);
    expect(w[0]).toMatch(/fix: end the converter with the same normalisation as the preprocessing/);
  });

  it('refuses a converter whose output is not an image of the input dims, naming the fix; no bundle', async () => {
    const model = await tinyPair('tiny-flat', { flatten: true });
    const err = await compileTiny(model).then(
      () => new Error('compiled'),
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/converter\.onnx: output 'converted'.*expected an image of the input's dims \[4, 1, 4, 4\].*got \[4, 16\].*fix: /s);
    await expect(fsp.stat(`${model}-bundle`)).rejects.toThrow();
  });

  it('with a backbone whose next exit is cheaper than the pair, warns that the hybrid pays for the converter', async () => {
    const load = async (f: string) => {
      const model = await readModel(path.join(CBNET, f));
      return { model, bytes: encodeModel(model), file: path.join(CBNET, f) };
    };
    const conv = await load('converter.onnx');
    const cls = await load('classifier.onnx');
    const preprocess = parsePreprocessSpec(JSON.parse(cls.model.getMetadata('edgeexit.preprocess')!));
    const base = { converter: { ...conv, input: 'image', output: 'converted' }, classifier: { ...cls, input: 'image', exit: 'exit_0' }, preprocess };
    // converter 2,038,400 + classifier 144,256 MACs.
    const cheap = await cbnetContractNotes({ ...base, backbone: { file: 'bb.onnx', exits: [{ name: 'exit_1', cumulativeMacs: 1_000_000 }] } });
    expect(cheap).toHaveLength(1);
    expect(cheap[0]).toMatch(/^warning: bb\.onnx: exit 'exit_1'.*converter → classifier \(2,182,656 MACs\) costs more than the backbone's exit 'exit_1' \(1,000,000 MACs\)/);
    expect(await cbnetContractNotes({ ...base, backbone: { file: 'bb.onnx', exits: [{ name: 'exit_1', cumulativeMacs: 2_838_080 }] } })).toEqual([]);
  });
});
