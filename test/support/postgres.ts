// A throwaway PostgreSQL for one test file (or one benchmark run), as test/telemetry/mqtt/broker.ts
// is for Mosquitto: initdb into a temp folder, a free loopback port, the unix socket in that
// folder too, started with pg_ctl and stopped and removed after. PostgreSQL refuses to run as
// root, so under root (CI, this machine) every server command runs as the `postgres` user
// (runuser) in a folder chowned to it; as anyone else it runs as that user. No vitest import, so
// the ingest benchmark can start one too; tests gate on POSTGRES in require.ts.
import { execFile } from 'node:child_process';
import { chownSync, existsSync, promises as fsp, readdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const PG_ROOT = '/usr/lib/postgresql';

/** Every installed PostgreSQL's bin folder, newest major version first (Debian: /usr/lib/postgresql/<major>/bin). */
export function postgresBinDirs(): string[] {
  if (!existsSync(PG_ROOT)) return [];
  return readdirSync(PG_ROOT)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => path.join(PG_ROOT, v, 'bin'));
}

export interface Postgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  port: number;
  dir: string;
  /** A fresh, empty database on this server; returns its URL (one per test keeps them apart). */
  createDatabase(name: string): Promise<string>;
  /** Stop the server (fast shutdown) and delete its folder. */
  dispose(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

const asRoot = process.getuid?.() === 0;

/** Run a PostgreSQL program, as the postgres user when this process is root. */
async function pgRun(bin: string, args: string[]): Promise<void> {
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  try {
    await run(cmd, argv, { timeout: 60_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${path.basename(bin)} failed: ${e.stderr || e.message}`, { cause: err });
  }
}

/**
 * Start a private PostgreSQL on 127.0.0.1 (trust auth, loopback only).
 *
 * @example
 * const pg = await startPostgres();
 * const url = await pg.createDatabase('store_test');
 * // … openStore(url) …
 * await pg.dispose();
 */
export async function startPostgres(opts: { durable?: boolean } = {}): Promise<Postgres> {
  const bin = postgresBinDirs().find((d) => existsSync(path.join(d, 'initdb')) && existsSync(path.join(d, 'pg_ctl')));
  if (!bin) throw new Error(`PostgreSQL server not found (looked in ${PG_ROOT}/<version>/bin): apt-get install postgresql`);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-postgres-'));
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    chownSync(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const data = path.join(dir, 'data');
  const port = await freePort();
  const dispose = async (): Promise<void> => {
    await pgRun(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  };
  try {
    await pgRun(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
    // Tests need no crash safety (fsync off is faster and spares the shared disk); the benchmark
    // asks for a durable server, configured as a real one would be.
    const settings = [`-p ${port}`, `-k ${dir}`, "-c listen_addresses='127.0.0.1'", '-c max_connections=60', ...(opts.durable ? [] : ['-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off'])];
    await pgRun(path.join(bin, 'pg_ctl'), ['-D', data, '-l', path.join(dir, 'server.log'), '-o', settings.join(' '), '-w', '-t', '60', 'start']);
  } catch (err) {
    await dispose();
    throw err;
  }
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    port,
    dir,
    async createDatabase(name) {
      const { default: pg } = await import('pg');
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      } finally {
        await c.end();
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    dispose,
  };
}
