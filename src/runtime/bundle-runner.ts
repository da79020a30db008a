// Running a compiled bundle: verify it (hashes and signature, before any byte of it is parsed
// as a model), open one onnxruntime session per stage with the device profile's providers and
// threads, and hand the sessions to the runner of the bundle's model family (families/: the
// multi-exit cascade, or a CBNet run order). classify.ts preprocesses and batches for every
// family; types.ts holds what classify takes and gives (re-exported here).
//
// The stage models are opened from the very bytes that were verified (never re-read from disk),
// so a file swapped between verification and loading cannot slip in.
import type { KeyObject } from 'node:crypto';
import os from 'node:os';
import { loadBundleFiles, verifyLoadedBundle, type LoadedBundle, type VerifyResult } from '../bundle/files.js';
import { defaultTrustDir, loadTrustStore } from '../bundle/trust.js';
import type { Manifest } from '../bundle/manifest.js';
import { loadDeviceProfile } from '../devices/load.js';
import { InputError, UnsupportedError, formatProblem } from '../util/errors.js';
import { createSession, type ModelSession, type SessionOptions } from '../backends/onnxruntime.js';
import { decodeModel, encodeModel } from '../onnx/index.js';
import { buildIfGraph } from '../model/if-graph.js';
import { buildChainGraph } from '../model/chain-graph.js';
import type { StageModel } from '../model/stage-copy.js';
import { blankInput, inputShapeOf, makeClassify } from './classify.js';
import type { RunnerFamily } from './families/family.js';
import { runnerFamily } from './families/registry.js';
import type { BundleRunner } from './types.js';

export { DEFAULT_BATCH_SIZE } from './classify.js';
export { RUNNER_KINDS } from './families/registry.js';
export type { BundleRunner, ClassifyItem, ClassifyOptions, ClassifyResult, FailedInput, Prediction } from './types.js';

export interface LoadBundleOptions {
  /**
   * Public key (PEM path or key object): trust exactly this key (the trust store's revocations
   * still apply). Without one, the bundle must be signed with a key in the trust store.
   */
  publicKey?: string | KeyObject;
  /** Trust store folder (see `edgeexit trust`). Default: defaultTrustDir() ($EDGEEXIT_TRUST_DIR, else ~/.config/edgeexit/trust). */
  trustDir?: string;
  /**
   * Load a bundle whose signature cannot be checked (unsigned, or signed with a key not trusted
   * here), with a warning on every load. A signature that is checked and fails, or a revoked key,
   * is refused all the same. Default false: an unchecked bundle is refused.
   */
  allowUnsigned?: boolean;
  /** Signatures are required by default now; kept so older callers compile. Wins over allowUnsigned. */
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
  /**
   * Multi-exit bundles of 2+ stages: also open the stages fused into one If-graph (see
   * model/if-graph.ts) and run batch-1 calls with the max-prob metric on it: one onnxruntime
   * call per image, exit decided inside the graph, carried tensors never copied into JS.
   * Other calls run the stages as usual. Default false.
   */
  fused?: boolean;
  /**
   * Multi-exit bundles of 2+ stages: run calls whose thresholds are null (every sample to the
   * last exit) on the stages joined into one session that computes the last exit only
   * (model/chain-graph.ts), opened at the first such call (at load for a bundle without
   * thresholds): no per-stage calls, hand-overs or exit heads before the last. It holds one
   * more session's memory once opened. Default true.
   */
  chain?: boolean;
}

/** Where the sessions run: the device profile used, its providers and threads after the options. */
interface Placement {
  device: string | null;
  eps: string[] | undefined;
  threads: number | undefined;
}

/**
 * Read the bundle and check every hash and the signature (against `publicKey` or the trust
 * store) before anything of it is parsed as a model. Unless allowUnsigned, a signature that
 * was not checked refuses the bundle; with it, every load warns.
 */
