// Splitting at exits: node assignment, minimal hand-over sets, stable names, MACs that add up,
// and stage outputs equal to the source model's under onnxruntime (batch 1 and 4).
import { describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { create } from '@bufbuild/protobuf';
import { InputError, UnsupportedError } from '../../src/util/errors.js';
import { ValueInfoProtoSchema } from '../../src/onnx/gen/onnx_pb.js';
import { OnnxGraph, costPerOutput, decodeModel, encodeModel, readModel, type OnnxModel } from '../../src/onnx/index.js';
import { checkStages, chooseRecompute, prepareModel, splitModel, type SplitResult } from '../../src/compiler/index.js';
import { parsePreprocessSpec, type PreprocessSpec } from '../../src/backends/image.js';
import { RESNET, RESNET_PRE, SINGLE, SINGLE_PRE, scratch, zooCopy } from './helpers.js';

const ZOO_PRE: PreprocessSpec = { colorspace: 'gray', size: [28, 28], scale: 1 / 255, mean: [0.286], std: [0.353] };

async function spec(file: string): Promise<PreprocessSpec> {
  return parsePreprocessSpec(await fsp.readFile(file, 'utf8'));
}

/** Structural properties every split must have, whatever the model. */
function expectWellFormed(source: OnnxModel, split: SplitResult): void {
  const { stages } = split;
  // Nothing computed twice: node sets are disjoint.
  const all = stages.flatMap((s) => s.nodes);
  expect(new Set(all).size).toBe(all.length);
  // MACs add up to the source's (costPerOutput counts each node once, at the first exit needing it).
  const sourceMacs = costPerOutput(source).reduce((a, c) => a + c.incrementalMacs, 0);
  expect(stages.reduce((a, s) => a + s.macs, 0)).toBe(sourceMacs);
  const inputs = OnnxGraph.of(source).inputNames;
  let alive = new Set(inputs);
  stages.forEach((s, k) => {
    expect(s.outputs[0]).toBe(s.exit);
    // A stage reads only what it was handed.
    for (const t of s.inputs) expect(alive.has(t), `stage ${k} reads '${t}'`).toBe(true);
    // Minimal hand-over: every carried tensor is read by some later stage.
    for (const t of s.carry) expect(stages.slice(k + 1).some((later) => later.inputs.includes(t)), `'${t}' carried after stage ${k}`).toBe(true);
    // ... and everything a later stage reads that earlier stages made is carried.
    for (const later of stages.slice(k + 1)) {
      for (const t of later.inputs) {
        const madeByNow = inputs.includes(t) || stages.slice(0, k + 1).some((e) => e.outputs.includes(t));
        if (madeByNow) expect(s.carry, `stage ${later.index} reads '${t}'`).toContain(t);
      }
    }
    // Each stage file is a valid, self-contained ONNX model.
    const bytes = encodeModel(s.model);
    const again = decodeModel(bytes, { source: `stage ${k}` });
    expect(OnnxGraph.of(again).inputNames).toEqual(s.inputs);
    expect(again.graph.output.map((o) => o.name)).toEqual(s.outputs);
    alive = new Set(s.carry);
  });
}

/** Run the source and the chained stages with onnxruntime at batch 1 and 4; every exit within 1e-5. */
async function expectSameOutputs(sourceBytes: Uint8Array, inputName: string, pre: PreprocessSpec, split: SplitResult): Promise<void> {
  const check = await checkStages({
    source: sourceBytes,
    inputName,
    preprocess: pre,
    stages: split.stages.map((s) => ({ bytes: encodeModel(s.model), inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry })),
    tolerance: 1e-5,
    session: { intraOpNumThreads: 1 },
  });
  expect(check.random.samples).toBe(5); // batch 1 + batch 4
  for (const e of check.random.exits) {
    expect(e.maxAbsDiff, `exit ${e.exit}`).toBeLessThanOrEqual(1e-5);
    expect(e.top1Agreement).toBe(1);
  }
  expect(check.passed).toBe(true);
}

describe('splitModel', () => {
  it('splits the zoo branchy model into 3 stages, each handing exactly one tensor on', async () => {
    const file = await zooCopy(await scratch('split-zoo'));
    const bytes = new Uint8Array(await fsp.readFile(file));
    const model = decodeModel(bytes, { source: file });
    const split = splitModel(prepareModel(model).model);
    expect(split.stages.map((s) => s.exit)).toEqual(['exit_0', 'exit_1', 'exit_2']);
    expect(split.stages[0]!.inputs).toEqual(['image']);
    expect(split.stages[0]!.carry).toEqual(['stage0/carry0']);
    expect(split.stages[1]!.inputs).toEqual(['stage0/carry0']);
    expect(split.stages[1]!.carry).toEqual(['stage1/carry0']);
    expect(split.stages[2]!.inputs).toEqual(['stage1/carry0']);
    expect(split.stages[2]!.carry).toEqual([]);
    // Stable names point back at the source tensors.
    expect(Object.keys(split.renamed).sort()).toEqual(['stage0/carry0', 'stage1/carry0']);
    // Only the stage that reads the image keeps the image preprocessing in its metadata.
    expect(split.stages.map((s) => s.model.getMetadata('edgeexit.preprocess') !== undefined)).toEqual([true, false, false]);
    expect(JSON.parse(split.stages[2]!.model.getMetadata('edgeexit.stage')!)).toEqual({ index: 2, of: 3, exit: 'exit_2' });
    expectWellFormed(model, split);
    await expectSameOutputs(bytes, 'image', ZOO_PRE, split);
  });

  it('splits the ResNet-style fixture: carries a stage-0 tensor past stage 1, never the image', async () => {
    const bytes = new Uint8Array(await fsp.readFile(RESNET));
    const model = decodeModel(bytes, { source: RESNET });
    const split = splitModel(prepareModel(model).model);
    const [s0, s1, s2] = split.stages;
    expect(split.stages.map((s) => s.exit)).toEqual(['head/aux:0', 'mid.logits', 'logits.final']);
    // Stage 0 hands on the block-1 features (to stage 1) and the pooled features (to stage 2).
    expect(s0!.inputs).toEqual(['image']);
    expect(s0!.outputs).toEqual(['head/aux:0', 'stage0/carry0', 'stage0/carry1']);
    expect(s1!.inputs).toEqual(['stage0/carry0']);
    // Stage 1 does not read the pooled features; the runtime carries them past it.
    expect(s1!.carry).toEqual(['stage0/carry1', 'stage1/carry0']);
    expect(s1!.outputs).toEqual(['mid.logits', 'stage1/carry0']);
    expect(s2!.inputs).toEqual(['stage0/carry1', 'stage1/carry0']);
    expect(s2!.carry).toEqual([]);
    expectWellFormed(model, split);
    await expectSameOutputs(bytes, 'image', await spec(RESNET_PRE), split);
  });

  it('without preparation the Shape(image) chain makes the image a hand-over; outputs still match', async () => {
    const bytes = new Uint8Array(await fsp.readFile(RESNET));
    const model = decodeModel(bytes, { source: RESNET });
    const split = splitModel(model);
    expect(split.stages[2]!.inputs).toContain('image');
    expect(split.stages[0]!.carry).toContain('image');
    expectWellFormed(model, split);
    await expectSameOutputs(bytes, 'image', await spec(RESNET_PRE), split);
  });

  it('recompute: stage 0 computes only its exit, stage 1 recomputes the trunk from the image; outputs still match', async () => {
    const file = await zooCopy(await scratch('split-recompute'));
    const bytes = new Uint8Array(await fsp.readFile(file));
    const model = prepareModel(decodeModel(bytes, { source: file })).model;
    const plain = splitModel(model);
    const split = splitModel(model, { recompute: [0] });
    const [s0, s1, s2] = split.stages;
    expect(s0!.outputs).toEqual(['exit_0']);
    // The image stays alive for stage 1, which reads it instead of a stage-0 tensor.
    expect(s0!.carry).toEqual(['image']);
    expect(s1!.inputs).toEqual(['image']);
    expect(s1!.outputs).toEqual(['exit_1', 'stage1/carry0']);
    expect(s2!.inputs).toEqual(['stage1/carry0']);
    // Stage 0 lost the nodes only the hand-over needed; stage 1 gained every trunk node it reads.
    expect(s0!.macs).toBeLessThanOrEqual(plain.stages[0]!.macs);
    const trunk = plain.stages[0]!.nodes.filter((n) => s1!.nodes.includes(n));
    expect(trunk.length).toBeGreaterThan(0);
    // Stage 1 pays for the recomputed trunk: more than before, at most stages 0 and 1 together.
    expect(s1!.macs).toBeGreaterThan(plain.stages[1]!.macs);
    expect(s1!.macs).toBeLessThanOrEqual(plain.stages[0]!.macs + plain.stages[1]!.macs);
    expect(s2!.macs).toBe(plain.stages[2]!.macs);
    await expectSameOutputs(bytes, 'image', ZOO_PRE, split);
  });

  it('recompute on the ResNet-style fixture: what stage 2 read from stage 0 now comes from stage 1 or the image', async () => {
    const bytes = new Uint8Array(await fsp.readFile(RESNET));
    const model = prepareModel(decodeModel(bytes, { source: RESNET })).model;
    const split = splitModel(model, { recompute: [0] });
    const [s0, s1, s2] = split.stages;
    expect(s0!.outputs).toEqual(['head/aux:0']);
    // Nothing stage 0 made is carried: only graph inputs pass it.
    for (const t of s0!.carry) expect(OnnxGraph.of(model).inputNames).toContain(t);
    for (const t of s2!.inputs) expect(s0!.outputs.includes(t)).toBe(false);
    expect(s1!.carry.length).toBeGreaterThan(0);
    await expectSameOutputs(bytes, 'image', await spec(RESNET_PRE), split);
  });

  it('bad input: recompute of the last stage or an index out of range is refused', async () => {
    const bytes = new Uint8Array(await fsp.readFile(RESNET));
    const model = prepareModel(decodeModel(bytes, { source: RESNET })).model;
    expect(() => splitModel(model, { recompute: [2] })).toThrow(InputError);
    expect(() => splitModel(model, { recompute: [2] })).toThrow(/stage 2 cannot be recomputed; expected stage indices 0\.\.1/);
    expect(() => splitModel(model, { recompute: [-1] })).toThrow(/stage -1 cannot be recomputed/);
  });

  it('chooseRecompute picks stages under the MAC share, never the last', () => {
    expect(chooseRecompute([144_000, 2_730_000, 2_780_000])).toEqual([0]);
    expect(chooseRecompute([1_000_000, 1_000_000, 1_000_000])).toEqual([]);
    expect(chooseRecompute([10, 10, 10_000, 10], 0.01)).toEqual([0, 1]);
    expect(chooseRecompute([5])).toEqual([]);
    // The trunk decides, not the whole stage: a stage whose exit head makes it 6 % is still recomputed when its trunk is 2 %.
    expect(chooseRecompute([360_000, 2_730_000, 2_910_000], 0.05, [120_000, 2_600_000, 2_910_000])).toEqual([0]);
    expect(chooseRecompute([360_000, 2_730_000, 2_910_000])).toEqual([]);
  });

  it('gives a one-stage split for a single-output model', async () => {
    const bytes = new Uint8Array(await fsp.readFile(SINGLE));
    const model = decodeModel(bytes, { source: SINGLE });
    const split = splitModel(prepareModel(model).model);
    expect(split.stages).toHaveLength(1);
    expect(split.stages[0]!).toMatchObject({ exit: 'scores', inputs: ['pixels'], outputs: ['scores'], carry: [] });
    expectWellFormed(model, split);
    await expectSameOutputs(bytes, 'pixels', await spec(SINGLE_PRE), split);
  });

  it('--exits picks and orders exits; unknown names are an InputError listing the outputs', async () => {
    const model = await readModel(RESNET);
    const two = splitModel(model, { exits: ['head/aux:0', 'logits.final'] });
    expect(two.stages.map((s) => s.exit)).toEqual(['head/aux:0', 'logits.final']);
    // The MatMul head of the left-out exit is not computed at all.
    const restricted = await readModel(RESNET);
    restricted.graph.output = restricted.graph.output.filter((o) => o.name !== 'mid.logits');
    const expected = costPerOutput(restricted).reduce((a, c) => a + c.incrementalMacs, 0);
    expect(expected).toBeLessThan(costPerOutput(model).reduce((a, c) => a + c.incrementalMacs, 0));
    expect(two.stages.reduce((a, s) => a + s.macs, 0)).toBe(expected);
    let err: unknown;
    try {
      splitModel(model, { exits: ['head/aux:0', 'exit_9'] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/'exit_9'/);
    expect((err as Error).message).toMatch(/'head\/aux:0', 'mid\.logits', 'logits\.final'/);
    // An exit that an earlier exit already computes adds nothing: refused, naming it.
    const pooled = model.graph.node.find((n) => n.opType === 'Flatten')!.output[0]!;
    model.graph.output.push(create(ValueInfoProtoSchema, { name: pooled }));
    expect(() => splitModel(model, { exits: ['logits.final', pooled] })).toThrow(UnsupportedError);
    expect(() => splitModel(model, { exits: ['logits.final', pooled] })).toThrow(/adds no computation of its own: stage 0 \(exit 'logits.final'\) already computes it/);
  });
});
