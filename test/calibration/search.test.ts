// Threshold search on hand-made observations whose optimum is known, against an independent
// brute force, in both modes and for a percentile target; temperature fitting; the search time
// on 4 exits × 10 000 samples.
import { describe, expect, it } from 'vitest';
import { accuracyLossStderrPp, TargetUnreachableError, evaluatePolicy, fitTemperature, nll, searchThresholds, type SearchData } from '../../src/calibration/search.js';
import { rng, synthetic } from './helpers.js';

// Two exits, stages 1 ms and 3 ms (cumulative 1 and 4). Exit 0 is right on its five most
// confident samples, wrong at 0.6, right at 0.5, wrong below; the last exit is always right.
const s0 = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2];
const hand: SearchData = {
  scores: [s0, s0.map(() => 1)],
  correct: [[1, 1, 1, 1, 1, 0, 1, 0, 0, 0], s0.map(() => 1)],
  direction: 'at-least',
};
const stages = [1, 3];

describe('searchThresholds on a hand-made cascade', () => {
  it('mean target: the cheapest perfect policy lets the top five leave (mean = 4 − 3 × 0.5 = 2.5 ms)', () => {
    const r = searchThresholds(hand, stages, { kind: 'latency', targetMs: 2.5 });
    expect(r.chosen.thresholds).toEqual([0.7]);
    expect(r.chosen.accuracy).toBe(1);
    expect(r.chosen.meanMs).toBeCloseTo(2.5, 12);
    expect(r.chosen.exitFractions).toEqual([0.5, 0.5]);
    expect(r.noExit).toEqual({ accuracy: 1, meanMs: 4, latencyMs: 4 });
    // Oracle: the six samples exit 0 gets right leave there (1 ms), the rest at 4 ms.
    expect(r.oracle.accuracy).toBe(1);
    expect(r.oracle.meanMs).toBeCloseTo((6 * 1 + 4 * 4) / 10, 12);
    expect(r.cumulativeMs).toEqual([1, 4]);
  });

  it('a tighter mean target costs accuracy: 2.0 ms needs ≥ 2/3 leaving at exit 0 → top seven, one wrong', () => {
    const r = searchThresholds(hand, stages, { kind: 'latency', targetMs: 2.0 });
    expect(r.chosen.thresholds).toEqual([0.5]);
    expect(r.chosen.accuracy).toBeCloseTo(0.9, 12);
    expect(r.chosen.meanMs).toBeCloseTo(1.9, 12);
  });

  it('accuracy-drop mode: 0 pp → the 2.5 ms policy; 10 pp → the 1.9 ms one', () => {
    expect(searchThresholds(hand, stages, { kind: 'accuracy-drop', maxDropPp: 0 }).chosen.thresholds).toEqual([0.7]);
    const r = searchThresholds(hand, stages, { kind: 'accuracy-drop', maxDropPp: 10 });
    expect(r.chosen.thresholds).toEqual([0.5]);
    expect(r.chosen.meanMs).toBeCloseTo(1.9, 12);
  });

  it('percentile mode: p90 ≤ 2.5 ms needs nine of ten at exit 0 (70%); p50 allows the perfect policy', () => {
    const p90 = searchThresholds(hand, stages, { kind: 'latency', targetMs: 2.5, percentile: 90 });
    expect(p90.chosen.thresholds).toEqual([0.3]);
    expect(p90.chosen.accuracy).toBeCloseTo(0.7, 12);
    expect(p90.chosen.latencyMs).toBe(1);
    const p50 = searchThresholds(hand, stages, { kind: 'latency', targetMs: 2.5, percentile: 50 });
    expect(p50.chosen.accuracy).toBe(1);
    expect(p50.chosen.latencyMs).toBe(1);
  });

  it('an at-most metric (entropy-like) gives the mirrored threshold', () => {
    const mirrored: SearchData = { ...hand, scores: hand.scores.map((s) => Array.from(s, (v) => 1 - v)), direction: 'at-most' };
    const r = searchThresholds(mirrored, stages, { kind: 'latency', targetMs: 2.5 });
    expect(r.chosen.thresholds[0]).toBeCloseTo(0.3, 12);
    expect(evaluatePolicy(mirrored, stages, r.chosen.thresholds).accuracy).toBe(1);
  });

  it('a target below stage 0 alone is refused with the reachable minimum', () => {
    expect(() => searchThresholds(hand, stages, { kind: 'latency', targetMs: 0.5 })).toThrow(TargetUnreachableError);
    expect(() => searchThresholds(hand, stages, { kind: 'latency', targetMs: 0.5 })).toThrow(/below the reachable minimum 1 ms/);
  });
});

