// How both fleet stores keep a window's per-stage latency: compact rows [p50, p95, p99] as JSON
// text (the same text in SQLite and PostgreSQL), NULL for a window that carried none.
import type { StageQuantiles } from './fleet-store.js';

/**
 * The stored text of a window's stage quantiles, or null when it has none.
 *
 * @example
 * ```ts
 * stagesJson([{ p50: 0.1, p95: 0.2, p99: 0.3 }]); // '[[0.1,0.2,0.3]]'
 * ```
 */
export function stagesJson(stages: readonly StageQuantiles[]): string | null {
  return stages.length ? JSON.stringify(stages.map((q) => [q.p50, q.p95, q.p99])) : null;
}

/**
 * The stage quantiles back from their stored text.
 *
 * @example
 * ```ts
 * parseStages('[[0.1,0.2,0.3]]'); // [{ p50: 0.1, p95: 0.2, p99: 0.3 }]
 * ```
 */
export function parseStages(text: string): StageQuantiles[] {
  return (JSON.parse(text) as [number, number, number][]).map(([p50, p95, p99]) => ({ p50, p95, p99 }));
}
