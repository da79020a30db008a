// Lightweight simulated devices that take flash jobs, for rollouts at fleet scale: one MQTT
// connection each, no bundle files, no onnxruntime. A device holds a bundle id, reports it in its
// birth and its retained job/state, publishes synthetic metric windows (simulate.ts) that the
// real collector stores, and runs the jobs it is sent: it checks their signature against a trust
// store like a real agent, "installs" after a short delay and reports each state. Faults are given
// per bundle (so a rollback cures them): refuse it, fail its self-test, fail transiently n times,
// crash mid-install (the connection dies without a goodbye, the device comes back and resumes the
// job, as the real agent does from its journal), download over a slow link, or run it with
// latency ×k (the regression a rollout's gates must catch).
import { checkSignedJob, jobTopics, type Job, type JobState, type JobStateReport } from '../agent/job-protocol.js';
import type { TrustStore } from '../bundle/trust.js';
import { connectMqtt, type MqttConnection } from '../telemetry/mqtt/client.js';
import { encodePayload, topicFor, type Birth } from '../telemetry/payloads.js';
import { mulberry32 } from '../util/random.js';
import { syntheticWindow, type SimProfile } from './simulate.js';

/** What goes wrong when a device runs a given bundle. */
export interface SimJobFaults {
  /** Refused before install (an incompatible bundle): rejected, permanent. */
  reject?: boolean;
  /** The self-test fails: failed, permanent. */
  selfTestFails?: boolean;
  /** The first n jobs for it break off mid-download: failed, transient. */
  transientFailures?: number;
  /** It installs and runs, with every stage this many times slower. */
  latencyX?: number;
  /** The first n installs of it die mid-download (power lost: no clean disconnect); the device reconnects and resumes the job. */
  crashesMidInstall?: number;
  /** Its download takes this many times as long (a slow link). */
  slowLinkX?: number;
}

export interface SimJobDeviceOptions {
  url: string;
  fleet: string;
  device: string;
  /** Hardware class: the device profile the birth names. */
  hardware: string;
  /** The bundle it runs at start. */
  bundle: { id: string; name: string; version: string };
  trust: TrustStore;
  profile: SimProfile;
  /** One metrics window every this many ms (default 1000). */
  windowMs?: number;
  inferencesPerS?: number;
  /** Time an install takes (default 200 ms). */
  applyMs?: number;
  faults?: (bundle: string) => SimJobFaults | undefined;
  seed?: number;
}

/**
 * A simulated device that applies flash jobs (see the header).
 *
 * @example
 * ```ts
 * const d = await SimJobDevice.start({ url, fleet: 'sim', device: 'rpi4-001', hardware: 'rpi4', bundle, trust, profile });
 * d.active; // the bundle id it runs now
 * await d.close();
 * ```
 */
export class SimJobDevice {
  private conn!: MqttConnection;
  private timer: NodeJS.Timeout | undefined;
  private bdSeq = 0;
  private seq = 0;
  private windowId = 0;
  private lastWindowEnd = Date.now();
  private readonly rand: () => number;
  private active: { id: string; name: string; version: string };
  private previous: string[] = [];
  private readonly failuresLeft = new Map<string, number>();
  private readonly crashesLeft = new Map<string, number>();
  /** Tries per job on this device (a crash and resume is a second). */
  private readonly attempts = new Map<string, number>();
  /** Jobs that reached a final state, with the report (a redelivery is answered, never rerun). */
  private readonly done = new Map<string, JobStateReport>();
  private queue: Promise<void> = Promise.resolve();
  /** The last job state reported. */
  private last: JobStateReport | undefined;
  private closed = false;
  /** Bundles ever installed here (the target among them: a device the bad bundle reached). */
  readonly installed: string[] = [];

  private constructor(private readonly o: SimJobDeviceOptions) {
    this.active = o.bundle;
    this.rand = mulberry32(o.seed ?? 1);
  }

  static async start(o: SimJobDeviceOptions): Promise<SimJobDevice> {
    const d = new SimJobDevice(o);
    await d.connect();
    return d;
  }

  get id(): string {
    return this.o.device;
  }

  get hardware(): string {
    return this.o.hardware;
  }

  /** The last job state it reported (attempts, reason). */
  get lastReport(): JobStateReport | undefined {
    return this.last;
  }

  /** The bundle it runs now. */
  get bundle(): string {
    return this.active.id;
  }

  private async connect(): Promise<void> {
    await this.open();
    await this.report({ job: null, state: 'idle', step: null, progress: 0, bundle: null, attempts: 0 });
    this.timer = setInterval(() => void this.window().catch(() => undefined), this.o.windowMs ?? 1000);
  }

  /** Connect, say who it is, take jobs; a lost connection is opened again (like the real agent's). */
  private async open(): Promise<void> {
    const o = this.o;
    this.conn = await connectMqtt({
      url: o.url,
      clientId: `${o.fleet}.${o.device}.sim`,
      connectTimeoutMs: 10_000,
      onMessage: (m) => {
        if (m.topic === jobTopics(o.fleet, o.device).desired && m.payload.length > 0) this.queue = this.queue.then(() => this.onJob(m.payload)).catch(() => undefined);
      },
    });
    this.conn.onClose(() => void (this.closed ? undefined : this.reopen()));
    await this.birth();
    await this.conn.subscribe(jobTopics(o.fleet, o.device).desired, 1);
  }

