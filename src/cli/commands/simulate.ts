// `edgeexit simulate --devices N`: a virtual fleet publishing telemetry (src/fleet/simulate.ts),
// to an existing broker or, with no --broker, to an embedded broker and collector so it works
// out of the box. Runs for --duration seconds or until SIGINT/SIGTERM, then stops producing,
// gives the outboxes a moment to drain, closes every device cleanly and prints a summary.
import os from 'node:os';
import path from 'node:path';
import { FleetSimulator, loadSimProfile, type SimSummary } from '../../fleet/simulate.js';
import { openStore } from '../../fleet/open.js';
import { InputError, show } from '../../util/errors.js';
import type { CliIO } from '../io.js';
import { defineCommand, type AnyCommandBody } from '../command.js';
import { untilStopped } from '../signals.js';

export interface SimulateCliOptions {
  devices: number;
  broker?: string;
  duration?: number;
  rate?: number;
  inferences?: number;
  fleet?: string;
  prefix?: string;
  stateDir?: string;
  profile?: string;
  db?: string;
  drainTimeout?: number;
  json?: boolean;
  progress?: number;
  mqttVersion?: 4 | 5;
}

/** Run until `duration` or `signal`; resolves with the summary once everything is closed. */
export async function simulateCommand(opts: SimulateCliOptions, io: CliIO, signal: AbortSignal): Promise<SimSummary> {
  if (opts.duration !== undefined && !(opts.duration >= 0))
    throw new InputError(`--duration: expected seconds ≥ 0 (0 runs until Ctrl-C), got ${show(opts.duration)}`, [{ where: '--duration', expected: 'a number ≥ 0', got: show(opts.duration), fix: 'e.g. --duration 60' }]);
  const profile = await loadSimProfile(opts.profile ?? 'rpi4');
  const stateDir = opts.stateDir ?? path.join(os.tmpdir(), `edgeexit-simulate-${process.pid}`);
  const sim = await FleetSimulator.start({
    devices: opts.devices,
    stateDir,
    profile,
    ...(opts.broker !== undefined ? { url: opts.broker } : {}),
    ...(opts.rate !== undefined ? { rate: opts.rate } : {}),
    ...(opts.inferences !== undefined ? { inferencesPerS: opts.inferences } : {}),
    ...(opts.fleet !== undefined ? { fleet: opts.fleet } : {}),
    ...(opts.prefix !== undefined ? { prefix: opts.prefix } : {}),
    ...(opts.db !== undefined ? { dbFile: opts.db } : {}),
    ...(opts.mqttVersion !== undefined ? { protocolVersion: opts.mqttVersion } : {}),
  });
  io.err(`simulating ${opts.devices} device${opts.devices === 1 ? '' : 's'} → ${sim.url}${sim.collector ? ` (embedded broker; collector writing ${sim.collector.store.file})` : ''}; state in ${stateDir}`);
  io.err(`latency and energy from ${profile.source}`);
  const started = Date.now();
  const progressMs = (opts.progress ?? 5) * 1000;
  const progress = () => {
    const p = sim.progress();
    io.err(`${Math.round((Date.now() - started) / 1000)} s: ${p.connected}/${sim.devices.length} connected, windows sent ${p.sent}, acked ${p.acked}, queued ${p.queued}`);
  };
  const ticker = progressMs > 0 ? setInterval(progress, progressMs) : undefined;
  await new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener('abort', () => resolve(), { once: true });
    if (opts.duration) setTimeout(resolve, opts.duration * 1000).unref();
  });
  if (ticker) clearInterval(ticker);
  await sim.stopGenerating();
  // What is still queued stays in the outboxes for the next run if the broker does not take it in time.
  const drained = await sim.drained((opts.drainTimeout ?? 10) * 1000);
  if (!drained) io.err(`some windows are still queued after ${opts.drainTimeout ?? 10} s; they stay in the outboxes under ${stateDir}`);
  progress();
  const collector = sim.collector;
  await sim.close();
  const summary = sim.summary();
  // The own collector commits its last batch on close; read what it stored after that.
  if (collector) summary.collected = await readTotals(opts.db ?? collector.store.file);
  if (opts.json) io.out(JSON.stringify(summary, null, 2));
  else io.out(formatSummary(summary));
  return summary;
}

