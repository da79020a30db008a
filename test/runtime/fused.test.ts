// The fused If-graph path (loadBundle's `fused`): on real bundles (the zoo's fmnist-branchy at
// fp32 and int8 with its uint8 hand-over, and the ResNet-style bench fixture with BatchNorm and
// residual adds) a batch-1 call gives the same exits, classes and confidences as the staged
// cascade, runs as one call (no time booked to the stages before the exit), leaves the graph's
// later stages inside the If branches, and falls back to the stages where it does not apply.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { compileModel } from '../../src/compiler/index.js';
import { readModel } from '../../src/onnx/index.js';
import { buildIfGraph, IF_GRAPH_IO, IF_GRAPH_REUSED } from '../../src/model/if-graph.js';
import { createSession } from '../../src/backends/onnxruntime.js';
import { loadBundle, type BundleRunner, type ClassifyResult, type Prediction } from '../../src/runtime/bundle-runner.js';
import { FIXTURES, ZOO, fmnistImages, maxProb, randomTensor, scratch, splitThreshold } from './helpers.js';

// chain: false, so that calls with thresholds null run the stages (staged) and the If-graph (fused), not the joined chain.
const quiet = { threads: 1, onWarning: () => {}, allowUnsigned: true, chain: false };

function preds(r: ClassifyResult): Prediction[] {
  const ok = r.items.filter((i): i is Prediction => i.ok);
  expect(ok).toHaveLength(r.items.length);
  return ok;
}

interface Case {
  name: string;
  compile: (out: string, model: string) => Promise<unknown>;
  model: string;
  /** Input rows: image files (the zoo) or a tensor (the bench fixture, random weights). */
  inputs: () => Promise<string[] | { data: Float32Array; dims: number[] }>;
}

const CASES: Case[] = [
  { name: 'fmnist-branchy fp32', model: ZOO, compile: (out, model) => compileModel({ model, device: 'x86-host', precision: 'fp32', out, latency: false }), inputs: () => fmnistImages(4) },
  {
    name: 'fmnist-branchy int8 x86 (uint8 hand-over, float stage 0)',
    model: ZOO,
    compile: (out, model) => compileModel({ model, device: 'x86-host', precision: 'int8', out, latency: false, calibrationLimit: 100 }),
    inputs: () => fmnistImages(4),
  },
  {
    name: 'resnet-bench fp32 (BatchNorm, residual adds)',
    model: path.join(FIXTURES, 'resnet-bench.onnx'),
    compile: (out, model) => compileModel({ model, device: 'x86-host', precision: 'fp32', out, latency: false }),
    inputs: async () => randomTensor([40, 1, 28, 28], 5),
  },
];

