// Finding 4 of issue 12: one schema-valid window must not break the fleet view. A real collector
// (embedded broker, real SQLite file, HTTP on) gets each hostile window of the finding over MQTT:
// windowEnd 2^53−1, a window ten years ahead, joules 1e308 twice, a 30,000-entry exitHistogram
// from a device that never sent a birth, count 2^53−1, and more exits than the birth announced.
// Each is refused and counted under its reason; /metrics and the SQLite file agree and stay finite;
// `fleet status` and the dashboard (headless Chromium) keep working even over rows an older
// collector stored unchecked; /metrics caps its series. Also: device strings that carry newlines
// and ANSI escapes reach neither the log nor `fleet status` raw.
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, checkWindowBounds } from '../../src/fleet/bounds.js';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import { renderMetrics } from '../../src/fleet/metrics.js';
import { connectMqtt, topicFor, type MqttConnection } from '../../src/telemetry/index.js';
import type { MetricsWindow } from '../../src/telemetry/payloads.js';
import { runCli } from '../cli/helpers.js';
import { BIRTH_INFO, tempDir } from '../telemetry/mqtt/fixtures.js';
import { parseExposition, sampleValue } from './prom-parse.js';
import { until } from '../support/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const FLEET = 'lab';
const NOW = Date.now();
const TEN_YEARS = 10 * 365 * 86_400_000;
const json = (v: unknown) => Buffer.from(JSON.stringify(v));

function win(device: string, id: number, over: Partial<MetricsWindow> = {}): MetricsWindow {
  return {
    id,
    bdSeq: 0,
    seq: id % 256,
    device,
    windowStart: NOW - 20_000 + id * 1000,
    windowEnd: NOW - 10_000 + id * 1000,
    count: 10,
    exitHistogram: [6, 3, 1],
    latencyMs: { endToEnd: { p50: 3, p95: 7, p99: 9 }, stages: [] },
    energy: { joules: 1.5, meanWatts: 0.15, source: 'model', meter: 'model' },
    droppedWindows: 0,
    ...over,
  };
}

