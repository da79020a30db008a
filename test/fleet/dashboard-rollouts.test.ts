// Rollouts on the dashboard in real headless Chromium: a rollout record written through the fleet
// store (a real SQLite file), with one class aborted on a gate breach and one completed, must show
// per class its status, waves, gate values and reasons, and the devices in each phase, as the
// record holds them. /api/rollouts stays bounded however many rollouts the store holds.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openFleetStore, startFleetHttp, type FleetHttpServer, type FleetStore } from '../../src/fleet/index.js';
import { DEFAULT_SPEC, cohortStats, evaluateGates, newRollout, parseGate, planRollout, type BundleInfo, type FleetDevice, type RolloutRecord } from '../../src/fleet/rollout-plan.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { CHROMIUM } from '../support/require.js';

const T0 = 1_700_000_000_000;
const target: BundleInfo = { bundle: 'b'.repeat(64), model: { name: 'fmnist-branchy', version: '1.2.0' }, manifest: { sha256: 'b'.repeat(64), bytes: 900 }, signature: { sha256: 'c'.repeat(64), bytes: 64 } };

/** 10 rpi4 (completed: canary and two waves passed) and 6 rpi5 (canary aborted: p95 gate breached, rolled back). */
function record(id: string, now: number): RolloutRecord {
  const devices: FleetDevice[] = [
    ...Array.from({ length: 10 }, (_, i) => ({ device: `pi4-${String(i).padStart(2, '0')}`, class: 'rpi4', bundle: 'a'.repeat(64) })),
    ...Array.from({ length: 6 }, (_, i) => ({ device: `pi5-${i}`, class: 'rpi5', bundle: 'a'.repeat(64) })),
  ];
  const spec = { ...DEFAULT_SPEC, canary: { kind: 'count' as const, value: 2 }, waves: [0.5, 1], gates: [parseGate('p95<1.1x')] };
  const plan = planRollout(devices, target.bundle, spec);
  const r = newRollout({ id, fleet: 'yard', target, previous: {}, spec, plan, devices, baselines: {}, now });
  const w = (p95: number) => [{ count: 100, joules: 1, latencyP95: p95, exitHistogram: [60, 40] }];
  const stats = (p95: number) => cohortStats(new Map([['x', w(p95)]]));
  const pass = evaluateGates(spec.gates, stats(5), stats(5));
  const fail = evaluateGates(spec.gates, stats(10), stats(5));
  const pi4 = r.classes.rpi4!;
  pi4.steps.forEach((s) => Object.assign(s, { openedAt: now, doneAt: now + 1, passedAt: now + 2, gates: pass }));
  Object.assign(pi4, { status: 'completed', current: pi4.steps.length });
  const pi5 = r.classes.rpi5!;
  Object.assign(pi5.steps[0]!, { openedAt: now, doneAt: now + 1, gates: fail });
  Object.assign(pi5, { status: 'aborted', reason: `canary: gate failed: ${fail[0]!.reason}` });
  for (const [d, rec] of Object.entries(r.devices)) {
    if (rec.class === 'rpi4') rec.phase = 'updated';
    else if (pi5.steps[0]!.devices.includes(d)) rec.phase = 'rolled-back';
  }
  return { ...r, status: 'partial', reason: 'rpi5 aborted', touched: 12, updatedAt: now + 3 };
}

CHROMIUM.describe('rollouts on the dashboard in headless Chromium', () => {
  let dir: string;
  let store: FleetStore;
  let server: FleetHttpServer;
  let browser: Browser;
  let page: Page;
  const consoleErrors: string[] = [];
  let latest: RolloutRecord;

  beforeAll(async () => {
    dir = await tempDir('fleet-rollouts');
    store = openFleetStore(path.join(dir, 'fleet.db'));
    // 25 rollouts: more than one reply holds; the newest is the one checked.
    for (let i = 0; i < 25; i++) await store.saveRollout(record(`r-${String(i).padStart(2, '0')}`, T0 + i * 1000));
    latest = (await store.rollout('r-24'))!.record;
    server = await startFleetHttp({ store, host: '127.0.0.1', port: 0, onLog: () => undefined });
    browser = await chromium.launch({ executablePath: CHROMIUM.get(), args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'] });
    page = await browser.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
    await page.goto(`${server.url}/?refresh=600`);
    await page.waitForSelector('body[data-state="ready"]');
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await store?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('shows the newest rollouts, bounded, newest first', async () => {
    const ids = await page.$$eval('#rollouts section.rollout', (els) => els.map((e) => e.getAttribute('data-rollout')));
    expect(ids).toEqual(Array.from({ length: 20 }, (_, i) => `r-${String(24 - i).padStart(2, '0')}`));
    expect(await page.textContent('#rollouts > p.note')).toBe('the latest 20 of 25 rollouts');
  });

  it("shows each class's status, waves, gate values and reasons, and device phases as stored", async () => {
    const sel = '#rollouts section[data-rollout="r-24"]';
    expect(await page.getAttribute(sel, 'data-status')).toBe('partial');
    const rows = await page.$$eval(`${sel} tbody tr`, (trs) =>
      trs.map((tr) => Object.fromEntries([...tr.querySelectorAll(':scope > td')].map((td) => [td.getAttribute('data-key'), td.getAttribute('data-value')]))),
    ) as Record<string, string>[];
    expect(rows.map((r) => [r.class, r.status, r.current])).toEqual([['rpi4', 'completed', ''], ['rpi5', 'aborted', 'canary']]);
    for (const r of rows) {
      const want: Record<string, number> = {};
      for (const d of Object.values(latest.devices)) if (d.class === r.class) want[d.phase] = (want[d.phase] ?? 0) + 1;
      const shown = Object.fromEntries(Object.entries(r).filter(([k, v]) => k.startsWith('phase-') && v !== '0').map(([k, v]) => [k.slice(6), Number(v)]));
      expect(shown, r.class).toEqual(want);
    }
    expect(rows[1]).toMatchObject({ 'phase-rolled-back': '2', 'phase-waiting': '4' });
    expect(await page.$$eval(`${sel} tr[data-class="rpi4"] li[data-step]`, (els) => els.map((e) => e.getAttribute('data-step')))).toEqual(latest.classes.rpi4!.steps.map((s) => s.name));
    const gate = await page.$eval(`${sel} tr[data-class="rpi5"] li.gate`, (e) => [e.getAttribute('data-verdict'), Number(e.getAttribute('data-value')), e.textContent]);
    const stored = latest.classes.rpi5!.steps[0]!.gates![0]!;
    expect(gate).toEqual(['fail', stored.value, `p95<1.1x fail: ${stored.reason}`]);
    expect(stored.value).toBe(2);
    expect(await page.textContent(`${sel} tr[data-class="rpi5"] td[data-key="status"]`)).toBe(`aborted: ${latest.classes.rpi5!.reason}`);
  });

  it('keeps /api/rollouts bounded', async () => {
    const api = (await (await fetch(`${server.url}/api/rollouts?limit=3`)).json()) as { total: number; rollouts: { id: string; devices: number; touched: number }[] };
    expect([api.total, api.rollouts.map((r) => r.id)]).toEqual([25, ['r-24', 'r-23', 'r-22']]);
    expect(api.rollouts[0]).toMatchObject({ devices: 16, touched: 12 });
    const big = await fetch(`${server.url}/api/rollouts?limit=21`);
    expect(big.status).toBe(400);
    expect(((await big.json()) as { error: string }).error).toMatch(/limit .* from 1 to 20/);
  });

  it('logged no console errors', () => {
    expect(consoleErrors).toEqual([]);
  });
});
