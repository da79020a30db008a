// `edgeexit rollout <bundle> --fleet f …` and `rollout status|pause|resume|abort|drive`: the rollout
// engine's command line. The plan and every decision are in src/fleet/rollout-plan.ts, the driver
// in src/fleet/rollout.ts; this file reads flags, stages files, prints. The record lives in the
// fleet store (--db), so `status` and the pause/resume/abort commands work from any shell while a
// driver runs, and `drive <id>` starts a driver again after the first one died.
import { loadPrivateKey } from '../../bundle/signing.js';
import type { FileServer } from '../../fleet/file-server.js';
import { stageBundleFiles, type StagedBundle } from '../../fleet/jobs.js';
import { RolloutDriver, createRollout, planFromStore } from '../../fleet/rollout.js';
import { DEFAULT_SPEC, parseCanary, parseDuration, parseGate, parsePercent, parseWaves, type BundleInfo, type ClassPlan, type RolloutRecord, type RolloutSpec } from '../../fleet/rollout-plan.js';
import { openStore } from '../../fleet/open.js';
import type { FleetStore, RolloutCommand } from '../../fleet/fleet-store.js';
import { EdgeExitError, InputError, formatProblem } from '../../util/errors.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import type { CliIO } from '../io.js';
import { table } from '../format.js';
import { DEFAULT_FILES_DIR } from './flash.js';
import { BROKER_OPTIONS, connectOperator, serveOperatorFiles, type BrokerFlags } from '../operator-broker.js';

const DEFAULT_DB = 'fleet.db';

interface DriveFlags extends BrokerFlags {
  db?: string;
  key: string;
  files?: string;
  /** Do not start a file server here (another one serves --files). */
  serveFiles?: boolean;
  tickMs?: number;
  /** Lease duration (`30s`): a driver that stops renewing it is taken over after this long. */
  lease?: string;
  json?: boolean;
}

export interface RolloutOptions extends DriveFlags {
  bundle: string;
  fleet: string;
  /** Only these hardware classes (every class when absent). */
  class?: string[];
  previous?: string[];
  canary?: string;
  waves?: string;
  abortFailureRate?: string;
  minDevices?: number;
  gate?: string[];
  window?: string;
  maxConcurrent?: number;
  stepTimeout?: string;
  timeout?: string;
  retries?: number;
  retryBackoff?: string;
  trialMs?: number;
  dryRun?: boolean;
}

/** The spec from the flags (defaults: DEFAULT_SPEC). */
export function specFromFlags(o: Partial<RolloutOptions>): RolloutSpec {
  const positive = (n: number | undefined, where: string, dflt: number): number => {
    if (n === undefined) return dflt;
    if (!Number.isInteger(n) || n < 0) throw new InputError(formatProblem({ where, expected: 'a whole number ≥ 0', got: String(n), fix: `e.g. ${where} 5` }));
    return n;
  };
  return {
    canary: o.canary !== undefined ? parseCanary(o.canary) : DEFAULT_SPEC.canary,
    waves: o.waves !== undefined ? parseWaves(o.waves) : DEFAULT_SPEC.waves,
    abortFailureRate: o.abortFailureRate !== undefined ? parsePercent(o.abortFailureRate, '--abort-failure-rate') : DEFAULT_SPEC.abortFailureRate,
    minDevices: positive(o.minDevices, '--min-devices', DEFAULT_SPEC.minDevices),
    gates: (o.gate ?? []).map(parseGate),
    windowMs: o.window !== undefined ? parseDuration(o.window, '--window') : DEFAULT_SPEC.windowMs,
    maxConcurrent: Math.max(1, positive(o.maxConcurrent, '--max-concurrent', DEFAULT_SPEC.maxConcurrent)),
    stepTimeoutMs: o.stepTimeout !== undefined ? parseDuration(o.stepTimeout, '--step-timeout') : DEFAULT_SPEC.stepTimeoutMs,
    overallTimeoutMs: o.timeout !== undefined ? parseDuration(o.timeout, '--timeout') : DEFAULT_SPEC.overallTimeoutMs,
    maxRetries: positive(o.retries, '--retries', DEFAULT_SPEC.maxRetries),
    retryBackoffMs: o.retryBackoff !== undefined ? parseDuration(o.retryBackoff, '--retry-backoff') : DEFAULT_SPEC.retryBackoffMs,
    ...(o.trialMs !== undefined ? { trialMs: o.trialMs } : {}),
  };
}

