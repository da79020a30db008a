// Reductions over axes, and the index-selecting ops (ArgMax, ArgMin, TopK).
import { DataType } from '../dtype.js';
import { attrInt, attrInts } from '../graph.js';
import { normAxis } from './common.js';
import { CONVERT, ELEMENTWISE, keepFp32, shapeSlots, type OpSpec, type ShapeRule } from './spec.js';

const reduceShape: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  let axes = attrInts(ctx.node, 'axes');
  if (!axes && ctx.has(1)) axes = ctx.requireValue(1, 'axes');
  const keep = attrInt(ctx.node, 'keepdims', 1) !== 0;
  if (!axes || axes.length === 0) {
    if (attrInt(ctx.node, 'noop_with_empty_axes', 0)) return ctx.set(0, ctx.dtype(0), s);
    axes = s.map((_, i) => i);
  }
  const set = new Set(axes.map((a) => normAxis(a, s.length)));
  const out = keep ? s.map((d, i) => (set.has(i) ? 1 : d)) : s.filter((_, i) => !set.has(i));
  ctx.set(0, ctx.dtype(0), out);
};

const argShape: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const axis = normAxis(attrInt(ctx.node, 'axis', 0), s.length);
  const keep = attrInt(ctx.node, 'keepdims', 1) !== 0;
  ctx.set(0, DataType.INT64, keep ? s.map((d, i) => (i === axis ? 1 : d)) : s.filter((_, i) => i !== axis));
};

const topKShape: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const axis = normAxis(attrInt(ctx.node, 'axis', -1), s.length);
  const k = attrInt(ctx.node, 'k') ?? ctx.requireValue(1, 'K')[0]!;
  const out = s.map((d, i) => (i === axis ? k : d));
  ctx.set(0, ctx.dtype(0), out);
  if (ctx.node.outputs[1]) ctx.set(1, DataType.INT64, out);
};

const REDUCE = ['ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare'];

export const REDUCE_OPS: readonly OpSpec[] = [
  // Input 1 (opset 13+/18+) holds the axes.
  ...REDUCE.map((op): OpSpec => ({ op, shape: reduceShape, cost: shapeSlots('elementwise', [1]), fp16: CONVERT, quant: 'float' })),
  { op: 'ArgMax', shape: argShape, cost: ELEMENTWISE, fp16: CONVERT, quant: 'float' },
  { op: 'ArgMin', shape: argShape, cost: ELEMENTWISE, fp16: CONVERT, quant: 'float' },
  { op: 'TopK', shape: topKShape, cost: shapeSlots('elementwise', [1]), fp16: keepFp32('float16 ties change which indices are selected'), quant: 'float' },
];
