// Benchmark of the threshold search (`npm run bench:search`): time to search K exits over N
// calibration samples, on synthetic cascades whose exits get better with depth. Prints a table;
// speed lives here, not in timed tests.
import { searchThresholds, type SearchData } from '../src/calibration/search.js';
import { synthetic as syntheticObs } from '../test/calibration/helpers.js';

// The same synthetic cascades the search tests use.
const synthetic = (K: number, n: number, seed: number): SearchData => ({ ...syntheticObs(K, n, seed), direction: 'at-least' });

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
