// Drift from calibration, with simulated devices in three hardware classes written through the
// store calls the collector makes (real SQLite file): rpi4 runs as calibrated, rpi5 regressed
// (latency ×2), jetson-orin-nano's exits moved later (30 pp from the first exit to the last).
// Baselines come from calibration reports through `edgeexit fleet baseline`; `fleet status`,
// /metrics (parsed, and checked by promtool) and the drift verdicts must name exactly the two
// drifting classes. (What the store keeps for this, per-stage latency, manifest per window and
// baselines, is checked on both stores by the contract in store.test.ts.)
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classDrift, fleetStatus, loadSimClasses, openFleetStore, recordSimulatedFleet, renderMetrics } from '../../src/fleet/index.js';
import { runCli } from '../cli/helpers.js';
import { PROMTOOL } from '../support/require.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { parseExposition, sampleValue } from './prom-parse.js';

const T_END = 1_700_000_000_000;
let dir: string;
let db: string;

/** A calibration report as `edgeexit calibrate` writes it (the fields a baseline reads), predicting the clean class. */
async function reportFor(cls: string): Promise<string> {
  const [c] = await loadSimClasses(`${cls}:30`);
  const clean = openFleetStore(path.join(dir, `clean-${cls}.db`));
  let p95: number;
  try {
    await recordSimulatedFleet(clean, { fleet: 'yard', classes: [c!], windows: 3, endAt: T_END, seed: 5 });
    const ds = (await fleetStatus(clean)).devices;
    p95 = ds.reduce((a, d) => a + d.p95LatencyMs!, 0) / ds.length;
  } finally {
    await clean.close();
  }
  const file = path.join(dir, `${cls}-calibration.json`);
  await fsp.writeFile(file, JSON.stringify({ bundle: 'b', target: { kind: 'latency', targetMs: 9, percentile: 95 }, predicted: { exitFractions: c!.profile.exitShares, latencyMs: p95 } }));
  return file;
}

