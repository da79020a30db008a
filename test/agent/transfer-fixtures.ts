// Bundles for the transfer tests: a signed zoo bundle as compiled, the same with small blocks (so
// a download has hundreds of blocks to cut in the middle of), and a thresholds-only update of it.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { compileModel } from '../../src/compiler/index.js';
import { MANIFEST_FILE, SIGNATURE_FILE, encodeManifest, loadBundleFiles, loadPrivateKey, parseManifest, sha256Hex, signManifest, withBlockHashes, writeBundleAtomic, type Manifest } from '../../src/bundle/index.js';
import type { FileRef } from '../../src/agent/download.js';
import { ZOO } from '../compiler/helpers.js';
import { trustedSigner } from '../runtime/helpers.js';

export interface Fixture {
  dir: string;
  trustDir: string;
  /** As compiled (default blocks). */
  zoo: string;
  /** Same stage files, 4 KiB blocks, signed again. */
  small: string;
  /** `small` with other thresholds only, signed again. */
  update: string;
}

/** manifest and signature refs of a bundle folder, as a job names them. */
export async function refsOf(bundle: string): Promise<{ manifest: FileRef; signature: FileRef; manifestJson: Manifest }> {
  const m = await fsp.readFile(path.join(bundle, MANIFEST_FILE));
  const s = await fsp.readFile(path.join(bundle, SIGNATURE_FILE));
  return { manifest: { sha256: sha256Hex(m), bytes: m.length }, signature: { sha256: sha256Hex(s), bytes: s.length }, manifestJson: parseManifest(m) };
}

/** Rewrite `from` as `to` with its manifest changed by `edit`, signed with `key`. */
async function rewrite(from: string, to: string, keyFile: string, edit: (m: Manifest, files: Map<string, Uint8Array>) => Manifest): Promise<void> {
  const b = await loadBundleFiles(from);
  const m = edit(parseManifest(b.files.get(MANIFEST_FILE)!), b.files);
  const bytes = encodeManifest(m);
  const files = [...b.files].filter(([n]) => n !== MANIFEST_FILE && n !== SIGNATURE_FILE).map(([name, data]) => ({ name, data }));
  files.push({ name: MANIFEST_FILE, data: bytes }, { name: SIGNATURE_FILE, data: signManifest(bytes, await loadPrivateKey(keyFile)) });
  await writeBundleAtomic(to, files);
}

export async function makeFixture(dir: string): Promise<Fixture> {
  const signer = await trustedSigner(dir);
  const zoo = path.join(dir, 'zoo');
  await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: zoo, latency: false, calibrationLimit: 32, key: signer.privateKey });
  const small = path.join(dir, 'small');
  await rewrite(zoo, small, signer.privateKey, (m, files) => withBlockHashes(m, files, 4096));
  const update = path.join(dir, 'update');
  await rewrite(small, update, signer.privateKey, (m) => ({ ...m, exitPolicy: { ...m.exitPolicy, thresholds: m.stages.slice(1).map(() => 0.8) } }));
  return { dir, trustDir: signer.trustDir, zoo, small, update };
}

/** Blocks and bytes of the stage files and other files of a bundle. */
export function sizeOf(m: Manifest): { blocks: number; bytes: number } {
  const files = [...m.stages, ...m.files];
  return { blocks: files.reduce((n, f) => n + Math.ceil(f.bytes / m.blocks!.size), 0), bytes: files.reduce((n, f) => n + f.bytes, 0) };
}
