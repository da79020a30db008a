// The closed loop's latency half, end to end on the zoo bundle (fmnist-branchy, fp32): simulated
// devices of two classes report per-stage latency in their windows (written through the store
// calls the collector makes, into a real SQLite file); `edgeexit calibrate --latency-source
// fleet:yard/rpi4` builds the profile from the rpi4 windows only and calibrates with it; a class
// with no reports is refused with the counts.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/bundle/files.js';
import { compileModel } from '../../src/compiler/index.js';
import { fleetLatencyProfile, openFleetStore, recordSimulatedFleet, type SimClass } from '../../src/fleet/index.js';
import type { SimProfile } from '../../src/fleet/simulate.js';
import { runCli } from '../cli/helpers.js';
import { FMNIST, ZOO, scratch } from '../runtime/helpers.js';

let dir: string;
let bundle: string;
let db: string;

function profileFor(name: string, manifestSha256: string): SimProfile {
  return {
    source: 'test',
    deviceProfile: 'rpi4',
    precision: 'fp32',
    stages: [{ p50Ms: 1, p95Ms: 1.5 }, { p50Ms: 2, p95Ms: 3 }, { p50Ms: 4, p95Ms: 6 }],
    exitShares: [0.6, 0.3, 0.1],
    power: { idleWatts: 2, busyWatts: 5 },
    bundle: { name, manifestSha256 },
  };
}

beforeAll(async () => {
  dir = await scratch('fleet-latency');
  bundle = path.join(dir, 'bundle');
  const r = await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: bundle, latency: false });
  expect(r.manifest.stages).toHaveLength(3);
  const sha = sha256Hex(await fsp.readFile(path.join(bundle, 'manifest.json')));
  const p = profileFor(r.manifest.model.name, sha);
  const classes: SimClass[] = [
    { name: 'rpi4', devices: 12, profile: p },
    { name: 'rpi5', devices: 6, profile: p, fault: { latencyX: 0.5 } },
  ];
  db = path.join(dir, 'fleet.db');
  const store = openFleetStore(db);
  try {
    expect(await recordSimulatedFleet(store, { fleet: 'yard', classes, windows: 3, endAt: 1_700_000_000_000 })).toEqual({ devices: 18, windows: 54 });
  } finally {
    await store.close();
  }
}, 180_000);

describe('calibrate --latency-source fleet:<fleet>/<class>', () => {
  it('merges what one class reported, stage by stage, weighted by the inferences that ran each stage', async () => {
    const store = openFleetStore(db, { mustExist: true });
    try {
      const r = await fleetLatencyProfile(store, bundle, { fleet: 'yard', deviceClass: 'rpi4' });
      expect([r.windows, r.devices, r.skipped]).toEqual([36, 12, 0]);
      // Independently from the stored windows of the rpi4 devices.
      const rows = (await store.devices()).filter((d) => d.birth?.profile === 'rpi4');
      const ws = (await Promise.all(rows.map((d) => store.latestWindows(d.device, 10)))).flat();
      expect(ws).toHaveLength(36);
      for (let k = 0; k < 3; k++) {
        let n = 0;
        let p95 = 0;
        for (const w of ws) {
          const ran = w.exitHistogram.slice(k).reduce((a, b) => a + b, 0);
          n += ran;
          p95 += w.stages![k]!.p95 * ran;
        }
        const got = r.profile.stages[k]!.batches[0]!;
        expect(got.p95Ms, `stage ${k}`).toBeCloseTo(p95 / n, 9);
        expect(got.runs).toBe(n);
        expect(got.p50Ms).toBeLessThan(got.p90Ms);
        expect(got.p90Ms).toBeLessThan(got.p95Ms);
      }
      // The halved class reports about half the stage times.
      const fast = await fleetLatencyProfile(store, bundle, { fleet: 'yard', deviceClass: 'rpi5', minWindows: 10 });
      const ratio = fast.profile.stages[2]!.batches[0]!.p95Ms / r.profile.stages[2]!.batches[0]!.p95Ms;
      expect(ratio).toBeGreaterThan(0.35);
      expect(ratio).toBeLessThan(0.65);
      expect(r.profile.source).toBe('fleet');
    } finally {
      await store.close();
    }
  });

  it('calibrates with the fleet profile and says so in the report', async () => {
    const out = path.join(dir, 'report');
    const r = await runCli('calibrate', bundle, '--data', FMNIST, '--target-latency', '8ms', '--percentile', '95', '--latency-source', 'fleet:yard/rpi4', '--db', db, '--limit', '200', '--allow-miss', '--out', out, '--json');
    expect(r.err).toMatch(/fleet latency: fleet yard class rpi4: 36 windows from 12 devices/);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as { latency: { source: string; stageMs: number[]; why: string } };
    expect(report.latency.source).toBe('fleet:yard/rpi4');
    expect(report.latency.why).toMatch(/12 devices reported in 36 windows/);
    const store = openFleetStore(db, { mustExist: true });
    try {
      const p = await fleetLatencyProfile(store, bundle, { fleet: 'yard', deviceClass: 'rpi4' });
      p.profile.stages.forEach((s, k) => expect(report.latency.stageMs[k]).toBeCloseTo(s.batches[0]!.p95Ms, 9));
    } finally {
      await store.close();
    }
  }, 120_000);

  it('refuses a class that reported too little, with the counts and the fix', async () => {
    const none = await runCli('calibrate', bundle, '--data', FMNIST, '--target-latency', '8ms', '--latency-source', 'fleet:yard/jetson-orin-nano', '--db', db);
    expect(none.code).not.toBe(0);
    expect(none.err).toMatch(/fleet:yard\/jetson-orin-nano/);
    expect(none.err).toMatch(/at least 20 windows .* from at least 3 devices/);
    expect(none.err).toMatch(/got 0 windows from 0 devices/);
    const store = openFleetStore(db, { mustExist: true });
    try {
      await expect(fleetLatencyProfile(store, bundle, { fleet: 'yard', deviceClass: 'rpi5', minWindows: 50 })).rejects.toThrow(/18 windows from 6 devices/);
    } finally {
      await store.close();
    }
    const bad = await runCli('calibrate', bundle, '--data', FMNIST, '--target-latency', '8ms', '--latency-source', 'fleet:yard/a/b', '--db', db);
    expect(bad.err).toMatch(/fleet:<fleet> or fleet:<fleet>\/<class>/);
  });
});
