// Benchmark of int8 quantisation on a zoo model: compiles fp32 and int8 bundles (one per
// calibration method, plus the x86 host's own scheme), runs each bundle's stage chain over the
// full Fashion-MNIST test set for per-exit top-1, and times every stage at batch 1 on this
// machine with onnxruntime (median of many runs, one thread, variants interleaved run by run).
// Prints a table, writes JSON.
//
//   npx vite-node scripts/quant-bench.ts [--model models/fmnist-branchy/fmnist-branchy.onnx]
//       [--runs 300] [--json .bench/quant-bench.json]
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compileModel, type CompileResult } from '../src/compiler/index.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { toTensorInto } from '../src/backends/image.js';
import { createSession, type ModelSession, type PlainTensor } from '../src/backends/onnxruntime.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const model = flag('model', 'models/fmnist-branchy/fmnist-branchy.onnx');
const runs = Number(flag('runs', '300'));
const jsonOut = flag('json', '.bench/quant-bench.json');

interface Variant {
  name: string;
  device: string;
  precision: 'fp32' | 'int8';
  method?: 'percentile' | 'minmax' | 'entropy';
}
const variants: Variant[] = [
  { name: 'fp32', device: 'rpi4', precision: 'fp32' },
  { name: 'int8 rpi4 s8s8 percentile', device: 'rpi4', precision: 'int8', method: 'percentile' },
  { name: 'int8 rpi4 s8s8 minmax', device: 'rpi4', precision: 'int8', method: 'minmax' },
  { name: 'int8 rpi4 s8s8 entropy', device: 'rpi4', precision: 'int8', method: 'entropy' },
  { name: 'int8 x86-host u8s8 percentile', device: 'x86-host', precision: 'int8', method: 'percentile' },
];

const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-quant-bench-'));
const test = await loadFashionMnist('test');
const per = test.images.rows * test.images.cols;

async function openStages(r: CompileResult): Promise<ModelSession[]> {
  return Promise.all(r.manifest.stages.map(async (s) => createSession(path.join(r.out, s.file), { intraOpNumThreads: 1, graphOptimizationLevel: 'all' })));
}

async function accuracy(r: CompileResult, sessions: ModelSession[]): Promise<number[]> {
  const spec = r.manifest.input.preprocess;
  // The zoo spells labels as folder names ('tshirt_top'); same order as the IDX classes.
  const byName = r.manifest.labels.map((l) => test.classes.indexOf(l));
  const labelIndex = byName.every((i) => i >= 0) ? byName : r.manifest.labels.map((_, i) => i);
  const correct = r.manifest.stages.map(() => 0);
  const batch = 500;
  for (let i = 0; i < test.images.count; i += batch) {
    const n = Math.min(batch, test.images.count - i);
    const x = new Float32Array(n * per);
    for (let j = 0; j < n; j++) {
      toTensorInto({ data: test.images.pixels.subarray((i + j) * per, (i + j + 1) * per), width: test.images.cols, height: test.images.rows, channels: 1 }, spec, x, j * per);
    }
    let alive: Record<string, PlainTensor> = { [r.manifest.input.name]: { data: x, dims: [n, 1, test.images.rows, test.images.cols] } };
    for (const [k, s] of r.manifest.stages.entries()) {
      const feeds: Record<string, PlainTensor> = {};
      for (const name of s.inputs) feeds[name] = alive[name]!;
      const out = await sessions[k]!.run(feeds);
      const logits = out[s.exit]!.data as Float32Array;
      const w = logits.length / n;
      for (let j = 0; j < n; j++) {
        let best = 0;
        for (let c = 1; c < w; c++) if (logits[j * w + c]! > logits[j * w + best]!) best = c;
        if (labelIndex[best] === test.labels[i + j]) correct[k]!++;
      }
      const next: Record<string, PlainTensor> = {};
      for (const name of s.carry) next[name] = out[name] ?? alive[name]!;
      alive = next;
    }
  }
  return correct.map((c) => c / test.images.count);
}

