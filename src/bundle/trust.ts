// The device's trust store: which bundle-signing keys this machine accepts. A plain folder, so an
// operator can manage it with `edgeexit trust` or with cp/rm from a provisioning script:
//
//   <dir>/<hex>.pub   trusted public keys (PEM), any number at once, so a fleet can rotate keys:
//                     trust the new key, re-sign, then revoke the old one. Any *.pub file counts;
//                     its key id is computed from its content, never taken from its name.
//   <dir>/revoked     key ids refused even where their .pub is still present (or comes back
//                     with a backup), one `sha256:<hex>` per line, `#` starts a comment.
//
// A missing folder is an empty store: nothing is trusted. A file that cannot be read or parsed
// fails loudly rather than being skipped, so a damaged revocation list never turns into "nothing
// is revoked".
import type { KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InputError, formatProblem, show } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { PUBLIC_KEY_SUFFIX, keyId, loadPublicKey } from './signing.js';

/** Environment variable that moves the trust store (a `--trust-dir` flag wins over it). */
export const TRUST_DIR_ENV = 'EDGEEXIT_TRUST_DIR';
/** The revocation list inside a trust store folder. */
export const REVOKED_FILE = 'revoked';

const KEY_ID = /^sha256:[0-9a-f]{64}$/;

export interface TrustedKey {
  keyId: string;
  /** The .pub file it was read from. */
  file: string;
  key: KeyObject;
}

export interface RevokedKey {
  keyId: string;
  /** The comment after the id on its line, if any. */
  note?: string;
}

export interface TrustStore {
  dir: string;
  /** Whether the folder exists (a missing one trusts nothing). */
  exists: boolean;
  keys: TrustedKey[];
  revoked: RevokedKey[];
}

export type TrustLookup = { status: 'trusted'; key: TrustedKey } | { status: 'revoked'; revoked: RevokedKey } | { status: 'unknown' };

/**
 * Where the trust store is when no folder is given: `$EDGEEXIT_TRUST_DIR`, else
 * `$XDG_CONFIG_HOME/edgeexit/trust`, else `~/.config/edgeexit/trust`.
 *
 * @example
 * ```ts
 * import { defaultTrustDir } from 'edgeexit/bundle';
 * console.log(defaultTrustDir()); // '/home/pi/.config/edgeexit/trust'
 * ```
 */
export function defaultTrustDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env[TRUST_DIR_ENV]) return env[TRUST_DIR_ENV];
  const config = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(config, 'edgeexit', 'trust');
}

function parseRevoked(text: string, file: string): RevokedKey[] {
  const out: RevokedKey[] = [];
  text.split('\n').forEach((raw, i) => {
    const hash = raw.indexOf('#');
    const id = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (id === '') return;
    if (!KEY_ID.test(id)) {
      throw new InputError(formatProblem({ where: `${file}:${i + 1}`, expected: 'a key id `sha256:<64 hex digits>` per line (# starts a comment)', got: show(id), fix: 'correct or remove the line; `edgeexit trust revoke <id>` writes it' }));
    }
    const note = hash >= 0 ? raw.slice(hash + 1).trim() : '';
    out.push({ keyId: id, ...(note ? { note } : {}) });
  });
  return out;
}

/**
 * Read a trust store folder (see the header for its layout). A missing folder is an empty store.
 *
 * @example
 * ```ts
 * import { defaultTrustDir, loadTrustStore } from 'edgeexit/bundle';
 * const store = await loadTrustStore(defaultTrustDir());
 * console.log(store.keys.map((k) => k.keyId), store.revoked.length);
 * ```
 */
export async function loadTrustStore(dir: string): Promise<TrustStore> {
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new InputError(`${dir}: cannot read the trust store (${err.code}); expected a folder of trusted ${PUBLIC_KEY_SUFFIX} keys`, [], { cause: err });
  });
  if (!entries) return { dir, exists: false, keys: [], revoked: [] };
  const keys: TrustedKey[] = [];
  let revoked: RevokedKey[] = [];
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const file = path.join(dir, e.name);
    if (e.name === REVOKED_FILE) revoked = parseRevoked(await fsp.readFile(file, 'utf8'), file);
    else if (e.name.endsWith(PUBLIC_KEY_SUFFIX) && !e.name.startsWith('.')) {
      const key = await loadPublicKey(file);
      keys.push({ keyId: keyId(key), file, key });
    }
  }
  return { dir, exists: true, keys, revoked };
}

