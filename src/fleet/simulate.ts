// A fleet in one process, for trying the collector and for soak tests: N virtual devices, each a
// real TelemetryPublisher with its own state (bdSeq file, outbox), publishing a birth and then
// metric windows that replay a latency profile — a measured one (`edgeexit profile` output) or a
// device profile's cost model — with exits drawn from an exit distribution and energy from the
// device's power model. Windows are synthetic but shaped like the agent's.
//
// Each device keeps a ledger of what it enqueued (`sent.jsonl` in its state dir: outbox id, count,
// joules, exits), so a test can compare the collector's totals with what was sent. The ledger is
// written right after the outbox accepted the window; a SIGKILL between the two leaves the window
// in the outbox but not in the ledger, which reopening repairs from the outbox's live entries (an
// entry cannot be acked before the ledger line: the ack needs the collector's reply, i.e. an event-loop turn).
import { appendFileSync, existsSync, ftruncateSync, closeSync, openSync, readFileSync, promises as fsp } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { loadDeviceProfile } from '../devices/load.js';
import { modelWatts, type PowerModel } from '../telemetry/energy/model.js';
import { TelemetryPublisher, type Backoff, type BirthInfo, type WindowInput } from '../telemetry/mqtt/publisher.js';
import type { MetricsWindowBody } from '../telemetry/payloads.js';
import { InputError, show } from '../util/errors.js';
import { startCollector, type Collector } from './collector.js';
import type { DeviceTotals, FleetStore } from './fleet-store.js';
import { mulberry32 } from '../util/random.js';
import { edgeexitVersion } from '../bundle/version.js';

/** What the virtual devices replay. */
export interface SimProfile {
  /** Where the numbers come from, for the summary. */
  source: string;
  /** Device profile id the births name. */
  deviceProfile: string;
  precision: 'fp32' | 'fp16' | 'int8';
  /** Per-stage latency at batch 1 (stage k runs only for inferences that get past exit k − 1). */
  stages: { p50Ms: number; p95Ms: number }[];
  /** Share of inferences leaving at each exit (sums to 1). */
  exitShares: number[];
  power: PowerModel;
  bundle: { name: string; manifestSha256: string };
}

// fmnist-branchy's stage MACs (models/fmnist-branchy/README.md) and the exit shares of its
// calibrated int8 run in the README's quick-start table: the reference workload when the profile
// names a device and not a bundle.
const REFERENCE_STAGE_MACS = [144_256, 2_725_184, 2_784_512];
const REFERENCE_EXIT_SHARES = [0.857, 0.067, 0.076];
// A cost model gives one number per stage; measured stage times on the build machine have their
// p95 about 1.3x the median, which the synthetic spread copies.
const COST_MODEL_P95_RATIO = 1.3;

function exitSharesFor(stages: number): number[] {
  if (stages === REFERENCE_EXIT_SHARES.length) return [...REFERENCE_EXIT_SHARES];
  // Other depths: most leave early, each later exit takes a fixed fraction of what is left.
  const out: number[] = [];
  let left = 1;
  for (let k = 0; k < stages - 1; k++) {
    out.push(left * 0.8);
    left *= 0.2;
  }
  out.push(left);
  return out;
}

/**
 * `spec`: a device profile id or file (cost-model latency of the reference model on that device)
 * or a latency profile file written by `edgeexit profile` (its measured batch-1 stage times; power
 * from the device it names, else `powerFrom`).
 */
