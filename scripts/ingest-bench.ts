// Ingest benchmark (`npm run bench:ingest -- [messages] [devices] [--db postgres://…] [--collectors 1,2,4] [--sqlite-only]`): how many
// metric windows per second the collector stores, into SQLite and into PostgreSQL, in one run. For
// PostgreSQL it starts its own server (initdb in a temp folder, durable settings: fsync and
// synchronous commit on) unless --db names one, where it creates and drops databases
// edgeexit_bench_* (the role needs CREATEDB). M pre-encoded valid windows from K
// devices go (1) straight into the collector's write path (decode, validate, de-duplicate, store),
// committing every message alone and then in the collector's batches, and (2) through Mosquitto:
// a child process publishes them with QoS 1 over K connections as fast as the broker takes them,
// and the collector (MQTT 5 shared subscription) stores them. Then (3) N collector processes in
// one shared-subscription group store them into one SQLite file and one PostgreSQL database, for
// each N of `--collectors` (default 1,2,4); while each of those rows runs, the CPU time of the
// broker, the collectors, every PostgreSQL process and the publisher is read from
// /proc/<pid>/stat and the machine's from /proc/stat, and the CPU-seconds per window project what
// idle cores would store and what caps it. Also prints the bytes on disk per window stored.
// Prints tables; writes .edgeexit/bench/ingest.json. Speed lives here, not in timed tests.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { startCollector } from '../src/fleet/collector.js';
import type { FleetStore } from '../src/fleet/fleet-store.js';
import { BatchedIngest, DEFAULT_BATCH, PG_BATCH } from '../src/fleet/ingest.js';
import { openStore } from '../src/fleet/open.js';
import { openPgStore } from '../src/fleet/pg-store.js';
import { openFleetStore } from '../src/fleet/store.js';
import { topicFor } from '../src/telemetry/payloads.js';
import { postgresBinDirs, startPostgres, type Postgres } from '../test/support/postgres.js';
import { MOSQUITTO, startBroker } from '../test/telemetry/mqtt/broker.js';

const FLEET = 'bench';

/**
 * Windows end in the recent past (within the collector's clock-skew limit, and in today's day
 * partition on PostgreSQL unless the run starts just after midnight UTC); the publisher child gets
 * the same base so both paths send the same payloads.
 */
const BASE = Number(process.env.INGEST_BENCH_BASE ?? Math.floor((Date.now() - 2 * 3_600_000) / 5000) * 5000);

function payloads(messages: number, devices: number): { topic: string; payload: Buffer }[] {
  const out: { topic: string; payload: Buffer }[] = [];
  for (let i = 0; i < messages; i++) {
    const d = i % devices;
    const n = Math.floor(i / devices);
    const device = `bench-${String(d).padStart(4, '0')}`;
    const w = {
      id: n,
      bdSeq: 0,
      seq: (n + 1) % 256,
      device,
      windowStart: BASE + n * 5000,
      windowEnd: BASE + (n + 1) * 5000,
      count: 100,
      exitHistogram: [86, 7, 7],
      latencyMs: { endToEnd: { p50: 0.12, p95: 0.41, p99: 0.52 }, stages: [{ p50: 0.11, p95: 0.14, p99: 0.16 }, { p50: 0.35, p95: 0.45, p99: 0.5 }, { p50: 0.36, p95: 0.46, p99: 0.51 }] },
      energy: { joules: 8.04, meanWatts: 1.608, source: 'model', meter: 'model' },
      temperatureC: 48.5,
      droppedWindows: 0,
    };
    out.push({ topic: topicFor(FLEET, device, 'metrics'), payload: Buffer.from(JSON.stringify(w)) });
  }
  return out;
}

// Child mode: publish everything with QoS 1 over K raw MQTT 3.1.1 connections. The packets are
// encoded before the clock starts and written in large chunks, so the load generator costs little
// of the two cores the broker and the collector need; a connection is done when every PUBACK is in.
function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function packet(type: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type]), remainingLength(body.length), body]);
}

const str = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};

