// `compile` for a CBNet folder (converter.onnx + classifier.onnx) → one bundle of kind cbnet with
// two stages, the converter and the light classifier, and a manifest `pipeline` saying which feeds
// which. The runtime may run converter → classifier, or the hybrid: the classifier on the raw
// image first and the converter only when that answer is not confident. So the classifier is
// compiled for two input distributions: its int8 activation ranges are calibrated on raw images
// and converter outputs together, and both paths are verified float vs compiled on the labelled
// calibration images under the same --max-accuracy-drop rule as multi-exit exits. Like
// compileModel, every failure happens before anything is written, so it leaves no bundle.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { InputError, UnsupportedError, type Problem } from '../util/errors.js';
import { encodeModel, type OnnxModel } from '../onnx/index.js';
import { loadDeviceProfile } from '../devices/index.js';
import { createSession, type ModelSession, type PlainTensor } from '../backends/onnxruntime.js';
import type { PreprocessSpec, TensorData } from '../backends/image.js';
import { calibrateStages, compareExit, loadCalibrationImages, quantizeStage, resolveScheme, type CalibrationData, type ExitVerification } from './quantize/index.js';
import { checkBundleTarget, sha256Hex } from '../bundle/files.js';
import { CheckFailedError, checkStages, randomImages, type CheckResult } from './check.js';
import type { CbnetPipeline } from '../bundle/manifest.js';
import { prepareModel, type PrepareReport } from './prepare.js';
import { loadPrivateKey } from '../bundle/signing.js';
import { splitModel, type StagePlan } from './split.js';
import { convertToFp16 } from './fp16.js';
import { measureStageLatency, type LatencyReport } from './latency.js';
import {
  AccuracyDropError,
  DEFAULT_CALIBRATION_METHOD,
  DEFAULT_MAX_ACCURACY_DROP,
  FP16_TOLERANCE,
  SUPPORTED_PRECISIONS,
  checkExitWidths,
  checkInput,
  compileModel,
  writeCompiledBundle,
  isProblem,
  readSourceModel,
  resolveCalibrationDir,
  resolveLabels,
  resolvePreprocess,
  type CompileOptions,
  type CompileReport,
  type CompileResult,
  type Precision,
  type QuantizationReport,
  type StageReport,
} from './compile.js';

/** The files a CBNet folder must hold, by role. */
export const CBNET_FILES = { converter: 'converter.onnx', classifier: 'classifier.onnx' } as const;
const ROLE_META = 'edgeexit.role';
const ROLES = { converter: 'cbnet-converter', classifier: 'cbnet-classifier' } as const;
const STAGE_FILES = { converter: 'converter.onnx', classifier: 'classifier.onnx' } as const;
/** Images of the calibration folder verified at fp32/fp16 when --calibration-limit is not given (int8 uses all, as multi-exit does). */
const DEFAULT_VERIFY_LIMIT = 256;

export interface CbnetReport {
  sources: { role: 'converter' | 'classifier' | 'backbone'; file: string; sha256: string; macs: number }[];
  pipeline: CbnetPipeline;
  /** Float vs compiled on the calibration images, per path (absent when no labelled images were at hand). */
  verify?: { source: string; images: number; maxAccuracyDropPp: number; paths: ExitVerification[] };
}

interface BackboneParts {
  stages: StageReport[];
  bytes: Uint8Array[];
  notes: string[];
  sourceSha: string;
}

/**
 * Compile the multi-exit model behind the light classifier (same device, precision and
 * calibration) with its first stage recomputed, and keep its deeper stages: the first of them then
 * reads only the image, so it can follow the CBNet classifier, which hands nothing but the image on.
 */
