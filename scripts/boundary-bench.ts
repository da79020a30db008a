// What stage boundaries cost, and what int8 early exit buys, measured side by side: fmnist-branchy,
// fmnist-branchy-wide and a ResNet-style model with BatchNorm and residual adds
// (test/fixtures/compiler/resnet-bench.onnx, random weights: scripts/make-resnet-bench.py), each
// compiled unsplit (one session computing only its last exit: what a user would otherwise deploy)
// and split at its exits, at fp32 (x86-host), int8 for x86-host (u8s8) and int8 for rpi4 (s8s8).
// The split zoo bundles get exit thresholds calibrated as `npm run bench` does (calibration images,
// lowest measured latency within --max-drop pp of the last exit). Every variant then runs the same
// test images at batch 1, model-only, interleaved chunk by chunk so a busy neighbour slows them
// alike; the tables give the mean of the per-sample latencyMs (as `npm run bench`) and the CPU
// time per image (process.cpuUsage around the calls: on a shared machine it leaves out the time
// other processes hold the core), and ratios of both.
//
// 'split, last exit' is the split bundle opened as a device opens it (thresholds null run on the
// stages joined into one session, model/chain-graph.ts); 'staged, last exit' is the same bundle
// with `chain: false`, stage by stage as before. Each split bundle also runs opened with `fused`
// (the stages as one If-graph session, exit decided inside it, batch 1; `chain: false` so its
// last-exit row is the If-graph's): 'fused, last exit' and 'fused early exit' rows, same thresholds.
//
// Side by side with other code: `--compile-only DIR` compiles the same bundles into DIR and stops
// (run it from a checkout of the old code, e.g. `git worktree add /tmp/base main`, copying this
// script there); `--baseline DIR` then calibrates and runs DIR's bundles in the same process,
// interleaved with this checkout's, and prints new / old per variant.
//
//   npm run bench:boundary -- [--limit 2000] [--rounds 3] [--chunk 250] [--max-drop 1]
//       [--calibration-limit 1000] [--threshold-limit 3000] [--baseline DIR] [--compile-only DIR]
//       [--json .bench/boundary.json] [--precisions fp32,int8-x86,int8-rpi4]
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compileModel } from '../src/compiler/index.js';
import { calibrate } from '../src/calibration/calibrate.js';
import { modelStageLatency } from '../src/calibration/latency.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/data/idx.js';
import { loadDeviceProfile } from '../src/devices/load.js';
import { describeModel } from '../src/model/describe.js';
import { toTensorInto, type TensorData } from '../src/backends/image.js';
import { loadBundle, type BundleRunner, type ClassifyResult } from '../src/runtime/bundle-runner.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined && !args[i + 1]!.startsWith('--') ? args[i + 1]! : dflt;
};
const limit = Number(flag('limit', '2000'));
const rounds = Number(flag('rounds', '3'));
const chunk = Number(flag('chunk', '250'));
const maxDropPp = Number(flag('max-drop', '1'));
const calibrationLimit = Number(flag('calibration-limit', '1000'));
const thresholdLimit = Number(flag('threshold-limit', '3000'));
const baselineDir = flag('baseline', '');
const compileOnly = flag('compile-only', '');
const jsonOut = flag('json', '.bench/boundary.json');
const log = (line: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const loadavg = (): string => os.loadavg().map((x) => x.toFixed(2)).join('/');

const MODELS = [
  { key: 'branchy', file: path.resolve('models/fmnist-branchy/fmnist-branchy.onnx'), calibrated: true },
  { key: 'wide', file: path.resolve('models/fmnist-branchy-wide/fmnist-branchy-wide.onnx'), calibrated: true },
  // Random weights: its accuracy means nothing, so int8 is not held to an accuracy budget and no thresholds are calibrated.
  { key: 'resnet', file: path.resolve('test/fixtures/compiler/resnet-bench.onnx'), calibrated: false },
] as const;
const ALL_PRECISIONS = [
  { key: 'fp32', device: 'x86-host', precision: 'fp32' },
  { key: 'int8 x86', device: 'x86-host', precision: 'int8' },
  { key: 'int8 rpi4', device: 'rpi4', precision: 'int8' },
] as const;
// --precisions fp32,int8-x86 runs a subset (keys with '-' for ' ').
const wantPrec = flag('precisions', '');
const PRECISIONS = wantPrec ? ALL_PRECISIONS.filter((p) => wantPrec.split(',').includes(p.key.replace(' ', '-'))) : ALL_PRECISIONS;
type ModelKey = (typeof MODELS)[number]['key'];
type PrecKey = (typeof ALL_PRECISIONS)[number]['key'];
const bundleName = (m: ModelKey, p: PrecKey, split: boolean): string => `${m}-${p.replace(' ', '-')}-${split ? 'split' : 'unsplit'}`;

async function compileAll(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  for (const m of MODELS) {
    const last = (await describeModel(m.file)).exits.at(-1)!.output;
    for (const p of PRECISIONS) {
      for (const split of [false, true]) {
        const out = path.join(dir, bundleName(m.key, p.key, split));
        await fsp.rm(out, { recursive: true, force: true });
        const int8 = p.precision === 'int8' ? { calibrationLimit, ...(m.calibrated ? {} : { maxAccuracyDrop: 100, mixedPrecision: false }) } : {};
        await compileModel({ model: m.file, device: p.device, out, precision: p.precision, latency: false, ...(split ? {} : { exits: [last] }), ...int8 });
        log(`compiled ${path.basename(out)}`);
      }
    }
  }
}

if (compileOnly) {
  await compileAll(path.resolve(compileOnly));
  log(`bundles in ${compileOnly}; run the bench with --baseline ${compileOnly} from the other checkout`);
  process.exit(0);
}

// ---------------------------------------------------------------- bundles and thresholds
const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeexit-boundary-'));
const sides = [{ side: 'new', dir: work }, ...(baselineDir ? [{ side: 'old', dir: path.resolve(baselineDir) }] : [])];
log(`load ${loadavg()}; compiling into ${work}`);
await compileAll(work);
const calibrationDir = path.resolve('calibration', 'fashion-mnist');
for (const s of sides) {
  for (const m of MODELS.filter((x) => x.calibrated)) {
    for (const p of PRECISIONS) {
      const bundle = path.join(s.dir, bundleName(m.key, p.key, true));
      const c = await calibrate({ bundle, data: calibrationDir, target: { kind: 'accuracy-drop', maxDropPp }, latencySource: 'measure', limit: thresholdLimit, runs: 100, allowMiss: true, out: `${bundle}-calibration` });
      log(`calibrated ${s.side} ${path.basename(bundle)}: thresholds ${c.thresholds.join(', ')}`);
    }
  }
}

// ---------------------------------------------------------------- data
const SPEC = { colorspace: 'gray' as const, size: [28, 28] as [number, number], scale: 1 / 255, mean: [0.286], std: [0.353] };
const test = await loadFashionMnist('test').catch(() => {
  throw new Error(`${FASHION_MNIST_DIR}: the Fashion-MNIST test set is needed (apt-get install dataset-fashion-mnist)`);
});
const n = Math.min(limit, test.images.count);
const x = new Float32Array(n * 784);
for (let i = 0; i < n; i++) toTensorInto({ width: 28, height: 28, channels: 1, data: test.images.pixels.subarray(i * 784, (i + 1) * 784) }, SPEC, x, i * 784);
const labels = Array.from(test.labels.subarray(0, n));

// ---------------------------------------------------------------- variants
interface Variant {
  side: string;
  model: ModelKey;
  prec: PrecKey;
  kind: 'unsplit' | 'split, last exit' | 'staged, last exit' | 'early exit' | 'fused, last exit' | 'fused early exit';
  runner: BundleRunner;
  lat: number;
  cpuMs: number;
  correct: number;
  count: number;
  exitCounts: number[];
}
const variants: Variant[] = [];
const open = (dir: string, o: { fused?: boolean; chain?: boolean } = {}): Promise<BundleRunner> => loadBundle(dir, { device: 'x86-host', threads: 1, allowUnsigned: true, ...o });
for (const s of sides) {
  for (const m of MODELS) {
    for (const p of PRECISIONS) {
      const unsplit = await open(path.join(s.dir, bundleName(m.key, p.key, false)));
      const split = await open(path.join(s.dir, bundleName(m.key, p.key, true)));
      const base = { side: s.side, model: m.key, prec: p.key, lat: 0, cpuMs: 0, correct: 0, count: 0, exitCounts: [] as number[] };
      variants.push({ ...base, kind: 'unsplit', runner: unsplit }, { ...base, kind: 'split, last exit', runner: split, exitCounts: [] });
      if (m.calibrated) variants.push({ ...base, kind: 'early exit', runner: split, exitCounts: [] });
      // The same split bundle stage by stage (both sides), and opened with `fused` (one If-graph session per image at batch 1; new code only).
      const staged = await open(path.join(s.dir, bundleName(m.key, p.key, true)), { chain: false });
      variants.push({ ...base, kind: 'staged, last exit', runner: staged, exitCounts: [] });
      if (s.side === 'new') {
        const fused = await open(path.join(s.dir, bundleName(m.key, p.key, true)), { fused: true, chain: false });
        variants.push({ ...base, kind: 'fused, last exit', runner: fused, exitCounts: [] });
        if (m.calibrated) variants.push({ ...base, kind: 'fused early exit', runner: fused, exitCounts: [] });
      }
    }
  }
}
const optsOf = (v: Variant) => ({ batchSize: 1, ...(v.kind === 'early exit' || v.kind === 'fused early exit' ? {} : { thresholds: null }) });
function absorb(v: Variant, r: ClassifyResult, from: number, cpuMs: number): void {
  for (const it of r.items) {
    if (!it.ok) continue;
    v.lat += it.latencyMs;
    v.count++;
    if (it.classIndex === labels[from + it.index]) v.correct++;
  }
  r.exitCounts.forEach((c, k) => (v.exitCounts[k] = (v.exitCounts[k] ?? 0) + c));
  v.cpuMs += cpuMs;
}
log(`load ${loadavg()}; ${variants.length} variants × ${n} images × ${rounds} round(s), batch 1, interleaved in chunks of ${chunk}`);
const loads = [loadavg()];
// One warm-up pass over a chunk, unrecorded.
for (const v of variants) await v.runner.classify({ data: x.subarray(0, Math.min(n, 64) * 784), dims: [Math.min(n, 64), 1, 28, 28] }, optsOf(v));
for (let r = 0; r < rounds; r++) {
  for (let from = 0; from < n; from += chunk) {
    const to = Math.min(n, from + chunk);
    const t: TensorData = { data: x.subarray(from * 784, to * 784), dims: [to - from, 1, 28, 28] };
    for (const v of variants) {
      const c0 = process.cpuUsage();
      const res = await v.runner.classify(t, optsOf(v));
      const c = process.cpuUsage(c0);
      absorb(v, res, from, (c.user + c.system) / 1000);
    }
  }
  loads.push(loadavg());
  log(`round ${r + 1}/${rounds} done, load ${loadavg()}`);
}

// ---------------------------------------------------------------- report
const find = (side: string, model: ModelKey, prec: PrecKey, kind: Variant['kind']): Variant | undefined =>
  variants.find((v) => v.side === side && v.model === model && v.prec === prec && v.kind === kind);
const mean = (v: Variant): number => v.lat / v.count;
const cpu = (v: Variant): number => v.cpuMs / v.count;
const acc = (v: Variant): number => v.correct / v.count;
const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;
const us = (ms: number): string => (ms * 1000).toFixed(1);
const table = (head: string[], rows: string[][]): string => [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
const out: string[] = [];
const rpi4 = await loadDeviceProfile('rpi4');

out.push('### Split bundle run to its last exit / unsplit model (same precision, batch 1)', '');
const splitRows: string[][] = [];
for (const s of sides) {
  for (const m of MODELS) {
    for (const p of PRECISIONS) {
      const u = find(s.side, m.key, p.key, 'unsplit')!;
      const l = find(s.side, m.key, p.key, 'split, last exit')!;
      const stages = l.runner.manifest.stages.length;
      const f = find(s.side, m.key, p.key, 'fused, last exit');
      const g = find(s.side, m.key, p.key, 'staged, last exit');
      const cells = (v: Variant | undefined): string[] => (v ? [us(cpu(v)), ratio(cpu(v), cpu(u)), ratio(mean(v), mean(u))] : ['—', '—', '—']);
      splitRows.push([s.side, m.key, p.key, String(stages), us(mean(u)), us(mean(l)), ratio(mean(l), mean(u)), us(cpu(u)), us(cpu(l)), ratio(cpu(l), cpu(u)), ...cells(g), ...cells(f)]);
    }
  }
}
out.push(
  table(
    ['code', 'model', 'precision', 'stages', 'unsplit µs (mean latencyMs)', 'split, last exit µs', 'split / unsplit', 'unsplit CPU µs/img', 'split CPU µs/img', 'split / unsplit (CPU)', 'staged CPU µs/img', 'staged / unsplit (CPU)', 'staged / unsplit (mean)', 'fused CPU µs/img', 'fused / unsplit (CPU)', 'fused / unsplit (mean)'],
    splitRows,
  ),
  '',
);

out.push(`### Early exit (thresholds within ${maxDropPp} pp of the last exit on the calibration images) vs the unsplit float model`, '');
const eeRows: string[][] = [];
for (const s of sides) {
  for (const m of MODELS.filter((x) => x.calibrated)) {
    const uf = find(s.side, m.key, 'fp32', 'unsplit')!;
    const ef = find(s.side, m.key, 'fp32', 'early exit')!;
    for (const p of PRECISIONS) {
      const e = find(s.side, m.key, p.key, 'early exit')!;
      // The rpi4 cost model: each stage's estimate at this bundle's precision, weighted by how many samples reached it here.
      const est = modelStageLatency(e.runner.manifest, rpi4).stageMs;
      const reach = est.map((_, k) => e.exitCounts.slice(k).reduce((a, b) => a + b, 0) / e.count);
      const rpiMs = est.reduce((a, ms, k) => a + ms * reach[k]!, 0);
      const estF = modelStageLatency(ef.runner.manifest, rpi4).stageMs;
      const reachF = estF.map((_, k) => ef.exitCounts.slice(k).reduce((a, b) => a + b, 0) / ef.count);
      const rpiF = estF.reduce((a, ms, k) => a + ms * reachF[k]!, 0);
      eeRows.push([
        s.side, m.key, p.key, `${(acc(e) * 100).toFixed(2)}%`, ((acc(e) - acc(uf)) * 100).toFixed(2), us(mean(e)), ratio(mean(uf), mean(e)), ratio(mean(e), mean(ef)), ratio(cpu(uf), cpu(e)), ratio(cpu(e), cpu(ef)),
        e.exitCounts.map((c) => `${((c / e.count) * 100).toFixed(1)}%`).join(' / '), `${rpiMs.toFixed(3)} ms (${ratio(rpiMs, rpiF)})`,
      ]);
      const fe = find(s.side, m.key, p.key, 'fused early exit');
      if (fe) {
        eeRows.push([
          `${s.side} fused`, m.key, p.key, `${(acc(fe) * 100).toFixed(2)}%`, ((acc(fe) - acc(uf)) * 100).toFixed(2), us(mean(fe)), ratio(mean(uf), mean(fe)), ratio(mean(fe), mean(ef)), ratio(cpu(uf), cpu(fe)), ratio(cpu(fe), cpu(ef)),
          fe.exitCounts.map((c) => `${((c / fe.count) * 100).toFixed(1)}%`).join(' / '), '—',
        ]);
      }
    }
  }
}
out.push(
  table(['code', 'model', 'precision', 'top-1', 'Δ pp vs unsplit float', 'mean µs', 'speed-up vs unsplit float', 'time / float early exit', 'speed-up (CPU)', 'time / float early exit (CPU)', 'exits', 'rpi4 cost model (/ float early exit)'], eeRows),
  '',
);

if (baselineDir) {
  out.push('### New code / old code, same variant (< 1: faster now)', '');
  const rows: string[][] = [];
  for (const v of variants.filter((w) => w.side === 'new')) {
    const o = find('old', v.model, v.prec, v.kind === 'fused early exit' ? 'early exit' : v.kind === 'fused, last exit' ? 'staged, last exit' : v.kind)!;
    rows.push([v.model, v.prec, v.kind, us(mean(o)), us(mean(v)), ratio(mean(v), mean(o)), us(cpu(o)), us(cpu(v)), ratio(cpu(v), cpu(o)), `${((acc(v) - acc(o)) * 100).toFixed(2)}`]);
  }
  out.push(table(['model', 'precision', 'variant', 'old µs', 'new µs', 'new / old', 'old CPU µs', 'new CPU µs', 'new / old (CPU)', 'Δ top-1 pp (new − old)'], rows), '');
}
out.push(`Load (os.loadavg 1/5/15 min) at the start and after each round: ${loads.join('; ')}`);
const header = `${n} Fashion-MNIST test images; ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}; onnxruntime-node cpu, 1 intra-op thread, batch 1, model-only; ${rounds} round(s)${baselineDir ? `; old bundles from ${baselineDir}` : ''}`;
console.log(`${header}\n\n${out.join('\n')}`);
await fsp.mkdir(path.dirname(jsonOut), { recursive: true });
await fsp.writeFile(
  jsonOut,
  JSON.stringify({ date: new Date().toISOString(), command: `npm run bench:boundary -- ${args.join(' ')}`.trim(), header, loads, variants: variants.map((v) => ({ side: v.side, model: v.model, precision: v.prec, kind: v.kind, meanMs: mean(v), cpuMs: cpu(v), accuracy: acc(v), exitCounts: v.exitCounts, images: v.count })), markdown: out.join('\n') }, null, 2) + '\n',
);
for (const v of variants) await v.runner.close().catch(() => {});
await fsp.rm(work, { recursive: true, force: true });
console.log(`\nwrote ${jsonOut}`);
