// A BundleRunner whose bundle can be replaced while it serves: the agent keeps one of these, and
// an install switches it to the new bundle without a restart. A classify call runs to its end on
// the runner it started on; the old runner is closed once the last such call has finished, so no
// frame is dropped or answered by a closed session.
import type { BundleRunner, ClassifyOptions, ClassifyResult } from '../runtime/bundle-runner.js';

type Classify = BundleRunner['classify'];

/** One classify call as the runner saw it: which bundle served it, how long it took, whether it threw. */
export interface ClassifyObservation {
  source: string;
  ms: number;
  items: number;
  ok: boolean;
}

/**
 * Wraps a runner so `swap()` can replace it in place.
 *
 * @example
 * ```ts
 * import { SwappableRunner } from 'edgeexit/agent';
 * import { loadBundle } from 'edgeexit/runtime';
 * const runner = new SwappableRunner(await loadBundle('/var/lib/edgeexit/bundles/<id>'));
 * // … later, after an install:
 * await runner.swap(await loadBundle('/var/lib/edgeexit/bundles/<new id>'));
 * ```
 */
export class SwappableRunner implements BundleRunner {
  private active: BundleRunner;
  private readonly inFlight = new Map<BundleRunner, { count: number; drained?: () => void }>();
  private closed = false;
  private observer: ((o: ClassifyObservation) => void) | undefined;

  constructor(runner: BundleRunner) {
    this.active = runner;
  }

  /** The runner new calls go to. */
  get current(): BundleRunner {
    return this.active;
  }
  get source(): string {
    return this.active.source;
  }
  get manifest(): BundleRunner['manifest'] {
    return this.active.manifest;
  }
  get signature(): BundleRunner['signature'] {
    return this.active.signature;
  }
  get device(): string | null {
    return this.active.device;
  }
  get executionProviders(): readonly string[] {
    return this.active.executionProviders;
  }
  get threads(): number | undefined {
    return this.active.threads;
  }

  /** Be told of every classify call (a flash job's trial compares bundles' latency with it). */
  observe(fn: ((o: ClassifyObservation) => void) | undefined): void {
    this.observer = fn;
  }

  readonly classify: Classify = async (inputs: Parameters<Classify>[0], opts?: ClassifyOptions): Promise<ClassifyResult> => {
    const runner = this.active;
    const slot = this.inFlight.get(runner) ?? { count: 0 };
    slot.count++;
    this.inFlight.set(runner, slot);
    const t0 = performance.now();
    let ok = false;
    try {
      const r = await runner.classify(inputs, opts);
      ok = true;
      return r;
    } finally {
      this.observer?.({ source: runner.source, ms: performance.now() - t0, items: Array.isArray(inputs) ? inputs.length : 1, ok });
      slot.count--;
      if (slot.count === 0) {
        this.inFlight.delete(runner);
        slot.drained?.();
      }
    }
  };

  /** Send new calls to `next`; resolves once the old runner's calls have finished and it is closed. */
  async swap(next: BundleRunner): Promise<void> {
    if (this.closed) {
      await next.close();
      throw new Error('SwappableRunner: swap after close');
    }
    const old = this.active;
    this.active = next;
    await this.drain(old);
    await old.close();
  }

  private drain(runner: BundleRunner): Promise<void> {
    const slot = this.inFlight.get(runner);
    if (!slot) return Promise.resolve();
    return new Promise((resolve) => {
      const before = slot.drained;
      slot.drained = () => {
        before?.();
        resolve();
      };
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.drain(this.active);
    await this.active.close();
  }
}
