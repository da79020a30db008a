// Installing bundles into the on-device store, through real onnxruntime sessions: the journal's
// states, content-addressed slots, the self-test against the golden I/O the compiler recorded,
// refusals (older version, bad signature, another device, a failed self-test or trial) that leave
// the running bundle as it was, and pruning of old slots.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BundleStore, installBundle, type InstallOptions } from '../../src/agent/index.js';
import { decodeGolden, encodeGolden, GOLDEN_FILE } from '../../src/bundle/golden.js';
import { verifyBundle } from '../../src/bundle/files.js';
import { loadTrustStore } from '../../src/bundle/trust.js';
import { compileModel } from '../../src/compiler/index.js';
import { ZOO, scratch } from '../runtime/helpers.js';
import { compileFixture, newer, variant, type Fixture } from './helpers.js';

let fx: Fixture;
let v1: string;
let v2: string;

beforeAll(async () => {
  fx = await compileFixture(await scratch('install'));
  v1 = await newer(fx.bundle, path.join(fx.dir, 'v1'), fx.privateKey, '1.0.0');
  v2 = await newer(fx.bundle, path.join(fx.dir, 'v2'), fx.privateKey, '1.1.0');
}, 120_000);

const opts = (root: string, bundle: string, more: Partial<InstallOptions> = {}): InstallOptions => ({ root, bundle, trustDir: fx.trustDir, ...more });

async function freshStoreWith(bundle: string): Promise<{ root: string; store: BundleStore; id: string }> {
  const root = await scratch('store');
  const r = await installBundle(opts(root, bundle));
  expect(r.state, r.reason).toBe('committed');
  return { root, store: await BundleStore.open(root), id: r.bundle };
}

