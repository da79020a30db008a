// Installing a bundle into the device's store (store.ts), one journal line per transition:
//
//   started → staged → verified → self-tested → active (trial) → committed
//                                                               ↘ rolled-back
//   any step before active can end in failed (the reason on the line); `current` never moved.
//
// Each line is fsync'd before the step it announces is taken, and every step can be taken twice
// without harm (staging is content-addressed, the pointer write is a rename), so a process killed
// anywhere leaves a state recoverStore() finishes: an unfinished job is rolled back (the pointer
// set back to the bundle that ran before it, which was never removed), because the checks that
// would let it go forward (the self-test, the caller's trial) ran in the process that died.
import { randomUUID } from 'node:crypto';
import { loadBundleFiles, verifyLoadedBundle, type LoadedBundle } from '../bundle/files.js';
import { MANIFEST_FILE, type Manifest } from '../bundle/manifest.js';
import { defaultTrustDir, loadTrustStore } from '../bundle/trust.js';
import { availableExecutionProviders } from '../backends/onnxruntime.js';
import { loadDeviceProfile } from '../devices/load.js';
import type { DeviceProfile } from '../devices/schema.js';
import { EdgeExitError, InputError, formatProblem } from '../util/errors.js';
import { FINAL_STATES, BundleStore, bundleId, type InstallState, type JournalEntry } from './store.js';
import { selfTestBundle, type SelfTestResult } from './selftest.js';
import { diskFullDuringWrite, isDiskFull, spaceShortfall } from './space.js';

/** Default number of earlier bundles kept for rollback. */
export const DEFAULT_KEEP = 2;

export interface TrialContext {
  id: string;
  dir: string;
  manifest: Manifest;
  /** The bundle it replaced (null: none). */
  from: string | null;
}

export interface InstallOptions {
  /** The store's folder. */
  root: string;
  /** Bundle folder or .tar to install. */
  bundle: string;
  /** Trust store the signature must check against (default defaultTrustDir()). */
  trustDir?: string;
  /** This device's profile id or path: the bundle must suit it (see checkCompatibility). Default: the bundle's own target. */
  device?: string;
  /** Providers to run with (default: the profile's). */
  executionProviders?: string[];
  threads?: number;
  /** What this device feeds the model; checked against the bundle's preprocess when given. */
  input?: { colorspace?: 'gray' | 'rgb'; size?: [number, number] };
  /** Allow a model version older than the active one (the operator asked for a rollback). */
  rollback?: boolean;
  /** Earlier bundles kept (default DEFAULT_KEEP). */
  keep?: number;
  /**
   * `bundle` is a folder that nothing writes in place (the agent's own download staging): its files
   * are hard-linked into the store instead of copied where the filesystem allows. Not for a folder
   * a person may edit: a link shares the edit. Default false.
   */
  linkFiles?: boolean;
  latencyBudgetMs?: number | readonly number[];
  memoryBudgetMiB?: number;
  /** Runs once the bundle is current; a failed trial rolls back with its reason. */
  trial?: (t: TrialContext) => Promise<{ ok: true } | { ok: false; reason: string }>;
  /** Called after each transition is on disk (tests kill the process here). */
  onStep?: (step: InstallState | 'self-test:loaded' | 'self-test:golden') => Promise<void> | void;
  onLog?: (line: string) => void;
}

export interface InstallResult {
  job: string;
  bundle: string;
  from: string | null;
  state: 'committed' | 'rolled-back' | 'failed' | 'unchanged';
  reason?: string;
  selfTest?: SelfTestResult;
  /** Jobs an earlier, interrupted run left, finished before this one started. */
  recovered: JournalEntry[];
}

/**
 * Order two model versions: dotted numeric parts compare by number, anything else as text;
 * negative when a < b, 0 when equal.
 *
 * @example
 * ```ts
 * import { compareVersions } from 'edgeexit/agent';
 * compareVersions('1.10.0', '1.9.0') > 0; // true
 * ```
 */
