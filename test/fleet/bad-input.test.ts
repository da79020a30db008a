// Bad input: the collector counts and logs, in one line each, malformed JSON, binary junk, wrongly
// typed payloads of every kind, oversized payloads, foreign topics, payloads naming another device
// and unknown devices — all sent at once, so they share batches with good windows — and keeps
// storing the good ones. Also: a store failure on one message of a batch costs only that message.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import { BatchedIngest } from '../../src/fleet/ingest.js';
import { openFleetStore, type FleetStore } from '../../src/fleet/store.js';
import { connectMqtt, topicFor, type MqttConnection } from '../../src/telemetry/index.js';
import { BIRTH_INFO, tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';
import { until } from '../support/wait.js';

const FLEET = 'lab';
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const birth = (device: string, bdSeq: number) => ({ device, fleet: FLEET, bdSeq, seq: 0, ...BIRTH_INFO, at: 1_700_000_000_000 });
const metrics = (device: string, i: number, seq = i) => ({ id: i, bdSeq: 0, seq, ...windowBody(i, device) });

describe('bad input', () => {
  let dir: string;
  let collector: Collector;
  let raw: MqttConnection;
  const logs: string[] = [];

  beforeAll(async () => {
    dir = await tempDir('bad-input');
    collector = await startCollector({ dbFile: path.join(dir, 'fleet.db'), port: 0, host: '127.0.0.1', onLog: (l) => logs.push(l) });
    raw = await connectMqtt({ url: collector.url, clientId: 'bad-input-raw', protocolVersion: 4 });
  });
  afterAll(async () => {
    await raw?.end();
    await collector?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('counts and logs every kind of bad message, one line each, and keeps storing good windows', async () => {
    const m = topicFor(FLEET, 'pi-1', 'metrics');
    const sends: [string, Buffer][] = [
      [topicFor(FLEET, 'pi-1', 'birth'), json(birth('pi-1', 0))],
      [m, json(metrics('pi-1', 1))],
      // malformed: not JSON at all
      [m, Buffer.from('{not json')],
      [m, Buffer.from([0xff, 0xfe, 0x00, 0x81])],
      [m, Buffer.alloc(0)],
      // invalid: JSON of the wrong shape or types
      [m, json(42)],
      [m, json(null)],
      [m, json([metrics('pi-1', 2)])],
      [m, json({ ...metrics('pi-1', 3), count: '10' })],
      [m, json({ ...metrics('pi-1', 4), exitHistogram: { 0: 10 } })],
      [m, json({ ...metrics('pi-1', 5), energy: { joules: 'lots', meanWatts: 1, source: 'model', meter: 'model' } })],
      [m, json({ ...metrics('pi-1', 6), seq: -1 })],
      [topicFor(FLEET, 'pi-1', 'birth'), json({ ...birth('pi-1', 1), bdSeq: '1' })],
      [topicFor(FLEET, 'pi-1', 'death'), json({ device: 'pi-1', bdSeq: 0, clean: 'yes' })],
      [topicFor(FLEET, 'pi-2', 'metrics'), json(metrics('pi-1', 7))],
      // oversized
      [m, json({ ...metrics('pi-1', 8), padding: 'x'.repeat(70 * 1024) })],
      // not telemetry topics under the subscription
      [`edgeexit/v1/${FLEET}/pi-1/job/flash`, json({ any: 'thing' })],
      [`edgeexit/v1/${FLEET}/pi-1/status`, json({})],
      // unknown devices: a window is stored and counted, a death only counted
      [topicFor(FLEET, 'ghost', 'metrics'), json(metrics('ghost', 1))],
      [topicFor(FLEET, 'ghost-2', 'death'), json({ device: 'ghost-2', bdSeq: 0, clean: false })],
      [m, json(metrics('pi-1', 9, 2))],
    ];
    for (const [topic, payload] of sends) await raw.publish(topic, payload, { qos: 1 });
    await until(() => collector.handled() === sends.length, `${sends.length} messages handled`);

    expect(await collector.counters()).toMatchObject({ malformed: 3, invalid: 10, oversized: 1, foreignTopic: 2, unknownDevice: 2, duplicates: 0 });
    const totals = new Map((await collector.store.totals()).map((t) => [t.device, t]));
    expect(totals.get('pi-1')).toMatchObject({ windows: 2, count: 20 });
    expect(totals.get('ghost')).toMatchObject({ windows: 1, count: 10 });
    expect((await collector.store.devices()).find((d) => d.device === 'pi-1')).toMatchObject({ online: true, bdSeq: 0 });
    for (const kind of ['malformed', 'invalid', 'oversized', 'ignored', 'unknownDevice']) expect(logs.some((l) => l.startsWith(`${kind}:`) || l.startsWith(`${kind} `)), kind).toBe(true);
    expect(logs.every((l) => !l.includes('\n'))).toBe(true);
    expect(logs.find((l) => l.startsWith('invalid:') && l.includes('count') && l.includes('"10"'))).toBeDefined();

    // Still collecting afterwards.
    await raw.publish(m, json(metrics('pi-1', 10, 3)), { qos: 1 });
    await until(async () => (await collector.store.totals()).find((t) => t.device === 'pi-1')?.windows === 3, 'a good window after the bad ones');
  });

  it('a store failure on one message of a batch loses only that message, logged (SQLite: the synchronous batch)', async () => {
    // A real SQLite error on the write of window 3: a trigger aborts its INSERT.
    const file = path.join(dir, 'failing-sync.db');
    await openFleetStore(file).close();
    const raw = new Database(file);
    raw.exec("CREATE TRIGGER fail_3 BEFORE INSERT ON windows WHEN NEW.id = 3 BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END");
    raw.close();
    const store = openFleetStore(file);
    expect(store.sync).toBeDefined();
    const lines: string[] = [];
    const acked: number[] = [];
    const ingest = new BatchedIngest(store, (l) => lines.push(l), Date.now, { maxMessages: 100, maxDelayMs: 10_000 }, undefined, (s) => acked.push(...s.flatMap((d) => d.ids)));
    for (let i = 1; i <= 5; i++) ingest.push({ topic: topicFor(FLEET, 'pi-8', 'metrics'), payload: json(metrics('pi-8', i)), retain: false });
    await ingest.flush();
    expect(ingest.handled()).toBe(5);
    expect(await store.totals()).toMatchObject([{ device: 'pi-8', windows: 4, count: 40 }]);
    // Only what was stored is acked; the device sends window 3 again.
    expect(acked.sort()).toEqual([1, 2, 4, 5]);
    expect(lines.filter((l) => l.startsWith('error:'))).toEqual([`error: ${topicFor(FLEET, 'pi-8', 'metrics')}: disk I/O error`]);
    await store.close();
  });

  it('a store failure on one message of a batch loses only that message, logged (a store without a synchronous writer)', async () => {
    const store = openFleetStore(path.join(dir, 'failing.db'));
    // No `sync`: the batch goes through the asynchronous calls, as on PostgreSQL.
    const failing: FleetStore = Object.create(store, {
      sync: { value: undefined },
      recordWindow: {
        value: async (w: Parameters<FleetStore['recordWindow']>[0], fleet: string, at: number) => {
          if (w.id === 3) throw new Error('disk I/O error');
          return await store.recordWindow(w, fleet, at);
        },
      },
    }) as FleetStore;
    const lines: string[] = [];
    const ingest = new BatchedIngest(failing, (l) => lines.push(l), Date.now, { maxMessages: 100, maxDelayMs: 10_000 });
    for (let i = 1; i <= 5; i++) ingest.push({ topic: topicFor(FLEET, 'pi-9', 'metrics'), payload: json(metrics('pi-9', i)), retain: false });
    expect(ingest.pending()).toBe(5);
    await ingest.flush();
    expect(ingest.handled()).toBe(5);
    expect(await store.totals()).toMatchObject([{ device: 'pi-9', windows: 4, count: 40 }]);
    expect(lines.filter((l) => l.startsWith('error:'))).toEqual([`error: ${topicFor(FLEET, 'pi-9', 'metrics')}: disk I/O error`]);
    await store.close();
  });
});
