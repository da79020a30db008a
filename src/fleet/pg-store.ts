// The FleetStore on PostgreSQL, for fleets that outgrow one SQLite file and for several collectors
// sharing the load. Loaded only when `--db postgres://…` asks for it (open.ts imports this module
// lazily), so neither `pg` nor this file is on any other path.
//
// Several collectors write at once, so every write is safe against the others:
// - Windows are de-duplicated by the unique key (device, id, window_end) with ON CONFLICT DO
//   NOTHING. window_end is in the key because a partitioned table's unique keys must hold the
//   partition column; a window resent carries the same window_end, so the key is still (device, id).
// - Running totals, exit sums and counters are added with single upserts (value = value + n),
//   computed in SQL from the rows the INSERT actually inserted: a window another collector stored
//   first adds nothing and is counted as a duplicate.
// - A batch locks the device rows it touches (SELECT … FOR UPDATE, in device order so two batches
//   cannot deadlock), so gap bookkeeping per device sees one batch at a time.
// Writes are batched: inside a transaction windows, counters and device state are kept in memory
// and written at commit in a few statements: one multi-row INSERT … SELECT FROM unnest(arrays)
// for the windows. COPY into a staging table (writeMode 'copy') did no better in the ingest
// benchmark, which runs both, and costs two more statements and a temporary table, so INSERT is
// the default.
// Windows are range-partitioned by window_end, one partition a day (UTC), created ahead of time
// and by the hourly upkeep; rows outside them land in windows_default. Retention drops whole
// partitions and deletes only what is left in a partially expired day and in the default one.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Pool, PoolClient } from 'pg';
import type { Birth, Death, MetricsWindow } from '../telemetry/payloads.js';
import { seqStep } from './seq.js';
import { parseStages, stagesJson } from './stage-text.js';
import { windowFromColumns, type WindowColumns } from './window-columns.js';
import { InputError } from '../util/errors.js';
import { PgRollouts, PG_ROLLOUTS_MIGRATION } from './pg-rollouts.js';
import type { RolloutRecord } from './rollout-plan.js';
import { COUNTER_NAMES, type BirthOutcome, type CounterName, type Counters, type DeathOutcome, type DeviceRow, type DeviceTotals, type DriftBaseline, type FleetStore, type RolloutCommand, type StoredRollout, type StageLatencyQuery, type StageLatencyWindow, type WindowOutcome, type WindowRow } from './fleet-store.js';

const DAY_MS = 86_400_000;
/** Days of partitions kept ready ahead of today (windows may arrive a few minutes early at most). */
const DAYS_AHEAD = 3;
/** Serialises schema changes and partition creation between collectors (pg_advisory_xact_lock key). */
const SCHEMA_LOCK = 0x65646765;

// Append only: entry i takes a database from version i to i + 1 (recorded in edgeexit_schema).
export const PG_MIGRATIONS: readonly string[] = [
  `CREATE TABLE devices (
     device TEXT PRIMARY KEY,
     fleet TEXT NOT NULL,
     online BOOLEAN NOT NULL DEFAULT false,
     birth TEXT,
     bd_seq BIGINT,
     last_metrics_bd_seq BIGINT,
     last_metrics_seq BIGINT,
     last_seen BIGINT NOT NULL
   );
   CREATE TABLE windows (
     device TEXT NOT NULL,
     id BIGINT NOT NULL,
     bd_seq BIGINT NOT NULL,
     seq BIGINT NOT NULL,
     window_start BIGINT NOT NULL,
     window_end BIGINT NOT NULL,
     count BIGINT NOT NULL,
     exit_histogram BIGINT[] NOT NULL,
     latency_p50 DOUBLE PRECISION NOT NULL,
     latency_p95 DOUBLE PRECISION NOT NULL,
     latency_p99 DOUBLE PRECISION NOT NULL,
     joules DOUBLE PRECISION NOT NULL,
     mean_watts DOUBLE PRECISION NOT NULL,
     energy_source TEXT NOT NULL,
     dropped_windows BIGINT NOT NULL,
     received_at BIGINT NOT NULL,
     temperature_c DOUBLE PRECISION,
     accuracy_correct BIGINT,
     accuracy_labelled BIGINT,
     UNIQUE (device, id, window_end)
   ) PARTITION BY RANGE (window_end);
   CREATE TABLE windows_default PARTITION OF windows DEFAULT;
   CREATE INDEX windows_device_end ON windows (device, window_end);
   CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
   CREATE TABLE device_totals (
     device TEXT PRIMARY KEY,
     windows BIGINT NOT NULL,
     count BIGINT NOT NULL,
     joules DOUBLE PRECISION NOT NULL,
     labelled BIGINT NOT NULL,
     correct BIGINT NOT NULL
   );
   CREATE TABLE device_exit_totals (
     device TEXT NOT NULL,
     exit INTEGER NOT NULL,
     n BIGINT NOT NULL,
     PRIMARY KEY (device, exit)
   );`,
  // 1 → 2 (SQLite schema 4): per-stage latency quantiles of each window (JSON [[p50, p95, p99], …]
  // as in the SQLite store, NULL when the device sent none) and the manifest the device ran for it
  // (its birth of the same bdSeq; NULL when unknown), so the fleet latency profile and drift
  // compare one bundle's windows. drift_baselines: one JSON body per (fleet, class), as in SQLite.
  // Adding nullable columns to the partitioned parent adds them to every partition without a rewrite.
  `ALTER TABLE windows ADD COLUMN stage_latency TEXT;
   ALTER TABLE windows ADD COLUMN manifest_sha256 TEXT;
   CREATE INDEX windows_manifest_end ON windows (manifest_sha256, window_end);
   CREATE TABLE drift_baselines (
     fleet TEXT NOT NULL,
     device_class TEXT NOT NULL,
     body TEXT NOT NULL,
     PRIMARY KEY (fleet, device_class)
   );`,
  // 2 → 3: rollouts (the driver's record, the operator's last command, which driver holds it); see pg-rollouts.ts.
  PG_ROLLOUTS_MIGRATION,
];

