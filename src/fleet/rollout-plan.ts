// The rollout engine's pure half: parse the operator's flags, split a fleet into a canary and
// waves per hardware class, judge gates on cohort statistics, and advance a rollout's record one
// tick given what devices reported. No I/O here: the driver (rollout.ts) reads the broker and the
// store, calls `advanceRollout`, publishes the jobs it asks for and saves the record it returns,
// so every decision can be tested without a broker and replayed after a restart.
//
// Each hardware class (the device profile its birth names) is its own track: canary, then waves.
// A class whose canary regresses aborts and rolls back alone; the other classes go on, because a
// bundle that is slow on one board says nothing about the others.
import type { JobState } from '../agent/job-protocol.js';
import { InputError, formatProblem } from '../util/errors.js';

// ---- flags ----

/** `5%` (of each class) or `3` (devices per class). */
export type CanarySize = { kind: 'percent'; value: number } | { kind: 'count'; value: number };

export type GateMetric = 'p95' | 'energy' | 'accuracy' | 'errors' | `exit${number}`;

/**
 * One gate: `metric op limit unit`, updated cohort against control cohort.
 * unit `x`: ratio updated/control; `pp`: difference in percentage points; `%`: relative change in percent.
 */
export interface Gate {
  text: string;
  metric: GateMetric;
  op: '<' | '>';
  limit: number;
  unit: 'x' | 'pp' | '%';
}

export interface RolloutSpec {
  canary: CanarySize;
  /** Cumulative share of each class updated after each wave (ascending, last 1). */
  waves: number[];
  /** Share of finished devices in a class that failed, above which the class aborts (0..1). */
  abortFailureRate: number;
  /** Finished devices a class needs before the failure rate counts. */
  minDevices: number;
  gates: Gate[];
  /** How long updated devices run (and report) after a step committed before its gates are judged. */
  windowMs: number;
  /** Devices with a job out at once, whole rollout. */
  maxConcurrent: number;
  /** A device with no final state this long after its job went out is timed out (transient). */
  stepTimeoutMs: number;
  /** The whole rollout aborts after this long. */
  overallTimeoutMs: number;
  /** Retries of a transient failure per device, with backoff `retryBackoffMs × 2^(try−1)`. */
  maxRetries: number;
  retryBackoffMs: number;
  /** Trial length the jobs ask devices for (device default when absent). */
  trialMs?: number;
}

export const DEFAULT_SPEC: RolloutSpec = {
  canary: { kind: 'percent', value: 0.05 },
  waves: [0.1, 0.5, 1],
  abortFailureRate: 0.1,
  minDevices: 5,
  gates: [],
  windowMs: 600_000,
  maxConcurrent: 50,
  stepTimeoutMs: 900_000,
  overallTimeoutMs: 86_400_000,
  maxRetries: 3,
  retryBackoffMs: 30_000,
};

function bad(where: string, expected: string, got: string, fix: string): InputError {
  return new InputError(formatProblem({ where, expected, got, fix }));
}

/**
 * `10%` → 0.1 (0% to 100%).
 *
 * @example parsePercent('10%', '--abort-failure-rate') // 0.1
 */
export function parsePercent(text: string, where: string): number {
  const m = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
  const v = m ? Number(m[1]) / 100 : NaN;
  if (!(v >= 0 && v <= 1)) throw bad(where, 'a percentage from 0% to 100%', text, `e.g. ${where} 10%`);
  return v;
}

/**
 * `5%` or `3`.
 *
 * @example parseCanary('5%') // { kind: 'percent', value: 0.05 }
 */
export function parseCanary(text: string): CanarySize {
  if (text.trim().endsWith('%')) {
    const value = parsePercent(text, '--canary');
    if (value <= 0) throw bad('--canary', 'more than 0%', text, 'e.g. --canary 5%');
    return { kind: 'percent', value };
  }
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw bad('--canary', 'a share (5%) or a device count per class (3)', text, 'e.g. --canary 5% or --canary 2');
  return { kind: 'count', value: n };
}

/**
 * `10%,50%,100%`: ascending cumulative shares ending at 100%.
 *
 * @example parseWaves('10%,50%,100%') // [0.1, 0.5, 1]
 */
