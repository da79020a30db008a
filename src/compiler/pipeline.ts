// The one compile pipeline every model family goes through. A family plans the stages
// (families/); from there the steps are the same for all: check the float stages against their
// sources, compile them to the precision asked for (fp16 with its own check, or int8 within the
// accuracy budget, keeping the most sensitive nodes float when needed), verify them on labelled
// images, time them, and write the report and the bundle. Nothing is written before every step
// has passed, so a failed compile leaves nothing behind.
import { concatFloat32 } from '../util/arrays.js';
import { encodeModel } from '../onnx/index.js';
import { UnsupportedError } from '../util/errors.js';
import { calibrateStages, compareExit, loadCalibrationImages, quantizeWithBudget, resolveScheme, type CalibrationData, type QuantScheme, type ExitVerification, type QuantizeResult, type QuantVerifier } from './quantize/index.js';
import { CheckFailedError, StageRunner, checkStages, type CheckResult } from './check.js';
import { convertToFp16 } from './fp16.js';
import { measureStageLatency, type LatencyReport } from './latency.js';
import {
  AccuracyDropError,
  DEFAULT_CALIBRATION_METHOD,
  DEFAULT_MAX_ACCURACY_DROP,
  FP16_TOLERANCE,
  SUPPORTED_PRECISIONS,
  type CompileReport,
  type CompileResult,
  type Fp16Report,
  type Precision,
  type QuantizationReport,
  type StageReport,
} from './options.js';
import { stageReports, writeCompiledBundle } from './writer.js';
import type { CompileEnv, FamilyPlan, StagesPlan, VerifyResult } from './families/family.js';
import type { CbnetPipeline } from '../bundle/manifest.js';

/** Stages compiled to the target precision, with everything the report says about how. */
export interface CompiledStages {
  floatBytes: Uint8Array[];
  stageBytes: Uint8Array[];
  check: CheckResult;
  quantization?: QuantizationReport;
  fp16?: Fp16Report;
  /** Compiled vs float on the labelled images (when the plan loads them). */
  verify?: VerifyResult;
  latency?: LatencyReport;
  /** Notes of the precision steps, in order. */
  notes: string[];
}

/**
 * Compile one family's plan into a bundle at `env.opts.out`.
 *
 * @example
 * const plan = await multiExitFamily.plan(env);
 * const result = await compilePlan(plan, env);
 */
export async function compilePlan(plan: FamilyPlan, env: CompileEnv): Promise<CompileResult> {
  const compiled = await compileStages(plan, env);
  const ext = plan.extension ? await compileExtension(plan, env) : undefined;
  const stages = [...stageReports(plan.stages, plan.stages.map((s) => s.file), { compiled: compiled.stageBytes, float: compiled.floatBytes }), ...(ext?.stages ?? [])];
  const stageBytes = [...compiled.stageBytes, ...(ext?.bytes ?? [])];
  const pipeline = plan.pipeline?.(ext?.stages ?? []);
  // The extension's exits join the plan's verification, so the report covers every exit point of the bundle.
  const verify = compiled.verify && ext?.verify ? { ...compiled.verify, paths: [...compiled.verify.paths, ...ext.verify] } : compiled.verify;
  const report = buildReport(plan, env, { ...compiled, ...(verify ? { verify } : {}) }, { stages, pipeline, notes: ext?.notes ?? [] });
  const q = compiled.quantization;
  return writeCompiledBundle(env.opts, {
    kind: plan.kind,
    name: plan.name,
    version: plan.version,
    device: env.device.id,
    precision: env.precision,
    input: { name: plan.input.name, shape: plan.input.shape },
    preprocess: plan.preprocess,
    labels: plan.labels,
    stages,
    stageBytes,
    report,
    ...(pipeline ? { pipeline } : {}),
    exitPoints: plan.exitPoints(stages.length, pipeline),
    source: plan.source,
    ...(q ? { quantization: { ...q, keptFloatNodes: q.keptFloat.map((k) => k.node) } } : {}),
    key: env.key,
  });
}

