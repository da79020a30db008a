// Pooling: sliding windows over the spatial axes, and global pools that reduce them to 1.
import { DataType } from '../dtype.js';
import { attrInt } from '../graph.js';
import { windowAttrs, windowDims } from './common.js';
import { CONVERT, ELEMENTWISE, type OpSpec, type QuantRole, type ShapeRule } from './spec.js';

const poolShape: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const win = windowAttrs(ctx.node, x.length - 2);
  const out = [x[0]!, x[1]!, ...windowDims(x, win, attrInt(ctx.node, 'ceil_mode', 0) !== 0)];
  ctx.set(0, ctx.dtype(0), out);
  // MaxPool's optional second output: the flat index of each maximum.
  if (ctx.node.opType === 'MaxPool' && ctx.node.outputs[1]) ctx.set(1, DataType.INT64, out);
};

const globalPoolShape: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  ctx.set(0, ctx.dtype(0), [x[0]!, x[1]!, ...x.slice(2).map(() => 1)]);
};

function pool(op: string, shape: ShapeRule, quant: QuantRole): OpSpec {
  return { op, shape, cost: ELEMENTWISE, fp16: CONVERT, quant };
}

export const POOL_OPS: readonly OpSpec[] = [
  pool('MaxPool', poolShape, 'pass-through'),
  pool('AveragePool', poolShape, 'activation'),
  pool('LpPool', poolShape, 'float'),
  pool('GlobalAveragePool', globalPoolShape, 'activation'),
  pool('GlobalMaxPool', globalPoolShape, 'float'),
  pool('GlobalLpPool', globalPoolShape, 'float'),
];
