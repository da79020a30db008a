// The store contract (exact de-duplication, gap and death bookkeeping, totals, retention,
// transactions) run against both backends: a real SQLite file and a real PostgreSQL started by
// the test (test/support/postgres.ts). Then what is SQLite's own: schema versioning, WAL, upgrades.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SCHEMA_VERSION, openFleetStore, openStore, renderMetrics, type FleetStore } from '../../src/fleet/index.js';
import { startPostgres, type Postgres } from '../support/postgres.js';
import { POSTGRES } from '../support/require.js';
import { MIGRATIONS } from '../../src/fleet/store.js';
import { DEFAULT_SPEC, newRollout, type BundleInfo } from '../../src/fleet/rollout-plan.js';
import type { Birth, MetricsWindow } from '../../src/telemetry/index.js';
import { BIRTH_INFO, tempDir, windowBody } from '../telemetry/mqtt/fixtures.js';
import { parseExposition, sampleValue } from './prom-parse.js';

/** A database file as an edgeexit with schema `version` left it: only the first `version` migrations applied. */
function databaseAt(dir: string, version: number): { file: string; old: Database.Database } {
  const file = path.join(dir, 'fleet.db');
  const old = new Database(file);
  old.pragma('journal_mode = WAL');
  old.transaction(() => {
    for (const m of MIGRATIONS.slice(0, version)) old.exec(m);
    old.pragma(`user_version = ${version}`);
  })();
  return { file, old };
}

const ROLLOUT_TARGET: BundleInfo = { bundle: 'c'.repeat(64), model: { name: 'm', version: '1' }, manifest: { sha256: 'c'.repeat(64), bytes: 10 }, signature: { sha256: 'd'.repeat(64), bytes: 64 } };
const birth = (device: string, bdSeq: number): Birth => ({ device, fleet: 'lab', bdSeq, seq: 0, ...BIRTH_INFO, at: 1 });
const SHA_A = BIRTH_INFO.bundle.manifestSha256;
const SHA_B = 'b'.repeat(64);
/** A birth announcing another bundle (manifest). */
const birthWith = (device: string, bdSeq: number, manifestSha256: string): Birth => ({ ...birth(device, bdSeq), bundle: { ...BIRTH_INFO.bundle, manifestSha256 } });
const win = (device: string, id: number, bdSeq: number, seq: number): MetricsWindow => ({ id, bdSeq, seq, ...windowBody(id, device) });
/** A window as a device without a thermal reader and without labels sends it. */
function bare(device: string, id: number, bdSeq: number, seq: number): MetricsWindow {
  const { temperatureC: _t, accuracy: _a, ...w } = win(device, id, bdSeq, seq);
  return w;
}

/** What a test needs of one backend: a fresh store, a way to reopen it, and plain SQL reads. */
interface Kit {
  store: FleetStore;
  /** Close the store and open the same database again. */
  reopen(): Promise<FleetStore>;
  /** Rows of a read-only SQL query against the database (portable SQL only). */
  query(sql: string): Promise<unknown[]>;
}

