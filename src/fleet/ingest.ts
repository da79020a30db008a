// The collector's write path: received MQTT messages are queued and stored in batches, one SQLite
// transaction per batch (a commit per message caps ingest at a few thousand messages/s; see the
// ingest benchmark in the README). De-duplication and counters are unchanged: every message still
// goes through handleMessage, in arrival order, inside the batch's transaction. On a store with a
// synchronous writer (SQLite, FleetStore.sync) that is handleMessageSync, the same steps without a
// promise per message: the whole batch runs inside one synchronous transaction.
//
// What a crash costs, and why nothing is lost:
// - Windows: after a batch commits, `onCommitted` is told which windows of which device it settled
//   (stored, a duplicate of one stored, or refused for good and counted), and the collector acks
//   them to the device (payloads.ts, publisher.ts). A collector killed before the commit acks
//   nothing, so the device sends those windows again.
// - Births and deaths carry no id to ack: the collector commits the batch before it PUBACKs one
//   (collector.ts, `beforeAck`), and its persistent session has the broker redeliver a message it
//   never PUBACKed. A death must not be lost: it is what shows a device offline.
// A clean close() commits everything received first.
// Batches commit one at a time, in arrival order: a batch's transaction starts only after the
// previous one committed or rolled back, so acks leave in the order their windows were stored.
import type { MqttMessage } from '../telemetry/mqtt/client.js';
import { PayloadTooLargeError, decodePayload, parseTopic, type Birth, type Death, type MetricsWindow, type PayloadOf } from '../telemetry/payloads.js';
import { ValidationError } from '../util/errors.js';
import { safeText } from '../util/safe-text.js';
import { DEFAULT_LIMITS, checkBirthBounds, checkWindowBounds, exitsOf, type Limits, type Rejection } from './bounds.js';
import type { BirthOutcome, CounterName, DeathOutcome, FleetStore, SyncFleetWriter, WindowOutcome } from './fleet-store.js';

export interface BatchOptions {
  /** Most messages per transaction (default 500); a full batch is committed at once. */
  maxMessages?: number;
  /** Longest a received message waits for its commit, in ms (default 25). 0 commits every message on its own. */
  maxDelayMs?: number;
}

export const DEFAULT_BATCH: Required<BatchOptions> = { maxMessages: 500, maxDelayMs: 25 };
/**
 * Against PostgreSQL a batch costs a handful of network round trips and a durable commit whatever
 * its size, so larger batches store more per second (ingest benchmark, README); the wait for a
 * commit is still at most maxDelayMs.
 */
export const PG_BATCH: Required<BatchOptions> = { maxMessages: 2000, maxDelayMs: 25 };

/** Windows of one device that a commit settled: what the collector acks on its ack topic. */
export interface SettledWindows {
  fleet: string;
  device: string;
  ids: number[];
}

/**
 * The collector's limits (src/fleet/bounds.ts) plus, per device, the exits its birth announced:
 * read from the store once per device, then kept up to date by the births this collector stores,
 * so a window costs no extra query.
 *
 * @example
 * const guard = new IngestGuard({ maxFutureSkewMs: 60_000 });
 * await handleMessage(store, message, Date.now(), console.log, guard);
 */
export class IngestGuard {
  readonly limits: Limits;
  private readonly exits = new Map<string, number | undefined>();

  constructor(limits: Partial<Limits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  async exitsOf(store: FleetStore, device: string): Promise<number | undefined> {
    if (!this.exits.has(device)) this.exits.set(device, exitsOf(await store.birthOf(device)));
    return this.exits.get(device);
  }

  /** exitsOf for a synchronous store (FleetStore.sync), inside its transaction. */
  exitsOfSync(store: SyncFleetWriter, device: string): number | undefined {
    if (!this.exits.has(device)) this.exits.set(device, exitsOf(store.birthOf(device)));
    return this.exits.get(device);
  }

  /** After a birth was stored. */
  born(b: Birth): void {
    this.exits.set(b.device, exitsOf(b));
  }

  /** After a rollback: what was learnt inside it may not have been stored. */
  forget(): void {
    this.exits.clear();
  }
}

export class BatchedIngest {
  private queue: { m: MqttMessage; seenAt: number }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private done = 0;
  /** The last batch's commit (or rollback); the next one waits for it. */
  private writing: Promise<void> = Promise.resolve();
  private readonly maxMessages: number;
  private readonly maxDelayMs: number;

