// The one adapter around better-sqlite3: a FleetStore in a single database file. WAL lets
// `fleet status` read while a collector writes; the schema is versioned with PRAGMA user_version
// and migrated forward on open. De-duplication is the UNIQUE (device, id) key with INSERT OR
// IGNORE, so a window delivered twice (at-least-once MQTT, outbox resends) is stored once.
// Each record* call is one transaction, so counters never disagree with the rows they describe.
// The interface is asynchronous (PostgreSQL answers later) while better-sqlite3 is synchronous:
// every call here runs at once, except that a transaction stays open across its function's
// awaits, so calls from outside it wait until it ended instead of landing inside it. The
// collector's batches skip the promises: `sync` runs a whole batch as one synchronous transaction.
// Per-device totals are running sums kept beside the rows (device_totals, device_exit_totals):
// they only grow, so a retention prune deletes windows without lowering any Prometheus counter.
import { AsyncLocalStorage } from 'node:async_hooks';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Birth, Death, MetricsWindow } from '../telemetry/payloads.js';
import { seqStep } from './seq.js';
import { parseStages, stagesJson } from './stage-text.js';
import { windowFromColumns, type WindowColumns } from './window-columns.js';
import { InputError } from '../util/errors.js';
import type { RolloutRecord } from './rollout-plan.js';
import { COUNTER_NAMES, type CounterName, type RolloutCommand, type StoredRollout, type BirthOutcome, type Counters, type DeathOutcome, type DeviceRow, type DeviceTotals, type FleetStore, type SyncFleetWriter, type WindowOutcome, type WindowRow, type StageLatencyQuery, type StageLatencyWindow, type DriftBaseline } from './fleet-store.js';

export * from './fleet-store.js';

// Append only: entry i takes a database from user_version i to i + 1. Exported for the upgrade
// tests, which build a database as an older edgeexit left it.
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE devices (
     device TEXT PRIMARY KEY,
     fleet TEXT NOT NULL,
     online INTEGER NOT NULL DEFAULT 0,
     birth TEXT,
     bd_seq INTEGER,
     last_metrics_bd_seq INTEGER,
     last_metrics_seq INTEGER,
     last_seen INTEGER NOT NULL
   );
   CREATE TABLE windows (
     device TEXT NOT NULL,
     id INTEGER NOT NULL,
     bd_seq INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     window_start INTEGER NOT NULL,
     window_end INTEGER NOT NULL,
     count INTEGER NOT NULL,
     exit_histogram TEXT NOT NULL,
     latency_p50 REAL NOT NULL,
     latency_p95 REAL NOT NULL,
     latency_p99 REAL NOT NULL,
     joules REAL NOT NULL,
     mean_watts REAL NOT NULL,
     energy_source TEXT NOT NULL,
     dropped_windows INTEGER NOT NULL,
     received_at INTEGER NOT NULL,
     UNIQUE (device, id)
   );
   CREATE INDEX windows_end ON windows (window_end);
   CREATE INDEX windows_device_end ON windows (device, window_end);
   CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);`,
  // 1 → 2: what a window says about the device besides speed and energy (payload fields
  // temperatureC and accuracy), NULL when the device did not send them (rows from version 1 too).
  `ALTER TABLE windows ADD COLUMN temperature_c REAL;
   ALTER TABLE windows ADD COLUMN accuracy_correct INTEGER;
   ALTER TABLE windows ADD COLUMN accuracy_labelled INTEGER;`,
  // 2 → 3: running totals per device, added to as each window is stored and never lowered by a
  // prune, so the Prometheus counters built on them only grow (a drop reads as a counter reset).
  // Backfilled from the rows already stored, so an upgraded database keeps its numbers.
  `CREATE TABLE device_totals (
     device TEXT PRIMARY KEY,
     windows INTEGER NOT NULL,
     count INTEGER NOT NULL,
     joules REAL NOT NULL,
     labelled INTEGER NOT NULL,
     correct INTEGER NOT NULL
   );
   CREATE TABLE device_exit_totals (
     device TEXT NOT NULL,
     exit INTEGER NOT NULL,
     n INTEGER NOT NULL,
     PRIMARY KEY (device, exit)
   ) WITHOUT ROWID;
   INSERT INTO device_totals (device, windows, count, joules, labelled, correct)
     SELECT device, COUNT(*), SUM(count), TOTAL(joules), COALESCE(SUM(accuracy_labelled), 0), COALESCE(SUM(accuracy_correct), 0)
     FROM windows GROUP BY device;
   INSERT INTO device_exit_totals (device, exit, n)
     SELECT w.device, CAST(j.key AS INTEGER), SUM(j.value) FROM windows w, json_each(w.exit_histogram) j GROUP BY w.device, CAST(j.key AS INTEGER);`,
  // 3 → 4: per-stage latency quantiles of each window (JSON [[p50, p95, p99], …], NULL when the
  // device sent none), and the manifest the device ran for it (from the birth of the same bdSeq;
  // NULL when unknown), so the fleet's latency profile and drift compare one bundle's windows.
  // drift_baselines: what a class's calibration predicted, and how far the fleet may stray from it.
  `ALTER TABLE windows ADD COLUMN stage_latency TEXT;
   ALTER TABLE windows ADD COLUMN manifest_sha256 TEXT;
   CREATE INDEX windows_manifest_end ON windows (manifest_sha256, window_end);
   CREATE TABLE drift_baselines (
     fleet TEXT NOT NULL,
     device_class TEXT NOT NULL,
     body TEXT NOT NULL,
     PRIMARY KEY (fleet, device_class)
   );`,
  // 4 → 5: rollouts (src/fleet/rollout.ts): the driver's record as one JSON document, so a
  // restarted driver carries on; the operator's last pause/resume/abort beside it, in columns the
  // driver's saves never touch, so a command given while it saves is not overwritten.
  `CREATE TABLE rollouts (
     id TEXT PRIMARY KEY,
     fleet TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     doc TEXT NOT NULL,
     command TEXT,
     command_seq INTEGER NOT NULL DEFAULT 0
   );`,
  // 5 → 6: which driver holds a rollout and until when (claimRollout), so two drivers started on
  // one rollout do not both publish its jobs. Same columns and meaning as PostgreSQL's (pg-rollouts.ts).
  `ALTER TABLE rollouts ADD COLUMN lease_owner TEXT;
   ALTER TABLE rollouts ADD COLUMN lease_until INTEGER;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export interface OpenStoreOptions {
  /** Refuse to create a new database (readers such as `fleet status`). */
  mustExist?: boolean;
}

