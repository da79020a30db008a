// `edgeexit calibrate <bundle> --data <ImageFolder> (--target-latency 2ms | --max-accuracy-drop d)`:
// fit temperatures and search exit thresholds against a latency target, check them on held-out
// images, write them into the bundle's manifest and a report. The work is in
// src/calibration/calibrate.ts; this file parses flags and prints.
import { calibrate, type CalibrationReport } from '../../calibration/calibrate.js';
import type { LatencyProfile } from '../../calibration/latency.js';
import { fleetLatencyProfile, parseFleetSource } from '../../fleet/fleet-latency.js';
import { openStore } from '../../fleet/open.js';
import { DEFAULT_DB } from './collect.js';
import type { SearchTarget } from '../../calibration/search.js';
import { EdgeExitError, InputError, formatProblem, show } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { pct, table } from '../format.js';

export interface CalibrateCommandOptions {
  bundle: string;
  data: string;
  targetLatency?: string;
  percentile?: number;
  maxAccuracyDrop?: number;
  latencySource?: string;
  /** Fleet database for --latency-source fleet:<fleet>[/<class>]. */
  db?: string;
  device?: string;
  holdout?: number;
  margin?: number;
  batch?: number;
  key?: string;
  out?: string;
  limit?: number;
  runs?: number;
  allowMiss?: boolean;
  json?: boolean;
}

/** `2ms`, `2`, `1.5 ms`, `500us` → milliseconds. */
export function parseLatency(s: string): number {
  const m = /^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*(ms|us|µs|s)?\s*$/i.exec(s);
  if (!m) throw new InputError(formatProblem({ where: '--target-latency', expected: 'a latency such as 2ms, 0.5ms, 800us or 0.002s', got: show(s) }));
  const v = Number(m[1]);
  const unit = (m[2] ?? 'ms').toLowerCase();
  return unit === 's' ? v * 1000 : unit === 'ms' ? v : v / 1000;
}

export function targetOf(o: CalibrateCommandOptions): SearchTarget {
  if ((o.targetLatency === undefined) === (o.maxAccuracyDrop === undefined)) {
    throw new InputError(formatProblem({ where: 'calibrate', expected: 'exactly one of --target-latency and --max-accuracy-drop', got: o.targetLatency === undefined ? 'neither' : 'both' }));
  }
  if (o.targetLatency !== undefined) return { kind: 'latency', targetMs: parseLatency(o.targetLatency), ...(o.percentile !== undefined ? { percentile: o.percentile } : {}) };
  if (o.percentile !== undefined) throw new InputError('--percentile goes with --target-latency');
  return { kind: 'accuracy-drop', maxDropPp: o.maxAccuracyDrop! };
}

const ms = (x: number): string => x.toFixed(3);

export function renderCalibration(r: CalibrationReport): string {
  const lat = r.target.kind === 'latency' && r.target.percentile !== undefined ? `p${r.target.percentile} ms` : 'mean ms (constrained)';
  const rows = [
    ['predicted (fit)', pct(r.predicted.accuracy), ms(r.predicted.meanMs), ms(r.predicted.latencyMs), r.predicted.exitFractions.map((f) => pct(f, 1)).join(' / ')],
    ['achieved (held out)', pct(r.achieved.accuracy), ms(r.achieved.meanMs), ms(r.achieved.latencyMs), r.achieved.exitFractions.map((f) => pct(f, 1)).join(' / ')],
    ['no exit (fit)', pct(r.noExit.accuracy), ms(r.noExit.meanMs), ms(r.noExit.latencyMs), ''],
    ['oracle bound (fit)', pct(r.oracle.accuracy), ms(r.oracle.meanMs), '', ''],
  ];
  const tgt = r.target.kind === 'latency' ? `${r.target.percentile === undefined ? 'mean' : `p${r.target.percentile}`} latency ≤ ${r.target.targetMs} ms` : `accuracy within ${r.target.maxDropPp} pp of the last exit`;
  return [
    table(['policy', 'accuracy', 'mean ms', lat, 'exits'], rows),
    '',
    `target    ${tgt}`,
    `latency   ${r.latency.source}: ${r.latency.description}; stages ${r.latency.stageMs.map(ms).join(', ')} ms (batch ${r.latency.batch}, ${r.latency.stat})`,
    `          ${r.latency.why}`,
    `images    ${r.images.fit} fit, ${r.images.heldOut} held out`,
    `policy    max-prob thresholds ${r.thresholds.join(', ')}; temperatures ${r.temperatures.join(', ')}`,
    ...(r.policy ? [`run order ${r.policy.chosen} (cbnet ${(r.policy.cbnet.accuracy * 100).toFixed(2)}% at ${ms(r.policy.cbnet.meanMs)} ms; hybrid ${(r.policy.hybrid.accuracy * 100).toFixed(2)}% at ${ms(r.policy.hybrid.meanMs)} ms, fit split)`] : []),
    ...(r.aimedDropPp ? [`margin    budget ${r.aimedDropPp.budgetPp} pp, aimed at ${r.aimedDropPp.aimedPp.toFixed(2)} pp (${r.aimedDropPp.marginStderrs} × standard error ${r.aimedDropPp.stderrPp.toFixed(2)} pp)`] : []),
    `search    ${r.search.strategy}, ${r.search.evaluated} policies in ${r.search.ms.toFixed(1)} ms`,
    ...(r.miss ? [`MISSED    ${r.miss}`] : []),
    r.bundleUpdated ? `bundle    ${r.bundle}: manifest updated; ${r.signature === 'resigned' ? 're-signed' : 'unsigned'}` : `bundle    ${r.bundle}: left as it was (the target was missed)`,
    `report    ${r.files.markdown}, ${r.files.json}, ${r.files.svg}`,
  ].join('\n');
}