describe.each(CASES)('fused If-graph: $name', (c) => {
  let staged: BundleRunner;
  let fused: BundleRunner;
  let out: string;
  let input: string[] | { data: Float32Array; dims: number[] };
  let thresholds: number[];

  beforeAll(async () => {
    const dir = await scratch('fused');
    const model = path.join(dir, path.basename(c.model));
    await fsp.copyFile(c.model, model); // the zoo model may be retrained while tests run
    out = path.join(dir, 'b');
    await c.compile(out, model);
    staged = await loadBundle(out, quiet);
    fused = await loadBundle(out, { ...quiet, fused: true });
    input = await c.inputs();
    // Thresholds that split the samples over every exit, from the staged path's own scores.
    const all = preds(await staged.classify(input, { thresholds: null, batchSize: 1 }));
    const K = staged.manifest.stages.length;
    expect(K).toBeGreaterThanOrEqual(3);
    const byExit = await Promise.all(
      Array.from({ length: K - 1 }, async (_, k) => {
        const r = preds(await staged.classify(input, { thresholds: Array.from({ length: K - 1 }, (_, j) => (j === k ? 0 : 1)), batchSize: 1 }));
        return r.map((p) => p.confidence);
      }),
    );
    thresholds = byExit.map((scores, k) => splitThreshold(scores, k === 0 ? 0.4 : 0.5));
    expect(all).toHaveLength(Array.isArray(input) ? input.length : input.dims[0]!);
  }, 240_000);

  afterAll(async () => {
    await staged?.close();
    await fused?.close();
  });

  it('batch 1: the same exits, classes and confidences as the staged cascade, at split thresholds and run to the last exit', async () => {
    for (const t of [thresholds, null]) {
      const a = preds(await staged.classify(input, { thresholds: t, batchSize: 1 }));
      const b = preds(await fused.classify(input, { thresholds: t, batchSize: 1 }));
      expect(b.map((p) => p.exit)).toEqual(a.map((p) => p.exit));
      expect(b.map((p) => p.classIndex)).toEqual(a.map((p) => p.classIndex));
      b.forEach((p, i) => expect(p.confidence).toBeCloseTo(a[i]!.confidence, 5));
      if (t) expect(new Set(b.map((p) => p.exit)).size).toBe(staged.manifest.stages.length);
      else expect(new Set(b.map((p) => p.exit))).toEqual(new Set([staged.manifest.stages.length - 1]));
    }
  });

  it('batch 1 runs as one call: no time is booked to the stages before the exit taken; the staged path books every stage', async () => {
    const b = preds(await fused.classify(input, { thresholds, batchSize: 1 }));
    const a = preds(await staged.classify(input, { thresholds, batchSize: 1 }));
    for (const p of b) {
      expect(p.stageLatencyMs).toHaveLength(p.exit + 1);
      expect(p.stageLatencyMs.slice(0, p.exit).every((ms) => ms === 0)).toBe(true);
      expect(p.stageLatencyMs[p.exit]).toBeGreaterThan(0);
    }
    const deep = a.filter((p) => p.exit > 0);
    expect(deep.length).toBeGreaterThan(0);
    for (const p of deep) expect(p.stageLatencyMs.every((ms) => ms > 0)).toBe(true);
  });

  it('falls back to the stages for batches of more than one and for other metrics', async () => {
    const a = preds(await staged.classify(input, { thresholds, batchSize: 8 }));
    const b = preds(await fused.classify(input, { thresholds, batchSize: 8 }));
    expect(b.map((p) => p.exit)).toEqual(a.map((p) => p.exit));
    expect(b.filter((p) => p.exit > 0).every((p) => p.stageLatencyMs.every((ms) => ms > 0))).toBe(true);
    const e = preds(await fused.classify(input, { metric: 'entropy', thresholds: thresholds.map(() => 0.5), batchSize: 1 }));
    const s = preds(await staged.classify(input, { metric: 'entropy', thresholds: thresholds.map(() => 0.5), batchSize: 1 }));
    expect(e.map((p) => p.exit)).toEqual(s.map((p) => p.exit));
    expect(e.filter((p) => p.exit > 0).every((p) => p.stageLatencyMs.every((ms) => ms > 0))).toBe(true);
  });

  it('the graph holds stage 0 at top level and each later stage inside the else-branch of the previous exit’s If; a recomputed trunk is reused, not run again', async () => {
    const m = staged.manifest;
    const stages = await Promise.all(m.stages.map(async (s) => ({ model: await readModel(path.join(out, s.file)), inputs: s.inputs, outputs: s.outputs })));
    const g = buildIfGraph(stages, { input: m.input.name, classes: m.labels.length });
    const reused = Number(g.getMetadata(IF_GRAPH_REUSED));
    let graph = g.graph;
    let copied = 0;
    for (let k = 0; k < m.stages.length; k++) {
      const ifs = graph.node.filter((n) => n.opType === 'If');
      expect(ifs).toHaveLength(k === m.stages.length - 1 ? 0 : 1);
      const mine = graph.node.filter((n) => n.name.startsWith(`s${k}/`)).length;
      expect(mine).toBeGreaterThan(0);
      copied += mine;
      // Nothing of a later stage runs before this exit's decision.
      expect(graph.node.some((n) => m.stages.some((_, j) => j > k && n.name.startsWith(`s${j}/`)))).toBe(false);
      if (ifs[0]) graph = ifs[0].attribute.find((a) => a.name === 'else_branch')!.g!;
    }
    expect(copied + reused).toBe(stages.reduce((a, s) => a + s.model.graph.node.length, 0));
    // fp32 stage 0 hands nothing on (the compiler's recompute), so stage 1 repeats its trunk: reused here.
    if (m.target.precision === 'fp32' && m.stages[0]!.carry.length === 0) expect(reused).toBeGreaterThan(0);
  });

  it('a threshold of 0 leaves at exit 0 with exit 0’s logits', async () => {
    const m = staged.manifest;
    const stages = await Promise.all(m.stages.map(async (s) => ({ model: await readModel(path.join(out, s.file)), inputs: s.inputs, outputs: s.outputs })));
    const s = await createSession(await fsp.readFile(path.join(out, m.stages[0]!.file)), { intraOpNumThreads: 1 });
    const f = await createSession(
      (await import('../../src/onnx/index.js')).encodeModel(buildIfGraph(stages, { input: m.input.name, classes: m.labels.length })),
      { intraOpNumThreads: 1 },
    );
    try {
      const x = randomTensor([1, ...(m.input.shape.slice(1) as number[])], 3);
      const K = m.stages.length;
      const r = await f.run({ [m.input.name]: x, [IF_GRAPH_IO.thresholds]: { data: new Float32Array(K - 1), dims: [K - 1] }, [IF_GRAPH_IO.temperatures]: { data: new Float32Array(K).fill(1), dims: [K] } });
      const e0 = await s.run({ [m.input.name]: x }, [m.stages[0]!.exit]);
      expect(Number((r[IF_GRAPH_IO.exit]!.data as BigInt64Array)[0])).toBe(0);
      expect(Array.from(r[IF_GRAPH_IO.logits]!.data as Float32Array)).toEqual(Array.from(e0[m.stages[0]!.exit]!.data as Float32Array));
      expect(maxProb(Array.from(r[IF_GRAPH_IO.logits]!.data as Float32Array))).toBeGreaterThan(0);
    } finally {
      await s.close();
      await f.close();
    }
  });
});
