// Threshold search for an early-exit cascade, pure (no onnxruntime): given every exit's score and
// correctness for every calibration sample, and each stage's latency, find per-exit thresholds
// that maximise accuracy within a latency target (mean, or a percentile of the per-sample
// latency), or the lowest latency within an accuracy drop of the last exit.
//
// A sample's latency is the sum of the stage latencies up to the exit it takes (its cascade), so
// a policy's latency is fully described by how many samples leave at each exit — the MSDNet
// expected cost Σ fraction leaving at k × cost up to k. Percentiles are nearest-rank over that
// per-sample distribution.
//
// Candidates per exit are quantiles of the scores there (plus the metric's extreme, the
// strictest a manifest can say), so thresholds are always values the runtime can use as is.
// Small spaces are searched exhaustively; large ones by coordinate descent on accuracy − λ·latency
// over a sweep of λ, where each coordinate step evaluates every candidate of one exit in
// O(N·K) via bucketed prefix sums. Every evaluated policy is a frontier candidate, so the
// constrained answer is the best feasible policy seen, not just a Lagrangian vertex.
import { InputError, formatProblem } from '../util/errors.js';

export type ExitDirection = 'at-least' | 'at-most';

export interface SearchData {
  /** scores[k][i]: exit k's confidence score of sample i (metric units). */
  scores: readonly ArrayLike<number>[];
  /** correct[k][i]: whether exit k classifies sample i correctly. */
  correct: readonly ArrayLike<boolean | number>[];
  /** How the metric exits: score ≥ t ('at-least', max-prob, margin) or score ≤ t ('at-most', entropy). */
  direction: ExitDirection;
  /** Valid threshold range of the metric (default [0, 1]). */
  range?: readonly [number, number];
}

export type SearchTarget =
  | { kind: 'latency'; targetMs: number; /** Percentile of per-sample latency (e.g. 95); default: the mean. */ percentile?: number }
  | { kind: 'accuracy-drop'; /** Largest accuracy loss vs the last exit, percentage points. */ maxDropPp: number };

export interface SearchOptions {
  /** Candidate thresholds per exit (quantiles of its scores; default 64). */
  candidates?: number;
  /** 'auto' (default): exhaustive when small enough, else coordinate descent. */
  strategy?: 'auto' | 'exhaustive' | 'coordinate';
}

export interface PolicyPoint {
  /** One per exit but the last; the runtime's thresholds. */
  thresholds: number[];
  accuracy: number;
  /** Mean per-sample latency, ms. */
  meanMs: number;
  /** The latency the target constrains (the mean, or the chosen percentile), ms. */
  latencyMs: number;
  /** Fraction of samples leaving at each exit. */
  exitFractions: number[];
}

export interface SearchResult {
  chosen: PolicyPoint;
  /** Every exit to the last: accuracy of the last exit and the full cascade's latency. */
  noExit: { accuracy: number; meanMs: number; latencyMs: number };
  /** Each sample at its cheapest correct exit (exit 0 when none is correct): no threshold policy does better. */
  oracle: { accuracy: number; meanMs: number };
  /** Pareto frontier (latency ascending, accuracy strictly rising) of the policies evaluated. */
  frontier: { latencyMs: number; meanMs: number; accuracy: number }[];
  /** Cumulative latency of each exit (Σ stage latency up to it), ms. */
  cumulativeMs: number[];
  strategy: 'exhaustive' | 'coordinate';
  evaluated: number;
  searchMs: number;
}

/**
 * Raised when the target cannot be met by any policy; `reachableMs` is the least reachable.
 *
 * @example
 * ```ts
 * import { TargetUnreachableError, searchThresholds } from 'edgeexit/calibration';
 * try {
 *   searchThresholds(data, stageMs, { kind: 'latency', targetMs: 0.1 });
 * } catch (err) {
 *   if (err instanceof TargetUnreachableError) console.error(`best reachable: ${err.reachableMs} ms`);
 * }
 * ```
 */
export class TargetUnreachableError extends InputError {
  constructor(
    message: string,
    readonly reachableMs: number,
  ) {
    super(message);
  }
}

export const DEFAULT_CANDIDATES = 64;
// Above this many sample-exit visits an exhaustive search would take seconds (4 exits × 10 000
// samples × 65² ≈ 1.7e8); coordinate descent is then used.
const EXHAUSTIVE_BUDGET = 3e7;

