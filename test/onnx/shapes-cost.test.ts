// Shape inference checked against onnxruntime's actual output shapes on a model that exercises
// every op rule, and MAC / parameter counts of the fixtures checked against numbers worked out
// by hand.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DataType,
  arrayToTensor,
  costPerOutput,
  dtypeFromCode,
  inferShapes,
  modelCost,
  nodeCosts,
  opHistogram,
  parameterCount,
  readModel,
  writeModel,
  type OnnxModel,
} from '../../src/onnx/index.js';
import { buildModel, fixture, node, randomFeeds, runFile, tempDir, tensorValueInfo } from './helpers.js';

let tmp: string;
beforeAll(async () => {
  tmp = await tempDir();
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

const f32 = (name: string, dims: number[], fill = 0.1) =>
  arrayToTensor(name, dims, 'float32', Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => fill * ((i % 7) - 3)));
const i64 = (name: string, values: number[]) => arrayToTensor(name, [values.length], 'int64', BigInt64Array.from(values.map(BigInt)));

/** One input x: [N, 3, 10, 10]; each output exercises one shape rule. */
function opZoo(): { model: OnnxModel; expected: Record<string, number[]> } {
  const expected: Record<string, number[]> = {};
  const nodes = [];
  const out = (name: string, dims: number[]) => (expected[name] = dims);

  nodes.push(node('Conv', ['x', 'w_same'], ['conv_same'], { auto_pad: 'SAME_UPPER', strides: [2, 2] }));
  out('conv_same', [1, 4, 5, 5]);
  nodes.push(node('Conv', ['x', 'w_odd', 'b_odd'], ['conv_odd'], { pads: [1, 0, 2, 1], strides: [2, 3], dilations: [2, 1] }));
  out('conv_odd', [1, 6, 5, 4]);
  nodes.push(node('Conv', ['x', 'w_group'], ['conv_group'], { group: 3 }));
  out('conv_group', [1, 6, 8, 8]);
  nodes.push(node('ConvTranspose', ['x', 'w_t'], ['deconv'], { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] }));
  out('deconv', [1, 2, 20, 20]);
  nodes.push(node('ConvTranspose', ['x', 'w_tg'], ['deconv_group'], { strides: [2, 2], group: 3 }));
  out('deconv_group', [1, 6, 20, 20]);
  nodes.push(node('MaxPool', ['x'], ['pool_ceil'], { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }));
  out('pool_ceil', [1, 3, 5, 5]);
  nodes.push(node('MaxPool', ['x'], ['pool_ceil_pad'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1 }));
  out('pool_ceil_pad', [1, 3, 6, 6]);
  nodes.push(node('AveragePool', ['x'], ['avg'], { kernel_shape: [2, 2], strides: [2, 2] }));
  out('avg', [1, 3, 5, 5]);
  nodes.push(node('AveragePool', ['x'], ['avg_pad'], { kernel_shape: [3, 2], strides: [3, 3], pads: [0, 1, 0, 1] }));
  out('avg_pad', [1, 3, 3, 4]);
  nodes.push(node('GlobalAveragePool', ['x'], ['gap']));
  out('gap', [1, 3, 1, 1]);
  nodes.push(node('ReduceMean', ['x'], ['rmean'], { axes: [2, 3], keepdims: 0 }));
  out('rmean', [1, 3]);
  nodes.push(node('ReduceSum', ['x', 'axes_1'], ['rsum']));
  out('rsum', [1, 1, 10, 10]);
  nodes.push(node('Flatten', ['x'], ['flat2'], { axis: 2 }));
  out('flat2', [3, 100]);
  nodes.push(node('Reshape', ['x', 'shape_0m1'], ['reshaped']));
  out('reshaped', [1, 300]);
  nodes.push(node('Transpose', ['x'], ['nhwc'], { perm: [0, 2, 3, 1] }));
  out('nhwc', [1, 10, 10, 3]);
  nodes.push(node('Concat', ['x', 'x'], ['cat'], { axis: 1 }));
  out('cat', [1, 6, 10, 10]);
  nodes.push(node('Softmax', ['x'], ['soft'], { axis: 1 }));
  out('soft', [1, 3, 10, 10]);
  nodes.push(node('Pad', ['x', 'pads'], ['padded']));
  out('padded', [1, 3, 14, 16]);
  nodes.push(node('Resize', ['x', '', 'scales'], ['up'], { mode: 'nearest' }));
  out('up', [1, 3, 20, 20]);
  nodes.push(node('Resize', ['x', '', '', 'sizes'], ['resized']));
  out('resized', [1, 3, 7, 5]);
  nodes.push(node('Unsqueeze', ['x', 'axes_0'], ['unsq']));
  out('unsq', [1, 1, 3, 10, 10]);
  nodes.push(node('Squeeze', ['unsq', 'axes_0'], ['sq']));
  out('sq', [1, 3, 10, 10]);
  nodes.push(node('Gemm', ['reshaped', 'w_fc', 'b_fc'], ['fc'], { transB: 1 }));
  out('fc', [1, 10]);
  nodes.push(node('MatMul', ['x', 'w_mm'], ['mm']));
  out('mm', [1, 3, 10, 4]);
  nodes.push(node('MatMul', ['x', 'v10'], ['mv']));
  out('mv', [1, 3, 10]);
  nodes.push(node('Add', ['x', 'b_c11'], ['add_b']));
  out('add_b', [1, 3, 10, 10]);
  nodes.push(node('Mul', ['x', 'v10'], ['mul_b']));
  out('mul_b', [1, 3, 10, 10]);
  nodes.push(node('Clip', ['x', 'lo', 'hi'], ['clip']));
  out('clip', [1, 3, 10, 10]);
  nodes.push(node('LeakyRelu', ['x'], ['leaky'], { alpha: { float: 0.1 } }));
  out('leaky', [1, 3, 10, 10]);
  nodes.push(node('BatchNormalization', ['x', 'bn_s', 'bn_b', 'bn_m', 'bn_v'], ['bn']));
  out('bn', [1, 3, 10, 10]);
  // torch's dynamic flatten: Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))
  nodes.push(node('Shape', ['x'], ['shp']));
  nodes.push(node('Gather', ['shp', 'zero'], ['n0'], { axis: 0 }));
  nodes.push(node('Unsqueeze', ['n0', 'axes_0'], ['n0u']));
  nodes.push(node('Concat', ['n0u', 'minus1'], ['target'], { axis: 0 }));
  nodes.push(node('Reshape', ['x', 'target'], ['dyn_flat']));
  out('dyn_flat', [1, 300]);
  nodes.push(node('Split', ['x', 'split_12'], ['split_a', 'split_b'], { axis: 1 }));
  out('split_a', [1, 1, 10, 10]);
  out('split_b', [1, 2, 10, 10]);
  nodes.push(node('Slice', ['x', 'starts', 'ends', 'axes_2', 'steps'], ['sliced']));
  out('sliced', [1, 3, 3, 10]);
  nodes.push(node('Expand', ['b_c11', 'shp'], ['expanded']));
  out('expanded', [1, 3, 10, 10]);
  nodes.push(node('Tile', ['x', 'reps'], ['tiled']));
  out('tiled', [1, 3, 20, 10]);
  nodes.push(node('ArgMax', ['x'], ['argmax'], { axis: 1 }));
  out('argmax', [1, 1, 10, 10]);
  nodes.push(node('Cast', ['x'], ['as_int'], { to: DataType.INT32 }));
  out('as_int', [1, 3, 10, 10]);

  const initializers = [
    f32('w_same', [4, 3, 3, 3]),
    f32('w_odd', [6, 3, 3, 2]),
    f32('b_odd', [6]),
    f32('w_group', [6, 1, 3, 3]),
    f32('w_t', [3, 2, 3, 3]),
    f32('w_tg', [3, 2, 2, 2]),
    f32('w_fc', [10, 300]),
    f32('b_fc', [10]),
    f32('w_mm', [10, 4]),
    f32('v10', [10]),
    f32('b_c11', [3, 1, 1]),
    arrayToTensor('lo', [], 'float32', Float32Array.of(-0.5)),
    arrayToTensor('hi', [], 'float32', Float32Array.of(0.5)),
    f32('bn_s', [3]),
    f32('bn_b', [3]),
    f32('bn_m', [3]),
    arrayToTensor('bn_v', [3], 'float32', Float32Array.of(1, 2, 3)),
    i64('axes_0', [0]),
    i64('axes_1', [1]),
    i64('axes_2', [2]),
    i64('shape_0m1', [0, -1]),
    i64('pads', [0, 0, 1, 2, 0, 0, 3, 4]),
    arrayToTensor('scales', [4], 'float32', Float32Array.of(1, 1, 2, 2)),
    i64('sizes', [1, 3, 7, 5]),
    arrayToTensor('zero', [], 'int64', BigInt64Array.of(0n)),
    i64('minus1', [-1]),
    i64('split_12', [1, 2]),
    i64('starts', [2]),
    i64('ends', [8]),
    i64('steps', [2]),
    i64('reps', [1, 1, 2, 1]),
  ];
  const dtypes: Record<string, number> = { argmax: DataType.INT64, as_int: DataType.INT32 };
  const model = buildModel({
    inputs: [tensorValueInfo('x', DataType.FLOAT, ['N', 3, 10, 10])],
    outputs: Object.keys(expected).map((o) => tensorValueInfo(o, dtypes[o] ?? DataType.FLOAT)),
    nodes,
    initializers,
  });
  return { model, expected };
}

