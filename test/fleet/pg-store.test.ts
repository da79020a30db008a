// What is PostgreSQL's own beside the shared contract (store.test.ts): which --db values select it
// and which are refused, day partitions and retention by dropping them, several writers at once
// (two stores on one database, as two collectors are), and the collector end to end on it.
import { existsSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, startCollector, storeKind, type FleetStore } from '../../src/fleet/index.js';
import { openPgStore } from '../../src/fleet/pg-store.js';
import { connectMqtt, topicFor, type Birth, type MetricsWindow } from '../../src/telemetry/index.js';
import { InputError } from '../../src/util/errors.js';
import { runCli } from '../cli/helpers.js';
import { startPostgres, type Postgres } from '../support/postgres.js';
import { POSTGRES } from '../support/require.js';
import { until } from '../support/wait.js';
import { BIRTH_INFO, windowBody } from '../telemetry/mqtt/fixtures.js';

const DAY = 86_400_000;
const birth = (device: string, bdSeq: number): Birth => ({ device, fleet: 'lab', bdSeq, seq: 0, ...BIRTH_INFO, at: 1 });
/** Window `i` of a device, ending at `end` (ms). */
function windowAt(device: string, i: number, end: number): MetricsWindow {
  return { id: i, bdSeq: 1, seq: i + 1, ...windowBody(i, device), windowStart: end - 10_000, windowEnd: end };
}

describe('--db: which store a value names', () => {
  it('takes postgres:// and postgresql:// URLs and file paths, and refuses any other URL with the fix', async () => {
    expect(storeKind('postgres://u@h/db')).toBe('postgres');
    expect(storeKind('POSTGRESQL://u:secret@h:5433/db')).toBe('postgres');
    expect(storeKind('fleet.db')).toBe('sqlite');
    expect(storeKind('./odd:name.db')).toBe('sqlite');
    expect(storeKind('C:\\fleet\\fleet.db')).toBe('sqlite');
    for (const bad of ['mysql://u@h/db', 'postgres:fleet', 'sqlite:///tmp/x.db', 'http://h/x']) expect(() => storeKind(bad), bad).toThrow(InputError);
    expect(() => storeKind('mysql://u:secret@h/db')).toThrow(/--db mysql: is not a database edgeexit can use.*postgres:\/\/user@host\/database/);
    // The password is not echoed back.
    expect(() => storeKind('mysql://u:secret@h/db')).not.toThrow(/secret/);
    // Through the CLI: refused with exit 2, and no folder named after the scheme appears.
    const r = await runCli('fleet', 'status', '--db', 'mysql://u@h/db');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--db mysql: is not a database edgeexit can use/);
    expect(existsSync('mysql:')).toBe(false);
  });
});