async function compileBackbone(
  opts: CompileOptions,
  want: { inputName: string; labels: readonly string[]; preprocess: PreprocessSpec; taken: readonly string[]; first: number; cumulative: number },
): Promise<BackboneParts> {
  const file = opts.backbone!;
  if (await isCbnetFolder(file)) throw new InputError(`--backbone ${file}: expected one multi-exit .onnx model (the one the CBNet classifier is the first exit of), got a folder`);
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-backbone-'));
  try {
    const r = await compileModel({
      model: file,
      device: opts.device,
      out: path.join(tmp, 'bundle'),
      precision: opts.precision ?? 'fp32',
      recompute: [0],
      latency: false,
      ...(opts.calibration !== undefined ? { calibration: opts.calibration } : {}),
      ...(opts.calibrationLimit !== undefined ? { calibrationLimit: opts.calibrationLimit } : {}),
      ...(opts.calibrationMethod !== undefined ? { calibrationMethod: opts.calibrationMethod } : {}),
      ...(opts.maxAccuracyDrop !== undefined ? { maxAccuracyDrop: opts.maxAccuracyDrop } : {}),
      ...(opts.mixedPrecision !== undefined ? { mixedPrecision: opts.mixedPrecision } : {}),
      ...(opts.onProgress ? { onProgress: (l: string) => opts.onProgress!(`backbone: ${l}`) } : {}),
    });
    const m = r.manifest;
    const problems: Problem[] = [];
    if (m.stages.length < 2) problems.push({ where: `--backbone ${file}`, expected: 'a multi-exit model (two exits or more)', got: `${m.stages.length} exit` });
    if (JSON.stringify(m.labels) !== JSON.stringify(want.labels)) problems.push({ where: `--backbone ${file}: labels`, expected: JSON.stringify(want.labels), got: JSON.stringify(m.labels) });
    if (m.input.name !== want.inputName) problems.push({ where: `--backbone ${file}: input`, expected: `'${want.inputName}' (the CBNet's image input)`, got: `'${m.input.name}'` });
    const pre = (p: PreprocessSpec): string => JSON.stringify({ ...p, size: [...p.size] });
    if (pre(m.input.preprocess) !== pre(want.preprocess)) problems.push({ where: `--backbone ${file}: preprocess`, expected: pre(want.preprocess), got: pre(m.input.preprocess) });
    const deeper = m.stages.slice(1);
    const clash = deeper.flatMap((s) => s.outputs).filter((t) => want.taken.includes(t));
    if (clash.length) problems.push({ where: `--backbone ${file}: tensor names`, expected: `none of ${want.taken.join(', ')} (the CBNet's own)`, got: clash.join(', '), fix: 're-export one of the models with other output names' });
    if (problems.length) throw new InputError(`--backbone ${file}: does not fit this CBNet`, problems);
    if (deeper[0] && (deeper[0].inputs.length !== 1 || deeper[0].inputs[0] !== want.inputName)) {
      throw new UnsupportedError(`--backbone ${file}: its second stage reads ${deeper[0].inputs.join(', ')}, not only the image; the CBNet classifier hands nothing else on`);
    }
    let cumulative = want.cumulative;
    const bytes: Uint8Array[] = [];
    const stages: StageReport[] = [];
    for (const [j, s] of deeper.entries()) {
      const data = new Uint8Array(await fsp.readFile(path.join(r.out, s.file)));
      cumulative += s.macs;
      bytes.push(data);
      stages.push({
        index: want.first + j,
        file: `backbone-${j + 1}.onnx`,
        exit: s.exit,
        inputs: s.inputs,
        outputs: s.outputs,
        carry: s.carry,
        nodes: r.report.stages[j + 1]?.nodes ?? 0,
        macs: s.macs,
        cumulativeMacs: cumulative,
        bytes: data.length,
        floatBytes: r.report.stages[j + 1]?.floatBytes ?? data.length,
        sha256: sha256Hex(data),
      });
    }
    const notes = [
      `backbone ${path.basename(file)}: stages ${deeper.map((s) => s.exit).join(', ')} added as the hybrid's last fall-through (the first recomputes the classifier's trunk from the image)`,
      ...r.report.notes.filter((n) => !/uncalibrated|hand nothing on/.test(n)).map((n) => `backbone: ${n}`),
    ];
    return { stages, bytes, notes, sourceSha: r.report.model.sha256 };
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Whether `p` is a folder (a CBNet model) rather than one ONNX file.
 *
 * @example
 * ```ts
 * import { compileCbnet, compileModel, isCbnetFolder } from 'edgeexit/compiler';
 * const compile = (await isCbnetFolder(model)) ? compileCbnet : compileModel;
 * ```
 */
export async function isCbnetFolder(p: string): Promise<boolean> {
  const st = await fsp.stat(p).catch(() => undefined);
  return st?.isDirectory() ?? false;
}

function cbnetFolderError(dir: string, missing: string[], present: string[]): InputError {
  const expected = `${CBNET_FILES.converter} (image → converted image, same dims) and ${CBNET_FILES.classifier} (image → logits)`;
  return new InputError(
    `${dir}: is a folder but not a CBNet model: missing ${missing.join(' and ')}; a CBNet folder must contain ${expected}` +
      ` (it has: ${present.join(', ') || 'nothing'}); to compile a multi-exit model, pass its .onnx file instead`,
    missing.map((m) => ({ where: path.join(dir, m), message: 'missing', expected, fix: 'export the CBNet pair into this folder (models/zoo/cbnet.py)' })),
  );
}

/** Sum two prepare reports: the bundle's report has one prepare section for all its sources. */
function mergePrepare(a: PrepareReport, b: PrepareReport): PrepareReport {
  const removed = { ...a.removed };
  for (const [op, n] of Object.entries(b.removed)) removed[op] = (removed[op] ?? 0) + n;
  return {
    nodesBefore: a.nodesBefore + b.nodesBefore,
    nodesAfter: a.nodesAfter + b.nodesAfter,
    batchNormFolded: [...a.batchNormFolded, ...b.batchNormFolded],
    batchNormKept: [...a.batchNormKept, ...b.batchNormKept],
    constantNodes: a.constantNodes + b.constantNodes,
    foldedTensors: [...a.foldedTensors, ...b.foldedTensors],
    reshapesFolded: [...a.reshapesFolded, ...b.reshapesFolded],
    removed,
    kept: [...a.kept, ...b.kept],
    deadNodes: a.deadNodes + b.deadNodes,
    unusedInitializers: a.unusedInitializers + b.unusedInitializers,
  };
}

/** One check per source file, renumbered as stages 0 (converter) and 1 (classifier). */
function mergeChecks(checks: CheckResult[]): CheckResult {
  const renumber = (set: CheckResult['random'] | undefined, k: number) => (set?.exits ?? []).map((e) => ({ ...e, stage: k }));
  const first = checks[0]!;
  const cal = checks.every((c) => c.calibration) ? checks.map((c) => c.calibration!) : undefined;
  return {
    precision: first.precision,
    tolerance: first.tolerance,
    passed: checks.every((c) => c.passed),
    random: { source: first.random.source, samples: first.random.samples, exits: checks.flatMap((c, k) => renumber(c.random, k)) },
    ...(cal
      ? { calibration: { source: cal[0]!.source, samples: cal[0]!.samples, exits: checks.flatMap((c, k) => renumber(c.calibration, k)), skipped: cal.flatMap((c) => c.skipped ?? []) } }
      : {}),
  };
}

function checkFailure(check: CheckResult, what: string, files: readonly string[]): string[] {
  return [...check.random.exits.map((e) => ({ ...e, on: 'random inputs' })), ...(check.calibration?.exits ?? []).map((e) => ({ ...e, on: 'calibration images' }))]
    .filter((e) => !(e.maxAbsDiff <= check.tolerance))
    .map((e) => `  - ${files[e.stage]} (${what}) output '${e.exit}' on ${e.on}: max |diff| ${e.maxAbsDiff.toExponential(2)}`);
}

function concat(chunks: Float32Array[]): Float32Array {
  const all = new Float32Array(chunks.reduce((a, x) => a + x.length, 0));
  let o = 0;
  for (const x of chunks) {
    all.set(x, o);
    o += x.length;
  }
  return all;
}

/** Both paths over the batches: the classifier on the image, and converter → classifier. Also returns the converter's outputs. */
async function runPaths(
  converter: Uint8Array,
  classifier: Uint8Array,
  names: { image: string; converted: string; classifierInput: string; exit: string },
  batches: readonly TensorData[],
): Promise<{ raw: Float32Array; converted: Float32Array; convertedBatches: TensorData[] }> {
  const sessions: ModelSession[] = [];
  try {
    const conv = await createSession(converter, { graphOptimizationLevel: 'all' });
    sessions.push(conv);
    const cls = await createSession(classifier, { graphOptimizationLevel: 'all' });
    sessions.push(cls);
    const raw: Float32Array[] = [];
    const viaConv: Float32Array[] = [];
    const convertedBatches: TensorData[] = [];
    for (const b of batches) {
      const image: PlainTensor = { data: b.data, dims: b.dims };
      raw.push((await cls.run({ [names.classifierInput]: image }))[names.exit]!.data as Float32Array);
      const c = (await conv.run({ [names.image]: image }))[names.converted]!;
      if (c.dims.join() !== b.dims.join()) {
        throw new UnsupportedError(`${CBNET_FILES.converter}: output '${names.converted}' has dims [${c.dims}] for an image of [${b.dims}]; the classifier reads it as an image, so the dims must match`);
      }
      const cd: TensorData = { data: c.data as Float32Array, dims: c.dims };
      convertedBatches.push(cd);
      viaConv.push((await cls.run({ [names.classifierInput]: cd }))[names.exit]!.data as Float32Array);
    }
    return { raw: concat(raw), converted: concat(viaConv), convertedBatches };
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
}

/**
 * Compile a CBNet folder (converter + light classifier, optionally a multi-exit backbone) into
 * one bundle whose pipeline section describes the cbnet and hybrid run orders.
 *
 * @example
 * ```ts
 * import { compileCbnet } from 'edgeexit/compiler';
 * const { out, report } = await compileCbnet({ model: 'models/fmnist-cbnet', device: 'jetson-orin-nano', precision: 'fp16', out: 'bundles/cbnet-orin' });
 * ```
 */
export async function compileCbnet(opts: CompileOptions): Promise<CompileResult> {
  const dir = opts.model;
  if (opts.exits?.length) throw new InputError(`--exits: does not apply to a CBNet folder (${dir}); its exits are fixed: the classifier on the image, and converter → classifier`);
  const present = (await fsp.readdir(dir)).sort();
  const missing = Object.values(CBNET_FILES).filter((f) => !present.includes(f));
  if (missing.length > 0) throw cbnetFolderError(dir, missing, present);

  await checkBundleTarget(opts.out);
  const device = await loadDeviceProfile(opts.device);
  const notes: string[] = [];
  const requested: Precision = opts.precision === 'device' ? (device.precision.default as Precision) : (opts.precision ?? 'fp32');
  const precision = requested;
  if (!SUPPORTED_PRECISIONS.includes(precision)) throw new UnsupportedError(`--precision ${precision}: not available yet; this version compiles ${SUPPORTED_PRECISIONS.join(', ')} only`);
  let key: KeyObject | undefined;
  if (opts.key) key = await loadPrivateKey(opts.key);

  const convFile = path.join(dir, CBNET_FILES.converter);
  const clsFile = path.join(dir, CBNET_FILES.classifier);
  const conv = await readSourceModel(convFile);
  const cls = await readSourceModel(clsFile);
  const roleProblems: Problem[] = [];
  for (const [role, m, f] of [['converter', conv.model, convFile], ['classifier', cls.model, clsFile]] as const) {
    const got = m.getMetadata(ROLE_META);
    // Swapped files would compile and then classify garbage; the role metadata catches that.
    if (got !== undefined && got !== ROLES[role]) roleProblems.push({ where: `${f}: metadata ${ROLE_META}`, expected: `'${ROLES[role]}'`, got: `'${got}'`, fix: 'are converter.onnx and classifier.onnx swapped?' });
  }
  if (roleProblems.length) throw new InputError(`${dir}: the CBNet files do not say the roles their names give them`, roleProblems);

  // The image description comes from the classifier (it owns the labels), else the converter.
  const pre = await resolvePreprocess(cls.model, clsFile, opts.preprocess);
  const preFallback = isProblem(pre) ? await resolvePreprocess(conv.model, convFile, undefined) : pre;
  const lab = await resolveLabels(cls.model, clsFile, opts.labels);
  const bad = [preFallback, lab].filter((x) => isProblem(x)) as Problem[];
  if (bad.length > 0) throw new InputError(`${dir}: the CBNet does not describe its input, and no flag says it:\n` + bad.map((p) => `  - ${p.message} (fix: ${p.fix})`).join('\n'), bad);
  const { spec: preprocess, from: preFrom } = preFallback as { spec: PreprocessSpec; from: string };
  const { labels, from: labFrom } = lab as { labels: string[]; from: string };
  const convIn = checkInput(conv.model, convFile, preprocess);
  const clsIn = checkInput(cls.model, clsFile, preprocess);
  if (convIn.fixedBatch !== undefined || clsIn.fixedBatch !== undefined) throw new UnsupportedError(`${dir}: a CBNet with a fixed batch size is not supported; export with a dynamic batch dimension`);
  const oneOutput = (m: OnnxModel, f: string, what: string): string => {
    const outs = m.graph.output.map((o) => o.name);
    if (outs.length !== 1) throw new UnsupportedError(`${f}: has ${outs.length} outputs (${outs.join(', ')}); expected exactly one, ${what}`);
    return outs[0]!;
  };
  const convertedName = oneOutput(conv.model, convFile, 'the converted image');
  const exitName = oneOutput(cls.model, clsFile, 'the logits');
  checkExitWidths(cls.model, clsFile, [exitName], labels, labFrom);
  if (clsIn.name !== convIn.name && clsIn.name !== convertedName) {
    throw new UnsupportedError(`${clsFile}: input '${clsIn.name}' is named neither like the converter's input '${convIn.name}' nor like its output '${convertedName}'; re-export the classifier with input name '${convIn.name}'`);
  }

  // Labelled images: int8 needs them; at fp32/fp16 they give the verify table when at hand.
  let calibrationDir: string | undefined;
  try {
    calibrationDir = await resolveCalibrationDir(opts.calibration, labels, dir);
  } catch (err) {
    if (precision === 'int8') throw err;
    notes.push('no labelled images for these labels (pass --calibration <ImageFolder>), so the two paths were not verified on images');
  }

  const prepConv = prepareModel(conv.model);
  const prepCls = prepareModel(cls.model);
  const plans: StagePlan[] = [splitModel(prepConv.model, { exits: [convertedName] }).stages[0]!, splitModel(prepCls.model, { exits: [exitName] }).stages[0]!];
  const floatBytes = plans.map((p) => encodeModel(p.model));
  const sources = [conv, cls].map((s) => (s.model.externalTensors.length > 0 ? encodeModel(s.model) : s.bytes));
  const files = [CBNET_FILES.converter, CBNET_FILES.classifier];
  const inputNames = [convIn.name, clsIn.name];
  const calFlag = opts.calibration && precision !== 'int8' ? { calibration: { dir: opts.calibration, labels, ...(opts.calibrationLimit ? { limit: opts.calibrationLimit } : {}) } } : {};
  const checkEach = async (bytes: Uint8Array[], p: 'fp32' | 'fp16', tolerance: number | undefined, withCal: object) =>
    mergeChecks(
      await Promise.all(
        plans.map((s, k) =>
          checkStages({
            source: sources[k]!,
            inputName: inputNames[k]!,
            preprocess,
            stages: [{ bytes: bytes[k]!, inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry }],
            precision: p,
            ...(tolerance !== undefined ? { tolerance } : {}),
            ...withCal,
          }),
        ),
      ),
    );
  const check = await checkEach(floatBytes, 'fp32', opts.tolerance, calFlag);
  if (!check.passed) {
    throw new CheckFailedError(
      `${dir}: the compiled stages do not reproduce the source files (tolerance ${check.tolerance}):\n` +
        checkFailure(check, 'fp32', files).join('\n') +
        `\nno bundle was written; this is a compiler bug or an op the preparation does not handle — please report it with the model`,
    );
  }

  const progress = opts.onProgress ?? (() => {});
  const maxDrop = opts.maxAccuracyDrop ?? DEFAULT_MAX_ACCURACY_DROP;
  const names = { image: convIn.name, converted: convertedName, classifierInput: clsIn.name, exit: exitName };
  let data: CalibrationData | undefined;
  let floatPaths: Awaited<ReturnType<typeof runPaths>> | undefined;
  if (calibrationDir) {
    const limit = opts.calibrationLimit ?? (precision === 'int8' ? undefined : DEFAULT_VERIFY_LIMIT);
    data = await loadCalibrationImages(calibrationDir, preprocess, labels, limit !== undefined ? { limit } : {});
    floatPaths = await runPaths(floatBytes[0]!, floatBytes[1]!, names, data.batches);
  }

  let stageBytes = floatBytes;
  let quantization: QuantizationReport | undefined;
  let fp16: CompileReport['fp16'];
  if (precision === 'int8') {
    const schemeKey = device.precision.quantScheme;
    if (!schemeKey) throw new UnsupportedError(`${device.id}: the device profile names no precision.quantScheme, so int8 has no target scheme; add one (see \`edgeexit devices\`)`);
    const scheme = resolveScheme(schemeKey);
    const method = opts.calibrationMethod ?? DEFAULT_CALIBRATION_METHOD;
    progress(`calibrating on ${calibrationDir} (${method}): converter on ${data!.count} images, classifier on those and their ${data!.count} converted versions`);
    const calOpts = { method, symmetric: scheme.activationSymmetric };
    const convRanges = await calibrateStages([plans[0]!], convIn.name, data!, calOpts);
    // The hybrid feeds the classifier raw images and converter outputs; ranges from only one of
    // the two would clip the other (converted images are normalised prototypes, raw ones are not).
    const clsRanges = await calibrateStages([plans[1]!], clsIn.name, { batches: [...data!.batches, ...floatPaths!.convertedBatches] }, calOpts);
    const q = [quantizeStage(plans[0]!.model, { scheme, ranges: convRanges.ranges[0]! }), quantizeStage(plans[1]!.model, { scheme, ranges: clsRanges.ranges[0]! })];
    stageBytes = q.map((x) => encodeModel(x.model));
    quantization = {
      scheme: scheme.key,
      calibration: { source: calibrationDir!, method, images: data!.count, skipped: data!.skipped.length },
      maxAccuracyDropPp: maxDrop,
      verify: [],
      keptFloat: [],
      stages: q.map((x) => ({ quantized: x.report.quantized.length, passThrough: x.report.passThrough.length, float: x.report.float, biasAdjusted: x.report.biasAdjusted })),
      warnings: q.flatMap((x) => x.report.warnings),
      evaluations: 1,
    };
    notes.push(...quantization.warnings);
    notes.push(`classifier activations calibrated on ${data!.count} raw + ${data!.count} converted images (the hybrid feeds it both)`);
  } else if (precision === 'fp16') {
    const conv16 = plans.map((p) => convertToFp16(p.model));
    stageBytes = conv16.map((c) => encodeModel(c.model));
    const tolerance = opts.tolerance ?? FP16_TOLERANCE;
    const c16 = await checkEach(stageBytes, 'fp16', tolerance, opts.calibration ? { calibration: { dir: opts.calibration, labels, ...(opts.calibrationLimit ? { limit: opts.calibrationLimit } : {}) } } : {});
    if (!c16.passed) {
      throw new CheckFailedError(`${dir}: the fp16 stages differ from the float files by more than ${tolerance}:\n${checkFailure(c16, 'fp16', files).join('\n')}\nno bundle was written; raise --tolerance if that is acceptable, or compile --precision fp32`);
    }
    const kept = conv16.flatMap((c) => c.report.keptFloat32);
    fp16 = { check: c16, converted: conv16.reduce((a, c) => a + c.report.converted, 0), keptFloat32: kept, clamped: conv16.reduce((a, c) => a + c.report.clamped.reduce((x, y) => x + y.count, 0), 0) };
    for (const k of kept) notes.push(`kept '${k.node}' (${k.op}) float32 in fp16: ${k.reason}`);
  }

  // The verify table: both paths, float vs compiled, on the labelled images.
  let verify: CbnetReport['verify'];
  if (data && floatPaths) {
    const got = precision === 'fp32' ? floatPaths : await runPaths(stageBytes[0]!, stageBytes[1]!, names, data.batches);
    const paths = [compareExit(1, 'classifier<-image', floatPaths.raw, got.raw, data.labels), compareExit(1, 'classifier<-converter', floatPaths.converted, got.converted, data.labels)];
    verify = { source: calibrationDir!, images: data.count, maxAccuracyDropPp: maxDrop, paths };
    if (quantization) quantization.verify = paths;
    const failing = paths.filter((v) => v.dropPp > maxDrop);
    if (failing.length > 0) {
      throw new AccuracyDropError(
        `${dir}: ${precision} loses more than ${maxDrop} pp top-1 on ${data.count} images of ${calibrationDir}:\n` +
          failing.map((v) => `  - ${v.exit}: float ${(v.floatTop1 * 100).toFixed(2)}% → ${precision} ${(v.compiledTop1 * 100).toFixed(2)}% (−${v.dropPp.toFixed(2)} pp)`).join('\n') +
          `\nno bundle was written; allow more with --max-accuracy-drop, try --calibration-method minmax, or compile --precision fp32 (mixed precision is not available for CBNet yet)`,
        failing.map((v) => ({ where: v.exit, message: `loses ${v.dropPp.toFixed(2)} pp top-1`, expected: `at most ${maxDrop} pp` })),
      );
    }
  }

  let latency: LatencyReport | undefined;
  if (opts.latency ?? true) {
    const img = randomImages(preprocess, 1, 7);
    const image: PlainTensor = { data: img.data, dims: img.dims };
    latency = await measureStageLatency(
      [
        { name: STAGE_FILES.converter, float: floatBytes[0]!, compiled: stageBytes[0]!, feeds: { [convIn.name]: image } },
        { name: STAGE_FILES.classifier, float: floatBytes[1]!, compiled: stageBytes[1]!, feeds: { [clsIn.name]: image } },
      ],
      opts.latencyRuns !== undefined ? { runs: opts.latencyRuns } : {},
    );
  }

  const shas = [sha256Hex(conv.bytes), sha256Hex(cls.bytes)];
  // One digest names the pair, so provenance still has one source hash.
  const sha = sha256Hex(new TextEncoder().encode(files.map((f, k) => `${shas[k]}  ${f}\n`).join('')));
  const name = cls.model.getMetadata('edgeexit.model') ?? conv.model.getMetadata('edgeexit.model') ?? path.basename(path.resolve(dir));
  const version = cls.model.getMetadata('edgeexit.version') ?? conv.model.getMetadata('edgeexit.version') ?? '0';
  const stageNames = [STAGE_FILES.converter, STAGE_FILES.classifier];
  // The converter hands on the image (for the hybrid's classifier) and its output.
  const carries = [[...new Set([convIn.name, convertedName])], [] as string[]];
  let cumulative = 0;
  const stages: StageReport[] = plans.map((s, k) => {
    cumulative += s.macs;
    return {
      index: k,
      file: stageNames[k]!,
      exit: s.exit,
      inputs: s.inputs,
      outputs: s.outputs,
      carry: carries[k]!,
      nodes: s.nodes.length,
      macs: s.macs,
      cumulativeMacs: cumulative,
      bytes: stageBytes[k]!.length,
      floatBytes: floatBytes[k]!.length,
      sha256: sha256Hex(stageBytes[k]!),
    };
  });
  const backbone = opts.backbone !== undefined ? await compileBackbone(opts, { inputName: convIn.name, labels, preprocess, taken: [convertedName, exitName], first: stages.length, cumulative }) : undefined;
  if (backbone) {
    // The classifier hands the image on to the first backbone stage, which recomputes its trunk.
    stages[1]!.carry = [convIn.name];
    stages.push(...backbone.stages);
    stageBytes = [...stageBytes, ...backbone.bytes];
    notes.push(...backbone.notes);
  }
  const pipeline: CbnetPipeline = {
    converter: { stage: 0, input: convIn.name, output: convertedName },
    classifier: { stage: 1, input: clsIn.name, exit: exitName, inputFrom: ['image', 'converter'] },
    policies: {
      cbnet: ['classifier<-converter'],
      hybrid: ['classifier<-image', 'classifier<-converter', ...(backbone ? backbone.stages.map((s) => `backbone:${s.exit}` as const) : [])],
    },
    // Until thresholds are calibrated the hybrid always falls through, so the pair alone is cheaper.
    default: 'cbnet',
    ...(backbone ? { backbone: backbone.stages.map((s) => s.index) } : {}),
  };
  if (device.precision.default !== precision && requested === precision) notes.push(`${device.id} defaults to ${device.precision.default}; this bundle is ${precision}`);
  notes.push('hybrid threshold is uncalibrated (null): until `calibrate` sets it, run the cbnet policy (converter → classifier)');
  if (!backbone) notes.push('no --backbone: the hybrid ends at the converter; `--backbone <multi-exit model>` adds its deeper stages as the last fall-through');

  const report: CompileReport = {
    model: { file: dir, name, version, sha256: sha },
    device: { id: device.id, name: device.name, defaultPrecision: device.precision.default },
    precision,
    inputFrom: { preprocess: preFrom, labels: labFrom },
    prepare: mergePrepare(prepConv.report, prepCls.report),
    // Converter and classifier are separate models; nothing is handed over to recompute.
    recompute: [],
    renamed: {},
    // The backbone's stages were checked against their own source when it was compiled (compileBackbone).
    sourceMacs: plans.reduce((a, p) => a + p.macs, 0) + (backbone ? backbone.stages.reduce((a, st) => a + st.macs, 0) : 0),
    stages,
    check,
    ...(quantization ? { quantization } : {}),
    ...(fp16 ? { fp16 } : {}),
    ...(latency ? { latency } : {}),
    cbnet: {
      sources: [
        { role: 'converter', file: CBNET_FILES.converter, sha256: shas[0]!, macs: plans[0]!.macs },
        { role: 'classifier', file: CBNET_FILES.classifier, sha256: shas[1]!, macs: plans[1]!.macs },
        ...(backbone ? [{ role: 'backbone' as const, file: opts.backbone!, sha256: backbone.sourceSha, macs: backbone.stages.reduce((a, s) => a + s.macs, 0) }] : []),
      ],
      pipeline,
      ...(verify ? { verify } : {}),
    },
    notes,
  };
  return writeCompiledBundle(opts, {
    kind: 'cbnet',
    name,
    version,
    device: device.id,
    precision,
    input: { name: convIn.name, shape: convIn.shape },
    preprocess,
    labels,
    stages,
    stageBytes,
    report,
    pipeline,
    exitPoints: pipeline.policies.hybrid.length,
    source: { file: path.basename(path.resolve(dir)), sha256: sha },
    ...(quantization ? { quantization: { ...quantization, keptFloatNodes: [] } } : {}),
    key,
  });
}
