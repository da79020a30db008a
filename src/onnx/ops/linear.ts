// Ops that multiply-accumulate: convolutions and matrix products, float and quantised forms.
// MACs are counted the way papers count them: Conv is out elements × (Cin/group) × kernel area,
// ConvTranspose in elements × (Cout/group) × kernel area, Gemm/MatMul M×N×K.
import { DataType } from '../dtype.js';
import { attrInt, attrInts, type GraphNode } from '../graph.js';
import { elementCount } from '../tensor.js';
import { broadcastShapes, windowAttrs, windowDims } from './common.js';
import { CONVERT, ShapeError, type MacRule, type OpSpec, type QuantRole, type ShapeCtx, type ShapeRule } from './spec.js';

/** The weight input: QLinear ops put the input's scale and zero-point before it. */
const weightIndex = (node: GraphNode) => (node.opType.startsWith('QLinear') ? 3 : 1);

/** Output type: int32 for the Integer forms, the output zero-point's type for QLinear forms. */
function productType(ctx: ShapeCtx): number {
  const op = ctx.node.opType;
  if (op.endsWith('Integer')) return DataType.INT32;
  if (op.startsWith('QLinear')) return ctx.dtype(7) || ctx.dtype(0);
  return ctx.dtype(0);
}

const convShape: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const w = ctx.shape(weightIndex(ctx.node));
  const win = windowAttrs(ctx.node, x.length - 2, w.slice(2));
  ctx.set(0, productType(ctx), [x[0]!, w[0]!, ...windowDims(x, win, false)]);
};

const convTransposeShape: ShapeRule = (ctx) => {
  const { node } = ctx;
  const x = ctx.shape(0);
  const w = ctx.shape(1);
  const spatial = x.length - 2;
  const group = attrInt(node, 'group', 1);
  const win = windowAttrs(node, spatial, w.slice(2));
  const outputPadding = attrInts(node, 'output_padding') ?? new Array<number>(spatial).fill(0);
  const outputShape = attrInts(node, 'output_shape');
  const out = [x[0]!, w[1]! * group];
  for (let i = 0; i < spatial; i++) {
    if (outputShape) {
      out.push(outputShape[outputShape.length - spatial + i]!);
    } else if (win.autoPad === 'SAME_UPPER' || win.autoPad === 'SAME_LOWER') {
      out.push(x[2 + i]! * win.strides[i]!);
    } else {
      const eff = (win.kernel[i]! - 1) * win.dilations[i]! + 1;
      out.push(win.strides[i]! * (x[2 + i]! - 1) + outputPadding[i]! + eff - win.padsBegin[i]! - win.padsEnd[i]!);
    }
  }
  ctx.set(0, ctx.dtype(0), out);
};

const gemmShape: ShapeRule = (ctx) => {
  const a = ctx.shape(0);
  const b = ctx.shape(1);
  if (a.length !== 2 || b.length !== 2) throw new ShapeError(`Gemm needs 2-D inputs, got [${a}] and [${b}]`);
  const [m, ka] = attrInt(ctx.node, 'transA', 0) ? [a[1]!, a[0]!] : [a[0]!, a[1]!];
  const [kb, n] = attrInt(ctx.node, 'transB', 0) ? [b[1]!, b[0]!] : [b[0]!, b[1]!];
  if (ka !== kb) throw new ShapeError(`Gemm inner dimensions differ: ${ka} vs ${kb}`);
  ctx.set(0, ctx.dtype(0), [m, n]);
};

function matmulDims(a0: number[], b0: number[]): number[] {
  const a = a0.length === 1 ? [1, a0[0]!] : a0;
  const b = b0.length === 1 ? [b0[0]!, 1] : b0;
  if (a.length < 2 || b.length < 2) throw new ShapeError(`MatMul of scalars`);
  const k1 = a[a.length - 1]!;
  const k2 = b[b.length - 2]!;
  if (k1 !== k2) throw new ShapeError(`MatMul inner dimensions differ: [${a0}] × [${b0}]`);
  const batch = broadcastShapes([a.slice(0, -2), b.slice(0, -2)]);
  const out = [...batch];
  if (a0.length !== 1) out.push(a[a.length - 2]!);
  if (b0.length !== 1) out.push(b[b.length - 1]!);
  return out;
}

const matmulShape: ShapeRule = (ctx) => ctx.set(0, productType(ctx), matmulDims(ctx.shape(0), ctx.shape(weightIndex(ctx.node))));

const convMacs: MacRule = (node, input, out) => {
  const w = input(weightIndex(node));
  if (!out || !w) return 'output or weight shape unknown';
  // w is [Cout, Cin/group, k...]: w[1] is already Cin/group.
  return elementCount(out) * elementCount(w.slice(1));
};

const convTransposeMacs: MacRule = (_node, input) => {
  const x = input(0);
  const w = input(1);
  if (!x || !w) return 'input or weight shape unknown';
  // w is [Cin, Cout/group, k...].
  return elementCount(x) * elementCount(w.slice(1));
};

const gemmMacs: MacRule = (node, input, out) => {
  const a = input(0);
  if (!out || !a) return 'input or output shape unknown';
  const k = attrInt(node, 'transA', 0) ? a[0]! : a[1]!;
  return elementCount(out) * k;
};

const matmulMacs: MacRule = (_node, input, out) => {
  const a = input(0);
  if (!out || !a) return 'input or output shape unknown';
  return elementCount(out) * a[a.length - 1]!;
};

function linear(op: string, shape: ShapeRule, macs: MacRule, quant: QuantRole): OpSpec {
  return { op, shape, cost: Object.freeze({ work: 'macs', macs, shapeInputs: [] }), fp16: CONVERT, quant };
}

export const LINEAR_OPS: readonly OpSpec[] = [
  linear('Conv', convShape, convMacs, 'weighted'),
  linear('ConvInteger', convShape, convMacs, 'float'),
  linear('QLinearConv', convShape, convMacs, 'float'),
  linear('ConvTranspose', convTransposeShape, convTransposeMacs, 'float'),
  linear('Gemm', gemmShape, gemmMacs, 'weighted'),
  linear('MatMul', matmulShape, matmulMacs, 'weighted'),
  linear('MatMulInteger', matmulShape, matmulMacs, 'float'),
  linear('QLinearMatMul', matmulShape, matmulMacs, 'float'),
];
