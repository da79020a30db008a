// Prometheus text exposition (format 0.0.4) of what the fleet store holds, for the collector's
// `/metrics`. Everything is read from the store at scrape time, so a restarted collector exports
// the same totals, and several collectors on one database agree. Base units throughout (seconds,
// joules, watts, degrees Celsius); counters end in `_total`; no sample timestamps (Prometheus stamps the scrape).
//
// Counters here are the store's running totals (FleetStore.totals()): every window stored, once
// (de-duplication already happened), and a --retention-days prune does not lower them, since
// Prometheus reads any drop as a counter reset and rate()/increase() over it would be wrong.
// The gauges and the summary come from the latest stored window.
import { classDrift } from './drift.js';
import type { CounterName, FleetStore } from './fleet-store.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type MetricType = 'counter' | 'gauge' | 'summary';
type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: MetricType;
  samples: { suffix?: string; labels: Labels; value: number }[];
}

// The store's counters as collector_messages_total results. A Record, so a counter added to the
// store without a result label here fails to compile. `gaps` are messages that never arrived,
// not messages handled, so they get their own family.
const RESULT_LABEL: Record<Exclude<CounterName, 'gaps'>, string> = {
  malformed: 'malformed',
  invalid: 'invalid',
  oversized: 'oversized',
  unknownDevice: 'unknown_device',
  duplicates: 'duplicate',
  staleDeaths: 'stale_death',
  foreignTopic: 'foreign_topic',
  clockSkew: 'clock_skew',
  outOfRange: 'out_of_range',
  tooManyExits: 'too_many_exits',
  fleetMismatch: 'fleet_mismatch',
};

/**
 * Label values may hold any UTF-8; the format escapes only backslash, double quote and newline.
 *
 * @example
 * ```ts
 * import { escapeLabelValue } from 'edgeexit/fleet';
 * `edgeexit_device_online{device="${escapeLabelValue('pi "7"')}"} 1`; // device="pi \"7\""
 * ```
 */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and newline (not quotes). */
export function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function formatLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

export function renderFamilies(families: readonly Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) out.push(`${f.name}${s.suffix ?? ''}${formatLabels(s.labels)} ${formatValue(s.value)}`);
  }
  return out.join('\n') + '\n';
}

/**
 * Most series one scrape carries. Every device adds a dozen plus one per exit; past the cap whole
 * devices are left out (counted in edgeexit_collector_devices_omitted), so no fleet, and no device
 * stored before exit histograms were bounded, can swamp Prometheus.
 */
export const DEFAULT_MAX_SERIES = 20_000;
// Series a device adds besides one per exit: 7 per-device families, 3 quantiles, power, dropped, temperature, info.
const SERIES_PER_DEVICE = 14;

export interface RenderOptions {
  /** Cap on series (default DEFAULT_MAX_SERIES). */
  maxSeries?: number;
}

/**
 * The whole exposition; reads the store (the same few queries whatever the fleet's size).
 *
 * @example
 * ```ts
 * import { METRICS_CONTENT_TYPE, openFleetStore, renderMetrics } from 'edgeexit/fleet';
 * const store = openFleetStore('fleet.db', { mustExist: true });
 * res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(await renderMetrics(store, { maxSeries: 5000 }));
 * ```
 */
