// Static shape inference for the CNN ops torch.onnx.export emits, at a fixed batch size (dynamic
// dimensions become `dynamicDim`, 1 by default). Cost estimates and stage extraction need every
// tensor's shape without running the model. Small integer tensors (shape vectors) are also
// evaluated, because torch builds Reshape targets from Shape → Gather → Unsqueeze → Concat chains.
// Ops we do not know leave their outputs unknown and are listed in `unresolved`, never thrown.
import type { TensorProto, ValueInfoProto } from './gen/onnx_pb.js';
import { DataType, dtypeFromCode } from './dtype.js';
import { OnnxGraph, attrFloat, attrFloats, attrInt, attrInts, attrString, attrTensor, getAttribute, type GraphNode } from './graph.js';
import type { OnnxModel } from './model.js';
import { elementCount, isExternal, tensorDims, tensorToArray } from './tensor.js';

export interface TensorShapeInfo {
  /** TensorProto.DataType number; 0 when unknown. */
  dtype: number;
  /** Concrete dims; undefined when unknown. */
  shape?: number[];
}

export interface ShapeOptions {
  /** Value for dimensions the model leaves symbolic (batch, sequence length). Default 1. */
  dynamicDim?: number;
  /** Override the shapes of graph inputs. */
  inputShapes?: Readonly<Record<string, readonly number[]>>;
}

export interface ShapeResult {
  /** Graph inputs, initializers and every node output whose shape is known. */
  tensors: Map<string, TensorShapeInfo>;
  /** Values of small numeric tensors known without running the model (flattened, as numbers). */
  constants: Map<string, number[]>;
  /** Nodes whose outputs could not be inferred, with the reason. */
  unresolved: { node: string; opType: string; reason: string }[];
}

/** Constant tensors bigger than this are not evaluated (shape vectors are tiny; weights are not needed). */
const MAX_CONST = 4096;

class ShapeError extends Error {}

/** Numpy-style broadcasting of several shapes. */
export function broadcastShapes(shapes: readonly (readonly number[])[]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const v = s[s.length - rank + i] ?? 1;
      if (v === 1) continue;
      if (d !== 1 && d !== v) throw new ShapeError(`shapes ${shapes.map((s) => `[${s.join(',')}]`).join(' and ')} do not broadcast`);
      d = v;
    }
    out.push(d);
  }
  return out;
}

/** Dims of a value from its ValueInfoProto, symbolic dims replaced; undefined for non-tensors or unknown rank. */
export function valueInfoShape(v: ValueInfoProto, dynamicDim = 1): TensorShapeInfo | undefined {
  const tt = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
  if (!tt) return undefined;
  if (!tt.shape) return { dtype: tt.elemType };
  const shape = tt.shape.dim.map((d) => {
    if (d.value.case === 'dimValue' && d.value.value >= 0n) return Number(d.value.value);
    return dynamicDim;
  });
  return { dtype: tt.elemType, shape };
}

function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new ShapeError(`axis ${axis} is out of range for rank ${rank}`);
  return a;
}

const INT_TYPES = new Set<number>([
  DataType.INT8,
  DataType.INT16,
  DataType.INT32,
  DataType.INT64,
  DataType.UINT8,
  DataType.UINT16,
  DataType.UINT32,
  DataType.UINT64,
  DataType.BOOL,
]);

function constantValues(t: TensorProto): number[] | undefined {
  const dtype = dtypeFromCode(t.dataType);
  // Only types whose array holds plain values (not raw float16/float8 bits) are useful for shape arithmetic.
  if (!dtype || dtype === 'string' || dtype.startsWith('complex') || dtype.startsWith('float8') || dtype === 'float16' || dtype === 'bfloat16' || dtype === 'float4e2m1') {
    return undefined;
  }
  if (elementCount(tensorDims(t)) > MAX_CONST) return undefined;
  if (isExternal(t) && t.rawData.length === 0) return undefined;
  return Array.from(tensorToArray(t) as ArrayLike<number | bigint>, (v) => Number(v));
}

