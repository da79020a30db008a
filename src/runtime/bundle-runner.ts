// Running a compiled bundle: verify it (hashes and signature, before any byte of it is parsed
// as a model), open one onnxruntime session per stage with the device profile's providers and
// threads, preprocess images as the manifest says, and classify through the early-exit cascade.
//
// The stage models are opened from the very bytes that were verified (never re-read from disk),
// so a file swapped between verification and loading cannot slip in.
import type { KeyObject } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { loadBundleFiles, verifyLoadedBundle, type VerifyResult } from '../compiler/bundle.js';
import type { Manifest } from '../compiler/manifest.js';
import { loadDeviceProfile } from '../devices/load.js';
import { InputError, UnsupportedError, formatProblem, type EdgeExitError } from '../util/errors.js';
import { runCascade, type CascadeStage } from './cascade.js';
import { EXIT_POLICIES, resolveExitPolicy, type ExitMetric, type ResolvedExitPolicy } from './exit-policy.js';
import { prepareBatch, type ImageInput, type PreprocessSpec, type TensorData } from './image.js';
import { createSession, type ModelSession } from './ort.js';

/**
 * Default samples per cascade run. Bounded rather than "everything" because image lists are
 * decoded batch by batch: a folder of 10 000 camera images must not be held decoded at once.
 */
export const DEFAULT_BATCH_SIZE = 64;

export interface LoadBundleOptions {
  /** Public key (PEM path or key object); given one, the bundle must be signed with it. */
  publicKey?: string | KeyObject;
  /** Refuse an unsigned bundle, or a signed one when no key is given to check it. */
  requireSignature?: boolean;
  /**
   * Device profile id or path whose executionProviders and threads the sessions use. Default:
   * the bundle's target device, or plain CPU when that profile is not known here.
   */
  device?: string;
  /** Overrides the profile's providers (in order of preference). */
  executionProviders?: string[];
  /** Overrides the profile's intra-op threads. A profile's value is capped at this machine's cores. */
  threads?: number;
  /** Receives warnings (provider fallback, unknown target device). Default: stderr. */
  onWarning?: (line: string) => void;
  /** Run every stage once on a blank image at load (default true), see loadBundle. */
  warmup?: boolean;
}

export interface ClassifyOptions {
  /** One per exit but the last; null = run to the last exit. Default: the manifest's. */
  thresholds?: readonly number[] | null;
  /** Default: the manifest's. Thresholds must be given when it differs from the manifest's. */
  metric?: ExitMetric;
  /** Softmax temperature per exit. Default: the manifest's. */
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
  exit: number;
  exitName: string;
  /** Run time of each stage the sample went through; with batches, the batch's run of that stage. */
  stageLatencyMs: number[];
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
  /** Samples per exit. */
  exitCounts: number[];
  timing: {
    /** Decoding and normalising images. */
    preprocessMs: number;
    /** Σ over batches of the whole cascade. */
    cascadeMs: number;
    /** Σ over batches of each stage's run time. */
    stageMs: number[];
    /** cascadeMs − Σ stageMs: what the cascade itself costs (scoring, slicing, bookkeeping). */
    overheadMs: number;
    batches: number;
  };
}

export interface BundleRunner {
  readonly source: string;
  readonly manifest: Manifest;
  readonly signature: VerifyResult['signature'];
  /** The device profile used, or null when none applied. */
  readonly device: string | null;
  /** Providers the sessions actually use (after fallback). */
  readonly executionProviders: readonly string[];
  readonly threads: number | undefined;
  classify(inputs: readonly ImageInput[] | TensorData, options?: ClassifyOptions): Promise<ClassifyResult>;
  close(): Promise<void>;
}

async function resolveDevice(manifest: Manifest, opts: LoadBundleOptions, warn: (l: string) => void): Promise<{ device: string | null; eps: string[] | undefined; threads: number | undefined }> {
  let device: string | null = null;
  let eps: string[] | undefined;
  let threads: number | undefined;
  if (opts.device !== undefined) {
    const p = await loadDeviceProfile(opts.device);
    device = p.id;
    eps = [...p.executionProviders];
    threads = p.threads;
  } else {
    try {
      const p = await loadDeviceProfile(manifest.target.device);
      device = p.id;
      eps = [...p.executionProviders];
      threads = p.threads;
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      warn(`warn: device profile '${manifest.target.device}' (the bundle's target) is not known here — running on cpu with onnxruntime's default threads`);
    }
  }
  // A profile describes its board; on a smaller machine its thread count would oversubscribe.
  if (threads !== undefined) threads = Math.min(threads, os.availableParallelism());
  if (opts.executionProviders?.length) eps = [...opts.executionProviders];
  if (opts.threads !== undefined) threads = opts.threads;
  return { device, eps, threads };
}

