// What a compile is asked for (CompileOptions) and what it reports (CompileReport), shared by
// every model family and the pipeline, plus the checks of the options that need no file.
import path from 'node:path';
import { InputError, UnsupportedError } from '../util/errors.js';
import type { DeviceProfile } from '../devices/index.js';
import { CALIBRATION_METHODS, type CalibrationMethod, type ExitVerification, type KeptFloat } from './quantize/index.js';
import { CheckFailedError, type CheckResult } from './check.js';
import type { CbnetPipeline, Manifest } from '../bundle/manifest.js';
import type { PrepareReport } from './prepare.js';
import type { WriteBundleOptions } from '../bundle/files.js';
import type { LatencyReport } from './latency.js';

export const PRECISIONS = ['fp32', 'fp16', 'int8'] as const;
export type Precision = (typeof PRECISIONS)[number];
/** Precisions this version can compile; fp16 falls back to fp32 until src/compiler/fp16.ts lands. */
export const SUPPORTED_PRECISIONS: readonly Precision[] = ['fp32', 'fp16', 'int8'];
/** Max |logit diff| an fp16 stage may show against the float model (measured ~1.6e-2 on fmnist-branchy, logits up to ~33). */
export const FP16_TOLERANCE = 0.1;
/** Images of the calibration folder verified at fp32/fp16 when --calibration-limit is not given (int8 uses all). */
export const DEFAULT_VERIFY_LIMIT = 256;
/** Calibration images used when the model's labels are Fashion-MNIST's and no --calibration is given. */
export const DEFAULT_CALIBRATION = path.join('calibration', 'fashion-mnist');
/** Default calibration method: percentile measured best on the zoo model (see the quantiser report). */
export const DEFAULT_CALIBRATION_METHOD: CalibrationMethod = 'percentile';
/** Default allowed top-1 loss per exit, percentage points. */
export const DEFAULT_MAX_ACCURACY_DROP = 1;

/**
 * An int8 compile lost more accuracy than allowed on some exit.
 *
 * @example
 * ```ts
 * import { AccuracyDropError, compileModel } from 'edgeexit/compiler';
 * try {
 *   await compileModel({ model: 'm.onnx', device: 'rpi4', out: 'b', precision: 'int8', maxAccuracyDrop: 0.5 });
 * } catch (err) {
 *   if (!(err instanceof AccuracyDropError)) throw err;
 *   await compileModel({ model: 'm.onnx', device: 'rpi4', out: 'b', precision: 'fp32' }); // fall back to float
 * }
 * ```
 */
export class AccuracyDropError extends CheckFailedError {}

export interface CompileOptions {
  model: string;
  /** Device profile id or path. */
  device: string;
  out: string;
  /** Numeric precision; 'device' takes the device profile's default (what the CLI does). Default fp32. */
  precision?: Precision | 'device';
  /** Exit names in stage order (default: the graph outputs). */
  exits?: readonly string[];
  /** Preprocess spec as JSON text or a path to a JSON file; overrides the model's metadata. */
  preprocess?: string;
  /** Labels file: a JSON array or one label per line; overrides the model's metadata. */
  labels?: string;
  /** Private key (PEM) to sign the manifest with. */
  key?: string;
  /**
   * ImageFolder to run the numeric check on, besides random inputs; for int8 also the images
   * activations are calibrated and accuracy verified on (default calibration/fashion-mnist when
   * the model's labels are Fashion-MNIST's).
   */
  calibration?: string;
  /** Images of `calibration` used (fp32 check: default 256; int8: default all), spread over the classes. */
  calibrationLimit?: number;
  /** int8: how activation ranges are calibrated (default percentile). */
  calibrationMethod?: CalibrationMethod;
  /** int8: largest allowed top-1 loss per exit in percentage points (default 1). */
  maxAccuracyDrop?: number;
  /** int8: keep the most sensitive nodes float until within maxAccuracyDrop (default true). */
  mixedPrecision?: boolean;
  /**
   * CBNet folders only: the multi-exit model the light classifier is the first exit of. Its deeper
   * stages join the bundle, and the hybrid falls through to them after the converter.
   */
  backbone?: string;
  /**
   * Stages that hand nothing on, so the next stage recomputes their trunk from the image:
   * 'auto' (default) picks stages whose trunk has ≤ 5 % of the MACs (see chooseRecompute), 'none' never,
   * or explicit stage indices.
   */
  recompute?: 'auto' | 'none' | readonly number[];
  /** Time each stage float vs compiled at batch 1 on this machine and report it (default true). */
  latency?: boolean;
  /** Timed runs per stage and version when `latency` is on (default 200; tests use fewer). */
  latencyRuns?: number;
  /** Progress lines of long steps (calibration, mixed precision). */
  onProgress?: (line: string) => void;
  /** Largest accepted |compiled − source| on any exit (default 1e-5 at fp32). */
  tolerance?: number;
  /** Recorded in the manifest's provenance (default: rebuilt from the options). */
  command?: string;
  /** Creation time (default now); tests pin it. */
  now?: Date;
  /** Test seam, see writeBundleAtomic. */
  write?: WriteBundleOptions;
}