beforeAll(async () => {
  dir = await tempDir('drift');
  db = path.join(dir, 'fleet.db');
  const store = openFleetStore(db);
  try {
    const classes = await loadSimClasses('rpi4:60,rpi5:40,jetson-orin-nano:30', ['rpi5:latency=2x', 'jetson-orin-nano:exit-shift=0.3']);
    await recordSimulatedFleet(store, { fleet: 'yard', classes, windows: 3, endAt: T_END });
  } finally {
    await store.close();
  }
  for (const cls of ['rpi4', 'rpi5', 'jetson-orin-nano']) {
    const r = await runCli('fleet', 'baseline', '--db', db, '--fleet', 'yard', '--class', cls, '--from', await reportFor(cls));
    expect(r.err).toBe('');
    expect(r.out).toMatch(new RegExp(`^baseline for yard/${cls}: exit shares .* p95 \\d+\\.\\d{3} ms; drift beyond 10 pp or 1.25× once 20 windows are in`));
  }
}, 120_000);

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('drift per hardware class', () => {
  it('names the regressed and the shifted class, and only them', async () => {
    const store = openFleetStore(db, { mustExist: true });
    try {
      const d = Object.fromEntries((await classDrift(store)).map((c) => [c.deviceClass, c]));
      expect(Object.keys(d).sort()).toEqual(['jetson-orin-nano', 'rpi4', 'rpi5']);
      expect(d.rpi4!.drifting).toBe(false);
      expect(d.rpi4!.latencyRatio!).toBeGreaterThan(0.9);
      expect(d.rpi4!.latencyRatio!).toBeLessThan(1.1);
      expect(d.rpi4!.exitShiftPp!).toBeLessThan(5);
      expect(d.rpi5!.drifting).toBe(true);
      expect(d.rpi5!.latencyRatio!).toBeGreaterThan(1.8);
      expect(d.rpi5!.reasons).toEqual([expect.stringMatching(/^p95 .* ms is \d\.\d\d× the predicted .* ms \(bound 1\.25×\)$/)]);
      expect(d['jetson-orin-nano']!.drifting).toBe(true);
      expect(d['jetson-orin-nano']!.exitShiftPp!).toBeGreaterThan(25);
      expect(d['jetson-orin-nano']!.reasons[0]).toMatch(/^exit shares .* moved \d+\.\d pp from the predicted .* \(bound 10 pp\)$/);
      expect([d.rpi4!.windows, d.rpi5!.windows, d['jetson-orin-nano']!.windows]).toEqual([180, 120, 90]);
    } finally {
      await store.close();
    }
  });

  it('says so in `fleet status`', async () => {
    const r = await runCli('fleet', 'status', '--db', db);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines.filter((l) => l.startsWith('DRIFT')).map((l) => l.split(':')[0])).toEqual(['DRIFT     yard/jetson-orin-nano', 'DRIFT     yard/rpi5']);
    expect(lines.find((l) => l.includes('yard/rpi4'))).toMatch(/^drift     yard\/rpi4: within bounds/);
    const json = JSON.parse((await runCli('fleet', 'status', '--db', db, '--json')).out) as { drift: { deviceClass: string; drifting: boolean }[] };
    expect(json.drift.map((c) => [c.deviceClass, c.drifting])).toEqual([['jetson-orin-nano', true], ['rpi4', false], ['rpi5', true]]);
  });

  it('exports a gauge per class in /metrics that an alert rule can use', async () => {
    const store = openFleetStore(db, { mustExist: true });
    let text: string;
    try {
      text = await renderMetrics(store);
    } finally {
      await store.close();
    }
    const fams = parseExposition(text);
    expect(fams.get('edgeexit_class_drift')!.type).toBe('gauge');
    expect(sampleValue(fams, 'edgeexit_class_drift', { fleet: 'yard', class: 'rpi4' })).toBe(0);
    expect(sampleValue(fams, 'edgeexit_class_drift', { fleet: 'yard', class: 'rpi5' })).toBe(1);
    expect(sampleValue(fams, 'edgeexit_class_drift', { fleet: 'yard', class: 'jetson-orin-nano' })).toBe(1);
    expect(sampleValue(fams, 'edgeexit_class_p95_latency_ratio', { fleet: 'yard', class: 'rpi5' })).toBeGreaterThan(1.8);
    expect(sampleValue(fams, 'edgeexit_class_exit_share_shift_ratio', { fleet: 'yard', class: 'jetson-orin-nano' })).toBeGreaterThan(0.25);
  });

  PROMTOOL.it('the drift gauges pass `promtool check metrics` (parse and lint, no findings)', async () => {
    const store = openFleetStore(db, { mustExist: true });
    try {
      const text = await renderMetrics(store);
      expect(text).toContain('edgeexit_class_drift{fleet="yard",class="rpi5"} 1');
      const check = spawnSync(PROMTOOL.get(), ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect({ status: check.status, out: check.stdout + check.stderr }).toEqual({ status: 0, out: '' });
    } finally {
      await store.close();
    }
  });

  it('gives no verdict before a class has enough windows', async () => {
    const r = await runCli('fleet', 'baseline', '--db', db, '--fleet', 'yard', '--class', 'rpi5', '--from', path.join(dir, 'rpi5-calibration.json'), '--min-windows', '500');
    expect(r.code).toBe(0);
    const store = openFleetStore(db, { mustExist: true });
    try {
      const rpi5 = (await classDrift(store)).find((c) => c.deviceClass === 'rpi5')!;
      expect([rpi5.enough, rpi5.drifting, rpi5.windows]).toEqual([false, false, 120]);
      expect(sampleValue(parseExposition(await renderMetrics(store)), 'edgeexit_class_drift', { fleet: 'yard', class: 'rpi5' })).toBe(0);
    } finally {
      await store.close();
    }
    expect((await runCli('fleet', 'status', '--db', db)).out).toMatch(/^drift     yard\/rpi5: 120 of 500 windows needed, no verdict yet$/m);
  });

  it('refuses a file that is not a calibration report', async () => {
    const bad = path.join(dir, 'not-a-report.json');
    await fsp.writeFile(bad, JSON.stringify({ hello: 1 }));
    const r = await runCli('fleet', 'baseline', '--db', db, '--fleet', 'yard', '--class', 'rpi4', '--from', bad);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('predicted.exitFractions');
  });
});
