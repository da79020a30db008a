// Calls with thresholds null (every sample runs to the last exit) on a split multi-exit bundle run
// the stages joined into one session (model/chain-graph.ts, loadBundle's `chain`, on by default).
// On real bundles — the zoo's fmnist-branchy at fp32 (stage 0 recomputed by stage 1) and int8 x86
// (uint8 hand-over), and the ResNet-style bench fixture with BatchNorm and residual adds — the
// joined run gives the classes and confidences the stage-by-stage run gives, at batch 1 and 16;
// its graph is the unsplit model's (the earlier exit heads left out, a recomputed trunk computed
// once); calls with thresholds still run the stages, and `chain: false` turns it off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { compileModel } from '../../src/compiler/index.js';
import { readModel } from '../../src/onnx/index.js';
import { describeModel } from '../../src/model/describe.js';
import { buildChainGraph, CHAIN_GRAPH_REUSED } from '../../src/model/chain-graph.js';
import { buildIfGraph } from '../../src/model/if-graph.js';
import { loadBundle, type BundleRunner, type ClassifyResult, type Prediction } from '../../src/runtime/bundle-runner.js';
import { FIXTURES, ZOO, fmnistImages, randomTensor, scratch } from './helpers.js';

const quiet = { threads: 1, onWarning: () => {}, allowUnsigned: true };

function preds(r: ClassifyResult): Prediction[] {
  const ok = r.items.filter((i): i is Prediction => i.ok);
  expect(ok).toHaveLength(r.items.length);
  return ok;
}

function opCounts(nodes: readonly { opType: string }[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const n of nodes) c[n.opType] = (c[n.opType] ?? 0) + 1;
  return c;
}

interface Case {
  name: string;
  model: string;
  device: string;
  precision: 'fp32' | 'int8';
  inputs: () => Promise<string[] | { data: Float32Array; dims: number[] }>;
}

const CASES: Case[] = [
  { name: 'fmnist-branchy fp32', model: ZOO, device: 'x86-host', precision: 'fp32', inputs: () => fmnistImages(3) },
  { name: 'fmnist-branchy int8 x86 (uint8 hand-over)', model: ZOO, device: 'x86-host', precision: 'int8', inputs: () => fmnistImages(3) },
  { name: 'resnet-bench fp32 (BatchNorm, residual adds)', model: path.join(FIXTURES, 'resnet-bench.onnx'), device: 'x86-host', precision: 'fp32', inputs: async () => randomTensor([32, 1, 28, 28], 7) },
];