/** Nearest-rank percentile of an exit histogram, given each exit's cumulative latency. */
function percentileOfHist(hist: ArrayLike<number>, cum: readonly number[], n: number, p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * n));
  let acc = 0;
  for (let e = 0; e < cum.length; e++) {
    acc += hist[e]!;
    if (acc >= rank) return cum[e]!;
  }
  return cum[cum.length - 1]!;
}

interface Prepared {
  K: number;
  n: number;
  /** cand[k]: candidate threshold values (in "higher = more confident" units), ascending. */
  cand: Float64Array[];
  /** q[k][i]: how many of cand[k] are ≤ sample i's score; it exits at k iff q > c_k. */
  q: Uint16Array[];
  corr: Uint8Array[];
  cum: number[];
}

function prepare(data: SearchData, stageMs: readonly number[], candidates: number): Prepared {
  const K = data.scores.length;
  if (K < 1 || data.correct.length !== K || stageMs.length !== K) {
    throw new InputError(formatProblem({ where: 'threshold search', expected: `scores, correct and stage latencies for the same number of exits`, got: `${data.scores.length}, ${data.correct.length}, ${stageMs.length}` }));
  }
  const n = data.scores[0]!.length;
  if (n === 0) throw new InputError('threshold search: no calibration samples');
  const sign = data.direction === 'at-least' ? 1 : -1;
  const range = data.range ?? [0, 1];
  // The strictest threshold a manifest can hold: the top of the range for ≥, the bottom for ≤.
  const extreme = sign * (data.direction === 'at-least' ? range[1] : range[0]);
  const cand: Float64Array[] = [];
  const q: Uint16Array[] = [];
  const corr: Uint8Array[] = [];
  for (let k = 0; k < K; k++) {
    const s = Float64Array.from(data.scores[k]!, (v) => sign * v);
    if (s.length !== n || data.correct[k]!.length !== n) throw new InputError(`threshold search: exit ${k} has ${s.length} scores / ${data.correct[k]!.length} labels, exit 0 has ${n}`);
    const sorted = Float64Array.from(s).sort();
    const set = new Set<number>();
    for (let j = 0; j < candidates; j++) set.add(sorted[Math.min(n - 1, Math.floor((j / candidates) * n))]!);
    set.add(extreme);
    const c = Float64Array.from([...set]).sort();
    cand.push(c);
    const qk = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      // Binary search: count of candidates ≤ s[i].
      let lo = 0;
      let hi = c.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (c[mid]! <= s[i]!) lo = mid + 1;
        else hi = mid;
      }
      qk[i] = lo;
    }
    q.push(qk);
    corr.push(Uint8Array.from(data.correct[k]!, (v) => (v ? 1 : 0)));
  }
  const cum: number[] = [];
  stageMs.reduce((a, b, k) => ((cum[k] = a + b), a + b), 0);
  return { K, n, cand, q, corr, cum };
}

type Objective = { value(e: { correct: number; meanMs: number; latencyMs: number }): number };

class Searcher {
  evaluated = 0;
  /** Every evaluated (latency, mean, accuracy, policy) — pruned to the frontier at the end. */
  points: { latencyMs: number; meanMs: number; accuracy: number; c: number[]; hist: Float64Array }[] = [];
  private reach: Uint8Array;
  private fut: Uint8Array;

  constructor(
    readonly p: Prepared,
    readonly percentile: number | undefined,
  ) {
    this.reach = new Uint8Array(p.n);
    this.fut = new Uint8Array(p.n);
  }

  latency(hist: ArrayLike<number>): { meanMs: number; latencyMs: number } {
    let m = 0;
    for (let e = 0; e < this.p.K; e++) m += hist[e]! * this.p.cum[e]!;
    const meanMs = m / this.p.n;
    return { meanMs, latencyMs: this.percentile === undefined ? meanMs : percentileOfHist(hist, this.p.cum, this.p.n, this.percentile) };
  }

  private record(c: readonly number[], correct: number, hist: Float64Array): { correct: number; meanMs: number; latencyMs: number } {
    this.evaluated++;
    const l = this.latency(hist);
    this.points.push({ ...l, accuracy: correct / this.p.n, c: [...c], hist: Float64Array.from(hist) });
    return { correct, ...l };
  }