export function compareVersions(a: string, b: string): number {
  const pa = a.replace(/^v/, '').split(/[.+-]/);
  const pb = b.replace(/^v/, '').split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '0';
    const y = pb[i] ?? '0';
    const nx = Number(x);
    const ny = Number(y);
    const d = Number.isFinite(nx) && Number.isFinite(ny) ? nx - ny : x.localeCompare(y);
    if (d !== 0) return d;
  }
  return 0;
}

async function profileOrNull(id: string): Promise<DeviceProfile | null> {
  try {
    return await loadDeviceProfile(id);
  } catch (err) {
    if (err instanceof InputError) return null;
    throw err;
  }
}

/**
 * Whether `m` suits this device; one reason per mismatch. Device: the bundle's target profile is
 * this device's, or of the same kind (class). Precision: fp32, or the profile's own precision.
 * Providers: at least one the profile (or `executionProviders`) asks for is installed here.
 * Input: colour space and size, when the caller says what the device feeds.
 *
 * @example
 * ```ts
 * import { checkCompatibility } from 'edgeexit/agent';
 * const reasons = await checkCompatibility(manifest, { device: 'rpi4', input: { colorspace: 'gray' } });
 * ```
 */
export async function checkCompatibility(m: Manifest, o: Pick<InstallOptions, 'device' | 'executionProviders' | 'input'>): Promise<string[]> {
  const reasons: string[] = [];
  const profile = o.device !== undefined ? await loadDeviceProfile(o.device) : await profileOrNull(m.target.device);
  if (profile && profile.id !== m.target.device) {
    const target = await profileOrNull(m.target.device);
    if (!target || target.kind !== profile.kind) {
      reasons.push(`compiled for device '${m.target.device}'${target ? ` (${target.kind})` : ' (a profile unknown here)'}; this device is '${profile.id}' (${profile.kind}) — compile for ${profile.id}`);
    }
  }
  if (profile && m.target.precision !== 'fp32' && m.target.precision !== profile.precision.default) {
    reasons.push(`precision ${m.target.precision}; device '${profile.id}' runs fp32 or ${profile.precision.default}`);
  }
  const wanted = (o.executionProviders ?? (profile ? [...profile.executionProviders] : ['cpu'])).map((e) => e.toLowerCase());
  const installed = new Set(availableExecutionProviders().filter((p) => p.installed).map((p) => p.name.toLowerCase()));
  installed.add('cpu');
  if (!wanted.some((e) => installed.has(e))) reasons.push(`needs execution provider ${wanted.join(' or ')}; installed here: ${[...installed].join(', ')}`);
  const pre = m.input.preprocess;
  if (o.input?.colorspace && o.input.colorspace !== pre.colorspace) reasons.push(`reads ${pre.colorspace} images; this device feeds ${o.input.colorspace}`);
  if (o.input?.size && o.input.size.join('x') !== pre.size.join('x')) reasons.push(`reads ${pre.size.join('x')} inputs; this device feeds ${o.input.size.join('x')}`);
  return reasons;
}

/**
 * Finish what an interrupted install left: each unfinished job is rolled back (`current` set
 * back to the bundle it replaced) and marked so; half-written and unreferenced bundles are
 * removed. Idempotent; installBundle calls it first, the agent at start.
 *
 * @example
 * ```ts
 * import { BundleStore, recoverStore } from 'edgeexit/agent';
 * const done = await recoverStore(await BundleStore.open('/var/lib/edgeexit'));
 * ```
 */
export async function recoverStore(store: BundleStore, keep = DEFAULT_KEEP): Promise<JournalEntry[]> {
  const out: JournalEntry[] = [];
  for (const last of await store.jobs()) {
    if (FINAL_STATES.includes(last.state)) continue;
    if ((await store.current()) !== last.from) await store.setCurrent(last.from);
    const prev = await store.previous();
    if (last.from && prev.includes(last.from)) await store.setPrevious(prev.filter((p) => p !== last.from));
    out.push(await store.record({ job: last.job, state: 'rolled-back', bundle: last.bundle, from: last.from, reason: `interrupted after '${last.state}' (the installing process stopped); rolled back to ${last.from ?? 'no bundle'}` }));
  }
  await store.prune(keep);
  return out;
}

