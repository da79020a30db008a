// int8 stage boundaries: a split chain hands its carried tensors over as int8 codes (the
// producer's QuantizeLinear output, read through the next stage's DequantizeLinear) instead of
// float re-quantised by the reader. The two must compute the same logits, since the reader used
// the producer's parameters either way; only the types at the boundary and the nodes around it differ.
import { beforeAll, describe, expect, it } from 'vitest';
import { DataType, OnnxGraph, encodeModel, readModel, type OnnxModel } from '../../../src/onnx/index.js';
import { prepareModel, splitModel, type StagePlan } from '../../../src/compiler/index.js';
import { calibrateStages, quantizeWithBudget, resolveScheme, type QuantizeResult, type StageRanges } from '../../../src/compiler/quantize/index.js';
import { createSession, type PlainTensor } from '../../../src/backends/onnxruntime.js';
import { mulberry32 } from '../../../src/util/random.js';
import { ZOO } from '../helpers.js';

function images(count: number, batch: number, seed: number): { data: Float32Array; dims: number[] }[] {
  const rand = mulberry32(seed);
  return Array.from({ length: count }, () => ({ data: Float32Array.from({ length: batch * 784 }, () => rand() * 3 - 0.8), dims: [batch, 1, 28, 28] }));
}

/** Every exit's logits of a compiled chain on one batch, and what crossed each boundary. */
async function runChain(models: readonly OnnxModel[], stages: readonly StagePlan[], x: PlainTensor): Promise<{ exits: Float32Array[]; carried: PlainTensor[] }> {
  let alive: Record<string, PlainTensor> = { image: x };
  const exits: Float32Array[] = [];
  const carried: PlainTensor[] = [];
  for (const [k, s] of stages.entries()) {
    const session = await createSession(encodeModel(models[k]!));
    try {
      const out = await session.run(Object.fromEntries(s.inputs.map((n) => [n, alive[n]!])));
      exits.push(out[s.exit]!.data as Float32Array);
      const next: Record<string, PlainTensor> = {};
      for (const n of s.carry) next[n] = out[n] ?? alive[n]!;
      for (const n of s.outputs.slice(1)) carried.push(out[n]!);
      alive = next;
    } finally {
      await session.close();
    }
  }
  return { exits, carried };
}

const elemType = (m: OnnxModel, name: string, io: 'input' | 'output'): number | undefined => {
  const v = (io === 'input' ? m.graph.input : m.graph.output).find((x) => x.name === name);
  return v?.type?.value.case === 'tensorType' ? v.type.value.value.elemType : undefined;
};

