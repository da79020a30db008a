// The QDQ rewrite on a small Conv+Gemm model, run with real onnxruntime: graph structure per
// scheme (int8 per-channel weights, int32 bias with scale in×w, uint8 activations for u8s8, zero
// zero-points for TensorRT), outputs close to float, calibration collectors, unsupported ops and
// the opset raise.
import { beforeAll, describe, expect, it } from 'vitest';
import { OnnxGraph, attrInt, encodeModel, tensorDType, tensorToArray, type OnnxModel } from '../../../src/onnx/index.js';
import { calibrateStages, quantizeStage, rangeOf, resolveScheme, calibrationTensors, type StageRanges } from '../../../src/compiler/quantize/index.js';
import { CLASSES, convGemmModel, randomBatches, runModel } from './helpers.js';

const batches = randomBatches(4, 32, 3);

async function ranges(model: OnnxModel, symmetric = false, method: 'minmax' | 'percentile' = 'minmax'): Promise<StageRanges> {
  const r = await calibrateStages([{ model, inputs: ['x'], carry: [] }], 'x', { batches }, { method, symmetric });
  return r.ranges[0]!;
}

function init(model: OnnxModel, name: string) {
  const t = OnnxGraph.of(model).initializers.get(name);
  if (!t) throw new Error(`no initializer ${name}`);
  return t;
}

describe('calibration collectors', () => {
  it('minmax takes the extremes; percentile drops a rare outlier; entropy clips a long tail', () => {
    const values = Float32Array.from({ length: 100_000 }, (_, i) => (i % 1000) / 1000);
    values[5] = 1000;
    expect(rangeOf([values], { method: 'minmax' })).toEqual([0, 1000]);
    // One value in 100,000 is exactly the 0.001% that 99.999 keeps; 99.9 must drop it.
    expect(rangeOf([values], { method: 'percentile' })[1]).toBe(1000);
    const [lo, hi] = rangeOf([values], { method: 'percentile', percentile: 99.9 });
    expect(lo).toBe(0);
    expect(hi).toBeGreaterThan(0.9);
    expect(hi).toBeLessThan(2);
    const sym = rangeOf([values.map((v) => -v), values], { method: 'percentile', percentile: 99.9, symmetric: true });
    expect(sym[1]).toBeLessThan(2);
    expect(sym[0]).toBe(-sym[1]);
    // Entropy on a long-tailed (exponential) distribution clips the tail.
    const tail = Float32Array.from({ length: 50_000 }, (_, i) => -Math.log((i + 0.5) / 50_000));
    const [elo, ehi] = rangeOf([tail], { method: 'entropy' });
    expect(elo).toBeCloseTo(0, 3);
    expect(ehi).toBeGreaterThan(2);
    expect(ehi).toBeLessThan(Math.max(...tail));
  });
  it('a histogram that grows keeps earlier batches (re-binned)', () => {
    const a = Float32Array.from({ length: 10_000 }, (_, i) => i / 10_000); // [0, 1)
    const b = Float32Array.from([8]);
    const [, hi] = rangeOf([a, b], { method: 'percentile', percentile: 99 });
    expect(hi).toBeGreaterThan(0.95);
    expect(hi).toBeLessThan(1.1);
  });
  it('calibrates every activation a quantisable node touches', () => {
    expect(calibrationTensors(convGemmModel()).sort()).toEqual(['conv_out', 'flat', 'logits', 'pool_out', 'relu_out', 'x'].sort());
  });
});

