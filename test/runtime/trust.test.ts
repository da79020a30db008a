// Signatures by default on devices. `run`, `agent` and loadBundle accept a bundle only when its
// signature checks out against --key or a key in the device's trust store; --allow-unsigned (or
// allowUnsigned) is the explicit opt-out and warns at every start. The trust store holds several
// keys at once (rotation) and a revocation list that wins over a .pub file still present.
//
// Finding 1 of issue 12, directly: a signed bundle whose manifest.json thresholds were edited to
// 0,0 used to run with exit code 0 and no warning; it must be refused (exit 2) naming the files
// and the fix.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BundleIntegrityError, REVOKED_FILE, generateKeyPair, loadTrustStore, type KeyPairFiles } from '../../src/bundle/index.js';
import { agentCommand } from '../../src/cli/commands/agent.js';
import { compileModel } from '../../src/compiler/index.js';
import { startCollector } from '../../src/fleet/index.js';
import { loadBundle } from '../../src/runtime/bundle-runner.js';
import { runCli } from '../cli/helpers.js';
import { copyDir } from '../compiler/helpers.js';
import { fmnistImages, scratch, trustedSigner, ZOO } from './helpers.js';

let dir: string;
let signer: KeyPairFiles & { trustDir: string };
/** Signed with `signer`, whose key the store at signer.trustDir trusts. */
let bundle: string;
/** The same bundle with exitPolicy.thresholds edited to [0, 0] after signing: finding 1. */
let edited: string;
let unsigned: string;
let image: string;

const quiet = { threads: 1, onWarning: () => undefined };

async function editManifest(from: string, to: string, edit: (m: { exitPolicy: { thresholds: number[] | null } }) => void): Promise<string> {
  await copyDir(from, to);
  const file = path.join(to, 'manifest.json');
  const m = JSON.parse(await fsp.readFile(file, 'utf8')) as { exitPolicy: { thresholds: number[] | null } };
  edit(m);
  await fsp.writeFile(file, JSON.stringify(m, null, 2) + '\n');
  return to;
}

beforeAll(async () => {
  dir = await scratch('trust');
  signer = await trustedSigner(dir);
  bundle = path.join(dir, 'signed');
  await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: bundle, latency: false, key: signer.privateKey });
  edited = await editManifest(bundle, path.join(dir, 'edited'), (m) => (m.exitPolicy.thresholds = [0, 0]));
  unsigned = path.join(dir, 'unsigned');
  await copyDir(bundle, unsigned);
  await fsp.rm(path.join(unsigned, 'manifest.sig'));
  image = (await fmnistImages(1))[0]!;
}, 180_000);