export async function calibrateCommand(o: CalibrateCommandOptions, io: CliIO): Promise<CalibrationReport> {
  const target = targetOf(o);
  const fleet = await fleetProfile(o, io);
  const r = await calibrate({
    bundle: o.bundle,
    data: o.data,
    target,
    ...(fleet ? { latencyProfile: fleet } : o.latencySource !== undefined ? { latencySource: o.latencySource } : {}),
    ...(o.allowMiss ? { allowMiss: true } : {}),
    ...(o.device !== undefined ? { device: o.device } : {}),
    ...(o.holdout !== undefined ? { holdout: o.holdout } : {}),
    ...(o.margin !== undefined ? { margin: o.margin } : {}),
    ...(o.batch !== undefined ? { batch: o.batch } : {}),
    ...(o.key !== undefined ? { key: o.key } : {}),
    ...(o.out !== undefined ? { out: o.out } : {}),
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    ...(o.runs !== undefined ? { runs: o.runs } : {}),
    onProgress: (l) => io.err(l),
  });
  io.out(o.json ? JSON.stringify(r, null, 2) : renderCalibration(r));
  if (r.miss && !o.allowMiss) {
    throw new EdgeExitError(
      formatProblem({
        where: `calibrate ${o.bundle}`,
        message: `missed the target on the held-out images: ${r.miss}; the bundle was left as it was (report: ${r.files.markdown})`,
        fix: 'loosen the target, calibrate on more images, or pass --allow-miss to write these thresholds anyway',
      }),
    );
  }
  return r;
}

/** `--latency-source fleet:<fleet>[/<class>]`: the profile from the fleet database, before calibrating. */
async function fleetProfile(o: CalibrateCommandOptions, io: CliIO): Promise<{ profile: LatencyProfile; label: string; why: string } | undefined> {
  const src = o.latencySource !== undefined ? parseFleetSource(o.latencySource) : undefined;
  if (!src) return undefined;
  const store = await openStore(o.db ?? DEFAULT_DB, { mustExist: true });
  try {
    const r = await fleetLatencyProfile(store, o.bundle, src);
    io.err(`fleet latency: ${r.profile.host.description}`);
    return { profile: r.profile, label: `fleet:${src.fleet}${src.deviceClass !== undefined ? `/${src.deviceClass}` : ''}`, why: `as asked (--latency-source): what ${r.devices} devices reported in ${r.windows} windows` };
  } finally {
    await store.close();
  }
}

export function calibrateModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder, or a .tar from `edgeexit pack` (its manifest is rewritten atomically either way)', demandOption: true })
        .option('data', { type: 'string', describe: 'ImageFolder of labelled calibration images (never the test set)', demandOption: true })
        .option('target-latency', { type: 'string', describe: 'Latency budget per image, e.g. 2ms (mean, or --percentile)' })
        .option('percentile', { type: 'number', describe: 'Constrain this percentile of per-image latency instead of the mean (e.g. 95)' })
        .option('max-accuracy-drop', { type: 'number', describe: 'Instead of a latency target: lowest latency within this many pp of the last exit' })
        .option('latency-source', { type: 'string', describe: "measure (here), model (the device profile's cost model: an estimate), fleet:<fleet>[/<class>] (what the fleet's devices reported running this bundle, from --db), or a profile file from `edgeexit profile` (default: measure when this host matches the bundle's device in CPU architecture and count, else model)" })
        .option('db', { type: 'string', describe: `Fleet database for --latency-source fleet:<fleet>[/<class>] (default ${DEFAULT_DB})` })
        .option('device', { type: 'string', describe: "Device profile for --latency-source model (default: the bundle's target)" })
        .option('holdout', { type: 'number', describe: 'Fraction held out for the check (default 0.3, stratified, fixed seed)' })
        .option('margin', { type: 'number', describe: '--max-accuracy-drop: aim this many paired standard errors under the budget, so it holds on new images (default 1; 0 aims at the budget)' })
        .option('batch', { type: 'number', describe: 'Batch size the device will run; stage latency is measured or modelled at it (default 1)' })
        .option('key', { type: 'string', describe: 'Private key to re-sign the manifest; required when the bundle is signed' })
        .option('out', { type: 'string', describe: 'Report folder (default <bundle>-calibration)' })
        .option('limit', { type: 'number', describe: 'Use at most this many images, spread over the classes' })
        .option('runs', { type: 'number', describe: 'Timed runs per stage for --latency-source measure (default 200)' })
        .option('allow-miss', { type: 'boolean', describe: 'Write the thresholds and exit 0 even when the held-out check misses the target (default: report the miss, leave the bundle, exit 1)' })
        .option('json', { type: 'boolean', describe: 'Print the report as JSON' })
        .example('$0 calibrate build/branchy-rpi4 --data calibration/fashion-mnist --target-latency 0.5ms --latency-source model', ''),
    handler: async (args: CalibrateCommandOptions) => {
      await calibrateCommand(args, io);
    },
  });
}
