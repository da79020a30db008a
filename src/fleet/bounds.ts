// What the collector accepts beyond the wire schema: the schema says "a non-negative integer",
// these limits say "a number a real device could have sent". One schema-valid window could
// otherwise break the fleet view for everyone: a windowEnd past the Date range makes the dashboard
// fail to draw, a window dated years ahead pins a device's "latest" gauges, joules of 1e308 turn a
// Prometheus counter into +Inf for good, a 30,000-entry histogram adds 30,000 series, and counts
// near 2^53 stop adding up exactly. Each check names the field, the bound and what came, and the
// collector counts the rejection under its reason (clockSkew, outOfRange, tooManyExits).
import type { Birth, MetricsWindow } from '../telemetry/payloads.js';
import { show } from '../util/errors.js';

export interface Limits {
  /** How far ahead of the receive time a device clock may run, ms (timestamps later than that are refused). */
  maxFutureSkewMs: number;
  /** How far behind the receive time a window may end, ms; windows wait in a device's outbox, so unbounded unless set. */
  maxAgeMs: number;
  /** Longest window, ms. */
  maxWindowMs: number;
  /** Most inferences in one window; keeps running totals far below 2^53, where doubles stop counting exactly. */
  maxCount: number;
  /** Highest mean power of one device, W; joules are bounded by it times the window's length. */
  maxWatts: number;
  /** Highest latency quantile, ms. */
  maxLatencyMs: number;
  /** Most exits (and latency stages) of any bundle. */
  maxExits: number;
  /** Most exits accepted from a device whose birth did not say (none on record, or no thresholds). */
  maxExitsUnknown: number;
  /** Plausible temperature range of a board, °C. */
  temperatureC: [number, number];
  /** Longest free-text field of a birth (profile, bundle name and version, runtime versions). */
  maxTextLength: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxFutureSkewMs: 5 * 60_000,
  maxAgeMs: Infinity,
  maxWindowMs: 24 * 3_600_000,
  maxCount: 1e9,
  maxWatts: 10_000,
  maxLatencyMs: 3_600_000,
  maxExits: 64,
  maxExitsUnknown: 16,
  temperatureC: [-100, 200] as [number, number],
  maxTextLength: 128,
});

export type BoundsReason = 'clockSkew' | 'outOfRange' | 'tooManyExits';

export interface Rejection {
  reason: BoundsReason;
  where: string;
  expected: string;
  got: string;
}

const reject = (reason: BoundsReason, where: string, expected: string, got: unknown): Rejection => ({ reason, where, expected, got: typeof got === 'string' ? got : show(got) });

/** Exits a device's bundle has, from its birth: one per threshold plus the last; undefined when the birth does not say. */
export function exitsOf(birth: Birth | null): number | undefined {
  const n = birth?.bundle.thresholds.length ?? 0;
  return n > 0 ? n + 1 : undefined;
}

function checkTime(where: string, t: number, receivedAt: number, l: Limits): Rejection | undefined {
  if (t > receivedAt + l.maxFutureSkewMs)
    return reject('clockSkew', where, `at most ${l.maxFutureSkewMs / 1000} s after the receive time ${new Date(receivedAt).toISOString()}`, `${t} (${t - receivedAt} ms ahead)`);
  if (t < receivedAt - l.maxAgeMs) return reject('clockSkew', where, `at most ${l.maxAgeMs / 1000} s before the receive time`, `${t} (${receivedAt - t} ms behind)`);
  return undefined;
}

function checkRange(where: string, v: number, lo: number, hi: number): Rejection | undefined {
  return Number.isFinite(v) && v >= lo && v <= hi ? undefined : reject('outOfRange', where, `a finite number from ${lo} to ${hi}`, v);
}

/** The first limit a birth breaks, or undefined. */
export function checkBirthBounds(b: Birth, receivedAt: number, l: Limits = DEFAULT_LIMITS): Rejection | undefined {
  const texts: [string, string | undefined][] = [
    ['profile', b.profile],
    ['bundle.name', b.bundle.name],
    ['bundle.version', b.bundle.version],
    ['runtime.edgeexit', b.runtime.edgeexit],
    ['runtime.node', b.runtime.node],
    ['runtime.onnxruntime', b.runtime.onnxruntime],
  ];
  for (const [where, s] of texts) if (s !== undefined && s.length > l.maxTextLength) return reject('outOfRange', where, `at most ${l.maxTextLength} characters`, `${s.length} characters`);
  if (b.bundle.thresholds.length > l.maxExits - 1) return reject('tooManyExits', 'bundle.thresholds', `at most ${l.maxExits - 1} thresholds`, `${b.bundle.thresholds.length}`);
  for (const [k, v] of b.bundle.thresholds.entries()) if (!Number.isFinite(v)) return reject('outOfRange', `bundle.thresholds[${k}]`, 'a finite number', v);
  return checkTime('at', b.at, receivedAt, l);
}

/**
 * The first limit a window breaks, or undefined. `exits`: how many exits the device's birth
 * announced (undefined: no birth on record, or it did not say; `maxExitsUnknown` applies).
 */
export function checkWindowBounds(w: MetricsWindow, receivedAt: number, exits: number | undefined, l: Limits = DEFAULT_LIMITS): Rejection | undefined {
  const cap = Math.min(exits ?? l.maxExitsUnknown, l.maxExits);
  if (w.exitHistogram.length > cap)
    return reject('tooManyExits', 'exitHistogram', `at most ${cap} entries (${exits === undefined ? 'the cap for a device whose birth did not give its exits' : "the exits of the device's bundle, from its birth"})`, `${w.exitHistogram.length} entries`);
  if (w.latencyMs.stages.length > l.maxExits) return reject('tooManyExits', 'latencyMs.stages', `at most ${l.maxExits} stages`, `${w.latencyMs.stages.length}`);
  const timing = checkTime('windowStart', w.windowStart, receivedAt, l) ?? checkTime('windowEnd', w.windowEnd, receivedAt, l);
  if (timing) return timing;
  const ms = w.windowEnd - w.windowStart;
  if (ms > l.maxWindowMs) return reject('outOfRange', 'windowEnd', `at most ${l.maxWindowMs} ms after windowStart`, `${ms} ms`);
  const seconds = Math.max(1, ms / 1000);
  const e2e = w.latencyMs.endToEnd;
  const ranges: [string, number, number, number][] = [
    ['count', w.count, 0, l.maxCount],
    ['droppedWindows', w.droppedWindows, 0, 1e12],
    ['energy.meanWatts', w.energy.meanWatts, 0, l.maxWatts],
    ['energy.joules', w.energy.joules, 0, l.maxWatts * seconds],
    ['latencyMs.endToEnd.p50', e2e.p50, 0, l.maxLatencyMs],
    ['latencyMs.endToEnd.p95', e2e.p95, 0, l.maxLatencyMs],
    ['latencyMs.endToEnd.p99', e2e.p99, 0, l.maxLatencyMs],
  ];
  w.latencyMs.stages.forEach((s, k) => ranges.push([`latencyMs.stages[${k}].p99`, Math.max(s.p50, s.p95, s.p99), 0, l.maxLatencyMs]));
  if (w.temperatureC !== undefined) ranges.push(['temperatureC', w.temperatureC, l.temperatureC[0], l.temperatureC[1]]);
  if (w.accuracy) ranges.push(['accuracy.labelled', w.accuracy.labelled, 0, l.maxCount]);
  for (const [where, v, lo, hi] of ranges) {
    const r = checkRange(where, v, lo, hi);
    if (r) return r;
  }
  return undefined;
}
