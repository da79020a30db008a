// Shared pieces of the install tests: a signed fp32 zoo bundle compiled once per file, and
// variants of it (a newer version, a tampered golden expectation, a swapped stage) re-signed with
// the same trusted key, as a publisher would make them.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { compileModel } from '../../src/compiler/index.js';
import { MANIFEST_FILE, SIGNATURE_FILE, encodeManifest, parseManifest, type Manifest } from '../../src/bundle/manifest.js';
import { loadPrivateKey, signManifest } from '../../src/bundle/signing.js';
import { sha256Hex } from '../../src/bundle/files.js';
import { withBlockHashes } from '../../src/bundle/blocks.js';
import { trustedSigner, ZOO } from '../runtime/helpers.js';

export interface Fixture {
  dir: string;
  trustDir: string;
  privateKey: string;
  /** The fp32 bundle as compiled. */
  bundle: string;
}

export async function compileFixture(dir: string): Promise<Fixture> {
  const keys = await trustedSigner(dir);
  const bundle = path.join(dir, 'a');
  await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: bundle, key: keys.privateKey, calibrationLimit: 16 });
  return { dir, trustDir: keys.trustDir, privateKey: keys.privateKey, bundle };
}

/**
 * Copy `src` to `out`, let `edit` change the manifest and the files (by name), fix the hashes of
 * the files it changed, and re-sign with `privateKey` (null: leave the signature off).
 */
export async function variant(src: string, out: string, privateKey: string | null, edit: (m: Manifest, files: Map<string, Uint8Array>) => Manifest | void): Promise<string> {
  const files = new Map<string, Uint8Array>();
  for (const f of await fsp.readdir(src)) files.set(f, new Uint8Array(await fsp.readFile(path.join(src, f))));
  let m = parseManifest(files.get(MANIFEST_FILE)!);
  m = edit(m, files) ?? m;
  const fix = <T extends { file: string; sha256: string; bytes: number }>(e: T): T => {
    const data = files.get(e.file);
    return data ? { ...e, sha256: sha256Hex(data), bytes: data.length } : e;
  };
  m = { ...m, stages: m.stages.map(fix), files: m.files.filter((f) => files.has(f.file)).map(fix) };
  // The block lists follow the files, as the compiler's writer makes them.
  if (m.blocks) m = withBlockHashes(m, files, m.blocks.size);
  const bytes = encodeManifest(m);
  files.set(MANIFEST_FILE, bytes);
  files.delete(SIGNATURE_FILE);
  if (privateKey) files.set(SIGNATURE_FILE, signManifest(bytes, await loadPrivateKey(privateKey)));
  await fsp.rm(out, { recursive: true, force: true });
  await fsp.mkdir(out, { recursive: true });
  for (const [name, data] of files) await fsp.writeFile(path.join(out, name), data);
  return out;
}

/** The same bundle with its model version raised (a newer release). */
export function newer(src: string, out: string, privateKey: string, version: string): Promise<string> {
  return variant(src, out, privateKey, (m) => ({ ...m, model: { ...m.model, version } }));
}

/**
 * A newer release of the fixture's model that is really slower per image: fmnist-branchy-wide
 * (about twice the full model's work), compiled like the fixture, named as the fixture's model
 * and run with thresholds null (every image to its last exit). Thresholds null alone is no longer
 * slow enough to catch reliably on a busy machine: the runtime runs such a bundle as one session,
 * at the unsplit model's cost.
 */
export async function slowRelease(fx: Fixture, version: string): Promise<string> {
  const wide = path.join(fx.dir, `wide-${version}`);
  await compileModel({ model: path.join(path.dirname(path.dirname(ZOO)), 'fmnist-branchy-wide', 'fmnist-branchy-wide.onnx'), device: 'rpi4', precision: 'fp32', out: wide, key: fx.privateKey, calibrationLimit: 16 });
  const name = parseManifest(await fsp.readFile(path.join(fx.bundle, MANIFEST_FILE))).model.name;
  return variant(wide, path.join(fx.dir, `slow-${version}`), fx.privateKey, (m) => ({ ...m, model: { ...m.model, name, version }, exitPolicy: { ...m.exitPolicy, thresholds: null } }));
}