describe('installBundle', () => {
  it('stages, verifies, self-tests, switches and commits, journalling every step', async () => {
    const root = await scratch('store');
    const r = await installBundle(opts(root, v1));
    expect(r.state, r.reason).toBe('committed');
    const store = await BundleStore.open(root);
    expect(await store.current()).toBe(r.bundle);
    expect(r.selfTest?.golden).toBe('checked');
    expect(r.selfTest?.stages.map((s) => s.ok)).toEqual([true, true, true]);
    const states = (await store.journal()).filter((e) => e.job === r.job).map((e) => e.state);
    expect(states).toEqual(['started', 'staged', 'verified', 'self-tested', 'active', 'committed']);
    // The slot is the manifest's hash and holds a whole, verifiable bundle.
    const v = await verifyBundle(store.bundleDir(r.bundle), { trust: await loadTrustStore(fx.trustDir), requireSignature: true });
    expect(v.signature.status).toBe('valid');
    // Installing it again changes nothing.
    expect((await installBundle(opts(root, v1))).state).toBe('unchanged');
  });

  it('keeps the replaced bundle as previous, and refuses an older version unless told it is a rollback', async () => {
    const { root, store, id: first } = await freshStoreWith(v1);
    const up = await installBundle(opts(root, v2));
    expect(up.state, up.reason).toBe('committed');
    expect(await store.current()).toBe(up.bundle);
    expect(await store.previous()).toEqual([first]);

    const down = await installBundle(opts(root, v1));
    expect(down.state).toBe('failed');
    expect(down.reason).toMatch(/1\.0\.0 is older than the active 1\.1\.0.*--rollback/);
    expect(await store.current()).toBe(up.bundle);

    const back = await installBundle(opts(root, v1, { rollback: true }));
    expect(back.state, back.reason).toBe('committed');
    expect(await store.current()).toBe(first);
  });

  it('linkFiles: the store holds hard links of the folder’s files, not copies; without it, or from a .tar, copies; the slot verifies all the same', async () => {
    const src = await newer(fx.bundle, path.join(fx.dir, 'v1-link'), fx.privateKey, '1.0.0');
    const names = (await fsp.readdir(src)).filter((f) => !f.startsWith('.'));
    expect(names.length).toBeGreaterThan(3);
    const inode = (f: string) => fsp.stat(f).then((st) => st.ino);
    const slotOf = async (root: string, more: Partial<InstallOptions>, from = src): Promise<string> => {
      const r = await installBundle(opts(root, from, more));
      expect(r.state, r.reason).toBe('committed');
      return (await BundleStore.open(root)).bundleDir(r.bundle);
    };
    const linked = await slotOf(await scratch('store'), { linkFiles: true });
    const copied = await slotOf(await scratch('store'), {});
    const { packBundle } = await import('../../src/bundle/files.js');
    const tar = path.join(fx.dir, 'v1-link.tar');
    await packBundle(src, tar);
    const fromTar = await slotOf(await scratch('store'), { linkFiles: true }, tar);
    for (const f of names) {
      expect(await inode(path.join(linked, f)), f).toBe(await inode(path.join(src, f)));
      expect(await inode(path.join(copied, f)), f).not.toBe(await inode(path.join(src, f)));
      expect(await inode(path.join(fromTar, f)), f).not.toBe(await inode(path.join(src, f)));
    }
    const trust = await loadTrustStore(fx.trustDir);
    for (const slot of [linked, copied, fromTar]) expect((await verifyBundle(slot, { trust, requireSignature: true })).signature.status).toBe('valid');
  });

  it('installs from a .tar as from a folder (same slot)', async () => {
    const { packBundle } = await import('../../src/bundle/files.js');
    const tar = path.join(fx.dir, 'v1.tar');
    await packBundle(v1, tar);
    const root = await scratch('store');
    const r = await installBundle(opts(root, tar));
    expect(r.state, r.reason).toBe('committed');
    const folder = await installBundle(opts(await scratch('store'), v1));
    expect(r.bundle).toBe(folder.bundle);
  });

  it('refuses a bundle whose golden expectation was tampered with (and re-signed), leaving the running bundle as it was', async () => {
    const { root, store, id } = await freshStoreWith(v1);
    const bad = await variant(v2, path.join(fx.dir, 'bad-golden'), fx.privateKey, (_m, files) => {
      const g = decodeGolden(files.get(GOLDEN_FILE)!);
      const out = g.outputs.get(1)!;
      out.tensor.data[3] = out.tensor.data[3]! + 5;
      files.set(GOLDEN_FILE, encodeGolden(g));
    });
    const r = await installBundle(opts(root, bad));
    expect(r.state).toBe('failed');
    expect(r.reason).toMatch(/self-test failed: stage 1 'exit_1' differs from the golden output by up to 5/);
    expect(r.selfTest?.stages.map((s) => s.ok)).toEqual([true, false, true]);
    expect(await store.current()).toBe(id);
    // The refused bundle's slot is gone again.
    expect(await store.has(r.bundle)).toBe(false);
    const last = (await store.journal()).at(-1)!;
    expect(last).toMatchObject({ job: r.job, state: 'failed' });
  });

  it('refuses a bundle with a stage that computes something else (an int8 stage in an fp32 bundle)', async () => {
    const int8 = path.join(fx.dir, 'int8');
    await compileModel({ model: ZOO, device: 'rpi4', precision: 'int8', out: int8, calibrationLimit: 32 });
    const int8Stage = new Uint8Array(await fsp.readFile(path.join(int8, 'stage-2.onnx')));
    const mixed = await variant(v2, path.join(fx.dir, 'mixed'), fx.privateKey, (m, files) => {
      files.set(m.stages[2]!.file, int8Stage);
    });
    const { root, store, id } = await freshStoreWith(v1);
    const r = await installBundle(opts(root, mixed));
    expect(r.state).toBe('failed');
    expect(r.reason).toMatch(/stage 2 'exit_2' differs from the golden output/);
    expect(await store.current()).toBe(id);
  });

  it('refuses an unsigned or untrusted bundle and one compiled for another kind of device', async () => {
    const { root, store, id } = await freshStoreWith(v1);
    const unsigned = await variant(v2, path.join(fx.dir, 'unsigned'), null, () => {});
    const r1 = await installBundle(opts(root, unsigned));
    expect(r1.state).toBe('failed');
    expect(r1.reason).toMatch(/manifest\.sig: missing/);
    const r2 = await installBundle(opts(root, v2, { trustDir: path.join(fx.dir, 'empty-trust') }));
    expect(r2.reason).toMatch(/not in the trust store/);
    const r3 = await installBundle(opts(root, v2, { device: 'x86-host' }));
    expect(r3.reason).toMatch(/compiled for device 'rpi4' \(raspberry-pi\); this device is 'x86-host'/);
    // Same class of board: accepted.
    expect((await installBundle(opts(root, v2, { device: 'rpi5' }))).state).toBe('committed');
    const r4 = await installBundle(opts(root, v1, { rollback: true, input: { colorspace: 'rgb' } }));
    expect(r4.reason).toMatch(/reads gray images; this device feeds rgb/);
    expect(await store.previous()).toEqual([id]);
  });

  it('refuses a bundle over its latency or memory budget, and rolls back one whose trial fails', async () => {
    const { root, store, id } = await freshStoreWith(v1);
    const slow = await installBundle(opts(root, v2, { latencyBudgetMs: 0 }));
    expect(slow.state).toBe('failed');
    const fat = await installBundle(opts(root, v2, { memoryBudgetMiB: 0 }));
    expect(fat.reason).toMatch(/self-test failed: the bundle takes [\d.]+ MiB of memory here; the budget is 0 MiB/);
    expect(slow.reason).toMatch(/stage 0 takes [\d.]+ ms on one golden image here .*the budget is 0 ms/);
    let sawCurrent: string | null = null;
    const tried = await installBundle(
      opts(root, v2, {
        trial: async (t) => {
          sawCurrent = await store.current();
          return t.manifest.model.version === '1.1.0' ? { ok: false, reason: 'p95 latency 2x the previous bundle' } : { ok: true };
        },
      }),
    );
    expect(sawCurrent).toBe(tried.bundle);
    expect(tried.state).toBe('rolled-back');
    expect(tried.reason).toBe('trial failed: p95 latency 2x the previous bundle');
    expect(await store.current()).toBe(id);
    expect((await store.journal()).filter((e) => e.job === tried.job).map((e) => e.state)).toEqual(['started', 'staged', 'verified', 'self-tested', 'active', 'rolled-back']);
  });

  it('accepts a bundle compiled before golden I/O (load check only) and prunes beyond `keep`', async () => {
    const old = await variant(v1, path.join(fx.dir, 'no-golden'), fx.privateKey, (m, files) => {
      files.delete(GOLDEN_FILE);
      const { golden: _g, ...rest } = m;
      return { ...rest, model: { ...m.model, version: '0.9.0' } };
    });
    const root = await scratch('store');
    const r = await installBundle(opts(root, old));
    expect(r.state, r.reason).toBe('committed');
    expect(r.selfTest?.golden).toBe('absent');
    const ids = [r.bundle];
    for (const v of ['1.0.0', '1.1.0', '1.2.0']) {
      const b = await newer(fx.bundle, path.join(fx.dir, `p${v}`), fx.privateKey, v);
      const x = await installBundle(opts(root, b, { keep: 1 }));
      expect(x.state, x.reason).toBe('committed');
      ids.push(x.bundle);
    }
    const store = await BundleStore.open(root);
    expect(await store.current()).toBe(ids[3]);
    expect(await store.previous()).toEqual([ids[2]]);
    expect((await fsp.readdir(path.join(root, 'bundles'))).sort()).toEqual([ids[2], ids[3]].sort());
  });
});