export async function loadSimProfile(spec = 'rpi4', powerFrom = 'rpi4'): Promise<SimProfile> {
  if (spec.endsWith('.json') && existsSync(spec)) {
    let json: { format?: unknown } | undefined;
    try {
      json = JSON.parse(readFileSync(spec, 'utf8')) as { format?: unknown };
    } catch {
      json = undefined;
    }
    if (json?.format === 'edgeexit-latency-profile') {
      // Imported here: the calibration module pulls in onnxruntime, which a simulator without a
      // latency profile has no use for.
      const { readLatencyProfile } = await import('../calibration/latency.js');
      const lp = await readLatencyProfile(spec);
      const device = await loadDeviceProfile(lp.host.device ?? powerFrom);
      const stages = lp.stages.map((s) => {
        const b = s.batches.find((x) => x.batch === 1) ?? s.batches[0]!;
        return { p50Ms: b.p50Ms, p95Ms: Math.max(b.p95Ms, b.p50Ms) };
      });
      const precision = (['fp32', 'fp16', 'int8'] as const).find((p) => p === lp.bundle.precision) ?? 'fp32';
      return {
        source: `latency profile ${spec} (${lp.source}, ${lp.bundle.model}); power model of ${device.id}`,
        deviceProfile: device.id,
        precision,
        stages,
        exitShares: exitSharesFor(stages.length),
        power: { idleWatts: device.power.idleWatts, busyWatts: device.power.busyWatts },
        bundle: { name: lp.bundle.model, manifestSha256: lp.bundle.manifestSha256 },
      };
    }
  }
  const device = await loadDeviceProfile(spec);
  const per = device.costModel.perPrecision as Record<string, { convNsPerMac: number } | undefined>;
  const want = device.precision.default;
  const precision = per[want] ? want : 'fp32';
  const nsPerMac = (per[precision] ?? per.fp32)?.convNsPerMac;
  if (nsPerMac === undefined)
    throw new InputError(`--profile ${spec}: device profile ${device.id} has no cost model for ${want} or fp32`, [
      { where: `${device.id}: costModel.perPrecision`, expected: `an entry for ${want} or fp32`, got: Object.keys(per).join(', ') || 'none', fix: 'add one, or pass a latency profile file from `edgeexit profile`' },
    ]);
  const stages = REFERENCE_STAGE_MACS.map((macs) => {
    const p50Ms = device.costModel.overheadMsPerRun + (macs * nsPerMac) / 1e6;
    return { p50Ms, p95Ms: p50Ms * COST_MODEL_P95_RATIO };
  });
  return {
    source: `cost model of device profile ${device.id} (${precision}) for fmnist-branchy; power model of ${device.id}`,
    deviceProfile: device.id,
    precision: precision as SimProfile['precision'],
    stages,
    exitShares: [...REFERENCE_EXIT_SHARES],
    power: { idleWatts: device.power.idleWatts, busyWatts: device.power.busyWatts },
    bundle: { name: 'fmnist-branchy', manifestSha256: createHash('sha256').update('edgeexit-simulated-fmnist-branchy').digest('hex') },
  };
}


/** A fault given to every device of a class: slower stages and/or exits moving later. */
export interface SimFault {
  /** Every stage takes this many times as long (1 = as profiled). */
  latencyX?: number;
  /** Share of inferences moved from the first exit to the last (0.2: 20 percentage points). */
  exitShift?: number;
}

/** One hardware class of a simulated fleet: `devices` devices replaying `profile`, maybe with a fault. */
export interface SimClass {
  name: string;
  devices: number;
  profile: SimProfile;
  fault?: SimFault;
}

/**
 * The profile a faulty device replays: stage times × latencyX, and exitShift of the first exit's
 * share handed to the last exit (clamped so shares stay in [0, 1] and sum to 1).
 *
 * @example applyFault(profile, { latencyX: 2 }).stages[0].p50Ms // twice profile.stages[0].p50Ms
 */
export function applyFault(p: SimProfile, f: SimFault | undefined): SimProfile {
  if (!f) return p;
  const x = f.latencyX ?? 1;
  const shares = [...p.exitShares];
  const shift = Math.min(shares[0]!, Math.max(-shares[shares.length - 1]!, f.exitShift ?? 0));
  if (shares.length > 1) {
    shares[0]! -= shift;
    shares[shares.length - 1]! += shift;
  }
  return { ...p, stages: p.stages.map((s) => ({ p50Ms: s.p50Ms * x, p95Ms: s.p95Ms * x })), exitShares: shares };
}

const CLASS_RE = /^([A-Za-z0-9][A-Za-z0-9._-]{0,63}):(\d+)$/;

/**
 * `--classes rpi4:100,rpi5:60,jetson-orin-nano:40` → class names (device profile ids) and device counts.
 *
 * @example parseClassCounts('rpi4:100,rpi5:60') // [{ name: 'rpi4', devices: 100 }, { name: 'rpi5', devices: 60 }]
 */
