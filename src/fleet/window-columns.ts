// A stored window as both fleet stores read it back: the same columns in SQLite and PostgreSQL,
// except the exit histogram, which SQLite keeps as JSON text and PostgreSQL as an integer array.
import type { WindowRow } from './fleet-store.js';
import { parseStages } from './stage-text.js';

/** The windows table's columns as a row comes back; `H` is how the exit histogram arrives. */
export interface WindowColumns<H> {
  device: string;
  id: number;
  bd_seq: number;
  seq: number;
  window_start: number;
  window_end: number;
  count: number;
  exit_histogram: H;
  latency_p50: number;
  latency_p95: number;
  latency_p99: number;
  joules: number;
  mean_watts: number;
  energy_source: 'sensor' | 'model';
  dropped_windows: number;
  temperature_c: number | null;
  accuracy_correct: number | null;
  accuracy_labelled: number | null;
  stage_latency: string | null;
  manifest_sha256: string | null;
}

/**
 * The WindowRow of a stored row, its exit histogram already decoded by the store.
 *
 * @example
 * ```ts
 * const w = windowFromColumns(row, JSON.parse(row.exit_histogram)); // SQLite
 * ```
 */
export function windowFromColumns(r: WindowColumns<unknown>, exitHistogram: number[]): WindowRow {
  return {
    device: r.device,
    id: r.id,
    bdSeq: r.bd_seq,
    seq: r.seq,
    windowStart: r.window_start,
    windowEnd: r.window_end,
    count: r.count,
    exitHistogram,
    latencyP50: r.latency_p50,
    latencyP95: r.latency_p95,
    latencyP99: r.latency_p99,
    joules: r.joules,
    meanWatts: r.mean_watts,
    energySource: r.energy_source,
    droppedWindows: r.dropped_windows,
    ...(r.temperature_c !== null ? { temperatureC: r.temperature_c } : {}),
    ...(r.accuracy_correct !== null && r.accuracy_labelled !== null ? { accuracy: { correct: r.accuracy_correct, labelled: r.accuracy_labelled } } : {}),
    ...(r.stage_latency !== null ? { stages: parseStages(r.stage_latency) } : {}),
    ...(r.manifest_sha256 !== null ? { manifestSha256: r.manifest_sha256 } : {}),
  };
}