async function readVerified(pathOrTar: string, opts: LoadBundleOptions, warn: (l: string) => void): Promise<{ files: LoadedBundle; verified: VerifyResult }> {
  const trust = await loadTrustStore(opts.trustDir ?? defaultTrustDir());
  const files = await loadBundleFiles(pathOrTar);
  const required = opts.requireSignature === true || opts.allowUnsigned !== true;
  const verified = await verifyLoadedBundle(files, {
    ...(opts.publicKey !== undefined ? { publicKey: opts.publicKey } : {}),
    trust,
    requireSignature: required,
  });
  const sig = verified.signature;
  if (sig.status !== 'valid') {
    const why = sig.status === 'unsigned' ? 'the bundle is unsigned' : sig.reason;
    warn(`warn: ${pathOrTar}: signature NOT checked (${why}); running it anyway because allowUnsigned (--allow-unsigned) was given — anyone who can write this bundle decides what this device runs`);
  }
  return { files, verified };
}

function checkThreads(threads: number | undefined): void {
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new InputError(formatProblem({ where: 'threads', expected: 'a positive integer', got: String(threads) }));
  }
}

async function resolveDevice(manifest: Manifest, opts: LoadBundleOptions, warn: (l: string) => void): Promise<Placement> {
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

/** Session options for a placement: its providers and threads, warnings to `onWarning`. */
function placed(at: Placement, onWarning: (line: string) => void): SessionOptions {
  return { ...(at.eps ? { executionProviders: at.eps } : {}), ...(at.threads !== undefined ? { intraOpNumThreads: at.threads } : {}), onWarning };
}

/** The manifest's stages with their models, decoded from the verified bytes (to build a graph of several). */
function stageModels(manifest: Manifest, files: LoadedBundle): StageModel[] {
  return manifest.stages.map((s) => ({ model: decodeModel(files.files.get(s.file)!), inputs: s.inputs, outputs: s.outputs }));
}

/** One session per manifest stage, from the verified bytes; on a failure the ones already open are closed. */
async function openStageSessions(manifest: Manifest, files: LoadedBundle, at: Placement, warn: (l: string) => void): Promise<ModelSession[]> {
  const sessions: ModelSession[] = [];
  const warnings = new Set<string>();
  try {
    for (const s of manifest.stages) {
      // Every stage would repeat the same fallback warning; say it once.
      sessions.push(await createSession(files.files.get(s.file)!, placed(at, (line) => warnings.add(line))));
    }
  } catch (err) {
    await closeAll(sessions);
    throw err;
  }
  for (const w of warnings) warn(w);
  return sessions;
}

/**
 * The If-graph session over the same verified bytes the stage sessions were opened from (built
 * here, not shipped: it adds no file to the bundle and no byte to sign).
 */
async function openFusedSession(manifest: Manifest, files: LoadedBundle, at: Placement, source: string): Promise<ModelSession> {
  const fused = buildIfGraph(stageModels(manifest, files), { input: manifest.input.name, classes: manifest.labels.length, source: `${source} (fused)` });
  // The stage sessions already said any provider fallback.
  return createSession(encodeModel(fused), placed(at, () => {}));
}

/**
 * Opens the joined-chain session from the verified bytes at first need (see
 * LoadBundleOptions.chain); a chain that cannot be joined is said in one line and the stages
 * run as usual.
 */
function chainOpener(manifest: Manifest, files: LoadedBundle, at: Placement, source: string, warn: (l: string) => void): () => Promise<ModelSession | undefined> {
  return async () => {
    try {
      const chain = buildChainGraph(stageModels(manifest, files), { source: `${source} (chain)` });
      return await createSession(encodeModel(chain), placed(at, () => {}));
    } catch (err) {
      warn(`warn: ${source}: could not join the stages into one session (${err instanceof Error ? err.message : String(err)}); runs to the last exit go stage by stage`);
      return undefined;
    }
  };
}

async function closeAll(sessions: readonly ModelSession[]): Promise<void> {
  await Promise.all(sessions.map((s) => s.close()));
}

/** Each exit that gives class logits must have as many classes as the manifest has labels. */
function checkClassCounts(source: string, manifest: Manifest, family: RunnerFamily, sessions: readonly ModelSession[]): void {
  const labels = manifest.labels;
  for (const k of family.logitStages(manifest)) {
    const exit = manifest.stages[k]!.exit;
    const classes = sessions[k]!.outputs.find((o) => o.name === exit)?.shape[1];
    if (typeof classes === 'number' && classes !== labels.length) {
      throw new UnsupportedError(`${source}: stage ${k}'s exit '${exit}' has ${classes} classes but the manifest lists ${labels.length} labels`);
    }
  }
}

/** The family's runner over open sessions, warmed up unless told not to; closes the sessions when that fails. */
async function buildRunner(source: string, verified: VerifyResult, family: RunnerFamily, sessions: ModelSession[], at: Placement, warmup: boolean, warn: (line: string) => void, extra: { fused?: ModelSession; openChain?: () => Promise<ModelSession | undefined> }): Promise<BundleRunner> {
  const manifest = verified.manifest;
  const { fused, openChain } = extra;
  const all = fused ? [...sessions, fused] : sessions;
  let runner: ReturnType<RunnerFamily['build']> | undefined;
  const close = async (): Promise<void> => {
    await runner?.close?.();
    await closeAll(all);
  };
  try {
    checkClassCounts(source, manifest, family, sessions);
    runner = family.build({ source, manifest, sessions, ...(fused ? { fused } : {}), ...(openChain ? { openChain } : {}) });
    const shape = inputShapeOf(manifest);
    // onnxruntime allocates and plans on a session's first run (measured ~7 ms vs ~0.3 ms after,
    // fmnist-branchy on x86); without this the first image's latency would be mostly start-up.
    if (warmup) await runner.warmup(blankInput(shape));
    return {
      source,
      manifest,
      signature: verified.signature,
      device: at.device,
      executionProviders: sessions[0]?.executionProviders ?? [],
      threads: at.threads,
      classify: makeClassify(source, manifest, runner, shape, warn),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * Verify a bundle folder or archive and open it for inference: hashes and the signature are
 * checked before any model byte is parsed (the signature against `publicKey`, else against the
 * trust store; an unsigned or untrusted bundle is refused unless `allowUnsigned`), one session per stage opens with the device
 * profile's providers and threads, and every stage runs once on a blank image (`warmup`).
 * Throws BundleIntegrityError on a bad hash or signature, UnsupportedError for a manifest kind
 * this runtime has no runner for.
 *
 * @example
 * ```ts
 * import { loadBundle } from 'edgeexit/runtime';
 *
 * const runner = await loadBundle('fmnist-branchy.tar', { device: 'rpi4' }); // signed with a key in ~/.config/edgeexit/trust
 * const result = await runner.classify(['frame-0001.png']);
 * console.log(result.items[0]);
 * await runner.close();
 * ```
 */
export async function loadBundle(pathOrTar: string, opts: LoadBundleOptions = {}): Promise<BundleRunner> {
  const warn = opts.onWarning ?? ((line: string) => void process.stderr.write(line + '\n'));
  const { files, verified } = await readVerified(pathOrTar, opts, warn);
  const manifest = verified.manifest;
  const family = runnerFamily(manifest.kind, pathOrTar);
  family.check(manifest, pathOrTar);
  checkThreads(opts.threads);
  const at = await resolveDevice(manifest, opts, warn);
  const sessions = await openStageSessions(manifest, files, at, warn);
  let fused: ModelSession | undefined;
  if (opts.fused && manifest.kind === 'multi-exit' && manifest.stages.length >= 2) {
    try {
      fused = await openFusedSession(manifest, files, at, pathOrTar);
    } catch (err) {
      await closeAll(sessions);
      throw err;
    }
  }
  const openChain = opts.chain !== false && manifest.kind === 'multi-exit' && manifest.stages.length >= 2 ? chainOpener(manifest, files, at, pathOrTar, warn) : undefined;
  return buildRunner(pathOrTar, verified, family, sessions, at, opts.warmup ?? true, warn, { ...(fused ? { fused } : {}), ...(openChain ? { openChain } : {}) });
}
