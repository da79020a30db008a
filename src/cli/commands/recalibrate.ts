// `edgeexit recalibrate --fleet f --class rpi4 --target-latency 5ms --bundle <current> --data <folder>
// --key … --broker …`: the closed loop in one command. Calibrate a copy of the bundle the class
// runs against what that class reported (`calibrate --latency-source fleet:<f>/<class>`), check
// that only the manifest (thresholds, temperatures) and its signature changed, and roll the copy
// out to that class with the ordinary rollout (`rollout --class`), the current bundle staged as
// the rollback target. Devices already hold every stage file, so only the manifest moves.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { loadBundleFiles, sha256Hex } from '../../bundle/files.js';
import { MANIFEST_FILE, SIGNATURE_FILE, parseManifest } from '../../bundle/manifest.js';
import type { CalibrationReport } from '../../calibration/calibrate.js';
import type { ClassPlan, RolloutRecord } from '../../fleet/rollout-plan.js';
import { EdgeExitError, InputError, formatProblem } from '../../util/errors.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import type { CliIO } from '../io.js';
import { calibrateCommand } from './calibrate.js';
import { DRIVE_OPTIONS, ROLLOUT_SPEC_OPTIONS, rolloutCommand, type RolloutOptions } from './rollout.js';

export interface RecalibrateOptions extends Omit<RolloutOptions, 'bundle' | 'class' | 'key'> {
  /** The bundle the class runs now (folder or .tar): left as it is. */
  bundle: string;
  class: string;
  key: string;
  data: string;
  targetLatency: string;
  percentile?: number;
  /** Where the recalibrated bundle is written (default `<bundle>-<class>-recalibrated[.tar]`); must not exist. */
  out?: string;
  limit?: number;
  holdout?: number;
  allowMiss?: boolean;
}

export interface ThresholdsOnlyUpdate {
  /** The new bundle's id (its manifest's SHA-256). */
  bundle: string;
  /** Bytes a device that holds the current bundle must fetch: the new manifest and signature. */
  moved: { name: string; bytes: number }[];
  /** Files the new bundle shares byte for byte with the current one (already on the devices). */
  unchanged: { name: string; sha256: string; bytes: number }[];
}

/**
 * Compare a recalibrated bundle with the one it came from: every file but the manifest and its
 * signature must be the same bytes, and the manifest may differ only in its exit policy (and the
 * pipeline's default run order calibrate may choose); anything else is refused.
 *
 * @example const u = await thresholdsOnlyUpdate('build/branchy', 'build/branchy-rpi4-recalibrated'); u.moved
 */
export async function thresholdsOnlyUpdate(current: string, next: string): Promise<ThresholdsOnlyUpdate> {
  const [a, b] = await Promise.all([loadBundleFiles(current), loadBundleFiles(next)]);
  const names = new Set([...a.files.keys(), ...b.files.keys()]);
  const unchanged: ThresholdsOnlyUpdate['unchanged'] = [];
  const moved: ThresholdsOnlyUpdate['moved'] = [];
  for (const name of [...names].sort()) {
    const x = a.files.get(name);
    const y = b.files.get(name);
    if (name === MANIFEST_FILE || name === SIGNATURE_FILE) {
      if (y) moved.push({ name, bytes: y.length });
      continue;
    }
    if (!x || !y || sha256Hex(x) !== sha256Hex(y))
      throw new EdgeExitError(formatProblem({ where: `${next}: ${name}`, message: 'differs from the current bundle', expected: 'a thresholds-only update: only manifest.json and manifest.sig change', got: !x ? 'a new file' : !y ? 'a file missing' : 'other bytes', fix: 'recalibrate a copy of the bundle the devices run (--bundle), not another build' }));
    unchanged.push({ name, sha256: sha256Hex(y), bytes: y.length });
  }
  const ma = parseManifest(a.files.get(MANIFEST_FILE)!);
  const mb = parseManifest(b.files.get(MANIFEST_FILE)!);
  const strip = (m: typeof ma) => JSON.stringify({ ...m, exitPolicy: null, pipeline: m.pipeline ? { ...m.pipeline, default: null } : null });
  if (strip(ma) !== strip(mb))
    throw new EdgeExitError(formatProblem({ where: `${next}: ${MANIFEST_FILE}`, message: 'changed more than the exit policy', fix: 'recalibrate a copy of the bundle the devices run (--bundle)' }));
  return { bundle: sha256Hex(b.files.get(MANIFEST_FILE)!), moved, unchanged };
}

function defaultOut(bundle: string, cls: string): string {
  const base = bundle.replace(/[\\/]+$/, '');
  return base.endsWith('.tar') ? `${base.slice(0, -4)}-${cls}-recalibrated.tar` : `${base}-${cls}-recalibrated`;
}

/** Copy the current bundle where the recalibrated one goes; that path must be free (nothing is overwritten). */
async function copyBundle(from: string, to: string): Promise<void> {
  if (await fsp.stat(to).then(() => true, () => false))
    throw new InputError(formatProblem({ where: '--out', message: 'already exists', got: to, fix: 'pass another --out, or remove it' }));
  await fsp.mkdir(path.dirname(path.resolve(to)), { recursive: true });
  await fsp.cp(from, to, { recursive: true, errorOnExist: true, force: false });
}

