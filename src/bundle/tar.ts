// A minimal POSIX ustar writer and reader, enough to ship a bundle as one file (`edgeexit pack`)
// and to verify or install it without unpacking to disk. Regular files and folders only; names
// up to 255 bytes via the ustar prefix field. The reader refuses anything it cannot account for
// (bad checksums, links, paths that climb out, truncation) rather than skipping it, because the
// archive is the unit a device trusts.
import { InputError } from '../util/errors.js';

const BLOCK = 512;

export interface TarEntry {
  /** Path inside the archive, '/'-separated. */
  name: string;
  data: Uint8Array;
  /** Permission bits (default 0o644). */
  mode?: number;
  /** Modification time, seconds since the epoch (default 0, for byte-identical archives). */
  mtime?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

function writeString(block: Uint8Array, offset: number, length: number, s: string): void {
  const bytes = enc.encode(s);
  if (bytes.length > length) throw new InputError(`tar: '${s}' does not fit in ${length} bytes`);
  block.set(bytes, offset);
}

/** Octal number, zero-padded, NUL-terminated, as ustar wants. */
function writeOctal(block: Uint8Array, offset: number, length: number, n: number): void {
  const s = Math.trunc(n).toString(8);
  if (s.length > length - 1) throw new InputError(`tar: value ${n} does not fit in a ${length}-byte field`);
  writeString(block, offset, length, s.padStart(length - 1, '0') + '\0');
}

/** Split a long path into ustar's prefix (155) and name (100) at a '/'. */
function splitName(name: string): { prefix: string; name: string } {
  if (enc.encode(name).length <= 100) return { prefix: '', name };
  for (let i = name.lastIndexOf('/'); i > 0; i = name.lastIndexOf('/', i - 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (enc.encode(prefix).length <= 155 && enc.encode(rest).length <= 100) return { prefix, name: rest };
  }
  throw new InputError(`tar: path '${name}' is too long for ustar (name ≤ 100 bytes after a prefix ≤ 155)`);
}

function header(name: string, size: number, type: '0' | '5', mode: number, mtime: number): Uint8Array {
  const h = new Uint8Array(BLOCK);
  const parts = splitName(name);
  writeString(h, 0, 100, parts.name);
  writeOctal(h, 100, 8, mode);
  writeOctal(h, 108, 8, 0); // uid
  writeOctal(h, 116, 8, 0); // gid
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, mtime);
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h[156] = type.charCodeAt(0);
  writeString(h, 257, 6, 'ustar\0');
  writeString(h, 263, 2, '00');
  writeString(h, 345, 155, parts.prefix);
  let sum = 0;
  for (const b of h) sum += b;
  writeString(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return h;
}

/**
 * An archive holding `entries` in order, with a folder entry for each parent folder.
 *
 * @example
 * ```ts
 * import { readTar, writeTar } from 'edgeexit/bundle';
 * const tar = writeTar([{ name: 'b/manifest.json', data: new TextEncoder().encode('{}') }]);
 * readTar(tar).map((e) => e.name); // ['b/manifest.json']
 * ```
 */
export function writeTar(entries: readonly TarEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  const dirs = new Set<string>();
  for (const e of entries) {
    checkPath(e.name, 'tar');
    const parts = e.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/') + '/';
      if (!dirs.has(dir)) {
        dirs.add(dir);
        chunks.push(header(dir, 0, '5', 0o755, e.mtime ?? 0));
      }
    }
    chunks.push(header(e.name, e.data.length, '0', e.mode ?? 0o644, e.mtime ?? 0));
    chunks.push(e.data);
    const pad = (BLOCK - (e.data.length % BLOCK)) % BLOCK;
    if (pad) chunks.push(new Uint8Array(pad));
  }
  chunks.push(new Uint8Array(2 * BLOCK)); // end of archive: two zero blocks
  const total = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function checkPath(name: string, source: string): void {
  const parts = name.replace(/\/$/, '').split('/');
  if (name === '' || name.startsWith('/') || parts.some((p) => p === '..' || p === '') || name.includes('\\') || name.includes('\0')) {
    throw new InputError(`${source}: unsafe path '${name}' in archive; expected relative paths without '..'`);
  }
}

function readString(h: Uint8Array, offset: number, length: number, source: string): string {
  const field = h.subarray(offset, offset + length);
  const end = field.indexOf(0);
  try {
    return dec.decode(end >= 0 ? field.subarray(0, end) : field);
  } catch {
    throw new InputError(`${source}: a tar header has a name that is not UTF-8`);
  }
}

function readOctal(h: Uint8Array, offset: number, length: number, what: string, source: string, at: number): number {
  const s = readString(h, offset, length, source).replace(/[\s\0]+$/, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new InputError(`${source}: tar header at byte ${at}: ${what} field is ${JSON.stringify(s)}; expected an octal number`);
  return parseInt(s, 8);
}

/**
 * Read every regular file of a ustar (or GNU/pax-compatible plain) archive. Folders are
 * accepted and skipped; pax global headers are skipped; links, devices and per-file pax
 * headers are refused.
 *
 * @example
 * ```ts
 * import { readFile } from 'node:fs/promises';
 * import { readTar } from 'edgeexit/bundle';
 * for (const { name, data } of readTar(await readFile('bundles/branchy-rpi4.tar'), 'branchy-rpi4.tar')) console.log(name, data.length);
 * ```
 */
export function readTar(bytes: Uint8Array, source = 'archive'): { name: string; data: Uint8Array; mode: number }[] {
  const out: { name: string; data: Uint8Array; mode: number }[] = [];
  const seen = new Set<string>();
  let at = 0;
  let ended = false;
  while (at + BLOCK <= bytes.length) {
    const h = bytes.subarray(at, at + BLOCK);
    if (h.every((b) => b === 0)) {
      ended = true;
      break;
    }
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    const stored = readOctal(h, 148, 8, 'checksum', source, at);
    if (stored !== sum) {
      throw new InputError(`${source}: tar header at byte ${at} has checksum ${stored}, computed ${sum}; the archive is damaged or not a tar file`);
    }
    const size = readOctal(h, 124, 12, 'size', source, at);
    const type = String.fromCharCode(h[156]!);
    const magic = readString(h, 257, 6, source);
    const prefix = magic.startsWith('ustar') ? readString(h, 345, 155, source) : '';
    const base = readString(h, 0, 100, source);
    const name = prefix ? `${prefix}/${base}` : base;
    const dataStart = at + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > bytes.length) {
      throw new InputError(`${source}: '${name}' needs ${size} bytes but the archive ends after ${bytes.length - dataStart}; the file is truncated`);
    }
    at = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (type === '5') continue;
    if (type === 'g') continue;
    if (type !== '0' && type !== '\0') {
      const what = type === '1' || type === '2' ? 'a link' : type === 'x' ? 'a pax extended header' : `entry type '${type}'`;
      throw new InputError(`${source}: '${name}' is ${what}; expected only regular files and folders`);
    }
    checkPath(name, source);
    if (seen.has(name)) throw new InputError(`${source}: '${name}' appears twice in the archive`);
    seen.add(name);
    out.push({ name, data: bytes.slice(dataStart, dataEnd), mode: readOctal(h, 100, 8, 'mode', source, at) });
  }
  if (!ended) throw new InputError(`${source}: the archive has no end-of-archive marker; it is truncated or not a tar file`);
  return out;
}

/**
 * Whether the bytes start like a tar archive (a ustar magic or a valid header checksum).
 *
 * @example
 * ```ts
 * import { looksLikeTar } from 'edgeexit/bundle';
 * const kind = looksLikeTar(bytes) ? 'archive (edgeexit pack)' : 'not a tar file';
 * ```
 */
export function looksLikeTar(bytes: Uint8Array): boolean {
  if (bytes.length < BLOCK) return false;
  const magic = String.fromCharCode(...bytes.subarray(257, 262));
  if (magic === 'ustar') return true;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : bytes[i]!;
  const stored = parseInt(String.fromCharCode(...bytes.subarray(148, 156)).replace(/[\s\0]/g, ''), 8);
  return stored === sum;
}
