// Turns meter readings over a window into joules, and splits a window's energy among the
// inferences that ran in it.
//
// Integration: when every reading carries a cumulative counter, energy is the sum of counter
// differences (a negative step is a wrap and adds the meter's wrap range); otherwise watts are
// integrated with the trapezoid rule. Counters win because they see every microjoule between
// samples, whereas sampled watts miss short spikes.
//
// Attribution (the choice the per-inference numbers rest on): with a power model's idleWatts,
// the idle baseline (idleWatts × window) is subtracted first; the remaining *dynamic* energy is
// split among inferences by their share of the summed inference time, and each inference is then
// charged its dynamic share plus idle power for its own duration. Idle time between inferences
// stays unattributed (reported as `unattributedJoules`), so per-inference joules do not depend on
// how busy the device was; what the board burns while waiting is a property of the deployment,
// not of the model. Without idleWatts the whole window is split by duration share, idle
// included, and the result says so (`idleSubtracted: false`). Inferences are assumed to run one
// after another; overlapping ones would be charged the idle power twice.
import { EnergySensorError, type EnergyReading, type EnergySource } from './meter.js';

export function integrateJoules(readings: readonly EnergyReading[], wrapJoules?: number): number {
  if (readings.length < 2) return 0;
  for (let i = 1; i < readings.length; i++)
    if (readings[i]!.at < readings[i - 1]!.at)
      throw new EnergySensorError({ where: 'energy readings', message: 'readings out of time order', expected: 'non-decreasing `at`', got: `${readings[i - 1]!.at} then ${readings[i]!.at}` });
  if (readings.every((r) => r.joules !== undefined)) {
    let total = 0;
    for (let i = 1; i < readings.length; i++) {
      let d = readings[i]!.joules! - readings[i - 1]!.joules!;
      if (d < 0) {
        if (wrapJoules === undefined)
          throw new EnergySensorError({ where: 'energy readings', message: 'energy counter went backwards and the meter has no wrap range', got: `${readings[i - 1]!.joules} J then ${readings[i]!.joules} J` });
        d += wrapJoules;
      }
      total += d;
    }
    return total;
  }
  if (readings.every((r) => r.watts !== undefined)) {
    let total = 0;
    for (let i = 1; i < readings.length; i++) {
      const a = readings[i - 1]!;
      const b = readings[i]!;
      total += ((a.watts! + b.watts!) / 2) * ((b.at - a.at) / 1000);
    }
    return total;
  }
  throw new EnergySensorError({ where: 'energy readings', message: 'readings carry neither joules throughout nor watts throughout' });
}

export interface InferenceSpan {
  id: string;
  /** Same monotonic clock as the readings, ms. */
  start: number;
  end: number;
}

export interface InferenceEnergy {
  id: string;
  /** Duration inside the window, ms. */
  durationMs: number;
  /** Energy charged to the inference (dynamic share + idle power over its duration when idle is subtracted). */
  joules: number;
  /** Energy above the idle baseline; undefined when no idle baseline was given. */
  dynamicJoules?: number;
}

export interface WindowEnergy {
  startMs: number;
  endMs: number;
  joules: number;
  source: EnergySource;
  idleSubtracted: boolean;
  /** idleWatts × window length, when idle is subtracted. */
  idleBaselineJoules?: number;
  /** Window energy not charged to any inference (idle between inferences). */
  unattributedJoules: number;
  inferences: InferenceEnergy[];
}

export interface AttributeOptions {
  readings: readonly EnergyReading[];
  inferences: readonly InferenceSpan[];
  wrapJoules?: number;
  /** Idle power of the device (the profile's power.idleWatts); omit to split everything. */
  idleWatts?: number;
}

export function attributeEnergy(opts: AttributeOptions): WindowEnergy {
  const { readings, idleWatts } = opts;
  if (readings.length < 2) throw new EnergySensorError({ where: 'energy window', message: 'needs at least two readings', got: String(readings.length) });
  const startMs = readings[0]!.at;
  const endMs = readings[readings.length - 1]!.at;
  const joules = integrateJoules(readings, opts.wrapJoules);
  const source: EnergySource = readings.some((r) => r.source === 'sensor') ? 'sensor' : 'model';
  const spans = opts.inferences.map((s) => {
    if (!(s.end >= s.start)) throw new EnergySensorError({ where: `inference ${s.id}`, message: 'ends before it starts', got: `${s.start} → ${s.end}` });
    return { id: s.id, durationMs: Math.max(0, Math.min(s.end, endMs) - Math.max(s.start, startMs)) };
  });
  const busyMs = spans.reduce((a, s) => a + s.durationMs, 0);
  const share = (ms: number) => (busyMs > 0 ? ms / busyMs : 0);

  if (idleWatts === undefined) {
    const inferences = spans.map((s) => ({ ...s, joules: joules * share(s.durationMs) }));
    return { startMs, endMs, joules, source, idleSubtracted: false, unattributedJoules: busyMs > 0 ? 0 : joules, inferences };
  }
  const idleBaselineJoules = (idleWatts * (endMs - startMs)) / 1000;
  // A sensor can read below the modelled idle (a cool board, a generous model); clamp instead of
  // charging negative energy.
  const dynamic = Math.max(0, joules - idleBaselineJoules);
  const inferences = spans.map((s) => {
    const dynamicJoules = dynamic * share(s.durationMs);
    return { ...s, dynamicJoules, joules: dynamicJoules + (idleWatts * s.durationMs) / 1000 };
  });
  const charged = inferences.reduce((a, i) => a + i.joules, 0);
  return { startMs, endMs, joules, source, idleSubtracted: true, idleBaselineJoules, unattributedJoules: Math.max(0, joules - charged), inferences };
}
