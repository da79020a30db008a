// Ingest benchmark (`npm run bench:ingest -- [messages] [devices] [--db postgres://…]`): how many
// metric windows per second the collector stores, into SQLite and into PostgreSQL, in one run. For
// PostgreSQL it starts its own server (initdb in a temp folder, durable settings: fsync and
// synchronous commit on) unless --db names one, where it creates and drops databases
// edgeexit_bench_* (the role needs CREATEDB). M pre-encoded valid windows from K
// devices go (1) straight into the collector's write path (decode, validate, de-duplicate, store),
// committing every message alone and then in the collector's batches, and (2) through Mosquitto:
// a child process publishes them with QoS 1 over K connections as fast as the broker takes them,
// and the collector (MQTT 5 shared subscription) stores them. Prints a table; writes
// .edgeexit/bench/ingest.json. Speed lives here, not in timed tests.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startCollector } from '../src/fleet/collector.js';
import type { FleetStore } from '../src/fleet/fleet-store.js';
import { BatchedIngest, DEFAULT_BATCH, PG_BATCH } from '../src/fleet/ingest.js';
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

/** Fresh PostgreSQL databases for the runs: on a server of our own, or on the one --db names. */
interface PgTarget {
  where: string;
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
  if (dbAt >= 0 && !/^postgres(ql)?:\/\//i.test(dbUrl ?? '')) throw new Error(`--db: expected a postgres:// URL, got ${dbUrl ?? 'nothing'}`);
  const messages = Number(args[0] ?? 100_000);
  const devices = Number(args[1] ?? 100);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edgeexit-ingest-bench-'));
  const sqlite = (name: string) => async () => openFleetStore(path.join(dir, `${name}.db`));
  const batched = `batched (${DEFAULT_BATCH.maxMessages} msgs / ${DEFAULT_BATCH.maxDelayMs} ms)`;
  const rows: Row[] = [];
  const target = await pgTarget(dbUrl);
  try {
    rows.push(await direct(Math.min(messages, 10_000), devices, { maxDelayMs: 0 }, 'SQLite, direct, one commit per message', sqlite('single')));
    rows.push(await direct(messages, devices, {}, `SQLite, direct, ${batched}`, sqlite('batched')));
    if (target) {
      const pgBatched = `batched (${PG_BATCH.maxMessages} msgs / ${PG_BATCH.maxDelayMs} ms)`;
      rows.push(await direct(messages, devices, {}, `PostgreSQL, direct, ${batched}, multi-row INSERT`, async () => openPgStore(await target.fresh(), { writeMode: 'insert' })));
      rows.push(await direct(messages, devices, {}, `PostgreSQL, direct, ${batched}, COPY`, async () => openPgStore(await target.fresh(), { writeMode: 'copy' })));
      rows.push(await direct(messages, devices, PG_BATCH, `PostgreSQL, direct, ${pgBatched} (the collector's default on PostgreSQL), multi-row INSERT`, async () => openPgStore(await target.fresh())));
    } else console.error('PostgreSQL not installed and no --db postgres://…: skipping the PostgreSQL rows');
    if (MOSQUITTO.path) {
      rows.push(await throughBroker(messages, devices, path.join(dir, 'broker.db'), 'SQLite, through Mosquitto (QoS 1, batched)'));
      if (target) rows.push(await throughBroker(messages, devices, await target.fresh(), 'PostgreSQL, through Mosquitto (QoS 1, batched)'));
    } else console.error('mosquitto not installed: skipping the broker rows');
  } finally {
    await target?.close();
    rmSync(dir, { recursive: true, force: true });
  }
  if (target) console.log(`PostgreSQL: ${target.where}`);
  const table = [
    '| path | messages | devices | seconds | messages/s stored | per collector CPU-second | stored |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.path} | ${r.messages} | ${r.devices} | ${r.seconds.toFixed(2)} | ${Math.round(r.perS)} | ${Math.round(r.perCpuS)} | ${r.stored} |`),
  ];
  console.log(table.join('\n'));
  for (const r of rows) if ('publishedPerS' in r) console.log(`(${r.path}: publisher side ${Math.round(r.publishedPerS as number)} messages/s acknowledged by the broker)`);
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
  mkdirSync('.edgeexit/bench', { recursive: true });
  writeFileSync('.edgeexit/bench/ingest.json', JSON.stringify({ date: new Date().toISOString(), host: `${cpu}, ${os.availableParallelism()} cores`, node: process.version, rows }, null, 2) + '\n');
}

if (process.argv[2] === 'publish') await publish(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]));
else await mainBench();
