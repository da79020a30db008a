// The dashboard at fleet scale in real headless Chromium: 1,000 simulated devices in three
// hardware classes (written through the store calls the collector makes, into a real SQLite
// file), one class regressed (latency ×2) and drifting from its baseline. The page must show one
// bounded page of a table, sorted and filtered as asked, with per-class aggregates equal to what
// the store holds, the drifting class flagged, and one device's charts on demand.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { fleetStatus, openFleetStore, startFleetHttp, type FleetHttpServer, type FleetStore, type FleetStatus } from '../../src/fleet/index.js';
import { loadSimClasses, recordSimulatedFleet } from '../../src/fleet/simulate.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { CHROMIUM } from '../support/require.js';

const CLASSES = 'rpi4:500,rpi5:300,jetson-orin-nano:200';
const T_END = 1_700_000_000_000;

/** p95 the clean (unfaulted) class shows: what a calibration would have predicted for it. */
async function cleanP95(dir: string, cls: string): Promise<number> {
  const store = openFleetStore(path.join(dir, `clean-${cls}.db`));
  try {
    await recordSimulatedFleet(store, { fleet: 'yard', classes: await loadSimClasses(`${cls}:40`), windows: 3, endAt: T_END, seed: 9 });
    const s = await fleetStatus(store);
    const p95s = s.devices.map((d) => d.p95LatencyMs!);
    return p95s.reduce((a, b) => a + b, 0) / p95s.length;
  } finally {
    await store.close();
  }
}