/** Verify a bundle folder or archive and open it for inference. Throws BundleIntegrityError on a bad hash or signature. */
export async function loadBundle(pathOrTar: string, opts: LoadBundleOptions = {}): Promise<BundleRunner> {
  const warn = opts.onWarning ?? ((line: string) => void process.stderr.write(line + '\n'));
  const files = await loadBundleFiles(pathOrTar);
  const verified = await verifyLoadedBundle(files, {
    ...(opts.publicKey !== undefined ? { publicKey: opts.publicKey } : {}),
    ...(opts.requireSignature ? { requireSignature: true } : {}),
  });
  const manifest = verified.manifest;
  if (manifest.kind !== 'multi-exit') {
    throw new UnsupportedError(`${pathOrTar}: bundle kind '${manifest.kind}' cannot be run yet (only multi-exit)`);
  }
  if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 1)) {
    throw new InputError(formatProblem({ where: 'threads', expected: 'a positive integer', got: String(opts.threads) }));
  }
  const { device, eps, threads } = await resolveDevice(manifest, opts, warn);

  const sessions: ModelSession[] = [];
  const warnings = new Set<string>();
  try {
    for (const s of manifest.stages) {
      sessions.push(
        await createSession(files.files.get(s.file)!, {
          ...(eps ? { executionProviders: eps } : {}),
          ...(threads !== undefined ? { intraOpNumThreads: threads } : {}),
          // Every stage would repeat the same fallback warning; say it once.
          onWarning: (line) => warnings.add(line),
        }),
      );
    }
  } catch (err) {
    await Promise.all(sessions.map((s) => s.close()));
    throw err;
  }
  for (const w of warnings) warn(w);

  const labels = manifest.labels;
  for (const [k, s] of sessions.entries()) {
    const exitInfo = s.outputs.find((o) => o.name === manifest.stages[k]!.exit);
    const classes = exitInfo?.shape[1];
    if (typeof classes === 'number' && classes !== labels.length) {
      await Promise.all(sessions.map((x) => x.close()));
      throw new UnsupportedError(`${pathOrTar}: stage ${k}'s exit '${manifest.stages[k]!.exit}' has ${classes} classes but the manifest lists ${labels.length} labels`);
    }
  }

  const stages: CascadeStage[] = manifest.stages.map((s, k) => ({
    inputs: s.inputs,
    exit: s.exit,
    carry: s.carry,
    outputs: s.outputs,
    run: (feeds, outputs) => sessions[k]!.run(feeds, outputs),
  }));
  const exitNames = manifest.stages.map((s) => s.exit);
  const spec: PreprocessSpec = { ...manifest.input.preprocess, size: [...manifest.input.preprocess.size] };
  const [h, w] = spec.size;
  const c = spec.colorspace === 'rgb' ? 3 : 1;
  const per = c * h * w;

  // onnxruntime allocates and plans on a session's first run (measured ~7 ms vs ~0.3 ms after,
  // fmnist-branchy on x86); without this the first image's latency would be mostly start-up.
  if (opts.warmup ?? true) {
    try {
      await runCascade(stages, manifest.input.name, { data: new Float32Array(per), dims: [1, c, h, w] }, resolveExitPolicy('max-prob', null, exitNames.map(() => 1), exitNames));
    } catch (err) {
      await Promise.all(sessions.map((x) => x.close()));
      throw err;
    }
  }

  function policyFor(o: ClassifyOptions): ResolvedExitPolicy {
    const metric = o.metric ?? manifest.exitPolicy.metric;
    if (metric !== manifest.exitPolicy.metric && o.thresholds === undefined && manifest.exitPolicy.thresholds !== null) {
      throw new InputError(
        `metric ${metric}: the bundle's thresholds were calibrated for ${manifest.exitPolicy.metric}; give thresholds for ${metric} (${EXIT_POLICIES[metric].summary}), or null to run to the last exit`,
      );
    }
    const thresholds = o.thresholds === undefined ? manifest.exitPolicy.thresholds : o.thresholds;
    return resolveExitPolicy(metric, thresholds, o.temperatures ?? manifest.exitPolicy.temperatures, exitNames);
  }

  async function classify(inputs: readonly ImageInput[] | TensorData, o: ClassifyOptions = {}): Promise<ClassifyResult> {
    const policy = policyFor(o);
    if (o.batchSize !== undefined && (!Number.isInteger(o.batchSize) || o.batchSize < 1)) {
      throw new InputError(formatProblem({ where: 'batch size', expected: 'a positive integer', got: String(o.batchSize) }));
    }
    const items: ClassifyItem[] = [];
    const timing: ClassifyResult['timing'] = { preprocessMs: 0, cascadeMs: 0, stageMs: stages.map(() => 0), overheadMs: 0, batches: 0 };

    // Runs the cascade over `tensor` in batchSize chunks; rows[i] is the input index of row i.
    const runRows = async (tensor: TensorData, rows: readonly number[], nameOf: (i: number) => string): Promise<void> => {
      const batch = o.batchSize ?? DEFAULT_BATCH_SIZE;
      for (let start = 0; start < rows.length; start += batch) {
        const end = Math.min(rows.length, start + batch);
        const chunk =
          start === 0 && end === rows.length
            ? tensor
            : // A view, not a copy: onnxruntime-node 1.30 honours the view's offset (checked; the
              // batch-16 tests compare every chunk with the reference).
              { data: tensor.data.subarray(start * per, end * per), dims: [end - start, ...tensor.dims.slice(1)] };
        const r = await runCascade(stages, manifest.input.name, chunk, policy);
        timing.cascadeMs += r.totalMs;
        timing.overheadMs += r.overheadMs;
        timing.batches++;
        r.stageMs.forEach((ms, k) => (timing.stageMs[k]! += ms));
        r.samples.forEach((s, i) => {
          const index = rows[start + i]!;
          items.push({ ok: true, index, name: nameOf(index), label: labels[s.classIndex] ?? String(s.classIndex), exitName: exitNames[s.exit]!, ...s });
        });
      }
    };

    if (!Array.isArray(inputs)) {
      const t = inputs as TensorData;
      const dims = t.dims;
      if (dims.length !== 4 || dims[1] !== c || dims[2] !== h || dims[3] !== w || t.data.length !== (dims[0] ?? 0) * per) {
        throw new InputError(
          formatProblem({ where: 'input tensor', expected: `NCHW dims [N,${c},${h},${w}] (${manifest.input.name})`, got: `dims [${dims.join(',')}] with ${t.data.length} values` }),
        );
      }
      const n = dims[0]!;
      await runRows(t, Array.from({ length: n }, (_, i) => i), (i) => `row #${i}`);
    } else {
      const list = inputs as readonly ImageInput[];
      const nameOf = (i: number): string => {
        const x = list[i]!;
        if (typeof x === 'string') return x;
        if (x instanceof Uint8Array) return `image #${i}`;
        return x.name ?? `image #${i}`;
      };
      // Decode in windows so a long list of files is neither decoded one by one (slow) nor held
      // in memory all at once; a window is a whole number of batches.
      const batch = o.batchSize ?? DEFAULT_BATCH_SIZE;
      const window = batch * Math.max(1, Math.ceil(64 / batch));
      for (let start = 0; start < list.length; start += window) {
        const slice = list.slice(start, start + window);
        const p0 = performance.now();
        const prepared = await prepareBatch(slice, spec);
        timing.preprocessMs += performance.now() - p0;
        for (const f of prepared.failures) items.push({ ok: false, index: start + f.index, name: f.name, error: f.error });
        await runRows(prepared.tensor, prepared.indices.map((i) => start + i), nameOf);
      }
    }
    items.sort((a, b) => a.index - b.index);
    const exitCounts = stages.map(() => 0);
    for (const it of items) if (it.ok) exitCounts[it.exit]!++;
    return { items, metric: policy.policy.metric, thresholds: policy.thresholds, temperatures: policy.temperatures, exitCounts, timing };
  }

  return {
    source: pathOrTar,
    manifest,
    signature: verified.signature,
    device,
    executionProviders: sessions[0]?.executionProviders ?? [],
    threads,
    classify,
    async close() {
      await Promise.all(sessions.map((s) => s.close()));
    },
  };
}

