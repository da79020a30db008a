// The numeric check behind every compile: run the source model and the compiled stages (chained
// the way the device runs them) on the same inputs with onnxruntime, and compare each exit.
// Inputs are random pixels pushed through the model's preprocessing (so values have the range
// real images have), at batch 1 and batch 4, and optionally images from an ImageFolder.
import { EdgeExitError } from '../util/errors.js';
import { createSession, type ModelSession, type OutputTensor, type PlainTensor, type SessionOptions } from '../backends/onnxruntime.js';
import { prepareBatch, toTensor, type PreprocessSpec, type RawPixels, type TensorData } from '../backends/image.js';
import { scanImageFolder } from '../data/imagefolder.js';
import { mulberry32 } from '../util/random.js';

/** What the check needs to know about a stage. */
export interface CheckStage {
  bytes: Uint8Array;
  inputs: readonly string[];
  outputs: readonly string[];
  exit: string;
  /** Tensors alive after the stage; anything else may be dropped. */
  carry: readonly string[];
}

export interface ExitComparison {
  stage: number;
  exit: string;
  /** Largest |compiled − source| over every element of every sample. */
  maxAbsDiff: number;
  /** Share of samples whose top-1 class agrees. */
  top1Agreement: number;
  samples: number;
}

export interface CheckSet {
  /** 'random images (batch 1 + batch 4)' or the ImageFolder. */
  source: string;
  samples: number;
  exits: ExitComparison[];
  /** Images that could not be decoded, with the reason. */
  skipped?: { file: string; error: string }[];
}

export interface CheckResult {
  precision: string;
  /** Largest difference accepted on any exit. */
  tolerance: number;
  passed: boolean;
  random: CheckSet;
  calibration?: CheckSet;
}

/**
 * The compiled stages disagree with the source model by more than the tolerance.
 *
 * @example
 * ```ts
 * import { CheckFailedError, compileModel } from 'edgeexit/compiler';
 * try {
 *   await compileModel(options);
 * } catch (err) {
 *   if (err instanceof CheckFailedError) console.error(err.message); // which exit, by how much
 *   else throw err;
 * }
 * ```
 */
export class CheckFailedError extends EdgeExitError {}

/** Seeded uniform [0, 1) source (see src/util/random.ts); kept under this name for the check's callers. */
export const rng = mulberry32;

/**
 * `batch` images of uniformly random pixels, preprocessed as the model expects.
 *
 * @example
 * ```ts
 * import { randomImages } from 'edgeexit/compiler';
 * const batch = randomImages(manifest.input.preprocess, 4, 42); // { data: Float32Array, dims: [4, 1, 28, 28] }
 * ```
 */
export function randomImages(spec: PreprocessSpec, batch: number, seed: number): TensorData {
  const next = rng(seed);
  const [h, w] = spec.size;
  const channels = spec.colorspace === 'gray' ? 1 : 3;
  const pixels: RawPixels[] = Array.from({ length: batch }, () => ({
    data: Uint8Array.from({ length: h * w * channels }, () => Math.floor(next() * 256)),
    width: w,
    height: h,
    channels,
  }));
  return toTensor(pixels, spec);
}

/**
 * Sessions for a chain of stages, run the way the device runs them (minus the early stop).
 *
 * @example
 * ```ts
 * import { StageRunner } from 'edgeexit/compiler';
 * const runner = await StageRunner.open(stages); // CheckStage[]: stage bytes, inputs, outputs
 * const outputs = await runner.runAll({ input: image }); // every stage's outputs, handed over in turn
 * await runner.close();
 * ```
 */
export class StageRunner {
  private constructor(
    readonly stages: readonly CheckStage[],
    private readonly sessions: ModelSession[],
  ) {}

  static async open(stages: readonly CheckStage[], options: SessionOptions = {}): Promise<StageRunner> {
    const sessions: ModelSession[] = [];
    try {
      for (const s of stages) sessions.push(await createSession(s.bytes, options));
    } catch (err) {
      await Promise.all(sessions.map((s) => s.close()));
      throw err;
    }
    return new StageRunner(stages, sessions);
  }

  /** Run every stage on `feeds` (the graph inputs); returns each exit's output by exit name. */
  async runAll(feeds: Record<string, PlainTensor>): Promise<Record<string, OutputTensor>> {
    let alive: Record<string, PlainTensor> = { ...feeds };
    const exits: Record<string, OutputTensor> = {};
    for (const [k, stage] of this.stages.entries()) {
      const stageFeeds: Record<string, PlainTensor> = {};
      for (const name of stage.inputs) {
        const t = alive[name];
        if (!t) throw new Error(`internal: stage ${k} reads '${name}', which no earlier stage handed over`);
        stageFeeds[name] = t;
      }
      const out = await this.sessions[k]!.run(stageFeeds);
      exits[stage.exit] = out[stage.exit]!;
      const next: Record<string, PlainTensor> = {};
      for (const name of stage.carry) next[name] = out[name] ?? alive[name]!;
      alive = next;
    }
    return exits;
  }

  async close(): Promise<void> {
    await Promise.all(this.sessions.map((s) => s.close()));
  }
}

function argmaxRows(t: OutputTensor): number[] {
  const rows = t.dims[0] ?? 1;
  const per = t.data.length / rows;
  const data = t.data as ArrayLike<number>;
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let i = 1; i < per; i++) if (data[r * per + i]! > data[r * per + best]!) best = i;
    return best;
  });
}