/** report.json: the plan's facts, the compiled stages and what each step did, then the notes. */
function buildReport(plan: FamilyPlan, env: CompileEnv, compiled: CompiledStages, parts: { stages: StageReport[]; pipeline: CbnetPipeline | undefined; notes: readonly string[] }): CompileReport {
  const { stages, pipeline } = parts;
  return {
    model: plan.report.model,
    device: { id: env.device.id, name: env.device.name, defaultPrecision: env.device.precision.default },
    precision: env.precision,
    inputFrom: plan.report.inputFrom,
    prepare: plan.prepare,
    // In the family's own key order, so report.json stays byte-identical to what each family wrote before.
    ...plan.report.split,
    sourceMacs: plan.report.sourceMacs,
    stages,
    check: compiled.check,
    ...(compiled.quantization ? { quantization: compiled.quantization } : {}),
    ...(compiled.fp16 ? { fp16: compiled.fp16 } : {}),
    ...(compiled.latency ? { latency: compiled.latency } : {}),
    ...(plan.section ? plan.section(pipeline, compiled.verify) : {}),
    notes: reportNotes(plan, compiled, env, parts.notes),
  };
}

/** The report's notes: planning, precision steps, extension, device and preparation, then what is left to do. */
export function reportNotes(plan: StagesPlan, compiled: CompiledStages, env: CompileEnv, extension: readonly string[]): string[] {
  const notes = [...plan.notes, ...compiled.notes, ...extension];
  const def = env.device.precision.default;
  if (def !== env.precision) {
    notes.push(`${env.device.id} defaults to ${def}; this bundle is ${env.precision}${SUPPORTED_PRECISIONS.includes(def as Precision) ? '' : ` (${def} is not available yet)`}`);
  }
  const kept = plan.prepare.batchNormKept.length;
  if (kept > 0) notes.push(`${kept} BatchNormalization node(s) could not be folded (see prepare.batchNormKept)`);
  return [...notes, ...plan.closingNotes];
}

/** The extension's stages compiled by the same steps, and the part of them that joins the bundle. */
async function compileExtension(plan: FamilyPlan, env: CompileEnv): Promise<{ stages: StageReport[]; bytes: Uint8Array[]; notes: string[]; verify?: ExitVerification[] }> {
  const ext = plan.extension!;
  const extEnv: CompileEnv = { ...env, opts: ext.opts };
  const compiled = await compileStages(ext.plan, extEnv);
  const kept = ext.plan.stages.slice(ext.from);
  const last = plan.stages.length;
  const cumulative = plan.stages.reduce((a, s) => a + s.macs, 0);
  const stages = stageReports(
    kept,
    kept.map((s) => s.file),
    { compiled: compiled.stageBytes.slice(ext.from), float: compiled.floatBytes.slice(ext.from) },
    { first: last, cumulative },
  );
  // Its verified exits, numbered as bundle stages and named as the pipeline's exit points.
  const verify = compiled.verify?.paths.filter((p) => p.stage >= ext.from).map((p) => ({ ...p, stage: last + p.stage - ext.from, exit: ext.exitName(p.exit) }));
  return { stages, bytes: compiled.stageBytes.slice(ext.from), notes: ext.notes(reportNotes(ext.plan, compiled, extEnv, [])), ...(verify ? { verify } : {}) };
}

/**
 * Check, convert or quantise, verify and time the planned stages; writes nothing.
 *
 * @example
 * const c = await compileStages(await multiExitFamily.plan(env), env);
 * console.log(c.stageBytes.map((b) => b.length), c.quantization?.keptFloat);
 */
export async function compileStages(plan: StagesPlan, env: CompileEnv): Promise<CompiledStages> {
  const floatBytes = plan.stages.map((s) => encodeModel(s.model));
  const check = await checkFloat(plan, env, floatBytes);
  const data = plan.images ? await loadImages(plan, env) : undefined;
  const notes: string[] = [];
  let stageBytes = floatBytes;
  let quantization: QuantizationReport | undefined;
  let fp16: Fp16Report | undefined;
  let verify: VerifyResult | undefined;
  if (env.precision === 'int8') {
    const q = await quantize(plan, env, floatBytes, data!);
    ({ stageBytes, quantization, verify } = q);
    notes.push(...q.notes);
  } else {
    if (env.precision === 'fp16') {
      const c = await toFp16(plan, env);
      ({ stageBytes, fp16 } = c);
      notes.push(...c.notes);
    }
    if (data) verify = await verifyOnImages(plan, env, data, floatBytes, stageBytes);
    // fp16 is verified like int8: its per-exit top-1 against fp32 goes beside its numeric check.
    if (fp16 && verify) fp16 = { ...fp16, verify };
  }
  if (verify && plan.verifyNotes) notes.push(...plan.verifyNotes(verify, env.precision));
  const latency = (env.opts.latency ?? true) ? await timeStages(plan, env, floatBytes, stageBytes) : undefined;
  return { floatBytes, stageBytes, check, ...(quantization ? { quantization } : {}), ...(fp16 ? { fp16 } : {}), ...(verify ? { verify } : {}), ...(latency ? { latency } : {}), notes };
}