const REQUIRED = [['fleet', '--fleet yard'], ['class', '--class rpi4'], ['bundle', '--bundle build/branchy.tar'], ['data', '--data calibration/fashion-mnist'], ['targetLatency', '--target-latency 5ms'], ['key', '--key ops.key'], ['broker', '--broker mqtt://broker']] as const;

function requireFlags(o: RecalibrateOptions): void {
  const missing = REQUIRED.filter(([k]) => typeof o[k] !== 'string' || o[k] === '');
  if (missing.length)
    throw new InputError(formatProblem({ where: 'recalibrate', message: `missing ${missing.map(([, ex]) => ex.split(' ')[0]).join(', ')}`, fix: `e.g. ${missing.map(([, ex]) => ex).join(' ')}` }));
}

/**
 * Calibrate against one class's fleet latency, sign, and roll the thresholds-only update out to
 * that class.
 *
 * @example
 * ```ts
 * await recalibrateCommand({ fleet: 'yard', class: 'rpi4', targetLatency: '5ms', bundle: 'build/branchy',
 *   data: 'calibration/fashion-mnist', db: 'fleet.db', key: 'ops.key', broker: 'mqtt://broker' }, io);
 * ```
 */
export async function recalibrateCommand(o: RecalibrateOptions, io: CliIO): Promise<{ calibration: CalibrationReport; update: ThresholdsOnlyUpdate; rollout: RolloutRecord | ClassPlan[] }> {
  requireFlags(o);
  const out = o.out ?? defaultOut(o.bundle, o.class);
  await copyBundle(o.bundle, out);
  const calibration = await calibrateCommand(
    {
      bundle: out,
      data: o.data,
      targetLatency: o.targetLatency,
      latencySource: `fleet:${o.fleet}/${o.class}`,
      key: o.key,
      out: `${out.replace(/\.tar$/, '')}-calibration`,
      ...(o.db !== undefined ? { db: o.db } : {}),
      ...(o.percentile !== undefined ? { percentile: o.percentile } : {}),
      ...(o.limit !== undefined ? { limit: o.limit } : {}),
      ...(o.holdout !== undefined ? { holdout: o.holdout } : {}),
      ...(o.allowMiss ? { allowMiss: true } : {}),
    },
    { out: (t) => io.err(t), err: (t) => io.err(t) },
  );
  const update = await thresholdsOnlyUpdate(o.bundle, out);
  const movedBytes = update.moved.reduce((n, f) => n + f.bytes, 0);
  io.err(`recalibrate: ${out} (bundle ${update.bundle.slice(0, 12)}): thresholds ${calibration.thresholds.join(', ')}; devices fetch ${update.moved.map((f) => f.name).join(' and ')} (${movedBytes} bytes), ${update.unchanged.length} files unchanged`);
  const { bundle: _b, class: cls, data: _d, targetLatency: _t, percentile: _p, out: _o, limit: _l, holdout: _h, allowMiss: _a, ...flags } = o;
  const rollout = await rolloutCommand({ ...flags, bundle: out, class: [cls], previous: [o.bundle, ...(o.previous ?? [])] }, io);
  return { calibration, update, rollout };
}

export function recalibrateModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('fleet', { type: 'string', describe: 'Fleet whose latency reports calibrate, and whose devices get the update', demandOption: true })
        .option('class', { type: 'string', describe: 'Hardware class (device profile) to recalibrate and update', demandOption: true })
        .option('bundle', { type: 'string', describe: 'The bundle the class runs now (folder or .tar; left as it is)', demandOption: true })
        .option('data', { type: 'string', describe: 'ImageFolder of labelled calibration images', demandOption: true })
        .option('target-latency', { type: 'string', describe: 'Latency budget per image, e.g. 5ms (mean, or --percentile)', demandOption: true })
        .option('percentile', { type: 'number', describe: 'Constrain this percentile of per-image latency instead of the mean' })
        .option('out', { type: 'string', describe: 'Where the recalibrated bundle goes (default <bundle>-<class>-recalibrated); must not exist' })
        .option('limit', { type: 'number', describe: 'Calibrate on at most this many images' })
        .option('holdout', { type: 'number', describe: 'Fraction held out for the check (default 0.3)' })
        .option('allow-miss', { type: 'boolean', describe: 'Roll out even when the held-out check misses the target' })
        .option('previous', { type: 'string', array: true, describe: 'Other bundles devices of the class may run (staged for rollback; --bundle always is)' })
        .options(ROLLOUT_SPEC_OPTIONS)
        .options(DRIVE_OPTIONS)
        .example('$0 recalibrate --fleet yard --class rpi4 --target-latency 5ms --bundle build/branchy.tar --data calibration/fashion-mnist --db fleet.db --key ops.key --broker mqtt://broker.local', ''),
    handler: async (args: RecalibrateOptions) => {
      await recalibrateCommand(args, io);
    },
  });
}
