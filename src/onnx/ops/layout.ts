// Ops that create, describe or move data without arithmetic on it: constants, casts, shape
// queries, reshapes, joins and splits, gathers and slices, padding and resampling. Their shape
// rules also evaluate small constant values, because torch builds Reshape targets from
// Shape → Gather → Unsqueeze → Concat chains.
import { DataType } from '../dtype.js';
import { attrFloat, attrFloats, attrInt, attrInts, attrTensor, getAttribute } from '../graph.js';
import { elementCount, tensorDims } from '../tensor.js';
import { INT_TYPES, MAX_CONST, broadcastShapes, constantValues, normAxis } from './common.js';
import { CONVERT, NO_WORK, ShapeError, keepFp32, shapeSlots, type CostRule, type Fp16Policy, type OpSpec, type QuantRole, type ShapeCtx, type ShapeRule } from './spec.js';

const constant: ShapeRule = (ctx) => {
  const { node } = ctx;
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
};

const cast: ShapeRule = (ctx) => {
  const to = attrInt(ctx.node, 'to');
  if (to === undefined) throw new ShapeError("Cast without 'to'");
  const v = ctx.value(0);
  ctx.set(0, to, ctx.shape(0), v && INT_TYPES.has(to) ? v.map(Math.trunc) : v);
};

const castLike: ShapeRule = (ctx) => ctx.set(0, ctx.dtype(1), ctx.shape(0), ctx.value(0));

const shapeOf: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const start = attrInt(ctx.node, 'start', 0);
  const endAttr = attrInt(ctx.node, 'end');
  const clampIdx = (v: number) => Math.min(Math.max(v < 0 ? v + s.length : v, 0), s.length);
  const dims = s.slice(clampIdx(start), endAttr === undefined ? s.length : clampIdx(endAttr));
  ctx.set(0, DataType.INT64, [dims.length], dims);
};

const size: ShapeRule = (ctx) => ctx.set(0, DataType.INT64, [], [elementCount(ctx.shape(0))]);

const flatten: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  let axis = attrInt(ctx.node, 'axis', 1);
  if (axis < 0) axis += s.length;
  ctx.set(0, ctx.dtype(0), [elementCount(s.slice(0, axis)), elementCount(s.slice(axis))], ctx.value(0));
};

const reshape: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const target = getAttribute(ctx.node, 'shape') ? attrInts(ctx.node, 'shape')! : ctx.requireValue(1, 'shape');
  const allowZero = attrInt(ctx.node, 'allowzero', 0) !== 0;
  const out = target.map((d, i) => (d === 0 && !allowZero ? s[i]! : d));
  const minus = out.indexOf(-1);
  if (minus >= 0) {
    const known = elementCount(out.filter((_, i) => i !== minus));
    out[minus] = known === 0 ? 0 : elementCount(s) / known;
  }
  if (elementCount(out) !== elementCount(s) || out.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new ShapeError(`cannot reshape [${s}] to [${target}]`);
  }
  ctx.set(0, ctx.dtype(0), out, ctx.value(0));
};

const transpose: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const perm = attrInts(ctx.node, 'perm') ?? s.map((_, i) => s.length - 1 - i);
  ctx.set(0, ctx.dtype(0), perm.map((p) => s[p]!));
};

const concat: ShapeRule = (ctx) => {
  const shapes = ctx.node.inputs.map((_, i) => ctx.shape(i));
  const axis = normAxis(attrInt(ctx.node, 'axis', 0), shapes[0]!.length);
  const out = [...shapes[0]!];
  out[axis] = shapes.reduce((acc, s) => acc + s[axis]!, 0);
  const values = ctx.node.inputs.map((_, i) => ctx.value(i));
  const flat = out.length === 1 && values.every((v) => v !== undefined) ? (values.flat() as number[]) : undefined;
  ctx.set(0, ctx.dtype(0), out, flat);
};

const split: ShapeRule = (ctx) => {
  const { node } = ctx;
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
};

const squeeze: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const axes = attrInts(ctx.node, 'axes') ?? (ctx.has(1) ? ctx.requireValue(1, 'axes') : undefined);
  const drop = new Set(axes ? axes.map((a) => normAxis(a, s.length)) : s.flatMap((d, i) => (d === 1 ? [i] : [])));
  ctx.set(0, ctx.dtype(0), s.filter((_, i) => !drop.has(i)), ctx.value(0));
};