export function parseClassCounts(spec: string): { name: string; devices: number }[] {
  const out = spec.split(',').map((part) => {
    const m = CLASS_RE.exec(part.trim());
    if (!m || Number(m[2]) < 1)
      throw new InputError(`--classes: bad entry ${show(part)}`, [{ where: '--classes', expected: '<device profile id>:<devices ≥ 1>, comma separated', got: show(part), fix: 'e.g. --classes rpi4:100,rpi5:60,jetson-orin-nano:40' }]);
    return { name: m[1]!, devices: Number(m[2]) };
  });
  const names = out.map((c) => c.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new InputError(`--classes: ${twice} is named twice`, [{ where: '--classes', expected: 'each class once', got: spec, fix: 'add the counts up into one entry' }]);
  return out;
}

/**
 * `--fault rpi5:latency=2x,exit-shift=0.2` → the class and its fault.
 *
 * @example parseFault('rpi5:latency=2x') // { name: 'rpi5', fault: { latencyX: 2 } }
 */
export function parseFault(spec: string): { name: string; fault: SimFault } {
  const bad = (got: string): InputError =>
    new InputError(`--fault: bad value ${show(spec)}`, [{ where: '--fault', expected: '<class>:latency=<k>x and/or exit-shift=<fraction in [-1, 1]>', got, fix: 'e.g. --fault rpi5:latency=2x or --fault rpi4:exit-shift=0.2' }]);
  const m = /^([^:]+):(.+)$/.exec(spec.trim());
  if (!m) throw bad(show(spec));
  const fault: SimFault = {};
  for (const kv of m[2]!.split(',')) {
    const [k, v = ''] = kv.trim().split('=');
    if (k === 'latency' && /^\d*\.?\d+x?$/.test(v) && Number(v.replace(/x$/, '')) > 0) fault.latencyX = Number(v.replace(/x$/, ''));
    else if (k === 'exit-shift' && v !== '' && Math.abs(Number(v)) <= 1) fault.exitShift = Number(v);
    else throw bad(show(kv));
  }
  return { name: m[1]!, fault };
}

/**
 * Classes for a simulated fleet: each class name is a device profile id (its cost and power
 * model), with the faults given for it; a fault for a class not in the list is refused.
 *
 * @example await loadSimClasses('rpi4:100,rpi5:60', ['rpi5:latency=2x'])
 */
export async function loadSimClasses(classes: string, faults: readonly string[] = []): Promise<SimClass[]> {
  const counts = parseClassCounts(classes);
  const byName = new Map(faults.map((f) => parseFault(f)).map((f) => [f.name, f.fault]));
  for (const name of byName.keys())
    if (!counts.some((c) => c.name === name)) throw new InputError(`--fault ${name}: no such class`, [{ where: '--fault', expected: `one of ${counts.map((c) => c.name).join(', ')}`, got: name, fix: 'name a class given in --classes' }]);
  return Promise.all(counts.map(async (c) => ({ ...c, profile: await loadSimProfile(c.name), ...(byName.has(c.name) ? { fault: byName.get(c.name)! } : {}) })));
}

/** Seeded uniform [0, 1) source, so a simulated fleet repeats run to run. */
export const seededRandom = mulberry32;

function normal(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

function poisson(mean: number, rand: () => number): number {
  if (mean <= 0) return 0;
  if (mean > 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * normal(rand)));
  const l = Math.exp(-mean);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rand();
  } while (p > l);
  return k - 1;
}

function quantile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
// Quantiles are estimated from at most this many inferences per window; exits count every one.
const LATENCY_SAMPLES = 256;

/**
 * One window of `count ~ Poisson(inferencesPerS × window)` inferences: exits drawn from the exit
 * shares, stage latencies log-normal with the profile's p50 and p95, energy from the power model
 * at the window's utilisation (busy time / window length).
 */
