// Rollout records in PostgreSQL (src/fleet/pg-rollouts.ts) against a real server the test starts:
// what the SQLite store does (save keeps the command, newest first, numbered commands), and what
// several drivers sharing one database need: distinct command numbers under concurrent operators,
// one lease holder per rollout, and a work queue whose claimants never get or wait on the same row.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { openPgStore } from '../../src/fleet/pg-store.js';
import { PgRollouts, type PgStoredRollout, type RolloutDoc } from '../../src/fleet/pg-rollouts.js';
import { startPostgres, type Postgres } from '../support/postgres.js';
import { POSTGRES } from '../support/require.js';

interface Doc extends RolloutDoc {
  step: number;
}
const doc = (id: string, createdAt: number, status = 'running', step = 0, fleet = 'lab'): Doc => ({ id, fleet, createdAt, status, step });

/** The rollout methods PgFleetStore has beside FleetStore until the engine branch's interface is merged. */
interface WithRollouts {
  saveRollout(r: Doc): Promise<void>;
  rollout(id: string): Promise<PgStoredRollout<Doc> | null>;
  rollouts(): Promise<Doc[]>;
  commandRollout(id: string, c: 'pause' | 'resume' | 'abort'): Promise<number | null>;
}

POSTGRES.describe('PostgreSQL rollouts', () => {
  let server: Postgres;
  let n = 0;
  const pools: pg.Pool[] = [];
  beforeAll(async () => {
    server = await startPostgres();
  }, 120_000);
  afterEach(async () => {
    for (const p of pools.splice(0)) await p.end();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  /** A migrated database (through the store) and `k` independent drivers on it, each with its own pool. */
  async function setup(k: number): Promise<{ url: string; drivers: PgRollouts<Doc>[]; pool: pg.Pool }> {
    const url = await server.createDatabase(`ro_${++n}`);
    await (await openPgStore(url)).close();
    const mk = () => {
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      pools.push(pool);
      return pool;
    };
    const drivers = Array.from({ length: k }, () => {
      const pool = mk();
      return new PgRollouts<Doc>(async (sql, params) => (await pool.query(sql, params)).rows);
    });
    return { url, drivers, pool: mk() };
  }

  it('saves and replaces a record without touching its command, lists newest first, numbers commands', async () => {
    const url = await server.createDatabase(`ro_${++n}`);
    const store = (await openPgStore(url)) as unknown as WithRollouts & { close(): Promise<void> };
    try {
      expect(await store.commandRollout('nope', 'pause')).toBeNull();
      await store.saveRollout(doc('b', 2));
      await store.saveRollout(doc('a', 1));
      await store.saveRollout(doc('B', 2));
      expect(await store.commandRollout('b', 'pause')).toBe(1);
      expect(await store.commandRollout('b', 'resume')).toBe(2);
      // The driver saves after the commands: they stay.
      await store.saveRollout(doc('b', 2, 'paused', 3));
      expect(await store.rollout('b')).toEqual({ record: doc('b', 2, 'paused', 3), command: { seq: 2, command: 'resume' } });
      expect(await store.rollout('a')).toEqual({ record: doc('a', 1), command: null });
      expect(await store.rollout('zz')).toBeNull();
      // Ties on createdAt by id, byte order descending ('b' > 'B'), as SQLite orders them.
      expect((await store.rollouts()).map((r) => r.id)).toEqual(['b', 'B', 'a']);
    } finally {
      await store.close();
    }
  });

  it('operators commanding at once get distinct, consecutive numbers', async () => {
    const { drivers } = await setup(8);
    await drivers[0]!.saveRollout(doc('r', 1));
    const seqs = await Promise.all(drivers.flatMap((d) => [d.commandRollout('r', 'pause'), d.commandRollout('r', 'resume')]));
    expect([...seqs].sort((a, b) => a! - b!)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect((await drivers[0]!.rollout('r'))!.command!.seq).toBe(16);
  });

  it('one driver holds a rollout at a time; another takes it over only after the lease expired, and the old one can no longer save', async () => {
    const { drivers } = await setup(2);
    const [a, b] = drivers as [PgRollouts<Doc>, PgRollouts<Doc>];
    await a.saveRollout(doc('r', 1));
    const t = 1_000_000;
    const both = await Promise.all([a.claimRollout('r', 'A', 30_000, t), b.claimRollout('r', 'B', 30_000, t)]);
    expect(both.filter(Boolean)).toHaveLength(1);
    const [holder, other, otherName] = both[0] ? [a, b, 'B'] : [b, a, 'A'];
    const holderName = otherName === 'B' ? 'A' : 'B';
    expect(await holder.claimRollout('r', holderName, 30_000, t + 10_000)).toBe(true); // renewed to t + 40 s
    expect(await other.claimRollout('r', otherName, 30_000, t + 35_000)).toBe(false);
    expect(await holder.saveRollout(doc('r', 1, 'running', 1), holderName)).toBe(true);
    expect(await other.claimRollout('r', otherName, 30_000, t + 41_000)).toBe(true);
    expect(await holder.saveRollout(doc('r', 1, 'running', 99), holderName)).toBe(false);
    expect((await other.rollout('r'))!.record.step).toBe(1);
    await other.releaseRollout('r', otherName);
    expect(await holder.claimRollout('r', holderName, 30_000, t + 42_000)).toBe(true);
    expect(await other.claimRollout('nope', otherName, 30_000, t)).toBe(false);
  });

  it('the work queue hands each live rollout to one driver, oldest first, never a finished one', async () => {
    const { drivers } = await setup(6);
    const d0 = drivers[0]!;
    await d0.saveRollout(doc('old-done', 1, 'completed'));
    await d0.saveRollout(doc('r1', 2));
    await d0.saveRollout(doc('r2', 3, 'paused'));
    await d0.saveRollout(doc('r3', 4));
    await d0.saveRollout(doc('other-fleet', 5, 'running', 0, 'yard'));
    const got = await Promise.all(drivers.map((d, i) => d.claimNextRollout(`D${i}`, 30_000, 1_000, 'lab')));
    expect(got.filter((x) => x !== null).sort()).toEqual(['r1', 'r2', 'r3']);
    expect(got.filter((x) => x === null)).toHaveLength(3);
    // Without a fleet: the other fleet's rollout is the one left.
    expect(await d0.claimNextRollout('D9', 30_000, 1_000)).toBe('other-fleet');
    expect(await d0.claimNextRollout('D9', 30_000, 1_000, 'lab')).toBeNull();
    // After the leases expired the oldest live one comes back first.
    expect(await d0.claimNextRollout('D9', 30_000, 100_000, 'lab')).toBe('r1');
  });

  it('a claimant skips a rollout another driver is claiming in an open transaction instead of waiting for it', async () => {
    const { drivers, pool } = await setup(1);
    await drivers[0]!.saveRollout(doc('r1', 1));
    await drivers[0]!.saveRollout(doc('r2', 2));
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const mine = new PgRollouts<Doc>(async (sql, params) => (await c.query(sql, params)).rows);
      expect(await mine.claimNextRollout('X', 30_000, 1_000)).toBe('r1');
      // r1's row stays locked until X commits. Waiting on it would end in the statement timeout (an error).
      const other = await pool.connect();
      try {
        await other.query("SET statement_timeout = '10s'");
        const next = new PgRollouts<Doc>(async (sql, params) => (await other.query(sql, params)).rows);
        expect(await next.claimNextRollout('Y', 30_000, 1_000)).toBe('r2');
      } finally {
        other.release();
      }
      await c.query('COMMIT');
    } finally {
      c.release();
    }
    expect(await drivers[0]!.claimNextRollout('Z', 30_000, 1_000)).toBeNull();
  });
});
