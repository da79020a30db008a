// The quick start's flashing leg on its own: a device agent running a bundle as compiled gets the
// calibrated one (a thresholds-only update) as a signed job through a throwaway Mosquitto, and the
// job succeeds with only the manifest and its signature on the wire.
import path from 'node:path';
import { expect } from 'vitest';
import { promises as fsp } from 'node:fs';
import { BundleStore, bundleId } from '../../src/agent/store.js';
import { quickstartFlash } from '../../src/cli/commands/quickstart-flash.js';
import { MOSQUITTO } from '../support/require.js';
import { FMNIST, scratch } from '../runtime/helpers.js';
import { compileFixture, variant } from './helpers.js';

MOSQUITTO.it('flashes the calibrated bundle to the agent beside it and shows the job succeed', async () => {
  const fx = await compileFixture(await scratch('qs-flash'));
  const calibrated = await variant(fx.bundle, path.join(fx.dir, 'calibrated'), fx.privateKey, (m) => ({ ...m, exitPolicy: { ...m.exitPolicy, thresholds: m.stages.slice(1).map(() => 0.7) } }));
  let out = '';
  const ok = await quickstartFlash({ work: fx.dir, before: fx.bundle, bundle: calibrated, trustDir: fx.trustDir, key: fx.privateKey, images: path.join(FMNIST, 'bag') }, { out: (t) => void (out += t + '\n'), err: () => undefined });
  expect(ok).toBe(true);
  expect(out).toMatch(/quickstart\/device-1 +flash-\S+ .* succeeded +done +100%/);
  // A thresholds-only update: the stage files were already on the device.
  expect(out).toMatch(/downloaded 0 blocks \(\d+ bytes\), 0 resumed from before a restart, \d+ files already here/);
  const store = await BundleStore.open(path.join(fx.dir, 'flash', 'device-store'));
  expect(await store.current()).toBe(bundleId(await fsp.readFile(path.join(calibrated, 'manifest.json'))));
}, 180_000);