export function syntheticWindow(p: SimProfile, rand: () => number, windowStart: number, windowEnd: number, inferencesPerS: number): WindowInput {
  const seconds = Math.max(0.001, (windowEnd - windowStart) / 1000);
  const count = poisson(inferencesPerS * seconds, rand);
  const exits = p.exitShares.map(() => 0);
  const sigma = p.stages.map((s) => (s.p95Ms > s.p50Ms && s.p50Ms > 0 ? Math.log(s.p95Ms / s.p50Ms) / 1.645 : 0));
  const e2e: number[] = [];
  const perStage: number[][] = p.stages.map(() => []);
  for (let i = 0; i < count; i++) {
    let r = rand();
    let k = 0;
    while (k < exits.length - 1 && r >= p.exitShares[k]!) r -= p.exitShares[k++]!;
    exits[k]!++;
    if (i < LATENCY_SAMPLES) {
      let total = 0;
      for (let s = 0; s <= k; s++) {
        const t = p.stages[s]!.p50Ms * Math.exp(sigma[s]! * normal(rand));
        perStage[s]!.push(t);
        total += t;
      }
      e2e.push(total);
    }
  }
  const sampled = Math.min(count, LATENCY_SAMPLES);
  const busyMs = sampled > 0 ? (e2e.reduce((a, b) => a + b, 0) / sampled) * count : 0;
  const q = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return { p50: round3(quantile(s, 0.5)), p95: round3(quantile(s, 0.95)), p99: round3(quantile(s, 0.99)) };
  };
  const utilisation = Math.min(1, busyMs / (seconds * 1000));
  const meanWatts = modelWatts(p.power, utilisation);
  return {
    windowStart,
    windowEnd,
    count,
    exitHistogram: exits,
    latencyMs: { endToEnd: q(e2e), stages: perStage.map(q) },
    energy: { joules: round3(meanWatts * seconds), meanWatts: round3(meanWatts), source: 'model', meter: 'model' },
  };
}

// ---- the ledger of what a device sent ----

export interface SentTotals {
  windows: number;
  count: number;
  joules: number;
  exits: number[];
}

interface LedgerLine {
  id: number;
  count: number;
  joules: number;
  exits: number[];
}

const LEDGER = 'sent.jsonl';

function addTo(t: SentTotals, l: LedgerLine): void {
  t.windows++;
  t.count += l.count;
  t.joules += l.joules;
  for (const [k, n] of l.exits.entries()) t.exits[k] = (t.exits[k] ?? 0) + n;
}

/** Read a device's ledger (one entry per outbox id; a torn last line is ignored). */
export function readSentLedger(stateDir: string): Map<number, LedgerLine> {
  const out = new Map<number, LedgerLine>();
  const file = path.join(stateDir, LEDGER);
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    try {
      const l = JSON.parse(line) as LedgerLine;
      out.set(l.id, l);
    } catch {
      // only the last line can be torn (killed mid-append)
    }
  }
  return out;
}

export function ledgerTotals(ledger: Map<number, LedgerLine>): SentTotals {
  const t: SentTotals = { windows: 0, count: 0, joules: 0, exits: [] };
  for (const l of ledger.values()) addTo(t, l);
  return t;
}

class SentLedger {
  private readonly file: string;
  readonly entries: Map<number, LedgerLine>;

  constructor(stateDir: string, live: { id: number; body: MetricsWindowBody }[]) {
    this.file = path.join(stateDir, LEDGER);
    if (existsSync(this.file)) {
      // Cut a torn last line so the next append starts on a line of its own.
      const buf = readFileSync(this.file);
      const end = buf.lastIndexOf(0x0a) + 1;
      if (end < buf.length) {
        const fd = openSync(this.file, 'r+');
        ftruncateSync(fd, end);
        closeSync(fd);
      }
    }
    this.entries = readSentLedger(stateDir);
    for (const e of live) if (!this.entries.has(e.id)) this.add(e.id, e.body);
  }

  add(id: number, w: Pick<WindowInput, 'count' | 'energy' | 'exitHistogram'>): void {
    const l: LedgerLine = { id, count: w.count, joules: w.energy.joules, exits: w.exitHistogram };
    // No fsync: a SIGKILL keeps what was written; power loss is not something a simulator has.
    appendFileSync(this.file, JSON.stringify(l) + '\n');
    this.entries.set(id, l);
  }
}

// ---- the simulator ----