const UNARY = new Set([
  'Relu', 'LeakyRelu', 'PRelu', 'Sigmoid', 'Tanh', 'Clip', 'HardSigmoid', 'HardSwish', 'Elu', 'Selu', 'Celu', 'Softplus',
  'Softsign', 'Exp', 'Log', 'Sqrt', 'Neg', 'Abs', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Erf', 'Sin', 'Cos', 'Tan',
  'Asin', 'Acos', 'Atan', 'Sinh', 'Cosh', 'Sign', 'Mish', 'Gelu', 'Identity', 'Softmax', 'LogSoftmax', 'Hardmax',
  'ThresholdedRelu', 'LRN', 'InstanceNormalization', 'LayerNormalization', 'GroupNormalization', 'BatchNormalization',
  'Dropout', 'Shrink', 'CumSum', 'MeanVarianceNormalization', 'Not', 'IsNaN', 'IsInf', 'BitwiseNot',
]);
const BOOL_OUT = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not', 'IsNaN', 'IsInf']);
const BROADCAST = new Set([
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Mod', 'Max', 'Min', 'Sum', 'Mean', 'BitShift', 'And', 'Or', 'Xor', 'Equal', 'Less',
  'Greater', 'LessOrEqual', 'GreaterOrEqual', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor',
]);
const REDUCE = new Set([
  'ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp',
  'ReduceSumSquare',
]);

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

function binaryFn(op: string, integer: boolean): ((xs: number[]) => number) | undefined {
  switch (op) {
    case 'Add':
      return ([a, b]) => a! + b!;
    case 'Sub':
      return ([a, b]) => a! - b!;
    case 'Mul':
      return ([a, b]) => a! * b!;
    case 'Div':
      return ([a, b]) => (integer ? Math.trunc(a! / b!) : a! / b!);
    case 'Max':
      return (xs) => Math.max(...xs);
    case 'Min':
      return (xs) => Math.min(...xs);
    case 'Equal':
      return ([a, b]) => (a === b ? 1 : 0);
    case 'Less':
      return ([a, b]) => (a! < b! ? 1 : 0);
    case 'Greater':
      return ([a, b]) => (a! > b! ? 1 : 0);
    case 'Mod':
      return ([a, b]) => a! - b! * Math.floor(a! / b!);
    case 'Pow':
      return ([a, b]) => a! ** b!;
    default:
      return undefined;
  }
}

/** Output size of one spatial axis of a convolution or pooling window. */
function windowOut(input: number, k: number, s: number, d: number, pb: number, pe: number, autoPad: string, ceil: boolean): number {
  const eff = d * (k - 1) + 1;
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') return Math.ceil(input / s);
  if (autoPad === 'VALID') return Math.floor((input - eff) / s) + 1;
  const span = input + pb + pe - eff;
  if (!ceil) return Math.floor(span / s) + 1;
  let out = Math.ceil(span / s) + 1;
  // A window that would start in the end padding is dropped (as onnxruntime and PyTorch do).
  if ((out - 1) * s >= input + pb) out--;
  return out;
}

interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  padsEnd: number[];
  autoPad: string;
}

function windowAttrs(node: GraphNode, spatial: number, kernelFallback?: number[]): Window {
  const kernel = attrInts(node, 'kernel_shape') ?? kernelFallback;
  if (!kernel || kernel.length !== spatial) throw new ShapeError(`kernel_shape ${kernel ? `[${kernel}]` : 'missing'} does not match ${spatial} spatial dims`);
  const strides = attrInts(node, 'strides') ?? kernel.map(() => 1);
  const dilations = attrInts(node, 'dilations') ?? kernel.map(() => 1);
  const pads = attrInts(node, 'pads') ?? new Array<number>(2 * spatial).fill(0);
  return {
    kernel,
    strides,
    dilations,
    padsBegin: pads.slice(0, spatial),
    padsEnd: pads.slice(spatial),
    autoPad: attrString(node, 'auto_pad', 'NOTSET'),
  };
}

interface Ctx {
  node: GraphNode;
  info(i: number): TensorShapeInfo | undefined;
  shape(i: number): number[];
  dtype(i: number): number;
  value(i: number): number[] | undefined;
  requireValue(i: number, what: string): number[];
  has(i: number): boolean;
  set(i: number, dtype: number, shape: number[], values?: number[]): void;
}

