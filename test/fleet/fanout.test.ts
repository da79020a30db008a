// Several collectors in one MQTT 5 shared-subscription group ($share/edgeexit-collectors/…)
// through a real Mosquitto, 1,000 simulated devices on loopback, one store that all collectors
// write at once. Mid-burst one collector is killed -9 with a batch received and not committed;
// the others carry on, and every device's outbox empties on their acks alone (windows the dead
// collector held, or that the broker keeps handing its share, are resent by their devices after
// the ack timeout and land on a live collector). Then the dead collector comes back under its
// client id and the broker redelivers its share: every one a duplicate, de-duplicated on
// (device, id). After both steps each device's stored ids and running totals equal what its
// ledger says it created: nothing lost, nothing counted twice.
//
// Run against a SQLite file in WAL mode shared by the collector processes, and against PostgreSQL
// (a throwaway server the test starts, test/support/postgres.ts). 1,000 devices
// (EDGEEXIT_FANOUT_DEVICES to change). One line per store is printed with the figures.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import type { FleetStore } from '../../src/fleet/fleet-store.js';
import { FleetSimulator, ledgerTotals, loadSimProfile, readSentLedger } from '../../src/fleet/simulate.js';
import { openStore } from '../../src/fleet/open.js';
import { openFleetStore } from '../../src/fleet/store.js';
import { MOSQUITTO, startBroker } from '../telemetry/mqtt/broker.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { startPostgres } from '../support/postgres.js';
import { POSTGRES } from '../support/require.js';
import { until as waitUntil, sleep } from '../support/wait.js';
import { kill9, spawnChild, type Proc } from './processes.js';

const DEVICES = Number(process.env.EDGEEXIT_FANOUT_DEVICES ?? 1000);
const COLLECTORS = 3;
const FLEET = 'fanout';
const FAST = { initialMs: 100, maxMs: 1_000, factor: 2, jitter: 0.5 };
const BURST_PER_DEVICE = 5;
const TIMEOUT = 120_000 + DEVICES * 200;

const until = (pred: () => boolean | Promise<boolean>, what: string, ms = 120_000): Promise<void> => waitUntil(pred, what, ms, 50);

interface CollectorProc extends Proc {
  clientId: string;
  /** Messages it committed so far (its last "handled" line). */
  handled(): number;
}

async function collectorChild(url: string, db: string, clientId: string): Promise<CollectorProc> {
  const p = spawnChild('test/fleet/fanout-child.ts', [url, db, clientId, FLEET]);
  const c: CollectorProc = { ...p, clientId, handled: () => Number(/handled (\d+)\n$/.exec(p.stdout().slice(-40))?.[1] ?? 0) };
  await until(() => p.stdout().includes('ready') || p.proc.exitCode !== null, `collector ${clientId} ready`);
  if (!p.stdout().includes('ready')) throw new Error(`collector ${clientId} failed: ${p.stderr()}`);
  // MQTT 5, so the subscription is the shared one (a 3.1.1 fallback would give every collector every message).
  expect(p.stdout()).toContain('ready 5');
  return c;
}

/** Polls until `f()` gave the same value twice `quietMs` apart. */
async function settled(f: () => number, what: string, quietMs = 2_000): Promise<number> {
  let last = -1;
  await until(async () => {
    const now = f();
    if (now === last) return true;
    last = now;
    await sleep(quietMs);
    return false;
  }, what);
  return last;
}

const children: Proc[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) await kill9(c);
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/**
 * What differs between the devices' ledgers and the store, per device: ids stored that were never
 * created or created and not stored, and running totals (windows, inferences, exits, joules).
 */
async function mismatches(store: FleetStore, sim: FleetSimulator): Promise<{ problems: string[]; created: number; stored: number }> {
  const totals = new Map((await store.totals()).map((t) => [t.device, t]));
  const problems: string[] = [];
  let created = 0;
  let stored = 0;
  for (const d of sim.devices) {
    const ledger = readSentLedger(d.stateDir);
    const sent = ledgerTotals(ledger);
    const ids = (await store.latestWindows(d.id, ledger.size + 1_000)).map((w) => w.id);
    created += ledger.size;
    stored += ids.length;
    const missing = [...ledger.keys()].filter((id) => !ids.includes(id));
    const extra = ids.filter((id) => !ledger.has(id));
    if (missing.length || extra.length || new Set(ids).size !== ids.length) problems.push(`${d.id}: missing ${missing.join(',') || 'none'}, never created ${extra.join(',') || 'none'}, rows ${ids.length} for ${new Set(ids).size} ids`);
    const t = totals.get(d.id);
    if (!t || t.windows !== sent.windows || t.count !== sent.count || JSON.stringify(t.exits) !== JSON.stringify(sent.exits) || Math.abs(t.joules - sent.joules) > 1e-6 * Math.max(1, sent.joules))
      problems.push(`${d.id}: created ${JSON.stringify(sent)}, totals ${JSON.stringify(t ?? null)}`);
  }
  return { problems, created, stored };
}