export interface SimulateOptions {
  /** Broker URL; omit to start an embedded broker and collector (`dbFile`). */
  url?: string;
  devices: number;
  fleet?: string;
  /** Device ids are `<prefix>-0001`…; state goes to `<stateDir>/<id>/`. */
  prefix?: string;
  stateDir: string;
  /** Windows per second per device (default 0.2: a 5 s window). */
  rate?: number;
  /** Inferences per second per device, for window counts and utilisation (default 20). */
  inferencesPerS?: number;
  profile: SimProfile;
  /**
   * Hardware classes (each with its profile and fault); replaces `devices` and `profile`. Device
   * ids are `<prefix>-<class>-0001`…, and each birth names the class as its device profile.
   */
  classes?: SimClass[];
  seed?: number;
  /** Collector database when the simulator starts its own (default `<stateDir>/fleet.db`). */
  dbFile?: string;
  protocolVersion?: 4 | 5;
  backoff?: Partial<Backoff>;
  /** fsync the outboxes (default false: a SIGKILL loses nothing without it; only power loss would). */
  fsync?: boolean;
  /** Windows each outbox keeps at most; beyond it the oldest are dropped and counted (default 100 000). */
  maxOutbox?: number;
  /** Publisher tuning (publisher.ts): windows out unacknowledged, and how long before one is resent. */
  maxInflight?: number;
  ackTimeoutMs?: number;
  onLog?: (line: string) => void;
}

export interface SimDeviceSummary {
  device: string;
  sent: SentTotals;
  /** Windows the collector acknowledged (sent − still queued − dropped). */
  acked: number;
  queued: number;
  dropped: number;
  sessions: number;
}

export interface SimSummary {
  devices: SimDeviceSummary[];
  totals: { windows: number; acked: number; queued: number; dropped: number; count: number; joules: number };
  /** When the simulator ran its own collector: what it stored, per device (filled in by the CLI after closing it). */
  collected?: DeviceTotals[];
}

export interface SimDevice {
  readonly id: string;
  readonly stateDir: string;
  readonly publisher: TelemetryPublisher;
  sent(): SentTotals;
}

export function deviceId(prefix: string, i: number): string {
  return `${prefix}-${String(i + 1).padStart(4, '0')}`;
}

type SimDeviceState = SimDevice & { ledger: SentLedger; profile: SimProfile };

function birthFor(p: SimProfile): BirthInfo {
  return {
    profile: p.deviceProfile,
    bundle: {
      name: p.bundle.name,
      version: '0.0.0-sim',
      manifestSha256: p.bundle.manifestSha256,
      precision: p.precision,
      thresholds: p.stages.slice(1).map(() => 0.75),
    },
    runtime: { edgeexit: edgeexitVersion(), node: process.versions.node },
  };
}

/**
 * Every simulated device: its id, the profile it replays (its class's, fault applied) and its birth.
 *
 * @example fleetPlan({ devices: 0, profile, classes: await loadSimClasses('rpi4:2') }).map((d) => d.id) // ['sim-rpi4-0001', 'sim-rpi4-0002']
 */
export function fleetPlan(opts: Pick<SimulateOptions, 'devices' | 'prefix' | 'profile' | 'classes'>): { id: string; deviceClass: string; profile: SimProfile; birth: BirthInfo }[] {
  const prefix = opts.prefix ?? 'sim';
  if (!opts.classes?.length) {
    const birth = birthFor(opts.profile);
    return Array.from({ length: opts.devices }, (_, i) => ({ id: deviceId(prefix, i), deviceClass: opts.profile.deviceProfile, profile: opts.profile, birth }));
  }
  return opts.classes.flatMap((c) => {
    // The birth names the class (the device profile id) whatever profile file the numbers came from.
    const profile = { ...applyFault(c.profile, c.fault), deviceProfile: c.name };
    const birth = birthFor(profile);
    return Array.from({ length: c.devices }, (_, i) => ({ id: deviceId(`${prefix}-${c.name}`, i), deviceClass: c.name, profile, birth }));
  });
}

export interface RecordSimulatedOptions {
  fleet?: string;
  prefix?: string;
  classes: SimClass[];
  /** Windows per device (default 5), each `windowMs` long, the last ending at `endAt`. */
  windows?: number;
  windowMs?: number;
  endAt?: number;
  inferencesPerS?: number;
  seed?: number;
}