function sliceDims(ctx: Ctx, data: number[]): { out: number[]; picks: number[][] } {
  const { node } = ctx;
  let starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined;
  if (getAttribute(node, 'starts')) {
    starts = attrInts(node, 'starts')!;
    ends = attrInts(node, 'ends') ?? [];
    axes = attrInts(node, 'axes');
  } else {
    starts = ctx.requireValue(1, 'starts');
    ends = ctx.requireValue(2, 'ends');
    axes = ctx.has(3) ? ctx.requireValue(3, 'axes') : undefined;
    steps = ctx.has(4) ? ctx.requireValue(4, 'steps') : undefined;
  }
  const out = [...data];
  const picks = data.map((d) => Array.from({ length: d }, (_, i) => i));
  starts.forEach((st, j) => {
    const axis = normAxis(axes?.[j] ?? j, data.length);
    const dim = data[axis]!;
    const step = steps?.[j] ?? 1;
    if (step === 0) throw new ShapeError('Slice step 0');
    const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
    let s = st < 0 ? st + dim : st;
    let e = ends[j]! < 0 ? ends[j]! + dim : ends[j]!;
    if (step > 0) {
      s = clamp(s, 0, dim);
      e = clamp(e, 0, dim);
    } else {
      s = clamp(s, 0, dim - 1);
      e = clamp(e, -1, dim - 1);
    }
    const idx: number[] = [];
    for (let i = s; step > 0 ? i < e : i > e; i += step) idx.push(i);
    out[axis] = idx.length;
    picks[axis] = idx;
  });
  return { out, picks };
}