function infoOf(s: StagedBundle): BundleInfo {
  return { bundle: s.bundle, model: { name: s.manifest.model.name, version: s.manifest.model.version }, ...s.refs };
}

const pct = (x: number) => `${Math.round(x * 1000) / 10}%`;

/** The --dry-run text: per class, each step with its devices. */
export function describePlan(plan: readonly ClassPlan[], spec: RolloutSpec, unknown: readonly string[]): string {
  const lines = [`gates: ${spec.gates.map((g) => g.text).join(', ') || 'none'}; window ${spec.windowMs} ms; abort above ${pct(spec.abortFailureRate)} failed after ${spec.minDevices} devices; at most ${spec.maxConcurrent} jobs out`];
  for (const c of plan) {
    lines.push(`${c.class}: ${c.steps.reduce((n, s) => n + s.devices.length, 0)} to update${c.skipped.length ? `, ${c.skipped.length} already on it` : ''}`);
    for (const s of c.steps) lines.push(`  ${s.name.padEnd(8)} ${String(s.devices.length).padStart(4)}  ${s.devices.slice(0, 6).join(' ')}${s.devices.length > 6 ? ' …' : ''}`);
  }
  if (unknown.length) lines.push(`not in the plan (no birth, class unknown): ${unknown.join(' ')}`);
  return lines.join('\n');
}

/** `rollout status` text: classes with their steps and gates, then devices not simply done. */
export function describeRollout(r: RolloutRecord): string {
  const out = [`rollout ${r.id}  fleet ${r.fleet}  ${r.target.model.name} ${r.target.model.version} (${r.target.bundle.slice(0, 12)})  ${r.status}${r.reason ? `: ${r.reason}` : ''}`];
  const rows: (string | number)[][] = [];
  for (const [cls, t] of Object.entries(r.classes)) {
    t.steps.forEach((s, i) => {
      const devs = s.devices.map((d) => r.devices[d]!);
      const count = (p: string) => devs.filter((d) => d.phase === p).length;
      const stepState = i < t.current ? 'passed' : i === t.current && t.status === 'running' ? (s.doneAt !== undefined ? 'baking' : s.openedAt !== undefined ? 'open' : 'waiting') : t.status === 'aborted' && i === t.current ? 'aborted' : '-';
      rows.push([cls, s.name, stepState, s.devices.length, count('updated'), count('updating'), count('failed'), count('rolled-back') + count('rolling-back'), (s.gates ?? []).map((g) => `${g.verdict} ${g.reason}`).join('; ')]);
    });
    if (t.reason) rows.push([cls, '', t.status, '', '', '', '', '', t.reason]);
  }
  out.push(table(['class', 'step', 'state', 'devices', 'updated', 'updating', 'failed', 'rolled back', 'gates'], rows));
  const devRows = Object.entries(r.devices)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([id, d]) => [id, d.class, d.step >= 0 ? (r.classes[d.class]!.steps[d.step]?.name ?? '-') : '-', d.phase, d.state ?? '-', d.attempt, d.reason ?? '']);
  out.push(table(['device', 'class', 'step', 'phase', 'job state', 'tries', 'reason'], devRows));
  return out.join('\n');
}

