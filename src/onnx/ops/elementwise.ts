// Elementwise ops: one input (activations, normalisations, math) or several broadcast inputs
// (arithmetic, comparisons, logic, Where). Small constant inputs are folded for the ops torch uses
// in shape arithmetic, so Reshape targets built from them stay known.
import { DataType } from '../dtype.js';
import { elementCount } from '../tensor.js';
import { INT_TYPES, MAX_CONST, broadcastShapes } from './common.js';
import { CONVERT, ELEMENTWISE, NO_WORK, keepFp32, shapeSlots, type OpSpec, type QuantRole, type ShapeCtx, type ShapeRule } from './spec.js';

/** Output like input 0; `dtype` overrides the element type, `fold` evaluates constant values. */
function unary(dtype?: number, fold?: (v: number[]) => number[]): ShapeRule {
  return (ctx) => {
    const v = ctx.value(0);
    ctx.set(0, dtype ?? ctx.dtype(0), ctx.shape(0), v && fold ? fold(v) : undefined);
  };
}

const same = unary();
const boolOut = unary(DataType.BOOL);

function dropout(ctx: ShapeCtx): void {
  same(ctx);
  if (ctx.node.outputs[1]) ctx.set(1, DataType.BOOL, ctx.shape(0));
}

function batchNormalization(ctx: ShapeCtx): void {
  same(ctx);
  const s = ctx.shape(0);
  // Training-mode BN also returns running mean and variance, one per channel.
  for (const i of [1, 2]) if (ctx.node.outputs[i] && s.length > 1) ctx.set(i, ctx.dtype(0), [s[1]!]);
}

type Fold = (integer: boolean) => (xs: number[]) => number;

/** Evaluate an elementwise op over broadcast constant inputs. */
function broadcastEval(shapes: number[][], values: number[][], out: number[], fn: (xs: number[]) => number): number[] {
  const n = elementCount(out);
  const res = new Array<number>(n);
  const strides = shapes.map((s) => {
    const st = new Array<number>(out.length).fill(0);
    let acc = 1;
    for (let i = s.length - 1; i >= 0; i--) {
      const oi = out.length - s.length + i;
      st[oi] = s[i] === 1 ? 0 : acc;
      acc *= s[i]!;
    }
    return st;
  });
  const idx = new Array<number>(out.length).fill(0);
  for (let k = 0; k < n; k++) {
    res[k] = fn(values.map((v, j) => v[idx.reduce((acc, x, d) => acc + x * strides[j]![d]!, 0)]!));
    for (let d = out.length - 1; d >= 0; d--) {
      if (++idx[d]! < out[d]!) break;
      idx[d] = 0;
    }
  }
  return res;
}

/** Broadcast all inputs; `dtype` picks the output type, `fold` evaluates constant inputs. */
function broadcast(dtype: (ctx: ShapeCtx) => number, fold?: Fold): ShapeRule {
  return (ctx) => {
    const shapes = ctx.node.inputs.map((_, i) => ctx.shape(i));
    const out = broadcastShapes(shapes);
    const values = shapes.map((_, i) => ctx.value(i));
    let result: number[] | undefined;
    if (fold && values.every((v) => v !== undefined) && elementCount(out) <= MAX_CONST) {
      result = broadcastEval(shapes, values as number[][], out, fold(INT_TYPES.has(ctx.dtype(0))));
    }
    ctx.set(0, dtype(ctx), out, result);
  };
}

const firstType = (ctx: ShapeCtx) => ctx.dtype(0);
const bool = () => DataType.BOOL;
const arith = (fold?: Fold) => broadcast(firstType, fold);
const compare = (fold?: Fold) => broadcast(bool, fold);

/** An elementwise op: output elements are its work, fp16 converts it, int8 leaves it float unless `quant` says. */
function ew(op: string, shape: ShapeRule, quant: QuantRole = 'float'): OpSpec {
  return { op, shape, cost: ELEMENTWISE, fp16: CONVERT, quant };
}

export const ELEMENTWISE_OPS: readonly OpSpec[] = [
  // One input.
  ew('Relu', same, 'pass-through'),
  { op: 'Clip', shape: same, cost: shapeSlots('elementwise', [1, 2]), fp16: CONVERT, quant: 'pass-through' },
  ...['LeakyRelu', 'PRelu', 'Sigmoid', 'Tanh', 'HardSigmoid', 'HardSwish', 'Elu', 'Selu', 'Celu', 'Softplus', 'Softsign'].map((op) => ew(op, same)),
  ...['Exp', 'Log', 'Sqrt', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Erf', 'Sin', 'Cos', 'Tan', 'Asin', 'Acos', 'Atan'].map((op) => ew(op, same)),
  ...['Sinh', 'Cosh', 'Sign', 'Mish', 'Gelu', 'ThresholdedRelu', 'Shrink', 'BitwiseNot'].map((op) => ew(op, same)),
  ew('Neg', unary(undefined, (v) => v.map((x) => -x))),
  ew('Abs', unary(undefined, (v) => v.map(Math.abs))),
  { op: 'Identity', shape: unary(undefined, (v) => v), cost: NO_WORK, fp16: CONVERT, quant: 'silent' },
  { op: 'Dropout', shape: dropout, cost: NO_WORK, fp16: CONVERT, quant: 'float' },
  ...['Softmax', 'LogSoftmax', 'Hardmax'].map((op) => ew(op, same)),
  ...['LRN', 'InstanceNormalization', 'LayerNormalization', 'GroupNormalization', 'MeanVarianceNormalization'].map((op) => ew(op, same)),
  ew('BatchNormalization', batchNormalization),
  { op: 'CumSum', shape: same, cost: ELEMENTWISE, fp16: keepFp32('running sums overflow or lose small terms in float16'), quant: 'float' },
  ...['Not', 'IsNaN', 'IsInf'].map((op) => ew(op, boolOut)),
  // Several broadcast inputs.
  ew('Add', arith(() => ([a, b]) => a! + b!), 'activation'),
  ew('Sub', arith(() => ([a, b]) => a! - b!)),
  ew('Mul', arith(() => ([a, b]) => a! * b!)),
  ew('Div', arith((integer) => ([a, b]) => (integer ? Math.trunc(a! / b!) : a! / b!))),
  ew('Pow', arith(() => ([a, b]) => a! ** b!)),
  ew('Mod', arith(() => ([a, b]) => a! - b! * Math.floor(a! / b!))),
  ew('Max', arith(() => (xs) => Math.max(...xs))),
  ew('Min', arith(() => (xs) => Math.min(...xs))),
  ...['Sum', 'Mean', 'BitShift', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor'].map((op) => ew(op, arith())),
  ew('Equal', compare(() => ([a, b]) => (a === b ? 1 : 0))),
  ew('Less', compare(() => ([a, b]) => (a! < b! ? 1 : 0))),
  ew('Greater', compare(() => ([a, b]) => (a! > b! ? 1 : 0))),
  ...['LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor'].map((op) => ew(op, compare())),
  ew('Where', broadcast((ctx) => ctx.dtype(1), () => ([c, a, b]) => (c ? a! : b!))),
];