  /**
   * Evaluate every candidate of exit k with the other thresholds fixed (c[k] ignored); records
   * them all and returns the candidate maximising `obj`.
   */
  sweep(c: number[], k: number, obj?: Objective): { best: number; value: number } {
    const { K, n, q, corr } = this.p;
    const M = this.p.cand[k]!.length;
    const last = K - 1;
    // Samples that never reach k contribute the same to every candidate.
    const fixedHist = new Float64Array(K);
    let fixedCorrect = 0;
    const bN = new Float64Array(M + 1);
    const bCorrK = new Float64Array(M + 1);
    const bCorrF = new Float64Array(M + 1);
    const bHistF = new Float64Array((M + 1) * K);
    for (let i = 0; i < n; i++) {
      let e = -1;
      for (let j = 0; j < k; j++) {
        if (q[j]![i]! > c[j]!) {
          e = j;
          break;
        }
      }
      if (e >= 0) {
        fixedHist[e]!++;
        fixedCorrect += corr[e]![i]!;
        continue;
      }
      let f = last;
      for (let j = k + 1; j < last; j++) {
        if (q[j]![i]! > c[j]!) {
          f = j;
          break;
        }
      }
      const b = q[k]![i]!;
      bN[b]!++;
      bCorrK[b]! += corr[k]![i]!;
      bCorrF[b]! += corr[f]![i]!;
      bHistF[b * K + f]!++;
    }
    // Candidate cc: buckets b > cc exit at k, b ≤ cc go on. Sweep cc upward keeping prefix sums.
    let preCorrF = 0;
    let preN = 0;
    const preHistF = new Float64Array(K);
    let sufCorrK = 0;
    let sufN = 0;
    for (let b = 0; b <= M; b++) {
      sufCorrK += bCorrK[b]!;
      sufN += bN[b]!;
    }
    let best = 0;
    let bestV = -Infinity;
    const hist = new Float64Array(K);
    const cc = [...c];
    for (let x = 0; x < M; x++) {
      preCorrF += bCorrF[x]!;
      preN += bN[x]!;
      for (let e = 0; e < K; e++) preHistF[e]! += bHistF[x * K + e]!;
      sufCorrK -= bCorrK[x]!;
      sufN -= bN[x]!;
      for (let e = 0; e < K; e++) hist[e] = fixedHist[e]! + preHistF[e]!;
      hist[k]! += sufN;
      cc[k] = x;
      const r = this.record(cc, fixedCorrect + preCorrF + sufCorrK, hist);
      if (obj) {
        const v = obj.value(r);
        if (v > bestV) {
          bestV = v;
          best = x;
        }
      }
    }
    void preN;
    return { best, value: bestV };
  }

  /**
   * Constrained coordinate ascent from `start`: each step moves one threshold to the best
   * candidate by `rank` (−Infinity = infeasible). Closes the gap the Lagrangian sweep leaves
   * between its vertices, where the constrained optimum usually sits.
   */
  polish(start: readonly number[], rank: (e: { correct: number; meanMs: number; latencyMs: number }) => number): void {
    const c = [...start];
    let prev = -Infinity;
    for (let pass = 0; pass < 20; pass++) {
      let v = -Infinity;
      for (let k = 0; k < this.p.K - 1; k++) {
        const r = this.sweep(c, k, { value: rank });
        if (r.value > -Infinity) c[k] = r.best;
        v = Math.max(v, r.value);
      }
      if (v <= prev) break;
      prev = v;
    }
  }

  /**
   * Pair moves: for every candidate of one exit, the best candidate of each other exit. On a
   * budget boundary single moves stall (loosening one exit needs tightening another); this finds
   * those trades. O(M·K²·N) per pass.
   */
  pairPolish(start: readonly number[], rank: (e: { correct: number; meanMs: number; latencyMs: number }) => number, maxPasses = 3): number[] {
    const c = [...start];
    let cur = -Infinity;
    for (let pass = 0; pass < maxPasses; pass++) {
      let best: { v: number; c: number[] } | undefined;
      for (let j = 0; j < this.p.K - 1; j++) {
        for (let x = 0; x < this.p.cand[j]!.length; x++) {
          const t = [...c];
          t[j] = x;
          for (let k = 0; k < this.p.K - 1; k++) {
            if (k === j) continue;
            const r = this.sweep(t, k, { value: rank });
            if (r.value > (best?.v ?? -Infinity)) {
              const u = [...t];
              u[k] = r.best;
              best = { v: r.value, c: u };
            }
          }
        }
      }
      if (!best || best.v <= cur) break;
      cur = best.v;
      c.splice(0, c.length, ...best.c);
    }
    return c;
  }