function connectPacket(clientId: string): Buffer {
  // protocol "MQTT" level 4, clean session, keepalive 60 s
  return packet(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, 0x02, 0, 60]), str(clientId)]));
}

function publishPacket(topic: string, id: number, payload: Buffer): Buffer {
  return packet(0x32, Buffer.concat([str(topic), Buffer.from([id >> 8, id & 0xff]), payload]));
}

async function publish(url: string, messages: number, devices: number): Promise<void> {
  const { hostname, port } = new URL(url);
  const all = payloads(messages, devices);
  const perDevice = Array.from({ length: devices }, (_, d) => {
    const mine = all.filter((_, i) => i % devices === d);
    return { n: mine.length, bytes: Buffer.concat(mine.map((m, k) => publishPacket(m.topic, (k % 65535) + 1, m.payload))) };
  });
  // The group rows start their clock on this line: from the first byte published to the last commit.
  process.stdout.write('go\n');
  const t0 = performance.now();
  await Promise.all(
    perDevice.map(
      ({ n, bytes }, d) =>
        new Promise<void>((resolve, reject) => {
          const sock = net.connect(Number(port), hostname);
          let got = 0;
          let connected = false;
          sock.on('error', reject);
          sock.on('data', (b: Buffer) => {
            got += b.length;
            if (!connected && got >= 4) {
              connected = true;
              sock.write(bytes);
            }
            // CONNACK and every PUBACK are 4 bytes each in MQTT 3.1.1.
            if (got >= 4 + 4 * n) {
              sock.end(Buffer.from([0xe0, 0]));
              resolve();
            }
          });
          sock.write(connectPacket(`bench-pub-${d}`));
        }),
    ),
  );
  process.stdout.write(JSON.stringify({ publishedPerS: messages / ((performance.now() - t0) / 1000) }) + '\n');
}

interface Row {
  path: string;
  messages: number;
  devices: number;
  seconds: number;
  perS: number;
  /** Messages per second of the collector's own CPU time (user + system): steadier than wall time on a shared machine. */
  perCpuS: number;
  stored: number;
  /** Group rows: the store, how many collector processes, CPU use, and what it projects for idle cores. */
  store?: string;
  collectors?: number;
  cpu?: Cpu;
  projected?: { perS: number; limit: string };
}

const cpuSeconds = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
};

async function direct(messages: number, devices: number, batch: { maxMessages?: number; maxDelayMs?: number }, label: string, open: () => Promise<FleetStore>): Promise<Row> {
  const msgs = payloads(messages, devices).map((m) => ({ ...m, retain: false }));
  const store = await open();
  const ingest = new BatchedIngest(store, () => undefined, Date.now, batch);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (const m of msgs) ingest.push(m);
  await ingest.flush();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(c0);
  const stored = (await store.totals()).reduce((a, t) => a + t.windows, 0);
  await store.close();
  return { path: label, messages, devices, seconds, perS: messages / seconds, perCpuS: messages / cpu, stored };
}

