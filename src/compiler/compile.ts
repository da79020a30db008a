// `compile`: float ONNX model + device profile → bundle. Reads the model once, works out exits,
// preprocessing and labels, prepares and splits the graph, checks the stages against the source
// with onnxruntime, quantises them to int8 for the device's scheme when asked (calibrated on an
// ImageFolder, verified per exit against the float stages, sensitive nodes kept float), and
// writes the bundle (stages, report.json, manifest.json, manifest.sig) atomically. Everything that
// can be wrong with the inputs is checked before any file is written, and a compile that fails
// later (numeric check, accuracy budget) writes nothing either, so it leaves nothing behind.
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { InputError, UnsupportedError, ValidationError, type Problem } from '../util/errors.js';
import { OnnxGraph, costPerOutput, decodeModel, encodeModel, inferShapes, valueInfoShape, type OnnxModel } from '../onnx/index.js';
import { DataType } from '../onnx/dtype.js';
import { loadDeviceProfile, packageRoot, type DeviceProfile } from '../devices/index.js';
import { folderNameForLabel, foldersCoverLabels } from '../data/imagefolder.js';
import {
  CALIBRATION_METHODS,
  calibrateStages,
  loadCalibrationImages,
  quantizeWithBudget,
  resolveScheme,
  type CalibrationMethod,
  type ExitVerification,
  type KeptFloat,
} from './quantize/index.js';
import { META_LABELS, META_PREPROCESS, parseLabels } from '../model/describe.js';
import { parsePreprocessSpec, type PreprocessSpec } from '../backends/image.js';
import { edgeexitVersion } from '../bundle/version.js';
import { checkBundleTarget, sha256Hex, writeBundleAtomic, type WriteBundleOptions } from '../bundle/files.js';
import { CheckFailedError, checkStages, type CheckResult } from './check.js';
import { MANIFEST_FILE, MANIFEST_FORMAT_VERSION, REPORT_FILE, SIGNATURE_FILE, encodeManifest, validateManifest, type CbnetPipeline, type Manifest } from '../bundle/manifest.js';
import { prepareModel, type PrepareReport } from './prepare.js';
import { keyId, loadPrivateKey, signManifest } from '../bundle/signing.js';
import { chooseRecompute, resolveExits, splitModel } from './split.js';
import { convertToFp16 } from './fp16.js';
import { measureStageLatency, type LatencyReport } from './latency.js';
import { compileCbnet, isCbnetFolder, type CbnetReport } from './cbnet.js';
import { randomImages } from './check.js';
import { contractNotes } from './contract.js';
import { createSession, type PlainTensor } from '../backends/onnxruntime.js';

export const PRECISIONS = ['fp32', 'fp16', 'int8'] as const;
export type Precision = (typeof PRECISIONS)[number];
/** Precisions this version can compile; fp16 falls back to fp32 until src/compiler/fp16.ts lands. */
export const SUPPORTED_PRECISIONS: readonly Precision[] = ['fp32', 'fp16', 'int8'];
/** Max |logit diff| an fp16 stage may show against the float model (measured ~1.6e-2 on fmnist-branchy, logits up to ~33). */
export const FP16_TOLERANCE = 0.1;
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
   * 'auto' (default) picks stages with ≤ 5 % of the MACs (see chooseRecompute), 'none' never,
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

export interface StageReport {
  index: number;
  file: string;
  exit: string;
  inputs: string[];
  outputs: string[];
  carry: string[];
  nodes: number;
  macs: number;
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
  fp16?: { check: CheckResult; converted: number; keptFloat32: { node: string; op: string; reason: string }[]; clamped: number };
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


// ---- inputs ----

export async function readSourceModel(file: string): Promise<{ model: OnnxModel; bytes: Uint8Array }> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await fsp.readFile(file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, not a file' : `cannot be read (${code ?? String(err)})`;
    throw new InputError(`${file}: ${why}; expected an ONNX model file (.onnx)`, [{ where: file, message: why }], { cause: err });
  }
  // One read serves the hash, the graph and the reference session, even if the file is rewritten meanwhile.
  const model = decodeModel(bytes, { source: file, baseDir: path.dirname(path.resolve(file)) });
  return { model, bytes };
}