POSTGRES.describe('PostgreSQL store', () => {
  let server: Postgres;
  let n = 0;
  const fresh = () => server.createDatabase(`pg_${++n}`);
  beforeAll(async () => {
    server = await startPostgres();
  }, 120_000);
  afterAll(async () => {
    await server?.dispose();
  });

  async function sql<R>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query(text, params)).rows as R[];
    } finally {
      await c.end();
    }
  }
  const partitions = async (url: string): Promise<string[]> =>
    (await sql<{ name: string }>(url, "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'windows'::regclass ORDER BY 1")).map((r) => r.name);

  it('keeps a partition a day, and retention drops the expired days whole', async () => {
    const url = await fresh();
    const now = Date.UTC(2026, 11, 6, 12);
    const then = now - 10 * DAY;
    // Opened ten days ago: the partitions of those days were made ready then.
    const old = await openPgStore(url, { now: () => then });
    await old.close();
    const store = await openPgStore(url, { now: () => now });
    try {
      expect(await partitions(url)).toEqual(['windows_20261126', 'windows_20261127', 'windows_20261128', 'windows_20261129', 'windows_20261206', 'windows_20261207', 'windows_20261208', 'windows_20261209', 'windows_default']);
      await store.recordBirth(birth('a', 1), then);
      await store.transaction(async () => {
        for (let i = 0; i < 4; i++) await store.recordWindow(windowAt('a', i, then + i * DAY), 'lab', then); // days -10 … -7
        await store.recordWindow(windowAt('a', 4, now - 2 * DAY), 'lab', now); // no partition: the default one
        await store.recordWindow(windowAt('a', 5, now), 'lab', now);
      });
      const where = await sql<{ p: string; id: string }>(url, 'SELECT tableoid::regclass::text AS p, id::text FROM windows ORDER BY id');
      expect(where.map((r) => r.p)).toEqual(['windows_20261126', 'windows_20261127', 'windows_20261128', 'windows_20261129', 'windows_default', 'windows_20261206']);
      // Five days: the four old days go as whole partitions, the default partition's row by DELETE.
      expect(await store.prune(1, now)).toBe(5);
      expect(await partitions(url)).toEqual(['windows_20261206', 'windows_20261207', 'windows_20261208', 'windows_20261209', 'windows_default']);
      expect((await store.latestWindows('a', 10)).map((w) => w.id)).toEqual([5]);
      expect((await store.totals())[0]).toMatchObject({ windows: 6, count: 60 });
    } finally {
      await store.close();
    }
  });

  it('migrates once when collectors open a new database together, and refuses a database it never wrote when mustExist', async () => {
    const url = await fresh();
    await expect(openStore(url, { mustExist: true })).rejects.toThrow(/no fleet database here/);
    const stores = await Promise.all([openStore(url), openStore(url), openStore(url)]);
    for (const s of stores) await s.close();
    expect(await sql<{ version: number }>(url, 'SELECT version FROM edgeexit_schema')).toEqual([{ version: 1 }]);
    await sql(url, 'UPDATE edgeexit_schema SET version = 99');
    await expect(openStore(url)).rejects.toThrow(/schema 99 is newer than this edgeexit understands/);
  });

  it('two writers at once (two collectors) store each window once and lose no update of totals or counters', async () => {
    const url = await fresh();
    const [a, b] = [await openStore(url), await openStore(url)];
    try {
      const devices = ['d0', 'd1', 'd2', 'd3', 'd4', 'd5'];
      for (const d of devices) await a.recordBirth(birth(d, 1), 1);
      const base = 1_800_000_000_000;
      // Both get every window of every device, in batches of different sizes and orders (a shared
      // subscription redelivering after a crash can hand the same window to both).
      const all = devices.flatMap((d) => Array.from({ length: 40 }, (_, i) => windowAt(d, i, base + i * 10_000)));
      const run = async (s: FleetStore, windows: MetricsWindow[], size: number): Promise<number> => {
        let stored = 0;
        for (let i = 0; i < windows.length; i += size) {
          const batch = windows.slice(i, i + size);
          stored += await s.transaction(async () => {
            await s.prefetch?.(batch.map((w) => ({ device: w.device, id: w.id, windowEnd: w.windowEnd })));
            let k = 0;
            for (const w of batch) if ((await s.recordWindow(w, 'lab', base)).stored) k++;
            await s.bump('invalid');
            return k;
          });
        }
        return stored;
      };
      const [sa, sb] = await Promise.all([run(a, all, 37), run(b, [...all].reverse(), 23)]);
      const totals = await a.totals();
      expect(totals.map((t) => [t.device, t.windows, t.count])).toEqual(devices.map((d) => [d, 40, 400]));
      expect(totals.every((t) => t.exits.join() === '240,120,40')).toBe(true);
      const c = await b.counters();
      // Every window went to both: one of them stored it, the other counted a duplicate.
      expect(c.duplicates).toBe(2 * all.length - all.length);
      // Device rows are locked per batch, so what each writer was told is exact too.
      expect(sa + sb).toBe(all.length);
      expect(c.invalid).toBe(Math.ceil(all.length / 37) + Math.ceil(all.length / 23));
      expect((await sql<{ n: string }>(url, 'SELECT count(*)::text AS n FROM windows'))[0]!.n).toBe(String(all.length));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('the collector stores to PostgreSQL end to end (embedded broker), and `fleet status --db postgres://…` reads it', async () => {
    const url = await fresh();
    const logs: string[] = [];
    const collector = await startCollector({ dbFile: url, port: 0, host: '127.0.0.1', onLog: (l) => logs.push(l) });
    try {
      expect(logs.join('\n')).toContain(`into ${url}`);
      const raw = await connectMqtt({ url: collector.url, clientId: 'pg-raw', protocolVersion: 4 });
      try {
        await raw.publish(topicFor('lab', 'pi-1', 'birth'), Buffer.from(JSON.stringify(birth('pi-1', 1))), { qos: 1 });
        for (let i = 0; i < 5; i++) await raw.publish(topicFor('lab', 'pi-1', 'metrics'), Buffer.from(JSON.stringify({ id: i, bdSeq: 1, seq: i + 1, ...windowBody(i, 'pi-1') })), { qos: 1 });
        await raw.publish(topicFor('lab', 'pi-1', 'metrics'), Buffer.from(JSON.stringify({ id: 2, bdSeq: 1, seq: 3, ...windowBody(2, 'pi-1') })), { qos: 1 });
      } finally {
        await raw.end();
      }
      await until(async () => (await collector.counters()).duplicates === 1, 'the redelivery counted');
      expect(await collector.store.totals()).toEqual([expect.objectContaining({ device: 'pi-1', windows: 5, count: 50 })]);
    } finally {
      await collector.close();
    }
    const r = await runCli('fleet', 'status', '--db', url, '--json');
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as { devices: { device: string; windows: number; online: boolean }[] }).devices).toEqual([expect.objectContaining({ device: 'pi-1', windows: 5, online: true })]);
  });
});
