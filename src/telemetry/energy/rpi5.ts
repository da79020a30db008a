// Raspberry Pi 5 PMIC ADC, read through `vcgencmd pmic_read_adc`. The PMIC only sees the rails
// it generates (core, DDR, 3V3, 1V8, …), not the board's 5 V input, so the summed V×I
// under-reads what the board draws from its supply (USB, PCIe, fan and regulator losses are
// missing). The profile's inputEstimate (scale, offsetWatts) turns the rail sum into an estimate
// of input power; the reading keeps the raw rails so the correction stays visible.
import { EnergySensorError, defaultExec, monotonicNow, type Clock, type EnergyMeter, type EnergyReading, type Exec, type MeterOptions } from './meter.js';
import { show } from '../../util/errors.js';

export interface PmicRailReading {
  volts?: number;
  amps?: number;
}

// Lines look like `  VDD_CORE_A current(7)=1.42880000A` and `EXT5V_V volt(24)=5.05716000V`:
// the rail name carries a _A / _V suffix that pairs current with voltage.
const LINE = /^\s*(\S+)_([AV])\s+(current|volt)\((\d+)\)=([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)([AV])\s*$/;

/** Parse the whole output; throws naming the first line that is neither blank nor a reading. */
export function parsePmicReadAdc(output: string, where = 'vcgencmd pmic_read_adc'): Map<string, PmicRailReading> {
  const rails = new Map<string, PmicRailReading>();
  for (const line of output.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const m = LINE.exec(line);
    if (!m) throw new EnergySensorError({ where, message: 'unrecognised line', expected: 'NAME_A current(N)=<amps>A or NAME_V volt(N)=<volts>V', got: show(line) });
    const [, name, suffix, what, , num, unit] = m;
    if ((suffix === 'A') !== (what === 'current') || unit !== suffix)
      throw new EnergySensorError({ where, message: 'inconsistent units', expected: '_A with current(…)=…A, _V with volt(…)=…V', got: show(line) });
    const entry = rails.get(name!) ?? {};
    if (suffix === 'A') entry.amps = Number(num);
    else entry.volts = Number(num);
    rails.set(name!, entry);
  }
  if (rails.size === 0) throw new EnergySensorError({ where, message: 'no readings in the output', expected: 'lines such as VDD_CORE_A current(7)=1.42880000A', got: show(output) });
  return rails;
}

/** Power per rail in watts, only for rails that report both volts and amps (EXT5V_V has no current). */
export function pmicRailWatts(rails: Map<string, PmicRailReading>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, r] of rails) if (r.volts !== undefined && r.amps !== undefined) out[name] = Math.max(0, r.volts * r.amps);
  return out;
}

export interface Rpi5PmicOptions extends MeterOptions {
  command?: readonly string[];
  /** Affine correction from the rail sum to board input power; without it the meter reports the rail sum. */
  inputEstimate?: { scale: number; offsetWatts: number };
}

export const RPI5_PMIC_COMMAND = ['vcgencmd', 'pmic_read_adc'] as const;

/**
 * Raspberry Pi 5 power from the PMIC's ADC (`vcgencmd pmic_read_adc`): the sum of the rails'
 * volts × amps, or the board input when `inputEstimate` gives the correction.
 *
 * @example
 * ```ts
 * import { Rpi5PmicMeter } from 'edgeexit/telemetry';
 * const meter = new Rpi5PmicMeter();
 * const { watts, rails } = await meter.read(); // rails: watts per PMIC rail
 * ```
 */
export class Rpi5PmicMeter implements EnergyMeter {
  readonly kind = 'rpi5-pmic' as const;
  readonly source = 'sensor' as const;
  private readonly exec: Exec;
  private readonly now: Clock;
  private readonly command: readonly string[];

  constructor(private readonly opts: Rpi5PmicOptions = {}) {
    this.exec = opts.exec ?? defaultExec();
    this.now = opts.now ?? monotonicNow;
    this.command = opts.command ?? RPI5_PMIC_COMMAND;
    if (this.command.length === 0) throw new EnergySensorError({ where: 'energySensor.command', message: 'empty command', expected: 'e.g. ["vcgencmd", "pmic_read_adc"]' });
  }

  describe(): string {
    const est = this.opts.inputEstimate;
    return `rpi5-pmic: \`${this.command.join(' ')}\`, sum of rail V×I (under-reads the board input)` + (est ? `, input estimate ×${est.scale} + ${est.offsetWatts} W` : ', no input estimate');
  }

  async read(): Promise<EnergyReading> {
    const [cmd, ...args] = this.command;
    let out: string;
    try {
      out = await this.exec(cmd!, args);
    } catch (err) {
      throw new EnergySensorError({ where: this.command.join(' '), message: `failed: ${(err as Error).message}`, fix: 'vcgencmd pmic_read_adc exists on Raspberry Pi 5 firmware only; the user needs the video group' }, { cause: err });
    }
    const at = this.now();
    const rails = pmicRailWatts(parsePmicReadAdc(out, this.command.join(' ')));
    const sum = Object.values(rails).reduce((a, b) => a + b, 0);
    const est = this.opts.inputEstimate;
    return { watts: est ? sum * est.scale + est.offsetWatts : sum, rails, at, source: this.source };
  }
}