export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length;

export interface PgStoreOptions {
  /** Refuse a database edgeexit never wrote (readers such as `fleet status`). */
  mustExist?: boolean;
  /** Connections in the pool (default 4): transactions each hold one while open. */
  poolSize?: number;
  /** How a batch's windows reach the table: 'insert' (default) or 'copy' (COPY into a staging table), kept so the ingest benchmark can compare them. */
  writeMode?: 'insert' | 'copy';
  /** Clock for the partitions made ready on open and hourly (tests). */
  now?: () => number;
}

/** The connection URL without its password, for logs and `store.file`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://…';
  }
}

/**
 * Open (or create and migrate) the fleet schema in a PostgreSQL database.
 *
 * @example
 * ```ts
 * import { openPgStore } from 'edgeexit/fleet/pg-store';
 * const store = await openPgStore('postgres://edgeexit@db.lan/fleet');
 * console.log((await store.totals()).length);
 * await store.close();
 * ```
 */
export async function openPgStore(url: string, opts: PgStoreOptions = {}): Promise<FleetStore> {
  const { default: pg } = await import('pg');
  // BIGINT (int8) as a number: every value here (ids, ms timestamps, counts) is far below 2^53.
  const types = { getTypeParser: (oid: number, format?: 'text' | 'binary') => (oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) };
  const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 4, types: types as never });
  // An idle connection the server dropped must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  const where = redactUrl(url);
  try {
    await migrate(pool, where, opts.mustExist ?? false);
    const now = opts.now ?? Date.now;
    const store = new PgFleetStore(pool, where, opts.writeMode ?? 'insert', now);
    await store.upkeep();
    return store;
  } catch (err) {
    await pool.end().catch(() => undefined);
    if (err instanceof InputError) throw err;
    throw new InputError(`${where}: cannot open the fleet database: ${(err as Error).message}`, [{ where, expected: 'a reachable PostgreSQL database the URL may write to', got: (err as Error).message, fix: 'check host, port, user, password and database name in --db, and that the server is running' }], { cause: err });
  }
}

async function migrate(pool: Pool, where: string, mustExist: boolean): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    // Two collectors starting at once: the second waits here and then finds the schema done.
    await c.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
    const exists = (await c.query<{ t: string | null }>("SELECT to_regclass('edgeexit_schema') AS t")).rows[0]!.t !== null;
    if (!exists && mustExist)
      throw new InputError(`${where}: no fleet database here`, [{ where, expected: 'a database written by `edgeexit collect --db postgres://…`', got: 'no edgeexit schema', fix: 'run `edgeexit collect --db <url>` first or pass --db' }]);
    if (!exists) await c.query('CREATE TABLE edgeexit_schema (version INTEGER NOT NULL); INSERT INTO edgeexit_schema VALUES (0)');
    const version = (await c.query<{ version: number }>('SELECT version FROM edgeexit_schema')).rows[0]!.version;
    if (version > PG_MIGRATIONS.length)
      throw new InputError(`${where}: fleet database schema ${version} is newer than this edgeexit understands (${PG_MIGRATIONS.length})`, [{ where, fix: 'upgrade edgeexit' }]);
    for (let v = version; v < PG_MIGRATIONS.length; v++) await c.query(PG_MIGRATIONS[v]!);
    await c.query('UPDATE edgeexit_schema SET version = $1', [PG_MIGRATIONS.length]);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}

/** A device as a transaction sees it: read once (row locked), updated in memory, written at commit. */
interface DeviceState {
  fleet: string;
  hasBirth: boolean;
  /** The bdSeq of the last birth and the manifest it announced: a window of that session ran it. */
  birthBdSeq: number | null;
  manifest: string | null;
  bdSeq: number | null;
  seq: number | null;
  seenAt: number;
  dirty: boolean;
  /** No row yet: inserted at commit (a device whose first message is a window). */
  isNew: boolean;
}

interface PendingWindow {
  w: MetricsWindow;
  seenAt: number;
  /** Decided when the window arrived, from the birth the transaction saw then. */
  manifest: string | null;
}