  constructor(
    private readonly store: FleetStore,
    private readonly log: (line: string) => void,
    private readonly now: () => number = Date.now,
    opts: BatchOptions = {},
    private readonly guard: IngestGuard = new IngestGuard(),
    /** Called after each commit with the windows it settled, per device (never for a rollback). */
    private readonly onCommitted: (settled: SettledWindows[]) => void = () => undefined,
  ) {
    this.maxMessages = Math.max(1, opts.maxMessages ?? DEFAULT_BATCH.maxMessages);
    this.maxDelayMs = Math.max(0, opts.maxDelayMs ?? DEFAULT_BATCH.maxDelayMs);
  }

  /** Queue one received message; it is stored by the next commit. */
  push(m: MqttMessage): void {
    this.queue.push({ m, seenAt: this.now() });
    if (this.maxDelayMs === 0 || this.queue.length >= this.maxMessages) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.maxDelayMs);
  }

  /** Messages stored (or refused and counted) and committed so far. */
  handled(): number {
    return this.done;
  }

  pending(): number {
    return this.queue.length;
  }

  /**
   * Commit everything queued now; resolves once it (and every batch before it) was committed and
   * its windows handed to onCommitted. Never rejects: store failures are logged per message.
   */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue;
    if (batch.length === 0) return this.writing;
    this.queue = [];
    this.writing = this.writing.then(() => this.commit(batch));
    return this.writing;
  }

  private async commit(batch: { m: MqttMessage; seenAt: number }[]): Promise<void> {
    // Log lines wait for the commit, so a batch that rolls back and is redone one by one does not log twice.
    const lines: string[] = [];
    const settled = new Settled();
    try {
      await this.writeBatch(batch, (l) => lines.push(l), settled);
      for (const l of lines) this.log(l);
    } catch {
      this.guard.forget();
      settled.clear();
      // One failing message (disk full, locked file, a store bug) must not take the batch with it:
      // redo each in its own transaction so only the failing ones are lost, each logged (and not
      // acked, so their devices send them again).
      for (const { m, seenAt } of batch) {
        try {
          settled.add(await this.writeOne(m, seenAt));
        } catch (err) {
          this.guard.forget();
          this.log(safeText(`error: ${m.topic}: ${(err as Error).message}`));
        }
      }
    }
    this.done += batch.length;
    if (settled.size > 0) this.onCommitted(settled.list());
  }

  /**
   * The whole batch in one transaction. A store with a synchronous writer (SQLite) runs it inside
   * one synchronous transaction, one promise for the batch; otherwise each message is awaited.
   */
  private writeBatch(batch: readonly { m: MqttMessage; seenAt: number }[], sink: (line: string) => void, settled: Settled): Promise<void> {
    const sync = this.store.sync;
    if (sync) return sync.transaction(() => {
      for (const { m, seenAt } of batch) settled.add(handleMessageSync(sync, m, seenAt, sink, this.guard));
    });
    return this.store.transaction(async () => {
      if (this.store.prefetch) await this.store.prefetch(batchKeys(batch));
      for (const { m, seenAt } of batch) settled.add(await handleMessage(this.store, m, seenAt, sink, this.guard));
    });
  }

  /** One message in its own transaction (a batch that rolled back is redone this way). */
  private writeOne(m: MqttMessage, seenAt: number): Promise<SettledWindow | undefined> {
    const sync = this.store.sync;
    if (sync) return sync.transaction(() => handleMessageSync(sync, m, seenAt, this.log, this.guard));
    return this.store.transaction(() => handleMessage(this.store, m, seenAt, this.log, this.guard));
  }

  /** Commit what is queued and stop the timer; later pushes still work (and need another close). */
  close(): Promise<void> {
    return this.flush();
  }
}

