// Persistent store-and-forward queue for telemetry: what the device produced survives broker
// outages and agent restarts, and is removed only once the collector has acknowledged it (it
// stored the window; see publisher.ts for why the broker's PUBACK is not enough).
//
// Format: one append-only JSON-lines log, `<dir>/outbox.jsonl`, each record one line, appended and
// fsync'd before the call returns:
//   {"t":"h","next":N,"dropped":D}   header, first line after creation/compaction
//   {"t":"e","id":N,"body":…}        enqueue
//   {"t":"a","ids":[…]}              acknowledged (stored by the collector)
//   {"t":"d","ids":[…]}              discarded (oldest first) because the outbox was full
// State is the replay of the log. A SIGKILL can only leave a torn last line (the append did not
// finish), which reopening truncates: that record's operation simply did not happen. An enqueue
// torn this way was never returned to the caller; an ack torn this way means the entry is sent
// again (at least once, never lost). Ids keep increasing across restarts (max id seen, or the
// header's `next` once compaction has dropped the entries). When acked/dropped records outweigh
// live ones the log is rewritten atomically (temp file + rename), so it is either old or new.
// One process owns a directory at a time; nothing here locks it.
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { InputError, show } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

export interface OutboxOptions {
  /** Most live entries kept; the oldest are dropped beyond it (default 10 000). */
  maxEntries?: number;
  /** Most bytes of live entries (as serialised); the oldest are dropped beyond it (default 16 MiB). */
  maxBytes?: number;
  /** fsync after every append (default true). Off only for tests or tmpfs. */
  fsync?: boolean;
  /** Rewrite the log once it holds this many dead records and they outnumber live ones (default 1000). */
  compactAfter?: number;
  /**
   * The first id of an outbox that has no log yet (default 0); an existing log continues from its
   * own ids. The telemetry publisher starts from the clock (see publisher.ts), so a device whose
   * state folder was wiped does not reuse ids the collector already stored.
   */
  firstId?: number;
}

export interface OutboxEntry<T> {
  id: number;
  body: T;
}

/** What reopening found and fixed. */
export interface OutboxRecovery {
  /** Bytes cut from the end (a torn last record). */
  truncatedBytes: number;
  /** Unparseable lines before the end (not produced by a crash; reported, skipped). */
  skippedLines: number;
}

type LogRecord =
  | { t: 'h'; next: number; dropped: number }
  | { t: 'e'; id: number; body: unknown }
  | { t: 'a'; ids: number[] }
  | { t: 'd'; ids: number[] };

const LOG = 'outbox.jsonl';

function isRecord(r: unknown): r is LogRecord {
  if (r === null || typeof r !== 'object') return false;
  const o = r as Record<string, unknown>;
  const nat = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  switch (o.t) {
    case 'h':
      return nat(o.next) && nat(o.dropped);
    case 'e':
      return nat(o.id) && 'body' in o;
    case 'a':
    case 'd':
      return Array.isArray(o.ids) && o.ids.every(nat);
    default:
      return false;
  }
}

/**
 * A persistent FIFO of JSON entries in one folder (an append-only log, fsynced, compacted now and
 * then): what the publisher has not had acknowledged survives a crash or a power cut. Bounded
 * by entries and bytes; beyond the bounds the oldest are dropped and counted.
 *
 * @example
 * ```ts
 * import { Outbox } from 'edgeexit/telemetry';
 * const box = await Outbox.open<{ n: number }>('.state/outbox', { maxEntries: 1000 });
 * const id = await box.enqueue({ n: 1 });
 * for (const e of box.peek(16)) console.log(e.id, e.body);
 * await box.ack([id]);
 * await box.close();
 * ```
 */
export class Outbox<T = unknown> {
  private readonly live = new Map<number, { body: T; bytes: number }>();
  private liveBytes = 0;
  private nextId = 0;
  private droppedTotal = 0;
  private deadRecords = 0;
  private fd: number | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  readonly recovery: OutboxRecovery = { truncatedBytes: 0, skippedLines: 0 };
  readonly file: string;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly doSync: boolean;
  private readonly compactAfter: number;

  private constructor(readonly dir: string, opts: OutboxOptions) {
    this.file = path.join(dir, LOG);
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
    this.doSync = opts.fsync ?? true;
    this.compactAfter = opts.compactAfter ?? 1000;
    if (!(this.maxEntries >= 1) || !(this.maxBytes >= 1)) throw new InputError(`outbox ${dir}: maxEntries and maxBytes must be ≥ 1`);
    if (opts.firstId !== undefined && !(Number.isSafeInteger(opts.firstId) && opts.firstId >= 0)) {
      throw new InputError(`outbox ${dir}: firstId must be a non-negative safe integer, got ${show(opts.firstId)}`);
    }
  }

  /** Open (creating if needed) the outbox in `dir`, replaying and repairing its log. */
  static async open<T = unknown>(dir: string, opts: OutboxOptions = {}): Promise<Outbox<T>> {
    const box = new Outbox<T>(dir, opts);
    mkdirSync(dir, { recursive: true });
    // A compaction killed before its rename leaves its temp file; the log itself is intact.
    for (const f of readdirSync(dir)) if (f.startsWith(`.${LOG}.`) && f.endsWith('.tmp')) rmSync(path.join(dir, f), { force: true });
    const fresh = !existsSync(box.file);
    box.replay();
    box.fd = openSync(box.file, 'a');
    const first = opts.firstId ?? 0;
    if (fresh && first !== 0) {
      box.nextId = first;
      // Written at once, so a restart before the first enqueue continues from it.
      box.append([{ t: 'h', next: first, dropped: 0 }]);
    }
    return box;
  }