  private async reopen(): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
      try {
        await this.open();
        // A broker without persistence lost the retained state: say it again.
        if (this.last) await this.conn.publish(jobTopics(this.o.fleet, this.o.device).state, Buffer.from(JSON.stringify(this.last)), { qos: 1, retain: true });
        return;
      } catch {
        // Still down: try again.
      }
    }
  }

  private async birth(): Promise<void> {
    const o = this.o;
    const b: Birth = {
      device: o.device,
      fleet: o.fleet,
      bdSeq: ++this.bdSeq,
      seq: 0,
      profile: o.hardware,
      bundle: { name: this.active.name, version: this.active.version, manifestSha256: this.active.id, precision: o.profile.precision, thresholds: [] },
      runtime: { edgeexit: 'sim', node: process.versions.node },
      at: Date.now(),
    };
    this.seq = 0;
    await this.conn.publish(topicFor(o.fleet, o.device, 'birth'), encodePayload('birth', b), { qos: 1 });
  }

  private async window(): Promise<void> {
    if (this.closed) return;
    const o = this.o;
    const k = o.faults?.(this.active.id)?.latencyX ?? 1;
    const p = k === 1 ? o.profile : { ...o.profile, stages: o.profile.stages.map((s) => ({ p50Ms: s.p50Ms * k, p95Ms: s.p95Ms * k })) };
    const end = Date.now();
    const w = syntheticWindow(p, this.rand, this.lastWindowEnd, end, o.inferencesPerS ?? 20);
    this.lastWindowEnd = end;
    const body = { ...w, id: ++this.windowId, bdSeq: this.bdSeq, seq: ++this.seq, device: o.device, droppedWindows: 0 };
    await this.conn.publish(topicFor(o.fleet, o.device, 'metrics'), encodePayload('metrics', body), { qos: 1 });
  }

  private async report(r: Omit<JobStateReport, 'v' | 'active' | 'previous' | 'at'>): Promise<JobStateReport> {
    const full: JobStateReport = { v: 1, ...r, active: this.active.id, previous: this.previous.slice(0, 16), at: new Date().toISOString() };
    this.last = full;
    await this.conn.publish(jobTopics(this.o.fleet, this.o.device).state, Buffer.from(JSON.stringify(full)), { qos: 1, retain: true });
    return full;
  }

  private async finish(job: Job, state: JobState, reason?: string): Promise<void> {
    const r = await this.report({ job: job.job, state, step: 'done', progress: 1, bundle: job.bundle, attempts: this.attempts.get(job.job) ?? 1, ...(reason !== undefined ? { reason } : {}) });
    this.done.set(job.job, r);
  }

  private async onJob(payload: Buffer): Promise<void> {
    if (this.closed) return;
    const o = this.o;
    const c = checkSignedJob(payload, o.trust, { fleet: o.fleet, device: o.device });
    if (!c.ok) {
      await this.report({ job: c.job ?? null, state: 'rejected', step: 'check', progress: 0, bundle: null, attempts: 1, reason: c.reason });
      return;
    }
    const job = c.job;
    const was = this.done.get(job.job);
    if (was) return void (await this.conn.publish(jobTopics(o.fleet, o.device).state, Buffer.from(JSON.stringify(was)), { qos: 1, retain: true }));
    if (job.canceled) return this.finish(job, 'canceled', 'canceled by the operator');
    if (job.bundle === this.active.id) return this.finish(job, 'succeeded', 'this bundle is already active');
    const f = o.faults?.(job.bundle) ?? {};
    const attempts = (this.attempts.get(job.job) ?? 0) + 1;
    this.attempts.set(job.job, attempts);
    await this.report({ job: job.job, state: 'in-progress', step: 'download', progress: 0.3, bundle: job.bundle, attempts });
    await new Promise((r) => setTimeout(r, (o.applyMs ?? 200) * (f.slowLinkX ?? 1)));
    if (this.closed) return;
    if (this.crash(job.bundle, f)) return;
    if (f.reject) return this.finish(job, 'rejected', `incompatible with this device: bundle targets another class than ${o.hardware} (simulated)`);
    const left = this.failuresLeft.get(job.bundle) ?? f.transientFailures ?? 0;
    if (left > 0) {
      this.failuresLeft.set(job.bundle, left - 1);
      return this.finish(job, 'failed', 'download: connection to the file server lost (simulated)');
    }
    this.failuresLeft.set(job.bundle, 0);
    if (f.selfTestFails) return this.finish(job, 'failed', 'self-test: outputs differ from the golden set (simulated)');
    this.previous = [this.active.id, ...this.previous.filter((p) => p !== this.active.id && p !== job.bundle)];
    this.active = { id: job.bundle, name: job.model.name, version: job.model.version };
    this.installed.push(job.bundle);
    // A new birth says what runs now; windows from here on are the new bundle's.
    await this.birth();
    this.lastWindowEnd = Date.now();
    await this.finish(job, 'succeeded');
  }

  // Power lost mid-install: the connection drops without a DISCONNECT (the broker sends the will),
  // and the reconnect re-reads the retained job, which resumes here as its next attempt.
  private crash(bundle: string, f: SimJobFaults): boolean {
    const left = this.crashesLeft.get(bundle) ?? f.crashesMidInstall ?? 0;
    if (left <= 0) return false;
    this.crashesLeft.set(bundle, left - 1);
    this.conn.abort();
    return true;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.queue.catch(() => undefined);
    await this.conn.end().catch(() => undefined);
  }
}
