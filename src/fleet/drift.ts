// Drift: how far a hardware class's recent exit shares and p95 latency have moved from what its
// calibration predicted (a DriftBaseline in the store, set with `edgeexit fleet baseline`).
// Judged over each device's latest windows (what the class does now, not since it was born),
// pooled over the class: exit shares are exits summed over inferences summed, p95 is the
// inference-weighted mean of the windows' p95s (as fleet status does: p95s cannot be merged
// exactly without the samples). Too few windows: no verdict (drifting false, enough false), so a
// class that just came online does not page anyone.
import { readFile } from 'node:fs/promises';
import { InputError, formatProblem } from '../util/errors.js';
import type { DeviceRow, DriftBaseline, FleetStore, WindowRow } from './fleet-store.js';

export const DEFAULT_DRIFT_BOUNDS = { maxExitShiftPp: 10, maxLatencyRatio: 1.25, minWindows: 20 } as const;

export interface ClassDrift {
  fleet: string;
  deviceClass: string;
  /** Devices of the class running the baseline's manifest (all of the class when it names none). */
  devices: number;
  windows: number;
  inferences: number;
  /** false: fewer than baseline.minWindows windows, no verdict. */
  enough: boolean;
  exitRates: number[];
  predictedExitRates: number[];
  /** Largest |observed − predicted| exit share, percentage points (null without inferences). */
  exitShiftPp: number | null;
  p95Ms: number | null;
  predictedP95Ms: number | null;
  /** Observed p95 / predicted p95 (null when either is missing). */
  latencyRatio: number | null;
  drifting: boolean;
  /** Why it drifts, one line per bound crossed (empty when it does not). */
  reasons: string[];
  bounds: { maxExitShiftPp: number; maxLatencyRatio: number; minWindows: number };
}

/** A device with its latest windows, as fleet status reads them. */
export interface DeviceRecent {
  row: DeviceRow;
  recent: readonly WindowRow[];
}

function judge(b: DriftBaseline, members: readonly DeviceRecent[]): ClassDrift {
  let windows = 0;
  let inferences = 0;
  let p95Weighted = 0;
  const exits: number[] = [];
  for (const m of members)
    for (const w of m.recent) {
      // A window from another bundle (before an update) says nothing about this calibration.
      if (b.manifestSha256 !== undefined && w.manifestSha256 !== b.manifestSha256) continue;
      windows++;
      inferences += w.count;
      p95Weighted += w.latencyP95 * w.count;
      w.exitHistogram.forEach((n, k) => (exits[k] = (exits[k] ?? 0) + n));
    }
  const exitRates = inferences > 0 ? Array.from(exits, (n) => (n ?? 0) / inferences) : [];
  const width = Math.max(exitRates.length, b.exitRates.length);
  const exitShiftPp = inferences > 0 ? Math.max(0, ...Array.from({ length: width }, (_, k) => Math.abs((exitRates[k] ?? 0) - (b.exitRates[k] ?? 0)) * 100)) : null;
  const p95Ms = inferences > 0 ? p95Weighted / inferences : null;
  const latencyRatio = p95Ms !== null && b.p95Ms !== null && b.p95Ms > 0 ? p95Ms / b.p95Ms : null;
  const enough = windows >= b.minWindows;
  const reasons: string[] = [];
  if (enough && exitShiftPp !== null && exitShiftPp > b.maxExitShiftPp)
    reasons.push(`exit shares ${exitRates.map((r) => (r * 100).toFixed(1)).join('/')} % moved ${exitShiftPp.toFixed(1)} pp from the predicted ${b.exitRates.map((r) => (r * 100).toFixed(1)).join('/')} % (bound ${b.maxExitShiftPp} pp)`);
  if (enough && latencyRatio !== null && latencyRatio > b.maxLatencyRatio)
    reasons.push(`p95 ${p95Ms!.toFixed(2)} ms is ${latencyRatio.toFixed(2)}× the predicted ${b.p95Ms!.toFixed(2)} ms (bound ${b.maxLatencyRatio}×)`);
  return {
    fleet: b.fleet,
    deviceClass: b.deviceClass,
    devices: members.length,
    windows,
    inferences,
    enough,
    exitRates,
    predictedExitRates: b.exitRates,
    exitShiftPp,
    p95Ms,
    predictedP95Ms: b.p95Ms,
    latencyRatio,
    drifting: reasons.length > 0,
    reasons,
    bounds: { maxExitShiftPp: b.maxExitShiftPp, maxLatencyRatio: b.maxLatencyRatio, minWindows: b.minWindows },
  };
}

/**
 * The device's class: the device profile its last birth named (null before a birth).
 *
 * @example
 * ```ts
 * import { classOf, openStore } from 'edgeexit/fleet';
 * const store = await openStore('fleet.db', { mustExist: true });
 * const rpi4 = (await store.devices()).filter((d) => classOf(d) === 'rpi4');
 * ```
 */