describe.each(CASES)('joined chain: $name', (c) => {
  let dir: string;
  let split: string;
  let unsplit: string;
  let joined: BundleRunner;
  let staged: BundleRunner;
  let input: string[] | { data: Float32Array; dims: number[] };

  beforeAll(async () => {
    dir = await scratch('chain');
    const model = path.join(dir, path.basename(c.model));
    await fsp.copyFile(c.model, model); // the zoo model may be retrained while tests run
    const int8 = c.precision === 'int8' ? { calibrationLimit: 100 } : {};
    split = path.join(dir, 'split');
    unsplit = path.join(dir, 'unsplit');
    await compileModel({ model, device: c.device, precision: c.precision, out: split, latency: false, ...int8 });
    const last = (await describeModel(model)).exits.at(-1)!.output;
    await compileModel({ model, device: c.device, precision: c.precision, out: unsplit, latency: false, exits: [last], ...int8 });
    joined = await loadBundle(split, quiet);
    staged = await loadBundle(split, { ...quiet, chain: false });
    input = await c.inputs();
  }, 240_000);

  afterAll(async () => {
    await joined?.close();
    await staged?.close();
  });

  it('thresholds null: the same classes and confidences as stage by stage, at batch 1 and 16, every sample at the last exit', async () => {
    const K = staged.manifest.stages.length;
    expect(K).toBeGreaterThanOrEqual(3);
    for (const batchSize of [1, 16]) {
      const a = preds(await staged.classify(input, { thresholds: null, batchSize }));
      const b = preds(await joined.classify(input, { thresholds: null, batchSize }));
      expect(b.map((p) => p.classIndex)).toEqual(a.map((p) => p.classIndex));
      b.forEach((p, i) => expect(p.confidence).toBeCloseTo(a[i]!.confidence, 5));
      expect(new Set(b.map((p) => p.exit))).toEqual(new Set([K - 1]));
    }
  });

  it('thresholds null runs one call: the time is booked to the last stage, samples carry no per-stage times; stage by stage books every stage', async () => {
    const K = staged.manifest.stages.length;
    const b = await joined.classify(input, { thresholds: null, batchSize: 1 });
    expect(b.timing.stageMs.slice(0, K - 1).every((ms) => ms === 0)).toBe(true);
    expect(b.timing.stageMs[K - 1]).toBeGreaterThan(0);
    for (const p of preds(b)) {
      expect(p.stageLatencyMs).toEqual([]);
      expect(p.latencyMs).toBeGreaterThan(0);
    }
    const a = await staged.classify(input, { thresholds: null, batchSize: 1 });
    expect(a.timing.stageMs.every((ms) => ms > 0)).toBe(true);
  });

  it('calls with thresholds still run the stages, and leave where the staged runner leaves', async () => {
    const K = staged.manifest.stages.length;
    const thresholds = Array.from({ length: K - 1 }, () => 0.9);
    const a = preds(await staged.classify(input, { thresholds, batchSize: 1 }));
    const r = await joined.classify(input, { thresholds, batchSize: 1 });
    const b = preds(r);
    expect(b.map((p) => p.exit)).toEqual(a.map((p) => p.exit));
    expect(b.map((p) => p.classIndex)).toEqual(a.map((p) => p.classIndex));
    expect(r.timing.stageMs[0]).toBeGreaterThan(0);
    for (const p of b) expect(p.stageLatencyMs).toHaveLength(p.exit + 1);
  });

  it('the joined graph is the unsplit model’s: earlier exit heads left out, a recomputed trunk computed once', async () => {
    const m = staged.manifest;
    const stages = await Promise.all(m.stages.map(async (s) => ({ model: await readModel(path.join(split, s.file)), inputs: s.inputs, outputs: s.outputs })));
    const g = buildChainGraph(stages);
    const last = m.stages.at(-1)!.exit;
    expect(g.graph.output.map((o) => o.name)).toEqual([last]);
    expect(g.graph.input.map((i) => i.name)).toEqual([m.input.name]);
    // No earlier exit is computed.
    const produced = new Set(g.graph.node.flatMap((n) => n.output));
    for (const s of m.stages.slice(0, -1)) expect(produced.has(s.exit)).toBe(false);
    const reused = Number(g.getMetadata(CHAIN_GRAPH_REUSED));
    // Stage 1 reads the image when it recomputes stage 0's trunk: those nodes are taken from stage 0.
    if (m.stages[1]!.inputs.includes(m.input.name)) expect(reused).toBeGreaterThan(0);
    if (c.precision === 'fp32') {
      const u = await loadBundle(unsplit, quiet);
      try {
        const one = await readModel(path.join(unsplit, u.manifest.stages[0]!.file));
        expect(opCounts(g.graph.node)).toEqual(opCounts(one.graph.node));
      } finally {
        await u.close();
      }
    }
  });
});

describe('joined chain: bundles and stages it does not take', () => {
  it('a stage holding a subgraph (an If) is refused with a message that names the stage and the node', async () => {
    const dir = await scratch('chain-if');
    const out = path.join(dir, 'b');
    await compileModel({ model: ZOO, device: 'x86-host', precision: 'fp32', out, latency: false });
    const runner = await loadBundle(out, quiet);
    const m = runner.manifest;
    await runner.close();
    const stages = await Promise.all(m.stages.map(async (s) => ({ model: await readModel(path.join(out, s.file)), inputs: s.inputs, outputs: s.outputs })));
    const fused = buildIfGraph(stages, { input: m.input.name, classes: m.labels.length });
    expect(() => buildChainGraph([{ model: fused, inputs: [m.input.name], outputs: ['edgeexit/logits'] }, stages[1]!])).toThrow(/stage 0: node .* \(If\) holds a subgraph/);
    expect(() => buildChainGraph([stages[0]!])).toThrow(/at least 2 stages, got 1/);
  }, 120_000);

  it('a bundle without thresholds opens the chain at load: its first call is already one session', async () => {
    const dir = await scratch('chain-load');
    const out = path.join(dir, 'b');
    await compileModel({ model: ZOO, device: 'x86-host', precision: 'fp32', out, latency: false });
    const runner = await loadBundle(out, quiet);
    try {
      expect(runner.manifest.exitPolicy.thresholds).toBeNull();
      const r = await runner.classify(await fmnistImages(1), { batchSize: 1 });
      expect(r.timing.stageMs.slice(0, -1).every((ms) => ms === 0)).toBe(true);
      expect(preds(r).every((p) => p.exit === runner.manifest.stages.length - 1)).toBe(true);
    } finally {
      await runner.close();
    }
  }, 120_000);
});