// ---- the float check ----

/** Run each check group's stages against its source; one result for the whole plan. */
async function runChecks(plan: StagesPlan, env: CompileEnv, bytes: readonly Uint8Array[], precision: 'fp32' | 'fp16', tolerance: number | undefined, withImages: boolean): Promise<CheckResult> {
  const { opts } = env;
  const calibration = withImages && opts.calibration ? { calibration: { dir: opts.calibration, labels: plan.labels, ...(opts.calibrationLimit ? { limit: opts.calibrationLimit } : {}) } } : {};
  const results = await Promise.all(
    plan.checks.map((g) =>
      checkStages({
        source: g.source,
        inputName: g.inputName,
        preprocess: plan.preprocess,
        stages: g.stages.map((k) => {
          const s = plan.stages[k]!;
          return { bytes: bytes[k]!, inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry };
        }),
        precision,
        ...(plan.input.fixedBatch !== undefined ? { batchSizes: [plan.input.fixedBatch] } : {}),
        ...(tolerance !== undefined ? { tolerance } : {}),
        ...calibration,
      }),
    ),
  );
  return results.length === 1 ? results[0]! : mergeChecks(results, plan.checks.map((g) => g.stages));
}

/** One check per group, with each group's stage numbers mapped to the plan's. */
function mergeChecks(checks: CheckResult[], groups: readonly number[][]): CheckResult {
  const renumber = (set: CheckResult['random'] | undefined, g: number) => (set?.exits ?? []).map((e) => ({ ...e, stage: groups[g]![e.stage]! }));
  const first = checks[0]!;
  const cal = checks.every((c) => c.calibration) ? checks.map((c) => c.calibration!) : undefined;
  return {
    precision: first.precision,
    tolerance: first.tolerance,
    passed: checks.every((c) => c.passed),
    random: { source: first.random.source, samples: first.random.samples, exits: checks.flatMap((c, g) => renumber(c.random, g)) },
    ...(cal
      ? { calibration: { source: cal[0]!.source, samples: cal[0]!.samples, exits: checks.flatMap((c, g) => renumber(c.calibration, g)), skipped: cal.flatMap((c) => c.skipped ?? []) } }
      : {}),
  };
}

/** Every exit over the tolerance, one line each. */
function checkFailures(check: CheckResult, plan: StagesPlan): string[] {
  return [...check.random.exits.map((e) => ({ ...e, on: 'random inputs' })), ...(check.calibration?.exits ?? []).map((e) => ({ ...e, on: 'calibration images' }))]
    .filter((e) => !(e.maxAbsDiff <= check.tolerance))
    .map((e) => `  - stage ${e.stage} (${plan.stages[e.stage]?.file}) exit '${e.exit}' on ${e.on}: max |diff| ${e.maxAbsDiff.toExponential(2)}, top-1 agreement ${(e.top1Agreement * 100).toFixed(1)}%`);
}

/** The float stages must reproduce their sources; int8 is held to the accuracy budget later. */
async function checkFloat(plan: StagesPlan, env: CompileEnv, floatBytes: readonly Uint8Array[]): Promise<CheckResult> {
  const check = await runChecks(plan, env, floatBytes, 'fp32', env.opts.tolerance, env.precision !== 'int8');
  if (!check.passed) {
    throw new CheckFailedError(
      `${plan.where}: the compiled stages do not reproduce ${plan.sourceNoun} (fp32, tolerance ${check.tolerance}):\n` +
        checkFailures(check, plan).join('\n') +
        `\nno bundle was written; this is a compiler bug or an op the preparation does not handle — please report it with the model`,
    );
  }
  return check;
}

// ---- labelled images ----

async function loadImages(plan: StagesPlan, _env: CompileEnv): Promise<CalibrationData> {
  const img = plan.images!;
  return loadCalibrationImages(img.dir, plan.preprocess, plan.labels, {
    ...(img.limit !== undefined ? { limit: img.limit } : {}),
    ...(img.fixedBatch !== undefined ? { batchSize: img.fixedBatch, exactBatch: true } : {}),
  });
}

