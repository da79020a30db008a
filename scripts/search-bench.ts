// Benchmark of the threshold search (`npm run bench:search`): time to search K exits over N
// calibration samples, on synthetic cascades whose exits get better with depth. Prints a table;
// speed lives here, not in timed tests.
import { searchThresholds, type SearchData } from '../src/calibration/search.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

function synthetic(K: number, n: number, seed: number): SearchData {
  const r = rng(seed);
  const d = Float64Array.from({ length: n }, () => r());
  const scores: Float64Array[] = [];
  const correct: Uint8Array[] = [];
  for (let k = 0; k < K; k++) {
    const skill = 0.3 + (0.6 * (k + 1)) / K;
    scores.push(Float64Array.from(d, (x) => Math.min(1, Math.max(0, 1 - x + 0.1 * k + 0.15 * (r() - 0.5)))));
    correct.push(Uint8Array.from(d, (x) => (r() < Math.min(1, skill + 0.5 - x) ? 1 : 0)));
  }
  return { scores, correct, direction: 'at-least' };
}

const rows: string[][] = [['exits', 'samples', 'strategy', 'policies', 'median ms', 'max ms']];
for (const K of [2, 3, 4, 5]) {
  for (const n of [3_000, 10_000]) {
    const d = synthetic(K, n, 11);
    const stage = Array.from({ length: K }, () => 1);
    const target = { kind: 'latency' as const, targetMs: 0.55 * K };
    const times: number[] = [];
    let last: ReturnType<typeof searchThresholds> | undefined;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      last = searchThresholds(d, stage, target);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    rows.push([String(K), String(n), last!.strategy, String(last!.evaluated), times[2]!.toFixed(0), times[4]!.toFixed(0)]);
  }
}
const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
for (const r of rows) console.log(r.map((v, c) => v.padStart(w[c]!)).join('  '));
console.log(`\n${new Date().toISOString()}, node ${process.version}, 5 runs each`);
