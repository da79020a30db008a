// The collector end to end: real Mosquitto (shared subscription over MQTT 5), a real SQLite file,
// TelemetryPublisher and a raw MQTT client as devices; then `fleet status` through the CLI, and
// the embedded aedes broker path with one publisher.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCollector, type Collector } from '../../src/fleet/index.js';
import { TelemetryPublisher, connectMqtt, topicFor, type MqttConnection, type PublisherOptions } from '../../src/telemetry/index.js';
import { collectCommand } from '../../src/cli/commands/collect.js';
import { runCli } from '../cli/helpers.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { BIRTH_INFO, tempDir, windowBody, windowInput } from '../telemetry/mqtt/fixtures.js';
import { until } from '../support/wait.js';

const FAST = { initialMs: 100, maxMs: 400, factor: 2, jitter: 0.5 };
const FLEET = 'lab';

function birth(device: string, bdSeq: number) {
  return { device, fleet: FLEET, bdSeq, seq: 0, ...BIRTH_INFO, at: 1_700_000_000_000 };
}

function metrics(device: string, i: number, bdSeq: number, seq: number) {
  return { id: i, bdSeq, seq, ...windowBody(i, device) };
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v));

MOSQUITTO.describe('collector on mosquitto', () => {
  let broker: Broker;
  let dir: string;
  let collector: Collector;
  let logs: string[];
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    broker = await startBroker();
  });
  afterAll(async () => {
    await broker?.dispose();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(): Promise<{ raw: MqttConnection }> {
    dir = await tempDir('fleet');
    logs = [];
    collector = await startCollector({ brokerUrl: broker.url, dbFile: path.join(dir, 'fleet.db'), fleet: FLEET, backoff: FAST, onLog: (l) => logs.push(l) });
    cleanups.push(async () => {
      await collector.close();
      await fsp.rm(dir, { recursive: true, force: true });
    });
    const raw = await connectMqtt({ url: broker.url, clientId: `raw-${Math.random().toString(36).slice(2)}`, protocolVersion: 5 });
    cleanups.push(() => raw.end());
    return { raw };
  }

  it('stores what a publisher sent, over a shared MQTT 5 subscription, and takes its clean death', async () => {
    await setup();
    expect(collector.protocolVersion).toBe(5);
    expect(collector.subscription).toBe('$share/edgeexit-collectors/edgeexit/v1/lab/+/#');
    const opts = (device: string): PublisherOptions => ({ url: broker.url, fleet: FLEET, device, stateDir: path.join(dir, device), birth: BIRTH_INFO, backoff: FAST });
    const [a, b] = await Promise.all([TelemetryPublisher.start(opts('pi-a')), TelemetryPublisher.start(opts('pi-b'))]);
    for (let i = 0; i < 5; i++) await a.enqueueWindow(windowInput(i));
    for (let i = 0; i < 3; i++) await b.enqueueWindow(windowInput(i));
    await Promise.all([a.drained(), b.drained()]);
    await until(async () => (await collector.store.totals()).reduce((n, t) => n + t.windows, 0) === 8, '8 windows');
    const totals = await collector.store.totals();
    expect(totals.map((t) => [t.device, t.windows, t.count, t.joules])).toEqual([
      ['pi-a', 5, 50, 7.5],
      ['pi-b', 3, 30, 4.5],
    ]);
    expect(totals[0]!.exits).toEqual([30, 15, 5]);
    const devs = await collector.store.devices();
    expect(devs.map((d) => [d.device, d.online, d.birth?.bundle.name])).toEqual([
      ['pi-a', true, 'mnist-exits'],
      ['pi-b', true, 'mnist-exits'],
    ]);
    expect(await collector.counters()).toMatchObject({ duplicates: 0, gaps: 0, unknownDevice: 0, malformed: 0, invalid: 0 });

    await a.close();
    await until(async () => (await collector.store.devices()).find((d) => d.device === 'pi-a')?.online === false, 'pi-a offline');
    await b.close();
  });

  it('a device whose state folder was wiped starts new ids: its new windows are stored, not dropped as duplicates', async () => {
    await setup();
    const opts: PublisherOptions = { url: broker.url, fleet: FLEET, device: 'pi-w', stateDir: path.join(dir, 'pi-w'), birth: BIRTH_INFO, backoff: FAST };
    const before = await TelemetryPublisher.start(opts);
    const oldIds = [];
    for (let i = 0; i < 3; i++) oldIds.push(await before.enqueueWindow(windowInput(i)));
    await before.drained();
    await before.close();
    await until(async () => (await collector.store.totals()).find((t) => t.device === 'pi-w')?.windows === 3, '3 windows');
    await fsp.rm(opts.stateDir, { recursive: true, force: true }); // a reflashed SD card
    await new Promise((r) => setTimeout(r, 2)); // the clock moves on, as it does between a wipe and a reboot
    const after = await TelemetryPublisher.start(opts);
    const newIds = [];
    for (let i = 0; i < 3; i++) newIds.push(await after.enqueueWindow(windowInput(i)));
    expect(Math.min(...newIds)).toBeGreaterThan(Math.max(...oldIds));
    await after.drained();
    await until(async () => (await collector.store.totals()).find((t) => t.device === 'pi-w')?.windows === 6, '6 windows');
    expect((await collector.counters()).duplicates).toBe(0);
    await after.close();
  });

  it('counts a window delivered twice once and increments duplicates; counts seq gaps', async () => {
    const { raw } = await setup();
    await raw.publish(topicFor(FLEET, 'dup-1', 'birth'), json(birth('dup-1', 3)));
    const w = json(metrics('dup-1', 7, 3, 1));
    await raw.publish(topicFor(FLEET, 'dup-1', 'metrics'), w);
    await raw.publish(topicFor(FLEET, 'dup-1', 'metrics'), w);
    // seq 2 and 3 never arrive.
    await raw.publish(topicFor(FLEET, 'dup-1', 'metrics'), json(metrics('dup-1', 8, 3, 4)));
    await until(() => collector.handled() === 4, '4 messages');
    expect(await collector.store.totals()).toMatchObject([{ device: 'dup-1', windows: 2, count: 20, joules: 3 }]);
    expect(await collector.counters()).toMatchObject({ duplicates: 1, gaps: 2 });
    expect(logs.some((l) => l.startsWith('duplicate: dup-1 window 7'))).toBe(true);
  });

  it('counts malformed, invalid and oversized messages and keeps collecting', async () => {
    const { raw } = await setup();
    const t = topicFor(FLEET, 'bad-1', 'metrics');
    await raw.publish(topicFor(FLEET, 'bad-1', 'birth'), json(birth('bad-1', 0)));
    await raw.publish(t, Buffer.from('{not json'));
    await raw.publish(t, json({ ...metrics('bad-1', 1, 0, 1), count: -1 }));
    await raw.publish(t, json({ ...metrics('bad-1', 2, 0, 2), padding: 'x'.repeat(70 * 1024) }));
    await raw.publish(topicFor(FLEET, 'other', 'metrics'), json(metrics('bad-1', 3, 0, 3)));
    await raw.publish(t, json(metrics('bad-1', 4, 0, 1)));
    await until(() => collector.handled() === 6, '6 messages');
    expect(await collector.counters()).toMatchObject({ malformed: 1, invalid: 2, oversized: 1, gaps: 0 });
    expect(await collector.store.totals()).toMatchObject([{ device: 'bad-1', windows: 1, count: 10 }]);
    for (const kind of ['malformed', 'invalid', 'oversized']) expect(logs.filter((l) => l.startsWith(`${kind}:`)).every((l) => !l.includes('\n'))).toBe(true);
    expect(logs.find((l) => l.startsWith('invalid:') && l.includes('count'))).toBeDefined();
  });

  it('ignores a late death of an old session and stores metrics of an unknown device (counted)', async () => {
    const { raw } = await setup();
    await raw.publish(topicFor(FLEET, 'late-1', 'birth'), json(birth('late-1', 1)));
    await raw.publish(topicFor(FLEET, 'late-1', 'birth'), json(birth('late-1', 2)));
    await raw.publish(topicFor(FLEET, 'late-1', 'death'), json({ device: 'late-1', bdSeq: 1, clean: false }));
    await raw.publish(topicFor(FLEET, 'ghost', 'metrics'), json(metrics('ghost', 1, 9, 5)));
    await until(() => collector.handled() === 4, '4 messages');
    const late = async () => (await collector.store.devices()).find((d) => d.device === 'late-1')!;
    expect(await late()).toMatchObject({ online: true, bdSeq: 2 });
    expect(await collector.counters()).toMatchObject({ staleDeaths: 1, unknownDevice: 1 });
    expect((await collector.store.devices()).find((d) => d.device === 'ghost')).toMatchObject({ online: false, birth: null });
    expect((await collector.store.totals()).find((t) => t.device === 'ghost')).toMatchObject({ windows: 1 });

    await raw.publish(topicFor(FLEET, 'late-1', 'death'), json({ device: 'late-1', bdSeq: 2, clean: false }));
    await until(async () => (await late()).online === false, 'late-1 offline');
  });

  it('reconnects after a broker restart', async () => {
    const { raw } = await setup();
    await raw.end();
    await broker.stop();
    await broker.start();
    await until(() => logs.some((l) => l.startsWith('reconnected')), 'reconnect', 20_000);
    const pub = await connectMqtt({ url: broker.url, clientId: 'raw-reconnect', protocolVersion: 5 });
    cleanups.push(() => pub.end());
    await pub.publish(topicFor(FLEET, 'r-1', 'birth'), json(birth('r-1', 0)));
    await pub.publish(topicFor(FLEET, 'r-1', 'metrics'), json(metrics('r-1', 1, 0, 1)));
    await until(async () => (await collector.store.totals()).length === 1, 'window after reconnect');
    expect(await collector.store.devices()).toMatchObject([{ device: 'r-1', online: true }]);
  });

  it('fleet status --json through the CLI shows the devices and counts', async () => {
    const { raw } = await setup();
    await raw.publish(topicFor(FLEET, 'cli-1', 'birth'), json(birth('cli-1', 0)));
    for (let i = 1; i <= 4; i++) await raw.publish(topicFor(FLEET, 'cli-1', 'metrics'), json(metrics('cli-1', i, 0, i)));
    await until(() => collector.handled() === 5, '5 messages');
    const db = collector.store.file;
    await collector.close();

    const r = await runCli('fleet', 'status', '--db', db, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    expect(s.devices).toHaveLength(1);
    expect(s.devices[0]).toMatchObject({ device: 'cli-1', online: true, bundle: { name: 'mnist-exits', version: '1.2.0' }, windows: 4, inferences: 40, p95LatencyMs: 7 });
    expect(s.devices[0].exitRates).toEqual([0.6, 0.3, 0.1]);
    expect(s.devices[0].joulesPerInference).toBeCloseTo(0.15, 10);
    // windowBody: 4 of 5 labelled right and 51.5 °C in every window.
    expect(s.devices[0]).toMatchObject({ labelled: 20, correct: 16, accuracy: 0.8, temperatureC: 51.5 });

    const text = await runCli('fleet', 'status', '--db', db);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/cli-1\s+online\s+mnist-exits 1\.2\.0\s+7\.0\s+60% \/ 30% \/ 10%\s+0\.150\s+80\.0%\s+51\.5\s+20\d\d-/);

    const missing = await runCli('fleet', 'status', '--db', path.join(dir, 'nope.db'));
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/no fleet database/);
  });
});

