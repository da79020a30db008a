// End-to-end against a real Mosquitto started by the test: topics and payloads, the last will,
// a broker outage and a publisher restart, checked by a second MQTT client subscribing.
import { promises as fsp } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  TelemetryPublisher,
  backoffDelay,
  connectMqtt,
  decodePayload,
  parseTopic,
  subscriptionFor,
  topicFor,
  type MqttConnection,
  type MqttMessage,
  type PublisherOptions,
} from '../../../src/telemetry/index.js';
import { MOSQUITTO, startBroker, startGate, type Broker } from './broker.js';
import { BIRTH_INFO, tempDir, windowInput } from './fixtures.js';

interface Seen {
  kind: string;
  body: Record<string, unknown>;
}

/**
 * A collector stand-in: records every message under edgeexit/v1/lab/#, decoded and validated, and
 * acks each metrics window on the device's ack topic as the collector does once it stored it
 * (the publisher keeps a window until then).
 */
class Recorder {
  readonly seen: Seen[] = [];
  conn: MqttConnection | undefined;
  constructor(private readonly url: string, private readonly clientId = `rec-${Math.random().toString(36).slice(2)}`) {}
  async connect(persistent = false): Promise<void> {
    this.conn = await connectMqtt({
      url: this.url,
      clientId: this.clientId,
      protocolVersion: 4,
      persistentSession: persistent,
      onMessage: (m) => this.record(m),
    });
    await this.conn.subscribe(subscriptionFor('lab'), 1);
  }
  private record(m: MqttMessage): void {
    const t = parseTopic(m.topic);
    if (!t) throw new Error(`unexpected topic ${m.topic}`);
    if (t.kind === 'ack') return; // its own acks, back through the wildcard subscription
    const kind = t.kind as 'birth' | 'death' | 'metrics';
    const body = decodePayload(kind, m.payload) as Record<string, unknown>;
    this.seen.push({ kind, body });
    if (kind === 'metrics') void this.conn?.publish(topicFor(t.fleet, t.device, 'ack'), Buffer.from(JSON.stringify({ ids: [body.id] })), { qos: 1 }).catch(() => undefined);
  }
  of(kind: string): Record<string, unknown>[] {
    return this.seen.filter((s) => s.kind === kind).map((s) => s.body);
  }
  async until(pred: () => boolean, ms = 20_000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out; seen ${JSON.stringify(this.seen.map((s) => [s.kind, s.body.bdSeq, s.body.id]))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  async close(): Promise<void> {
    await this.conn?.end();
  }
}

const FAST = { initialMs: 100, maxMs: 400, factor: 2, jitter: 0.5 };

describe('backoffDelay', () => {
  it('grows exponentially, is capped and jittered downwards', () => {
    const b = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
    expect([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, b, () => 0))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(2, b, () => 0.999)).toBeGreaterThanOrEqual(200);
    expect(backoffDelay(2, b, () => 0.999)).toBeLessThan(201);
  });
});

MOSQUITTO.describe('TelemetryPublisher with mosquitto', () => {
  let broker: Broker;
  const cleanup: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    broker = await startBroker();
  });
  afterAll(async () => {
    await broker?.dispose();
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
  });
  async function publisher(stateDir: string, extra: Partial<PublisherOptions> = {}): Promise<TelemetryPublisher> {
    const p = await TelemetryPublisher.start({ url: broker.url, fleet: 'lab', device: 'dev-1', stateDir, birth: BIRTH_INFO, backoff: FAST, ackTimeoutMs: 1_000, ...extra });
    cleanup.push(() => p.close());
    return p;
  }
  async function recorder(url = broker.url, clientId?: string, persistent = false): Promise<Recorder> {
    const r = new Recorder(url, clientId);
    await r.connect(persistent);
    cleanup.push(() => r.close());
    return r;
  }
  async function state(): Promise<string> {
    const d = await tempDir('pub');
    cleanup.push(() => fsp.rm(d, { recursive: true, force: true }));
    return d;
  }

