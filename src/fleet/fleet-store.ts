// What the collector and `fleet status` need from storage, kept apart from the drivers so the
// policy code (collector, status) never touches one. Asynchronous, because a networked database
// (PostgreSQL, src/fleet/pg-store.ts) answers later; the SQLite store (src/fleet/store.ts)
// resolves at once.
import type { Birth, Death, MetricsWindow } from '../telemetry/payloads.js';
import type { RolloutRecord } from './rollout-plan.js';

// fleetMismatch: a device id already recorded in another fleet (refused, never moved).
// clockSkew, outOfRange and tooManyExits: schema-valid messages refused by the collector's limits (src/fleet/bounds.ts).
export const COUNTER_NAMES = ['malformed', 'invalid', 'oversized', 'unknownDevice', 'duplicates', 'gaps', 'staleDeaths', 'foreignTopic', 'clockSkew', 'outOfRange', 'tooManyExits', 'fleetMismatch'] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export type Counters = Record<CounterName, number>;

export interface DeviceRow {
  device: string;
  fleet: string;
  online: boolean;
  /** null until a birth was seen (metrics from an unknown device create the row). */
  birth: Birth | null;
  bdSeq: number | null;
  lastSeen: number;
}

export interface WindowRow {
  device: string;
  id: number;
  bdSeq: number;
  seq: number;
  windowStart: number;
  windowEnd: number;
  count: number;
  exitHistogram: number[];
  latencyP50: number;
  latencyP95: number;
  latencyP99: number;
  joules: number;
  meanWatts: number;
  energySource: 'sensor' | 'model';
  droppedWindows: number;
  /** Hottest thermal zone at the end of the window, °C; absent when the device sent none. */
  temperatureC?: number;
  /** Labelled inferences in the window and how many were right; absent when the device had no labels. */
  accuracy?: { correct: number; labelled: number };
  /** Per-stage latency quantiles the device sent (stage k over the inferences that ran it); absent when none. */
  stages?: StageQuantiles[];
  /** The manifest the device ran for this window (its birth of the same bdSeq); absent when unknown. */
  manifestSha256?: string;
}

export interface StageQuantiles {
  p50: number;
  p95: number;
  p99: number;
}

export interface StageLatencyQuery {
  fleet: string;
  /** The birth's device profile (hardware class); all classes when absent. */
  deviceClass?: string;
  /** Windows run with any of these manifests. */
  manifestSha256: readonly string[];
  /** Newest first, at most this many. */
  limit: number;
}

/** One window's per-stage latency, for building a latency profile from what the fleet measured. */
export interface StageLatencyWindow {
  device: string;
  deviceClass: string | null;
  windowEnd: number;
  count: number;
  exitHistogram: number[];
  stages: StageQuantiles[];
  manifestSha256: string;
}

/**
 * What a class's calibration predicted (exit shares, p95 latency), and how far the fleet may move
 * from it before the collector reports drift (src/fleet/drift.ts). One per (fleet, class).
 */
export interface DriftBaseline {
  fleet: string;
  deviceClass: string;
  /** Only devices running this manifest are compared; all of the class when absent. */
  manifestSha256?: string;
  exitRates: number[];
  /** Predicted p95 end-to-end latency; null: no latency check (the calibration constrained another statistic). */
  p95Ms: number | null;
  /** Largest allowed |observed − predicted| exit share, in percentage points. */
  maxExitShiftPp: number;
  /** Largest allowed observed p95 / predicted p95. */
  maxLatencyRatio: number;
  /** Fewest recent windows in the class before drift is judged. */
  minWindows: number;
  /** Where the prediction came from (the calibration report). */
  source: string;
  setAt: number;
}

/**
 * Running totals over every window ever stored for the device (de-duplicated). They only grow:
 * a retention prune deletes windows but not what they added here, because these feed Prometheus
 * counters, where any drop reads as a reset. `windows` is windows stored in all, not rows kept.
 */
