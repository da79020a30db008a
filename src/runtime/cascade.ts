// The early-exit cascade over one batch: run stage k on the samples still in flight, score its
// exit, let the samples that clear the threshold leave, and hand only the rest's carried tensors
// to stage k+1. Stages are injected (anything with a `run`), so the bookkeeping — carry lists,
// row slicing, timing — is testable without onnxruntime, and the runner stays the only place
// that knows about sessions.
//
// Invariant: every tensor in `alive` has the samples still in flight as its dim 0, in the same
// order as `active`. A tensor carried past a stage that does not read it stays in `alive` and is
// sliced along with the others, so it is still aligned when a later stage reads it.
import { performance } from 'node:perf_hooks';
import { UnsupportedError } from '../util/errors.js';
import type { OutputTensor, PlainTensor, TypedArray } from '../backends/onnxruntime.js';
import { clears, scored, scoreRow, type ResolvedExitPolicy } from './exit-policy.js';

export interface CascadeStage {
  /** Tensors the stage reads. */
  inputs: readonly string[];
  /** Its exit's logits, [rows, classes]. */
  exit: string;
  /** Every tensor still needed after this stage (from this stage's outputs or from earlier). */
  carry: readonly string[];
  /** Outputs of the stage (the exit first); fetched are the exit and those in `carry`. */
  outputs: readonly string[];
  run(feeds: Record<string, PlainTensor>, outputs: readonly string[]): Promise<Record<string, PlainTensor | OutputTensor>>;
}

export interface CascadeSample {
  classIndex: number;
  /** Softmax probability (temperature-scaled) of the predicted class at the exit taken. */
  confidence: number;
  /** The policy's score at the exit taken (equals confidence for max-prob). */
  score: number;
  /** 0-based exit (= stage) the sample left at. */
  exit: number;
  /** Run time of each stage the sample went through (the whole batch's run of that stage); shared by the samples of a batch that left at the same exit, so read it, do not change it. */
  stageLatencyMs: number[];
  /** From the start of the batch's first stage until its exit decided (decode excluded). */
  latencyMs: number;
}

export interface CascadeResult {
  /** One per input row, in row order. */
  samples: CascadeSample[];
  /** Run time of each stage (0 when no sample reached it). */
  stageMs: number[];
  /** Rows each stage ran on. */
  stageRows: number[];
  /** Whole cascade, first stage start to last decision. */
  totalMs: number;
  /** totalMs − Σ stageMs: scoring, slicing and bookkeeping. */
  overheadMs: number;
}

/**
 * Rows `keep` (ascending indices into dim 0 of size `rows`) of `t`. One contiguous run (a single
 * row going on is the common case) comes back as a view, no copy: onnxruntime-node reads a typed
 * array's offset, and nothing in a cascade writes to a tensor it has handed on. Otherwise the
 * rows are copied, contiguous runs at once.
 */
export function sliceRows<T extends PlainTensor>(t: T, keep: readonly number[], rows: number, name = 'tensor'): T {
  if (t.dims[0] !== rows) {
    throw new UnsupportedError(
      `carried tensor '${name}' has dims [${t.dims.join(',')}]; the cascade needs the batch (${rows}) as dim 0 to drop exited samples`,
    );
  }
  const per = rows === 0 ? 0 : t.data.length / rows;
  if (keep.length > 0 && keep[keep.length - 1]! - keep[0]! === keep.length - 1) {
    return { ...t, data: t.data.subarray(keep[0]! * per, (keep[0]! + keep.length) * per), dims: [keep.length, ...t.dims.slice(1)] };
  }
  const Ctor = t.data.constructor as new (n: number) => TypedArray;
  const out = new Ctor(keep.length * per);
  let i = 0;
  while (i < keep.length) {
    let j = i + 1;
    while (j < keep.length && keep[j] === keep[j - 1]! + 1) j++;
    const from = keep[i]! * per;
    (out as { set(a: ArrayLike<unknown>, o: number): void }).set(t.data.subarray(from, from + (j - i) * per) as ArrayLike<unknown>, i * per);
    i = j;
  }
  return { ...t, data: out, dims: [keep.length, ...t.dims.slice(1)] };
}

// Outputs nothing later reads are not fetched: onnxruntime computes them anyway, but they would
// still be copied into JS. Worked out once per stage list: at batch 1 the cascade's whole budget
// is a few microseconds.
const FETCHES = new WeakMap<readonly CascadeStage[], string[][]>();
function fetchesOf(stages: readonly CascadeStage[]): string[][] {
  let f = FETCHES.get(stages);
  if (!f) FETCHES.set(stages, (f = stages.map((s) => s.outputs.filter((o) => o === s.exit || s.carry.includes(o)))));
  return f;
}

