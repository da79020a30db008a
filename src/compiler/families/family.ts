// The model-family interface: what a family (multi-exit, CBNet, …) decides, and nothing else. A
// family reads and checks its source files and plans the stages: what is split out of which
// model, which exits there are, how the stages chain and what each is checked against. The
// shared pipeline (../pipeline.ts) does the rest the same way for every family: the fp32 check,
// fp16, int8 within the accuracy budget with the mixed-precision fallback, the labelled-image
// verification, latency, the report and the bundle writer.
import type { KeyObject } from 'node:crypto';
import type { OnnxModel } from '../../onnx/index.js';
import type { DeviceProfile } from '../../devices/index.js';
import type { PreprocessSpec } from '../../backends/image.js';
import type { PlainTensor } from '../../backends/onnxruntime.js';
import type { CbnetPipeline, Manifest } from '../../bundle/manifest.js';
import type { CalibrationData, CalibrationOptions, QuantVerifier, StageRanges } from '../quantize/index.js';
import type { PrepareReport } from '../prepare.js';
import type { CompileOptions, CompileReport, ImageVerification, Precision } from '../options.js';
import type { StageShape } from '../options.js';

/** What every step of one compile knows: the options, the device profile and the precision it resolved to. */
export interface CompileEnv {
  opts: CompileOptions;
  device: DeviceProfile;
  precision: Precision;
  /** The signing key, loaded before any model is (a bad key costs nothing). */
  key?: KeyObject;
}

/** One stage of a plan: its float model, the file it becomes, and how it chains (see StagePlan). */
export interface PlannedStage extends StageShape {
  model: OnnxModel;
  file: string;
}

/** Stages checked together, as one chain, against the source model they were cut from. */
export interface CheckGroup {
  /** The source as onnxruntime reads it (external data inlined). */
  source: Uint8Array;
  inputName: string;
  /** Indices into the plan's stages, in chain order. */
  stages: number[];
}

/** Labelled images a compile loads: for int8 always, at fp32/fp16 when the family verifies there too. */
export interface ImagePlan {
  dir: string;
  limit?: number;
  /** A model exported with a fixed batch size reads batches of exactly that size. */
  fixedBatch?: number;
}

/** Stages planned from one model (or pair of models), ready for the shared pipeline. */
export interface StagesPlan {
  /** What messages name: the model file or folder. */
  where: string;
  /** What the stages must reproduce, in messages ('the model', 'the source files'). */
  sourceNoun: string;
  input: { name: string; shape: (number | string)[]; fixedBatch?: number };
  preprocess: PreprocessSpec;
  labels: string[];
  stages: PlannedStage[];
  checks: CheckGroup[];
  images?: ImagePlan;
  /** Whether int8 quantises a stage's inputs with the parameters the stage before gave them (a chain: yes). */
  carryParams: boolean;
  /**
   * int8 activation ranges per stage (default: the stages calibrated as one chain on the images).
   * Returns the images counted for the report, and notes on how.
   */
  calibrate?(data: CalibrationData, opts: CalibrationOptions, floatBytes: readonly Uint8Array[]): Promise<{ ranges: StageRanges[]; images: number; notes: string[] }>;
  /** int8: what the calibration progress line adds about what runs on which images. */
  calibrationDetail?(data: CalibrationData): string;
  /** What int8 and the labelled-image check are measured on (default: each exit of the chain). */
  verifier?(data: CalibrationData): QuantVerifier;
  /** Report notes (warnings) the family draws from the labelled-image verification. */
  verifyNotes?(verify: VerifyResult, precision: Precision): string[];
  /** Feeds per stage for the latency table, and the batch they hold. */
  latencyFeeds(floatBytes: readonly Uint8Array[]): Promise<{ batch: number; feeds: Record<string, PlainTensor>[] }>;
  /** Notes known from planning, first in the report. */
  notes: string[];
  /** Notes that close the report's list (what is left to do). */
  closingNotes: string[];
  prepare: PrepareReport;
}

/** Stages compiled from another model and appended to the bundle (CBNet --backbone). */
export interface Extension {
  plan: FamilyPlan;
  /** The options it is compiled with (same device and precision). */
  opts: CompileOptions;
  /** Index of its first stage that joins the bundle; those before only serve its own checks. */
  from: number;
  /** Report notes about the extension, given its own notes. */
  notes(own: readonly string[]): string[];
  /** The name an exit of its verification takes in the bundle's (e.g. `backbone:exit_1`). */
  exitName(exit: string): string;
}

/** Everything a family plans: the stages, what the bundle says about them, and any extension. */
export interface FamilyPlan extends StagesPlan {
  kind: Manifest['kind'];
  report: {
    model: CompileReport['model'];
    inputFrom: CompileReport['inputFrom'];
    /** How the graph was split: `renamed` and `recompute`, in the family's report order. */
    split: Pick<CompileReport, 'renamed' | 'recompute'>;
    sourceMacs: number;
  };
  /** The manifest's provenance source: file name and hash. */
  source: { file: string; sha256: string };
  name: string;
  version: string;
  extension?: Extension;
  /** Exit points of the (uncalibrated) exit policy (one temperature each), given the final stage count and pipeline. */
  exitPoints(stages: number, pipeline: CbnetPipeline | undefined): number;
  /** The manifest's pipeline (kind cbnet), given the compiled stage indices of the extension. */
  pipeline?(extension: readonly { index: number; exit: string }[]): CbnetPipeline;
  /** A family section of report.json (after latency), given the pipeline and the verification. */
  section?(pipeline: CbnetPipeline | undefined, verify: VerifyResult | undefined): Pick<CompileReport, 'cbnet'>;
}

/** The labelled-image verification of compiled vs float outputs. */
export type VerifyResult = ImageVerification;

/**
 * A model family: recognises its models and plans their stages.
 *
 * @example
 * const family = await familyOf(opts.model); // the first of FAMILIES whose matches() accepts it
 * const result = await compilePlan(await family.plan(env), env);
 */
export interface ModelFamily {
  name: string;
  /** Whether `model` (a path) is this family's. */
  matches(model: string): Promise<boolean>;
  /** Read and check the sources, and plan the stages; fails before anything heavy runs. */
  plan(env: CompileEnv): Promise<FamilyPlan>;
}