CHROMIUM.describe('fleet dashboard with 1,000 devices in headless Chromium', () => {
  let dir: string;
  let store: FleetStore;
  let server: FleetHttpServer;
  let browser: Browser;
  let page: Page;
  let status: FleetStatus;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    dir = await tempDir('fleet-table');
    store = openFleetStore(path.join(dir, 'fleet.db'));
    const classes = await loadSimClasses(CLASSES, ['rpi5:latency=2x']);
    const r = await recordSimulatedFleet(store, { fleet: 'yard', classes, windows: 3, endAt: T_END });
    expect(r).toEqual({ devices: 1000, windows: 3000 });
    for (const c of classes)
      await store.setDriftBaseline({
        fleet: 'yard', deviceClass: c.name, exitRates: c.profile.exitShares, p95Ms: await cleanP95(dir, c.name),
        maxExitShiftPp: 10, maxLatencyRatio: 1.3, minWindows: 20, source: 'test', setAt: T_END,
      });
    status = await fleetStatus(store);
    server = await startFleetHttp({ store, host: '127.0.0.1', port: 0, onLog: () => undefined });
    browser = await chromium.launch({ executablePath: CHROMIUM.get(), args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'] });
    page = await browser.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
    // A long refresh: the test drives every update itself.
    await page.goto(`${server.url}/?refresh=600`);
    await page.waitForSelector('body[data-state="ready"]');
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await store?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const rowValues = (key: string) => page.$$eval(`#devices tbody tr td[data-key="${key}"]`, (els) => els.map((e) => e.getAttribute('data-value')));
  // Attribute selectors, not waitForFunction: the page's CSP (rightly) forbids evaluating strings.
  const waitQuery = (part: string) => page.waitForSelector(`body[data-query*="${part}"]`);

  it('shows one page of 100 rows of 1,000 devices, not a card per device', async () => {
    expect(await page.textContent('#summary')).toMatch(/^1000 devices, 1000 online/);
    expect(await page.$$eval('#devices tbody tr', (els) => els.length)).toBe(100);
    expect(await page.$$('section.device')).toHaveLength(0);
    expect(await page.textContent('#page')).toBe('1–100 of 1000');
    expect(await rowValues('device')).toEqual(status.devices.map((d) => d.device).sort().slice(0, 100));
  });

  it('aggregates per class equal what the store holds', async () => {
    const shown = await page.$$eval('#classes tbody tr', (rows) =>
      rows.map((r) => Object.fromEntries([...r.querySelectorAll('td')].map((td) => [td.getAttribute('data-key'), td.getAttribute('data-value')]))),
    ) as Record<string, string>[];
    const totals = new Map((await store.totals()).map((t) => [t.device, t]));
    expect(shown.map((r) => r.class)).toEqual(['jetson-orin-nano', 'rpi4', 'rpi5']);
    for (const r of shown) {
      const ds = status.devices.filter((d) => d.deviceClass === r.class);
      expect(Number(r.devices), r.class).toBe(ds.length);
      expect(Number(r.online), r.class).toBe(ds.length);
      const p95s = ds.map((d) => d.p95LatencyMs!);
      expect(Number(r.meanP95), r.class).toBeCloseTo(p95s.reduce((a, b) => a + b, 0) / p95s.length, 9);
      expect(Number(r.maxP95), r.class).toBe(Math.max(...p95s));
      const inf = ds.reduce((a, d) => a + totals.get(d.device)!.count, 0);
      const exits = [0, 1, 2].map((k) => ds.reduce((a, d) => a + totals.get(d.device)!.exits[k]!, 0) / inf);
      r.exitRates!.split(',').map(Number).forEach((x: number, k: number) => expect(x, `${r.class} exit ${k}`).toBeCloseTo(exits[k]!, 12));
      expect(Number(r.jpi), r.class).toBeCloseTo(ds.reduce((a, d) => a + totals.get(d.device)!.joules, 0) / inf, 12);
    }
  });

  it('flags the regressed class as drifting, and only it', async () => {
    expect(await page.$$eval('#classes tbody tr', (rows) => rows.map((r) => [r.getAttribute('data-class'), r.getAttribute('data-drifting')]))).toEqual([
      ['jetson-orin-nano', 'false'],
      ['rpi4', 'false'],
      ['rpi5', 'true'],
    ]);
    const items = await page.$$eval('#drift li', (els) => els.map((e) => [e.getAttribute('data-class'), e.textContent]));
    expect(items).toHaveLength(1);
    expect(items[0]![0]).toBe('rpi5');
    expect(items[0]![1]).toMatch(/^yard\/rpi5: p95 .* ms is \d\.\d\d× the predicted/);
  });

  it('sorts by p95, slowest first, across the whole fleet', async () => {
    await page.click('#devices th[data-sort="p95"] button');
    await waitQuery('sort=p95&dir=asc');
    await page.click('#devices th[data-sort="p95"] button');
    await waitQuery('sort=p95&dir=desc');
    const want = [...status.devices].sort((a, b) => b.p95LatencyMs! - a.p95LatencyMs! || a.device.localeCompare(b.device)).slice(0, 100);
    expect((await rowValues('p95')).map(Number)).toEqual(want.map((d) => d.p95LatencyMs));
    expect(await rowValues('device')).toEqual(want.map((d) => d.device));
    expect(await page.getAttribute('#devices th[data-sort="p95"]', 'aria-sort')).toBe('descending');
  });

  it('filters by text and by class, and the aggregates follow the filter', async () => {
    await page.fill('#filter', 'jetson');
    await waitQuery('q=jetson');
    expect(await page.getAttribute('body', 'data-matched')).toBe('200');
    expect(new Set(await rowValues('class'))).toEqual(new Set(['jetson-orin-nano']));
    expect(await page.$$eval('#classes tbody tr', (rows) => rows.map((r) => r.getAttribute('data-class')))).toEqual(['jetson-orin-nano']);
    await page.fill('#filter', '');
    await page.waitForSelector('body:not([data-query*="q="])');
    await page.selectOption('#class', 'rpi4');
    await waitQuery('class=rpi4');
    expect(await page.getAttribute('body', 'data-matched')).toBe('500');
    expect(await page.textContent('#summary')).toMatch(/^1000 devices, 500 shown by the filter/);
    await page.click('#next');
    await waitQuery('offset=100');
    expect(await page.textContent('#page')).toBe('101–200 of 500 matching');
    expect(new Set(await rowValues('class'))).toEqual(new Set(['rpi4']));
  });

  it("draws one device's windows on demand", async () => {
    const device = (await rowValues('device'))[3]!;
    await page.click(`#devices tr[data-device="${device}"]`);
    await page.waitForSelector(`#detail[data-device="${device}"] svg.chart-latency`);
    const ys = await page.$$eval('#detail svg.chart-latency circle.pt', (els) => els.map((e) => Number(e.getAttribute('data-y'))));
    const stored = (await store.latestWindows(device, 10)).reverse();
    expect(ys).toEqual(stored.map((w) => w.latencyP95));
    expect(await page.getAttribute(`#devices tr[data-device="${device}"]`, 'aria-selected')).toBe('true');
  });

  it('keeps /api/table bounded', async () => {
    const big = await fetch(`${server.url}/api/table?limit=501`);
    expect(big.status).toBe(400);
    expect(((await big.json()) as { error: string }).error).toMatch(/limit .* from 1 to 500/);
    const page500 = (await (await fetch(`${server.url}/api/table?limit=500&offset=900`)).json()) as { rows: unknown[]; matched: number };
    expect(page500.rows).toHaveLength(100);
    expect(page500.matched).toBe(1000);
    expect((await fetch(`${server.url}/api/table?sort=nope`)).status).toBe(400);
    // The older per-fleet endpoint pages too: at most 500 devices a reply, with the total.
    type Fleet = { total: number; offset: number; devices: { device: string }[] };
    const first = (await (await fetch(`${server.url}/api/fleet`)).json()) as Fleet;
    const rest = (await (await fetch(`${server.url}/api/fleet?offset=500&limit=500`)).json()) as Fleet;
    expect([first.total, first.devices.length, rest.offset, rest.devices.length]).toEqual([1000, 500, 500, 500]);
    expect([...first.devices, ...rest.devices].map((d) => d.device)).toEqual(status.devices.map((d) => d.device));
  });

  it('logged no console errors', () => {
    expect(consoleErrors).toEqual([]);
  });
});
