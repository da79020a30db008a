// x86 RAPL package energy through powercap: a µJ counter that wraps at max_energy_range_uj.
// Since Linux 5.10 (the Platypus side channel, CVE-2020-8694) energy_uj is readable by root
// only, so a permission error is expected on a stock system and must say so plainly.
import path from 'node:path';
import { EnergySensorError, monotonicNow, type Clock, type EnergyMeter, type EnergyReading, type MeterOptions } from './meter.js';
import { readNumber, underRoot } from './sysfs.js';

export const RAPL_ENERGY_FILE = '/sys/class/powercap/intel-rapl:0/energy_uj';

export interface RaplOptions extends MeterOptions {
  energyFile?: string;
}

export function raplRootOnlyMessage(file: string): string {
  return `${file} not readable (root-only since Linux 5.10)`;
}

/**
 * Intel/AMD package energy from the powercap RAPL counter (cumulative joules, wrap-around
 * handled); root-only on Linux 5.10 and later.
 *
 * @example
 * ```ts
 * import { RaplMeter } from 'edgeexit/telemetry';
 * const meter = new RaplMeter();
 * const a = await meter.read();
 * // … work …
 * const b = await meter.read();
 * console.log(`${(b.joules! - a.joules!).toFixed(3)} J`);
 * ```
 */
export class RaplMeter implements EnergyMeter {
  readonly kind = 'rapl' as const;
  readonly source = 'sensor' as const;
  private readonly now: Clock;
  /** The counter file as resolved under the root (named in errors and warnings). */
  readonly file: string;
  private readonly maxFile: string;
  private wrap?: number;

  constructor(opts: RaplOptions = {}) {
    this.now = opts.now ?? monotonicNow;
    this.file = underRoot(opts.root ?? '/', opts.energyFile ?? RAPL_ENERGY_FILE);
    this.maxFile = path.join(path.dirname(this.file), 'max_energy_range_uj');
  }

  get wrapJoules(): number | undefined {
    return this.wrap;
  }

  describe(): string {
    return `rapl: ${this.file} (µJ counter, wraps at ${this.maxFile})`;
  }

  async read(): Promise<EnergyReading> {
    try {
      if (this.wrap === undefined) this.wrap = (await readNumber(this.maxFile)) / 1e6;
      const uj = await readNumber(this.file);
      return { joules: uj / 1e6, at: this.now(), source: this.source };
    } catch (err) {
      if (err instanceof EnergySensorError && /permission denied/.test(err.message))
        throw new EnergySensorError(
          { where: this.file, message: `permission denied: ${raplRootOnlyMessage(this.file)}`, fix: 'run as root, or grant read access with a udev rule / chmod on energy_uj' },
          { cause: err },
        );
      throw err;
    }
  }
}