const unsqueeze: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const axes = attrInts(ctx.node, 'axes') ?? ctx.requireValue(1, 'axes');
  const rank = s.length + axes.length;
  const insert = new Set(axes.map((a) => normAxis(a, rank)));
  const out: number[] = [];
  let j = 0;
  for (let i = 0; i < rank; i++) out.push(insert.has(i) ? 1 : s[j++]!);
  ctx.set(0, ctx.dtype(0), out, ctx.value(0));
};

const gather: ShapeRule = (ctx) => {
  const data = ctx.shape(0);
  const idx = ctx.shape(1);
  const axis = normAxis(attrInt(ctx.node, 'axis', 0), data.length);
  const out = [...data.slice(0, axis), ...idx, ...data.slice(axis + 1)];
  const dv = ctx.value(0);
  const iv = ctx.value(1);
  let values: number[] | undefined;
  if (dv && iv && data.length === 1) values = iv.map((i) => dv[i < 0 ? i + data[0]! : i]!);
  ctx.set(0, ctx.dtype(0), out, values);
};

/** Slice bounds from attributes (opset < 10) or constant inputs. */
function sliceParams(ctx: ShapeCtx): { starts: number[]; ends: number[]; axes?: number[]; steps?: number[] } {
  const { node } = ctx;
  if (getAttribute(node, 'starts')) return { starts: attrInts(node, 'starts')!, ends: attrInts(node, 'ends') ?? [], axes: attrInts(node, 'axes') };
  return {
    starts: ctx.requireValue(1, 'starts'),
    ends: ctx.requireValue(2, 'ends'),
    axes: ctx.has(3) ? ctx.requireValue(3, 'axes') : undefined,
    steps: ctx.has(4) ? ctx.requireValue(4, 'steps') : undefined,
  };
}

/** The output dims of a Slice, and for each axis the input indices it keeps. */
function sliceDims(ctx: ShapeCtx, data: number[]): { out: number[]; picks: number[][] } {
  const { starts, ends, axes, steps } = sliceParams(ctx);
  const out = [...data];
  const picks = data.map((d) => Array.from({ length: d }, (_, i) => i));
  const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
  starts.forEach((st, j) => {
    const axis = normAxis(axes?.[j] ?? j, data.length);
    const dim = data[axis]!;
    const step = steps?.[j] ?? 1;
    if (step === 0) throw new ShapeError('Slice step 0');
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

const slice: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const { out, picks } = sliceDims(ctx, s);
  const v = ctx.value(0);
  ctx.set(0, ctx.dtype(0), out, v && s.length === 1 ? picks[0]!.map((i) => v[i]!) : undefined);
};

const constantOfShape: ShapeRule = (ctx) => {
  const shape = ctx.requireValue(0, 'shape');
  const t = attrTensor(ctx.node, 'value');
  const fill = t ? (constantValues(t)?.[0] ?? 0) : 0;
  const n = elementCount(shape);
  ctx.set(0, t ? t.dataType : DataType.FLOAT, shape, n <= MAX_CONST ? new Array<number>(n).fill(fill) : undefined);
};

const expand: ShapeRule = (ctx) => {
  const target = ctx.requireValue(1, 'shape');
  ctx.set(0, ctx.dtype(0), broadcastShapes([ctx.shape(0), target]));
};

const tile: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const reps = ctx.requireValue(1, 'repeats');
  ctx.set(0, ctx.dtype(0), s.map((d, i) => d * (reps[i] ?? 1)));
};

const pad: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const pads = attrInts(ctx.node, 'pads') ?? ctx.requireValue(1, 'pads');
  const axes = ctx.has(3) ? ctx.requireValue(3, 'axes').map((a) => normAxis(a, s.length)) : s.map((_, i) => i);
  const out = [...s];
  axes.forEach((a, j) => (out[a] = s[a]! + pads[j]! + pads[j + axes.length]!));
  ctx.set(0, ctx.dtype(0), out);
};

