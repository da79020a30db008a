// The exit confidence metrics a manifest may name, and what each means: the names and ranges are
// part of the bundle format; the scoring arithmetic lives with the runtime (runtime/exit-policy.ts).

/** Confidence metrics an exit policy may use. */
export const EXIT_METRICS = ['max-prob', 'entropy', 'margin'] as const;
export type ExitMetric = (typeof EXIT_METRICS)[number];

/** What a metric's score means and which way its threshold points. */
export interface ExitMetricInfo {
  metric: ExitMetric;
  summary: string;
  /** 'at-least': exit when score ≥ threshold; 'at-most': exit when score ≤ threshold. */
  exitWhen: 'at-least' | 'at-most';
  /** Inclusive range of the score, hence of valid thresholds. */
  range: readonly [number, number];
}

/**
 * Every metric's meaning, by name.
 *
 * @example
 * ```ts
 * import { EXIT_METRIC_INFO } from 'edgeexit/bundle';
 * EXIT_METRIC_INFO.entropy.exitWhen; // 'at-most'
 * ```
 */
export const EXIT_METRIC_INFO: Readonly<Record<ExitMetric, ExitMetricInfo>> = Object.freeze({
  'max-prob': { metric: 'max-prob', summary: 'largest softmax probability; exit when ≥ threshold', exitWhen: 'at-least', range: [0, 1] },
  entropy: { metric: 'entropy', summary: 'softmax entropy / ln(classes), 0 = certain; exit when ≤ threshold', exitWhen: 'at-most', range: [0, 1] },
  margin: { metric: 'margin', summary: 'top-1 − top-2 softmax probability; exit when ≥ threshold', exitWhen: 'at-least', range: [0, 1] },
});
