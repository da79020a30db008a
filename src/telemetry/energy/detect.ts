// Which meter to use on this machine. The registry is data: per kind, what it needs, a cheap
// presence check and a factory. detectEnergyMeter tries the profile's energySensor first, then
// auto-detects in ENERGY_DETECT_ORDER, and falls back to the profile's power model with one
// warning line naming what was skipped and why — never silently, because a model number in an
// energy report has to be recognisable as one.
//
// Order: Jetson INA3221 (hwmon, then iio) first because they measure the whole module input;
// the Pi 5 PMIC next (rails only, corrected by the profile's inputEstimate); RAPL after that
// (CPU package only); nvidia-smi last (GPU board only, so it misses the host).
import { promises as fsp } from 'node:fs';
import type { EnergySensor } from '../../devices/schema.js';
import { defaultExec, monotonicNow, type Clock, type EnergyMeter, type EnergyMeterKind, type Exec } from './meter.js';
import { INA3221_HWMON_GLOB, INA3221_IIO_GLOB, Ina3221HwmonMeter, Ina3221IioMeter } from './jetson.js';
import { PowerModelMeter, type PowerModel } from './model.js';
import { NvidiaSmiMeter } from './nvidia.js';
import { RAPL_ENERGY_FILE, RaplMeter, raplRootOnlyMessage } from './rapl.js';
import { RPI5_PMIC_COMMAND, Rpi5PmicMeter } from './rpi5.js';
import { globDirs, underRoot } from './sysfs.js';

export type SensorKind = Exclude<EnergyMeterKind, 'model'>;

export interface DetectContext {
  root: string;
  exec: Exec;
  now: Clock;
}

export interface MeterEntry {
  /** What the meter reads, for docs and warnings. */
  needs: string;
  /** Cheap presence check: null when the sensor looks present, else why not. */
  detect(ctx: DetectContext): Promise<string | null>;
  /** Build from the profile's energySensor, or with auto-detected defaults when it is absent. */
  create(ctx: DetectContext, sensor?: EnergySensor): EnergyMeter;
}

function isMissingCommand(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}

async function commandRuns(ctx: DetectContext, cmd: string, args: readonly string[]): Promise<string | null> {
  try {
    await ctx.exec(cmd, args);
    return null;
  } catch (err) {
    return isMissingCommand(err) ? `${cmd} not found` : `\`${[cmd, ...args].join(' ')}\` failed: ${firstLine(err)}`;
  }
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!;
}

export const ENERGY_METERS: Record<SensorKind, MeterEntry> = {
  'ina3221-hwmon': {
    needs: `${INA3221_HWMON_GLOB}/in<N>_label, in<N>_input, curr<N>_input (JetPack 5+)`,
    detect: async (ctx) => ((await globDirs(underRoot(ctx.root, INA3221_HWMON_GLOB))).length ? null : `no ${INA3221_HWMON_GLOB}`),
    create: (ctx, s) =>
      new Ina3221HwmonMeter(
        s?.kind === 'ina3221-hwmon'
          ? { root: ctx.root, now: ctx.now, hwmonGlob: s.hwmonGlob, rails: s.rails, inputRail: s.inputRail }
          : { root: ctx.root, now: ctx.now, hwmonGlob: INA3221_HWMON_GLOB },
      ),
  },
  'ina3221-iio': {
    needs: `${INA3221_IIO_GLOB}/rail_name_<N>, in_power<N>_input (JetPack 4)`,
    detect: async (ctx) => ((await globDirs(underRoot(ctx.root, INA3221_IIO_GLOB))).length ? null : `no ${INA3221_IIO_GLOB}`),
    create: (ctx, s) =>
      new Ina3221IioMeter(
        s?.kind === 'ina3221-iio'
          ? { root: ctx.root, now: ctx.now, device: s.device, rails: s.rails, inputRail: s.inputRail }
          : { root: ctx.root, now: ctx.now, device: INA3221_IIO_GLOB },
      ),
  },
  'rpi5-pmic': {
    needs: '`vcgencmd pmic_read_adc` (Raspberry Pi 5 firmware)',
    detect: (ctx) => commandRuns(ctx, RPI5_PMIC_COMMAND[0], RPI5_PMIC_COMMAND.slice(1)),
    create: (ctx, s) =>
      new Rpi5PmicMeter(
        s?.kind === 'rpi5-pmic' ? { exec: ctx.exec, now: ctx.now, command: s.command, ...(s.inputEstimate ? { inputEstimate: s.inputEstimate } : {}) } : { exec: ctx.exec, now: ctx.now },
      ),
  },
  rapl: {
    needs: `${RAPL_ENERGY_FILE} readable (root-only since Linux 5.10)`,
    detect: async (ctx) => {
      try {
        await fsp.stat(underRoot(ctx.root, RAPL_ENERGY_FILE));
        return null;
      } catch {
        return `no ${RAPL_ENERGY_FILE}`;
      }
    },
    create: (ctx, s) => new RaplMeter({ root: ctx.root, now: ctx.now, energyFile: s?.kind === 'rapl' ? s.energyFile : RAPL_ENERGY_FILE }),
  },
  nvml: {
    needs: '`nvidia-smi --query-gpu=index,power.draw` (NVIDIA driver)',
    detect: (ctx) => commandRuns(ctx, 'nvidia-smi', ['--query-gpu=index,power.draw', '--format=csv,noheader,nounits']),
    create: (ctx, s) => new NvidiaSmiMeter({ exec: ctx.exec, now: ctx.now, deviceIndex: s?.kind === 'nvml' ? s.deviceIndex : 0 }),
  },
};