/** One open transaction: its connection and what it keeps until commit. */
interface Tx {
  client: PoolClient;
  devices: Map<string, DeviceState>;
  /** Devices looked up and found to have no row. */
  absent: Set<string>;
  /** `device\0id` keys looked up; `stored`: those that exist (in the table or in this batch). */
  checked: Set<string>;
  stored: Set<string>;
  windows: PendingWindow[];
  counters: Map<CounterName, number>;
  savepoints: number;
}

const keyOf = (device: string, id: number): string => `${device}\0${id}`;

interface DeviceDbRow {
  device: string;
  fleet: string;
  online: boolean;
  birth: string | null;
  bd_seq: number | null;
  last_seen: number;
}

type WindowDbRow = WindowColumns<number[]>;

const WINDOW_COLUMNS = 'device, id, bd_seq, seq, window_start, window_end, count, exit_histogram, latency_p50, latency_p95, latency_p99, joules, mean_watts, energy_source, dropped_windows, received_at, temperature_c, accuracy_correct, accuracy_labelled, stage_latency, manifest_sha256';

// What the windows just inserted add to the running totals and exit sums, in the same statement,
// so a window another collector stored first (ON CONFLICT DO NOTHING) adds nothing.
const ADD_TOTALS = `
  tot AS (
    INSERT INTO device_totals AS t (device, windows, count, joules, labelled, correct)
    SELECT device, count(*), sum(count), sum(joules), coalesce(sum(accuracy_labelled), 0), coalesce(sum(accuracy_correct), 0)
    FROM ins GROUP BY device ORDER BY device
    ON CONFLICT (device) DO UPDATE SET windows = t.windows + excluded.windows, count = t.count + excluded.count,
      joules = t.joules + excluded.joules, labelled = t.labelled + excluded.labelled, correct = t.correct + excluded.correct
    RETURNING 1
  ), ex AS (
    INSERT INTO device_exit_totals AS e (device, exit, n)
    SELECT ins.device, h.k - 1, sum(h.n) FROM ins, unnest(ins.exit_histogram) WITH ORDINALITY AS h(n, k)
    GROUP BY ins.device, h.k ORDER BY ins.device, h.k
    ON CONFLICT (device, exit) DO UPDATE SET n = e.n + excluded.n
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM ins) AS inserted`;

const INSERT_WINDOWS = `
  WITH ins AS (
    INSERT INTO windows (${WINDOW_COLUMNS})
    SELECT d, i, b, s, ws, we, c, h::bigint[], p50, p95, p99, j, mw, src, dr, ra, tc, ac, al, sl, ms
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[],
      $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::text[], $15::bigint[], $16::bigint[],
      $17::float8[], $18::bigint[], $19::bigint[], $20::text[], $21::text[]) AS u(d, i, b, s, ws, we, c, h, p50, p95, p99, j, mw, src, dr, ra, tc, ac, al, sl, ms)
    ON CONFLICT DO NOTHING
    RETURNING device, count, joules, accuracy_labelled, accuracy_correct, exit_histogram
  ), ${ADD_TOTALS}`;

const INSERT_FROM_STAGE = `
  WITH ins AS (
    INSERT INTO windows (${WINDOW_COLUMNS}) SELECT ${WINDOW_COLUMNS} FROM windows_stage
    ON CONFLICT DO NOTHING
    RETURNING device, count, joules, accuracy_labelled, accuracy_correct, exit_histogram
  ), ${ADD_TOTALS}`;

const partitionName = (day: number): string => `windows_${new Date(day * DAY_MS).toISOString().slice(0, 10).replace(/-/g, '')}`;

// The window columns as WindowDbRow reads them (the histogram as a JS number array).
const WINDOW_SELECT = WINDOW_COLUMNS.replace('exit_histogram', 'exit_histogram::float8[] AS exit_histogram');

function windowFromDb(r: WindowDbRow): WindowRow {
  return windowFromColumns(r, r.exit_histogram);
}

class PgFleetStore implements FleetStore {
  private readonly inTx = new AsyncLocalStorage<Tx>();
  /** Connections that have the COPY staging table (temporary tables live per connection). */
  private readonly staged = new WeakSet<PoolClient>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  /** Rollout records (pg-rollouts.ts), through `read` so calls inside a store transaction join it. */
  private readonly ro = new PgRollouts<RolloutRecord>((sql, params) => this.read(sql, params));

  constructor(
    private readonly pool: Pool,
    readonly file: string,
    private readonly writeMode: 'insert' | 'copy',
    private readonly now: () => number,
  ) {
    // A failed upkeep (lock timeout) is retried next hour; until then windows go to the default partition.
    this.timer = setInterval(() => void this.upkeep().catch(() => undefined), 3_600_000);
    this.timer.unref();
  }

