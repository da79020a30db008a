// The SQLite store's synchronous writer (FleetStore.sync), the collector's batch path: one
// transaction per batch that commits whole or not at all, record calls refused outside it, and
// asynchronous callers kept out of it. Real SQLite files.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openFleetStore, type FleetStore, type SyncFleetWriter } from '../../src/fleet/store.js';
import { stagesJson } from '../../src/fleet/stage-text.js';
import type { Birth, MetricsWindow } from '../../src/telemetry/index.js';
import { BIRTH_INFO, tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';

const birth = (device: string, bdSeq: number): Birth => ({ device, fleet: 'lab', bdSeq, seq: 0, ...BIRTH_INFO, at: 1 });
const win = (device: string, id: number, bdSeq: number, seq: number): MetricsWindow => ({ id, bdSeq, seq, ...windowBody(id, device) });

describe('FleetStore.sync (SQLite)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('sync-batch');
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  function open(name: string): { store: FleetStore; sync: SyncFleetWriter } {
    const store = openFleetStore(path.join(dir, `${name}.db`));
    return { store, sync: store.sync! };
  }

  it('stores a batch in one transaction with the same outcomes as the asynchronous calls', async () => {
    const { store, sync } = open('same');
    const out = await sync.transaction(() => [
      sync.recordBirth(birth('a', 1), 1),
      sync.recordWindow(win('a', 1, 1, 1), 'lab', 2),
      sync.recordWindow(win('a', 1, 1, 1), 'lab', 2),
      sync.recordWindow(win('a', 2, 1, 4), 'lab', 3),
      sync.noteRefusedWindow({ device: 'a', bdSeq: 1, seq: 5 }, 3),
      sync.recordDeath({ device: 'a', bdSeq: 1, clean: true }, 4, 'lab'),
    ]);
    expect(out).toEqual(['online', { stored: true, gap: 0, unknownDevice: false }, { stored: false, gap: 0, unknownDevice: false }, { stored: true, gap: 2, unknownDevice: false }, 0, 'offline']);
    expect(await store.counters()).toMatchObject({ duplicates: 1, gaps: 2 });
    expect(await store.totals()).toMatchObject([{ device: 'a', windows: 2, exits: [12, 6, 2] }]);
    // The stage text is the shared format, and the window ran the birth's manifest.
    const [w] = await store.latestWindows('a', 1);
    expect(w).toMatchObject({ id: 2, manifestSha256: BIRTH_INFO.bundle.manifestSha256, stages: win('a', 2, 1, 4).latencyMs.stages });
    await store.close();
  });

  it('a batch whose function throws stores nothing and counts nothing', async () => {
    const { store, sync } = open('rollback');
    await expect(
      sync.transaction(() => {
        sync.recordWindow(win('b', 1, 0, 1), 'lab', 2);
        sync.bump('invalid');
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await store.totals()).toEqual([]);
    expect(await store.counters()).toMatchObject({ invalid: 0, unknownDevice: 0 });
    expect(await store.devices()).toEqual([]);
    // The next batch starts clean: the rolled-back window is new, not a duplicate.
    expect(await sync.transaction(() => sync.recordWindow(win('b', 1, 0, 1), 'lab', 2))).toMatchObject({ stored: true });
    await store.close();
  });

  it('refuses record calls outside sync.transaction and a batch inside an asynchronous transaction', async () => {
    const { store, sync } = open('outside');
    expect(() => sync.recordWindow(win('c', 1, 0, 1), 'lab', 2)).toThrow(/outside store\.sync\.transaction/);
    await expect(store.transaction(() => sync.transaction(() => 1))).rejects.toThrow(/inside another transaction/);
    expect(await store.totals()).toEqual([]);
    await store.close();
  });

  it('waits for an open asynchronous transaction instead of landing inside it', async () => {
    const { store, sync } = open('order');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const outer = store.transaction(async () => {
      await store.recordWindow(win('d', 1, 0, 1), 'lab', 2);
      await gate;
      throw new Error('rolled back');
    });
    const batch = sync.transaction(() => sync.recordWindow(win('d', 2, 0, 2), 'lab', 3));
    release();
    await expect(outer).rejects.toThrow('rolled back');
    expect(await batch).toMatchObject({ stored: true });
    // The batch committed on its own: the outer transaction's rollback did not take it along.
    expect((await store.latestWindows('d', 5)).map((w) => w.id)).toEqual([2]);
    await store.close();
  });
});

describe('stagesJson', () => {
  it('writes the same text as JSON.stringify of [p50, p95, p99] rows', () => {
    const values = [0, -0, 1, 0.1, 0.12345678901234568, 1e21, 1e-7, 5e-324, -3.5, 123456789.125, Number.MAX_VALUE, NaN, Infinity, -Infinity];
    const stages = values.map((v, i) => ({ p50: v, p95: values[(i + 3) % values.length]!, p99: values[(i + 7) % values.length]! }));
    expect(stagesJson(stages)).toBe(JSON.stringify(stages.map((q) => [q.p50, q.p95, q.p99])));
    // -0 is written 0, as JSON.stringify writes it.
    expect(stagesJson([{ p50: -0, p95: 0.1, p99: 5e-324 }])).toBe('[[0,0.1,5e-324]]');
    expect(stagesJson([])).toBeNull();
  });
});
