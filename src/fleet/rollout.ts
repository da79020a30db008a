// The rollout engine's driver: the I/O around the pure planner (rollout-plan.ts). It reads the
// fleet's devices and telemetry from the store, keeps the latest retained job/state of every
// device from the broker, and each tick hands both to `advanceRollout`, saves the record it gets
// back, then publishes the signed jobs it asked for. The record lives in the store and the job
// states are retained, so a driver killed anywhere and started again picks up where it stood:
// a job saved but not yet acknowledged by the broker is sent again (under a new job id, so a
// device that did get the first one is not confused by a second run).
import { randomUUID, type KeyObject } from 'node:crypto';
import os from 'node:os';
import { decodeJobState, jobFilters, jobTopics, signJob, type Job } from '../agent/job-protocol.js';
import type { MqttConnection } from '../telemetry/mqtt/client.js';
import { parseTopic } from '../telemetry/payloads.js';
import { InputError, formatProblem } from '../util/errors.js';
import type { FleetStore, WindowRow } from './fleet-store.js';
import {
  advanceRollout,
  cohortStats,
  cohortsOf,
  evaluateGates,
  gatesDue,
  newRollout,
  planRollout,
  type BundleInfo,
  type ClassPlan,
  type CohortStats,
  type FleetDevice,
  type GateResult,
  type JobOrder,
  type RolloutRecord,
  type RolloutSpec,
  type SeenState,
} from './rollout-plan.js';

/** Windows read per device when summing a cohort (newest first; enough for a 10 min window of 5 s windows). */
export const WINDOWS_PER_DEVICE = 256;

/** Longest wait for the retained job states after subscribing (it ends once 200 ms bring none new). */
const RETAINED_WAIT_MS = 5_000;

/** Reconnects in a row before `run` gives up (about 2 minutes with the backoff). */
const MAX_RECONNECTS = 15;

/** Rollouts in these states are over: the driver stops. */
export const FINAL_ROLLOUT_STATES = ['completed', 'aborted', 'partial'] as const;

/**
 * The fleet's devices as the store knows them: class from the birth's device profile, bundle from
 * the birth. Devices with no birth yet cannot be classed and are returned apart.
 *
 * @example const { devices, unknown } = await fleetDevices(store, 'lab');
 */
export async function fleetDevices(store: FleetStore, fleet: string): Promise<{ devices: FleetDevice[]; unknown: string[] }> {
  const rows = (await store.devices()).filter((d) => d.fleet === fleet);
  return {
    devices: rows.filter((d) => d.birth).map((d) => ({ device: d.device, class: d.birth!.profile, bundle: d.birth!.bundle.manifestSha256 })),
    unknown: rows.filter((d) => !d.birth).map((d) => d.device),
  };
}

/**
 * Cohort statistics of `devices` over windows that started at `since` (per device) or later,
 * from each device's latest WINDOWS_PER_DEVICE windows, read in one query for the whole cohort.
 */
export async function storedCohort(store: FleetStore, devices: readonly { device: string; since: number }[], until: number): Promise<CohortStats> {
  const recent = devices.length ? await store.recentWindows(WINDOWS_PER_DEVICE, devices.map((d) => d.device)) : new Map<string, WindowRow[]>();
  const by = new Map<string, WindowRow[]>();
  for (const d of devices) by.set(d.device, (recent.get(d.device) ?? []).filter((w) => w.windowStart >= d.since && w.windowEnd <= until));
  return cohortStats(by);
}

export interface CreateRolloutOptions {
  store: FleetStore;
  fleet: string;
  target: BundleInfo;
  /** Bundles devices may go back to (their files must be where the file servers read). */
  previous: readonly BundleInfo[];
  spec: RolloutSpec;
  /** Only devices of these hardware classes (a class-specific update, e.g. `recalibrate`); every class when absent. */
  classes?: readonly string[];
  id?: string;
  now?: number;
}