/**
 * recoverStore under the install lock; when another process is installing right now, its job is
 * not interrupted but live, so nothing is done. For the agent's start.
 *
 * @example
 * ```ts
 * import { BundleStore, recoverIfIdle } from 'edgeexit/agent';
 * await recoverIfIdle(await BundleStore.open('/var/lib/edgeexit'));
 * ```
 */
export async function recoverIfIdle(store: BundleStore, keep = DEFAULT_KEEP): Promise<JournalEntry[]> {
  let release: () => Promise<void>;
  try {
    release = await store.lock();
  } catch (err) {
    if (err instanceof InputError) return [];
    throw err;
  }
  try {
    return await recoverStore(store, keep);
  } finally {
    await release();
  }
}

function reasonOf(err: unknown): string {
  return err instanceof EdgeExitError || err instanceof Error ? err.message : String(err);
}

/** Verify the staged copy (hashes, signature against the trust store), then compatibility and version. */
async function verifyStaged(store: BundleStore, id: string, from: string | null, o: InstallOptions): Promise<{ files: LoadedBundle; manifest: Manifest } | { reason: string }> {
  let files: LoadedBundle;
  let manifest: Manifest;
  try {
    files = await loadBundleFiles(store.bundleDir(id));
    const trust = await loadTrustStore(o.trustDir ?? defaultTrustDir());
    manifest = (await verifyLoadedBundle(files, { trust, requireSignature: true })).manifest;
  } catch (err) {
    return { reason: reasonOf(err) };
  }
  const reasons = await checkCompatibility(manifest, o);
  if (reasons.length) return { reason: `incompatible with this device: ${reasons.join('; ')}` };
  if (from && !o.rollback) {
    const active = await store.manifestOf(from);
    if (active.model.name === manifest.model.name && compareVersions(manifest.model.version, active.model.version) < 0) {
      return { reason: `model ${manifest.model.name} ${manifest.model.version} is older than the active ${active.model.version}; pass --rollback if that is what you mean` };
    }
  }
  return { files, manifest };
}

/**
 * Install a bundle (folder or .tar) into the store at `o.root`: stage, verify, self-test,
 * switch, trial, commit, or refuse or roll back with the reason. The running bundle is never
 * touched before the self-test passed.
 *
 * @example
 * ```ts
 * import { installBundle } from 'edgeexit/agent';
 * const r = await installBundle({ root: '/var/lib/edgeexit', bundle: 'fmnist-branchy.tar', device: 'rpi4' });
 * if (r.state !== 'committed') console.error(`${r.state}: ${r.reason}`);
 * ```
 */
export async function installBundle(o: InstallOptions): Promise<InstallResult> {
  const store = await BundleStore.open(o.root);
  const release = await store.lock();
  try {
    const recovered = await recoverStore(store, o.keep ?? DEFAULT_KEEP);
    for (const r of recovered) o.onLog?.(`recovered: job ${r.job}: ${r.reason}`);
    const incoming = await loadBundleFiles(o.bundle);
    const manifestBytes = incoming.files.get(MANIFEST_FILE);
    if (!manifestBytes) throw new InputError(formatProblem({ where: o.bundle, message: `has no ${MANIFEST_FILE}`, fix: 'install a bundle made by `edgeexit compile`' }));
    const id = bundleId(manifestBytes);
    const from = await store.current();
    const job = randomUUID();
    if (id === from) return { job, bundle: id, from, state: 'unchanged', reason: 'this bundle is already active', recovered };
    // Refused before the journal's first line: a full disk must not cost the running bundle or the journal.
    const full = (await store.has(id)) ? undefined : await spaceShortfall(store.bundlesDir, bytesOf(incoming), `bundle ${id.slice(0, 12)}`);
    if (full) return { job, bundle: id, from, state: 'failed', reason: full.reason, recovered };
    return await runJob(store, { job, id, from, incoming, recovered }, o);
  } finally {
    await release();
  }
}

function bytesOf(b: LoadedBundle): number {
  let n = 0;
  for (const d of b.files.values()) n += d.length;
  return n;
}