  /** Every combination: enumerate exits 0..K−3, sweep exit K−2. */
  exhaustive(): void {
    const { K } = this.p;
    if (K < 2) return;
    const c = new Array<number>(K - 1).fill(0);
    const rec = (j: number): void => {
      if (j === K - 2) {
        this.sweep(c, j);
        return;
      }
      for (let x = 0; x < this.p.cand[j]!.length; x++) {
        c[j] = x;
        rec(j + 1);
      }
    };
    rec(0);
  }

  /** Coordinate descent on accuracy − λ·latency over a sweep of λ, warm-started along it. */
  coordinate(): void {
    const { K, n, cum } = this.p;
    if (K < 2) return;
    // Start strict (everything to the last exit) and loosen as λ grows.
    const c = this.p.cand.slice(0, K - 1).map((x) => x.length - 1);
    const span = Math.max(1e-12, cum[K - 1]! - cum[0]!);
    const lambdas = [0];
    for (let j = 0; j < 24; j++) lambdas.push((1 / span) * 10 ** (-3 + (j * 6) / 23));
    for (const lambda of lambdas) {
      const obj: Objective = { value: (e) => e.correct / n - lambda * e.latencyMs };
      let prev = -Infinity;
      for (let pass = 0; pass < 8; pass++) {
        let v = -Infinity;
        for (let k = 0; k < K - 1; k++) {
          const r = this.sweep(c, k, obj);
          c[k] = r.best;
          v = r.value;
        }
        if (v <= prev + 1e-12) break;
        prev = v;
      }
    }
  }
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/**
 * Search thresholds; see the header. Throws TargetUnreachableError when the target is out of reach.
 *
 * @example
 * ```ts
 * import { searchThresholds } from 'edgeexit/calibration';
 * const data = { scores: [[0.99, 0.4], [0.97, 0.8]], correct: [[1, 0], [1, 1]], direction: 'at-least' as const };
 * const r = searchThresholds(data, [0.5, 1.5], { kind: 'latency', targetMs: 1.5 });
 * console.log(r.chosen.thresholds, r.chosen.accuracy, r.chosen.meanMs);
 * ```
 */
export function searchThresholds(data: SearchData, stageMs: readonly number[], target: SearchTarget, opts: SearchOptions = {}): SearchResult {
  const t0 = performance.now();
  const p = prepare(data, stageMs, opts.candidates ?? DEFAULT_CANDIDATES);
  const { K, n, cum, corr } = p;
  const percentile = target.kind === 'latency' ? target.percentile : undefined;
  if (percentile !== undefined && !(percentile > 0 && percentile <= 100)) {
    throw new InputError(formatProblem({ where: '--percentile', expected: 'a number in (0, 100]', got: String(percentile) }));
  }
  if (target.kind === 'latency' && !(target.targetMs > 0)) throw new InputError(formatProblem({ where: '--target-latency', expected: 'a positive latency', got: String(target.targetMs) }));
  if (target.kind === 'accuracy-drop' && !(target.maxDropPp >= 0)) throw new InputError(formatProblem({ where: '--max-accuracy-drop', expected: 'percentage points ≥ 0', got: String(target.maxDropPp) }));

  // Every sample leaving at exit 0 is the cheapest any policy can be (for the mean and any percentile).
  if (target.kind === 'latency' && target.targetMs < cum[0]!) {
    const what = percentile === undefined ? 'mean' : `p${percentile}`;
    throw new TargetUnreachableError(
      `target ${what} latency ${target.targetMs} ms is below the reachable minimum ${round6(cum[0]!)} ms (every sample leaving at exit 0, stage 0 alone); ` +
        `choose a target ≥ ${round6(cum[0]!)} ms (the full cascade takes ${round6(cum[K - 1]!)} ms)`,
      cum[0]!,
    );
  }

  const s = new Searcher(p, percentile);
  const M = p.cand.slice(0, Math.max(0, K - 2)).reduce((a, c) => a * c.length, 1);
  const exhaustiveCost = M * n * K;
  const strategy = opts.strategy === 'exhaustive' || (opts.strategy !== 'coordinate' && exhaustiveCost <= EXHAUSTIVE_BUDGET) ? 'exhaustive' : 'coordinate';
  if (strategy === 'exhaustive') s.exhaustive();
  else s.coordinate();

  const lastCorrect = corr[K - 1]!.reduce((a, b) => a + b, 0);
  // Feasible-first ranking of a policy for the target: accuracy within a latency budget, or
  // latency within an accuracy floor (ties: the other quantity).
  const rank =
    target.kind === 'latency'
      ? (e: { correct: number; meanMs: number; latencyMs: number }): number => (e.latencyMs <= target.targetMs + 1e-12 ? e.correct - 1e-9 * e.meanMs : -Infinity)
      : (e: { correct: number; meanMs: number; latencyMs: number }): number => (e.correct >= lastCorrect - (target.maxDropPp / 100) * n - 1e-9 ? -e.latencyMs + 1e-9 * e.correct : -Infinity);
  if (strategy === 'coordinate') {
    const starts = s.points
      .map((pt) => ({ pt, v: rank({ correct: pt.accuracy * n, meanMs: pt.meanMs, latencyMs: pt.latencyMs }) }))
      .filter((x) => x.v > -Infinity)
      .sort((a, b) => b.v - a.v);
    const seen = new Set<string>();
    for (const { pt } of starts) {
      const key = pt.c.join(',');
      if (seen.has(key)) continue;
      seen.add(key);
      s.polish(pt.c, rank);
      if (seen.size >= 4) break;
    }
    let top: { c: number[]; v: number } | undefined;
    for (const pt of s.points) {
      const v = rank({ correct: pt.accuracy * n, meanMs: pt.meanMs, latencyMs: pt.latencyMs });
      if (v > (top?.v ?? -Infinity)) top = { c: pt.c, v };
    }
    if (top && K > 2) s.polish(s.pairPolish(top.c, rank, 2), rank);
  }

  const noHist = new Float64Array(K);
  noHist[K - 1] = n;
  const noExit = { accuracy: lastCorrect / n, ...s.latency(noHist) };

  let oracleCorrect = 0;
  let oracleMs = 0;
  for (let i = 0; i < n; i++) {
    let e = 0;
    for (let k = 0; k < K; k++) {
      if (corr[k]![i]) {
        e = k;
        oracleCorrect++;
        break;
      }
    }
    oracleMs += cum[e]!;
  }

  // The K = 1 case has no thresholds: the only policy is the single exit.
  if (K === 1) s.points.push({ ...noExit, c: [], hist: noHist });

  let chosen: (typeof s.points)[number] | undefined;
  if (target.kind === 'latency') {
    for (const pt of s.points) {
      if (pt.latencyMs > target.targetMs + 1e-12) continue;
      if (!chosen || pt.accuracy > chosen.accuracy || (pt.accuracy === chosen.accuracy && pt.meanMs < chosen.meanMs)) chosen = pt;
    }
  } else {
    const floor = noExit.accuracy - target.maxDropPp / 100 - 1e-12;
    for (const pt of s.points) {
      if (pt.accuracy < floor) continue;
      if (!chosen || pt.latencyMs < chosen.latencyMs || (pt.latencyMs === chosen.latencyMs && pt.accuracy > chosen.accuracy)) chosen = pt;
    }
  }
  if (!chosen) {
    const min = Math.min(...s.points.map((x) => x.latencyMs));
    throw new TargetUnreachableError(`no threshold policy meets the target; the least latency reached is ${round6(min)} ms`, min);
  }

  const sign = data.direction === 'at-least' ? 1 : -1;
  const frontier: SearchResult['frontier'] = [];
  for (const pt of [...s.points].sort((a, b) => a.latencyMs - b.latencyMs || b.accuracy - a.accuracy)) {
    if (frontier.length === 0 || pt.accuracy > frontier[frontier.length - 1]!.accuracy) frontier.push({ latencyMs: pt.latencyMs, meanMs: pt.meanMs, accuracy: pt.accuracy });
  }
  return {
    chosen: {
      thresholds: chosen.c.map((x, k) => sign * p.cand[k]![x]!),
      accuracy: chosen.accuracy,
      meanMs: chosen.meanMs,
      latencyMs: chosen.latencyMs,
      exitFractions: Array.from(chosen.hist, (h) => h / n),
    },
    noExit,
    oracle: { accuracy: oracleCorrect / n, meanMs: oracleMs / n },
    frontier,
    cumulativeMs: cum,
    strategy,
    evaluated: s.evaluated,
    searchMs: performance.now() - t0,
  };
}

/** The exit sample `i` leaves at under `thresholds`: the first whose score clears its threshold, else the last. */
function exitTaken(data: SearchData, thresholds: readonly number[], i: number): number {
  const last = data.scores.length - 1;
  for (let k = 0; k < last; k++) {
    const v = data.scores[k]![i]!;
    if (data.direction === 'at-least' ? v >= thresholds[k]! : v <= thresholds[k]!) return k;
  }
  return last;
}

/**
 * Apply thresholds to observations the way the runtime does (first exit whose score clears its
 * threshold, else the last): accuracy, mean and percentile latency, exit fractions. Used to check
 * a policy on held-out data.
 *
 * @example
 * ```ts
 * import { evaluatePolicy } from 'edgeexit/calibration';
 * const heldOut = evaluatePolicy(data, [0.5, 1.5], [0.9], 95);
 * console.log(heldOut.accuracy, heldOut.latencyMs, heldOut.exitFractions);
 * ```
 */
export function evaluatePolicy(data: SearchData, stageMs: readonly number[], thresholds: readonly number[], percentile?: number): PolicyPoint {
  const K = data.scores.length;
  const n = data.scores[0]!.length;
  const cum: number[] = [];
  stageMs.reduce((a, b, k) => ((cum[k] = a + b), a + b), 0);
  const hist = new Float64Array(K);
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const e = exitTaken(data, thresholds, i);
    hist[e]!++;
    if (data.correct[e]![i]) correct++;
  }
  let m = 0;
  for (let e = 0; e < K; e++) m += hist[e]! * cum[e]!;
  const meanMs = n ? m / n : 0;
  return {
    thresholds: [...thresholds],
    accuracy: n ? correct / n : 0,
    meanMs,
    latencyMs: percentile === undefined ? meanMs : percentileOfHist(hist, cum, n, percentile),
    exitFractions: Array.from(hist, (h) => (n ? h / n : 0)),
  };
}

