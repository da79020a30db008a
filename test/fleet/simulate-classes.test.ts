// `edgeexit simulate --classes … --fault …`: hardware classes and per-class faults, end to end on
// the embedded broker and collector (real MQTT sessions, real SQLite file), plus the parsers' refusals.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyFault, fleetStatus, loadSimClasses, openFleetStore, parseClassCounts, parseFault } from '../../src/fleet/index.js';
import { loadSimProfile } from '../../src/fleet/simulate.js';
import { runCli } from '../cli/helpers.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('simulate-classes');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('simulated hardware classes', () => {
  it('parse --classes and --fault, refusing what they cannot mean', async () => {
    expect(parseClassCounts('rpi4:100,rpi5:60,jetson-orin-nano:40')).toEqual([
      { name: 'rpi4', devices: 100 },
      { name: 'rpi5', devices: 60 },
      { name: 'jetson-orin-nano', devices: 40 },
    ]);
    expect(() => parseClassCounts('rpi4:0')).toThrow(/--classes: bad entry "rpi4:0"/);
    expect(() => parseClassCounts('rpi4:1,rpi4:2')).toThrow(/rpi4 is named twice/);
    expect(parseFault('rpi5:latency=2x,exit-shift=0.2')).toEqual({ name: 'rpi5', fault: { latencyX: 2, exitShift: 0.2 } });
    expect(() => parseFault('rpi5:latency=fast')).toThrow(/--fault: bad value/);
    await expect(loadSimClasses('rpi4:2', ['rpi5:latency=2x'])).rejects.toThrow(/--fault rpi5: no such class/);
  });

  it('apply a fault: stage times × k, and the first exit share moved to the last', async () => {
    const p = await loadSimProfile('rpi4');
    const f = applyFault(p, { latencyX: 3, exitShift: 0.2 });
    f.stages.forEach((s, k) => expect(s.p95Ms).toBeCloseTo(p.stages[k]!.p95Ms * 3, 12));
    expect(f.exitShares[0]).toBeCloseTo(p.exitShares[0]! - 0.2, 12);
    expect(f.exitShares.at(-1)).toBeCloseTo(p.exitShares.at(-1)! + 0.2, 12);
    expect(f.exitShares.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
  });

  it('`edgeexit simulate --classes` publishes births naming each class, and the faulty class is slower', async () => {
    const db = path.join(dir, 'fleet.db');
    const r = await runCli('simulate', '--classes', 'rpi4:3,rpi5:2', '--fault', 'rpi5:latency=12x', '--duration', '3', '--rate', '2', '--state-dir', path.join(dir, 'state'), '--db', db, '--progress', '0', '--json');
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/class rpi5: 2 devices, .*; fault \{"latencyX":12\}/);
    const summary = JSON.parse(r.out) as { devices: { device: string }[] };
    expect(summary.devices.map((d) => d.device)).toEqual(['sim-rpi4-0001', 'sim-rpi4-0002', 'sim-rpi4-0003', 'sim-rpi5-0001', 'sim-rpi5-0002']);
    const store = openFleetStore(db, { mustExist: true });
    try {
      const s = await fleetStatus(store);
      expect(s.devices.map((d) => [d.device, d.deviceClass])).toEqual(summary.devices.map((d) => [d.device, d.device.split('-')[1]]));
      const mean = (cls: string) => {
        const ps = s.devices.filter((d) => d.deviceClass === cls && d.p95LatencyMs !== null).map((d) => d.p95LatencyMs!);
        expect(ps.length, cls).toBeGreaterThan(0);
        return ps.reduce((a, b) => a + b, 0) / ps.length;
      };
      // rpi5's cost model alone is about 4× faster than rpi4's; ×12 makes it clearly the slower class.
      expect(mean('rpi5')).toBeGreaterThan(2 * mean('rpi4'));
    } finally {
      await store.close();
    }
  }, 60_000);
});