/** What a stage report is made of besides its compiled bytes. */
export interface StageShape {
  exit: string;
  inputs: string[];
  outputs: string[];
  carry: string[];
  nodes: number;
  macs: number;
}

export interface StageReport extends StageShape {
  index: number;
  file: string;
  /** MACs of this stage and all before it: what a sample leaving here cost. */
  cumulativeMacs: number;
  bytes: number;
  /** Size of the float stage (equals bytes at fp32). */
  floatBytes: number;
  sha256: string;
}

/** What int8 quantisation did; in report.json. */
export interface QuantizationReport {
  scheme: string;
  calibration: { source: string; method: CalibrationMethod; images: number; skipped: number };
  maxAccuracyDropPp: number;
  /** Per exit on the calibration images: float vs compiled top-1, agreement, max logit error. */
  verify: ExitVerification[];
  keptFloat: KeptFloat[];
  /** Per stage: nodes quantised, pass-through nodes in int8, nodes left float. */
  stages: { quantized: number; passThrough: number; float: { node: string; op: string; reason: string }[]; biasAdjusted: string[] }[];
  warnings: string[];
  evaluations: number;
}

export interface CompileReport {
  model: { file: string; name: string; version: string; sha256: string };
  device: { id: string; name: string; defaultPrecision: string };
  precision: Precision;
  inputFrom: { preprocess: string; labels: string };
  prepare: PrepareReport;
  /** Carried tensors renamed to stable names: new → source name. */
  renamed: Record<string, string>;
  sourceMacs: number;
  stages: StageReport[];
  check: CheckResult;
  quantization?: QuantizationReport;
  /** fp16 conversion: what was converted, kept float32, clamped, and the check of the fp16 stages. */
  fp16?: Fp16Report;
  /** Per-stage median latency float vs compiled on the compiling machine (absent with --no-latency). */
  latency?: LatencyReport;
  /** kind cbnet only: the two paths verified float vs compiled, and the pipeline. */
  cbnet?: CbnetReport;
  /** Stages that hand nothing on (the next recomputes their trunk); see CompileOptions.recompute. */
  recompute: number[];
  notes: string[];
}

export interface CompileResult {
  out: string;
  manifest: Manifest;
  report: CompileReport;
  signed: { keyId: string } | null;
  /** Whether an existing bundle at `out` was replaced. */
  replaced: boolean;
}

/** The CBNet section of report.json: the source files, the pipeline and the per-path verification. */
export interface CbnetReport {
  sources: { role: 'converter' | 'classifier' | 'backbone'; file: string; sha256: string; macs: number }[];
  pipeline: CbnetPipeline;
  /**
   * Float vs compiled on the calibration images, per exit point: the two paths, then (with
   * --backbone) each backbone exit as `backbone:<exit>` (absent when no labelled images were at hand).
   */
  verify?: ImageVerification;
}

/** Compiled vs float top-1 per exit on labelled images: what int8 and fp16 are held to. */
export interface ImageVerification {
  source: string;
  images: number;
  maxAccuracyDropPp: number;
  paths: ExitVerification[];
}

/** fp16 conversion in report.json: what was converted, kept float32, clamped, and the check of the fp16 stages. */
export interface Fp16Report {
  check: CheckResult;
  converted: number;
  keptFloat32: { node: string; op: string; reason: string }[];
  clamped: number;
  /** Per exit: fp32 vs fp16 top-1 on the calibration images, as int8 reports it (absent without labelled images). */
  verify?: ImageVerification;
}

/** Reject options no family can compile, before any file is read. */
export function validateOptions(opts: CompileOptions): void {
  if (opts.precision !== undefined && opts.precision !== 'device' && !PRECISIONS.includes(opts.precision)) {
    throw new InputError(`--precision ${String(opts.precision)}: unknown; expected one of ${PRECISIONS.join(', ')}`);
  }
  if (opts.calibrationMethod !== undefined && !CALIBRATION_METHODS.includes(opts.calibrationMethod)) {
    throw new InputError(`--calibration-method ${String(opts.calibrationMethod)}: unknown; expected one of ${CALIBRATION_METHODS.join(', ')}`);
  }
  if (opts.maxAccuracyDrop !== undefined && !(opts.maxAccuracyDrop >= 0 && opts.maxAccuracyDrop <= 100)) {
    throw new InputError(`--max-accuracy-drop ${opts.maxAccuracyDrop}: expected percentage points between 0 and 100`);
  }
}

/** The precision to compile: the option, 'device' meaning the profile's default; fails for one this version cannot compile. */
export function resolvePrecision(opts: Pick<CompileOptions, 'precision'>, device: DeviceProfile): Precision {
  const precision: Precision = opts.precision === 'device' ? (device.precision.default as Precision) : (opts.precision ?? 'fp32');
  if (!SUPPORTED_PRECISIONS.includes(precision)) {
    throw new UnsupportedError(`--precision ${precision}: not available yet; this version compiles ${SUPPORTED_PRECISIONS.join(', ')} only`);
  }
  return precision;
}
