// Bundles on disk: write one atomically, read one from a folder or a tar archive, verify every
// hash and the signature, pack one into an archive.
//
// Atomic means: the bundle is built in a hidden sibling folder and renamed into place only when
// complete, so a compile that fails (or is killed) never leaves a half-written bundle, and an
// existing bundle at the target is replaced only by a complete new one. Linux cannot rename a
// folder over a non-empty folder, so replacing is two renames (old aside, new in); if the second
// fails the old one is put back.
import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { InputError, ValidationError, formatProblem, type Problem } from '../util/errors.js';
import { linkIfSame, syncDir, writeFileAtomic } from '../util/fs.js';
import { MANIFEST_FILE, SIGNATURE_FILE, parseManifest, parseSignature, type Manifest } from './manifest.js';
import { checkSignature, loadPublicKey } from './signing.js';
import { looksLikeTar, readTar, writeTar } from './tar.js';
import { REVOKED_FILE, lookupKey, type TrustStore } from './trust.js';

/**
 * Lower-case hex SHA-256 of `data`, as the manifest records every file.
 *
 * @example
 * ```ts
 * import { sha256Hex } from 'edgeexit/bundle';
 * sha256Hex(new TextEncoder().encode('abc')); // 'ba7816bf…'
 * ```
 */
export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * A bundle failed verification: a hash, the signature, or the file list. Every problem names its file.
 *
 * @example
 * ```ts
 * import { BundleIntegrityError, loadBundle } from 'edgeexit';
 * try {
 *   await loadBundle('bundles/branchy-rpi4');
 * } catch (err) {
 *   if (err instanceof BundleIntegrityError) console.error(err.problems.map((p) => p.where)); // the files at fault
 *   else throw err;
 * }
 * ```
 */
export class BundleIntegrityError extends InputError {
  constructor(source: string, problems: Problem[]) {
    super(`${source}: bundle verification failed:\n` + problems.map((p) => '  - ' + formatProblem(p)).join('\n'), problems);
  }
}

// ---- writing ----

/**
 * Refuse an --out that is not ours to replace: a file, or a non-empty folder without a
 * manifest.json (`--out ~` must never delete a home folder). Returns whether a bundle is there.
 *
 * @example
 * ```ts
 * import { checkBundleTarget } from 'edgeexit/bundle';
 * const { exists } = await checkBundleTarget('bundles/new'); // throws for a file or a foreign folder
 * ```
 */
export async function checkBundleTarget(out: string): Promise<{ exists: boolean }> {
  const st = await fsp.lstat(out).catch(() => undefined);
  if (!st) return { exists: false };
  if (!st.isDirectory()) {
    throw new InputError(`--out ${out}: exists and is not a folder; expected a new or existing bundle folder (pack archives with \`edgeexit pack\`)`, [
      { where: out, expected: 'a bundle folder', got: st.isSymbolicLink() ? 'a symbolic link' : 'a file' },
    ]);
  }
  const entries = await fsp.readdir(out);
  if (entries.length > 0 && !entries.includes(MANIFEST_FILE)) {
    throw new InputError(
      `--out ${out}: is a folder that is not an edgeexit bundle (no ${MANIFEST_FILE}); refusing to replace it — choose another --out, or remove the folder first`,
      [{ where: out, expected: 'a missing folder, an empty folder or an edgeexit bundle', got: `a folder with ${entries.length} other entries` }],
    );
  }
  return { exists: true };
}

async function writeSynced(file: string, data: Uint8Array): Promise<void> {
  const h = await fsp.open(file, 'wx', 0o644);
  try {
    await h.writeFile(data);
    await h.sync();
  } finally {
    await h.close();
  }
}

export interface WriteBundleOptions {
  /** Called with the complete temporary folder just before it is renamed into place (tests use it to fail there). */
  beforeCommit?: (tmpDir: string) => Promise<void>;
}

