// `edgeexit flash <bundle> --to <fleet>/<device> …` and `edgeexit jobs [cancel <id>]`: the
// operator's side of flash jobs (src/fleet/jobs.ts). flash copies the bundle's files into the
// content-addressed --files folder that file servers read, and publishes one signed, retained job
// per device; with --wait it also serves the files itself and waits for every device's verdict.
// jobs reads the devices' retained job states; jobs cancel republishes a job canceled.
import { loadPrivateKey } from '../../bundle/signing.js';
import { parseDeviceRef } from '../../fleet/broker-auth.js';
import { cancelJob, jobFinished, publishJobs, readJobs, stageBundleFiles, type DeviceJob, type FlashTarget } from '../../fleet/jobs.js';
import type { Job } from '../../agent/job-protocol.js';
import { checkId } from '../../telemetry/payloads.js';
import { EdgeExitError, InputError, formatProblem } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { BROKER_OPTIONS, connectOperator, serveOperatorFiles, type BrokerFlags } from '../operator-broker.js';
import { table } from '../format.js';

/** Where flash puts bundle files by hash when --files is not given. */
export const DEFAULT_FILES_DIR = 'edgeexit-files';

export interface FlashOptions extends BrokerFlags {
  bundle: string;
  to?: string[];
  group?: string;
  key: string;
  files?: string;
  rollback?: boolean;
  trialMs?: number;
  /** Seconds the job may take from now; past it devices stop and report timed-out. */
  timeout?: number;
  wait?: boolean;
  /** Seconds --wait waits for every device (default 600). */
  waitTimeout?: number;
  json?: boolean;
}

export interface JobsOptions extends BrokerFlags {
  fleet?: string;
  json?: boolean;
}

/** --to refs and the devices of --group (those that report a job state: every agent with --root does). */
async function targetsOf(o: FlashOptions): Promise<FlashTarget[]> {
  const out = new Map<string, FlashTarget>();
  for (const ref of o.to ?? []) {
    const p = parseDeviceRef(ref);
    if (p.kind === 'device') out.set(ref, { fleet: p.fleet, device: p.device });
  }
  if (o.group !== undefined) {
    checkId('fleet', o.group);
    const conn = await connectOperator(o, 'flash-group');
    try {
      for (const d of await readJobs(conn, { fleet: o.group })) if (d.state) out.set(`${d.fleet}/${d.device}`, { fleet: d.fleet, device: d.device });
    } finally {
      await conn.end();
    }
  }
  if (out.size === 0) throw new InputError(formatProblem({ where: 'flash', expected: 'at least one --to <fleet>/<device>, or a --group with devices', got: o.group !== undefined ? `group ${o.group} with no device reporting` : 'none', fix: 'e.g. --to lab/pi-07 (devices report once `edgeexit agent --root` runs)' }));
  return [...out.values()];
}

function row(d: DeviceJob): (string | number)[] {
  const s = d.state;
  const version = d.desired ? `${d.desired.model.name} ${d.desired.model.version}${d.desired.canceled ? ' (canceled)' : ''}` : '-';
  return [`${d.fleet}/${d.device}`, s?.job ?? d.desired?.job ?? '-', version, s?.state ?? 'queued', s?.step ?? '-', s ? `${Math.round(100 * s.progress)}%` : '-', s?.active?.slice(0, 12) ?? '-', s?.reason ?? ''];
}

/** The jobs table (or JSON) for devices read from retained messages. */
export function describeJobs(devices: readonly DeviceJob[], json = false): string {
  if (json) return JSON.stringify(devices, null, 2);
  if (devices.length === 0) return 'no jobs and no device reporting (agents report once `edgeexit agent --root … --telemetry <broker>` runs)';
  return table(['device', 'job', 'bundle', 'state', 'step', 'progress', 'active', 'reason'], devices.map(row));
}