/**
 * A simulated fleet written straight into a store through the calls the collector makes (a birth
 * per device, then its windows, one transaction): for tests and demos of the dashboard, drift and
 * fleet latency at a scale where a thousand MQTT sessions would only slow the point down.
 *
 * @example
 * ```ts
 * import { loadSimClasses, openFleetStore, recordSimulatedFleet } from 'edgeexit/fleet';
 * const store = openFleetStore('demo.db');
 * await recordSimulatedFleet(store, { classes: await loadSimClasses('rpi4:600,rpi5:400', ['rpi5:latency=2x']) });
 * ```
 */
export async function recordSimulatedFleet(store: FleetStore, o: RecordSimulatedOptions): Promise<{ devices: number; windows: number }> {
  const fleet = o.fleet ?? 'sim';
  const perDevice = o.windows ?? 5;
  const windowMs = o.windowMs ?? 10_000;
  const endAt = o.endAt ?? Date.now();
  const plan = fleetPlan({ devices: 0, profile: o.classes[0]!.profile, classes: o.classes, ...(o.prefix !== undefined ? { prefix: o.prefix } : {}) });
  let stored = 0;
  await store.transaction(async () => {
    for (const [i, d] of plan.entries()) {
      const rand = seededRandom((o.seed ?? 1) * 100_003 + i);
      const start = endAt - perDevice * windowMs;
      await store.recordBirth({ device: d.id, fleet, bdSeq: 0, seq: 0, ...d.birth, at: start }, start);
      for (let k = 0; k < perDevice; k++) {
        const w = syntheticWindow(d.profile, rand, start + k * windowMs, start + (k + 1) * windowMs, o.inferencesPerS ?? 20);
        const r = await store.recordWindow({ ...w, device: d.id, id: k + 1, bdSeq: 0, seq: k + 1, droppedWindows: 0 }, fleet, w.windowEnd);
        if (r.stored) stored++;
      }
    }
  });
  return { devices: plan.length, windows: stored };
}

export class FleetSimulator {
  private generating = true;
  private readonly loops: Promise<void>[] = [];
  private readonly wakeAll = new Set<() => void>();

  private constructor(
    readonly devices: SimDeviceState[],
    readonly collector: Collector | undefined,
    readonly url: string,
    readonly profile: SimProfile,
  ) {}

  static async start(opts: SimulateOptions): Promise<FleetSimulator> {
    if (!Number.isInteger(opts.devices) || opts.devices < 1)
      throw new InputError(`--devices: expected a whole number ≥ 1, got ${show(opts.devices)}`, [{ where: '--devices', expected: 'an integer ≥ 1', got: show(opts.devices), fix: 'e.g. --devices 100' }]);
    const rate = opts.rate ?? 0.2;
    if (!(rate > 0) || rate > 1000)
      throw new InputError(`--rate: expected windows per second per device in (0, 1000], got ${show(opts.rate)}`, [{ where: '--rate', expected: '0 < rate ≤ 1000', got: show(opts.rate), fix: 'e.g. --rate 0.2 for one window every 5 s' }]);
    const fleet = opts.fleet ?? 'sim';
    await fsp.mkdir(opts.stateDir, { recursive: true });
    let collector: Collector | undefined;
    let url = opts.url;
    if (url === undefined) {
      collector = await startCollector({ dbFile: opts.dbFile ?? path.join(opts.stateDir, 'fleet.db'), port: 0, host: '127.0.0.1', onLog: opts.onLog ?? (() => undefined) });
      url = collector.url;
    }
    const protocolVersion = opts.protocolVersion ?? (collector ? 4 : 5);
    const devices: SimDeviceState[] = [];
    try {
      for (const { id, profile, birth } of fleetPlan(opts)) {
        const stateDir = path.join(opts.stateDir, id);
        const publisher = await TelemetryPublisher.start({
          url,
          fleet,
          device: id,
          stateDir,
          birth,
          protocolVersion,
          outbox: { fsync: opts.fsync ?? false, maxEntries: opts.maxOutbox ?? 100_000 },
          ...(opts.backoff ? { backoff: opts.backoff } : {}),
          ...(opts.maxInflight !== undefined ? { maxInflight: opts.maxInflight } : {}),
          ...(opts.ackTimeoutMs !== undefined ? { ackTimeoutMs: opts.ackTimeoutMs } : {}),
          onError: () => undefined,
        });
        const ledger = new SentLedger(stateDir, publisher.outbox.peek(Number.MAX_SAFE_INTEGER));
        devices.push({ id, stateDir, publisher, ledger, profile, sent: () => ledgerTotals(ledger.entries) });
      }
    } catch (err) {
      for (const d of devices) await d.publisher.close().catch(() => undefined);
      await collector?.close();
      throw err;
    }
    const sim = new FleetSimulator(devices, collector, url, opts.profile);
    const periodMs = 1000 / rate;
    const seed = opts.seed ?? 1;
    for (const [i, d] of devices.entries()) sim.loops.push(sim.generate(d, periodMs, seededRandom(seed * 100_003 + i), opts.inferencesPerS ?? 20));
    return sim;
  }

