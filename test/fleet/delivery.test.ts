// End-to-end delivery through a real Mosquitto: a fleet of simulated devices publishes while the
// collector (a child process) is SIGKILLed, the broker is SIGKILLed (with persistence on, then
// off), both at once, a device process is SIGKILLed, and a backlog of 5,000 windows arrives at
// once. Each test ends with every window a device created stored exactly once, or counted as
// dropped by that device's bounded outbox, and every device that closed cleanly shown offline,
// also after one more collector crash and restart.
//
// 50 devices in CI; the soak runs more: EDGEEXIT_SOAK_DEVICES=500 npx vitest run test/fleet/delivery.test.ts
// (README: "Delivery guarantees"). Loss figures are printed as one line per test.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, expect, it } from 'vitest';
import { openFleetStore } from '../../src/fleet/store.js';
import { FleetSimulator, loadSimProfile, readSentLedger } from '../../src/fleet/simulate.js';
import { MOSQUITTO, startBroker, type Broker } from '../telemetry/mqtt/broker.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { until as waitUntil, sleep } from '../support/wait.js';
import { kill9, spawnChild, type Proc } from './processes.js';

const DEVICES = Number(process.env.EDGEEXIT_SOAK_DEVICES ?? 50);
const BURST = 5_000;
const FLEET = 'e2e';
const FAST = { initialMs: 100, maxMs: 500, factor: 2, jitter: 0.5 };
const CHILD_ID = 'child-0001';
const TIMEOUT = 60_000 + DEVICES * 400;

const until = (pred: () => boolean | Promise<boolean>, what: string, ms = 60_000): Promise<void> => waitUntil(pred, what, ms, 50);

/** The collector in a child process, with a fixed client id so a restart resumes its session. */
async function collectorChild(url: string, db: string): Promise<Proc> {
  const c = spawnChild('test/fleet/collector-child.ts', [url, db, 'e2e-collector']);
  await until(() => c.stdout().includes('ready') || c.proc.exitCode !== null, 'the collector child');
  if (!c.stdout().includes('ready')) throw new Error(`collector child failed: ${c.stderr()}`);
  return c;
}

const children: Proc[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) await kill9(c);
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

interface Scenario {
  persistence: boolean;
  /** Also run one device in its own process and SIGKILL it mid-stream. */
  deviceKill: boolean;
  /** Each simulated device's outbox bound, in windows. */
  maxOutbox: number;
}

const PER_DEVICE = Math.ceil(BURST / DEVICES);

