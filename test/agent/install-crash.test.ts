// kill -9 of the installing process at each step (the self-test both after loading and after
// the golden comparison): afterwards `current` names the old or the new
// bundle, never neither, and that bundle's slot verifies whole; recovery (as the next install or
// the agent's start runs it) finishes the job as rolled back and leaves the old bundle current.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { BundleStore, installBundle, recoverStore } from '../../src/agent/index.js';
import { verifyBundle } from '../../src/bundle/files.js';
import { loadTrustStore } from '../../src/bundle/trust.js';
import { scratch } from '../runtime/helpers.js';
import { compileFixture, newer, type Fixture } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
let fx: Fixture;
let v1: string;
let v2: string;

beforeAll(async () => {
  fx = await compileFixture(await scratch('crash'));
  v1 = await newer(fx.bundle, path.join(fx.dir, 'v1'), fx.privateKey, '1.0.0');
  v2 = await newer(fx.bundle, path.join(fx.dir, 'v2'), fx.privateKey, '1.1.0');
}, 120_000);

/** Run the child until it kills itself at `step`; its stdout lines. */
function installUntilKilled(root: string, bundle: string, step: string): Promise<{ signal: NodeJS.Signals | null; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(path.resolve(here, '../../node_modules/.bin/vite-node'), [path.join(here, 'install-child.ts'), root, bundle, fx.trustDir, step], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (_code, signal) => (signal === 'SIGKILL' ? resolve({ signal, lines: out.trim().split('\n') }) : reject(new Error(`child exited without being killed at ${step}:\n${out}\n${err}`))));
  });
}

async function wholeBundle(store: BundleStore, id: string): Promise<void> {
  const v = await verifyBundle(store.bundleDir(id), { trust: await loadTrustStore(fx.trustDir), requireSignature: true });
  expect(v.signature.status).toBe('valid');
}

describe('kill -9 while installing', () => {
  for (const step of ['staged', 'verified', 'self-test:loaded', 'self-test:golden', 'active'] as const) {
    it(`after '${step}': the old or the new bundle is current, whole; recovery rolls the job back`, async () => {
      const root = await scratch('crash-store');
      const first = await installBundle({ root, bundle: v1, trustDir: fx.trustDir });
      expect(first.state, first.reason).toBe('committed');
      const store = await BundleStore.open(root);

      const { lines } = await installUntilKilled(root, v2, step);
      expect(lines.at(-1)).toBe(`step ${step}`);
      const current = await store.current();
      expect(current).not.toBeNull();
      const last = (await store.journal()).at(-1)!;
      expect([first.bundle, last.bundle]).toContain(current);
      if (step === 'active') expect(current).toBe(last.bundle); // the switch had happened
      else expect(current).toBe(first.bundle);
      await wholeBundle(store, current!);

      const recovered = await recoverStore(store);
      expect(recovered).toHaveLength(1);
      expect(recovered[0]).toMatchObject({ job: last.job, state: 'rolled-back' });
      expect(recovered[0]!.reason).toContain(`interrupted after '${last.state}'`);
      expect(await store.current()).toBe(first.bundle);
      await wholeBundle(store, first.bundle);
      // Idempotent: a second recovery finds nothing to do; the interrupted bundle installs cleanly.
      expect(await recoverStore(store)).toEqual([]);
      const again = await installBundle({ root, bundle: v2, trustDir: fx.trustDir });
      expect(again.state, again.reason).toBe('committed');
      expect(await store.previous()).toEqual([first.bundle]);
    }, 60_000);
  }

  it('a slot left half-copied (killed inside the staging copy) is removed by recovery', async () => {
    const root = await scratch('crash-store');
    const first = await installBundle({ root, bundle: v1, trustDir: fx.trustDir });
    const store = await BundleStore.open(root);
    // What writeBundleAtomic leaves when killed before its rename: a hidden temporary folder.
    const half = path.join(root, 'bundles', `.${'b'.repeat(64)}.tmp-1234-abcd`);
    await fsp.mkdir(half);
    await fsp.writeFile(path.join(half, 'stage-0.onnx'), 'partial');
    await recoverStore(store);
    expect(await fsp.readdir(path.join(root, 'bundles'))).toEqual([first.bundle]);
    expect(await store.current()).toBe(first.bundle);
  });

  it('on the first install (nothing current before), recovery leaves no bundle rather than an unchecked one', async () => {
    const root = await scratch('crash-store');
    await installUntilKilled(root, v1, 'active');
    const store = await BundleStore.open(root);
    expect(await store.current()).not.toBeNull();
    await recoverStore(store);
    expect(await store.current()).toBeNull();
  }, 60_000);
});