describe('quantizeStage', () => {
  let model: OnnxModel;
  let ref: Float32Array;
  beforeAll(async () => {
    model = convGemmModel();
    ref = await runModel(model, { x: batches[0]! }, 'logits');
  });

  it('s8s8 (Arm): int8 per-channel weights, int32 bias with scale = input × weight scale, int8 activations', async () => {
    const r = await ranges(model);
    const { model: q, report } = quantizeStage(model, { scheme: resolveScheme('s8s8-qdq'), ranges: r });
    expect(report.quantized.map((n) => n.node)).toEqual(['conv', 'gemm']);
    expect(report.passThrough.map((n) => n.node)).toEqual(['relu', 'pool', 'flatten']);
    expect(report.warnings).toEqual([]);
    const g = OnnxGraph.of(q);
    // Float weights are gone; int8 ones are read through a per-channel DequantizeLinear.
    expect(g.initializers.has('conv.w')).toBe(false);
    const wq = init(q, 'conv.w/quantized');
    expect(tensorDType(wq)).toBe('int8');
    const ws = tensorToArray(init(q, 'conv.w/scale'), 'float32');
    expect(ws).toHaveLength(4);
    const wdq = g.nodes.find((n) => n.opType === 'DequantizeLinear' && n.inputs[0] === 'conv.w/quantized')!;
    expect(attrInt(wdq, 'axis')).toBe(0);
    expect(Array.from(tensorToArray(init(q, 'conv.w/zero_point'), 'int8'))).toEqual([0, 0, 0, 0]);
    // Gemm with transB=1: channel axis 0, one scale per output row.
    expect(tensorToArray(init(q, 'gemm.w/scale'), 'float32')).toHaveLength(CLASSES);
    // Bias: int32, zero-point 0, scale = input scale × weight scale per channel.
    expect(tensorDType(init(q, 'conv.b/quantized'))).toBe('int32');
    const inScale = tensorToArray(init(q, 'x/scale'), 'float32')[0]!;
    const bs = tensorToArray(init(q, 'conv.b/scale'), 'float32');
    bs.forEach((s, c) => expect(s).toBe(Math.fround(inScale * ws[c]!)));
    expect(Array.from(tensorToArray(init(q, 'conv.b/zero_point'), 'int32'))).toEqual([0, 0, 0, 0]);
    // Activations int8; the conv output takes the Relu's range, so its zero-point is qmin and
    // its QuantizeLinear does the Relu's clipping: the Relu is left out and the Conv writes its output.
    expect(tensorDType(init(q, 'x/zero_point'))).toBe('int8');
    expect(tensorToArray(init(q, 'relu_out/zero_point'), 'int8')[0]).toBe(-128);
    expect(g.nodes.some((n) => n.opType === 'Relu')).toBe(false);
    // The Conv reads the dequantised input and weights.
    const conv = g.nodes.find((n) => n.opType === 'Conv')!;
    expect(conv.inputs).toEqual(['x/dequantized', 'conv.w/dequantized', 'conv.b/dequantized']);
    expect(conv.outputs).toEqual(['relu_out']);
    // Graph interface unchanged: float in, float logits out (the final DequantizeLinear produces them).
    expect(g.inputNames).toEqual(['x']);
    expect(g.outputNames).toEqual(['logits']);
    expect(g.producer('logits')!.opType).toBe('DequantizeLinear');
    expect(q.opsetVersion('')).toBe(13);
  });

  it('runs in onnxruntime and stays close to float (error bounded by the output scale)', async () => {
    const r = await ranges(model);
    const { model: q } = quantizeStage(model, { scheme: resolveScheme('s8s8-qdq'), ranges: r });
    const got = await runModel(q, { x: batches[0]! }, 'logits');
    const outScale = tensorToArray(init(q, 'logits/scale'), 'float32')[0]!;
    let maxErr = 0;
    for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(ref[i]! - got[i]!));
    expect(maxErr).toBeGreaterThan(0);
    expect(maxErr).toBeLessThan(12 * outScale);
  });

  it('u8s8 (x86): uint8 activations; with reduce_range the weights use 7 bits', async () => {
    const r = await ranges(model);
    const u8 = quantizeStage(model, { scheme: resolveScheme('u8s8-qdq'), ranges: r }).model;
    expect(tensorDType(init(u8, 'x/zero_point'))).toBe('uint8');
    expect(tensorDType(init(u8, 'flat/zero_point'))).toBe('uint8');
    const rr = quantizeStage(model, { scheme: resolveScheme('u8s8-reduce-range-qdq'), ranges: r }).model;
    const w = tensorToArray(init(rr, 'gemm.w/quantized'), 'int8');
    expect(Math.max(...Array.from(w).map(Math.abs))).toBe(64);
    const full = tensorToArray(init(u8, 'gemm.w/quantized'), 'int8');
    expect(Math.max(...Array.from(full).map(Math.abs))).toBe(127);
    const got = await runModel(rr, { x: batches[0]! }, 'logits');
    expect(got).toHaveLength(ref.length);
  });

  it('TensorRT (symmetric int8): every zero-point is 0 and the Relu keeps its own quantisation', async () => {
    const r = await ranges(model, true);
    const { model: q } = quantizeStage(model, { scheme: resolveScheme('symmetric-s8-qdq'), ranges: r });
    const zps = q.graph.initializer.filter((t) => t.name.endsWith('/zero_point'));
    expect(zps.length).toBeGreaterThan(6);
    for (const t of zps) expect(Array.from(tensorToArray(t) as ArrayLike<number>).every((v) => v === 0), t.name).toBe(true);
    for (const t of q.graph.initializer.filter((t) => t.name.endsWith('/zero_point') && !t.name.includes('.b/'))) expect(tensorDType(t)).toBe('int8');
    const got = await runModel(q, { x: batches[0]! }, 'logits');
    const agree = (a: Float32Array, b: Float32Array) => {
      let n = 0;
      for (let i = 0; i < a.length / CLASSES; i++) {
        const am = Array.from(a.subarray(i * CLASSES, (i + 1) * CLASSES));
        const bm = Array.from(b.subarray(i * CLASSES, (i + 1) * CLASSES));
        if (am.indexOf(Math.max(...am)) === bm.indexOf(Math.max(...bm))) n++;
      }
      return n / (a.length / CLASSES);
    };
    expect(agree(ref, got)).toBeGreaterThanOrEqual(0.9);
  });

  it('per-tensor weights when asked: scalar scale, no axis', async () => {
    const r = await ranges(model);
    const { model: q } = quantizeStage(model, { scheme: resolveScheme('s8s8-qdq', { perChannel: false }), ranges: r });
    expect(init(q, 'conv.w/scale').dims).toEqual([]);
    const wdq = OnnxGraph.of(q).nodes.find((n) => n.opType === 'DequantizeLinear' && n.inputs[0] === 'conv.w/quantized')!;
    expect(attrInt(wdq, 'axis')).toBeUndefined();
    expect(await runModel(q, { x: batches[0]! }, 'logits')).toHaveLength(ref.length);
  });

  it('an op with no int8 rule stays float with a one-line warning; the rest is quantised', async () => {
    const odd = convGemmModel({ unsupported: 'Tanh' });
    const r = await ranges(odd);
    const { model: q, report } = quantizeStage(odd, { scheme: resolveScheme('s8s8-qdq'), ranges: r });
    expect(report.warnings).toEqual([`warn: node 'odd' (Tanh) stays float: the quantiser has no int8 rule for Tanh`]);
    expect(report.float).toEqual([{ node: 'odd', op: 'Tanh', reason: 'the quantiser has no int8 rule for Tanh' }]);
    expect(report.quantized.map((n) => n.node)).toEqual(['conv', 'gemm']);
    // The Tanh reads the float Relu output, not a dequantised copy.
    const tanh = OnnxGraph.of(q).nodes.find((n) => n.opType === 'Tanh')!;
    expect(tanh.inputs).toEqual(['relu_out']);
    const ref2 = await runModel(odd, { x: batches[0]! }, 'logits');
    const got = await runModel(q, { x: batches[0]! }, 'logits');
    let maxErr = 0;
    for (let i = 0; i < ref2.length; i++) maxErr = Math.max(maxErr, Math.abs(ref2[i]! - got[i]!));
    expect(maxErr).toBeLessThan(0.5);
  });

  it('raises opset 11 to 13 for per-channel DequantizeLinear', async () => {
    const old = convGemmModel({ opset: 11 });
    const r = await ranges(old);
    const { model: q, report } = quantizeStage(old, { scheme: resolveScheme('s8s8-qdq'), ranges: r });
    expect(report.opset).toEqual({ from: 11, to: 13 });
    expect(q.opsetVersion('')).toBe(13);
    expect(old.opsetVersion('')).toBe(11);
    expect(await runModel(encodeModel(q), { x: batches[0]! }, 'logits')).toHaveLength(ref.length);
  });

  it('Gemm without transB: per-channel axis 1, same outputs as with transB', async () => {
    const t0 = convGemmModel({ transB0: true });
    const r = await ranges(t0);
    const { model: q } = quantizeStage(t0, { scheme: resolveScheme('s8s8-qdq'), ranges: r });
    const wdq = OnnxGraph.of(q).nodes.find((n) => n.opType === 'DequantizeLinear' && n.inputs[0] === 'gemm.w/quantized')!;
    expect(attrInt(wdq, 'axis')).toBe(1);
    expect(tensorToArray(init(q, 'gemm.w/scale'), 'float32')).toHaveLength(CLASSES);
    const viaT1 = quantizeStage(model, { scheme: resolveScheme('s8s8-qdq'), ranges: await ranges(model) }).model;
    const a = await runModel(q, { x: batches[0]! }, 'logits');
    const b = await runModel(viaT1, { x: batches[0]! }, 'logits');
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i]!, 4);
  });

  it('a weight scale too tiny for an int32 bias is raised, and the node says so', async () => {
    const tiny = convGemmModel({ tinyChannel: true });
    const r = await ranges(tiny);
    const { model: q, report } = quantizeStage(tiny, { scheme: resolveScheme('s8s8-qdq'), ranges: r });
    expect(report.biasAdjusted).toEqual(['conv']);
    const bias = tensorToArray(init(q, 'conv.b/quantized'), 'int32');
    const scale = tensorToArray(init(q, 'conv.b/scale'), 'float32');
    expect(bias[3]! * scale[3]!).toBeCloseTo(10, 3);
    const ref2 = await runModel(tiny, { x: batches[0]! }, 'logits');
    const got = await runModel(q, { x: batches[0]! }, 'logits');
    let maxErr = 0;
    for (let i = 0; i < ref2.length; i++) maxErr = Math.max(maxErr, Math.abs(ref2[i]! - got[i]!));
    expect(maxErr).toBeLessThan(0.5);
  });

  it('keeps nodes float on request (mixed precision)', async () => {
    const r = await ranges(model);
    const { model: q, report } = quantizeStage(model, { scheme: resolveScheme('s8s8-qdq'), ranges: r, keepFloat: new Set(['gemm']) });
    expect(report.quantized.map((n) => n.node)).toEqual(['conv']);
    expect(report.float).toContainEqual({ node: 'gemm', op: 'Gemm', reason: 'kept float (mixed precision)' });
    expect(OnnxGraph.of(q).initializers.has('gemm.w')).toBe(true);
    expect(tensorDType(init(q, 'gemm.w'))).toBe('float32');
  });
});