/**
 * Plan a rollout from the store's view of the fleet (without saving it: `--dry-run`).
 *
 * @example const { plan } = await planFromStore(store, 'lab', target.bundle, spec);
 */
export async function planFromStore(store: FleetStore, fleet: string, target: string, spec: RolloutSpec, classes?: readonly string[]): Promise<{ plan: ClassPlan[]; devices: FleetDevice[]; unknown: string[] }> {
  const all = await fleetDevices(store, fleet);
  if (all.devices.length === 0)
    throw new InputError(formatProblem({ where: `fleet ${fleet}`, message: 'no device with a birth in the fleet store', expected: 'devices that reported (their birth names their hardware class)', got: all.unknown.length ? `${all.unknown.length} devices without a birth` : 'none', fix: 'run `edgeexit collect --db <file>` while the devices run, and pass that --db' }));
  if (!classes) return { plan: planRollout(all.devices, target, spec), ...all };
  // Devices without a birth cannot be in a named class: they are left out, not listed as unknown.
  const devices = all.devices.filter((d) => classes.includes(d.class));
  if (devices.length === 0) {
    const known = [...new Set(all.devices.map((d) => d.class))].sort().join(', ');
    throw new InputError(formatProblem({ where: `--class ${classes.join(',')}`, message: `no device of ${classes.length === 1 ? 'that class' : 'those classes'} in fleet ${fleet}`, got: `classes ${known}`, fix: 'name a class the fleet has (see `edgeexit fleet status`)' }));
  }
  return { plan: planRollout(devices, target, spec), devices, unknown: [] };
}

/**
 * Plan a rollout, take each class's baseline (its windows over the last `windowMs`) and save the
 * record; a driver then runs it.
 *
 * @example
 * ```ts
 * const r = await createRollout({ store, fleet: 'lab', target, previous: [old], spec });
 * await new RolloutDriver({ store, conn, key, id: r.id }).run();
 * ```
 */
export async function createRollout(o: CreateRolloutOptions): Promise<RolloutRecord> {
  const now = o.now ?? Date.now();
  const { plan, devices } = await planFromStore(o.store, o.fleet, o.target.bundle, o.spec, o.classes);
  const baselines: Record<string, CohortStats | null> = {};
  for (const c of plan) {
    const members = devices.filter((d) => d.class === c.class).map((d) => ({ device: d.device, since: now - o.spec.windowMs }));
    const s = await storedCohort(o.store, members, now);
    baselines[c.class] = s.windows > 0 ? s : null;
  }
  const id = o.id ?? `ro-${new Date(now).toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomUUID().slice(0, 6)}`;
  const previous = Object.fromEntries(o.previous.map((b) => [b.bundle, b]));
  const record = newRollout({ id, fleet: o.fleet, target: o.target, previous, spec: o.spec, plan, devices, baselines, now });
  await o.store.saveRollout(record);
  return record;
}

export interface RolloutDriverOptions {
  store: FleetStore;
  /** An operator connection the driver owns (it subscribes to the fleet's job states on it). */
  conn: MqttConnection;
  /** A new connection when that one is lost (with backoff, up to MAX_RECONNECTS in a row); without it a lost connection ends `run`. */
  reconnect?: () => Promise<MqttConnection>;
  key: KeyObject;
  id: string;
  /** Between ticks (default 500 ms). */
  tickMs?: number;
  /** This driver's name in the rollout's lease (default host, process id and a random part). */
  owner?: string;
  /** How long a claim holds without renewal (default the larger of 30 s and 20 ticks): a driver that died is taken over after it. */
  leaseMs?: number;
  onLog?: (line: string) => void;
  now?: () => number;
}

/**
 * Runs one rollout to its end. Start it again after a crash with the same id: it goes on.
 *
 * @example
 * ```ts
 * const driver = new RolloutDriver({ store, conn, key, id: 'ro-20261206T101500-1a2b3c' });
 * const final = await driver.run(); // 'completed', 'aborted' or 'partial'
 * ```
 */
