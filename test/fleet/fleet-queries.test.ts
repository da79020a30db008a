// The fleet-wide pages (fleet status, /api/table, /metrics) read the store with a fixed number of
// queries, whatever the fleet's size, and say exactly what they said when they read it device by
// device. Both backends: a real SQLite file and a real PostgreSQL started by the test.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { renderFleetStatus } from '../../src/cli/commands/fleet.js';
import { classOf, driftFrom, type DeviceRecent } from '../../src/fleet/drift.js';
import type { FleetStore, WindowRow } from '../../src/fleet/fleet-store.js';
import { tableApi, type TableQuery } from '../../src/fleet/http.js';
import { renderMetrics } from '../../src/fleet/metrics.js';
import { openStore } from '../../src/fleet/open.js';
import { LATEST_WINDOWS, fleetStatus, type DeviceStatus, type FleetStatus } from '../../src/fleet/status.js';
import { openFleetStore } from '../../src/fleet/store.js';
import { startPostgres, type Postgres } from '../support/postgres.js';
import { POSTGRES } from '../support/require.js';
import { tempDir } from '../telemetry/mqtt/fixtures.js';
import { deviceName, fillFleet } from './fleet-fill.js';
import { storedCohort, WINDOWS_PER_DEVICE } from '../../src/fleet/rollout.js';
import { cohortStats } from '../../src/fleet/rollout-plan.js';
import { parseExposition, sampleValue } from './prom-parse.js';

/** `store` with every method call counted (each is one read or write of the database). */
function counting(store: FleetStore): { store: FleetStore; calls(): number } {
  let n = 0;
  const proxy = new Proxy(store, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver) as unknown;
      if (typeof v !== 'function' || key === 'close') return v;
      return (...args: unknown[]) => {
        n++;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: proxy, calls: () => n };
}

/**
 * `store` answering the fleet-wide reads the way the pages read before: latestWindows and
 * latestTemperature once per device. What the pages print from it is what they printed then.
 */
