// runCbnetBatch with fake models (no onnxruntime): which rows reach the converter, that rows stay
// aligned with their samples after dropping, that null thresholds skip the pointless first run,
// and that a converter changing the image's dims is refused.
import { describe, expect, it } from 'vitest';
import { runCbnetBatch, type CbnetModels } from '../../src/runtime/cbnet-cascade.js';
import { resolveExitPolicy } from '../../src/runtime/exit-policy.js';
import type { PlainTensor } from '../../src/backends/onnxruntime.js';

const HYBRID = ['classifier<-image', 'classifier<-converter'] as const;

/**
 * Each sample is one float v. The classifier's logits are [v, 0] (so confidence grows with |v|);
 * the converter maps v → 10 + v, which makes class 0 certain. Calls are recorded.
 */
function fakes(): { models: CbnetModels; seen: { convert: number[][]; classify: number[][] } } {
  const seen = { convert: [] as number[][], classify: [] as number[][] };
  const models: CbnetModels = {
    async convert(x) {
      seen.convert.push([...(x.data as Float32Array)]);
      return { data: (x.data as Float32Array).map((v) => 10 + v), dims: [...x.dims] };
    },
    async classify(x) {
      const rows = [...(x.data as Float32Array)];
      seen.classify.push(rows);
      return { data: Float32Array.from(rows.flatMap((v) => [v, 0])), dims: [rows.length, 2] };
    },
  };
  return { models, seen };
}

const input = (vals: number[]): PlainTensor => ({ data: Float32Array.from(vals), dims: [vals.length, 1, 1, 1] });

describe('runCbnetBatch', () => {
  it('hybrid: confident rows leave at the image exit point; only the rest are converted, in order', async () => {
    const { models, seen } = fakes();
    // max-prob of [v, 0]: v = 5 or −5 → 0.993; v = 0 → 0.5; v = 0.1 → 0.525.
    const r = await runCbnetBatch(models, HYBRID, input([5, 0, -5, 0.1]), resolveExitPolicy('max-prob', [0.9], [1, 1], [...HYBRID]));
    expect(seen.convert).toEqual([[0, 0.1].map((v) => Math.fround(v))]);
    expect(r.samples.map((s) => [s.exit, s.classIndex])).toEqual([
      [0, 0],
      [1, 0],
      [0, 1],
      [1, 0],
    ]);
    expect(r.samples[1]!.runs).toEqual(['classifier<-image', 'converter', 'classifier<-converter']);
    expect(r.samples[0]!.runs).toEqual(['classifier<-image']);
    expect(r.runs.map((x) => [x.name, x.rows])).toEqual([
      ['classifier<-image', 4],
      ['converter', 2],
      ['classifier<-converter', 2],
    ]);
  });

  it('null thresholds: the image exit point is not run at all', async () => {
    const { models, seen } = fakes();
    const r = await runCbnetBatch(models, HYBRID, input([5, 0]), resolveExitPolicy('max-prob', null, [1, 1], [...HYBRID]));
    expect(seen.classify).toHaveLength(1);
    expect(r.samples.map((s) => s.exit)).toEqual([1, 1]);
    expect(r.runs.map((x) => x.name)).toEqual(['converter', 'classifier<-converter']);
  });

  it('refuses a converter whose output does not have the image dims', async () => {
    const { models } = fakes();
    const bad: CbnetModels = { ...models, convert: async (x) => ({ data: x.data, dims: [x.dims[0]!, 1] }) };
    await expect(runCbnetBatch(bad, ['classifier<-converter'], input([1]), resolveExitPolicy('max-prob', null, [1], ['classifier<-converter']))).rejects.toThrow(/image's dims/);
  });
});