async function readTotals(file: string): Promise<NonNullable<SimSummary['collected']>> {
  const store = await openStore(file, { mustExist: true });
  try {
    return await store.totals();
  } finally {
    await store.close();
  }
}

export function formatSummary(s: SimSummary, maxRows = 20): string {
  const lines = ['device            sent  acked  queued  dropped  inferences  joules'];
  for (const d of s.devices.slice(0, maxRows))
    lines.push(
      `${d.device.padEnd(16)} ${String(d.sent.windows).padStart(5)} ${String(d.acked).padStart(6)} ${String(d.queued).padStart(7)} ${String(d.dropped).padStart(8)} ${String(d.sent.count).padStart(11)}  ${d.sent.joules.toFixed(3)}`,
    );
  if (s.devices.length > maxRows) lines.push(`… ${s.devices.length - maxRows} more devices (--json lists every one)`);
  const t = s.totals;
  lines.push(`total: ${s.devices.length} devices, ${t.windows} windows sent, ${t.acked} acked, ${t.queued} queued, ${t.dropped} dropped; ${t.count} inferences, ${t.joules.toFixed(3)} J`);
  if (s.collected) {
    const c = s.collected.reduce((a, x) => ({ windows: a.windows + x.windows, count: a.count + x.count }), { windows: 0, count: 0 });
    const same = c.windows === t.acked && c.count === s.devices.reduce((a, d) => a + d.sent.count, 0) && t.queued === 0;
    lines.push(`collector stored ${c.windows} windows, ${c.count} inferences${same ? ' (every window sent, none twice)' : ''}`);
  }
  return lines.join('\n');
}

export function simulateModule(io: CliIO): AnyCommandBody {
  return defineCommand({
    builder: (y) =>
      y
        .option('devices', { type: 'number', demandOption: true, describe: 'Number of virtual devices' })
        .option('broker', { type: 'string', describe: 'mqtt:// URL of a broker (default: start an embedded broker and collector)' })
        .option('duration', { type: 'number', describe: 'Seconds to run (0: until Ctrl-C)', default: 0 })
        .option('rate', { type: 'number', describe: 'Metric windows per second per device', default: 0.2 })
        .option('inferences', { type: 'number', describe: 'Inferences per second per device (window counts, utilisation)', default: 20 })
        .option('fleet', { type: 'string', describe: 'Fleet id in the topics', default: 'sim' })
        .option('prefix', { type: 'string', describe: 'Device id prefix: <prefix>-0001, …', default: 'sim' })
        .option('state-dir', { type: 'string', describe: 'Folder for the devices\' bdSeq files, outboxes and sent ledgers (default: a temp folder)' })
        .option('profile', { type: 'string', describe: 'Device profile id/file, or a latency profile from `edgeexit profile`', default: 'rpi4' })
        .option('db', { type: 'string', describe: 'Database of the embedded collector (default <state-dir>/fleet.db)' })
        .option('drain-timeout', { type: 'number', describe: 'Seconds to wait for queued windows at the end', default: 10 })
        .option('progress', { type: 'number', describe: 'Seconds between progress lines (0: none)', default: 5 })
        .option('mqtt-version', { choices: [4, 5] as const, describe: 'MQTT protocol version (default 5 with --broker; 4 for the embedded aedes broker or `edgeexit collect` without --broker)' })
        .option('json', { type: 'boolean', describe: 'Print the summary as JSON' })
        .example('$0 simulate --devices 50 --duration 30', 'embedded broker + collector, 50 devices for 30 s')
        .example('$0 simulate --devices 500 --broker mqtt://localhost:1883 --rate 1', 'against your broker, one window per second each'),
    handler: async (args: SimulateCliOptions) => {
      await untilStopped((signal) => simulateCommand(args, io, signal));
    },
  });
}