async function throughBroker(messages: number, devices: number, db: string, label: string): Promise<Row & { publishedPerS: number }> {
  // A collector that falls behind gets a queue on the broker; mosquitto's default (1000 queued
  // messages per client) would drop the excess, so it is lifted as a collector's broker should be.
  const broker = await startBroker({ config: ['max_queued_messages 0', 'max_inflight_messages 0'] });
  const collector = await startCollector({ brokerUrl: broker.url, dbFile: db, fleet: FLEET, onLog: () => undefined });
  try {
    let first = 0;
    let c0 = process.cpuUsage();
    const poll = setInterval(() => {
      if (!first && collector.handled() > 0) {
        first = performance.now();
        c0 = process.cpuUsage();
      }
    }, 1);
    const self = fileURLToPath(import.meta.url);
    // Compiled (npm run bench:ingest runs .bench/build/scripts/*.js): plain node; from source: vite-node.
    const cmd = self.endsWith('.js') ? process.execPath : path.resolve('node_modules', '.bin', 'vite-node');
    const child = spawn(cmd, [self, 'publish', broker.url, String(messages), String(devices)], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, INGEST_BENCH_BASE: String(BASE) } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const t0 = performance.now();
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    while (collector.handled() < messages) {
      await new Promise((r) => setTimeout(r, 5));
      if (performance.now() - t0 > 300_000) throw new Error(`only ${collector.handled()} of ${messages} messages arrived in 300 s`);
    }
    const end = performance.now();
    const cpu = cpuSeconds(c0);
    clearInterval(poll);
    await exited;
    // The clock starts when a 1 ms poll first sees a handled message; a run so short that the
    // collector handled everything in one go between polls cannot be timed this way.
    if (!first || end - first < 50) console.error(`through Mosquitto: ${messages} messages were handled in under 50 ms of polling — too few to time; use 20,000 or more`);
    const seconds = first && end - first >= 50 ? (end - first) / 1000 : NaN;
    const stored = (await collector.store.totals()).reduce((a, t) => a + t.windows, 0);
    const publishedPerS = (JSON.parse(out.trim().split('\n').pop() ?? '{}') as { publishedPerS?: number }).publishedPerS ?? NaN;
    return { path: label, messages, devices, seconds, perS: messages / seconds, perCpuS: Number.isNaN(seconds) ? NaN : messages / cpu, stored, publishedPerS };
  } finally {
    await collector.close();
    await broker.dispose();
  }
}

interface Cpu {
  broker: number;
  collectors: number;
  /** The busiest single collector process (a Node collector does its work on one thread). */
  busiestCollector: number;
  /** null when the store runs inside the collectors (SQLite). */
  database: number | null;
  publisher: number;
  machine: number;
}


// ---- CPU time from /proc (Linux): utime + stime of a process, in clock ticks ----
const TICKS_PER_S = 100; // USER_HZ, what /proc reports in on Linux

function statFields(pid: number): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces: fields are counted after it.
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** utime + stime of `pid` in ticks (0 once it is gone). Fields 14 and 15 of stat, 12th and 13th after the name. */
function ticksOf(pid: number): number {
  const f = statFields(pid);
  return f ? Number(f[11]) + Number(f[12]) : 0;
}

function allPids(): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
}

/** The processes whose command line contains `text` (the broker: its config folder). */
function pidsWith(text: string): number[] {
  return allPids().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text);
    } catch {
      return false;
    }
  });
}

/** The PostgreSQL postmaster and every process it started (one backend per connection, plus its helpers). */
function postgresPids(dataDirParent: string): number[] {
  const pidFile = [path.join(dataDirParent, 'data', 'postmaster.pid'), path.join(dataDirParent, 'postmaster.pid')].find((f) => existsSync(f));
  if (!pidFile) return [];
  const master = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  return [master, ...allPids().filter((pid) => Number(statFields(pid)?.[1]) === master)];
}

/** Busy and total ticks of the whole machine (first line of /proc/stat; idle and iowait count as not busy). */
function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total };
}

/**
 * CPU ticks per process group from begin() to end(). Read every 100 ms as well, because a process
 * can exit before the end (the publisher, a PostgreSQL backend): it counts with its last reading.
 * A process that started after begin() counts from 0.
 */
class CpuSampler {
  private start = new Map<number, number>();
  private latest = new Map<number, number>();
  private seen: Record<string, Set<number>> = {};
  private machine0 = machineTicks();
  private t0 = performance.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly groups: () => Record<'broker' | 'collectors' | 'database' | 'publisher', number[]>) {}

  private read(): void {
    for (const [group, pids] of Object.entries(this.groups())) {
      const seen = (this.seen[group] ??= new Set());
      for (const pid of pids) {
        seen.add(pid);
        const t = ticksOf(pid);
        if (t > 0) this.latest.set(pid, t);
      }
    }
  }

  begin(): void {
    this.read();
    this.start = new Map(this.latest);
    this.machine0 = machineTicks();
    this.t0 = performance.now();
    this.timer = setInterval(() => this.read(), 100);
  }

  end(hasDatabase: boolean): Cpu {
    clearInterval(this.timer);
    this.read();
    const wallS = (performance.now() - this.t0) / 1000;
    const pct = (pids: Iterable<number>) => (100 * [...pids].reduce((a, pid) => a + (this.latest.get(pid) ?? 0) - (this.start.get(pid) ?? 0), 0)) / TICKS_PER_S / wallS;
    const g = Object.fromEntries(Object.entries(this.seen).map(([k, v]) => [k, [...v]])) as Record<'broker' | 'collectors' | 'database' | 'publisher', number[]>;
    const m = machineTicks();
    return {
      broker: pct(g.broker),
      collectors: pct(g.collectors),
      busiestCollector: Math.max(...g.collectors.map((pid) => pct([pid]))),
      database: hasDatabase ? pct(g.database) : null,
      publisher: pct(g.publisher),
      machine: (100 * (m.busy - this.machine0.busy)) / Math.max(1, m.total - this.machine0.total),
    };
  }
}

