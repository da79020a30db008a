// Per-stage latency of a bundle, from one of three sources, in one shape (LatencyProfile):
//  - measure: run each stage here through onnxruntime at the chosen batch sizes, warm-up then N
//    timed runs, keeping the distribution (mean, p50, p90, p95, p99) — this host's numbers;
//  - model: the device profile's cost model (overhead + MACs × ns/MAC at the bundle precision),
//    an estimate for planning before a board is at hand;
//  - a profile file written by `edgeexit profile` (here or on the device itself).
// The file format has one zod schema (LatencyProfileSchema), the source of its type and errors.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import { z } from 'zod';
import { loadBundleFiles, sha256Hex, verifyLoadedBundle } from '../bundle/files.js';
import { MANIFEST_FILE, type Manifest } from '../bundle/manifest.js';
import { loadDeviceProfile } from '../devices/load.js';
import type { DeviceProfile } from '../devices/schema.js';
import { createSession, type ModelSession, type PlainTensor } from '../backends/onnxruntime.js';
import { InputError, ValidationError, show, type Problem } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

export const LATENCY_PROFILE_FORMAT = 'edgeexit-latency-profile';
export const LATENCY_SOURCES = ['measure', 'model'] as const;
export type LatencySourceKind = (typeof LATENCY_SOURCES)[number] | 'file';

const ms = z.number().nonnegative();
export const LatencyStatsSchema = z.strictObject({
  batch: z.int().positive().describe('Samples per run.'),
  meanMs: ms,
  p50Ms: ms,
  p90Ms: ms,
  p95Ms: ms,
  p99Ms: ms,
  runs: z.int().nonnegative().describe('Timed runs (0 for a cost-model estimate).'),
});
export type LatencyStats = z.output<typeof LatencyStatsSchema>;

export const LatencyProfileSchema = z
  .strictObject({
    format: z.literal(LATENCY_PROFILE_FORMAT),
    version: z.literal(1),
    source: z.enum([...LATENCY_SOURCES, 'fleet']).describe('measure: timed runs; model: a cost-model estimate; fleet: what devices reported in their telemetry windows.'),
    created: z.iso.datetime().describe('When (UTC, ISO 8601).'),
    bundle: z.strictObject({ model: z.string().min(1), manifestSha256: z.string().regex(/^[0-9a-f]{64}$/), precision: z.string().min(1) }),
    host: z
      .strictObject({
        device: z.string().nullable().describe('Device profile id, when known.'),
        description: z.string().min(1).describe('What ran it (CPU model, cores, OS) or which cost model.'),
        threads: z.int().positive().nullable(),
        warmup: z.int().nonnegative(),
      })
      .describe('Where the numbers come from.'),
    stages: z.array(z.strictObject({ stage: z.string().min(1), macs: z.int().nonnegative(), batches: z.array(LatencyStatsSchema).min(1) })).min(1),
  })
  .describe('Per-stage latency of one bundle.');
export type LatencyProfile = z.output<typeof LatencyProfileSchema>;

function pathText(p: readonly PropertyKey[]): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out;
}

/**
 * Validate a profile object; throws ValidationError naming the file and every bad field.
 *
 * @example
 * ```ts
 * import { validateLatencyProfile } from 'edgeexit/calibration';
 * const profile = validateLatencyProfile(await response.json(), 'profile from pi-07');
 * ```
 */
export function validateLatencyProfile(json: unknown, file: string): LatencyProfile {
  const r = LatencyProfileSchema.safeParse(json);
  if (r.success) return r.data;
  const problems: Problem[] = r.error.issues.map((i) => {
    const at = pathText(i.path);
    let v: unknown = json;
    for (const k of i.path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined;
    return { where: at ? `${file}: ${at}` : file, message: i.message, got: v === undefined ? 'nothing (the field is missing)' : show(v) };
  });
  throw new ValidationError(file, problems);
}

/**
 * Read and validate a latency profile file (written by `edgeexit profile --out` or writeLatencyProfile).
 *
 * @example
 * ```ts
 * import { readLatencyProfile, stageLatencyFrom } from 'edgeexit/calibration';
 * const stageMs = stageLatencyFrom(await readLatencyProfile('profiles/pi-07.json'));
 * ```
 */
export async function readLatencyProfile(file: string): Promise<LatencyProfile> {
  const text = await fsp.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new InputError(`${file}: cannot read the latency profile (${err.code})`, [], { cause: err });
  });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ValidationError(file, [{ where: file, expected: 'JSON', message: (err as Error).message }]);
  }
  return validateLatencyProfile(json, file);
}

/**
 * Validate a latency profile and write it as JSON, atomically.
 *
 * @example
 * ```ts
 * import { measureLatencyProfile, writeLatencyProfile } from 'edgeexit/calibration';
 * await writeLatencyProfile('profiles/this-host.json', await measureLatencyProfile('bundles/branchy-rpi4'));
 * ```
 */
