// How fast early exit could ever be on a model, within an accuracy budget: an upper bound on the
// mean speed-up of ANY exit policy (thresholds, learned, or an oracle that knows the labels), at
// batch 1 on this machine. Two measured inputs:
//  - cost: reaching a decision at exit k needs at least exit k's own subgraph from the image (cut
//    out of the model with our subgraph extractor, one onnxruntime session, p50 of interleaved
//    batch-1 calls). A real cascade also pays the exits before k; leaving that out only raises
//    the bound.
//  - correctness: every exit's top-1 on each test image (the float model, all exits at once).
// Any policy sends each image to one exit, so its mean cost is Σ cost(exit of i) / N and its
// accuracy Σ correct(i, exit of i) / N. The cheapest assignment that keeps top-1 within the budget
// of the last exit: start with every image at exit 0, then move images that exit 0 gets wrong to
// the cheapest exit that gets them right, cheapest moves first, until the budget is met (each
// move gains exactly one correct image, so this greedy order is optimal). Its mean cost is
// the least any policy within the budget can have; full-model cost / that mean is the bound.
//
// Second, sharper for the model as it is: the best max-prob threshold cascade (the runtime's
// default rule), thresholds and one softmax temperature searched on the TEST set itself (so it is
// optimistic: a calibrated cascade chooses on other images), with the same lower-bound costs.
//
//   npm run bench:bound -- [--models fmnist-branchy,fmnist-branchy-wide] [--max-drop 0.5] [--rounds 20] [--calls 300]
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { encodeModel, extractSubgraph, OnnxGraph, readModel } from '../src/onnx/index.js';
import { createSession, type ModelSession } from '../src/backends/onnxruntime.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { describeModel } from '../src/model/describe.js';
import { toTensorInto } from '../src/backends/image.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const models = flag('models', 'fmnist-branchy,fmnist-branchy-wide').split(',');
const maxDropPp = Number(flag('max-drop', '0.5'));
const rounds = Number(flag('rounds', '20'));
const calls = Number(flag('calls', '300'));

const test = await loadFashionMnist('test');
const N = test.images.count;

/** Top-1 correctness of every exit on every test image, and its logits, from one session computing all exits. */
async function correctness(file: string, exits: readonly string[]): Promise<{ correct: Uint8Array[]; logits: Float32Array[]; classes: number }> {
  const info = await describeModel(file);
  if (!info.preprocess) throw new Error(`${file}: no edgeexit.preprocess metadata`);
  const s = await createSession(file, { intraOpNumThreads: os.availableParallelism() });
  const correct = exits.map(() => new Uint8Array(N));
  let classes = 0;
  const logits: Float32Array[] = [];
  const B = 500;
  const x = new Float32Array(B * 784);
  for (let from = 0; from < N; from += B) {
    const m = Math.min(B, N - from);
    for (let i = 0; i < m; i++) toTensorInto({ width: 28, height: 28, channels: 1, data: test.images.pixels.subarray((from + i) * 784, (from + i + 1) * 784) }, info.preprocess, x, i * 784);
    const out = await s.run({ [s.inputNames[0]!]: { data: x.subarray(0, m * 784), dims: [m, 1, 28, 28] } }, [...exits]);
    exits.forEach((e, k) => {
      const d = out[e]!.data as Float32Array;
      const c = out[e]!.dims[1]!;
      classes = c;
      logits[k] ??= new Float32Array(N * c);
      logits[k]!.set(d.subarray(0, m * c), from * c);
      for (let i = 0; i < m; i++) {
        let best = 0;
        for (let j = 1; j < c; j++) if (d[i * c + j]! > d[i * c + best]!) best = j;
        correct[k]![from + i] = best === test.labels[from + i] ? 1 : 0;
      }
    });
  }
  await s.close();
  return { correct, logits, classes };
}

/** Max softmax probability of each row at temperature t. */
function maxProbs(logits: Float32Array, c: number, t: number): Float64Array {
  const out = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let m = -Infinity;
    for (let j = 0; j < c; j++) m = Math.max(m, logits[i * c + j]!);
    let z = 0;
    for (let j = 0; j < c; j++) z += Math.exp((logits[i * c + j]! - m) / t);
    out[i] = 1 / z;
  }
  return out;
}

/** The fastest max-prob threshold cascade within the budget, searched on these very images (see the header). */
function bestThresholds(correct: readonly Uint8Array[], logits: readonly Float32Array[], c: number, cost: readonly number[], target: number): { meanUs: number; shares: number[]; t: number[]; temperature: number } | undefined {
  const K = cost.length;
  let best: { meanUs: number; shares: number[]; t: number[]; temperature: number } | undefined;
  const grid = (p: Float64Array, n: number): number[] => {
    const s = Float64Array.from(p).sort();
    return [...new Set(Array.from({ length: n }, (_, q) => s[Math.min(N - 1, Math.floor((q / n) * N))]!)), 1.01];
  };
  for (const temperature of [0.5, 1, 1.5, 2, 3]) {
    const p = logits.slice(0, K - 1).map((l) => maxProbs(l, c, temperature));
    const g0 = grid(p[0]!, 200);
    const g1 = K > 2 ? grid(p[1]!, 60) : [1.01];
    for (const t0 of g0) {
      for (const t1 of g1) {
        let good = 0;
        let total = 0;
        const shares = [0, 0, 0];
        for (let i = 0; i < N; i++) {
          const k = p[0]![i]! >= t0 ? 0 : K > 2 && p[1]![i]! >= t1 ? 1 : K - 1;
          good += correct[k]![i]!;
          total += cost[k]!;
          shares[k]!++;
        }
        if (good >= target && (!best || total / N < best.meanUs)) best = { meanUs: total / N, shares: shares.slice(0, K).map((s) => s / N), t: K > 2 ? [t0, t1] : [t0], temperature };
      }
    }
  }
  return best;
}