describe('finding 1: a signed bundle whose manifest.json was edited after signing', () => {
  it('is refused by `run` (exit 2), naming manifest.json, manifest.sig and the fix, with or without --allow-unsigned', async () => {
    const r = await runCli('run', edited, image, '--trust-dir', signer.trustDir, '--threads', '1');
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/manifest\.json: does not match its signature in manifest\.sig \(the manifest was changed after signing, or the signature was\) \(fix: never edit a signed manifest by hand: re-sign it with the publisher's key \(calibrate or compile --key <private key>\), or restore the original bundle\)/);
    // A signature that was checked and failed is not "unsigned": the opt-out does not cover it.
    const optOut = await runCli('run', edited, image, '--trust-dir', signer.trustDir, '--allow-unsigned', '--threads', '1');
    expect(optOut.code).toBe(2);
    expect(optOut.err).toMatch(/manifest\.json: does not match its signature in manifest\.sig/);
    // On a device that trusts no key at all (the default store here is empty) it is refused too,
    // before the edit is even looked at: nothing says who made this bundle.
    const noTrust = await runCli('run', edited, image, '--threads', '1');
    expect(noTrust.code).toBe(2);
    expect(noTrust.err).toMatch(/manifest\.sig: signature NOT checked: signed with key sha256:[0-9a-f]{64}, which is not in the trust store .*edgeexit-tests-no-trust-store \(no such folder\) \(fix: trust the signer's key on this device \(`edgeexit trust add <its \.pub>`\), or pass --key <public key>; --allow-unsigned runs it unchecked\)/);
    // The original, untouched, runs.
    const ok = await runCli('run', bundle, image, '--trust-dir', signer.trustDir, '--threads', '1', '--json');
    expect(ok.code, ok.err).toBe(0);
    expect(ok.err).toBe('');
  });

  it('is refused by `agent` (exit 2) before it watches or connects anywhere', async () => {
    const watch = path.join(dir, 'agent-in');
    await fsp.mkdir(watch, { recursive: true });
    // No broker listens on port 9: the agent must stop at the bundle, not at the network.
    const r = await runCli('agent', edited, '--watch', watch, '--telemetry', 'mqtt://127.0.0.1:9', '--trust-dir', signer.trustDir, '--threads', '1');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/manifest\.json: does not match its signature in manifest\.sig .*\(fix: never edit a signed manifest by hand/);
    expect(r.err).not.toMatch(/agent: watching/);
    const noTrust = await runCli('agent', edited, '--watch', watch, '--telemetry', 'mqtt://127.0.0.1:9', '--threads', '1');
    expect(noTrust.code).toBe(2);
    expect(noTrust.err).toMatch(/manifest\.sig: signature NOT checked: signed with key sha256:[0-9a-f]{64}, which is not in the trust store/);
  });

  it('verify-bundle and pack refuse it once they can check the signature', async () => {
    const v = await runCli('verify-bundle', edited, '--trust-dir', signer.trustDir);
    expect(v.code).toBe(2);
    expect(v.err).toMatch(/manifest\.json: does not match its signature in manifest\.sig/);
    const p = await runCli('pack', edited, '--out', path.join(dir, 'edited.tar'), '--trust-dir', signer.trustDir);
    expect(p.code).toBe(2);
    expect(p.err).toMatch(/manifest\.json: does not match its signature/);
    await expect(fsp.stat(path.join(dir, 'edited.tar'))).rejects.toThrow();
    // Where the key is not known, pack still packs (build machines need not trust the fleet key) but never says "signed".
    const unknown = await runCli('pack', edited, '--out', path.join(dir, 'edited-unknown.tar'));
    expect(unknown.code).toBe(0);
    expect(unknown.out).toMatch(/; signature NOT checked: signed with key sha256:[0-9a-f]{64}, which is not in the trust store/);
    const good = await runCli('pack', bundle, '--out', path.join(dir, 'good.tar'), '--trust-dir', signer.trustDir);
    expect(good.out).toContain(`; signed, valid (key ${signer.keyId}, trusted by ${path.join(signer.trustDir, signer.keyId.slice(7) + '.pub')})`);
  });
});

describe('unsigned and untrusted bundles', () => {
  it('loadBundle refuses them by default; allowUnsigned loads them with a warning on every load', async () => {
    const none = path.join(dir, 'empty-store');
    const err = await loadBundle(unsigned, { ...quiet, trustDir: none }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleIntegrityError);
    expect((err as BundleIntegrityError).problems.map((p) => p.where)).toEqual(['manifest.sig']);
    expect((err as Error).message).toMatch(/manifest\.sig: missing: the bundle is unsigned, so its signature was NOT checked/);
    await expect(loadBundle(bundle, { ...quiet, trustDir: none })).rejects.toThrow(/signature NOT checked: signed with key sha256:[0-9a-f]{64}, which is not in the trust store/);
    for (let start = 0; start < 2; start++) {
      const warnings: string[] = [];
      const r = await loadBundle(unsigned, { threads: 1, trustDir: none, allowUnsigned: true, onWarning: (l) => warnings.push(l) });
      await r.close();
      expect(r.signature.status).toBe('unsigned');
      expect(warnings).toEqual([`warn: ${unsigned}: signature NOT checked (the bundle is unsigned); running it anyway because allowUnsigned (--allow-unsigned) was given — anyone who can write this bundle decides what this device runs`]);
    }
    // Trusted: no warning, and the runner says which key vouched for it.
    const warnings: string[] = [];
    const r = await loadBundle(bundle, { threads: 1, trustDir: signer.trustDir, onWarning: (l) => warnings.push(l) });
    await r.close();
    expect(warnings).toEqual([]);
    expect(r.signature).toMatchObject({ status: 'valid', keyId: signer.keyId });
  });

  it('`run` refuses an unsigned bundle (exit 2) and, with --allow-unsigned, runs it warning on stderr', async () => {
    const r = await runCli('run', unsigned, image, '--threads', '1');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/manifest\.sig: missing: the bundle is unsigned, so its signature was NOT checked \(fix: sign it/);
    const allowed = await runCli('run', unsigned, image, '--threads', '1', '--allow-unsigned', '--json');
    expect(allowed.code, allowed.err).toBe(0);
    expect(allowed.err).toContain('signature NOT checked (the bundle is unsigned)');
    expect(typeof (JSON.parse(allowed.out.trim()) as { label: unknown }).label).toBe('string');
    // --key keeps working: exactly that key is trusted, the store is not needed.
    const keyed = await runCli('run', bundle, image, '--threads', '1', '--key', signer.publicKey);
    expect(keyed.code, keyed.err).toBe(0);
  });

  it('`agent --allow-unsigned` runs an unsigned bundle and warns when it starts', async () => {
    const collector = await startCollector({ dbFile: path.join(dir, 'fleet.db'), port: 0, host: '127.0.0.1', onLog: () => undefined });
    try {
      const watch = path.join(dir, 'agent-unsigned');
      await fsp.mkdir(watch, { recursive: true });
      await fsp.copyFile(image, path.join(watch, 'a.png'));
      const err: string[] = [];
      const ac = new AbortController();
      let seen = 0;
      const done = agentCommand(
        { bundle: unsigned, watch, loop: true, allowUnsigned: true, telemetry: collector.url, deviceId: 'pi-unsigned', stateDir: path.join(dir, 'state-unsigned'), threads: 1, pollMs: 50, onItems: (items) => (seen += items.length) },
        { out: () => undefined, err: (t) => void err.push(t) },
        ac.signal,
      );
      while (seen < 1) await new Promise((res) => setTimeout(res, 25));
      ac.abort();
      await done;
      expect(err[0]).toContain(`warn: ${unsigned}: signature NOT checked (the bundle is unsigned)`);
    } finally {
      await collector.close();
    }
  });
});

describe('the trust store: several keys (rotation) and revocation', () => {
  let store: string;
  let oldKey: KeyPairFiles;
  let newKey: KeyPairFiles;
  let byOld: string;
  let byNew: string;

  beforeAll(async () => {
    store = path.join(dir, 'rotation-store');
    oldKey = await generateKeyPair(path.join(dir, 'keys', 'old'));
    newKey = await generateKeyPair(path.join(dir, 'keys', 'new'));
    byOld = path.join(dir, 'by-old');
    byNew = path.join(dir, 'by-new');
    await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: byOld, latency: false, key: oldKey.privateKey });
    // The same model re-signed with the new key: calibrate-style re-signing is what a rotation does.
    await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: byNew, latency: false, key: newKey.privateKey });
  }, 180_000);

  it('trusts every key added, lists them, and runs bundles signed with either', async () => {
    const a = await runCli('trust', 'add', oldKey.publicKey, '--trust-dir', store);
    expect(a.code, a.err).toBe(0);
    expect(a.out).toBe(`trusted  ${oldKey.keyId} (${path.join(store, oldKey.keyId.slice(7) + '.pub')})\n`);
    expect((await runCli('trust', 'add', oldKey.publicKey, '--trust-dir', store)).out).toMatch(/^already trusted {2}sha256:/);
    expect((await runCli('trust', 'add', newKey.publicKey, '--trust-dir', store)).code).toBe(0);
    const list = await runCli('trust', 'list', '--trust-dir', store, '--json');
    const listed = JSON.parse(list.out) as { keys: { keyId: string }[]; revoked: unknown[] };
    expect(listed.keys.map((k) => k.keyId).sort()).toEqual([oldKey.keyId, newKey.keyId].sort());
    expect(listed.revoked).toEqual([]);
    for (const b of [byOld, byNew]) {
      const r = await runCli('run', b, image, '--trust-dir', store, '--threads', '1');
      expect(r.code, r.err).toBe(0);
    }
    // The environment variable moves the default store, as on a device's service unit.
    const before = process.env.EDGEEXIT_TRUST_DIR;
    process.env.EDGEEXIT_TRUST_DIR = store;
    try {
      expect((await runCli('verify-bundle', byNew)).out).toMatch(/^result {5}OK: every file matches the manifest and the signature is valid$/m);
    } finally {
      process.env.EDGEEXIT_TRUST_DIR = before;
    }
  });

  it('refuses a revoked key even when its .pub is put back, with --key, and with --allow-unsigned', async () => {
    const rv = await runCli('trust', 'revoke', oldKey.publicKey, '--trust-dir', store, '--note', 'rotated out');
    expect(rv.code, rv.err).toBe(0);
    expect(rv.out).toMatch(new RegExp(`^revoked {2}${oldKey.keyId} \\(removed .*\\.pub\\)`));
    expect(await fsp.readFile(path.join(store, REVOKED_FILE), 'utf8')).toBe(`${oldKey.keyId} # rotated out\n`);
    // Put back by hand (a restored backup, a provisioning script): still refused.
    await fsp.copyFile(oldKey.publicKey, path.join(store, 'restored.pub'));
    const msg = new RegExp(`manifest\\.sig: signed with key ${oldKey.keyId}, which is revoked in ${path.join(store, REVOKED_FILE).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(fix: re-sign the bundle with a current key\\)`);
    for (const extra of [[], ['--key', oldKey.publicKey], ['--allow-unsigned']]) {
      const r = await runCli('run', byOld, image, '--trust-dir', store, '--threads', '1', ...extra);
      expect(r.code, extra.join(' ')).toBe(2);
      expect(r.err).toMatch(msg);
    }
    // The new key is untouched by the revocation.
    expect((await runCli('run', byNew, image, '--trust-dir', store, '--threads', '1')).code).toBe(0);
    // A revoked key cannot be trusted again, and the list shows it.
    const again = await runCli('trust', 'add', oldKey.publicKey, '--trust-dir', store);
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/is revoked in .*revoked \(fix: sign with a new key/);
    const list = await runCli('trust', 'list', '--trust-dir', store);
    expect(list.out).toMatch(new RegExp(`${oldKey.keyId}\\s+REVOKED \\(its \\.pub is still here\\)`));
    expect(list.out).toMatch(new RegExp(`${newKey.keyId}\\s+trusted`));
    // Revoking by id works too, and twice is harmless.
    expect((await runCli('trust', 'revoke', oldKey.keyId, '--trust-dir', store)).out).toMatch(/^already revoked/);
  });

  it('fails closed on a damaged revocation list or key file, naming the file and line', async () => {
    const bad = path.join(dir, 'bad-store');
    await fsp.mkdir(bad, { recursive: true });
    await fsp.writeFile(path.join(bad, REVOKED_FILE), `# revoked keys\n${oldKey.keyId}\nsha256:nothex\n`);
    await expect(loadTrustStore(bad)).rejects.toThrow(`${path.join(bad, REVOKED_FILE)}:3: expected a key id`);
    const r = await runCli('run', byNew, image, '--trust-dir', bad, '--threads', '1');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/revoked:3: expected a key id `sha256:<64 hex digits>` per line/);
    await fsp.writeFile(path.join(bad, REVOKED_FILE), '');
    await fsp.writeFile(path.join(bad, 'junk.pub'), 'not a key');
    await expect(loadTrustStore(bad)).rejects.toThrow(/junk\.pub: not a PEM public key/);
  });
});