interface Job {
  job: string;
  id: string;
  from: string | null;
  incoming: LoadedBundle;
  recovered: JournalEntry[];
}

async function runJob(store: BundleStore, j: Job, o: InstallOptions): Promise<InstallResult> {
  const { job, id, from, recovered } = j;
  const step = async (state: InstallState, extra: { reason?: string; detail?: unknown } = {}): Promise<void> => {
    await store.record({ job, state, bundle: id, from, ...extra });
    o.onLog?.(`install ${id.slice(0, 12)}: ${state}${extra.reason ? `: ${extra.reason}` : ''}`);
  };
  const fail = async (reason: string, selfTest?: SelfTestResult): Promise<InstallResult> => {
    await step('failed', { reason });
    await store.prune(o.keep ?? DEFAULT_KEEP);
    return { job, bundle: id, from, state: 'failed', reason, ...(selfTest ? { selfTest } : {}), recovered };
  };

  await step('started');
  try {
    await store.put(j.incoming.files, o.linkFiles === true ? o.bundle : undefined);
  } catch (err) {
    // Disk full or unwritable: writeBundleAtomic left nothing half-written; `current` is untouched.
    if (isDiskFull(err)) return fail((await diskFullDuringWrite(store.bundlesDir, bytesOf(j.incoming), `bundle ${id.slice(0, 12)}`, err)).reason);
    return fail(`staging: ${reasonOf(err)}`);
  }
  await step('staged');
  await o.onStep?.('staged');

  const v = await verifyStaged(store, id, from, o);
  if ('reason' in v) return fail(v.reason);
  await step('verified');
  await o.onStep?.('verified');

  let selfTest: SelfTestResult;
  try {
    selfTest = await selfTestBundle(store.bundleDir(id), v.files, v.manifest, {
      load: { ...(o.trustDir ? { trustDir: o.trustDir } : {}), ...(o.device ? { device: o.device } : {}), ...(o.executionProviders ? { executionProviders: o.executionProviders } : {}), ...(o.threads !== undefined ? { threads: o.threads } : {}) },
      ...(o.latencyBudgetMs !== undefined ? { latencyBudgetMs: o.latencyBudgetMs } : {}),
      ...(o.memoryBudgetMiB !== undefined ? { memoryBudgetMiB: o.memoryBudgetMiB } : {}),
      onPart: (part) => o.onStep?.(`self-test:${part}`),
    });
  } catch (err) {
    return fail(`self-test: the bundle does not load here: ${reasonOf(err)}`);
  }
  if (!selfTest.ok) return fail(`self-test failed: ${selfTest.reasons.join('; ')}`, selfTest);
  await step('self-tested', { detail: { golden: selfTest.golden, memoryMiB: selfTest.memoryMiB, stages: selfTest.stages.map((s) => ({ stage: s.stage, ms: s.ms, maxAbsDiff: s.maxAbsDiff })) } });
  await o.onStep?.('self-tested');

  // The line first: a kill between it and the rename leaves a job recovery rolls back.
  await step('active');
  await store.setCurrent(id);
  await o.onStep?.('active');

  const trial = o.trial ? await o.trial({ id, dir: store.bundleDir(id), manifest: v.manifest, from }).catch((err: unknown) => ({ ok: false as const, reason: `the trial threw: ${reasonOf(err)}` })) : { ok: true as const };
  if (!trial.ok) {
    await store.setCurrent(from);
    await step('rolled-back', { reason: `trial failed: ${trial.reason}` });
    await store.prune(o.keep ?? DEFAULT_KEEP);
    return { job, bundle: id, from, state: 'rolled-back', reason: `trial failed: ${trial.reason}`, selfTest, recovered };
  }
  const prev = (await store.previous()).filter((p) => p !== id && p !== from);
  await store.setPrevious(from ? [from, ...prev] : prev);
  await step('committed');
  await store.prune(o.keep ?? DEFAULT_KEEP);
  await o.onStep?.('committed');
  return { job, bundle: id, from, state: 'committed', selfTest, recovered };
}
