// `edgeexit profile <bundle>`: per-stage latency of a bundle on this machine (or a device cost
// model's estimate), written as a latency profile file that `calibrate --latency-source` reads,
// and printed as a table. The work is in src/calibration/latency.ts.
import { measureLatencyProfile, modelLatencyProfile, writeLatencyProfile, type LatencyProfile } from '../../calibration/latency.js';
import { InputError, formatProblem, show } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { table } from '../format.js';

export interface ProfileCommandOptions {
  bundle: string;
  /** `1,8,32` */
  batch?: string;
  runs?: number;
  warmup?: number;
  threads?: number;
  /** Estimate from this device profile's cost model instead of measuring. */
  model?: string;
  out?: string;
  json?: boolean;
}

/** `1, 8,32` → [1, 8, 32]; every item a positive integer. */
export function parseBatches(s: string | undefined): number[] {
  if (s === undefined) return [1];
  return s.split(',').map((part, i) => {
    const v = Number(part.trim());
    if (!Number.isInteger(v) || v < 1) throw new InputError(formatProblem({ where: `--batch item ${i + 1}`, expected: 'a positive integer (comma-separated batch sizes, e.g. 1,8,32)', got: show(part.trim()) }));
    return v;
  });
}

export function renderProfile(p: LatencyProfile): string {
  const rows = p.stages.flatMap((s) => s.batches.map((b) => [s.stage, b.batch, b.meanMs.toFixed(3), b.p50Ms.toFixed(3), b.p90Ms.toFixed(3), b.p95Ms.toFixed(3), b.p99Ms.toFixed(3), b.runs]));
  const note = p.source === 'model' ? 'ESTIMATE' : 'measured';
  return [table(['stage', 'batch', 'mean ms', 'p50', 'p90', 'p95', 'p99', 'runs'], rows), '', `source    ${note}: ${p.host.description}`].join('\n');
}

export async function profileCommand(opts: ProfileCommandOptions, io: CliIO): Promise<LatencyProfile> {
  const batches = parseBatches(opts.batch);
  const p = opts.model
    ? await modelLatencyProfile(opts.bundle, opts.model, batches)
    : await measureLatencyProfile(opts.bundle, { batches, ...(opts.runs !== undefined ? { runs: opts.runs } : {}), ...(opts.warmup !== undefined ? { warmup: opts.warmup } : {}), ...(opts.threads !== undefined ? { threads: opts.threads } : {}) });
  if (opts.out) await writeLatencyProfile(opts.out, p);
  if (opts.json) io.out(JSON.stringify(p, null, 2));
  else io.out(renderProfile(p) + (opts.out ? `\nwrote     ${opts.out}` : ''));
  return p;
}

export function profileModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Bundle folder or .tar', demandOption: true })
        .option('batch', { type: 'string', describe: 'Batch sizes, comma-separated (default 1)' })
        .option('runs', { type: 'number', describe: 'Timed runs per stage and batch (default 200)' })
        .option('warmup', { type: 'number', describe: 'Untimed runs first (default 20)' })
        .option('threads', { type: 'number', describe: 'Intra-op threads (default 1)' })
        .option('model', { type: 'string', describe: "Estimate from this device profile's cost model instead of measuring" })
        .option('out', { type: 'string', describe: 'Write the latency profile (JSON) here' })
        .option('json', { type: 'boolean', describe: 'Print the profile as JSON' })
        .example('$0 profile build/branchy-rpi4 --batch 1,8,32 --out profile.json', ''),
    handler: async (args: ProfileCommandOptions) => {
      await profileCommand(args, io);
    },
  });
}
