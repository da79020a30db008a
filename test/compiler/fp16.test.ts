// float16 conversion: weights halve, outputs stay close to float32 under real onnxruntime
// sessions (CPU), constants clamp into range, blocked ops stay float32 behind Casts, graph IO
// types follow keepIoFloat32, and split stages still chain after conversion.
import { describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import {
  DataType,
  OnnxGraph,
  arrayToTensor,
  attrInt,
  encodeModel,
  float16ToFloat32,
  readModel,
  tensorToArray,
  type OnnxModel,
  type ValueInfoProto,
} from '../../src/onnx/index.js';
import { DEFAULT_BLOCK_OPS, convertToFp16, type Fp16Options } from '../../src/compiler/fp16.js';
import { splitModel } from '../../src/compiler/split.js';
import { checkStages, randomImages } from '../../src/compiler/check.js';
import { createSession, type PlainTensor } from '../../src/backends/onnxruntime.js';
import { parsePreprocessSpec, prepareBatch, type PreprocessSpec, type TensorData } from '../../src/backends/image.js';
import { buildModel, node, tensorValueInfo } from '../onnx/helpers.js';
import { REPO, RESNET, RESNET_PRE, SINGLE, SINGLE_PRE, scratch, zooCopy } from './helpers.js';

const CALIBRATION = path.join(REPO, 'calibration', 'fashion-mnist');
const SESSION = { intraOpNumThreads: 1, interOpNumThreads: 1 } as const;

function elemType(v: ValueInfoProto): number {
  return v.type?.value.case === 'tensorType' ? v.type.value.value.elemType : 0;
}

interface Comparison {
  maxAbsDiff: number;
  maxAbsRef: number;
  agreement: number;
  samples: number;
}

function argmax(data: ArrayLike<number>, from: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (data[from + i]! > data[from + best]!) best = i;
  return best;
}

/** Run both models on the same batch and compare every output (the worst exit wins). */
async function compare(ref: Uint8Array, half: Uint8Array, input: string, batch: TensorData): Promise<Comparison & { perOutput: Record<string, Comparison> }> {
  const a = await createSession(ref, SESSION);
  const b = await createSession(half, SESSION);
  try {
    const feeds: Record<string, PlainTensor> = { [input]: { data: batch.data, dims: batch.dims } };
    const ra = await a.run(feeds);
    const rb = await b.run(feeds);
    const perOutput: Record<string, Comparison> = {};
    for (const name of a.outputNames) {
      const x = ra[name]!.data as Float32Array;
      const y = rb[name]!.data as Float32Array;
      expect(y, `output '${name}' stays float32`).toBeInstanceOf(Float32Array);
      expect(rb[name]!.dims).toEqual(ra[name]!.dims);
      let maxAbsDiff = 0;
      let maxAbsRef = 0;
      for (let i = 0; i < x.length; i++) {
        const d = Math.abs(x[i]! - y[i]!);
        maxAbsDiff = Math.max(maxAbsDiff, Number.isNaN(d) ? Infinity : d);
        maxAbsRef = Math.max(maxAbsRef, Math.abs(x[i]!));
      }
      const rows = ra[name]!.dims[0]!;
      const per = x.length / rows;
      let agree = 0;
      for (let r = 0; r < rows; r++) if (argmax(x, r * per, per) === argmax(y, r * per, per)) agree++;
      perOutput[name] = { maxAbsDiff, maxAbsRef, agreement: agree / rows, samples: rows };
    }
    const all = Object.values(perOutput);
    return {
      perOutput,
      maxAbsDiff: Math.max(...all.map((c) => c.maxAbsDiff)),
      maxAbsRef: Math.max(...all.map((c) => c.maxAbsRef)),
      agreement: Math.min(...all.map((c) => c.agreement)),
      samples: all[0]!.samples,
    };
  } finally {
    await a.close();
    await b.close();
  }
}

/** Every float initializer read by a converted (non-blocked) node is float16; int64 ones untouched. */
function expectHalfWeights(source: OnnxModel, half: OnnxModel, blockOps: readonly string[] = Object.keys(DEFAULT_BLOCK_OPS)): void {
  const g = OnnxGraph.of(half);
  const before = new Map(source.graph.initializer.map((t) => [t.name, t]));
  for (const t of half.graph.initializer) {
    const readers = g.consumers(t.name);
    const orig = before.get(t.name);
    if (orig && orig.dataType !== DataType.FLOAT) {
      expect(t.dataType, `'${t.name}' keeps its non-float type`).toBe(orig.dataType);
      expect(tensorToArray(t)).toEqual(tensorToArray(orig));
      continue;
    }
    if (readers.length > 0 && readers.every((n) => n.opType !== 'Cast' && !blockOps.includes(n.opType))) {
      expect(t.dataType, `weight '${t.name}' of ${readers.map((n) => n.opType).join(', ')}`).toBe(DataType.FLOAT16);
    }
  }
  expect(half.graph.initializer.filter((t) => t.dataType === DataType.FLOAT16).length).toBeGreaterThan(0);
}

/** The relative bound fp16 allows: max|diff| ≤ 1e-2 × max|ref|, per output. */
function expectClose(c: Awaited<ReturnType<typeof compare>>): void {
  for (const [name, o] of Object.entries(c.perOutput)) {
    expect(o.maxAbsDiff, `output '${name}' (max|ref| ${o.maxAbsRef})`).toBeLessThanOrEqual(1e-2 * o.maxAbsRef);
  }
}

async function specOf(file: string): Promise<PreprocessSpec> {
  return parsePreprocessSpec(JSON.parse(await fsp.readFile(file, 'utf8')));
}

/** `limit` calibration images spread over the class folders. */
async function calibrationFiles(limit: number): Promise<string[]> {
  const classes = (await fsp.readdir(CALIBRATION, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  const per = Math.ceil(limit / classes.length);
  const files: string[] = [];
  for (const c of classes) {
    const dir = path.join(CALIBRATION, c);
    files.push(...(await fsp.readdir(dir)).filter((f) => f.endsWith('.png')).sort().slice(0, per).map((f) => path.join(dir, f)));
  }
  return files.slice(0, limit);
}

describe('convertToFp16 on the compiler fixtures', () => {
  for (const [label, file, pre] of [
    ['single-exit', SINGLE, SINGLE_PRE],
    ['resnet-exits', RESNET, RESNET_PRE],
  ] as const) {
    it(`${label}: float16 weights, about half the bytes, outputs within fp16 tolerance on 200 random inputs`, async () => {
      const source = await readModel(file);
      const sourceBytes = encodeModel(source);
      const snapshot = Buffer.from(sourceBytes);
      const { model, report } = convertToFp16(source);
      // The input model is left alone.
      expect(Buffer.from(encodeModel(source)).equals(snapshot)).toBe(true);
      expectHalfWeights(source, model);
      const bytes = encodeModel(model);
      // Weights dominate: float16 is about half (graph structure and IO casts add a little).
      expect(bytes.length).toBeLessThan(sourceBytes.length * 0.7);
      expect(report.converted).toBeGreaterThan(0);
      expect(report.keptFloat32).toEqual([]);
      expect(report.clamped).toEqual([]);
      // One Cast after the input, one before each output.
      expect(report.castsInserted).toBe(1 + source.graph.output.length);
      // Graph IO unchanged: names and float32 types.
      expect(model.graph.input.map((v) => [v.name, elemType(v)])).toEqual(source.graph.input.map((v) => [v.name, DataType.FLOAT]));
      expect(model.graph.output.map((v) => [v.name, elemType(v)])).toEqual(source.graph.output.map((v) => [v.name, DataType.FLOAT]));
      const input = OnnxGraph.of(source).inputNames[0]!;
      const c = await compare(sourceBytes, bytes, input, randomImages(await specOf(pre), 200, 7));
      expectClose(c);
      expect(c.agreement).toBeGreaterThanOrEqual(0.99);
    });
  }
});

describe('convertToFp16 on the zoo model (fmnist-branchy, 3 exits)', () => {
  it('halves the file, keeps every exit within fp16 tolerance and top-1 on calibration images', async () => {
    const file = await zooCopy(await scratch('fp16-zoo'));
    const source = await readModel(file);
    const sourceBytes = encodeModel(source);
    const { model, report } = convertToFp16(source);
    expectHalfWeights(source, model);
    const bytes = encodeModel(model);
    expect(bytes.length / sourceBytes.length).toBeGreaterThan(0.45);
    expect(bytes.length / sourceBytes.length).toBeLessThan(0.55);
    expect(report.keptFloat32).toEqual([]);
    // Metadata (preprocess spec, labels) survives.
    expect(model.metadata).toEqual(source.metadata);
    const spec = parsePreprocessSpec(JSON.parse(source.getMetadata('edgeexit.preprocess')!));
    const input = OnnxGraph.of(source).inputNames[0]!;

    const random = await compare(sourceBytes, bytes, input, randomImages(spec, 200, 11));
    expectClose(random);
    expect(random.agreement).toBeGreaterThanOrEqual(0.99);

    const prepared = await prepareBatch(await calibrationFiles(200), spec);
    expect(prepared.failures).toEqual([]);
    const calib = await compare(sourceBytes, bytes, input, prepared.tensor);
    expectClose(calib);
    expect(calib.samples).toBe(200);
    expect(calib.agreement).toBeGreaterThanOrEqual(0.99);
    // Measurements for the record (see the fp16 report).
    console.log(
      `zoo fp16: ${sourceBytes.length} → ${bytes.length} bytes (${((100 * bytes.length) / sourceBytes.length).toFixed(1)}%); ` +
        Object.entries(calib.perOutput)
          .map(([n, o]) => `${n}: max|diff| ${o.maxAbsDiff.toExponential(2)} (max|ref| ${o.maxAbsRef.toFixed(2)}), top-1 ${(100 * o.agreement).toFixed(1)}%`)
          .join('; ') +
        ` on ${calib.samples} calibration images; random: max|diff| ${random.maxAbsDiff.toExponential(2)}, top-1 ${(100 * random.agreement).toFixed(1)}%`,
    );
  });

  it('split, then convert each stage: stages chain with float32 hand-over and match the source', async () => {
    const file = await zooCopy(await scratch('fp16-split'));
    const source = await readModel(file);
    const spec = parsePreprocessSpec(JSON.parse(source.getMetadata('edgeexit.preprocess')!));
    const { stages } = splitModel(source);
    expect(stages.length).toBe(3);
    const half = stages.map((s) => {
      const { model } = convertToFp16(s.model);
      // Carried tensors (and the image) stay float32 at every stage boundary.
      for (const v of [...model.graph.input, ...model.graph.output]) expect(elemType(v), `stage ${s.index} '${v.name}'`).toBe(DataType.FLOAT);
      expect(model.graph.input.map((v) => v.name)).toEqual(s.inputs);
      expect(model.graph.output.map((v) => v.name)).toEqual(s.outputs);
      return { bytes: encodeModel(model), inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry };
    });
    const check = await checkStages({
      source: encodeModel(source),
      inputName: OnnxGraph.of(source).inputNames[0]!,
      preprocess: spec,
      stages: half,
      precision: 'fp16',
      tolerance: Infinity,
      batchSizes: [1, 4, 32],
      session: SESSION,
    });
    // Reference magnitude per exit from the fp32 model, for the relative bound.
    const ref = await createSession(encodeModel(source), SESSION);
    const x = randomImages(spec, 37, 1);
    const out = await ref.run({ image: { data: x.data, dims: x.dims } });
    await ref.close();
    for (const e of check.random.exits) {
      const maxRef = Math.max(...Array.from(out[e.exit]!.data as Float32Array, Math.abs));
      expect(e.maxAbsDiff, `exit ${e.exit}`).toBeLessThanOrEqual(1e-2 * maxRef);
      expect(e.top1Agreement).toBeGreaterThanOrEqual(0.97);
    }
  });
});

// ---- small models built in code ----

const x4 = (dims: number[] = [1, 2, 4, 4]) => tensorValueInfo('x', DataType.FLOAT, dims);
const f32 = (name: string, dims: number[], values: number[]) => arrayToTensor(name, dims, 'float32', Float32Array.from(values));
const seq = (n: number, scale = 0.1) => Array.from({ length: n }, (_, i) => ((i % 5) - 2) * scale);

async function runOnce(model: OnnxModel, feeds: Record<string, PlainTensor>): Promise<Record<string, Float32Array>> {
  const s = await createSession(encodeModel(model), SESSION);
  try {
    const out = await s.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await s.close();
  }
}

describe('constants', () => {
  it('clamps 1e6 to 65504 and tiny magnitudes up to 2^-24, and reports the counts', async () => {
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1, 4])],
      outputs: [tensorValueInfo('y', DataType.FLOAT, [1, 4]), tensorValueInfo('z', DataType.FLOAT, [1, 4])],
      nodes: [
        node('Mul', ['x', 'c'], ['y']),
        node('Constant', [], ['k'], { value: f32('k', [4], [1e6, -1e6, 1e-9, 3]) }),
        node('Add', ['x', 'k'], ['z']),
      ],
      initializers: [f32('c', [4], [1e6, -1e-9, 0.5, 0])],
    });
    const { model: half, report } = convertToFp16(model);
    expect(report.clamped).toEqual(
      expect.arrayContaining([
        { tensor: 'c', count: 2 },
        { tensor: 'k', count: 3 },
      ]),
    );
    const c = half.graph.initializer.find((t) => t.name === 'c')!;
    expect(c.dataType).toBe(DataType.FLOAT16);
    expect(Array.from(float16ToFloat32(tensorToArray(c, 'float16')))).toEqual([65504, -(2 ** -24), 0.5, 0]);
    const k = half.graph.node.find((n) => n.opType === 'Constant')!.attribute[0]!.t!;
    expect(k.dataType).toBe(DataType.FLOAT16);
    expect(Array.from(float16ToFloat32(tensorToArray(k, 'float16')))).toEqual([65504, -65504, 2 ** -24, 3]);
    const out = await runOnce(half, { x: { data: Float32Array.of(1, 0, 0, 0), dims: [1, 4] } });
    expect(out.y![0]).toBe(65504);
    // z[0] = 1 + 65504: onnxruntime's CPU EP computes Add in float32 (it casts around the node
    // and drops the float16 round trip), so 65505 is as valid as float16's 65504 here.
    expect([65504, 65505]).toContain(out.z![0]);
    expect(Array.from(out.z!.slice(1))).toEqual([-65504, 2 ** -24, 3]);
  });

  it('leaves int64 shape tensors alone and retypes Cast(to=FLOAT) and ConstantOfShape', async () => {
    const model = buildModel({
      inputs: [x4([1, 2, 2, 2])],
      outputs: [tensorValueInfo('y', DataType.FLOAT, [1, 8])],
      nodes: [
        node('Reshape', ['x', 'shape'], ['r']),
        node('Shape', ['r'], ['s']),
        node('ConstantOfShape', ['s'], ['ones'], { value: f32('v', [1], [1.5]) }),
        node('Cast', ['n'], ['nf'], { to: DataType.FLOAT }),
        node('Mul', ['r', 'ones'], ['m']),
        node('Add', ['m', 'nf'], ['y']),
      ],
      initializers: [arrayToTensor('shape', [2], 'int64', BigInt64Array.of(1n, -1n)), arrayToTensor('n', [1], 'int32', Int32Array.of(2))],
    });
    const { model: half, report } = convertToFp16(model);
    const shape = half.graph.initializer.find((t) => t.name === 'shape')!;
    expect(shape.dataType).toBe(DataType.INT64);
    expect(half.graph.initializer.find((t) => t.name === 'n')!.dataType).toBe(DataType.INT32);
    const cast = half.graph.node.find((n) => n.output[0] === 'nf')!;
    expect(attrInt(cast, 'to')).toBe(DataType.FLOAT16);
    const cos = half.graph.node.find((n) => n.opType === 'ConstantOfShape')!;
    expect(cos.attribute[0]!.t!.dataType).toBe(DataType.FLOAT16);
    expect(report.keptFloat32).toEqual([]);
    const x = Float32Array.from({ length: 8 }, (_, i) => i / 4);
    const out = await runOnce(half, { x: { data: x, dims: [1, 2, 2, 2] } });
    expect(Array.from(out.y!)).toEqual(Array.from(x, (v) => v * 1.5 + 2));
  });
});