  it('publishes birth then metrics windows on the documented topics, and a clean death on close', async () => {
    const rec = await recorder();
    const dir = await state();
    const startedAt = Date.now();
    const pub = await publisher(dir);
    for (let i = 0; i < 3; i++) await pub.enqueueWindow(windowInput(i));
    await rec.until(() => rec.of('metrics').length === 3);
    await pub.drained();
    expect(rec.seen[0]!.kind).toBe('birth');
    const birth = rec.of('birth')[0]!;
    expect(birth).toMatchObject({ device: 'dev-1', fleet: 'lab', bdSeq: 0, seq: 0, profile: 'rpi4', bundle: { name: 'mnist-exits' } });
    // A new outbox numbers from the clock (µs), so a wiped device never reuses stored ids.
    const base = rec.of('metrics')[0]!.id as number;
    expect(base).toBeGreaterThanOrEqual(startedAt * 1000);
    expect(base).toBeLessThanOrEqual(Date.now() * 1000);
    expect(rec.of('metrics').map((m) => [m.id, m.bdSeq, m.seq, m.device])).toEqual([
      [base, 0, 1, 'dev-1'],
      [base + 1, 0, 2, 'dev-1'],
      [base + 2, 0, 3, 'dev-1'],
    ]);
    expect(pub.outbox.size()).toBe(0);
    await pub.close();
    await rec.until(() => rec.of('death').length === 1);
    expect(rec.of('death')[0]).toEqual({ device: 'dev-1', bdSeq: 0, clean: true });
    expect(JSON.parse(await fsp.readFile(`${dir}/bdseq.json`, 'utf8'))).toEqual({ bdSeq: 0 });
  });

  it('the broker publishes the death will when the socket dies; the next session has a new bdSeq', async () => {
    const rec = await recorder();
    const pub = await publisher(await state());
    await rec.until(() => rec.of('birth').length === 1);
    pub.dropConnection();
    await rec.until(() => rec.of('death').length === 1 && rec.of('birth').length === 2);
    expect(rec.of('death')[0]).toEqual({ device: 'dev-1', bdSeq: 0, clean: false });
    expect(rec.of('birth')[1]).toMatchObject({ bdSeq: 1, seq: 0 });
    const id = await pub.enqueueWindow(windowInput(0));
    await rec.until(() => rec.of('metrics').length === 1);
    expect(rec.of('metrics')[0]).toMatchObject({ id, bdSeq: 1, seq: 1 });
  });

