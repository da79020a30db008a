// The flash job protocol over MQTT: every message, its topic and its bounds, in one place.
//
//   edgeexit/v1/<fleet>/<device>/job/desired   RETAINED, written by an operator: the signed job
//                                              this device should run (or stop: canceled)
//   edgeexit/v1/<fleet>/<device>/job/state     RETAINED, written by the device: where it is with
//                                              that job, and what it runs now
//
// Both are retained so that either side, restarted, reads where the other stands without asking:
// a device coming back finds its job, an operator's `edgeexit jobs` finds every device's state.
// The job is signed (ed25519) by an operator key the device's trust store holds, the same store
// bundles are checked against: a broker credential alone cannot make a device install anything.
// The signed body names its fleet and device, so a job copied to another device's topic is refused.
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { keyId } from '../bundle/signing.js';
import { lookupKey, type TrustStore } from '../bundle/trust.js';
import { topicFor } from '../telemetry/payloads.js';

/** Largest job/desired or job/state payload accepted (both sides refuse larger ones unread). */
export const MAX_JOB_MESSAGE_BYTES = 16 * 1024;

/** States a job reports, as AWS IoT Jobs names them; `idle`: no job yet (the device says what it runs). */
export const JOB_STATES = ['queued', 'in-progress', 'succeeded', 'failed', 'rolled-back', 'timed-out', 'canceled', 'rejected', 'idle'] as const;
export type JobState = (typeof JOB_STATES)[number];
/** States after which the device does nothing more for that job. */
export const FINAL_JOB_STATES: readonly JobState[] = ['succeeded', 'failed', 'rolled-back', 'timed-out', 'canceled', 'rejected'];

/** Steps of a job on the device, in order. */
export const JOB_STEPS = ['received', 'check', 'download', 'verify', 'self-test', 'switch', 'trial', 'commit', 'done'] as const;
export type JobStep = (typeof JOB_STEPS)[number];

const id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
const sha = z.string().regex(/^[0-9a-f]{64}$/);
const fileRef = z.strictObject({ sha256: sha, bytes: z.int().min(1).max(4 * 1024 * 1024) });
const isoTime = z.string().max(40).refine((s) => Number.isFinite(Date.parse(s)), 'an ISO 8601 time');

export const JobSchema = z.strictObject({
  v: z.literal(1),
  job: id,
  fleet: id,
  device: id,
  /** The bundle: its manifest's SHA-256 (the device store's id). */
  bundle: sha,
  model: z.strictObject({ name: z.string().min(1).max(128), version: z.string().min(1).max(64) }),
  /** An older version than the one running is installed only when this is set. */
  rollback: z.boolean(),
  /** The operator canceled it: a device that has not finished stops and reports canceled. */
  canceled: z.boolean(),
  issuedAt: isoTime,
  manifest: fileRef,
  signature: fileRef,
  /** Trial length on the device (ms); the device's default when absent. */
  trialMs: z.int().min(0).max(3_600_000).optional(),
  /** Seconds from issuedAt the job may take; past it the device stops and reports timed-out. */
  timeoutS: z.int().min(1).max(30 * 24 * 3600).optional(),
});
/** A job as the operator signs it. */
export type Job = z.output<typeof JobSchema>;

export const SignedJobSchema = z.strictObject({
  /** The job's JSON text, exactly the bytes signed. */
  body: z.string().min(2).max(8 * 1024),
  keyId: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  sig: z.string().regex(/^[A-Za-z0-9+/]{86}==$/),
});
export type SignedJob = z.output<typeof SignedJobSchema>;

export const JobStateSchema = z.strictObject({
  v: z.literal(1),
  job: id.nullable(),
  state: z.enum(JOB_STATES),
  step: z.enum(JOB_STEPS).nullable(),
  /** 0 to 1 within the job (download is most of it). */
  progress: z.number().min(0).max(1),
  reason: z.string().max(2048).optional(),
  /** The job's bundle. */
  bundle: sha.nullable(),
  /** What the device runs now, and what it keeps to roll back to (newest first). */
  active: sha.nullable(),
  previous: z.array(sha).max(16),
  /** Times the device started this job (a kill -9 mid-job makes it more than one). */
  attempts: z.int().min(0).max(1000),
  at: isoTime,
});
/** What a device reports on job/state. */
export type JobStateReport = z.output<typeof JobStateSchema>;

/**
 * The job topics of one device.
 *
 * @example
 * ```ts
 * import { jobTopics } from 'edgeexit/agent';
 * jobTopics('lab', 'pi-07').desired; // 'edgeexit/v1/lab/pi-07/job/desired'
 * ```
 */
export function jobTopics(fleet: string, device: string): { desired: string; state: string } {
  return { desired: topicFor(fleet, device, 'job/desired'), state: topicFor(fleet, device, 'job/state') };
}

/**
 * Filters an operator subscribes to (every fleet, or one).
 *
 * @example
 * ```ts
 * import { jobFilters } from 'edgeexit/agent';
 * jobFilters('lab').state; // 'edgeexit/v1/lab/+/job/state'
 * ```
 */
export function jobFilters(fleet?: string): { desired: string; state: string } {
  const f = fleet ?? '+';
  return { desired: `edgeexit/v1/${f}/+/job/desired`, state: `edgeexit/v1/${f}/+/job/state` };
}

