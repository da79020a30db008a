// Scale/zero-point arithmetic against hand-computed numbers and numpy's rounding.
import { describe, expect, it } from 'vitest';
import { activationQParams, computeScaleZp, qRange, quantizeBias, quantizeValue, quantizeWeight, resolveScheme, roundHalfEven } from '../../../src/compiler/quantize/index.js';

describe('roundHalfEven (numpy.round)', () => {
  it('rounds exact halves to the even neighbour', () => {
    const cases: [number, number][] = [
      [0.5, 0],
      [1.5, 2],
      [2.5, 2],
      [3.5, 4],
      [-0.5, 0],
      [-1.5, -2],
      [-2.5, -2],
      [126.5, 126],
      [127.5, 128],
    ];
    for (const [x, want] of cases) expect(roundHalfEven(x), `round(${x})`).toBe(want);
    expect(Object.is(roundHalfEven(-0.5), 0)).toBe(true);
  });
  it('rounds everything else to the nearest integer', () => {
    expect(roundHalfEven(2.4999)).toBe(2);
    expect(roundHalfEven(2.5001)).toBe(3);
    expect(roundHalfEven(-2.6)).toBe(-3);
    expect(roundHalfEven(-2.4)).toBe(-2);
    expect(roundHalfEven(7)).toBe(7);
  });
});

describe('qRange (get_qmin_qmax_for_qType)', () => {
  it('gives the 8-bit and reduced ranges', () => {
    expect(qRange('uint8')).toEqual([0, 255]);
    expect(qRange('uint8', { reduceRange: true })).toEqual([0, 127]);
    expect(qRange('int8')).toEqual([-128, 127]);
    expect(qRange('int8', { symmetric: true })).toEqual([-127, 127]);
    expect(qRange('int8', { reduceRange: true, symmetric: true })).toEqual([-64, 64]);
  });
});

describe('computeScaleZp', () => {
  it('asymmetric uint8: [-1, 3] → scale 4/255, zp round(63.75) = 64', () => {
    const p = computeScaleZp(-1, 3, 0, 255, false);
    expect(p.scale).toBe(Math.fround(4 / 255));
    expect(p.zeroPoint).toBe(64);
  });
  it('asymmetric int8: [-1, 3] → zp round(-128 + 63.75) = -64', () => {
    expect(computeScaleZp(-1, 3, -128, 127, false)).toEqual({ scale: Math.fround(4 / 255), zeroPoint: -64 });
  });
  it('a zero-point of exactly x.5 rounds to even (Math.round would give 127)', () => {
    // scale = 255/255 = 1, zp = 0 − (−126.5)/1 = 126.5 → 126
    expect(computeScaleZp(-126.5, 128.5, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 126 });
  });
  it('widens the range to include 0', () => {
    // [2, 4] becomes [0, 4]: zp = qmin
    expect(computeScaleZp(2, 4, 0, 255, false)).toEqual({ scale: Math.fround(4 / 255), zeroPoint: 0 });
    expect(computeScaleZp(-4, -2, -128, 127, false)).toEqual({ scale: Math.fround(4 / 255), zeroPoint: 127 });
  });
  it('symmetric uses max|x| and zero-point 0 for int8', () => {
    expect(computeScaleZp(-2, 1, -127, 127, true)).toEqual({ scale: Math.fround(4 / 254), zeroPoint: 0 });
    // symmetric uint8 puts zero in the middle: round(127.5) = 128
    expect(computeScaleZp(-2, 1, 0, 255, true).zeroPoint).toBe(128);
  });
  it('a zero range gets scale 1 and zero-point 0', () => {
    expect(computeScaleZp(0, 0, 0, 255, false)).toEqual({ scale: 1, zeroPoint: 0 });
    expect(computeScaleZp(0, 0, -127, 127, true)).toEqual({ scale: 1, zeroPoint: 0 });
  });
});

