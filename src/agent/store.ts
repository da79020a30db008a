// The on-device bundle store: installed bundles side by side, a pointer to the one that runs, and
// a journal of installs, laid out so that a power cut or a kill -9 at any instant leaves the
// device running a whole bundle (the old one or the new one, never neither):
//
//   <root>/bundles/<manifest-sha256>/   one folder per bundle, named by the SHA-256 of its
//                                       manifest.json (which hashes every other file), written
//                                       whole by writeBundleAtomic, never changed afterwards
//   <root>/current                      the running bundle's id; replaced by temp file + fsync +
//                                       rename, so a reader sees the old id or the new one
//   <root>/previous                     earlier bundles kept for rollback, newest first (same way)
//   <root>/journal.jsonl                one JSON line per install transition, fsync'd before the
//                                       step it announces is taken (see install.ts)
//   <root>/install.lock                 the pid of the process installing, so two never interleave
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sha256Hex, writeBundleAtomic } from '../bundle/files.js';
import { MANIFEST_FILE, parseManifest, type Manifest } from '../bundle/manifest.js';
import { InputError, formatProblem } from '../util/errors.js';
import { syncDir, writeFileAtomic } from '../util/fs.js';

/** States of an install job, in the order they are reached; the last three end it. */
export const INSTALL_STATES = ['started', 'staged', 'verified', 'self-tested', 'active', 'committed', 'rolled-back', 'failed'] as const;
export type InstallState = (typeof INSTALL_STATES)[number];
export const FINAL_STATES: readonly InstallState[] = ['committed', 'rolled-back', 'failed'];

/** One journal line. */
export interface JournalEntry {
  /** The install this line belongs to. */
  job: string;
  state: InstallState;
  /** The bundle being installed (its manifest's SHA-256). */
  bundle: string;
  /** The bundle that was current when the job started (null: none). */
  from: string | null;
  at: string;
  reason?: string;
  /** Anything the step wants on record (self-test figures). */
  detail?: unknown;
}

const ID = /^[0-9a-f]{64}$/;

/** Environment variable that moves the bundle store (a `--root` flag wins over it). */
export const STORE_ROOT_ENV = 'EDGEEXIT_STORE';

/**
 * Where the bundle store is when no `--root` is given: `$EDGEEXIT_STORE`, else
 * `$XDG_DATA_HOME/edgeexit/store`, else `~/.local/share/edgeexit/store`.
 *
 * @example
 * ```ts
 * import { defaultStoreRoot } from 'edgeexit/agent';
 * console.log(defaultStoreRoot()); // '/home/pi/.local/share/edgeexit/store'
 * ```
 */
export function defaultStoreRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env[STORE_ROOT_ENV]) return env[STORE_ROOT_ENV];
  const data = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'edgeexit', 'store');
}

/**
 * The id of a bundle in the store: the SHA-256 of its manifest.json bytes (which hashes every other file).
 *
 * @example
 * ```ts
 * import { readFile } from 'node:fs/promises';
 * import { bundleId } from 'edgeexit/agent';
 * const id = bundleId(await readFile('bundles/branchy-rpi4/manifest.json'));
 * ```
 */
export function bundleId(manifestBytes: Uint8Array): string {
  return sha256Hex(manifestBytes);
}

/**
 * A bundle store rooted at a folder (see the header for the layout).
 *
 * @example
 * ```ts
 * import { BundleStore } from 'edgeexit/agent';
 * const store = await BundleStore.open('/var/lib/edgeexit');
 * const id = await store.current(); // null before the first install
 * if (id) console.log(store.bundleDir(id));
 * ```
 */
export class BundleStore {
  private constructor(readonly root: string) {}

  static async open(root: string): Promise<BundleStore> {
    await fsp.mkdir(path.join(root, 'bundles'), { recursive: true });
    return new BundleStore(path.resolve(root));
  }

  get journalFile(): string {
    return path.join(this.root, 'journal.jsonl');
  }

  /** The folder holding one folder per bundle. */
  get bundlesDir(): string {
    return path.join(this.root, 'bundles');
  }

  bundleDir(id: string): string {
    if (!ID.test(id)) throw new InputError(formatProblem({ where: `${this.root}: bundle id`, expected: 'a manifest SHA-256 (64 hex digits)', got: id }));
    return path.join(this.root, 'bundles', id);
  }

  async has(id: string): Promise<boolean> {
    return fsp.stat(path.join(this.bundleDir(id), MANIFEST_FILE)).then(() => true, () => false);
  }

