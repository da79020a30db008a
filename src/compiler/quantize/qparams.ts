// Scale and zero-point arithmetic for int8/uint8 QDQ quantisation. Every formula here must match
// onnxruntime's python quantiser (onnxruntime/python/tools/quantization/quant_utils.py:
// get_qmin_qmax_for_qType, compute_scale_zp, quantize_nparray), so a model quantised here and
// one quantised there agree bit for bit on the same ranges: numpy rounding (half to even), scales
// stored as float32, ranges widened to include 0.
import { QUANT_SCHEMES, type QuantSchemeKey } from '../../devices/registry.js';

export type QType = 'int8' | 'uint8';

/** A quantised tensor's parameters; per-channel tensors have one entry per channel. */
export interface QParams {
  type: QType;
  scale: Float32Array;
  zeroPoint: Int32Array;
  /** Channel axis of per-channel parameters; undefined for per-tensor. */
  axis?: number;
}

/** What a scheme asks for, resolved from devices/registry.ts QUANT_SCHEMES. */
export interface QuantScheme {
  key: string;
  activationType: QType;
  activationSymmetric: boolean;
  weightSymmetric: boolean;
  perChannel: boolean;
  reduceRange: boolean;
  zeroPointsZero: boolean;
}

export function resolveScheme(key: QuantSchemeKey | string, overrides: { perChannel?: boolean } = {}): QuantScheme {
  const s = (QUANT_SCHEMES as Record<string, (typeof QUANT_SCHEMES)[QuantSchemeKey]>)[key];
  if (!s) throw new Error(`unknown quantisation scheme '${key}'; known: ${Object.keys(QUANT_SCHEMES).join(', ')}`);
  return {
    key,
    activationType: s.activations.type,
    activationSymmetric: s.activations.symmetric || s.zeroPointsZero,
    weightSymmetric: s.weights.symmetric || s.zeroPointsZero,
    perChannel: overrides.perChannel ?? s.perChannel,
    reduceRange: s.reduceRange,
    zeroPointsZero: s.zeroPointsZero,
  };
}

/**
 * Round half to even, as numpy.round does (Math.round rounds half up: Math.round(-2.5) is -2,
 * numpy gives -2 as well, but Math.round(2.5) is 3 where numpy gives 2).
 */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const r = Math.round(x);
  // Only exact halves differ; for them pick the even neighbour.
  if (Math.abs(x - Math.trunc(x)) === 0.5) return 2 * Math.round(x / 2) + 0; // + 0 turns −0 into 0
  return r;
}

/** [qmin, qmax] as onnxruntime's get_qmin_qmax_for_qType picks it. */
export function qRange(type: QType, opts: { reduceRange?: boolean; symmetric?: boolean } = {}): [number, number] {
  if (type === 'uint8') return opts.reduceRange ? [0, 127] : [0, 255];
  if (opts.reduceRange) return [-64, 64];
  return opts.symmetric ? [-127, 127] : [-128, 127];
}

const FLT_TINY = 1.1754943508222875e-38;

/**
 * onnxruntime's compute_scale_zp: widen [rmin, rmax] to include 0; symmetric uses ±max|x|;
 * scale = (rmax − rmin)/(qmax − qmin) computed in float64 then stored as float32;
 * zp = round(qmin − rmin/scale) (symmetric: round((qmin+qmax)/2)); a zero range gets scale 1, zp 0.
 */
export function computeScaleZp(rmin: number, rmax: number, qmin: number, qmax: number, symmetric: boolean): { scale: number; zeroPoint: number } {
  if (qmin > 0 || qmax < 0) throw new Error(`qmin ${qmin} and qmax ${qmax} must bracket 0`);
  let lo = Math.min(rmin, 0);
  let hi = Math.max(rmax, 0);
  if (symmetric) {
    const absmax = Math.max(Math.abs(lo), Math.abs(hi));
    lo = -absmax;
    hi = absmax;
  }
  const scale64 = (hi - lo) / (qmax - qmin);
  if (!(scale64 >= FLT_TINY)) return { scale: 1, zeroPoint: 0 };
  const zeroPoint = symmetric ? roundHalfEven((qmin + qmax) / 2) : roundHalfEven(qmin - lo / scale64);
  return { scale: Math.fround(scale64), zeroPoint };
}

/** Parameters of an activation from its calibrated range. */
export function activationQParams(range: readonly [number, number], scheme: QuantScheme): QParams {
  const [qmin, qmax] = qRange(scheme.activationType, { symmetric: scheme.activationSymmetric });
  const { scale, zeroPoint } = computeScaleZp(range[0], range[1], qmin, qmax, scheme.activationSymmetric);
  return { type: scheme.activationType, scale: Float32Array.of(scale), zeroPoint: Int32Array.of(scheme.zeroPointsZero && scheme.activationType === 'int8' ? 0 : zeroPoint) };
}