function perDevice(store: FleetStore): FleetStore {
  const recentWindows = async (limit: number): Promise<Map<string, WindowRow[]>> => {
    const out = new Map<string, WindowRow[]>();
    for (const d of await store.devices()) {
      const w = await store.latestWindows(d.device, limit);
      if (w.length) out.set(d.device, w);
    }
    return out;
  };
  const latestTemperatures = async (): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    for (const d of await store.devices()) {
      const t = await store.latestTemperature(d.device);
      if (t !== null) out.set(d.device, t);
    }
    return out;
  };
  return new Proxy(store, {
    get(target, key, receiver) {
      if (key === 'recentWindows') return recentWindows;
      if (key === 'latestTemperatures') return latestTemperatures;
      const v = Reflect.get(target, key, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** fleetStatus as it was written before the fleet-wide reads: two queries per device. */
async function fleetStatusPerDevice(store: FleetStore, latest = LATEST_WINDOWS): Promise<FleetStatus> {
  const totals = new Map((await store.totals()).map((t) => [t.device, t]));
  const recents: DeviceRecent[] = [];
  const devices = await Promise.all(
    (await store.devices()).map(async (d): Promise<DeviceStatus> => {
      const t = totals.get(d.device);
      const inferences = t?.count ?? 0;
      const labelled = t?.labelled ?? 0;
      const correct = t?.correct ?? 0;
      const [recent, temperatureC] = await Promise.all([store.latestWindows(d.device, latest), store.latestTemperature(d.device)]);
      recents.push({ row: d, recent });
      const recentCount = recent.reduce((a, w) => a + w.count, 0);
      let p95: number | null = null;
      if (recent.length)
        p95 = recentCount > 0 ? recent.reduce((a, w) => a + w.latencyP95 * w.count, 0) / recentCount : recent.reduce((a, w) => a + w.latencyP95, 0) / recent.length;
      return {
        device: d.device,
        fleet: d.fleet,
        deviceClass: classOf(d),
        online: d.online,
        bundle: d.birth ? { name: d.birth.bundle.name, version: d.birth.bundle.version } : null,
        bdSeq: d.bdSeq,
        windows: t?.windows ?? 0,
        inferences,
        joules: t?.joules ?? 0,
        p95LatencyMs: p95,
        exitRates: inferences > 0 ? (t?.exits ?? []).map((n) => n / inferences) : [],
        joulesPerInference: inferences > 0 ? (t?.joules ?? 0) / inferences : null,
        labelled,
        correct,
        accuracy: labelled > 0 ? correct / labelled : null,
        temperatureC,
        lastSeen: d.lastSeen,
      };
    }),
  );
  // Device order: the order the per-device reads settled in on SQLite, which answers at once.
  recents.sort((a, b) => (a.row.device < b.row.device ? -1 : a.row.device > b.row.device ? 1 : 0));
  return { devices, drift: driftFrom(await store.driftBaselines(), recents), counters: await store.counters() };
}

const NOW = 1_800_000_000_000;
const TABLE_QUERIES: TableQuery[] = [
  { sort: 'device', dir: 'asc', q: '', offset: 0, limit: 100 },
  { sort: 'p95', dir: 'desc', q: '', offset: 5, limit: 20 },
  { sort: 'device', dir: 'asc', q: 'rpi', online: true, offset: 0, limit: 50 },
  { sort: 'device', dir: 'desc', q: '', drifting: true, offset: 0, limit: 50 },
];

/** Every fleet-wide page, as the bytes a client receives. */
async function pages(store: FleetStore): Promise<string[]> {
  const s = await fleetStatus(store);
  return [
    JSON.stringify(s, null, 2),
    renderFleetStatus(s),
    ...(await Promise.all(TABLE_QUERIES.map(async (q) => JSON.stringify(await tableApi(store, q, NOW))))),
    await renderMetrics(store),
    await renderMetrics(store, { maxSeries: 400 }),
  ];
}

/** Store calls one call of each page makes. */
async function callsPerPage(store: FleetStore): Promise<{ status: number; table: number; metrics: number }> {
  const c = counting(store);
  const at = (): number => c.calls();
  const s0 = at();
  await fleetStatus(c.store);
  const t0 = at();
  await tableApi(c.store, TABLE_QUERIES[1]!, NOW);
  const m0 = at();
  await renderMetrics(c.store);
  return { status: t0 - s0, table: m0 - t0, metrics: at() - m0 };
}

function suite(name: string, open: () => Promise<{ store: FleetStore; cleanup(): Promise<void> }>): void {
  describe(`fleet-wide reads: ${name}`, () => {
    const opened: { cleanup(): Promise<void> }[] = [];
    afterEach(async () => {
      for (const o of opened.splice(0)) await o.cleanup();
    });
    async function filled(n: number): Promise<FleetStore> {
      const o = await open();
      opened.push(o);
      await fillFleet(o.store, n);
      return o.store;
    }

    it('recentWindows and latestTemperatures answer what latestWindows and latestTemperature answer per device', async () => {
      const store = await filled(40);
      const devices = await store.devices();
      for (const limit of [1, 3, LATEST_WINDOWS, 50]) {
        const all = await store.recentWindows(limit);
        const expected = new Map<string, WindowRow[]>();
        for (const d of devices) {
          const w = await store.latestWindows(d.device, limit);
          if (w.length) expected.set(d.device, w);
        }
        expect(Object.fromEntries(all)).toEqual(Object.fromEntries(expected));
      }
      const temps = new Map<string, number>();
      for (const d of devices) {
        const t = await store.latestTemperature(d.device);
        if (t !== null) temps.set(d.device, t);
      }
      expect(Object.fromEntries(await store.latestTemperatures())).toEqual(Object.fromEntries(temps));
      // The fleet has devices the reads must leave out or tell apart.
      expect(devices.length).toBe(40);
      expect(temps.size).toBeGreaterThan(10);
      expect(temps.size).toBeLessThan(devices.length);
      // Bundle update: the newest windows (manifest c) carry no temperature; an older one does.
      expect((await store.recentWindows(1)).get(deviceName(2))?.[0]?.manifestSha256).toBe('c'.repeat(64));
      expect(temps.get(deviceName(2))).toBeTypeOf('number');
      // Equal window ends: the larger id first, as latestWindows orders them.
      expect((await store.recentWindows(2)).get(deviceName(5))?.map((w) => w.id)).toEqual([7, 3]);
    });

    it('recentWindows for named devices (a rollout cohort) answers what latestWindows answers for each, and storedCohort what it computed device by device', async () => {
      const store = await filled(30);
      const names = [deviceName(2), deviceName(5), deviceName(5), deviceName(11), 'no-such-device', deviceName(29)];
      for (const limit of [1, LATEST_WINDOWS]) {
        const some = await store.recentWindows(limit, names);
        const expected = new Map<string, WindowRow[]>();
        for (const d of new Set(names)) {
          const w = await store.latestWindows(d, limit);
          if (w.length) expected.set(d, w);
        }
        expect(Object.fromEntries(some)).toEqual(Object.fromEntries(expected));
        expect(some.has('no-such-device')).toBe(false);
        expect(some.size).toBeGreaterThan(2);
      }
      expect((await store.recentWindows(3, [])).size).toBe(0);
      // storedCohort read each device's latest windows one by one before.
      const all = await store.recentWindows(WINDOWS_PER_DEVICE);
      const ends = [...all.values()].flat().map((w) => w.windowEnd).sort((a, b) => a - b);
      const since = ends[Math.floor(ends.length / 3)]!;
      const until = ends[Math.floor((2 * ends.length) / 3)]!;
      const cohort = names.map((device, i) => ({ device, since: i % 2 ? since : 0 }));
      const byDevice = new Map<string, WindowRow[]>();
      for (const d of cohort) byDevice.set(d.device, (await store.latestWindows(d.device, WINDOWS_PER_DEVICE)).filter((w) => w.windowStart >= d.since && w.windowEnd <= until));
      const stats = await storedCohort(store, cohort, until);
      expect(stats).toEqual(cohortStats(byDevice));
      expect(stats.windows).toBeGreaterThan(0);
    });

    it('fleet status, /api/table and /metrics print the same bytes as the per-device reads did', async () => {
      const store = await filled(120);
      const now = await pages(store);
      expect(now).toEqual(await pages(perDevice(store)));
      // fleetStatus as written before, beside the one now.
      const before = await fleetStatusPerDevice(store);
      expect(JSON.stringify(await fleetStatus(store), null, 2)).toBe(JSON.stringify(before, null, 2));
      // And against the store's own per-device answers, read here.
      const s = await fleetStatus(store);
      const fams = parseExposition(now.at(-2)!);
      for (const d of s.devices) {
        expect(d.temperatureC).toBe(await store.latestTemperature(d.device));
        const [latest] = await store.latestWindows(d.device, 1);
        const labels = { device: d.device, fleet: d.fleet };
        if (latest) expect(sampleValue(fams, 'edgeexit_inference_latency_seconds', { ...labels, quantile: '0.95' })).toBe(latest.latencyP95 / 1000);
        else expect(fams.get('edgeexit_inference_latency_seconds')!.samples.some((x) => x.labels.device === d.device)).toBe(false);
        if (d.temperatureC !== null) expect(sampleValue(fams, 'edgeexit_temperature_celsius', labels)).toBe(d.temperatureC);
      }
      // The states the fleet was built with all show.
      expect(new Set(s.devices.map((d) => d.online))).toEqual(new Set([true, false]));
      expect(s.devices.some((d) => d.deviceClass === null && d.windows > 0)).toBe(true);
      expect(s.devices.some((d) => d.p95LatencyMs === null)).toBe(true);
      expect(s.drift.map((c) => [c.fleet, c.deviceClass, c.enough])).toEqual([
        ['lab', 'jetson', true],
        ['lab', 'rpi4', true],
        ['lab', 'rpi5', true],
        ['yard', 'rpi5', false],
      ]);
      expect(s.drift.some((c) => c.drifting)).toBe(true);
      expect(sampleValue(fams, 'edgeexit_collector_devices_omitted')).toBe(0);
      expect(sampleValue(parseExposition(now.at(-1)!), 'edgeexit_collector_devices_omitted')).toBeGreaterThan(0);
    });

    it('reads the store the same number of times for 10 devices as for 200', async () => {
      const small = await callsPerPage(await filled(10));
      const large = await callsPerPage(await filled(200));
      expect(large).toEqual(small);
      expect(small.status).toBeLessThanOrEqual(8);
      expect(small.metrics).toBeLessThanOrEqual(10);
      // The counter sees per-device reads: the old way grows with the fleet.
      const old = counting(await filled(10));
      await fleetStatus(perDevice(old.store));
      expect(old.calls()).toBeGreaterThanOrEqual(2 * 10);
    });
  });
}

suite('SQLite', async () => {
  const dir = await tempDir('fleet-queries');
  const store = openFleetStore(path.join(dir, 'fleet.db'));
  return {
    store,
    async cleanup() {
      await store.close();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
});

POSTGRES.describe('PostgreSQL', () => {
  let server: Postgres;
  let n = 0;
  beforeAll(async () => {
    server = await startPostgres();
  }, 120_000);
  afterAll(async () => {
    await server?.dispose();
  });
  suite('PostgreSQL', async () => {
    const store = await openStore(await server.createDatabase(`queries_${++n}`));
    return { store, cleanup: () => store.close() };
  });
});
