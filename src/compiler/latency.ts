// Per-stage latency of a compiled bundle on the machine that compiles it: each stage, float and
// compiled, at batch 1 through onnxruntime (src/runtime/ort.ts), one intra-op thread. Float and
// compiled runs are interleaved (alternating which goes first) so that a change in machine load
// or CPU clock hits both alike, and the median of many runs is reported because a few scheduler
// hiccups would drag a mean. These are the compiling host's numbers, not the target device's:
// they show what quantisation buys relative to float, not what the board will measure.
import { createSession, type ModelSession, type PlainTensor } from '../backends/onnxruntime.js';

/** One stage to time: the float version reads `feeds`, the compiled one `compiledFeeds` (default: the same). */
export interface LatencyStage {
  name: string;
  float: Uint8Array;
  compiled: Uint8Array;
  feeds: Record<string, PlainTensor>;
  /** What the compiled stage reads when it differs from `feeds` (int8 codes handed over by int8 stages). */
  compiledFeeds?: Record<string, PlainTensor>;
}

export interface StageLatency {
  stage: string;
  /** Median wall time of one run (at the report's batch size, normally 1), milliseconds. */
  floatMs: number;
  compiledMs: number;
  /** floatMs / compiledMs (> 1: the compiled stage is faster here). */
  speedup: number;
}

export interface LatencyReport {
  /** Where the numbers come from; printed with them. */
  machine: string;
  runs: number;
  warmup: number;
  threads: number;
  batch: number;
  stages: StageLatency[];
}

export const DEFAULT_LATENCY_RUNS = 200;
export const DEFAULT_LATENCY_WARMUP = 20;
export const LATENCY_NOTE = "this machine's numbers (the compiling host), not the target device's";

/**
 * Median of `values` (NaN for none); the input is not reordered.
 *
 * @example
 * ```ts
 * import { median } from 'edgeexit/compiler';
 * median([3, 1, 2]); // 2
 * ```
 */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function timeOnce(session: ModelSession, feeds: Record<string, PlainTensor>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await session.run(feeds);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Time every stage float vs compiled; sessions are opened one stage at a time and closed after.
 *
 * @example
 * ```ts
 * import { measureStageLatency } from 'edgeexit/compiler';
 * const report = await measureStageLatency([{ name: 'exit0', float: floatBytes, compiled: int8Bytes, feeds: { input: image } }], { runs: 100 });
 * ```
 */
export async function measureStageLatency(stages: readonly LatencyStage[], opts: { runs?: number; warmup?: number; machine?: string; /** Batch size of the feeds, for the report (default 1). */ batch?: number } = {}): Promise<LatencyReport> {
  const runs = Math.max(1, opts.runs ?? DEFAULT_LATENCY_RUNS);
  const warmup = Math.max(0, opts.warmup ?? DEFAULT_LATENCY_WARMUP);
  // One thread and sequential execution: the device runs one inference at a time, and thread-pool
  // spin-up on a shared 2-core host would otherwise dominate stages this small.
  const sessionOpts = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' } as const;
  const out: StageLatency[] = [];
  for (const s of stages) {
    const f = await createSession(s.float, sessionOpts);
    let c: ModelSession | undefined;
    try {
      c = await createSession(s.compiled, sessionOpts);
      const cf = s.compiledFeeds ?? s.feeds;
      for (let i = 0; i < warmup; i++) {
        await f.run(s.feeds);
        await c.run(cf);
      }
      const ft: number[] = [];
      const ct: number[] = [];
      for (let i = 0; i < runs; i++) {
        if (i % 2 === 0) {
          ft.push(await timeOnce(f, s.feeds));
          ct.push(await timeOnce(c, cf));
        } else {
          ct.push(await timeOnce(c, cf));
          ft.push(await timeOnce(f, s.feeds));
        }
      }
      const floatMs = median(ft);
      const compiledMs = median(ct);
      out.push({ stage: s.name, floatMs, compiledMs, speedup: compiledMs > 0 ? floatMs / compiledMs : 0 });
    } finally {
      await c?.close();
      await f.close();
    }
  }
  return { machine: opts.machine ?? LATENCY_NOTE, runs, warmup, threads: 1, batch: opts.batch ?? 1, stages: out };
}
