// A fleet of N devices in every state the fleet-wide pages (fleet status, /api/table, /metrics,
// drift) tell apart, written into any FleetStore: several classes, fleets and manifests, a bundle
// update mid-life, online / offline / stale deaths, devices with no birth (unknown) or no window,
// windows with and without temperature and accuracy, zero-count windows, equal window ends, and
// drift baselines. Deterministic from the device number. No vitest import: the fleet-query
// benchmark (scripts/fleet-query-bench.ts) fills its stores with it too.
import type { FleetStore } from '../../src/fleet/fleet-store.js';
import type { Birth, MetricsWindow } from '../../src/telemetry/payloads.js';

export const FILL_T0 = 1_700_000_000_000;
const SHA = { a: 'a'.repeat(64), b: 'b'.repeat(64), c: 'c'.repeat(64) } as const;
const KINDS = 8;

export const deviceName = (i: number): string => `dev-${String(i).padStart(5, '0')}`;

function birth(device: string, fleet: string, bdSeq: number, profile: string, sha: string, version: string): Birth {
  return {
    device,
    fleet,
    bdSeq,
    seq: 0,
    profile,
    bundle: { name: 'mnist-exits', version, manifestSha256: sha, precision: 'int8', thresholds: [0.9, 0.8] },
    runtime: { edgeexit: '0.1.0', node: '20.0.0' },
    at: FILL_T0,
  };
}

interface WindowShape {
  exits: number;
  temperature: boolean;
  accuracy: boolean;
  /** Every inference count 0 (fleet status then takes the plain mean of p95). */
  empty?: boolean;
  dropped?: number;
}

function window(device: string, i: number, id: number, bdSeq: number, seq: number, end: number, s: WindowShape): MetricsWindow {
  const hist = s.empty ? Array.from({ length: s.exits }, () => 0) : Array.from({ length: s.exits }, (_, k) => 1 + ((i + id + k * 3) % 7));
  const count = hist.reduce((a, b) => a + b, 0);
  const p95 = 5 + ((i * 7 + id * 3) % 13) + 0.25 * (id % 4);
  return {
    id,
    bdSeq,
    seq,
    device,
    windowStart: end - 5_000,
    windowEnd: end,
    count,
    exitHistogram: hist,
    latencyMs: { endToEnd: { p50: p95 / 2, p95, p99: p95 * 1.5 }, stages: hist.map((_, k) => ({ p50: 1 + k, p95: 2 + k, p99: 3 + k })) },
    energy: { joules: 0.1 * count + (i % 3) * 0.01, meanWatts: 0.5 + (i % 5) * 0.125, source: 'model', meter: 'model' },
    ...(s.temperature ? { temperatureC: 40 + ((i + id) % 20) + 0.5 } : {}),
    ...(s.accuracy ? { accuracy: { correct: Math.min(count, id % 5), labelled: count } } : {}),
    droppedWindows: s.dropped ?? 0,
  };
}

/** Store `n` windows of one session, ids from `first`, ending every 5 s from `start`. */
async function windows(store: FleetStore, fleet: string, device: string, i: number, bdSeq: number, first: number, n: number, start: number, shape: (k: number) => WindowShape): Promise<void> {
  for (let k = 0; k < n; k++) await store.recordWindow(window(device, i, first + k, bdSeq, k, start + k * 5_000, shape(k)), fleet, start + k * 5_000);
}