export function parseWaves(text: string): number[] {
  const waves = text.split(',').map((s) => parsePercent(s, '--waves'));
  const ascending = waves.every((w, i) => w > 0 && (i === 0 || w > waves[i - 1]!));
  if (!ascending || waves[waves.length - 1] !== 1) throw bad('--waves', 'ascending shares ending at 100%', text, 'e.g. --waves 10%,50%,100%');
  return waves;
}

/**
 * `p95<1.1x`, `energy<1.2x`, `accuracy>-0.5pp`, `errors<2pp`, `exit0>-5pp`, `p95<+10%`.
 *
 * @example parseGate('p95<1.1x') // { metric: 'p95', op: '<', limit: 1.1, unit: 'x', text: 'p95<1.1x' }
 */
export function parseGate(text: string): Gate {
  const m = /^(p95|energy|accuracy|errors|exit\d+)\s*([<>])\s*([+-]?\d+(?:\.\d+)?)\s*(x|pp|%)$/.exec(text.trim());
  if (!m) throw bad('--gate', '<metric><op><number><unit>: metric p95, energy, accuracy, errors or exitK; op < or >; unit x (ratio), pp (points) or % (relative)', text, 'e.g. --gate p95<1.1x --gate accuracy>-0.5pp');
  return { text: text.trim(), metric: m[1] as GateMetric, op: m[2] as '<' | '>', limit: Number(m[3]), unit: m[4] as Gate['unit'] };
}

/**
 * `10m`, `30s`, `2h`, `500ms` → milliseconds.
 *
 * @example parseDuration('10m', '--window') // 600000
 */
export function parseDuration(text: string, where: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!m) throw bad(where, 'a duration: 500ms, 30s, 10m, 2h', text, `e.g. ${where} 10m`);
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms']);
}

// ---- plan ----

export interface FleetDevice {
  device: string;
  /** Hardware class: the device profile its birth names. */
  class: string;
  /** The bundle it runs now (manifest SHA-256), from its birth or job state. */
  bundle: string | null;
}

export interface PlanStep {
  /** `canary`, `wave 1`, … */
  name: string;
  devices: string[];
}

export interface ClassPlan {
  class: string;
  steps: PlanStep[];
  /** Already on the target bundle: nothing to do. */
  skipped: string[];
}

/**
 * Split each class into its canary and waves. Devices are taken in id order, so a plan is the same
 * every time; a device already on `target` is skipped. Waves are cumulative shares of the class.
 *
 * @example
 * ```ts
 * const plan = planRollout(devices, 'ab12…', { ...DEFAULT_SPEC, canary: { kind: 'count', value: 1 } });
 * plan.map((c) => `${c.class}: ${c.steps.map((s) => s.devices.length).join(' → ')}`);
 * ```
 */
export function planRollout(devices: readonly FleetDevice[], target: string, spec: Pick<RolloutSpec, 'canary' | 'waves'>): ClassPlan[] {
  const byClass = new Map<string, FleetDevice[]>();
  for (const d of [...devices].sort((a, b) => a.device.localeCompare(b.device))) byClass.set(d.class, [...(byClass.get(d.class) ?? []), d]);
  return [...byClass.keys()].sort().map((cls) => {
    const all = byClass.get(cls)!;
    const todo = all.filter((d) => d.bundle !== target).map((d) => d.device);
    const n = todo.length;
    const canaryN = Math.min(n, spec.canary.kind === 'count' ? spec.canary.value : Math.max(1, Math.ceil(spec.canary.value * n)));
    const steps: PlanStep[] = [];
    if (canaryN > 0) steps.push({ name: 'canary', devices: todo.slice(0, canaryN) });
    let done = canaryN;
    spec.waves.forEach((share, i) => {
      const upTo = Math.min(n, Math.ceil(share * n));
      if (upTo > done) steps.push({ name: `wave ${i + 1}`, devices: todo.slice(done, upTo) });
      done = Math.max(done, upTo);
    });
    return { class: cls, steps, skipped: all.filter((d) => d.bundle === target).map((d) => d.device) };
  });
}

// ---- gates ----