class Accumulator {
  maxAbsDiff = 0;
  agree = 0;
  samples = 0;
  add(ref: OutputTensor, got: OutputTensor, where: string): void {
    if (ref.data.length !== got.data.length || ref.dims.join() !== got.dims.join()) {
      throw new CheckFailedError(`${where}: the compiled stage returns dims [${got.dims}] where the source model returns [${ref.dims}]`);
    }
    const a = ref.data as ArrayLike<number>;
    const b = got.data as ArrayLike<number>;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      // NaN must fail the check, and Math.max(NaN, x) is NaN; keep it visible as Infinity.
      this.maxAbsDiff = Math.max(this.maxAbsDiff, Number.isNaN(d) ? Infinity : d);
    }
    const ra = argmaxRows(ref);
    const rb = argmaxRows(got);
    ra.forEach((c, i) => (this.agree += c === rb[i] ? 1 : 0));
    this.samples += ra.length;
  }
}

export interface CheckOptions {
  /** The source model file's bytes. */
  source: Uint8Array;
  inputName: string;
  preprocess: PreprocessSpec;
  stages: readonly CheckStage[];
  precision?: string;
  tolerance?: number;
  /** Batch sizes of the random inputs (default 1 and 4; a model with a fixed batch gets only that). */
  batchSizes?: readonly number[];
  /** ImageFolder to compare on as well. */
  calibration?: { dir: string; labels?: readonly string[]; limit?: number };
  session?: SessionOptions;
}

async function compareOn(
  original: ModelSession,
  runner: StageRunner,
  inputName: string,
  batches: TensorData[],
  accs: Accumulator[],
): Promise<void> {
  for (const batch of batches) {
    const feeds = { [inputName]: { data: batch.data, dims: batch.dims } };
    const ref = await original.run(feeds, runner.stages.map((s) => s.exit));
    const got = await runner.runAll(feeds);
    runner.stages.forEach((s, k) => accs[k]!.add(ref[s.exit]!, got[s.exit]!, `stage ${k} exit '${s.exit}'`));
  }
}

function toSet(source: string, stages: readonly CheckStage[], accs: Accumulator[]): CheckSet {
  return {
    source,
    samples: accs[0]?.samples ?? 0,
    exits: stages.map((s, k) => ({
      stage: k,
      exit: s.exit,
      maxAbsDiff: accs[k]!.maxAbsDiff,
      top1Agreement: accs[k]!.samples ? accs[k]!.agree / accs[k]!.samples : 1,
      samples: accs[k]!.samples,
    })),
  };
}

/** Pick `limit` items spread over the whole (class-sorted) list, so every class shows up. */
function spread<T>(items: readonly T[], limit: number): T[] {
  if (items.length <= limit) return [...items];
  return Array.from({ length: limit }, (_, i) => items[Math.floor((i * items.length) / limit)]!);
}

/**
 * Compare the stages with the source model; does not throw on a mismatch (see `passed`).
 *
 * @example
 * ```ts
 * import { checkStages } from 'edgeexit/compiler';
 * const r = await checkStages({ source: modelBytes, inputName: 'input', preprocess: spec, stages, tolerance: 1e-5 });
 * if (!r.passed) console.error('the stages disagree with the source model');
 * ```
 */
export async function checkStages(opts: CheckOptions): Promise<CheckResult> {
  const tolerance = opts.tolerance ?? 1e-5;
  const session = { graphOptimizationLevel: 'all', ...opts.session } as SessionOptions;
  const original = await createSession(opts.source, session);
  let runner: StageRunner | undefined;
  try {
    runner = await StageRunner.open(opts.stages, session);
    const accs = opts.stages.map(() => new Accumulator());
    const sizes = opts.batchSizes ?? [1, 4];
    await compareOn(original, runner, opts.inputName, sizes.map((b, i) => randomImages(opts.preprocess, b, i + 1)), accs);
    const result: CheckResult = {
      precision: opts.precision ?? 'fp32',
      tolerance,
      passed: true,
      random: toSet(`random images (${sizes.map((b) => `batch ${b}`).join(' + ')})`, opts.stages, accs),
    };
    if (opts.calibration) {
      const folder = await scanImageFolder(opts.calibration.dir, opts.calibration.labels ? { labels: opts.calibration.labels } : {});
      const items = spread(folder.items, opts.calibration.limit ?? 256);
      const calAccs = opts.stages.map(() => new Accumulator());
      const skipped: { file: string; error: string }[] = [];
      // A model with a fixed batch size can only take batches of exactly that size.
      const fixed = opts.batchSizes?.length === 1 ? opts.batchSizes[0]! : undefined;
      const step = fixed ?? 32;
      for (let i = 0; i + (fixed ?? 1) <= items.length; i += step) {
        const chunk = items.slice(i, i + step);
        const prepared = await prepareBatch(chunk.map((it) => it.file), opts.preprocess);
        for (const f of prepared.failures) skipped.push({ file: f.name, error: f.error.message });
        if (prepared.indices.length > 0 && (fixed === undefined || prepared.indices.length === fixed)) await compareOn(original, runner, opts.inputName, [prepared.tensor], calAccs);
      }
      result.calibration = { ...toSet(opts.calibration.dir, opts.stages, calAccs), skipped };
    }
    const all = [...result.random.exits, ...(result.calibration?.exits ?? [])];
    result.passed = all.every((e) => e.maxAbsDiff <= tolerance);
    return result;
  } finally {
    await runner?.close();
    await original.close();
  }
}
