// Discrete NVIDIA GPUs through nvidia-smi, so edgeexit needs no NVML binding. `power.draw` (W)
// is a documented --query-gpu field; a total-energy counter (NVML's
// nvmlDeviceGetTotalEnergyConsumption, mJ, Volta+) is only read when the caller names the
// nvidia-smi field for it, because its spelling differs across driver versions and an unknown
// field makes nvidia-smi fail the whole query. Values of "[N/A]" / "[Not Supported]" are errors,
// not zeros: a zero would silently read as a free inference.
import { EnergySensorError, defaultExec, monotonicNow, type Clock, type EnergyMeter, type EnergyReading, type Exec, type MeterOptions } from './meter.js';
import { show } from '../../util/errors.js';

export interface NvidiaSmiOptions extends MeterOptions {
  deviceIndex?: number;
  /** nvidia-smi --query-gpu field holding total energy in mJ; absent: watts only. */
  energyField?: string;
}

export interface NvidiaSmiRow {
  index: number;
  watts: number;
  millijoules?: number;
}

function num(field: string, value: string | undefined, line: string, where: string): number {
  const v = (value ?? '').trim();
  const n = Number(v);
  if (v === '' || !Number.isFinite(n) || n < 0)
    throw new EnergySensorError({ where, message: `${field} is not a reading`, expected: 'a non-negative number (csv,noheader,nounits)', got: show(line) });
  return n;
}

/** Parse `--format=csv,noheader,nounits` output of `index,power.draw[,<energyField>]`. */
export function parseNvidiaSmi(output: string, withEnergy: boolean, where = 'nvidia-smi'): NvidiaSmiRow[] {
  const rows: NvidiaSmiRow[] = [];
  for (const line of output.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const cols = line.split(',');
    const row: NvidiaSmiRow = { index: num('index', cols[0], line, where), watts: num('power.draw', cols[1], line, where) };
    if (withEnergy) row.millijoules = num('energy', cols[2], line, where);
    rows.push(row);
  }
  if (rows.length === 0) throw new EnergySensorError({ where, message: 'no GPU rows in the output', got: show(output) });
  return rows;
}

/**
 * GPU power (and total energy where the driver reports it) from `nvidia-smi --query-gpu`.
 *
 * @example
 * ```ts
 * import { NvidiaSmiMeter } from 'edgeexit/telemetry';
 * const meter = new NvidiaSmiMeter({ deviceIndex: 0, energyField: 'total_energy_consumption' });
 * const { watts, joules } = await meter.read();
 * ```
 */
export class NvidiaSmiMeter implements EnergyMeter {
  readonly kind = 'nvml' as const;
  readonly source = 'sensor' as const;
  private readonly exec: Exec;
  private readonly now: Clock;
  private readonly index: number;

  constructor(private readonly opts: NvidiaSmiOptions = {}) {
    this.exec = opts.exec ?? defaultExec();
    this.now = opts.now ?? monotonicNow;
    this.index = opts.deviceIndex ?? 0;
  }

  args(): string[] {
    const fields = ['index', 'power.draw', ...(this.opts.energyField ? [this.opts.energyField] : [])];
    return [`--query-gpu=${fields.join(',')}`, '--format=csv,noheader,nounits', `--id=${this.index}`];
  }

  describe(): string {
    return `nvml: \`nvidia-smi ${this.args().join(' ')}\` (GPU ${this.index} board power${this.opts.energyField ? ' and total energy' : ''})`;
  }

  async read(): Promise<EnergyReading> {
    let out: string;
    try {
      out = await this.exec('nvidia-smi', this.args());
    } catch (err) {
      throw new EnergySensorError({ where: 'nvidia-smi', message: `failed: ${(err as Error).message}`, fix: 'install the NVIDIA driver, or check deviceIndex' }, { cause: err });
    }
    const at = this.now();
    const rows = parseNvidiaSmi(out, this.opts.energyField !== undefined);
    const row = rows.find((r) => r.index === this.index) ?? (rows.length === 1 ? rows[0] : undefined);
    if (!row) throw new EnergySensorError({ where: 'nvidia-smi', message: `no row for GPU ${this.index}`, got: rows.map((r) => r.index).join(', ') });
    const reading: EnergyReading = { watts: row.watts, at, source: this.source };
    if (row.millijoules !== undefined) reading.joules = row.millijoules / 1000;
    return reading;
  }
}
