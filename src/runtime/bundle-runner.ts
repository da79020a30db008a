// Running a compiled bundle: verify it (hashes and signature, before any byte of it is parsed
// as a model), open one onnxruntime session per stage with the device profile's providers and
// threads, preprocess images as the manifest says, and classify through the early-exit cascade
// (multi-exit) or through a CBNet run order (cbnet: see cbnet-cascade.ts).
//
// Exit numbering of cbnet bundles: `exit` indexes the run order of the policy used, and
// `exitName` names the exit point. Policy hybrid: exit 0 = 'classifier<-image' (the classifier
// on the raw image), exit 1 = 'classifier<-converter' (converter, then classifier). Policy cbnet:
// exit 0 = 'classifier<-converter' (its only exit point). Thresholds and temperatures count the
// exit points of the policy used (hybrid: 1 threshold, 2 temperatures; cbnet: none, 1).
//
// The stage models are opened from the very bytes that were verified (never re-read from disk),
// so a file swapped between verification and loading cannot slip in.
import type { KeyObject } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { loadBundleFiles, verifyLoadedBundle, type VerifyResult } from '../bundle/files.js';
import type { CbnetExitPoint, Manifest } from '../bundle/manifest.js';
import { loadDeviceProfile } from '../devices/load.js';
import { InputError, UnsupportedError, formatProblem, show, type EdgeExitError } from '../util/errors.js';
import { runCascade, type CascadeSample, type CascadeStage } from './cascade.js';
import { CBNET_POLICIES, runCbnetBatch, type CbnetModels, type CbnetPolicy, type CbnetRun, type CbnetRunName } from './cbnet-cascade.js';
import { EXIT_POLICIES, resolveExitPolicy, type ExitMetric, type ResolvedExitPolicy } from './exit-policy.js';
import { channelError, prepareBatch, type ImageInput, type PreprocessSpec, type TensorData } from '../backends/image.js';
import { asFloat32, createSession, type ModelSession, type PlainTensor } from '../backends/onnxruntime.js';

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
  /** Run time of each stage the sample went through; with batches, the batch's run of that stage. */
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
  const pipeline = manifest.kind === 'cbnet' ? manifest.pipeline : undefined;
  if (manifest.kind === 'cbnet' && !pipeline) throw new UnsupportedError(`${pathOrTar}: cbnet bundle without a pipeline section`);
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
    // The converter's "exit" is an image, not logits.
    if (pipeline && k !== pipeline.classifier.stage) continue;
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
  const cbnetModels: CbnetModels | undefined = pipeline
    ? {
        convert: async (image) => {
          const out = await sessions[pipeline.converter.stage]!.run({ [pipeline.converter.input]: image }, [pipeline.converter.output]);
          return asFloat32(out[pipeline.converter.output]!, pipeline.converter.output);
        },
        classify: async (x) => {
          const out = await sessions[pipeline.classifier.stage]!.run({ [pipeline.classifier.input]: x }, [pipeline.classifier.exit]);
          return out[pipeline.classifier.exit]! as PlainTensor;
        },
        ...(pipeline.backbone
          ? {
              backbone: {
                inputName: manifest.input.name,
                stages: new Map(
                  pipeline.backbone.map((k) => {
                    const st = manifest.stages[k]!;
                    return [st.exit, { inputs: st.inputs, exit: st.exit, carry: st.carry, run: (feeds: Record<string, PlainTensor>, outs: readonly string[]) => sessions[k]!.run(feeds, outs) as Promise<Record<string, PlainTensor>> }] as const;
                  }),
                ),
              },
            }
          : {}),
      }
    : undefined;
  const spec: PreprocessSpec = { ...manifest.input.preprocess, size: [...manifest.input.preprocess.size] };
  const [h, w] = spec.size;
  const c = spec.colorspace === 'rgb' ? 3 : 1;
  const per = c * h * w;

  // onnxruntime allocates and plans on a session's first run (measured ~7 ms vs ~0.3 ms after,
  // fmnist-branchy on x86); without this the first image's latency would be mostly start-up.
  if (opts.warmup ?? true) {
    try {
      const blank = { data: new Float32Array(per), dims: [1, c, h, w] };
      if (cbnetModels) {
        // Threshold 0 lets the sample leave at the image exit point, so run the converter path too.
        await cbnetModels.classify(blank);
        await runCbnetBatch(cbnetModels, ['classifier<-converter'], blank, resolveExitPolicy('max-prob', null, [1], ['classifier<-converter']));
        const deep = pipeline!.policies.hybrid.filter((p) => p.startsWith('backbone:'));
        if (deep.length) await runCbnetBatch(cbnetModels, deep, blank, resolveExitPolicy('max-prob', null, deep.map(() => 1), deep));
      } else await runCascade(stages, manifest.input.name, blank, resolveExitPolicy('max-prob', null, exitNames.map(() => 1), exitNames));
    } catch (err) {
      await Promise.all(sessions.map((x) => x.close()));
      throw err;
    }
  }

  interface Plan {
    policy: ResolvedExitPolicy;
    exitNames: string[];
    /** cbnet only. */
    cbnet?: { name: CbnetPolicy; order: readonly CbnetExitPoint[] };
  }

  // A plan (resolved and validated policy) depends on four options only; at batch 1 resolving it
  // anew per call is a measurable share of a 50 µs inference, so the last few are kept.
  const plans = new Map<string, Plan>();
  function cachedPlan(o: ClassifyOptions): Plan {
    const key = o.policy === undefined && o.thresholds === undefined && o.metric === undefined && o.temperatures === undefined ? '' : JSON.stringify([o.policy, o.thresholds, o.metric, o.temperatures]);
    let plan = plans.get(key);
    if (!plan) {
      plan = planFor(o);
      if (plans.size >= 16) plans.delete(plans.keys().next().value!);
      plans.set(key, plan);
    }
    return plan;
  }

  function planFor(o: ClassifyOptions): Plan {
    if (o.policy !== undefined && !pipeline) {
      throw new InputError(
        formatProblem({
          where: 'policy',
          message: `only cbnet bundles have run-order policies (${CBNET_POLICIES.join(', ')}); ${pathOrTar} is a ${manifest.kind} bundle, whose exits run in stage order (${exitNames.join(', ')})`,
          fix: 'leave the policy out; thresholds choose where samples leave',
        }),
      );
    }
    if (o.policy !== undefined && !(CBNET_POLICIES as readonly string[]).includes(o.policy)) {
      throw new InputError(formatProblem({ where: 'policy', expected: `one of: ${CBNET_POLICIES.join(', ')}`, got: show(o.policy) }));
    }
    let names = exitNames;
    let manifestThresholds = manifest.exitPolicy.thresholds;
    let manifestTemps = manifest.exitPolicy.temperatures;
    let cbnet: Plan['cbnet'];
    if (pipeline) {
      const name = o.policy ?? pipeline.default;
      const order = name === 'cbnet' ? pipeline.policies.cbnet : pipeline.policies.hybrid;
      cbnet = { name, order };
      names = [...order];
      if (name === 'cbnet') {
        // The manifest's numbers count the hybrid's exit points; cbnet has one, which never needs a threshold.
        manifestThresholds = null;
        const at = pipeline.policies.hybrid.indexOf('classifier<-converter');
        manifestTemps = [at >= 0 ? manifest.exitPolicy.temperatures[at]! : 1];
      }
    }
    if (cbnet?.name === 'cbnet' && o.thresholds != null && o.thresholds.length > 0) {
      throw new InputError(
        formatProblem({
          where: 'thresholds',
          message: `policy cbnet has one exit point (classifier<-converter), which always answers; thresholds apply to policy hybrid (${pipeline!.policies.hybrid.join(', ')})`,
          got: show(o.thresholds),
          fix: "run policy 'hybrid' (--policy hybrid), or give no thresholds",
        }),
      );
    }
    const metric = o.metric ?? manifest.exitPolicy.metric;
    if (metric !== manifest.exitPolicy.metric && o.thresholds === undefined && manifestThresholds !== null) {
      throw new InputError(
        `metric ${metric}: the bundle's thresholds were calibrated for ${manifest.exitPolicy.metric}; give thresholds for ${metric} (${EXIT_POLICIES[metric].summary}), or null to run to the last exit`,
      );
    }
    const thresholds = o.thresholds === undefined ? manifestThresholds : o.thresholds;
    const policy = resolveExitPolicy(metric, thresholds, o.temperatures ?? manifestTemps, names);
    return { policy, exitNames: names, ...(cbnet ? { cbnet } : {}) };
  }

  /** One batch through the cascade or the CBNet run order, with timings by manifest stage. */
  async function runBatch(
    chunk: TensorData,
    plan: Plan,
  ): Promise<{ samples: (CascadeSample & { runs?: CbnetRunName[] })[]; stageMs: number[]; totalMs: number; overheadMs: number; runs?: CbnetRun[] }> {
    if (plan.cbnet && cbnetModels && pipeline) {
      const r = await runCbnetBatch(cbnetModels, plan.cbnet.order, chunk, plan.policy);
      const stageMs = stages.map(() => 0);
      const backboneStage = (name: string): number => pipeline.backbone!.find((k) => `backbone:${stages[k]!.exit}` === name)!;
      for (const run of r.runs) {
        stageMs[run.name === 'converter' ? pipeline.converter.stage : run.name.startsWith('backbone:') ? backboneStage(run.name) : pipeline.classifier.stage]! += run.ms;
      }
      return { samples: r.samples, stageMs, totalMs: r.totalMs, overheadMs: r.overheadMs, runs: r.runs };
    }
    return runCascade(stages, manifest.input.name, chunk, plan.policy);
  }

  // A stretched frame of another aspect ratio still classifies, only worse: say so once per runner.
  let stretchWarned = false;
  const warnStretched = (first: { name: string; width: number; height: number } | undefined): void => {
    if (!first || stretchWarned) return;
    stretchWarned = true;
    warn(stretchWarning(first, manifest.input.preprocess.size));
  };

  async function classify(inputs: readonly ImageInput[] | TensorData, o: ClassifyOptions = {}): Promise<ClassifyResult> {
    const plan = cachedPlan(o);
    if (o.batchSize !== undefined && (!Number.isInteger(o.batchSize) || o.batchSize < 1)) {
      throw new InputError(formatProblem({ where: 'batch size', expected: 'a positive integer', got: String(o.batchSize) }));
    }
    const items: ClassifyItem[] = [];
    const timing: ClassifyResult['timing'] = { preprocessMs: 0, cascadeMs: 0, stageMs: stages.map(() => 0), overheadMs: 0, batches: 0, ...(plan.cbnet ? { runs: [] } : {}) };

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
        const r = await runBatch(chunk, plan);
        timing.cascadeMs += r.totalMs;
        timing.overheadMs += r.overheadMs;
        timing.batches++;
        r.stageMs.forEach((ms, k) => (timing.stageMs[k]! += ms));
        for (const run of r.runs ?? []) {
          const t = timing.runs!.find((x) => x.name === run.name);
          if (t) {
            t.ms += run.ms;
            t.rows += run.rows;
          } else timing.runs!.push({ ...run });
        }
        r.samples.forEach((s, i) => {
          const index = rows[start + i]!;
          items.push({ ok: true, index, name: nameOf(index), label: labels[s.classIndex] ?? String(s.classIndex), exitName: plan.exitNames[s.exit]!, ...s });
        });
      }
    };

    if (!Array.isArray(inputs)) {
      const t = inputs as TensorData;
      const dims = t.dims;
      if (dims.length === 4 && dims[1] !== c) throw channelError(`input tensor for ${pathOrTar}`, 'tensor', c, spec, `${dims[1]} (dims [${dims.join(',')}])`);
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
        warnStretched(prepared.stretched[0]);
        for (const f of prepared.failures) items.push({ ok: false, index: start + f.index, name: f.name, error: f.error });
        await runRows(prepared.tensor, prepared.indices.map((i) => start + i), nameOf);
      }
    }
    items.sort((a, b) => a.index - b.index);
    const exitCounts = plan.exitNames.map(() => 0);
    for (const it of items) if (it.ok) exitCounts[it.exit]!++;
    const policy = plan.policy;
    return {
      items,
      metric: policy.policy.metric,
      // Copies: the plan is cached across calls.
      thresholds: policy.thresholds === null ? null : [...policy.thresholds],
      temperatures: [...policy.temperatures],
      exitNames: [...plan.exitNames],
      ...(plan.cbnet ? { policy: plan.cbnet.name } : {}),
      exitCounts,
      timing,
    };
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

/**
 * The one-line warning for an image stretched to another aspect ratio (resize policy `stretch`).
 *
 * @example
 * stretchWarning({ name: 'cam.jpg', width: 640, height: 480 }, [28, 28]); // 'warn: cam.jpg is 640×480 but the model reads 28×28: …'
 */
export function stretchWarning(img: { name: string; width: number; height: number }, size: readonly [number, number]): string {
  const [h, w] = size;
  return (
    `warn: ${img.name} is ${img.width}×${img.height} but the model reads ${w}×${h}: resize policy 'stretch' distorts its aspect ratio ` +
    `(fix: set "resize": "cover" or "contain" in the model's edgeexit.preprocess and compile again, or crop the images first)`
  );
}
