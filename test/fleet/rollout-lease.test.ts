// Two rollout drivers started on one rollout (an operator ran `rollout drive` twice, or a second
// host): through a real Mosquitto, a real collector and its SQLite store, and 6 simulated job
// devices. The lease lets one of them tick; the other waits. Each device gets one job and
// installs once, and after the holder stops (handing the lease back) the other finishes the rollout.
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generateKeyPair, loadPrivateKey } from '../../src/bundle/signing.js';
import { addTrustedKey, loadTrustStore } from '../../src/bundle/trust.js';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import { RolloutDriver, createRollout } from '../../src/fleet/rollout.js';
import { DEFAULT_SPEC, type BundleInfo } from '../../src/fleet/rollout-plan.js';
import { loadSimProfile } from '../../src/fleet/simulate.js';
import { SimJobDevice } from '../../src/fleet/simulate-jobs.js';
import { connectMqtt } from '../../src/telemetry/mqtt/client.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { until } from '../support/wait.js';

function bundle(version: string): BundleInfo {
  const id = createHash('sha256').update(`lease-test-${version}`).digest('hex');
  return { bundle: id, model: { name: 'm', version }, manifest: { sha256: id, bytes: 100 }, signature: { sha256: createHash('sha256').update(`sig-${version}`).digest('hex'), bytes: 64 } };
}
const V1 = bundle('1.0.0');
const V2 = bundle('1.1.0');

MOSQUITTO.describe('rollout driver leases: two drivers on one rollout', () => {
  let dir: string;
  let broker: Broker;
  let collector: Collector;
  let keyFile: string;
  const devices: SimJobDevice[] = [];

  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-lease-'));
    broker = await startBroker();
    collector = await startCollector({ brokerUrl: broker.url, dbFile: path.join(dir, 'fleet.db'), onLog: () => undefined });
    const keys = await generateKeyPair(path.join(dir, 'ops'));
    keyFile = keys.privateKey;
    await addTrustedKey(path.join(dir, 'trust'), keys.publicKey);
    const trust = await loadTrustStore(path.join(dir, 'trust'));
    const profile = await loadSimProfile('rpi4');
    for (let i = 0; i < 6; i++)
      devices.push(await SimJobDevice.start({ url: broker.url, fleet: 'lab', device: `pi-${i}`, hardware: 'rpi4', bundle: { id: V1.bundle, name: 'm', version: '1.0.0' }, trust, profile, windowMs: 200, applyMs: 50, seed: i + 1 }));
    await until(async () => (await collector.store.devices()).filter((d) => d.birth).length === 6, '6 births stored', 60_000, 100);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(devices.map((d) => d.close()));
    await collector?.close();
    await broker?.dispose();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('lets one driver tick at a time; the other takes over once the holder hands the lease back', async () => {
    const key = await loadPrivateKey(keyFile);
    const spec = { ...DEFAULT_SPEC, canary: { kind: 'count' as const, value: 2 }, waves: [1], windowMs: 300, stepTimeoutMs: 30_000 };
    const r = await createRollout({ store: collector.store, fleet: 'lab', target: V2, previous: [V1], spec, id: 'ro-lease' });
    const [ca, cb] = await Promise.all([connectMqtt({ url: broker.url, clientId: 'driver-a' }), connectMqtt({ url: broker.url, clientId: 'driver-b' })]);
    const logs: string[] = [];
    const a = new RolloutDriver({ store: collector.store, conn: ca, key, id: r.id, tickMs: 100, owner: 'A', leaseMs: 60_000 });
    const b = new RolloutDriver({ store: collector.store, conn: cb, key, id: r.id, tickMs: 100, owner: 'B', leaseMs: 60_000, onLog: (l) => logs.push(l) });
    try {
      const first = await a.tick();
      expect(first.status).toBe('running');
      // B runs while A holds the lease (and does not renew it): B sends nothing.
      const running = b.run();
      await until(() => logs.some((l) => /another driver holds it/.test(l)), 'B to see the lease held', 30_000, 50);
      const sent = Object.values((await collector.store.rollout(r.id))!.record.devices).filter((d) => d.job !== undefined).length;
      expect(sent).toBe(2); // A's canary only
      // A stops and hands the lease back (as run() does when it ends): B goes on from the store.
      await collector.store.releaseRollout(r.id, a.owner);
      const final = await running;
      expect(final.status).toBe('completed');
      expect(logs.some((l) => /sent \d+ update/.test(l))).toBe(true);
      for (const d of devices) expect(d.installed, d.id).toEqual([V2.bundle]);
      expect(Object.values(final.devices).every((d) => d.phase === 'updated' && d.attempt === 1)).toBe(true);
      // B released it at the end: a third driver could claim it at once.
      expect(await collector.store.claimRollout(r.id, 'C', 1000, Date.now())).toBe(true);
    } finally {
      await Promise.all([ca.end(), cb.end()]);
    }
  }, 120_000);
});
