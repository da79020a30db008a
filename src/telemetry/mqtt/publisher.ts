// Device-side telemetry publisher, Sparkplug-like: every connection attempt takes a new bdSeq
// (persisted before CONNECT so a restart never reuses one), carries a death certificate with that
// bdSeq as its last will, publishes a birth (seq 0) once connected, then drains the persistent
// outbox in order with QoS 1.
//
// End-to-end delivery: a window leaves the outbox only when the COLLECTOR says it stored it, not
// on the broker's PUBACK. A PUBACK says the broker took the message; the broker may still lose it
// (killed without persistence, its queue for the collector full, the collector killed after
// receiving it but before its batch committed). So after each commit the collector publishes the
// stored ids on `edgeexit/v1/<fleet>/<device>/ack`, which this publisher subscribes to. At most
// `maxInflight` windows are out unacknowledged; one not acknowledged within `ackTimeoutMs` is sent
// again, and so is everything unacknowledged after a reconnect, each time with the same `id` and a
// new seq, so delivery is at least once and the collector de-duplicates on (device, id) (and acks
// the duplicate too). The other design, the collector holding back its PUBACK until the commit,
// only moves the problem into the broker: a broker restarted without persistence forgets the
// message and the device, PUBACKed long ago, has nothing left to resend. The window bound on the
// outbox still holds: beyond it the oldest windows are dropped and counted (droppedWindows).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { InputError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/fs.js';
import { Outbox, type OutboxOptions } from '../outbox.js';
import {
  MAX_PAYLOAD_BYTES,
  checkId,
  checkSize,
  decodeAck,
  encodePayload,
  topicFor,
  validateMetricsBody,
  type Birth,
  type MetricsWindowBody,
} from '../payloads.js';
import { connectMqtt, type MqttConnection, type MqttTls } from './client.js';

export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Fraction of each delay drawn at random: delay × (1 − jitter × r), r ∈ [0, 1). */
  jitter: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

/**
 * Delay before retry number `attempt` (0-based): exponential, capped, with jitter so a fleet does not reconnect in lockstep.
 *
 * @example
 * ```ts
 * import { backoffDelay } from 'edgeexit/telemetry';
 * backoffDelay(0); // 250–500 ms
 * backoffDelay(10); // capped: 15–30 s
 * ```
 */
export function backoffDelay(attempt: number, b: Backoff = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const base = Math.min(b.maxMs, b.initialMs * b.factor ** Math.min(attempt, 60));
  return Math.round(base * (1 - b.jitter * random()));
}

/** Birth fields the device supplies; the publisher adds device, fleet, bdSeq, seq and at. */
export type BirthInfo = Pick<Birth, 'profile' | 'bundle' | 'runtime'>;

/** A window as the device produces it; droppedWindows is filled from the outbox. */
export type WindowInput = Omit<MetricsWindowBody, 'droppedWindows' | 'device'>;

export interface PublisherOptions {
  url: string;
  fleet: string;
  device: string;
  /** Holds `bdseq.json` and the outbox (`outbox/`). */
  stateDir: string;
  birth: BirthInfo;
  clientId?: string;
  username?: string;
  password?: string;
  tls?: MqttTls;
  /** 4, 5 or 'auto' (default: 5, else 3.1.1; what a first connection settles on is kept for reconnects). */
  protocolVersion?: 4 | 5 | 'auto';
  keepaliveS?: number;
  connectTimeoutMs?: number;
  backoff?: Partial<Backoff>;
  /** Windows sent and not yet acknowledged by the collector, at most (default 32). */
  maxInflight?: number;
  /** A window the collector has not acknowledged this long after it was sent is sent again (default 10 000 ms). */
  ackTimeoutMs?: number;
  outbox?: OutboxOptions;
  maxPayloadBytes?: number;
  /** Told about every failed attempt or publish; the publisher itself keeps retrying. */
  onError?: (err: unknown) => void;
  /** Told which outbox ids the collector acknowledged (stored) and in which session, once they are removed on disk. */
  onAck?: (ids: number[], bdSeq: number) => void;
  now?: () => number;
  random?: () => number;
}

export interface PublisherStats {
  connected: boolean;
  bdSeq: number;
  /** Connections that reached CONNACK. */
  sessions: number;
  published: number;
  /** Windows the collector acknowledged. */
  acked: number;
  /** Windows sent again because no ack came within ackTimeoutMs (reconnects not counted). */
  resent: number;
  queued: number;
  dropped: number;
}

/**
 * The device-side publisher (see the header): birth on every connect, the last will as death,
 * windows from the persistent outbox with QoS 1, reconnecting with backoff. DeviceTelemetry
 * builds one; use it directly to publish windows you aggregate yourself.
 *
 * @example
 * ```ts
 * import { TelemetryPublisher } from 'edgeexit/telemetry';
 * const pub = await TelemetryPublisher.start({
 *   url: 'mqtt://broker.local', fleet: 'lab', device: 'pi-07', stateDir: '.edgeexit/agent/pi-07',
 *   birth: { profile: 'rpi4', bundle: { name: 'fmnist-branchy', version: '1.0.0', manifestSha256: sha, precision: 'int8', thresholds: [0.9, 0.9] }, runtime: { edgeexit: '0.1.0', node: process.versions.node } },
 * });
 * await pub.enqueueWindow(window); // a WindowInput; kept on disk until the collector acknowledges it (stored)
 * await pub.drained();
 * await pub.close();
 * ```
 */