async function waitForJobs(o: FlashOptions, jobs: readonly Job[], io: CliIO): Promise<DeviceJob[]> {
  const server = await serveOperatorFiles(o, o.files ?? DEFAULT_FILES_DIR, (l) => io.err(l));
  const deadline = Date.now() + (o.waitTimeout ?? 600) * 1000;
  try {
    for (;;) {
      const conn = await connectOperator(o, 'flash-wait');
      const all = await readJobs(conn).finally(() => conn.end());
      const mine = all.filter((d) => jobs.some((j) => j.fleet === d.fleet && j.device === d.device));
      if (mine.length === jobs.length && mine.every((d) => jobFinished(d, jobs[0]!.job))) return mine;
      if (Date.now() > deadline) throw new EdgeExitError(`flash ${jobs[0]!.job}: not every device finished within ${o.waitTimeout ?? 600} s:\n${describeJobs(mine)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    await server.close();
  }
}

export async function flashCommand(o: FlashOptions, io: CliIO): Promise<Job[]> {
  if (o.timeout !== undefined && !(Number.isInteger(o.timeout) && o.timeout >= 1)) throw new InputError(formatProblem({ where: '--timeout', expected: 'whole seconds ≥ 1', got: String(o.timeout) }));
  const targets = await targetsOf(o);
  const key = await loadPrivateKey(o.key);
  const staged = await stageBundleFiles(o.bundle, o.files ?? DEFAULT_FILES_DIR);
  io.err(`flash: ${staged.manifest.model.name} ${staged.manifest.model.version} (${staged.bundle.slice(0, 12)}): ${staged.written} files (${staged.bytes} bytes) added to ${o.files ?? DEFAULT_FILES_DIR}`);
  const conn = await connectOperator(o, 'flash');
  let jobs: Job[];
  try {
    jobs = await publishJobs(conn, staged, targets, key, { ...(o.rollback ? { rollback: true } : {}), ...(o.trialMs !== undefined ? { trialMs: o.trialMs } : {}), ...(o.timeout !== undefined ? { timeoutS: o.timeout } : {}) });
  } finally {
    await conn.end();
  }
  io.err(`flash: job ${jobs[0]!.job} published to ${targets.map((t) => `${t.fleet}/${t.device}`).join(', ')}`);
  if (!o.wait) {
    io.out(o.json ? JSON.stringify(jobs, null, 2) : jobs[0]!.job);
    return jobs;
  }
  const done = await waitForJobs(o, jobs, io);
  io.out(describeJobs(done, o.json));
  const bad = done.filter((d) => d.state?.state !== 'succeeded');
  if (bad.length) throw new EdgeExitError(`flash ${jobs[0]!.job}: ${bad.length} of ${done.length} devices did not succeed: ${bad.map((d) => `${d.fleet}/${d.device} ${d.state?.state}: ${d.state?.reason ?? ''}`).join('; ')}`);
  return jobs;
}

export async function jobsCommand(o: JobsOptions, io: CliIO): Promise<DeviceJob[]> {
  const conn = await connectOperator(o, 'jobs');
  try {
    const devices = await readJobs(conn, o.fleet !== undefined ? { fleet: o.fleet } : {});
    io.out(describeJobs(devices, o.json));
    return devices;
  } finally {
    await conn.end();
  }
}

export async function jobsCancelCommand(o: Omit<JobsOptions, 'json'> & { id: string; key: string }, io: CliIO): Promise<DeviceJob[]> {
  const key = await loadPrivateKey(o.key);
  const conn = await connectOperator(o, 'jobs-cancel');
  try {
    const hit = await cancelJob(conn, await readJobs(conn, o.fleet !== undefined ? { fleet: o.fleet } : {}), o.id, key);
    io.out(`canceled ${o.id} on ${hit.map((d) => `${d.fleet}/${d.device}`).join(', ')}; devices that finished keep their state`);
    return hit;
  } finally {
    await conn.end();
  }
}

export function flashModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('bundle', { type: 'string', describe: 'Signed bundle folder or .tar', demandOption: true })
        .option('to', { type: 'string', array: true, describe: 'Target device <fleet>/<device> (repeat for more)' })
        .option('group', { type: 'string', describe: 'Every device of this fleet that reports a job state' })
        .option('key', { type: 'string', describe: "Operator's ed25519 private key (devices trust its .pub)", demandOption: true })
        .option('files', { type: 'string', describe: `Content-addressed folder file servers read (default ${DEFAULT_FILES_DIR})` })
        .option('rollback', { type: 'boolean', describe: 'Allow an older model version than the one running' })
        .option('trial-ms', { type: 'number', describe: 'Trial length on the device (default: the agent\'s)' })
        .option('timeout', { type: 'number', describe: 'Seconds the job may take; past it a device stops (rolling back if it had switched) and reports timed-out' })
        .option('wait', { type: 'boolean', describe: 'Serve the files from here and wait until every device finished; exit 1 unless all succeeded' })
        .option('wait-timeout', { type: 'number', describe: 'Seconds --wait waits (default 600)' })
        .option('json', { type: 'boolean', describe: 'Machine-readable output' })
        .options(BROKER_OPTIONS)
        .example('$0 flash fmnist.tar --to lab/pi-07 --to lab/pi-08 --key keys/ops.key --broker mqtt://broker.local --username ops --wait', ''),
    handler: async (args: FlashOptions) => {
      await flashCommand(args, io);
    },
  });
}

function jobsListModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) => y.option('fleet', { type: 'string', describe: 'One fleet only' }).option('json', { type: 'boolean', describe: 'Machine-readable output' }).options(BROKER_OPTIONS),
    handler: async (args: JobsOptions) => {
      await jobsCommand(args, io);
    },
  });
}

function jobsCancelModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .positional('id', { type: 'string', describe: 'Job id (as `edgeexit jobs` shows it)', demandOption: true })
        .option('key', { type: 'string', describe: "Operator's ed25519 private key", demandOption: true })
        .option('fleet', { type: 'string', describe: 'One fleet only' })
        .options(BROKER_OPTIONS),
    handler: async (args: Omit<JobsOptions, 'json'> & { id: string; key: string }) => {
      await jobsCancelCommand(args, io);
    },
  });
}

export function jobsModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .command({ command: '$0', describe: 'Per device: job, state, step, progress, reason (from the retained job/state messages)', ...jobsListModule(io) })
        .command({ command: 'cancel <id>', describe: 'Cancel a job on every device that has it; unfinished devices stop and report canceled', ...jobsCancelModule(io) })
        .example('$0 jobs --broker mqtt://broker.local --username ops', '')
        .example('$0 jobs cancel flash-20261206T101500-1a2b3c4d --key keys/ops.key --broker mqtt://broker.local --username ops', ''),
    handler: async (_args: object) => undefined,
  });
}
