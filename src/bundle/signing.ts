// ed25519 keys and detached manifest signatures, with node:crypto only. A bundle is signed by
// signing the exact bytes of its manifest.json; the manifest holds every other file's SHA-256,
// so one signature covers the whole bundle. The signature file names the key it was made with
// (a SHA-256 fingerprint of the public key), so a check with the wrong key says so instead of
// "invalid signature".
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { InputError } from '../util/errors.js';
import { encodeSignature, parseSignature, SIGNATURE_FILE, type SignatureFile } from './manifest.js';

export const PRIVATE_KEY_SUFFIX = '.key';
export const PUBLIC_KEY_SUFFIX = '.pub';

/**
 * `sha256:<hex>` of the public key's DER (SPKI) encoding.
 *
 * @example
 * ```ts
 * import { keyId, loadPublicKey } from 'edgeexit/bundle';
 * console.log(keyId(await loadPublicKey('keys/fleet.pub'))); // 'sha256:…', as manifest.sig names it
 * ```
 */
export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return 'sha256:' + createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex');
}

async function readKeyFile(file: string, what: string): Promise<string> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputError(`${file}: cannot read ${what} (${code === 'ENOENT' ? 'no such file' : code}); make one with \`edgeexit keygen --out <prefix>\``, [], { cause: err });
  }
}

function notEd25519(file: string, key: KeyObject): InputError {
  return new InputError(`${file}: is a ${key.asymmetricKeyType ?? key.type} key; expected an ed25519 key (\`edgeexit keygen\` makes one)`);
}

/**
 * Load a PEM private key; refuses public keys and non-ed25519 keys with a message naming the file.
 *
 * @example
 * ```ts
 * import { loadPrivateKey, signManifest } from 'edgeexit/bundle';
 * const sig = signManifest(manifestBytes, await loadPrivateKey('keys/fleet.key'));
 * ```
 */
export async function loadPrivateKey(file: string): Promise<KeyObject> {
  const pem = await readKeyFile(file, 'the private key');
  if (/-----BEGIN PUBLIC KEY-----/.test(pem)) {
    throw new InputError(`${file}: is a public key; signing needs the private key (${PRIVATE_KEY_SUFFIX} file from \`edgeexit keygen\`)`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new InputError(`${file}: not a PEM private key (${(err as Error).message}); expected the ${PRIVATE_KEY_SUFFIX} file from \`edgeexit keygen\``, [], { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw notEd25519(file, key);
  return key;
}

/**
 * Load a PEM public key (a private key is accepted too: its public half is used).
 *
 * @example
 * ```ts
 * import { loadBundle, loadPublicKey } from 'edgeexit';
 * const runner = await loadBundle('bundles/branchy-rpi4', { publicKey: await loadPublicKey('keys/fleet.pub') });
 * ```
 */
export async function loadPublicKey(file: string): Promise<KeyObject> {
  const pem = await readKeyFile(file, 'the public key');
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new InputError(`${file}: not a PEM public key (${(err as Error).message}); expected the ${PUBLIC_KEY_SUFFIX} file from \`edgeexit keygen\``, [], { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw notEd25519(file, key);
  return key;
}

/**
 * The signature file for `manifest` bytes.
 *
 * @example
 * ```ts
 * import { encodeManifest, loadPrivateKey, signManifest } from 'edgeexit/bundle';
 * const manifestBytes = encodeManifest(manifest);
 * await writeFile('bundle/manifest.sig', signManifest(manifestBytes, await loadPrivateKey('keys/fleet.key')));
 * ```
 */
export function signManifest(manifest: Uint8Array, key: KeyObject): Uint8Array {
  const sig: SignatureFile = { algorithm: 'ed25519', keyId: keyId(key), signature: sign(null, manifest, key).toString('base64') };
  return encodeSignature(sig);
}

export type SignatureCheck =
  | { ok: true; keyId: string }
  | { ok: false; keyId: string; file: string; reason: string };

/**
 * Check a signature file against manifest bytes and a public key. A key mismatch is reported on
 * manifest.sig (it was made with another key); a failing signature with the right key on
 * manifest.json (the manifest changed after signing).
 *
 * @example
 * ```ts
 * import { checkSignature, loadPublicKey } from 'edgeexit/bundle';
 * const r = checkSignature(manifestBytes, sigBytes, await loadPublicKey('keys/fleet.pub'), 'manifest.json', 'manifest.sig');
 * if (!r.ok) console.error(`${r.file}: ${r.reason}`);
 * ```
 */
export function checkSignature(manifest: Uint8Array, signatureFile: Uint8Array, key: KeyObject, manifestName: string, signatureName: string): SignatureCheck {
  const sig = parseSignature(signatureFile, signatureName);
  const want = keyId(key);
  if (sig.keyId !== want) {
    return { ok: false, keyId: sig.keyId, file: signatureName, reason: `signed with key ${sig.keyId}, not with the given key ${want}` };
  }
  const bytes = Buffer.from(sig.signature, 'base64');
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  if (bytes.length !== 64 || !verify(null, manifest, pub, bytes)) {
    return { ok: false, keyId: sig.keyId, file: manifestName, reason: `does not match its signature in ${SIGNATURE_FILE} (the manifest was changed after signing, or the signature was)` };
  }
  return { ok: true, keyId: sig.keyId };
}

export interface KeyPairFiles {
  privateKey: string;
  publicKey: string;
  keyId: string;
}

async function writeNew(file: string, data: string, mode: number, force: boolean): Promise<void> {
  // Written under a temporary name created with the final mode, so the private key is never
  // readable by others, not even for an instant; then renamed into place.
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const handle = await fsp.open(tmp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode); // the umask may have cleared bits we asked for
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    if (!force) {
      // link() fails if the target exists: no check-then-write race with another keygen.
      try {
        await fsp.link(tmp, file);
        await fsp.rm(tmp);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // Filesystems without hard links: the existence check in generateKeyPair has to do.
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS' && code !== 'EXDEV') throw err;
        await fsp.rename(tmp, file);
      }
    } else {
      await fsp.rename(tmp, file);
    }
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new InputError(`${file}: already exists; refusing to overwrite a key (pass --force, or choose another --out prefix)`, [], { cause: err });
    }
    throw err;
  }
}

/**
 * Make an ed25519 key pair: `<prefix>.key` (PKCS#8 PEM, mode 0600) and `<prefix>.pub` (SPKI PEM).
 *
 * @example
 * ```ts
 * import { generateKeyPair } from 'edgeexit/bundle';
 * const { privateKey, publicKey, keyId } = await generateKeyPair('keys/fleet'); // keys/fleet.key, keys/fleet.pub
 * ```
 */
export async function generateKeyPair(prefix: string, opts: { force?: boolean } = {}): Promise<KeyPairFiles> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const priv = prefix + PRIVATE_KEY_SUFFIX;
  const pub = prefix + PUBLIC_KEY_SUFFIX;
  await fsp.mkdir(path.dirname(path.resolve(priv)), { recursive: true });
  if (!opts.force) {
    for (const f of [priv, pub]) {
      if (await fsp.stat(f).then(() => true, () => false)) {
        throw new InputError(`${f}: already exists; refusing to overwrite a key (pass --force, or choose another --out prefix)`);
      }
    }
  }
  const force = opts.force ?? false;
  await writeNew(priv, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600, force);
  try {
    await writeNew(pub, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644, force);
  } catch (err) {
    await fsp.rm(priv, { force: true });
    throw err;
  }
  return { privateKey: priv, publicKey: pub, keyId: keyId(publicKey) };
}
