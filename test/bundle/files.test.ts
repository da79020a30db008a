// Bundles after compile: manifest schema, keygen, signature and hash verification, tamper cases
// (each failing with the file named), unsigned bundles, and pack → verify of archives.
import { beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { ValidationError } from '../../src/util/errors.js';
import { compileModel } from '../../src/compiler/index.js';
import { BundleIntegrityError, generateKeyPair, manifestJsonSchema, packBundle, parseManifest, readTar, validateManifest, verifyBundle, type Manifest } from '../../src/bundle/index.js';
import { runCli } from '../cli/helpers.js';
import { RESNET, RESNET_LABELS, RESNET_PRE, copyDir, scratch } from '../compiler/helpers.js';

let dir: string;
let signed: string;
let unsigned: string;
let keys: { privateKey: string; publicKey: string; keyId: string };
let otherKeys: { privateKey: string; publicKey: string; keyId: string };

beforeAll(async () => {
  dir = await scratch('bundle');
  keys = await generateKeyPair(path.join(dir, 'keys', 'fleet'));
  otherKeys = await generateKeyPair(path.join(dir, 'keys', 'other'));
  signed = path.join(dir, 'signed');
  unsigned = path.join(dir, 'unsigned');
  const common = { model: RESNET, device: 'rpi4', preprocess: RESNET_PRE, labels: RESNET_LABELS, now: new Date('2026-11-27T00:00:00Z') };
  await compileModel({ ...common, out: signed, key: keys.privateKey });
  await compileModel({ ...common, out: unsigned });
});

async function tampered(label: string, edit: (bundle: string) => Promise<void>, from = signed): Promise<string> {
  const copy = await copyDir(from, path.join(dir, `tampered-${label}`));
  await edit(copy);
  return copy;
}

async function failure(p: string, opts: Parameters<typeof verifyBundle>[1] = {}): Promise<BundleIntegrityError> {
  try {
    await verifyBundle(p, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(BundleIntegrityError);
    return err as BundleIntegrityError;
  }
  throw new Error(`${p} verified, expected a failure`);
}

describe('keygen', () => {
  it('writes an ed25519 pair, the private key readable by its owner only, and refuses to overwrite', async () => {
    const prefix = path.join(dir, 'cli-keys', 'k');
    const r = await runCli('keygen', '--out', prefix);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/key id\s+sha256:[0-9a-f]{64}/);
    expect((await fsp.stat(prefix + '.key')).mode & 0o777).toBe(0o600);
    expect(await fsp.readFile(prefix + '.key', 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(await fsp.readFile(prefix + '.pub', 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const before = await fsp.readFile(prefix + '.key', 'utf8');
    const again = await runCli('keygen', '--out', prefix);
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/k\.key: already exists/);
    expect(await fsp.readFile(prefix + '.key', 'utf8')).toBe(before);
    expect((await runCli('keygen', '--out', prefix, '--force')).code).toBe(0);
    expect(await fsp.readFile(prefix + '.key', 'utf8')).not.toBe(before);
    expect((await fsp.readdir(path.dirname(prefix))).sort()).toEqual(['k.key', 'k.pub']);
  });
});

describe('bundle manifest', () => {
  it('validates, lists every file with its hash, and chains the stages', async () => {
    const m = parseManifest(await fsp.readFile(path.join(signed, 'manifest.json')));
    expect(m).toMatchObject({
      formatVersion: 1,
      model: { name: 'resnet-exits', version: '0' },
      kind: 'multi-exit',
      target: { device: 'rpi4', precision: 'fp32' },
      input: { name: 'image', shape: ['batch', 3, 16, 16], layout: 'NCHW', preprocess: { colorspace: 'rgb', size: [16, 16] } },
      labels: ['cat', 'dog', 'bird', 'frog', 'ship'],
      exitPolicy: { metric: 'max-prob', thresholds: null, temperatures: [1, 1, 1] },
      provenance: { source: { file: 'resnet-exits.onnx' }, created: '2026-11-27T00:00:00.000Z' },
    });
    expect(m.stages.map((s) => s.file)).toEqual(['stage-0.onnx', 'stage-1.onnx', 'stage-2.onnx']);
    expect(m.stages.map((s) => s.exit)).toEqual(['head/aux:0', 'mid.logits', 'logits.final']);
    expect(m.files.map((f) => f.file)).toEqual(['report.json', 'golden.bin']);
    expect(m.golden?.stages.map((g) => g.output)).toEqual(['head/aux:0', 'mid.logits', 'logits.final']);
    expect(m.provenance.command).toMatch(/^edgeexit compile .*resnet-exits\.onnx --device rpi4 --out /);
    expect((await fsp.readdir(signed)).sort()).toEqual(['golden.bin', 'manifest.json', 'manifest.sig', 'report.json', 'stage-0.onnx', 'stage-1.onnx', 'stage-2.onnx']);
    const report = JSON.parse(await fsp.readFile(path.join(signed, 'report.json'), 'utf8')) as { stages: { macs: number }[]; sourceMacs: number; check: { passed: boolean } };
    expect(report.stages.reduce((a, s) => a + s.macs, 0)).toBe(report.sourceMacs);
    expect(report.check.passed).toBe(true);
    // Other languages' readers get the same schema as JSON Schema.
    expect(manifestJsonSchema()).toMatchObject({ type: 'object', required: expect.arrayContaining(['formatVersion', 'stages', 'provenance']) });
  });

  it('reports every schema problem at once, each with its path', async () => {
    const m = JSON.parse(await fsp.readFile(path.join(signed, 'manifest.json'), 'utf8')) as Record<string, unknown> & Manifest;
    const bad = structuredClone(m) as unknown as Record<string, unknown>;
    bad.formatVersion = 2;
    bad.surprise = true;
    (bad.stages as Record<string, unknown>[])[1]!.sha256 = 'xyz';
    (bad.stages as Record<string, unknown>[])[2]!.inputs = ['nobody-made-this'];
    (bad.exitPolicy as Record<string, unknown>).thresholds = [0.9];
    let err: unknown;
    try {
      validateManifest(bad, 'manifest.json');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    const where = (err as ValidationError).problems.map((p) => p.where);
    expect(where).toEqual(
      expect.arrayContaining([
        'manifest.json: formatVersion',
        'manifest.json: surprise',
        'manifest.json: stages[1].sha256',
      ]),
    );
    // Cross-field rules run only once the fields parse; check them on their own.
    const chain = structuredClone(m);
    chain.stages[2]!.inputs = ['nobody-made-this'];
    chain.exitPolicy.thresholds = [0.9];
    const problems = (() => {
      try {
        validateManifest(chain, 'manifest.json');
        return [];
      } catch (e) {
        return (e as ValidationError).problems;
      }
    })();
    expect(problems.map((p) => p.where)).toEqual(['manifest.json: exitPolicy.thresholds', 'manifest.json: stages[2].inputs[0]']);
    expect(problems[1]!.message).toMatch(/'nobody-made-this' is neither the input nor handed over/);
  });
});

describe('verify-bundle', () => {
  it('accepts an intact signed bundle with its key', async () => {
    const r = await verifyBundle(signed, { publicKey: keys.publicKey, requireSignature: true });
    expect(r.signature).toEqual({ status: 'valid', keyId: keys.keyId, trustedBy: 'the given key' });
    expect(r.files.every((f) => f.ok)).toBe(true);
    const cli = await runCli('verify-bundle', signed, '--key', keys.publicKey);
    expect(cli.code).toBe(0);
    expect(cli.out).toMatch(/signature\s+valid \(key sha256:/);
    expect(cli.out).toMatch(/result\s+OK/);
  });

  it('fails naming the stage file when one byte of a stage changed', async () => {
    const copy = await tampered('stage-byte', async (b) => {
      const f = path.join(b, 'stage-1.onnx');
      const data = await fsp.readFile(f);
      data[data.length >> 1] = data[data.length >> 1]! ^ 0x01;
      await fsp.writeFile(f, data);
    });
    const err = await failure(copy, { publicKey: keys.publicKey });
    expect(err.problems.map((p) => p.where)).toEqual(['stage-1.onnx']);
    expect(err.message).toMatch(/stage-1\.onnx: content does not match the manifest/);
    const cli = await runCli('verify-bundle', copy, '--key', keys.publicKey);
    expect(cli.code).toBe(2);
    expect(cli.err).toMatch(/stage-1\.onnx/);
    // Without a key the hashes still catch it.
    expect((await failure(copy)).problems.map((p) => p.where)).toEqual(['stage-1.onnx']);
  });

  it('fails naming manifest.json when one field of the manifest changed', async () => {
    const copy = await tampered('manifest-field', async (b) => {
      const f = path.join(b, 'manifest.json');
      const m = JSON.parse(await fsp.readFile(f, 'utf8')) as Manifest;
      m.stages[0]!.macs += 1;
      await fsp.writeFile(f, JSON.stringify(m, null, 2) + '\n');
    });
    const err = await failure(copy, { publicKey: keys.publicKey });
    expect(err.problems.map((p) => p.where)).toEqual(['manifest.json']);
    expect(err.message).toMatch(/manifest\.json: does not match its signature/);
  });

  it('fails naming manifest.sig when checked with the wrong key', async () => {
    const err = await failure(signed, { publicKey: otherKeys.publicKey });
    expect(err.problems.map((p) => p.where)).toEqual(['manifest.sig']);
    expect(err.message).toContain(`signed with key ${keys.keyId}, not with the given key ${otherKeys.keyId}`);
    const cli = await runCli('verify-bundle', signed, '--key', otherKeys.publicKey);
    expect(cli.code).toBe(2);
    expect(cli.err).toMatch(/manifest\.sig/);
  });

  it('fails naming a file the manifest does not list', async () => {
    const copy = await tampered('extra-file', async (b) => fsp.writeFile(path.join(b, 'stage-9.onnx'), 'x'));
    expect((await failure(copy, { publicKey: keys.publicKey })).problems.map((p) => p.where)).toEqual(['stage-9.onnx']);
  });

  it('fails (exit 2) on a bundle whose signature it cannot check, and says NOT checked under --allow-unsigned', async () => {
    // Unsigned: refused, as a device would refuse it.
    const refused = await runCli('verify-bundle', unsigned);
    expect(refused.code).toBe(2);
    expect(refused.out).toBe('');
    expect(refused.err).toMatch(/manifest\.sig: missing: the bundle is unsigned, so its signature was NOT checked \(fix: sign it \(compile or calibrate with --key <private key>\); --allow-unsigned runs it unchecked\)/);
    expect((await runCli('verify-bundle', unsigned, '--require-signature')).code).toBe(2);
    const hashesOnly = await runCli('verify-bundle', unsigned, '--allow-unsigned');
    expect(hashesOnly.code).toBe(0);
    expect(hashesOnly.out).toMatch(/^signature {2}NOT checked: unsigned \(no manifest\.sig\)$/m);
    expect(hashesOnly.out).toMatch(/^result {5}HASHES OK, SIGNATURE NOT CHECKED/m);
    expect(hashesOnly.out).not.toMatch(/result\s+OK/);
    // Asking for a key check of an unsigned bundle fails too: a stripped signature must not pass.
    expect((await failure(unsigned, { publicKey: keys.publicKey })).problems.map((p) => p.where)).toEqual(['manifest.sig']);
    // Signed, but with a key this machine does not trust (the tests' store is empty): the same.
    const untrusted = await runCli('verify-bundle', signed);
    expect(untrusted.code).toBe(2);
    expect(untrusted.err).toContain(`manifest.sig: signature NOT checked: signed with key ${keys.keyId}, which is not in the trust store`);
    const unchecked = await runCli('verify-bundle', signed, '--allow-unsigned');
    expect(unchecked.code).toBe(0);
    expect(unchecked.out).toContain(`signature  NOT checked: signed with key ${keys.keyId}, which is not in the trust store`);
    expect(unchecked.out).not.toMatch(/result\s+OK/);
  });
});

describe('pack', () => {
  it('packs a bundle into one tar that verify-bundle accepts, and catches tampering inside it', async () => {
    const tar = path.join(dir, 'resnet.tar');
    // Without a key it trusts, pack does not call the bundle signed; with --key it checked, it does.
    const unchecked = await runCli('pack', signed, '--out', tar);
    expect(unchecked.code).toBe(0);
    expect(unchecked.out).toMatch(/7 files: manifest\.json, manifest\.sig, stage-0\.onnx, stage-1\.onnx, stage-2\.onnx, report\.json, golden\.bin; signature NOT checked: signed with key sha256:[0-9a-f]{64}, which is not in the trust store/);
    expect(unchecked.out).not.toMatch(/; signed/);
    const cli = await runCli('pack', signed, '--out', tar, '--key', keys.publicKey);
    expect(cli.code).toBe(0);
    expect(cli.out).toMatch(/packed .* 7 files: manifest\.json, manifest\.sig, stage-0\.onnx, stage-1\.onnx, stage-2\.onnx, report\.json, golden\.bin; signed, valid \(key sha256:[0-9a-f]{64}, trusted by the given key\)/);
    const entries = readTar(new Uint8Array(await fsp.readFile(tar)));
    expect(entries.map((e) => e.name)).toEqual(['signed/manifest.json', 'signed/manifest.sig', 'signed/stage-0.onnx', 'signed/stage-1.onnx', 'signed/stage-2.onnx', 'signed/report.json', 'signed/golden.bin']);
    for (const e of entries) {
      expect(Buffer.from(e.data).equals(await fsp.readFile(path.join(signed, e.name.slice('signed/'.length))))).toBe(true);
    }
    const r = await verifyBundle(tar, { publicKey: keys.publicKey });
    expect(r.kind).toBe('archive');
    expect(r.signature.status).toBe('valid');
    expect((await runCli('verify-bundle', tar, '--key', keys.publicKey)).code).toBe(0);

    // Flip a byte inside stage-2's data in the archive (its header checksum stays valid).
    const bytes = await fsp.readFile(tar);
    const at = bytes.indexOf(Buffer.from('signed/stage-2.onnx'));
    bytes[at + 512 + 100] = bytes[at + 512 + 100]! ^ 0x01;
    const bad = path.join(dir, 'resnet-bad.tar');
    await fsp.writeFile(bad, bytes);
    expect((await failure(bad, { publicKey: keys.publicKey })).problems.map((p) => p.where)).toEqual(['stage-2.onnx']);

    // A damaged bundle is never packed.
    const damaged = await tampered('pack-damaged', async (b) => fsp.writeFile(path.join(b, 'stage-0.onnx'), 'not a model'));
    await expect(packBundle(damaged, path.join(dir, 'never.tar'))).rejects.toThrow(/stage-0\.onnx/);
    await expect(fsp.stat(path.join(dir, 'never.tar'))).rejects.toThrow();
  });
});