/** quantize_nparray: q = clip(round(x / scale) + zp) with float32 division, as numpy does it. */
export function quantizeValue(x: number, scale: number, zeroPoint: number, type: QType): number {
  const [lo, hi] = type === 'int8' ? [-128, 127] : [0, 255];
  const q = roundHalfEven(Math.fround(Math.fround(x) / scale)) + zeroPoint;
  return Math.min(hi, Math.max(lo, q));
}

export function dequantizeValue(q: number, scale: number, zeroPoint: number): number {
  return (q - zeroPoint) * scale;
}

export interface QuantizedWeight {
  data: Int8Array;
  params: QParams;
}

/** Index of the slice along `axis` that flat element `i` of a tensor with `dims` falls in. */
function channelOf(i: number, dims: readonly number[], axis: number): number {
  let inner = 1;
  for (let d = axis + 1; d < dims.length; d++) inner *= dims[d]!;
  return Math.floor(i / inner) % dims[axis]!;
}

/**
 * int8 weights, per channel along `axis` (or per tensor when axis is undefined), symmetric with
 * [-127, 127] (or [-64, 64] with reduce_range) like onnxruntime's quantize_data.
 */
export function quantizeWeight(values: Float32Array, dims: readonly number[], axis: number | undefined, scheme: Pick<QuantScheme, 'weightSymmetric' | 'reduceRange'>): QuantizedWeight {
  const channels = axis === undefined ? 1 : dims[axis]!;
  const rmin = new Float64Array(channels).fill(Infinity);
  const rmax = new Float64Array(channels).fill(-Infinity);
  const chan = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const c = axis === undefined ? 0 : channelOf(i, dims, axis);
    chan[i] = c;
    const v = values[i]!;
    if (v < rmin[c]!) rmin[c] = v;
    if (v > rmax[c]!) rmax[c] = v;
  }
  const [qmin, qmax] = qRange('int8', { reduceRange: scheme.reduceRange, symmetric: scheme.weightSymmetric });
  const scale = new Float32Array(channels);
  const zeroPoint = new Int32Array(channels);
  for (let c = 0; c < channels; c++) {
    const lo = Number.isFinite(rmin[c]!) ? rmin[c]! : 0;
    const hi = Number.isFinite(rmax[c]!) ? rmax[c]! : 0;
    const p = computeScaleZp(lo, hi, qmin, qmax, scheme.weightSymmetric);
    scale[c] = p.scale;
    zeroPoint[c] = p.zeroPoint;
  }
  const data = new Int8Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = quantizeValue(values[i]!, scale[chan[i]!]!, zeroPoint[chan[i]!]!, 'int8');
  return { data, params: { type: 'int8', scale, zeroPoint, ...(axis === undefined ? {} : { axis }) } };
}

export const INT32_MAX = 2147483647;

export interface QuantizedBias {
  data: Int32Array;
  /** input scale × weight scale per channel (float32 product, as numpy computes it). */
  scale: Float32Array;
  /** Channels whose weight scale was raised so the bias fits int32 (onnxruntime does the same). */
  adjustedChannels: number[];
}

/**
 * Bias as int32 with zero-point 0 and scale = input scale × weight scale. A weight scale so tiny
 * that the bias overflows int32 is raised first: the caller must then requantise the weights
 * with the returned `weightScale`.
 */
export function quantizeBias(bias: Float32Array, inputScale: number, weightScale: Float32Array): QuantizedBias & { weightScale: Float32Array } {
  const n = bias.length;
  const ws = Float32Array.from(weightScale.length === 1 && n > 1 ? new Array<number>(n).fill(weightScale[0]!) : weightScale);
  const adjusted: number[] = [];
  const scale = new Float32Array(n);
  const data = new Int32Array(n);
  for (let c = 0; c < n; c++) {
    let s = Math.fround(inputScale * ws[c]!);
    const b = Math.fround(bias[c]!);
    const limit = INT32_MAX;
    if (Math.abs(b) / s > limit) {
      const need = Math.fround(Math.abs(b) / limit / inputScale);
      ws[c] = Math.fround(Math.max(ws[c]!, need));
      s = Math.fround(inputScale * ws[c]!);
      adjusted.push(c);
    }
    scale[c] = s;
    data[c] = Math.max(-INT32_MAX - 1, Math.min(INT32_MAX, roundHalfEven(Math.fround(b / s))));
  }
  return { data, scale, adjustedChannels: adjusted, weightScale: ws };
}

/** Requantise weights with given (possibly raised) per-channel scales, symmetric zp 0. */
export function quantizeWeightWithScales(values: Float32Array, dims: readonly number[], axis: number | undefined, scale: Float32Array, zeroPoint: Int32Array): Int8Array {
  const data = new Int8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const c = axis === undefined || scale.length === 1 ? 0 : channelOf(i, dims, axis);
    data[i] = quantizeValue(values[i]!, scale[c]!, zeroPoint[c]!, 'int8');
  }
  return data;
}
