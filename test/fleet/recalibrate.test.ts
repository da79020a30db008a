// The closed loop end to end at small scale: a real Mosquitto, a real collector writing a real
// SQLite store, 6 simulated job devices (4 rpi4, 2 rpi5) running the zoo bundle and reporting
// per-stage latency. `recalibrate --fleet sim --class rpi4` calibrates a copy of the bundle on
// the rpi4 reports, signs it, and rolls it out through the rollout driver to the rpi4 devices
// only: they end on the new manifest, the rpi5 devices stay, the current bundle is untouched,
// and the update differs from the current bundle in the manifest and its signature alone. The
// simulated devices fetch no files, so the agent's real download of that job, by a device holding
// the current bundle, is run against a file server: it serves the manifest and signature only.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadBundleFiles, sha256Hex } from '../../src/bundle/files.js';
import { parseManifest } from '../../src/bundle/manifest.js';
import { loadTrustStore } from '../../src/bundle/trust.js';
import { compileModel } from '../../src/compiler/index.js';
import { downloadBundle } from '../../src/agent/download.js';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import { startFileServer } from '../../src/fleet/file-server.js';
import type { RolloutRecord } from '../../src/fleet/rollout-plan.js';
import type { SimProfile } from '../../src/fleet/simulate.js';
import { SimJobDevice } from '../../src/fleet/simulate-jobs.js';
import { recalibrateCommand } from '../../src/cli/commands/recalibrate.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { FMNIST, ZOO, scratch, trustedSigner } from '../runtime/helpers.js';
import { until } from '../support/wait.js';

const FLEET = 'sim';