/**
 * The devices and windows a batch touches, for a store that reads them all at once (prefetch).
 * A hint only: a payload that does not parse here is refused later by handleMessage as usual.
 */
function batchKeys(batch: readonly { m: MqttMessage }[]): { device: string; id?: number; windowEnd?: number }[] {
  const keys: { device: string; id?: number; windowEnd?: number }[] = [];
  for (const { m } of batch) {
    const t = parseTopic(m.topic);
    if (!t || (t.kind !== 'birth' && t.kind !== 'death' && t.kind !== 'metrics')) continue;
    if (t.kind !== 'metrics') {
      keys.push({ device: t.device });
      continue;
    }
    try {
      const p = JSON.parse(m.payload.toString('utf8')) as { id?: unknown; windowEnd?: unknown };
      keys.push(typeof p.id === 'number' && typeof p.windowEnd === 'number' ? { device: t.device, id: p.id, windowEnd: p.windowEnd } : { device: t.device });
    } catch {
      keys.push({ device: t.device });
    }
  }
  return keys;
}

/** Settled windows grouped by device, in arrival order. */
class Settled {
  private readonly byDevice = new Map<string, SettledWindows>();

  add(w: SettledWindow | undefined): void {
    if (!w) return;
    const key = `${w.fleet}/${w.device}`;
    let s = this.byDevice.get(key);
    if (!s) this.byDevice.set(key, (s = { fleet: w.fleet, device: w.device, ids: [] }));
    s.ids.push(w.id);
  }

  clear(): void {
    this.byDevice.clear();
  }

  get size(): number {
    return this.byDevice.size;
  }

  list(): SettledWindows[] {
    return [...this.byDevice.values()];
  }
}

/** A window the collector is done with (stored, duplicate, or refused for good): the device may forget it. */
export interface SettledWindow {
  fleet: string;
  device: string;
  id: number;
}

/**
 * What one message asks of the store, decided from its topic, payload and the collector's limits
 * before the store is touched. `decoded`: the payload parsed, the limits not checked yet (a window
 * needs its device's exits for that, which may take a read).
 */
type Step =
  | { do: 'nothing' }
  | { do: 'count'; counter: CounterName; line: string }
  | { do: 'decoded'; kind: 'birth' | 'death' | 'metrics'; payload: unknown; topic: string; fleet: string; device: string }
  | { do: 'refuse'; counter: CounterName; line: string; w: MetricsWindow; settled: SettledWindow }
  | { do: 'birth'; b: Birth; topic: string; fleet: string }
  | { do: 'death'; d: Death; topic: string; fleet: string }
  | { do: 'window'; w: MetricsWindow; topic: string; fleet: string };

/**
 * Route one message to the store; every rejection is counted and logged in one line. Returns the
 * window when the message was a metrics window the collector is done with (to be acked after the
 * commit); a payload that does not parse, or names another device than its topic, is not acked. Log lines
 * carry what devices sent (topics, bundle names), so each goes through safeText: a newline or an
 * ANSI escape in a birth field cannot forge a line or reach the operator's terminal.
 *
 * @example
 * ```ts
 * const w = await handleMessage(store, { topic, payload, retain: false }, Date.now(), console.log);
 * ```
 */
