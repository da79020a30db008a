// What telemetry costs the runtime (the budget: ≤ 2 % of inference time). Compiles the zoo
// model fmnist-branchy for rpi4 at int8 into a temp dir, then classifies the same calibration
// images over and over in one process, alternating rounds without and with telemetry (order
// swapped every pair so drift cancels): a round with telemetry records every prediction into one
// DeviceTelemetry session that lives through the whole benchmark — window aggregator with its timer, energy meter, thermal zones, the real MQTT publisher with its
// fsync'd outbox — publishing (MQTT 3.1.1) to an embedded aedes broker whose collector writes SQLite, all in
// this process, so the broker's and the collector's work is charged to the runtime too (a device
// would not carry them: an upper bound). Each round is timed from its first classify call to its
// last record() (once the session is connected and its birth stored), in wall time and in this process's CPU time (steadier on a shared machine);
// session start and close are once per run and reported apart. Also times add() alone in a tight
// loop and one window close.
//
//   npx vite-node scripts/telemetry-bench.ts [--images 2000] [--pairs 20] [--window 1s] [--json .bench/telemetry-bench.json]
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { compileModel } from '../src/compiler/index.js';
import { scanImageFolder } from '../src/data/imagefolder.js';
import { startCollector } from '../src/fleet/collector.js';
import { packageRoot } from '../src/devices/load.js';
import { loadBundle, type ClassifyOptions } from '../src/runtime/bundle-runner.js';
import { prepareBatch, type TensorData } from '../src/backends/image.js';
import { DeviceTelemetry, parseDurationMs } from '../src/telemetry/device.js';
import { PowerModelMeter } from '../src/telemetry/energy/model.js';
import { WindowAggregator, type InferenceRecord } from '../src/telemetry/window.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const nImages = Number(flag('images', '2000'));
const pairs = Number(flag('pairs', '20'));
const windowMs = parseDurationMs('--window', flag('window', '1s'));
const jsonOut = flag('json', '.bench/telemetry-bench.json');
const CHUNK = 64; // as `run --telemetry` classifies
const classifyOptions: ClassifyOptions = { batchSize: 1, thresholds: [0.9, 0.9] };

