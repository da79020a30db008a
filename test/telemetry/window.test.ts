// The window aggregator's maths against hand-computed values: nearest-rank quantiles, the exit
// histogram, per-stage quantiles over the samples that ran the stage, accuracy, joules and mean
// watts from a RAPL counter in a fixture sysfs tree (and from the power model with the runtime's
// busy time), closing by count, empty windows not sent, and the hottest thermal zone.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PowerModelMeter, RaplMeter } from '../../src/telemetry/energy/index.js';
import type { WindowInput } from '../../src/telemetry/mqtt/publisher.js';
import { validateMetricsBody } from '../../src/telemetry/payloads.js';
import { BusyTime, WindowAggregator, nearestRank, thermalReader, type InferenceRecord } from '../../src/telemetry/window.js';
import { InputError } from '../../src/util/errors.js';
import { fakeClock, tempTree } from './helpers.js';

const RAPL_FILE = 'sys/class/powercap/intel-rapl:0/energy_uj';
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => fsp.rm(d, { recursive: true, force: true })));
});

async function raplRoot(): Promise<string> {
  const root = await tempTree('rapl');
  dirs.push(root);
  return root;
}

const setMicrojoules = (root: string, uj: number) => fsp.writeFile(path.join(root, RAPL_FILE), `${uj}\n`);

describe('nearestRank', () => {
  const asc = (n: number) => Float64Array.from({ length: n }, (_, i) => i + 1);
  it('is the ⌈q·n⌉-th smallest sample', () => {
    // n = 10: ranks ⌈5⌉ = 5, ⌈9.5⌉ = 10, ⌈9.9⌉ = 10.
    expect([0.5, 0.95, 0.99].map((q) => nearestRank(asc(10), 10, q))).toEqual([5, 10, 10]);
    // n = 20: 0.95 × 20 is exactly 19 (no rounding up to 20), 0.99 × 20 = 19.8 → 20.
    expect([0.5, 0.95, 0.99].map((q) => nearestRank(asc(20), 20, q))).toEqual([10, 19, 20]);
    // n = 200: ranks 100, 190, 198.
    expect([0.5, 0.95, 0.99].map((q) => nearestRank(asc(200), 200, q))).toEqual([100, 190, 198]);
    expect(nearestRank(asc(1), 1, 0.99)).toBe(1);
    expect(nearestRank(asc(3), 0, 0.5)).toBe(0);
  });
});

