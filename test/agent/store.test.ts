// The store's small parts on their own: version order, a torn journal line, the install lock,
// bundle ids, golden.bin round trips and comparisons, and the manifest's golden field checks.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BundleStore, compareVersions } from '../../src/agent/index.js';
import { compareGolden, decodeGolden, encodeGolden } from '../../src/bundle/golden.js';
import { validateManifest } from '../../src/bundle/manifest.js';
import { ValidationError } from '../../src/util/errors.js';
import { scratch } from '../runtime/helpers.js';
import { compileFixture } from './helpers.js';

describe('BundleStore', () => {
  it('orders versions by number, not text', () => {
    expect(compareVersions('1.10.0', '1.9.0')).toBeGreaterThan(0);
    expect(compareVersions('v2', '1.99')).toBeGreaterThan(0);
    expect(compareVersions('1.0', '1.0.0')).toBe(0);
    expect(compareVersions('1.0.0', '1.0.1')).toBeLessThan(0);
  });

  it('ignores a torn last journal line (the process died mid-write)', async () => {
    const store = await BundleStore.open(await scratch('store'));
    await store.record({ job: 'j', state: 'started', bundle: 'a'.repeat(64), from: null });
    await fsp.appendFile(store.journalFile, '{"job":"j","state":"sta');
    expect((await store.journal()).map((e) => e.state)).toEqual(['started']);
    expect(await store.jobs()).toHaveLength(1);
  });

  it('refuses a second installer while the first is alive, takes over a dead one\'s lock', async () => {
    const root = await scratch('store');
    const store = await BundleStore.open(root);
    const release = await store.lock();
    // The lock names this (live) process; a second taker from another process would be refused.
    await fsp.writeFile(path.join(root, 'install.lock'), `${process.ppid} x\n`);
    await expect(store.lock()).rejects.toThrow(/another install is running \(pid \d+\)/);
    // A pid that cannot exist: the lock is stale and taken over.
    await fsp.writeFile(path.join(root, 'install.lock'), '2147483646 x\n');
    const again = await store.lock();
    await again();
    await release();
    expect(() => store.bundleDir('../etc')).toThrow(/expected a manifest SHA-256/);
  });

  it('golden.bin round-trips; comparisons catch a shape change and NaN', () => {
    const input = { dims: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) };
    const out = { dims: [2, 2], data: new Float32Array([0.5, -1, 2, 3]) };
    const g = decodeGolden(encodeGolden({ input, outputs: new Map([[1, { name: 'exit_1', tensor: out }]]) }));
    expect(g.input).toEqual(input);
    expect(g.outputs.get(1)).toEqual({ name: 'exit_1', tensor: out });
    expect(compareGolden(out, out, 0, 0).ok).toBe(true);
    expect(compareGolden({ dims: [4], data: out.data }, out, 1, 1)).toMatchObject({ ok: false, reason: 'shape 4, expected 2x2' });
    expect(compareGolden({ dims: [2, 2], data: new Float32Array([0.5, NaN, 2, 3]) }, out, 1, 1)).toMatchObject({ ok: false, worstIndex: 1 });
    expect(compareGolden({ dims: [2, 2], data: new Float32Array([0.5, -1.05, 2, 3]) }, out, 0.01, 0.01)).toMatchObject({ ok: false, worstIndex: 1 });
    expect(() => decodeGolden(new Uint8Array(16))).toThrow(/golden magic/);
  });

  it("the manifest's golden field must name a hashed file and real stage outputs", async () => {
    const fx = await compileFixture(await scratch('golden-schema'));
    const m = JSON.parse(await fsp.readFile(path.join(fx.bundle, 'manifest.json'), 'utf8')) as Record<string, unknown> & { files: unknown[]; golden: { stages: { output: string }[] } };
    m.golden.stages[1]!.output = 'nope';
    m.files = m.files.slice(0, 1);
    let err: unknown;
    try {
      validateManifest(m);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    const problems = (err as ValidationError).problems.map((p) => `${p.where}: ${p.message}`);
    expect(problems).toContainEqual(expect.stringMatching(/golden\.file: must also be listed under files/));
    expect(problems).toContainEqual(expect.stringMatching(/golden\.stages\[1\]\.output: stage 1 yields exit_1/));
  }, 60_000);
});