/** What the cohort statistics read of a stored window (a WindowRow has these). */
export interface StatsWindow {
  count: number;
  joules: number;
  latencyP95: number;
  exitHistogram: number[];
  accuracy?: { correct: number; labelled: number };
}

/** What a cohort's stored windows say, over one stretch of time. */
export interface CohortStats {
  devices: number;
  /** Devices that sent no window in the stretch (silent: crashed, offline, stuck). */
  silent: number;
  windows: number;
  count: number;
  /** Count-weighted mean of the windows' end-to-end p95 (ms). */
  p95Ms: number | null;
  /** Joules per inference. */
  energyJ: number | null;
  /** Share of inferences leaving at each exit. */
  exitShares: number[];
  /** Share right among labelled inferences; null when none was labelled. */
  accuracy: number | null;
}

/**
 * Sum windows per cohort. `byDevice`: each device's windows in the stretch (empty: silent).
 *
 * @example cohortStats(new Map([['pi-1', windows]])).p95Ms
 */
export function cohortStats(byDevice: ReadonlyMap<string, readonly StatsWindow[]>): CohortStats {
  let windows = 0, count = 0, joules = 0, p95w = 0, labelled = 0, correct = 0, silent = 0;
  const exits: number[] = [];
  for (const rows of byDevice.values()) {
    if (rows.length === 0) silent++;
    for (const w of rows) {
      windows++;
      count += w.count;
      joules += w.joules;
      p95w += w.latencyP95 * w.count;
      w.exitHistogram.forEach((n, k) => (exits[k] = (exits[k] ?? 0) + n));
      labelled += w.accuracy?.labelled ?? 0;
      correct += w.accuracy?.correct ?? 0;
    }
  }
  return {
    devices: byDevice.size,
    silent,
    windows,
    count,
    p95Ms: count > 0 ? p95w / count : null,
    energyJ: count > 0 ? joules / count : null,
    exitShares: Array.from(exits, (n) => (count > 0 ? (n ?? 0) / count : 0)),
    accuracy: labelled > 0 ? correct / labelled : null,
  };
}

export interface GateResult {
  gate: string;
  /** pass, fail, or unknown (a side has no data for it: not judged, says why). */
  verdict: 'pass' | 'fail' | 'unknown';
  updated: number | null;
  control: number | null;
  /** The compared quantity in the gate's unit (ratio, points or percent). */
  value: number | null;
  reason: string;
}

function metricOf(s: CohortStats, m: GateMetric): number | null {
  if (m === 'p95') return s.p95Ms;
  if (m === 'energy') return s.energyJ;
  if (m === 'accuracy') return s.accuracy;
  if (m === 'errors') return s.devices > 0 ? s.silent / s.devices : null;
  const k = Number(m.slice(4));
  return s.count > 0 ? (s.exitShares[k] ?? 0) : null;
}

const fmt = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(3) : x.toPrecision(3));

/**
 * Judge each gate on the updated cohort against the control cohort.
 *
 * @example evaluateGates([parseGate('p95<1.1x')], updated, control)[0].verdict // 'fail' when updated is 2x slower
 */
export function evaluateGates(gates: readonly Gate[], updated: CohortStats, control: CohortStats | null): GateResult[] {
  return gates.map((g) => {
    const u = metricOf(updated, g.metric);
    const c = control ? metricOf(control, g.metric) : null;
    if (u === null || c === null) {
      const side = u === null ? 'updated devices' : 'control cohort';
      return { gate: g.text, verdict: 'unknown', updated: u, control: c, value: null, reason: `${g.metric}: no data from the ${side} yet` };
    }
    let value: number;
    if (g.unit === 'x') value = c > 0 ? u / c : u > 0 ? Infinity : 1;
    else if (g.unit === 'pp') value = (u - c) * 100;
    else value = c !== 0 ? ((u - c) / Math.abs(c)) * 100 : 0;
    const ok = g.op === '<' ? value < g.limit : value > g.limit;
    const unit = g.unit === 'x' ? 'x' : g.unit;
    return {
      gate: g.text,
      verdict: ok ? 'pass' : 'fail',
      updated: u,
      control: c,
      value,
      reason: `${g.metric} updated ${fmt(u)} vs control ${fmt(c)}: ${fmt(value)}${unit}, limit ${g.op}${g.limit}${unit}`,
    };
  });
}