  /** Copy a bundle's files in (atomically; a no-op when that id is already there). Returns its id. */
  /**
   * Store a bundle under its id. `linkFrom`: a folder holding the same files that is never written
   * in place (the agent's own staging): its files are hard-linked rather than copied where they can be.
   */
  async put(files: ReadonlyMap<string, Uint8Array>, linkFrom?: string): Promise<string> {
    const manifest = files.get(MANIFEST_FILE);
    if (!manifest) throw new InputError(formatProblem({ where: 'bundle', message: `has no ${MANIFEST_FILE}`, fix: 'install a bundle made by `edgeexit compile`' }));
    const id = bundleId(manifest);
    // Content-addressed: the same id is the same manifest, hence the same files once verified.
    if (!(await this.has(id))) await writeBundleAtomic(this.bundleDir(id), [...files.entries()].map(([name, data]) => ({ name, data, ...(linkFrom !== undefined ? { from: path.join(linkFrom, name) } : {}) })));
    return id;
  }

  async manifestOf(id: string): Promise<Manifest> {
    const file = path.join(this.bundleDir(id), MANIFEST_FILE);
    return parseManifest(await fsp.readFile(file), file);
  }

  private async readPointer(name: 'current' | 'previous'): Promise<string[]> {
    const text = await fsp.readFile(path.join(this.root, name), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    const ids = text.split('\n').map((l) => l.trim()).filter(Boolean);
    for (const id of ids) if (!ID.test(id)) throw new InputError(formatProblem({ where: path.join(this.root, name), expected: 'bundle ids (64 hex digits), one a line', got: id, fix: 'restore it from the journal, or remove the file and install again' }));
    return ids;
  }

  /** The running bundle's id, or null when nothing was installed yet. */
  async current(): Promise<string | null> {
    return (await this.readPointer('current'))[0] ?? null;
  }

  /** Earlier bundles kept for rollback, newest first. */
  async previous(): Promise<string[]> {
    return this.readPointer('previous');
  }

  /** Point `current` at `id` in one rename (the bundle must be in the store). */
  async setCurrent(id: string | null): Promise<void> {
    if (id === null) {
      await fsp.rm(path.join(this.root, 'current'), { force: true });
    } else {
      if (!(await this.has(id))) throw new InputError(formatProblem({ where: this.bundleDir(id), message: 'not in the store', fix: 'stage it first' }));
      await writeFileAtomic(path.join(this.root, 'current'), id + '\n');
    }
    await syncDir(this.root);
  }

  async setPrevious(ids: readonly string[]): Promise<void> {
    await writeFileAtomic(path.join(this.root, 'previous'), ids.map((i) => i + '\n').join(''));
    await syncDir(this.root);
  }

  /** Append one line to the journal and fsync it before returning. */
  async record(e: Omit<JournalEntry, 'at'>): Promise<JournalEntry> {
    const entry: JournalEntry = { ...e, at: new Date().toISOString() };
    const h = await fsp.open(this.journalFile, 'a');
    try {
      await h.write(JSON.stringify(entry) + '\n');
      await h.sync();
    } finally {
      await h.close();
    }
    return entry;
  }

  /** Every journal line; a torn last line (the process died mid-write) is ignored. */
  async journal(): Promise<JournalEntry[]> {
    const text = await fsp.readFile(this.journalFile, 'utf8').catch(() => '');
    const out: JournalEntry[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as JournalEntry);
      } catch {
        // Only the last line can be torn, and its step was never taken.
      }
    }
    return out;
  }

  /** The last entry of each job, oldest job first. */
  async jobs(): Promise<JournalEntry[]> {
    const last = new Map<string, JournalEntry>();
    for (const e of await this.journal()) {
      last.delete(e.job);
      last.set(e.job, e);
    }
    return [...last.values()];
  }

  /** Remove bundles that are neither current nor among the `keep` newest previous ones. */
  async prune(keep: number): Promise<string[]> {
    const current = await this.current();
    const prev = await this.previous();
    const kept = new Set([...(current ? [current] : []), ...prev.slice(0, keep)]);
    if (prev.length > keep) await this.setPrevious(prev.slice(0, keep));
    const removed: string[] = [];
    for (const name of await fsp.readdir(path.join(this.root, 'bundles'))) {
      if (kept.has(name)) continue;
      // Half-written folders of writeBundleAtomic (a kill mid-copy) are hidden temp names; they go too.
      await fsp.rm(path.join(this.root, 'bundles', name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  /**
   * Take the install lock (one installer at a time). A lock left by a process that is gone (a
   * kill -9) is taken over. Returns the release function.
   */
  async lock(): Promise<() => Promise<void>> {
    const file = path.join(this.root, 'install.lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const h = await fsp.open(file, 'wx');
        await h.writeFile(`${process.pid} ${randomBytes(4).toString('hex')}\n`);
        await h.sync();
        await h.close();
        return () => fsp.rm(file, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const pid = Number((await fsp.readFile(file, 'utf8').catch(() => '')).split(' ')[0]);
        if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
          throw new InputError(formatProblem({ where: file, message: `another install is running (pid ${pid})`, fix: 'wait for it to finish' }));
        }
        await fsp.rm(file, { force: true });
      }
    }
    throw new InputError(formatProblem({ where: file, message: 'could not take the install lock', fix: 'retry' }));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
