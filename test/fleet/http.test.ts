// The collector's HTTP side end to end: a real collector (embedded aedes broker, real SQLite file)
// with its HTTP server on a free loopback port, devices publishing real windows (TelemetryPublisher
// and a raw MQTT client), then /metrics fetched over HTTP and read with a strict exposition parser;
// the JSON API; bad requests; and `edgeexit collect --http`.
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectCommand } from '../../src/cli/commands/collect.js';
import { escapeLabelValue, openFleetStore, parseHttpListen, startCollector, type Collector, type FleetApi, type WindowsApi } from '../../src/fleet/index.js';
import { TelemetryPublisher, connectMqtt, topicFor, type MqttConnection, type WindowInput } from '../../src/telemetry/index.js';
import { InputError } from '../../src/util/errors.js';
import { runCli } from '../cli/helpers.js';
import { BIRTH_INFO, tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';
import { PromParseError, parseExposition, sampleValue } from './prom-parse.js';
import { PROMTOOL } from '../support/require.js';
import { until } from '../support/wait.js';

const FAST = { initialMs: 100, maxMs: 400, factor: 2, jitter: 0.5 };
const FLEET = 'lab';
const T0 = 1_700_000_000_000;
const ODD_BUNDLE = 'net "v2"\\ok\nline2';

const json = (v: unknown) => Buffer.from(JSON.stringify(v));

// Windows that differ from each other, so a sum, a latest or a per-exit mix-up shows.
function win(i: number, exits: number, extra: Pick<WindowInput, 'temperatureC' | 'accuracy'> = {}): WindowInput {
  const count = 8 + 2 * i;
  const hist = Array.from({ length: exits }, (_, k) => (k === 0 ? 0 : k));
  hist[0] = count - hist.reduce((a, b) => a + b, 0);
  return {
    windowStart: T0 + i * 10_000,
    windowEnd: T0 + (i + 1) * 10_000,
    count,
    exitHistogram: hist,
    latencyMs: { endToEnd: { p50: 2 + i, p95: 5 + i, p99: 9 + i }, stages: [] },
    energy: { joules: 0.25 * (i + 1), meanWatts: 0.5 + i, source: 'sensor', meter: 'ina3221-hwmon' },
    ...extra,
  };
}

// pi-a: temperature and labels in some windows only; the newest has neither, so the gauge comes
// from an older window. pi-b sends neither (no temperature series, label counters at 0).
const PI_A_EXTRA: Pick<WindowInput, 'temperatureC' | 'accuracy'>[] = [
  { temperatureC: 40.5, accuracy: { correct: 3, labelled: 4 } },
  { temperatureC: 42.25 },
  { accuracy: { correct: 5, labelled: 8 } },
  {},
];

function labels(ws: readonly { accuracy?: { correct: number; labelled: number } }[]) {
  return { labelled: ws.reduce((a, w) => a + (w.accuracy?.labelled ?? 0), 0), correct: ws.reduce((a, w) => a + (w.accuracy?.correct ?? 0), 0) };
}

interface Sent {
  windows: WindowInput[];
}

function sums(ws: readonly { count: number; exitHistogram: number[]; energy: { joules: number } }[]) {
  const exits: number[] = [];
  for (const w of ws) w.exitHistogram.forEach((n, k) => (exits[k] = (exits[k] ?? 0) + n));
  return { count: ws.reduce((a, w) => a + w.count, 0), joules: ws.reduce((a, w) => a + w.energy.joules, 0), exits };
}

async function get(url: string, init?: RequestInit): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(url, init);
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

describe('collector /metrics and JSON API', () => {
  let dir: string;
  let collector: Collector;
  let raw: MqttConnection;
  const logs: string[] = [];
  const afterAllClose: (() => Promise<void>)[] = [];
  const sent: Record<string, Sent> = { 'pi-a': { windows: [] }, 'pi-b': { windows: [] } };
  // raw-1: two distinct windows (one also sent twice); ghost: one window, never a birth.
  const rawWindows = [windowBody(1, 'raw-1'), windowBody(2, 'raw-1')];
  const ghostWindow = windowBody(5, 'ghost');

  beforeAll(async () => {
    dir = await tempDir('fleet-http');
    collector = await startCollector({ dbFile: path.join(dir, 'fleet.db'), port: 0, host: '127.0.0.1', http: { host: '127.0.0.1', port: 0 }, onLog: (l) => logs.push(l) });
    const pub = (device: string) =>
      TelemetryPublisher.start({ url: collector.url, fleet: FLEET, device, stateDir: path.join(dir, device), birth: BIRTH_INFO, protocolVersion: 4, backoff: FAST });
    const [a, b] = await Promise.all([pub('pi-a'), pub('pi-b')]);
    for (let i = 0; i < 4; i++) sent['pi-a']!.windows.push(win(i, 3, PI_A_EXTRA[i]));
    for (let i = 0; i < 2; i++) sent['pi-b']!.windows.push(win(i + 10, 2));
    for (const w of sent['pi-a']!.windows) await a.enqueueWindow(w);
    for (const w of sent['pi-b']!.windows) await b.enqueueWindow(w);
    await Promise.all([a.drained(), b.drained()]);

    raw = await connectMqtt({ url: collector.url, clientId: 'raw-http-test', protocolVersion: 4 });
    const birth = { device: 'raw-1', fleet: FLEET, bdSeq: 0, seq: 0, ...BIRTH_INFO, bundle: { ...BIRTH_INFO.bundle, name: ODD_BUNDLE }, at: T0 };
    const t = topicFor(FLEET, 'raw-1', 'metrics');
    await raw.publish(topicFor(FLEET, 'raw-1', 'birth'), json(birth));
    await raw.publish(t, json({ id: 1, bdSeq: 0, seq: 1, ...rawWindows[0] }));
    await raw.publish(t, json({ id: 1, bdSeq: 0, seq: 1, ...rawWindows[0] })); // broker redelivery: a duplicate
    await raw.publish(t, json({ id: 2, bdSeq: 0, seq: 4, ...rawWindows[1] })); // seq 2 and 3 never came: 2 gaps
    await raw.publish(t, Buffer.from('{not json'));
    await raw.publish(t, json({ id: 3, bdSeq: 0, seq: 5, ...rawWindows[1], count: -1 }));
    await raw.publish(topicFor(FLEET, 'ghost', 'metrics'), json({ id: 9, bdSeq: 0, seq: 0, ...ghostWindow }));
    await until(async () => (await collector.counters()).malformed === 1 && (await collector.counters()).invalid === 1 && (await collector.counters()).unknownDevice === 1, 'raw messages');
    await until(async () => (await collector.store.totals()).reduce((n, x) => n + x.windows, 0) === 9, '9 stored windows');
    await b.close();
    await until(async () => (await collector.store.devices()).find((d) => d.device === 'pi-b')?.online === false, 'pi-b offline');
    // pi-a stays connected (online); it is closed in afterAll.
    afterAllClose.push(() => a.close());
  });

  afterAll(async () => {
    for (const c of afterAllClose) await c();
    await raw?.end();
    await collector?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  // A parser this repo did not write: Prometheus' own promtool (Debian prometheus) parses and lints
  // the scrape, escaped label values included. A corrupted copy must fail, so the pass means something.
  PROMTOOL.it('/metrics passes `promtool check metrics` (parse and lint, no findings)', async () => {
    const r = await get(`${collector.httpUrl}/metrics`);
    expect(r.status).toBe(200);
    const check = (text: string) => spawnSync(PROMTOOL.get(), ['check', 'metrics'], { input: text, encoding: 'utf8' });
    const ok = check(r.body);
    expect({ status: ok.status, out: ok.stdout + ok.stderr }).toEqual({ status: 0, out: '' });
    const broken = check(r.body.replace(/^(edgeexit_inferences_total\{[^}]*\}) /m, '$1 not-a-number '));
    expect(broken.status).not.toBe(0);
    expect(broken.stdout + broken.stderr).toMatch(/error while linting|parse|invalid|expected/i);
  });

  it('serves /metrics in exposition format 0.0.4 with the values the devices sent', async () => {
    expect(collector.httpUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(logs).toContain(`dashboard at ${collector.httpUrl}/, Prometheus metrics at ${collector.httpUrl}/metrics`);
    const r = await get(`${collector.httpUrl}/metrics`);
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    const fams = parseExposition(r.body);

    const types = Object.fromEntries([...fams.values()].map((f) => [f.name, f.type]));
    expect(types).toMatchObject({
      edgeexit_inference_latency_seconds: 'summary',
      edgeexit_inferences_total: 'counter',
      edgeexit_exits_total: 'counter',
      edgeexit_energy_joules_total: 'counter',
      edgeexit_power_watts: 'gauge',
      edgeexit_device_online: 'gauge',
      edgeexit_collector_messages_total: 'counter',
      edgeexit_window_gaps_total: 'counter',
      edgeexit_temperature_celsius: 'gauge',
      edgeexit_labelled_inferences_total: 'counter',
      edgeexit_correct_inferences_total: 'counter',
    });
    for (const f of fams.values()) expect(f.help, f.name).toMatch(/\S/);

    const expected: Record<string, { count: number; joules: number; exits: number[]; latest: { p50: number; p95: number; p99: number; watts: number } }> = {};
    for (const [device, s] of Object.entries(sent)) {
      const last = s.windows.at(-1)!;
      expected[device] = { ...sums(s.windows), latest: { ...last.latencyMs.endToEnd, watts: last.energy.meanWatts } };
    }
    expected['raw-1'] = { ...sums(rawWindows), latest: { ...rawWindows[1]!.latencyMs.endToEnd, watts: rawWindows[1]!.energy.meanWatts } };
    expected['ghost'] = { ...sums([ghostWindow]), latest: { ...ghostWindow.latencyMs.endToEnd, watts: ghostWindow.energy.meanWatts } };

    for (const [device, e] of Object.entries(expected)) {
      const d = { device };
      expect(sampleValue(fams, 'edgeexit_inferences_total', d), device).toBe(e.count);
      expect(sampleValue(fams, 'edgeexit_energy_joules_total', d), device).toBeCloseTo(e.joules, 12);
      e.exits.forEach((n, k) => expect(sampleValue(fams, 'edgeexit_exits_total', { device, exit: String(k) }), `${device} exit ${k}`).toBe(n));
      expect(fams.get('edgeexit_exits_total')!.samples.filter((s) => s.labels.device === device)).toHaveLength(e.exits.length);
      expect(sampleValue(fams, 'edgeexit_inference_latency_seconds', { device, quantile: '0.5' })).toBeCloseTo(e.latest.p50 / 1000, 12);
      expect(sampleValue(fams, 'edgeexit_inference_latency_seconds', { device, quantile: '0.95' })).toBeCloseTo(e.latest.p95 / 1000, 12);
      expect(sampleValue(fams, 'edgeexit_inference_latency_seconds', { device, quantile: '0.99' })).toBeCloseTo(e.latest.p99 / 1000, 12);
      expect(sampleValue(fams, 'edgeexit_power_watts', d), device).toBe(e.latest.watts);
    }
    // Temperature: the latest window that has one; no series for a device that never sent one.
    // Label counters: sums over the windows that carried accuracy, 0 (not absent) without labels.
    const temp = fams.get('edgeexit_temperature_celsius')!;
    expect(Object.fromEntries(temp.samples.map((s) => [s.labels.device, s.value]))).toEqual({ 'pi-a': 42.25, 'raw-1': 51.5, ghost: 51.5 });
    expect(temp.samples.find((s) => s.labels.device === 'pi-a')!.labels).toEqual({ device: 'pi-a', fleet: FLEET });
    const wantLabels: Record<string, { labelled: number; correct: number }> = {
      'pi-a': labels(sent['pi-a']!.windows),
      'pi-b': { labelled: 0, correct: 0 },
      'raw-1': labels(rawWindows),
      ghost: labels([ghostWindow]),
    };
    expect(wantLabels['pi-a']).toEqual({ labelled: 12, correct: 8 });
    expect(wantLabels['raw-1']).toEqual({ labelled: 10, correct: 8 }); // the duplicate is not counted twice
    for (const [device, e] of Object.entries(wantLabels)) {
      expect(sampleValue(fams, 'edgeexit_labelled_inferences_total', { device, fleet: FLEET }), device).toBe(e.labelled);
      expect(sampleValue(fams, 'edgeexit_correct_inferences_total', { device, fleet: FLEET }), device).toBe(e.correct);
    }
    expect(fams.get('edgeexit_labelled_inferences_total')!.samples).toHaveLength(4);
    expect(r.body).toMatch(/^# HELP edgeexit_temperature_celsius .+\n# TYPE edgeexit_temperature_celsius gauge$/m);
    expect(r.body).not.toMatch(/^edgeexit_temperature_celsius\{[^}]*device="pi-b"/m);

    expect(sampleValue(fams, 'edgeexit_windows_total', { device: 'pi-a' })).toBe(4);
    expect(sampleValue(fams, 'edgeexit_device_online', { device: 'pi-a', fleet: FLEET })).toBe(1);
    expect(sampleValue(fams, 'edgeexit_device_online', { device: 'pi-b' })).toBe(0);
    expect(sampleValue(fams, 'edgeexit_device_online', { device: 'raw-1' })).toBe(1);
    expect(sampleValue(fams, 'edgeexit_device_online', { device: 'ghost' })).toBe(0);

    // Label escaping, through a bundle name a device really sent.
    expect(sampleValue(fams, 'edgeexit_device_info', { device: 'raw-1', bundle: ODD_BUNDLE, version: '1.2.0' })).toBe(1);
    expect(r.body).toContain('bundle="net \\"v2\\"\\\\ok\\nline2"');

    const result = (x: string) => sampleValue(fams, 'edgeexit_collector_messages_total', { result: x });
    expect([result('stored'), result('duplicate'), result('malformed'), result('invalid'), result('oversized'), result('unknown_device')]).toEqual([9, 1, 1, 1, 0, 1]);
    expect(sampleValue(fams, 'edgeexit_window_gaps_total')).toBe(2);
  });

  it('serves the fleet and per-device windows as JSON', async () => {
    const f = await get(`${collector.httpUrl}/api/fleet`);
    expect(f.status).toBe(200);
    const fleet = JSON.parse(f.body) as FleetApi;
    expect(fleet.devices.map((d) => [d.device, d.online, d.windows, d.inferences])).toEqual([
      ['ghost', false, 1, 10],
      ['pi-a', true, 4, sums(sent['pi-a']!.windows).count],
      ['pi-b', false, 2, sums(sent['pi-b']!.windows).count],
      ['raw-1', true, 2, 20],
    ]);
    expect(fleet.devices.find((d) => d.device === 'pi-a')!.exits).toEqual(sums(sent['pi-a']!.windows).exits);
    expect(fleet.counters).toMatchObject({ duplicates: 1, gaps: 2 });
    expect(fleet.devices.map((d) => [d.device, d.labelled, d.correct, d.accuracy, d.temperatureC])).toEqual([
      ['ghost', 5, 4, 0.8, 51.5],
      ['pi-a', 12, 8, 8 / 12, 42.25],
      ['pi-b', 0, 0, null, null],
      ['raw-1', 10, 8, 0.8, 51.5],
    ]);

    const w = JSON.parse((await get(`${collector.httpUrl}/api/devices/pi-a/windows`)).body) as WindowsApi;
    expect(w.windows.map((x) => [x.windowEnd, x.latencyMs.p95, x.count])).toEqual(sent['pi-a']!.windows.map((x) => [x.windowEnd, x.latencyMs.endToEnd.p95, x.count]));
    // temperatureC and accuracy as sent, and no key at all where a window had none.
    expect(w.windows.map((x) => ({ temperatureC: x.temperatureC, accuracy: x.accuracy }))).toEqual(PI_A_EXTRA.map((x) => ({ temperatureC: x.temperatureC, accuracy: x.accuracy })));
    expect(w.windows[3]).not.toHaveProperty('temperatureC');
    expect(w.windows[3]).not.toHaveProperty('accuracy');
    expect(w.windows[1]).not.toHaveProperty('accuracy');
    const b = JSON.parse((await get(`${collector.httpUrl}/api/devices/pi-b/windows`)).body) as WindowsApi;
    for (const x of b.windows) expect(Object.keys(x)).not.toContain('temperatureC');
    for (const x of b.windows) expect(Object.keys(x)).not.toContain('accuracy');
    const two = JSON.parse((await get(`${collector.httpUrl}/api/devices/pi-a/windows?limit=2`)).body) as WindowsApi;
    expect(two.windows.map((x) => x.windowEnd)).toEqual(sent['pi-a']!.windows.slice(-2).map((x) => x.windowEnd));
  });

  describe('bad input', () => {
    it('answers an unknown path with 404 naming the paths that exist', async () => {
      const r = await get(`${collector.httpUrl}/nope`);
      expect(r.status).toBe(404);
      expect(r.body).toMatch(/no such path "\/nope": try \/ \(dashboard\), \/metrics/);
      const api = await get(`${collector.httpUrl}/api/nope`);
      expect(api.status).toBe(404);
      expect(JSON.parse(api.body).error).toMatch(/no such path/);
    });

    it('answers a bad device id with 400 and an unknown one with 404', async () => {
      for (const bad of ['bad%20id', '-lead', 'x'.repeat(65), '%ZZ', 'a%2Fb']) {
        const r = await get(`${collector.httpUrl}/api/devices/${bad}/windows`);
        expect(r.status, bad).toBe(400);
        expect(JSON.parse(r.body).error, bad).toMatch(/^bad device id .*expected 1–64 characters \[A-Za-z0-9._-\]/);
      }
      const r = await get(`${collector.httpUrl}/api/devices/never-seen/windows`);
      expect(r.status).toBe(404);
      expect(JSON.parse(r.body).error).toMatch(/no device "never-seen" recorded/);
    });

    it('answers a bad limit with 400 and a write method with 405', async () => {
      for (const bad of ['0', 'abc', '10001', '-1', '1.5']) {
        const r = await get(`${collector.httpUrl}/api/devices/pi-a/windows?limit=${bad}`);
        expect(r.status, bad).toBe(400);
        expect(JSON.parse(r.body).error).toMatch(/bad limit .*expected an integer from 1 to 10000/);
      }
      const post = await get(`${collector.httpUrl}/metrics`, { method: 'POST', body: 'x' });
      expect(post.status).toBe(405);
      expect(post.body).toMatch(/method POST not allowed/);
    });

    it('survives garbage on the socket and keeps serving', async () => {
      const port = Number(new URL(collector.httpUrl!).port);
      const reply = await new Promise<string>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => s.write('\x00\x01 not http at all\r\n\r\n'));
        let got = '';
        s.on('data', (d) => (got += d.toString()));
        s.on('end', () => resolve(got));
        s.on('error', reject);
      });
      expect(reply).toMatch(/^HTTP\/1\.1 400 Bad Request/);
      expect((await get(`${collector.httpUrl}/metrics`)).status).toBe(200);
    });

    it('refuses a --http value that is not a listen address, before starting anything', async () => {
      for (const bad of ['nope', 'host:port', '127.0.0.1:70000', '1.2.3.4:', '[::1:9464'])
        expect(() => parseHttpListen(bad), bad).toThrow(InputError);
      expect(parseHttpListen('off')).toBe(false);
      expect(parseHttpListen('9464')).toEqual({ host: '127.0.0.1', port: 9464 });
      expect(parseHttpListen('0.0.0.0:0')).toEqual({ host: '0.0.0.0', port: 0 });
      expect(parseHttpListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
      const r = await runCli('collect', '--db', path.join(dir, 'unused.db'), '--port', '0', '--http', 'nope:xx');
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/--http "nope:xx" is not a listen address/);
    });

    it('says which port is busy and how to fix it', async () => {
      const busy = Number(new URL(collector.httpUrl!).port);
      await expect(startCollector({ dbFile: path.join(dir, 'other.db'), port: 0, host: '127.0.0.1', http: { host: '127.0.0.1', port: busy }, onLog: () => undefined })).rejects.toThrow(
        `collector HTTP server cannot listen on 127.0.0.1:${busy}: port ${busy} is in use`,
      );
    });
  });
});

describe('collector /metrics across a retention prune', () => {
  it('keeps every counter at what the devices sent in all, not what is still stored', async () => {
    const dir = await tempDir('fleet-http-retention');
    const dbFile = path.join(dir, 'fleet.db');
    // Four windows stored by an earlier run; with a 1-day retention at this `now`, the two that
    // ended before T0 + 25 s are deleted when the collector starts.
    const earlier = [0, 1, 2, 3].map((i) => win(i, 3, PI_A_EXTRA[i]));
    const store = openFleetStore(dbFile);
    await store.recordBirth({ device: 'old-a', fleet: FLEET, bdSeq: 1, seq: 0, ...BIRTH_INFO, at: T0 }, T0);
    await store.transaction(async () => {
      for (const [i, w] of earlier.entries()) await store.recordWindow({ id: i, bdSeq: 1, seq: i + 1, device: 'old-a', droppedWindows: 0, ...w }, FLEET, T0);
    });
    await store.close();
    const logs: string[] = [];
    const now = T0 + 25_000 + 86_400_000;
    const c = await startCollector({ dbFile, port: 0, host: '127.0.0.1', http: { host: '127.0.0.1', port: 0 }, retentionDays: 1, now: () => now, onLog: (l) => logs.push(l) });
    const conn = await connectMqtt({ url: c.url, clientId: 'raw-http-retention', protocolVersion: 4 });
    try {
      expect(logs).toContain('retention: deleted 2 windows older than 1 days');
      expect((await c.store.latestWindows('old-a', 10)).map((w) => w.id)).toEqual([3, 2]);
      // One more window after the prune, and the same one again (a duplicate adds nothing).
      const later = win(4, 4, { accuracy: { correct: 1, labelled: 2 } });
      const t = topicFor(FLEET, 'old-a', 'metrics');
      // A four-exit bundle (three thresholds): the collector refuses histograms longer than the birth announced.
      const birth4 = { ...BIRTH_INFO, bundle: { ...BIRTH_INFO.bundle, thresholds: [0.9, 0.8, 0.7] } };
      await conn.publish(topicFor(FLEET, 'old-a', 'birth'), json({ device: 'old-a', fleet: FLEET, bdSeq: 2, seq: 0, ...birth4, at: now }));
      await conn.publish(t, json({ id: 4, bdSeq: 2, seq: 1, device: 'old-a', droppedWindows: 0, ...later }));
      await conn.publish(t, json({ id: 4, bdSeq: 2, seq: 1, device: 'old-a', droppedWindows: 0, ...later }));
      await until(async () => (await c.counters()).duplicates === 1, 'the duplicate');

      const r = await get(`${c.httpUrl}/metrics`);
      expect(r.status).toBe(200);
      const fams = parseExposition(r.body);
      const all = [...earlier, later];
      const e = { ...sums(all), ...labels(all) };
      expect(e).toMatchObject({ count: 60, exits: [42, 5, 10, 3] });
      const d = { device: 'old-a', fleet: FLEET };
      expect(sampleValue(fams, 'edgeexit_windows_total', d)).toBe(5);
      expect(sampleValue(fams, 'edgeexit_inferences_total', d)).toBe(e.count);
      expect(sampleValue(fams, 'edgeexit_energy_joules_total', d)).toBe(e.joules);
      expect(sampleValue(fams, 'edgeexit_labelled_inferences_total', d)).toBe(e.labelled);
      expect(sampleValue(fams, 'edgeexit_correct_inferences_total', d)).toBe(e.correct);
      e.exits.forEach((n, k) => expect(sampleValue(fams, 'edgeexit_exits_total', { ...d, exit: String(k) }), `exit ${k}`).toBe(n));
      expect(fams.get('edgeexit_exits_total')!.samples).toHaveLength(4);
      expect(sampleValue(fams, 'edgeexit_collector_messages_total', { result: 'stored' })).toBe(5);
      expect(sampleValue(fams, 'edgeexit_collector_messages_total', { result: 'duplicate' })).toBe(1);
      // The JSON API and fleet status read the same running totals.
      const api = JSON.parse((await get(`${c.httpUrl}/api/fleet`)).body) as FleetApi;
      expect(api.devices).toEqual([expect.objectContaining({ device: 'old-a', windows: 5, inferences: 60, exits: [42, 5, 10, 3], labelled: e.labelled, correct: e.correct })]);
    } finally {
      await conn.end();
      await c.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('exposition parser used above', () => {
  it('rejects what the format does not allow (bad input)', () => {
    const ok = '# HELP a_total x\n# TYPE a_total counter\na_total{d="1"} 3\n';
    expect(sampleValue(parseExposition(ok), 'a_total', { d: '1' })).toBe(3);
    for (const bad of [
      ok.trimEnd(), // no final line feed
      'a_total 3\n', // sample without HELP/TYPE
      '# HELP a x\n# TYPE a counter\na 1\n', // counter not *_total
      '# HELP a_total x\n# TYPE a_total counter\na_total{d="1} 3\n', // unterminated label value
      '# HELP a_total x\n# TYPE a_total counter\na_total{d="\\t"} 3\n', // bad escape
      '# HELP a_total x\n# TYPE a_total counter\na_total{1d="x"} 3\n', // bad label name
      '# HELP a_total x\n# TYPE a_total counter\na_total 3.0.0\n', // bad float
      '# HELP a_total x\n# TYPE a_total counter\na_total -1\n', // negative counter
      '# HELP a_total x\n# TYPE a_total counter\na_total 1\na_total 2\n', // duplicate series
      '# HELP g x\n# TYPE g gauge\ng 1\n# HELP h x\n# TYPE h gauge\nh 1\ng{x="1"} 2\n', // family split
      '# HELP s x\n# TYPE s summary\ns 1\n', // summary sample without quantile
      '# HELP 1a x\n# TYPE 1a gauge\n', // bad metric name
    ])
      expect(() => parseExposition(bad), JSON.stringify(bad)).toThrow(PromParseError);
  });

  it('escapes label values as the format says', () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
  });
});

describe('edgeexit collect --http', () => {
  it('logs the dashboard URL and serves /metrics there until aborted', async () => {
    const dir = await tempDir('fleet-collect-http');
    try {
      const ac = new AbortController();
      let err = '';
      const run = collectCommand({ db: path.join(dir, 'fleet.db'), port: 0, http: '127.0.0.1:0' }, { out: () => undefined, err: (t) => void (err += t + '\n') }, ac.signal);
      await until(() => err.includes('collecting '), 'collector start');
      const url = /dashboard at (http:\/\/127\.0\.0\.1:\d+)\//.exec(err)?.[1];
      expect(url).toBeDefined();
      const m = await get(`${url}/metrics`);
      expect(m.status).toBe(200);
      expect(sampleValue(parseExposition(m.body), 'edgeexit_window_gaps_total')).toBe(0);
      const page = await get(`${url}/`);
      expect(page.status).toBe(200);
      expect(page.body).toContain('<title>edgeexit fleet</title>');
      ac.abort();
      await run;
      await expect(fetch(`${url}/metrics`)).rejects.toThrow();
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
