// Fleet-page benchmark (`npm run bench:fleet -- [devices] [--reps n] [--base <dir>] [--no-pg]`):
// how long `edgeexit fleet status`, the dashboard's /api/table and Prometheus' /metrics take on a
// fleet of N devices (default 1000), in SQLite and in PostgreSQL (a server it starts itself), and
// how many store calls each makes. The fleet is test/fleet/fleet-fill.ts's: every device state the
// pages tell apart. With --base, the same pages from another build of edgeexit (its
// `.bench/build` folder, e.g. a worktree of an older commit after `npm run bench:build` there) run
// on the same store, alternating call by call with this build's, so a machine shared with other
// work loads both alike; the table gives both times, their ratio, and whether the bytes agree.
// Prints a table; writes .edgeexit/bench/fleet-queries.json. Speed lives here, not in timed tests.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { fleetStatusCommand } from '../src/cli/commands/fleet.js';
import type { FleetStore } from '../src/fleet/fleet-store.js';
import { tableApi, type TableQuery } from '../src/fleet/http.js';
import { renderMetrics } from '../src/fleet/metrics.js';
import { openStore } from '../src/fleet/open.js';
import { writeFileAtomic } from '../src/util/fs.js';
import { fillFleet } from '../test/fleet/fleet-fill.js';
import { postgresBinDirs, startPostgres } from '../test/support/postgres.js';

interface Pages {
  fleetStatusCommand: typeof fleetStatusCommand;
  tableApi: typeof tableApi;
  renderMetrics: typeof renderMetrics;
}

/** One page call: what it returns as the bytes a client gets. `db` is the store's address (the CLI opens its own). */
type Page = (p: Pages, store: FleetStore, db: string) => Promise<string>;

const TABLE_QUERY: TableQuery = { sort: 'p95', dir: 'desc', q: '', offset: 0, limit: 100 };
const NOW = 1_800_000_000_000;

const PAGES: Record<string, Page> = {
  'fleet status': async (p, _store, db) => {
    let out = '';
    await p.fleetStatusCommand({ db }, { out: (t) => (out += t), err: () => undefined });
    return out;
  },
  '/api/table': async (p, store) => JSON.stringify(await p.tableApi(store, TABLE_QUERY, NOW)),
  '/metrics': async (p, store) => p.renderMetrics(store),
};

function counting(store: FleetStore): { store: FleetStore; calls(): number } {
  let n = 0;
  const proxy = new Proxy(store, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver) as unknown;
      if (typeof v !== 'function' || key === 'close') return v;
      return (...args: unknown[]) => {
        n++;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: proxy, calls: () => n };
}

async function loadBase(dir: string): Promise<Pages> {
  const mod = async (rel: string): Promise<Record<string, unknown>> => (await import(pathToFileURL(path.resolve(dir, rel)).href)) as Record<string, unknown>;
  const [cli, http, metrics] = await Promise.all([mod('src/cli/commands/fleet.js'), mod('src/fleet/http.js'), mod('src/fleet/metrics.js')]);
  return { fleetStatusCommand: cli.fleetStatusCommand, tableApi: http.tableApi, renderMetrics: metrics.renderMetrics } as Pages;
}

interface Row {
  backend: string;
  page: string;
  devices: number;
  newMs: number;
  newCalls: number | null;
  baseMs?: number;
  baseCalls?: number | null;
  sameBytes?: boolean;
  bytes: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timed(fn: () => Promise<string>): Promise<{ ms: number; out: string }> {
  const t0 = process.hrtime.bigint();
  const out = await fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, out };
}

async function measure(backend: string, store: FleetStore, db: string, devices: number, reps: number, base: Pages | undefined): Promise<Row[]> {
  const mine: Pages = { fleetStatusCommand, tableApi, renderMetrics };
  const rows: Row[] = [];
  for (const [name, page] of Object.entries(PAGES)) {
    // The CLI opens its own store, so its calls are not counted here.
    const calls = async (p: Pages): Promise<number | null> => {
      if (name === 'fleet status') return null;
      const c = counting(store);
      await page(p, c.store, db);
      return c.calls();
    };
    const newOut = await page(mine, store, db);
    const baseOut = base ? await page(base, store, db) : undefined;
    const newMs: number[] = [];
    const baseMs: number[] = [];
    for (let r = 0; r < reps; r++) {
      newMs.push((await timed(() => page(mine, store, db))).ms);
      if (base) baseMs.push((await timed(() => page(base, store, db))).ms);
    }
    rows.push({
      backend,
      page: name,
      devices,
      newMs: median(newMs),
      newCalls: await calls(mine),
      ...(base ? { baseMs: median(baseMs), baseCalls: await calls(base), sameBytes: baseOut === newOut } : {}),
      bytes: Buffer.byteLength(newOut),
    });
  }
  return rows;
}