async function fillDevice(store: FleetStore, i: number): Promise<void> {
  const device = deviceName(i);
  const start = FILL_T0 + (i % 17) * 1_000;
  const full = { exits: 3, temperature: true, accuracy: true };
  switch (i % KINDS) {
    case 0: // online, more windows than fleet status reads, everything reported
      await store.recordBirth(birth(device, 'lab', 1, 'rpi4', SHA.a, '1.2.0'), start);
      return windows(store, 'lab', device, i, 1, 1, 12, start, () => full);
    case 1: // clean shutdown: offline; no thermal reader, no labels
      await store.recordBirth(birth(device, 'lab', 1, 'rpi5', SHA.b, '1.3.0'), start);
      await windows(store, 'lab', device, i, 1, 1, 3, start, () => ({ exits: 3, temperature: false, accuracy: false }));
      return void (await store.recordDeath({ device, bdSeq: 1, clean: true }, start + 60_000, 'lab'));
    case 2: // bundle update: windows of two manifests; temperature only in the older windows
      await store.recordBirth(birth(device, 'lab', 1, 'jetson', SHA.a, '1.2.0'), start);
      await windows(store, 'lab', device, i, 1, 1, 4, start, () => full);
      await store.recordBirth(birth(device, 'lab', 2, 'jetson', SHA.c, '2.0.0'), start + 30_000);
      return windows(store, 'lab', device, i, 2, 10, 5, start + 30_000, () => ({ exits: 2, temperature: false, accuracy: true }));
    case 3: // no birth ever seen: an unknown device with windows, no class
      return windows(store, 'lab', device, i, 0, 1, 2 + (i % 3), start, (k) => ({ exits: 3, temperature: k === 0, accuracy: false }));
    case 4: // a birth and nothing else
      return void (await store.recordBirth(birth(device, 'lab', 1, 'rpi4', SHA.a, '1.2.0'), start));
    case 5: { // a stale death (older session) keeps it online; two windows end at the same moment
      await store.recordBirth(birth(device, 'lab', 2, 'rpi4', SHA.b, '1.3.0'), start);
      await windows(store, 'lab', device, i, 2, 1, 3, start, () => ({ exits: 2, temperature: true, accuracy: false }));
      await store.recordWindow(window(device, i, 7, 2, 3, start + 10_000, { exits: 2, temperature: true, accuracy: true }), 'lab', start + 10_000);
      return void (await store.recordDeath({ device, bdSeq: 1, clean: false }, start + 20_000, 'lab'));
    }
    case 6: // windows without inferences, and an outbox that dropped some
      await store.recordBirth(birth(device, 'lab', 1, 'rpi4', SHA.a, '1.2.0'), start);
      return windows(store, 'lab', device, i, 1, 1, 3, start, (k) => ({ exits: 3, temperature: true, accuracy: false, empty: true, dropped: k * 2 }));
    default: // another fleet
      await store.recordBirth(birth(device, 'yard', 1, 'rpi5', SHA.a, '1.2.0'), start);
      return windows(store, 'yard', device, i, 1, 1, 5 + (i % 4), start, () => full);
  }
}

/**
 * Fill `store` with `n` devices (`dev-00000` …), drift baselines and ingest counters.
 *
 * @example
 * ```ts
 * await fillFleet(openFleetStore(file), 200);
 * ```
 */
export async function fillFleet(store: FleetStore, n: number): Promise<void> {
  // In batches of devices, as the collector commits, so a PostgreSQL fill takes seconds.
  for (let from = 0; from < n; from += 50)
    await store.transaction(async () => {
      for (let i = from; i < Math.min(n, from + 50); i++) await fillDevice(store, i);
    });
  const base = { exitRates: [0.5, 0.3, 0.2], maxExitShiftPp: 10, maxLatencyRatio: 1.25, minWindows: 5, source: 'calibration.json', setAt: FILL_T0 };
  await store.setDriftBaseline({ ...base, fleet: 'lab', deviceClass: 'rpi4', manifestSha256: SHA.a, p95Ms: 8 });
  await store.setDriftBaseline({ ...base, fleet: 'lab', deviceClass: 'rpi5', p95Ms: 30 });
  await store.setDriftBaseline({ ...base, fleet: 'lab', deviceClass: 'jetson', p95Ms: null, manifestSha256: SHA.c });
  await store.setDriftBaseline({ ...base, fleet: 'yard', deviceClass: 'rpi5', p95Ms: 10, minWindows: 1000 });
  await store.bump('duplicates', 3);
  await store.bump('gaps', 2);
}