// ---- the rollout record and one tick of it ----

/** Where a device stands in a rollout. */
export type DevicePhase = 'waiting' | 'updating' | 'updated' | 'failed' | 'rolling-back' | 'rolled-back' | 'rollback-failed' | 'skipped';

export interface RolloutDevice {
  class: string;
  /** Index into the class's steps; -1 when skipped. */
  step: number;
  /** Bundle it ran before (its rollback target). */
  from: string | null;
  phase: DevicePhase;
  /** Job id sent to it last (update or rollback). */
  job?: string;
  /** Jobs sent in the current phase (1 + retries). */
  attempt: number;
  /** The job went out to the broker (false: saved but not yet published; a restarted driver publishes it). */
  published: boolean;
  /** Last job state it reported for `job`, and why. */
  state?: JobState;
  reason?: string;
  /** When the current job went out (or the device entered its phase). */
  since: number;
  /** A transient failure waits until then before the next try. */
  nextTryAt?: number;
  committedAt?: number;
}

export interface StepRecord extends PlanStep {
  openedAt?: number;
  /** Every device finished (updated or failed) at this time. */
  doneAt?: number;
  gates?: GateResult[];
  /** When the gates were judged and held. */
  passedAt?: number;
}

export interface ClassTrack {
  status: 'running' | 'completed' | 'aborted';
  /** The step now running (steps.length when all passed). */
  current: number;
  steps: StepRecord[];
  reason?: string;
  /** The class's windows just before the rollout: the control when no device is left on the old bundle. */
  baseline: CohortStats | null;
}

export type RolloutStatus = 'running' | 'paused' | 'completed' | 'aborted' | 'partial';

export interface BundleInfo {
  bundle: string;
  model: { name: string; version: string };
  manifest: { sha256: string; bytes: number };
  signature: { sha256: string; bytes: number };
}

export interface RolloutRecord {
  v: 1;
  id: string;
  fleet: string;
  createdAt: number;
  updatedAt: number;
  target: BundleInfo;
  /** Bundles devices may be rolled back to, by id (the operator passed them with --previous). */
  previous: Record<string, BundleInfo>;
  spec: RolloutSpec;
  status: RolloutStatus;
  reason?: string;
  /** Last operator command (pause/resume/abort) applied, by its sequence number in the store. */
  commandSeq: number;
  classes: Record<string, ClassTrack>;
  devices: Record<string, RolloutDevice>;
  /** Devices sent the target bundle so far (each counted once; "devices touched"). */
  touched: number;
}

/**
 * A new rollout record from a plan.
 *
 * @example const r = newRollout({ id, fleet: 'lab', target, previous: {}, spec, plan, devices, baselines: {}, now: Date.now() });
 */
export function newRollout(o: { id: string; fleet: string; target: BundleInfo; previous: Record<string, BundleInfo>; spec: RolloutSpec; plan: readonly ClassPlan[]; devices: readonly FleetDevice[]; baselines: Record<string, CohortStats | null>; now: number }): RolloutRecord {
  const from = new Map(o.devices.map((d) => [d.device, d.bundle]));
  const devices: Record<string, RolloutDevice> = {};
  const classes: Record<string, ClassTrack> = {};
  for (const c of o.plan) {
    classes[c.class] = { status: c.steps.length ? 'running' : 'completed', current: 0, steps: c.steps.map((s) => ({ ...s })), baseline: o.baselines[c.class] ?? null };
    c.steps.forEach((s, i) => s.devices.forEach((d) => (devices[d] = { class: c.class, step: i, from: from.get(d) ?? null, phase: 'waiting', attempt: 0, published: false, since: o.now })));
    for (const d of c.skipped) devices[d] = { class: c.class, step: -1, from: o.target.bundle, phase: 'skipped', attempt: 0, published: true, since: o.now, reason: 'already on the target bundle' };
  }
  return { v: 1, id: o.id, fleet: o.fleet, createdAt: o.now, updatedAt: o.now, target: o.target, previous: o.previous, spec: o.spec, status: 'running', commandSeq: 0, classes, devices, touched: 0 };
}

