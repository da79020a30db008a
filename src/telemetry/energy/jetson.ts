// Jetson INA3221 power monitors. JetPack 4 (L4T 32) exposes them through NVIDIA's downstream IIO
// driver with power already in mW; JetPack 5+ (L4T 35+) uses the mainline hwmon driver, which
// gives only mV and mA, so power is V×I. Both report three channels; energy is integrated from
// the rail that carries the whole module input (VDD_IN / POM_5V_IN), the others are reported as
// rails for context only — they overlap with the input rail and must not be summed.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { EnergySensorError, monotonicNow, type Clock, type EnergyMeter, type EnergyReading, type MeterOptions } from './meter.js';
import { globDirs, readNumber, readText, underRoot } from './sysfs.js';

export interface Rail {
  channel: number;
  label: string;
}

/** Input rail names by JetPack generation; the first one present wins unless the profile names one. */
export const JETSON_INPUT_RAILS = ['VDD_IN', 'POM_5V_IN'] as const;

function pickInputRail(rails: Rail[], wanted: string | undefined, where: string): string {
  const labels = rails.map((r) => r.label);
  const choice = wanted ?? JETSON_INPUT_RAILS.find((l) => labels.includes(l));
  if (choice === undefined || !labels.includes(choice))
    throw new EnergySensorError({
      where,
      message: 'no module input rail among the rails',
      expected: wanted ?? JETSON_INPUT_RAILS.join(' or '),
      got: labels.join(', ') || 'no rails',
      fix: 'set energySensor.inputRail in the device profile to the rail that carries the module input',
    });
  return choice;
}

// ---------------------------------------------------------------------------------------------

export interface Ina3221IioOptions extends MeterOptions {
  /** Absolute sysfs IIO directory, or a glob such as /sys/bus/i2c/drivers/ina3221x/*\/iio:device*. */
  device: string;
  /** Channels to read; default: every rail_name_<N> (N = 0..2) present. */
  rails?: Rail[];
  inputRail?: string;
}

export const INA3221_IIO_GLOB = '/sys/bus/i2c/drivers/ina3221x/*/iio:device*';

/**
 * Jetson (JetPack 4) INA3221 power monitor through its IIO sysfs files: instantaneous watts per
 * rail, summed from the board's input rail when there is one.
 *
 * @example
 * ```ts
 * import { Ina3221IioMeter } from 'edgeexit/telemetry';
 * const meter = new Ina3221IioMeter({ device: '/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0' });
 * const { watts, rails } = await meter.read();
 * ```
 */
export class Ina3221IioMeter implements EnergyMeter {
  readonly kind = 'ina3221-iio' as const;
  readonly source = 'sensor' as const;
  private readonly root: string;
  private readonly now: Clock;
  private resolved?: { dir: string; rails: Rail[]; input: string };

  constructor(private readonly opts: Ina3221IioOptions) {
    this.root = opts.root ?? '/';
    this.now = opts.now ?? monotonicNow;
  }

  describe(): string {
    const dir = this.resolved?.dir ?? underRoot(this.root, this.opts.device);
    return `ina3221-iio: ${dir}/in_power<N>_input (mW), input rail ${this.resolved?.input ?? this.opts.inputRail ?? JETSON_INPUT_RAILS.join('|')}`;
  }

  private async resolve(): Promise<{ dir: string; rails: Rail[]; input: string }> {
    if (this.resolved) return this.resolved;
    const pattern = underRoot(this.root, this.opts.device);
    const [dir] = await globDirs(pattern);
    if (dir === undefined) throw new EnergySensorError({ where: pattern, message: 'no INA3221 IIO device found', fix: 'check energySensor.device in the device profile (JetPack 4 only; JetPack 5+ uses ina3221-hwmon)' });
    let rails = this.opts.rails;
    if (!rails) {
      rails = [];
      for (let n = 0; n <= 2; n++) {
        const f = path.join(dir, `rail_name_${n}`);
        try {
          await fsp.access(f);
        } catch {
          continue;
        }
        rails.push({ channel: n, label: (await readText(f)).trim() });
      }
    }
    this.resolved = { dir, rails, input: pickInputRail(rails, this.opts.inputRail, dir) };
    return this.resolved;
  }

