// Metric windows on the device: turns the stream of per-inference results into the `WindowInput`
// bodies the publisher sends (count, exit histogram, latency quantiles end to end and per stage,
// energy over the window, temperature, accuracy when labels are known).
//
// Cost: the issue allows telemetry 2 % of the runtime's inference time, so add() is the only code
// on the inference path and does O(1) work into buffers allocated once: a few typed-array stores
// and counter increments, no objects, a clock read every 64th call. Everything else (sorting for
// quantiles, reading the meter and the thermal zones, building the body) happens when a window
// closes, off the inference path.
//
// Quantiles are nearest-rank: the q-quantile of n samples is the ⌈q·n⌉-th smallest, so every
// reported latency is one that was actually measured (no interpolation between two samples).
// Stage k's quantiles are over the inferences that ran stage k; a stage no inference reached in a
// window reports zeros (the exit histogram says how many reached it).
//
// A window closes when it has run `windowMs` (checked by a timer that also samples the meter, and
// by add() every 64 inferences for loops that never yield to timers) or holds `maxCount`
// inferences (checked in add()), or on flush(). Its counts and quantiles are snapshot at that
// moment; the meter is read when the event loop next runs, so in a loop that never yields energy
// can shift between neighbouring windows (never lost or counted twice). Empty windows are not
// sent; the next window then starts afresh. Energy is integrated over the meter readings taken at the
// window's start, every `sampleMs` and at its end (integrate.ts: counter differences when the
// meter counts, else the trapezoid rule over watts); the end reading starts the next window, so
// consecutive windows share their boundary reading and no joule is counted twice.
import { performance } from 'node:perf_hooks';
import { InputError, formatProblem, show } from '../util/errors.js';
import { integrateJoules } from './energy/integrate.js';
import type { EnergyMeter, EnergyReading } from './energy/meter.js';
import { globDirs, readNumber, underRoot } from './energy/sysfs.js';
import type { WindowInput } from './mqtt/publisher.js';

/** What one inference contributes; a runtime `Prediction` has every field but `correct`. */
export interface InferenceRecord {
  exit: number;
  /** Run time of each stage the sample went through, in run order. */
  stageLatencyMs: readonly number[];
  /** End-to-end cascade time of the sample. */
  latencyMs: number;
  /** Whether the predicted class matched the known label; undefined when the input is unlabelled. */
  correct?: boolean;
}

export const DEFAULT_WINDOW_MS = 10_000;
export const DEFAULT_WINDOW_MAX_COUNT = 10_000;
export const DEFAULT_METER_SAMPLE_MS = 1_000;

/** Nearest-rank q-quantile of the first `n` values of `sorted` (ascending); 0 when n is 0. */
export function nearestRank(sorted: ArrayLike<number>, n: number, q: number): number {
  if (n <= 0) return 0;
  // The epsilon keeps q·n that is an integer in exact arithmetic (0.95 × 20) from rounding up a rank.
  const rank = Math.min(n, Math.max(1, Math.ceil(q * n - 1e-9)));
  return sorted[rank - 1]!;
}

/**
 * Busy time of the runtime, shared between the aggregator (which adds each inference's latency)
 * and the power-model meter (which needs the utilisation since its previous reading).
 *
 * @example
 * ```ts
 * import { BusyTime, PowerModelMeter } from 'edgeexit/telemetry';
 * const busy = new BusyTime();
 * const meter = new PowerModelMeter({ power: { idleWatts: 2.7, busyWatts: 6.4 }, utilisation: () => busy.utilisation() });
 * busy.totalMs += 12; // what an aggregator does for each inference's latency
 * ```
 */
export class BusyTime {
  totalMs = 0;
  private lastAt: number;
  private lastBusy = 0;

  constructor(private readonly now: () => number = () => performance.now()) {
    this.lastAt = now();
  }

  /** Fraction of wall time spent in inference since the previous call, in [0, 1]. */
  utilisation(): number {
    const at = this.now();
    const dt = at - this.lastAt;
    const busy = this.totalMs - this.lastBusy;
    this.lastAt = at;
    this.lastBusy = this.totalMs;
    return dt > 0 ? Math.min(1, Math.max(0, busy / dt)) : 0;
  }
}

export const THERMAL_ZONES_GLOB = '/sys/class/thermal/thermal_zone*';

/**
 * Reads the hottest thermal zone in °C (the hottest is the one that throttles), or undefined
 * where none is readable (containers, VMs). Zones are found once; a zone that fails to read is
 * skipped rather than failing the window.
 *
 * @example
 * ```ts
 * import { thermalReader } from 'edgeexit/telemetry';
 * const hottest = thermalReader();
 * console.log(await hottest()); // e.g. 52.1, or undefined in a container
 * ```
 */