export interface DeviceTotals {
  device: string;
  windows: number;
  count: number;
  joules: number;
  /** Inferences per exit summed over every window stored (pruned ones included). */
  exits: number[];
  /** Labelled inferences summed over the windows stored that carried accuracy (0 when none; pruned ones included). */
  labelled: number;
  /** Of those, the ones the device got right (0 when none). */
  correct: number;
}

export interface WindowOutcome {
  /** false: (device, id) was already stored; the duplicates counter went up instead. */
  stored: boolean;
  /** seq numbers missing since the previous window of the same bdSeq (0 when none or not comparable). */
  gap: number;
  /** No birth was ever seen for the device; the window is stored anyway and counted. */
  unknownDevice: boolean;
  /** Present when the device is recorded in another fleet: nothing was stored, fleetMismatch went up. */
  fleetMismatch?: true;
}

/**
 * 'fleetMismatch': the device id is recorded in another fleet, so the message was refused and
 * counted. Devices are (fleet, device): a birth on another fleet must not move a device, with its
 * windows, out of the fleet it was in (one spoofed birth used to do that).
 */
export type BirthOutcome = 'online' | 'fleetMismatch';
export type DeathOutcome = 'offline' | 'stale' | 'unknown' | 'fleetMismatch';

/** An operator's command to a rollout, numbered so the driver applies each once. */
export type RolloutCommand = 'pause' | 'resume' | 'abort';

export interface StoredRollout {
  record: RolloutRecord;
  /** The last command given (`rollout pause|resume|abort`), with its number; null when none. */
  command: { seq: number; command: RolloutCommand } | null;
}

/**
 * The write calls the collector makes per message, answered at once: for a store whose database
 * calls are synchronous (SQLite), a batch costs one promise instead of several per message. The
 * record calls are only valid inside `transaction`'s function, which runs synchronously as one
 * transaction (BEGIN … COMMIT, or ROLLBACK when it throws) once no other transaction is open.
 *
 * @example
 * ```ts
 * const sync = store.sync;
 * if (sync) await sync.transaction(() => windows.map((w) => sync.recordWindow(w, 'lab', Date.now())));
 * ```
 */
export interface SyncFleetWriter {
  /** Resolves after the commit; rejects, with nothing stored, when `fn` or the commit throws. */
  transaction<T>(fn: () => T): Promise<T>;
  recordBirth(b: Birth, seenAt: number): BirthOutcome;
  recordDeath(d: Death, seenAt: number, fleet?: string): DeathOutcome;
  recordWindow(w: MetricsWindow, fleet: string, seenAt: number): WindowOutcome;
  noteRefusedWindow(w: Pick<MetricsWindow, 'device' | 'bdSeq' | 'seq'>, seenAt: number): number;
  bump(counter: CounterName, n?: number): void;
  birthOf(device: string): Birth | null;
}

