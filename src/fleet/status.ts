// Fleet status: one summary row per device, computed from a FleetStore. Latency is the
// count-weighted mean of the end-to-end p95 over the device's latest windows (p95s cannot be
// merged exactly without the raw samples; recent windows say how the device runs now). Exit
// rates, joules per inference and accuracy are over every window ever stored (the store's running
// totals, which a retention prune does not lower); temperature is the latest a device reported.
import { classOf, driftFrom, type ClassDrift, type DeviceRecent } from './drift.js';
import type { FleetStore, WindowRow } from './fleet-store.js';

export const LATEST_WINDOWS = 10;

export interface DeviceStatus {
  device: string;
  fleet: string;
  /** Hardware class: the device profile its last birth named (null before a birth). */
  deviceClass: string | null;
  online: boolean;
  bundle: { name: string; version: string } | null;
  bdSeq: number | null;
  windows: number;
  inferences: number;
  joules: number;
  /** null when no window is stored. */
  p95LatencyMs: number | null;
  /** Fraction of inferences leaving at each exit. */
  exitRates: number[];
  joulesPerInference: number | null;
  /** Labelled inferences over every stored window, and how many the device got right. */
  labelled: number;
  correct: number;
  /** correct / labelled; null when no stored window carried labels. */
  accuracy: number | null;
  /** °C from the latest stored window that reported a temperature; null when none did. */
  temperatureC: number | null;
  lastSeen: number;
}

export interface FleetStatus {
  devices: DeviceStatus[];
  /** Per class with a drift baseline (`edgeexit fleet baseline`): how far it moved from its calibration. */
  drift: ClassDrift[];
  counters: Awaited<ReturnType<FleetStore['counters']>>;
}

/**
 * Per device: online, bundle, latency percentiles, exit rates, energy per inference and last seen,
 * from the latest `latest` windows; plus the ingest error counters (what `edgeexit fleet status` prints).
 *
 * @example
 * ```ts
 * import { fleetStatus, openFleetStore } from 'edgeexit/fleet';
 * const { devices, counters } = await fleetStatus(openFleetStore('fleet.db', { mustExist: true }));
 * for (const d of devices) console.log(d.device, d.online);
 * ```
 */
export async function fleetStatus(store: FleetStore, latest = LATEST_WINDOWS): Promise<FleetStatus> {
  // A fixed number of reads, each over the whole fleet, joined here by device: the cost of a
  // call does not grow by a query per device. One after another, as a store's transaction
  // expects its calls (a PostgreSQL one writes what it holds before each read).
  const totals = new Map((await store.totals()).map((t) => [t.device, t]));
  const rows = await store.devices();
  const recentByDevice = await store.recentWindows(latest);
  const temperatures = await store.latestTemperatures();
  const recents: DeviceRecent[] = [];
  const devices = rows.map((d): DeviceStatus => {
    const t = totals.get(d.device);
    const inferences = t?.count ?? 0;
    const labelled = t?.labelled ?? 0;
    const correct = t?.correct ?? 0;
    const recent = recentByDevice.get(d.device) ?? [];
    recents.push({ row: d, recent });
    return {
      device: d.device,
      fleet: d.fleet,
      deviceClass: classOf(d),
      online: d.online,
      bundle: d.birth ? { name: d.birth.bundle.name, version: d.birth.bundle.version } : null,
      bdSeq: d.bdSeq,
      windows: t?.windows ?? 0,
      inferences,
      joules: t?.joules ?? 0,
      p95LatencyMs: recentP95(recent),
      exitRates: inferences > 0 ? (t?.exits ?? []).map((n) => n / inferences) : [],
      joulesPerInference: inferences > 0 ? (t?.joules ?? 0) / inferences : null,
      labelled,
      correct,
      accuracy: labelled > 0 ? correct / labelled : null,
      temperatureC: temperatures.get(d.device) ?? null,
      lastSeen: d.lastSeen,
    };
  });
  return { devices, drift: driftFrom(await store.driftBaselines(), recents), counters: await store.counters() };
}

// Count-weighted mean of the windows' p95 (plain mean when none counted an inference); null without windows.
function recentP95(recent: readonly WindowRow[]): number | null {
  if (!recent.length) return null;
  const count = recent.reduce((a, w) => a + w.count, 0);
  return count > 0 ? recent.reduce((a, w) => a + w.latencyP95 * w.count, 0) / count : recent.reduce((a, w) => a + w.latencyP95, 0) / recent.length;
}