/**
 * What the row's CPU time says the same pipeline would store on this many idle cores, and what caps
 * it: every core busy with broker + collectors + database (the publisher stands for devices, which
 * run elsewhere), the broker's one thread (Mosquitto runs on one), or the collectors' one thread
 * each. A projection from CPU-seconds per window, not a measurement: on a shared machine it is
 * the figure that does not depend on what the other tenants did during the run.
 */
function projection(r: { messages: number; seconds: number; collectors: number }, c: Cpu, cores: number): { perS: number; limit: string } {
  const cpuS = (p: number | null) => ((p ?? 0) / 100) * r.seconds;
  const caps: [string, number][] = [
    [`${cores} cores shared by broker, collectors and database`, (cores * r.messages) / (cpuS(c.broker) + cpuS(c.collectors) + cpuS(c.database))],
    ['the broker (one thread)', r.messages / cpuS(c.broker)],
    [`the collectors (one thread each, ${r.collectors})`, (r.collectors * r.messages) / cpuS(c.collectors)],
  ];
  caps.sort((a, b) => a[1] - b[1]);
  return { perS: caps[0]![1], limit: caps[0]![0] };
}

/** The part that used the most CPU, whether the machine had any left, and what caps the projection. */
function limitOf(r: Row): string {
  const c = r.cpu!;
  const parts: [string, number][] = [['broker', c.broker], ['collectors', c.collectors], ['database', c.database ?? 0]];
  parts.sort((a, b) => b[1] - a[1]);
  const saturated = c.machine >= 90 ? `machine CPU (${Math.round(c.machine)}% busy, other tenants included); ` : '';
  return `${saturated}most CPU: ${parts[0]![0]}; on idle cores: ${r.projected!.limit}`;
}

const openAny = (db: string): Promise<FleetStore> => openStore(db);

/** What the fleet's tables take on disk, indexes included (SQLite: the database's pages; PostgreSQL: every table in public). */
async function bytesOnDisk(db: string): Promise<number> {
  if (!/^postgres(ql)?:\/\//.test(db)) {
    const file = new Database(db, { readonly: true });
    try {
      return (file.pragma('page_count', { simple: true }) as number) * (file.pragma('page_size', { simple: true }) as number);
    } finally {
      file.close();
    }
  }
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: db });
  await c.connect();
  try {
    const r = await c.query<{ bytes: string }>("SELECT sum(pg_total_relation_size(oid))::text AS bytes FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace");
    return Number(r.rows[0]?.bytes ?? NaN);
  } finally {
    await c.end();
  }
}

interface Child {
  pid: number;
  out: () => string;
  exited: Promise<void>;
  exitCode(): number | null;
  kill(signal: NodeJS.Signals): void;
}