async function run(s: Scenario): Promise<void> {
  const dir = await tempDir('delivery');
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  // The collector's queue on the broker holds the backlog of a whole fleet (README: collector deployment).
  const broker: Broker = await startBroker({ persistence: s.persistence, config: ['max_queued_messages 100000'] });
  cleanups.push(() => broker.dispose());
  const db = path.join(dir, 'fleet.db');
  let collector = await collectorChild(broker.url, db);
  children.push(collector);
  const restartCollector = async () => {
    collector = await collectorChild(broker.url, db);
    children.push(collector);
  };

  const sim = await FleetSimulator.start({
    url: broker.url, devices: DEVICES, fleet: FLEET, stateDir: path.join(dir, 'sim'), rate: 2, profile: await loadSimProfile('rpi4'),
    backoff: FAST, seed: 11, ackTimeoutMs: 1_500, maxOutbox: s.maxOutbox,
  });
  cleanups.push(() => sim.close());
  await until(() => sim.progress().connected === DEVICES, 'every device connected');
  const childDir = path.join(dir, 'child');
  const deviceArgs = ['--devices', '1', '--prefix', 'child', '--fleet', FLEET, '--broker', broker.url, '--state-dir', childDir, '--rate', '10', '--progress', '0', '--drain-timeout', '30', '--json'];
  const childSent = () => readSentLedger(path.join(childDir, CHILD_ID)).size;
  let device: Proc | undefined;
  if (s.deviceKill) {
    device = spawnChild('test/fleet/simulate-child.ts', deviceArgs);
    children.push(device);
    await until(() => childSent() >= 5, 'the device process sending');
  }
  await sleep(1_000);

  // 1. The collector dies mid-batch and comes back (same client id: the broker queued for it).
  await kill9(collector);
  await sleep(1_000);
  await restartCollector();

  // 2. A device process dies with windows in its outbox, and restarts on the same state.
  if (device) {
    await kill9(device);
    const before = childSent();
    device = spawnChild('test/fleet/simulate-child.ts', deviceArgs);
    children.push(device);
    await until(() => childSent() > before + 5, 'the restarted device sending');
  }

  // 3. The broker dies and comes back; devices keep producing into their outboxes.
  await broker.stop('SIGKILL');
  await sleep(1_000);
  await broker.start();
  await until(() => sim.progress().connected === DEVICES, 'every device reconnected');

  // 4. Both die at once.
  await Promise.all([kill9(collector), broker.stop('SIGKILL')]);
  await sleep(1_000);
  await broker.start();
  await restartCollector();

  // 5. A backlog of 5,000 windows across the fleet at once.
  await sim.burst(PER_DEVICE);

  await sim.stopGenerating();
  if (device) {
    device.proc.kill('SIGINT');
    expect(await device.exited, device.stderr()).toBe(0);
    expect((JSON.parse(device.stdout()) as { totals: { queued: number } }).totals.queued).toBe(0);
  }
  expect(await sim.drained(TIMEOUT), 'every outbox emptied by collector acks').toBe(true);
  const dropped = new Map(sim.devices.map((d) => [d.id, d.publisher.getStats().dropped]));
  const sent = new Map(sim.devices.map((d) => [d.id, new Set(readSentLedger(d.stateDir).keys())]));
  if (s.deviceKill) {
    sent.set(CHILD_ID, new Set(readSentLedger(path.join(childDir, CHILD_ID)).keys()));
    dropped.set(CHILD_ID, 0);
  }
  await sim.close(); // clean deaths

  // Clean deaths delivered: offline, and still offline after the collector crashes once more.
  const offline = async () => {
    const store = openFleetStore(db, { mustExist: true });
    try {
      return (await store.devices()).filter(async (d) => !d.online).length;
    } finally {
      await store.close();
    }
  };
  await until(async () => await offline() === sent.size, 'every device offline');
  await kill9(collector);
  await restartCollector();
  await sleep(500);
  expect(await offline()).toBe(sent.size);
  collector.proc.kill('SIGINT');
  await collector.exited;

  // Every window stored exactly once, or dropped by its device's bounded outbox.
  const rows = new Database(db, { readonly: true });
  const stored = new Map<string, number[]>();
  for (const r of rows.prepare('SELECT device, id FROM windows').all() as { device: string; id: number }[]) stored.set(r.device, [...(stored.get(r.device) ?? []), r.id]);
  const totals = new Map((rows.prepare('SELECT device, windows FROM device_totals').all() as { device: string; windows: number }[]).map((t) => [t.device, t.windows]));
  const reported = new Map((rows.prepare('SELECT device, MAX(dropped_windows) AS n FROM windows GROUP BY device').all() as { device: string; n: number }[]).map((r) => [r.device, r.n]));
  const counters = Object.fromEntries((rows.prepare('SELECT name, value FROM counters').all() as { name: string; value: number }[]).map((c) => [c.name, c.value]));
  rows.close();
  const problems: string[] = [];
  let created = 0;
  let storedN = 0;
  let droppedN = 0;
  let lost = 0;
  let unstored = 0;
  for (const [dev, ids] of sent) {
    const got = stored.get(dev) ?? [];
    const foreign = got.filter((id) => !ids.has(id));
    const missing = ids.size - (got.length - foreign.length);
    created += ids.size;
    storedN += got.length;
    droppedN += dropped.get(dev)!;
    if (foreign.length > 0) problems.push(`${dev}: stored ids it never created: ${foreign.join(',')}`);
    // A window can be dropped while its ack is on the way: counted dropped, and stored too. So
    // each window not stored must be one of the drops, not the other way round.
    if (missing > dropped.get(dev)!) problems.push(`${dev}: ${missing} windows not stored, but its outbox dropped only ${dropped.get(dev)}`);
    lost += Math.max(0, missing - dropped.get(dev)!);
    unstored += missing;
    // Windows carry the drops before them: the last ones enqueued report all but their own.
    const rep = reported.get(dev) ?? 0;
    if (rep > dropped.get(dev)! || rep < dropped.get(dev)! - 1) problems.push(`${dev}: windows report ${rep} dropped, its outbox dropped ${dropped.get(dev)}`);
    if ((totals.get(dev) ?? 0) !== got.length) problems.push(`${dev}: totals count ${totals.get(dev)} windows for ${got.length} rows`);
  }
  console.log(
    `delivery (persistence ${s.persistence ? 'on' : 'off'}, ${sent.size} devices): created ${created}, stored ${storedN}, not stored ${unstored} (outboxes counted ${droppedN} dropped), lost ${lost}, stored twice 0 (resends de-duplicated: ${counters.duplicates ?? 0})`,
  );
  expect(problems).toEqual([]);
  expect(lost).toBe(0);
  expect([...stored.keys()].sort()).toEqual([...sent.keys()].sort());
  expect([counters.malformed, counters.invalid, counters.oversized]).toEqual([undefined, undefined, undefined]);
  // The run did what it says: the backlog is in, and (with outboxes that keep everything) windows
  // really were sent twice.
  expect(created).toBeGreaterThanOrEqual(BURST);
  if (s.maxOutbox >= PER_DEVICE * 10) expect(counters.duplicates ?? 0).toBeGreaterThan(0);
  if (s.maxOutbox < PER_DEVICE) expect(droppedN).toBeGreaterThan(0);
}

MOSQUITTO.describe('end-to-end delivery', () => {
  it(`collector, broker (persistence on), both, and a device process killed -9, plus a ${BURST}-window burst: nothing lost, nothing twice`, { timeout: TIMEOUT * 2 }, () =>
    run({ persistence: true, deviceKill: true, maxOutbox: 100_000 }),
  );

  // Outboxes smaller than the burst: the oldest windows are dropped, counted and reported.
  it('the same with a broker that keeps nothing across a restart (persistence off), and outboxes smaller than the burst', { timeout: TIMEOUT * 2 }, () =>
    run({ persistence: false, deviceKill: false, maxOutbox: Math.max(20, Math.floor(PER_DEVICE * 0.6)) }),
  );
});