export class TelemetryPublisher {
  private conn: MqttConnection | undefined;
  private bdSeq = -1;
  private seq = 0;
  private closing = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private readonly backoff: Backoff;
  private readonly stats = { sessions: 0, published: 0, acked: 0, resent: 0 };
  private readonly bdSeqFile: string;
  private readonly idleWaiters: (() => void)[] = [];
  // Negotiated once: reconnects then skip the refused MQTT 5 CONNECT.
  private protocolVersion: 4 | 5 | 'auto' | undefined;

  private constructor(
    private readonly opts: PublisherOptions,
    readonly outbox: Outbox<MetricsWindowBody>,
    lastBdSeq: number,
  ) {
    this.bdSeq = lastBdSeq;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.bdSeqFile = path.join(opts.stateDir, 'bdseq.json');
  }

  /** Open the state (bdSeq, outbox) and start connecting in the background. */
  static async start(opts: PublisherOptions): Promise<TelemetryPublisher> {
    checkId('fleet', opts.fleet);
    checkId('device', opts.device);
    await fsp.mkdir(opts.stateDir, { recursive: true });
    const last = await readBdSeq(path.join(opts.stateDir, 'bdseq.json'));
    // A new outbox starts its ids at the clock (µs since 1970), not at 0: the collector
    // de-duplicates on (device, id), so a device whose state folder was wiped would otherwise
    // resend ids it already stored and see its new windows dropped as duplicates. Ids stay far
    // below 2^53; a device that boots with its clock in 1970 falls back to the old behaviour.
    const outbox = await Outbox.open<MetricsWindowBody>(path.join(opts.stateDir, 'outbox'), { firstId: Date.now() * 1000, ...opts.outbox });
    const p = new TelemetryPublisher(opts, outbox, last);
    p.loop = p.run();
    return p;
  }

  /** Validate, size-check and persist a window; it goes out when connected. Resolves with its id. */
  async enqueueWindow(w: WindowInput): Promise<number> {
    if (this.closing) throw new InputError('publisher is closed');
    const body = validateMetricsBody({ ...w, device: this.opts.device, droppedWindows: this.outbox.dropped });
    // Room for the stamped id/bdSeq/seq fields, so a window accepted here is never refused on send.
    checkSize(Buffer.byteLength(JSON.stringify(body), 'utf8') + 64, 'metrics', this.opts.maxPayloadBytes ?? MAX_PAYLOAD_BYTES);
    const id = await this.outbox.enqueue(body);
    this.wake?.();
    return id;
  }

  getStats(): PublisherStats {
    return {
      connected: this.conn !== undefined && !this.conn.closed,
      bdSeq: this.bdSeq,
      sessions: this.stats.sessions,
      published: this.stats.published,
      acked: this.stats.acked,
      resent: this.stats.resent,
      queued: this.outbox.size(),
      dropped: this.outbox.dropped,
    };
  }