  private replay(): void {
    if (!existsSync(this.file)) return;
    const buf = readFileSync(this.file);
    let pos = 0;
    let goodEnd = 0;
    while (pos < buf.length) {
      const nl = buf.indexOf(0x0a, pos);
      if (nl < 0) break; // no newline: the last append was cut short
      const line = buf.subarray(pos, nl).toString('utf8');
      pos = nl + 1;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        rec = undefined;
      }
      if (!isRecord(rec)) {
        // Only the final line can be torn by a crash; a bad line with good ones after it is damage
        // from elsewhere: skip it and say so rather than refuse the whole queue.
        if (pos >= buf.length) break;
        this.recovery.skippedLines++;
        goodEnd = pos;
        continue;
      }
      this.apply(rec);
      goodEnd = pos;
    }
    if (goodEnd < buf.length) {
      this.recovery.truncatedBytes = buf.length - goodEnd;
      const fd = openSync(this.file, 'r+');
      try {
        ftruncateSync(fd, goodEnd);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }

  private apply(rec: LogRecord): void {
    switch (rec.t) {
      case 'h':
        this.nextId = Math.max(this.nextId, rec.next);
        this.droppedTotal = Math.max(this.droppedTotal, rec.dropped);
        break;
      case 'e': {
        const bytes = Buffer.byteLength(JSON.stringify(rec.body), 'utf8');
        if (!this.live.has(rec.id)) {
          this.live.set(rec.id, { body: rec.body as T, bytes });
          this.liveBytes += bytes;
        }
        this.nextId = Math.max(this.nextId, rec.id + 1);
        break;
      }
      case 'a':
      case 'd':
        for (const id of rec.ids) {
          const e = this.live.get(id);
          if (!e) continue;
          this.live.delete(id);
          this.liveBytes -= e.bytes;
          this.deadRecords++;
          if (rec.t === 'd') this.droppedTotal++;
        }
        break;
    }
  }

  private append(recs: LogRecord[]): void {
    if (this.fd === undefined) throw new InputError(`outbox ${this.dir} is closed`);
    writeSync(this.fd, recs.map((r) => JSON.stringify(r) + '\n').join(''));
    if (this.doSync) fsyncSync(this.fd);
  }

  // Operations are serialised so a compaction never interleaves with an append.
  private exclusive<R>(fn: () => R | Promise<R>): Promise<R> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Append `body`; resolves with its id once it is on disk. When the outbox is full the oldest
   * entries are dropped first and counted in `dropped`.
   */
  enqueue(body: T): Promise<number> {
    return this.exclusive(() => {
      const bytes = Buffer.byteLength(JSON.stringify(body), 'utf8');
      if (bytes > this.maxBytes)
        throw new InputError(`outbox ${this.dir}: entry of ${bytes} bytes exceeds the outbox limit`, [
          { where: 'outbox', expected: `≤ ${this.maxBytes} bytes`, got: `${bytes} bytes` },
        ]);
      const drop: number[] = [];
      let n = this.live.size;
      let b = this.liveBytes;
      for (const [id, e] of this.live) {
        if (n + 1 <= this.maxEntries && b + bytes <= this.maxBytes) break;
        drop.push(id);
        n--;
        b -= e.bytes;
      }
      const id = this.nextId;
      const recs: LogRecord[] = [];
      if (drop.length > 0) recs.push({ t: 'd', ids: drop });
      recs.push({ t: 'e', id, body });
      // Written together: a crash leaves either both or (after truncation) a prefix of whole records.
      this.append(recs);
      for (const r of recs) this.apply(r);
      return id;
    });
  }

  /** The oldest `n` live entries, oldest first; they stay until acked. */
  peek(n: number): OutboxEntry<T>[] {
    const out: OutboxEntry<T>[] = [];
    for (const [id, e] of this.live) {
      if (out.length >= n) break;
      out.push({ id, body: e.body });
    }
    return out;
  }

  /** True while entry `id` is queued (not yet acked or dropped). */
  has(id: number): boolean {
    return this.live.has(id);
  }

  /** Remove acknowledged entries; unknown or already-acked ids are ignored. Resolves with the ids removed. */
  ack(ids: readonly number[]): Promise<number[]> {
    return this.exclusive(async () => {
      const known = ids.filter((id) => this.live.has(id));
      if (known.length === 0) return known;
      const rec: LogRecord = { t: 'a', ids: known };
      this.append([rec]);
      this.apply(rec);
      if (this.deadRecords >= this.compactAfter && this.deadRecords > this.live.size) await this.compact();
      return known;
    });
  }

  private async compact(): Promise<void> {
    const lines: LogRecord[] = [{ t: 'h', next: this.nextId, dropped: this.droppedTotal }];
    for (const [id, e] of this.live) lines.push({ t: 'e', id, body: e.body });
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    try {
      await writeFileAtomic(this.file, lines.map((r) => JSON.stringify(r) + '\n').join(''));
      this.deadRecords = 0;
    } finally {
      this.fd = openSync(this.file, 'a');
    }
  }

  size(): number {
    return this.live.size;
  }

  bytes(): number {
    return this.liveBytes;
  }

  /** Entries discarded because the outbox was full, since it was created (a counter). */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** The id the next enqueue gets. */
  get next(): number {
    return this.nextId;
  }

  async close(): Promise<void> {
    await this.exclusive(() => {
      if (this.fd !== undefined) closeSync(this.fd);
      this.fd = undefined;
    });
  }

  toString(): string {
    return `Outbox(${show(this.dir)}, ${this.live.size} entries)`;
  }
}
