// The trial of a flash job: once the new bundle serves live traffic, its per-image latency and
// error count are compared with the bundle it replaced, as measured on this device in the same
// agent moments before. A self-test on golden inputs shows the bundle works; only live traffic
// shows it works as well as the last one on what this device actually sees.
import type { ClassifyObservation, SwappableRunner } from './swappable.js';

/** Calls kept per bundle for the comparison (a ring: the newest win). */
const KEEP_SAMPLES = 512;
/** First calls on a freshly loaded bundle left out: sessions warm up (allocations, caches) on them. */
const WARMUP_CALLS = 5;

export interface TrialPolicy {
  /** How long the new bundle serves before the verdict (ms). */
  durationMs: number;
  /** Roll back when the new p95 per image exceeds the old one by this factor (default 1.5). */
  maxP95Ratio?: number;
  /** Fewer calls than this on either side: no latency verdict (the trial passes on errors alone). */
  minSamples?: number;
}

export interface TrialVerdict {
  ok: boolean;
  reason?: string;
  /** Per-image p95 (ms) before and during the trial, when there were enough calls to say. */
  p95Before?: number;
  p95After?: number;
  calls: number;
  errors: number;
}

function p95(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(0.95 * s.length))]!;
}

/**
 * Per-bundle latency samples of a SwappableRunner, kept while the agent runs so a trial has the
 * old bundle's figures to compare with.
 *
 * @example
 * ```ts
 * import { LatencyWatch } from 'edgeexit/agent';
 * const watch = new LatencyWatch(runner);
 * const verdict = await watch.trial('/var/lib/edgeexit/bundles/<old>', '/var/lib/edgeexit/bundles/<new>', { durationMs: 30_000 });
 * ```
 */
export class LatencyWatch {
  private readonly samples = new Map<string, number[]>();
  private readonly errors = new Map<string, number>();

  constructor(runner: SwappableRunner) {
    runner.observe((o) => this.add(o));
  }

  private add(o: ClassifyObservation): void {
    if (!o.ok) {
      this.errors.set(o.source, (this.errors.get(o.source) ?? 0) + 1);
      return;
    }
    const list = this.samples.get(o.source) ?? [];
    list.push(o.ms / Math.max(1, o.items));
    if (list.length > KEEP_SAMPLES) list.shift();
    this.samples.set(o.source, list);
  }

  /** Forget what `source` did (a bundle starting its trial starts from nothing). */
  reset(source: string): void {
    this.samples.delete(source);
    this.errors.delete(source);
  }

  /** Wait `durationMs` (or until `signal`), then judge `after` against `before`. */
  async trial(before: string | null, after: string, policy: TrialPolicy, signal?: AbortSignal): Promise<TrialVerdict> {
    this.reset(after);
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, policy.durationMs);
      signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
    return this.judge(before, after, policy);
  }

  judge(before: string | null, after: string, policy: TrialPolicy): TrialVerdict {
    const now = (this.samples.get(after) ?? []).slice(WARMUP_CALLS);
    const errors = this.errors.get(after) ?? 0;
    const base = { calls: now.length, errors };
    if (errors > 0) return { ...base, ok: false, reason: `${errors} of ${now.length + errors} classify calls failed on the new bundle during the trial` };
    const old = before ? (this.samples.get(before) ?? []) : [];
    const min = policy.minSamples ?? 5;
    if (now.length < min || old.length < min) return { ...base, ok: true, reason: `too little traffic to compare latency (${old.length} calls before, ${now.length} during the trial; ${min} needed)` };
    const p95Before = p95(old);
    const p95After = p95(now);
    const ratio = policy.maxP95Ratio ?? 1.5;
    const out = { ...base, p95Before, p95After };
    if (p95After > ratio * p95Before) {
      return { ...out, ok: false, reason: `latency regressed: p95 ${p95After.toFixed(2)} ms per image during the trial vs ${p95Before.toFixed(2)} ms before (limit ×${ratio})` };
    }
    return { ...out, ok: true };
  }
}