// Scratch softmax buffers by class count, reused across calls: single-threaded, and nothing
// awaits while one is in use. Exact length, since the exit metrics score the whole array.
const PROBS = new Map<number, Float64Array>();
/** The shared scratch softmax row for `c` classes (see above): fill and read it without awaiting in between. */
export function probsFor(c: number): Float64Array {
  let p = PROBS.get(c);
  if (!p) PROBS.set(c, (p = new Float64Array(c)));
  return p;
}

/**
 * Run the cascade on `input` (fed as `inputName`, dim 0 = samples). With `policy.thresholds`
 * null every sample runs to the last exit.
 */
export async function runCascade(
  stages: readonly CascadeStage[],
  inputName: string,
  input: PlainTensor,
  policy: ResolvedExitPolicy,
): Promise<CascadeResult> {
  const n = input.dims[0] ?? 0;
  const samples = new Array<CascadeSample>(n);
  const K = stages.length;
  const stageMs = new Array<number>(K).fill(0);
  const stageRows = new Array<number>(K).fill(0);
  const last = K - 1;
  let alive: Record<string, PlainTensor> = { [inputName]: input };
  // active[r] = input row of the r-th sample still in flight.
  let active: number[] = new Array<number>(n);
  for (let i = 0; i < n; i++) active[i] = i;
  const fetches = fetchesOf(stages);
  // performance.now() costs ~0.25 µs on the 2-vCPU VM, a tenth of the cascade's budget at batch
  // 1, so the clock is read twice per stage and once at the end; the cascade starts with the
  // first stage's run (building its feeds is a few property reads).
  let t0 = -1;

  for (let k = 0; k <= last && active.length > 0; k++) {
    const stage = stages[k]!;
    const m = active.length;
    const feeds: Record<string, PlainTensor> = {};
    for (const name of stage.inputs) {
      const t = alive[name];
      if (!t) throw new UnsupportedError(`stage ${k} reads '${name}', which no earlier stage handed over`);
      feeds[name] = t;
    }
    const s0 = performance.now();
    if (t0 < 0) t0 = s0;
    const out = await stage.run(feeds, fetches[k]!);
    const s1 = performance.now();
    stageMs[k] = s1 - s0;
    stageRows[k] = m;

    const logits = out[stage.exit];
    if (!logits || logits.dims.length !== 2 || logits.dims[0] !== m) {
      throw new UnsupportedError(`stage ${k}: exit '${stage.exit}' has dims [${logits?.dims.join(',') ?? ''}], expected [${m}, classes]`);
    }
    const threshold = k === last || policy.thresholds === null ? undefined : policy.thresholds[k]!;
    let keep: number[];
    if (k !== last && threshold === undefined) {
      // Null thresholds: nobody leaves before the last exit, so there is nothing to score.
      keep = active.map((_, r) => r);
    } else {
      keep = [];
      const c = logits.dims[1]!;
      const probs = probsFor(c);
      const temperature = policy.temperatures[k]!;
      const data = logits.data as ArrayLike<number>;
      // Decided when the stage's run ended; scoring the rows takes well under a microsecond each.
      const latencyMs = s1 - t0;
      // One array for every sample leaving here in this batch (they went through the same runs).
      const stageLatencyMs = stageMs.slice(0, k + 1);
      for (let r = 0; r < m; r++) {
        const score = scoreRow(policy.policy, data, r * c, c, temperature, probs);
        if (threshold === undefined || clears(policy.policy, score, threshold)) {
          samples[active[r]!] = { classIndex: scored.classIndex, confidence: scored.confidence, score, exit: k, stageLatencyMs, latencyMs };
        } else keep.push(r);
      }
    }
    if (keep.length === 0 || k === last) break;

    const next: Record<string, PlainTensor> = {};
    for (const name of stage.carry) {
      const t = out[name] ?? alive[name];
      if (!t) throw new UnsupportedError(`stage ${k} carries '${name}', which neither it nor an earlier stage produced`);
      // Nobody left at this exit: hand the tensors on as they are, without a copy.
      next[name] = keep.length === m ? t : sliceRows(t, keep, m, name);
    }
    alive = next;
    if (keep.length !== m) active = keep.map((r) => active[r]!);
  }

  const totalMs = t0 < 0 ? 0 : performance.now() - t0;
  const sum = stageMs.reduce((a, b) => a + b, 0);
  return { samples, stageMs, stageRows, totalMs, overheadMs: Math.max(0, totalMs - sum) };
}