async function readArgFile(file: string, flag: string): Promise<string> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputError(`${flag} ${file}: ${code === 'ENOENT' ? 'no such file' : `cannot be read (${code})`}`, [{ where: flag, message: `cannot read ${file}` }], { cause: err });
  }
}

/** A --preprocess example fitted to the model's input (channels and size), for error messages. */
function preprocessExample(model: OnnxModel): string {
  const v = OnnxGraph.of(model).inputs[0];
  const dims = v ? (valueInfoShape(v)?.shape ?? []) : [];
  const rgb = dims[1] === 3;
  const [h, w] = dims.length === 4 ? [dims[2], dims[3]] : [224, 224];
  const mean = rgb ? '[0.485,0.456,0.406]' : '[0.5]';
  const std = rgb ? '[0.229,0.224,0.225]' : '[0.5]';
  return `'{"colorspace":"${rgb ? 'rgb' : 'gray'}","size":[${h},${w}],"scale":0.00392156862745098,"mean":${mean},"std":${std}}'`;
}

export async function resolvePreprocess(model: OnnxModel, file: string, flag: string | undefined): Promise<{ spec: PreprocessSpec; from: string } | Problem> {
  if (flag !== undefined) {
    const inline = flag.trimStart().startsWith('{');
    const text = inline ? flag : await readArgFile(flag, '--preprocess');
    return { spec: parsePreprocessSpec(text, inline ? '--preprocess' : `--preprocess ${flag}`), from: inline ? '--preprocess' : flag };
  }
  const meta = model.getMetadata(META_PREPROCESS);
  if (meta !== undefined) return { spec: parsePreprocessSpec(meta, `${file}: metadata_props ${META_PREPROCESS}`), from: `metadata ${META_PREPROCESS}` };
  return {
    where: file,
    message: `has no ${META_PREPROCESS} metadata, so the input preprocessing is unknown`,
    fix: `add --preprocess ${preprocessExample(model)} with your model's values (JSON text or a JSON file)`,
  };
}

/**
 * Labels from a file: a JSON array, or one label per line.
 *
 * @example
 * ```ts
 * import { parseLabelsText } from 'edgeexit/compiler';
 * parseLabelsText('cat\ndog\n', 'labels.txt'); // ['cat', 'dog']
 * parseLabelsText('["cat","dog"]', 'labels.json'); // the same
 * ```
 */
export function parseLabelsText(text: string, where: string): string[] {
  const t = text.trim();
  let labels: unknown;
  if (t.startsWith('[')) {
    try {
      labels = JSON.parse(t);
    } catch (err) {
      throw new ValidationError(where, [{ where, expected: 'a JSON array of class names, or one class name per line', message: (err as Error).message }]);
    }
  } else {
    labels = t.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  }
  if (!Array.isArray(labels) || labels.length === 0 || !labels.every((l) => typeof l === 'string' && l.length > 0)) {
    throw new ValidationError(where, [{ where, expected: 'a non-empty list of class names (JSON array, or one per line)', got: t.slice(0, 60) || 'an empty file' }]);
  }
  const dup = labels.find((l, i) => labels.indexOf(l) !== i);
  if (dup !== undefined) throw new ValidationError(where, [{ where, message: `label ${JSON.stringify(dup)} appears twice`, expected: 'distinct class names' }]);
  return labels as string[];
}

export async function resolveLabels(model: OnnxModel, file: string, flag: string | undefined): Promise<{ labels: string[]; from: string } | Problem> {
  if (flag !== undefined) return { labels: parseLabelsText(await readArgFile(flag, '--labels'), `--labels ${flag}`), from: flag };
  const meta = model.getMetadata(META_LABELS);
  if (meta !== undefined) return { labels: parseLabels(meta, file), from: `metadata ${META_LABELS}` };
  return { where: file, message: `has no ${META_LABELS} metadata, so the class names are unknown`, fix: 'add --labels <file> (a JSON array, or one class name per line)' };
}

export function isProblem<T extends object>(v: T | Problem): v is Problem {
  return 'where' in v && !('spec' in v) && !('labels' in v);
}