/**
 * Sign a job with an operator's ed25519 private key.
 *
 * @example
 * ```ts
 * import { signJob } from 'edgeexit/agent';
 * import { loadPrivateKey } from 'edgeexit/bundle';
 * const payload = JSON.stringify(signJob(job, await loadPrivateKey('keys/operator.key')));
 * ```
 */
export function signJob(job: Job, key: KeyObject): SignedJob {
  const body = JSON.stringify(JobSchema.parse(job));
  return { body, keyId: keyId(key), sig: sign(null, Buffer.from(body), key).toString('base64') };
}

export type JobCheck = { ok: true; job: Job } | { ok: false; reason: string; job?: string };

function decodeJson(bytes: Uint8Array, what: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  if (bytes.byteLength > MAX_JOB_MESSAGE_BYTES) return { ok: false, reason: `${what}: ${bytes.byteLength} bytes, expected at most ${MAX_JOB_MESSAGE_BYTES}` };
  try {
    return { ok: true, value: JSON.parse(Buffer.from(bytes).toString('utf8')) };
  } catch {
    return { ok: false, reason: `${what}: not JSON` };
  }
}

function issues(e: z.ZodError): string {
  return e.issues
    .slice(0, 3)
    .map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`)
    .join('; ');
}

/** The job id inside a signed body, for a rejection report (the body is not trusted yet). */
function jobIdOf(body: string): string | undefined {
  try {
    const j = (JSON.parse(body) as { job?: unknown }).job;
    return typeof j === 'string' && id.safeParse(j).success ? j : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Read a job/desired payload and check it: shape, signature by a key `trust` holds (not
 * revoked), and that it names this device. Never throws; the reason says what to fix.
 *
 * @example
 * ```ts
 * import { checkSignedJob } from 'edgeexit/agent';
 * import { loadTrustStore } from 'edgeexit/bundle';
 * const r = checkSignedJob(message.payload, await loadTrustStore(dir), { fleet: 'lab', device: 'pi-07' });
 * if (!r.ok) console.error(r.reason);
 * ```
 */
export function checkSignedJob(bytes: Uint8Array, trust: TrustStore, me: { fleet: string; device: string }): JobCheck {
  const json = decodeJson(bytes, 'job/desired');
  if (!json.ok) return json;
  const env = SignedJobSchema.safeParse(json.value);
  if (!env.success) return { ok: false, reason: `job/desired: expected {body, keyId, sig}: ${issues(env.error)}` };
  const jobId = jobIdOf(env.data.body);
  const tag = jobId ? { job: jobId } : {};
  const found = lookupKey(trust, env.data.keyId);
  if (found.status === 'revoked') return { ok: false, reason: `job signed by revoked key ${env.data.keyId}; sign it with a trusted operator key`, ...tag };
  if (found.status === 'unknown') return { ok: false, reason: `job signed by key ${env.data.keyId}, which this device does not trust (trust store ${trust.dir}); add the operator's .pub with \`edgeexit trust add\``, ...tag };
  const pub = found.key.key.type === 'private' ? createPublicKey(found.key.key) : found.key.key;
  if (!verify(null, Buffer.from(env.data.body), pub, Buffer.from(env.data.sig, 'base64'))) {
    return { ok: false, reason: `job signature does not match its body (changed after signing by ${env.data.keyId}); publish it again with \`edgeexit flash\``, ...tag };
  }
  const parsed = JobSchema.safeParse(JSON.parse(env.data.body));
  if (!parsed.success) return { ok: false, reason: `job body: ${issues(parsed.error)}`, ...tag };
  const j = parsed.data;
  if (j.fleet !== me.fleet || j.device !== me.device) return { ok: false, reason: `job is for ${j.fleet}/${j.device}, this device is ${me.fleet}/${me.device}; flash it with --to ${me.fleet}/${me.device}`, job: j.job };
  return { ok: true, job: j };
}

/**
 * Read a job/state payload (an operator or collector reading devices' reports); undefined when it is not one.
 *
 * @example
 * ```ts
 * import { decodeJobState } from 'edgeexit/agent';
 * const s = decodeJobState(message.payload); // { job, state: 'succeeded', … } | undefined
 * ```
 */
export function decodeJobState(bytes: Uint8Array): JobStateReport | undefined {
  const json = decodeJson(bytes, 'job/state');
  if (!json.ok) return undefined;
  const r = JobStateSchema.safeParse(json.value);
  return r.success ? r.data : undefined;
}

/**
 * The job inside a signed job/desired payload WITHOUT checking its signature (the operator's own
 * tools listing what they published); undefined when it is not one.
 *
 * @example
 * ```ts
 * import { peekJob } from 'edgeexit/agent';
 * peekJob(message.payload)?.model.version; // '1.1.0'
 * ```
 */
export function peekJob(bytes: Uint8Array): Job | undefined {
  const json = decodeJson(bytes, 'job/desired');
  if (!json.ok) return undefined;
  const env = SignedJobSchema.safeParse(json.value);
  if (!env.success) return undefined;
  try {
    const r = JobSchema.safeParse(JSON.parse(env.data.body));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