MOSQUITTO.describe('edgeexit collect', () => {
  it('collects until aborted, then closes and reports its counters', async () => {
    const broker = await startBroker();
    const dir = await tempDir('fleet-collect');
    try {
      const ac = new AbortController();
      let err = '';
      const db = path.join(dir, 'fleet.db');
      const run = collectCommand({ broker: broker.url, db }, { out: () => undefined, err: (t) => void (err += t + '\n') }, ac.signal);
      await until(() => err.includes('collecting '), 'collector start');
      const raw = await connectMqtt({ url: broker.url, clientId: 'raw-collect', protocolVersion: 5 });
      await raw.publish(topicFor(FLEET, 'c-1', 'metrics'), Buffer.from('nope'));
      await raw.end();
      await until(() => err.includes('malformed:'), 'malformed logged');
      ac.abort();
      expect(await run).toMatchObject({ malformed: 1 });
      expect(err).toMatch(/collector stopped after 1 messages/);
    } finally {
      await broker.dispose();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('collector with the embedded aedes broker', () => {
  it('takes a publisher end to end over MQTT 3.1.1', async () => {
    const dir = await tempDir('fleet-aedes');
    const logs: string[] = [];
    const c = await startCollector({ dbFile: path.join(dir, 'fleet.db'), port: 0, host: '127.0.0.1', onLog: (l) => logs.push(l) });
    try {
      expect(c.protocolVersion).toBe(4);
      expect(c.subscription).toBe('edgeexit/v1/+/+/#');
      const p = await TelemetryPublisher.start({ url: c.url, fleet: 'home', device: 'jetson-1', stateDir: path.join(dir, 'dev'), birth: BIRTH_INFO, protocolVersion: 4, backoff: FAST });
      for (let i = 0; i < 3; i++) await p.enqueueWindow(windowInput(i));
      await p.drained();
      await until(async () => (await c.store.totals())[0]?.windows === 3, '3 windows');
      expect(await c.store.totals()).toMatchObject([{ device: 'jetson-1', windows: 3, count: 30, joules: 4.5 }]);
      expect(await c.store.devices()).toMatchObject([{ device: 'jetson-1', fleet: 'home', online: true }]);
      await p.close();
      await until(async () => (await c.store.devices())[0]?.online === false, 'offline after clean death');
      await c.close();

      // The fixture windows are from 2023: a 30-day retention drops them on the next start. The
      // running totals keep them (they feed Prometheus counters, which must not go down).
      const again = await startCollector({ dbFile: c.store.file, port: 0, host: '127.0.0.1', retentionDays: 30, onLog: (l) => logs.push(l) });
      expect(await again.store.latestWindows('jetson-1', 10)).toEqual([]);
      expect(await again.store.totals()).toMatchObject([{ device: 'jetson-1', windows: 3, count: 30, joules: 4.5 }]);
      expect(logs).toContain('retention: deleted 3 windows older than 30 days');
      await again.close();
    } finally {
      await c.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