describe('collector bounds', () => {
  let dir: string;
  let dbFile: string;
  let collector: Collector;
  let raw: MqttConnection;
  const logs: string[] = [];
  let sentCount = 0;
  const send = async (topic: string, payload: Buffer) => {
    await raw.publish(topic, payload, { qos: 1 });
    sentCount++;
  };

  beforeAll(async () => {
    dir = await tempDir('bounds');
    dbFile = path.join(dir, 'fleet.db');
    collector = await startCollector({ dbFile, port: 0, http: { host: '127.0.0.1', port: 0 }, onLog: (l) => logs.push(l) });
    raw = await connectMqtt({ url: collector.url, clientId: 'bounds-raw', protocolVersion: 4 });
    const m = topicFor(FLEET, 'pi-1', 'metrics');
    const huge = Number.MAX_SAFE_INTEGER;
    await send(topicFor(FLEET, 'pi-1', 'birth'), json({ device: 'pi-1', fleet: FLEET, bdSeq: 0, seq: 0, ...BIRTH_INFO, at: NOW }));
    await send(m, json(win('pi-1', 1)));
    await send(m, json(win('pi-1', 2, { windowEnd: huge })));
    await send(m, json(win('pi-1', 3, { windowStart: NOW + TEN_YEARS, windowEnd: NOW + TEN_YEARS + 10_000 })));
    await send(m, json(win('pi-1', 4, { energy: { joules: 1e308, meanWatts: 1, source: 'model', meter: 'model' } })));
    await send(m, json(win('pi-1', 5, { energy: { joules: 1e308, meanWatts: 1, source: 'model', meter: 'model' } })));
    await send(m, json(win('pi-1', 6, { count: huge, exitHistogram: [huge] })));
    // The birth announced 3 exits (two thresholds).
    await send(m, json(win('pi-1', 7, { exitHistogram: [6, 2, 1, 1] })));
    const ghost = win('ghost', 1, { count: 30_000, exitHistogram: new Array<number>(30_000).fill(1) });
    expect(json(ghost).length).toBeLessThan(64 * 1024);
    await send(topicFor(FLEET, 'ghost', 'metrics'), json(ghost));
    await send(m, json(win('pi-1', 8)));
    await until(() => collector.handled() === sentCount, 'every message handled');
  });
  afterAll(async () => {
    await raw?.end();
    await collector?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('refuses every hostile window of finding 4, counted and logged by reason, and stores the good ones', async () => {
    // Refused windows arrived: the good window after them (seq 8 after seq 1) counts no gap.
    expect(await collector.counters()).toMatchObject({ clockSkew: 2, outOfRange: 3, tooManyExits: 2, invalid: 0, unknownDevice: 0, gaps: 0 });
    expect(await collector.store.totals()).toEqual([expect.objectContaining({ device: 'pi-1', windows: 2, count: 20, joules: 3, exits: [12, 6, 2] })]);
    // The refused window from a device with no birth did not even create a device row.
    expect((await collector.store.devices()).map((d) => d.device)).toEqual(['pi-1']);
    const refused = logs.filter((l) => /^(clockSkew|outOfRange|tooManyExits):/.test(l));
    expect(refused).toEqual([
      expect.stringMatching(/^clockSkew: edgeexit\/v1\/lab\/pi-1\/metrics: windowEnd: expected at most 300 s after the receive time .*, got 9007199254740991 /),
      expect.stringMatching(/^clockSkew: .*pi-1\/metrics: windowStart: expected at most 300 s after/),
      expect.stringMatching(/^outOfRange: .*pi-1\/metrics: energy\.joules: expected a finite number from 0 to 100000, got 1e\+308$/),
      expect.stringMatching(/^outOfRange: .*pi-1\/metrics: energy\.joules:/),
      expect.stringMatching(/^outOfRange: .*pi-1\/metrics: count: expected a finite number from 0 to 1000000000, got 9007199254740991$/),
      expect.stringMatching(/^tooManyExits: .*pi-1\/metrics: exitHistogram: expected at most 3 entries \(the exits of the device's bundle, from its birth\), got 4 entries$/),
      expect.stringMatching(/^tooManyExits: .*ghost\/metrics: exitHistogram: expected at most 16 entries \(the cap for a device whose birth did not give its exits\), got 30000 entries$/),
    ]);
  });

  it('/metrics stays finite and small, counts refusals by reason, and agrees with the SQLite file', async () => {
    const body = await (await fetch(`${collector.httpUrl}/metrics`)).text();
    const fams = parseExposition(body);
    const d = { device: 'pi-1', fleet: FLEET };
    const db = new Database(dbFile, { readonly: true, fileMustExist: true });
    const row = db.prepare<[], { count: number; joules: number }>("SELECT count, joules FROM device_totals WHERE device = 'pi-1'").get()!;
    db.close();
    expect(sampleValue(fams, 'edgeexit_energy_joules_total', d)).toBe(row.joules);
    expect(sampleValue(fams, 'edgeexit_inferences_total', d)).toBe(row.count);
    expect(Number.isFinite(row.joules)).toBe(true);
    expect(body).not.toMatch(/\+Inf|NaN/);
    for (const [result, n] of [['clock_skew', 2], ['out_of_range', 3], ['too_many_exits', 2]] as const)
      expect(sampleValue(fams, 'edgeexit_collector_messages_total', { result })).toBe(n);
    const series = [...fams.values()].reduce((a, f) => a + f.samples.length, 0);
    expect(series).toBeLessThan(60);
  });

  it('keeps `fleet status`, /metrics and the dashboard working over rows an unchecked collector stored', async () => {
    // As an older collector would have stored them: straight into the store, past every check.
    const legacy = win('legacy', 1, { windowStart: 0, windowEnd: Number.MAX_SAFE_INTEGER, count: 30_000, exitHistogram: new Array<number>(30_000).fill(1) });
    await collector.store.recordWindow(legacy, FLEET, NOW);

    const status = await runCli('fleet', 'status', '--db', dbFile);
    expect(status.code).toBe(0);
    expect(status.out).toMatch(/^pi-1 +online/m);
    expect(status.out).toMatch(/^legacy +offline/m);

    // 30,000 exit series would pass the cap: the device is left out, and that is said.
    const fams = parseExposition(await (await fetch(`${collector.httpUrl}/metrics`)).text());
    expect(sampleValue(fams, 'edgeexit_collector_devices_omitted')).toBe(1);
    expect(fams.get('edgeexit_exits_total')!.samples.map((s) => s.labels.device)).toEqual(['pi-1', 'pi-1', 'pi-1']);
    const small = parseExposition(await renderMetrics(collector.store, { maxSeries: 10 }));
    expect(sampleValue(small, 'edgeexit_collector_devices_omitted')).toBe(2);

    if (!existsSync(CHROMIUM)) return;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${collector.httpUrl}/?refresh=1`);
      await page.waitForSelector('body[data-state="ready"]', { timeout: 20_000 });
      expect(await page.textContent('#error')).toBe('');
      expect(await page.$$eval('#devices tbody tr', (els) => els.map((e) => e.getAttribute('data-device')))).toEqual(['legacy', 'pi-1']);
      await page.click('#devices tr[data-device="pi-1"]');
      await page.waitForSelector('#detail[data-device="pi-1"] .stats');
      expect(await page.textContent('#detail .stats')).toContain('20 inferences in 2 windows');
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it('a birth field carrying a newline and ANSI escapes forges no log line and no `fleet status` row', async () => {
    const forged = { ...BIRTH_INFO, profile: '\u001b]0;owned\u0007rpi4', bundle: { ...BIRTH_INFO.bundle, name: 'mnist\n death: pi-07 offline', version: '\u001b[2J\u001b[31m1.0' } };
    const before = collector.handled();
    await raw.publish(topicFor(FLEET, 'pi-8', 'birth'), json({ device: 'pi-8', fleet: FLEET, bdSeq: 0, seq: 0, ...forged, at: NOW }), { qos: 1 });
    await until(() => collector.handled() === before + 1, 'the birth handled');
    // eslint-disable-next-line no-control-regex -- the test looks for forged control characters
    expect(logs.filter((l) => /\n|\r|\u001b|\u0007/.test(l))).toEqual([]);
    expect(logs.some((l) => /^\s*death: pi-07/.test(l))).toBe(false);
    expect(logs).toContain('birth: pi-8 online (bdSeq 0, mnist\\n death: pi-07 offline \\e[2J\\e[31m1.0)');

    const status = await runCli('fleet', 'status', '--db', dbFile);
    expect(status.code).toBe(0);
    expect(status.out).not.toMatch(/^\s*death: pi-07 offline/m);
    // eslint-disable-next-line no-control-regex -- the test looks for a forged ESC
    expect(status.out).not.toMatch(/\u001b/);
    expect(status.out).toMatch(/^pi-8 +online +mnist\\n death: pi-07 offline \\e\[2J\\e\[31m1\.0/m);
  });
});

describe('window limits', () => {
  it('the clock skew is configurable: what the default lets through, a tighter limit refuses', () => {
    const ahead = win('pi-1', 1, { windowStart: NOW + 30_000, windowEnd: NOW + 60_000 });
    expect(checkWindowBounds(ahead, NOW, 3)).toBeUndefined();
    expect(checkWindowBounds(ahead, NOW, 3, { ...DEFAULT_LIMITS, maxFutureSkewMs: 10_000 })).toMatchObject({ reason: 'clockSkew', where: 'windowStart' });
  });
});
