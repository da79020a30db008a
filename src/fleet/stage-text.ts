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
  if (stages.length === 0) return null;
  // Written out rather than JSON.stringify of a mapped copy: the collector does this per window,
  // and a number's JSON text is its String() (or null when not finite), so the bytes are the same.
  let text = '[';
  for (let i = 0; i < stages.length; i++) {
    const q = stages[i]!;
    text += `${i === 0 ? '' : ','}[${jsonNumber(q.p50)},${jsonNumber(q.p95)},${jsonNumber(q.p99)}]`;
  }
  return `${text}]`;
}

/** What JSON.stringify writes for a number: its shortest round-trip text, null for NaN and ±Infinity. */
function jsonNumber(v: number): string {
  return Number.isFinite(v) ? String(v) : 'null';
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
