// The closed loop's first half: a bundle's latency profile built from what the fleet measured.
// Devices send per-stage p50/p95/p99 in every window (payloads.ts latencyMs.stages); the store
// keeps them per window with the manifest the device ran. Here the windows of one fleet (and
// class) running this bundle are merged into a LatencyProfile of source 'fleet', the shape
// `calibrate` takes from `measure`, `model` or a file.
//
// Which windows count: those run with this bundle's manifest, or with a manifest a device of the
// fleet announces for the same model and precision (a thresholds-only update rewrites the
// manifest but not the stages, so its latency is the same), and with one quantile row per stage.
// Merging: window quantiles cannot be combined exactly without the samples; each stage's
// quantile is the mean of the windows' quantiles weighted by the inferences that ran the stage in
// each window. p90 and the mean are not sent: they are read off the log-normal through p50 and
// p95 (the shape the stage times have), and the profile's description says they are estimates.
import { loadBundleFiles, sha256Hex, verifyLoadedBundle } from '../bundle/files.js';
import { MANIFEST_FILE } from '../bundle/manifest.js';
import { LATENCY_PROFILE_FORMAT, type LatencyProfile, type LatencyStats } from '../calibration/latency.js';
import { InputError, formatProblem } from '../util/errors.js';
import type { FleetStore, StageLatencyWindow } from './fleet-store.js';

export const FLEET_LATENCY_DEFAULTS = { minWindows: 20, minDevices: 3, limit: 20_000 } as const;

/**
 * `fleet:<fleet>[/<class>]` → its parts; undefined when `spec` is not a fleet source.
 *
 * @example parseFleetSource('fleet:yard/rpi4') // { fleet: 'yard', deviceClass: 'rpi4' }
 */