  async read(): Promise<EnergyReading> {
    const { dir, rails, input } = await this.resolve();
    const out: Record<string, number> = {};
    for (const r of rails) out[r.label] = Math.max(0, (await readNumber(path.join(dir, `in_power${r.channel}_input`))) / 1000);
    return { watts: out[input]!, rails: out, at: this.now(), source: this.source };
  }
}

// ---------------------------------------------------------------------------------------------

export interface Ina3221HwmonOptions extends MeterOptions {
  /** Glob of the hwmon directory, e.g. /sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon*. */
  hwmonGlob: string;
  /** Channels to read; default: every in<N>_label (N = 1..3) that is not "NC". */
  rails?: Rail[];
  inputRail?: string;
}

export const INA3221_HWMON_GLOB = '/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*';

/** Label the driver gives an unconnected channel; its readings are noise. */
const NOT_CONNECTED = 'NC';

/**
 * Jetson (JetPack 5 and later) INA3221 power monitor through hwmon: watts per labelled channel
 * (unconnected `NC` channels skipped), the input rail's when there is one.
 *
 * @example
 * ```ts
 * import { Ina3221HwmonMeter } from 'edgeexit/telemetry';
 * const meter = new Ina3221HwmonMeter({ hwmonGlob: '/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1' });
 * console.log(meter.describe(), (await meter.read()).watts);
 * ```
 */
export class Ina3221HwmonMeter implements EnergyMeter {
  readonly kind = 'ina3221-hwmon' as const;
  readonly source = 'sensor' as const;
  private readonly root: string;
  private readonly now: Clock;
  private resolved?: { dir: string; rails: Rail[]; input: string };

  constructor(private readonly opts: Ina3221HwmonOptions) {
    this.root = opts.root ?? '/';
    this.now = opts.now ?? monotonicNow;
  }

  describe(): string {
    const dir = this.resolved?.dir ?? underRoot(this.root, this.opts.hwmonGlob);
    return `ina3221-hwmon: ${dir}/in<N>_input (mV) × curr<N>_input (mA), input rail ${this.resolved?.input ?? this.opts.inputRail ?? JETSON_INPUT_RAILS.join('|')}`;
  }

  private async resolve(): Promise<{ dir: string; rails: Rail[]; input: string }> {
    if (this.resolved) return this.resolved;
    const pattern = underRoot(this.root, this.opts.hwmonGlob);
    const [dir] = await globDirs(pattern);
    if (dir === undefined) throw new EnergySensorError({ where: pattern, message: 'no INA3221 hwmon directory found', fix: 'check energySensor.hwmonGlob in the device profile (JetPack 5+ only; JetPack 4 uses ina3221-iio)' });
    let rails = this.opts.rails;
    if (!rails) {
      rails = [];
      for (let n = 1; n <= 3; n++) {
        let label: string;
        try {
          label = (await fsp.readFile(path.join(dir, `in${n}_label`), 'utf8')).trim();
        } catch {
          continue;
        }
        if (label !== NOT_CONNECTED) rails.push({ channel: n, label });
      }
    }
    // A profile may list a channel the board leaves unconnected; the driver's label is the truth.
    const kept: Rail[] = [];
    for (const r of rails) {
      const label = await fsp.readFile(path.join(dir, `in${r.channel}_label`), 'utf8').then((t) => t.trim(), () => undefined);
      if (r.label !== NOT_CONNECTED && label !== NOT_CONNECTED) kept.push(r);
    }
    rails = kept;
    this.resolved = { dir, rails, input: pickInputRail(rails, this.opts.inputRail, dir) };
    return this.resolved;
  }

  async read(): Promise<EnergyReading> {
    const { dir, rails, input } = await this.resolve();
    const out: Record<string, number> = {};
    for (const r of rails) {
      const mV = await readNumber(path.join(dir, `in${r.channel}_input`));
      const mA = await readNumber(path.join(dir, `curr${r.channel}_input`));
      // The shunt ADC reads a few mA either side of zero on an idle rail; negative watts would
      // subtract energy, so they are clamped.
      out[r.label] = Math.max(0, (mV * mA) / 1e6);
    }
    return { watts: out[input]!, rails: out, at: this.now(), source: this.source };
  }
}
