// The contract every energy meter meets, kept apart from the implementations so the integrator,
// the publisher and the tests depend on the shape only. A meter either counts (cumulative
// joules, differenced by the integrator) or samples (instantaneous watts, integrated with the
// trapezoid rule); some do both. Every reading says whether it came from a sensor or from the
// profile's power model, because the report must never pass an estimate off as a measurement.
import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { InputError, type Problem } from '../../util/errors.js';

export type EnergySource = 'sensor' | 'model';

export type EnergyMeterKind = 'ina3221-iio' | 'ina3221-hwmon' | 'rpi5-pmic' | 'rapl' | 'nvml' | 'model';

export interface EnergyReading {
  /** Cumulative energy counter in joules (meaningful only as a difference between readings). */
  joules?: number;
  /** Instantaneous power in watts. */
  watts?: number;
  /** Monotonic time of the reading in milliseconds (performance.now() by default). */
  at: number;
  /** Per-rail power in watts, when the sensor reports rails. */
  rails?: Record<string, number>;
  source: EnergySource;
}

export interface EnergyMeter {
  readonly kind: EnergyMeterKind;
  readonly source: EnergySource;
  /** Where a `joules` counter wraps back to 0; absent when it does not wrap or is not reported. */
  readonly wrapJoules?: number;
  /** One line naming the kind and every file or command it reads. */
  describe(): string;
  read(): Promise<EnergyReading>;
}

/** Runs a command and resolves with its stdout; rejects when it cannot run or exits non-zero. */
export type Exec = (command: string, args: readonly string[]) => Promise<string>;

export type Clock = () => number;

export const monotonicNow: Clock = () => performance.now();

/** Commands get a short timeout: a hung vcgencmd or nvidia-smi must not stall the sampler. */
export function defaultExec(timeoutMs = 2000): Exec {
  return (command, args) =>
    new Promise((resolve, reject) => {
      execFile(command, [...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
}

/**
 * A sensor that exists but cannot be read or returns something that is not a reading.
 *
 * @example
 * ```ts
 * import { EnergySensorError, RaplMeter } from 'edgeexit/telemetry';
 * try {
 *   await new RaplMeter().read();
 * } catch (err) {
 *   if (err instanceof EnergySensorError) console.error(err.message); // which file, what came, the fix
 * }
 * ```
 */
export class EnergySensorError extends InputError {
  constructor(problem: Problem, options?: { cause?: unknown }) {
    const { where, message, expected, got, fix } = problem;
    const parts = [`${where}:`, message ?? 'unusable energy reading'];
    if (expected !== undefined) parts.push(`(expected ${expected}${got !== undefined ? `, got ${got}` : ''})`);
    if (fix) parts.push(`— ${fix}`);
    super(parts.join(' '), [problem], options);
  }
}

/** Options every meter accepts so tests can point it at a fixture tree and a fake clock/exec. */
export interface MeterOptions {
  /** Filesystem root the sysfs paths are resolved under (default `/`). */
  root?: string;
  exec?: Exec;
  now?: Clock;
}
