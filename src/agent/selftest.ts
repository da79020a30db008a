// The self-test a bundle passes on this device before it is switched to: it loads as the agent
// would load it (verified, one session per stage, warmed up); each stage's exit on the golden
// inputs the compiler recorded matches within the manifest's tolerance; the time of each stage
// measured here fits a latency budget when one is set; the memory the sessions take fits a
// memory budget when one is set. A bundle compiled before golden I/O existed is checked for
// loading only, and the result says so.
import { decodeGolden, compareGolden, runGoldenChain, type GoldenTensor } from '../bundle/golden.js';
import type { LoadedBundle } from '../bundle/files.js';
import type { Manifest } from '../bundle/manifest.js';
import { createSession, type ModelSession, type PlainTensor } from '../backends/onnxruntime.js';
import { loadBundle, type LoadBundleOptions } from '../runtime/bundle-runner.js';

export interface SelfTestOptions {
  /** How the bundle is loaded (trust, device profile, providers, threads). */
  load: LoadBundleOptions;
  /** Largest time (ms) one stage may take on one golden image, one value or one per stage; unset: not checked. */
  latencyBudgetMs?: number | readonly number[];
  /** Largest growth of this process's resident memory (MiB) from loading the bundle (sessions opened and warmed up); unset: not checked. */
  memoryBudgetMiB?: number;
  /** Timed runs of the golden chain (the median counts); default 5. */
  runs?: number;
  /** Called between the parts (tests kill the process here). */
  onPart?: (part: 'loaded' | 'golden') => Promise<void> | void;
}

export interface SelfTestStage {
  stage: number;
  output: string;
  ok: boolean;
  maxAbsDiff: number;
  /** Median time of the stage on one golden image, measured here. */
  ms: number;
  reason?: string;
}

