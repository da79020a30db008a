// Rollouts to real device agents (`edgeexit agent --root`, onnxruntime, the real JobAgent) through
// a real Mosquitto, a real collector and its SQLite store, driven by `edgeexit rollout` itself
// (files staged by hash, its own file server). A good bundle reaches every device; a bundle that
// the devices accept (their own trial limit is loose) but that runs every image to the last exit
// breaks the fleet gate p95<1.5x at the canary (updated device against the one still on the old
// bundle), so the rollout aborts and the canary gets a signed rollback job to the bundle it ran.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BundleStore, installBundle } from '../../src/agent/index.js';
import { agentCommand } from '../../src/cli/commands/agent.js';
import { rolloutCommand, rolloutStatusCommand } from '../../src/cli/commands/rollout.js';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import type { RolloutRecord } from '../../src/fleet/rollout-plan.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { fmnistImages, scratch } from '../runtime/helpers.js';
import { compileFixture, slowRelease, variant, type Fixture } from './helpers.js';
import { until as waitUntil } from '../support/wait.js';

const until = (pred: () => boolean | Promise<boolean>, what: string, ms = 90_000): Promise<void> => waitUntil(pred, what, ms, 50);

MOSQUITTO.describe('rollouts to real device agents through Mosquitto', () => {
  let fx: Fixture;
  let broker: Broker;
  let collector: Collector;
  let watch: string;
  let db: string;
  const b: Record<string, string> = {};
  const agents: { id: string; store: BundleStore; stop: () => Promise<unknown> }[] = [];
  const log: string[] = [];

  beforeAll(async () => {
    fx = await compileFixture(await scratch('rollout-agents'));
    b.v1 = await variant(fx.bundle, path.join(fx.dir, 'v1'), fx.privateKey, (m) => ({ ...m, model: { ...m.model, version: '1.0.0' }, exitPolicy: { ...m.exitPolicy, thresholds: m.stages.slice(1).map(() => 0) } }));
    b.v2 = await variant(b.v1, path.join(fx.dir, 'v2'), fx.privateKey, (m) => ({ ...m, model: { ...m.model, version: '1.1.0' } }));
    b.slow = await slowRelease(fx, '1.2.0');
    watch = path.join(fx.dir, 'watch');
    await fsp.mkdir(watch, { recursive: true });
    for (const f of await fmnistImages(2)) await fsp.copyFile(f, path.join(watch, path.basename(f)));
    broker = await startBroker({ config: ['set_tcp_nodelay true'] });
    db = path.join(fx.dir, 'fleet.db');
    collector = await startCollector({ brokerUrl: broker.url, dbFile: db, onLog: () => undefined });
    for (const id of ['pi-1', 'pi-2']) {
      const root = await scratch(`rollout-${id}`);
      expect((await installBundle({ root, bundle: b.v1, trustDir: fx.trustDir })).state).toBe('committed');
      const ac = new AbortController();
      const done = agentCommand(
        // The devices' own trial lets a 3x slower bundle through: catching it is the fleet gate's job here.
        { root, trustDir: fx.trustDir, watch, loop: true, telemetry: broker.url, fleet: 'lab', deviceId: id, stateDir: path.join(root, 'telemetry'), window: '500ms', threads: 1, pollMs: 20, storePollMs: 50, trialMs: 1_000, trialMaxP95Ratio: 100 },
        { out: () => undefined, err: (l) => log.push(`${id}: ${l}`) },
        ac.signal,
      );
      agents.push({ id, store: await BundleStore.open(root), stop: async () => (ac.abort(), await done) });
    }
    await until(async () => (await collector.store.totals()).filter((t) => t.windows >= 2).length === 2, 'windows from both agents');
  }, 240_000);

  afterAll(async () => {
    for (const a of agents) await a.stop().catch(() => undefined);
    await collector?.close();
    await broker?.dispose();
  });

  const rollout = async (bundle: string, previous: string[], gates: string[]): Promise<{ record?: RolloutRecord; error?: Error }> => {
    try {
      const record = (await rolloutCommand(
        { bundle, previous, fleet: 'lab', db, key: fx.privateKey, broker: broker.url, files: path.join(fx.dir, 'files'), canary: '1', waves: '100%', gate: gates, window: '3s', stepTimeout: '60s', retries: 1, retryBackoff: '500ms', tickMs: 200 },
        { out: () => undefined, err: (l) => log.push(`rollout: ${l}`) },
      )) as RolloutRecord;
      return { record };
    } catch (error) {
      return { error: error as Error };
    }
  };

  it('--dry-run prints the plan per class and starts nothing', async () => {
    const out: string[] = [];
    await rolloutCommand({ bundle: b.v2!, fleet: 'lab', db, key: fx.privateKey, broker: broker.url, files: path.join(fx.dir, 'files'), canary: '1', waves: '100%', gate: ['p95<1.1x'], dryRun: true }, { out: (t) => out.push(t), err: () => undefined });
    expect(out.join('\n')).toMatch(/gates: p95<1\.1x; window 600000 ms[\s\S]*rpi4: 2 to update\n  canary +1  pi-1\n  wave 1 +1  pi-2/);
    expect(await collector.store.rollouts()).toEqual([]);
  }, 60_000);

  it('rolls a good bundle out to every agent, canary first', async () => {
    const { record, error } = await rollout(b.v2!, [b.v1!], ['errors<50pp']);
    expect(error, log.join('\n')).toBeUndefined();
    expect(record!.status).toBe('completed');
    const v2 = record!.target.bundle;
    for (const a of agents) expect(await a.store.current()).toBe(v2);
    const cls = Object.values(record!.classes)[0]!;
    expect(cls.steps.map((s) => [s.name, s.devices.length])).toEqual([['canary', 1], ['wave 1', 1]]);
    // The wave opened only after the canary had committed and baked.
    expect(cls.steps[1]!.openedAt!).toBeGreaterThanOrEqual(cls.steps[0]!.passedAt!);
  }, 180_000);

  it('aborts on the fleet p95 gate at the canary and rolls the canary back to the bundle it ran', async () => {
    const before = await agents[0]!.store.current();
    const { record, error } = await rollout(b.slow!, [b.v2!], ['p95<1.5x']);
    expect(error?.message).toMatch(/rollout .* aborted: gate breach after the canary: p95<1\.5x/);
    const lines: string[] = [];
    const r = await rolloutStatusCommand({ db, json: true }, { out: (t) => lines.push(t), err: () => undefined });
    expect(record).toBeUndefined();
    expect(r.status).toBe('aborted');
    const canary = Object.values(r.classes)[0]!.steps[0]!.devices[0]!;
    expect(r.devices[canary]).toMatchObject({ phase: 'rolled-back', from: before });
    const gate = Object.values(r.classes)[0]!.steps[0]!.gates![0]!;
    expect(gate.verdict).toBe('fail');
    expect(gate.value!).toBeGreaterThan(1.5);
    for (const a of agents) expect(await a.store.current()).toBe(before);
    // The canary ran the slow bundle and went back; the other device never got it.
    const touched = async (a: (typeof agents)[number]) => (await a.store.journal()).some((e) => JSON.stringify(e).includes(r.target.bundle));
    expect(await touched(agents.find((a) => a.id === canary)!)).toBe(true);
    expect(await touched(agents.find((a) => a.id !== canary)!)).toBe(false);
  }, 180_000);
});
