// The fleet simulator: plausible windows from a device profile or a latency profile, the sent
// ledger (repaired after a SIGKILL from the outbox) and `edgeexit simulate` end to end on the
// embedded broker and collector.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetSimulator, loadSimProfile, seededRandom, syntheticWindow } from '../../src/fleet/simulate.js';
import { Outbox, validateMetricsBody, type MetricsWindowBody } from '../../src/telemetry/index.js';
import { runCli } from '../cli/helpers.js';
import { tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('simulate');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('simulated windows', () => {
  it('replay a device profile: valid, exits sum to count, energy within the power model', async () => {
    const p = await loadSimProfile('rpi4');
    expect(p.stages).toHaveLength(3);
    expect(p.exitShares.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(p.stages[0]!.p50Ms).toBeLessThan(p.stages[1]!.p50Ms);
    const rand = seededRandom(3);
    for (let i = 0; i < 50; i++) {
      const w = syntheticWindow(p, rand, 1_790_000_000_000 + i * 5000, 1_790_000_000_000 + (i + 1) * 5000, 20);
      validateMetricsBody({ ...w, device: 'sim-0001', droppedWindows: 0 });
      expect(w.count).toBeGreaterThan(50);
      expect(w.latencyMs.endToEnd.p50).toBeLessThanOrEqual(w.latencyMs.endToEnd.p99);
      expect(w.energy.joules).toBeGreaterThanOrEqual(p.power.idleWatts * 5 - 0.01);
      expect(w.energy.joules).toBeLessThanOrEqual(p.power.busyWatts * 5 + 0.01);
    }
  });

  it('replay a measured latency profile file', async () => {
    const file = path.join(dir, 'profile.json');
    const stat = (ms: number) => ({ batch: 1, meanMs: ms, p50Ms: ms, p90Ms: ms * 1.2, p95Ms: ms * 1.3, p99Ms: ms * 1.5, runs: 200 });
    await fsp.writeFile(
      file,
      JSON.stringify({
        format: 'edgeexit-latency-profile',
        version: 1,
        source: 'measure',
        created: '2026-11-27T00:00:00.000Z',
        bundle: { model: 'my-net', manifestSha256: 'b'.repeat(64), precision: 'int8' },
        host: { device: 'rpi5', description: 'a Pi 5', threads: 4, warmup: 20 },
        stages: [
          { stage: 'exit_0', macs: 1000, batches: [stat(0.5)] },
          { stage: 'exit_1', macs: 9000, batches: [stat(2)] },
        ],
      }),
    );
    const p = await loadSimProfile(file);
    expect(p).toMatchObject({ deviceProfile: 'rpi5', precision: 'int8', bundle: { name: 'my-net' }, stages: [{ p50Ms: 0.5 }, { p50Ms: 2 }] });
    expect(p.exitShares).toEqual([0.8, 0.2]);
  });
});

describe('sent ledger', () => {
  it('after a kill, counts outbox entries the ledger missed and drops a torn line', async () => {
    const state = path.join(dir, 'ledger');
    const devDir = path.join(state, 'sim-0001');
    const box = await Outbox.open<MetricsWindowBody>(path.join(devDir, 'outbox'));
    await box.enqueue(windowBody(0, 'sim-0001'));
    await box.enqueue(windowBody(1, 'sim-0001'));
    await box.close();
    await fsp.writeFile(path.join(devDir, 'sent.jsonl'), '{"id":0,"count":10,"joules":1.5,"exits":[6,3,1]}\n{"id":1,"cou');
    const sim = await FleetSimulator.start({ url: 'mqtt://127.0.0.1:1', devices: 1, stateDir: state, rate: 0.001, profile: await loadSimProfile('rpi4'), backoff: { initialMs: 60_000 } });
    try {
      expect(sim.devices[0]!.sent()).toEqual({ windows: 2, count: 20, joules: 3, exits: [12, 6, 2] });
      expect((await fsp.readFile(path.join(devDir, 'sent.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l).id)).toEqual([0, 1]);
    } finally {
      await sim.close();
    }
  });
});

describe('edgeexit simulate', () => {
  it('runs devices against the embedded broker and collector; the collector stores what they sent', async () => {
    const r = await runCli('simulate', '--devices', '3', '--duration', '2', '--rate', '4', '--state-dir', path.join(dir, 'cli'), '--progress', '0', '--json');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    expect(s.devices).toHaveLength(3);
    expect(s.totals.windows).toBeGreaterThan(6);
    expect(s.totals.queued).toBe(0);
    const stored = s.collected.reduce((a: number, t: { windows: number }) => a + t.windows, 0);
    expect(stored).toBe(s.totals.windows);
    expect(s.collected.reduce((a: number, t: { count: number }) => a + t.count, 0)).toBe(s.totals.count);
    expect(r.err).toMatch(/simulating 3 devices → mqtt:\/\/127\.0\.0\.1:\d+ \(embedded broker/);
  });

  it('refuses bad options with the option name, expected and got', async () => {
    const r = await runCli('simulate', '--devices', '0', '--state-dir', path.join(dir, 'bad'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--devices: expected a whole number ≥ 1, got 0/);
    const p = await runCli('simulate', '--devices', '1', '--profile', 'no-such-board', '--state-dir', path.join(dir, 'bad'));
    expect(p.code).toBe(2);
    expect(p.err).toMatch(/no-such-board/);
  });
});