/** The store contract: every backend (SQLite, PostgreSQL) must pass these the same way. */
function contract(name: string, make: () => Promise<Kit & { cleanup(): Promise<void> }>): void {
  describe(`FleetStore contract: ${name}`, () => {
    const kits: (Kit & { cleanup(): Promise<void> })[] = [];
    afterEach(async () => {
      for (const k of kits.splice(0)) await k.cleanup();
    });
    async function fresh(): Promise<Kit> {
      const kit = await make();
      kits.push(kit);
      return kit;
    }

    it('stores (device, id) once, counts duplicates, gaps per bdSeq, and not across sessions', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      expect(await store.recordWindow(win('a', 1, 1, 1), 'lab', 2)).toEqual({ stored: true, gap: 0, unknownDevice: false });
      // The same outbox entry resent in a new session: new (bdSeq, seq), same id.
      await store.recordBirth(birth('a', 2), 3);
      expect(await store.recordWindow(win('a', 1, 2, 1), 'lab', 4)).toEqual({ stored: false, gap: 0, unknownDevice: false });
      expect(await store.recordWindow(win('a', 2, 2, 5), 'lab', 5)).toEqual({ stored: true, gap: 3, unknownDevice: false });
      // seq wraps at 255 → 0 without a gap.
      await store.recordWindow(win('a', 3, 2, 255), 'lab', 6);
      expect((await store.recordWindow(win('a', 4, 2, 0), 'lab', 7)).gap).toBe(0);
      // Another device may reuse an id.
      expect(await store.recordWindow(win('b', 1, 0, 1), 'lab', 8)).toEqual({ stored: true, gap: 0, unknownDevice: true });
      expect(await store.counters()).toMatchObject({ duplicates: 1, gaps: 3 + 249, unknownDevice: 1 });
      expect((await store.totals()).map((t) => [t.device, t.windows, t.count])).toEqual([
        ['a', 4, 40],
        ['b', 1, 10],
      ]);
    });

    it('inside one transaction (a collector batch) the session state is kept per device: same gaps, births and rollbacks as one by one', async () => {
      const { store, reopen } = await fresh();
      await store.recordBirth(birth('a', 1), 10);
      // Seq 0, 1, then 3: one gap, counted inside the batch.
      const outcomes = await store.transaction(async () => [await store.recordWindow(win('a', 0, 1, 0), 'lab', 11), await store.recordWindow(win('a', 1, 1, 1), 'lab', 12), await store.recordWindow(win('a', 2, 1, 3), 'lab', 13)]);
      expect(outcomes.map((o) => o.gap)).toEqual([0, 0, 1]);
      // The state written back at commit: seq 4 follows seq 3 without a gap, in the next batch.
      expect((await store.transaction(async () => await store.recordWindow(win('a', 3, 1, 4), 'lab', 14))).gap).toBe(0);
      // A birth in the middle of a batch starts a new session: no false gap across it.
      const mid = await store.transaction(async () => {
        const before = await store.recordWindow(win('a', 4, 1, 5), 'lab', 15);
        await store.recordBirth(birth('a', 2), 16);
        return [before, await store.recordWindow(win('a', 5, 2, 1), 'lab', 17)];
      });
      expect(mid.map((o) => o.gap)).toEqual([0, 0]);
      // A rolled-back batch leaves no trace, in the table or in the kept state.
      await expect(
        store.transaction(async () => {
          await store.recordWindow(win('a', 6, 2, 2), 'lab', 18);
          throw new Error('disk full');
        }),
      ).rejects.toThrow('disk full');
      expect(await store.recordWindow(win('a', 6, 2, 2), 'lab', 19)).toEqual({ stored: true, gap: 0, unknownDevice: false });
      expect(await store.counters()).toMatchObject({ gaps: 1, duplicates: 0 });
      expect(await store.totals()).toEqual([expect.objectContaining({ device: 'a', windows: 7 })]);
      // What was kept in memory reached the database: last seen is the latest window's.
      const again = await reopen();
      expect((await again.devices())[0]).toMatchObject({ device: 'a', bdSeq: 2, lastSeen: 19 });
    });

    it('applies a death only for the current bdSeq', async () => {
      const { store } = await fresh();
      expect(await store.recordDeath({ device: 'x', bdSeq: 0, clean: true }, 1)).toBe('unknown');
      await store.recordBirth(birth('x', 4), 2);
      expect(await store.recordDeath({ device: 'x', bdSeq: 3, clean: false }, 3)).toBe('stale');
      expect((await store.devices())[0]).toMatchObject({ online: true, bdSeq: 4, lastSeen: 3 });
      expect(await store.recordDeath({ device: 'x', bdSeq: 4, clean: false }, 4)).toBe('offline');
      expect((await store.devices())[0]).toMatchObject({ online: false, lastSeen: 4 });
      expect(await store.counters()).toMatchObject({ staleDeaths: 1, unknownDevice: 1 });
    });

    it("a death of a session whose birth never arrived (lost by a broker restarted without persistence) still takes the device offline", async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('x', 4), 1);
      expect(await store.recordDeath({ device: 'x', bdSeq: 6, clean: true }, 2)).toBe('offline');
      expect((await store.devices())[0]).toMatchObject({ online: false, bdSeq: 6 });
      // The will of session 5, delivered late, is older than the death on record.
      expect(await store.recordDeath({ device: 'x', bdSeq: 5, clean: false }, 3)).toBe('stale');
      expect((await store.devices())[0]).toMatchObject({ online: false });
    });

    it('a late arrival within a session (several collectors commit out of order) is no gap and does not move the position back', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      const gaps: number[] = [];
      // 4 is stored before 3 (another collector's batch committed first), then 5 follows 4.
      for (const [id, seq] of [[1, 1], [2, 2], [4, 4], [3, 3], [5, 5], [6, 6]] as const) gaps.push((await store.recordWindow(win('a', id, 1, seq), 'lab', 10 + id)).gap);
      expect(gaps).toEqual([0, 0, 1, 0, 0, 0]);
      // A real loss after the reordering is still counted, once.
      expect((await store.recordWindow(win('a', 9, 1, 9), 'lab', 30)).gap).toBe(2);
      expect((await store.counters()).gaps).toBe(3);
      expect((await store.totals())[0]!.windows).toBe(7);
    });

    it('counts every lost message of a long run exactly: seq no longer wraps at 256', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      await store.recordWindow(win('a', 1, 1, 1), 'lab', 2);
      // 3,046 messages lost in a row (the 5,000-window burst of issue 12 read as 1,090 with 8-bit seq).
      expect((await store.recordWindow(win('a', 2, 1, 3_048), 'lab', 3)).gap).toBe(3_046);
      expect((await store.recordWindow(win('a', 3, 1, 3_049), 'lab', 4)).gap).toBe(0);
      expect((await store.counters()).gaps).toBe(3_046);
    });

    it('deletes windows older than the retention and returns latest windows newest first; totals keep the pruned ones', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 0), 0);
      for (let i = 0; i < 4; i++) await store.recordWindow(win('a', i, 0, i + 1), 'lab', 0);
      expect((await store.latestWindows('a', 2)).map((w) => w.id)).toEqual([3, 2]);
      // windowBody(i) ends at 1_700_000_000_000 + (i + 1) × 10 s.
      const now = 1_700_000_000_000 + 25_000 + 86_400_000;
      expect(await store.prune(1, now)).toBe(2);
      expect((await store.latestWindows('a', 10)).map((w) => w.id)).toEqual([3, 2]);
      // Running totals: what the pruned windows added stays (Prometheus counters must not drop).
      expect(await store.totals()).toEqual([{ device: 'a', windows: 4, count: 40, joules: 6, exits: [24, 12, 4], labelled: 20, correct: 16 }]);
    });

    it('a call made while a transaction is open elsewhere waits for it, and is not rolled back with it', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const batch = store.transaction(async () => {
        await store.recordWindow(win('a', 1, 1, 1), 'lab', 2);
        await held;
        throw new Error('disk full');
      });
      // Issued while the batch is open: it must neither join the batch nor see its window.
      const outside = store.recordWindow(win('a', 2, 1, 2), 'lab', 3);
      const read = store.totals();
      release();
      await expect(batch).rejects.toThrow('disk full');
      // seq 1 was rolled back, so seq 2 follows a gap; the window itself survived the rollback.
      expect(await outside).toEqual({ stored: true, gap: 1, unknownDevice: false });
      // The read saw committed rows only: never the batch's window beside the outside one.
      expect((await read).reduce((a, t) => a + t.windows, 0)).toBeLessThanOrEqual(1);
      expect(await store.totals()).toEqual([expect.objectContaining({ device: 'a', windows: 1, count: 10 })]);
      expect((await store.latestWindows('a', 10)).map((w) => w.id)).toEqual([2]);
    });

    it('keeps totals, exit sums and /metrics counters monotonic across prunes, and equal to everything sent', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      await store.recordBirth(birth('b', 1), 1);
      // Windows that differ, so a per-exit or per-device mix-up shows; b has a longer histogram and no labels.
      const sent: MetricsWindow[] = [];
      for (let i = 0; i < 6; i++) sent.push({ ...win('a', i, 1, i + 1), count: 10 + i, exitHistogram: [5, 3 + i, 2], energy: { joules: 0.25 * (i + 1), meanWatts: 0.5, source: 'sensor', meter: 'ina3221-hwmon' }, accuracy: { correct: i, labelled: i + 1 } });
      for (let i = 0; i < 3; i++) sent.push({ ...bare('b', i, 1, i + 1), count: 4, exitHistogram: [1, 0, 0, 3] });
      await store.transaction(async () => {
        for (const w of sent) expect((await store.recordWindow(w, 'lab', 2)).stored).toBe(true);
      });
      const want = (device: string) => {
        const ws = sent.filter((w) => w.device === device);
        const exits: number[] = [];
        for (const w of ws) w.exitHistogram.forEach((n, k) => (exits[k] = (exits[k] ?? 0) + n));
        return {
          device,
          windows: ws.length,
          count: ws.reduce((a, w) => a + w.count, 0),
          joules: ws.reduce((a, w) => a + w.energy.joules, 0),
          exits,
          labelled: ws.reduce((a, w) => a + (w.accuracy?.labelled ?? 0), 0),
          correct: ws.reduce((a, w) => a + (w.accuracy?.correct ?? 0), 0),
        };
      };
      const all = [want('a'), want('b')];
      expect(await store.totals()).toEqual(all);
      expect(all[0]).toMatchObject({ windows: 6, count: 75, joules: 5.25, exits: [30, 33, 12], labelled: 21, correct: 15 });

      const scrape = async () => parseExposition(await renderMetrics(store));
      const before = await scrape();
      // Prune in steps, down to no rows at all; nothing that feeds a counter may go down.
      const T = 1_700_000_000_000;
      let last = await store.totals();
      for (const ended of [25_000, 45_000, 1_000_000]) {
        expect(await store.prune(1, T + ended + 86_400_000)).toBeGreaterThan(0);
        const now = await store.totals();
        expect(now).toEqual(all);
        for (const t of now) {
          const prev = last.find((p) => p.device === t.device)!;
          for (const k of ['windows', 'count', 'joules', 'labelled', 'correct'] as const) expect(t[k]).toBeGreaterThanOrEqual(prev[k]);
          t.exits.forEach((n, k) => expect(n).toBeGreaterThanOrEqual(prev.exits[k]!));
        }
        last = now;
      }
      expect(await store.latestWindows('a', 10)).toEqual([]);
      expect(await store.latestWindows('b', 10)).toEqual([]);

      const fams = await scrape();
      for (const e of all) {
        const d = { device: e.device, fleet: 'lab' };
        expect(sampleValue(fams, 'edgeexit_windows_total', d), e.device).toBe(e.windows);
        expect(sampleValue(fams, 'edgeexit_inferences_total', d), e.device).toBe(e.count);
        expect(sampleValue(fams, 'edgeexit_energy_joules_total', d), e.device).toBe(e.joules);
        expect(sampleValue(fams, 'edgeexit_labelled_inferences_total', d), e.device).toBe(e.labelled);
        expect(sampleValue(fams, 'edgeexit_correct_inferences_total', d), e.device).toBe(e.correct);
        e.exits.forEach((n, k) => expect(sampleValue(fams, 'edgeexit_exits_total', { ...d, exit: String(k) }), `${e.device} exit ${k}`).toBe(n));
        expect(fams.get('edgeexit_exits_total')!.samples.filter((s) => s.labels.device === e.device)).toHaveLength(e.exits.length);
      }
      expect(sampleValue(fams, 'edgeexit_collector_messages_total', { result: 'stored' })).toBe(9);
      // Every counter sample is where it was before the prunes (none dropped, none vanished) but the
      // device-reported dropped-windows counter, read from the latest stored window: with no window
      // left its series is absent (stale to Prometheus), not lower.
      expect(fams.get('edgeexit_device_dropped_windows_total')!.samples).toEqual([]);
      for (const f of before.values()) {
        if (f.type !== 'counter' || f.name === 'edgeexit_device_dropped_windows_total') continue;
        for (const s of f.samples) expect(sampleValue(fams, f.name, s.labels, s.name), `${s.name} ${JSON.stringify(s.labels)}`).toBe(s.value);
      }

      // A window stored after the prunes adds to the totals; the same window again adds nothing.
      const more = { ...win('a', 100, 1, 7), exitHistogram: [6, 3, 1] };
      expect((await store.recordWindow(more, 'lab', 3)).stored).toBe(true);
      expect((await store.recordWindow(more, 'lab', 4)).stored).toBe(false);
      expect((await store.totals())[0]).toEqual({ ...all[0], windows: 7, count: 85, joules: 6.75, exits: [36, 36, 13], labelled: 26, correct: 19 });
      expect((await store.counters()).duplicates).toBe(1);
    });

    it('adds a duplicate window to no total, one by one or in a batch', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      await store.recordWindow(win('a', 1, 1, 1), 'lab', 2);
      const once = await store.totals();
      expect(once).toEqual([{ device: 'a', windows: 1, count: 10, joules: 1.5, exits: [6, 3, 1], labelled: 5, correct: 4 }]);
      expect((await store.recordWindow(win('a', 1, 1, 1), 'lab', 3)).stored).toBe(false); // redelivery
      await store.recordBirth(birth('a', 2), 4);
      await store.transaction(async () => {
        expect((await store.recordWindow(win('a', 1, 2, 1), 'lab', 5)).stored).toBe(false); // outbox resend in a new session
        expect((await store.recordWindow(win('a', 1, 2, 2), 'lab', 6)).stored).toBe(false);
      });
      expect(await store.totals()).toEqual(once);
      expect((await store.counters()).duplicates).toBe(3);
    });

    it('stores temperature and accuracy when sent, leaves them absent when not, and sums labels per device', async () => {
      const { store, reopen, query } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      await store.recordWindow({ ...win('a', 1, 1, 1), temperatureC: -3.25, accuracy: { correct: 0, labelled: 7 } }, 'lab', 2);
      await store.recordWindow(bare('a', 2, 1, 2), 'lab', 3);
      await store.recordWindow({ ...win('a', 3, 1, 3), temperatureC: 61.125, accuracy: { correct: 9, labelled: 9 } }, 'lab', 4);
      await store.recordWindow(bare('a', 4, 1, 4), 'lab', 5); // the newest window has neither
      await store.recordWindow(bare('b', 1, 0, 1), 'lab', 6); // a device that never sent either

      const rows = await store.latestWindows('a', 10);
      expect(rows.map((w) => w.id)).toEqual([4, 3, 2, 1]);
      expect(rows[0]).not.toHaveProperty('temperatureC');
      expect(rows[0]).not.toHaveProperty('accuracy');
      expect(rows[1]).toMatchObject({ temperatureC: 61.125, accuracy: { correct: 9, labelled: 9 } });
      expect(rows[3]).toMatchObject({ temperatureC: -3.25, accuracy: { correct: 0, labelled: 7 } });
      expect(await store.latestTemperature('a')).toBe(61.125);
      expect(await store.latestTemperature('b')).toBeNull();
      expect(await store.latestTemperature('nobody')).toBeNull();
      expect(await store.totals()).toEqual([
        expect.objectContaining({ device: 'a', windows: 4, labelled: 16, correct: 9 }),
        expect.objectContaining({ device: 'b', windows: 1, labelled: 0, correct: 0 }),
      ]);

      // NULL in the database, not 0: absent stays absent across a reopen.
      expect(await query("SELECT id, temperature_c, accuracy_correct, accuracy_labelled FROM windows WHERE device = 'a' ORDER BY id")).toEqual([
        { id: 1, temperature_c: -3.25, accuracy_correct: 0, accuracy_labelled: 7 },
        { id: 2, temperature_c: null, accuracy_correct: null, accuracy_labelled: null },
        { id: 3, temperature_c: 61.125, accuracy_correct: 9, accuracy_labelled: 9 },
        { id: 4, temperature_c: null, accuracy_correct: null, accuracy_labelled: null },
      ]);
      const again = await reopen();
      expect((await again.latestWindows('a', 1))[0]).not.toHaveProperty('accuracy');
      expect((await again.latestWindows('a', 2))[1]).toMatchObject({ temperatureC: 61.125, accuracy: { correct: 9, labelled: 9 } });
    });

    it('sums labels inside a batch like one by one, and a rolled-back batch adds none', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      // windowBody carries accuracy 4 of 5 and 51.5 °C.
      (await store.transaction(async () => {
        for (let i = 1; i <= 3; i++) await store.recordWindow(win('a', i, 1, i), 'lab', 1 + i);
        await store.recordWindow(win('a', 3, 1, 3), 'lab', 5); // redelivery: not summed twice
      }));
      expect(await store.totals()).toEqual([expect.objectContaining({ windows: 3, labelled: 15, correct: 12 })]);
      await expect(
        store.transaction(async () => {
          await store.recordWindow({ ...win('a', 4, 1, 4), temperatureC: 80, accuracy: { correct: 1, labelled: 100 } }, 'lab', 6);
          throw new Error('disk full');
        }),
      ).rejects.toThrow('disk full');
      expect(await store.totals()).toEqual([expect.objectContaining({ windows: 3, labelled: 15, correct: 12 })]);
      expect(await store.latestTemperature('a')).toBe(51.5);
    });

    it('a rolled-back batch leaves the running totals and exit sums as they were, for every device it touched', async () => {
      const { store, query } = await fresh();
      await store.recordBirth(birth('a', 1), 1);
      await store.transaction(async () => {
        for (let i = 1; i <= 2; i++) await store.recordWindow(win('a', i, 1, i), 'lab', 1 + i);
      });
      const before = await store.totals();
      expect(before).toEqual([{ device: 'a', windows: 2, count: 20, joules: 3, exits: [12, 6, 2], labelled: 10, correct: 8 }]);
      await expect(
        store.transaction(async () => {
          expect((await store.recordWindow({ ...win('a', 3, 1, 3), exitHistogram: [1, 2, 3, 4], count: 10 }, 'lab', 4)).stored).toBe(true);
          expect((await store.recordWindow(win('new', 1, 0, 1), 'lab', 5)).stored).toBe(true); // a device first seen in the batch
          expect(await store.totals()).toHaveLength(2); // inside the batch it counted
          throw new Error('disk full');
        }),
      ).rejects.toThrow('disk full');
      expect(await store.totals()).toEqual(before);
      expect(await query('SELECT device, exit, n FROM device_exit_totals ORDER BY device, exit')).toEqual([
        { device: 'a', exit: 0, n: 12 },
        { device: 'a', exit: 1, n: 6 },
        { device: 'a', exit: 2, n: 2 },
      ]);
      // The same windows, sent again after the rollback, are new: they count once.
      expect((await store.recordWindow(win('a', 3, 1, 3), 'lab', 6)).stored).toBe(true);
      expect(await store.totals()).toEqual([{ device: 'a', windows: 3, count: 30, joules: 4.5, exits: [18, 9, 3], labelled: 15, correct: 12 }]);
    });

    it('keeps the stage quantiles, and the manifest only for windows of the session whose birth announced it', async () => {
      const { store, reopen } = await fresh();
      await store.recordBirth(birth('pi', 3), 1);
      await store.recordWindow(win('pi', 1, 3, 1), 'lab', 2);
      // An older session's window delivered late: which bundle ran it is not known.
      await store.recordWindow(win('pi', 2, 2, 1), 'lab', 3);
      // A device that sent no stage quantiles: none stored, and not a latency sample.
      await store.recordWindow({ ...win('pi', 3, 3, 2), latencyMs: { ...win('pi', 3, 3, 2).latencyMs, stages: [] } }, 'lab', 4);
      const [none, late, first] = await (await reopen()).latestWindows('pi', 3);
      expect(first!.stages).toEqual(windowBody(1, 'pi').latencyMs.stages);
      expect(first!.manifestSha256).toBe(SHA_A);
      expect(late!.manifestSha256).toBeUndefined();
      expect(none).toMatchObject({ id: 3, manifestSha256: SHA_A });
      expect(none!.stages).toBeUndefined();
    });

    it('decides the manifest per window inside a batch too: a birth mid-batch switches it, a death of a newer session clears it', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('pi', 1), 1);
      await store.transaction(async () => {
        await store.prefetch?.([{ device: 'pi', id: 1, windowEnd: win('pi', 1, 1, 1).windowEnd }, { device: 'pi', id: 2 }]);
        await store.recordWindow(win('pi', 1, 1, 1), 'lab', 2);
        // The new session's window before its birth: the stored birth is the old session's.
        await store.recordWindow(win('pi', 2, 2, 1), 'lab', 3);
        await store.recordBirth(birthWith('pi', 2, SHA_B), 4);
        await store.recordWindow(win('pi', 3, 2, 2), 'lab', 5);
        // Session 3's birth was lost; its death arrives, then a late window of it.
        await store.recordDeath({ device: 'pi', bdSeq: 3, clean: false }, 6);
        await store.recordWindow(win('pi', 4, 3, 1), 'lab', 7);
      });
      const byId = Object.fromEntries((await store.latestWindows('pi', 10)).map((w) => [w.id, w.manifestSha256 ?? null]));
      expect(byId).toEqual({ 1: SHA_A, 2: null, 3: SHA_B, 4: null });
    });

    it('lists stage latency windows of the fleet, the class and the manifests asked for, newest first, at most the limit', async () => {
      const { store } = await fresh();
      await store.recordBirth(birth('pi', 1), 1);
      await store.recordBirth({ ...birthWith('nano', 1, SHA_B), profile: 'jetson-orin-nano' }, 1);
      await store.recordBirth({ ...birth('far', 1), fleet: 'yard' }, 1);
      await store.transaction(async () => {
        for (let i = 1; i <= 3; i++) await store.recordWindow(win('pi', i, 1, i), 'lab', 2);
        for (let i = 1; i <= 2; i++) await store.recordWindow(win('nano', 10 + i, 1, i), 'lab', 2);
        await store.recordWindow(win('far', 1, 1, 1), 'yard', 2);
      });
      const rows = (ws: Awaited<ReturnType<FleetStore['stageLatencyWindows']>>) => ws.map((w) => [w.device, w.deviceClass, w.windowEnd, w.manifestSha256]);
      const end = (id: number) => win('x', id, 0, 0).windowEnd;
      expect(rows(await store.stageLatencyWindows({ fleet: 'lab', manifestSha256: [SHA_A, SHA_B], limit: 10 }))).toEqual([
        ['nano', 'jetson-orin-nano', end(12), SHA_B],
        ['nano', 'jetson-orin-nano', end(11), SHA_B],
        ['pi', 'rpi4', end(3), SHA_A],
        ['pi', 'rpi4', end(2), SHA_A],
        ['pi', 'rpi4', end(1), SHA_A],
      ]);
      expect(rows(await store.stageLatencyWindows({ fleet: 'lab', deviceClass: 'rpi4', manifestSha256: [SHA_A, SHA_B], limit: 2 }))).toEqual([
        ['pi', 'rpi4', end(3), SHA_A],
        ['pi', 'rpi4', end(2), SHA_A],
      ]);
      expect(await store.stageLatencyWindows({ fleet: 'lab', deviceClass: 'rpi4', manifestSha256: [SHA_B], limit: 10 })).toEqual([]);
      expect(await store.stageLatencyWindows({ fleet: 'lab', manifestSha256: [], limit: 10 })).toEqual([]);
      const [one] = await store.stageLatencyWindows({ fleet: 'yard', manifestSha256: [SHA_A], limit: 10 });
      expect(one).toEqual({ device: 'far', deviceClass: 'rpi4', windowEnd: end(1), count: 10, exitHistogram: windowBody(1, 'far').exitHistogram, stages: windowBody(1, 'far').latencyMs.stages, manifestSha256: SHA_A });
    });

    it('leases a rollout to one driver at a time: renewed by its holder, taken over only after it expired, handed back by release', async () => {
      const kit = await fresh();
      const store = kit.store;
      const t = 1_700_000_000_000;
      const r = newRollout({ id: 'ro-1', fleet: 'lab', target: ROLLOUT_TARGET, previous: {}, spec: DEFAULT_SPEC, plan: [], devices: [], baselines: {}, now: t });
      await store.saveRollout(r);
      // Two claimants at once: exactly one wins.
      const both = await Promise.all([store.claimRollout('ro-1', 'A', 30_000, t), store.claimRollout('ro-1', 'B', 30_000, t)]);
      expect(both.filter(Boolean)).toHaveLength(1);
      const [holder, other] = both[0] ? ['A', 'B'] : ['B', 'A'];
      expect(await store.claimRollout('ro-1', holder!, 30_000, t + 10_000)).toBe(true); // renewed to t + 40 s
      expect(await store.claimRollout('ro-1', other!, 30_000, t + 35_000)).toBe(false);
      expect(await store.claimRollout('ro-1', other!, 30_000, t + 41_000)).toBe(true); // expired: taken over
      expect(await store.claimRollout('ro-1', holder!, 30_000, t + 42_000)).toBe(false);
      // A release by a driver that does not hold it changes nothing; by the holder, frees it at once.
      await store.releaseRollout('ro-1', holder!);
      expect(await store.claimRollout('ro-1', holder!, 30_000, t + 43_000)).toBe(false);
      await store.releaseRollout('ro-1', other!);
      expect(await store.claimRollout('ro-1', holder!, 30_000, t + 43_000)).toBe(true);
      expect(await store.claimRollout('no-such', 'A', 30_000, t)).toBe(false);
      // A driver's save holds only while it holds the lease; a save without an owner always does.
      expect(await store.saveRollout({ ...r, updatedAt: t + 1 }, other!)).toBe(false);
      expect((await store.rollout('ro-1'))!.record.updatedAt).toBe(t);
      expect(await store.saveRollout({ ...r, updatedAt: t + 2 }, holder!)).toBe(true);
      expect((await store.rollout('ro-1'))!.record.updatedAt).toBe(t + 2);
      // Saves and commands leave the lease alone, and the lease leaves the record alone.
      expect(await store.saveRollout({ ...r, updatedAt: t + 50_000 })).toBe(true);
      expect(await store.commandRollout('ro-1', 'pause')).toBe(1);
      expect(await store.claimRollout('ro-1', other!, 30_000, t + 44_000)).toBe(false);
      expect((await store.rollout('ro-1'))!.record.updatedAt).toBe(t + 50_000);
      // The lease survives a reopen (it is in the database, not in the process).
      const again = await kit.reopen();
      expect(await again.claimRollout('ro-1', other!, 30_000, t + 44_000)).toBe(false);
    });

    it('sets drift baselines per (fleet, class), replacing, and lists them by fleet then class', async () => {
      const { store, reopen } = await fresh();
      const b = { fleet: 'lab', deviceClass: 'rpi4', exitRates: [0.5, 0.5], p95Ms: 3, maxExitShiftPp: 10, maxLatencyRatio: 1.2, minWindows: 1, source: 's', setAt: 1 };
      await store.setDriftBaseline(b);
      await store.setDriftBaseline({ ...b, p95Ms: 4 });
      await store.setDriftBaseline({ ...b, deviceClass: 'Zed', p95Ms: null, manifestSha256: SHA_B });
      await store.setDriftBaseline({ ...b, fleet: 'aisle' });
      // Inside a batch it commits with it, and a rollback takes it back.
      await expect(
        store.transaction(async () => {
          await store.setDriftBaseline({ ...b, fleet: 'zz' });
          throw new Error('disk full');
        }),
      ).rejects.toThrow('disk full');
      expect(await (await reopen()).driftBaselines()).toEqual([
        { ...b, fleet: 'aisle' },
        { ...b, deviceClass: 'Zed', p95Ms: null, manifestSha256: SHA_B },
        { ...b, p95Ms: 4 },
      ]);
    });
  });
}