export const classOf = (d: DeviceRow): string | null => d.birth?.profile ?? null;

/**
 * Drift of every class that has a baseline, from devices and their latest windows already read.
 *
 * @example driftFrom(await store.driftBaselines(), devicesWithRecentWindows).filter((c) => c.drifting)
 */
export function driftFrom(baselines: readonly DriftBaseline[], devices: readonly DeviceRecent[]): ClassDrift[] {
  return baselines.map((b) =>
    judge(
      b,
      devices.filter((d) => d.row.fleet === b.fleet && classOf(d.row) === b.deviceClass && (b.manifestSha256 === undefined || d.row.birth?.bundle.manifestSha256 === b.manifestSha256)),
    ),
  );
}

/**
 * Drift of every class with a baseline, reading the latest `latest` windows of its devices.
 *
 * @example
 * ```ts
 * import { classDrift, openFleetStore } from 'edgeexit/fleet';
 * for (const c of await classDrift(openFleetStore('fleet.db', { mustExist: true }))) if (c.drifting) console.log(c.deviceClass, c.reasons);
 * ```
 */
export async function classDrift(store: FleetStore, latest = 10): Promise<ClassDrift[]> {
  const baselines = await store.driftBaselines();
  if (!baselines.length) return [];
  const wanted = new Set(baselines.map((b) => `${b.fleet}\u0000${b.deviceClass}`));
  const rows = (await store.devices()).filter((d) => wanted.has(`${d.fleet}\u0000${classOf(d)}`));
  const recent = await store.recentWindows(latest);
  const devices = rows.map((row) => ({ row, recent: recent.get(row.device) ?? [] }));
  return driftFrom(baselines, devices);
}

/** What `fleet baseline` reads from a calibration report (calibration.json). */
interface ReportPrediction {
  bundle?: string;
  target?: { kind?: string; percentile?: number };
  predicted?: { exitFractions?: number[]; latencyMs?: number };
}

export interface BaselineInput {
  fleet: string;
  deviceClass: string;
  /** calibration.json written by `edgeexit calibrate`. */
  report: string;
  manifestSha256?: string;
  /** Predicted p95 in ms when the calibration constrained another statistic. */
  p95Ms?: number;
  maxExitShiftPp?: number;
  maxLatencyRatio?: number;
  minWindows?: number;
  now?: number;
}

/**
 * A drift baseline from a calibration report: its predicted exit shares, and its predicted
 * latency when the calibration constrained p95 (else `p95Ms`, else no latency check).
 *
 * @example await store.setDriftBaseline(await baselineFromReport({ fleet: 'yard', deviceClass: 'rpi4', report: 'build/branchy-calibration/calibration.json' }))
 */
export async function baselineFromReport(o: BaselineInput): Promise<DriftBaseline> {
  let r: ReportPrediction;
  try {
    r = JSON.parse(await readFile(o.report, 'utf8')) as ReportPrediction;
  } catch (err) {
    throw new InputError(formatProblem({ where: o.report, expected: 'calibration.json written by `edgeexit calibrate`', got: (err as Error).message, fix: 'pass the report folder\'s calibration.json' }));
  }
  const exits = r.predicted?.exitFractions;
  if (!Array.isArray(exits) || !exits.length || !exits.every((x) => typeof x === 'number' && x >= 0 && x <= 1))
    throw new InputError(formatProblem({ where: `${o.report}: predicted.exitFractions`, expected: 'the predicted share of each exit', got: JSON.stringify(exits), fix: 'pass a calibration.json written by `edgeexit calibrate`' }));
  const p95FromReport = r.target?.kind === 'latency' && r.target.percentile === 95 && typeof r.predicted?.latencyMs === 'number' ? r.predicted.latencyMs : null;
  const bound = (v: number | undefined, name: string, ok: (x: number) => boolean, fallback: number): number => {
    if (v === undefined) return fallback;
    if (!ok(v)) throw new InputError(formatProblem({ where: name, expected: 'a positive number', got: String(v) }));
    return v;
  };
  return {
    fleet: o.fleet,
    deviceClass: o.deviceClass,
    ...(o.manifestSha256 !== undefined ? { manifestSha256: o.manifestSha256 } : {}),
    exitRates: exits,
    p95Ms: o.p95Ms ?? p95FromReport,
    maxExitShiftPp: bound(o.maxExitShiftPp, '--max-exit-shift', (x) => x > 0 && x <= 100, DEFAULT_DRIFT_BOUNDS.maxExitShiftPp),
    maxLatencyRatio: bound(o.maxLatencyRatio, '--max-latency-ratio', (x) => x > 1, DEFAULT_DRIFT_BOUNDS.maxLatencyRatio),
    minWindows: bound(o.minWindows, '--min-windows', (x) => Number.isInteger(x) && x >= 1, DEFAULT_DRIFT_BOUNDS.minWindows),
    source: o.report,
    setAt: o.now ?? Date.now(),
  };
}