describe('WindowAggregator', () => {
  it('computes count, histogram, quantiles end to end and per stage, accuracy and RAPL joules', async () => {
    const root = await raplRoot();
    const mono = fakeClock(0);
    let wall = 1_700_000_000_000;
    await setMicrojoules(root, 100_000_000); // 100 J
    const windows: WindowInput[] = [];
    const agg = await WindowAggregator.start({
      exits: 3,
      stages: 3,
      meter: new RaplMeter({ root, now: mono.now }),
      onWindow: (w) => void windows.push(w),
      wallClock: () => wall,
      timer: false,
    });
    // 20 inferences, end-to-end latencies 1…20 ms in a scrambled order; inference i leaves at
    // exit i % 3 (exit 0: 7, exit 1: 7, exit 2: 6) and runs stages 0…exit with stage s taking
    // latency × (s + 1) / 10. The first 10 are labelled, 6 of them correct.
    const order = [7, 3, 18, 1, 12, 20, 5, 9, 14, 2, 16, 11, 4, 19, 8, 13, 6, 17, 10, 15];
    const recs: InferenceRecord[] = order.map((lat, i) => ({
      exit: i % 3,
      latencyMs: lat,
      stageLatencyMs: Array.from({ length: (i % 3) + 1 }, (_, s) => (lat * (s + 1)) / 10),
      ...(i < 10 ? { correct: i < 6 } : {}),
    }));
    for (const r of recs) agg.add(r);
    expect(agg.pending).toBe(20);
    mono.advance(5_000);
    wall += 5_000;
    await setMicrojoules(root, 102_500_000); // +2.5 J over 5 s
    await agg.flush();

    expect(windows).toHaveLength(1);
    const w = windows[0]!;
    expect(w.windowStart).toBe(1_700_000_000_000);
    expect(w.windowEnd).toBe(1_700_000_005_000);
    expect(w.count).toBe(20);
    expect(w.exitHistogram).toEqual([7, 7, 6]);
    expect(w.latencyMs.endToEnd).toEqual({ p50: 10, p95: 19, p99: 20 });
    // Stage 0 ran for all 20 (latency/10): 1.0, 1.9, 2.0.
    expect(w.latencyMs.stages[0]).toEqual({ p50: 1, p95: 1.9, p99: 2 });
    // Stage 1 ran for the 13 with exit ≥ 1 (i % 3 ≠ 0), lat × 0.2: lats sorted 3, 6, 8, 9, 11, 12,
    // 14, 15, 16, 17, 18, 19, 20; ranks ⌈6.5⌉ = 7 → 14, ⌈12.35⌉ = ⌈12.87⌉ = 13 → 20.
    expect(w.latencyMs.stages[1]).toEqual({ p50: 2.8, p95: 4, p99: 4 });
    // Stage 2 ran for the 6 with exit 2: lats at i = 2, 5, 8, 11, 14, 17 → 18, 20, 14, 11, 8, 17.
    // sorted 8, 11, 14, 17, 18, 20; ranks 3, 6, 6; × 0.3.
    expect(w.latencyMs.stages[2]).toEqual({ p50: 4.2, p95: 6, p99: 6 });
    expect(w.accuracy).toEqual({ correct: 6, labelled: 10 });
    expect(w.energy).toEqual({ joules: 2.5, meanWatts: 0.5, source: 'sensor', meter: 'rapl' });
    expect(w.temperatureC).toBeUndefined();
    // What the publisher will validate.
    expect(() => validateMetricsBody({ ...w, device: 'pi-1', droppedWindows: 0 })).not.toThrow();
    expect(agg.pending).toBe(0);
  });

  it('sends no empty window and does not charge the idle time to the next one', async () => {
    const root = await raplRoot();
    const mono = fakeClock(0);
    await setMicrojoules(root, 0);
    const windows: WindowInput[] = [];
    const agg = await WindowAggregator.start({ exits: 2, stages: 2, meter: new RaplMeter({ root, now: mono.now }), onWindow: (w) => void windows.push(w), timer: false });
    mono.advance(10_000);
    await setMicrojoules(root, 30_000_000); // 30 J while idle
    await agg.flush();
    expect(windows).toHaveLength(0);

    agg.add({ exit: 1, latencyMs: 2, stageLatencyMs: [1, 1] });
    mono.advance(2_000);
    await setMicrojoules(root, 34_000_000);
    await agg.close();
    expect(windows).toHaveLength(1);
    expect(windows[0]!.energy.joules).toBe(4);
    expect(windows[0]!.energy.meanWatts).toBe(2);
    expect(windows[0]!.exitHistogram).toEqual([0, 1]);
    expect(windows[0]!.accuracy).toBeUndefined();
  });

  it('closes a window by count and adds the RAPL wrap range when the counter wraps', async () => {
    const root = await raplRoot();
    const mono = fakeClock(0);
    // max_energy_range_uj in the fixture is 262143328850.
    await setMicrojoules(root, 262_143_328_850 - 1_000_000);
    const windows: WindowInput[] = [];
    const agg = await WindowAggregator.start({ exits: 1, stages: 1, maxCount: 5, meter: new RaplMeter({ root, now: mono.now }), onWindow: (w) => void windows.push(w), timer: false });
    mono.advance(1_000);
    await setMicrojoules(root, 2_000_000);
    for (let i = 1; i <= 12; i++) agg.add({ exit: 0, latencyMs: i, stageLatencyMs: [i] });
    await agg.close();
    expect(windows.map((w) => w.count)).toEqual([5, 5, 2]);
    expect(windows.map((w) => w.latencyMs.endToEnd.p50)).toEqual([3, 8, 11]);
    // Wrapped from range − 1 J to 2 J: 3 J, all in the first window.
    expect(windows.map((w) => w.energy.joules)).toEqual([3, 0, 0]);
  });

  it('closes by time from add() when the loop never yields to the timer (every 64th inference looks at the clock)', async () => {
    let wall = 0;
    const windows: WindowInput[] = [];
    const agg = await WindowAggregator.start({ exits: 1, stages: 1, windowMs: 1_000, meter: new PowerModelMeter({ power: { idleWatts: 1, busyWatts: 2 } }), onWindow: (w) => void windows.push(w), wallClock: () => wall, timer: false });
    for (let i = 1; i <= 63; i++) agg.add({ exit: 0, latencyMs: 1, stageLatencyMs: [1] });
    wall = 1_000; // the window is due, but the clock is next looked at on the 64th
    expect(agg.pending).toBe(63);
    agg.add({ exit: 0, latencyMs: 1, stageLatencyMs: [1] });
    expect(agg.pending).toBe(0);
    for (let i = 0; i < 10; i++) agg.add({ exit: 0, latencyMs: 1, stageLatencyMs: [1] });
    await agg.close();
    expect(windows.map((w) => [w.windowStart, w.windowEnd, w.count])).toEqual([
      [0, 1_000, 64],
      [1_000, 1_000, 10],
    ]);
  });

  it('charges the power model with the runtime\'s busy time (idle 2 W, busy 6 W, 50 % busy → 4 W)', async () => {
    const clock = fakeClock(0);
    const busy = new BusyTime(clock.now);
    const meter = new PowerModelMeter({ power: { idleWatts: 2, busyWatts: 6 }, now: clock.now, utilisation: () => busy.utilisation() });
    const windows: WindowInput[] = [];
    const agg = await WindowAggregator.start({ exits: 3, stages: 3, meter, busy, onWindow: (w) => void windows.push(w), timer: false });
    clock.advance(1_000);
    for (let i = 0; i < 5; i++) agg.add({ exit: 0, latencyMs: 100, stageLatencyMs: [100] });
    expect(busy.totalMs).toBe(500);
    await agg.flush();
    expect(windows[0]!.energy).toEqual({ joules: 4, meanWatts: 4, source: 'model', meter: 'model' });
    // Stages no inference reached report zeros.
    expect(windows[0]!.latencyMs.stages.slice(1)).toEqual([{ p50: 0, p95: 0, p99: 0 }, { p50: 0, p95: 0, p99: 0 }]);
  });

  it('refuses an exit outside the histogram, naming the range, and any add after close', async () => {
    const agg = await WindowAggregator.start({ exits: 2, stages: 2, meter: new PowerModelMeter({ power: { idleWatts: 1, busyWatts: 2 } }), onWindow: () => undefined, timer: false });
    expect(() => agg.add({ exit: 2, latencyMs: 1, stageLatencyMs: [1] })).toThrow(InputError);
    expect(() => agg.add({ exit: 2, latencyMs: 1, stageLatencyMs: [1] })).toThrow(/expected 0…1, got 2/);
    await agg.close();
    expect(() => agg.add({ exit: 0, latencyMs: 1, stageLatencyMs: [1] })).toThrow(/closed/);
  });
});

