// Exit policies: how confident an exit is, and when a sample may leave there. The metrics are a
// registry (data), so the CLI's choices, the threshold ranges in error messages and the
// documentation come from one table.
//
// Every metric works on softmax(logits / T), T being the exit's temperature, computed in double
// precision with the row maximum subtracted first (numerically the same as numpy/scipy's
// softmax). Threshold semantics:
//  - max-prob: the largest probability; the sample exits when score ≥ threshold.
//  - margin:   top-1 − top-2 probability; exits when score ≥ threshold.
//  - entropy:  NORMALISED entropy H(p) / ln(C) in [0, 1] (0 = one-hot, 1 = uniform), so one
//              threshold means the same for 10 or 1000 classes; exits when score ≤ threshold.
// All three scores lie in [0, 1], so thresholds outside it are refused. A threshold of 0 lets
// every sample leave at max-prob/margin but almost none at entropy (only one-hot outputs); the
// last exit always answers whatever its score.
import { InputError, formatProblem, show, type Problem } from '../util/errors.js';

import { EXIT_METRICS, EXIT_METRIC_INFO, type ExitMetric, type ExitMetricInfo } from '../bundle/exit-metrics.js';

export { EXIT_METRICS, type ExitMetric };

export interface ExitPolicyInfo extends ExitMetricInfo {
  /** The score of one softmax row (probabilities, summing to 1). */
  score(probs: Float64Array): number;
}

function maxProb(p: Float64Array): number {
  let m = 0;
  for (let i = 0; i < p.length; i++) if (p[i]! > m) m = p[i]!;
  return m;
}

function margin(p: Float64Array): number {
  if (p.length < 2) return 1;
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < p.length; i++) {
    const v = p[i]!;
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) b = v;
  }
  return a - b;
}

function normalisedEntropy(p: Float64Array): number {
  if (p.length < 2) return 0;
  let h = 0;
  // 0 · log 0 = 0 (the limit), so exact zeros after underflow do not poison the sum with NaN.
  for (let i = 0; i < p.length; i++) if (p[i]! > 0) h -= p[i]! * Math.log(p[i]!);
  return Math.min(1, Math.max(0, h / Math.log(p.length)));
}

export const EXIT_POLICIES: Readonly<Record<ExitMetric, ExitPolicyInfo>> = Object.freeze({
  'max-prob': { ...EXIT_METRIC_INFO['max-prob'], score: maxProb },
  entropy: { ...EXIT_METRIC_INFO.entropy, score: normalisedEntropy },
  margin: { ...EXIT_METRIC_INFO.margin, score: margin },
});

/**
 * The exit metric's policy by name (how a score is computed from probabilities, which way it
 * exits, its valid range); throws InputError naming the known metrics for any other name.
 *
 * @example
 * ```ts
 * import { exitPolicy } from 'edgeexit/runtime';
 * const p = exitPolicy('entropy');
 * p.exitWhen; // 'at-most': a sample leaves when its normalised entropy is at most the threshold
 * ```
 */
export function exitPolicy(metric: string): ExitPolicyInfo {
  const p = (EXIT_POLICIES as Record<string, ExitPolicyInfo | undefined>)[metric];
  if (!p) {
    throw new InputError(
      formatProblem({ where: 'exit metric', expected: `one of: ${EXIT_METRICS.join(', ')}`, got: show(metric) }),
    );
  }
  return p;
}

/** Whether `score` lets a sample leave under `policy` at `threshold`. */
export function clears(policy: ExitPolicyInfo, score: number, threshold: number): boolean {
  return policy.exitWhen === 'at-least' ? score >= threshold : score <= threshold;
}

/**
 * softmax(logits[offset .. offset+n) / temperature) into `out` (length n); returns the argmax
 * (first index on ties, like numpy.argmax).
 */
export function softmaxInto(logits: ArrayLike<number>, offset: number, n: number, temperature: number, out: Float64Array): number {
  const best = scaleInto(logits, offset, n, temperature, out);
  const max = out[best]!;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(out[i]! - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) out[i] = out[i]! / sum;
  return best;
}

/** logits[offset .. offset+n) / temperature into `out`; returns the argmax (first on ties), so out[argmax] is the max. */
function scaleInto(logits: ArrayLike<number>, offset: number, n: number, temperature: number, out: Float64Array): number {
  let best = 0;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[offset + i]! / temperature;
    out[i] = v;
    if (v > max) {
      max = v;
      best = i;
    }
  }
  return best;
}

/** Where `scoreRow` leaves the predicted class and its probability (single-threaded scratch: read it right after the call). */
export const scored = { classIndex: 0, confidence: 0 };