/** Per stage: what it is fed at batch 1 (the previous stage's hand-over for one image). */
async function stageFeeds(r: CompileResult, sessions: ModelSession[]): Promise<Record<string, PlainTensor>[]> {
  const spec = r.manifest.input.preprocess;
  const x = new Float32Array(per);
  toTensorInto({ data: test.images.pixels.subarray(0, per), width: test.images.cols, height: test.images.rows, channels: 1 }, spec, x, 0);
  let alive: Record<string, PlainTensor> = { [r.manifest.input.name]: { data: x, dims: [1, 1, test.images.rows, test.images.cols] } };
  const all: Record<string, PlainTensor>[] = [];
  for (const [k, s] of r.manifest.stages.entries()) {
    const feeds: Record<string, PlainTensor> = {};
    for (const name of s.inputs) feeds[name] = alive[name]!;
    all.push(feeds);
    const out = await sessions[k]!.run(feeds);
    const next: Record<string, PlainTensor> = {};
    for (const name of s.carry) next[name] = out[name] ?? alive[name]!;
    alive = next;
  }
  return all;
}

const compiled: { v: Variant; r: CompileResult; sessions: ModelSession[]; feeds: Record<string, PlainTensor>[]; times: number[][] }[] = [];
const results: { variant: Variant; stageBytes: number[]; floatBytes: number[]; top1: number[]; medianMs: number[]; keptFloat: string[]; calibTop1?: { float: number; int8: number }[] }[] = [];
for (const v of variants) {
  const out = path.join(work, v.name.replace(/\W+/g, '-'));
  const t0 = Date.now();
  const r = await compileModel({ model, device: v.device, out, precision: v.precision, ...(v.method ? { calibrationMethod: v.method } : {}) });
  process.stderr.write(`${v.name}: compiled in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  const sessions = await openStages(r);
  compiled.push({ v, r, sessions, feeds: await stageFeeds(r, sessions), times: r.manifest.stages.map(() => []) });
}
// Interleave variants run by run, so a busy neighbour (a training job) slows them all alike.
for (const c of compiled) for (const [k, f] of c.feeds.entries()) for (let w = 0; w < 20; w++) await c.sessions[k]!.run(f);
for (let i = 0; i < runs; i++) {
  for (const c of compiled) {
    for (const [k, f] of c.feeds.entries()) {
      const t0 = process.hrtime.bigint();
      await c.sessions[k]!.run(f);
      c.times[k]!.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const { v, r, sessions, times } of compiled) {
  const top1 = await accuracy(r, sessions);
  results.push({
    variant: v,
    stageBytes: r.report.stages.map((s) => s.bytes),
    floatBytes: r.report.stages.map((s) => s.floatBytes),
    top1,
    medianMs: times.map(median),
    keptFloat: r.report.quantization?.keptFloat.map((k) => k.node) ?? [],
    ...(r.report.quantization ? { calibTop1: r.report.quantization.verify.map((e) => ({ float: e.floatTop1, int8: e.compiledTop1 })) } : {}),
  });
  await Promise.all(sessions.map((s) => s.close()));
}

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
console.log(`model ${model}; Fashion-MNIST test set (${test.images.count} images); latency: median of ${runs} runs at batch 1, 1 thread, ${os.cpus()[0]?.model ?? 'cpu'}`);
console.log('');
console.log(['variant'.padEnd(32), ...results[0]!.top1.map((_, k) => `exit ${k} top-1`.padStart(13)), ...results[0]!.stageBytes.map((_, k) => `stage ${k} bytes`.padStart(14)), ...results[0]!.medianMs.map((_, k) => `stage ${k} ms`.padStart(11)), 'kept float'].join('  '));
for (const r of results) {
  console.log([r.variant.name.padEnd(32), ...r.top1.map((t) => pct(t).padStart(13)), ...r.stageBytes.map((b) => kib(b).padStart(14)), ...r.medianMs.map((m) => m.toFixed(4).padStart(11)), r.keptFloat.join(',') || '-'].join('  '));
}
await fsp.mkdir(path.dirname(jsonOut), { recursive: true });
await fsp.writeFile(jsonOut, JSON.stringify({ model, runs, cpu: os.cpus()[0]?.model, testImages: test.images.count, results }, null, 2) + '\n');
await fsp.rm(work, { recursive: true, force: true });
console.log(`\nwrote ${jsonOut}`);