/**
 * Open (or create and migrate) the fleet SQLite database.
 *
 * @example
 * ```ts
 * import { openFleetStore } from 'edgeexit/fleet';
 * const store = openFleetStore('fleet.db', { mustExist: true });
 * console.log((await store.devices()).length);
 * await store.close();
 * ```
 */
export function openFleetStore(file: string, opts: OpenStoreOptions = {}): FleetStore {
  if (opts.mustExist && !existsSync(file))
    throw new InputError(`${file}: no fleet database here`, [{ where: file, expected: 'a database written by `edgeexit collect`', got: 'no such file', fix: 'run `edgeexit collect --db <file>` first or pass --db' }]);
  if (!opts.mustExist) mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const db = new Database(file, { fileMustExist: opts.mustExist ?? false });
  try {
    // A reader and the collector may touch the file at the same moment; wait rather than fail.
    // First, so that collectors opening a new file together wait on each other's switch to WAL too.
    db.pragma('busy_timeout = 5000');
    db.pragma('journal_mode = WAL');
    migrate(db, file);
  } catch (err) {
    db.close();
    throw err;
  }
  return new SqliteFleetStore(db, file);
}

function migrate(db: Database.Database, file: string): void {
  // Several collectors may open a new file at once: each step reads the version under the write
  // lock (BEGIN IMMEDIATE), so exactly one of them runs it and the others see it done.
  const step = db.transaction((): boolean => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length)
      throw new InputError(`${file}: fleet database schema ${version} is newer than this edgeexit understands (${MIGRATIONS.length})`, [{ where: file, fix: 'upgrade edgeexit' }]);
    if (version === MIGRATIONS.length) return false;
    db.exec(MIGRATIONS[version]!);
    db.pragma(`user_version = ${version + 1}`);
    return true;
  });
  while (step.immediate()) {
    // one migration per transaction, until the schema is current
  }
}

/** A device's state inside one transaction; `add` is what its stored windows add to the running totals. */
interface PendingDevice {
  fleet: string;
  hasBirth: boolean;
  /** The bdSeq of the last birth and the manifest it announced: a window of that session ran it. */
  birthBdSeq: number | null;
  manifest: string | null;
  bdSeq: number | null;
  seq: number | null;
  seenAt: number;
  dirty: boolean;
  add: { windows: number; count: number; joules: number; labelled: number; correct: number; exits: number[] };
}

interface DeviceDbRow {
  device: string;
  fleet: string;
  online: number;
  birth: string | null;
  bd_seq: number | null;
  last_metrics_bd_seq: number | null;
  last_metrics_seq: number | null;
  last_seen: number;
}

