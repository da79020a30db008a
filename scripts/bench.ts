// Runtime benchmark of early exit: compiles fmnist-branchy (fp32 for x86-host, int8 for rpi4)
// split at its exits, the same model as ONE session computing only its final exit (the "full"
// baselines: no split, no side heads), and fmnist-cbnet (fp32, int8) with fmnist-branchy as its
// backbone, and fmnist-branchy-wide (stages 0 and 1 shaped as fmnist-branchy's, trained on their own;
// a 3.3x costlier last stage; fp32, int8,
// split and unsplit), and the CBNet again (fp32) with fmnist-branchy-wide as its backbone, into a temp dir; calibrates the early-exit and the hybrid thresholds on the
// calibration images (reverse mode: lowest latency within --max-drop pp of the last exit, one
// standard error of margin, stage latency measured here; never the test set), then runs every
// variant over the Fashion-MNIST test set through the
// bundle runner: batch 1 and batch 32, model-only (tensor in, timing.cascadeMs) and, for each
// model's full float and best early-exit variant, end to end (PNG bytes in, label out). Speed-ups
// and accuracy changes are against the same model's full float. Variants are
// interleaved chunk by chunk so a busy neighbour slows them alike. Prints tables, writes JSON.
//
// It also calibrates a copy of the fp32 bundle for a latency target (measured stage latency,
// target = stage 0 + --target-fraction × the rest) and checks the achieved mean latency on the
// test set in 10 bootstrap resamples against 1.05 × target.
//
// `npm run bench` compiles src and scripts with tsc (tsconfig.scripts.json → .bench/build) and runs
// the result with plain node, as `edgeexit run` runs dist/. Under vite-node (which rewrites every
// import into a property read on a wrapper object) the cascade's own JavaScript measured about
// twice as slow: 3.0 vs 1.0–1.7 µs of overhead per image at batch 32, interleaved runs, same
// machine (2026-11-27).
//
//   npm run bench -- [--limit N] [--runs R] [--json .bench/bench.json]
//       [--calibration-limit 1000] [--threshold-limit 3000] [--max-drop 1] [--chunk 1024]
//       [--target-fraction 0.25] [--cbnet models/fmnist-cbnet-lite] [--wide-cbnet models/fmnist-cbnet]
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { compileModel } from '../src/compiler/index.js';
import { calibrate, type CalibrationReport } from '../src/calibration/calibrate.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/data/idx.js';
import { scanImageFolder } from '../src/data/imagefolder.js';
import { loadDeviceProfile } from '../src/devices/load.js';
import { toTensorInto, type ImageInput, type TensorData } from '../src/backends/image.js';
import { loadBundle, type BundleRunner, type ClassifyOptions, type ClassifyResult } from '../src/runtime/bundle-runner.js';
import type { CbnetPolicy } from '../src/runtime/cbnet-cascade.js';
import { mulberry32 } from '../src/util/random.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined && !args[i + 1]!.startsWith('--') ? args[i + 1]! : dflt;
};
const limitArg = flag('limit', '');
const limit = limitArg ? Number(limitArg) : undefined;
const runs = Number(flag('runs', '1'));
const jsonOut = flag('json', '.bench/bench.json');
const calibrationLimit = Number(flag('calibration-limit', '1000'));
const maxDropPp = Number(flag('max-drop', '1'));
const chunkSize = Number(flag('chunk', '1024'));
/** Calibration images for the threshold calibration and the hybrid sweep (default: all 3,000). */
const thresholdLimit = Number(flag('threshold-limit', '3000'));
const targetFraction = Number(flag('target-fraction', '0.25'));
const calibrationDir = path.resolve('calibration', 'fashion-mnist');
const log = (line: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const loads: { at: string; phase: string; loadavg: number[] }[] = [];
const noteLoad = (phase: string): void => void loads.push({ at: new Date().toISOString(), phase, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100) });