/**
 * Standard error (percentage points) of the accuracy loss of `thresholds` against the last exit,
 * paired per sample: sd(correct_last − correct_policy) / √n. The loss measured on the fit images
 * is an estimate; choosing right at the budget leaves a coin flip of exceeding it on new images.
 */
export function accuracyLossStderrPp(data: SearchData, thresholds: readonly number[]): number {
  const K = data.scores.length;
  const n = data.scores[0]!.length;
  if (n < 2) return 0;
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    const e = exitTaken(data, thresholds, i);
    const d = (data.correct[K - 1]![i] ? 1 : 0) - (data.correct[e]![i] ? 1 : 0);
    sum += d;
    sq += d * d;
  }
  const mean = sum / n;
  const variance = Math.max(0, (sq - n * mean * mean) / (n - 1));
  return (Math.sqrt(variance / n)) * 100;
}

// ---- temperature scaling ----

/** Mean negative log-likelihood of softmax(logits / T) at the labels; logits row-major [n, classes]. */
export function nll(logits: ArrayLike<number>, labels: ArrayLike<number>, classes: number, T: number): number {
  const n = labels.length;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const o = i * classes;
    let max = -Infinity;
    for (let j = 0; j < classes; j++) max = Math.max(max, logits[o + j]! / T);
    let sum = 0;
    for (let j = 0; j < classes; j++) sum += Math.exp(logits[o + j]! / T - max);
    total += -(logits[o + labels[i]!]! / T - max - Math.log(sum));
  }
  return n ? total / n : 0;
}

