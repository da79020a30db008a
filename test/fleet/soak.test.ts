// Soak: 200 simulated devices and one device in a child process publish through a real Mosquitto
// into a collector with a real SQLite file. Mid-run the child is SIGKILLed and restarted on the
// same state dir, and the broker is SIGKILLed and restarted on the same port. At the end every
// outbox is empty and the collector's totals per device (windows, inferences, joules, exits)
// equal what the devices' ledgers say they sent: nothing lost, nothing counted twice.
//
// Collector crashes, and the checks that every window is stored exactly once or counted as
// dropped, are in delivery.test.ts. This test keeps its two precautions from before collector
// acks (now they only save resends): the devices are held off after the broker restart until the
// collector has resubscribed, and the collector's broker queue is unlimited (README: delivery
// guarantees), since births and deaths that Mosquitto drops are not resent.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { startCollector, type Collector } from '../../src/fleet/collector.js';
import { FleetSimulator, ledgerTotals, loadSimProfile, readSentLedger, type SentTotals } from '../../src/fleet/simulate.js';
import { MOSQUITTO, startBroker, startGate, type Broker, type Gate } from '../telemetry/mqtt/broker.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { until as waitUntil, sleep } from '../support/wait.js';

const FAST = { initialMs: 100, maxMs: 500, factor: 2, jitter: 0.5 };
const FLEET = 'soak';
const DEVICES = 200;
const RATE = 1; // windows per second per device
const CHILD_ID = 'child-0001';
const ROOT = path.resolve(import.meta.dirname, '../..');

const until = (pred: () => boolean | Promise<boolean>, what: string, ms = 60_000): Promise<void> => waitUntil(pred, what, ms, 50);

function startChild(url: string, stateDir: string): { proc: ChildProcess; stdout: () => string; stderr: () => string; exited: Promise<number | null> } {
  const proc = spawn(
    path.join(ROOT, 'node_modules', '.bin', 'vite-node'),
    [path.join(ROOT, 'test/fleet/simulate-child.ts'), '--devices', '1', '--prefix', 'child', '--fleet', FLEET, '--broker', url, '--state-dir', stateDir, '--rate', '10', '--progress', '0', '--drain-timeout', '20', '--json'],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // 'close', not 'exit': the pipes are read to the end.
  const exited = new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code)));
  return { proc, stdout: () => out, stderr: () => err, exited };
}

MOSQUITTO.describe('soak', () => {
  let broker: Broker | undefined;
  let gate: Gate | undefined;
  let collector: Collector | undefined;
  let sim: FleetSimulator | undefined;
  let child: ReturnType<typeof startChild> | undefined;
  let dir: string | undefined;

  afterAll(async () => {
    child?.proc.kill('SIGKILL');
    await sim?.close().catch(() => undefined);
    await collector?.close().catch(() => undefined);
    await gate?.dispose();
    await broker?.dispose();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('loses nothing and counts nothing twice through a device SIGKILL and a broker SIGKILL', { timeout: 120_000 }, async () => {
    dir = await tempDir('soak');
    broker = await startBroker({ config: ['max_queued_messages 0'] });
    gate = await startGate(broker.port);
    const logs: string[] = [];
    collector = await startCollector({ brokerUrl: broker.url, dbFile: path.join(dir, 'fleet.db'), fleet: FLEET, backoff: FAST, onLog: (l) => logs.push(l) });
    expect(collector.protocolVersion).toBe(5);

    sim = await FleetSimulator.start({ url: gate.url, devices: DEVICES, fleet: FLEET, stateDir: path.join(dir, 'sim'), rate: RATE, profile: await loadSimProfile('rpi4'), backoff: FAST, seed: 7 });
    const childDir = path.join(dir, 'child');
    child = startChild(gate.url, childDir);
    const childSent = () => readSentLedger(path.join(childDir, CHILD_ID)).size;
    await until(() => sim!.progress().connected === DEVICES, 'every simulated device connected');
    await until(() => childSent() >= 10, 'the child device sending', 60_000);

    // The child dies mid-stream (its outbox holds what the broker has not acked) and comes back.
    child.proc.kill('SIGKILL');
    await child.exited;
    const sentBeforeKill = childSent();
    child = startChild(gate.url, childDir);
    await until(() => childSent() > sentBeforeKill + 5, 'the restarted child sending again', 60_000);

    // The broker dies; devices keep producing into their outboxes. (Counted before the restart:
    // the collector, retrying every few hundred ms, may be back before broker.start() returns.)
    const reconnects = logs.filter((l) => l.startsWith('reconnected')).length;
    gate.setOpen(false);
    await broker.stop('SIGKILL');
    const queuedBefore = sim.progress().queued;
    await sleep(2000);
    expect(sim.progress().queued).toBeGreaterThan(queuedBefore);
    await broker.start();
    await until(() => logs.filter((l) => l.startsWith('reconnected')).length > reconnects, 'the collector resubscribed');
    gate.setOpen(true);
    await until(() => sim!.progress().connected === DEVICES, 'every simulated device reconnected');
    await sleep(2000);

    // Stop producing; everything queued must reach the broker.
    await sim.stopGenerating();
    child.proc.kill('SIGINT');
    expect(await child.exited, child.stderr()).toBe(0);
    const childSummary = JSON.parse(child.stdout()) as { totals: { queued: number } };
    expect(childSummary.totals.queued).toBe(0);
    expect(await sim.drained(60_000)).toBe(true);

    const sent = new Map<string, SentTotals>(sim.devices.map((d) => [d.id, d.sent()]));
    sent.set(CHILD_ID, ledgerTotals(readSentLedger(path.join(childDir, CHILD_ID))));
    const totalSent = [...sent.values()].reduce((a, t) => a + t.windows, 0);
    // Acked by the broker is not yet stored: wait for the collector's last batch.
    await until(async () => (await collector!.store.totals()).reduce((a, t) => a + t.windows, 0) >= totalSent, `${totalSent} windows stored`, 30_000).catch(() => undefined);

    const stored = new Map((await collector.store.totals()).map((t) => [t.device, t]));
    const mismatches: string[] = [];
    for (const [device, s] of sent) {
      const t = stored.get(device);
      const got = { windows: t?.windows ?? 0, count: t?.count ?? 0, exits: t?.exits ?? [] };
      if (got.windows !== s.windows || got.count !== s.count || JSON.stringify(got.exits) !== JSON.stringify(s.exits) || Math.abs((t?.joules ?? 0) - s.joules) > 1e-6 * Math.max(1, s.joules))
        mismatches.push(`${device}: sent ${JSON.stringify(s)}, stored ${JSON.stringify(t ?? null)}`);
    }
    expect(mismatches).toEqual([]);
    expect([...stored.keys()].sort()).toEqual([...sent.keys()].sort());
    expect(await collector.counters()).toMatchObject({ malformed: 0, invalid: 0, oversized: 0, unknownDevice: 0 });
    // The run did what it says: a real outage with a backlog, and the child really restarted.
    expect(totalSent).toBeGreaterThan(DEVICES * 5);
    expect(sent.get(CHILD_ID)!.windows).toBeGreaterThan(sentBeforeKill);
    const devs = new Map((await collector.store.devices()).map((d) => [d.device, d]));
    expect(devs.get(CHILD_ID)!.bdSeq).toBeGreaterThanOrEqual(2);
  });
});