/** A job state as the driver saw it for a device (the last retained job/state). */
export interface SeenState {
  job: string | null;
  state: JobState;
  reason?: string;
  active: string | null;
}

export interface TickInput {
  now: number;
  states: ReadonlyMap<string, SeenState>;
  /** Gate results per class, for the classes `gatesDue` named (absent: not judged this tick). */
  gates?: ReadonlyMap<string, GateResult[]>;
  /** An operator command not applied yet. */
  command?: { seq: number; command: 'pause' | 'resume' | 'abort' };
}

export interface JobOrder {
  device: string;
  job: string;
  /** The target bundle, or (rollback) the device's previous one. */
  bundle: BundleInfo;
  rollback: boolean;
}

/**
 * Whether a failed job is worth trying again: a refusal (rejected), the device's own verdict on
 * the bundle (rolled back after its trial, a self-test or golden mismatch) and an operator's cancel
 * are not; a download that broke off, a time-out, a device that went quiet are.
 *
 * @example isPermanent('rejected', 'incompatible with this device') // true
 */
export function isPermanent(state: JobState, reason = ''): boolean {
  if (state === 'rejected' || state === 'rolled-back' || state === 'canceled') return true;
  if (state === 'failed') return /self-test|golden|incompatible|signature|older than|not trust/i.test(reason);
  return false;
}

function jobId(r: RolloutRecord, kind: 'u' | 'rb', attempt: number): string {
  return `${r.id}-${kind}${attempt}`;
}

const ACTIVE: readonly DevicePhase[] = ['updating', 'rolling-back'];

/**
 * The classes whose current step finished and baked `windowMs`: the driver computes their cohort
 * statistics and passes gate results in the next `advanceRollout`.
 *
 * @example gatesDue(record, Date.now()) // ['rpi4']: judge rpi4's canary now
 */
export function gatesDue(r: RolloutRecord, now: number): string[] {
  if (r.status !== 'running') return [];
  return Object.entries(r.classes)
    .filter(([, t]) => t.status === 'running' && t.steps[t.current]?.doneAt !== undefined && now >= t.steps[t.current]!.doneAt! + r.spec.windowMs)
    .map(([c]) => c);
}

/**
 * The devices of a class whose windows are the updated cohort (on the target, committed) and the control (not yet sent it).
 *
 * @example cohortsOf(record, 'rpi4').control.length // devices of rpi4 still on the old bundle
 */
export function cohortsOf(r: RolloutRecord, cls: string): { updated: { device: string; since: number }[]; control: string[] } {
  const mine = Object.entries(r.devices).filter(([, d]) => d.class === cls);
  return {
    updated: mine.filter(([, d]) => d.phase === 'updated').map(([device, d]) => ({ device, since: d.committedAt ?? d.since })),
    control: mine.filter(([, d]) => d.phase === 'waiting').map(([device]) => device),
  };
}

/**
 * One tick: apply an operator command, read devices' reports, retry or fail, judge finished steps
 * (failure rate, gates), abort (rolling back) or open the next step, and say which jobs to publish.
 * Returns a new record; `r` is not changed.
 *
 * @example
 * ```ts
 * const { record, orders } = advanceRollout(record, { now: Date.now(), states });
 * for (const o of orders) await publish(o);
 * ```
 */
export function advanceRollout(r0: RolloutRecord, input: TickInput): { record: RolloutRecord; orders: JobOrder[] } {
  const r: RolloutRecord = structuredClone(r0);
  const now = input.now;
  r.updatedAt = now;
  if (input.command && input.command.seq > r.commandSeq) applyCommand(r, input.command.command, now);
  if (input.command) r.commandSeq = Math.max(r.commandSeq, input.command.seq);
  if ((r.status === 'running' || r.status === 'paused') && now - r.createdAt > r.spec.overallTimeoutMs) {
    for (const cls of Object.keys(r.classes)) abortClass(r, cls, `overall timeout ${r.spec.overallTimeoutMs} ms passed`, now);
  }
  for (const [device, d] of Object.entries(r.devices)) readReport(r, device, d, input.states.get(device), now);
  for (const [cls, t] of Object.entries(r.classes)) if (t.status === 'running') judgeClass(r, cls, t, input.gates?.get(cls), now);
  const orders = r.status === 'running' || r.status === 'paused' ? sendJobs(r, now, input.states) : [];
  settle(r);
  return { record: r, orders };
}