contract('SQLite', async () => {
  const dir = await tempDir('fleet-store');
  const file = path.join(dir, 'sub', 'fleet.db');
  const kit = {
    store: openFleetStore(file),
    async reopen() {
      await kit.store.close();
      return (kit.store = openFleetStore(file, { mustExist: true }));
    },
    async query(sql: string) {
      const raw = new Database(file, { readonly: true });
      try {
        return raw.prepare(sql).all();
      } finally {
        raw.close();
      }
    },
    async cleanup() {
      await kit.store.close();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  return kit;
});

POSTGRES.describe('PostgreSQL store', () => {
  let server: Postgres;
  let n = 0;
  beforeAll(async () => {
    server = await startPostgres();
  }, 120_000);
  afterAll(async () => {
    await server?.dispose();
  });
  contract('PostgreSQL', async () => {
    // A database per test keeps them apart on one server.
    const url = await server.createDatabase(`store_${++n}`);
    const { default: pg } = await import('pg');
    const kit = {
      store: await openStore(url),
      async reopen() {
        await kit.store.close();
        return (kit.store = await openStore(url, { mustExist: true }));
      },
      async query(sql: string) {
        const c = new pg.Client({ connectionString: url, types: { getTypeParser: (oid: number, f?: 'text' | 'binary') => (oid === 20 ? Number : pg.types.getTypeParser(oid, f)) } as never });
        await c.connect();
        try {
          return (await c.query(sql)).rows;
        } finally {
          await c.end();
        }
      },
      async cleanup() {
        await kit.store.close();
      },
    };
    return kit;
  });
});

describe('SQLite store file: schema, WAL and upgrades', () => {
  const open: FleetStore[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
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
    await store.recordBirth(birth('a', 1), 10);
    await store.recordWindow(win('a', 1, 1, 1), 'lab', 11);
    await store.close();
    const raw = new Database(file, { readonly: true });
    expect(raw.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    raw.close();
    const again = openFleetStore(file, { mustExist: true });
    open.push(again);
    expect(await again.totals()).toMatchObject([{ device: 'a', windows: 1, count: 10 }]);
  });

  it('refuses a database from a newer edgeexit and a missing file when mustExist', async () => {
    const { file, store } = await fresh();
    await store.close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    expect(() => openFleetStore(file)).toThrow(/newer than this edgeexit/);
    expect(() => openFleetStore(file + '.missing', { mustExist: true })).toThrow(/no fleet database/);
  });

  it('upgrades a version 1 database in place: old rows kept without the new fields, new rows stored with them', async () => {
    const dir = await tempDir('fleet-store-v1');
    dirs.push(dir);
    // The database as an edgeexit with schema 1 left it: only the first migration, one device and one window.
    const { file, old } = databaseAt(dir, 1);
    old.prepare("INSERT INTO devices (device, fleet, online, birth, bd_seq, last_metrics_bd_seq, last_metrics_seq, last_seen) VALUES ('old-1', 'lab', 1, ?, 3, 3, 7, 100)").run(
      JSON.stringify(birth('old-1', 3)),
    );
    old
      .prepare(
        `INSERT INTO windows (device, id, bd_seq, seq, window_start, window_end, count, exit_histogram, latency_p50, latency_p95, latency_p99,
           joules, mean_watts, energy_source, dropped_windows, received_at)
         VALUES ('old-1', 1, 3, 7, 1700000000000, 1700000010000, 10, '[6,3,1]', 3, 7, 9, 1.5, 0.15, 'model', 0, 100)`,
      )
      .run();
    old.close();

    const store = openFleetStore(file, { mustExist: true });
    open.push(store);
    const raw = new Database(file, { readonly: true });
    expect(raw.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBe(6);
    expect((raw.pragma('table_info(windows)') as { name: string }[]).map((c) => c.name).slice(-5)).toEqual(['temperature_c', 'accuracy_correct', 'accuracy_labelled', 'stage_latency', 'manifest_sha256']);
    raw.close();

    const [kept] = await store.latestWindows('old-1', 1);
    expect(kept).toMatchObject({ device: 'old-1', id: 1, bdSeq: 3, seq: 7, count: 10, exitHistogram: [6, 3, 1], latencyP95: 7, joules: 1.5 });
    expect(kept).not.toHaveProperty('temperatureC');
    expect(kept).not.toHaveProperty('accuracy');
    // Schema 4's fields: a window stored before it has no stage latency and no known manifest.
    expect(kept).not.toHaveProperty('stages');
    expect(kept).not.toHaveProperty('manifestSha256');
    expect(await store.latestTemperature('old-1')).toBeNull();
    expect(await store.totals()).toEqual([{ device: 'old-1', windows: 1, count: 10, joules: 1.5, exits: [6, 3, 1], labelled: 0, correct: 0 }]);

    // New rows after the upgrade, continuing the old session: no false gap, the kept id still a duplicate.
    expect(await store.recordWindow(win('old-1', 1, 3, 8), 'lab', 200)).toEqual({ stored: false, gap: 0, unknownDevice: false });
    expect(await store.recordWindow({ ...win('old-1', 2, 3, 9), temperatureC: 47.25, accuracy: { correct: 3, labelled: 4 } }, 'lab', 201)).toEqual({ stored: true, gap: 0, unknownDevice: false });
    expect((await store.latestWindows('old-1', 1))[0]).toMatchObject({ id: 2, temperatureC: 47.25, accuracy: { correct: 3, labelled: 4 }, stages: win('old-1', 2, 3, 9).latencyMs.stages, manifestSha256: birth('old-1', 3).bundle.manifestSha256 });
    expect(await store.latestTemperature('old-1')).toBe(47.25);
    expect(await store.totals()).toEqual([{ device: 'old-1', windows: 2, count: 20, joules: 3, exits: [12, 6, 2], labelled: 4, correct: 3 }]);

    // Opening again migrates nothing twice.
    await store.close();
    open.splice(open.indexOf(store), 1);
    const again = openFleetStore(file, { mustExist: true });
    open.push(again);
    expect((await again.latestWindows('old-1', 5)).map((w) => w.id)).toEqual([2, 1]);
  });

  it('upgrades a version 2 database in place with running totals backfilled from its rows, which a prune then leaves alone', async () => {
    const dir = await tempDir('fleet-store-v2');
    dirs.push(dir);
    // The database as an edgeexit with schema 2 left it: every migration but the running totals.
    expect(MIGRATIONS.slice(0, 2)).toHaveLength(2);
    const { file, old } = databaseAt(dir, 2);
    const insert = old.prepare(
      `INSERT INTO windows (device, id, bd_seq, seq, window_start, window_end, count, exit_histogram, latency_p50, latency_p95, latency_p99,
         joules, mean_watts, energy_source, dropped_windows, received_at, temperature_c, accuracy_correct, accuracy_labelled)
       VALUES (?, ?, 1, ?, ?, ?, ?, ?, 3, 7, 9, ?, 0.1, 'model', 0, 100, ?, ?, ?)`,
    );
    const T = 1_700_000_000_000;
    // d1: labels in some rows only, the newest two rows in a later session; d2: a longer histogram, no labels; d3: a device with no windows.
    const rows: [string, number, number, number, number[], number, number | null, number | null][] = [
      ['d1', 1, 1, 10, [6, 3, 1], 1.25, 4, 5],
      ['d1', 2, 2, 12, [6, 5, 1], 0.5, null, null],
      ['d1', 3, 3, 8, [8, 0, 0], 2.75, 7, 7],
      ['d2', 1, 1, 9, [1, 2, 3, 3], 0.125, null, null],
      ['d2', 2, 2, 3, [0, 0, 0, 3], 0.375, null, null],
    ];
    for (const [device, id, i, count, hist, joules, correct, labelled] of rows)
      insert.run(device, id, i, T + i * 10_000, T + (i + 1) * 10_000, count, JSON.stringify(hist), joules, 40 + i, correct, labelled);
    old.prepare("INSERT INTO devices (device, fleet, online, last_seen) VALUES ('d3', 'lab', 0, 5)").run();
    const sums = old
      .prepare<[], { device: string; windows: number; count: number; joules: number; labelled: number; correct: number }>(
        `SELECT device, COUNT(*) AS windows, SUM(count) AS count, SUM(joules) AS joules, COALESCE(SUM(accuracy_labelled), 0) AS labelled,
           COALESCE(SUM(accuracy_correct), 0) AS correct FROM windows GROUP BY device ORDER BY device`,
      )
      .all();
    old.close();

    const store = openFleetStore(file, { mustExist: true });
    open.push(store);
    const raw = new Database(file, { readonly: true });
    expect(raw.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    raw.close();
    const backfilled = [
      { device: 'd1', windows: 3, count: 30, joules: 4.5, exits: [20, 8, 2], labelled: 12, correct: 11 },
      { device: 'd2', windows: 2, count: 12, joules: 0.5, exits: [1, 2, 3, 6], labelled: 0, correct: 0 },
    ];
    expect(await store.totals()).toEqual(backfilled);
    // The same numbers the SUMs over the old rows gave.
    expect((await store.totals()).map(({ exits: _e, ...t }) => t)).toEqual(sums);
    expect((await store.latestWindows('d1', 10)).map((w) => w.id)).toEqual([3, 2, 1]);

    // Pruning the old rows keeps the backfilled totals; a new window adds to them, a kept id does not.
    expect(await store.prune(1, T + 35_000 + 86_400_000)).toBe(4);
    expect(await store.totals()).toEqual(backfilled);
    expect((await store.recordWindow(win('d1', 3, 1, 3), 'lab', 200)).stored).toBe(false); // still stored: a duplicate
    expect((await store.recordWindow(win('d2', 3, 1, 4), 'lab', 201)).stored).toBe(true);
    expect((await store.totals())[1]).toEqual({ device: 'd2', windows: 3, count: 22, joules: 2, exits: [7, 5, 4, 6], labelled: 5, correct: 4 });

    // Opening again backfills nothing twice.
    await store.close();
    open.splice(open.indexOf(store), 1);
    const again = openFleetStore(file, { mustExist: true });
    open.push(again);
    expect(await again.totals()).toEqual([backfilled[0], { device: 'd2', windows: 3, count: 22, joules: 2, exits: [7, 5, 4, 6], labelled: 5, correct: 4 }]);
  });
});