export function thermalReader(root = '/'): () => Promise<number | undefined> {
  let zones: Promise<string[]> | undefined;
  return async () => {
    zones ??= globDirs(underRoot(root, THERMAL_ZONES_GLOB));
    let hottest: number | undefined;
    for (const z of await zones) {
      let milli: number;
      try {
        milli = await readNumber(`${z}/temp`);
      } catch {
        continue;
      }
      const c = milli / 1000;
      if (hottest === undefined || c > hottest) hottest = c;
    }
    return hottest;
  };
}

export interface WindowAggregatorOptions {
  /** Exits the histogram has bins for. */
  exits: number;
  /** Stage slots of stageLatencyMs kept (entries beyond it are ignored). */
  stages: number;
  meter: EnergyMeter;
  /** Receives every non-empty window; awaited before the next one is handed over. */
  onWindow: (w: WindowInput) => unknown;
  /** Told when reading the meter or handing over a window fails; the aggregator carries on. */
  onError?: (err: unknown) => void;
  windowMs?: number;
  maxCount?: number;
  sampleMs?: number;
  /** Where each inference's latency is added, for the power model's utilisation. */
  busy?: BusyTime;
  temperature?: () => Promise<number | undefined>;
  /** Wall clock for windowStart/windowEnd (Unix ms). */
  wallClock?: () => number;
  /** Start the close/sample timer (default true); tests drive windows with flush(). */
  timer?: boolean;
}

function positiveInt(what: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new InputError(formatProblem({ where: what, expected: 'a positive integer', got: show(v) }));
  return v;
}

const round = (x: number, digits: number): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/**
 * Folds inferences into metric windows: count, exit histogram, latency percentiles per stage and
 * end to end, energy from the meter, temperature and accuracy; a window closes every `windowMs`
 * or at `maxCount` inferences and goes to `onWindow`.
 *
 * @example
 * ```ts
 * import { PowerModelMeter, WindowAggregator } from 'edgeexit/telemetry';
 * const agg = await WindowAggregator.start({
 *   exits: 3, stages: 3, windowMs: 10_000,
 *   meter: new PowerModelMeter({ power: { idleWatts: 2.7, busyWatts: 6.4 } }),
 *   onWindow: (w) => console.log(w.count, w.exitHistogram),
 * });
 * agg.add({ exit: 1, stageLatencyMs: [0.2, 0.5], latencyMs: 0.7 }, true);
 * await agg.close();
 * ```
 */
export class WindowAggregator {
  readonly windowMs: number;
  readonly maxCount: number;
  private readonly exits: number;
  private readonly stages: number;
  private readonly hist: Uint32Array;
  private readonly e2e: Float64Array;
  private readonly stageLat: Float64Array[];
  private readonly stageN: Uint32Array;
  private n = 0;
  private correct = 0;
  private labelled = 0;
  private start: number;
  private readings: EnergyReading[] = [];
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private sent = 0;
  private readonly wall: () => number;
  private readonly busy: BusyTime;

  private constructor(private readonly opts: WindowAggregatorOptions) {
    this.exits = positiveInt('exits', opts.exits);
    this.stages = positiveInt('stages', opts.stages);
    this.windowMs = positiveInt('windowMs', opts.windowMs ?? DEFAULT_WINDOW_MS);
    this.maxCount = positiveInt('maxCount', opts.maxCount ?? DEFAULT_WINDOW_MAX_COUNT);
    this.hist = new Uint32Array(this.exits);
    this.e2e = new Float64Array(this.maxCount);
    this.stageLat = Array.from({ length: this.stages }, () => new Float64Array(this.maxCount));
    this.stageN = new Uint32Array(this.stages);
    this.wall = opts.wallClock ?? Date.now;
    this.busy = opts.busy ?? new BusyTime();
    this.start = this.wall();
  }

  /** Take the first meter reading and start the window timer. */
  static async start(opts: WindowAggregatorOptions): Promise<WindowAggregator> {
    const a = new WindowAggregator(opts);
    a.readings = [await opts.meter.read()];
    a.start = a.wall();
    if (opts.timer ?? true) {
      const every = Math.min(a.windowMs, positiveInt('sampleMs', opts.sampleMs ?? DEFAULT_METER_SAMPLE_MS));
      a.timer = setInterval(() => a.tick(), every);
      // Telemetry must never be what keeps a finished process alive.
      a.timer.unref();
    }
    return a;
  }