export class RolloutDriver {
  private readonly states = new Map<string, SeenState>();
  private subscribed = false;
  private stopped = false;
  private readonly now: () => number;
  private conn: MqttConnection;
  /** This driver's lease name (see RolloutDriverOptions.owner). */
  readonly owner: string;
  private readonly leaseMs: number;
  private waiting = false;

  constructor(private readonly o: RolloutDriverOptions) {
    this.now = o.now ?? Date.now;
    this.conn = o.conn;
    this.owner = o.owner ?? `${os.hostname()}-${process.pid}-${randomUUID().slice(0, 6)}`;
    this.leaseMs = o.leaseMs ?? Math.max(30_000, 20 * (o.tickMs ?? 500));
  }

  /** The connection in use (a reconnect replaces the one given); the caller ends it. */
  get connection(): MqttConnection {
    return this.conn;
  }

  private async subscribe(fleet: string): Promise<void> {
    if (this.subscribed) return;
    this.conn.onMessage((m) => {
      const t = parseTopic(m.topic);
      if (!t || t.kind !== 'job/state' || t.fleet !== fleet || m.payload.length === 0) return;
      const s = decodeJobState(m.payload);
      if (s) this.states.set(t.device, { job: s.job, state: s.state, active: s.active, ...(s.reason !== undefined ? { reason: s.reason } : {}) });
    });
    await this.conn.subscribe(jobFilters(fleet).state, 1);
    this.subscribed = true;
    // The retained states arrive just after subscribing: read them all before the first decision,
    // or a driver restarted after a long stop would take devices that finished for silent ones.
    const start = Date.now();
    let seen = -1;
    while (seen !== this.states.size && Date.now() - start < RETAINED_WAIT_MS) {
      seen = this.states.size;
      await new Promise((res) => setTimeout(res, 200));
    }
  }

  private async load(): Promise<NonNullable<Awaited<ReturnType<FleetStore['rollout']>>>> {
    const s = await this.o.store.rollout(this.o.id);
    if (!s) throw new InputError(formatProblem({ where: `rollout ${this.o.id}`, message: 'not in the fleet store', expected: 'an id from `edgeexit rollout status`', got: this.o.id, fix: 'check --db and the id' }));
    return s;
  }

  /** The gate results of the classes whose step baked long enough. */
  private async gates(r: RolloutRecord, now: number): Promise<Map<string, GateResult[]>> {
    const out = new Map<string, GateResult[]>();
    for (const cls of gatesDue(r, now)) {
      const { updated, control } = cohortsOf(r, cls);
      const step = r.classes[cls]!.steps[r.classes[cls]!.current]!;
      const u = await storedCohort(this.o.store, updated, now);
      const c = control.length ? await storedCohort(this.o.store, control.map((device) => ({ device, since: step.doneAt! })), now) : null;
      // No device left on the old bundle (last wave): the class's windows from before the rollout stand in.
      const against = c && c.windows > 0 ? c : r.classes[cls]!.baseline;
      out.set(cls, evaluateGates(r.spec.gates, u, against));
    }
    return out;
  }

  private async publish(r: RolloutRecord, o: JobOrder): Promise<void> {
    const job: Job = {
      v: 1,
      job: o.job,
      fleet: r.fleet,
      device: o.device,
      bundle: o.bundle.bundle,
      model: o.bundle.model,
      rollback: o.rollback,
      canceled: false,
      issuedAt: new Date(this.now()).toISOString(),
      manifest: o.bundle.manifest,
      signature: o.bundle.signature,
      ...(r.spec.trialMs !== undefined ? { trialMs: r.spec.trialMs } : {}),
      // The device gives up at the step timeout too (rolling back if it switched) and says timed-out: retried.
      timeoutS: Math.min(30 * 24 * 3600, Math.max(1, Math.ceil(r.spec.stepTimeoutMs / 1000))),
    };
    await this.conn.publish(jobTopics(r.fleet, o.device).desired, Buffer.from(JSON.stringify(signJob(job, this.o.key))), { qos: 1, retain: true });
  }