/**
 * What the store says about a key id: revoked wins over trusted.
 *
 * @example
 * ```ts
 * import { loadTrustStore, lookupKey, parseSignature } from 'edgeexit/bundle';
 * const r = lookupKey(await loadTrustStore('/etc/edgeexit/trust'), parseSignature(sigBytes).keyId);
 * if (r.status !== 'trusted') console.error(`not trusted: ${r.status}`);
 * ```
 */
export function lookupKey(store: TrustStore, id: string): TrustLookup {
  const revoked = store.revoked.find((r) => r.keyId === id);
  if (revoked) return { status: 'revoked', revoked };
  const key = store.keys.find((k) => k.keyId === id);
  return key ? { status: 'trusted', key } : { status: 'unknown' };
}

/** `sha256:<hex>` → `<hex>.pub`, the name `trust add` gives a key. */
function storeFileName(id: string): string {
  return id.slice('sha256:'.length) + PUBLIC_KEY_SUFFIX;
}

/**
 * Trust a public key: copies it into the store as `<hex>.pub` (atomically). Refuses a revoked key.
 *
 * @example
 * ```ts
 * import { addTrustedKey } from 'edgeexit/bundle';
 * const { keyId, added } = await addTrustedKey('/etc/edgeexit/trust', 'keys/fleet-2027.pub');
 * ```
 */
export async function addTrustedKey(dir: string, pubFile: string): Promise<{ keyId: string; file: string; added: boolean }> {
  const key = await loadPublicKey(pubFile);
  const id = keyId(key);
  const store = await loadTrustStore(dir);
  const found = lookupKey(store, id);
  if (found.status === 'revoked') {
    throw new InputError(formatProblem({ where: pubFile, message: `key ${id} is revoked in ${path.join(dir, REVOKED_FILE)}`, fix: 'sign with a new key (`edgeexit keygen`) and trust that one; a revoked key stays revoked' }));
  }
  if (found.status === 'trusted') return { keyId: id, file: found.key.file, added: false };
  const file = path.join(dir, storeFileName(id));
  await writeFileAtomic(file, key.export({ type: 'spki', format: 'pem' }) as string);
  return { keyId: id, file, added: true };
}

/**
 * A key id as the user may give it: `sha256:<hex>`, the bare hex, or a .pub file.
 *
 * @example
 * ```ts
 * import { resolveKeyId } from 'edgeexit/bundle';
 * await resolveKeyId('keys/old.pub'); // 'sha256:…'
 * ```
 */
export async function resolveKeyId(arg: string): Promise<string> {
  const id = /^[0-9a-f]{64}$/.test(arg) ? `sha256:${arg}` : arg;
  if (KEY_ID.test(id)) return id;
  if (await fsp.stat(arg).then((s) => s.isFile(), () => false)) return keyId(await loadPublicKey(arg));
  throw new InputError(formatProblem({ where: 'key', expected: 'a key id `sha256:<64 hex digits>` (as `edgeexit trust list` shows it) or a .pub file', got: show(arg) }));
}

/**
 * Revoke a key id: appended to `<dir>/revoked` (atomically), and its .pub files removed from
 * the store. Works for a key the store never held too (a leaked key, refused in advance).
 *
 * @example
 * ```ts
 * import { revokeKey } from 'edgeexit/bundle';
 * await revokeKey('/etc/edgeexit/trust', 'sha256:…', 'leaked 2026-12-01');
 * ```
 */
export async function revokeKey(dir: string, id: string, note?: string): Promise<{ keyId: string; removed: string[]; already: boolean }> {
  if (!KEY_ID.test(id)) throw new InputError(formatProblem({ where: 'key id', expected: '`sha256:<64 hex digits>`', got: show(id) }));
  const store = await loadTrustStore(dir);
  const already = store.revoked.some((r) => r.keyId === id);
  if (!already) {
    const file = path.join(dir, REVOKED_FILE);
    const old = await fsp.readFile(file, 'utf8').catch(() => '');
    const line = `${id}${note ? ` # ${note.replace(/[\r\n]+/g, ' ')}` : ''}\n`;
    await writeFileAtomic(file, (old === '' || old.endsWith('\n') ? old : old + '\n') + line);
  }
  // The revocation is written first: even if removing a file fails, the key is already refused.
  const removed: string[] = [];
  for (const k of store.keys.filter((k) => k.keyId === id)) {
    await fsp.rm(k.file, { force: true });
    removed.push(k.file);
  }
  return { keyId: id, removed, already };
}