/** Compiled vs float on the labelled images, each output within the accuracy budget (fp32 and fp16). */
async function verifyOnImages(plan: StagesPlan, env: CompileEnv, data: CalibrationData, floatBytes: Uint8Array[], stageBytes: Uint8Array[]): Promise<VerifyResult> {
  const verifier = plan.verifier?.(data) ?? chainVerifier(plan, data);
  const ref = await verifier.run(floatBytes);
  const got = stageBytes === floatBytes ? ref : await verifier.run(stageBytes);
  const paths = verifier.outputs.map((o, i) => compareExit(o.stage, o.exit, ref[i]!, got[i]!, data.labels));
  const maxDrop = env.opts.maxAccuracyDrop ?? DEFAULT_MAX_ACCURACY_DROP;
  const failing = paths.filter((v) => v.dropPp > maxDrop);
  if (failing.length > 0) {
    throw new AccuracyDropError(
      `${plan.where}: ${env.precision} loses more than ${maxDrop} pp top-1 on ${data.count} images of ${plan.images!.dir}:\n` +
        failing.map((v) => `  - ${v.exit}: float ${(v.floatTop1 * 100).toFixed(2)}% → ${env.precision} ${(v.compiledTop1 * 100).toFixed(2)}% (−${v.dropPp.toFixed(2)} pp)`).join('\n') +
        `\nno bundle was written; allow more with --max-accuracy-drop, or compile --precision fp32`,
      failing.map((v) => ({ where: v.exit, message: `loses ${v.dropPp.toFixed(2)} pp top-1`, expected: `at most ${maxDrop} pp` })),
    );
  }
  return { source: plan.images!.dir, images: data.count, maxAccuracyDropPp: maxDrop, paths };
}

/** Each exit of the stages run as one chain over the images: what a family without its own verifier is measured on. */
function chainVerifier(plan: StagesPlan, data: CalibrationData): QuantVerifier {
  return {
    outputs: plan.stages.map((s, k) => ({ stage: k, exit: s.exit })),
    async run(bytes) {
      const runner = await StageRunner.open(
        plan.stages.map((s, k) => ({ bytes: bytes[k]!, inputs: s.inputs, outputs: s.outputs, exit: s.exit, carry: s.carry })),
        { graphOptimizationLevel: 'all' },
      );
      const chunks = plan.stages.map((): Float32Array[] => []);
      try {
        for (const b of data.batches) {
          const out = await runner.runAll({ [plan.input.name]: { data: b.data, dims: b.dims } });
          plan.stages.forEach((s, k) => chunks[k]!.push(out[s.exit]!.data as Float32Array));
        }
      } finally {
        await runner.close();
      }
      return chunks.map(concatFloat32);
    },
  };
}

// ---- int8 ----