  /**
   * One tick: claim the lease, read, decide, save, publish, save. Returns the record as saved, or
   * as stored without acting when another driver holds the lease (two drivers on one rollout would
   * both publish its jobs; the second waits and takes over once the first's lease expires).
   */
  async tick(): Promise<RolloutRecord> {
    // Deciding on states that no longer arrive would time devices out for nothing.
    if (this.conn.closed) throw new Error('the broker connection is closed');
    if (!(await this.o.store.claimRollout(this.o.id, this.owner, this.leaseMs, this.now()))) {
      const held = await this.load();
      if (!this.waiting) this.o.onLog?.(`rollout ${this.o.id}: another driver holds it; waiting until its lease (${this.leaseMs} ms without renewal) runs out`);
      this.waiting = true;
      return held.record;
    }
    this.waiting = false;
    const stored = await this.load();
    await this.subscribe(stored.record.fleet);
    const now = this.now();
    const gates = await this.gates(stored.record, now);
    const { record, orders } = advanceRollout(stored.record, { now, states: this.states, gates, ...(stored.command ? { command: stored.command } : {}) });
    // Saved before publishing: a crash in between leaves `published: false`, which the next
    // driver sends again; published only after the broker acknowledged, then saved again.
    // Saved only while this driver holds the lease: one that stalled past it and was taken over
    // saves nothing and publishes nothing (the new holder decides from the stored record).
    if (!(await this.o.store.saveRollout(record, this.owner))) return this.lostLease();
    if (orders.length === 0) return record;
    await Promise.all(orders.map((o) => this.publish(record, o)));
    for (const o of orders) record.devices[o.device]!.published = true;
    if (!(await this.o.store.saveRollout(record, this.owner))) return this.lostLease();
    this.log(record, orders);
    return record;
  }

  private async lostLease(): Promise<RolloutRecord> {
    this.o.onLog?.(`rollout ${this.o.id}: another driver took the lease over during this tick; this one saved nothing and waits`);
    this.waiting = true;
    return (await this.load()).record;
  }

  private log(r: RolloutRecord, orders: readonly JobOrder[]): void {
    if (!this.o.onLog) return;
    const back = orders.filter((o) => o.rollback).length;
    this.o.onLog(`rollout ${r.id}: sent ${orders.length - back} update and ${back} rollback jobs; ${Object.entries(r.classes).map(([c, t]) => `${c} ${t.status} ${t.steps[t.current]?.name ?? 'done'}`).join(', ')}`);
  }

  /** Tick until the rollout is over (or `stop()`); resolves with the last record. */
  async run(): Promise<RolloutRecord> {
    for (let lost = 0; ; ) {
      let r: RolloutRecord;
      try {
        r = await this.tick();
        lost = 0;
      } catch (err) {
        if (!this.conn.closed || !this.o.reconnect || lost >= MAX_RECONNECTS) throw err;
        lost++;
        this.o.onLog?.(`rollout ${this.o.id}: broker connection lost (${(err as Error).message}); reconnecting, try ${lost} of ${MAX_RECONNECTS}`);
        await new Promise((res) => setTimeout(res, Math.min(10_000, 250 * 2 ** lost)));
        // Jobs of the failed tick were saved unpublished: the next tick sends them again.
        const fresh = await this.o.reconnect().catch(() => undefined);
        if (fresh) {
          this.conn = fresh;
          this.subscribed = false;
        }
        continue;
      }
      if ((FINAL_ROLLOUT_STATES as readonly string[]).includes(r.status) || this.stopped) {
        // Handed back at once, so a driver started after a stop need not wait for the lease to expire.
        await this.o.store.releaseRollout(this.o.id, this.owner);
        return r;
      }
      await new Promise((res) => setTimeout(res, this.o.tickMs ?? 500));
    }
  }

  /** Stop after the current tick. */
  stop(): void {
    this.stopped = true;
  }
}