type WindowDbRow = WindowColumns<string>;

function windowFromDb(r: WindowDbRow): WindowRow {
  return windowFromColumns(r, JSON.parse(r.exit_histogram) as number[]);
}

class SqliteFleetStore implements FleetStore {
  private readonly q;
  /** The open transaction (settles when it ended) and the token its calls carry (see `inTx`). */
  private open: { done: Promise<void>; token: object } | undefined;
  /** Set while a transaction's function runs: tells its own calls from calls made elsewhere meanwhile. */
  private readonly inTx = new AsyncLocalStorage<object>();
  private savepoints = 0;
  /**
   * Per device, its metrics-session state as of this transaction: read once, updated in memory
   * by each window, written back once at commit. Per message that saves a SELECT and an UPDATE,
   * two of the three statements a window cost (ingest benchmark).
   */
  private readonly pending: Map<string, PendingDevice>;
  /** True while `sync.transaction`'s function runs: the only time `sync`'s record calls are allowed. */
  private syncOpen = false;
  /** BEGIN IMMEDIATE, COMMIT and ROLLBACK prepared once: the synchronous batch runs them per batch. */
  private readonly txq;

  /**
   * The collector's batch path (FleetStore.sync): every record call of a batch runs synchronously
   * inside one transaction, so a batch costs one promise, not several per message.
   */
  readonly sync: SyncFleetWriter = {
    transaction: (fn) => this.now(() => this.syncTransaction(fn)),
    recordBirth: (b, seenAt) => this.inSync('recordBirth', () => this.birthNow(b, seenAt)),
    recordDeath: (d, seenAt, fleet) => this.inSync('recordDeath', () => this.deathNow(d, seenAt, fleet)),
    recordWindow: (w, fleet, seenAt) => this.inSync('recordWindow', () => this.windowNow(w, fleet, seenAt)),
    noteRefusedWindow: (w, seenAt) => this.inSync('noteRefusedWindow', () => this.refusedNow(w, seenAt)),
    bump: (counter, n = 1) => this.inSync('bump', () => void this.q.bump.run(counter, n)),
    birthOf: (device) => this.inSync('birthOf', () => this.birthOfNow(device)),
  };