/**
 * The temperature minimising NLL (Guo et al. 2017), by golden-section search on log T in
 * [0.05, 20]: NLL is convex in 1/T, hence unimodal in log T, which golden section needs.
 *
 * @example
 * ```ts
 * import { fitTemperature } from 'edgeexit/calibration';
 * // logits: N × classes, row-major; labels: N class indices
 * const T = fitTemperature(logits, labels, 10); // then softmax(logits / T) is calibrated
 * ```
 */
export function fitTemperature(logits: ArrayLike<number>, labels: ArrayLike<number>, classes: number, opts: { lo?: number; hi?: number; tol?: number } = {}): number {
  let a = Math.log(opts.lo ?? 0.05);
  let b = Math.log(opts.hi ?? 20);
  const tol = opts.tol ?? 1e-5;
  const g = (Math.sqrt(5) - 1) / 2;
  const f = (x: number): number => nll(logits, labels, classes, Math.exp(x));
  let c = b - g * (b - a);
  let d = a + g * (b - a);
  let fc = f(c);
  let fd = f(d);
  while (b - a > tol) {
    if (fc < fd) {
      b = d;
      d = c;
      fd = fc;
      c = b - g * (b - a);
      fc = f(c);
    } else {
      a = c;
      c = d;
      fc = fd;
      d = a + g * (b - a);
      fd = f(d);
    }
  }
  return Math.exp((a + b) / 2);
}