export function parseFleetSource(spec: string): { fleet: string; deviceClass?: string } | undefined {
  if (!spec.startsWith('fleet:')) return undefined;
  const m = /^fleet:([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:\/([A-Za-z0-9][A-Za-z0-9._-]{0,63}))?$/.exec(spec);
  if (!m)
    throw new InputError(formatProblem({ where: '--latency-source', expected: 'fleet:<fleet> or fleet:<fleet>/<class> (ids of [A-Za-z0-9._-])', got: JSON.stringify(spec), fix: 'e.g. --latency-source fleet:yard/rpi4' }));
  return { fleet: m[1]!, ...(m[2] !== undefined ? { deviceClass: m[2] } : {}) };
}

export interface FleetLatencyOptions {
  fleet: string;
  deviceClass?: string;
  /** Fewest windows and distinct devices to build a profile from (refused below). */
  minWindows?: number;
  minDevices?: number;
  /** Newest windows read at most. */
  limit?: number;
}

const Z90 = 1.2816;
const Z95 = 1.6449;

function mergeStage(ws: readonly StageLatencyWindow[], k: number): LatencyStats {
  let n = 0;
  let p50 = 0;
  let p95 = 0;
  let p99 = 0;
  for (const w of ws) {
    // Inferences that ran stage k: those leaving at exit k or later.
    const ran = w.exitHistogram.slice(k).reduce((a, b) => a + b, 0);
    if (ran === 0) continue;
    const q = w.stages[k]!;
    n += ran;
    p50 += q.p50 * ran;
    p95 += q.p95 * ran;
    p99 += q.p99 * ran;
  }
  if (n === 0) return { batch: 1, meanMs: 0, p50Ms: 0, p90Ms: 0, p95Ms: 0, p99Ms: 0, runs: 0 };
  p50 /= n;
  p95 /= n;
  p99 /= n;
  const sigma = p50 > 0 && p95 > p50 ? Math.log(p95 / p50) / Z95 : 0;
  return { batch: 1, meanMs: p50 * Math.exp((sigma * sigma) / 2), p50Ms: p50, p90Ms: p50 * Math.exp(sigma * Z90), p95Ms: p95, p99Ms: Math.max(p95, p99), runs: n };
}

/**
 * A latency profile of `bundle` from the per-stage latency the fleet reported; refused, with the
 * counts, when fewer than `minWindows` windows or `minDevices` devices reported for it.
 *
 * @example
 * ```ts
 * import { fleetLatencyProfile, openFleetStore } from 'edgeexit/fleet';
 * const { profile } = await fleetLatencyProfile(openFleetStore('fleet.db', { mustExist: true }), 'build/branchy-rpi4', { fleet: 'yard', deviceClass: 'rpi4' });
 * console.log(profile.stages.map((s) => s.batches[0]!.p95Ms));
 * ```
 */
export async function fleetLatencyProfile(store: FleetStore, bundle: string, o: FleetLatencyOptions): Promise<{ profile: LatencyProfile; windows: number; devices: number; skipped: number }> {
  const files = await loadBundleFiles(bundle);
  const { manifest } = await verifyLoadedBundle(files);
  const own = sha256Hex(files.files.get(MANIFEST_FILE)!);
  const shas = new Set([own]);
  for (const d of await store.devices()) {
    const b = d.birth;
    if (d.fleet === o.fleet && b && b.bundle.name === manifest.model.name && b.bundle.precision === manifest.target.precision) shas.add(b.bundle.manifestSha256);
  }
  const all = await store.stageLatencyWindows({ fleet: o.fleet, ...(o.deviceClass !== undefined ? { deviceClass: o.deviceClass } : {}), manifestSha256: [...shas], limit: o.limit ?? FLEET_LATENCY_DEFAULTS.limit });
  const K = manifest.stages.length;
  const ws = all.filter((w) => w.stages.length === K && w.exitHistogram.length === K);
  const devices = new Set(ws.map((w) => w.device)).size;
  const minWindows = o.minWindows ?? FLEET_LATENCY_DEFAULTS.minWindows;
  const minDevices = o.minDevices ?? FLEET_LATENCY_DEFAULTS.minDevices;
  const where = `--latency-source fleet:${o.fleet}${o.deviceClass !== undefined ? `/${o.deviceClass}` : ''}`;
  if (ws.length < minWindows || devices < minDevices)
    throw new InputError(
      formatProblem({
        where,
        message: `too few reports to build a latency profile of ${manifest.model.name} (${manifest.target.precision})`,
        expected: `at least ${minWindows} windows with per-stage latency from at least ${minDevices} devices`,
        got: `${ws.length} window${ws.length === 1 ? '' : 's'} from ${devices} device${devices === 1 ? '' : 's'}${all.length > ws.length ? ` (${all.length - ws.length} more had ${K === 1 ? 'not 1 stage' : `not ${K} stages`})` : ''}`,
        fix: 'let more devices run this bundle with telemetry on, widen the source (drop /<class>), or use --latency-source model or a profile file',
      }),
    );
  const ends = ws.map((w) => w.windowEnd);
  const iso = (t: number) => new Date(t).toISOString().slice(0, 16).replace('T', ' ');
  const profile: LatencyProfile = {
    format: LATENCY_PROFILE_FORMAT,
    version: 1,
    source: 'fleet',
    created: new Date().toISOString(),
    bundle: { model: manifest.model.name, manifestSha256: own, precision: manifest.target.precision },
    host: {
      device: o.deviceClass ?? null,
      description: `fleet ${o.fleet}${o.deviceClass !== undefined ? ` class ${o.deviceClass}` : ''}: ${ws.length} windows from ${devices} devices, ${iso(Math.min(...ends))} to ${iso(Math.max(...ends))} UTC (per-stage quantiles weighted by inferences; mean and p90 estimated)`,
      threads: null,
      warmup: 0,
    },
    stages: manifest.stages.map((s, k) => ({ stage: s.exit, macs: s.macs, batches: [mergeStage(ws, k)] })),
  };
  return { profile, windows: ws.length, devices, skipped: all.length - ws.length };
}