function inferNode(ctx: Ctx): void {
  const { node } = ctx;
  const op = node.domain === '' ? node.opType : `${node.domain}::${node.opType}`;

  if (UNARY.has(op)) {
    const s = ctx.shape(0);
    const dt = BOOL_OUT.has(op) ? DataType.BOOL : ctx.dtype(0);
    const v = ctx.value(0);
    let values: number[] | undefined;
    if (v && op === 'Identity') values = v;
    else if (v && op === 'Neg') values = v.map((x) => -x);
    else if (v && op === 'Abs') values = v.map(Math.abs);
    ctx.set(0, dt, s, values);
    if (op === 'Dropout' && node.outputs[1]) ctx.set(1, DataType.BOOL, s);
    if (op === 'BatchNormalization') {
      // Training-mode BN also returns running mean and variance, one per channel.
      for (const i of [1, 2]) if (node.outputs[i] && s.length > 1) ctx.set(i, ctx.dtype(0), [s[1]!]);
    }
    return;
  }

  if (BROADCAST.has(op) || op === 'Where') {
    const n = node.inputs.length;
    const shapes = Array.from({ length: n }, (_, i) => ctx.shape(i));
    const out = broadcastShapes(shapes);
    const dt = BOOL_OUT.has(op) ? DataType.BOOL : op === 'Where' ? ctx.dtype(1) : ctx.dtype(0);
    const values = shapes.map((_, i) => ctx.value(i));
    let result: number[] | undefined;
    if (values.every((v) => v !== undefined) && elementCount(out) <= MAX_CONST) {
      const fn = op === 'Where' ? ([c, a, b]: number[]) => (c ? a! : b!) : binaryFn(op, INT_TYPES.has(ctx.dtype(0)));
      if (fn) result = broadcastEval(shapes, values as number[][], out, fn);
    }
    ctx.set(0, dt, out, result);
    return;
  }

  if (REDUCE.has(op)) {
    const s = ctx.shape(0);
    let axes = attrInts(node, 'axes');
    if (!axes && ctx.has(1)) axes = ctx.requireValue(1, 'axes');
    const keep = attrInt(node, 'keepdims', 1) !== 0;
    if (!axes || axes.length === 0) {
      if (attrInt(node, 'noop_with_empty_axes', 0)) return ctx.set(0, ctx.dtype(0), s);
      axes = s.map((_, i) => i);
    }
    const set = new Set(axes.map((a) => normAxis(a, s.length)));
    const out = keep ? s.map((d, i) => (set.has(i) ? 1 : d)) : s.filter((_, i) => !set.has(i));
    return ctx.set(0, ctx.dtype(0), out);
  }

  switch (op) {
    case 'Constant': {
      const t = attrTensor(node, 'value');
      if (t) return ctx.set(0, t.dataType, tensorDims(t), constantValues(t));
      const i = attrInt(node, 'value_int');
      if (i !== undefined) return ctx.set(0, DataType.INT64, [], [i]);
      const is = attrInts(node, 'value_ints');
      if (is) return ctx.set(0, DataType.INT64, [is.length], is);
      const f = attrFloat(node, 'value_float');
      if (f !== undefined) return ctx.set(0, DataType.FLOAT, [], [f]);
      const fs = attrFloats(node, 'value_floats');
      if (fs) return ctx.set(0, DataType.FLOAT, [fs.length], fs);
      throw new ShapeError('Constant without a value the inference understands (string or sparse)');
    }
    case 'Cast': {
      const to = attrInt(node, 'to');
      if (to === undefined) throw new ShapeError("Cast without 'to'");
      const v = ctx.value(0);
      return ctx.set(0, to, ctx.shape(0), v && INT_TYPES.has(to) ? v.map(Math.trunc) : v);
    }
    case 'CastLike':
      return ctx.set(0, ctx.dtype(1), ctx.shape(0), ctx.value(0));
    case 'Shape': {
      const s = ctx.shape(0);
      const start = attrInt(node, 'start', 0);
      const endAttr = attrInt(node, 'end');
      const clampIdx = (v: number) => Math.min(Math.max(v < 0 ? v + s.length : v, 0), s.length);
      const dims = s.slice(clampIdx(start), endAttr === undefined ? s.length : clampIdx(endAttr));
      return ctx.set(0, DataType.INT64, [dims.length], dims);
    }
    case 'Size': {
      const n = elementCount(ctx.shape(0));
      return ctx.set(0, DataType.INT64, [], [n]);
    }
    case 'Conv':
    case 'ConvInteger':
    case 'QLinearConv': {
      const wIndex = op === 'QLinearConv' ? 3 : 1;
      const x = ctx.shape(0);
      const w = ctx.shape(wIndex);
      const spatial = x.length - 2;
      const win = windowAttrs(node, spatial, w.slice(2));
      const out = [x[0]!, w[0]!];
      for (let i = 0; i < spatial; i++) {
        out.push(windowOut(x[2 + i]!, win.kernel[i]!, win.strides[i]!, win.dilations[i]!, win.padsBegin[i]!, win.padsEnd[i]!, win.autoPad, false));
      }
      const dt = op === 'ConvInteger' ? DataType.INT32 : op === 'QLinearConv' ? ctx.dtype(7) || ctx.dtype(0) : ctx.dtype(0);
      return ctx.set(0, dt, out);
    }
    case 'ConvTranspose': {
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
      return ctx.set(0, ctx.dtype(0), out);
    }
    case 'MaxPool':
    case 'AveragePool':
    case 'LpPool': {
      const x = ctx.shape(0);
      const spatial = x.length - 2;
      const win = windowAttrs(node, spatial);
      const ceil = attrInt(node, 'ceil_mode', 0) !== 0;
      const out = [x[0]!, x[1]!];
      for (let i = 0; i < spatial; i++) {
        out.push(windowOut(x[2 + i]!, win.kernel[i]!, win.strides[i]!, win.dilations[i]!, win.padsBegin[i]!, win.padsEnd[i]!, win.autoPad, ceil));
      }
      ctx.set(0, ctx.dtype(0), out);
      if (op === 'MaxPool' && node.outputs[1]) ctx.set(1, DataType.INT64, out);
      return;
    }
    case 'GlobalAveragePool':
    case 'GlobalMaxPool':
    case 'GlobalLpPool': {
      const x = ctx.shape(0);
      return ctx.set(0, ctx.dtype(0), [x[0]!, x[1]!, ...x.slice(2).map(() => 1)]);
    }
    case 'Gemm': {
      const a = ctx.shape(0);
      const b = ctx.shape(1);
      if (a.length !== 2 || b.length !== 2) throw new ShapeError(`Gemm needs 2-D inputs, got [${a}] and [${b}]`);
      const [m, ka] = attrInt(node, 'transA', 0) ? [a[1]!, a[0]!] : [a[0]!, a[1]!];
      const [kb, n] = attrInt(node, 'transB', 0) ? [b[1]!, b[0]!] : [b[0]!, b[1]!];
      if (ka !== kb) throw new ShapeError(`Gemm inner dimensions differ: ${ka} vs ${kb}`);
      return ctx.set(0, ctx.dtype(0), [m, n]);
    }
    case 'MatMul':
    case 'MatMulInteger':
    case 'QLinearMatMul': {
      const bi = op === 'QLinearMatMul' ? 3 : 1;
      const out = matmulShape(ctx.shape(0), ctx.shape(bi));
      const dt = op === 'MatMulInteger' ? DataType.INT32 : op === 'QLinearMatMul' ? ctx.dtype(7) || ctx.dtype(0) : ctx.dtype(0);
      return ctx.set(0, dt, out);
    }
    case 'Flatten': {
      const s = ctx.shape(0);
      let axis = attrInt(node, 'axis', 1);
      if (axis < 0) axis += s.length;
      return ctx.set(0, ctx.dtype(0), [elementCount(s.slice(0, axis)), elementCount(s.slice(axis))], ctx.value(0));
    }
    case 'Reshape': {
      const s = ctx.shape(0);
      const target = getAttribute(node, 'shape') ? attrInts(node, 'shape')! : ctx.requireValue(1, 'shape');
      const allowZero = attrInt(node, 'allowzero', 0) !== 0;
      const out = target.map((d, i) => (d === 0 && !allowZero ? s[i]! : d));
      const minus = out.indexOf(-1);
      if (minus >= 0) {
        const known = elementCount(out.filter((_, i) => i !== minus));
        out[minus] = known === 0 ? 0 : elementCount(s) / known;
      }
      if (elementCount(out) !== elementCount(s) || out.some((d) => !Number.isInteger(d) || d < 0)) {
        throw new ShapeError(`cannot reshape [${s}] to [${target}]`);
      }
      return ctx.set(0, ctx.dtype(0), out, ctx.value(0));
    }
    case 'Transpose': {
      const s = ctx.shape(0);
      const perm = attrInts(node, 'perm') ?? s.map((_, i) => s.length - 1 - i);
      return ctx.set(0, ctx.dtype(0), perm.map((p) => s[p]!));
    }
    case 'Concat': {
      const shapes = node.inputs.map((_, i) => ctx.shape(i));
      const axis = normAxis(attrInt(node, 'axis', 0), shapes[0]!.length);
      const out = [...shapes[0]!];
      out[axis] = shapes.reduce((acc, s) => acc + s[axis]!, 0);
      const values = node.inputs.map((_, i) => ctx.value(i));
      const flat = out.length === 1 && values.every((v) => v !== undefined) ? values.flat() as number[] : undefined;
      return ctx.set(0, ctx.dtype(0), out, flat);
    }
    case 'Split': {
      const s = ctx.shape(0);
      const axis = normAxis(attrInt(node, 'axis', 0), s.length);
      let sizes = attrInts(node, 'split') ?? (ctx.has(1) ? ctx.requireValue(1, 'split') : undefined);
      if (!sizes) {
        const parts = attrInt(node, 'num_outputs') ?? node.outputs.length;
        const chunk = Math.ceil(s[axis]! / parts);
        sizes = Array.from({ length: parts }, (_, i) => Math.max(0, Math.min(chunk, s[axis]! - i * chunk)));
      }
      sizes.forEach((sz, i) => {
        if (!node.outputs[i]) return;
        const o = [...s];
        o[axis] = sz;
        ctx.set(i, ctx.dtype(0), o);
      });
      return;
    }
    case 'Squeeze': {
      const s = ctx.shape(0);
      const axes = attrInts(node, 'axes') ?? (ctx.has(1) ? ctx.requireValue(1, 'axes') : undefined);
      const drop = new Set(axes ? axes.map((a) => normAxis(a, s.length)) : s.flatMap((d, i) => (d === 1 ? [i] : [])));
      return ctx.set(0, ctx.dtype(0), s.filter((_, i) => !drop.has(i)), ctx.value(0));
    }
    case 'Unsqueeze': {
      const s = ctx.shape(0);
      const axes = attrInts(node, 'axes') ?? ctx.requireValue(1, 'axes');
      const rank = s.length + axes.length;
      const insert = new Set(axes.map((a) => normAxis(a, rank)));
      const out: number[] = [];
      let j = 0;
      for (let i = 0; i < rank; i++) out.push(insert.has(i) ? 1 : s[j++]!);
      return ctx.set(0, ctx.dtype(0), out, ctx.value(0));
    }
    case 'Gather': {
      const data = ctx.shape(0);
      const idx = ctx.shape(1);
      const axis = normAxis(attrInt(node, 'axis', 0), data.length);
      const out = [...data.slice(0, axis), ...idx, ...data.slice(axis + 1)];
      const dv = ctx.value(0);
      const iv = ctx.value(1);
      let values: number[] | undefined;
      if (dv && iv && data.length === 1) values = iv.map((i) => dv[i < 0 ? i + data[0]! : i]!);
      return ctx.set(0, ctx.dtype(0), out, values);
    }
    case 'Slice': {
      const s = ctx.shape(0);
      const { out, picks } = sliceDims(ctx, s);
      const v = ctx.value(0);
      return ctx.set(0, ctx.dtype(0), out, v && s.length === 1 ? picks[0]!.map((i) => v[i]!) : undefined);
    }
    case 'ConstantOfShape': {
      const shape = ctx.requireValue(0, 'shape');
      const t = attrTensor(node, 'value');
      const fill = t ? (constantValues(t)?.[0] ?? 0) : 0;
      const n = elementCount(shape);
      return ctx.set(0, t ? t.dataType : DataType.FLOAT, shape, n <= MAX_CONST ? new Array<number>(n).fill(fill) : undefined);
    }
    case 'Expand': {
      const target = ctx.requireValue(1, 'shape');
      return ctx.set(0, ctx.dtype(0), broadcastShapes([ctx.shape(0), target]));
    }
    case 'Tile': {
      const s = ctx.shape(0);
      const reps = ctx.requireValue(1, 'repeats');
      return ctx.set(0, ctx.dtype(0), s.map((d, i) => d * (reps[i] ?? 1)));
    }
    case 'Pad': {
      const s = ctx.shape(0);
      const pads = attrInts(node, 'pads') ?? ctx.requireValue(1, 'pads');
      const axes = ctx.has(3) ? ctx.requireValue(3, 'axes').map((a) => normAxis(a, s.length)) : s.map((_, i) => i);
      const out = [...s];
      axes.forEach((a, j) => (out[a] = s[a]! + pads[j]! + pads[j + axes.length]!));
      return ctx.set(0, ctx.dtype(0), out);
    }
    case 'Resize':
    case 'Upsample': {
      const s = ctx.shape(0);
      let scales: number[] | undefined;
      let sizes: number[] | undefined;
      if (op === 'Upsample') scales = attrFloats(node, 'scales') ?? ctx.requireValue(1, 'scales');
      else if (node.inputs.length === 2) scales = ctx.requireValue(1, 'scales');
      else {
        if (ctx.has(3)) sizes = ctx.requireValue(3, 'sizes');
        if (ctx.has(2)) {
          const v = ctx.requireValue(2, 'scales');
          if (v.length > 0) scales = v;
        }
      }
      if (sizes && sizes.length > 0) {
        const axes = attrInts(node, 'axes');
        const out = [...s];
        (axes ?? s.map((_, i) => i)).forEach((a, j) => (out[normAxis(a, s.length)] = sizes![j]!));
        return ctx.set(0, ctx.dtype(0), out);
      }
      if (!scales) throw new ShapeError('Resize without constant scales or sizes');
      const axes = attrInts(node, 'axes') ?? s.map((_, i) => i);
      const out = [...s];
      axes.forEach((a, j) => (out[normAxis(a, s.length)] = Math.floor(s[normAxis(a, s.length)]! * scales![j]!)));
      return ctx.set(0, ctx.dtype(0), out);
    }
    case 'ArgMax':
    case 'ArgMin': {
      const s = ctx.shape(0);
      const axis = normAxis(attrInt(node, 'axis', 0), s.length);
      const keep = attrInt(node, 'keepdims', 1) !== 0;
      return ctx.set(0, DataType.INT64, keep ? s.map((d, i) => (i === axis ? 1 : d)) : s.filter((_, i) => i !== axis));
    }
    case 'TopK': {
      const s = ctx.shape(0);
      const axis = normAxis(attrInt(node, 'axis', -1), s.length);
      const k = attrInt(node, 'k') ?? ctx.requireValue(1, 'K')[0]!;
      const out = s.map((d, i) => (i === axis ? k : d));
      ctx.set(0, ctx.dtype(0), out);
      if (node.outputs[1]) ctx.set(1, DataType.INT64, out);
      return;
    }
    case 'Range': {
      const [start, limit, delta] = [0, 1, 2].map((i) => ctx.requireValue(i, 'range bound')[0]!);
      const n = Math.max(Math.ceil((limit! - start!) / delta!), 0);
      return ctx.set(0, ctx.dtype(0), [n], n <= MAX_CONST ? Array.from({ length: n }, (_, i) => start! + i * delta!) : undefined);
    }
    case 'DepthToSpace':
    case 'SpaceToDepth': {
      const [n, c, h, w] = ctx.shape(0) as [number, number, number, number];
      const b = attrInt(node, 'blocksize', 1);
      const out = op === 'DepthToSpace' ? [n, c / (b * b), h * b, w * b] : [n, c * b * b, h / b, w / b];
      return ctx.set(0, ctx.dtype(0), out);
    }
    case 'QuantizeLinear': {
      const dt = attrInt(node, 'output_dtype') || (ctx.has(2) ? ctx.dtype(2) : DataType.UINT8);
      return ctx.set(0, dt, ctx.shape(0));
    }
    case 'DequantizeLinear':
      return ctx.set(0, ctx.has(1) ? ctx.dtype(1) || DataType.FLOAT : DataType.FLOAT, ctx.shape(0));
    default:
      throw new ShapeError(`no shape rule for ${op}`);
  }
}

