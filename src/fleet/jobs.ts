// The operator side of flash jobs: put a bundle's files where file servers find them by hash,
// publish one signed, retained job per device, read every device's retained state, cancel.
// Nothing here keeps state of its own: the broker's retained messages are the record, so any
// operator machine (or a restarted one) sees the same jobs.
import { randomUUID, type KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { loadBundleFiles, sha256Hex, verifyLoadedBundle } from '../bundle/files.js';
import { MANIFEST_FILE, SIGNATURE_FILE, type Manifest } from '../bundle/manifest.js';
import { FINAL_JOB_STATES, decodeJobState, jobFilters, jobTopics, peekJob, signJob, type Job, type JobStateReport } from '../agent/job-protocol.js';
import type { MqttConnection } from '../telemetry/mqtt/client.js';
import { parseTopic } from '../telemetry/payloads.js';
import { InputError, formatProblem } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

export interface StagedBundle {
  manifest: Manifest;
  /** The bundle id (manifest SHA-256) and the refs a job names. */
  bundle: string;
  refs: Pick<Job, 'manifest' | 'signature'>;
  /** Files written to the folder now (the others were there already). */
  written: number;
  bytes: number;
}

/**
 * Verify a bundle (folder or .tar) and copy each of its files to `<dir>/<sha256>` (temp file,
 * fsync, rename; a file already there is not written again), where file servers started with
 * `blobDirs: [dir]` serve it. The bundle must be signed: a device refuses anything else.
 *
 * @example
 * ```ts
 * import { stageBundleFiles } from 'edgeexit/fleet';
 * const staged = await stageBundleFiles('fmnist-branchy.tar', '/srv/edgeexit/files');
 * console.log(staged.bundle, staged.written);
 * ```
 */
export async function stageBundleFiles(source: string, dir: string): Promise<StagedBundle> {
  const b = await loadBundleFiles(source);
  const v = await verifyLoadedBundle(b);
  const manifest = b.files.get(MANIFEST_FILE)!;
  const sig = b.files.get(SIGNATURE_FILE);
  if (!sig) throw new InputError(formatProblem({ where: source, message: `has no ${SIGNATURE_FILE}; a device installs only signed bundles`, fix: 'compile with --key, or sign it, then flash again' }));
  let written = 0;
  let bytes = 0;
  await fsp.mkdir(dir, { recursive: true });
  for (const data of b.files.values()) {
    const file = path.join(dir, sha256Hex(data));
    const there = await fsp.stat(file).then((s) => s.size === data.length, () => false);
    if (there) continue;
    await writeFileAtomic(file, data, { mode: 0o644 });
    written++;
    bytes += data.length;
  }
  return {
    manifest: v.manifest,
    bundle: sha256Hex(manifest),
    refs: { manifest: { sha256: sha256Hex(manifest), bytes: manifest.length }, signature: { sha256: sha256Hex(sig), bytes: sig.length } },
    written,
    bytes,
  };
}

export interface FlashTarget {
  fleet: string;
  device: string;
}

/**
 * Publish one signed job per target, retained at QoS 1 (resolves once the broker has each).
 *
 * @example
 * ```ts
 * import { publishJobs, stageBundleFiles } from 'edgeexit/fleet';
 * const staged = await stageBundleFiles('bundle.tar', 'files');
 * const jobs = await publishJobs(conn, staged, [{ fleet: 'lab', device: 'pi-07' }], key);
 * ```
 */
export async function publishJobs(conn: MqttConnection, staged: StagedBundle, targets: readonly FlashTarget[], key: KeyObject, opts: { rollback?: boolean; trialMs?: number; timeoutS?: number; jobId?: string } = {}): Promise<Job[]> {
  const issuedAt = new Date().toISOString();
  const id = opts.jobId ?? `flash-${issuedAt.replace(/[-:]/g, '').replace(/\..*/, '')}-${randomUUID().slice(0, 8)}`;
  const out: Job[] = [];
  for (const t of targets) {
    const job: Job = {
      v: 1,
      job: id,
      fleet: t.fleet,
      device: t.device,
      bundle: staged.bundle,
      model: { name: staged.manifest.model.name, version: staged.manifest.model.version },
      rollback: opts.rollback ?? false,
      canceled: false,
      issuedAt,
      ...staged.refs,
      ...(opts.trialMs !== undefined ? { trialMs: opts.trialMs } : {}),
      ...(opts.timeoutS !== undefined ? { timeoutS: opts.timeoutS } : {}),
    };
    await conn.publish(jobTopics(t.fleet, t.device).desired, Buffer.from(JSON.stringify(signJob(job, key))), { qos: 1, retain: true });
    out.push(job);
  }
  return out;
}

/** Per device: the job published for it and the state it reported (either may be missing). */
export interface DeviceJob {
  fleet: string;
  device: string;
  desired?: Job;
  state?: JobStateReport;
}

/**
 * Read the retained job/desired and job/state messages (a subscriber gets them at once), until
 * none has arrived for `quietMs` (or `maxMs` passed). The connection must be subscribed by this
 * call only; it is not closed.
 *
 * @example
 * ```ts
 * import { readJobs } from 'edgeexit/fleet';
 * for (const d of await readJobs(conn)) console.log(d.device, d.state?.state, d.state?.reason);
 * ```
 */
export async function readJobs(conn: MqttConnection, opts: { fleet?: string; quietMs?: number; maxMs?: number } = {}): Promise<DeviceJob[]> {
  const byDevice = new Map<string, DeviceJob>();
  let last = Date.now();
  conn.onMessage((m) => {
    const t = parseTopic(m.topic);
    if (!t || (t.kind !== 'job/desired' && t.kind !== 'job/state') || m.payload.length === 0) return;
    const key = `${t.fleet}/${t.device}`;
    const d = byDevice.get(key) ?? { fleet: t.fleet, device: t.device };
    if (t.kind === 'job/desired') {
      const j = peekJob(m.payload);
      if (j) d.desired = j;
    } else {
      const s = decodeJobState(m.payload);
      if (s) d.state = s;
    }
    byDevice.set(key, d);
    last = Date.now();
  });
  const f = jobFilters(opts.fleet);
  await conn.subscribe(f.desired, 1);
  await conn.subscribe(f.state, 1);
  const start = Date.now();
  const quiet = opts.quietMs ?? 300;
  while (Date.now() - last < quiet && Date.now() - start < (opts.maxMs ?? 5_000)) await new Promise((r) => setTimeout(r, 50));
  return [...byDevice.values()].sort((a, b) => `${a.fleet}/${a.device}`.localeCompare(`${b.fleet}/${b.device}`));
}

/**
 * Whether a device's reported state is the end of `job` (for waiting on a flash).
 *
 * @example
 * ```ts
 * import { jobFinished, readJobs } from 'edgeexit/fleet';
 * const done = (await readJobs(conn)).every((d) => jobFinished(d, jobId));
 * ```
 */
export function jobFinished(d: DeviceJob, job: string): boolean {
  return d.state?.job === job && FINAL_JOB_STATES.includes(d.state.state);
}

/**
 * Cancel a job: republish each device's desired job `id` with `canceled` set, signed again. A
 * device that has not finished stops and reports canceled; one that finished keeps its state.
 *
 * @example
 * ```ts
 * import { cancelJob, readJobs } from 'edgeexit/fleet';
 * const n = await cancelJob(conn, await readJobs(conn), 'flash-20261206T101500-1a2b3c4d', key);
 * ```
 */
export async function cancelJob(conn: MqttConnection, devices: readonly DeviceJob[], id: string, key: KeyObject): Promise<DeviceJob[]> {
  const hit = devices.filter((d) => d.desired?.job === id);
  if (hit.length === 0) {
    const known = [...new Set(devices.map((d) => d.desired?.job).filter(Boolean))].slice(0, 5).join(', ') || 'none';
    throw new InputError(formatProblem({ where: 'jobs cancel', message: `no device has job ${id}`, expected: 'a job id from `edgeexit jobs`', got: id, fix: `published jobs: ${known}` }));
  }
  for (const d of hit) {
    const job = { ...d.desired!, canceled: true };
    await conn.publish(jobTopics(d.fleet, d.device).desired, Buffer.from(JSON.stringify(signJob(job, key))), { qos: 1, retain: true });
  }
  return hit;
}
