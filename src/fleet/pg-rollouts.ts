// The PostgreSQL side of the rollout tables (the SQLite side is src/fleet/store.ts on the engine
// branch: table `rollouts`, saveRollout / rollout / rollouts / commandRollout). Kept in its own
// file so it merges apart from the window path; PgFleetStore delegates to it (pg-store.ts).
//
// Several collectors and rollout drivers may share one database, so:
// - saveRollout is one upsert: the driver's document replaces the old one, and the operator's
//   command columns are left alone (a command given while a driver saves is not lost).
// - commandRollout is one UPDATE … RETURNING: the row lock makes two operators' commands get
//   distinct, increasing numbers, so the driver applies each once and in order.
// - Only one driver should tick a rollout at a time (two would both publish the same jobs). The
//   lease columns say which: claimRollout takes or renews it with one conditional UPDATE (its WHERE
//   is checked again on the locked row, so two claimants cannot both win), and claimNextRollout
//   is the work queue: a driver asking for any live rollout no one holds takes it with
//   SELECT … FOR UPDATE SKIP LOCKED, so drivers asking at once get different rollouts and never wait
//   on each other. saveRollout with an owner saves only while that owner holds the lease.

/** What of a rollout record the store reads (the engine branch's RolloutRecord has these fields). */
export interface RolloutDoc {
  id: string;
  fleet: string;
  createdAt: number;
  status: string;
}

export type PgRolloutCommand = 'pause' | 'resume' | 'abort';

export interface PgStoredRollout<R extends RolloutDoc> {
  record: R;
  /** The last command given, with its number; null when none. */
  command: { seq: number; command: PgRolloutCommand } | null;
}

/** Runs one statement: in the caller's transaction when there is one, else on a pooled connection. */
export type PgRun = <T extends object>(sql: string, params?: unknown[]) => Promise<T[]>;

/** Statuses a driver still works on; the others are final. */
const LIVE = ['running', 'paused'];

// Appended to PG_MIGRATIONS (pg-store.ts) as "2 → 3". status is the document's, copied into a column
// so the work queue can pick live rollouts without parsing every document.
export const PG_ROLLOUTS_MIGRATION = `CREATE TABLE rollouts (
     id TEXT PRIMARY KEY,
     fleet TEXT NOT NULL,
     created_at BIGINT NOT NULL,
     status TEXT NOT NULL,
     doc TEXT NOT NULL,
     command TEXT,
     command_seq BIGINT NOT NULL DEFAULT 0,
     lease_owner TEXT,
     lease_until BIGINT
   );
   CREATE INDEX rollouts_created ON rollouts (created_at DESC, id DESC);
   CREATE INDEX rollouts_live ON rollouts (created_at) WHERE status IN ('running', 'paused');`;

/**
 * Rollout records in PostgreSQL, through a statement runner (PgFleetStore passes its own, so calls
 * made inside a store transaction are part of it).
 *
 * @example
 * ```ts
 * const ro = new PgRollouts((sql, params) => pool.query(sql, params).then((r) => r.rows));
 * if (await ro.claimRollout(id, 'driver-a', 30_000, Date.now())) await ro.saveRollout(record, 'driver-a');
 * ```
 */
export class PgRollouts<R extends RolloutDoc = RolloutDoc> {
  constructor(private readonly run: PgRun) {}

  /**
   * Insert or replace the record; the command columns stay. With `owner`, only unless another
   * driver took the lease over (claimRollout): then it returns false and saves nothing.
   */
  async saveRollout(r: R, owner?: string): Promise<boolean> {
    const rows = await this.run(
      `INSERT INTO rollouts AS o (id, fleet, created_at, status, doc) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, status = excluded.status
       WHERE $6::text IS NULL OR o.lease_owner = $6::text
       RETURNING 1`,
      [r.id, r.fleet, r.createdAt, r.status, JSON.stringify(r), owner ?? null],
    );
    return rows.length > 0;
  }

  async rollout(id: string): Promise<PgStoredRollout<R> | null> {
    const row = (await this.run<{ doc: string; command: string | null; command_seq: number }>('SELECT doc, command, command_seq FROM rollouts WHERE id = $1', [id]))[0];
    if (!row) return null;
    return { record: JSON.parse(row.doc) as R, command: row.command !== null ? { seq: Number(row.command_seq), command: row.command as PgRolloutCommand } : null };
  }

  /** Every rollout, newest first (ties by id, byte order as in SQLite). */
  async rollouts(): Promise<R[]> {
    const rows = await this.run<{ doc: string }>('SELECT doc FROM rollouts ORDER BY created_at DESC, id COLLATE "C" DESC');
    return rows.map((r) => JSON.parse(r.doc) as R);
  }

  /** Record an operator command; returns its number, or null when there is no such rollout. */
  async commandRollout(id: string, command: PgRolloutCommand): Promise<number | null> {
    const row = (await this.run<{ command_seq: number }>('UPDATE rollouts SET command = $1, command_seq = command_seq + 1 WHERE id = $2 RETURNING command_seq', [command, id]))[0];
    return row ? Number(row.command_seq) : null;
  }

  /**
   * Take or renew the lease on one rollout until `now + ttlMs`: true when `owner` holds it now,
   * false when another driver holds an unexpired lease (or there is no such rollout).
   */
  async claimRollout(id: string, owner: string, ttlMs: number, now: number): Promise<boolean> {
    const rows = await this.run(
      `UPDATE rollouts SET lease_owner = $2, lease_until = $3::bigint + $4::bigint
       WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $3::bigint) RETURNING 1`,
      [id, owner, now, ttlMs],
    );
    return rows.length > 0;
  }

  /**
   * The work queue: the oldest live rollout (running or paused) of `fleet` (any fleet when absent)
   * that no driver holds, leased to `owner`; null when none is free. SKIP LOCKED: a row another
   * driver is claiming at this moment is passed over, not waited for.
   */
  async claimNextRollout(owner: string, ttlMs: number, now: number, fleet?: string): Promise<string | null> {
    const rows = await this.run<{ id: string }>(
      `UPDATE rollouts SET lease_owner = $1, lease_until = $2::bigint + $3::bigint
       WHERE id = (
         SELECT id FROM rollouts
         WHERE status = ANY($4::text[]) AND ($5::text IS NULL OR fleet = $5::text)
           AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $2::bigint)
         ORDER BY created_at, id COLLATE "C" LIMIT 1 FOR UPDATE SKIP LOCKED
       ) RETURNING id`,
      [owner, now, ttlMs, LIVE, fleet ?? null],
    );
    return rows[0]?.id ?? null;
  }

  /** Give the lease back (a driver that stops), so another takes the rollout at once. */
  async releaseRollout(id: string, owner: string): Promise<void> {
    await this.run('UPDATE rollouts SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2', [id, owner]);
  }
}
