// What one onnxruntime call costs from Node next to the work it does: the floor under every
// early-exit stage, and so the bound on what early exit can buy on a small model. For each zoo
// multi-exit model it cuts, with our own subgraph extractor, sessions that compute from the
// image: the first Conv alone, exit 0 (the first stage), exit 1, and exit 2 alone (the unsplit
// "full" model of `npm run bench`); then times each at batch 1 through src/runtime/ort.ts (the
// native binding path `edgeexit run` uses), one intra-op thread, graph optimisation `all`, the
// sessions interleaved round by round so the machine's phases fall on all alike. Prints per-call
// p50/mean and each one's share of the full model; "if all leave at exit 0" = full / exit 0, the
// most any threshold policy could get at batch 1.
//
//   npm run bench:calls -- [--rounds 20] [--calls 300] [--models fmnist-branchy,fmnist-branchy-wide]
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { encodeModel, extractSubgraph, OnnxGraph, readModel } from '../src/onnx/index.js';
import { createSession, type ModelSession } from '../src/backends/onnxruntime.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const rounds = Number(flag('rounds', '20'));
const calls = Number(flag('calls', '300'));
const models = flag('models', 'fmnist-branchy,fmnist-branchy-wide').split(',');

interface Case {
  model: string;
  what: string;
  session: ModelSession;
  output: string;
  times: number[];
}
const cases: Case[] = [];
for (const name of models) {
  const model = await readModel(path.resolve('models', name, `${name}.onnx`));
  const graph = OnnxGraph.of(model);
  const input = graph.inputs[0]!.name;
  const firstConv = graph.nodes.find((n) => n.opType === 'Conv')!.outputs[0]!;
  const cuts: [string, string][] = [
    ['first Conv alone', firstConv],
    ['exit 0 (stage 0)', 'exit_0'],
    ['exit 1 from the image', 'exit_1'],
    ['exit 2 alone (full model)', 'exit_2'],
  ];
  for (const [what, output] of cuts) {
    const bytes = encodeModel(extractSubgraph(model, [input], [output]));
    const session = await createSession(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
    cases.push({ model: name, what, session, output, times: [] });
  }
}

const x = { data: new Float32Array(784).map((_, i) => ((i * 7919) % 255) / 255 - 0.3), dims: [1, 1, 28, 28] };
for (const c of cases) for (let i = 0; i < 200; i++) await c.session.run({ [c.session.inputNames[0]!]: x }, [c.output]);
for (let r = 0; r < rounds; r++) {
  for (const c of cases) {
    const feeds = { [c.session.inputNames[0]!]: x };
    const outs = [c.output];
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      await c.session.run(feeds, outs);
      c.times.push(performance.now() - t0);
    }
  }
}

const p50 = (t: number[]): number => [...t].sort((a, b) => a - b)[t.length >> 1]!;
const mean = (t: number[]): number => t.reduce((a, b) => a + b, 0) / t.length;
console.log(`${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, Node ${process.version}, ${new Date().toISOString()}; batch 1, 1 thread, ${rounds} rounds × ${calls} calls each, interleaved`);
console.log('');
console.log('| model | session | p50 µs | mean µs | p50 share of full |');
console.log('|---|---|---:|---:|---:|');
for (const name of models) {
  const mine = cases.filter((c) => c.model === name);
  const full = p50(mine.at(-1)!.times);
  for (const c of mine) console.log(`| ${name} | ${c.what} | ${(p50(c.times) * 1000).toFixed(1)} | ${(mean(c.times) * 1000).toFixed(1)} | ${((100 * p50(c.times)) / full).toFixed(1)}% |`);
  console.log(`| ${name} | if all leave at exit 0: full / exit 0 | ${(full / p50(mine[1]!.times)).toFixed(2)}x | | |`);
}
for (const c of cases) await c.session.close();