// ---------------------------------------------------------------- data
const SPEC = { colorspace: 'gray' as const, size: [28, 28] as [number, number], scale: 1 / 255, mean: [0.286], std: [0.353] };
interface EvalSet {
  name: string;
  n: number;
  pixels: Uint8Array; // n × 784 grayscale
  labels: number[];
  note?: string;
}
async function loadEvalSet(): Promise<EvalSet> {
  const haveTest = await fsp.stat(path.join(FASHION_MNIST_DIR, 't10k-images-idx3-ubyte.gz')).then(() => true, () => false);
  if (haveTest) {
    const ds = await loadFashionMnist('test');
    const n = Math.min(limit ?? ds.images.count, ds.images.count);
    return { name: `Fashion-MNIST test set (${FASHION_MNIST_DIR})`, n, pixels: ds.images.pixels.subarray(0, n * 784), labels: Array.from(ds.labels.subarray(0, n)) };
  }
  const folder = await scanImageFolder(calibrationDir);
  const items = folder.items.slice(0, limit ?? folder.items.length);
  const pixels = new Uint8Array(items.length * 784);
  for (const [i, it] of items.entries()) {
    const raw = await sharp(it.file).greyscale().resize(28, 28, { fit: 'fill' }).raw().toBuffer();
    pixels.set(raw.subarray(0, 784), i * 784);
  }
  return {
    name: `calibration images (${calibrationDir})`,
    n: items.length,
    pixels,
    labels: items.map((it) => it.label),
    note: `${FASHION_MNIST_DIR} not found (apt-get install dataset-fashion-mnist): measured on the calibration images, which also chose the thresholds — accuracy is optimistic`,
  };
}
function tensorOf(set: EvalSet, from: number, to: number): TensorData {
  const x = new Float32Array((to - from) * 784);
  for (let i = from; i < to; i++) toTensorInto({ width: 28, height: 28, channels: 1, data: set.pixels.subarray(i * 784, (i + 1) * 784) }, SPEC, x, (i - from) * 784);
  return { data: x, dims: [to - from, 1, 28, 28] };
}
async function encodePngs(set: EvalSet): Promise<Uint8Array[]> {
  const out: Uint8Array[] = new Array(set.n);
  for (let s = 0; s < set.n; s += 64) {
    await Promise.all(
      Array.from({ length: Math.min(64, set.n - s) }, async (_, j) => {
        const i = s + j;
        // toColourspace('b-w'): without it sharp writes a one-channel raw image as an RGB PNG (3x
        // the bytes to inflate, plus a colour → grey conversion), which no grey dataset looks like.
        out[i] = new Uint8Array(await sharp(Buffer.from(set.pixels.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('b-w').png().toBuffer());
      }),
    );
  }
  return out;
}

// ---------------------------------------------------------------- compile + calibrate
const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-bench-'));
const branchyModel = path.resolve('models', 'fmnist-branchy', 'fmnist-branchy.onnx');
const wideModel = path.resolve('models', 'fmnist-branchy-wide', 'fmnist-branchy-wide.onnx');
// Each CBNet with the backbone its converter is sized for: fmnist-cbnet-lite (0.86M-MAC converter)
// with fmnist-branchy (5.6M MACs), fmnist-cbnet (2.04M-MAC converter) with fmnist-branchy-wide (12M).
const cbnetModel = path.resolve(flag('cbnet', path.join('models', 'fmnist-cbnet-lite')));
/** The CBNet compiled with fmnist-branchy-wide as its backbone (fp32: the "wide: CBNet/hybrid" rows). */
const wideCbnetModel = path.resolve(flag('wide-cbnet', path.join('models', 'fmnist-cbnet')));
async function build(name: string, model: string, device: string, precision: 'fp32' | 'int8', exits?: string[], backbone?: string): Promise<string> {
  const out = path.join(work, name);
  const t0 = performance.now();
  await compileModel({ model, device, out, precision, latency: false, ...(exits ? { exits } : {}), ...(backbone ? { backbone } : {}), ...(precision === 'int8' ? { calibrationLimit } : {}) });
  log(`compiled ${name} (${device}, ${precision}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

/** The fp32 split with stage 0 handing its tensors on (`none`) or recomputed (`[0]`) whatever `auto` picks: the recompute ablations. */
async function buildHandOver(name: string, model: string, recompute: 'none' | number[] = 'none'): Promise<string> {
  const out = path.join(work, name);
  await compileModel({ model, device: 'x86-host', out, precision: 'fp32', latency: false, recompute });
  log(`compiled ${name} (x86-host, fp32, --recompute ${recompute === 'none' ? 'none' : recompute.join(',')})`);
  return out;
}

noteLoad('start');
const evalSet = await loadEvalSet();
log(`evaluation: ${evalSet.name}, ${evalSet.n} images`);
const bundles = {
  fullF: await build('full-x86-fp32', branchyModel, 'x86-host', 'fp32', ['exit_2']),
  fullQ: await build('full-rpi4-int8', branchyModel, 'rpi4', 'int8', ['exit_2']),
  branchyF: await build('branchy-x86-fp32', branchyModel, 'x86-host', 'fp32'),
  branchyT: await build('branchy-x86-fp32-target', branchyModel, 'x86-host', 'fp32'),
  branchyN: await buildHandOver('branchy-x86-fp32-handover', branchyModel),
  branchyR: await buildHandOver('branchy-x86-fp32-recompute0', branchyModel, [0]),
  branchyQ: await build('branchy-rpi4-int8', branchyModel, 'rpi4', 'int8'),
  // With the branchy model as backbone: the hybrid falls through to its deeper stages last.
  cbnetF: await build('cbnet-x86-fp32', cbnetModel, 'x86-host', 'fp32', undefined, branchyModel),
  cbnetQ: await build('cbnet-rpi4-int8', cbnetModel, 'rpi4', 'int8', undefined, branchyModel),
  // fmnist-branchy-wide: exits 0 and 1 shaped as fmnist-branchy's, a 3.3x costlier last stage (see its card).
  wideFullF: await build('wide-full-x86-fp32', wideModel, 'x86-host', 'fp32', ['exit_2']),
  wideFullQ: await build('wide-full-rpi4-int8', wideModel, 'rpi4', 'int8', ['exit_2']),
  wideF: await build('wide-x86-fp32', wideModel, 'x86-host', 'fp32'),
  wideQ: await build('wide-rpi4-int8', wideModel, 'rpi4', 'int8'),
  // The same kind of CBNet in front of the wide backbone: its converter is small next to that backbone.
  cbnetWF: await build('wide-cbnet-x86-fp32', wideCbnetModel, 'x86-host', 'fp32', undefined, wideModel),
  cbnetWQ: await build('wide-cbnet-rpi4-int8', wideCbnetModel, 'rpi4', 'int8', undefined, wideModel),
};
noteLoad('compiled');
const calibrations: Record<string, CalibrationReport> = {};
for (const key of ['branchyF', 'branchyQ', 'cbnetF', 'cbnetQ', 'wideF', 'wideQ', 'cbnetWF', 'cbnetWQ'] as const) {
  const t0 = performance.now();
  calibrations[key] = await calibrate({
    bundle: bundles[key],
    data: calibrationDir,
    target: { kind: 'accuracy-drop', maxDropPp },
    latencySource: 'measure',
    limit: thresholdLimit,
    runs: 100,
    out: `${bundles[key]}-calibration`,
  });
  const c = calibrations[key]!;
  log(`calibrated ${key}: thresholds ${c.thresholds.join(', ')}, held-out acc ${(c.achieved.accuracy * 100).toFixed(2)}% (no exit ${(c.noExit.accuracy * 100).toFixed(2)}%), ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
// Latency-target calibration: stage latency measured here, target between stage 0 and the no-exit cascade.
{
  const { measureLatencyProfile, stageLatencyFrom, writeLatencyProfile } = await import('../src/calibration/latency.js');
  // One measurement serves both the target and the search (a profile file, as a device would hand over).
  const profile = await measureLatencyProfile(bundles.branchyT, { batches: [1], runs: 300 });
  const profileFile = path.join(work, 'branchyT-latency.json');
  await writeLatencyProfile(profileFile, profile);
  const stageMs = stageLatencyFrom(profile, 1, 'mean', profileFile);
  const total = stageMs.reduce((a, b) => a + b, 0);
  const targetMs = Math.round((stageMs[0]! + targetFraction * (total - stageMs[0]!)) * 1e4) / 1e4;
  const t0 = performance.now();
  calibrations.branchyT = await calibrate({
    bundle: bundles.branchyT,
    data: calibrationDir,
    target: { kind: 'latency', targetMs },
    latencySource: profileFile,
    limit: thresholdLimit,
    out: `${bundles.branchyT}-calibration`,
  });
  log(`calibrated branchyT for mean ≤ ${targetMs} ms: thresholds ${calibrations.branchyT.thresholds.join(', ')}, predicted ${calibrations.branchyT.predicted.meanMs.toFixed(4)} ms, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
noteLoad('calibrated');

const open = (b: string): Promise<BundleRunner> => loadBundle(b, { device: 'x86-host', threads: 1, allowUnsigned: true, onWarning: (l) => log(l) }); // bench bundles are compiled here, unsigned
const runners = {
  fullF: await open(bundles.fullF),
  fullQ: await open(bundles.fullQ),
  branchyF: await open(bundles.branchyF),
  branchyT: await open(bundles.branchyT),
  branchyN: await open(bundles.branchyN),
  branchyR: await open(bundles.branchyR),
  branchyQ: await open(bundles.branchyQ),
  cbnetF: await open(bundles.cbnetF),
  cbnetQ: await open(bundles.cbnetQ),
  wideFullF: await open(bundles.wideFullF),
  wideFullQ: await open(bundles.wideFullQ),
  wideF: await open(bundles.wideF),
  wideQ: await open(bundles.wideQ),
  cbnetWF: await open(bundles.cbnetWF),
  cbnetWQ: await open(bundles.cbnetWQ),
};

noteLoad('hybrid swept');

// ---------------------------------------------------------------- variants
interface Variant {
  name: string;
  bundle: keyof typeof runners;
  opts: ClassifyOptions;
  /** The variant its speed-up and accuracy change are measured against: its model's full float. */
  baseline: 'full float' | 'wide: full float';
}
const variants: Variant[] = [
  { name: 'full float', bundle: 'fullF', opts: {}, baseline: 'full float' },
  { name: 'full int8', bundle: 'fullQ', opts: {}, baseline: 'full float' },
  { name: 'early-exit float', bundle: 'branchyF', opts: {}, baseline: 'full float' },
  { name: 'early-exit int8', bundle: 'branchyQ', opts: {}, baseline: 'full float' },
  { name: 'CBNet float', bundle: 'cbnetF', opts: { policy: 'cbnet' as CbnetPolicy }, baseline: 'full float' },
  { name: 'CBNet int8', bundle: 'cbnetQ', opts: { policy: 'cbnet' as CbnetPolicy }, baseline: 'full float' },
  { name: 'hybrid float', bundle: 'cbnetF', opts: { policy: 'hybrid' as CbnetPolicy }, baseline: 'full float' },
  { name: 'hybrid int8', bundle: 'cbnetQ', opts: { policy: 'hybrid' as CbnetPolicy }, baseline: 'full float' },
  { name: 'early-exit float @ latency target', bundle: 'branchyT', opts: {}, baseline: 'full float' },
  // Same thresholds and temperatures as early-exit float; only the hand-over after stage 0 differs.
  {
    name: 'early-exit float, stage 0 handed over (--recompute none)',
    bundle: 'branchyN',
    opts: { thresholds: calibrations.branchyF!.thresholds, temperatures: calibrations.branchyF!.temperatures },
    baseline: 'full float',
  },
  // The same, with stage 0 recomputed by stage 1 whatever --recompute auto picks (auto weighs stage 0's
  // trunk, without its exit head, against the model's MACs).
  {
    name: 'early-exit float, stage 0 recomputed (--recompute 0)',
    bundle: 'branchyR',
    opts: { thresholds: calibrations.branchyF!.thresholds, temperatures: calibrations.branchyF!.temperatures },
    baseline: 'full float',
  },
  { name: 'wide: full float', bundle: 'wideFullF', opts: {}, baseline: 'wide: full float' },
  { name: 'wide: full int8', bundle: 'wideFullQ', opts: {}, baseline: 'wide: full float' },
  { name: 'wide: early-exit float', bundle: 'wideF', opts: {}, baseline: 'wide: full float' },
  { name: 'wide: early-exit int8', bundle: 'wideQ', opts: {}, baseline: 'wide: full float' },
  { name: 'wide: CBNet float', bundle: 'cbnetWF', opts: { policy: 'cbnet' as CbnetPolicy }, baseline: 'wide: full float' },
  { name: 'wide: hybrid float', bundle: 'cbnetWF', opts: { policy: 'hybrid' as CbnetPolicy }, baseline: 'wide: full float' },
  { name: 'wide: CBNet int8', bundle: 'cbnetWQ', opts: { policy: 'cbnet' as CbnetPolicy }, baseline: 'wide: full float' },
  { name: 'wide: hybrid int8', bundle: 'cbnetWQ', opts: { policy: 'hybrid' as CbnetPolicy }, baseline: 'wide: full float' },
];
const variantNamed = (name: string): Variant => variants.find((v) => v.name === name)!;
// Map the runner's class index to the dataset's label index (the zoo spells labels as folder names).
const FMNIST = ['tshirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot'];
function labelMap(r: BundleRunner): number[] {
  const norm = (s: string): string => s.toLowerCase().replace(/[^a-z]/g, '');
  const byName = r.manifest.labels.map((l) => FMNIST.map(norm).indexOf(norm(l)));
  return byName.every((i) => i >= 0) ? byName : r.manifest.labels.map((_, i) => i);
}

interface Acc {
  correct: number;
  n: number;
  lat: number[]; // per-image latency (ms): batch 1 per sample; batch 32 per-batch time / rows, once per row
  cascadeMs: number;
  stageMs: number;
  exitCounts: number[];
  exitNames: string[];
  preprocessMs: number;
  wallMs: number;
  /** Batch 1: Σ per-sample stageLatencyMs by stage position, and Σ latencyMs / count by exit taken. */
  stageSum: number[];
  exitLatSum: number[];
  /** End to end only: the model-only latency of the same calls (batch 1: latencyMs; batch 32: cascadeMs / rows), per image. */
  modelLat: number[];
}
const newAcc = (): Acc => ({ correct: 0, n: 0, lat: [], cascadeMs: 0, stageMs: 0, exitCounts: [], exitNames: [], preprocessMs: 0, wallMs: 0, stageSum: [], exitLatSum: [], modelLat: [] });
function absorb(a: Acc, r: ClassifyResult, labels: number[], offset: number, map: number[], perImage: 'sample' | 'batch'): void {
  for (const it of r.items) if (it.ok && map[it.classIndex] === labels[offset + it.index]) a.correct++;
  a.n += r.items.length;
  if (perImage === 'sample') {
    for (const it of r.items) {
      a.lat.push(it.ok ? it.latencyMs : NaN);
      if (!it.ok) continue;
      it.stageLatencyMs.forEach((m, k) => (a.stageSum[k] = (a.stageSum[k] ?? 0) + m));
      a.exitLatSum[it.exit] = (a.exitLatSum[it.exit] ?? 0) + it.latencyMs;
    }
  }
  a.cascadeMs += r.timing.cascadeMs;
  a.stageMs += r.timing.stageMs.reduce((x, y) => x + y, 0);
  a.preprocessMs += r.timing.preprocessMs;
  a.exitNames = r.exitNames;
  r.exitCounts.forEach((c, k) => (a.exitCounts[k] = (a.exitCounts[k] ?? 0) + c));
}

const B32 = 32;
const modelOnly: Record<string, Record<number, Acc>> = Object.fromEntries(variants.map((v) => [v.name, { 1: newAcc(), 32: newAcc() }]));
const maps = Object.fromEntries(Object.entries(runners).map(([k, r]) => [k, labelMap(r)])) as Record<keyof typeof runners, number[]>;

log(`model-only: ${variants.length} variants × batch 1, 32 × ${evalSet.n} images × ${runs} run(s), interleaved in chunks of ${chunkSize}`);
noteLoad('model-only start');
for (let rep = 0; rep < runs; rep++) {
  for (let from = 0; from < evalSet.n; from += chunkSize) {
    const to = Math.min(evalSet.n, from + chunkSize);
    const x = tensorOf(evalSet, from, to);
    for (const v of variants) {
      const r1 = await runners[v.bundle].classify(x, { ...v.opts, batchSize: 1 });
      absorb(modelOnly[v.name]![1]!, r1, evalSet.labels, from, maps[v.bundle], 'sample');
      // Batch 32: one classify per batch, so timing.cascadeMs is that batch's time.
      const a32 = modelOnly[v.name]![32]!;
      for (let s = 0; s < to - from; s += B32) {
        const e = Math.min(to - from, s + B32);
        const xb = { data: x.data.subarray(s * 784, e * 784), dims: [e - s, 1, 28, 28] };
        const r = await runners[v.bundle].classify(xb, { ...v.opts, batchSize: B32 });
        absorb(a32, r, evalSet.labels, from + s, maps[v.bundle], 'batch');
        const per = r.timing.cascadeMs / (e - s);
        for (let i = s; i < e; i++) a32.lat.push(per);
      }
    }
  }
  noteLoad(`model-only rep ${rep + 1}`);
}

// ---------------------------------------------------------------- oracle bound (test set)
const stats = (xs: number[]): { mean: number; p50: number; p95: number; p99: number } => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: q(50), p95: q(95), p99: q(99) };
};
/**
 * Oracle bound: every image leaves at its cheapest correct exit (exit 0 when none is, as src/calibration/search.ts). Per-exit
 * predictions over the whole set; per-exit cumulative costs (batch 1) from the interleaved runs above.
 */
async function oracle(v: Variant, exitsRuns: ClassifyOptions[], cumMs: number[]): Promise<{ accuracy: number; meanMs: number; exitAcc: number[]; cumMs: number[] }> {
  const runner = runners[v.bundle];
  const map = maps[v.bundle];
  const preds: number[][] = [];
  const xAll = tensorOf(evalSet, 0, evalSet.n);
  for (const o of exitsRuns) {
    const r = await runner.classify(xAll, { ...o, batchSize: 256 });
    preds.push(r.items.map((it) => (it.ok ? map[it.classIndex]! : -1)));
  }
  let correct = 0;
  let ms = 0;
  for (let i = 0; i < evalSet.n; i++) {
    const k = preds.findIndex((p) => p[i] === evalSet.labels[i]);
    if (k >= 0) correct++;
    ms += cumMs[k >= 0 ? k : 0]!; // as search.ts: exit 0 when no exit is correct
  }
  const exitAcc = preds.map((p) => p.filter((c, i) => c === evalSet.labels[i]).length / evalSet.n);
  return { accuracy: correct / evalSet.n, meanMs: ms / evalSet.n, exitAcc, cumMs };
}
/**
 * Forcing every sample out at exit k of a multi-exit bundle: threshold 0 at k, the range's top (1)
 * before k (a sample whose max-prob is exactly 1.0 still leaves earlier; it is correct there in practice).
 */
function branchyExits(key: 'branchyF' | 'branchyQ' | 'wideF' | 'wideQ'): ClassifyOptions[] {
  const K = runners[key].manifest.stages.length;
  return Array.from({ length: K }, (_, k) => ({ thresholds: k === K - 1 ? null : Array.from({ length: K - 1 }, (_, j) => (j < k ? 1 : 0)) }));
}
/** Cumulative mean cost of exit k: Σ over stages ≤ k of the stage's mean time over the samples that ran it (batch 1). */
const cumFromStages = (a: Acc): number[] => {
  const reach = a.stageSum.map((_, k) => a.exitCounts.slice(k).reduce((x, y) => x + y, 0));
  let acc = 0;
  return a.stageSum.map((t, k) => (acc += reach[k]! > 0 ? t / reach[k]! : 0));
};
/** Hybrid exit points force-exited one at a time (as branchyExits). */
function hybridExits(key: 'cbnetF' | 'cbnetQ' | 'cbnetWF'): ClassifyOptions[] {
  const K = runners[key].manifest.pipeline!.policies.hybrid.length;
  return Array.from({ length: K }, (_, k) => ({ policy: 'hybrid' as CbnetPolicy, thresholds: k === K - 1 ? null : Array.from({ length: K - 1 }, (_, j) => (j < k ? 1 : 0)) }));
}
/** Cumulative mean cost of each hybrid exit point: the measured per-point costs calibration used, scaled to this run's mean. */
const cumHybrid = (h: Acc, key: 'cbnetF' | 'cbnetQ' | 'cbnetWF'): number[] => {
  const cum = calibrations[key]!.latency.cumulativeMs;
  const predicted = calibrations[key]!.predicted.meanMs;
  const scale = predicted > 0 ? meanOf(h) / predicted : 1;
  return cum.map((c) => c * scale);
};
const meanOf = (a: Acc): number => {
  const xs = a.lat.filter((x) => Number.isFinite(x));
  return xs.reduce((x, y) => x + y, 0) / xs.length;
};
log('oracle bounds…');
const oracles = {
  'early-exit float': await oracle(variantNamed('early-exit float'), branchyExits('branchyF'), cumFromStages(modelOnly['early-exit float']![1]!)),
  'early-exit int8': await oracle(variantNamed('early-exit int8'), branchyExits('branchyQ'), cumFromStages(modelOnly['early-exit int8']![1]!)),
  'hybrid float': await oracle(variantNamed('hybrid float'), hybridExits('cbnetF'), cumHybrid(modelOnly['hybrid float']![1]!, 'cbnetF')),
  'hybrid int8': await oracle(variantNamed('hybrid int8'), hybridExits('cbnetQ'), cumHybrid(modelOnly['hybrid int8']![1]!, 'cbnetQ')),
  'wide: hybrid float': await oracle(variantNamed('wide: hybrid float'), hybridExits('cbnetWF'), cumHybrid(modelOnly['wide: hybrid float']![1]!, 'cbnetWF')),
  'wide: early-exit float': await oracle(variantNamed('wide: early-exit float'), branchyExits('wideF'), cumFromStages(modelOnly['wide: early-exit float']![1]!)),
  'wide: early-exit int8': await oracle(variantNamed('wide: early-exit int8'), branchyExits('wideQ'), cumFromStages(modelOnly['wide: early-exit int8']![1]!)),
};
noteLoad('oracle');

// ---------------------------------------------------------------- end to end (PNG bytes → label)
const acc = (a: Acc): number => a.correct / a.n;
const meanLat = (a: Acc): number => stats(a.lat).mean;
// Speed-up (mean, batch 1, model-only) of a variant over its own model's full float, and its accuracy change there.
const speedupOf = (name: string): number => meanLat(modelOnly[variantNamed(name).baseline]![1]!) / meanLat(modelOnly[name]![1]!);
const dropOf = (name: string): number => acc(modelOnly[variantNamed(name).baseline]![1]!) - acc(modelOnly[name]![1]!);
// The issue's criterion is about the multi-exit variants (the calibrated ones: not the latency-target
// copy, not the hand-over ablation); CBNet and hybrid report their own ratios.
const isEarlyExit = (n: string): boolean => /^(wide: )?early-exit (float|int8)$/.test(n);
const eeNames = variants.map((v) => v.name).filter(isEarlyExit);
const bestOf = (names: string[]): string => {
  const within = names.filter((n) => dropOf(n) <= maxDropPp / 100 + 1e-12);
  return (within.length ? within : names).reduce((a, b) => (speedupOf(a) >= speedupOf(b) ? a : b));
};
// Best per model, and overall (largest speed-up within maxDropPp of its own full float, on the test set).
const bestName = bestOf(eeNames.filter((n) => !n.startsWith('wide: ')));
const bestWide = bestOf(eeNames.filter((n) => n.startsWith('wide: ')));
const bestOverall = bestOf([bestName, bestWide]);
log(`best early-exit variant (batch 1, model-only, within ${maxDropPp} pp of its full float on the test set): ${bestOverall} (${speedupOf(bestOverall).toFixed(2)}x); fmnist-branchy: ${bestName} (${speedupOf(bestName).toFixed(2)}x); end to end…`);
const pngs = await encodePngs(evalSet);
// Raw frames as a camera hands them: 8-bit grey pixels of the model's size (no decoding).
const frames: ImageInput[] = Array.from({ length: evalSet.n }, (_, i) => ({ kind: 'raw', pixels: { width: 28, height: 28, channels: 1, data: evalSet.pixels.subarray(i * 784, (i + 1) * 784) } }));
const e2eNames = [...new Set(['full float', bestName, 'early-exit float', 'wide: full float', bestWide])];
const INPUTS = { png: pngs as ImageInput[], 'raw frame': frames } as const;
type InputKind = keyof typeof INPUTS;
const e2eKey = (name: string, input: InputKind): string => `${name}|${input}`;
const e2e: Record<string, Record<number, Acc>> = {};
for (const n of e2eNames) for (const k of Object.keys(INPUTS) as InputKind[]) e2e[e2eKey(n, k)] = { 1: newAcc(), 32: newAcc() };
noteLoad('end-to-end start');
for (let from = 0; from < evalSet.n; from += chunkSize) {
  const to = Math.min(evalSet.n, from + chunkSize);
  for (const name of e2eNames) {
    const v = variantNamed(name);
    for (const kind of Object.keys(INPUTS) as InputKind[]) {
      const list = INPUTS[kind];
      for (const b of [1, B32]) {
        const a = e2e[e2eKey(name, kind)]![b]!;
        for (let s = from; s < to; s += b) {
          const e = Math.min(to, s + b);
          const t0 = performance.now();
          const r = await runners[v.bundle].classify(list.slice(s, e), { ...v.opts, batchSize: b });
          const wall = performance.now() - t0;
          absorb(a, r, evalSet.labels, s, maps[v.bundle], 'batch');
          a.wallMs += wall;
          for (let i = s; i < e; i++) a.lat.push(wall / (e - s));
          if (b === 1) for (const it of r.items) a.modelLat.push(it.ok ? it.latencyMs : NaN);
          else for (let i = s; i < e; i++) a.modelLat.push(r.timing.cascadeMs / (e - s));
        }
      }
    }
  }
}
noteLoad('end-to-end done');

// ---------------------------------------------------------------- report
const x86 = await loadDeviceProfile('x86-host');
const busyW = x86.power.busyWatts;
const pct = (x: number, d = 2): string => `${(x * 100).toFixed(d)}%`;
const ms = (x: number): string => x.toFixed(3);
function mdTable(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}
const out: string[] = [];
const json: Record<string, unknown> = {
  date: new Date().toISOString(),
  command: `npm run bench -- ${args.join(' ')}`.trim(),
  cpu: os.cpus()[0]?.model,
  cores: os.cpus().length,
  node: process.version,
  evalSet: { name: evalSet.name, n: evalSet.n, note: evalSet.note },
  runs,
  threads: 1,
  maxDropPp,
  calibrationLimit,
  thresholdLimit,
  power: { device: 'x86-host', busyWatts: busyW, idleWatts: x86.power.idleWatts, note: 'model (device profile estimate), not measured' },
  calibration: Object.fromEntries(Object.entries(calibrations).map(([k, c]) => [k, { thresholds: c.thresholds, temperatures: c.temperatures, stageMs: c.latency.stageMs, predicted: c.predicted, achieved: c.achieved, noExit: c.noExit, oracle: c.oracle }])),
  loads,
};
const rowsJson: unknown[] = [];
for (const b of [1, B32]) {
  const rows: string[][] = [];
  for (const v of variants) {
    const base = modelOnly[v.baseline]![b]!;
    const ref = meanLat(base);
    const ref50 = stats(base.lat).p50;
    const a = modelOnly[v.name]![b]!;
    const s = stats(a.lat);
    const thr = a.n / (a.cascadeMs / 1000);
    const overhead = (a.cascadeMs - a.stageMs) / a.cascadeMs;
    const hist = a.exitCounts.map((c) => pct(c / a.n, 1)).join(' / ');
    const energy = s.mean * busyW; // ms × W = mJ
    const dAcc = (acc(a) - acc(base)) * 100;
    rows.push([v.name, pct(acc(a)), `${dAcc >= 0 ? '+' : ''}${dAcc.toFixed(2)}`, ms(s.mean), ms(s.p50), ms(s.p95), ms(s.p99), thr.toFixed(0), `${(ref / s.mean).toFixed(2)}x`, `${(ref50 / s.p50).toFixed(2)}x`, hist, energy.toFixed(3), `${pct(overhead, 1)} (${(((a.cascadeMs - a.stageMs) / a.n) * 1000).toFixed(1)} µs/img)`]);
    rowsJson.push({ kind: 'model-only', batch: b, variant: v.name, accuracy: acc(a), deltaPp: dAcc, latencyMs: s, throughput: thr, speedup: ref / s.mean, speedupP50: ref50 / s.p50, exitNames: a.exitNames, exitCounts: a.exitCounts, energyMj: energy, overheadFraction: overhead, cascadeMs: a.cascadeMs, stageMs: a.stageMs, images: a.n });
  }
  if (b === 1) {
    for (const [name, o] of Object.entries(oracles)) {
      const base = modelOnly[variantNamed(name).baseline]![1]!;
      const ref = meanLat(base);
      rows.push([`oracle bound (${name})`, pct(o.accuracy), `${((o.accuracy - acc(base)) * 100).toFixed(2)}`, ms(o.meanMs), '', '', '', '', `${(ref / o.meanMs).toFixed(2)}x`, '', 'cheapest correct exit', (o.meanMs * busyW).toFixed(3), '']);
      rowsJson.push({ kind: 'oracle', batch: 1, variant: name, accuracy: o.accuracy, meanMs: o.meanMs, exitAccuracy: o.exitAcc, cumulativeMs: o.cumMs, speedup: ref / o.meanMs });
    }
  }
  out.push(`### Model-only, batch ${b} (${b === 1 ? 'per-sample latencyMs' : 'per-batch cascade time / rows'})`, '');
  out.push(
    mdTable(['variant', 'top-1', 'Δ pp vs its full float', 'mean ms/img', 'p50', 'p95', 'p99', 'img/s', 'speed-up (mean)', 'speed-up (p50)', 'exits', 'mJ/inference (model)', 'cascade overhead'], rows),
    '',
  );
}
const e2eRows: string[][] = [];
for (const name of e2eNames) {
  for (const kind of Object.keys(INPUTS) as InputKind[]) {
    for (const b of [1, B32]) {
      const a = e2e[e2eKey(name, kind)]![b]!;
      const s = stats(a.lat);
      const model = stats(a.modelLat);
      const thr = a.n / (a.wallMs / 1000);
      const ref = stats(e2e[e2eKey(variantNamed(name).baseline, kind)]![b]!.lat).mean;
      e2eRows.push([name, kind, String(b), pct(acc(a)), ms(s.mean), ms(s.p50), ms(s.p95), ms(s.p99), thr.toFixed(0), `${(ref / s.mean).toFixed(2)}x`, ms(model.p50), `${(s.p50 / model.p50).toFixed(2)}x`, pct(a.preprocessMs / a.wallMs, 1), (s.mean * busyW).toFixed(3)]);
      rowsJson.push({ kind: 'end-to-end', input: kind, batch: b, variant: name, accuracy: acc(a), latencyMs: s, modelLatencyMs: model, endToEndOverModelP50: s.p50 / model.p50, throughput: thr, speedup: ref / s.mean, preprocessShare: a.preprocessMs / a.wallMs, preprocessMs: a.preprocessMs, wallMs: a.wallMs, cascadeMs: a.cascadeMs, exitCounts: a.exitCounts });
    }
  }
}
out.push('### End to end (input → label; wall time of each classify call)', '');
out.push(
  'Inputs: `png` = the encoded PNG bytes of each test image (decoded by src/runtime/png.ts); `raw frame` = its 8-bit grey pixels, as a camera hands them (normalised, not decoded). "model p50, same calls" is the model-only latency inside those very calls (batch 1: the sample\'s latencyMs; batch 32: cascade time / rows), so the ratio next to it compares like with like in time.',
  '',
);
out.push(mdTable(['variant', 'input', 'batch', 'top-1', 'mean ms/img', 'p50', 'p95', 'p99', 'img/s', 'speed-up vs its full float', 'model p50, same calls', 'end-to-end p50 / model p50', 'preprocess share', 'mJ/inference (model)'], e2eRows), '');
const cal = (k: 'branchyF' | 'branchyQ' | 'branchyT' | 'cbnetF' | 'cbnetQ' | 'wideF' | 'wideQ' | 'cbnetWF' | 'cbnetWQ'): string => {
  const c = calibrations[k]!;
  return `thresholds ${c.thresholds.join(', ')} (temperatures ${c.temperatures.join(', ')}); measured stage ms ${c.latency.stageMs.map((x) => x.toFixed(3)).join(', ')}; held-out ${pct(c.achieved.accuracy)} vs no-exit ${pct(c.noExit.accuracy)}`;
};
// Latency target met on the test set? Bootstrap the per-sample batch-1 latencies (seeded).
const tgtCal = calibrations.branchyT!;
const tgtMs = tgtCal.target.kind === 'latency' ? tgtCal.target.targetMs : NaN;
const tgtAcc = modelOnly['early-exit float @ latency target']![1]!;
const boot = (() => {
  const rand = mulberry32(20261127);
  const lat = tgtAcc.lat.filter((x) => Number.isFinite(x));
  return Array.from({ length: 10 }, () => {
    let sum = 0;
    for (let i = 0; i < lat.length; i++) sum += lat[Math.floor(rand() * lat.length)]!;
    return sum / lat.length;
  });
})();
const met = boot.filter((m) => m <= 1.05 * tgtMs).length;
out.push(`### Latency target on the test set (thresholds calibrated for mean ≤ ${tgtMs} ms on calibration images, measured stage latency)`, '');
out.push(
  mdTable(
    ['target', 'predicted (calibration held-out)', 'achieved mean (test set)', 'bootstrap means (10 resamples)', '≤ 1.05 × target', 'top-1'],
    [[`${tgtMs.toFixed(4)} ms`, `${tgtCal.achieved.meanMs.toFixed(4)} ms`, `${meanLat(tgtAcc).toFixed(4)} ms`, boot.map((b) => b.toFixed(4)).join(', '), `${met}/10`, pct(acc(tgtAcc))]],
  ),
  '',
);
json.latencyTarget = { targetMs: tgtMs, thresholds: tgtCal.thresholds, predictedMs: tgtCal.predicted.meanMs, heldOutMs: tgtCal.achieved.meanMs, achievedMs: meanLat(tgtAcc), bootstrapMeansMs: boot, metIn: met, accuracy: acc(tgtAcc) };
out.push('### Thresholds (chosen on calibration images only)', '');
out.push(`- early-exit float: ${cal('branchyF')}`);
out.push(`- early-exit int8: ${cal('branchyQ')}`);
out.push(`- early-exit float @ latency target: ${cal('branchyT')}`);
out.push(`- hybrid float (classifier, converter, backbone exit_1, exit_2): ${cal('cbnetF')}`);
out.push(`- hybrid int8: ${cal('cbnetQ')}`);
out.push(`- wide: hybrid float (classifier, converter, wide exit_1, exit_2): ${cal('cbnetWF')}`);
out.push(`- wide: hybrid int8: ${cal('cbnetWQ')}`);
out.push(`- wide: early-exit float: ${cal('wideF')}`);
out.push(`- wide: early-exit int8: ${cal('wideQ')}`);
out.push('', `Load (os.loadavg 1/5/15 min): ${loads.map((l) => `${l.phase} ${l.loadavg.join('/')}`).join('; ')}`);
if (evalSet.note) out.push('', `note: ${evalSet.note}`);
const header = `${evalSet.name}, ${evalSet.n} images; ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}; onnxruntime-node cpu, 1 intra-op thread; ${runs} run(s); best early-exit variant within ${maxDropPp} pp of its full float (test set): ${bestOverall} ${speedupOf(bestOverall).toFixed(2)}x; fmnist-branchy: ${bestName} ${speedupOf(bestName).toFixed(2)}x`;
console.log(header + '\n\n' + out.join('\n'));
json.rows = rowsJson;
json.bestEarlyExit = { overall: bestOverall, speedup: speedupOf(bestOverall), dropPp: dropOf(bestOverall) * 100, perModel: { 'fmnist-branchy': bestName, 'fmnist-branchy-wide': bestWide } };
json.markdown = out.join('\n');
await fsp.mkdir(path.dirname(jsonOut), { recursive: true });
await fsp.writeFile(jsonOut, JSON.stringify(json, null, 2) + '\n');
for (const r of Object.values(runners)) await r.close();
await fsp.rm(work, { recursive: true, force: true });
console.log(`\nwrote ${jsonOut}`);