async function run(label: string, db: string, openStore: () => Promise<FleetStore>): Promise<void> {
  const dir = await tempDir('fanout');
  cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
  // Room for the dead collector's share while it is away (README: collector deployment).
  const broker = await startBroker({ config: ['max_queued_messages 100000'] });
  cleanups.push(() => broker.dispose());
  const ids = Array.from({ length: COLLECTORS }, (_, i) => `fanout-collector-${i + 1}`);
  // Started together, as a service manager would: they open (and, new, migrate) the store at once.
  const collectors = await Promise.all(ids.map((id) => collectorChild(broker.url, db, id)));
  children.push(...collectors);

  const sim = await FleetSimulator.start({
    url: broker.url, devices: DEVICES, fleet: FLEET, stateDir: path.join(dir, 'sim'), rate: 0.5, profile: await loadSimProfile('rpi4'),
    backoff: FAST, seed: 15, ackTimeoutMs: 3_000,
  });
  cleanups.push(() => sim.close());
  await until(() => sim.progress().connected === DEVICES, 'every device connected');
  // The group splits the load: every collector commits a share.
  await until(() => collectors.every((c) => c.handled() > 0), 'every collector handling its share');

  // A backlog across the whole fleet; the victim dies once a fifth of it has been handled.
  const victim = collectors[1]!;
  const survivors = collectors.filter((c) => c !== victim);
  const handledAll = () => collectors.reduce((a, c) => a + c.handled(), 0);
  const before = handledAll();
  await sim.burst(BURST_PER_DEVICE);
  await until(() => handledAll() >= before + (DEVICES * BURST_PER_DEVICE) / 5, 'a fifth of the burst handled');
  await kill9(victim);
  const victimHandled = victim.handled();
  const survivorsAtKill = survivors.reduce((a, c) => a + c.handled(), 0);

  // The others carry on: windows keep being generated and every outbox empties on their acks.
  await sleep(3_000);
  await sim.stopGenerating();
  expect(await sim.drained(TIMEOUT), 'every outbox emptied by the surviving collectors').toBe(true);
  expect(survivors.reduce((a, c) => a + c.handled(), 0)).toBeGreaterThan(survivorsAtKill);
  let store = await openStore();
  const alive = await mismatches(store, sim);
  await store.close();
  expect(alive.problems.slice(0, 10), 'with the victim still down').toEqual([]);

  // The dead collector returns under its client id; the broker hands it the share it kept.
  const back = await collectorChild(broker.url, db, victim.clientId);
  children.push(back);
  const redelivered = await settled(() => back.handled(), 'the returned collector idle');
  const after = await settled(() => survivors.reduce((a, c) => a + c.handled(), 0) + back.handled(), 'every collector idle');
  for (const c of [...survivors, back]) {
    c.proc.kill('SIGINT');
    expect(await c.exited, c.stderr()).toBe(0);
  }
  store = await openStore();
  const final = await mismatches(store, sim);
  const counters = await store.counters();
  await store.close();
  console.log(
    `fanout (${label}, ${DEVICES} devices, ${COLLECTORS} collectors, one killed -9): created ${final.created}, stored ${final.stored}, lost 0, stored twice 0; ` +
      `victim committed ${victimHandled} before the kill, ${redelivered} redelivered to it on return; ${after + victimHandled} messages committed in all, ${counters.duplicates} duplicates de-duplicated; counted under round-robin reordering: gaps ${counters.gaps}, unknownDevice ${counters.unknownDevice}`,
  );
  expect(final.problems.slice(0, 10)).toEqual([]);
  expect(final.stored).toBe(final.created);
  expect([counters.malformed, counters.invalid, counters.oversized]).toEqual([0, 0, 0]);
  // The run did what it says: the victim had a share, the backlog is in, and resends happened.
  expect(victimHandled).toBeGreaterThan(0);
  expect(final.created).toBeGreaterThanOrEqual(DEVICES * BURST_PER_DEVICE);
  expect(counters.duplicates).toBeGreaterThan(0);
}

MOSQUITTO.describe('several collectors in one shared-subscription group', () => {
  it(`SQLite (one WAL file, ${COLLECTORS} collector processes): one killed -9 mid-burst, nothing lost, nothing twice`, { timeout: TIMEOUT * 2 }, async () => {
    const dir = await tempDir('fanout-db');
    cleanups.push(() => fsp.rm(dir, { recursive: true, force: true }));
    const db = path.join(dir, 'fleet.db');
    await run('SQLite WAL', db, async () => openFleetStore(db, { mustExist: true }));
  });

  POSTGRES.it(`PostgreSQL (${COLLECTORS} collector processes, one database): one killed -9 mid-burst, nothing lost, nothing twice`, async () => {
    const server = await startPostgres();
    cleanups.push(() => server.dispose());
    const url = await server.createDatabase('fanout');
    await run('PostgreSQL', url, () => openStore(url, { mustExist: true }));
  }, TIMEOUT * 2);
});