describe('inferShapes', () => {
  it('agrees with onnxruntime on every op rule', async () => {
    const { model, expected } = opZoo();
    const shapes = inferShapes(model);
    expect(shapes.unresolved).toEqual([]);
    const file = path.join(tmp, 'op-zoo.onnx');
    await writeModel(model, file);
    const outputs = await runFile(file, randomFeeds(model, 3));
    for (const [name, dims] of Object.entries(expected)) {
      expect([name, outputs[name]!.dims]).toEqual([name, dims]);
      expect([name, shapes.tensors.get(name)?.shape]).toEqual([name, dims]);
      const ortType = outputs[name]!.type === 'float32' ? 'float32' : outputs[name]!.type;
      expect([name, dtypeFromCode(shapes.tensors.get(name)!.dtype)]).toEqual([name, ortType]);
    }
    // The Shape → Gather → Unsqueeze → Concat chain is evaluated, not just shaped.
    expect(shapes.constants.get('target')).toEqual([1, -1]);
  });

  it('uses dynamicDim for symbolic dimensions', () => {
    const { model } = opZoo();
    const shapes = inferShapes(model, { dynamicDim: 4 });
    expect(shapes.tensors.get('x')?.shape).toEqual([4, 3, 10, 10]);
    expect(shapes.tensors.get('dyn_flat')?.shape).toEqual([4, 300]);
    expect(shapes.tensors.get('flat2')?.shape).toEqual([12, 100]);
  });

  it('lists ops it cannot infer instead of throwing', () => {
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1, 4])],
      outputs: ['y'],
      nodes: [node('Einsum', ['x'], ['e'], { equation: 'ij->ji' }), node('Relu', ['e'], ['y'])],
    });
    const shapes = inferShapes(model);
    expect(shapes.unresolved).toEqual([
      { node: 'e', opType: 'Einsum', reason: 'no shape rule for Einsum' },
      { node: 'y', opType: 'Relu', reason: "input 'e' has an unknown shape" },
    ]);
    expect(shapes.tensors.get('y')).toEqual({ dtype: DataType.FLOAT });
  });

  it('resolves every tensor of the fixtures', async () => {
    for (const f of ['tiny-2exit.onnx', 'residual-gap.onnx', 'external-data.onnx', 'cost-ops.onnx']) {
      const model = await readModel(fixture(f));
      const shapes = inferShapes(model);
      expect([f, shapes.unresolved]).toEqual([f, []]);
      for (const n of model.graph.node) for (const o of n.output) expect(shapes.tensors.get(o)?.shape).toBeDefined();
    }
  });
});

