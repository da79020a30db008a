// Helpers the shape rules share: axis normalisation, broadcasting, constant evaluation and the
// window arithmetic of convolutions and pools.
import type { TensorProto } from '../gen/onnx_pb.js';
import { DataType, dtypeFromCode } from '../dtype.js';
import { attrInts, attrString, type GraphNode } from '../graph.js';
import { elementCount, isExternal, tensorDims, tensorToArray } from '../tensor.js';
import { ShapeError } from './spec.js';

/** Constant tensors bigger than this are not evaluated (shape vectors are tiny; weights are not needed). */
export const MAX_CONST = 4096;

export const INT_TYPES = new Set<number>([
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

export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new ShapeError(`axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** Values of a small constant tensor as numbers; undefined when they are not useful for shape arithmetic. */
export function constantValues(t: TensorProto): number[] | undefined {
  const dtype = dtypeFromCode(t.dataType);
  // Only types whose array holds plain values (not raw float16/float8 bits) are useful for shape arithmetic.
  if (!dtype || dtype === 'string' || dtype.startsWith('complex') || dtype.startsWith('float8') || dtype === 'float16' || dtype === 'bfloat16' || dtype === 'float4e2m1') {
    return undefined;
  }
  if (elementCount(tensorDims(t)) > MAX_CONST) return undefined;
  if (isExternal(t) && t.rawData.length === 0) return undefined;
  return Array.from(tensorToArray(t) as ArrayLike<number | bigint>, (v) => Number(v));
}

/** Output size of one spatial axis of a convolution or pooling window. */
export function windowOut(input: number, k: number, s: number, d: number, pb: number, pe: number, autoPad: string, ceil: boolean): number {
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

export interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  padsEnd: number[];
  autoPad: string;
}

export function windowAttrs(node: GraphNode, spatial: number, kernelFallback?: number[]): Window {
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

/** Output spatial sizes of a sliding window (Conv, pools) over input dims x[2..]. */
export function windowDims(x: readonly number[], win: Window, ceil: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < x.length - 2; i++) {
    out.push(windowOut(x[2 + i]!, win.kernel[i]!, win.strides[i]!, win.dilations[i]!, win.padsBegin[i]!, win.padsEnd[i]!, win.autoPad, ceil));
  }
  return out;
}
