// `edgeexit fleet status` over a real SQLite file written through the store: the accuracy and
// temperature columns, '-' where a device never sent labels or a temperature, and the same
// fields in --json. (The collector path end to end is in collector.test.ts.)
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { renderFleetStatus } from '../../src/cli/commands/fleet.js';
import { fleetStatus, openFleetStore } from '../../src/fleet/index.js';
import type { Birth, MetricsWindow } from '../../src/telemetry/index.js';
import { runCli } from '../cli/helpers.js';
import { BIRTH_INFO, tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';

const birth = (device: string): Birth => ({ device, fleet: 'lab', bdSeq: 0, seq: 0, ...BIRTH_INFO, at: 1 });
function win(device: string, id: number, extra: Pick<MetricsWindow, 'temperatureC' | 'accuracy'>): MetricsWindow {
  const { temperatureC: _t, accuracy: _a, ...w } = windowBody(id, device);
  return { id, bdSeq: 0, seq: id, ...w, ...extra };
}

describe('fleet status: accuracy and temperature', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await fsp.rm(d, { recursive: true, force: true });
  });

  async function db(): Promise<string> {
    const dir = await tempDir('fleet-status');
    dirs.push(dir);
    const file = path.join(dir, 'fleet.db');
    const store = openFleetStore(file);
    try {
      // hot: labels in two windows, temperature in the first two only (the newest has none).
      await store.recordBirth(birth('hot'), 1);
      await store.recordWindow(win('hot', 1, { temperatureC: 70, accuracy: { correct: 2, labelled: 3 } }), 'lab', 2);
      await store.recordWindow(win('hot', 2, { temperatureC: 73.25 }), 'lab', 3);
      await store.recordWindow(win('hot', 3, { accuracy: { correct: 4, labelled: 5 } }), 'lab', 4);
      // plain: neither, ever. labelled-zero: labels reported, but none in the windows.
      await store.recordBirth(birth('plain'), 1);
      await store.recordWindow(win('plain', 1, {}), 'lab', 2);
      await store.recordBirth(birth('zero'), 1);
      await store.recordWindow(win('zero', 1, { accuracy: { correct: 0, labelled: 0 }, temperatureC: -5 }), 'lab', 2);
      // idle: a birth and no window at all.
      await store.recordBirth(birth('idle'), 1);
    } finally {
      await store.close();
    }
    return file;
  }

  it('--json carries labelled, correct, accuracy and the latest temperature per device', async () => {
    const file = await db();
    const r = await runCli('fleet', 'status', '--db', file, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out) as Awaited<ReturnType<typeof fleetStatus>>;
    expect(s.devices.map((d) => [d.device, d.labelled, d.correct, d.accuracy, d.temperatureC])).toEqual([
      ['hot', 8, 6, 0.75, 73.25],
      ['idle', 0, 0, null, null],
      ['plain', 0, 0, null, null],
      ['zero', 0, 0, null, -5],
    ]);
  });

  it('prints accuracy as a percentage and the temperature, with - where there is none', async () => {
    const file = await db();
    const r = await runCli('fleet', 'status', '--db', file);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines[0]).toMatch(/^device\s+status\s+bundle\s+p95 ms\s+exit rates\s+J\/inference\s+accuracy\s+temp °C\s+last seen\s+class$/);
    const row = (device: string) => lines.find((l) => l.startsWith(device + ' '))!;
    expect(row('hot')).toMatch(/\s0\.150\s+75\.0%\s+73\.3\s+1970-/);
    expect(row('plain')).toMatch(/\s0\.150\s+-\s+-\s+1970-/);
    expect(row('zero')).toMatch(/\s0\.150\s+-\s+-5\.0\s+1970-/);
    // No window: p95, exit rates, J/inference, accuracy and temperature all '-'.
    expect(row('idle')).toMatch(/^idle\s+online\s+mnist-exits 1\.2\.0\s+-\s+-\s+-\s+-\s+-\s+1970-/);
  });

  it('renders from a FleetStatus value alone (quickstart uses it)', () => {
    const out = renderFleetStatus({
      devices: [
        { device: 'd', fleet: 'f', deviceClass: null, online: true, bundle: null, bdSeq: 0, windows: 1, inferences: 10, joules: 1, p95LatencyMs: 2, exitRates: [1], joulesPerInference: 0.1, labelled: 3, correct: 1, accuracy: 1 / 3, temperatureC: 45, lastSeen: 0 },
      ],
      drift: [],
      counters: { malformed: 0, invalid: 0, oversized: 0, unknownDevice: 0, duplicates: 0, gaps: 0, staleDeaths: 0, foreignTopic: 0, clockSkew: 0, outOfRange: 0, tooManyExits: 0, fleetMismatch: 0 },
    });
    expect(out).toMatch(/\s33\.3%\s+45\.0\s+1970-/);
  });
});
