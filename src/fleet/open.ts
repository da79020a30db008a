// Which store a `--db` value means: a postgres:// or postgresql:// URL opens the PostgreSQL store
// (pg-store.ts, imported only then, so `pg` loads only for PostgreSQL); anything else with a URL
// scheme is refused, since writing it as a relative file name (a folder named `postgres:` or
// `mysql:`) silently puts the fleet somewhere nobody looks; everything else is a SQLite file.
import { InputError, formatProblem } from '../util/errors.js';
import type { FleetStore } from './fleet-store.js';
import { openFleetStore, type OpenStoreOptions } from './store.js';

export type StoreKind = 'sqlite' | 'postgres';

/**
 * What a `--db` value names; throws InputError for a URL of another kind.
 *
 * @example
 * storeKind('fleet.db'); // 'sqlite'
 * storeKind('postgres://collector@db.lan/fleet'); // 'postgres'
 */
export function storeKind(db: string): StoreKind {
  if (/^postgres(ql)?:\/\//i.test(db)) return 'postgres';
  // A scheme (two or more letters then ':'); one letter is a Windows drive (C:\fleet.db).
  const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(db);
  if (scheme) {
    // Credentials in the URL stay out of the message (it reaches logs and terminals).
    const shown = db.replace(/\/\/[^/@]*@/, '//…@');
    const file = db.includes('//') ? '' : `; for a file whose name has a colon write ./${shown}`;
    const problem = { where: '--db', expected: 'a SQLite file path, or a postgres:// (postgresql://) URL', got: shown, fix: `use postgres://user@host/database for PostgreSQL${file}` };
    throw new InputError(`--db ${scheme[1]}: is not a database edgeexit can use: ${formatProblem(problem)}`, [problem]);
  }
  return 'sqlite';
}

/**
 * Open the fleet store a `--db` value names: a SQLite file, or a PostgreSQL database by URL.
 *
 * @example
 * ```ts
 * import { openStore } from 'edgeexit/fleet';
 * const store = await openStore(process.env.FLEET_DB ?? 'fleet.db', { mustExist: true });
 * console.log((await store.devices()).length);
 * await store.close();
 * ```
 */
export async function openStore(db: string, opts: OpenStoreOptions = {}): Promise<FleetStore> {
  if (storeKind(db) === 'sqlite') return openFleetStore(db, opts);
  const { openPgStore } = await import('./pg-store.js');
  return openPgStore(db, opts);
}