/** The one image input: float32 NCHW whose C, H, W agree with the preprocessing. */
export function checkInput(model: OnnxModel, file: string, spec: PreprocessSpec): { name: string; shape: (number | string)[]; fixedBatch?: number } {
  const graph = OnnxGraph.of(model);
  if (graph.inputs.length !== 1) {
    throw new UnsupportedError(
      `${file}: has ${graph.inputs.length} inputs (${graph.inputNames.map((n) => `'${n}'`).join(', ') || 'none'}); expected exactly one image input`,
    );
  }
  const v = graph.inputs[0]!;
  const tt = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
  const shape = (tt?.shape?.dim ?? []).map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : d.value.case === 'dimParam' && d.value.value ? d.value.value : 'batch'));
  if (tt?.elemType !== DataType.FLOAT) {
    throw new UnsupportedError(`${file}: input '${v.name}' is not float32; expected a float32 NCHW image tensor`);
  }
  const channels = spec.colorspace === 'rgb' ? 3 : 1;
  const want = [channels, spec.size[0], spec.size[1]];
  const got = shape.slice(1);
  if (shape.length !== 4 || got.some((d, i) => typeof d === 'number' && d !== want[i])) {
    throw new InputError(`${file}: input '${v.name}' has dims [${shape.join(',')}], but the preprocessing makes [batch,${want.join(',')}] (${spec.colorspace} ${spec.size[0]}×${spec.size[1]}); fix --preprocess or the model`, [
      { where: `input '${v.name}'`, expected: `[batch,${want.join(',')}]`, got: `[${shape.join(',')}]` },
    ]);
  }
  const batch = shape[0]!;
  return typeof batch === 'number' ? { name: v.name, shape: [batch, ...want], fixedBatch: batch } : { name: v.name, shape: [batch, ...want] };
}

export function checkExitWidths(model: OnnxModel, file: string, exits: readonly string[], labels: readonly string[], from: string): void {
  const shapes = inferShapes(model);
  const graph = OnnxGraph.of(model);
  const problems: Problem[] = [];
  for (const e of exits) {
    const s = shapes.tensors.get(e)?.shape ?? (graph.valueInfo(e) ? valueInfoShape(graph.valueInfo(e)!)?.shape : undefined);
    const width = s?.at(-1);
    if (s && (s.length !== 2 || width !== labels.length)) {
      problems.push({ where: `${file}: exit '${e}'`, expected: `logits of shape [batch, ${labels.length}] (one per label in ${from})`, got: `[${s.join(', ')}]` });
    }
  }
  if (problems.length > 0) throw new ValidationError(file, problems);
}