export const ENERGY_DETECT_ORDER: readonly SensorKind[] = ['ina3221-hwmon', 'ina3221-iio', 'rpi5-pmic', 'rapl', 'nvml'];

export interface DetectProfile {
  id: string;
  power: PowerModel;
  energySensor: EnergySensor;
}

export interface DetectOptions {
  profile: DetectProfile;
  root?: string;
  exec?: Exec;
  now?: Clock;
  /** Look for sensors the profile does not name (default true). */
  autoDetect?: boolean;
  /** Utilisation source handed to the power-model fallback. */
  utilisation?: () => number;
}

export interface Skipped {
  kind: SensorKind;
  reason: string;
}

export interface DetectResult {
  meter: EnergyMeter;
  /** Sensors that were configured or present but could not be used. */
  skipped: Skipped[];
  /** One line, set only when the power model is used. */
  warning?: string;
}

/** The reason a sensor that exists still cannot be used: its first read must succeed. */
async function probe(meter: EnergyMeter): Promise<string | null> {
  try {
    await meter.read();
    return null;
  } catch (err) {
    const msg = firstLine(err);
    if (meter instanceof RaplMeter && /permission denied/.test(msg)) return raplRootOnlyMessage(meter.file);
    return msg;
  }
}

/**
 * The best energy meter for this board: the profile's sensor, else one found by probing (Jetson
 * INA3221, Pi 5 PMIC, RAPL, nvidia-smi), else the profile's power model; `warning` says why when
 * it falls back.
 *
 * @example
 * ```ts
 * import { detectEnergyMeter } from 'edgeexit/telemetry';
 * // No sensor named: probe for one, else use the power model
 * const profile = { id: 'my-board', power: { idleWatts: 2.7, busyWatts: 6.4 }, energySensor: { kind: 'none' as const } };
 * const { meter, warning } = await detectEnergyMeter({ profile });
 * if (warning) console.error(warning);
 * console.log(meter.describe(), await meter.read());
 * ```
 */
export async function detectEnergyMeter(opts: DetectOptions): Promise<DetectResult> {
  const ctx: DetectContext = { root: opts.root ?? '/', exec: opts.exec ?? defaultExec(), now: opts.now ?? monotonicNow };
  const { profile } = opts;
  const skipped: Skipped[] = [];
  const configured = profile.energySensor.kind === 'none' ? undefined : profile.energySensor.kind;

  if (configured) {
    const meter = ENERGY_METERS[configured].create(ctx, profile.energySensor);
    const why = await probe(meter);
    if (why === null) return { meter, skipped };
    skipped.push({ kind: configured, reason: why });
  }
  if (opts.autoDetect ?? true) {
    for (const kind of ENERGY_DETECT_ORDER) {
      if (kind === configured) continue;
      if ((await ENERGY_METERS[kind].detect(ctx)) !== null) continue;
      const meter = ENERGY_METERS[kind].create(ctx);
      const why = await probe(meter);
      if (why === null) return { meter, skipped };
      skipped.push({ kind, reason: why });
    }
  }

  const { idleWatts, busyWatts } = profile.power;
  const meter = new PowerModelMeter({ power: { idleWatts, busyWatts }, name: profile.id, now: ctx.now, ...(opts.utilisation ? { utilisation: opts.utilisation } : {}) });
  const using = `using the ${profile.id} power model (${idleWatts} W idle, ${busyWatts} W busy)`;
  let what: string;
  if (skipped.length === 1) what = `energy sensor '${skipped[0]!.kind}' skipped: ${skipped[0]!.reason}`;
  else if (skipped.length > 1) what = `energy sensors skipped: ${skipped.map((s) => `'${s.kind}' (${s.reason})`).join('; ')}`;
  else what = `no energy sensor (profile says 'none'${opts.autoDetect ?? true ? `, none of ${ENERGY_DETECT_ORDER.join(', ')} found` : ''})`;
  return { meter, skipped, warning: `warn: ${what} — ${using}` };
}
