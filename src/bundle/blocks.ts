// Per-block hashes of a bundle's files, carried in the signed manifest (`blocks`), so a device
// that pulls a file in pieces can check each piece before it writes it, instead of learning only
// at the end, after the whole file crossed a bad network, that one piece was wrong.
import { createHash } from 'node:crypto';
import { InputError, formatProblem } from '../util/errors.js';
import type { Manifest } from './manifest.js';

/**
 * The default block: 63 KiB, so one block plus the reply's topic and properties fits an MQTT
 * packet of 64 KiB, the smallest maximum packet size a device is expected to announce.
 */
export const DEFAULT_BLOCK_SIZE = 63 * 1024;
/** Bounds of the manifest's `blocks.size`: small blocks cost a hash each, large ones a packet. */
export const MIN_BLOCK_SIZE = 1024;
export const MAX_BLOCK_SIZE = 1024 * 1024;

/**
 * Every file the manifest hashes (stages, then the other files), with its whole-file hash and size.
 *
 * @example
 * ```ts
 * import { listedFiles } from 'edgeexit/bundle';
 * listedFiles(manifest).map((f) => f.file); // ['stage-0.onnx', 'stage-1.onnx', 'report.json']
 * ```
 */
export function listedFiles(m: Pick<Manifest, 'stages' | 'files'>): { file: string; sha256: string; bytes: number }[] {
  return [...m.stages.map((s) => ({ file: s.file, sha256: s.sha256, bytes: s.bytes })), ...m.files.map((f) => ({ file: f.file, sha256: f.sha256, bytes: f.bytes }))];
}

/**
 * How many blocks of `size` a file of `bytes` has (an empty file has none).
 *
 * @example
 * ```ts
 * import { blockCount } from 'edgeexit/bundle';
 * blockCount(100_000, 64_512); // 2
 * ```
 */
export function blockCount(bytes: number, size: number): number {
  return Math.ceil(bytes / size);
}

/**
 * SHA-256 (hex) of each `size`-byte block of `data`, the last one shorter.
 *
 * @example
 * ```ts
 * import { blockHashes } from 'edgeexit/bundle';
 * blockHashes(new Uint8Array(3000), 1024).length; // 3
 * ```
 */
export function blockHashes(data: Uint8Array, size = DEFAULT_BLOCK_SIZE): string[] {
  checkBlockSize(size);
  const out: string[] = [];
  for (let off = 0; off < data.length; off += size) out.push(createHash('sha256').update(data.subarray(off, Math.min(off + size, data.length))).digest('hex'));
  return out;
}

function checkBlockSize(size: number): void {
  if (!Number.isInteger(size) || size < MIN_BLOCK_SIZE || size > MAX_BLOCK_SIZE) {
    throw new InputError(formatProblem({ where: 'block size', expected: `an integer from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE} bytes`, got: String(size), fix: `use the default (${DEFAULT_BLOCK_SIZE})` }));
  }
}

/**
 * The manifest with `blocks` computed from the bundle's files (by name), for the compiler's writer
 * and for an existing bundle (whose manifest must then be signed again: the block list is only
 * worth what the signature over it is). Throws when a listed file is missing or does not match
 * its whole-file hash, since block hashes of the wrong bytes would be signed as right.
 *
 * @example
 * ```ts
 * import { encodeManifest, loadBundleFiles, parseManifest, withBlockHashes } from 'edgeexit/bundle';
 * const b = await loadBundleFiles('bundles/branchy-rpi4');
 * const m = withBlockHashes(parseManifest(b.files.get('manifest.json')!), b.files);
 * const bytes = encodeManifest(m); // then sign it again
 * ```
 */
export function withBlockHashes<M extends Pick<Manifest, 'stages' | 'files'>>(m: M, files: ReadonlyMap<string, Uint8Array>, size = DEFAULT_BLOCK_SIZE): M & { blocks: { size: number; files: Record<string, string[]> } } {
  checkBlockSize(size);
  const out: Record<string, string[]> = {};
  for (const f of listedFiles(m)) {
    const data = files.get(f.file);
    if (!data) throw new InputError(formatProblem({ where: f.file, message: 'missing, but the manifest lists it', fix: 'hash block lists only of a complete bundle' }));
    const sha = createHash('sha256').update(data).digest('hex');
    if (sha !== f.sha256 || data.length !== f.bytes) {
      throw new InputError(formatProblem({ where: f.file, expected: `sha256 ${f.sha256} (${f.bytes} bytes), as the manifest says`, got: `${sha} (${data.length} bytes)`, fix: 'restore the original file' }));
    }
    out[f.file] = blockHashes(data, size);
  }
  return { ...m, blocks: { size, files: out } };
}