export async function renderMetrics(store: FleetStore, opts: RenderOptions = {}): Promise<string> {
  const maxSeries = opts.maxSeries ?? DEFAULT_MAX_SERIES;
  let series = 0;
  let omitted = 0;
  // A fixed number of reads over the whole fleet, joined here by device (no query per device).
  const devices = await store.devices();
  const totals = new Map((await store.totals()).map((t) => [t.device, t]));
  const counters = await store.counters();
  const latestWindow = await store.recentWindows(1);
  const temperatures = await store.latestTemperatures();
  const fam = (name: string, type: MetricType, help: string): Family => ({ name, type, help, samples: [] });

  // Latency: the device computes p50/p95/p99 over each window and sends only those, which is what a
  // Prometheus summary is (φ-quantiles over a sliding window, computed by the client), so
  // dashboards and alerts written for client-library summaries work unchanged. The summary carries
  // no _sum/_count: the device sends no latency sum and inventing one would be wrong; the
  // inference count is edgeexit_inferences_total.
  const latency = fam('edgeexit_inference_latency_seconds', 'summary', 'End-to-end inference latency quantiles over the latest stored window, as computed on the device.');
  const inferences = fam('edgeexit_inferences_total', 'counter', 'Inferences in the windows stored (pruned ones included).');
  const exits = fam('edgeexit_exits_total', 'counter', 'Inferences that left at each exit (0 = first) in the windows stored (pruned ones included).');
  const energy = fam('edgeexit_energy_joules_total', 'counter', 'Energy used for inference in the windows stored (pruned ones included), in joules.');
  const power = fam('edgeexit_power_watts', 'gauge', 'Mean power over the latest stored window, in watts.');
  const online = fam('edgeexit_device_online', 'gauge', '1 while the device has a live MQTT session (birth seen, no death of that session), else 0.');
  const info = fam('edgeexit_device_info', 'gauge', 'Always 1; labels say which bundle the device announced in its last birth.');
  const windows = fam('edgeexit_windows_total', 'counter', 'Telemetry windows stored per device (pruned ones included).');
  const dropped = fam('edgeexit_device_dropped_windows_total', 'counter', "Windows the device's outbox discarded when full, as the device last reported.");
  // Accuracy as two counters, not a ratio gauge: a ratio cannot be summed over devices or taken
  // over a time range; rate(correct) / rate(labelled) can.
  const labelled = fam('edgeexit_labelled_inferences_total', 'counter', 'Inferences with a known label (accuracy measured) in the windows stored (pruned ones included).');
  const correct = fam('edgeexit_correct_inferences_total', 'counter', 'Labelled inferences the device got right in the windows stored (pruned ones included).');
  const temperature = fam('edgeexit_temperature_celsius', 'gauge', "Hottest thermal zone at the end of the device's latest stored window that reported one, in degrees Celsius.");
  const lastSeen = fam('edgeexit_device_last_seen_timestamp_seconds', 'gauge', 'When the collector last heard from the device, in Unix seconds.');

  for (const d of devices) {
    const base = { device: d.device, fleet: d.fleet };
    const t = totals.get(d.device);
    const need = SERIES_PER_DEVICE + (t?.exits.length ?? 0);
    if (series + need > maxSeries) {
      omitted++;
      continue;
    }
    series += need;
    const latest = latestWindow.get(d.device)?.[0];
    online.samples.push({ labels: base, value: d.online ? 1 : 0 });
    if (d.birth) info.samples.push({ labels: { ...base, bundle: d.birth.bundle.name, version: d.birth.bundle.version, precision: d.birth.bundle.precision, profile: d.birth.profile }, value: 1 });
    lastSeen.samples.push({ labels: base, value: d.lastSeen / 1000 });
    windows.samples.push({ labels: base, value: t?.windows ?? 0 });
    inferences.samples.push({ labels: base, value: t?.count ?? 0 });
    energy.samples.push({ labels: base, value: t?.joules ?? 0 });
    (t?.exits ?? []).forEach((n, k) => exits.samples.push({ labels: { ...base, exit: String(k) }, value: n }));
    labelled.samples.push({ labels: base, value: t?.labelled ?? 0 });
    correct.samples.push({ labels: base, value: t?.correct ?? 0 });
    const celsius = temperatures.get(d.device);
    if (celsius !== undefined) temperature.samples.push({ labels: base, value: celsius });
    if (latest) {
      for (const [q, ms] of [['0.5', latest.latencyP50], ['0.95', latest.latencyP95], ['0.99', latest.latencyP99]] as const)
        latency.samples.push({ labels: { ...base, quantile: q }, value: ms / 1000 });
      power.samples.push({ labels: base, value: latest.meanWatts });
      dropped.samples.push({ labels: base, value: latest.droppedWindows });
    }
  }

  const messages = fam('edgeexit_collector_messages_total', 'counter', 'Telemetry messages by outcome: stored = metrics windows stored (pruned ones included); unknown_device also counts windows that were stored.');
  messages.samples.push({ labels: { result: 'stored' }, value: [...totals.values()].reduce((a, t) => a + t.windows, 0) });
  for (const [name, result] of Object.entries(RESULT_LABEL)) messages.samples.push({ labels: { result }, value: counters[name as CounterName] });
  const gaps = fam('edgeexit_window_gaps_total', 'counter', 'Metrics messages that never arrived, from per-session sequence numbers.');
  gaps.samples.push({ labels: {}, value: counters.gaps });
  const omittedFam = fam('edgeexit_collector_devices_omitted', 'gauge', `Devices left out of this exposition because it reached its cap of ${maxSeries} series.`);
  omittedFam.samples.push({ labels: {}, value: omitted });

  return renderFamilies([latency, inferences, exits, energy, power, labelled, correct, temperature, online, info, windows, dropped, lastSeen, messages, gaps, omittedFam, ...(await driftFamilies(store))]);
}

// Per class with a baseline: a 0/1 gauge an alert rule fires on (edgeexit_class_drift == 1), and
// the two measures it is judged by, so a dashboard can show how close a class is to its bounds.
// A class without enough windows yet reports 0 and no measures.
async function driftFamilies(store: FleetStore): Promise<Family[]> {
  const drift = await classDrift(store);
  const fam = (name: string, help: string): Family => ({ name, type: 'gauge', help, samples: [] });
  const flag = fam('edgeexit_class_drift', '1 while the hardware class has moved beyond its drift bounds from what its calibration predicted (exit shares or p95 latency), else 0.');
  const shift = fam('edgeexit_class_exit_share_shift_ratio', "Largest difference between a class's recent exit share and the share its calibration predicted (0.1 = 10 percentage points).");
  const ratio = fam('edgeexit_class_p95_latency_ratio', "A class's recent p95 latency divided by the p95 its calibration predicted.");
  for (const c of drift) {
    const labels = { fleet: c.fleet, class: c.deviceClass };
    flag.samples.push({ labels, value: c.drifting ? 1 : 0 });
    if (c.enough && c.exitShiftPp !== null) shift.samples.push({ labels, value: c.exitShiftPp / 100 });
    if (c.enough && c.latencyRatio !== null) ratio.samples.push({ labels, value: c.latencyRatio });
  }
  return [flag, shift, ratio];
}
