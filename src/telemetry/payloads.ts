// Telemetry wire format: one zod schema per MQTT message kind, shared by the device (publisher)
// and the collector, plus the topic namespace `edgeexit/v1/<fleet>/<device>/<kind>`. Payloads are
// JSON (readable with any MQTT client, no codegen on the device), bounded in size so one broken
// window cannot exceed broker limits, and validated on both ends with errors that name the field.
//
// De-duplication key: every metrics window carries `id`, the outbox entry id, which is assigned once
// at enqueue and survives restarts and resends; (device, id) is exact. (bdSeq, seq) identify one
// transmission (Sparkplug-style gap detection) and change when a window is resent.
//
// seq counts up from 0 in each session without wrapping (it was 8-bit: a burst of thousands of
// lost messages then read as a few hundred). The collector still takes 0–255 wrapping from
// devices of before, and reads a step back within a session as such a wrap.
//
// Acknowledgements go the other way: after a batch commits, the collector publishes `{ ids }` on
// `edgeexit/v1/<fleet>/<device>/ack` (QoS 1), naming the windows it stored (or refused for good
// and counted); only then does the device drop them from its outbox (see publisher.ts).
import { z } from 'zod';
import { InputError, ValidationError, show, type Problem } from '../util/errors.js';
import type { EnergyMeterKind } from './energy/index.js';

/** Brokers default to larger limits; 64 KiB keeps a window well clear of any of them. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;

export const TOPIC_ROOT = 'edgeexit/v1';

// Wildcards and separators would turn a publish topic into a filter or shift the levels; `$` at
// the start would put it in the broker's system namespace.
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const idSchema = z
  .string()
  .regex(ID_RE, 'an id of 1–64 characters [A-Za-z0-9._-] starting with a letter or digit (no "+", "#", "/")');

const uint = z.number().int().nonnegative();
const epochMs = uint.describe('Unix time in milliseconds');
const seq8 = uint.max(Number.MAX_SAFE_INTEGER).describe('per-session message sequence from 0 (devices before seq widening wrap at 255)');

const METER_KINDS = ['ina3221-iio', 'ina3221-hwmon', 'rpi5-pmic', 'rapl', 'nvml', 'model'] as const satisfies readonly EnergyMeterKind[];
// Fails to compile when energy/ grows a meter kind that the wire format does not list.
type _MeterKindsComplete = Exclude<EnergyMeterKind, (typeof METER_KINDS)[number]> extends never ? true : never;
const _meterKindsComplete: _MeterKindsComplete = true;
void _meterKindsComplete;

const quantiles = z.strictObject({ p50: z.number().nonnegative(), p95: z.number().nonnegative(), p99: z.number().nonnegative() });

export const BirthSchema = z.strictObject({
  device: idSchema,
  fleet: idSchema,
  bdSeq: uint,
  seq: seq8,
  profile: z.string().min(1).describe('device profile id in use'),
  bundle: z.strictObject({
    name: z.string().min(1),
    version: z.string().min(1),
    manifestSha256: z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex digits'),
    precision: z.enum(['fp32', 'fp16', 'int8']),
    thresholds: z.array(z.number()),
  }),
  runtime: z.strictObject({ edgeexit: z.string().min(1), node: z.string().min(1), onnxruntime: z.string().min(1).optional() }),
  at: epochMs,
});
export type Birth = z.infer<typeof BirthSchema>;

/** `clean` is false in the last will (the broker saw the connection die) and true from close(). */
export const DeathSchema = z.strictObject({ device: idSchema, bdSeq: uint, clean: z.boolean() });
export type Death = z.infer<typeof DeathSchema>;

/** What the device produces per window; the publisher stamps id, bdSeq and seq when sending. */
const metricsFields = {
  device: idSchema,
  windowStart: epochMs,
  windowEnd: epochMs,
  count: uint,
  exitHistogram: z.array(uint).min(1).describe('inferences that left at exit k'),
  latencyMs: z.strictObject({ endToEnd: quantiles, stages: z.array(quantiles) }),
  energy: z.strictObject({
    joules: z.number().nonnegative(),
    meanWatts: z.number().nonnegative(),
    source: z.enum(['sensor', 'model']),
    meter: z.enum(METER_KINDS),
  }),
  temperatureC: z.number().optional(),
  accuracy: z.strictObject({ correct: uint, labelled: uint }).optional(),
  droppedWindows: uint.describe('cumulative count of windows the outbox discarded when full'),
};

type MetricsFields = z.infer<z.ZodObject<typeof metricsFields>>;