export async function writeLatencyProfile(file: string, p: LatencyProfile): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(validateLatencyProfile(p, file), null, 2) + '\n');
}

/** Nearest-rank percentile of unsorted values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function summarise(times: readonly number[], batch: number): LatencyStats {
  return {
    batch,
    meanMs: times.reduce((a, b) => a + b, 0) / times.length,
    p50Ms: percentile(times, 50),
    p90Ms: percentile(times, 90),
    p95Ms: percentile(times, 95),
    p99Ms: percentile(times, 99),
    runs: times.length,
  };
}

function manifestHash(files: Map<string, Uint8Array>): string {
  return sha256Hex(files.get(MANIFEST_FILE)!);
}

/**
 * Cost-model latency of each stage: overhead + batch × MACs × convNsPerMac / 1e6 at the bundle's
 * precision (fp32 when the profile has none for it). An estimate: the manifest gives one MAC count
 * per stage, not per op kind, so every MAC is priced as a dense convolution's.
 */
export function modelStageLatency(manifest: Manifest, device: DeviceProfile, batch = 1): { stageMs: number[]; precisionUsed: string; description: string } {
  const per = device.costModel.perPrecision as Record<string, { convNsPerMac: number } | undefined>;
  const want = manifest.target.precision;
  const costs = per[want] ?? per.fp32!;
  const precisionUsed = per[want] ? want : 'fp32';
  const overhead = device.costModel.overheadMsPerRun;
  return {
    stageMs: manifest.stages.map((s) => overhead + (batch * s.macs * costs.convNsPerMac) / 1e6),
    precisionUsed,
    description: `estimate from device profile ${device.id} cost model (${precisionUsed}: overhead ${overhead} ms/run + MACs × ${costs.convNsPerMac} ns)`,
  };
}

/**
 * A latency profile estimated from a device profile's cost model (per-run overhead plus time per
 * MAC), for planning before the board is at hand.
 *
 * @example
 * ```ts
 * import { modelLatencyProfile, renderLatencyProfile } from 'edgeexit/calibration';
 * const profile = await modelLatencyProfile('bundles/branchy-rpi4', 'rpi4', [1, 8]);
 * console.log(renderLatencyProfile(profile).join('\n'));
 * ```
 */
export async function modelLatencyProfile(bundle: string, deviceId: string, batches: readonly number[] = [1]): Promise<LatencyProfile> {
  const files = await loadBundleFiles(bundle);
  const { manifest } = await verifyLoadedBundle(files);
  const device = await loadDeviceProfile(deviceId);
  const per = batches.map((b) => modelStageLatency(manifest, device, b));
  const stat = (v: number, b: number): LatencyStats => ({ batch: b, meanMs: v, p50Ms: v, p90Ms: v, p95Ms: v, p99Ms: v, runs: 0 });
  return {
    format: LATENCY_PROFILE_FORMAT,
    version: 1,
    source: 'model',
    created: new Date().toISOString(),
    bundle: { model: manifest.model.name, manifestSha256: manifestHash(files.files), precision: manifest.target.precision },
    host: { device: device.id, description: per[0]!.description, threads: device.costModel.threads ?? null, warmup: 0 },
    stages: manifest.stages.map((s, k) => ({ stage: s.exit, macs: s.macs, batches: batches.map((b, j) => stat(per[j]!.stageMs[k]!, b)) })),
  };
}

export interface MeasureOptions {
  batches?: readonly number[];
  runs?: number;
  warmup?: number;
  /** Intra-op threads (default 1: one inference at a time, as on the device). */
  threads?: number;
}

/**
 * Whether this machine can stand in for `device` when timing stages: the same CPU architecture
 * and the same number of CPUs. Anything else (an x86 laptop for a Pi or a Jetson) times a
 * different machine, so its numbers do not describe the device.
 *
 * @example hostMatchesDevice(await loadDeviceProfile('rpi4')) // { same: false, host: 'x64, 2 CPUs', device: 'rpi4 (arm64, 4 cores)' } on an x86 laptop
 */
export function hostMatchesDevice(device: DeviceProfile): { same: boolean; host: string; device: string } {
  const cpus = os.availableParallelism();
  return {
    same: device.cpu.arch === process.arch && device.cpu.cores === cpus,
    host: `${process.arch}, ${cpus} CPU${cpus === 1 ? '' : 's'}`,
    device: `${device.id} (${device.cpu.arch}, ${device.cpu.cores} core${device.cpu.cores === 1 ? '' : 's'})`,
  };
}

export function hostDescription(): string {
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
  return `this host: ${cpu}, ${os.availableParallelism()} cores, ${os.platform()} ${os.release()}, node ${process.version}`;
}