/** p50 µs of each exit's subgraph from the image, batch 1, interleaved round by round. */
async function costs(file: string, exits: readonly string[]): Promise<number[]> {
  const model = await readModel(file);
  const input = OnnxGraph.of(model).inputs[0]!.name;
  const sessions: ModelSession[] = [];
  for (const e of exits) sessions.push(await createSession(encodeModel(extractSubgraph(model, [input], [e])), { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' }));
  const x = { data: new Float32Array(784).map((_, i) => ((i * 7919) % 255) / 255 - 0.3), dims: [1, 1, 28, 28] };
  const times = exits.map(() => [] as number[]);
  for (const [k, s] of sessions.entries()) for (let i = 0; i < 200; i++) await s.run({ [input]: x }, [exits[k]!]);
  for (let r = 0; r < rounds; r++) {
    for (const [k, s] of sessions.entries()) {
      for (let i = 0; i < calls; i++) {
        const t0 = performance.now();
        await s.run({ [input]: x }, [exits[k]!]);
        times[k]!.push(performance.now() - t0);
      }
    }
  }
  for (const s of sessions) await s.close();
  return times.map((t) => [...t].sort((a, b) => a - b)[t.length >> 1]! * 1000);
}

/** The cheapest assignment of images to exits within the budget (see the header). */
function bound(correct: readonly Uint8Array[], cost: readonly number[], target: number): { meanUs: number; shares: number[]; correct: number } {
  const K = cost.length;
  const exitOf = new Uint8Array(N);
  let good = 0;
  for (let i = 0; i < N; i++) good += correct[0]![i]!;
  // Moves: image i (wrong at exit 0) to the cheapest exit k > 0 that gets it right; costs are increasing in k.
  const moves: { i: number; k: number; extra: number }[] = [];
  for (let i = 0; i < N; i++) {
    if (correct[0]![i]) continue;
    for (let k = 1; k < K; k++) {
      if (correct[k]![i]) {
        moves.push({ i, k, extra: cost[k]! - cost[0]! });
        break;
      }
    }
  }
  moves.sort((a, b) => a.extra - b.extra);
  for (const mv of moves) {
    if (good >= target) break;
    exitOf[mv.i] = mv.k;
    good++;
  }
  if (good < target) throw new Error(`no assignment reaches ${target} correct images (at most ${good})`);
  let total = 0;
  const shares = new Array<number>(K).fill(0);
  for (let i = 0; i < N; i++) {
    total += cost[exitOf[i]!]!;
    shares[exitOf[i]!]!++;
  }
  return { meanUs: total / N, shares: shares.map((s) => s / N), correct: good };
}

console.log(`${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, Node ${process.version}, ${new Date().toISOString()}, load ${os.loadavg().map((l) => l.toFixed(2)).join('/')}; Fashion-MNIST test set (${N} images); costs: p50 of batch-1 calls, 1 thread, ${rounds} rounds × ${calls} calls, interleaved`);
console.log('');
console.log(`| model | per-exit top-1 | exit subgraph p50 µs (from the image) | label-knowing bound within ${maxDropPp} pp: mean µs | its exit shares | **speed-up bound** (full / mean) | best max-prob thresholds on the test set: mean µs | their exit shares | **their speed-up** |`);
console.log('|---|---|---|---:|---|---:|---:|---|---:|');
for (const name of models) {
  const file = path.resolve('models', name, `${name}.onnx`);
  const exits = (await describeModel(file)).exits.map((e) => e.output);
  const { correct, logits, classes } = await correctness(file, exits);
  const cost = await costs(file, exits);
  const acc = correct.map((c) => c.reduce((a, b) => a + b, 0));
  const target = Math.ceil(acc.at(-1)! - (maxDropPp / 100) * N - 1e-9);
  const b = bound(correct, cost, target);
  const th = bestThresholds(correct, logits, classes, cost, target);
  const pc = (xs: number[]): string => xs.map((s) => `${(100 * s).toFixed(1)}%`).join(' / ');
  console.log(
    `| ${name} | ${acc.map((a) => `${((100 * a) / N).toFixed(2)}%`).join(' / ')} | ${cost.map((c) => c.toFixed(1)).join(' / ')} | ${b.meanUs.toFixed(1)} | ${pc(b.shares)} | ${(cost.at(-1)! / b.meanUs).toFixed(2)}x | ` +
      (th ? `${th.meanUs.toFixed(1)} (T ${th.temperature}, thresholds ${th.t.map((t) => t.toFixed(3)).join(', ')}) | ${pc(th.shares)} | ${(cost.at(-1)! / th.meanUs).toFixed(2)}x |` : 'none within the budget | — | — |'),
  );
}
console.log('');
console.log(`Any exit policy's mean cost is at least the label-knowing bound's (it pays at least the subgraph of the exit it takes, and must be right on as many images), so no policy within ${maxDropPp} pp beats that speed-up at batch 1 on this machine. The threshold column is what the runtime's max-prob rule could reach with these exits if its thresholds were tuned on the test set itself, still at lower-bound costs (a cascade also pays the stages before its exit).`);