describe('blocked ops and nodes', () => {
  const resizeModel = () =>
    buildModel({
      inputs: [x4()],
      outputs: [tensorValueInfo('y', DataType.FLOAT, [1, 2, 8, 8])],
      nodes: [
        node('Conv', ['x', 'w', 'b'], ['c'], { pads: [1, 1, 1, 1] }),
        node('Resize', ['c', '', 'scales'], ['r'], { mode: 'linear' }),
        node('Relu', ['r'], ['y']),
      ],
      initializers: [f32('w', [2, 2, 3, 3], seq(36)), f32('b', [2], [0.1, -0.2]), f32('scales', [4], [1, 1, 2, 2])],
    });
  const input = { x: { data: Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)), dims: [1, 2, 4, 4] } };

  it('keeps Resize float32 (scales too) behind Casts, and the model runs', async () => {
    const model = resizeModel();
    const { model: half, report } = convertToFp16(model);
    expect(report.keptFloat32).toEqual([{ node: 'r', op: 'Resize', reason: DEFAULT_BLOCK_OPS.Resize }]);
    expect(half.graph.initializer.find((t) => t.name === 'scales')!.dataType).toBe(DataType.FLOAT);
    expect(half.graph.initializer.find((t) => t.name === 'w')!.dataType).toBe(DataType.FLOAT16);
    const g = OnnxGraph.of(half);
    const resize = g.nodes.find((n) => n.opType === 'Resize')!;
    // fp16 Conv output → Cast(float) → Resize → Cast(float16) → Relu → Cast(float) → y.
    expect(g.producer(resize.inputs[0]!)!.opType).toBe('Cast');
    expect(attrInt(g.producer(resize.inputs[0]!)!.proto, 'to')).toBe(DataType.FLOAT);
    const after = g.consumers(resize.outputs[0]!);
    expect(after.map((n) => [n.opType, attrInt(n.proto, 'to')])).toEqual([['Cast', DataType.FLOAT16]]);
    expect(report.castsInserted).toBe(4);
    const ref = await runOnce(model, input);
    const got = await runOnce(half, input);
    const maxRef = Math.max(...Array.from(ref.y!, Math.abs));
    ref.y!.forEach((v, i) => expect(Math.abs(v - got.y![i]!)).toBeLessThanOrEqual(1e-2 * maxRef));
  });

  it('converts Resize when the caller drops it from blockOps, but its scales stay float32', async () => {
    const { model: half, report } = convertToFp16(resizeModel(), { blockOps: [] });
    expect(report.keptFloat32).toEqual([]);
    expect(half.graph.initializer.find((t) => t.name === 'scales')!.dataType).toBe(DataType.FLOAT);
    expect(report.castsInserted).toBe(2);
    const got = await runOnce(half, input);
    expect(got.y!.length).toBe(128);
  });

  it('blockNodes keeps one node float32; a weight shared with a float16 reader gets a float16 twin', async () => {
    const model = buildModel({
      inputs: [tensorValueInfo('x', DataType.FLOAT, [1, 4])],
      outputs: [tensorValueInfo('y', DataType.FLOAT, [1, 4])],
      nodes: [node('Add', ['x', 'b'], ['a'], {}, 'keep_me'), node('Mul', ['a', 'b'], ['y'], {}, 'convert_me')],
      initializers: [f32('b', [4], [0.5, 1, 2, 4])],
    });
    const opts: Fp16Options = { blockNodes: ['keep_me'] };
    const { model: half, report } = convertToFp16(model, opts);
    expect(report.keptFloat32).toEqual([{ node: 'keep_me', op: 'Add', reason: 'node in blockNodes' }]);
    expect(report.converted).toBe(1);
    const byName = new Map(half.graph.initializer.map((t) => [t.name, t.dataType]));
    expect(byName.get('b')).toBe(DataType.FLOAT);
    expect(byName.get('b_fp16')).toBe(DataType.FLOAT16);
    const out = await runOnce(half, { x: { data: Float32Array.of(1, 2, 3, 4), dims: [1, 4] } });
    expect(Array.from(out.y!)).toEqual([0.75, 3, 10, 32]);
  });
});

describe('keepIoFloat32: false', () => {
  it('declares float16 graph inputs and outputs, and onnxruntime loads it', async () => {
    const source = await readModel(SINGLE);
    const { model, report } = convertToFp16(source, { keepIoFloat32: false });
    for (const v of [...model.graph.input, ...model.graph.output]) expect(elemType(v), v.name).toBe(DataType.FLOAT16);
    expect(report.castsInserted).toBe(0);
    expect(model.graph.node.some((n) => n.opType === 'Cast')).toBe(false);
    // Our adapter's TensorType has no 'float16' yet, so the model is loaded and typed, not run.
    const s = await createSession(encodeModel(model), SESSION);
    try {
      expect(s.inputs.map((i) => i.type)).toEqual(['float16']);
      expect(s.outputs.map((o) => o.type)).toEqual(['float16']);
    } finally {
      await s.close();
    }
  });
});