function matmulShape(a0: number[], b0: number[]): number[] {
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

/** Infer the dtype and shape of every tensor in the model's main graph. */
export function inferShapes(model: OnnxModel | OnnxGraph, opts: ShapeOptions = {}): ShapeResult {
  const graph = model instanceof OnnxGraph ? model : OnnxGraph.of(model);
  const dyn = opts.dynamicDim ?? 1;
  const tensors = new Map<string, TensorShapeInfo>();
  const constants = new Map<string, number[]>();
  const unresolved: ShapeResult['unresolved'] = [];

  for (const v of graph.inputs) {
    const override = opts.inputShapes?.[v.name];
    const info = valueInfoShape(v, dyn);
    if (override) tensors.set(v.name, { dtype: info?.dtype ?? 0, shape: [...override] });
    else if (info) tensors.set(v.name, info);
  }
  for (const [name, t] of graph.initializers) {
    tensors.set(name, { dtype: t.dataType, shape: tensorDims(t) });
    const v = constantValues(t);
    if (v) constants.set(name, v);
  }
  for (const [name, s] of graph.sparseInitializers) {
    tensors.set(name, { dtype: s.values?.dataType ?? 0, shape: s.dims.map(Number) });
  }

  for (const node of graph.topologicalOrder()) {
    const known = (i: number) => {
      const name = node.inputs[i];
      return name ? tensors.get(name) : undefined;
    };
    const ctx: Ctx = {
      node,
      info: known,
      has: (i) => !!node.inputs[i],
      shape(i) {
        const s = known(i)?.shape;
        if (!s) throw new ShapeError(node.inputs[i] ? `input '${node.inputs[i]}' has an unknown shape` : `input ${i} is missing`);
        return s;
      },
      dtype: (i) => known(i)?.dtype ?? 0,
      value: (i) => (node.inputs[i] ? constants.get(node.inputs[i]!) : undefined),
      requireValue(i, what) {
        const v = node.inputs[i] ? constants.get(node.inputs[i]!) : undefined;
        if (!v) throw new ShapeError(`${what} (input ${i}${node.inputs[i] ? ` '${node.inputs[i]}'` : ''}) is not a constant`);
        return v;
      },
      set(i, dtype, shape, values) {
        const name = node.outputs[i];
        if (!name) return;
        tensors.set(name, { dtype, shape });
        if (values && values.length === elementCount(shape)) constants.set(name, values);
      },
    };
    try {
      inferNode(ctx);
    } catch (err) {
      if (!(err instanceof ShapeError)) throw err;
      unresolved.push({ node: node.name, opType: node.opType, reason: err.message });
      // Keep the element type where it is obvious, so extracted stages still get typed inputs.
      for (const o of node.outputs) if (o && !tensors.has(o)) tensors.set(o, { dtype: ctx.dtype(0) });
    }
  }
  return { tensors, constants, unresolved };
}

/** True when the tensor has a type but no shape, e.g. after an op the inference does not know. */
export function hasShape(r: ShapeResult, name: string): boolean {
  return r.tensors.get(name)?.shape !== undefined;
}
