// The device side of flash jobs: the agent reads its retained, signed desired job from the broker
// (agent/job-protocol.ts), runs it, and reports each step on its retained job/state topic.
//
//   check     the job's signature (a key the trust store holds), that it names this device, and
//             that its bundle is not the one already running
//   download  agent/download.ts into <root>/staging/<bundle>; the manifest is checked for this
//             device (compatibility, version unless rollback) before any other file moves
//   install   agent/install.ts: verify, self-test, switch the running agent in place, trial
//             (live latency and errors against the bundle it replaced), commit or roll back
//
// <root>/flash-job.json holds the job and the last state reported, written (temp file, fsync,
// rename) before the state is published: a device killed anywhere restarts, finds the job
// unfinished and runs it again, each step being idempotent (the download resumes from its
// bitmap, the install store recovers first). A job in a final state is never run again, whatever
// the broker redelivers. Attempts are counted, so a job that kills the agent every time ends
// failed instead of looping; a canceled job stops and is not retried.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { loadTrustStore } from '../bundle/trust.js';
import { connectMqtt, type MqttConnection, type MqttTls } from '../telemetry/mqtt/client.js';
import { writeFileAtomic } from '../util/fs.js';
import { DownloadError, downloadBundle } from './download.js';
import { checkCompatibility, compareVersions, installBundle, recoverIfIdle, type InstallResult } from './install.js';
import { FINAL_JOB_STATES, JobStateSchema, checkSignedJob, jobTopics, type Job, type JobState, type JobStateReport, type JobStep } from './job-protocol.js';
import { BundleStore } from './store.js';
import type { LatencyWatch, TrialPolicy } from './trial.js';

export const JOB_RECORD_FILE = 'flash-job.json';
/** Starts of one job before it is given up as failed (each kill -9 mid-job is one). */
export const DEFAULT_MAX_ATTEMPTS = 3;

export interface JobAgentOptions {
  /** The bundle store (edgeexit install / agent --root). */
  root: string;
  brokerUrl: string;
  username?: string;
  password?: string;
  tls?: MqttTls;
  fleet: string;
  device: string;
  trustDir: string;
  /** This device's profile (compatibility, self-test budgets). */
  deviceProfile?: string;
  threads?: number;
  keep?: number;
  /** Self-test budgets on this device (see installBundle): per-stage latency on one golden image, memory. */
  selfTest?: { latencyBudgetMs?: number; memoryBudgetMiB?: number };
  /** Trial length when the job names none (default 10 s), and its latency limit. */
  trial?: Partial<TrialPolicy>;
  /** Latency of the running agent per bundle (the trial compares with it); none: no latency verdict. */
  watch?: LatencyWatch;
  /** Make the running agent serve what `current` names now (called after switch and after rollback). */
  switchNow?: () => Promise<void>;
  maxAttempts?: number;
  /** Passed to the downloader (tests shorten them). */
  download?: { requestTimeoutMs?: number; maxAttempts?: number; maxReconnects?: number };
  /** After each reported state is on disk (tests kill the process here). */
  onState?: (r: JobStateReport) => Promise<void> | void;
  onLog?: (line: string) => void;
}

interface JobRecord {
  /** The signed job/desired payload as received (checked again on every start). */
  raw: string;
  report: JobStateReport;
}

/** States waiting for the broker at most (a device offline for long does not grow without bound). */
const MAX_QUEUED_STATES = 64;

/** A refusal found before anything was installed: reported as rejected, not failed. */
class Refusal extends Error {}

/** Why a running job was stopped (the AbortSignal's reason). */
type StopReason = 'cancel' | 'timeout' | 'shutdown';

const stopReason = (signal: AbortSignal): StopReason | undefined => (signal.aborted ? (signal.reason as StopReason) : undefined);

/** What a job stopped at `step` reports: canceled or timed out; undefined on shutdown (it resumes at the next start). */
function stoppedState(why: StopReason, step: string, deadline: string | undefined): [JobState, string] | undefined {
  if (why === 'cancel') return ['canceled', `canceled by the operator during the ${step}`];
  if (why === 'timeout') return ['timed-out', `timed out during the ${step} (deadline ${deadline}); flash again with a longer --timeout`];
  return undefined;
}

/**
 * Publishes states in order, retained at QoS 1, each until the broker acknowledged it (a state
 * waiting is retried after every reconnect). Progress within one step replaces the step's last
 * unsent state, so a slow link carries every step but not every percent.
 */