function parseArgs(argv: string[]): { devices: number; reps: number; base?: string; pg: boolean } {
  let devices = 1000;
  let reps = 7;
  let base: string | undefined;
  let pg = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--reps') reps = Number(argv[++i]);
    else if (a === '--base') base = argv[++i];
    else if (a === '--no-pg') pg = false;
    else devices = Number(a);
  }
  if (!Number.isInteger(devices) || devices < 1 || !Number.isInteger(reps) || reps < 1)
    throw new Error(`usage: fleet-query-bench [devices ≥ 1] [--reps n ≥ 1] [--base <.bench/build of another edgeexit>] [--no-pg]; got ${argv.join(' ')}`);
  return { devices, reps, ...(base !== undefined ? { base } : {}), pg };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const base = args.base ? await loadBase(args.base) : undefined;
  const load = { before: os.loadavg(), after: [] as number[] };
  const rows: Row[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edgeexit-fleet-bench-'));
  try {
    const file = path.join(dir, 'fleet.db');
    const sqlite = await openStore(file);
    await fillFleet(sqlite, args.devices);
    rows.push(...(await measure('SQLite', sqlite, file, args.devices, args.reps, base)));
    await sqlite.close();
    if (args.pg && postgresBinDirs().length) {
      const server = await startPostgres();
      try {
        const url = await server.createDatabase('fleet_bench');
        const store = await openStore(url);
        await fillFleet(store, args.devices);
        rows.push(...(await measure('PostgreSQL', store, url, args.devices, args.reps, base)));
        await store.close();
      } finally {
        await server.dispose();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  load.after = os.loadavg();
  print(rows, args, load);
  await writeFileAtomic('.edgeexit/bench/fleet-queries.json', JSON.stringify({ date: new Date().toISOString(), host: `${os.cpus()[0]?.model?.trim() ?? 'unknown CPU'}, ${os.availableParallelism()} cores`, node: process.version, load, base: args.base ?? null, reps: args.reps, rows }, null, 2) + '\n');
}

function print(rows: readonly Row[], args: { devices: number; reps: number; base?: string }, load: { before: number[]; after: number[] }): void {
  const calls = (n: number | null | undefined): string => (n === null || n === undefined ? '-' : String(n));
  const head = args.base ? '| backend | page | devices | base ms | new ms | base ÷ new | base store calls | new store calls | same bytes |' : '| backend | page | devices | ms | store calls |';
  const out = [head, head.replace(/[^|]+/g, '---')];
  for (const r of rows)
    out.push(
      args.base
        ? `| ${r.backend} | ${r.page} | ${r.devices} | ${r.baseMs!.toFixed(1)} | ${r.newMs.toFixed(1)} | ${(r.baseMs! / r.newMs).toFixed(1)}× | ${calls(r.baseCalls)} | ${calls(r.newCalls)} | ${r.sameBytes ? 'yes' : 'NO'} |`
        : `| ${r.backend} | ${r.page} | ${r.devices} | ${r.newMs.toFixed(1)} | ${calls(r.newCalls)} |`,
    );
  console.log(out.join('\n'));
  const fmt = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');
  console.log(`(median of ${args.reps} calls each${args.base ? `, base = ${args.base}, alternating with this build` : ''}; fleet status is the CLI command: it opens and closes its own store, so its store calls are not counted)`);
  console.log(`${os.cpus()[0]?.model?.trim() ?? 'unknown CPU'}, ${os.availableParallelism()} cores, Node ${process.version}; load average before ${fmt(load.before)}, after ${fmt(load.after)}; ${new Date().toISOString()}`);
}

await main();