describe('activation parameters per scheme', () => {
  it('u8s8: uint8 asymmetric; s8s8: int8 asymmetric; TensorRT: int8 with zero-point 0', () => {
    const u8 = activationQParams([-1, 3], resolveScheme('u8s8-qdq'));
    expect(u8.type).toBe('uint8');
    expect(u8.zeroPoint[0]).toBe(64);
    const s8 = activationQParams([-1, 3], resolveScheme('s8s8-qdq'));
    expect(s8.type).toBe('int8');
    expect(s8.zeroPoint[0]).toBe(-64);
    const trt = activationQParams([-1, 3], resolveScheme('symmetric-s8-qdq'));
    expect(trt.type).toBe('int8');
    expect(trt.zeroPoint[0]).toBe(0);
    expect(trt.scale[0]).toBe(Math.fround(6 / 254));
  });
});

describe('quantizeValue (quantize_nparray)', () => {
  it('rounds x/scale half to even, adds the zero-point, saturates', () => {
    expect(quantizeValue(0.25, 0.1, 0, 'int8')).toBe(2); // 2.5 → 2
    expect(quantizeValue(0.75, 0.5, 0, 'int8')).toBe(2); // 1.5 → 2
    expect(quantizeValue(100, 0.1, 0, 'int8')).toBe(127);
    expect(quantizeValue(-100, 0.1, 0, 'int8')).toBe(-128);
    expect(quantizeValue(-1, 0.1, 10, 'uint8')).toBe(0);
  });
});

describe('quantizeWeight', () => {
  it('per channel along axis 0: symmetric [-127, 127], one scale per row', () => {
    // rows: [-1, 0.5] and [0.254, -0.127]
    const w = Float32Array.from([-1, 0.5, 0.254, -0.127]);
    const q = quantizeWeight(w, [2, 2], 0, { weightSymmetric: true, reduceRange: false });
    expect(Array.from(q.params.scale)).toEqual([Math.fround(2 / 254), Math.fround(0.508 / 254)]);
    expect(Array.from(q.params.zeroPoint)).toEqual([0, 0]);
    expect(Array.from(q.data)).toEqual([-127, 64, 127, -64]);
  });
  it('per channel along axis 1 (Gemm without transB) and per tensor', () => {
    const w = Float32Array.from([1, 2, -1, -4]); // [[1,2],[-1,-4]] columns: [1,-1], [2,-4]
    const q = quantizeWeight(w, [2, 2], 1, { weightSymmetric: true, reduceRange: false });
    expect(Array.from(q.params.scale)).toEqual([Math.fround(2 / 254), Math.fround(8 / 254)]);
    const t = quantizeWeight(w, [2, 2], undefined, { weightSymmetric: true, reduceRange: false });
    expect(t.params.scale).toHaveLength(1);
    expect(t.params.scale[0]).toBe(Math.fround(8 / 254));
    expect(Array.from(t.data)).toEqual([32, 64, -32, -127]); // 1/(8/254) = 31.75 → 32
  });
  it('reduce_range uses 7 bits: [-64, 64]', () => {
    const q = quantizeWeight(Float32Array.from([1.28, -0.64]), [2], undefined, { weightSymmetric: true, reduceRange: true });
    expect(q.params.scale[0]).toBe(Math.fround(2.56 / 128));
    expect(Array.from(q.data)).toEqual([64, -32]);
  });
});

describe('quantizeBias', () => {
  it('int32 with scale = input scale × weight scale per channel', () => {
    const b = quantizeBias(Float32Array.from([0.5, -0.25]), 0.01, Float32Array.from([0.1, 0.05]));
    expect(Array.from(b.scale)).toEqual([Math.fround(0.01 * 0.1), Math.fround(0.01 * 0.05)]);
    expect(Array.from(b.data)).toEqual([500, -500]);
    expect(b.adjustedChannels).toEqual([]);
  });
  it('raises a tiny weight scale that would overflow int32', () => {
    const b = quantizeBias(Float32Array.from([10, 1]), 1e-3, Float32Array.from([1e-9, 0.01]));
    expect(b.adjustedChannels).toEqual([0]);
    expect(b.weightScale[0]).toBeGreaterThan(1e-9);
    expect(Math.abs(b.data[0]!)).toBeLessThanOrEqual(2147483647);
    expect(b.data[0]! * b.scale[0]!).toBeCloseTo(10, 3);
    expect(b.data[1]).toBe(100000);
  });
});
