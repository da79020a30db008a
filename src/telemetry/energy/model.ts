// The fallback when a board has no usable sensor: the profile's linear power model
// P(u) = idle + u·(busy − idle). It keeps its own joule counter, advanced at each read by the
// power of the utilisation since the previous read, so an integrator treats it like any
// counting sensor; every reading is marked `model` so no report mistakes it for a measurement.
import { EnergySensorError, monotonicNow, type Clock, type EnergyMeter, type EnergyReading } from './meter.js';

export interface PowerModel {
  idleWatts: number;
  busyWatts: number;
}

export interface PowerModelOptions {
  power: PowerModel;
  /** Name shown in describe() and warnings, e.g. the profile id. */
  name?: string;
  /** Utilisation in [0, 1] over the interval since the previous read; default 0 (idle). */
  utilisation?: () => number;
  now?: Clock;
}

export function modelWatts(power: PowerModel, utilisation: number): number {
  const u = Math.min(1, Math.max(0, utilisation));
  // Weighted form so u = 0 and u = 1 give exactly idle and busy (no rounding drift).
  return power.idleWatts * (1 - u) + power.busyWatts * u;
}

/**
 * Energy from a device profile's power model when the board has no sensor: idle watts plus
 * (busy − idle) × the utilisation since the previous reading.
 *
 * @example
 * ```ts
 * import { BusyTime, PowerModelMeter } from 'edgeexit/telemetry';
 * const busy = new BusyTime();
 * const meter = new PowerModelMeter({ power: { idleWatts: 2.7, busyWatts: 6.4 }, name: 'rpi4', utilisation: () => busy.utilisation() });
 * const { watts, source } = await meter.read(); // source: 'model'
 * ```
 */
export class PowerModelMeter implements EnergyMeter {
  readonly kind = 'model' as const;
  readonly source = 'model' as const;
  private readonly now: Clock;
  private readonly utilisation: () => number;
  private last?: { at: number; joules: number };

  constructor(private readonly opts: PowerModelOptions) {
    const { idleWatts, busyWatts } = opts.power;
    if (!(idleWatts >= 0) || !(busyWatts >= idleWatts))
      throw new EnergySensorError({ where: 'power', message: 'unusable power model', expected: '0 <= idleWatts <= busyWatts', got: `idle ${idleWatts} W, busy ${busyWatts} W` });
    this.now = opts.now ?? monotonicNow;
    this.utilisation = opts.utilisation ?? (() => 0);
  }

  describe(): string {
    return `model: ${this.opts.name ? this.opts.name + ' ' : ''}power model (${this.opts.power.idleWatts} W idle, ${this.opts.power.busyWatts} W busy)`;
  }

  async read(): Promise<EnergyReading> {
    const at = this.now();
    const watts = modelWatts(this.opts.power, this.utilisation());
    const joules = this.last ? this.last.joules + (watts * Math.max(0, at - this.last.at)) / 1000 : 0;
    this.last = { at, joules };
    return { watts, joules, at, source: this.source };
  }
}