export interface SelfTestResult {
  ok: boolean;
  /** Why it failed, one line per problem; empty when ok. */
  reasons: string[];
  golden: 'checked' | 'absent';
  stages: SelfTestStage[];
  /** Growth of resident memory from loading the bundle as the agent loads it (at least the stage models' size). */
  memoryMiB: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

function budgetOf(b: SelfTestOptions['latencyBudgetMs'], stage: number): number | undefined {
  return typeof b === 'number' ? b : b?.[stage];
}

async function openSessions(m: Manifest, files: LoadedBundle, load: LoadBundleOptions): Promise<ModelSession[]> {
  const sessions: ModelSession[] = [];
  try {
    for (const s of m.stages) {
      sessions.push(
        await createSession(files.files.get(s.file)!, {
          ...(load.executionProviders ? { executionProviders: load.executionProviders } : {}),
          ...(load.threads !== undefined ? { intraOpNumThreads: load.threads } : {}),
          onWarning: () => {},
        }),
      );
    }
    return sessions;
  } catch (err) {
    await Promise.all(sessions.map((s) => s.close()));
    throw err;
  }
}

/** Compare each recorded stage; the times of `runs` more runs give each stage's median. */
async function checkGolden(m: Manifest, files: LoadedBundle, sessions: ModelSession[], o: SelfTestOptions): Promise<{ stages: SelfTestStage[]; reasons: string[] }> {
  const g = m.golden!;
  const record = decodeGolden(files.files.get(g.file)!, g.file);
  const run = (k: number, feeds: Record<string, unknown>) => sessions[k]!.run(feeds as Record<string, PlainTensor>);
  const first = await runGoldenChain(m, record.input, run);
  // Timed on one image: the agent classifies at batch 1 unless told otherwise.
  const one = { dims: [1, ...record.input.dims.slice(1)], data: record.input.data.subarray(0, record.input.data.length / record.input.dims[0]!) };
  const times = new Map<number, number[]>();
  for (let i = 0; i < (o.runs ?? 5); i++) {
    const { ms } = await runGoldenChain(m, one, run);
    for (const [k, t] of ms) times.set(k, [...(times.get(k) ?? []), t]);
  }
  const reasons: string[] = [];
  const stages = g.stages.map((t): SelfTestStage => {
    const expected = record.outputs.get(t.stage)?.tensor;
    const got: GoldenTensor | undefined = first.outputs.get(t.stage)?.tensor;
    const ms = median(times.get(t.stage) ?? []);
    let r: SelfTestStage;
    if (!expected) r = { stage: t.stage, output: t.output, ok: false, maxAbsDiff: Infinity, ms, reason: `${g.file} holds no expected output for stage ${t.stage}` };
    else if (!got) r = { stage: t.stage, output: t.output, ok: false, maxAbsDiff: Infinity, ms, reason: `stage ${t.stage} gave no float32 '${t.output}'` };
    else {
      const c = compareGolden(got, expected, t.atol, t.rtol);
      r = { stage: t.stage, output: t.output, ok: c.ok, maxAbsDiff: c.maxAbsDiff, ms };
      if (!c.ok) r.reason = c.reason ?? `stage ${t.stage} '${t.output}' differs from the golden output by up to ${c.maxAbsDiff.toPrecision(3)} (element ${c.worstIndex}: got ${got.data[c.worstIndex]}, expected ${expected.data[c.worstIndex]}); allowed ${t.atol} + ${t.rtol}·|expected|`;
    }
    const budget = budgetOf(o.latencyBudgetMs, t.stage);
    if (r.ok && budget !== undefined && !(ms <= budget)) {
      r.ok = false;
      r.reason = `stage ${t.stage} takes ${ms.toFixed(3)} ms on one golden image here (median of ${o.runs ?? 5} runs); the budget is ${budget} ms`;
    }
    if (r.reason) reasons.push(r.reason);
    return r;
  });
  return { stages, reasons };
}

/**
 * Self-test a verified bundle (its folder in the store, and its files as verified) on this device.
 *
 * @example
 * ```ts
 * import { selfTestBundle } from 'edgeexit/agent';
 * const r = await selfTestBundle(dir, files, manifest, { load: { trustDir: '/etc/edgeexit/trust' }, memoryBudgetMiB: 256 });
 * if (!r.ok) console.error(r.reasons.join('\n'));
 * ```
 */
export async function selfTestBundle(dir: string, files: LoadedBundle, m: Manifest, o: SelfTestOptions): Promise<SelfTestResult> {
  const rssBefore = process.memoryUsage().rss;
  const runner = await loadBundle(dir, { ...o.load, onWarning: o.load.onWarning ?? (() => {}) });
  // Measured before the golden sessions open, so it is what the agent will hold. RSS growth can
  // read low when the allocator reuses pages an earlier bundle freed, so the stage models' own
  // size (their weights are held at least once) is the floor; a budget is meant for bundles far
  // over it, not for the last MiB.
  const modelMiB = m.stages.reduce((a, s) => a + s.bytes, 0) / 2 ** 20;
  const memoryMiB = Math.max(modelMiB, (process.memoryUsage().rss - rssBefore) / 2 ** 20);
  let sessions: ModelSession[] = [];
  try {
    await o.onPart?.('loaded');
    const reasons: string[] = [];
    if (o.memoryBudgetMiB !== undefined && memoryMiB > o.memoryBudgetMiB) reasons.push(`the bundle takes ${memoryMiB.toFixed(1)} MiB of memory here; the budget is ${o.memoryBudgetMiB} MiB`);
    if (!m.golden) return { ok: reasons.length === 0, reasons, golden: 'absent', stages: [], memoryMiB };
    // The same providers and threads the runner ended up with, so the figures are the agent's.
    sessions = await openSessions(m, files, { ...o.load, executionProviders: [...runner.executionProviders], ...(runner.threads !== undefined ? { threads: runner.threads } : {}) });
    const golden = await checkGolden(m, files, sessions, o);
    await o.onPart?.('golden');
    const stages = golden.stages;
    reasons.unshift(...golden.reasons);
    return { ok: reasons.length === 0, reasons, golden: 'checked', stages, memoryMiB };
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
    await runner.close();
  }
}