describe('int8 hand-over between stages (fmnist-branchy, every stage handing on)', () => {
  let stages: StagePlan[];
  let ranges: StageRanges[];
  const batches = images(2, 20, 17);
  const labels = new Int32Array(40);
  beforeAll(async () => {
    stages = splitModel(prepareModel(await readModel(ZOO)).model, { recompute: [] }).stages;
    ranges = (await calibrateStages(stages, 'image', { batches }, { method: 'minmax' })).ranges;
  });
  const quantize = (scheme: string, int8HandOver: boolean): Promise<QuantizeResult> =>
    quantizeWithBudget(stages, { scheme: resolveScheme(scheme), ranges, inputName: 'image', data: { batches, labels }, maxDropPp: 100, mixed: false, int8HandOver });

  for (const [scheme, type, Ctor] of [['u8s8-qdq', DataType.UINT8, Uint8Array], ['s8s8-qdq', DataType.INT8, Int8Array]] as const) {
    it(`${scheme}: carried tensors cross as ${Ctor.name} codes, exits stay float, and the logits equal the float hand-over's`, async () => {
      const codes = await quantize(scheme, true);
      const float = await quantize(scheme, false);
      const carry0 = stages[0]!.outputs[1]!;
      const [m0, m1] = codes.models;
      expect(elemType(m0!, carry0, 'output')).toBe(type);
      expect(elemType(m1!, carry0, 'input')).toBe(type);
      expect(elemType(m0!, stages[0]!.exit, 'output')).toBe(DataType.FLOAT);
      expect(codes.reports[0]!.int8Outputs.has(carry0)).toBe(true);
      expect(codes.reports[1]!.int8Inputs).toEqual([carry0]);
      // No QuantizeLinear on either side of the boundary: stage 0's MaxPool writes the codes itself,
      // and stage 1 reads them through one DequantizeLinear.
      const g0 = OnnxGraph.of(m0!);
      expect(g0.producer(carry0)!.opType).toBe('MaxPool');
      const g1 = OnnxGraph.of(m1!);
      expect(g1.consumers(carry0).map((n) => n.opType)).toEqual(['DequantizeLinear']);
      expect(elemType(float.models[0]!, carry0, 'output')).toBe(DataType.FLOAT);
      expect(float.reports[1]!.int8Inputs).toEqual([]);
      for (const b of batches) {
        const a = await runChain(codes.models, stages, b);
        const f = await runChain(float.models, stages, b);
        expect(a.carried[0]!.data).toBeInstanceOf(Ctor);
        expect(a.carried[0]!.data.length * 4).toBe((f.carried[0]!.data as Float32Array).byteLength);
        a.exits.forEach((e, k) => {
          let max = 0;
          for (let i = 0; i < e.length; i++) max = Math.max(max, Math.abs(e[i]! - f.exits[k]![i]!));
          expect(max, `exit ${k}`).toBeLessThan(1e-4);
        });
      }
      expect(codes.verify.map((v) => v.compiledTop1)).toEqual(float.verify.map((v) => v.compiledTop1));
    });
  }

  it('the compile asks for codes where onnxruntime keeps them on every CPU: uint8, never int8 or symmetric (TensorRT)', async () => {
    const { handsOverCodes } = await import('../../../src/compiler/pipeline.js');
    expect(handsOverCodes(resolveScheme('u8s8-qdq'))).toBe(true);
    expect(handsOverCodes(resolveScheme('s8s8-qdq'))).toBe(false);
    expect(handsOverCodes(resolveScheme('symmetric-s8-qdq'))).toBe(false);
  });
});

describe('floatStagesFor: tiny stages that hand nothing on stay float in x64 int8 chains', () => {
  const stage = (macs: number, outputs: string[]) => ({ macs, outputs }) as never;
  const plan = { carryParams: true, stages: [stage(144_000, ['exit_0']), stage(2_800_000, ['exit_1', 'c1']), stage(2_800_000, ['exit_2'])] };
  it('fmnist-branchy-shaped: stage 0 (recomputed, under 1M MACs) on x64; nothing on arm64 or for a pair compiled apart', async () => {
    const { floatStagesFor } = await import('../../../src/compiler/pipeline.js');
    expect(floatStagesFor(plan, { cpu: { arch: 'x64' } } as never)).toEqual([0]);
    // v1.1.0's stage 0 with its conv head (0.35M MACs, 6 % of the model) is still small enough.
    const v11 = { ...plan, stages: [stage(352_000, ['exit_0']), ...plan.stages.slice(1)] };
    expect(floatStagesFor(v11, { cpu: { arch: 'x64' } } as never)).toEqual([0]);
    // A stage that hands nothing on but is large stays int8.
    const big = { ...plan, stages: [stage(1_500_000, ['exit_0']), ...plan.stages.slice(1)] };
    expect(floatStagesFor(big, { cpu: { arch: 'x64' } } as never)).toEqual([]);
    expect(floatStagesFor(plan, { cpu: { arch: 'arm64' } } as never)).toEqual([]);
    expect(floatStagesFor({ ...plan, carryParams: false }, { cpu: { arch: 'x64' } } as never)).toEqual([]);
    // A tiny stage that hands tensors on stays int8 (its reader expects what it hands over), and so does the last.
    const handing = { carryParams: true, stages: [stage(144_000, ['exit_0', 'c0']), stage(2_800_000, ['exit_1']), stage(10, ['exit_2'])] };
    expect(floatStagesFor(handing, { cpu: { arch: 'x64' } } as never)).toEqual([]);
  });
});