function checkWindow(w: MetricsFields, ctx: z.core.$RefinementCtx<MetricsFields>): void {
    if (w.windowEnd < w.windowStart)
      ctx.addIssue({ code: 'custom', path: ['windowEnd'], message: `windowEnd ≥ windowStart (${w.windowStart})`, input: w.windowEnd });
    const sum = w.exitHistogram.reduce((a, b) => a + b, 0);
    if (sum !== w.count) ctx.addIssue({ code: 'custom', path: ['exitHistogram'], message: `counts summing to count (${w.count})`, input: `sum ${sum}` });
    if (w.accuracy && w.accuracy.correct > w.accuracy.labelled)
      ctx.addIssue({ code: 'custom', path: ['accuracy', 'correct'], message: `≤ labelled (${w.accuracy.labelled})`, input: w.accuracy.correct });
}

export const MetricsWindowBodySchema = z.strictObject(metricsFields).superRefine(checkWindow);
export type MetricsWindowBody = z.infer<typeof MetricsWindowBodySchema>;

export const MetricsWindowSchema = z
  .strictObject({ id: uint.describe('outbox entry id: the exact de-duplication key with device'), bdSeq: uint, seq: seq8, ...metricsFields })
  .superRefine(checkWindow);
export type MetricsWindow = z.infer<typeof MetricsWindowSchema>;

export const PAYLOAD_SCHEMAS = { birth: BirthSchema, death: DeathSchema, metrics: MetricsWindowSchema } as const;
export type PayloadKind = keyof typeof PAYLOAD_SCHEMAS;
export type PayloadOf<K extends PayloadKind> = z.infer<(typeof PAYLOAD_SCHEMAS)[K]>;

/**
 * A payload over the size limit; refused before it reaches the outbox or the broker.
 *
 * @example
 * ```ts
 * import { PayloadTooLargeError, encodePayload } from 'edgeexit/telemetry';
 * try {
 *   encodePayload('metrics', window, 1024);
 * } catch (err) {
 *   if (err instanceof PayloadTooLargeError) console.error(err.message);
 * }
 * ```
 */
export class PayloadTooLargeError extends InputError {}

