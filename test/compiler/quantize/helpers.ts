// Small float models built in code for the quantiser tests (Conv → Relu → MaxPool → Flatten →
// Gemm on 8×8 grey inputs), with knobs for an op the quantiser cannot handle, an old opset, and a
// Gemm whose rows hide a huge weight that wrecks int8 (for the mixed-precision tests). Building
// them here keeps the weights readable and the fixtures free of binary files.
import { create } from '@bufbuild/protobuf';
import { OnnxModel, arrayToTensor, DataType } from '../../../src/onnx/index.js';
import {
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
} from '../../../src/onnx/gen/onnx_pb.js';
import { rng } from '../../../src/compiler/check.js';
import { attr, tensorValueInfo } from '../../onnx/helpers.js';
import { createSession } from '../../../src/backends/onnxruntime.js';
import { encodeModel } from '../../../src/onnx/index.js';

export const CLASSES = 5;
export const SIZE = 8;

const vi = (name: string, dims: (number | string)[]) => tensorValueInfo(name, DataType.FLOAT, dims);
const ints = (name: string, v: number[]) => attr(name, v);
const int = (name: string, v: number) => attr(name, v);

function gaussian(next: () => number, n: number, sd: number): Float32Array {
  return Float32Array.from({ length: n }, () => {
    const u = Math.max(next(), 1e-9);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next()) * sd;
  });
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c]!;
  return t;
}

export interface FixtureOptions {
  /** Insert this op (e.g. 'Tanh') between Relu and MaxPool: an op with no int8 rule. */
  unsupported?: string;
  opset?: number;
  /** Hide a weight of 100 in every Gemm row, on features that are always 0: int8 loses the rest of the row. */
  outlier?: boolean;
  /** Store the Gemm weight as [64, 5] with transB=0 (channel axis 1). */
  transB0?: boolean;
  /** Conv channel 3 gets weights of 1e-12 and a bias of 10: the int32 bias would overflow. */
  tinyChannel?: boolean;
  seed?: number;
}

/** x [batch,1,8,8] → Conv(4, 3×3, pad 1) → Relu → MaxPool 2 → Flatten → Gemm(64→5, transB) → logits. */
export function convGemmModel(opts: FixtureOptions = {}): OnnxModel {
  const next = rng(opts.seed ?? 7);
  const convW = gaussian(next, 4 * 1 * 3 * 3, 0.5);
  const convB = gaussian(next, 4, 0.1);
  if (opts.outlier) {
    // Channel 0 is dead (zero weights, negative bias → Relu gives 0), so Gemm columns 0..15 read zeros.
    convW.fill(0, 0, 9);
    convB[0] = -1;
  }
  if (opts.tinyChannel) {
    for (let i = 27; i < 36; i++) convW[i] = 1e-12;
    convB[3] = 10;
  }
  const feat = 4 * (SIZE / 2) * (SIZE / 2);
  const gemmW = gaussian(next, CLASSES * feat, 0.3);
  if (opts.outlier) for (let r = 0; r < CLASSES; r++) gemmW[r * feat + r] = 100;
  const gemmB = gaussian(next, CLASSES, 0.1);
  const nodes = [
    create(NodeProtoSchema, { opType: 'Conv', name: 'conv', input: ['x', 'conv.w', 'conv.b'], output: ['conv_out'], attribute: [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1])] }),
    create(NodeProtoSchema, { opType: 'Relu', name: 'relu', input: ['conv_out'], output: ['relu_out'] }),
  ];
  let poolIn = 'relu_out';
  if (opts.unsupported) {
    nodes.push(create(NodeProtoSchema, { opType: opts.unsupported, name: 'odd', input: ['relu_out'], output: ['odd_out'] }));
    poolIn = 'odd_out';
  }
  nodes.push(
    create(NodeProtoSchema, { opType: 'MaxPool', name: 'pool', input: [poolIn], output: ['pool_out'], attribute: [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])] }),
    create(NodeProtoSchema, { opType: 'Flatten', name: 'flatten', input: ['pool_out'], output: ['flat'], attribute: [int('axis', 1)] }),
    create(NodeProtoSchema, { opType: 'Gemm', name: 'gemm', input: ['flat', 'gemm.w', 'gemm.b'], output: ['logits'], attribute: opts.transB0 ? [] : [int('transB', 1)] }),
  );
  const graph = create(GraphProtoSchema, {
    name: 'conv-gemm',
    node: nodes,
    input: [vi('x', ['batch', 1, SIZE, SIZE])],
    output: [vi('logits', ['batch', CLASSES])],
    initializer: [
      arrayToTensor('conv.w', [4, 1, 3, 3], 'float32', convW),
      arrayToTensor('conv.b', [4], 'float32', convB),
      opts.transB0 ? arrayToTensor('gemm.w', [feat, CLASSES], 'float32', transpose(gemmW, CLASSES, feat)) : arrayToTensor('gemm.w', [CLASSES, feat], 'float32', gemmW),
      arrayToTensor('gemm.b', [CLASSES], 'float32', gemmB),
    ],
  });
  const proto = create(ModelProtoSchema, { irVersion: 8n, producerName: 'edgeexit-test', graph, opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(opts.opset ?? 13) })] });
  return new OnnxModel(proto, 'conv-gemm.onnx');
}

/** Random inputs in [-1, 1] (what (pixel/255 − 0.5)/0.5 gives), in batches. */
export function randomBatches(count: number, batch: number, seed = 1): { data: Float32Array; dims: number[] }[] {
  const next = rng(seed);
  const out: { data: Float32Array; dims: number[] }[] = [];
  for (let i = 0; i < count; i++) out.push({ data: Float32Array.from({ length: batch * SIZE * SIZE }, () => next() * 2 - 1), dims: [batch, 1, SIZE, SIZE] });
  return out;
}

/** Run a single-input model and return one output. */
export async function runModel(model: OnnxModel | Uint8Array, feeds: Record<string, { data: Float32Array; dims: number[] }>, output: string): Promise<Float32Array> {
  const s = await createSession(model instanceof Uint8Array ? model : encodeModel(model));
  try {
    return (await s.run(feeds))[output]!.data as Float32Array;
  } finally {
    await s.close();
  }
}

/** The float model's own top-1 as labels (so float accuracy is 100%). */
export async function selfLabels(model: OnnxModel, batches: { data: Float32Array; dims: number[] }[]): Promise<Int32Array> {
  const labels: number[] = [];
  for (const b of batches) {
    const out = await runModel(model, { x: b }, 'logits');
    for (let r = 0; r < b.dims[0]!; r++) {
      let best = 0;
      for (let c = 1; c < CLASSES; c++) if (out[r * CLASSES + c]! > out[r * CLASSES + best]!) best = c;
      labels.push(best);
    }
  }
  return Int32Array.from(labels);
}