/** Independent brute force: every combination of observed scores (and 1) as thresholds. */
function bruteForce(d: SearchData, st: number[], targetMs: number): number {
  const K = d.scores.length;
  const cands = d.scores.slice(0, K - 1).map((s) => [...new Set([...Array.from(s), 1])]);
  let best = -1;
  const t: number[] = [];
  const rec = (k: number): void => {
    if (k === K - 1) {
      const e = evaluatePolicy(d, st, t);
      if (e.meanMs <= targetMs + 1e-12) best = Math.max(best, e.accuracy);
      return;
    }
    for (const c of cands[k]!) {
      t[k] = c;
      rec(k + 1);
    }
  };
  rec(0);
  return best;
}

describe('search strategies', () => {
  it('exhaustive search over all candidates equals an independent brute force (3 exits, 40 samples)', () => {
    const { scores, correct } = synthetic(3, 40, 7);
    const d: SearchData = { scores, correct, direction: 'at-least' };
    const st = [1, 1.5, 2];
    for (const target of [1.8, 2.5, 3.2]) {
      const r = searchThresholds(d, st, { kind: 'latency', targetMs: target }, { candidates: 64 });
      expect(r.strategy).toBe('exhaustive');
      expect(r.chosen.accuracy).toBeCloseTo(bruteForce(d, st, target), 12);
      // What the search reports is what applying its thresholds gives.
      const check = evaluatePolicy(d, st, r.chosen.thresholds);
      expect(check.accuracy).toBeCloseTo(r.chosen.accuracy, 12);
      expect(check.meanMs).toBeCloseTo(r.chosen.meanMs, 12);
      expect(check.meanMs).toBeLessThanOrEqual(target + 1e-12);
    }
  });

  it('coordinate descent comes within 1 pp of the exhaustive optimum (4 exits, 2 000 samples)', () => {
    const { scores, correct } = synthetic(4, 2000, 3);
    const d: SearchData = { scores, correct, direction: 'at-least' };
    const st = [1, 1, 1, 1];
    for (const target of [1.6, 2.2, 3]) {
      const ex = searchThresholds(d, st, { kind: 'latency', targetMs: target }, { candidates: 24, strategy: 'exhaustive' });
      const cd = searchThresholds(d, st, { kind: 'latency', targetMs: target }, { candidates: 24, strategy: 'coordinate' });
      expect(cd.chosen.meanMs).toBeLessThanOrEqual(target + 1e-12);
      expect(cd.chosen.accuracy).toBeGreaterThanOrEqual(ex.chosen.accuracy - 0.01);
      expect(cd.chosen.accuracy).toBeLessThanOrEqual(ex.chosen.accuracy + 1e-12);
    }
  });

  it('4 exits × 10 000 samples: coordinate search meets the target and stays under the oracle (speed: npm run bench:search)', () => {
    const { scores, correct } = synthetic(4, 10_000, 11);
    const d: SearchData = { scores, correct, direction: 'at-least' };
    const r = searchThresholds(d, [1, 1, 1, 1], { kind: 'latency', targetMs: 2.2 });
    expect(r.strategy).toBe('coordinate');
    expect(r.chosen.meanMs).toBeLessThanOrEqual(2.2);
    expect(r.oracle.accuracy).toBeGreaterThanOrEqual(r.chosen.accuracy);
  });
});

describe('fitTemperature', () => {
  it('recovers the temperature the labels were drawn with', () => {
    const r = rng(5);
    const n = 20_000;
    const C = 5;
    const T0 = 2.5;
    const logits = new Float64Array(n * C);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let sum = 0;
      const p: number[] = [];
      for (let j = 0; j < C; j++) {
        // Box–Muller normal, sd 4: confident-looking logits that are really over-confident.
        const z = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()) * 4;
        logits[i * C + j] = z;
        p.push(Math.exp(z / T0));
        sum += p[j]!;
      }
      let u = r() * sum;
      let y = 0;
      while (y < C - 1 && (u -= p[y]!) > 0) y++;
      labels[i] = y;
    }
    const T = fitTemperature(logits, labels, C);
    expect(T).toBeGreaterThan(T0 * 0.93);
    expect(T).toBeLessThan(T0 * 1.07);
    expect(nll(logits, labels, C, T)).toBeLessThan(nll(logits, labels, C, 1));
  });
});

describe('accuracyLossStderrPp', () => {
  it('is the paired standard error of last-exit minus policy correctness, in pp', () => {
    const data = { scores: [[0.9, 0.9, 0.1, 0.1], [0, 0, 0, 0]], correct: [[1, 0, 1, 0], [1, 1, 1, 1]], direction: 'at-least' as const };
    // Samples 0 and 1 leave at exit 0 (one of them wrong there); d = [0, 1, 0, 0]:
    // mean 0.25, sample variance (1 − 4·0.0625)/3 = 0.25, standard error √(0.25/4) = 0.25 → 25 pp.
    expect(accuracyLossStderrPp(data, [0.5])).toBeCloseTo(25, 12);
    // Nobody leaves early: no loss, no spread.
    expect(accuracyLossStderrPp(data, [0.95])).toBe(0);
  });
});