/**
 * Score one row of logits under `policy` at `temperature`: returns the policy's score and leaves
 * the argmax and its probability in `scored`. Max-prob, the default, skips the probability vector:
 * with e_i = exp(l_i/T − max) the top probability is e_argmax / Σe = 1 / Σe, the same arithmetic
 * as softmaxInto followed by the metric, so the result is bit-identical — and a third of the work,
 * which at batch 32 is a visible share of the cascade's overhead. `probs` is scratch of length n.
 */
export function scoreRow(policy: ExitPolicyInfo, logits: ArrayLike<number>, offset: number, n: number, temperature: number, probs: Float64Array): number {
  if (policy.metric === 'max-prob') {
    const best = scaleInto(logits, offset, n, temperature, probs);
    const max = probs[best]!;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(probs[i]! - max);
    const p = 1 / sum;
    scored.classIndex = best;
    scored.confidence = p;
    return p;
  }
  const best = softmaxInto(logits, offset, n, temperature, probs);
  scored.classIndex = best;
  scored.confidence = probs[best]!;
  return policy.score(probs);
}

/**
 * softmax(logits / T) as a new array (convenience for tests and callers outside the cascade).
 *
 * @example
 * ```ts
 * import { softmax } from 'edgeexit/runtime';
 * softmax([2, 1, 0]); // Float64Array [0.665, 0.245, 0.090]
 * softmax([2, 1, 0], 2); // temperature 2: flatter
 * ```
 */
export function softmax(logits: ArrayLike<number>, temperature = 1): Float64Array {
  const out = new Float64Array(logits.length);
  softmaxInto(logits, 0, logits.length, temperature, out);
  return out;
}

/** A policy with its numbers checked against a bundle's exits. */
export interface ResolvedExitPolicy {
  policy: ExitPolicyInfo;
  /** One per exit but the last; null = run every sample to the last exit. */
  thresholds: number[] | null;
  /** One per exit. */
  temperatures: number[];
}

/**
 * Check thresholds and temperatures for `exitNames` (all exits, in stage order) and pair them
 * with the metric. Every problem is reported at once, each naming the exit and the valid range.
 */
export function resolveExitPolicy(
  metric: string,
  thresholds: readonly number[] | null,
  temperatures: readonly number[],
  exitNames: readonly string[],
): ResolvedExitPolicy {
  const policy = exitPolicy(metric);
  const n = exitNames.length;
  const problems: Problem[] = [];
  const [lo, hi] = policy.range;
  const countFix = 'give one threshold per exit but the last, or null (CLI: leave --threshold out) to run every sample to the last exit';
  if (thresholds !== null && !Array.isArray(thresholds)) {
    problems.push({ where: 'thresholds', expected: `an array of ${n - 1} numbers, or null`, got: show(thresholds), fix: countFix });
  } else if (thresholds !== null) {
    if (thresholds.length !== n - 1) {
      problems.push({
        where: 'thresholds',
        expected: `${n - 1} value${n - 1 === 1 ? '' : 's'}, one per exit but the last (${exitNames.slice(0, -1).join(', ') || 'none'}); the last exit always answers`,
        got: `${thresholds.length} (${show(thresholds)})`,
        fix: countFix,
      });
    }
    // Which way is stricter depends on the metric, so the fix says it.
    const stricter = policy.exitWhen === 'at-least' ? `${hi} lets only certain samples leave, ${lo} lets all` : `${lo} lets only certain samples leave, ${hi} lets all`;
    thresholds.slice(0, n - 1).forEach((t, k) => {
      if (typeof t !== 'number' || !Number.isFinite(t) || t < lo || t > hi) {
        problems.push({
          where: `threshold for exit ${k} (${exitNames[k]})`,
          expected: `a number in [${lo}, ${hi}] for ${policy.metric} (${policy.summary})`,
          got: show(t),
          fix: `pick one inside the range (${stricter})${typeof t === 'number' && t > hi && t <= 100 ? `; ${t} looks like a percentage: write ${t / 100}` : ''}`,
        });
      }
    });
  }
  if (temperatures.length !== n) {
    problems.push({ where: 'temperatures', expected: `${n} values, one per exit`, got: `${temperatures.length} (${show(temperatures)})` });
  }
  temperatures.slice(0, n).forEach((t, k) => {
    if (!Number.isFinite(t) || t <= 0) {
      problems.push({ where: `temperature for exit ${k} (${exitNames[k]})`, expected: 'a positive number (1 = unscaled softmax)', got: show(t) });
    }
  });
  if (problems.length > 0) {
    throw new InputError(`exit policy: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n` + problems.map((p) => '  - ' + formatProblem(p)).join('\n'), problems);
  }
  return { policy, thresholds: thresholds === null ? null : [...thresholds], temperatures: [...temperatures] };
}