/** This script again in another mode (compiled: plain node; from source: vite-node). */
function spawnSelf(args: string[]): Child {
  const self = fileURLToPath(import.meta.url);
  const cmd = self.endsWith('.js') ? process.execPath : path.resolve('node_modules', '.bin', 'vite-node');
  const child = spawn(cmd, [self, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, INGEST_BENCH_BASE: String(BASE) } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { pid: child.pid!, out: () => out, exited, exitCode: () => child.exitCode ?? (child.signalCode ? -1 : null), kill: (s) => child.kill(s) };
}

async function waitFor(pred: () => boolean, what: string, ms = 120_000): Promise<void> {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const lastHandled = (c: Child) => Number(/handled (\d+)\n$/.exec(c.out().slice(-40))?.[1] ?? 0);

/**
 * N collector processes in one shared-subscription group, all writing `db`, fed through Mosquitto.
 * `pgDir`: the folder of a PostgreSQL started here, whose processes are sampled as the database.
 */
async function throughGroup(n: number, messages: number, devices: number, db: string, storeName: string, pgDir: string | undefined): Promise<Row> {
  // A collector that falls behind gets a queue on the broker; mosquitto's default (1000 queued
  // messages per client) would drop the excess, so it is lifted as a collector's broker should be.
  const broker = await startBroker({ config: ['max_queued_messages 0', 'max_inflight_messages 0'] });
  const collectors: Child[] = [];
  try {
    for (let i = 0; i < n; i++) collectors.push(spawnSelf(['collect', broker.url, db, `bench-collector-${i + 1}`]));
    await waitFor(() => {
      const dead = collectors.find((c) => c.exitCode() !== null);
      if (dead) throw new Error(`a collector exited (${dead.exitCode()}) before it subscribed; its error is above`);
      return collectors.every((c) => c.out().includes('ready'));
    }, `${n} collectors subscribed`);
    const publisher = spawnSelf(['publish', broker.url, String(messages), String(devices)]);
    const sampler = new CpuSampler(() => ({ broker: pidsWith(broker.dir), collectors: collectors.map((c) => c.pid), database: pgDir ? postgresPids(pgDir) : [], publisher: [publisher.pid] }));
    await waitFor(() => publisher.out().includes('go'), 'the publisher');
    sampler.begin();
    const t0 = performance.now();
    const handled = () => collectors.reduce((a, c) => a + lastHandled(c), 0);
    await waitFor(() => handled() >= messages, `${messages} messages stored by ${n} collectors`, 300_000);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = sampler.end(pgDir !== undefined);
    await publisher.exited;
    // A message the broker delivered twice (a redelivery) counts as handled twice, so the count can
    // reach the total with a last batch still open: wait until no collector commits any more.
    for (let before = -1; before !== handled(); ) {
      before = handled();
      await new Promise((r) => setTimeout(r, 300));
    }
    const store = await openAny(db);
    const stored = (await store.totals()).reduce((a, t) => a + t.windows, 0);
    await store.close();
    const collectorCpuS = (cpu.collectors / 100) * seconds;
    const projected = projection({ messages, seconds, collectors: n }, cpu, os.availableParallelism());
    return { path: 'through Mosquitto (QoS 1, shared subscription)', store: storeName, collectors: n, messages, devices, seconds, perS: messages / seconds, perCpuS: messages / collectorCpuS, stored, cpu, projected };
  } finally {
    for (const c of collectors) c.kill('SIGINT');
    await Promise.all(collectors.map((c) => c.exited));
    await broker.dispose();
  }
}

/** Child mode: one collector of the group; prints "ready", then "handled <n>" whenever its count changed. */
async function collect(url: string, db: string, clientId: string): Promise<void> {
  const collector = await startCollector({ brokerUrl: url, dbFile: db, clientId, fleet: FLEET, onLog: (l) => {
    // Store failures are what the table cannot show (the message is counted handled, not stored): say them.
    if (l.startsWith('error')) process.stderr.write(`${clientId}: ${l}\n`);
  } });
  process.stdout.write('ready\n');
  let last = 0;
  const ticker = setInterval(() => {
    const h = collector.handled();
    if (h !== last) process.stdout.write(`handled ${(last = h)}\n`);
  }, 5);
  process.once('SIGINT', () => {
    clearInterval(ticker);
    void collector.close().then(() => process.exit(0));
  });
}


const pct = (v: number | null | undefined) => (v === null || v === undefined ? '—' : `${Math.round(v)}%`);

/** Fresh PostgreSQL databases for the runs: on a server of our own, or on the one --db names. */
interface PgTarget {
  where: string;
  /** The server's folder when it is our own (its processes are sampled in the group rows). */
  dir: string | undefined;
  fresh(): Promise<string>;
  close(): Promise<void>;
}

async function pgTarget(url: string | undefined): Promise<PgTarget | undefined> {
  if (!url && !postgresBinDirs().length) return undefined;
  const own: Postgres | undefined = url ? undefined : await startPostgres({ durable: true });
  const admin = url ?? own!.url;
  const made: string[] = [];
  const exec = async (sql: string): Promise<void> => {
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  return {
    where: url ? new URL(url).host : 'own server on loopback, fsync and synchronous_commit on',
    dir: own?.dir,
    async fresh() {
      const name = `edgeexit_bench_${process.pid}_${made.length}`;
      await exec(`CREATE DATABASE ${name}`);
      made.push(name);
      const u = new URL(admin);
      u.pathname = `/${name}`;
      return u.toString();
    },
    async close() {
      if (own) return own.dispose();
      for (const name of made) await exec(`DROP DATABASE IF EXISTS ${name}`);
    },
  };
}

async function mainBench(): Promise<void> {
  const args = process.argv.slice(2);
  const dbAt = args.indexOf('--db');
  const dbUrl = dbAt >= 0 ? args.splice(dbAt, 2)[1] : undefined;
  // --sqlite-only: the SQLite rows (direct and through one collector) alone, for quick side-by-side runs.
  const sqliteAt = args.indexOf('--sqlite-only');
  const sqliteOnly = sqliteAt >= 0 && args.splice(sqliteAt, 1).length > 0;
  const nAt = args.indexOf('--collectors');
  const groups = (nAt >= 0 ? args.splice(nAt, 2)[1] ?? '' : '1,2,4').split(',').map(Number);
  if (!groups.every((n) => Number.isInteger(n) && n >= 1)) throw new Error(`--collectors: expected a list such as 1,2,4, got ${groups.join(',')}`);
  const load = { before: os.loadavg(), after: [] as number[] };
  const sizes: string[] = [];
  if (dbAt >= 0 && !/^postgres(ql)?:\/\//i.test(dbUrl ?? '')) throw new Error(`--db: expected a postgres:// URL, got ${dbUrl ?? 'nothing'}`);
  const messages = Number(args[0] ?? 100_000);
  const devices = Number(args[1] ?? 100);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edgeexit-ingest-bench-'));
  const sqlite = (name: string) => async () => openFleetStore(path.join(dir, `${name}.db`));
  const batched = `batched (${DEFAULT_BATCH.maxMessages} msgs / ${DEFAULT_BATCH.maxDelayMs} ms)`;
  const rows: Row[] = [];
  const target = sqliteOnly ? undefined : await pgTarget(dbUrl);
  try {
    rows.push(await direct(Math.min(messages, 10_000), devices, { maxDelayMs: 0 }, 'SQLite, direct, one commit per message', sqlite('single')));
    rows.push(await direct(messages, devices, {}, `SQLite, direct, ${batched}`, sqlite('batched')));
    sizes.push(`SQLite: ${Math.round((await bytesOnDisk(path.join(dir, 'batched.db'))) / messages)} bytes on disk per window stored (after the batched direct row)`);
    if (target) {
      const pgBatched = `batched (${PG_BATCH.maxMessages} msgs / ${PG_BATCH.maxDelayMs} ms)`;
      rows.push(await direct(messages, devices, {}, `PostgreSQL, direct, ${batched}, multi-row INSERT`, async () => openPgStore(await target.fresh(), { writeMode: 'insert' })));
      rows.push(await direct(messages, devices, {}, `PostgreSQL, direct, ${batched}, COPY`, async () => openPgStore(await target.fresh(), { writeMode: 'copy' })));
      let sized = '';
      rows.push(await direct(messages, devices, PG_BATCH, `PostgreSQL, direct, ${pgBatched} (the collector's default on PostgreSQL), multi-row INSERT`, async () => openPgStore((sized = await target.fresh()))));
      sizes.push(`PostgreSQL: ${Math.round((await bytesOnDisk(sized)) / messages)} bytes on disk per window stored (tables and indexes, after the last direct row)`);
    } else if (!sqliteOnly) console.error('PostgreSQL not installed and no --db postgres://…: skipping the PostgreSQL rows');
    if (MOSQUITTO.path) {
      rows.push(await throughBroker(messages, devices, path.join(dir, 'broker.db'), 'SQLite, through Mosquitto (QoS 1, batched)'));
      if (target) rows.push(await throughBroker(messages, devices, await target.fresh(), 'PostgreSQL, through Mosquitto (QoS 1, batched)'));
      for (const n of sqliteOnly ? [] : groups) {
        rows.push(await throughGroup(n, messages, devices, path.join(dir, `group${n}.db`), 'SQLite (one WAL file)', undefined));
        if (target) rows.push(await throughGroup(n, messages, devices, await target.fresh(), 'PostgreSQL', target.dir));
      }
    } else console.error('mosquitto not installed: skipping the broker rows');
  } finally {
    await target?.close();
    rmSync(dir, { recursive: true, force: true });
  }
  if (target) console.log(`PostgreSQL: ${target.where}`);
  load.after = os.loadavg();
  const table = [
    '| path | messages | devices | seconds | messages/s stored | per collector CPU-second | stored |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.filter((r) => !r.cpu).map((r) => `| ${r.path} | ${r.messages} | ${r.devices} | ${r.seconds.toFixed(2)} | ${Math.round(r.perS)} | ${Math.round(r.perCpuS)} | ${r.stored} |`),
  ];
  console.log(table.join('\n'));
  for (const line of sizes) console.log(line);
  const group = rows.filter((r) => r.cpu);
  if (group.length) {
    const us = (r: Row, p: number | null) => (p === null ? '—' : ((p / 100) * r.seconds * 1e6 / r.messages).toFixed(1));
    console.log(
      [
        '',
        '| collectors in one shared group | store | messages | seconds | windows/s stored | broker CPU | collectors CPU (busiest) | database CPU | publisher CPU | machine busy | µs CPU per window: broker / collectors / database | stored | projected on idle cores | limit |',
        '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|',
        ...group.map((r) => {
          const c = r.cpu!;
          return `| ${r.collectors} | ${r.store} | ${r.messages} | ${r.seconds.toFixed(2)} | ${Math.round(r.perS)} | ${pct(c.broker)} | ${pct(c.collectors)} (${pct(c.busiestCollector)}) | ${pct(c.database)} | ${pct(c.publisher)} | ${pct(c.machine)} | ${us(r, c.broker)} / ${us(r, c.collectors)} / ${us(r, c.database)} | ${r.stored} | ${Math.round(r.projected!.perS)} | ${limitOf(r)} |`;
        }),
      ].join('\n'),
    );
    console.log("(CPU: % of one core over the row's run; machine busy: % of all cores, every process on the machine; projected: what the row's CPU-seconds per window give on idle cores, capped by Mosquitto's and each collector's single thread.)");
  }
  const fmt = (l: number[]) => l.map((v) => v.toFixed(2)).join(' ');
  console.log(`${os.cpus()[0]?.model?.trim() ?? 'unknown CPU'}, ${os.availableParallelism()} cores, Node ${process.version}; load average before ${fmt(load.before)}, after ${fmt(load.after)}; ${new Date().toISOString()}`);
  for (const r of rows) if ('publishedPerS' in r) console.log(`(${r.path}: publisher side ${Math.round(r.publishedPerS as number)} messages/s acknowledged by the broker)`);
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
  mkdirSync('.edgeexit/bench', { recursive: true });
  writeFileSync('.edgeexit/bench/ingest.json', JSON.stringify({ date: new Date().toISOString(), host: `${cpu}, ${os.availableParallelism()} cores`, node: process.version, load, rows }, null, 2) + '\n');
}

const [mode, ...modeArgs] = process.argv.slice(2);
if (mode === 'publish') await publish(modeArgs[0]!, Number(modeArgs[1]), Number(modeArgs[2]));
else if (mode === 'collect') await collect(modeArgs[0]!, modeArgs[1]!, modeArgs[2]!);
else await mainBench();
