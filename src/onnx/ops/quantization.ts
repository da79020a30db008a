// The quantisation ops themselves. Float16 keeps them float32: their scales must stay float32
// before opset 19.
import { DataType } from '../dtype.js';
import { attrInt } from '../graph.js';
import { ELEMENTWISE, keepFp32, type OpSpec, type ShapeRule } from './spec.js';

const quantizeShape: ShapeRule = (ctx) => {
  const dt = attrInt(ctx.node, 'output_dtype') || (ctx.has(2) ? ctx.dtype(2) : DataType.UINT8);
  ctx.set(0, dt, ctx.shape(0));
};

const dequantizeShape: ShapeRule = (ctx) => ctx.set(0, ctx.has(1) ? ctx.dtype(1) || DataType.FLOAT : DataType.FLOAT, ctx.shape(0));

const SCALES = keepFp32('quantisation scales must stay float32');

export const QUANTIZATION_OPS: readonly OpSpec[] = [
  { op: 'QuantizeLinear', shape: quantizeShape, cost: ELEMENTWISE, fp16: SCALES, quant: 'float' },
  { op: 'DequantizeLinear', shape: dequantizeShape, cost: ELEMENTWISE, fp16: SCALES, quant: 'float' },
  // Three outputs (y, scale, zero-point); shape inference has no rule for it yet.
  { op: 'DynamicQuantizeLinear', shape: null, cost: ELEMENTWISE, fp16: SCALES, quant: 'float' },
];