  /** Resolves once the outbox is empty (everything acknowledged by the collector, or dropped). */
  drained(): Promise<void> {
    if (this.outbox.size() === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Cut the socket without DISCONNECT (the broker publishes the will); the publisher reconnects. */
  dropConnection(): void {
    this.conn?.abort();
  }

  /** Publish a clean death, disconnect and close the outbox; unacked windows stay for the next start. */
  async close(): Promise<void> {
    if (this.closing) return this.loop;
    this.closing = true;
    this.wake?.();
    await this.loop;
    await this.outbox.close();
  }

  private topic(kind: 'birth' | 'death' | 'metrics' | 'ack'): string {
    return topicFor(this.opts.fleet, this.opts.device, kind);
  }

  private nextSeq(): number {
    const s = this.seq;
    this.seq++;
    return s;
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.closing) {
      // Persist first: a will that reached the broker must never share its bdSeq with a later session.
      const bdSeq = this.bdSeq + 1;
      let conn: MqttConnection | undefined;
      try {
        await writeFileAtomic(this.bdSeqFile, JSON.stringify({ bdSeq }) + '\n');
        this.bdSeq = bdSeq;
        conn = await connectMqtt({
          url: this.opts.url,
          clientId: this.opts.clientId ?? `edgeexit-${this.opts.fleet}-${this.opts.device}`,
          username: this.opts.username,
          password: this.opts.password,
          tls: this.opts.tls,
          protocolVersion: this.protocolVersion ?? this.opts.protocolVersion,
          keepaliveS: this.opts.keepaliveS,
          connectTimeoutMs: this.opts.connectTimeoutMs,
          will: { topic: this.topic('death'), payload: encodePayload('death', { device: this.opts.device, bdSeq, clean: false }), qos: 1 },
        });
      } catch (err) {
        this.opts.onError?.(err);
      }
      if (conn) {
        attempt = 0;
        this.protocolVersion = conn.protocolVersion;
        this.conn = conn;
        this.stats.sessions++;
        this.seq = 0;
        conn.onClose(() => this.wake?.());
        try {
          await this.session(conn, bdSeq);
        } catch (err) {
          if (!conn.closed) this.opts.onError?.(err);
        }
        if (this.closing && !conn.closed) {
          try {
            await conn.publish(this.topic('death'), encodePayload('death', { device: this.opts.device, bdSeq, clean: true }), { qos: 1 });
          } catch (err) {
            this.opts.onError?.(err);
          }
          await conn.end();
        } else if (!conn.closed) {
          conn.abort();
        }
        this.conn = undefined;
      }
      if (this.closing) break;
      await this.sleep(backoffDelay(attempt++, this.backoff, this.opts.random));
    }
  }

  private async session(conn: MqttConnection, bdSeq: number): Promise<void> {
    const now = this.opts.now ?? Date.now;
    // id → when it was last sent (monotonic clock); acks of earlier sessions still count.
    const inflight = new Map<number, number>();
    const ackTopic = this.topic('ack');
    conn.onMessage((m) => {
      if (m.topic === ackTopic) this.collectorAck(m.payload, bdSeq, inflight);
    });
    // Subscribed before the first window goes out, so no ack can pass by unseen.
    await conn.subscribe(ackTopic, 1);
    const birth: Birth = { device: this.opts.device, fleet: this.opts.fleet, bdSeq, seq: this.nextSeq(), ...this.opts.birth, at: now() };
    await conn.publish(this.topic('birth'), encodePayload('birth', birth), { qos: 1 });
    const limit = this.opts.maxPayloadBytes ?? MAX_PAYLOAD_BYTES;
    const maxInflight = Math.max(1, this.opts.maxInflight ?? 32);
    const ackTimeoutMs = this.opts.ackTimeoutMs ?? 10_000;
    while (!this.closing && !conn.closed) {
      const t = performance.now();
      for (const [id, sentAt] of inflight) {
        if (!this.outbox.has(id)) inflight.delete(id);
        else if (t - sentAt >= ackTimeoutMs) {
          inflight.delete(id);
          this.stats.resent++;
        }
      }
      const room = maxInflight - inflight.size;
      const batch = room > 0 ? this.outbox.peek(inflight.size + room).filter((e) => !inflight.has(e.id)).slice(0, room) : [];
      if (batch.length === 0) {
        if (this.outbox.size() === 0) for (const w of this.idleWaiters.splice(0)) w();
        const oldest = Math.min(...inflight.values());
        await this.waitFor(inflight.size > 0 ? oldest + ackTimeoutMs - t : undefined, () => this.closing || conn.closed || (inflight.size < maxInflight && this.outbox.size() > inflight.size));
        continue;
      }
      // Marked before sending: the ack can come back before the PUBACK is handled.
      for (const e of batch) inflight.set(e.id, t);
      // Published back to back over one connection, so the broker receives them in outbox order.
      const sends = batch.map((e) => {
        const payload = encodePayload('metrics', { id: e.id, bdSeq, seq: this.nextSeq(), ...e.body }, limit);
        this.stats.published++;
        return conn.publish(this.topic('metrics'), payload, { qos: 1 });
      });
      // The PUBACKs only pace the sending; the outbox waits for the collector's ack.
      const failed = (await Promise.allSettled(sends)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
  }

  /** The collector stored these windows: remove them from the outbox (on disk) and make room to send more. */
  private collectorAck(payload: Buffer, bdSeq: number, inflight: Map<number, number>): void {
    const ack = decodeAck(payload);
    if (!ack) return void this.opts.onError?.(new InputError(`${this.topic('ack')}: not an ack payload ({"ids": [...]}); ignored`));
    this.outbox.ack(ack.ids).then(
      (removed) => {
        for (const id of ack.ids) inflight.delete(id);
        if (removed.length > 0) {
          this.stats.acked += removed.length;
          this.opts.onAck?.(removed, bdSeq);
        }
        if (this.outbox.size() === 0) for (const w of this.idleWaiters.splice(0)) w();
        this.wake?.();
      },
      (err: unknown) => this.opts.onError?.(err),
    );
  }

  /** Wait until woken with `ready()` true, or `ms` passed (no limit when undefined). */
  private async waitFor(ms: number | undefined, ready: () => boolean): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(resolve, Math.max(0, ms));
      this.wake = () => {
        if (!ready()) return;
        clearTimeout(timer);
        resolve();
      };
      if (ready()) this.wake();
    });
    this.wake = undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = () => (this.closing ? done() : undefined);
    });
  }
}

async function readBdSeq(file: string): Promise<number> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return -1;
    throw err;
  }
  const v = (JSON.parse(text) as { bdSeq?: unknown }).bdSeq;
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new InputError(`${file}: bdSeq must be a non-negative integer, got ${text.trim()}`);
  return v as number;
}