MOSQUITTO.describe('recalibrate: thresholds from one class, rolled out to that class', () => {
  let dir: string;
  let broker: Broker;
  let collector: Collector;
  let bundle: string;
  let sha: string;
  let key: string;
  let trustDir: string;
  const devices: SimJobDevice[] = [];

  beforeAll(async () => {
    dir = await scratch('recalibrate');
    const signer = await trustedSigner(dir);
    key = signer.privateKey;
    trustDir = signer.trustDir;
    bundle = path.join(dir, 'bundle');
    const c = await compileModel({ model: ZOO, device: 'rpi4', precision: 'fp32', out: bundle, latency: false, key });
    sha = sha256Hex(await fsp.readFile(path.join(bundle, 'manifest.json')));
    broker = await startBroker();
    collector = await startCollector({ brokerUrl: broker.url, dbFile: path.join(dir, 'fleet.db'), onLog: () => undefined });
    const trust = await loadTrustStore(signer.trustDir);
    const profile: SimProfile = {
      source: 'test', deviceProfile: 'rpi4', precision: 'fp32',
      stages: [{ p50Ms: 1, p95Ms: 1.5 }, { p50Ms: 2, p95Ms: 3 }, { p50Ms: 4, p95Ms: 6 }],
      exitShares: [0.6, 0.3, 0.1], power: { idleWatts: 2, busyWatts: 5 }, bundle: { name: c.manifest.model.name, manifestSha256: sha },
    };
    const ids = ['rpi4-0', 'rpi4-1', 'rpi4-2', 'rpi4-3', 'rpi5-0', 'rpi5-1'];
    devices.push(...(await Promise.all(ids.map((id, i) =>
      SimJobDevice.start({ url: broker.url, fleet: FLEET, device: id, hardware: id.slice(0, 4), bundle: { id: sha, name: c.manifest.model.name, version: c.manifest.model.version }, trust, profile, windowMs: 200, inferencesPerS: 100, applyMs: 50, seed: i + 1 })))));
    // Enough rpi4 reports for a fleet latency profile (20 windows from 3 devices at least).
    await until(async () => (await collector.store.stageLatencyWindows({ fleet: FLEET, deviceClass: 'rpi4', manifestSha256: [sha], limit: 100 })).length >= 30, 'rpi4 windows with stage latency', 60_000, 100);
  }, 180_000);

  afterAll(async () => {
    await Promise.all(devices.map((d) => d.close()));
    await collector?.close();
    await broker?.dispose();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('calibrates on the rpi4 reports and moves only the manifest to the rpi4 devices', async () => {
    const before = await loadBundleFiles(bundle);
    const out = path.join(dir, 'bundle-rpi4');
    const log: string[] = [];
    const r = await recalibrateCommand(
      {
        fleet: FLEET, class: 'rpi4', bundle, out, data: FMNIST, targetLatency: '8ms', percentile: 95, limit: 200, allowMiss: true,
        db: path.join(dir, 'fleet.db'), key, broker: broker.url, files: path.join(dir, 'files'),
        canary: '1', waves: '100%', window: '1s', stepTimeout: '30s', tickMs: 200,
      },
      { out: (t) => log.push(t), err: (t) => log.push(t) },
    );
    expect(r.calibration.latency.source).toBe('fleet:sim/rpi4');
    const rollout = r.rollout as RolloutRecord;
    expect(rollout.status).toBe('completed');
    expect(Object.keys(rollout.classes)).toEqual(['rpi4']);
    expect(Object.keys(rollout.devices).sort()).toEqual(['rpi4-0', 'rpi4-1', 'rpi4-2', 'rpi4-3']);
    expect(rollout.target.bundle).toBe(r.update.bundle);
    expect(rollout.previous[sha]).toBeDefined();

    // The devices, by their own account: rpi4 on the new manifest, rpi5 untouched.
    for (const d of devices) expect(d.bundle, d.id).toBe(d.hardware === 'rpi4' ? r.update.bundle : sha);
    expect(devices.filter((d) => d.hardware === 'rpi5').every((d) => d.installed.length === 0)).toBe(true);

    // Only the manifest and its signature differ; every stage file is the same bytes.
    const after = await loadBundleFiles(out);
    expect(r.update.moved.map((f) => f.name)).toEqual(['manifest.json', 'manifest.sig']);
    expect(r.update.unchanged.length).toBe(before.files.size - 2);
    for (const f of r.update.unchanged) expect(sha256Hex(after.files.get(f.name)!), f.name).toBe(sha256Hex(before.files.get(f.name)!));
    const mOld = parseManifest(before.files.get('manifest.json')!);
    const mNew = parseManifest(after.files.get('manifest.json')!);
    expect(mNew.stages).toEqual(mOld.stages);
    expect(mNew.exitPolicy.thresholds).toEqual(r.calibration.thresholds);
    expect(r.update.bundle).not.toBe(sha);
    // The job a device got names the new manifest and signature: the bytes a device fetches.
    expect(rollout.target.manifest).toEqual({ sha256: r.update.bundle, bytes: after.files.get('manifest.json')!.length });
    expect(rollout.target.signature.sha256).toBe(sha256Hex(after.files.get('manifest.sig')!));
    // The current bundle is left as it was.
    expect(sha256Hex(await fsp.readFile(path.join(bundle, 'manifest.json')))).toBe(sha);
    expect(log.join('\n')).toMatch(/devices fetch manifest\.json and manifest\.sig \(\d+ bytes\), \d+ files unchanged/);

    // What a real device holding the current bundle fetches for that job (the agent's own
    // download, against a file server over the files the rollout staged): the manifest and its
    // signature; every stage file is copied from the bundle it holds.
    const server = await startFileServer({ brokerUrl: broker.url, bundles: [], blobDirs: [path.join(dir, 'files')], onLog: () => undefined });
    try {
      const got = await downloadBundle({
        brokerUrl: broker.url, fleet: FLEET, device: 'rpi4-0', manifest: rollout.target.manifest, signature: rollout.target.signature,
        staging: path.join(dir, 'staging'), have: [bundle], verify: { trust: await loadTrustStore(trustDir), requireSignature: true },
      });
      expect(got.verified.manifest.exitPolicy.thresholds).toEqual(r.calibration.thresholds);
      expect([...got.stats.filesFetched].sort()).toEqual(['manifest.json', 'manifest.sig']);
      expect(got.stats.filesReused.length).toBe(r.update.unchanged.length);
      expect(server.stats().bytesSent).toBe(rollout.target.manifest.bytes + rollout.target.signature.bytes);
    } finally {
      await server.close();
    }
  }, 300_000);

  it('refuses a missing flag, an --out that exists, and a class the fleet does not have', async () => {
    const base = { fleet: FLEET, bundle, data: FMNIST, targetLatency: '8ms', db: path.join(dir, 'fleet.db'), key, broker: broker.url, files: path.join(dir, 'files'), dryRun: true };
    await expect(recalibrateCommand({ ...base, class: 'rpi4', bundle: undefined as unknown as string }, { out: () => undefined, err: () => undefined })).rejects.toThrow(/missing --bundle/);
    await expect(recalibrateCommand({ ...base, class: 'rpi4', out: bundle }, { out: () => undefined, err: () => undefined })).rejects.toThrow(/--out: already exists/);
    await expect(recalibrateCommand({ ...base, class: 'jetson-nano', out: path.join(dir, 'bundle-jetson') }, { out: () => undefined, err: () => undefined })).rejects.toThrow(/jetson-nano/);
  }, 120_000);
});
