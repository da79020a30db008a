// The CBNet run orders over one batch (Mahmud et al.: a converting autoencoder turns hard
// images into easy ones, a light classifier classifies them). A run order is a list of exit
// points, each `classifier<-image` (the classifier on the raw image) or `classifier<-converter`
// (the converter, then the classifier on its output):
//  - policy cbnet:  ['classifier<-converter']: every sample pays for the converter.
//  - policy hybrid: ['classifier<-image', 'classifier<-converter']: the classifier alone answers
//    the samples it is confident about; only the rest are converted and classified again.
//    A bundle compiled with a backbone adds `backbone:<exit>` points last: the deeper stages of
//    the multi-exit model the classifier came from, run on the raw image for what is left.
// Exited samples are dropped before the next run, so the converter (~14× the classifier's MACs
// for fmnist-cbnet) runs only on the rows that need it. The models are injected, as in
// cascade.ts, so the bookkeeping is testable without onnxruntime.
//
// Invariant: `image` (and `converted`, once computed) hold exactly the samples in `active`, in
// that order, as dim 0.
import { performance } from 'node:perf_hooks';
import { isBackbonePoint, type BackbonePoint, type CbnetExitPoint } from '../bundle/manifest.js';
import { UnsupportedError } from '../util/errors.js';
import { sliceRows, type CascadeSample } from './cascade.js';
import { clears, scored, scoreRow, type ResolvedExitPolicy } from './exit-policy.js';
import type { PlainTensor } from '../backends/onnxruntime.js';

export const CBNET_POLICIES = ['cbnet', 'hybrid'] as const;
export type CbnetPolicy = (typeof CBNET_POLICIES)[number];

/** One model run inside a batch: the classifier on the image, the converter, or the classifier on the converter's output. */
export type CbnetRunName = 'classifier<-image' | 'converter' | 'classifier<-converter' | BackbonePoint;

/** A deeper backbone stage: reads the image (by `inputName`) or tensors earlier backbone stages handed on. */
export interface BackboneStage {
  inputs: readonly string[];
  exit: string;
  /** What later backbone stages read (the image's name included when they read it). */
  carry: readonly string[];
  run(feeds: Record<string, PlainTensor>, outputs: readonly string[]): Promise<Record<string, PlainTensor>>;
}

export interface CbnetModels {
  /** Image rows → converted rows with the image's dims. */
  convert(image: PlainTensor): Promise<PlainTensor>;
  /** Rows (image or converted) → logits [rows, classes]. */
  classify(x: PlainTensor): Promise<PlainTensor>;
  /** Backbone stages by exit name, and the name the first of them reads the image as. */
  backbone?: { inputName: string; stages: ReadonlyMap<string, BackboneStage> };
}

export interface CbnetSample extends CascadeSample {
  /** What each `stageLatencyMs` entry ran, in order (e.g. classifier<-image, converter, classifier<-converter). */
  runs: CbnetRunName[];
}

export interface CbnetRun {
  name: CbnetRunName;
  ms: number;
  rows: number;
}