/**
 * Time every stage here. Each stage is fed what the earlier stages hand over for a blank image
 * batch, so inputs have the real shapes; stages run interleaved per round so that a change in
 * machine load hits all stages alike.
 *
 * @example
 * ```ts
 * import { measureLatencyProfile } from 'edgeexit/calibration';
 * const profile = await measureLatencyProfile('bundles/branchy-rpi4', { batches: [1, 8], runs: 200 });
 * console.log(profile.stages.map((s) => s.batches[0]!.p95Ms));
 * ```
 */
export async function measureLatencyProfile(bundle: string, opts: MeasureOptions = {}): Promise<LatencyProfile> {
  const files = await loadBundleFiles(bundle);
  const { manifest } = await verifyLoadedBundle(files);
  const batches = opts.batches?.length ? [...opts.batches] : [1];
  const runs = Math.max(1, opts.runs ?? 200);
  const warmup = Math.max(0, opts.warmup ?? 20);
  const threads = opts.threads ?? 1;
  const sessions: ModelSession[] = [];
  try {
    for (const s of manifest.stages) {
      sessions.push(await createSession(files.files.get(s.file)!, { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all', onWarning: () => {} }));
    }
    const [h, w] = manifest.input.preprocess.size;
    const c = manifest.input.preprocess.colorspace === 'rgb' ? 3 : 1;
    const times: number[][][] = manifest.stages.map(() => batches.map(() => []));
    for (const [bi, b] of batches.entries()) {
      const pool: Record<string, PlainTensor> = { [manifest.input.name]: { data: new Float32Array(b * c * h * w), dims: [b, c, h, w] } };
      const feedsOf: Record<string, PlainTensor>[] = [];
      for (const [k, s] of manifest.stages.entries()) {
        const feeds = Object.fromEntries(s.inputs.map((n) => [n, pool[n]!]));
        feedsOf.push(feeds);
        Object.assign(pool, await sessions[k]!.run(feeds));
      }
      for (let r = 0; r < warmup + runs; r++) {
        for (const [k] of manifest.stages.entries()) {
          const t0 = process.hrtime.bigint();
          await sessions[k]!.run(feedsOf[k]!);
          const t = Number(process.hrtime.bigint() - t0) / 1e6;
          if (r >= warmup) times[k]![bi]!.push(t);
        }
      }
    }
    return {
      format: LATENCY_PROFILE_FORMAT,
      version: 1,
      source: 'measure',
      created: new Date().toISOString(),
      bundle: { model: manifest.model.name, manifestSha256: manifestHash(files.files), precision: manifest.target.precision },
      host: { device: null, description: hostDescription(), threads, warmup },
      stages: manifest.stages.map((s, k) => ({ stage: s.exit, macs: s.macs, batches: batches.map((b, bi) => summarise(times[k]![bi]!, b)) })),
    };
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
}

export type StageStat = 'mean' | 50 | 90 | 95 | 99;

/**
 * Per-stage latency at `batch` from a profile. For a percentile target the stage's own percentile
 * is used where the profile has it: summing per-stage percentiles is conservative (exact only
 * when stage times move together), which suits a latency budget.
 *
 * @example
 * ```ts
 * import { readLatencyProfile, stageLatencyFrom } from 'edgeexit/calibration';
 * const p95 = stageLatencyFrom(await readLatencyProfile('profiles/pi-07.json'), 1, 95); // ms per stage
 * ```
 */
export function stageLatencyFrom(p: LatencyProfile, batch = 1, stat: StageStat = 'mean', where = 'latency profile'): number[] {
  return p.stages.map((s) => {
    const b = s.batches.find((x) => x.batch === batch);
    if (!b) throw new InputError(`${where}: stage ${s.stage} has no batch-${batch} numbers (it has batch ${s.batches.map((x) => x.batch).join(', ')}); profile again with --batch ${batch}`);
    if (stat === 'mean') return b.meanMs;
    const key = stat <= 50 ? 'p50Ms' : stat <= 90 ? 'p90Ms' : stat <= 95 ? 'p95Ms' : 'p99Ms';
    return b[key];
  });
}

/**
 * A latency profile as aligned text rows (stage, batch, mean, p50, p90, p95, p99, runs).
 *
 * @example
 * ```ts
 * import { modelLatencyProfile, renderLatencyProfile } from 'edgeexit/calibration';
 * for (const line of renderLatencyProfile(await modelLatencyProfile('bundles/branchy-rpi4', 'rpi4'))) console.log(line);
 * ```
 */
export function renderLatencyProfile(p: LatencyProfile): string[] {
  const rows: string[][] = [];
  for (const s of p.stages) for (const b of s.batches) rows.push([s.stage, String(b.batch), b.meanMs.toFixed(3), b.p50Ms.toFixed(3), b.p90Ms.toFixed(3), b.p95Ms.toFixed(3), b.p99Ms.toFixed(3), String(b.runs)]);
  return [`latency source: ${p.source} — ${p.host.description}`, ...rows.map((r) => r.join('\t'))];
}