function pathOf(p: readonly PropertyKey[]): string {
  return p.map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`)).join('').replace(/^\./, '') || '(root)';
}

function valueAt(root: unknown, p: readonly PropertyKey[]): unknown {
  let v = root;
  for (const k of p) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

function issuesToProblems(where: string, issues: readonly z.core.$ZodIssue[], input: unknown): Problem[] {
  return issues.map((i) => {
    const at = pathOf(i.path);
    if (i.code === 'unrecognized_keys') return { where: `${where}: ${at}`, expected: 'only known fields', got: i.keys.join(', '), fix: 'remove them' };
    const got = i.code === 'custom' && 'input' in i ? show(i.input) : show(valueAt(input, i.path));
    // zod's own message is "Invalid input: expected number, received string"; keep the expected part.
    const expected = i.code === 'invalid_type' ? i.expected : i.message.replace(/^Invalid input: /, '').replace(/, received .*$/, '');
    return { where: `${where}: ${at}`, expected, got };
  });
}

/**
 * Validate `value` as a `kind` payload; ValidationError lists every problem with path, expected and got.
 *
 * @example
 * ```ts
 * import { validatePayload } from 'edgeexit/telemetry';
 * const death = validatePayload('death', { device: 'pi-07', bdSeq: 3, clean: true });
 * ```
 */
export function validatePayload<K extends PayloadKind>(kind: K, value: unknown, where: string = kind): PayloadOf<K> {
  const r = PAYLOAD_SCHEMAS[kind].safeParse(value);
  if (!r.success) throw new ValidationError(where, issuesToProblems(where, r.error.issues, value));
  return r.data as PayloadOf<K>;
}

/**
 * Validate a metrics window without its session fields (bdSeq, seq), as the outbox stores it;
 * ValidationError lists every problem.
 *
 * @example
 * ```ts
 * import { validateMetricsBody } from 'edgeexit/telemetry';
 * const body = validateMetricsBody(JSON.parse(line), 'outbox entry 12');
 * ```
 */
export function validateMetricsBody(value: unknown, where = 'metrics window'): MetricsWindowBody {
  const r = MetricsWindowBodySchema.safeParse(value);
  if (!r.success) throw new ValidationError(where, issuesToProblems(where, r.error.issues, value));
  return r.data;
}

export function checkSize(bytes: number, where: string, limit = MAX_PAYLOAD_BYTES): void {
  if (bytes > limit)
    throw new PayloadTooLargeError(`${where}: payload is ${bytes} bytes, over the ${limit}-byte limit`, [
      { where, expected: `≤ ${limit} bytes`, got: `${bytes} bytes`, fix: 'send fewer stages/exits per window or shorten the window' },
    ]);
}

/**
 * Validate and serialise; refuses payloads over `limit` bytes.
 *
 * @example
 * ```ts
 * import { encodePayload, topicFor } from 'edgeexit/telemetry';
 * await conn.publish(topicFor('lab', 'pi-07', 'death'), encodePayload('death', { device: 'pi-07', bdSeq: 3, clean: true }), { qos: 1 });
 * ```
 */
export function encodePayload<K extends PayloadKind>(kind: K, value: PayloadOf<K>, limit = MAX_PAYLOAD_BYTES): Buffer {
  const valid = validatePayload(kind, value);
  const buf = Buffer.from(JSON.stringify(valid), 'utf8');
  checkSize(buf.length, kind, limit);
  return buf;
}

/**
 * Parse bytes from the wire (the collector's side); InputError for non-JSON, ValidationError for schema failures.
 *
 * @example
 * ```ts
 * import { decodePayload, parseTopic } from 'edgeexit/telemetry';
 * const t = parseTopic(message.topic);
 * if (t?.kind === 'metrics') console.log(t.device, decodePayload('metrics', message.payload).latencyMs.endToEnd.p95);
 * ```
 */
export function decodePayload<K extends PayloadKind>(kind: K, bytes: Uint8Array | string, limit = MAX_PAYLOAD_BYTES): PayloadOf<K> {
  // The wire size, checked before decoding so an oversized payload is never turned into a string.
  checkSize(typeof bytes === 'string' ? Buffer.byteLength(bytes, 'utf8') : bytes.byteLength, kind, limit);
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InputError(`${kind}: payload is not JSON (${(err as Error).message})`, [], { cause: err });
  }
  // Metrics are nearly all of the collector's traffic and zod costs ~20 µs a window; the fast
  // check below accepts only what the schema accepts, and anything it is unsure of goes to zod.
  if (kind === 'metrics' && isPlainValidMetricsWindow(json)) return json as PayloadOf<K>;
  return validatePayload(kind, json);
}

const METRICS_KEYS = new Set(['id', 'bdSeq', 'seq', 'device', 'windowStart', 'windowEnd', 'count', 'exitHistogram', 'latencyMs', 'energy', 'temperatureC', 'accuracy', 'droppedWindows']);
const isUint = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isNonNeg = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
function hasOnlyKeys(o: Record<string, unknown>, keys: readonly string[]): boolean {
  const own = Object.keys(o);
  return own.length === keys.length && keys.every((k) => Object.hasOwn(o, k));
}
const isQuantiles = (v: unknown): boolean => isObj(v) && hasOnlyKeys(v, ['p50', 'p95', 'p99']) && isNonNeg(v.p50) && isNonNeg(v.p95) && isNonNeg(v.p99);

/**
 * True only for a JSON value that MetricsWindowSchema accepts unchanged (a conservative subset:
 * false sends the value through zod, which then accepts it or names every problem). Kept in step
 * with metricsFields and checkWindow; test/telemetry/mqtt/payloads-fast.test.ts compares the two.
 */
export function isPlainValidMetricsWindow(v: unknown): boolean {
  if (!isObj(v)) return false;
  for (const k of Object.keys(v)) if (!METRICS_KEYS.has(k)) return false;
  if (!isUint(v.id) || !isUint(v.bdSeq) || !isUint(v.windowStart) || !isUint(v.windowEnd) || !isUint(v.count) || !isUint(v.droppedWindows)) return false;
  if (!isUint(v.seq)) return false;
  if (typeof v.device !== 'string' || !ID_RE.test(v.device)) return false;
  if (v.windowEnd < v.windowStart) return false;
  const h = v.exitHistogram;
  if (!Array.isArray(h) || h.length === 0) return false;
  let sum = 0;
  for (const n of h) {
    if (!isUint(n)) return false;
    sum += n;
  }
  if (sum !== v.count) return false;
  const l = v.latencyMs;
  if (!isObj(l) || !hasOnlyKeys(l, ['endToEnd', 'stages']) || !isQuantiles(l.endToEnd) || !Array.isArray(l.stages) || !l.stages.every(isQuantiles)) return false;
  const e = v.energy;
  if (!isObj(e) || !hasOnlyKeys(e, ['joules', 'meanWatts', 'source', 'meter']) || !isNonNeg(e.joules) || !isNonNeg(e.meanWatts)) return false;
  if (e.source !== 'sensor' && e.source !== 'model') return false;
  if (!(METER_KINDS as readonly unknown[]).includes(e.meter)) return false;
  if (Object.hasOwn(v, 'temperatureC') && !(typeof v.temperatureC === 'number' && Number.isFinite(v.temperatureC))) return false;
  if (Object.hasOwn(v, 'accuracy')) {
    const a = v.accuracy;
    if (!isObj(a) || !hasOnlyKeys(a, ['correct', 'labelled']) || !isUint(a.correct) || !isUint(a.labelled) || a.correct > a.labelled) return false;
  }
  return true;
}

// ---- topics ----

export type TopicKind = 'birth' | 'death' | 'metrics' | 'ack' | `job/${string}`;

/** Most window ids in one ack message (the collector splits larger ones). */
export const MAX_ACK_IDS = 1000;

/** The collector's acknowledgement on `…/<device>/ack`: these windows are stored (or refused and counted). */
export const AckSchema = z.strictObject({ ids: z.array(uint).min(1).max(MAX_ACK_IDS) });
export type Ack = z.infer<typeof AckSchema>;

/**
 * Read an ack payload; undefined for anything that is not one (a device ignores it).
 *
 * @example
 * ```ts
 * import { decodeAck } from 'edgeexit/telemetry';
 * decodeAck(Buffer.from('{"ids":[17,18]}')); // { ids: [17, 18] }
 * ```
 */
export function decodeAck(bytes: Uint8Array): Ack | undefined {
  if (bytes.byteLength > MAX_PAYLOAD_BYTES) return undefined;
  try {
    const r = AckSchema.safeParse(JSON.parse(Buffer.from(bytes).toString('utf8')));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

export interface ParsedTopic {
  fleet: string;
  device: string;
  kind: TopicKind;
}

export function checkId(what: 'fleet' | 'device', id: string): void {
  if (!ID_RE.test(id))
    throw new InputError(`${what} id ${show(id)} is not usable in an MQTT topic`, [
      { where: what, expected: '1–64 characters [A-Za-z0-9._-], starting with a letter or digit', got: show(id), fix: 'rename it without "+", "#", "/" or spaces' },
    ]);
}

/**
 * The topic a device publishes `kind` on: `edgeexit/v1/<fleet>/<device>/<kind>`; refuses ids
 * that are not topic-safe.
 *
 * @example
 * ```ts
 * import { topicFor } from 'edgeexit/telemetry';
 * topicFor('lab', 'pi-07', 'metrics'); // 'edgeexit/v1/lab/pi-07/metrics'
 * ```
 */
export function topicFor(fleet: string, device: string, kind: TopicKind): string {
  checkId('fleet', fleet);
  checkId('device', device);
  if (kind.startsWith('job/') && (kind.length === 4 || /[+#]/.test(kind))) throw new InputError(`job topic ${show(kind)} needs a name without wildcards`);
  return `${TOPIC_ROOT}/${fleet}/${device}/${kind}`;
}

/**
 * The topic's parts, or undefined when it is not in the edgeexit namespace.
 *
 * @example
 * ```ts
 * import { parseTopic } from 'edgeexit/telemetry';
 * parseTopic('edgeexit/v1/lab/pi-07/birth'); // { fleet: 'lab', device: 'pi-07', kind: 'birth' }
 * parseTopic('other/topic'); // undefined
 * ```
 */
export function parseTopic(topic: string): ParsedTopic | undefined {
  const parts = topic.split('/');
  if (parts.length < 5 || parts[0] !== 'edgeexit' || parts[1] !== 'v1') return undefined;
  const [, , fleet, device, kind, ...rest] = parts as [string, string, string, string, string, ...string[]];
  if (!ID_RE.test(fleet) || !ID_RE.test(device)) return undefined;
  if ((kind === 'birth' || kind === 'death' || kind === 'metrics' || kind === 'ack') && rest.length === 0) return { fleet, device, kind };
  if (kind === 'job' && rest.length > 0 && rest.every((r) => r.length > 0)) return { fleet, device, kind: `job/${rest.join('/')}` };
  return undefined;
}

/**
 * Filter for a collector: one fleet, or every fleet.
 *
 * @example
 * ```ts
 * import { subscriptionFor } from 'edgeexit/telemetry';
 * subscriptionFor(); // 'edgeexit/v1/+/+/#'
 * subscriptionFor('lab'); // 'edgeexit/v1/lab/+/#'
 * ```
 */
export function subscriptionFor(fleet?: string): string {
  if (fleet !== undefined) checkId('fleet', fleet);
  return `${TOPIC_ROOT}/${fleet ?? '+'}/+/#`;
}
