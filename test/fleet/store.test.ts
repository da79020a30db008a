// The SQLite FleetStore on a real file: schema versioning, WAL, exact de-duplication, gap and
// death bookkeeping, totals and retention.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { SCHEMA_VERSION, openFleetStore, type FleetStore } from '../../src/fleet/index.js';
import type { Birth, MetricsWindow } from '../../src/telemetry/index.js';
import { BIRTH_INFO, tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';

const birth = (device: string, bdSeq: number): Birth => ({ device, fleet: 'lab', bdSeq, seq: 0, ...BIRTH_INFO, at: 1 });
const win = (device: string, id: number, bdSeq: number, seq: number): MetricsWindow => ({ id, bdSeq, seq, ...windowBody(id, device) });

describe('SqliteFleetStore', () => {
  const open: FleetStore[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const s of open.splice(0)) s.close();
    for (const d of dirs.splice(0)) await fsp.rm(d, { recursive: true, force: true });
  });
  async function fresh(): Promise<{ file: string; store: FleetStore }> {
    const dir = await tempDir('fleet-store');
    dirs.push(dir);
    const file = path.join(dir, 'sub', 'fleet.db');
    const store = openFleetStore(file);
    open.push(store);
    return { file, store };
  }

  it('creates the schema with user_version in WAL mode and keeps data across reopen', async () => {
    const { file, store } = await fresh();
    store.recordBirth(birth('a', 1), 10);
    store.recordWindow(win('a', 1, 1, 1), 'lab', 11);
    store.close();
    const raw = new Database(file, { readonly: true });
    expect(raw.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    raw.close();
    const again = openFleetStore(file, { mustExist: true });
    open.push(again);
    expect(again.totals()).toMatchObject([{ device: 'a', windows: 1, count: 10 }]);
  });

  it('refuses a database from a newer edgeexit and a missing file when mustExist', async () => {
    const { file, store } = await fresh();
    store.close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    expect(() => openFleetStore(file)).toThrow(/newer than this edgeexit/);
    expect(() => openFleetStore(file + '.missing', { mustExist: true })).toThrow(/no fleet database/);
  });

  it('stores (device, id) once, counts duplicates, gaps per bdSeq, and not across sessions', async () => {
    const { store } = await fresh();
    store.recordBirth(birth('a', 1), 1);
    expect(store.recordWindow(win('a', 1, 1, 1), 'lab', 2)).toEqual({ stored: true, gap: 0, unknownDevice: false });
    // The same outbox entry resent in a new session: new (bdSeq, seq), same id.
    store.recordBirth(birth('a', 2), 3);
    expect(store.recordWindow(win('a', 1, 2, 1), 'lab', 4)).toEqual({ stored: false, gap: 0, unknownDevice: false });
    expect(store.recordWindow(win('a', 2, 2, 5), 'lab', 5)).toEqual({ stored: true, gap: 3, unknownDevice: false });
    // seq wraps at 255 → 0 without a gap.
    store.recordWindow(win('a', 3, 2, 255), 'lab', 6);
    expect(store.recordWindow(win('a', 4, 2, 0), 'lab', 7).gap).toBe(0);
    // Another device may reuse an id.
    expect(store.recordWindow(win('b', 1, 0, 1), 'lab', 8)).toEqual({ stored: true, gap: 0, unknownDevice: true });
    expect(store.counters()).toMatchObject({ duplicates: 1, gaps: 3 + 249, unknownDevice: 1 });
    expect(store.totals().map((t) => [t.device, t.windows, t.count])).toEqual([
      ['a', 4, 40],
      ['b', 1, 10],
    ]);
  });

  it('inside one transaction (a collector batch) the session state is kept per device: same gaps, births and rollbacks as one by one', async () => {
    const { file, store } = await fresh();
    store.recordBirth(birth('a', 1), 10);
    // Seq 0, 1, then 3: one gap, counted inside the batch.
    const outcomes = store.transaction(() => [store.recordWindow(win('a', 0, 1, 0), 'lab', 11), store.recordWindow(win('a', 1, 1, 1), 'lab', 12), store.recordWindow(win('a', 2, 1, 3), 'lab', 13)]);
    expect(outcomes.map((o) => o.gap)).toEqual([0, 0, 1]);
    // The state written back at commit: seq 4 follows seq 3 without a gap, in the next batch.
    expect(store.transaction(() => store.recordWindow(win('a', 3, 1, 4), 'lab', 14)).gap).toBe(0);
    // A birth in the middle of a batch starts a new session: no false gap across it.
    const mid = store.transaction(() => {
      const before = store.recordWindow(win('a', 4, 1, 5), 'lab', 15);
      store.recordBirth(birth('a', 2), 16);
      return [before, store.recordWindow(win('a', 5, 2, 1), 'lab', 17)];
    });
    expect(mid.map((o) => o.gap)).toEqual([0, 0]);
    // A rolled-back batch leaves no trace, in the table or in the kept state.
    expect(() =>
      store.transaction(() => {
        store.recordWindow(win('a', 6, 2, 2), 'lab', 18);
        throw new Error('disk full');
      }),
    ).toThrow('disk full');
    expect(store.recordWindow(win('a', 6, 2, 2), 'lab', 19)).toEqual({ stored: true, gap: 0, unknownDevice: false });
    expect(store.counters()).toMatchObject({ gaps: 1, duplicates: 0 });
    expect(store.totals()).toEqual([expect.objectContaining({ device: 'a', windows: 7 })]);
    // What was kept in memory reached the file: last seen is the latest window's.
    store.close();
    open.splice(open.indexOf(store), 1);
    const again = openFleetStore(file, { mustExist: true });
    open.push(again);
    expect(again.devices()[0]).toMatchObject({ device: 'a', bdSeq: 2, lastSeen: 19 });
  });

  it('applies a death only for the current bdSeq', async () => {
    const { store } = await fresh();
    expect(store.recordDeath({ device: 'x', bdSeq: 0, clean: true }, 1)).toBe('unknown');
    store.recordBirth(birth('x', 4), 2);
    expect(store.recordDeath({ device: 'x', bdSeq: 3, clean: false }, 3)).toBe('stale');
    expect(store.devices()[0]).toMatchObject({ online: true, bdSeq: 4, lastSeen: 3 });
    expect(store.recordDeath({ device: 'x', bdSeq: 4, clean: false }, 4)).toBe('offline');
    expect(store.devices()[0]).toMatchObject({ online: false, lastSeen: 4 });
    expect(store.counters()).toMatchObject({ staleDeaths: 1, unknownDevice: 1 });
  });

  it('deletes windows older than the retention and returns latest windows newest first', async () => {
    const { store } = await fresh();
    store.recordBirth(birth('a', 0), 0);
    for (let i = 0; i < 4; i++) store.recordWindow(win('a', i, 0, i + 1), 'lab', 0);
    expect(store.latestWindows('a', 2).map((w) => w.id)).toEqual([3, 2]);
    // windowBody(i) ends at 1_700_000_000_000 + (i + 1) × 10 s.
    const now = 1_700_000_000_000 + 25_000 + 86_400_000;
    expect(store.prune(1, now)).toBe(2);
    expect(store.totals()).toMatchObject([{ windows: 2 }]);
  });
});