  it("keeps a window the broker PUBACKed until the collector acks it, resending it after ackTimeoutMs", async () => {
    // A subscriber that records but does not ack: the broker's PUBACK alone must not empty the outbox.
    const seen: number[] = [];
    const mute = await connectMqtt({ url: broker.url, clientId: `mute-${Math.random().toString(36).slice(2)}`, protocolVersion: 4, onMessage: (m) => {
      if (m.topic.endsWith('/metrics')) seen.push(decodePayload('metrics', m.payload).id);
    } });
    cleanup.push(() => mute.end());
    await mute.subscribe(topicFor('lab', 'dev-2', 'metrics'), 1);
    const pub = await publisher(await state(), { device: 'dev-2', ackTimeoutMs: 300 });
    const id = await pub.enqueueWindow(windowInput(0));
    const until = async (pred: () => boolean) => {
      const end = Date.now() + 20_000;
      while (!pred()) {
        if (Date.now() > end) throw new Error(`timed out; seen ${JSON.stringify(seen)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await until(() => seen.length >= 2);
    expect(seen.slice(0, 2)).toEqual([id, id]);
    expect(pub.outbox.size()).toBe(1);
    expect(pub.getStats()).toMatchObject({ acked: 0 });
    expect(pub.getStats().resent).toBeGreaterThanOrEqual(1);
    // Anything on the ack topic that is not an ack is ignored; the collector's ack empties it.
    await mute.publish(topicFor('lab', 'dev-2', 'ack'), Buffer.from('{"ids":"all"}'), { qos: 1 });
    await mute.publish(topicFor('lab', 'dev-2', 'ack'), Buffer.from(JSON.stringify({ ids: [id] })), { qos: 1 });
    await pub.drained();
    expect(pub.getStats()).toMatchObject({ acked: 1, queued: 0 });
  });

  it('rejects a window failing the schema, naming the field', async () => {
    const pub = await publisher(await state());
    await expect(pub.enqueueWindow({ ...windowInput(0), count: -1 })).rejects.toThrow(/count/);
    await expect(pub.enqueueWindow({ ...windowInput(0), energy: { ...windowInput(0).energy, meter: 'tape' as 'model' } })).rejects.toThrow(/energy\.meter/);
    const huge = { ...windowInput(0), latencyMs: { ...windowInput(0).latencyMs, stages: Array.from({ length: 3000 }, () => ({ p50: 1.5, p95: 2.5, p99: 3.5 })) } };
    await expect(pub.enqueueWindow(huge)).rejects.toThrow(/byte limit/);
    expect(pub.outbox.size()).toBe(0);
  });
});

MOSQUITTO.describe('TelemetryPublisher across outages', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
  });

  it('broker killed mid-stream and restarted on the same port: every window is acked once and arrives', { timeout: 60_000 }, async () => {
    // The publisher reaches the broker through a gate that stays shut across the restart until the
    // recorder has subscribed again; otherwise the broker could drop what nobody subscribes to yet.
    const broker = await startBroker();
    cleanup.push(() => broker.dispose());
    const gate = await startGate(broker.port);
    cleanup.push(() => gate.dispose());
    const dir = await tempDir('pub-outage');
    cleanup.push(() => fsp.rm(dir, { recursive: true, force: true }));
    let rec = new Recorder(broker.url);
    await rec.connect();
    const acks = new Map<number, number>();
    const pub = await TelemetryPublisher.start({
      url: gate.url, fleet: 'lab', device: 'dev-1', stateDir: dir, birth: BIRTH_INFO, backoff: FAST, maxInflight: 4, ackTimeoutMs: 1_000,
      onAck: (ids) => ids.forEach((id) => acks.set(id, (acks.get(id) ?? 0) + 1)),
    });
    cleanup.push(() => pub.close());
    const before = rec;
    const N = 60;
    for (let i = 0; i < N; i++) {
      await pub.enqueueWindow(windowInput(i));
      if (i === 20) {
        await rec.until(() => rec.of('metrics').length >= 5);
        gate.setOpen(false);
        await broker.stop('SIGKILL');
      }
      if (i === 40) {
        await broker.start();
        rec = new Recorder(broker.url);
        await rec.connect();
        gate.setOpen(true);
      }
      if (i % 5 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    await pub.drained();
    // The publisher's side: every window acknowledged by the subscriber, none removed twice.
    const base = Math.min(...acks.keys());
    expect([...acks.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => base + i));
    expect([...acks.values()].every((n) => n === 1)).toBe(true);
    expect(pub.outbox.size()).toBe(0);
    expect(pub.getStats().sessions).toBeGreaterThanOrEqual(2);
    // The subscriber's side: every window arrives. A broker without persistence loses what it had
    // PUBACKed but not delivered when it died; the subscriber never acked those, so they were resent.
    const got = new Set([...before.of('metrics'), ...rec.of('metrics')].map((m) => m.id as number));
    for (let id = base; id < base + N; id++) expect(got.has(id), `window ${id}`).toBe(true);
    expect(rec.of('metrics').every((m) => (m.bdSeq as number) >= 1)).toBe(true);
    const keys = [...before.of('metrics'), ...rec.of('metrics')].map((m) => `${m.bdSeq}/${m.seq}`);
    expect(new Set(keys).size).toBe(keys.length);
    await rec.close();
  });

  it('publisher restarted with windows queued offline: bdSeq and ids continue, nothing lost', async () => {
    const broker = await startBroker();
    cleanup.push(() => broker.dispose());
    const dir = await tempDir('pub-restart');
    cleanup.push(() => fsp.rm(dir, { recursive: true, force: true }));
    const rec = new Recorder(broker.url);
    await rec.connect();
    cleanup.push(() => rec.close());

    const first = await TelemetryPublisher.start({ url: broker.url, fleet: 'lab', device: 'dev-1', stateDir: dir, birth: BIRTH_INFO, backoff: FAST, ackTimeoutMs: 1_000 });
    await first.enqueueWindow(windowInput(0));
    await rec.until(() => rec.of('metrics').length === 1);
    await first.drained();
    await broker.stop();
    await rec.until(() => rec.conn!.closed);
    for (let i = 1; i < 4; i++) await first.enqueueWindow(windowInput(i));
    await first.close(); // no broker: the windows stay in the outbox

    await broker.start();
    const rec2 = new Recorder(broker.url);
    await rec2.connect();
    cleanup.push(() => rec2.close());
    const second = await TelemetryPublisher.start({ url: broker.url, fleet: 'lab', device: 'dev-1', stateDir: dir, birth: BIRTH_INFO, backoff: FAST, ackTimeoutMs: 1_000 });
    cleanup.push(() => second.close());
    expect(second.outbox.size()).toBe(3);
    await rec2.until(() => rec2.of('metrics').length === 3);
    const base = rec.of('metrics')[0]!.id as number;
    expect(rec2.of('metrics').map((m) => m.id)).toEqual([base + 1, base + 2, base + 3]);
    const birth = rec2.of('birth')[0]!;
    expect(birth.bdSeq as number).toBeGreaterThan(rec.of('birth')[0]!.bdSeq as number);
    expect(await second.enqueueWindow(windowInput(4))).toBe(base + 4);
  });
});
