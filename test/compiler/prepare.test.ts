// Graph preparation: BatchNormalization folding (float64 maths), constant and Reshape-chain
// folding, Identity/Dropout removal, and the cases that must be left alone, with outputs checked
// under onnxruntime.
import { describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { arrayToTensor, decodeModel, encodeModel, readModel, type OnnxModel } from '../../src/onnx/index.js';
import { DataType } from '../../src/onnx/dtype.js';
import { countOps, prepareModel, randomImages } from '../../src/compiler/index.js';
import { createSession } from '../../src/backends/onnxruntime.js';
import { parsePreprocessSpec } from '../../src/backends/image.js';
import { buildModel, node, tensorValueInfo } from '../onnx/helpers.js';
import { RESNET, RESNET_PRE, SINGLE, SINGLE_PRE, scratch, zooCopy } from './helpers.js';
import { rng } from '../../src/compiler/check.js';

/** Largest |a − b| over every float output, with onnxruntime, for the given inputs. */
async function maxDiff(a: OnnxModel, b: OnnxModel, feeds: Record<string, { data: Float32Array; dims: number[] }>): Promise<number> {
  const sa = await createSession(encodeModel(a), { intraOpNumThreads: 1 });
  const sb = await createSession(encodeModel(b), { intraOpNumThreads: 1 });
  try {
    expect(sb.outputNames).toEqual(sa.outputNames);
    const ra = await sa.run(feeds);
    const rb = await sb.run(feeds);
    let max = 0;
    for (const name of sa.outputNames) {
      const x = ra[name]!;
      const y = rb[name]!;
      expect(y.dims).toEqual(x.dims);
      if (x.type !== 'float32') {
        expect(Array.from(y.data as ArrayLike<number>)).toEqual(Array.from(x.data as ArrayLike<number>));
        continue;
      }
      const xd = x.data as Float32Array;
      const yd = y.data as Float32Array;
      for (let i = 0; i < xd.length; i++) max = Math.max(max, Math.abs(xd[i]! - yd[i]!));
    }
    return max;
  } finally {
    await sa.close();
    await sb.close();
  }
}

async function imageFeeds(preFile: string, input: string, batch: number) {
  const t = randomImages(parsePreprocessSpec(await fsp.readFile(preFile, 'utf8')), batch, batch);
  return { [input]: t };
}

describe('prepareModel', () => {
  it('folds every BatchNormalization of the ResNet fixture, drops Identity/Dropout and the Shape chain; outputs unchanged', async () => {
    const model = await readModel(RESNET);
    expect(countOps(model, 'BatchNormalization')).toBe(9);
    const { model: prepared, report } = prepareModel(model);
    expect(countOps(prepared, 'BatchNormalization')).toBe(0);
    expect(report.batchNormFolded).toHaveLength(9);
    expect(report.batchNormKept).toEqual([]);
    for (const op of ['Identity', 'Dropout', 'Constant', 'Shape', 'Gather', 'Unsqueeze']) expect(countOps(prepared, op), op).toBe(0);
    expect(report.removed).toEqual({ Identity: 1, Dropout: 1 });
    expect(report.constantNodes).toBe(3);
    expect(report.reshapesFolded).toEqual([{ node: '/Reshape', shape: [0, -1] }]);
    expect(report.nodesAfter).toBe(prepared.graph.node.length);
    // Outputs keep their names (the Identity produced one of them).
    expect(prepared.graph.output.map((o) => o.name)).toEqual(['head/aux:0', 'mid.logits', 'logits.final']);
    // The source model is not touched.
    expect(countOps(model, 'BatchNormalization')).toBe(9);
    for (const batch of [1, 4]) {
      expect(await maxDiff(model, prepared, await imageFeeds(RESNET_PRE, 'image', batch))).toBeLessThanOrEqual(1e-5);
    }
  });

  it('folds the single-output fixture (Conv with bias) and keeps outputs', async () => {
    const model = await readModel(SINGLE);
    const { model: prepared, report } = prepareModel(model);
    expect(countOps(prepared, 'BatchNormalization')).toBe(0);
    expect(report.batchNormFolded).toHaveLength(1);
    for (const batch of [1, 4]) {
      expect(await maxDiff(model, prepared, await imageFeeds(SINGLE_PRE, 'pixels', batch))).toBeLessThanOrEqual(1e-5);
    }
  });

  it('leaves the zoo model (BN already folded by torch) numerically identical', async () => {
    const model = decodeModel(await fsp.readFile(await zooCopy(await scratch('prep-zoo'))));
    const { model: prepared } = prepareModel(model);
    expect(countOps(prepared, 'BatchNormalization')).toBe(0);
    expect(countOps(prepared, 'Identity')).toBe(0);
    const feeds = { image: randomImages({ colorspace: 'gray', size: [28, 28], scale: 1 / 255, mean: [0.286], std: [0.353] }, 4, 7) };
    expect(await maxDiff(model, prepared, feeds)).toBeLessThanOrEqual(1e-5);
  });

  it('says why it keeps what it cannot fold, folds shared weights into copies, and keeps outputs', async () => {
    const next = rng(3);
    const f32 = (n: number, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * next());
    const bnParams = (p: string) => [
      arrayToTensor(`${p}.scale`, [2], 'float32', f32(2, 0.5, 1.5)),
      arrayToTensor(`${p}.bias`, [2], 'float32', f32(2)),
      arrayToTensor(`${p}.mean`, [2], 'float32', f32(2)),
      arrayToTensor(`${p}.var`, [2], 'float32', f32(2, 0.3, 1.3)),
    ];
    const bn = (p: string, x: string, y: string) => node('BatchNormalization', [x, `${p}.scale`, `${p}.bias`, `${p}.mean`, `${p}.var`], [y], { epsilon: { float: 1e-3 } }, `bn_${p}`);
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, ['batch', 2, 4, 4])],
      outputs: [
        tensorValueInfo('y_relu', DataType.FLOAT, ['batch', 2, 4, 4]),
        tensorValueInfo('c', DataType.FLOAT, ['batch', 2, 4, 4]),
        tensorValueInfo('y_c', DataType.FLOAT, ['batch', 2, 4, 4]),
        tensorValueInfo('y_a', DataType.FLOAT, ['batch', 2, 4, 4]),
        tensorValueInfo('y_b', DataType.FLOAT, ['batch', 2, 4, 4]),
        tensorValueInfo('x_copy', DataType.FLOAT, ['batch', 2, 4, 4]),
        tensorValueInfo('dropped', DataType.FLOAT, ['batch', 2, 4, 4]),
        tensorValueInfo('mask', DataType.BOOL, ['batch', 2, 4, 4]),
      ],
      nodes: [
        node('Relu', ['x'], ['r'], {}, 'relu'),
        bn('relu', 'r', 'y_relu'), // not after a Conv: kept
        node('Conv', ['x', 'w'], ['c'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv_out'),
        bn('c', 'c', 'y_c'), // the Conv output is also a graph output: kept
        node('Conv', ['x', 'shared', 'bias'], ['ca'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv_a'),
        node('Conv', ['x', 'shared'], ['cb'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv_b'),
        bn('a', 'ca', 'y_a'), // shared weight: folded into a copy
        bn('b', 'cb', 'y_b'),
        node('Identity', ['x'], ['x_copy'], {}, 'identity_of_input'), // graph output straight from the input: kept
        node('Dropout', ['y_a'], ['dropped', 'mask'], {}, 'dropout_with_mask'), // mask is used: kept
      ],
      initializers: [
        arrayToTensor('w', [2, 2, 3, 3], 'float32', f32(36)),
        arrayToTensor('shared', [2, 2, 3, 3], 'float32', f32(36)),
        arrayToTensor('bias', [2], 'float32', f32(2)),
        ...bnParams('relu'),
        ...bnParams('c'),
        ...bnParams('a'),
        ...bnParams('b'),
      ],
    });
    const { model: prepared, report } = prepareModel(model);
    expect(report.batchNormFolded.map((b) => b.batchNorm).sort()).toEqual(['bn_a', 'bn_b']);
    expect(report.batchNormKept).toEqual([
      { batchNorm: 'bn_relu', reason: expect.stringMatching(/not the output of a Conv \(Relu\)/) },
      { batchNorm: 'bn_c', reason: expect.stringMatching(/'c' is also read elsewhere/) },
    ]);
    expect(report.kept.map((k) => [k.node, k.opType])).toEqual([
      ['identity_of_input', 'Identity'],
      ['dropout_with_mask', 'Dropout'],
    ]);
    expect(report.kept[1]!.reason).toMatch(/mask/);
    const inits = prepared.graph.initializer.map((t) => t.name);
    // Both convs read 'shared': each gets its own folded copy; the original goes unused and is dropped.
    expect(inits.filter((n) => n.startsWith('shared_bnfolded'))).toHaveLength(2);
    expect(inits).not.toContain('shared');
    const x = { data: f32(2 * 2 * 16), dims: [2, 2, 4, 4] };
    expect(await maxDiff(model, prepared, { x })).toBeLessThanOrEqual(1e-5);
  });
});
