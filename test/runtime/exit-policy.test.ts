// Exit policies against hand-computed values (python: softmax of [2, 1, 0] at T = 1 and T = 2).
import { describe, expect, it } from 'vitest';
import { EXIT_POLICIES, EXIT_METRICS, clears, exitPolicy, resolveExitPolicy, scored, scoreRow, softmax } from '../../src/runtime/exit-policy.js';
import { mulberry32 } from '../../src/util/random.js';
import { InputError } from '../../src/util/errors.js';

const LOGITS = [2, 1, 0];

describe('exit policies', () => {
  it('softmax matches the hand-computed values, with and without temperature', () => {
    const p1 = softmax(LOGITS);
    expect([...p1].map((x) => +x.toFixed(12))).toEqual([0.665240955775, 0.244728471055, 0.09003057317]);
    const p2 = softmax(LOGITS, 2);
    expect(p2[0]).toBeCloseTo(0.506480391055654, 12);
    expect(p2[2]).toBeCloseTo(0.1863237232258476, 12);
  });

  it('max-prob, margin and normalised entropy give the hand-computed scores', () => {
    const p1 = softmax(LOGITS);
    expect(EXIT_POLICIES['max-prob'].score(p1)).toBeCloseTo(0.6652409557748218, 12);
    expect(EXIT_POLICIES.margin.score(p1)).toBeCloseTo(0.4205124847200241, 12);
    expect(EXIT_POLICIES.entropy.score(p1)).toBeCloseTo(0.8323955818399389 / Math.log(3), 12);
    expect(EXIT_POLICIES.entropy.score(p1)).toBeCloseTo(0.7576791106615822, 12);
    const p2 = softmax(LOGITS, 2);
    expect(EXIT_POLICIES.margin.score(p2)).toBeCloseTo(0.19928450533715564, 12);
    expect(EXIT_POLICIES.entropy.score(p2)).toBeCloseTo(0.9286181733536304, 12);
  });

  it('entropy is 0 for a one-hot row (no NaN from 0·log 0) and 1 for a uniform one', () => {
    expect(EXIT_POLICIES.entropy.score(new Float64Array([0, 1, 0, 0]))).toBe(0);
    expect(EXIT_POLICIES.entropy.score(softmax([3, 3, 3, 3]))).toBeCloseTo(1, 12);
    expect(EXIT_POLICIES.entropy.score(softmax([1000, 0, 0]))).toBe(0);
  });

  it('threshold direction: max-prob/margin exit when ≥, entropy when ≤', () => {
    expect(clears(EXIT_POLICIES['max-prob'], 0.5, 0.5)).toBe(true);
    expect(clears(EXIT_POLICIES['max-prob'], 0.49, 0.5)).toBe(false);
    expect(clears(EXIT_POLICIES.margin, 0.5, 0.5)).toBe(true);
    expect(clears(EXIT_POLICIES.entropy, 0.5, 0.5)).toBe(true);
    expect(clears(EXIT_POLICIES.entropy, 0.51, 0.5)).toBe(false);
  });

  it('refuses thresholds out of range, naming the exit and the range, and a wrong count', () => {
    const names = ['exit_0', 'exit_1', 'exit_2'];
    expect(() => resolveExitPolicy('max-prob', [0.5, 1.5], [1, 1, 1], names)).toThrow(/threshold for exit 1 \(exit_1\): expected a number in \[0, 1\] for max-prob.*got 1\.5/);
    expect(() => resolveExitPolicy('entropy', [-0.1, 0.2], [1, 1, 1], names)).toThrow(/exit 0 \(exit_0\).*\[0, 1\] for entropy/);
    expect(() => resolveExitPolicy('margin', [0.5], [1, 1, 1], names)).toThrow(/expected 2 values, one per exit but the last/);
    expect(() => resolveExitPolicy('max-prob', [NaN, 0.5], [1, 1, 1], names)).toThrow(InputError);
    expect(() => resolveExitPolicy('max-prob', null, [1, 0, 1], names)).toThrow(/temperature for exit 1 \(exit_1\)/);
    expect(() => exitPolicy('top-k')).toThrow(/one of: max-prob, entropy, margin/);
    expect(resolveExitPolicy('max-prob', null, [1, 1, 1], names).thresholds).toBeNull();
  });

  it('scoreRow gives exactly the score, class and probability of softmax + the metric, for every metric', () => {
    const rand = mulberry32(7);
    const probs = new Float64Array(10);
    for (const metric of EXIT_METRICS) {
      const policy = EXIT_POLICIES[metric];
      for (let t = 0; t < 200; t++) {
        // Rows at an offset inside a longer buffer, wide and narrow logits, ties now and then.
        const logits = Float32Array.from({ length: 30 }, () => (t % 7 === 0 ? 1 : (rand() - 0.5) * (t % 3 === 0 ? 40 : 6)));
        const temperature = 0.5 + rand() * 2;
        const p = softmax(logits.subarray(10, 20), temperature);
        const want = policy.score(p);
        let argmax = 0;
        for (let i = 1; i < 10; i++) if (p[i]! > p[argmax]!) argmax = i;
        expect(scoreRow(policy, logits, 10, 10, temperature, probs)).toBe(want);
        expect(scored.classIndex).toBe(argmax);
        expect(scored.confidence).toBe(p[argmax]);
      }
    }
  });
});
