import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import sharp from 'sharp';
import type { PreprocessSpec } from '../../src/backends/image.js';
import { FASHION_MNIST_CLASSES, encodeIdx } from '../../src/data/idx.js';
import { LABEL_MATCH_RULE } from '../../src/data/labels.js';
import { writeRelabelled } from '../fixtures/data/relabel.js';
import { REPO, ZOO } from '../compiler/helpers.js';
import { evaluateModel, type EvalProgress, type EvaluationResult } from '../../src/eval/evaluate.js';
import { InputError, UnsupportedError } from '../../src/util/errors.js';
import {
  EXPECTED,
  SAMPLES,
  TWO_EXIT_LABELS,
  TWO_EXIT_MODEL,
  TWO_EXIT_SPEC,
  samplePixels,
  type Sample,
} from '../fixtures/data/samples.js';

let root: string;
let idxDir: string;
let folderDir: string;

beforeAll(async () => {
  root = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-eval-'));

  // IDX test split: gzipped images (as Debian ships them), plain labels.
  idxDir = path.join(root, 'idx');
  await fsp.mkdir(idxDir);
  const pixels = new Uint8Array(SAMPLES.length * 784);
  SAMPLES.forEach((s, i) => pixels.set(samplePixels(s), i * 784));
  await fsp.writeFile(path.join(idxDir, 't10k-images-idx3-ubyte.gz'), zlib.gzipSync(encodeIdx([SAMPLES.length, 28, 28], pixels)));
  await fsp.writeFile(path.join(idxDir, 't10k-labels-idx1-ubyte'), encodeIdx([SAMPLES.length], Uint8Array.from(SAMPLES, (s) => s.label)));

  // ImageFolder: the same samples as 56×56 RGB PNGs (so gray conversion and resizing run), plus
  // one corrupt file that must be skipped by name.
  folderDir = path.join(root, 'folder');
  for (const label of TWO_EXIT_LABELS) await fsp.mkdir(path.join(folderDir, label), { recursive: true });
  await Promise.all(
    SAMPLES.map(async (s, i) => {
      const gray = samplePixels(s, 56, 56);
      const rgb = new Uint8Array(gray.length * 3);
      gray.forEach((v, j) => rgb.fill(v, j * 3, j * 3 + 3));
      const png = await sharp(rgb, { raw: { width: 56, height: 56, channels: 3 } }).png().toBuffer();
      await fsp.writeFile(path.join(folderDir, TWO_EXIT_LABELS[s.label], `${String(i).padStart(2, '0')}-${s.kind}.png`), png);
    }),
  );
  await fsp.writeFile(path.join(folderDir, 'light', '99-corrupt.png'), 'not an image');
});

afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

/** Correctness of each exit for a sample, from its kind. */
function expectedCorrect(s: Sample): [number, number] {
  return [s.kind === 'both' || s.kind === 'first' ? 1 : 0, s.kind === 'both' || s.kind === 'second' ? 1 : 0];
}

function expectHandComputed(r: EvaluationResult, n = 10): void {
  expect(r.count).toBe(n);
  expect(r.exits.map((e) => e.name)).toEqual(['exit0', 'exit1']);
  expect(r.exits.map((e) => e.correct)).toEqual([EXPECTED.exit0 * n, EXPECTED.exit1 * n]);
  expect(r.exits[0]!.accuracy).toBeCloseTo(EXPECTED.exit0, 12);
  expect(r.exits[1]!.accuracy).toBeCloseTo(EXPECTED.exit1, 12);
  expect(r.oracle.counts).toEqual([5, 3]);
  expect(r.oracle.shares[0]).toBeCloseTo(EXPECTED.oracle[0]!, 12);
  expect(r.oracle.shares[1]).toBeCloseTo(EXPECTED.oracle[1]!, 12);
  expect(r.oracle.none).toBeCloseTo(EXPECTED.none, 12);
  expect(r.oracle.noneCount).toBe(2);
  // shares plus none cover every sample exactly once
  expect(r.oracle.shares.reduce((a, b) => a + b, 0) + r.oracle.none).toBeCloseTo(1, 12);
}