async function quantize(
  plan: StagesPlan,
  env: CompileEnv,
  floatBytes: readonly Uint8Array[],
  data: CalibrationData,
): Promise<{ stageBytes: Uint8Array[]; quantization: QuantizationReport; verify: VerifyResult; notes: string[] }> {
  const { opts, device } = env;
  const schemeKey = device.precision.quantScheme;
  if (!schemeKey) throw new UnsupportedError(`${device.id}: the device profile names no precision.quantScheme, so int8 has no target scheme; add one (see \`edgeexit devices\`)`);
  const scheme = resolveScheme(schemeKey);
  const method = opts.calibrationMethod ?? DEFAULT_CALIBRATION_METHOD;
  const maxDrop = opts.maxAccuracyDrop ?? DEFAULT_MAX_ACCURACY_DROP;
  const progress = opts.onProgress ?? (() => {});
  const dir = plan.images!.dir;
  progress(`calibrating on ${dir} (${method})${plan.calibrationDetail?.(data) ?? ''}`);
  const calOpts = { method, symmetric: scheme.activationSymmetric };
  const cal = plan.calibrate
    ? await plan.calibrate(data, calOpts, floatBytes)
    : await calibrateStages(plan.stages, plan.input.name, data, calOpts).then((c) => ({ ranges: c.ranges, images: c.images, notes: [] as string[] }));
  // Without the family's own verifier, quantizeWithBudget verifies each exit of the chain.
  const verifier = plan.verifier?.(data);
  const q = await quantizeWithBudget(plan.stages, {
    scheme,
    ranges: cal.ranges,
    inputName: plan.input.name,
    data,
    maxDropPp: maxDrop,
    mixed: opts.mixedPrecision ?? true,
    onProgress: progress,
    carryParams: plan.carryParams,
    int8HandOver: handsOverCodes(scheme),
    floatStages: new Set(floatStagesFor(plan, device)),
    ...(verifier ? { verifier } : {}),
  });
  const quantization: QuantizationReport = {
    scheme: scheme.key,
    calibration: { source: dir, method, images: cal.images, skipped: data.skipped.length },
    maxAccuracyDropPp: maxDrop,
    verify: q.verify,
    keptFloat: q.keptFloat,
    stages: q.reports.map((r) => ({ quantized: r.quantized.length, passThrough: r.passThrough.length, float: r.float, biasAdjusted: r.biasAdjusted })),
    warnings: q.reports.flatMap((r) => r.warnings),
    evaluations: q.evaluations,
  };
  if (!q.withinBudget) throw overBudget(plan, env, { scheme: scheme.key, method, images: cal.images, maxDrop }, q);
  const floatStages = floatStagesFor(plan, device);
  const notes = [
    ...quantization.warnings,
    ...floatStages.map((k) => `stage ${k} (${plan.stages[k]!.file}) kept float: it hands nothing on and has ${(plan.stages[k]!.macs / 1e6).toFixed(2)}M MACs, under the ${(INT8_STAGE_MIN_MACS[device.cpu.arch]! / 1e6).toFixed(2)}M at which int8 pays on ${device.cpu.arch} (see floatStagesFor)`),
    ...q.keptFloat.map((k) => `kept '${k.node}' (${k.op}, stage ${k.stage}) float: ${k.reason}`),
    ...cal.notes,
  ];
  const verify = { source: dir, images: data.count, maxAccuracyDropPp: maxDrop, paths: q.verify };
  return { stageBytes: q.models.map((m) => encodeModel(m)), quantization, verify, notes };
}

/**
 * Whether stages hand carried tensors to each other as int8 codes. uint8 codes: yes, onnxruntime
 * reads and writes them as they are on every CPU. int8 codes (the Arm schemes): not by default.
 * onnxruntime on x86 rewrites int8 QDQ groups to uint8, which it cannot do for a graph input or
 * output, so the convolution next to an int8 boundary runs in float there, and an Arm bundle run
 * on x86 got slower; on Arm (checked under qemu) the same stages keep every int8 kernel, but no
 * Pi has timed them yet. Symmetric schemes (TensorRT) keep float boundaries.
 *
 * @example
 * handsOverCodes(resolveScheme('u8s8-qdq')); // true
 */
export function handsOverCodes(scheme: QuantScheme): boolean {
  return !scheme.activationSymmetric && scheme.activationType === 'uint8';
}

/**
 * Per CPU architecture: the MACs below which a stage that hands nothing on runs faster float than
 * int8, so an int8 chain keeps it float whole. onnxruntime's int8 path on x86 pays per stage for
 * quantising the image, two NHWC transposes and requantising every output, which a stage this
 * small does not earn back (docs/benchmarks.md: int8 slower at 0.14M and 0.35M MACs, faster at
 * 2.8M). Arm keeps int8 (not timed on a Pi yet).
 */
export const INT8_STAGE_MIN_MACS: Readonly<Partial<Record<string, number>>> = Object.freeze({ x64: 1_000_000 });

/**
 * Stages of an int8 chain left float whole: a stage that hands nothing on (recomputed, see
 * `chooseRecompute`) and has fewer MACs than INT8_STAGE_MIN_MACS gives for the device's CPU;
 * most images leave at such a stage's exit, so its speed is what early exit runs at.
 *
 * @example
 * floatStagesFor(plan, x86Host); // [0] for fmnist-branchy
 */
export function floatStagesFor(plan: Pick<StagesPlan, 'stages' | 'carryParams'>, device: Pick<CompileEnv['device'], 'cpu'>, minMacs = INT8_STAGE_MIN_MACS[device.cpu.arch]): number[] {
  if (minMacs === undefined || plan.carryParams === false) return [];
  const last = plan.stages.length - 1;
  return plan.stages.flatMap((s, k) => (k < last && s.outputs.length === 1 && s.macs < minMacs ? [k] : []));
}