export interface CbnetBatchResult {
  /** One per input row; `exit` indexes the run order. */
  samples: CbnetSample[];
  /** The runs made, in order (a run no sample reached is absent). */
  runs: CbnetRun[];
  totalMs: number;
  /** totalMs − Σ run ms. */
  overheadMs: number;
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Run `order` on `image` (dim 0 = samples). `policy` has one threshold per exit point but the
 * last; with thresholds null nobody can leave early, so the exit points before the last are not
 * even run (hybrid with null thresholds costs exactly what cbnet does, or, with a backbone, what
 * the backbone alone does).
 */
export async function runCbnetBatch(models: CbnetModels, order: readonly CbnetExitPoint[], image: PlainTensor, policy: ResolvedExitPolicy): Promise<CbnetBatchResult> {
  const n = image.dims[0] ?? 0;
  const samples = new Array<CbnetSample>(n);
  const runs: CbnetRun[] = [];
  const last = order.length - 1;
  // The clock costs ~0.25 µs a read on the 2-vCPU VM: read it around runs only; the batch starts
  // with its first run and a sample's latency ends with the run that decided it. Runs are timed
  // inline rather than through a helper: each extra async hop is ~1 µs that lands outside the
  // runs, i.e. in the cascade's overhead, at batch 1 (where a run is ~40 µs).
  let t0 = -1;
  let lastEnd: number;
  let active: number[] = new Array<number>(n);
  for (let i = 0; i < n; i++) active[i] = i;
  let img = image;
  let converted: PlainTensor | undefined;
  /** Tensors backbone stages handed on, rows as in `active`. */
  let carried: Record<string, PlainTensor> = {};
  let probs = new Float64Array(0);

  for (let k = 0; k <= last && active.length > 0; k++) {
    const point = order[k]!;
    const threshold = k === last || policy.thresholds === null ? undefined : policy.thresholds[k]!;
    const backbone = isBackbonePoint(point);
    // Nobody may leave here: skip the point, unless it is a backbone stage a later one reads from.
    const passThrough = k !== last && threshold === undefined;
    if (passThrough && !backbone) continue;
    const m = active.length;
    let logits: PlainTensor;
    if (backbone) {
      const exit = point.slice('backbone:'.length);
      const stage = models.backbone?.stages.get(exit);
      if (!stage || !models.backbone) throw new UnsupportedError(`exit point '${point}': the bundle has no backbone stage with exit '${exit}'`);
      const feeds: Record<string, PlainTensor> = {};
      for (const name of stage.inputs) {
        const t = name === models.backbone.inputName ? img : carried[name];
        if (!t) throw new UnsupportedError(`backbone stage '${exit}' reads '${name}', which no earlier backbone stage handed on (run the backbone points in order)`);
        feeds[name] = t;
      }
      const fetch = [stage.exit, ...stage.carry.filter((c) => c !== models.backbone!.inputName && c !== stage.exit)];
      const s0 = performance.now();
      if (t0 < 0) t0 = s0;
      const out = await stage.run(feeds, fetch);
      lastEnd = performance.now();
      runs.push({ name: point, ms: lastEnd - s0, rows: m });
      logits = out[stage.exit]!;
      const next: Record<string, PlainTensor> = {};
      for (const c of stage.carry) if (c !== models.backbone.inputName) next[c] = out[c] ?? carried[c]!;
      carried = next;
    } else {
      let x = img;
      if (point === 'classifier<-converter') {
        if (!converted) {
          const s0 = performance.now();
          if (t0 < 0) t0 = s0;
          converted = await models.convert(img);
          lastEnd = performance.now();
          runs.push({ name: 'converter', ms: lastEnd - s0, rows: m });
          if (!sameDims(converted.dims, img.dims)) {
            throw new UnsupportedError(`converter output has dims [${converted.dims.join(',')}]; the classifier reads it in place of the image, so it must have the image's dims [${img.dims.join(',')}]`);
          }
        }
        x = converted;
      }
      const s0 = performance.now();
      if (t0 < 0) t0 = s0;
      logits = await models.classify(x);
      lastEnd = performance.now();
      runs.push({ name: point, ms: lastEnd - s0, rows: m });
    }
    if (logits.dims.length !== 2 || logits.dims[0] !== m) {
      throw new UnsupportedError(`classifier (${point}): logits have dims [${logits.dims.join(',')}], expected [${m}, classes]`);
    }
    // A backbone stage run only for what it hands on: nobody is scored here.
    if (passThrough) continue;

    const c = logits.dims[1]!;
    if (probs.length !== c) probs = new Float64Array(c);
    const temperature = policy.temperatures[k]!;
    const data = logits.data as ArrayLike<number>;
    const latencyMs = lastEnd - t0;
    // Shared by every sample leaving here in this batch (same runs); read-only for consumers.
    const stageLatencyMs = runs.map((r) => r.ms);
    const names = runs.map((r) => r.name);
    const keep: number[] = [];
    for (let r = 0; r < m; r++) {
      const score = scoreRow(policy.policy, data, r * c, c, temperature, probs);
      if (threshold === undefined || clears(policy.policy, score, threshold)) {
        samples[active[r]!] = { classIndex: scored.classIndex, confidence: scored.confidence, score, exit: k, stageLatencyMs, runs: names, latencyMs };
      } else keep.push(r);
    }
    if (keep.length === 0 || k === last) break;
    if (keep.length !== m) {
      img = sliceRows(img, keep, m, 'image');
      if (converted) converted = sliceRows(converted, keep, m, 'converted');
      for (const [name, t] of Object.entries(carried)) carried[name] = sliceRows(t, keep, m, name);
      active = keep.map((r) => active[r]!);
    }
  }

  const totalMs = t0 < 0 ? 0 : performance.now() - t0;
  const sum = runs.reduce((a, r) => a + r.ms, 0);
  return { samples, runs, totalMs, overheadMs: Math.max(0, totalMs - sum) };
}