describe('evaluateModel on IDX', () => {
  it('per-exit accuracy, oracle shares and per-sample correctness match the hand count', async () => {
    const progress: EvalProgress[] = [];
    const r = await evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'idx', split: 'test', dir: idxDir },
      preprocess: TWO_EXIT_SPEC,
      batchSize: 3, // 3+3+3+1: batches, including a short last one
      onProgress: (p) => progress.push(p),
    });
    expectHandComputed(r);
    // Without labels an IDX split keeps its own class indices (Fashion-MNIST's names).
    expect(r.classes).toBe(FASHION_MNIST_CLASSES);
    expect(r.skipped).toEqual([]);
    expect(progress.map((p) => p.done)).toEqual([3, 6, 9, 10]);
    expect(progress.every((p) => p.total === 10 && p.skipped === 0)).toBe(true);

    expect(r.samples.exits).toBe(2);
    expect(Array.from(r.samples.correct)).toEqual(SAMPLES.flatMap(expectedCorrect));
    expect(Array.from(r.samples.labels)).toEqual(SAMPLES.map((s) => s.label));
    expect(r.samples.source).toEqual(SAMPLES.map((_, i) => i));
    // exit0 predicts 'light' (1) exactly when the top half is white
    expect(Array.from(r.samples.predictions).filter((_, j) => j % 2 === 0)).toEqual(SAMPLES.map((s) => (s.top ? 1 : 0)));
    // logits are ±1, so the winning softmax probability is e/(e+e⁻¹)
    const conf = Math.E / (Math.E + 1 / Math.E);
    for (const c of r.samples.confidence) expect(c).toBeCloseTo(conf, 4);
  });

  it('limit takes the first N samples of the split', async () => {
    const r = await evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'idx', split: 'test', dir: idxDir },
      preprocess: TWO_EXIT_SPEC,
      limit: 5, // 4 'both' + 1 'first'
    });
    expect(r.count).toBe(5);
    expect(r.exits.map((e) => e.correct)).toEqual([5, 4]);
    expect(r.oracle.counts).toEqual([5, 0]);
    expect(r.oracle.none).toBe(0);
  });

  it('exits can be chosen and reordered: the oracle follows that order', async () => {
    const r = await evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'idx', split: 'test', dir: idxDir },
      preprocess: TWO_EXIT_SPEC,
      exits: ['exit1', 'exit0'],
    });
    expect(r.exits.map((e) => [e.name, e.correct])).toEqual([
      ['exit1', 7],
      ['exit0', 5],
    ]);
    expect(r.oracle.counts).toEqual([7, 1]);
    expect(r.oracle.noneCount).toBe(2);
  });

  it('labels that name no Fashion-MNIST class are refused, naming them, the rule and the fix', async () => {
    const run = evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'idx', split: 'test', dir: idxDir },
      preprocess: TWO_EXIT_SPEC,
      labels: TWO_EXIT_LABELS,
    });
    await expect(run).rejects.toBeInstanceOf(InputError);
    await expect(run).rejects.toThrow(
      `${TWO_EXIT_MODEL}: edgeexit.labels: cannot map the model's labels onto the Fashion-MNIST classes by name: labels "dark", "light" name no Fashion-MNIST class; no label for "T-shirt/top", "Trouser",`,
    );
    await expect(run).rejects.toThrow(LABEL_MATCH_RULE);
    await expect(run).rejects.toThrow('(fix: name the labels after the Fashion-MNIST classes when exporting the model, or evaluate on an ImageFolder');
  });

  it('labels that do not match the logits are refused', async () => {
    const run = evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'imagefolder', dir: folderDir },
      preprocess: TWO_EXIT_SPEC,
      labels: ['dark', 'light', 'grey'],
    });
    await expect(run).rejects.toBeInstanceOf(InputError);
    await expect(run).rejects.toThrow(`${TWO_EXIT_MODEL}: 3 labels given but output 'exit0' has 2 classes`);
  });

  it('IDX images are not resized: a model with another input size is refused', async () => {
    const run = evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'idx', split: 'test', dir: idxDir },
      preprocess: { ...TWO_EXIT_SPEC, size: [32, 32] },
    });
    await expect(run).rejects.toBeInstanceOf(UnsupportedError);
    await expect(run).rejects.toThrow(
      `${path.join(idxDir, 't10k-images-idx3-ubyte.gz')}: IDX images do not fit the model input (IDX data is not resized)` +
        ` expected 32×32 gray as the model's preprocess says got 28×28 gray`,
    );
  });
});