function applyCommand(r: RolloutRecord, command: 'pause' | 'resume' | 'abort', now: number): void {
  if (command === 'pause' && r.status === 'running') r.status = 'paused';
  else if (command === 'resume' && r.status === 'paused') r.status = 'running';
  else if (command === 'abort' && (r.status === 'running' || r.status === 'paused')) {
    for (const cls of Object.keys(r.classes)) abortClass(r, cls, 'aborted by the operator', now);
    r.status = 'running';
  }
}

function readReport(r: RolloutRecord, device: string, d: RolloutDevice, s: SeenState | undefined, now: number): void {
  if (!ACTIVE.includes(d.phase) || !d.job || !d.published) return;
  const mine = s && s.job === d.job;
  if (mine) {
    d.state = s.state;
    if (s.reason !== undefined) d.reason = s.reason;
  }
  const rollingBack = d.phase === 'rolling-back';
  if (mine && s.state === 'succeeded') {
    d.phase = rollingBack ? 'rolled-back' : 'updated';
    d.committedAt = now;
    return;
  }
  const finalFailure = mine && ['failed', 'rolled-back', 'timed-out', 'canceled', 'rejected'].includes(s.state);
  const silent = !finalFailure && now - d.since > r.spec.stepTimeoutMs;
  if (!finalFailure && !silent) return;
  const state: JobState = silent ? 'timed-out' : s!.state;
  const reason = silent ? `no final job state within the step timeout (${r.spec.stepTimeoutMs} ms)` : (s!.reason ?? s!.state);
  d.state = state;
  d.reason = reason;
  if (!isPermanent(state, reason) && d.attempt <= r.spec.maxRetries) {
    // Back in line: sendJobs sends the next try after the backoff.
    d.nextTryAt = now + r.spec.retryBackoffMs * 2 ** (d.attempt - 1);
    d.published = false;
    d.job = undefined;
    return;
  }
  d.phase = rollingBack ? 'rollback-failed' : 'failed';
}

function classDevices(r: RolloutRecord, cls: string): RolloutDevice[] {
  return Object.values(r.devices).filter((d) => d.class === cls);
}

function judgeClass(r: RolloutRecord, cls: string, t: ClassTrack, gates: GateResult[] | undefined, now: number): void {
  const mine = classDevices(r, cls);
  const failed = mine.filter((d) => d.phase === 'failed').length;
  const finished = failed + mine.filter((d) => d.phase === 'updated').length;
  if (finished >= r.spec.minDevices && failed / finished > r.spec.abortFailureRate) {
    return abortClass(r, cls, `failure rate ${failed}/${finished} over ${Math.round(r.spec.abortFailureRate * 100)}%`, now);
  }
  const step = t.steps[t.current]!;
  const inStep = step.devices.map((id) => r.devices[id]!);
  if (step.doneAt === undefined) {
    if (inStep.some((d) => d.phase === 'waiting' || d.phase === 'updating')) return;
    if (inStep.every((d) => d.phase === 'failed')) return abortClass(r, cls, `every device of the ${step.name} failed (${inStep[0]?.reason ?? ''})`, now);
    step.doneAt = now;
  }
  if (now < step.doneAt + r.spec.windowMs || !gates) return;
  step.gates = gates;
  const failing = gates.filter((g) => g.verdict === 'fail');
  if (failing.length) return abortClass(r, cls, `gate breach after the ${step.name}: ${failing.map((g) => `${g.gate} (${g.reason})`).join('; ')}`, now);
  const unknown = gates.filter((g) => g.verdict === 'unknown');
  if (unknown.length && now < step.doneAt + r.spec.windowMs + r.spec.stepTimeoutMs) return;
  // Past the step timeout: updated devices that still sent nothing to judge are a failure; a
  // control with no data (no device left on the old bundle, no baseline) is not the bundle's fault.
  const blind = unknown.filter((g) => g.updated === null);
  if (blind.length) return abortClass(r, cls, `no telemetry from the updated devices of the ${step.name} within the step timeout: ${blind.map((g) => g.reason).join('; ')}`, now);
  step.passedAt = now;
  t.current++;
  if (t.current >= t.steps.length) t.status = 'completed';
}