/** The error of an int8 compile that stays over budget, naming each exit and what was kept float. */
function overBudget(plan: StagesPlan, env: CompileEnv, how: { scheme: string; method: string; images: number; maxDrop: number }, q: QuantizeResult): AccuracyDropError {
  const { maxDrop } = how;
  const bad = q.verify.filter((v) => v.dropPp > maxDrop);
  return new AccuracyDropError(
    `${plan.where}: int8 (${how.scheme}, ${how.method} calibration) loses more than ${maxDrop} pp top-1 on ${how.images} images of ${plan.images!.dir}:\n` +
      bad.map((v) => `  - stage ${v.stage} exit '${v.exit}': float ${(v.floatTop1 * 100).toFixed(2)}% → int8 ${(v.compiledTop1 * 100).toFixed(2)}% (−${v.dropPp.toFixed(2)} pp)`).join('\n') +
      (q.keptFloat.length ? `\n  even with ${q.keptFloat.length} node(s) kept float (${q.keptFloat.map((k) => `'${k.node}'`).join(', ')})` : '') +
      `\nno bundle was written; allow more with --max-accuracy-drop, ${env.opts.mixedPrecision === false ? 'allow mixed precision, ' : ''}try --calibration-method minmax, or compile --precision fp32`,
    bad.map((v) => ({ where: `exit '${v.exit}'`, message: `loses ${v.dropPp.toFixed(2)} pp top-1`, expected: `at most ${maxDrop} pp` })),
  );
}

// ---- fp16 ----

/**
 * Stage boundaries stay float32 (keepIoFloat32), so the runtime contract is the same as fp32;
 * the check is repeated on the fp16 stages with a tolerance suited to half precision.
 */
async function toFp16(plan: StagesPlan, env: CompileEnv): Promise<{ stageBytes: Uint8Array[]; fp16: Fp16Report; notes: string[] }> {
  const conv = plan.stages.map((s) => convertToFp16(s.model));
  const stageBytes = conv.map((c) => encodeModel(c.model));
  const tolerance = env.opts.tolerance ?? FP16_TOLERANCE;
  const check = await runChecks(plan, env, stageBytes, 'fp16', tolerance, true);
  if (!check.passed) {
    throw new CheckFailedError(
      `${plan.where}: the fp16 stages differ from ${plan.sourceNoun} by more than ${tolerance}:\n${checkFailures(check, plan).join('\n')}\n` +
        `no bundle was written; raise --tolerance if that is acceptable, or compile --precision fp32`,
    );
  }
  const kept = conv.flatMap((c) => c.report.keptFloat32);
  const fp16: Fp16Report = { check, converted: conv.reduce((a, c) => a + c.report.converted, 0), keptFloat32: kept, clamped: conv.reduce((a, c) => a + c.report.clamped.reduce((x, y) => x + y.count, 0), 0) };
  const notes = kept.map((k) => `kept '${k.node}' (${k.op}) float32 in fp16: ${k.reason}`);
  if (fp16.clamped > 0) notes.push(`${fp16.clamped} constant value(s) clamped into the fp16 range`);
  // The numbers are in fp16.check (and the console's check line), so the note only says where the speed-up is.
  notes.push(`onnxruntime's CPU provider computes most fp16 ops in fp32 — the fp16 speed-up needs CUDA/TensorRT`);
  return { stageBytes, fp16, notes };
}

// ---- latency ----

async function timeStages(plan: StagesPlan, env: CompileEnv, floatBytes: readonly Uint8Array[], stageBytes: readonly Uint8Array[]): Promise<LatencyReport> {
  const { batch, feeds } = await plan.latencyFeeds(floatBytes);
  // int8 stages may read what earlier stages hand over as int8 codes, so they are fed by their own chain.
  const compiledFeeds = stageBytes === floatBytes ? feeds : (await plan.latencyFeeds(stageBytes)).feeds;
  return measureStageLatency(
    plan.stages.map((s, k) => ({ name: s.file, float: floatBytes[k]!, compiled: stageBytes[k]!, feeds: feeds[k]!, compiledFeeds: compiledFeeds[k]! })),
    { batch, ...(env.opts.latencyRuns !== undefined ? { runs: env.opts.latencyRuns } : {}) },
  );
}