describe('evaluateModel on an ImageFolder', () => {
  it('same numbers through sharp (RGB 56×56 → gray 28×28); the corrupt file is skipped by name', async () => {
    const progress: EvalProgress[] = [];
    const r = await evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'imagefolder', dir: folderDir },
      preprocess: TWO_EXIT_SPEC,
      labels: TWO_EXIT_LABELS,
      batchSize: 4,
      onProgress: (p) => progress.push(p),
    });
    expectHandComputed(r);
    expect(r.skipped).toHaveLength(1);
    expect(r.skipped[0]!.source).toBe(path.join(folderDir, 'light', '99-corrupt.png'));
    expect(r.skipped[0]!.error).toContain(`${path.join(folderDir, 'light', '99-corrupt.png')}: cannot decode image`);
    expect(progress.at(-1)).toEqual({ done: 11, total: 11, skipped: 1 });

    // Per-sample results are keyed by file; check each against its kind.
    r.samples.source.forEach((file, i) => {
      const idx = Number(path.basename(String(file)).slice(0, 2));
      const s = SAMPLES[idx]!;
      expect([r.samples.correct[2 * i], r.samples.correct[2 * i + 1]]).toEqual(expectedCorrect(s));
      expect(r.samples.labels[i]).toBe(s.label);
    });
  });

  it('without labels the classes are the folders in alphabetical order', async () => {
    const r = await evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'imagefolder', dir: folderDir },
      preprocess: TWO_EXIT_SPEC,
    });
    expect(r.classes).toEqual(['dark', 'light']);
    expect(r.count).toBe(10);
  });

  it('limit spreads over the classes instead of taking the first folder', async () => {
    const r = await evaluateModel({
      model: TWO_EXIT_MODEL,
      data: { kind: 'imagefolder', dir: folderDir },
      preprocess: TWO_EXIT_SPEC,
      labels: TWO_EXIT_LABELS,
      limit: 5,
    });
    expect(r.count).toBe(5);
    expect(new Set(r.samples.labels)).toEqual(new Set([0, 1]));
  });

  it('a dataset whose images all fail to decode is an InputError', async () => {
    const dir = path.join(root, 'all-bad');
    await fsp.mkdir(path.join(dir, 'dark'), { recursive: true });
    await fsp.writeFile(path.join(dir, 'dark', 'x.png'), 'garbage');
    const run = evaluateModel({ model: TWO_EXIT_MODEL, data: { kind: 'imagefolder', dir }, preprocess: TWO_EXIT_SPEC });
    await expect(run).rejects.toBeInstanceOf(InputError);
    await expect(run).rejects.toThrow(`${dir}: no sample could be evaluated (1 unreadable, first: ${path.join(dir, 'dark', 'x.png')}: cannot decode image`);
  });
});