export function defaultCommand(o: CompileOptions): string {
  const parts = ['edgeexit', 'compile', o.model, '--device', o.device, '--out', o.out];
  if (o.precision && o.precision !== 'device') parts.push('--precision', o.precision);
  if (o.exits?.length) parts.push('--exits', o.exits.join(','));
  if (o.preprocess !== undefined) parts.push('--preprocess', o.preprocess);
  if (o.labels !== undefined) parts.push('--labels', o.labels);
  if (o.key) parts.push('--key', o.key);
  if (o.calibration) parts.push('--calibration', o.calibration);
  if (o.calibrationLimit) parts.push('--calibration-limit', String(o.calibrationLimit));
  if (o.calibrationMethod) parts.push('--calibration-method', o.calibrationMethod);
  if (o.maxAccuracyDrop !== undefined) parts.push('--max-accuracy-drop', String(o.maxAccuracyDrop));
  return parts.map((p) => (/^[\w@%+=:,./-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** A path as the manifest records it: relative to the edgeexit package when inside it, else the folder's name (no host paths). */
export function portablePath(p: string): string {
  const rel = path.relative(packageRoot(), path.resolve(p));
  return rel.startsWith('..') || path.isAbsolute(rel) ? path.basename(p) : rel.split(path.sep).join('/');
}

function stageFile(k: number): string {
  return `stage-${k}.onnx`;
}

// ---- the command ----

/** The ImageFolder for int8 calibration: the flag, else the bundled Fashion-MNIST set when its classes are the model's labels. */
export async function resolveCalibrationDir(flag: string | undefined, labels: readonly string[], file: string): Promise<string> {
  if (flag) return flag;
  const dir = path.join(packageRoot(), DEFAULT_CALIBRATION);
  try {
    const folders = (await fsp.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
    if (foldersCoverLabels(folders, labels)) return dir;
  } catch {
    // No bundled calibration set: fall through to the error below.
  }
  throw new InputError(`--precision int8 needs calibration images: ${file}'s labels are not those of ${DEFAULT_CALIBRATION}; pass --calibration <ImageFolder> with labelled images (one subfolder per label)`, [
    { where: '--calibration', message: 'required for int8', expected: `an ImageFolder with subfolders ${labels.slice(0, 4).map((l) => `'${folderNameForLabel(l)}'`).join(', ')}${labels.length > 4 ? ', …' : ''}` },
  ]);
}

/**
 * Compile a multi-exit float ONNX model into a bundle for a device: prepare, split at the exits,
 * quantise (int8 within `maxAccuracyDrop`, fp16, or fp32), check every exit against the source,
 * and write the stages, manifest and report atomically (signed when `key` is given).
 *
 * @example
 * ```ts
 * import { compileModel } from 'edgeexit/compiler';
 * const { out, manifest, report } = await compileModel({
 *   model: 'models/fmnist-branchy/fmnist-branchy.onnx', device: 'rpi4', precision: 'int8', out: 'bundles/branchy-rpi4',
 * });
 * console.log(manifest.stages.map((s) => s.file), report.stages.length);
 * ```
 */
export async function compileModel(opts: CompileOptions): Promise<CompileResult> {
  if (opts.precision !== undefined && opts.precision !== 'device' && !PRECISIONS.includes(opts.precision)) {
    throw new InputError(`--precision ${String(opts.precision)}: unknown; expected one of ${PRECISIONS.join(', ')}`);
  }
  if (opts.calibrationMethod !== undefined && !CALIBRATION_METHODS.includes(opts.calibrationMethod)) {
    throw new InputError(`--calibration-method ${String(opts.calibrationMethod)}: unknown; expected one of ${CALIBRATION_METHODS.join(', ')}`);
  }
  if (opts.maxAccuracyDrop !== undefined && !(opts.maxAccuracyDrop >= 0 && opts.maxAccuracyDrop <= 100)) {
    throw new InputError(`--max-accuracy-drop ${opts.maxAccuracyDrop}: expected percentage points between 0 and 100`);
  }
  if (await isCbnetFolder(opts.model)) return compileCbnet(opts);
  if (opts.backbone !== undefined) {
    throw new InputError(`--backbone: applies to a CBNet folder (converter.onnx + classifier.onnx); ${opts.model} is one model, whose own exits already run in stage order`);
  }
  // Cheap checks first, so a mistake costs no model loading and leaves nothing behind.
  await checkBundleTarget(opts.out);
  const device: DeviceProfile = await loadDeviceProfile(opts.device);
  const notes: string[] = [];
  const requested: Precision = opts.precision === 'device' ? (device.precision.default as Precision) : (opts.precision ?? 'fp32');
  let precision: Precision = requested;
  if (!SUPPORTED_PRECISIONS.includes(precision)) {
    throw new UnsupportedError(`--precision ${precision}: not available yet; this version compiles ${SUPPORTED_PRECISIONS.join(', ')} only`);
  }
  let key: KeyObject | undefined;
  if (opts.key) key = await loadPrivateKey(opts.key);

  const file = opts.model;
  const { model, bytes: sourceBytes } = await readSourceModel(file);
  const exits = resolveExits(model, opts.exits);
  const pre = await resolvePreprocess(model, file, opts.preprocess);
  const lab = await resolveLabels(model, file, opts.labels);
  const missing = [pre, lab].filter((x) => isProblem(x)) as Problem[];
  if (missing.length > 0) {
    throw new InputError(`${file}: the model does not describe its input, and no flag says it:\n` + missing.map((p) => `  - ${p.message} (fix: ${p.fix})`).join('\n'), missing);
  }
  const { spec: preprocess, from: preFrom } = pre as { spec: PreprocessSpec; from: string };
  const { labels, from: labFrom } = lab as { labels: string[]; from: string };
  const input = checkInput(model, file, preprocess);
  checkExitWidths(model, file, exits, labels, labFrom);

  const calibrationDir = precision === 'int8' ? await resolveCalibrationDir(opts.calibration, labels, file) : undefined;

  const { model: prepared, report: prepareReport } = prepareModel(model);
  const plain = splitModel(prepared, { exits });
  const recompute =
    opts.recompute === 'none' ? [] : opts.recompute === undefined || opts.recompute === 'auto' ? chooseRecompute(plain.stages.map((s) => s.macs)) : [...opts.recompute];
  const split = recompute.length > 0 ? splitModel(prepared, { exits, recompute }) : plain;
  if (recompute.length > 0) {
    const extra = split.stages.reduce((a, s) => a + s.macs, 0) - plain.stages.reduce((a, s) => a + s.macs, 0);
    notes.push(
      `stage(s) ${recompute.join(', ')} hand nothing on: the next stage recomputes their trunk from the input (+${extra.toLocaleString('en-US')} MACs for samples that go on), ` +
        `so a sample leaving there skips the hand-over copy${opts.recompute === undefined || opts.recompute === 'auto' ? ' (auto: stages with ≤ 5 % of the MACs; --recompute none to hand over instead)' : ''}`,
    );
  }
  const floatBytes = split.stages.map((s) => encodeModel(s.model));
  let stageBytes = floatBytes;

  // The check (and the fp16 re-check) runs the source as onnxruntime reads it: with its external data inlined.
  const checkSource = model.externalTensors.length > 0 ? encodeModel(model) : sourceBytes;
  notes.push(...(await contractNotes({ model, bytes: checkSource, file, exits, input, preprocess })));
  const check = await checkStages({
    source: checkSource,
    inputName: input.name,
    preprocess,
    stages: split.stages.map((s, k) => ({ bytes: stageBytes[k]!, inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry })),
    // int8 stages are held to an accuracy budget below; this check proves the float split exact.
    precision: 'fp32',
    ...(input.fixedBatch !== undefined ? { batchSizes: [input.fixedBatch] } : {}),
    ...(opts.tolerance !== undefined ? { tolerance: opts.tolerance } : {}),
    ...(opts.calibration && precision !== 'int8' ? { calibration: { dir: opts.calibration, labels, ...(opts.calibrationLimit ? { limit: opts.calibrationLimit } : {}) } } : {}),
  });
  if (!check.passed) {
    const bad = [...check.random.exits.map((e) => ({ ...e, on: 'random inputs' })), ...(check.calibration?.exits ?? []).map((e) => ({ ...e, on: 'calibration images' }))].filter(
      (e) => !(e.maxAbsDiff <= check.tolerance),
    );
    throw new CheckFailedError(
      `${file}: the compiled stages do not reproduce the model (${precision}, tolerance ${check.tolerance}):\n` +
        bad.map((e) => `  - stage ${e.stage} exit '${e.exit}' on ${e.on}: max |diff| ${e.maxAbsDiff.toExponential(2)}, top-1 agreement ${(e.top1Agreement * 100).toFixed(1)}%`).join('\n') +
        `\nno bundle was written; this is a compiler bug or an op the preparation does not handle — please report it with the model`,
    );
  }

  let quantization: QuantizationReport | undefined;
  if (precision === 'int8') {
    const schemeKey = device.precision.quantScheme;
    if (!schemeKey) throw new UnsupportedError(`${device.id}: the device profile names no precision.quantScheme, so int8 has no target scheme; add one (see \`edgeexit devices\`)`);
    const scheme = resolveScheme(schemeKey);
    const method = opts.calibrationMethod ?? DEFAULT_CALIBRATION_METHOD;
    const maxDrop = opts.maxAccuracyDrop ?? DEFAULT_MAX_ACCURACY_DROP;
    const progress = opts.onProgress ?? (() => {});
    progress(`calibrating on ${calibrationDir} (${method})`);
    const data = await loadCalibrationImages(calibrationDir!, preprocess, labels, {
      ...(opts.calibrationLimit ? { limit: opts.calibrationLimit } : {}),
      ...(input.fixedBatch !== undefined ? { batchSize: input.fixedBatch, exactBatch: true } : {}),
    });
    const cal = await calibrateStages(split.stages, input.name, data, { method, symmetric: scheme.activationSymmetric });
    const q = await quantizeWithBudget(split.stages, { scheme, ranges: cal.ranges, inputName: input.name, data, maxDropPp: maxDrop, mixed: opts.mixedPrecision ?? true, onProgress: progress });
    quantization = {
      scheme: scheme.key,
      calibration: { source: calibrationDir!, method, images: cal.images, skipped: data.skipped.length },
      maxAccuracyDropPp: maxDrop,
      verify: q.verify,
      keptFloat: q.keptFloat,
      stages: q.reports.map((r) => ({ quantized: r.quantized.length, passThrough: r.passThrough.length, float: r.float, biasAdjusted: r.biasAdjusted })),
      warnings: q.reports.flatMap((r) => r.warnings),
      evaluations: q.evaluations,
    };
    if (!q.withinBudget) {
      const bad = q.verify.filter((v) => v.dropPp > maxDrop);
      throw new AccuracyDropError(
        `${file}: int8 (${scheme.key}, ${method} calibration) loses more than ${maxDrop} pp top-1 on ${cal.images} images of ${calibrationDir}:\n` +
          bad.map((v) => `  - stage ${v.stage} exit '${v.exit}': float ${(v.floatTop1 * 100).toFixed(2)}% → int8 ${(v.compiledTop1 * 100).toFixed(2)}% (−${v.dropPp.toFixed(2)} pp)`).join('\n') +
          (q.keptFloat.length ? `\n  even with ${q.keptFloat.length} node(s) kept float (${q.keptFloat.map((k) => `'${k.node}'`).join(', ')})` : '') +
          `\nno bundle was written; allow more with --max-accuracy-drop, ${opts.mixedPrecision === false ? 'allow mixed precision, ' : ''}try --calibration-method minmax, or compile --precision fp32`,
        bad.map((v) => ({ where: `exit '${v.exit}'`, message: `loses ${v.dropPp.toFixed(2)} pp top-1`, expected: `at most ${maxDrop} pp` })),
      );
    }
    stageBytes = q.models.map((m) => encodeModel(m));
    notes.push(...quantization.warnings);
    for (const k of q.keptFloat) notes.push(`kept '${k.node}' (${k.op}, stage ${k.stage}) float: ${k.reason}`);
  }

  let fp16: { check: CheckResult; converted: number; keptFloat32: { node: string; op: string; reason: string }[]; clamped: number } | undefined;
  if (precision === 'fp16') {
    // Stage boundaries stay float32 (keepIoFloat32), so the runtime contract is the same as fp32;
    // the check is repeated on the fp16 stages with a tolerance suited to half precision.
    const conv = split.stages.map((s) => convertToFp16(s.model));
    stageBytes = conv.map((c) => encodeModel(c.model));
    const tolerance = opts.tolerance ?? FP16_TOLERANCE;
    const c16 = await checkStages({
      source: checkSource,
      inputName: input.name,
      preprocess,
      stages: split.stages.map((s, k) => ({ bytes: stageBytes[k]!, inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry })),
      precision: 'fp16',
      tolerance,
      ...(input.fixedBatch !== undefined ? { batchSizes: [input.fixedBatch] } : {}),
      ...(opts.calibration ? { calibration: { dir: opts.calibration, labels, ...(opts.calibrationLimit ? { limit: opts.calibrationLimit } : {}) } } : {}),
    });
    if (!c16.passed) {
      throw new CheckFailedError(
        `${file}: the fp16 stages differ from the float model by more than ${tolerance} (max |diff| per exit: ${c16.random.exits.map((e) => `'${e.exit}' ${e.maxAbsDiff.toExponential(2)}`).join(', ')}); ` +
          `no bundle was written; raise --tolerance if that is acceptable, or compile --precision fp32`,
      );
    }
    const kept = conv.flatMap((c) => c.report.keptFloat32);
    fp16 = { check: c16, converted: conv.reduce((a, c) => a + c.report.converted, 0), keptFloat32: kept, clamped: conv.reduce((a, c) => a + c.report.clamped.reduce((x, y) => x + y.count, 0), 0) };
    for (const k of kept) notes.push(`kept '${k.node}' (${k.op}) float32 in fp16: ${k.reason}`);
    if (fp16.clamped > 0) notes.push(`${fp16.clamped} constant value(s) clamped into the fp16 range`);
    notes.push(`fp16 check: max |diff| ${c16.random.exits.map((e) => e.maxAbsDiff.toExponential(2)).join(' / ')} per exit vs float (tolerance ${tolerance}); onnxruntime's CPU provider computes most fp16 ops in fp32 — the speed-up needs CUDA/TensorRT`);
  }

  const sourceCost = costPerOutput(model);
  const sourceMacs = sourceCost.filter((c) => exits.includes(c.output)).reduce((a, c) => a + c.incrementalMacs, 0);
  const sha = sha256Hex(sourceBytes);
  const name = model.getMetadata('edgeexit.model') ?? path.basename(file, path.extname(file));
  const version = model.getMetadata('edgeexit.version') ?? (model.modelVersion ? String(model.modelVersion) : '0');
  if (model.getMetadata('edgeexit.model') === undefined) notes.push(`the bundle is named '${name}' ${version} after the file: the model has no edgeexit.model metadata (fix: add edgeexit.model and edgeexit.version to metadata_props; see docs/bring-your-own-model.md)`);
  let cumulative = 0;
  const stages: StageReport[] = split.stages.map((s, k) => {
    cumulative += s.macs;
    return {
      index: k,
      file: stageFile(k),
      exit: s.exit,
      inputs: s.inputs,
      outputs: s.outputs,
      carry: s.carry,
      nodes: s.nodes.length,
      macs: s.macs,
      cumulativeMacs: cumulative,
      bytes: stageBytes[k]!.length,
      floatBytes: floatBytes[k]!.length,
      sha256: sha256Hex(stageBytes[k]!),
    };
  });
  if (device.precision.default !== precision && requested === precision) {
    notes.push(`${device.id} defaults to ${device.precision.default}; this bundle is ${precision}${SUPPORTED_PRECISIONS.includes(device.precision.default as Precision) ? '' : ` (${device.precision.default} is not available yet)`}`);
  }
  if (prepareReport.batchNormKept.length > 0) notes.push(`${prepareReport.batchNormKept.length} BatchNormalization node(s) could not be folded (see prepare.batchNormKept)`);
  notes.push('exit thresholds are uncalibrated (null): every sample runs to the last exit until they are calibrated');

  let latency: LatencyReport | undefined;
  if (opts.latency ?? true) {
    // A model exported with a fixed batch size only runs at that size, so it is timed at it.
    const batch = input.fixedBatch ?? 1;
    const feeds = await chainFeeds(split.stages.map((s, k) => ({ bytes: floatBytes[k]!, inputs: s.inputs, carry: s.carry })), input.name, preprocess, batch);
    latency = await measureStageLatency(
      split.stages.map((s, k) => ({ name: stageFile(k), float: floatBytes[k]!, compiled: stageBytes[k]!, feeds: feeds[k]! })),
      { batch, ...(opts.latencyRuns !== undefined ? { runs: opts.latencyRuns } : {}) },
    );
  }

  const report: CompileReport = {
    model: { file, name, version, sha256: sha },
    device: { id: device.id, name: device.name, defaultPrecision: device.precision.default },
    precision,
    inputFrom: { preprocess: preFrom, labels: labFrom },
    prepare: prepareReport,
    renamed: split.renamed,
    recompute,
    sourceMacs,
    stages,
    check,
    ...(quantization ? { quantization } : {}),
    ...(fp16 ? { fp16 } : {}),
    ...(latency ? { latency } : {}),
    notes,
  };
  return writeCompiledBundle(opts, {
    kind: 'multi-exit',
    name,
    version,
    device: device.id,
    precision,
    input: { name: input.name, shape: input.shape },
    preprocess,
    labels,
    stages,
    stageBytes,
    report,
    exitPoints: stages.length,
    source: { file: path.basename(file), sha256: sha },
    ...(quantization ? { quantization: { ...quantization, keptFloatNodes: quantization.keptFloat.map((k) => k.node) } } : {}),
    key,
  });
}

/** What both compile paths (multi-exit and CBNet) hand to the bundle writer. */
export interface BundleContents {
  kind: 'multi-exit' | 'cbnet';
  name: string;
  version: string;
  device: string;
  precision: Precision;
  input: { name: string; shape: (number | string)[] };
  preprocess: PreprocessSpec;
  labels: string[];
  stages: readonly StageReport[];
  stageBytes: readonly Uint8Array[];
  report: CompileReport;
  pipeline?: CbnetPipeline;
  /** How many exit points the (uncalibrated) exit policy has: one temperature each. */
  exitPoints: number;
  source: { file: string; sha256: string };
  quantization?: { scheme: string; calibration: { method: string; images: number; source: string }; keptFloatNodes: string[] };
  key: KeyObject | undefined;
}

/**
 * Manifest, report, stage files and signature, written as one bundle atomically. One place, so
 * the multi-exit and CBNet paths cannot drift apart in what a bundle holds.
 */
export async function writeCompiledBundle(opts: CompileOptions, c: BundleContents): Promise<CompileResult> {
  const reportBytes = new TextEncoder().encode(JSON.stringify(c.report, null, 2) + '\n');
  const q = c.quantization;
  const manifest = validateManifest(
    {
      formatVersion: MANIFEST_FORMAT_VERSION,
      model: { name: c.name, version: c.version },
      kind: c.kind,
      target: { device: c.device, precision: c.precision },
      input: { name: c.input.name, dtype: 'float32', shape: c.input.shape, layout: 'NCHW', preprocess: c.preprocess },
      labels: c.labels,
      stages: c.stages.map((s) => ({ file: s.file, sha256: s.sha256, bytes: s.bytes, inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry, macs: s.macs })),
      ...(c.pipeline ? { pipeline: c.pipeline } : {}),
      files: [{ file: REPORT_FILE, sha256: sha256Hex(reportBytes), bytes: reportBytes.length }],
      exitPolicy: { metric: 'max-prob', thresholds: null, temperatures: Array.from({ length: c.exitPoints }, () => 1) },
      provenance: {
        source: c.source,
        edgeexitVersion: edgeexitVersion(),
        created: (opts.now ?? new Date()).toISOString(),
        command: opts.command ?? defaultCommand(opts),
        ...(q
          ? {
              quantization: {
                scheme: q.scheme,
                calibrationMethod: q.calibration.method,
                calibrationImages: q.calibration.images,
                calibrationSource: portablePath(q.calibration.source),
                keptFloat: q.keptFloatNodes,
              },
            }
          : {}),
      },
    },
    `${MANIFEST_FILE} (being written)`,
  );
  const manifestBytes = encodeManifest(manifest);
  const files = [
    ...c.stages.map((s, k) => ({ name: s.file, data: c.stageBytes[k]! })),
    { name: REPORT_FILE, data: reportBytes },
    { name: MANIFEST_FILE, data: manifestBytes },
  ];
  if (c.key) files.push({ name: SIGNATURE_FILE, data: signManifest(manifestBytes, c.key) });
  const { replaced } = await writeBundleAtomic(opts.out, files, opts.write);
  return { out: opts.out, manifest, report: c.report, signed: c.key ? { keyId: keyId(c.key) } : null, replaced };
}

/**
 * What each stage reads for one batch (default 1 image), got by running the float stages in chain order on one random
 * preprocessed image: the timing must feed real hand-over tensors, not zeros, because ReLU
 * sparsity and denormals change how long a run takes.
 */
export async function chainFeeds(
  stages: readonly { bytes: Uint8Array; inputs: readonly string[]; carry: readonly string[] }[],
  inputName: string,
  preprocess: PreprocessSpec,
  batch = 1,
): Promise<Record<string, PlainTensor>[]> {
  const img = randomImages(preprocess, batch, 7);
  let alive: Record<string, PlainTensor> = { [inputName]: { data: img.data, dims: img.dims } };
  const out: Record<string, PlainTensor>[] = [];
  for (const s of stages) {
    const feeds: Record<string, PlainTensor> = {};
    for (const n of s.inputs) feeds[n] = alive[n]!;
    out.push(feeds);
    const session = await createSession(s.bytes);
    try {
      const res = await session.run(feeds);
      const next: Record<string, PlainTensor> = {};
      for (const n of s.carry) next[n] = res[n] ?? alive[n]!;
      alive = next;
    } finally {
      await session.close();
    }
  }
  return out;
}