describe('cost', () => {
  it('MACs of the 2-exit CNN, per exit, match the hand count', async () => {
    const model = await readModel(fixture('tiny-2exit.onnx'));
    // conv1: out 4×16×16 = 1024 elements × Cin 1 × 3×3          =  9 216
    // gemm0: M 1 × N 10 × K 4·8·8 = 256                         =  2 560
    // conv2: out 8×8×8 = 512 elements × Cin 4 × 3×3             = 18 432
    // gemm1: 1 × 10 × 8·4·4 = 128                               =  1 280
    const per = Object.fromEntries(nodeCosts(model).filter((c) => c.macs > 0).map((c) => [c.node, c.macs]));
    expect(per).toEqual({
      '/block1/block1.0/Conv': 9216,
      '/exit0/exit0.1/Gemm': 2560,
      '/block2/block2.0/Conv': 18432,
      '/exit1/exit1.1/Gemm': 1280,
    });
    const exits = costPerOutput(model);
    expect(exits.map((e) => [e.output, e.cumulativeMacs, e.incrementalMacs, e.nodes, e.incrementalNodes])).toEqual([
      ['exit_0', 9216 + 2560, 9216 + 2560, 6, 6],
      ['exit_1', 9216 + 18432 + 1280, 18432 + 1280, 10, 6],
    ]);
    // Parameters: conv1 36+4, bn1 4×4, gemm0 2560+10, conv2 288+8, bn2 8×4, gemm1 1280+10.
    expect(exits.map((e) => [e.cumulativeParams, e.incrementalParams])).toEqual([
      [40 + 16 + 2570, 40 + 16 + 2570],
      [40 + 16 + 296 + 32 + 1290, 296 + 32 + 1290],
    ]);
    expect(parameterCount(model)).toBe(40 + 16 + 2570 + 296 + 32 + 1290);
    // Elementwise work: BN + Relu outputs (1024, 1024; 512, 512) and MaxPool outputs (256; 128).
    expect(modelCost(model).elementwise).toBe(1024 * 2 + 256 + 512 * 2 + 128);
  });

  it('grouped strided Conv, ConvTranspose and batched MatMul match the hand count', async () => {
    const model = await readModel(fixture('cost-ops.onnx'));
    const costs = Object.fromEntries(nodeCosts(model).map((c) => [c.node, [c.macs, c.outputShape]]));
    expect(costs).toEqual({
      // out 6×4×4 = 96 elements × (Cin 4 / group 2) × 3×3
      conv_g2: [96 * 2 * 9, [1, 6, 4, 4]],
      relu: [0, [1, 6, 4, 4]],
      // in 6×4×4 = 96 elements × (Cout 3 / group 1) × 2×2
      deconv: [96 * 3 * 4, [1, 3, 8, 8]],
      reshape: [0, [1, 3, 64]],
      // batch 1 × M 3 × N 5 × K 64
      matmul: [3 * 5 * 64, [1, 3, 5]],
    });
    const total = modelCost(model);
    expect(total.macs).toBe(1728 + 1152 + 960);
    // w1 108 + b1 6 + w2 72 + w3 320; the Reshape target is not a parameter.
    expect(total.params).toBe(108 + 6 + 72 + 320);
    expect([...total.histogram]).toEqual([
      ['Conv', 1],
      ['ConvTranspose', 1],
      ['MatMul', 1],
      ['Relu', 1],
      ['Reshape', 1],
    ]);
  });

  it('residual model: the ReduceMean exit adds no MACs over the logits exit', async () => {
    const model = await readModel(fixture('residual-gap.onnx'));
    const [logits, mean] = costPerOutput(model);
    // stem conv 512 × 3 × 9 = 13 824; two branch convs 512 × 8 × 9 = 36 864 each; fc 8 × 5 = 40.
    expect(logits!.cumulativeMacs).toBe(13824 + 2 * 36864 + 40);
    expect(mean!.cumulativeMacs).toBe(13824 + 2 * 36864);
    expect(mean!.incrementalMacs).toBe(0);
    expect(mean!.incrementalNodes).toBe(1);
    expect(opHistogram(model).get('Constant')).toBe(3);
  });
});