const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-telemetry-bench-'));
const log = (l: string) => process.stderr.write(l + '\n');
try {
  log(`compiling fmnist-branchy for rpi4 (int8) into ${work} …`);
  const bundle = path.join(work, 'bundle');
  await compileModel({ model: path.join(packageRoot(), 'models', 'fmnist-branchy', 'fmnist-branchy.onnx'), device: 'rpi4', precision: 'int8', out: bundle, calibrationLimit: 300 });
  const runner = await loadBundle(bundle, { threads: 1, allowUnsigned: true, onWarning: log }); // a bench bundle compiled here, unsigned
  const folder = await scanImageFolder(path.join(packageRoot(), 'calibration', 'fashion-mnist'));
  // Spread over the classes (the folder lists class by class).
  const step = Math.max(1, Math.floor(folder.items.length / nImages));
  const items = folder.items.filter((_, i) => i % step === 0).slice(0, nImages);
  const prepared = await prepareBatch(items.map((it) => it.file), runner.manifest.input.preprocess);
  const labels = prepared.indices.map((i) => items[i]!.label);
  const tensor = prepared.tensor;
  const per = tensor.data.length / tensor.dims[0]!;
  const n = tensor.dims[0]!;
  const chunks: TensorData[] = [];
  for (let s = 0; s < n; s += CHUNK) chunks.push({ data: tensor.data.subarray(s * per, Math.min(n, s + CHUNK) * per), dims: [Math.min(CHUNK, n - s), ...tensor.dims.slice(1)] });

  const collector = await startCollector({ dbFile: path.join(work, 'fleet.db'), port: 0, host: '127.0.0.1', onLog: () => undefined });
  let sessionMs = 0;
  let windows = 0;
  let acked = 0;
  let meter = '';

  interface Round {
    wallMs: number;
    /** CPU time of this process (all its threads): less disturbed by other processes on a shared machine than wall time. */
    cpuMs: number;
  }

  // One session for the whole benchmark, as on a device where the agent runs for days: its start
  // (profile, meter detection, manifest hash, connect, birth) and close are one-off costs, timed
  // apart. Rounds without telemetry leave it idle (its timer still ticks; empty windows are not sent).
  const s0 = performance.now();
  const t = await DeviceTelemetry.start({ url: collector.url, fleet: 'bench', device: 'bench-host', stateDir: path.join(work, 'state'), bundle, manifest: runner.manifest, thresholds: [0.9, 0.9], windowMs, protocolVersion: 4, onLog: log });
  const bd = () => t.publisher.getStats();
  while (!(bd().connected && (await collector.store.devices()).some((d) => d.device === 'bench-host' && d.online && d.bdSeq === bd().bdSeq))) await new Promise((res) => setTimeout(res, 5));
  sessionMs += performance.now() - s0;
  meter = t.meter.describe();

  async function round(withTelemetry: boolean): Promise<Round> {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let offset = 0;
    for (const c of chunks) {
      const res = await runner.classify(c, classifyOptions);
      if (withTelemetry) for (const it of res.items) if (it.ok) t.record(it, it.classIndex === labels[offset + it.index]);
      offset += c.dims[0]!;
      // Sessions run synchronously; `run` and the agent yield to the event loop between chunks while
      // sharp decodes the next images, which is when timers and the publisher get their turn.
      await new Promise<void>((r) => setImmediate(r));
    }
    const wallMs = performance.now() - t0;
    const cu = process.cpuUsage(c0);
    return { wallMs, cpuMs: (cu.user + cu.system) / 1000 };
  }

  log(`warm-up, then ${pairs} pairs of rounds over ${n} images (batch 1, 1 thread, thresholds 0.9, 0.9, windows of ${windowMs} ms) …`);
  await round(false);
  await round(true);
  const off: Round[] = [];
  const on: Round[] = [];
  for (let p = 0; p < pairs; p++) {
    if (p % 2 === 0) {
      off.push(await round(false));
      on.push(await round(true));
    } else {
      on.push(await round(true));
      off.push(await round(false));
    }
  }
  const c0 = performance.now();
  const sum = await t.close(5_000);
  sessionMs += performance.now() - c0;
  windows = sum.windows;
  acked = sum.acked;
  const deadline = Date.now() + 10_000;
  const stored = async () => (await collector.store.totals()).reduce((a, x) => a + x.count, 0);
  while ((await stored()) < (pairs + 1) * n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const storedCount = await stored();
  const sample = (await runner.classify(chunks[0]!, classifyOptions)).items.filter((it) => it.ok) as InferenceRecord[];

  // The whole cost of one window, measured apart from inference (so the machine's noise does not
  // swamp it): on a connected session, record 2,000 predictions, then flush (snapshot, meter,
  // thermal zones, validation, outbox append + fsync) and wait for the broker's PUBACK and the
  // outbox ack (+ fsync). CPU time of this process, so it includes the in-process broker and
  // collector storing the window (an upper bound for a device).
  const wt = await DeviceTelemetry.start({ url: collector.url, fleet: 'bench', device: 'bench-window', stateDir: path.join(work, 'state-window'), bundle, manifest: runner.manifest, windowMs: 3_600_000, maxCount: 100_000, protocolVersion: 4, onLog: () => undefined });
  while (!wt.publisher.getStats().connected) await new Promise((res) => setTimeout(res, 5));
  const winCpu: number[] = [];
  const winWall: number[] = [];
  for (let k = 0; k < 25; k++) {
    for (let i = 0; i < 2000; i++) wt.record(sample[i % sample.length]!);
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    await wt.flush();
    await wt.publisher.drained();
    const cu = process.cpuUsage(c0);
    winWall.push(performance.now() - w0);
    if (k >= 5) winCpu.push((cu.user + cu.system) / 1000); // the first few warm the JIT
  }
  await wt.close(5_000);
  await collector.close();
  await runner.close();

  // add() alone, in tight loops over real predictions into default-sized buffers (10,000), each
  // loop one inference short of a full window so no window close (sort) falls inside the timing.
  const model = () => new PowerModelMeter({ power: { idleWatts: 2.7, busyWatts: 6.4 } });
  const agg = await WindowAggregator.start({ exits: 3, stages: 3, meter: model(), onWindow: () => undefined, timer: false });
  const perLoop = agg.maxCount - 1;
  let addMs = 0;
  let addCpuUs = 0;
  for (let rep = 0; rep < 110; rep++) {
    const u0 = process.cpuUsage();
    const a0 = performance.now();
    for (let i = 0; i < perLoop; i++) agg.add(sample[i % sample.length]!, (i & 3) !== 0);
    const u = process.cpuUsage(u0);
    if (rep >= 10) {
      // the first ten warm the JIT
      addMs += performance.now() - a0;
      addCpuUs += u.user + u.system;
    }
    await agg.flush();
  }
  const addNs = (addMs * 1e6) / (100 * perLoop);
  const addCpuNs = (addCpuUs * 1e3) / (100 * perLoop);
  await agg.close();
  // Closing a full default window (10 000 inferences): sorting for the quantiles, median of 5.
  const closes: number[] = [];
  const big = await WindowAggregator.start({ exits: 3, stages: 3, maxCount: 20_000, meter: model(), onWindow: () => undefined, timer: false });
  for (let k = 0; k < 5; k++) {
    for (let i = 0; i < 10_000; i++) big.add(sample[i % sample.length]!);
    const f0 = performance.now();
    await big.flush();
    closes.push(performance.now() - f0);
  }
  await big.close();

  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const closeMs = median(closes);
  const stat = (rs: Round[], k: keyof Round) => median(rs.map((x) => x[k]));
  const overhead = (k: keyof Round) => (stat(on, k) - stat(off, k)) / stat(off, k);
  // Paired: each round with telemetry against the round without it next to it.
  const paired = (k: keyof Round) => median(on.map((x, i) => (x[k] - off[i]![k]) / off[i]![k]));
  const perInfWallOffUs = (stat(off, 'wallMs') / n) * 1000;
  const rows = [
    ['without telemetry', pairs, stat(off, 'wallMs').toFixed(1), stat(off, 'cpuMs').toFixed(1), perInfWallOffUs.toFixed(1), ((stat(off, 'cpuMs') / n) * 1000).toFixed(1)],
    ['with telemetry', pairs, stat(on, 'wallMs').toFixed(1), stat(on, 'cpuMs').toFixed(1), ((stat(on, 'wallMs') / n) * 1000).toFixed(1), ((stat(on, 'cpuMs') / n) * 1000).toFixed(1)],
    ['overhead (medians)', '', `${(overhead('wallMs') * 100).toFixed(2)} %`, `${(overhead('cpuMs') * 100).toFixed(2)} %`, '', ''],
    ['overhead (paired rounds, median)', '', `${(paired('wallMs') * 100).toFixed(2)} %`, `${(paired('cpuMs') * 100).toFixed(2)} %`, '', ''],
  ];
  const head = ['mode', 'rounds', `wall ms / ${n} images`, 'CPU ms', 'wall µs / inference', 'CPU µs / inference'];
  const out: string[] = [];
  out.push(`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i ? '---:' : '---')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`));
  out.push('');
  out.push(`target: ≤ 2 % (medians over ${pairs} rounds each, interleaved; wall min–max without ${Math.min(...off.map((x) => x.wallMs)).toFixed(0)}–${Math.max(...off.map((x) => x.wallMs)).toFixed(0)} ms, with ${Math.min(...on.map((x) => x.wallMs)).toFixed(0)}–${Math.max(...on.map((x) => x.wallMs)).toFixed(0)} ms)`);
  out.push(`add() alone: ${addNs.toFixed(1)} ns wall (${addCpuNs.toFixed(1)} ns CPU) per inference = ${((addNs / 1000 / perInfWallOffUs) * 100).toFixed(3)} % of the mean inference time; closing a 10 000-inference window: ${closeMs.toFixed(2)} ms (${((closeMs * 1e6) / 10_000).toFixed(0)} ns per inference amortised)`);
  // Accounted overhead: add() per inference plus one window's cost, spread over the inferences of a
  // window at this machine's inference rate (without telemetry), for the default window (10 s or
  // 10,000 inferences, whichever comes first) and for the bench's windows.
  const winCpuMs = median(winCpu);
  const infMs = stat(off, 'wallMs') / n;
  const accounted = (wMs: number, maxCount: number) => {
    const perWindow = Math.min(maxCount, Math.max(1, Math.floor(wMs / infMs)));
    return ((addNs / 1e6) * perWindow + winCpuMs) / (perWindow * infMs);
  };
  out.push(
    `one window end to end: ${winCpuMs.toFixed(2)} ms CPU (median of ${winCpu.length}; wall incl. the broker round trip ${median(winWall).toFixed(2)} ms) → accounted overhead ` +
      `${(accounted(10_000, 10_000) * 100).toFixed(3)} % with the default window (10 s / 10,000 inferences), ${(accounted(windowMs, 10_000) * 100).toFixed(3)} % with ${windowMs} ms windows`,
  );
  out.push(`telemetry sessions: ${windows} windows, ${acked} acknowledged, collector stored ${storedCount} of ${(pairs + 1) * n} inferences; session start (meter detection, manifest hash, connect, birth stored) + close (flush, drain, clean death): ${sessionMs.toFixed(1)} ms, outside the rounds`);
  out.push(`energy: ${meter}`);
  out.push(`host: ${os.cpus()[0]?.model ?? 'unknown cpu'}, ${os.availableParallelism()} cores, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}, Node ${process.versions.node}, ${new Date().toISOString().slice(0, 16)}Z`);
  console.log(out.join('\n'));
  await fsp.mkdir(path.dirname(jsonOut), { recursive: true });
  await fsp.writeFile(jsonOut, JSON.stringify({ images: n, pairs, windowMs, off, on, overhead: { wall: overhead('wallMs'), cpu: overhead('cpuMs') }, paired: { wall: paired('wallMs'), cpu: paired('cpuMs') }, addNs, addCpuNs, closeMs, windowCpuMs: winCpu, windowWallMs: winWall, windows, acked, stored: storedCount, meter }, null, 2) + '\n');
} finally {
  await fsp.rm(work, { recursive: true, force: true });
}
