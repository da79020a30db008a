// Verification and mixed precision on in-memory data: a model whose Gemm int8 cannot represent
// (a weight of 100 hides every other weight of its row) loses far more than the budget; the
// search must measure, keep the Gemm float, and report why.
import { describe, expect, it } from 'vitest';
import { calibrateStages, quantizeWithBudget, resolveScheme } from '../../../src/compiler/quantize/index.js';
import { convGemmModel, randomBatches, selfLabels } from './helpers.js';

async function setup(outlier: boolean) {
  const model = convGemmModel({ outlier });
  const batches = randomBatches(4, 50, 11);
  const labels = await selfLabels(model, batches);
  const stage = { model, inputs: ['x'], exit: 'logits', carry: [] as string[] };
  const cal = await calibrateStages([stage], 'x', { batches }, { method: 'minmax' });
  return { stage, data: { batches, labels }, ranges: cal.ranges };
}

describe('quantizeWithBudget', () => {
  it('an int8-friendly model fits at once: per-exit table, nothing kept float', async () => {
    const { stage, data, ranges } = await setup(false);
    const r = await quantizeWithBudget([stage], { scheme: resolveScheme('s8s8-qdq'), ranges, inputName: 'x', data, maxDropPp: 5 });
    expect(r.withinBudget).toBe(true);
    expect(r.keptFloat).toEqual([]);
    expect(r.evaluations).toBe(1);
    const v = r.verify[0]!;
    expect(v).toMatchObject({ stage: 0, exit: 'logits', samples: 200, floatTop1: 1 });
    expect(v.compiledTop1).toBeGreaterThanOrEqual(0.95);
    expect(v.agreement).toBe(v.compiledTop1);
    expect(v.maxLogitError).toBeGreaterThan(0);
  });

  it('keeps the node whose quantisation costs most float, and says why', async () => {
    const { stage, data, ranges } = await setup(true);
    const r = await quantizeWithBudget([stage], { scheme: resolveScheme('s8s8-qdq'), ranges, inputName: 'x', data, maxDropPp: 1 });
    expect(r.withinBudget).toBe(true);
    expect(r.keptFloat.map((k) => k.node)).toEqual(['gemm']);
    expect(r.keptFloat[0]).toMatchObject({ stage: 0, op: 'Gemm' });
    expect(r.keptFloat[0]!.reason).toMatch(/costliest to quantise: with it float, logits drops -?\d+\.\d+ pp instead of \d+\.\d+ pp \(budget 1 pp\)/);
    expect(r.reports[0]!.quantized.map((n) => n.node)).toEqual(['conv']);
    expect(r.verify[0]!.dropPp).toBeLessThanOrEqual(1);
    expect(r.evaluations).toBeGreaterThan(2);
  });

  it('without mixed precision it reports the drop instead', async () => {
    const { stage, data, ranges } = await setup(true);
    const r = await quantizeWithBudget([stage], { scheme: resolveScheme('s8s8-qdq'), ranges, inputName: 'x', data, maxDropPp: 1, mixed: false });
    expect(r.withinBudget).toBe(false);
    expect(r.verify[0]!.dropPp).toBeGreaterThan(20);
    expect(r.keptFloat).toEqual([]);
  });
});
