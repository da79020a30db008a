// What the dashboard shows of rollouts (`/api/rollouts`): per rollout its classes' steps (waves),
// gate values and reasons, and how many devices are in each phase. Counts, not a row per device,
// so a reply stays small for a rollout over thousands of devices; `rollout status --json` has the
// whole record.
import type { FleetStore } from './fleet-store.js';
import type { DevicePhase, GateResult, RolloutRecord, RolloutStatus } from './rollout-plan.js';

/** Rollouts per /api/rollouts reply unless ?limit= says fewer (newest first). */
export const MAX_ROLLOUTS_LIMIT = 20;

export interface RolloutStepSummary {
  name: string;
  devices: number;
  openedAt: number | null;
  doneAt: number | null;
  passedAt: number | null;
  gates: GateResult[];
}

export interface RolloutClassSummary {
  class: string;
  status: 'running' | 'completed' | 'aborted';
  /** Name of the step now running; null when every step passed. */
  current: string | null;
  reason: string | null;
  steps: RolloutStepSummary[];
  /** Devices of the class in each phase (phases with none left out). */
  phases: Partial<Record<DevicePhase, number>>;
}

export interface RolloutSummary {
  id: string;
  fleet: string;
  status: RolloutStatus;
  reason: string | null;
  target: { bundle: string; model: { name: string; version: string } };
  createdAt: number;
  updatedAt: number;
  devices: number;
  touched: number;
  classes: RolloutClassSummary[];
}

export interface RolloutsApi {
  generatedAt: number;
  /** Rollouts in the store; `rollouts` holds the newest `limit` of them. */
  total: number;
  limit: number;
  rollouts: RolloutSummary[];
}

function phaseCounts(r: RolloutRecord, cls: string): Partial<Record<DevicePhase, number>> {
  const out: Partial<Record<DevicePhase, number>> = {};
  for (const d of Object.values(r.devices)) if (d.class === cls) out[d.phase] = (out[d.phase] ?? 0) + 1;
  return out;
}

/**
 * One rollout record as the dashboard draws it.
 *
 * @example summarizeRollout((await store.rollouts())[0]).classes.map((c) => c.phases)
 */
export function summarizeRollout(r: RolloutRecord): RolloutSummary {
  const classes = Object.keys(r.classes).sort().map((cls): RolloutClassSummary => {
    const t = r.classes[cls]!;
    return {
      class: cls,
      status: t.status,
      current: t.steps[t.current]?.name ?? null,
      reason: t.reason ?? null,
      steps: t.steps.map((s) => ({ name: s.name, devices: s.devices.length, openedAt: s.openedAt ?? null, doneAt: s.doneAt ?? null, passedAt: s.passedAt ?? null, gates: s.gates ?? [] })),
      phases: phaseCounts(r, cls),
    };
  });
  return {
    id: r.id, fleet: r.fleet, status: r.status, reason: r.reason ?? null,
    target: { bundle: r.target.bundle, model: r.target.model },
    createdAt: r.createdAt, updatedAt: r.updatedAt, devices: Object.keys(r.devices).length, touched: r.touched, classes,
  };
}

/**
 * The newest `limit` rollouts in the store, summarised.
 *
 * @example const api = await rolloutsApi(store, 5, Date.now()); api.rollouts[0]?.status
 */
export async function rolloutsApi(store: FleetStore, limit: number, now: number): Promise<RolloutsApi> {
  const all = await store.rollouts();
  return { generatedAt: now, total: all.length, limit, rollouts: all.slice(0, limit).map(summarizeRollout) };
}
