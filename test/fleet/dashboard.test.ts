// The fleet dashboard in real headless Chromium against a real collector (embedded aedes broker,
// real SQLite file, TelemetryPublisher devices): online state per device, one latency point per
// stored window, the exit histogram equal to the stored exit counts, a refresh that picks up a new
// window, and no console errors (which also catches a script blocked by the page's CSP).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCollector, type Collector } from '../../src/fleet/index.js';
import { TelemetryPublisher, connectMqtt, topicFor, type WindowInput } from '../../src/telemetry/index.js';
import { BIRTH_INFO, tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';
import { CHROMIUM } from '../support/require.js';
import { until } from '../support/wait.js';

const FAST = { initialMs: 100, maxMs: 400, factor: 2, jitter: 0.5 };
const T0 = 1_700_000_000_000;

function win(i: number, hist: number[], p95: number): WindowInput {
  const count = hist.reduce((a, b) => a + b, 0);
  return {
    windowStart: T0 + i * 10_000,
    windowEnd: T0 + (i + 1) * 10_000,
    count,
    exitHistogram: hist,
    latencyMs: { endToEnd: { p50: p95 / 2, p95, p99: p95 + 1 }, stages: [] },
    energy: { joules: 0.1 * count, meanWatts: 1, source: 'model', meter: 'model' },
  };
}

CHROMIUM.describe('fleet dashboard in headless Chromium', () => {
  let dir: string;
  let collector: Collector;
  let browser: Browser;
  let page: Page;
  let live: TelemetryPublisher;
  const consoleErrors: string[] = [];
  // What the devices send; the page must show exactly this.
  const sent: Record<string, WindowInput[]> = {
    'jetson-1': [{ ...win(0, [5, 3, 2], 7), accuracy: { correct: 8, labelled: 10 } }, win(1, [8, 1, 1], 4.5), win(2, [2, 2, 6], 12), { ...win(3, [9, 0, 1], 3.25), temperatureC: 51.5 }],
    'pi-old': [win(0, [1, 4], 20), win(1, [3, 3], 18)],
  };

  beforeAll(async () => {
    dir = await tempDir('fleet-dash');
    collector = await startCollector({ dbFile: path.join(dir, 'fleet.db'), port: 0, host: '127.0.0.1', http: { host: '127.0.0.1', port: 0 }, onLog: () => undefined });
    const pub = (device: string) =>
      TelemetryPublisher.start({ url: collector.url, fleet: 'yard', device, stateDir: path.join(dir, device), birth: BIRTH_INFO, protocolVersion: 4, backoff: FAST });
    live = await pub('jetson-1');
    const old = await pub('pi-old');
    for (const w of sent['jetson-1']!) await live.enqueueWindow(w);
    for (const w of sent['pi-old']!) await old.enqueueWindow(w);
    await Promise.all([live.drained(), old.drained()]);
    await old.close();
    // A device that never sent a birth: stored, offline, named "no birth seen".
    const raw = await connectMqtt({ url: collector.url, clientId: 'raw-dash', protocolVersion: 4 });
    await raw.publish(topicFor('yard', 'ghost', 'metrics'), Buffer.from(JSON.stringify({ id: 1, bdSeq: 0, seq: 0, ...windowBody(0, 'ghost') })));
    // pi-old's flash job was rolled back (its retained job/state, as a device reports it).
    const job = { v: 1, job: 'flash-1', state: 'rolled-back', step: 'done', progress: 0.92, reason: 'trial failed: latency regressed', bundle: 'b'.repeat(64), active: 'a'.repeat(64), previous: [], attempts: 1, at: '2026-12-06T00:00:00.000Z' };
    await raw.publish(topicFor('yard', 'pi-old', 'job/state'), Buffer.from(JSON.stringify(job)), { qos: 1, retain: true });
    await raw.end();
    await until(() => collector.jobs.get('yard', 'pi-old')?.state === 'rolled-back', "pi-old's job state");
    await until(async () => (await collector.store.totals()).reduce((n, t) => n + t.windows, 0) === 7, '7 windows');
    await until(async () => (await collector.store.devices()).find((d) => d.device === 'pi-old')?.online === false, 'pi-old offline');

    browser = await chromium.launch({ executablePath: CHROMIUM.get(), args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'] });
    page = await browser.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
    await page.goto(`${collector.httpUrl}/?refresh=1`);
    await page.waitForSelector('body[data-state="ready"]');
  });

  afterAll(async () => {
    await browser?.close();
    await live?.close();
    await collector?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('shows every device with its online state', async () => {
    const cards = await page.$$eval('section.device', (els) => els.map((e) => [e.getAttribute('data-device'), e.getAttribute('data-online'), e.querySelector('.state')!.textContent]));
    expect(cards).toEqual([
      ['ghost', 'false', 'offline'],
      ['jetson-1', 'true', 'online'],
      ['pi-old', 'false', 'offline'],
    ]);
    expect(await page.textContent('section[data-device="ghost"] .meta')).toContain('no birth seen');
    expect(await page.textContent('section[data-device="jetson-1"] .meta')).toContain('mnist-exits 1.2.0');
    expect(await page.textContent('#summary')).toMatch(/^3 devices, 1 online/);
  });

  it('shows on-device accuracy and the latest temperature where the device reported them, nothing where not', async () => {
    const stats = await page.textContent('section[data-device="jetson-1"] .stats');
    expect(stats).toContain('accuracy 80.0 % of 10 labelled');
    expect(stats).toContain('51.5 °C');
    const old = await page.textContent('section[data-device="pi-old"] .stats');
    expect(old).not.toContain('accuracy');
    expect(old).not.toContain('°C');
  });

  it("shows each device's flash job state and reason, nothing for a device without one", async () => {
    expect(await page.textContent('section[data-device="pi-old"] .job')).toBe('flash job flash-1: rolled-back · trial failed: latency regressed');
    expect(await page.getAttribute('section[data-device="pi-old"] .job', 'data-job-state')).toBe('rolled-back');
    expect(await page.$('section[data-device="jetson-1"] .job')).toBeNull();
  });

  it('draws one latency point per stored window, at the sent p95', async () => {
    for (const [device, ws] of Object.entries(sent)) {
      const ys = await page.$$eval(`section[data-device="${device}"] svg.chart-latency circle.pt`, (els) => els.map((e) => Number(e.getAttribute('data-y'))));
      expect(ys, device).toEqual(ws.map((w) => w.latencyMs.endToEnd.p95));
      const energy = await page.$$eval(`section[data-device="${device}"] svg.chart-energy circle.pt`, (els) => els.map((e) => Number(e.getAttribute('data-y'))));
      expect(energy, device).toEqual(ws.map((w) => expect.closeTo(w.energy.joules / w.count, 12)));
    }
  });

  it('draws the exit histogram from the stored exit counts', async () => {
    for (const [device, ws] of Object.entries(sent)) {
      const expected = ws[0]!.exitHistogram.map((_, k) => ws.reduce((a, w) => a + w.exitHistogram[k]!, 0));
      const bars = await page.$$eval(`section[data-device="${device}"] svg.chart-exits rect.bar`, (els) => els.map((e) => [Number(e.getAttribute('data-exit')), Number(e.getAttribute('data-count')), Number(e.getAttribute('height'))]));
      expect(bars.map(([k, n]) => [k, n]), device).toEqual(expected.map((n, k) => [k, n]));
      // Heights follow the shares: the largest count has the tallest bar.
      const tallest = bars.reduce((a, b) => (b[2]! > a[2]! ? b : a));
      expect(tallest[1], device).toBe(Math.max(...expected));
    }
  });

  it('picks up a new window on its next refresh', async () => {
    const renders = Number(await page.getAttribute('body', 'data-renders'));
    const extra = win(4, [4, 4, 4], 9);
    await live.enqueueWindow(extra);
    await live.drained();
    await until(async () => (await collector.store.totals()).find((t) => t.device === 'jetson-1')?.windows === 5, '5th window stored');
    // Waits for a fifth point to appear; the exact list is asserted below.
    await page.locator('section[data-device="jetson-1"] svg.chart-latency circle.pt').nth(4).waitFor();
    expect(Number(await page.getAttribute('body', 'data-renders'))).toBeGreaterThan(renders);
    const ys = await page.$$eval('section[data-device="jetson-1"] svg.chart-latency circle.pt', (els) => els.map((e) => Number(e.getAttribute('data-y'))));
    expect(ys).toEqual([...sent['jetson-1']!, extra].map((w) => w.latencyMs.endToEnd.p95));
  });

  it('logged no console errors', () => {
    expect(consoleErrors).toEqual([]);
  });
});
