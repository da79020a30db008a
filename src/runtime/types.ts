// What the bundle runner takes and gives: classify options, predictions, results, and the
// BundleRunner itself. A leaf module, so the family runners (families/) and the runner that
// builds them (bundle-runner.ts, which re-exports all of this) share these types without a cycle.
//
// Exit numbering of cbnet bundles: `exit` indexes the run order of the policy used, and
// `exitName` names the exit point. Policy hybrid: exit 0 = 'classifier<-image' (the classifier
// on the raw image), exit 1 = 'classifier<-converter' (converter, then classifier). Policy cbnet:
// exit 0 = 'classifier<-converter' (its only exit point). Thresholds and temperatures count the
// exit points of the policy used (hybrid: 1 threshold, 2 temperatures; cbnet: none, 1).
import type { VerifyResult } from '../bundle/files.js';
import type { Manifest } from '../bundle/manifest.js';
import type { ImageInput, TensorData } from '../backends/image.js';
import type { EdgeExitError } from '../util/errors.js';
import type { CbnetPolicy, CbnetRun, CbnetRunName } from './cbnet-cascade.js';
import type { ExitMetric } from './exit-policy.js';

export interface ClassifyOptions {
  /**
   * cbnet bundles only: 'cbnet' (converter → classifier for every sample) or 'hybrid' (the
   * classifier on the raw image first, the converter only for the samples it is not confident
   * about). Default: the manifest's pipeline.default. Refused for multi-exit bundles.
   */
  policy?: CbnetPolicy;
  /** One per exit (cbnet: exit point of the policy) but the last; null = run to the last exit. Default: the manifest's (cbnet policy: none). */
  thresholds?: readonly number[] | null;
  /** Default: the manifest's. Thresholds must be given when it differs from the manifest's. */
  metric?: ExitMetric;
  /** Softmax temperature per exit (point). Default: the manifest's (cbnet policy: the manifest's for classifier<-converter). */
  temperatures?: readonly number[];
  /** Samples per cascade run (default DEFAULT_BATCH_SIZE). */
  batchSize?: number;
}

export interface Prediction {
  ok: true;
  /** Position in the inputs. */
  index: number;
  /** The file path, the input's name, or `image #i` / `row #i`. */
  name: string;
  label: string;
  classIndex: number;
  /** Softmax probability (temperature-scaled) of the predicted class at the exit taken. */
  confidence: number;
  /** The metric's score at the exit taken (see exit-policy.ts for its direction). */
  score: number;
  /** Exit index in the run order (cbnet bundles: see the top of this file). */
  exit: number;
  /** Multi-exit: the stage's exit tensor; cbnet: the exit point ('classifier<-image' | 'classifier<-converter'). */
  exitName: string;
  /**
   * Run time of each stage the sample went through; with batches, the batch's run of that stage.
   * Empty when a call with thresholds null ran the stages joined into one session (loadBundle's
   * `chain`): there is then no time per stage, only latencyMs.
   */
  stageLatencyMs: number[];
  /** cbnet only: what each stageLatencyMs entry ran ('classifier<-image', 'converter', 'classifier<-converter'). */
  runs?: CbnetRunName[];
  /** Cascade time until this sample's exit decided (decoding excluded). */
  latencyMs: number;
}

export interface FailedInput {
  ok: false;
  index: number;
  name: string;
  error: EdgeExitError;
}

export type ClassifyItem = Prediction | FailedInput;

export interface ClassifyResult {
  /** One per input, in input order. */
  items: ClassifyItem[];
  metric: ExitMetric;
  thresholds: number[] | null;
  temperatures: number[];
  /** Name of each exit, in run order (multi-exit: stage exits; cbnet: the policy's exit points). */
  exitNames: string[];
  /** cbnet only: the run order used. */
  policy?: CbnetPolicy;
  /** Samples per exit. */
  exitCounts: number[];
  timing: {
    /** Decoding and normalising images. */
    preprocessMs: number;
    /** Σ over batches of the whole cascade. */
    cascadeMs: number;
    /** Σ over batches of each stage's run time (by manifest stage; cbnet: both classifier runs count for its stage). */
    stageMs: number[];
    /** cbnet only: Σ over batches per run kind, with the rows each ran on (the converter's rows are what the hybrid saved). */
    runs?: CbnetRun[];
    /** cascadeMs − Σ stageMs: what the cascade itself costs (scoring, slicing, bookkeeping). */
    overheadMs: number;
    batches: number;
  };
}

/** A verified bundle, open for inference (see loadBundle). Close it to free its sessions. */
export interface BundleRunner {
  /** The path loadBundle was given. */
  readonly source: string;
  readonly manifest: Manifest;
  readonly signature: VerifyResult['signature'];
  /** The device profile used, or null when none applied. */
  readonly device: string | null;
  /** Providers the sessions actually use (after fallback). */
  readonly executionProviders: readonly string[];
  readonly threads: number | undefined;
  /**
   * Classify images (paths, encoded bytes, or raw frames) or an NCHW float tensor already
   * normalised as the manifest says. An image that cannot be decoded gives a FailedInput in its
   * place; the others still run. Batches of `batchSize` go through the cascade (or the CBNet run
   * order) together.
   *
   * @example
   * ```ts
   * import { loadBundle } from 'edgeexit/runtime';
   *
   * const runner = await loadBundle('bundles/fmnist-branchy');
   * const { items, exitCounts } = await runner.classify(['shirt.png', 'boot.png']);
   * for (const it of items) console.log(it.ok ? `${it.name}: ${it.label} at ${it.exitName}` : `${it.name}: ${it.error.message}`);
   * console.log('samples per exit', exitCounts);
   * await runner.close();
   * ```
   */
  classify(inputs: readonly ImageInput[] | TensorData, options?: ClassifyOptions): Promise<ClassifyResult>;
  /** Release every stage's session. */
  close(): Promise<void>;
}