  /** Partitions for today and the next days, so the day's windows never land in the default one. */
  async upkeep(): Promise<void> {
    const today = Math.floor(this.now() / DAY_MS);
    const c = await this.pool.connect();
    try {
      for (let day = today; day <= today + DAYS_AHEAD; day++) {
        await c.query('BEGIN');
        try {
          await c.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
          // Creating a partition locks the parent table: wait briefly, else try again next hour.
          await c.query("SET LOCAL lock_timeout = '5s'");
          await c.query(`CREATE TABLE IF NOT EXISTS ${partitionName(day)} PARTITION OF windows FOR VALUES FROM (${day * DAY_MS}) TO (${(day + 1) * DAY_MS})`);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK');
          throw err;
        }
      }
    } finally {
      c.release();
    }
  }

  private tx(): Tx | undefined {
    return this.inTx.getStore();
  }

  /** Run `fn` in the caller's transaction, or in one of its own. */
  private within<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const tx = this.tx();
    return tx ? fn(tx) : this.transaction(() => fn(this.tx()!));
  }

  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    const outer = this.tx();
    if (outer) return this.savepoint(outer, fn);
    const client = await this.pool.connect();
    const tx: Tx = { client, devices: new Map(), absent: new Set(), checked: new Set(), stored: new Set(), windows: [], counters: new Map(), savepoints: 0 };
    let broken = false;
    try {
      await client.query('BEGIN');
      const r = await this.inTx.run(tx, fn);
      await this.write(tx);
      await client.query('COMMIT');
      return r;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => (broken = true));
      throw err;
    } finally {
      client.release(broken);
    }
  }

  // Nested: kept state is written first so a rollback to the savepoint undoes exactly its own part.
  private async savepoint<T>(tx: Tx, fn: () => Promise<T>): Promise<T> {
    await this.write(tx);
    const name = `sp${++tx.savepoints}`;
    await tx.client.query(`SAVEPOINT ${name}`);
    try {
      const r = await fn();
      await this.write(tx);
      await tx.client.query(`RELEASE ${name}`);
      return r;
    } catch (err) {
      await tx.client.query(`ROLLBACK TO ${name}`);
      this.forget(tx);
      throw err;
    }
  }

  /** Drop what the transaction kept in memory (after a rollback to a savepoint the rows it described changed back). */
  private forget(tx: Tx): void {
    tx.devices.clear();
    tx.absent.clear();
    tx.checked.clear();
    tx.stored.clear();
    tx.windows = [];
    tx.counters.clear();
  }

  /**
   * Read, in two round trips, what a batch will need: the device rows (locked, in device order)
   * and which of its windows are already stored. The collector calls it with the whole batch;
   * record* calls load anything it missed one at a time.
   */
  async prefetch(keys: readonly { device: string; id?: number; windowEnd?: number }[]): Promise<void> {
    const tx = this.tx();
    if (!tx) return;
    const devices = [...new Set(keys.map((k) => k.device))].filter((d) => !tx.devices.has(d) && !tx.absent.has(d)).sort();
    if (devices.length) {
      // The birth's bdSeq and manifest decide each window's manifest_sha256 (as in the SQLite store).
      const r = await tx.client.query<{ device: string; fleet: string; has_birth: boolean; birth_bd_seq: number | null; manifest: string | null; last_metrics_bd_seq: number | null; last_metrics_seq: number | null }>(
        `SELECT device, fleet, birth IS NOT NULL AS has_birth, ((birth::jsonb) ->> 'bdSeq')::bigint AS birth_bd_seq,
           (birth::jsonb) -> 'bundle' ->> 'manifestSha256' AS manifest, last_metrics_bd_seq, last_metrics_seq
         FROM devices WHERE device = ANY($1) ORDER BY device FOR UPDATE`,
        [devices],
      );
      for (const d of devices) tx.absent.add(d);
      for (const row of r.rows) {
        tx.absent.delete(row.device);
        tx.devices.set(row.device, { fleet: row.fleet, hasBirth: row.has_birth, birthBdSeq: row.birth_bd_seq, manifest: row.manifest, bdSeq: row.last_metrics_bd_seq, seq: row.last_metrics_seq, seenAt: -Infinity, dirty: false, isNew: false });
      }
    }
    const ids = keys.filter((k): k is { device: string; id: number; windowEnd: number } => k.id !== undefined && k.windowEnd !== undefined && !tx.checked.has(keyOf(k.device, k.id)));
    if (ids.length) {
      const r = await tx.client.query<{ device: string; id: number }>(
        // LATERAL … LIMIT 1: one index probe per key, in the one partition its window_end falls in.
        // A plain join lets the planner pick a merge join over whole partitions, which grows with the table.
        `SELECT k.device, k.id FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS k(device, id, window_end)
         CROSS JOIN LATERAL (SELECT 1 FROM windows w WHERE w.device = k.device AND w.id = k.id AND w.window_end = k.window_end LIMIT 1) AS hit`,
        [ids.map((k) => k.device), ids.map((k) => k.id), ids.map((k) => k.windowEnd)],
      );
      for (const k of ids) tx.checked.add(keyOf(k.device, k.id));
      for (const row of r.rows) tx.stored.add(keyOf(row.device, row.id));
    }
  }

  private bumpIn(tx: Tx, counter: CounterName, n = 1): void {
    tx.counters.set(counter, (tx.counters.get(counter) ?? 0) + n);
  }

  recordBirth(b: Birth, seenAt: number): Promise<BirthOutcome> {
    return this.within(async (tx) => {
      // The birth resets the device's session state: what was kept for it is written first.
      await this.write(tx);
      tx.devices.delete(b.device);
      tx.absent.delete(b.device);
      // The upsert's WHERE leaves a row of another fleet alone (no row returned): that is the refusal.
      const r = await tx.client.query(
        `INSERT INTO devices (device, fleet, online, birth, bd_seq, last_metrics_bd_seq, last_metrics_seq, last_seen)
         VALUES ($1, $2, true, $3, $4, $4, $5, $6)
         ON CONFLICT (device) DO UPDATE SET online = true, birth = excluded.birth, bd_seq = excluded.bd_seq,
           last_metrics_bd_seq = excluded.last_metrics_bd_seq, last_metrics_seq = excluded.last_metrics_seq, last_seen = excluded.last_seen
         WHERE devices.fleet = excluded.fleet
         RETURNING 1`,
        [b.device, b.fleet, JSON.stringify(b), b.bdSeq, b.seq, seenAt],
      );
      if (r.rowCount) return 'online';
      this.bumpIn(tx, 'fleetMismatch');
      return 'fleetMismatch';
    });
  }

  recordDeath(d: Death, seenAt: number, fleet?: string): Promise<DeathOutcome> {
    return this.within(async (tx): Promise<DeathOutcome> => {
      await this.write(tx);
      tx.devices.delete(d.device);
      tx.absent.delete(d.device);
      const row = (await tx.client.query<{ fleet: string; bd_seq: number | null }>('SELECT fleet, bd_seq FROM devices WHERE device = $1 FOR UPDATE', [d.device])).rows[0];
      if (row && fleet !== undefined && row.fleet !== fleet) {
        this.bumpIn(tx, 'fleetMismatch');
        return 'fleetMismatch';
      }
      if (!row || row.bd_seq === null) {
        this.bumpIn(tx, 'unknownDevice');
        return 'unknown';
      }
      // As in the SQLite store: an older session's will is stale; a newer one still takes the device offline.
      if (d.bdSeq < row.bd_seq) {
        this.bumpIn(tx, 'staleDeaths');
        await tx.client.query('UPDATE devices SET last_seen = GREATEST(last_seen, $1) WHERE device = $2', [seenAt, d.device]);
        return 'stale';
      }
      await tx.client.query('UPDATE devices SET online = false, bd_seq = $1, last_seen = $2 WHERE device = $3', [d.bdSeq, seenAt, d.device]);
      return 'offline';
    });
  }

  recordWindow(w: MetricsWindow, fleet: string, seenAt: number): Promise<WindowOutcome> {
    return this.within(async (tx): Promise<WindowOutcome> => {
      await this.prefetch([{ device: w.device, id: w.id, windowEnd: w.windowEnd }]);
      let state = tx.devices.get(w.device);
      if (!state) {
        state = { fleet, hasBirth: false, birthBdSeq: null, manifest: null, bdSeq: null, seq: null, seenAt, dirty: true, isNew: true };
        tx.devices.set(w.device, state);
        tx.absent.delete(w.device);
      }
      if (state.fleet !== fleet) {
        this.bumpIn(tx, 'fleetMismatch');
        return { stored: false, gap: 0, unknownDevice: false, fleetMismatch: true };
      }
      const unknownDevice = !state.hasBirth;
      if (unknownDevice) this.bumpIn(tx, 'unknownDevice');
      const gap = this.advanceSeq(tx, state, w, seenAt);
      const key = keyOf(w.device, w.id);
      if (tx.stored.has(key)) {
        this.bumpIn(tx, 'duplicates');
        return { stored: false, gap, unknownDevice };
      }
      tx.stored.add(key);
      tx.windows.push({ w, seenAt, manifest: state.birthBdSeq === w.bdSeq ? state.manifest : null });
      return { stored: true, gap, unknownDevice };
    });
  }

  noteRefusedWindow(w: Pick<MetricsWindow, 'device' | 'bdSeq' | 'seq'>, seenAt: number): Promise<number> {
    return this.within(async (tx) => {
      await this.prefetch([{ device: w.device }]);
      const state = tx.devices.get(w.device);
      return state ? this.advanceSeq(tx, state, w, seenAt) : 0;
    });
  }

  /** Same rule as the SQLite store (store.ts advanceSeq): the seq numbers missing before this one. */
  private advanceSeq(tx: Tx, state: DeviceState, w: Pick<MetricsWindow, 'bdSeq' | 'seq'>, seenAt: number): number {
    const { gap, advance } = seqStep(state, w);
    if (gap > 0) this.bumpIn(tx, 'gaps', gap);
    if (advance) {
      state.bdSeq = w.bdSeq;
      state.seq = w.seq;
    }
    state.seenAt = Math.max(state.seenAt, seenAt);
    state.dirty = true;
    return gap;
  }

  /** Write what the transaction kept: new devices, windows (with totals), device state, counters. */
  private async write(tx: Tx): Promise<void> {
    const c = tx.client;
    const fresh = [...tx.devices].filter(([, s]) => s.isNew).sort(([a], [b]) => (a < b ? -1 : 1));
    if (fresh.length) {
      await c.query('INSERT INTO devices (device, fleet, online, last_seen) SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::bigint[]) ON CONFLICT (device) DO NOTHING', [
        fresh.map(([d]) => d),
        fresh.map(([, s]) => s.fleet),
        fresh.map(() => false),
        fresh.map(([, s]) => s.seenAt),
      ]);
      for (const [, s] of fresh) s.isNew = false;
    }
    if (tx.windows.length) {
      const inserted = await this.insertWindows(c, tx.windows);
      // Stored by another collector between our look-up and this insert: a duplicate after all.
      if (inserted < tx.windows.length) this.bumpIn(tx, 'duplicates', tx.windows.length - inserted);
      tx.windows = [];
    }
    const dirty = [...tx.devices].filter(([, s]) => s.dirty).sort(([a], [b]) => (a < b ? -1 : 1));
    if (dirty.length) {
      await c.query(
        `UPDATE devices d SET last_metrics_bd_seq = u.b, last_metrics_seq = u.s, last_seen = GREATEST(d.last_seen, u.seen)
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(device, b, s, seen) WHERE d.device = u.device`,
        [dirty.map(([d]) => d), dirty.map(([, s]) => s.bdSeq), dirty.map(([, s]) => s.seq), dirty.map(([, s]) => (Number.isFinite(s.seenAt) ? s.seenAt : 0))],
      );
      for (const [, s] of dirty) s.dirty = false;
    }
    if (tx.counters.size) {
      const names = [...tx.counters.keys()].sort();
      await c.query('INSERT INTO counters AS c (name, value) SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (name) DO UPDATE SET value = c.value + excluded.value', [
        names,
        names.map((n) => tx.counters.get(n)!),
      ]);
      tx.counters.clear();
    }
  }

  /** One batch of windows into the table, with what they add to the totals; returns how many were new. */
  private async insertWindows(c: PoolClient, pending: PendingWindow[]): Promise<number> {
    const rows = [...pending].sort((a, b) => (a.w.device < b.w.device ? -1 : a.w.device > b.w.device ? 1 : a.w.id - b.w.id));
    if (this.writeMode === 'copy') return this.copyWindows(c, rows);
    const col = <T>(f: (p: PendingWindow) => T): T[] => rows.map(f);
    const r = await c.query<{ inserted: number }>(INSERT_WINDOWS, [
      col((p) => p.w.device),
      col((p) => p.w.id),
      col((p) => p.w.bdSeq),
      col((p) => p.w.seq),
      col((p) => p.w.windowStart),
      col((p) => p.w.windowEnd),
      col((p) => p.w.count),
      col((p) => `{${p.w.exitHistogram.join(',')}}`),
      col((p) => p.w.latencyMs.endToEnd.p50),
      col((p) => p.w.latencyMs.endToEnd.p95),
      col((p) => p.w.latencyMs.endToEnd.p99),
      col((p) => p.w.energy.joules),
      col((p) => p.w.energy.meanWatts),
      col((p) => p.w.energy.source),
      col((p) => p.w.droppedWindows),
      col((p) => p.seenAt),
      col((p) => p.w.temperatureC ?? null),
      col((p) => p.w.accuracy?.correct ?? null),
      col((p) => p.w.accuracy?.labelled ?? null),
      col((p) => stagesJson(p.w.latencyMs.stages)),
      col((p) => p.manifest),
    ]);
    return r.rows[0]!.inserted;
  }

  /** The COPY variant: rows streamed into a per-connection staging table, then inserted from it. */
  private async copyWindows(c: PoolClient, rows: PendingWindow[]): Promise<number> {
    const { from: copyFrom } = await import('pg-copy-streams');
    if (!this.staged.has(c)) {
      await c.query('CREATE TEMP TABLE IF NOT EXISTS windows_stage (LIKE windows INCLUDING DEFAULTS) ON COMMIT DELETE ROWS');
      this.staged.add(c);
    }
    const v = (x: number | string | null | undefined): string => (x === null || x === undefined ? '\\N' : String(x));
    const text = rows
      .map(({ w, seenAt, manifest }) =>
        [w.device, w.id, w.bdSeq, w.seq, w.windowStart, w.windowEnd, w.count, `{${w.exitHistogram.join(',')}}`, w.latencyMs.endToEnd.p50, w.latencyMs.endToEnd.p95, w.latencyMs.endToEnd.p99, w.energy.joules, w.energy.meanWatts, w.energy.source, w.droppedWindows, seenAt, w.temperatureC, w.accuracy?.correct, w.accuracy?.labelled, stagesJson(w.latencyMs.stages), manifest]
          .map(v)
          .join('\t'),
      )
      .join('\n');
    // Device ids and enums are restricted to safe characters by the wire schema (no tabs, newlines or
    // backslashes); the stage JSON holds numbers only and a manifest hash is hex.
    const stream = c.query(copyFrom(`COPY windows_stage (${WINDOW_COLUMNS}) FROM STDIN`));
    await new Promise<void>((resolve, reject) => {
      stream.on('error', reject);
      stream.on('finish', () => resolve());
      stream.end(text + '\n');
    });
    const r = await c.query<{ inserted: number }>(INSERT_FROM_STAGE);
    await c.query('DELETE FROM windows_stage');
    return r.rows[0]!.inserted;
  }

  async bump(counter: CounterName, n = 1): Promise<void> {
    const tx = this.tx();
    if (tx) return this.bumpIn(tx, counter, n);
    await this.pool.query('INSERT INTO counters AS c (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = c.value + excluded.value', [counter, n]);
  }

  /**
   * One statement: inside a transaction after writing what it kept (so it sees it, and is part of
   * it), else on any pooled connection. Reads, and the single-statement writes beside the batch
   * path (drift baselines, rollouts).
   */
  private async read<R extends object>(sql: string, params: unknown[] = []): Promise<R[]> {
    const tx = this.tx();
    if (tx) {
      await this.write(tx);
      return (await tx.client.query<R>(sql, params)).rows;
    }
    return (await this.pool.query<R>(sql, params)).rows;
  }

  async counters(): Promise<Counters> {
    const c = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Counters;
    for (const { name, value } of await this.read<{ name: string; value: number }>('SELECT name, value FROM counters'))
      if ((COUNTER_NAMES as readonly string[]).includes(name)) c[name as CounterName] = value;
    return c;
  }

  async devices(): Promise<DeviceRow[]> {
    return (await this.read<DeviceDbRow>('SELECT device, fleet, online, birth, bd_seq, last_seen FROM devices ORDER BY device COLLATE "C"')).map((r) => ({
      device: r.device,
      fleet: r.fleet,
      online: r.online,
      birth: r.birth === null ? null : (JSON.parse(r.birth) as Birth),
      bdSeq: r.bd_seq,
      lastSeen: r.last_seen,
    }));
  }

  async birthOf(device: string): Promise<Birth | null> {
    const b = (await this.read<{ birth: string | null }>('SELECT birth FROM devices WHERE device = $1', [device]))[0]?.birth;
    return b ? (JSON.parse(b) as Birth) : null;
  }

  async totals(): Promise<DeviceTotals[]> {
    const exits = new Map<string, number[]>();
    for (const { device, k, n } of await this.read<{ device: string; k: number; n: number }>('SELECT device, exit AS k, n FROM device_exit_totals')) {
      const a = exits.get(device) ?? [];
      while (a.length <= k) a.push(0);
      a[k] = n;
      exits.set(device, a);
    }
    const rows = await this.read<Omit<DeviceTotals, 'exits'>>('SELECT device, windows, count, joules, labelled, correct FROM device_totals ORDER BY device COLLATE "C"');
    return rows.map((t) => ({ ...t, exits: exits.get(t.device) ?? [] }));
  }

  async latestWindows(device: string, limit: number): Promise<WindowRow[]> {
    const rows = await this.read<WindowDbRow>(`SELECT ${WINDOW_SELECT} FROM windows WHERE device = $1 ORDER BY window_end DESC, id DESC LIMIT $2`, [device, limit]);
    return rows.map(windowFromDb);
  }

  async recentWindows(limit: number, devices?: readonly string[]): Promise<Map<string, WindowRow[]>> {
    // LATERAL: the per-device query of latestWindows run by the server for every device (on
    // windows_device_end in each partition), so one round trip, not one per device.
    const from = devices ? 'unnest($2::text[]) AS d(device)' : 'devices d';
    const rows = await this.read<WindowDbRow>(
      `SELECT w.* FROM ${from} CROSS JOIN LATERAL (
         SELECT ${WINDOW_SELECT} FROM windows WHERE device = d.device ORDER BY window_end DESC, id DESC LIMIT $1
       ) w
       ORDER BY w.device COLLATE "C", w.window_end DESC, w.id DESC`,
      devices ? [limit, [...new Set(devices)]] : [limit],
    );
    const out = new Map<string, WindowRow[]>();
    for (const r of rows) {
      const list = out.get(r.device);
      if (list) list.push(windowFromDb(r));
      else out.set(r.device, [windowFromDb(r)]);
    }
    return out;
  }

  async latestTemperatures(): Promise<Map<string, number>> {
    const rows = await this.read<{ device: string; t: number }>(
      `SELECT d.device, w.t FROM devices d CROSS JOIN LATERAL (
         SELECT temperature_c AS t FROM windows WHERE device = d.device AND temperature_c IS NOT NULL ORDER BY window_end DESC, id DESC LIMIT 1
       ) w`,
    );
    return new Map(rows.map((r) => [r.device, r.t]));
  }

  async stageLatencyWindows(q: StageLatencyQuery): Promise<StageLatencyWindow[]> {
    if (q.manifestSha256.length === 0) return [];
    // Class is the birth's device profile, as in the SQLite store; windows_manifest_end serves the filter and order.
    const rows = await this.read<{ device: string; device_class: string | null; window_end: number; count: number; exit_histogram: number[]; stage_latency: string; manifest_sha256: string }>(
      `SELECT w.device, (d.birth::jsonb) ->> 'profile' AS device_class, w.window_end, w.count, w.exit_histogram::float8[] AS exit_histogram, w.stage_latency, w.manifest_sha256
       FROM windows w JOIN devices d ON d.device = w.device
       WHERE d.fleet = $1 AND w.manifest_sha256 = ANY($2::text[]) AND w.stage_latency IS NOT NULL
         AND ($3::text IS NULL OR (d.birth::jsonb) ->> 'profile' = $3::text)
       ORDER BY w.window_end DESC, w.id DESC LIMIT $4`,
      [q.fleet, [...q.manifestSha256], q.deviceClass ?? null, q.limit],
    );
    return rows.map((r) => ({
      device: r.device,
      deviceClass: r.device_class,
      windowEnd: r.window_end,
      count: r.count,
      exitHistogram: r.exit_histogram,
      stages: parseStages(r.stage_latency),
      manifestSha256: r.manifest_sha256,
    }));
  }

  async setDriftBaseline(b: DriftBaseline): Promise<void> {
    await this.read(
      'INSERT INTO drift_baselines (fleet, device_class, body) VALUES ($1, $2, $3) ON CONFLICT (fleet, device_class) DO UPDATE SET body = excluded.body',
      [b.fleet, b.deviceClass, JSON.stringify(b)],
    );
  }

  async driftBaselines(): Promise<DriftBaseline[]> {
    // COLLATE "C": byte order, the order SQLite's default BINARY collation gives.
    const rows = await this.read<{ body: string }>('SELECT body FROM drift_baselines ORDER BY fleet COLLATE "C", device_class COLLATE "C"');
    return rows.map((r) => JSON.parse(r.body) as DriftBaseline);
  }

  async latestTemperature(device: string): Promise<number | null> {
    const r = await this.read<{ t: number }>('SELECT temperature_c AS t FROM windows WHERE device = $1 AND temperature_c IS NOT NULL ORDER BY window_end DESC, id DESC LIMIT 1', [device]);
    return r[0]?.t ?? null;
  }

  /**
   * Windows that ended before `now - days`: whole day partitions are dropped (no row-by-row
   * delete, no table bloat); rows of the partly expired day and of the default partition are
   * deleted. The totals keep what they added, as in the SQLite store.
   */
  async prune(days: number, now = Date.now()): Promise<number> {
    const cutoff = now - days * DAY_MS;
    let removed = 0;
    const parts = await this.pool.query<{ name: string }>("SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'windows'::regclass");
    for (const { name } of parts.rows) {
      const m = /^windows_(\d{4})(\d{2})(\d{2})$/.exec(name);
      if (!m) continue;
      const end = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) + DAY_MS;
      if (end > cutoff) continue;
      const c = await this.pool.connect();
      try {
        await c.query('BEGIN');
        await c.query("SET LOCAL lock_timeout = '5s'");
        removed += (await c.query<{ n: number }>(`SELECT count(*) AS n FROM ${name}`)).rows[0]!.n;
        await c.query(`DROP TABLE ${name}`);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        // Busy writers held the table past lock_timeout: this day goes at the next prune.
        if ((err as { code?: string }).code !== '55P03') throw err;
      } finally {
        c.release();
      }
    }
    removed += (await this.pool.query('DELETE FROM windows WHERE window_end < $1', [cutoff])).rowCount ?? 0;
    return removed;
  }

  // ---- Rollouts (pg-rollouts.ts). Lease methods: see there.

  saveRollout(r: RolloutRecord, owner?: string): Promise<boolean> {
    return this.ro.saveRollout(r, owner);
  }


  rollout(id: string): Promise<StoredRollout | null> {
    return this.ro.rollout(id);
  }

  rollouts(): Promise<RolloutRecord[]> {
    return this.ro.rollouts();
  }

  commandRollout(id: string, command: RolloutCommand): Promise<number | null> {
    return this.ro.commandRollout(id, command);
  }

  claimRollout(id: string, owner: string, ttlMs: number, now: number): Promise<boolean> {
    return this.ro.claimRollout(id, owner, ttlMs, now);
  }

  releaseRollout(id: string, owner: string): Promise<void> {
    return this.ro.releaseRollout(id, owner);
  }

  /** Rollout leases for several drivers, with the work queue and owner-checked saves (see pg-rollouts.ts). */
  get rolloutLeases(): Pick<PgRollouts, 'claimRollout' | 'claimNextRollout' | 'releaseRollout' | 'saveRollout'> {
    return this.ro;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.pool.end();
  }
}