  /** The inference path: O(1), no allocation (the snapshot on close is off it: once per window). `correct` overrides r.correct (so a Prediction needs no wrapper). */
  add(r: InferenceRecord, correct: boolean | undefined = r.correct): void {
    if (this.closed) throw new InputError('telemetry: the window aggregator is closed; record before closing the session');
    const exit = r.exit;
    if (!(exit >= 0 && exit < this.exits)) throw new InputError(formatProblem({ where: 'telemetry: inference exit', expected: `0…${this.exits - 1}`, got: show(exit) }));
    this.hist[exit]!++;
    this.e2e[this.n++] = r.latencyMs;
    this.busy.totalMs += r.latencyMs;
    const st = r.stageLatencyMs;
    const k = st.length < this.stages ? st.length : this.stages;
    for (let s = 0; s < k; s++) this.stageLat[s]![this.stageN[s]!++] = st[s]!;
    if (correct !== undefined) {
      this.labelled++;
      if (correct) this.correct++;
    }
    // onnxruntime-node runs sessions synchronously, so a busy cascade can starve the timer for
    // as long as it has inputs; every 64th inference also looks at the clock (amortised < 1 ns).
    if (this.n >= this.maxCount || ((this.n & 63) === 0 && this.wall() - this.start >= this.windowMs)) void this.closeWindow();
  }

  /** Inferences in the open window. */
  get pending(): number {
    return this.n;
  }

  /** Windows handed to onWindow so far. */
  get windowsSent(): number {
    return this.sent;
  }

  /** Close the open window now (if it holds anything) and wait until every window is handed over. */
  flush(): Promise<void> {
    return this.closeWindow();
  }

  /** Stop the timer and flush; add() is refused afterwards. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
    this.closed = true;
  }

  private tick(): void {
    if (this.wall() - this.start >= this.windowMs) {
      void this.closeWindow();
      return;
    }
    // A sampling meter integrates better with more than two points; a counter does not need them
    // but they cost nothing. Queued on the chain so readings stay in time order.
    this.chain = this.chain.then(async () => {
      try {
        this.readings.push(await this.opts.meter.read());
      } catch (err) {
        this.opts.onError?.(err);
      }
    });
  }

  private closeWindow(): Promise<void> {
    if (this.closed) return this.chain;
    // Snapshot synchronously, so inferences added while the meter is being read go to the next window.
    const end = this.wall();
    const snap = this.n > 0 ? this.snapshot(this.start, end) : undefined;
    this.start = end;
    this.chain = this.chain.then(async () => {
      let last: EnergyReading | undefined;
      try {
        last = await this.opts.meter.read();
      } catch (err) {
        this.opts.onError?.(err);
      }
      const readings = this.readings;
      if (last) readings.push(last);
      this.readings = [readings[readings.length - 1]!];
      if (!snap) return;
      try {
        const [temperatureC, energy] = await Promise.all([this.opts.temperature?.().catch(() => undefined), Promise.resolve(this.energy(readings))]);
        const w: WindowInput = { ...snap, energy, ...(temperatureC !== undefined ? { temperatureC: round(temperatureC, 3) } : {}) };
        await this.opts.onWindow(w);
        this.sent++;
      } catch (err) {
        this.opts.onError?.(err);
      }
    });
    return this.chain;
  }

  private energy(readings: readonly EnergyReading[]): WindowInput['energy'] {
    const meter = this.opts.meter;
    const first = readings[0]!;
    const last = readings[readings.length - 1]!;
    const joules = readings.length >= 2 ? Math.max(0, integrateJoules(readings, meter.wrapJoules)) : 0;
    const seconds = (last.at - first.at) / 1000;
    const source = readings.some((r) => r.source === 'sensor') ? 'sensor' : meter.source;
    return { joules: round(joules, 6), meanWatts: round(seconds > 0 ? joules / seconds : 0, 6), source, meter: meter.kind };
  }

  /** Quantiles, histogram and accuracy of the open window, then reset it (buffers are reused). */
  private snapshot(windowStart: number, windowEnd: number): Omit<WindowInput, 'energy' | 'temperatureC'> {
    const n = this.n;
    const q = (buf: Float64Array, count: number) => {
      const s = buf.subarray(0, count).sort();
      return { p50: round(nearestRank(s, count, 0.5), 4), p95: round(nearestRank(s, count, 0.95), 4), p99: round(nearestRank(s, count, 0.99), 4) };
    };
    const body = {
      windowStart,
      windowEnd: Math.max(windowStart, windowEnd),
      count: n,
      exitHistogram: Array.from(this.hist),
      latencyMs: { endToEnd: q(this.e2e, n), stages: this.stageLat.map((b, s) => q(b, this.stageN[s]!)) },
      ...(this.labelled > 0 ? { accuracy: { correct: this.correct, labelled: this.labelled } } : {}),
    };
    this.n = 0;
    this.hist.fill(0);
    this.stageN.fill(0);
    this.correct = 0;
    this.labelled = 0;
    return body;
  }
}