/** Stop the class and send every device that has (or may have) the target back to where it was. */
function abortClass(r: RolloutRecord, cls: string, reason: string, now: number): void {
  const t = r.classes[cls]!;
  if (t.status === 'aborted') return;
  if (t.status === 'completed' && reason !== 'aborted by the operator' && !reason.startsWith('overall')) return;
  t.status = 'aborted';
  t.reason = reason;
  for (const d of classDevices(r, cls)) {
    if (d.phase === 'waiting') {
      d.phase = 'skipped';
      d.reason = `not sent: class aborted (${reason})`;
    } else if (d.phase === 'updated' || d.phase === 'updating') {
      Object.assign(d, { phase: 'rolling-back', attempt: 0, published: false, since: now, reason: `rolling back: ${reason}` });
      delete d.job;
      delete d.state;
      delete d.nextTryAt;
    }
  }
}

function sendJobs(r: RolloutRecord, now: number, states: ReadonlyMap<string, SeenState>): JobOrder[] {
  const orders: JobOrder[] = [];
  let busy = Object.values(r.devices).filter((d) => ACTIVE.includes(d.phase) && d.published).length;
  // Rollbacks first and whatever the pause: a device on a bad bundle should not wait.
  const ids = Object.keys(r.devices).sort();
  for (const id of ids) {
    const d = r.devices[id]!;
    if (d.phase !== 'rolling-back' || d.published || (d.nextTryAt ?? 0) > now) continue;
    const back = d.from ? r.previous[d.from] : undefined;
    if (!back) {
      d.phase = 'rollback-failed';
      d.reason = d.from ? `no files for its previous bundle ${d.from.slice(0, 12)}; roll it back with \`edgeexit flash <old bundle> --rollback\`, and pass --previous <old bundle> to rollouts` : 'its previous bundle is unknown';
      continue;
    }
    orders.push(order(r, id, d, back, true, now));
    busy++;
  }
  if (r.status !== 'running') return orders;
  for (const id of ids) {
    if (busy >= r.spec.maxConcurrent) break;
    const d = r.devices[id]!;
    const t = r.classes[d.class]!;
    const retry = d.phase === 'updating' && !d.published;
    const opening = d.phase === 'waiting' && t.status === 'running' && d.step === t.current;
    if ((!retry && !opening) || (d.nextTryAt ?? 0) > now) continue;
    const step = t.steps[d.step]!;
    step.openedAt ??= now;
    if (opening) {
      // What the device says it runs now is its rollback target (a birth can be older than a switch in place).
      const active = states.get(id)?.active;
      if (active && active !== r.target.bundle) d.from = active;
      d.phase = 'updating';
      d.attempt = 0;
      r.touched++;
    }
    orders.push(order(r, id, d, r.target, false, now));
    busy++;
  }
  return orders;
}

function order(r: RolloutRecord, device: string, d: RolloutDevice, bundle: BundleInfo, rollback: boolean, now: number): JobOrder {
  d.attempt++;
  d.job = jobId(r, rollback ? 'rb' : 'u', d.attempt);
  d.since = now;
  delete d.state;
  delete d.nextTryAt;
  // published stays false until the driver has the broker's ack and saved again (see rollout.ts).
  return { device, job: d.job, bundle, rollback };
}

function settle(r: RolloutRecord): void {
  if (r.status !== 'running' && r.status !== 'paused') return;
  const tracks = Object.values(r.classes);
  const busy = Object.values(r.devices).some((d) => ACTIVE.includes(d.phase));
  if (busy || tracks.some((t) => t.status === 'running')) return;
  const aborted = tracks.filter((t) => t.status === 'aborted').length;
  r.status = aborted === 0 ? 'completed' : aborted === tracks.length ? 'aborted' : 'partial';
  r.reason = tracks.map((t) => t.reason).filter(Boolean).join('; ') || undefined;
  if (r.reason === undefined) delete r.reason;
}