describe('the built-in Fashion-MNIST set maps classes by label name, not by index', () => {
  // The zoo model's labels are Fashion-MNIST's in its own order; the twin puts them in
  // alphabetical order (as a torchvision ImageFolder export would) and permutes its logits to match.
  const CALIB = path.join(REPO, 'calibration', 'fashion-mnist');
  const FOLDER_CLASS: Record<string, number> = { tshirt_top: 0, trouser: 1, pullover: 2, dress: 3, coat: 4, sandal: 5, shirt: 6, sneaker: 7, bag: 8, ankle_boot: 9 };
  let fmDir: string;
  let twin: string;
  let twinLabels: string[];
  let zooLabels: string[];

  beforeAll(async () => {
    // A 200-image IDX test split from the committed calibration PNGs (20 per class).
    fmDir = path.join(root, 'fm-idx');
    await fsp.mkdir(fmDir, { recursive: true });
    const pixels: number[] = [];
    const labels: number[] = [];
    for (const [folder, k] of Object.entries(FOLDER_CLASS)) {
      const files = (await fsp.readdir(path.join(CALIB, folder))).filter((f) => f.endsWith('.png')).sort().slice(0, 20);
      for (const f of files) {
        const raw = await sharp(path.join(CALIB, folder, f)).greyscale().raw().toBuffer();
        pixels.push(...raw);
        labels.push(k);
      }
    }
    await fsp.writeFile(path.join(fmDir, 't10k-images-idx3-ubyte'), encodeIdx([labels.length, 28, 28], Uint8Array.from(pixels)));
    await fsp.writeFile(path.join(fmDir, 't10k-labels-idx1-ubyte'), encodeIdx([labels.length], Uint8Array.from(labels)));
    zooLabels = JSON.parse((await import('../../src/onnx/index.js').then((m) => m.readModel(ZOO))).getMetadata('edgeexit.labels')!) as string[];
    const alphabetical = zooLabels.map((_, i) => i).sort((a, b) => (zooLabels[a]! < zooLabels[b]! ? -1 : 1));
    twin = path.join(root, 'zoo-alphabetical.onnx');
    twinLabels = await writeRelabelled(ZOO, twin, { perm: alphabetical });
  }, 60_000);

  it('a model with its labels in another order scores the same as its reordered twin', async () => {
    expect(twinLabels).not.toEqual(zooLabels);
    expect(twinLabels[0]).toBe('ankle_boot');
    const spec: PreprocessSpec = { colorspace: 'gray', size: [28, 28], scale: 1 / 255, mean: [0.286], std: [0.353] };
    const data = { kind: 'idx', split: 'test', dir: fmDir } as const;
    const a = await evaluateModel({ model: ZOO, data, preprocess: spec, labels: zooLabels });
    const b = await evaluateModel({ model: twin, data, preprocess: spec, labels: twinLabels });
    expect(a.count).toBe(200);
    expect(b.exits.map((e) => e.correct)).toEqual(a.exits.map((e) => e.correct));
    expect(Array.from(b.samples.correct)).toEqual(Array.from(a.samples.correct));
    // A real score, not chance: the zoo model's last exit gets most of its training classes right.
    expect(a.exits.at(-1)!.accuracy).toBeGreaterThan(0.6);
    // Same answers under each model's own label names.
    const names = (r: EvaluationResult) => Array.from(r.samples.predictions, (p) => r.classes[p]);
    expect(names(b)).toEqual(names(a));
  });

  it("official Fashion-MNIST names ('T-shirt/top', 'Ankle boot') map too; an unknown label is refused", async () => {
    const official = path.join(root, 'zoo-official-names.onnx');
    await writeRelabelled(ZOO, official, { labels: FASHION_MNIST_CLASSES });
    const spec: PreprocessSpec = { colorspace: 'gray', size: [28, 28], scale: 1 / 255, mean: [0.286], std: [0.353] };
    const data = { kind: 'idx', split: 'test', dir: fmDir } as const;
    const a = await evaluateModel({ model: ZOO, data, preprocess: spec, labels: zooLabels, limit: 50 });
    const c = await evaluateModel({ model: official, data, preprocess: spec, labels: FASHION_MNIST_CLASSES, limit: 50 });
    expect(c.exits.map((e) => e.correct)).toEqual(a.exits.map((e) => e.correct));
    const bad = [...zooLabels.slice(0, 9), 'boot'];
    await expect(evaluateModel({ model: ZOO, data, preprocess: spec, labels: bad })).rejects.toThrow(
      /label "boot" names no Fashion-MNIST class; no label for "Ankle boot"/,
    );
  });
});