export async function handleMessage(store: FleetStore, m: MqttMessage, seenAt: number, sink: (line: string) => void, guard: IngestGuard = new IngestGuard()): Promise<SettledWindow | undefined> {
  const log = (line: string): void => sink(safeText(line));
  let step = readMessage(m);
  if (step.do === 'decoded') step = judge(step, seenAt, step.kind === 'metrics' ? await guard.exitsOf(store, step.device) : undefined, guard.limits);
  switch (step.do) {
    case 'nothing':
    case 'decoded':
      return undefined;
    case 'count':
      await store.bump(step.counter);
      return void log(step.line);
    case 'refuse':
      await store.bump(step.counter);
      log(step.line);
      // It arrived: its seq is used up, so the next window does not count it as missing.
      await store.noteRefusedWindow(step.w, seenAt);
      return step.settled;
    case 'birth':
      return void birthDone(step, await store.recordBirth(step.b, seenAt), log, guard);
    case 'death':
      return void deathDone(step, await store.recordDeath(step.d, seenAt, step.fleet), log);
    case 'window':
      return windowDone(step, await store.recordWindow(step.w, step.fleet, seenAt), log);
  }
}

/**
 * handleMessage against a synchronous writer (FleetStore.sync), inside its transaction: the same
 * steps, store calls and log lines, without a promise per message.
 *
 * @example
 * ```ts
 * const sync = store.sync!;
 * await sync.transaction(() => handleMessageSync(sync, message, Date.now(), console.log));
 * ```
 */
export function handleMessageSync(store: SyncFleetWriter, m: MqttMessage, seenAt: number, sink: (line: string) => void, guard: IngestGuard = new IngestGuard()): SettledWindow | undefined {
  const log = (line: string): void => sink(safeText(line));
  let step = readMessage(m);
  if (step.do === 'decoded') step = judge(step, seenAt, step.kind === 'metrics' ? guard.exitsOfSync(store, step.device) : undefined, guard.limits);
  switch (step.do) {
    case 'nothing':
    case 'decoded':
      return undefined;
    case 'count':
      store.bump(step.counter);
      return void log(step.line);
    case 'refuse':
      store.bump(step.counter);
      log(step.line);
      store.noteRefusedWindow(step.w, seenAt);
      return step.settled;
    case 'birth':
      return void birthDone(step, store.recordBirth(step.b, seenAt), log, guard);
    case 'death':
      return void deathDone(step, store.recordDeath(step.d, seenAt, step.fleet), log);
    case 'window':
      return windowDone(step, store.recordWindow(step.w, step.fleet, seenAt), log);
  }
}

/** Topic and payload: nothing to do (our own acks), a refusal to count, or the decoded payload. */
function readMessage(m: MqttMessage): Step {
  const t = parseTopic(m.topic);
  // The collectors' own acks come back on the wildcard subscription; they are not device input.
  if (t?.kind === 'ack') return { do: 'nothing' };
  if (!t || t.kind.startsWith('job/')) return { do: 'count', counter: 'foreignTopic', line: `ignored ${m.topic}: not a telemetry topic` };
  const kind = t.kind as 'birth' | 'death' | 'metrics';
  let payload;
  try {
    payload = decodePayload(kind, m.payload);
  } catch (err) {
    const counter = err instanceof PayloadTooLargeError ? 'oversized' : err instanceof ValidationError ? 'invalid' : 'malformed';
    const detail = err instanceof ValidationError && err.problems.length ? err.problems.map((p) => `${p.where}: expected ${p.expected ?? '?'}, got ${p.got ?? '?'}`).join('; ') : (err as Error).message;
    return { do: 'count', counter, line: `${counter}: ${m.topic}: ${detail}` };
  }
  // The topic is what the broker's ACLs authorise; a payload naming another device is refused.
  if (payload.device !== t.device || (kind === 'birth' && (payload as { fleet: string }).fleet !== t.fleet))
    return { do: 'count', counter: 'invalid', line: `invalid: ${m.topic}: payload names device ${payload.device}, not the topic's` };
  return { do: 'decoded', kind, payload, topic: m.topic, fleet: t.fleet, device: t.device };
}