async function withStore<T>(db: string | undefined, fn: (s: FleetStore) => Promise<T>): Promise<T> {
  const store = await openStore(db ?? DEFAULT_DB, { mustExist: true });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

async function drive(o: DriveFlags, store: FleetStore, id: string, io: CliIO): Promise<RolloutRecord> {
  const key = await loadPrivateKey(o.key);
  let server: FileServer | undefined;
  if (o.serveFiles !== false) {
    server = await serveOperatorFiles(o, o.files ?? DEFAULT_FILES_DIR, (l) => io.err(l));
  }
  const driver = new RolloutDriver({ store, conn: await connectOperator(o, 'rollout'), reconnect: () => connectOperator(o, 'rollout'), key, id, tickMs: o.tickMs ?? 500, ...(o.lease !== undefined ? { leaseMs: parseDuration(o.lease, '--lease') } : {}), onLog: (l) => io.err(l) });
  try {
    const final = await driver.run().catch((err: unknown) => {
      // The record is in the store, saved each tick: nothing is lost, a new driver carries on.
      if (!driver.connection.closed) throw err;
      throw new EdgeExitError(`rollout ${id}: lost the broker ${o.broker} (${(err as Error).message}); the rollout's state is in ${o.db ?? DEFAULT_DB}: once the broker is back, carry on with \`edgeexit rollout drive ${id}\``);
    });
    io.out(o.json ? JSON.stringify(final, null, 2) : describeRollout(final));
    if (final.status !== 'completed') throw new EdgeExitError(`rollout ${id} ${final.status}: ${final.reason ?? ''}`);
    return final;
  } finally {
    await driver.connection.end().catch(() => undefined);
    await server?.close().catch(() => undefined);
  }
}

export async function rolloutCommand(o: RolloutOptions, io: CliIO): Promise<RolloutRecord | ClassPlan[]> {
  const spec = specFromFlags(o);
  return withStore(o.db, async (store) => {
    const files = o.files ?? DEFAULT_FILES_DIR;
    const target = await stageBundleFiles(o.bundle, files);
    if (o.dryRun) {
      const { plan, unknown } = await planFromStore(store, o.fleet, target.bundle, spec, o.class);
      io.out(o.json ? JSON.stringify({ spec, plan, unknown }, null, 2) : describePlan(plan, spec, unknown));
      return plan;
    }
    const previous = await Promise.all((o.previous ?? []).map((p) => stageBundleFiles(p, files)));
    const r = await createRollout({ store, fleet: o.fleet, target: infoOf(target), previous: previous.map(infoOf), spec, ...(o.class ? { classes: o.class } : {}) });
    io.err(`rollout ${r.id}: ${target.manifest.model.name} ${target.manifest.model.version} to ${Object.keys(r.devices).length} devices in ${Object.keys(r.classes).length} classes; \`edgeexit rollout status ${r.id} --db ${o.db ?? DEFAULT_DB}\``);
    return drive(o, store, r.id, io);
  });
}

export async function rolloutStatusCommand(o: { db?: string; id?: string; json?: boolean }, io: CliIO): Promise<RolloutRecord> {
  return withStore(o.db, async (store) => {
    const r = o.id !== undefined ? (await store.rollout(o.id))?.record : (await store.rollouts())[0];
    if (!r) throw new InputError(formatProblem({ where: `rollout status${o.id ? ` ${o.id}` : ''}`, message: o.id ? 'no such rollout' : 'no rollout in this fleet store', got: o.db ?? DEFAULT_DB, fix: 'start one with `edgeexit rollout <bundle> --fleet <f>`, or pass --db' }));
    io.out(o.json ? JSON.stringify(r, null, 2) : describeRollout(r));
    return r;
  });
}

export async function rolloutControlCommand(o: { db?: string; id: string }, command: RolloutCommand, io: CliIO): Promise<number> {
  return withStore(o.db, async (store) => {
    const seq = await store.commandRollout(o.id, command);
    if (seq === null) throw new InputError(formatProblem({ where: `rollout ${command} ${o.id}`, message: 'no such rollout', fix: 'see the ids with `edgeexit rollout status`' }));
    io.out(`rollout ${o.id}: ${command} recorded (#${seq}); the driver applies it on its next tick`);
    return seq;
  });
}

export async function rolloutDriveCommand(o: DriveFlags & { id: string }, io: CliIO): Promise<RolloutRecord> {
  return withStore(o.db, (store) => drive(o, store, o.id, io));
}

export const DRIVE_OPTIONS = {
  ...BROKER_OPTIONS,
  db: { type: 'string', describe: `Fleet store the collector writes (default ${DEFAULT_DB})` },
  key: { type: 'string', describe: "Operator's ed25519 private key (devices trust its .pub)", demandOption: true },
  files: { type: 'string', describe: `Content-addressed folder of bundle files (default ${DEFAULT_FILES_DIR})` },
  'serve-files': { type: 'boolean', default: true, describe: 'Serve --files from here while the rollout runs (--no-serve-files: another server does)' },
  'tick-ms': { type: 'number', describe: 'Between driver ticks (default 500)' },
  lease: { type: 'string', describe: "How long this driver's hold on the rollout lasts unrenewed: another driver waits, and takes over only after it (default 30s)" },
  json: { type: 'boolean', describe: 'Machine-readable output' },
} as const;

/** The rollout's own flags (spec, --dry-run); `recalibrate` takes them too. */
export const ROLLOUT_SPEC_OPTIONS = {
  canary: { type: 'string', describe: 'Canary per hardware class: 5% or a count (default 5%)' },
  waves: { type: 'string', describe: 'Cumulative shares per class after each wave (default 10%,50%,100%)' },
  'abort-failure-rate': { type: 'string', describe: 'Abort a class above this share failed (default 10%)' },
  'min-devices': { type: 'number', describe: 'Finished devices before the failure rate counts (default 5)' },
  gate: { type: 'string', array: true, describe: 'p95<1.1x, energy<1.2x, accuracy>-0.5pp, errors<5pp, exit0>-5pp (updated vs control)' },
  window: { type: 'string', describe: 'Telemetry window after each step before its gates are judged (default 10m)' },
  'max-concurrent': { type: 'number', describe: 'Jobs out at once (default 50)' },
  'step-timeout': { type: 'string', describe: 'A device silent this long after its job is timed out (default 15m)' },
  timeout: { type: 'string', describe: 'Abort the whole rollout after (default 24h)' },
  retries: { type: 'number', describe: 'Retries of a transient failure per device (default 3)' },
  'retry-backoff': { type: 'string', describe: 'First retry delay, doubled each time (default 30s)' },
  'trial-ms': { type: 'number', describe: 'Trial length each device runs (default: the agent\'s)' },
  'dry-run': { type: 'boolean', describe: 'Print the plan and stop' },
} as const;

const idArg = { type: 'string', describe: 'Rollout id (see `rollout status`)', demandOption: true } as const;
const dbOption = { type: 'string', describe: `Fleet store (default ${DEFAULT_DB})` } as const;

export function rolloutModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .command({
          command: 'status [id]',
          describe: 'Waves per class, each device\'s state, gate values and reasons (latest rollout unless an id is given)',
          ...defineCommand({
            builder: (s) => s.positional('id', { type: 'string' }).option('db', dbOption).option('json', { type: 'boolean' }),
            handler: async (a: { id?: string; db?: string; json?: boolean }) => void (await rolloutStatusCommand(a, io)),
          }),
        })
        .command({ command: 'pause <id>', describe: 'Send no more update jobs (rollbacks still go)', ...defineCommand({ builder: (s) => s.positional('id', idArg).option('db', dbOption), handler: async (a: { id: string; db?: string }) => void (await rolloutControlCommand(a, 'pause', io)) }) })
        .command({ command: 'resume <id>', describe: 'Go on after a pause', ...defineCommand({ builder: (s) => s.positional('id', idArg).option('db', dbOption), handler: async (a: { id: string; db?: string }) => void (await rolloutControlCommand(a, 'resume', io)) }) })
        .command({ command: 'abort <id>', describe: 'Stop and roll every updated device back', ...defineCommand({ builder: (s) => s.positional('id', idArg).option('db', dbOption), handler: async (a: { id: string; db?: string }) => void (await rolloutControlCommand(a, 'abort', io)) }) })
        .command({ command: 'drive <id>', describe: 'Run the driver of a rollout again (after the process driving it died)', ...defineCommand({ builder: (s) => s.positional('id', idArg).options(DRIVE_OPTIONS), handler: async (a: DriveFlags & { id: string }) => void (await rolloutDriveCommand(a, io)) }) })
        .command({
          command: '$0 <bundle>',
          describe: 'Roll a signed bundle out to a fleet',
          ...defineCommand({
          builder: (s) =>
            s
              .positional('bundle', { type: 'string', describe: 'Signed bundle folder or .tar', demandOption: true })
              .option('fleet', { type: 'string', describe: 'Fleet to update', demandOption: true })
              .option('previous', { type: 'string', array: true, describe: 'Bundle(s) devices run now: staged so an abort can roll them back' })
              .option('class', { type: 'string', array: true, describe: 'Only devices of this hardware class (repeat for more; default every class)' })
              .options(ROLLOUT_SPEC_OPTIONS)
              .options(DRIVE_OPTIONS)
              .example('$0 rollout v2.tar --fleet lab --previous v1.tar --canary 5% --waves 10%,50%,100% --gate p95<1.1x --gate accuracy>-0.5pp --key ops.key --broker mqtt://broker.local --username ops', ''),
          handler: async (a: RolloutOptions) => void (await rolloutCommand(a, io)),
          }),
        }),
    handler: async () => undefined,
  });
}