class JobLink {
  private conn: MqttConnection | undefined;
  private readonly queue: { key: string; bytes: Buffer }[] = [];
  private inflight = false;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly o: JobAgentOptions,
    private readonly onDesired: (payload: Buffer) => void,
  ) {}

  start(): void {
    void this.connectLoop();
  }

  private async connectLoop(): Promise<void> {
    const o = this.o;
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        const c = await connectMqtt({
          url: o.brokerUrl,
          clientId: `${o.fleet}.${o.device}.jobs`,
          connectTimeoutMs: 5_000,
          ...(o.username !== undefined ? { username: o.username } : {}),
          ...(o.password !== undefined ? { password: o.password } : {}),
          ...(o.tls ? { tls: o.tls } : {}),
          onMessage: (m) => (m.topic === jobTopics(o.fleet, o.device).desired ? this.onDesired(m.payload) : undefined),
        });
        if (this.stopped) return void (await c.end().catch(() => undefined));
        await c.subscribe(jobTopics(o.fleet, o.device).desired, 1);
        this.conn = c;
        c.onClose(() => {
          this.conn = undefined;
          if (!this.stopped) void this.connectLoop();
        });
        void this.flush();
        return;
      } catch (err) {
        if (attempt === 0) o.onLog?.(`jobs: broker ${o.brokerUrl} unreachable (${(err as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, Math.min(5_000, 200 * 2 ** attempt)));
      }
    }
  }

  publish(r: JobStateReport): void {
    const key = `${r.job}/${r.state}/${r.step}`;
    const bytes = Buffer.from(JSON.stringify(r));
    const last = this.queue.at(-1);
    // The head may be in flight; only a waiting entry is replaced.
    if (last && last.key === key && (this.queue.length > 1 || !this.inflight)) last.bytes = bytes;
    else this.queue.push({ key, bytes });
    // Offline for long: keep the head (maybe in flight) and the newest states, the retained one matters most.
    if (this.queue.length > MAX_QUEUED_STATES) this.queue.splice(1, this.queue.length - MAX_QUEUED_STATES);
    void this.flush();
  }

  private async flush(): Promise<void> {
    const c = this.conn;
    const head = this.queue[0];
    if (this.inflight || !c || !head) return this.settle();
    this.inflight = true;
    let again = 0;
    try {
      await c.publish(jobTopics(this.o.fleet, this.o.device).state, head.bytes, { qos: 1, retain: true });
      this.queue.shift();
    } catch {
      // Closed: the reconnect flushes. Refused while connected (ACL): try again, not in a tight loop.
      again = c.closed ? 0 : 1_000;
    } finally {
      this.inflight = false;
    }
    if (again) setTimeout(() => void this.flush(), again);
    else void this.flush();
  }

  private settle(): void {
    if (this.queue.length || this.inflight) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves once every state is acknowledged by the broker. */
  published(): Promise<void> {
    if (!this.queue.length && !this.inflight) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    this.stopped = true;
    await this.conn?.end().catch(() => undefined);
  }
}

/**
 * Runs flash jobs for one device (see the header). Start it beside the agent's loop; it
 * connects on its own and keeps retrying.
 *
 * @example
 * ```ts
 * import { JobAgent } from 'edgeexit/agent';
 * const jobs = new JobAgent({ root: '/var/lib/edgeexit', brokerUrl: 'mqtt://broker.local', fleet: 'lab', device: 'pi-07', trustDir, username: 'lab/pi-07', password });
 * await jobs.start();
 * // … on shutdown:
 * await jobs.close();
 * ```
 */
export class JobAgent {
  private readonly link: JobLink;
  private store!: BundleStore;
  private record: JobRecord | undefined;
  private pending: Buffer | undefined;
  private busy = false;
  private running: { job: string; abort: AbortController } | undefined;
  private done: Promise<void> = Promise.resolve();
  private reporting: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: JobAgentOptions) {
    this.link = new JobLink(o, (p) => this.onDesired(p));
  }

  private get recordFile(): string {
    return path.join(this.o.root, JOB_RECORD_FILE);
  }

  async start(): Promise<void> {
    this.store = await BundleStore.open(this.o.root);
    // An install cut mid-way is rolled back first, so `current` is what really runs before the job resumes.
    await recoverIfIdle(this.store, this.o.keep);
    this.record = await this.readRecord();
    const r = this.record;
    if (!r) this.link.publish(await this.stateOf(null, { state: 'idle', step: null, progress: 0, attempts: 0 }));
    else if (FINAL_JOB_STATES.includes(r.report.state)) this.link.publish(r.report);
    // An unfinished job is picked up from disk: the broker may be out of reach, the job is not.
    else this.enqueue(Buffer.from(r.raw));
    this.link.start();
  }

  private async readRecord(): Promise<JobRecord | undefined> {
    const text = await fsp.readFile(this.recordFile, 'utf8').catch(() => undefined);
    if (!text) return undefined;
    try {
      const v = JSON.parse(text) as { raw?: unknown; report?: unknown };
      const report = JobStateSchema.safeParse(v.report);
      if (typeof v.raw === 'string' && report.success) return { raw: v.raw, report: report.data };
    } catch {
      // A record is written whole (rename) or not at all; unreadable means written by something else.
    }
    this.o.onLog?.(`jobs: ${this.recordFile} is not a job record; ignored`);
    return undefined;
  }

  private onDesired(payload: Buffer): void {
    void (async () => {
      const trust = await loadTrustStore(this.o.trustDir);
      const c = checkSignedJob(payload, trust, this.o);
      if (c.ok && this.running?.job === c.job.job) {
        if (c.job.canceled) this.running.abort.abort('cancel');
        return;
      }
      this.enqueue(payload);
    })();
  }

  private enqueue(payload: Buffer): void {
    this.pending = payload;
    if (this.busy) return;
    this.busy = true;
    this.done = (async () => {
      try {
        while (this.pending) {
          const p = this.pending;
          this.pending = undefined;
          await this.handle(p).catch((err: unknown) => this.o.onLog?.(`jobs: ${(err as Error).message}`));
        }
      } finally {
        this.busy = false;
      }
    })();
  }

  /** Resolves when no job is running or waiting and the newest state is acknowledged. */
  async idle(): Promise<void> {
    while (this.busy) await this.done;
    await this.link.published();
  }

  async close(): Promise<void> {
    // Not a verdict: the job keeps its in-progress record and resumes at the next start.
    this.running?.abort.abort('shutdown');
    await this.done;
    await this.link.close();
  }

  private async stateOf(job: Job | null, s: { state: JobState; step: JobStep | null; progress: number; attempts: number; reason?: string }): Promise<JobStateReport> {
    return {
      v: 1,
      job: job?.job ?? null,
      state: s.state,
      step: s.step,
      progress: s.progress,
      ...(s.reason !== undefined ? { reason: s.reason.slice(0, 2048) } : {}),
      bundle: job?.bundle ?? null,
      active: await this.store.current(),
      previous: (await this.store.previous()).slice(0, 16),
      attempts: s.attempts,
      at: new Date().toISOString(),
    };
  }

  /** Record (fsync'd) then publish: the device never reports a state it could forget. */
  private report(raw: string, job: Job | null, s: Parameters<JobAgent['stateOf']>[1]): Promise<JobStateReport> {
    // One at a time, in the order asked: progress callbacks do not wait, and must not overtake.
    const next = this.reporting.then(() => this.reportNow(raw, job, s));
    this.reporting = next.catch(() => undefined);
    return next;
  }

  private async reportNow(raw: string, job: Job | null, s: Parameters<JobAgent['stateOf']>[1]): Promise<JobStateReport> {
    const r = await this.stateOf(job, s);
    if (job) {
      this.record = { raw, report: r };
      await writeFileAtomic(this.recordFile, JSON.stringify(this.record));
    }
    await this.o.onState?.(r);
    this.link.publish(r);
    this.o.onLog?.(`job ${r.job ?? '-'}: ${r.state}${r.step ? ` (${r.step})` : ''}${r.reason ? `: ${r.reason}` : ''}`);
    return r;
  }

  private async handle(payload: Buffer): Promise<void> {
    const raw = payload.toString('utf8');
    const c = checkSignedJob(payload, await loadTrustStore(this.o.trustDir), this.o);
    const known = this.record;
    const jobId = c.ok ? c.job.job : c.job;
    if (known && jobId === known.report.job && FINAL_JOB_STATES.includes(known.report.state)) {
      // Done already: say so again (the operator may have missed it), never redo it.
      this.link.publish(known.report);
      return;
    }
    if (!c.ok) {
      // Not recorded: an unverifiable message must not displace the record of a real job.
      this.link.publish({ ...(await this.stateOf(null, { state: 'rejected', step: 'check', progress: 0, attempts: 0, reason: c.reason })), job: jobId ?? null });
      this.o.onLog?.(`job ${jobId ?? '-'}: rejected: ${c.reason}`);
      return;
    }
    const attempts = (known && known.report.job === c.job.job ? known.report.attempts : 0) + 1;
    if (c.job.canceled) {
      await this.report(raw, c.job, { state: 'canceled', step: null, progress: 0, attempts: attempts - 1, reason: 'canceled by the operator before it finished' });
      await this.cleanStaging(c.job);
      return;
    }
    const abort = new AbortController();
    this.running = { job: c.job.job, abort };
    const left = deadlineOf(c.job) - Date.now();
    const timer = Number.isFinite(left) ? setTimeout(() => abort.abort('timeout'), Math.max(0, left)) : undefined;
    try {
      await this.run(raw, c.job, attempts, abort.signal);
    } finally {
      clearTimeout(timer);
      this.running = undefined;
    }
  }

  private staging(job: Job): string {
    return path.join(this.o.root, 'staging', job.bundle);
  }

  private async cleanStaging(job: Job): Promise<void> {
    await fsp.rm(this.staging(job), { recursive: true, force: true });
  }

  private async run(raw: string, job: Job, attempts: number, signal: AbortSignal): Promise<void> {
    const step = (state: JobState, s: JobStep | null, progress: number, reason?: string) => this.report(raw, job, { state, step: s, progress, attempts, ...(reason !== undefined ? { reason } : {}) });
    const end = async (state: JobState, reason?: string): Promise<void> => {
      await step(state, 'done', state === 'succeeded' ? 1 : this.record?.report.progress ?? 0, reason);
      await this.cleanStaging(job);
    };
    const deadline = job.timeoutS !== undefined ? new Date(deadlineOf(job)).toISOString() : undefined;
    const stopped = async (at: string): Promise<boolean> => {
      const why = stopReason(signal);
      if (!why) return false;
      const st = stoppedState(why, at, deadline);
      if (st) await end(...st);
      return true;
    };
    const max = this.o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    if (deadline && Date.now() > deadlineOf(job)) return end('timed-out', `not started before its deadline ${deadline}; flash again`);
    if (attempts > max) return end('failed', `interrupted ${attempts - 1} times (the agent stopped mid-job each time); flash again to retry`);
    await step('in-progress', 'check', 0.02);
    if (job.manifest.sha256 !== job.bundle) return end('rejected', `job: manifest sha256 ${job.manifest.sha256} is not the bundle id ${job.bundle}; publish it again with \`edgeexit flash\``);
    if ((await this.store.current()) === job.bundle) return end('succeeded', 'this bundle is already active');

    await step('in-progress', 'download', 0.05);
    const fetched = await this.download(job, signal, (p) => void step('in-progress', 'download', 0.05 + 0.75 * p));
    if (await stopped('download')) return;
    if (!fetched.ok) return end(fetched.state, fetched.reason);

    await step('in-progress', 'verify', 0.82);
    const r = await this.install(job, signal, (s, p) => step('in-progress', s, p));
    await this.o.switchNow?.();
    if (r.state === 'rolled-back' && (await stopped('trial'))) return;
    const [state, reason] = outcomeOf(r);
    return end(state, reason);
  }

  private async download(job: Job, signal: AbortSignal, progress: (fraction: number) => void): Promise<{ ok: true } | { ok: false; state: JobState; reason: string }> {
    const done = new Map<string, number>();
    let total = 1;
    let last = 0;
    try {
      const { stats } = await downloadBundle({
        brokerUrl: this.o.brokerUrl,
        fleet: this.o.fleet,
        device: this.o.device,
        ...(this.o.username !== undefined ? { username: this.o.username } : {}),
        ...(this.o.password !== undefined ? { password: this.o.password } : {}),
        ...(this.o.tls ? { tls: this.o.tls } : {}),
        manifest: job.manifest,
        signature: job.signature,
        staging: this.staging(job),
        have: await this.localBundles(),
        // The store's bundles are never written in place: files already here are linked, not copied.
        linkLocal: true,
        verify: { trust: await loadTrustStore(this.o.trustDir), requireSignature: true },
        signal,
        ...this.o.download,
        onManifest: async (m) => {
          total = Math.max(1, [...m.stages, ...m.files].reduce((n, f) => n + Math.ceil(f.bytes / (m.blocks?.size ?? 1)), 0));
          await this.admit(job, m);
        },
        onProgress: (p) => {
          done.set(p.file, p.blocksDone);
          const f = [...done.values()].reduce((a, b) => a + b, 0) / total;
          // A state per block would flood the broker; one per tenth is enough to watch.
          if (f - last >= 0.1) progress((last = f));
        },
      });
      this.o.onLog?.(`job ${job.job}: downloaded ${stats.blocksFetched} blocks (${stats.bytesReceived} bytes), ${stats.blocksResumed} resumed from before a restart, ${stats.filesReused.length} files already here`);
      return { ok: true };
    } catch (err) {
      if (err instanceof Refusal) return { ok: false, state: 'rejected', reason: err.message };
      if (err instanceof DownloadError) return { ok: false, state: 'failed', reason: err.message };
      throw err;
    }
  }

  /** The bundle suits this device, and is no older than the running one unless the job is a rollback. */
  private async admit(job: Job, m: Manifest): Promise<void> {
    const device = await this.deviceProfile();
    const reasons = await checkCompatibility(m, device !== undefined ? { device } : {});
    if (reasons.length) throw new Refusal(`incompatible with this device: ${reasons.join('; ')}`);
    const cur = await this.store.current();
    if (!cur || job.rollback) return;
    const active = await this.store.manifestOf(cur);
    if (active.model.name === m.model.name && compareVersions(m.model.version, active.model.version) < 0) {
      throw new Refusal(`model ${m.model.name} ${m.model.version} is older than the active ${active.model.version}; flash it with --rollback if that is what you mean`);
    }
  }

  /** This device's profile: as configured, else the one the running bundle was compiled for (it runs here). */
  private async deviceProfile(): Promise<string | undefined> {
    if (this.o.deviceProfile !== undefined) return this.o.deviceProfile;
    const cur = await this.store.current();
    return cur ? (await this.store.manifestOf(cur)).target.device : undefined;
  }

  private async localBundles(): Promise<string[]> {
    const ids = [await this.store.current(), ...(await this.store.previous())].filter((i): i is string => i !== null);
    return ids.map((i) => this.store.bundleDir(i));
  }

  private async install(job: Job, signal: AbortSignal, step: (s: JobStep, progress: number) => Promise<unknown>): Promise<InstallResult> {
    const policy: TrialPolicy = { durationMs: job.trialMs ?? this.o.trial?.durationMs ?? 10_000, ...(this.o.trial?.maxP95Ratio !== undefined ? { maxP95Ratio: this.o.trial.maxP95Ratio } : {}), ...(this.o.trial?.minSamples !== undefined ? { minSamples: this.o.trial.minSamples } : {}) };
    const device = await this.deviceProfile();
    return installBundle({
      root: this.o.root,
      bundle: this.staging(job),
      // The staging folder is this agent's own and written only by its downloader (temp file, rename).
      linkFiles: true,
      trustDir: this.o.trustDir,
      ...(device !== undefined ? { device } : {}),
      ...(this.o.threads !== undefined ? { threads: this.o.threads } : {}),
      ...(this.o.keep !== undefined ? { keep: this.o.keep } : {}),
      ...(this.o.selfTest?.latencyBudgetMs !== undefined ? { latencyBudgetMs: this.o.selfTest.latencyBudgetMs } : {}),
      ...(this.o.selfTest?.memoryBudgetMiB !== undefined ? { memoryBudgetMiB: this.o.selfTest.memoryBudgetMiB } : {}),
      rollback: job.rollback,
      onStep: async (s) => {
        if (s === 'self-tested') await step('switch', 0.9);
        else if (s.startsWith('self-test:')) await step('self-test', 0.85);
        else if (s === 'active') await step('trial', 0.92);
      },
      trial: async (t) => {
        await this.o.switchNow?.();
        const before = t.from ? this.store.bundleDir(t.from) : null;
        const v = this.o.watch ? await this.o.watch.trial(before, t.dir, policy, signal) : await wait(policy.durationMs, signal).then(() => ({ ok: true as const }));
        if (signal.aborted) return { ok: false, reason: `stopped during the trial (${String(signal.reason)})` };
        if (!v.ok) return { ok: false, reason: v.reason ?? 'the trial failed' };
        await step('commit', 0.98);
        return { ok: true };
      },
    });
  }
}

function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });
}

/** The job's final state from the install's result. */
function deadlineOf(job: Job): number {
  return job.timeoutS !== undefined ? Date.parse(job.issuedAt) + job.timeoutS * 1000 : Infinity;
}

function outcomeOf(r: InstallResult): [JobState, string | undefined] {
  if (r.state === 'committed' || r.state === 'unchanged') return ['succeeded', r.reason];
  if (r.state === 'rolled-back') return ['rolled-back', r.reason];
  const refused = /^(incompatible with this device|model .* is older than)/.test(r.reason ?? '');
  return [refused ? 'rejected' : 'failed', r.reason];
}