export interface FleetStore {
  readonly file: string;
  /** Refused ('fleetMismatch', counted) when the device is recorded in a fleet other than `b.fleet`. */
  recordBirth(b: Birth, seenAt: number): Promise<BirthOutcome>;
  /**
   * Offline only when the death's bdSeq is the device's current one; otherwise counted as stale.
   * `fleet` (the topic's): refused and counted when the device is recorded in another fleet.
   */
  recordDeath(d: Death, seenAt: number, fleet?: string): Promise<DeathOutcome>;
  recordWindow(w: MetricsWindow, fleet: string, seenAt: number): Promise<WindowOutcome>;
  /**
   * A window that arrived but was refused (src/fleet/bounds.ts): it still used up its (bdSeq, seq),
   * so the next window does not count it as a gap. Returns the gap before it (counted too);
   * a device with no row gets none, and 0 is returned.
   */
  noteRefusedWindow(w: Pick<MetricsWindow, 'device' | 'bdSeq' | 'seq'>, seenAt: number): Promise<number>;
  bump(counter: CounterName, n?: number): Promise<void>;
  /**
   * Run `fn` as one transaction: record* calls made while it runs (awaited inside it) commit
   * together (the collector's batches), or none do when it throws. Calls from outside wait for it
   * (they are not part of it). Resolves after the commit.
   */
  transaction<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Optional, for stores across a network: inside a transaction, read at once what record* calls
   * for these devices and windows will need (the collector passes a whole batch), instead of one
   * round trip per message. Outside a transaction it does nothing.
   */
  prefetch?(keys: readonly { device: string; id?: number; windowEnd?: number }[]): Promise<void>;
  /**
   * Optional, for stores whose writes are synchronous underneath (SQLite): the collector's write
   * calls without a promise each, run inside one synchronous transaction per batch.
   */
  readonly sync?: SyncFleetWriter;
  counters(): Promise<Counters>;
  devices(): Promise<DeviceRow[]>;
  /** The device's last birth on record, or null (no birth seen, or no such device). */
  birthOf(device: string): Promise<Birth | null>;
  /** Running totals per device, in device order; a device appears once a window of it was stored. */
  totals(): Promise<DeviceTotals[]>;
  /** Most recent windows of a device, newest first. */
  latestWindows(device: string, limit: number): Promise<WindowRow[]>;
  /** Temperature of the device's most recent window that has one (same order as latestWindows); null when none does. */
  latestTemperature(device: string): Promise<number | null>;
  /**
   * latestWindows for every device in one read (the fleet-wide pages: fleet status, /api/table,
   * /metrics, drift), so a page costs the same few queries however many devices there are.
   * Keyed by device, each list newest first; devices without windows are absent. `devices`: only
   * these (a rollout's cohort), still in one read.
   *
   * @example
   * ```ts
   * const recent = await store.recentWindows(10);
   * for (const d of await store.devices()) console.log(d.device, recent.get(d.device)?.length ?? 0);
   * ```
   */
  recentWindows(limit: number, devices?: readonly string[]): Promise<Map<string, WindowRow[]>>;
  /**
   * latestTemperature for every device in one read; devices whose windows carry none are absent.
   *
   * @example
   * ```ts
   * const celsius = (await store.latestTemperatures()).get('pi-7') ?? null;
   * ```
   */
  latestTemperatures(): Promise<Map<string, number>>;
  /** Windows with per-stage latency run with one of the given manifests, newest first (fleet latency profile). */
  stageLatencyWindows(q: StageLatencyQuery): Promise<StageLatencyWindow[]>;
  /** Set (replace) the drift baseline of (b.fleet, b.deviceClass). */
  setDriftBaseline(b: DriftBaseline): Promise<void>;
  /** Every drift baseline, by fleet then class. */
  driftBaselines(): Promise<DriftBaseline[]>;
  /** Delete windows that ended more than `days` days before `now`; returns how many. totals() stays as it was. */
  prune(days: number, now?: number): Promise<number>;
  /**
   * Insert or replace a rollout's record (the driver, every tick that changed it). Leaves its
   * command and lease alone. With `owner` (a driver), only while that owner holds the lease
   * (claimRollout): false, and nothing saved, once another driver took it over.
   */
  saveRollout(r: RolloutRecord, owner?: string): Promise<boolean>;
  /** A rollout and its last command; null when there is no such id. */
  rollout(id: string): Promise<StoredRollout | null>;
  /** Every rollout, newest first. */
  rollouts(): Promise<RolloutRecord[]>;
  /** Record an operator command for the driver to apply; returns its number, or null when there is no such rollout. */
  commandRollout(id: string, command: RolloutCommand): Promise<number | null>;
  /**
   * Take or renew the lease on a rollout until `now + ttlMs`, so only one driver ticks it: true
   * when `owner` holds it now; false when another owner holds a lease not yet expired at `now`, or
   * there is no such rollout. One conditional update: of two claimants at once exactly one wins.
   */
  claimRollout(id: string, owner: string, ttlMs: number, now: number): Promise<boolean>;
  /** Give the lease back (a driver that stops), so another driver takes the rollout at once; a no-op unless `owner` holds it. */
  releaseRollout(id: string, owner: string): Promise<void>;
  close(): Promise<void>;
}