/** The collector's limits (deaths carry nothing to bound); `exits`: what the device's birth announced, for a window. */
function judge(d: Extract<Step, { do: 'decoded' }>, seenAt: number, exits: number | undefined, limits: Limits): Step {
  const { kind, topic, fleet } = d;
  const breach: Rejection | undefined =
    kind === 'birth' ? checkBirthBounds(decodedAs<'birth'>(d.payload), seenAt, limits) : kind === 'metrics' ? checkWindowBounds(decodedAs<'metrics'>(d.payload), seenAt, exits, limits) : undefined;
  if (breach) {
    const line = `${breach.reason}: ${topic}: ${breach.where}: expected ${breach.expected}, got ${breach.got}`;
    if (kind !== 'metrics') return { do: 'count', counter: breach.reason, line };
    const w = decodedAs<'metrics'>(d.payload);
    // Refused for good: resending it would be refused again, so the device may drop it.
    return { do: 'refuse', counter: breach.reason, line, w, settled: { fleet, device: d.device, id: w.id } };
  }
  if (kind === 'birth') return { do: 'birth', b: decodedAs<'birth'>(d.payload), topic, fleet };
  if (kind === 'death') return { do: 'death', d: decodedAs<'death'>(d.payload), topic, fleet };
  return { do: 'window', w: decodedAs<'metrics'>(d.payload), topic, fleet };
}

function birthDone(s: Extract<Step, { do: 'birth' }>, r: BirthOutcome, log: (line: string) => void, guard: IngestGuard): void {
  if (r === 'fleetMismatch') return log(fleetMismatchLine(s.topic, s.b.device, s.fleet));
  guard.born(s.b);
  log(`birth: ${s.b.device} online (bdSeq ${s.b.bdSeq}, ${s.b.bundle.name} ${s.b.bundle.version})`);
}

function deathDone(s: Extract<Step, { do: 'death' }>, r: DeathOutcome, log: (line: string) => void): void {
  const d = s.d;
  if (r === 'fleetMismatch') log(fleetMismatchLine(s.topic, d.device, s.fleet));
  else if (r === 'offline') log(`death: ${d.device} offline (bdSeq ${d.bdSeq}, ${d.clean ? 'clean' : 'last will'})`);
  else if (r === 'stale') log(`stale death: ${d.device} bdSeq ${d.bdSeq} is not the current session; still online`);
  else log(`unknownDevice: death from ${d.device}, which never sent a birth`);
}

function windowDone(s: Extract<Step, { do: 'window' }>, r: WindowOutcome, log: (line: string) => void): SettledWindow {
  const w = s.w;
  const settled = { fleet: s.fleet, device: w.device, id: w.id };
  if (r.fleetMismatch) {
    log(fleetMismatchLine(s.topic, w.device, s.fleet));
    return settled;
  }
  if (!r.stored) log(`duplicate: ${w.device} window ${w.id} already stored`);
  if (r.gap > 0) log(`gap: ${w.device} missed ${r.gap} message${r.gap === 1 ? '' : 's'} before seq ${w.seq} (bdSeq ${w.bdSeq})`);
  if (r.unknownDevice && r.stored) log(`unknownDevice: window ${w.id} from ${w.device}, which never sent a birth (stored)`);
  // A duplicate is acked too: the device resent it because the first ack did not reach it.
  return settled;
}

// Ids in the topic passed parseTopic's id pattern, so the line holds no terminal escapes.
function fleetMismatchLine(topic: string, device: string, fleet: string): string {
  return `fleetMismatch: ${topic}: device ${device} is recorded in another fleet, not ${fleet}; refused (device ids are unique across fleets: enrol it under another id)`;
}

// decodePayload's kind is a runtime value here, so its result is a union; the branch fixes it.
function decodedAs<K extends 'birth' | 'death' | 'metrics'>(p: unknown): PayloadOf<K> {
  return p as PayloadOf<K>;
}
