// The model contract checked at compile time: one small two-exit model per breach (softmax
// outputs, exits not cheapest first, a static batch axis), each compiled for real and its warning
// read from the report and the CLI; the clean twin compiles without one.
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { arrayToTensor, writeModel } from '../../src/onnx/index.js';
import { DataType } from '../../src/onnx/dtype.js';
import { checkModelContract, compileModel, looksLikeProbabilities } from '../../src/compiler/index.js';
import { runCli } from '../cli/helpers.js';
import { buildModel, node, rng, tensorValueInfo } from '../onnx/helpers.js';
import { scratch } from './helpers.js';

let dir: string;
let pre: string;
let labels: string;

beforeAll(async () => {
  dir = await scratch('contract');
  pre = path.join(dir, 'pre.json');
  labels = path.join(dir, 'labels.txt');
  await fsp.writeFile(pre, JSON.stringify({ colorspace: 'gray', size: [4, 4], scale: 1 / 255, mean: [0.5], std: [0.25] }));
  await fsp.writeFile(labels, 'a\nb\nc\n');
});

function weights(name: string, dims: number[], seed: number): ReturnType<typeof arrayToTensor> {
  const next = rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  return arrayToTensor(name, dims, 'float32', Float32Array.from({ length: n }, () => next() * 2 - 1));
}

/**
 * input [batch,1,4,4] → Flatten → Gemm(16→3) = 'early' (cheap); Flatten → Gemm(16→64) → Relu →
 * Gemm(64→3) = 'late' (costly). Options: a Softmax on both exits, the outputs listed late first,
 * a static batch of 1.
 */
async function twoExitModel(name: string, o: { softmax?: boolean; lateFirst?: boolean; batch?: number } = {}): Promise<string> {
  const batch = o.batch ?? 'batch';
  const raw = (e: string) => (o.softmax ? `${e}_logits` : e);
  const nodes = [
    node('Flatten', ['input'], ['flat'], { axis: 1 }),
    node('Gemm', ['flat', 'w_early', 'b_early'], [raw('early')]),
    node('Gemm', ['flat', 'w_h', 'b_h'], ['h']),
    node('Relu', ['h'], ['hr']),
    node('Gemm', ['hr', 'w_late', 'b_late'], [raw('late')]),
    ...(o.softmax ? [node('Softmax', ['early_logits'], ['early'], { axis: 1 }), node('Softmax', ['late_logits'], ['late'], { axis: 1 })] : []),
  ];
  const outs = o.lateFirst ? ['late', 'early'] : ['early', 'late'];
  const model = buildModel({
    inputs: [tensorValueInfo('input', DataType.FLOAT, [batch, 1, 4, 4])],
    outputs: outs.map((n) => tensorValueInfo(n, DataType.FLOAT, [batch, 3])),
    nodes,
    initializers: [
      weights('w_early', [16, 3], 1),
      weights('b_early', [3], 2),
      weights('w_h', [16, 64], 3),
      weights('b_h', [64], 4),
      weights('w_late', [64, 3], 5),
      weights('b_late', [3], 6),
    ],
  });
  const file = path.join(dir, `${name}.onnx`);
  await writeModel(model, file);
  return file;
}

async function compileNotes(file: string): Promise<string[]> {
  const out = path.join(dir, `${path.basename(file, '.onnx')}-bundle`);
  const r = await compileModel({ model: file, device: 'x86-host', out, preprocess: pre, labels, latency: false });
  return r.report.notes.filter((n) => n.startsWith('warning: '));
}

describe('model contract at compile time', () => {
  it('a model that keeps the contract compiles without a contract warning', async () => {
    expect(await compileNotes(await twoExitModel('clean'))).toEqual([]);
  });

  it('warns when exits look like softmax probabilities, naming the fix', async () => {
    const warnings = await compileNotes(await twoExitModel('softmax', { softmax: true }));
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain("exit 'early'");
    expect(warnings[0]).toMatch(/looks like softmax probabilities/);
    expect(warnings[0]).toMatch(/fix: return the last layer's output before softmax/);
    expect(warnings[1]).toContain("exit 'late'");
  });

  it('warns when an exit costs more than the next one, with both MAC counts', async () => {
    const warnings = await compileNotes(await twoExitModel('late-first', { lateFirst: true }));
    expect(warnings).toHaveLength(1);
    // late: 16×64 + 64×3 = 1,216 MACs; early: 16×3 = 48.
    expect(warnings[0]).toContain("exit 0 'late' (1,216 MACs) costs more than exit 1 'early' (48 MACs)");
    expect(warnings[0]).toMatch(/fix: return the exits from forward\(\) cheapest first/);
  });

  it('inspect shows the cost-order and batch warnings from the graph alone', async () => {
    const r = await runCli('inspect', await twoExitModel('late-first-static', { lateFirst: true, batch: 2 }));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^warning {5}.*exit 0 'late' \([\d,]+ MACs\) costs more than exit 1 'early'/m);
    expect(r.out).toMatch(/^warning {5}.*static batch axis of 2/m);
    expect(r.out).toContain('graph outputs, in run order');
    const clean = await runCli('inspect', await twoExitModel('clean-inspect'));
    expect(clean.out).not.toMatch(/costs more than|static batch/);
  });

  it('warns about a static batch axis and names dynamic_axes; the CLI shows it as a warn line', async () => {
    const file = await twoExitModel('batch1', { batch: 1 });
    const warnings = await compileNotes(file);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("input 'input': has a static batch axis of 1");
    expect(warnings[0]).toContain("dynamic_axes={'input': {0: 'batch'}");
    const r = await runCli('compile', file, '--device', 'x86-host', '--out', path.join(dir, 'batch1-cli'), '--preprocess', pre, '--labels', labels, '--no-latency');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^warn {6}.*static batch axis of 1/m);
  });
});

describe('checkModelContract (pure)', () => {
  it('tells probability rows from logits', () => {
    expect(looksLikeProbabilities({ exit: 'e', dims: [2, 3], data: [0.2, 0.3, 0.5, 1, 0, 0] })).toBe(true);
    expect(looksLikeProbabilities({ exit: 'e', dims: [2, 3], data: [0.2, 0.3, 0.5, 1.2, -0.2, 0] })).toBe(false);
    expect(looksLikeProbabilities({ exit: 'e', dims: [1, 3], data: [0.2, 0.3, 0.4] })).toBe(false);
    // One class sums to itself: nothing to tell.
    expect(looksLikeProbabilities({ exit: 'e', dims: [1, 1], data: [1] })).toBe(false);
  });

  it('equal costs are in order; each breach is one finding with its rule', () => {
    const base = { file: 'm.onnx', inputName: 'x', samples: [] };
    expect(checkModelContract({ ...base, batch: 'N', exits: [{ name: 'a', cumulativeMacs: 5 }, { name: 'b', cumulativeMacs: 5 }] })).toEqual([]);
    const f = checkModelContract({ ...base, batch: 8, exits: [{ name: 'a', cumulativeMacs: 9 }, { name: 'b', cumulativeMacs: 5 }] });
    expect(f.map((x) => [x.severity, x.rule])).toEqual([
      ['warning', 'cost-order'],
      ['warning', 'static-batch'],
    ]);
  });
});
