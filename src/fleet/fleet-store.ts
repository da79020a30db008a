// What the collector and `fleet status` need from storage, kept apart from the drivers so the
// policy code (collector, status) never touches one. Asynchronous, because a networked database
// (PostgreSQL, src/fleet/pg-store.ts) answers later; the SQLite store (src/fleet/store.ts)
// resolves at once.
import type { Birth, Death, MetricsWindow } from '../telemetry/payloads.js';

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
  /** Delete windows that ended more than `days` days before `now`; returns how many. totals() stays as it was. */
  prune(days: number, now?: number): Promise<number>;
  close(): Promise<void>;
}