  constructor(
    private readonly db: Database.Database,
    readonly file: string,
  ) {
    this.pending = new Map();
    this.txq = { begin: db.prepare('BEGIN IMMEDIATE'), commit: db.prepare('COMMIT'), rollback: db.prepare('ROLLBACK') };
    this.q = {
      device: db.prepare<[string], DeviceDbRow>('SELECT * FROM devices WHERE device = ?'),
      // recordWindow runs per message: it reads only what it compares, not the birth document.
      // The birth's own bdSeq, not bd_seq: a death of a newer session (whose birth was lost) moves
      // bd_seq on, and that session's windows did not necessarily run the old birth's manifest.
      windowState: db.prepare<[string], { fleet: string; has_birth: number; last_metrics_bd_seq: number | null; last_metrics_seq: number | null; birth_bd_seq: number | null; manifest: string | null }>(
        `SELECT fleet, birth IS NOT NULL AS has_birth, last_metrics_bd_seq, last_metrics_seq, json_extract(birth, '$.bdSeq') AS birth_bd_seq,
           json_extract(birth, '$.bundle.manifestSha256') AS manifest FROM devices WHERE device = ?`,
      ),
      upsertBirth: db.prepare(
        `INSERT INTO devices (device, fleet, online, birth, bd_seq, last_metrics_bd_seq, last_metrics_seq, last_seen)
         VALUES (@device, @fleet, 1, @birth, @bdSeq, @bdSeq, @seq, @seen)
         ON CONFLICT (device) DO UPDATE SET online = 1, birth = excluded.birth, bd_seq = excluded.bd_seq,
           last_metrics_bd_seq = excluded.last_metrics_bd_seq, last_metrics_seq = excluded.last_metrics_seq, last_seen = excluded.last_seen
         WHERE devices.fleet = excluded.fleet`,
      ),
      setOffline: db.prepare('UPDATE devices SET online = 0, bd_seq = ?, last_seen = ? WHERE device = ?'),
      touch: db.prepare('UPDATE devices SET last_seen = MAX(last_seen, ?) WHERE device = ?'),
      insertUnknown: db.prepare('INSERT INTO devices (device, fleet, online, last_seen) VALUES (?, ?, 0, ?)'),
      setLastMetrics: db.prepare('UPDATE devices SET last_metrics_bd_seq = ?, last_metrics_seq = ?, last_seen = MAX(last_seen, ?) WHERE device = ?'),
      insertWindow: db.prepare(
        `INSERT OR IGNORE INTO windows (device, id, bd_seq, seq, window_start, window_end, count, exit_histogram, latency_p50, latency_p95,
           latency_p99, joules, mean_watts, energy_source, dropped_windows, received_at, temperature_c, accuracy_correct, accuracy_labelled,
           stage_latency, manifest_sha256)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      bump: db.prepare('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value'),
      counters: db.prepare<[], { name: string; value: number }>('SELECT name, value FROM counters'),
      devices: db.prepare<[], DeviceDbRow>('SELECT * FROM devices ORDER BY device'),
      birthOf: db.prepare<[string], { birth: string | null }>('SELECT birth FROM devices WHERE device = ?'),
      // Running totals (migration 3): written at commit from the per-device sums of the windows
      // the transaction stored (flushPending), so a duplicate adds nothing and a rollback nothing.
      addTotals: db.prepare(
        `INSERT INTO device_totals (device, windows, count, joules, labelled, correct) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (device) DO UPDATE SET windows = windows + excluded.windows, count = count + excluded.count, joules = joules + excluded.joules,
           labelled = labelled + excluded.labelled, correct = correct + excluded.correct`,
      ),
      // One statement for the whole histogram; zeros too, so every exit the device has gets a row.
      // (WHERE true: an upsert after a SELECT needs it, else ON CONFLICT parses as a join constraint.)
      addExits: db.prepare(
        `INSERT INTO device_exit_totals (device, exit, n) SELECT ?, CAST(key AS INTEGER), value FROM json_each(?) WHERE true
         ON CONFLICT (device, exit) DO UPDATE SET n = n + excluded.n`,
      ),
      // Totals read the running totals, not SUMs over `windows`: a prune deletes rows but must not
      // lower counters that feed Prometheus (metrics.ts), fleet status and the API.
      totals: db.prepare<[], { device: string; windows: number; count: number; joules: number; labelled: number; correct: number }>(
        'SELECT device, windows, count, joules, labelled, correct FROM device_totals ORDER BY device',
      ),
      exits: db.prepare<[], { device: string; k: number; n: number }>('SELECT device, exit AS k, n FROM device_exit_totals'),
      latest: db.prepare<[string, number], WindowDbRow>('SELECT * FROM windows WHERE device = ? ORDER BY window_end DESC, id DESC LIMIT ?'),
      // Same order as `latest`, over the windows that carry a temperature (windows_device_end serves it).
      latestTemperature: db.prepare<[string], { temperature_c: number }>(
        'SELECT temperature_c FROM windows WHERE device = ? AND temperature_c IS NOT NULL ORDER BY window_end DESC, id DESC LIMIT 1',
      ),
      // `latest` and `latestTemperature` for every device as one statement each: the subquery is
      // the per-device query, run by SQLite per devices row on windows_device_end, so a fleet page
      // reads what it did before without a round trip per device (nor a scan of every window).
      recent: db.prepare<[number], WindowDbRow>(
        `SELECT w.* FROM devices d, windows w
         WHERE w.rowid IN (SELECT x.rowid FROM windows x WHERE x.device = d.device ORDER BY x.window_end DESC, x.id DESC LIMIT ?)
         ORDER BY w.device, w.window_end DESC, w.id DESC`,
      ),
      // The same for the devices named in a JSON array (a rollout cohort).
      recentOf: db.prepare<[string, number], WindowDbRow>(
        `SELECT w.* FROM (SELECT DISTINCT value AS device FROM json_each(?)) d, windows w
         WHERE w.rowid IN (SELECT x.rowid FROM windows x WHERE x.device = d.device ORDER BY x.window_end DESC, x.id DESC LIMIT ?)
         ORDER BY w.device, w.window_end DESC, w.id DESC`,
      ),
      latestTemperatures: db.prepare<[], { device: string; t: number | null }>(
        `SELECT d.device, (SELECT x.temperature_c FROM windows x WHERE x.device = d.device AND x.temperature_c IS NOT NULL ORDER BY x.window_end DESC, x.id DESC LIMIT 1) AS t
         FROM devices d`,
      ),
      prune: db.prepare('DELETE FROM windows WHERE window_end < ?'),
      setBaseline: db.prepare(
        'INSERT INTO drift_baselines (fleet, device_class, body) VALUES (?, ?, ?) ON CONFLICT (fleet, device_class) DO UPDATE SET body = excluded.body',
      ),
      baselines: db.prepare<[], { body: string }>('SELECT body FROM drift_baselines ORDER BY fleet, device_class'),
      saveRollout: db.prepare<{ id: string; fleet: string; createdAt: number; doc: string; owner: string | null }>(
        'INSERT INTO rollouts (id, fleet, created_at, doc) VALUES (@id, @fleet, @createdAt, @doc) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc WHERE @owner IS NULL OR lease_owner = @owner',
      ),
      rollout: db.prepare<[string], { doc: string; command: string | null; command_seq: number }>('SELECT doc, command, command_seq FROM rollouts WHERE id = ?'),
      rollouts: db.prepare<[], { doc: string }>('SELECT doc FROM rollouts ORDER BY created_at DESC, id DESC'),
      commandRollout: db.prepare<[string, string], { command_seq: number }>('UPDATE rollouts SET command = ?, command_seq = command_seq + 1 WHERE id = ? RETURNING command_seq'),
      // One conditional UPDATE: SQLite runs it under the database's write lock, so of two
      // processes claiming at once exactly one sees the row free and takes it.
      claimRollout: db.prepare<{ id: string; owner: string; now: number; until: number }>(
        'UPDATE rollouts SET lease_owner = @owner, lease_until = @until WHERE id = @id AND (lease_owner IS NULL OR lease_owner = @owner OR lease_until < @now)',
      ),
      releaseRollout: db.prepare<[string, string]>('UPDATE rollouts SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?'),
    };
  }

  recordBirth(b: Birth, seenAt: number): Promise<BirthOutcome> {
    return this.now(() => this.birthNow(b, seenAt));
  }

  private birthNow(b: Birth, seenAt: number): BirthOutcome {
    // The birth resets the device's session state; windows kept from before must land first.
    this.flushPending();
    // The upsert's WHERE leaves a row of another fleet alone (no change): that is the refusal.
    const r = this.q.upsertBirth.run({ device: b.device, fleet: b.fleet, birth: JSON.stringify(b), bdSeq: b.bdSeq, seq: b.seq, seen: seenAt });
    if (r.changes > 0) return 'online';
    this.q.bump.run('fleetMismatch', 1);
    return 'fleetMismatch';
  }

  recordDeath(d: Death, seenAt: number, fleet?: string): Promise<DeathOutcome> {
    return this.now(() => this.deathNow(d, seenAt, fleet));
  }

  private deathNow(d: Death, seenAt: number, fleet?: string): DeathOutcome {
    this.flushPending();
    return this.atomically((): DeathOutcome => {
      const row = this.q.device.get(d.device);
      if (row && fleet !== undefined && row.fleet !== fleet) {
        this.q.bump.run('fleetMismatch', 1);
        return 'fleetMismatch';
      }
      if (!row || row.bd_seq === null) {
        this.q.bump.run('unknownDevice', 1);
        return 'unknown';
      }
      // An older session's will can arrive after the new session's birth: stale. A newer one means
      // that session's birth never reached the store (lost with a broker that had no persistence);
      // the death is still the device's last word, so it goes offline either way.
      if (d.bdSeq < row.bd_seq) {
        this.q.bump.run('staleDeaths', 1);
        this.q.touch.run(seenAt, d.device);
        return 'stale';
      }
      this.q.setOffline.run(d.bdSeq, seenAt, d.device);
      return 'offline';
    });
  }

  recordWindow(w: MetricsWindow, fleet: string, seenAt: number): Promise<WindowOutcome> {
    return this.now(() => this.windowNow(w, fleet, seenAt));
  }

  private windowNow(w: MetricsWindow, fleet: string, seenAt: number): WindowOutcome {
    return this.atomically((): WindowOutcome => {
      const state = this.sessionState(w.device, fleet, seenAt, true)!;
      if (state.fleet !== fleet) {
        this.q.bump.run('fleetMismatch', 1);
        return { stored: false, gap: 0, unknownDevice: false, fleetMismatch: true };
      }
      const unknownDevice = !state.hasBirth;
      if (unknownDevice) this.q.bump.run('unknownDevice', 1);
      // Positional: binding by name costs ~3 µs a message, a tenth of the write (ingest benchmark).
      const e2e = w.latencyMs.endToEnd;
      const histogram = JSON.stringify(w.exitHistogram);
      const r = this.q.insertWindow.run(
        w.device, w.id, w.bdSeq, w.seq, w.windowStart, w.windowEnd, w.count, histogram,
        e2e.p50, e2e.p95, e2e.p99, w.energy.joules, w.energy.meanWatts, w.energy.source, w.droppedWindows, seenAt,
        w.temperatureC ?? null, w.accuracy?.correct ?? null, w.accuracy?.labelled ?? null,
        stagesJson(w.latencyMs.stages), state.birthBdSeq === w.bdSeq ? state.manifest : null,
      );
      const gap = this.advanceSeq(state, w, seenAt);
      if (r.changes === 0) {
        this.q.bump.run('duplicates', 1);
        return { stored: false, gap, unknownDevice };
      }
      // Summed in memory and written once per device at commit (two upserts per window cost a
      // quarter of the batched ingest rate, measured); a rollback drops them with `pending`.
      const add = state.add;
      add.windows++;
      add.count += w.count;
      add.joules += w.energy.joules;
      add.labelled += w.accuracy?.labelled ?? 0;
      add.correct += w.accuracy?.correct ?? 0;
      w.exitHistogram.forEach((n, k) => (add.exits[k] = (add.exits[k] ?? 0) + n));
      return { stored: true, gap, unknownDevice };
    });
  }

  noteRefusedWindow(w: Pick<MetricsWindow, 'device' | 'bdSeq' | 'seq'>, seenAt: number): Promise<number> {
    return this.now(() => this.refusedNow(w, seenAt));
  }

  private refusedNow(w: Pick<MetricsWindow, 'device' | 'bdSeq' | 'seq'>, seenAt: number): number {
    return this.atomically(() => {
      const state = this.sessionState(w.device, '', seenAt, false);
      return state ? this.advanceSeq(state, w, seenAt) : 0;
    });
  }

  /**
   * A device's session state as of this transaction. Inside a transaction it is read once and
   * kept (see `pending`); the row is updated once per device when the transaction commits.
   * Without `create`, a device with no row has none (undefined).
   */
  private sessionState(device: string, fleet: string, seenAt: number, create: boolean): PendingDevice | undefined {
    let state = this.pending.get(device);
    if (state) return state;
    let row = this.q.windowState.get(device);
    if (!row) {
      if (!create) return undefined;
      this.q.insertUnknown.run(device, fleet, seenAt);
      row = this.q.windowState.get(device)!;
    }
    state = {
      fleet: row.fleet,
      hasBirth: row.has_birth !== 0,
      birthBdSeq: row.birth_bd_seq,
      manifest: row.manifest,
      bdSeq: row.last_metrics_bd_seq,
      seq: row.last_metrics_seq,
      seenAt: -Infinity,
      dirty: false,
      add: { windows: 0, count: 0, joules: 0, labelled: 0, correct: 0, exits: [] },
    };
    this.pending.set(device, state);
    return state;
  }

  /** Record that (bdSeq, seq) arrived; returns and counts the seq numbers missing before it. */
  private advanceSeq(state: PendingDevice, w: Pick<MetricsWindow, 'bdSeq' | 'seq'>, seenAt: number): number {
    // Gaps are about transmissions, not windows: a window resent is a duplicate row but still
    // used up its (bdSeq, seq). How a step back is read: src/fleet/seq.ts.
    const { gap, advance } = seqStep(state, w);
    if (gap > 0) this.q.bump.run('gaps', gap);
    if (advance) {
      state.bdSeq = w.bdSeq;
      state.seq = w.seq;
    }
    state.seenAt = Math.max(state.seenAt, seenAt);
    state.dirty = true;
    return gap;
  }

  /** Write the kept session state back (once per device) and forget it: at commit, or before a birth/death reads or replaces it. */
  private flushPending(): void {
    for (const [device, st] of this.pending) {
      if (st.dirty) this.q.setLastMetrics.run(st.bdSeq, st.seq, st.seenAt, device);
      const a = st.add;
      if (a.windows > 0) {
        this.q.addTotals.run(device, a.windows, a.count, a.joules, a.labelled, a.correct);
        this.q.addExits.run(device, JSON.stringify(Array.from(a.exits, (n) => n ?? 0)));
      }
    }
    this.pending.clear();
  }

  bump(counter: CounterName, n = 1): Promise<void> {
    return this.now(() => void this.q.bump.run(counter, n));
  }

  /** True when the caller runs inside the open transaction's function. */
  private inside(): boolean {
    return this.open !== undefined && this.inTx.getStore() === this.open.token;
  }

  /**
   * Run the synchronous `op` now, or, when a transaction is open and the caller is not part of it,
   * as soon as it ended. Nothing awaits between the last check and `op`, so no other transaction
   * can open in between.
   */
  private async now<T>(op: () => T): Promise<T> {
    while (this.open !== undefined && !this.inside()) await this.open.done;
    return op();
  }

  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    if (this.inside()) return this.savepoint(fn);
    while (this.open !== undefined) await this.open.done;
    let ended!: () => void;
    const open = { done: new Promise<void>((r) => (ended = r)), token: {} };
    this.open = open;
    try {
      // IMMEDIATE: take the write lock now, so a second writer on the file waits (busy_timeout)
      // instead of failing when a read transaction would have to become a write one.
      this.db.exec('BEGIN IMMEDIATE');
      const r = await this.inTx.run(open.token, fn);
      this.flushPending();
      this.db.exec('COMMIT');
      return r;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    } finally {
      // Rolled back: what was kept describes rows that no longer changed.
      this.pending.clear();
      this.open = undefined;
      ended();
    }
  }

  /**
   * One synchronous transaction around `fn` (sync.transaction, after `now` waited out any
   * asynchronous one): nothing else can run until it committed or rolled back.
   */
  private syncTransaction<T>(fn: () => T): T {
    // Inside an asynchronous transaction's function: a nested batch is not something the collector does.
    if (this.db.inTransaction) throw new Error(`${this.file}: store.sync.transaction called inside another transaction; run it on its own`);
    this.txq.begin.run();
    this.syncOpen = true;
    try {
      const r = fn();
      this.flushPending();
      this.txq.commit.run();
      return r;
    } catch (err) {
      if (this.db.inTransaction) this.txq.rollback.run();
      throw err;
    } finally {
      this.syncOpen = false;
      this.pending.clear();
    }
  }

  /** A `sync` record call: only inside sync.transaction, where no other call can interleave. */
  private inSync<T>(what: string, op: () => T): T {
    if (!this.syncOpen) throw new Error(`${this.file}: store.sync.${what} called outside store.sync.transaction; call it from inside the transaction's function`);
    return op();
  }

  // Nested: the outer transaction writes the kept state back when it commits.
  private async savepoint<T>(fn: () => Promise<T>): Promise<T> {
    const name = `sp${++this.savepoints}`;
    this.db.exec(`SAVEPOINT ${name}`);
    try {
      const r = await fn();
      this.db.exec(`RELEASE ${name}`);
      return r;
    } catch (err) {
      this.db.exec(`ROLLBACK TO ${name}`);
      this.db.exec(`RELEASE ${name}`);
      throw err;
    }
  }

  // Inside a caller's transaction (a collector batch) a nested one would be a SAVEPOINT per
  // message, about a quarter of the write cost; the caller's rollback already covers it.
  // Outside one, a short synchronous transaction of its own.
  private atomically<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    try {
      return this.db.transaction(() => {
        const r = fn();
        this.flushPending();
        return r;
      })();
    } finally {
      this.pending.clear();
    }
  }

  counters(): Promise<Counters> {
    return this.now(() => this.countersNow());
  }

  private countersNow(): Counters {
    const c = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Counters;
    for (const { name, value } of this.q.counters.all()) if ((COUNTER_NAMES as readonly string[]).includes(name)) c[name as CounterName] = value;
    return c;
  }

  devices(): Promise<DeviceRow[]> {
    return this.now(() => this.devicesNow());
  }

  private devicesNow(): DeviceRow[] {
    return this.q.devices.all().map((r) => ({
      device: r.device,
      fleet: r.fleet,
      online: r.online === 1,
      birth: r.birth === null ? null : (JSON.parse(r.birth) as Birth),
      bdSeq: r.bd_seq,
      lastSeen: r.last_seen,
    }));
  }

  birthOf(device: string): Promise<Birth | null> {
    return this.now(() => this.birthOfNow(device));
  }

  private birthOfNow(device: string): Birth | null {
    const b = this.q.birthOf.get(device)?.birth;
    return b ? (JSON.parse(b) as Birth) : null;
  }

  totals(): Promise<DeviceTotals[]> {
    return this.now(() => this.totalsNow());
  }

  private totalsNow(): DeviceTotals[] {
    // Inside a transaction the sums so far are still in `pending`: write them first.
    if (this.db.inTransaction) this.flushPending();
    const exits = new Map<string, number[]>();
    for (const { device, k, n } of this.q.exits.all()) {
      const a = exits.get(device) ?? [];
      while (a.length <= k) a.push(0);
      a[k] = n;
      exits.set(device, a);
    }
    return this.q.totals.all().map((t) => ({ ...t, exits: exits.get(t.device) ?? [] }));
  }

  latestWindows(device: string, limit: number): Promise<WindowRow[]> {
    return this.now(() => this.latestNow(device, limit));
  }

  private latestNow(device: string, limit: number): WindowRow[] {
    return this.q.latest.all(device, limit).map(windowFromDb);
  }

  recentWindows(limit: number, devices?: readonly string[]): Promise<Map<string, WindowRow[]>> {
    return this.now(() => {
      const out = new Map<string, WindowRow[]>();
      for (const r of devices ? this.q.recentOf.all(JSON.stringify(devices), limit) : this.q.recent.all(limit)) {
        const list = out.get(r.device);
        if (list) list.push(windowFromDb(r));
        else out.set(r.device, [windowFromDb(r)]);
      }
      return out;
    });
  }

  latestTemperatures(): Promise<Map<string, number>> {
    return this.now(() => {
      const out = new Map<string, number>();
      for (const { device, t } of this.q.latestTemperatures.all()) if (t !== null) out.set(device, t);
      return out;
    });
  }

  stageLatencyWindows(q: StageLatencyQuery): Promise<StageLatencyWindow[]> {
    return this.now(() => {
      if (q.manifestSha256.length === 0) return [];
      const marks = q.manifestSha256.map(() => '?').join(', ');
      // Built per call: the list of manifests varies; class filters on the birth's device profile.
      const rows = this.db
        .prepare<unknown[], { device: string; device_class: string | null; window_end: number; count: number; exit_histogram: string; stage_latency: string; manifest_sha256: string }>(
          `SELECT w.device, json_extract(d.birth, '$.profile') AS device_class, w.window_end, w.count, w.exit_histogram, w.stage_latency, w.manifest_sha256
           FROM windows w JOIN devices d ON d.device = w.device
           WHERE d.fleet = ? AND w.manifest_sha256 IN (${marks}) AND w.stage_latency IS NOT NULL
             ${q.deviceClass !== undefined ? "AND json_extract(d.birth, '$.profile') = ?" : ''}
           ORDER BY w.window_end DESC, w.id DESC LIMIT ?`,
        )
        .all(q.fleet, ...q.manifestSha256, ...(q.deviceClass !== undefined ? [q.deviceClass] : []), q.limit);
      return rows.map((r) => ({
        device: r.device,
        deviceClass: r.device_class,
        windowEnd: r.window_end,
        count: r.count,
        exitHistogram: JSON.parse(r.exit_histogram) as number[],
        stages: parseStages(r.stage_latency),
        manifestSha256: r.manifest_sha256,
      }));
    });
  }

  setDriftBaseline(b: DriftBaseline): Promise<void> {
    return this.now(() => void this.q.setBaseline.run(b.fleet, b.deviceClass, JSON.stringify(b)));
  }

  driftBaselines(): Promise<DriftBaseline[]> {
    return this.now(() => this.q.baselines.all().map((r) => JSON.parse(r.body) as DriftBaseline));
  }

  latestTemperature(device: string): Promise<number | null> {
    return this.now(() => this.q.latestTemperature.get(device)?.temperature_c ?? null);
  }

  // Deletes rows only: device_totals and device_exit_totals keep what the pruned windows added.
  prune(days: number, at = Date.now()): Promise<number> {
    return this.now(() => this.q.prune.run(at - days * 86_400_000).changes);
  }

  saveRollout(r: RolloutRecord, owner?: string): Promise<boolean> {
    return this.now(() => this.q.saveRollout.run({ id: r.id, fleet: r.fleet, createdAt: r.createdAt, doc: JSON.stringify(r), owner: owner ?? null }).changes > 0);
  }

  rollout(id: string): Promise<StoredRollout | null> {
    return this.now(() => {
      const row = this.q.rollout.get(id);
      if (!row) return null;
      const command = row.command !== null ? { seq: row.command_seq, command: row.command as RolloutCommand } : null;
      return { record: JSON.parse(row.doc) as RolloutRecord, command };
    });
  }

  rollouts(): Promise<RolloutRecord[]> {
    return this.now(() => this.q.rollouts.all().map((r) => JSON.parse(r.doc) as RolloutRecord));
  }

  commandRollout(id: string, command: RolloutCommand): Promise<number | null> {
    return this.now(() => this.q.commandRollout.get(command, id)?.command_seq ?? null);
  }

  claimRollout(id: string, owner: string, ttlMs: number, now: number): Promise<boolean> {
    return this.now(() => this.q.claimRollout.run({ id, owner, now, until: now + ttlMs }).changes > 0);
  }

  releaseRollout(id: string, owner: string): Promise<void> {
    return this.now(() => void this.q.releaseRollout.run(id, owner));
  }

  // After an open transaction ended, so a close during a batch does not cut it off.
  close(): Promise<void> {
    return this.now(() => {
      if (this.db.open) this.db.close();
    });
  }
}