/**
 * Write `files` as the bundle folder `out`, atomically (see the header). A file given `from` (a
 * path holding the same bytes, never written in place) is hard-linked from there when it can be.
 *
 * @example
 * ```ts
 * import { writeBundleAtomic } from 'edgeexit/bundle';
 * const { replaced } = await writeBundleAtomic('bundles/copy', [{ name: 'manifest.json', data: manifestBytes }, { name: 'stage0.onnx', data: stage0 }]);
 * ```
 */
export async function writeBundleAtomic(out: string, files: readonly { name: string; data: Uint8Array; from?: string }[], opts: WriteBundleOptions = {}): Promise<{ replaced: boolean }> {
  const abs = path.resolve(out);
  const parent = path.dirname(abs);
  const base = path.basename(abs);
  await fsp.mkdir(parent, { recursive: true });
  const { exists } = await checkBundleTarget(abs);
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = path.join(parent, `.${base}.tmp-${tag}`);
  await fsp.mkdir(tmp);
  try {
    for (const f of files) {
      // A file that already sits on this filesystem with the same bytes is linked, not written again.
      if (f.from !== undefined && (await linkIfSame(path.join(tmp, f.name), f.data, f.from))) continue;
      await writeSynced(path.join(tmp, f.name), f.data);
    }
    await syncDir(tmp);
    await opts.beforeCommit?.(tmp);
    if (!exists) {
      await fsp.rename(tmp, abs);
    } else {
      // Re-check just before touching it: it must still be a bundle.
      await checkBundleTarget(abs);
      const old = path.join(parent, `.${base}.old-${tag}`);
      await fsp.rename(abs, old);
      try {
        await fsp.rename(tmp, abs);
      } catch (err) {
        await fsp.rename(old, abs);
        throw err;
      }
      await fsp.rm(old, { recursive: true, force: true });
    }
    await syncDir(parent);
  } catch (err) {
    await fsp.rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return { replaced: exists };
}

// ---- reading ----

export interface LoadedBundle {
  /** The path given. */
  source: string;
  kind: 'folder' | 'archive';
  /** Every file by its name inside the bundle. */
  files: Map<string, Uint8Array>;
  /** Sub-folders found in a bundle folder (a bundle has none). */
  folders: string[];
}

/**
 * Read every file of a bundle folder or a bundle archive (made by `edgeexit pack`) into memory.
 *
 * @example
 * ```ts
 * import { loadBundleFiles } from 'edgeexit/bundle';
 * const bundle = await loadBundleFiles('bundles/branchy-rpi4.tar'); // a folder works too
 * console.log([...bundle.files.keys()]); // ['manifest.json', 'stage0.onnx', …]
 * ```
 */
export async function loadBundleFiles(p: string): Promise<LoadedBundle> {
  const st = await fsp.stat(p).catch((err: NodeJS.ErrnoException) => {
    throw new InputError(`${p}: ${err.code === 'ENOENT' ? 'no such file or folder' : `cannot read (${err.code})`}; expected a bundle folder or a .tar made by \`edgeexit pack\``, [], { cause: err });
  });
  const files = new Map<string, Uint8Array>();
  if (st.isDirectory()) {
    const folders: string[] = [];
    for (const e of await fsp.readdir(p, { withFileTypes: true })) {
      if (e.isDirectory()) folders.push(e.name);
      else if (e.isFile()) files.set(e.name, new Uint8Array(await fsp.readFile(path.join(p, e.name))));
      else folders.push(e.name); // links and specials do not belong in a bundle either
    }
    return { source: p, kind: 'folder', files, folders };
  }
  const bytes = new Uint8Array(await fsp.readFile(p));
  if (!looksLikeTar(bytes)) {
    throw new InputError(`${p}: is neither a bundle folder nor a tar archive; expected a folder made by \`edgeexit compile\` or a .tar made by \`edgeexit pack\``);
  }
  const entries = readTar(bytes, p);
  // `pack` puts everything under one top folder; accept a flat archive too.
  const tops = new Set(entries.map((e) => (e.name.includes('/') ? e.name.slice(0, e.name.indexOf('/')) : '')));
  const strip = tops.size === 1 && !tops.has('') ? [...tops][0]! + '/' : '';
  const folders: string[] = [];
  for (const e of entries) {
    const name = e.name.slice(strip.length);
    if (name.includes('/')) folders.push(name.slice(0, name.indexOf('/')));
    else files.set(name, e.data);
  }
  return { source: p, kind: 'archive', files, folders: [...new Set(folders)] };
}

// ---- verifying ----

export interface VerifyOptions {
  /** Public key (PEM file path or key object): trust exactly this key. Given a key, a signature is required. */
  publicKey?: string | KeyObject;
  /**
   * Trust store (see trust.ts): a bundle signed with one of its keys is checked with that key;
   * one signed with a key it revokes fails, even together with `publicKey`.
   */
  trust?: TrustStore;
  /** Fail unless the bundle is signed and the signature checks out against a trusted key. */
  requireSignature?: boolean;
}

export interface VerifyResult {
  source: string;
  kind: 'folder' | 'archive';
  manifest: Manifest;
  /**
   * valid: checked against a trusted key (`trustedBy` names the key file, or 'the given key');
   * unchecked: signed, but with no key at hand to check it (`reason` says why);
   * unsigned: no manifest.sig.
   */
  signature: { status: 'valid' | 'unchecked' | 'unsigned'; keyId?: string; trustedBy?: string; reason?: string };
  files: VerifiedFile[];
}

export interface VerifiedFile {
  file: string;
  bytes: number;
  sha256: string;
  ok: boolean;
}

/**
 * Verify a bundle folder or archive; throws BundleIntegrityError listing every problem.
 *
 * @example
 * ```ts
 * import { verifyBundle } from 'edgeexit/bundle';
 * const r = await verifyBundle('bundles/branchy-rpi4', { publicKey: 'keys/fleet.pub', requireSignature: true });
 * console.log(r.manifest.model.name, r.signature.status); // 'fmnist-branchy' 'valid'
 * ```
 */
export async function verifyBundle(p: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const bundle = await loadBundleFiles(p);
  return verifyLoadedBundle(bundle, opts);
}

const TRUST_FIX = 'trust the signer\'s key on this device (`edgeexit trust add <its .pub>`), or pass --key <public key>; --allow-unsigned runs it unchecked';
const SIGN_FIX = 'sign it (compile or calibrate with --key <private key>); --allow-unsigned runs it unchecked';
const TAMPER_FIX = 'never edit a signed manifest by hand: re-sign it with the publisher\'s key (calibrate or compile --key <private key>), or restore the original bundle';

/** The key to check a signature with: the given one, else the store's key of that id; revoked ids are problems. */
function keyFor(sigKeyId: string, key: KeyObject | undefined, trust: TrustStore | undefined): { key?: KeyObject; trustedBy?: string; problem?: Problem; reason?: string } {
  const found = trust ? lookupKey(trust, sigKeyId) : undefined;
  if (found?.status === 'revoked') {
    return { problem: { where: SIGNATURE_FILE, message: `signed with key ${sigKeyId}, which is revoked in ${path.join(trust!.dir, REVOKED_FILE)}`, fix: 're-sign the bundle with a current key' } };
  }
  if (key) return { key, trustedBy: 'the given key' };
  if (found?.status === 'trusted') return { key: found.key.key, trustedBy: found.key.file };
  const reason = trust
    ? `signed with key ${sigKeyId}, which is not in the trust store ${trust.dir}${trust.exists ? '' : ' (no such folder)'}`
    : 'no public key or trust store was given to check it';
  return { reason };
}

/** The signature part of verification: its status, and problems when it fails or is required and missing. */
function checkBundleSignature(manifestBytes: Uint8Array, sigBytes: Uint8Array | undefined, opts: VerifyOptions, key: KeyObject | undefined): { signature: VerifyResult['signature']; problems: Problem[] } {
  if (!sigBytes) {
    const problems: Problem[] = key || opts.requireSignature ? [{ where: SIGNATURE_FILE, message: 'missing: the bundle is unsigned, so its signature was NOT checked', fix: SIGN_FIX }] : [];
    return { signature: { status: 'unsigned' }, problems };
  }
  let sigKeyId: string;
  try {
    sigKeyId = parseSignature(sigBytes, SIGNATURE_FILE).keyId;
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    return { signature: { status: 'unchecked', reason: `${SIGNATURE_FILE} is malformed` }, problems: err.problems };
  }
  const use = keyFor(sigKeyId, key, opts.trust);
  if (use.problem) return { signature: { status: 'unchecked', keyId: sigKeyId, reason: use.problem.message! }, problems: [use.problem] };
  if (!use.key) {
    const problems: Problem[] = opts.requireSignature ? [{ where: SIGNATURE_FILE, message: `signature NOT checked: ${use.reason}`, fix: TRUST_FIX }] : [];
    return { signature: { status: 'unchecked', keyId: sigKeyId, reason: use.reason! }, problems };
  }
  const r = checkSignature(manifestBytes, sigBytes, use.key, MANIFEST_FILE, SIGNATURE_FILE);
  if (!r.ok) {
    const fix = r.file === MANIFEST_FILE ? TAMPER_FIX : TRUST_FIX;
    return { signature: { status: 'unchecked', keyId: sigKeyId, reason: r.reason }, problems: [{ where: r.file, message: r.reason, fix }] };
  }
  return { signature: { status: 'valid', keyId: r.keyId, trustedBy: use.trustedBy! }, problems: [] };
}

/**
 * Verify a bundle already read into memory (see loadBundleFiles): every hash, the file list, and the
 * signature when a key or a trust store is given. Throws BundleIntegrityError listing every problem.
 *
 * @example
 * ```ts
 * import { loadBundleFiles, verifyLoadedBundle } from 'edgeexit/bundle';
 * const files = await loadBundleFiles('bundles/branchy-rpi4');
 * const { manifest } = await verifyLoadedBundle(files); // then use files.files, the bytes just checked
 * ```
 */
export async function verifyLoadedBundle(bundle: LoadedBundle, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const manifestBytes = bundle.files.get(MANIFEST_FILE);
  if (!manifestBytes) {
    throw new BundleIntegrityError(bundle.source, [
      { where: MANIFEST_FILE, message: 'missing', expected: `a bundle with ${MANIFEST_FILE} at its top`, got: [...bundle.files.keys()].join(', ') || 'no files' },
    ]);
  }
  const key = typeof opts.publicKey === 'string' ? await loadPublicKey(opts.publicKey) : opts.publicKey;

  // The signature first: if it fails, nothing else in the manifest can be trusted either.
  const { signature, problems } = checkBundleSignature(manifestBytes, bundle.files.get(SIGNATURE_FILE), opts, key);

  let manifest: Manifest | undefined;
  try {
    manifest = parseManifest(manifestBytes, MANIFEST_FILE);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    problems.push(...err.problems);
  }

  const files: VerifiedFile[] = [];
  if (manifest) {
    const listed = [
      ...manifest.stages.map((s) => ({ file: s.file, sha256: s.sha256, bytes: s.bytes })),
      ...manifest.files,
    ];
    for (const f of listed) {
      const data = bundle.files.get(f.file);
      if (!data) {
        problems.push({ where: f.file, message: `missing (${MANIFEST_FILE} lists it)` });
        files.push({ file: f.file, bytes: 0, sha256: '', ok: false });
        continue;
      }
      const sha = sha256Hex(data);
      const ok = sha === f.sha256 && data.length === f.bytes;
      if (!ok) {
        problems.push({
          where: f.file,
          message: `content does not match the manifest (the file was changed or damaged): sha256 ${sha} (${data.length} bytes), the manifest says ${f.sha256} (${f.bytes} bytes)`,
        });
      }
      files.push({ file: f.file, bytes: data.length, sha256: sha, ok });
    }
    const known = new Set([MANIFEST_FILE, SIGNATURE_FILE, ...listed.map((f) => f.file)]);
    for (const name of bundle.files.keys()) {
      if (!known.has(name)) problems.push({ where: name, message: `not listed in ${MANIFEST_FILE}`, fix: 'remove it; a bundle holds only the files its manifest lists' });
    }
  }
  for (const d of bundle.folders) problems.push({ where: d, message: 'unexpected folder or link in the bundle', fix: 'remove it' });

  if (problems.length > 0 || !manifest) throw new BundleIntegrityError(bundle.source, problems);
  return { source: bundle.source, kind: bundle.kind, manifest, signature, files };
}

// ---- packing ----

/** Pack a (verified) bundle folder into one tar archive, written atomically. */
/** The archive layout: manifest first, so a streaming reader knows what to expect; then the signature; then files in manifest order. */
function archiveOf(top: string, files: ReadonlyMap<string, Uint8Array>, verified: VerifyResult): { tar: Uint8Array; order: string[] } {
  const mtime = Math.floor(Date.parse(verified.manifest.provenance.created) / 1000);
  const order = [MANIFEST_FILE, ...(files.has(SIGNATURE_FILE) ? [SIGNATURE_FILE] : []), ...verified.files.map((f) => f.file)];
  return { tar: writeTar(order.map((name) => ({ name: `${top}/${name}`, data: files.get(name)!, mtime }))), order };
}

/**
 * Replace the files of a packed bundle (calibrate rewrites the manifest): the new archive keeps
 * the old one's top folder and layout, is verified before it is written, and replaces the file
 * atomically, so a failure leaves the old archive as it was.
 */
export async function rewriteArchive(file: string, files: readonly { name: string; data: Uint8Array }[]): Promise<void> {
  const old = readTar(new Uint8Array(await fsp.readFile(file)), file);
  const top = old[0]?.name.split('/')[0];
  if (!top) throw new InputError(`${file}: empty archive`);
  const map = new Map(files.map((f) => [f.name, f.data]));
  const verified = await verifyLoadedBundle({ source: file, kind: 'archive', files: map, folders: [] });
  await writeFileAtomic(file, archiveOf(top, map, verified).tar);
}

/**
 * Verify a bundle folder and write it as one tar archive (atomically), for flashing. `opts` are
 * verifyBundle's: given a key or a trust store, a bad or revoked signature stops the pack, and
 * `verified.signature` says whether the signature was actually checked.
 *
 * @example
 * ```ts
 * import { packBundle } from 'edgeexit/bundle';
 * const { file, bytes, entries } = await packBundle('bundles/branchy-rpi4', 'bundles/branchy-rpi4.tar');
 * ```
 */
export async function packBundle(bundleDir: string, outFile: string, opts: VerifyOptions = {}): Promise<{ file: string; bytes: number; entries: string[]; verified: VerifyResult }> {
  const bundle = await loadBundleFiles(bundleDir);
  if (bundle.kind !== 'folder') throw new InputError(`${bundleDir}: is already an archive; expected a bundle folder`);
  const verified = await verifyLoadedBundle(bundle, opts);
  const top = path.basename(path.resolve(bundleDir));
  const { tar, order } = archiveOf(top, bundle.files, verified);
  const abs = path.resolve(outFile);
  if (abs.startsWith(path.resolve(bundleDir) + path.sep)) {
    throw new InputError(`--out ${outFile}: is inside the bundle folder; write the archive elsewhere`);
  }
  await writeFileAtomic(outFile, tar);
  return { file: outFile, bytes: tar.length, entries: order, verified };
}