  private async generate(d: SimDeviceState, periodMs: number, rand: () => number, ips: number): Promise<void> {
    // Devices start at random phases so a fleet does not publish in lockstep.
    let next = Date.now() + rand() * periodMs;
    let windowStart = Date.now();
    while (this.generating) {
      const wait = next - Date.now();
      if (wait > 0) await this.sleep(wait);
      if (!this.generating) break;
      const windowEnd = Math.max(windowStart, Date.now());
      const w = syntheticWindow(d.profile, rand, windowStart, windowEnd, ips);
      const id = await d.publisher.enqueueWindow(w);
      d.ledger.add(id, w);
      windowStart = windowEnd;
      next += periodMs;
      // Fell behind (a slow disk, a busy machine): skip ahead rather than burst.
      if (next < Date.now() - periodMs) next = Date.now();
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.wakeAll.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wakeAll.add(done);
    });
  }

  /** Enqueue `perDevice` windows on every device at once (a backlog, as after a long outage). */
  async burst(perDevice: number): Promise<void> {
    await Promise.all(
      this.devices.map(async (d, i) => {
        const rand = seededRandom(7_919 * (i + 1));
        for (let k = 0; k < perDevice; k++) {
          const at = Date.now();
          const w = syntheticWindow(d.profile, rand, at, at, 20);
          d.ledger.add(await d.publisher.enqueueWindow(w), w);
        }
      }),
    );
  }

  /** Stop producing windows (publishing of what is queued goes on). */
  async stopGenerating(): Promise<void> {
    this.generating = false;
    for (const w of [...this.wakeAll]) w();
    await Promise.all(this.loops);
  }

  /** Resolves once every outbox is empty, or false after `timeoutMs`. */
  async drained(timeoutMs = 30_000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const all = Promise.all(this.devices.map((d) => d.publisher.drained())).then(() => true as const);
    const r = await Promise.race([all, timeout]);
    clearTimeout(timer);
    return r;
  }

  progress(): { connected: number; sent: number; acked: number; queued: number } {
    let connected = 0;
    let sent = 0;
    let queued = 0;
    for (const d of this.devices) {
      const s = d.publisher.getStats();
      if (s.connected) connected++;
      sent += d.ledger.entries.size;
      queued += s.queued;
    }
    return { connected, sent, acked: sent - queued, queued };
  }

  summary(): SimSummary {
    const devices = this.devices.map((d): SimDeviceSummary => {
      const s = d.publisher.getStats();
      const sent = d.sent();
      return { device: d.id, sent, acked: sent.windows - s.queued - s.dropped, queued: s.queued, dropped: s.dropped, sessions: s.sessions };
    });
    const totals = { windows: 0, acked: 0, queued: 0, dropped: 0, count: 0, joules: 0 };
    for (const d of devices) {
      totals.windows += d.sent.windows;
      totals.acked += d.acked;
      totals.queued += d.queued;
      totals.dropped += d.dropped;
      totals.count += d.sent.count;
      totals.joules += d.sent.joules;
    }
    return { devices, totals };
  }

  /** Stop generating, close every publisher (clean death; unacked windows stay in the outboxes) and the own collector. */
  async close(): Promise<void> {
    await this.stopGenerating();
    await Promise.all(this.devices.map((d) => d.publisher.close()));
    await this.collector?.close();
  }
}