/** Resize/Upsample targets: scales from an attribute or input, or (Resize opset 11+) sizes. */
function resampleParams(ctx: ShapeCtx): { scales?: number[]; sizes?: number[] } {
  const { node } = ctx;
  if (node.opType === 'Upsample') return { scales: attrFloats(node, 'scales') ?? ctx.requireValue(1, 'scales') };
  if (node.inputs.length === 2) return { scales: ctx.requireValue(1, 'scales') };
  let scales: number[] | undefined;
  let sizes: number[] | undefined;
  if (ctx.has(3)) sizes = ctx.requireValue(3, 'sizes');
  if (ctx.has(2)) {
    const v = ctx.requireValue(2, 'scales');
    if (v.length > 0) scales = v;
  }
  return { scales, sizes };
}

const resample: ShapeRule = (ctx) => {
  const s = ctx.shape(0);
  const { scales, sizes } = resampleParams(ctx);
  const axes = attrInts(ctx.node, 'axes');
  const out = [...s];
  if (sizes && sizes.length > 0) {
    (axes ?? s.map((_, i) => i)).forEach((a, j) => (out[normAxis(a, s.length)] = sizes[j]!));
    return ctx.set(0, ctx.dtype(0), out);
  }
  if (!scales) throw new ShapeError('Resize without constant scales or sizes');
  (axes ?? s.map((_, i) => i)).forEach((a, j) => (out[normAxis(a, s.length)] = Math.floor(s[normAxis(a, s.length)]! * scales[j]!)));
  ctx.set(0, ctx.dtype(0), out);
};

const range: ShapeRule = (ctx) => {
  const [start, limit, delta] = [0, 1, 2].map((i) => ctx.requireValue(i, 'range bound')[0]!);
  const n = Math.max(Math.ceil((limit! - start!) / delta!), 0);
  ctx.set(0, ctx.dtype(0), [n], n <= MAX_CONST ? Array.from({ length: n }, (_, i) => start! + i * delta!) : undefined);
};

const blockShuffle: ShapeRule = (ctx) => {
  const [n, c, h, w] = ctx.shape(0) as [number, number, number, number];
  const b = attrInt(ctx.node, 'blocksize', 1);
  const out = ctx.node.opType === 'DepthToSpace' ? [n, c / (b * b), h * b, w * b] : [n, c * b * b, h / b, w / b];
  ctx.set(0, ctx.dtype(0), out);
};

/** A data-movement op: no work, converted by fp16, float in int8 unless `quant` says. */
function move(op: string, shape: ShapeRule, quant: QuantRole = 'float', cost: CostRule = NO_WORK, fp16: Fp16Policy = CONVERT): OpSpec {
  return { op, shape, cost, fp16, quant };
}

const RESAMPLE_REASON = 'sampling coordinates lose precision in float16; scales input must stay float32';

export const LAYOUT_OPS: readonly OpSpec[] = [
  move('Constant', constant, 'silent'),
  move('ConstantOfShape', constantOfShape, 'silent', shapeSlots('none', [0])),
  move('Cast', cast, 'silent'),
  move('CastLike', castLike),
  move('Shape', shapeOf, 'silent'),
  move('Size', size),
  move('Flatten', flatten, 'pass-through'),
  move('Reshape', reshape, 'pass-through', shapeSlots('none', [1])),
  move('Transpose', transpose, 'pass-through'),
  move('Squeeze', squeeze, 'pass-through', shapeSlots('none', [1])),
  move('Unsqueeze', unsqueeze, 'pass-through', shapeSlots('none', [1])),
  move('Concat', concat),
  move('Split', split, 'float', shapeSlots('none', [1])),
  move('Gather', gather, 'float', shapeSlots('none', [1])),
  move('Slice', slice, 'float', shapeSlots('none', [1, 2, 3, 4])),
  move('Expand', expand, 'float', shapeSlots('none', [1])),
  move('Tile', tile, 'float', shapeSlots('none', [1])),
  move('Pad', pad, 'float', shapeSlots('none', [1, 2, 3])),
  move('DepthToSpace', blockShuffle),
  move('SpaceToDepth', blockShuffle),
  move('Range', range, 'float', shapeSlots('none', [0, 1, 2]), keepFp32('the ONNX schema has no float16 Range')),
  // Resampling interpolates, so its output elements count as work. The scales input stays float32
  // even when a caller's own block list lets the node convert.
  move('Resize', resample, 'float', shapeSlots('elementwise', [1, 2, 3]), { ...keepFp32(RESAMPLE_REASON), float32Inputs: [2] }),
  move('Upsample', resample, 'float', shapeSlots('elementwise', [1]), { ...keepFp32(RESAMPLE_REASON), float32Inputs: [1] }),
];