describe('thermalReader', () => {
  it('reads the hottest zone in °C from a fixture sysfs tree, skipping zones without a readable temp', async () => {
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-thermal-'));
    dirs.push(root);
    const zone = (k: number) => path.join(root, 'sys/class/thermal', `thermal_zone${k}`);
    for (const k of [0, 1, 2, 3]) await fsp.mkdir(zone(k), { recursive: true });
    await fsp.writeFile(path.join(zone(0), 'temp'), '45000\n');
    await fsp.writeFile(path.join(zone(1), 'temp'), '51500\n');
    await fsp.writeFile(path.join(zone(2), 'temp'), 'garbage\n');
    // zone 3 has no temp file; cooling_device entries are not zones.
    await fsp.mkdir(path.join(root, 'sys/class/thermal/cooling_device0'), { recursive: true });
    await fsp.writeFile(path.join(root, 'sys/class/thermal/cooling_device0/temp'), '99000\n');
    expect(await thermalReader(root)()).toBe(51.5);
  });

  it('is undefined where there are no thermal zones', async () => {
    expect(await thermalReader(path.join(os.tmpdir(), 'edgeexit-no-such-root'))()).toBeUndefined();
  });

  it('goes into the window', async () => {
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-thermal-'));
    dirs.push(root);
    await fsp.mkdir(path.join(root, 'sys/class/thermal/thermal_zone0'), { recursive: true });
    await fsp.writeFile(path.join(root, 'sys/class/thermal/thermal_zone0/temp'), '62125\n');
    const windows: WindowInput[] = [];
    const agg = await WindowAggregator.start({ exits: 1, stages: 1, meter: new PowerModelMeter({ power: { idleWatts: 1, busyWatts: 2 } }), onWindow: (w) => void windows.push(w), temperature: thermalReader(root), timer: false });
    agg.add({ exit: 0, latencyMs: 1, stageLatencyMs: [1] });
    await agg.close();
    expect(windows[0]!.temperatureC).toBe(62.125);
  });
});
